"""compare.py cases: optimiser steps, clip_grad_norm_ and the penalties, NumPy (cheat-sheet
formulas) vs fastdl vs torch (fused / foreach optimisers on the same buffers).

Run e.g. ``python asv_benchmarks/compare.py --match optim --quick``. Each side updates its own
copy of the parameters and state (w_np, w_fd, w_t, ...), starting from the same values, so the
accuracy check compares the weights after the same two warm-up steps. Optimiser objects live
in this module (``S``): compare.py's namespace holds only arrays, so the statements reach them
through ``import compare_cases.optim as B`` (a cached import, ~0.1 us, nothing next to a step).

Floor: Adam on 10M float32 moves 4 x 40 MB in and 3 x 40 MB out; the "copy" row copies
140 MB into 140 MB, the same 280 MB, in the same run.
"""

import numpy as np

import fastdl

from benchmarks import _common

S = {}
N = 10_000_000
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8

NP_ADAM = ("m[...] = B1 * m + (1 - B1) * g; v[...] = B2 * v + (1 - B2) * g**2; "
           "m_hat = m / (1 - B1**t); v_hat = v / (1 - B2**t); "
           "w[...] = w - LR * m_hat / (np.sqrt(v_hat) + EPS)")


def np_adam(w, g, m, v, t):
    exec(NP_ADAM, {"np": np, "B1": B1, "B2": B2, "LR": LR, "EPS": EPS, "t": t,
                   "w": w, "g": g, "m": m, "v": v})


def np_adam_direct(w, g, m, v, t):
    """The cheat sheet's 7 lines, assigned back into the arrays."""
    m[...] = B1 * m + (1 - B1) * g
    v[...] = B2 * v + (1 - B2) * g**2
    m_hat = m / (1 - B1**t)
    v_hat = v / (1 - B2**t)
    w[...] = w - LR * m_hat / (np.sqrt(v_hat) + EPS)


def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def _sides(key, shapes, dtype, nstate):
    """Per side: params, grads (shared values), state; the torch params wrap the t-copies."""
    ws = [_common.randn(s, dtype, 10 + i) for i, s in enumerate(shapes)]
    gs = [_common.randn(s, dtype, 1000 + i) for i, s in enumerate(shapes)]
    for side in ("np", "fd", "t"):
        S[f"{key}_w_{side}"] = [w.copy() for w in ws]
        S[f"{key}_s_{side}"] = [[np.zeros_like(w) for w in ws] for _ in range(nstate)]
        S[f"{key}_t_{side}"] = [0]
    S[f"{key}_g"] = gs
    return ws, gs


def _adam_ns(key, shapes, torch_kind):
    def build(dtype):
        _sides(key, shapes, dtype, 2)
        S[f"{key}_opt_fd"] = fastdl.optim.Adam(S[f"{key}_w_fd"], lr=LR)
        torch = _torch()
        if torch is not None:
            params = [torch.from_numpy(w) for w in S[f"{key}_w_t"]]
            for p, g in zip(params, S[f"{key}_g"]):
                p.grad = torch.from_numpy(g)
            kw = {"fused": True} if torch_kind == "fused" else {"foreach": True}
            S[f"{key}_opt_t"] = torch.optim.Adam(params, lr=LR, **kw)
        return {}
    return build


def _adam_stmts(key, functional=False):
    fd = (f"B.fastdl.optim.adam_(B.S['{key}_w_fd'], B.S['{key}_g'], *B.S['{key}_s_fd'], "
          f"B.S['{key}_t_fd'][0] + 1, lr=B.LR); B.S['{key}_t_fd'][0] += 1") if functional \
        else f"B.S['{key}_opt_fd'].step(B.S['{key}_g'])"
    imp = "import compare_cases.optim as B; "
    stmts = {
        "numpy": imp + f"c = B.S['{key}_t_np']; c[0] += 1; "
                 f"[B.np_adam_direct(w, g, m, v, c[0]) for w, g, m, v in zip("
                 f"B.S['{key}_w_np'], B.S['{key}_g'], *B.S['{key}_s_np'])]",
        "fastdl": imp + fd,
        "torch": imp + f"B.S['{key}_opt_t'].step()"}
    # the warm-up exec of a statement bound B in the namespace
    res = {"numpy": f"B.S['{key}_w_np']", "fastdl": f"B.S['{key}_w_fd']",
           "torch": f"B.S['{key}_w_t']"}
    return stmts, res


def _flat_ns(n, nstate):
    def build(dtype):
        d = {"g": _common.randn((n,), dtype, 1)}
        w = _common.randn((n,), dtype, 0)
        for side in ("np", "fd", "t"):
            d[f"w_{side}"] = w.copy()
            for k in range(nstate):
                d[f"s{k}_{side}"] = np.zeros_like(w)
        return d
    return build


