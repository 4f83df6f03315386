"""compare.py cases: scaled dot-product attention, NumPy's materialised cheat-sheet formula vs
fastdl's blockwise kernel vs ``torch.nn.functional.scaled_dot_product_attention`` (and its
backward through autograd, ``torch.ops.aten._scaled_dot_product_flash_attention_for_cpu``).

Run ``python asv_benchmarks/compare.py --match sdpa``. FLOPs counted: 4 * B * H * L * S * E
forward (two GEMMs; halved for causal), 8 * B * H * L * S * E backward (four GEMMs, the
scores recomputed not counted).
"""

import numpy as np

import fastdl
from fastdl._ext import _attention  # noqa: F401

from benchmarks import _common


def _fd(name):
    return f"fastdl.{name}" if hasattr(fastdl, name) else f"fastdl._ext._attention.{name}"


SDPA = _fd("scaled_dot_product_attention")
SDPA_BWD = _fd("scaled_dot_product_attention_backward")

NP_SDPA = ("s = (q @ k.swapaxes(-1, -2)) * sc; s = s + cm; s = np.exp(s - s.max(-1, keepdims=True)); "
           "p = s / s.sum(-1, keepdims=True); p @ v")
NP_SDPA_RES = {"numpy": "p @ v"}
NP_SDPA_BWD = ("s = (q @ k.swapaxes(-1, -2)) * sc + cm; s = np.exp(s - s.max(-1, keepdims=True)); "
               "p = s / s.sum(-1, keepdims=True); dv = p.swapaxes(-1, -2) @ do; "
               "dp = do @ v.swapaxes(-1, -2); ds = p * (dp - (dp * p).sum(-1, keepdims=True)); "
               "dq = ds @ k * sc; dk = ds.swapaxes(-1, -2) @ q * sc")


def _ns(b, h, length, e, causal):
    def build(dtype):
        shape = (b, h, length, e)
        q = _common.randn(shape, dtype, 0)
        k = _common.randn(shape, dtype, 1)
        v = _common.randn(shape, dtype, 2)
        do = _common.randn(shape, dtype, 3)
        cm = np.zeros((length, length), dtype)
        if causal:
            cm[np.triu_indices(length, 1)] = -np.inf
        o, lse = fastdl._ext._attention.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                                     return_lse=True)
        return {"q": q, "k": k, "v": v, "do": do, "cm": cm, "o": o, "lse": lse,
                "sc": np.array(1.0 / np.sqrt(e), dtype)}
    return build


def cases(Case):
    out = []
    for length in (512, 1024):
        for causal in (False, True):
            c = "True" if causal else "False"
            flops = 4.0 * 64 * length * length * 64 * (0.5 if causal else 1.0)
            out.append(Case(
                "sdpa" + (" causal" if causal else ""), f"B8 H8 L{length} E64", "float32",
                _ns(8, 8, length, 64, causal),
                {"numpy": NP_SDPA, "fastdl": f"{SDPA}(q, k, v, is_causal={c})",
                 "torch": "torch.nn.functional.scaled_dot_product_attention(t_q, t_k, t_v, "
                          f"is_causal={c})"},
                NP_SDPA_RES, flops=flops))
    for length in (512,):
        out.append(Case(
            "sdpa backward (dQ,dK,dV)", f"B8 H8 L{length} E64", "float32",
            _ns(8, 8, length, 64, False),
            {"numpy": NP_SDPA_BWD,
             "fastdl": f"{SDPA_BWD}(do, q, k, v, o, lse)",
             "torch": "t_qg = t_q.detach().requires_grad_(); t_kg = t_k.detach().requires_grad_(); "
                      "t_vg = t_v.detach().requires_grad_(); "
                      "t_o = torch.nn.functional.scaled_dot_product_attention(t_qg, t_kg, t_vg); "
                      "t_o.backward(t_do)"},
            {"numpy": "(dq, dk, dv)", "torch": "(t_qg.grad, t_kg.grad, t_vg.grad)"},
            flops=8.0 * 64 * length * length * 64))
    return out
