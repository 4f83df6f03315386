"""compare.py cases: softmax family and losses, NumPy (cheat-sheet formulas) vs fastdl vs torch.

Run e.g. ``python asv_benchmarks/compare.py --match softmax`` (also ``--match entropy``,
``--match mse``, ``--match copy``). The "copy" row is the floor of the memory-bound rows: the
same bytes copied (every column runs a copy; fastdl has none of its own, so its column is
``np.copyto``).
"""

import numpy as np

import fastdl
from fastdl._ext import _losses, _softmax  # noqa: F401  (fastdl._ext._softmax.* below)

from benchmarks import _common


def _fd(name, module):
    """The statement's fastdl callable: the public name once the package re-exports it."""
    return f"fastdl.{name}" if hasattr(fastdl, name) else f"fastdl._ext.{module}.{name}"


SOFTMAX = _fd("softmax", "_softmax")
LOG_SOFTMAX = _fd("log_softmax", "_softmax")
SOFTMAX_BWD = _fd("softmax_backward", "_softmax")
LOG_SOFTMAX_BWD = _fd("log_softmax_backward", "_softmax")
SCE = _fd("softmax_cross_entropy", "_losses")
CE = _fd("cross_entropy", "_losses")
CE_GRAD = _fd("cross_entropy_grad", "_losses")
MSE = _fd("mse", "_losses")
MSE_GRAD = _fd("mse_grad", "_losses")

NP_SOFTMAX = "e = np.exp(x - x.max({ax}, keepdims=True)); e / e.sum({ax}, keepdims=True)"
NP_SOFTMAX_RES = "e / e.sum({ax}, keepdims=True)"


def _softmax_ns(rows, cols):
    def build(dtype):
        x = _common.randn((rows, cols), dtype, 0, scale=3.0)
        e = np.exp(x - x.max(-1, keepdims=True))
        y = e / e.sum(-1, keepdims=True)
        return {"x": x, "dy": _common.randn((rows, cols), dtype, 1), "y": y,
                "ly": np.log(y), "out": np.empty_like(x)}
    return build


def _sce_ns(rows, cols):
    def build(dtype):
        return {"x": _common.randn((rows, cols), dtype, 0, scale=3.0),
                "lab": _common.rng(1).integers(0, cols, rows),
                "rows": np.arange(rows)}
    return build


def _prob_ns(rows, cols):
    def build(dtype):
        t = _common.uniform((rows, cols), dtype, 0, low=0.0, high=1.0)
        t /= t.sum(-1, keepdims=True)
        p = _common.uniform((rows, cols), dtype, 1, low=0.01, high=1.0)
        p /= p.sum(-1, keepdims=True)
        return {"t": t, "p": p}
    return build


def _pair_ns(rows, cols):
    def build(dtype):
        return {"t": _common.randn((rows, cols), dtype, 0), "p": _common.randn((rows, cols), dtype, 1)}
    return build


def _softmax_stmts(axis):
    ax = str(axis)
    return ({"numpy": NP_SOFTMAX.format(ax=ax), "fastdl": f"{SOFTMAX}(x, {ax})",
             "torch": f"torch.softmax(t_x, {ax})"},
            {"numpy": NP_SOFTMAX_RES.format(ax=ax)})


SOFTMAX_OUT = {
    "numpy": "np.subtract(x, x.max(-1, keepdims=True), out=out); np.exp(out, out=out); "
             "np.divide(out, out.sum(-1, keepdims=True), out=out)",
    "fastdl": f"{SOFTMAX}(x, out=out)",
    "torch": "torch._softmax(t_x, -1, False, out=t_out)"}
SOFTMAX_OUT_RES = {"numpy": "out", "fastdl": "out", "torch": "t_out"}

LOG_SOFTMAX_STMTS = {
    "numpy": "z = x - x.max(-1, keepdims=True); z - np.log(np.exp(z).sum(-1, keepdims=True))",
    "fastdl": f"{LOG_SOFTMAX}(x)", "torch": "torch.log_softmax(t_x, -1)"}
LOG_SOFTMAX_RES = {"numpy": "z - np.log(np.exp(z).sum(-1, keepdims=True))"}

# torch's own backward kernels (what autograd calls for softmax / log_softmax)
SOFTMAX_BWD_STMTS = {
    "numpy": "y * (dy - (dy * y).sum(-1, keepdims=True))",
    "fastdl": f"{SOFTMAX_BWD}(dy, y)",
    "torch": "torch._softmax_backward_data(t_dy, t_y, -1, t_y.dtype)"}
LOG_SOFTMAX_BWD_STMTS = {
    "numpy": "dy - np.exp(ly) * dy.sum(-1, keepdims=True)",
    "fastdl": f"{LOG_SOFTMAX_BWD}(dy, ly)",
    "torch": "torch._log_softmax_backward_data(t_dy, t_ly, -1, t_ly.dtype)"}