SGD = {"numpy": "np.subtract(w_np, 0.01 * g, out=w_np)",  # w -= lr * g
       "fastdl": "fastdl.optim.sgd_(w_fd, g, 0.01)",
       "torch": "t_w_t.add_(t_g, alpha=-0.01)"}
SGD_RES = {"numpy": "w_np", "fastdl": "w_fd", "torch": "w_t"}
MOMENTUM = {"numpy": "np.multiply(s0_np, 0.9, out=s0_np); np.subtract(s0_np, 0.01 * g, out=s0_np); "
                      "np.add(w_np, s0_np, out=w_np)",
            "fastdl": "fastdl.optim.momentum_(w_fd, g, s0_fd, 0.01, 0.9)",
            "torch": "t_s0_t.mul_(0.9).add_(t_g, alpha=-0.01); t_w_t.add_(t_s0_t)"}
COPY = {"numpy": "np.copyto(s0_np, w_np)", "fastdl": "np.copyto(s0_fd, w_fd)",
        "torch": "t_s0_t.copy_(t_w_t)"}
COPY_RES = {"numpy": "s0_np", "fastdl": "s0_fd", "torch": "s0_t"}

CLIP = {"numpy": "n = float(np.sqrt(np.sum(w_np**2) + np.sum(g**2))); c = 1e9 / (n + 1e-6)",
        "fastdl": "fastdl.clip_grad_norm_([w_fd, g], 1e9)",
        # clip_grad_norm_'s own float32 norm (torch._foreach_norm) was 3.7e-4 off on these 20M
        # values, beyond the check's 1e-4: torch's row accumulates in float64, as fastdl does
        "torch": "torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm("
                 "x, dtype=torch.float64) for x in (t_w_t, t_g)]))"}


def _pen_ns(n):
    def build(dtype):
        return {"w": _common.randn((n,), dtype, 0)}
    return build


PENALTIES = [
    ("l1_penalty", {"numpy": "0.1 * np.sum(np.abs(w))", "fastdl": "fastdl.l1_penalty(w, 0.1)",
                    "torch": "0.1 * t_w.abs().sum()"}),
    ("l2_penalty", {"numpy": "0.1 * np.sum(w**2)", "fastdl": "fastdl.l2_penalty(w, 0.1)",
                    "torch": "0.1 * (t_w * t_w).sum()"}),
    ("l1_penalty_grad", {"numpy": "0.1 * np.sign(w)", "fastdl": "fastdl.l1_penalty_grad(w, 0.1)",
                         "torch": "0.1 * torch.sign(t_w)"}),
    ("l2_penalty_grad", {"numpy": "2 * 0.1 * w", "fastdl": "fastdl.l2_penalty_grad(w, 0.1)",
                         "torch": "2 * 0.1 * t_w"}),
]


def _tiny_ns(key):
    def build(dtype):
        _sides(key, [(16,)], dtype, 2)
        S[f"{key}_opt_fd"] = fastdl.optim.Adam(S[f"{key}_w_fd"], lr=LR)
        torch = _torch()
        if torch is not None:
            p = torch.from_numpy(S[f"{key}_w_t"][0])
            p.grad = torch.from_numpy(S[f"{key}_g"][0])
            S[f"{key}_opt_t"] = torch.optim.Adam([p], lr=LR, fused=True)
        return {}
    return build


def cases(Case):
    out = [Case("optim copy (floor of adam: 280 MB moved)", "35M", "float32",
                _flat_ns(35_000_000, 1), COPY, COPY_RES)]
    for kind in ("fused", "foreach"):
        stmts, res = _adam_stmts("a10m" + kind)
        out.append(Case(f"optim adam step (torch {kind})", "10M", "float32",
                        _adam_ns("a10m" + kind, [(N,)], kind), stmts, res))
    stmts, res = _adam_stmts("a10mf", functional=True)
    out.append(Case("optim adam_ functional (torch fused)", "10M", "float32",
                    _adam_ns("a10mf", [(N,)], "fused"), stmts, res))
    for kind in ("fused", "foreach"):
        stmts, res = _adam_stmts("a200" + kind)
        out.append(Case(f"optim adam step, 200 arrays (torch {kind})", "200x50K", "float32",
                        _adam_ns("a200" + kind, [(50_000,)] * 200, kind), stmts, res))
    out.append(Case("optim sgd_", "10M", "float32", _flat_ns(N, 0), SGD, SGD_RES))
    out.append(Case("optim momentum_", "10M", "float32", _flat_ns(N, 1), MOMENTUM, SGD_RES))
    out.append(Case("optim clip_grad_norm_ (no clip)", "2x10M", "float32", _flat_ns(N, 0),
                    CLIP, {"numpy": "n"}))
    for name, stmts in PENALTIES:
        out.append(Case(f"optim {name}", "10M", "float32", _pen_ns(N), stmts))
    stmts, res = _adam_stmts("tiny")
    out.append(Case("optim adam step, one 16-element param (torch fused)", "16", "float32",
                    _tiny_ns("tiny"), stmts, res, tiny=True))
    return out
