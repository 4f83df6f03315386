"""compare.py cases for sum, mean and var (``--match sum``, ``--match mean``, ``--match var``).

NumPy's reductions run on one thread; fastdl and torch on ``--threads``. The NumPy statement is
NumPy's own reduction; torch runs on the same buffers (``t_x = torch.from_numpy(x)``). ``flops``
is the number of elements read per call, so compare.py's ``GFLOP/s`` column reads as
G elements/s (times 4 for GB/s in float32, times 8 in float64; var reads its input twice).
"""

import numpy as np

import fastdl
from fastdl._ext import _reduce

from benchmarks import _common

# Until fastdl re-exports sum/mean/var, bind them for this process so that the statements
# below read as users will write them.
for _name in ("sum", "mean", "var"):
    if not hasattr(fastdl, _name):
        setattr(fastdl, _name, getattr(_reduce, _name))

SQUARE = (4096, 4096)
NCHW = (32, 128, 28, 28)


def _ns(shape, out_shape=None):
    def build(dtype):
        ns = {"x": _common.randn(shape, dtype, 0)}
        if out_shape is not None:
            ns.update({"o_np": np.empty(out_shape, dtype), "o_fd": np.empty(out_shape, dtype),
                       "o_t": np.empty(out_shape, dtype)})
        return ns
    return build


def _stmts(numpy, fastdl_, torch):
    return {"numpy": numpy, "fastdl": fastdl_, "torch": torch}


def cases(Case):
    size = "x".join(map(str, SQUARE))
    n = SQUARE[0] * SQUARE[1]
    nchw = "x".join(map(str, NCHW))
    n_nchw = NCHW[0] * NCHW[1] * NCHW[2] * NCHW[3]
    out = []
    for dt in ("float32", "float64"):
        out.append(Case("sum axis=1", size, dt, _ns(SQUARE), _stmts(
            "np.sum(x, axis=1)", "fastdl.sum(x, axis=1)", "t_x.sum(1)"), flops=n))
    out.append(Case("sum axis=1 out=", size, "float32", _ns(SQUARE, SQUARE[0]), _stmts(
        "np.sum(x, axis=1, out=o_np)", "fastdl.sum(x, axis=1, out=o_fd)",
        "torch.sum(t_x, 1, out=t_o_t)"), {"numpy": "o_np", "fastdl": "o_fd", "torch": "t_o_t"},
        flops=n))
    for dt in ("float32", "float64"):
        out.append(Case("sum (all)", size, dt, _ns(SQUARE), _stmts(
            "np.sum(x)", "fastdl.sum(x)", "t_x.sum()"), flops=n))
    out.append(Case("sum axis=0", size, "float32", _ns(SQUARE), _stmts(
        "np.sum(x, axis=0)", "fastdl.sum(x, axis=0)", "t_x.sum(0)"), flops=n))
    for dt in ("float32", "float64"):
        out.append(Case("mean axis=0", size, dt, _ns(SQUARE), _stmts(
            "np.mean(x, axis=0)", "fastdl.mean(x, axis=0)", "t_x.mean(0)"), flops=n))
    out.append(Case("mean axis=1", size, "float32", _ns(SQUARE), _stmts(
        "np.mean(x, axis=1)", "fastdl.mean(x, axis=1)", "t_x.mean(1)"), flops=n))
    out.append(Case("mean axis=(0,2,3)", nchw, "float32", _ns(NCHW), _stmts(
        "np.mean(x, axis=(0, 2, 3))", "fastdl.mean(x, axis=(0, 2, 3))",
        "t_x.mean((0, 2, 3))"), flops=n_nchw))
    for axis, t_axis in (("0", "0"), ("1", "1"), ("None", None)):
        t_stmt = (f"torch.var(t_x, {t_axis}, correction=0)" if t_axis is not None
                  else "torch.var(t_x, correction=0)")
        label = "var (all)" if axis == "None" else f"var axis={axis}"
        out.append(Case(label, size, "float32", _ns(SQUARE), _stmts(
            f"np.var(x, axis={axis})", f"fastdl.var(x, axis={axis})", t_stmt), flops=n))
    out.append(Case("var axis=(0,2,3)", nchw, "float32", _ns(NCHW), _stmts(
        "np.var(x, axis=(0, 2, 3))", "fastdl.var(x, axis=(0, 2, 3))",
        "torch.var(t_x, (0, 2, 3), correction=0)"), flops=n_nchw))
    # per-call overhead
    for op in ("sum", "mean", "var"):
        t_stmt = "torch.var(t_x, correction=0)" if op == "var" else f"t_x.{op}()"
        out.append(Case(op, "16", "float32", _ns((16,)), _stmts(
            f"np.{op}(x)", f"fastdl.{op}(x)", t_stmt), tiny=True))
    return out