# softmax + log + gather + gradient (mean over the batch), the NumPy way
NP_SCE_GRAD = ("e = np.exp(x - x.max(-1, keepdims=True)); p = e / e.sum(-1, keepdims=True); "
               "loss = -np.log(p[rows, lab]).mean(); p[rows, lab] -= 1; p /= p.shape[0]")
SCE_GRAD_STMTS = {
    "numpy": NP_SCE_GRAD,
    "fastdl": f"{SCE}(x, lab, return_grad=True)",
    "torch": "t_xg = t_x.detach().requires_grad_(); "
             "t_l = torch.nn.functional.cross_entropy(t_xg, t_lab); t_l.backward()"}
SCE_GRAD_RES = {"numpy": "(loss, p)", "torch": "(t_l.detach(), t_xg.grad)"}
SCE_STMTS = {
    "numpy": "z = x - x.max(-1, keepdims=True); "
             "-(z[rows, lab] - np.log(np.exp(z).sum(-1))).mean()",
    "fastdl": f"{SCE}(x, lab)",
    "torch": "torch.nn.functional.cross_entropy(t_x, t_lab)"}
SCE_RES = {"numpy": "-(z[rows, lab] - np.log(np.exp(z).sum(-1))).mean()"}

CE_STMTS = {"numpy": "-np.sum(t * np.log(p))", "fastdl": f"{CE}(t, p)",
            "torch": "-(t_t * torch.log(t_p)).sum()"}
CE_GRAD_STMTS = {"numpy": "-t / p", "fastdl": f"{CE_GRAD}(t, p)", "torch": "-t_t / t_p"}
MSE_STMTS = {"numpy": "np.mean((t - p) ** 2)", "fastdl": f"{MSE}(t, p)",
             "torch": "torch.nn.functional.mse_loss(t_p, t_t)"}
MSE_GRAD_STMTS = {"numpy": "2 * (p - t) / t.size", "fastdl": f"{MSE_GRAD}(t, p)",
                  "torch": "2 * (t_p - t_t) / t_t.numel()"}

COPY_STMTS = {"numpy": "np.copyto(out, x)", "fastdl": "np.copyto(out, x)",
              "torch": "t_out.copy_(t_x)"}
COPY_RES = {"numpy": "out", "fastdl": "out", "torch": "t_out"}


def cases(Case):
    out = []
    out.append(Case("copy (floor: 16 MiB in, 16 MiB out)", "4096x1024", "float32",
                    _softmax_ns(4096, 1024), COPY_STMTS, COPY_RES))
    for dt in ("float32", "float64"):
        stmts, res = _softmax_stmts(-1)
        out.append(Case("softmax", "4096x1024", dt, _softmax_ns(4096, 1024), stmts, res))
    stmts, res = _softmax_stmts(-1)
    out.append(Case("softmax", "512x32000", "float32", _softmax_ns(512, 32000), stmts, res))
    out.append(Case("softmax out=", "4096x1024", "float32", _softmax_ns(4096, 1024),
                    SOFTMAX_OUT, SOFTMAX_OUT_RES))
    stmts, res = _softmax_stmts(0)
    out.append(Case("softmax axis=0", "4096x1024", "float32", _softmax_ns(4096, 1024), stmts,
                    res))
    out.append(Case("log_softmax", "4096x1024", "float32", _softmax_ns(4096, 1024),
                    LOG_SOFTMAX_STMTS, LOG_SOFTMAX_RES))
    out.append(Case("softmax_backward", "4096x1024", "float32", _softmax_ns(4096, 1024),
                    SOFTMAX_BWD_STMTS))
    out.append(Case("log_softmax_backward", "4096x1024", "float32", _softmax_ns(4096, 1024),
                    LOG_SOFTMAX_BWD_STMTS))
    for shape, dts in (((4096, 1000), ("float32", "float64")), ((512, 32000), ("float32",))):
        for dt in dts:
            out.append(Case("softmax_cross_entropy + grad (int labels, mean)",
                            f"{shape[0]}x{shape[1]}", dt, _sce_ns(*shape), SCE_GRAD_STMTS,
                            SCE_GRAD_RES))
    out.append(Case("softmax_cross_entropy loss only (int labels, mean)", "4096x1000",
                    "float32", _sce_ns(4096, 1000), SCE_STMTS, SCE_RES))
    out.append(Case("cross_entropy -sum(t*log(p))", "4096x1000", "float32", _prob_ns(4096, 1000),
                    CE_STMTS))
    out.append(Case("cross_entropy_grad -t/p", "4096x1000", "float32", _prob_ns(4096, 1000),
                    CE_GRAD_STMTS))
    out.append(Case("mse mean((t-p)**2)", "4096x4096", "float32", _pair_ns(4096, 4096),
                    MSE_STMTS))
    out.append(Case("mse_grad 2(p-t)/N", "4096x4096", "float32", _pair_ns(4096, 4096),
                    MSE_GRAD_STMTS))
    stmts, res = _softmax_stmts(-1)
    out.append(Case("softmax", "4x4", "float32", _softmax_ns(4, 4), stmts, res, tiny=True))
    return out
