"""compare.py cases: the LSTM cell, NumPy (cheat-sheet formulas: two matmuls, then the gate
nonlinearities as separate NumPy ops) vs ``fastdl.lstm_cell`` (two GEMMs + one fused pass)
vs ``torch.lstm_cell``; and the cell's forward + backward (NumPy by hand, fastdl
``lstm_cell(return_gates=True)`` + ``lstm_cell_backward(gates=)``, torch through autograd).

Run ``python asv_benchmarks/compare.py --match lstm``. FLOPs counted: the GEMMs only,
2 * B * (I + H) * 4H forward, twice that more for the backward (dX, dH, dW_ih, dW_hh).
"""

import numpy as np

from benchmarks import _common

NP_CELL = ("z = x @ w_ih + h @ w_hh + b; i = 1 / (1 + np.exp(-z[:, :H])); "
           "f = 1 / (1 + np.exp(-z[:, H:2*H])); g = np.tanh(z[:, 2*H:3*H]); "
           "o = 1 / (1 + np.exp(-z[:, 3*H:])); cn = f * c + i * g; hn = o * np.tanh(cn)")
NP_CELL_RES = "(hn, cn)"
NP_BWD = (NP_CELL + "; tc = np.tanh(cn); dcn = dc + dh * o * (1 - tc * tc); "
          "dz = np.concatenate([dcn * g * i * (1 - i), dcn * c * f * (1 - f), "
          "dcn * i * (1 - g * g), dh * tc * o * (1 - o)], axis=1); "
          "r = (dz @ w_ih.T, dz @ w_hh.T, dcn * f, x.T @ dz, h.T @ dz, dz.sum(0))")
FD_CELL = "fastdl.lstm_cell(x, h, c, w_ih, w_hh, b)"
FD_BWD = ("hn, cn, gt = fastdl.lstm_cell(x, h, c, w_ih, w_hh, b, return_gates=True); "
          "r = fastdl.lstm_cell_backward(dh, dc, x, h, c, w_ih, w_hh, b, gates=gt)")
T_CELL = "torch.lstm_cell(t_x, (t_h, t_c), t_wih_t, t_whh_t, t_b, t_zb)"
T_BWD = ("xs, hs, cs, wi, wh, bb = [v.detach().requires_grad_(True) for v in "
         "(t_x, t_h, t_c, t_wih_t, t_whh_t, t_b)]; "
         "hn, cn = torch.lstm_cell(xs, (hs, cs), wi, wh, bb, t_zb); "
         "torch.autograd.backward((hn, cn), (t_dh, t_dc))")
T_BWD_RES = "(xs.grad, hs.grad, cs.grad, wi.grad.T, wh.grad.T, bb.grad)"


def _ns(B, I, H):
    def build(dtype):
        w_ih = _common.randn((I, 4 * H), dtype, 3, scale=1 / np.sqrt(I))
        w_hh = _common.randn((H, 4 * H), dtype, 4, scale=1 / np.sqrt(H))
        return {"x": _common.randn((B, I), dtype, 0), "h": _common.randn((B, H), dtype, 1),
                "c": _common.randn((B, H), dtype, 2), "w_ih": w_ih, "w_hh": w_hh,
                "b": _common.randn((4 * H,), dtype, 5), "zb": np.zeros(4 * H, dtype),
                "wih_t": np.ascontiguousarray(w_ih.T), "whh_t": np.ascontiguousarray(w_hh.T),
                "dh": _common.randn((B, H), dtype, 6), "dc": _common.randn((B, H), dtype, 7),
                "H": np.array(H)}
    return build


def cases(Case):
    out = []
    for B, I, H in ((64, 512, 512), (256, 1024, 1024), (1024, 128, 256)):
        size = f"B{B} I{I} H{H}"
        flops = 2.0 * B * (I + H) * 4 * H
        for dt in ("float32",) if B != 64 else ("float32", "float64"):
            out.append(Case("lstm_cell", size, dt, _ns(B, I, H),
                            {"numpy": NP_CELL, "fastdl": FD_CELL, "torch": T_CELL},
                            {"numpy": NP_CELL_RES}, flops=flops))
            out.append(Case("lstm_cell fwd+bwd", size, dt, _ns(B, I, H),
                            {"numpy": NP_BWD, "fastdl": FD_BWD, "torch": T_BWD},
                            {"numpy": "r", "fastdl": "r", "torch": T_BWD_RES},
                            flops=3 * flops))
    out.append(Case("lstm_cell", "B4 I16 H16", "float32", _ns(4, 16, 16),
                    {"numpy": NP_CELL, "fastdl": FD_CELL, "torch": T_CELL},
                    {"numpy": NP_CELL_RES}, tiny=True))
    return out
