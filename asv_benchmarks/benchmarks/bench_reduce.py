"""asv benchmarks: sum, mean and var, NumPy vs fastdl.

Each class is parametrised by ``impl`` ('numpy' or 'fastdl'), ``dtype`` and a size. The NumPy
side is NumPy's own reduction (``np.sum(x, axis=1)``, ``np.sum(x)``, ``np.mean(x, axis=0)``,
``np.var(x, axis=...)``), which runs on one thread whatever the setting; fastdl runs on
``_common.THREADS`` threads (2 by default). ``setup`` pins threads and builds seeded inputs
once per process (``_common.cached``); each ``time_*`` method makes only the call measured.

What the cases stress (include/fastdl/reduce.h, src/fastdl/_ext/_reduce.pyx):

* ``axis=1`` of a C array: one contiguous row per output, rows spread over the threads;
* ``axis=None``: one long contiguous sum cut into fixed 256 KiB chunks;
* ``axis=0``: column sums, rows added vectorised along the contiguous axis (NumPy adds row by
  row, with an error growing like n; fastdl sums pairwise);
* ``(0, 2, 3)`` of an NCHW batch (batch-norm statistics): two stages (each channel's
  contiguous planes, then the batch axis);
* ``TinyReductions``: per-call overhead on 16 elements (no ``setup``: asv batches the calls).
"""

import functools

import numpy as np

import fastdl
from fastdl._ext import _reduce

from ._common import DTYPES, IMPLS, cached, pin_threads, randn

pin_threads()

# fastdl.sum/mean/var once the package re-exports them, the extension's functions until then.
SUM = getattr(fastdl, "sum", _reduce.sum)
MEAN = getattr(fastdl, "mean", _reduce.mean)
VAR = getattr(fastdl, "var", _reduce.var)

SQUARE = "4096x4096"


def _matrix(size, dtype):
    rows, cols = (int(s) for s in size.split("x"))
    return cached(("reduce", size, dtype), lambda: randn((rows, cols), dtype, seed=0))


class Sum:
    """``np.sum`` vs ``fastdl.sum`` over the last axis, all elements and the first axis."""

    params = (IMPLS, DTYPES, [SQUARE, "256x256"])
    param_names = ["impl", "dtype", "size"]

    def setup(self, impl, dtype, size):
        pin_threads()
        self.x = _matrix(size, dtype)
        self.out = cached(("reduce-out", size, dtype), lambda: np.empty(self.x.shape[0], dtype))
        self.numpy = impl == "numpy"

    def time_sum_axis1(self, impl, dtype, size):
        if self.numpy:
            np.sum(self.x, axis=1)
        else:
            SUM(self.x, axis=1)

    def time_sum_axis1_out(self, impl, dtype, size):
        if self.numpy:
            np.sum(self.x, axis=1, out=self.out)
        else:
            SUM(self.x, axis=1, out=self.out)

    def time_sum_all(self, impl, dtype, size):
        if self.numpy:
            np.sum(self.x)
        else:
            SUM(self.x)

    def time_sum_axis0(self, impl, dtype, size):
        if self.numpy:
            np.sum(self.x, axis=0)
        else:
            SUM(self.x, axis=0)


class Mean:
    """``np.mean`` vs ``fastdl.mean`` over the first and the last axis."""

    params = (IMPLS, DTYPES, [SQUARE])
    param_names = ["impl", "dtype", "size"]

    def setup(self, impl, dtype, size):
        pin_threads()
        self.x = _matrix(size, dtype)
        self.numpy = impl == "numpy"

    def time_mean_axis0(self, impl, dtype, size):
        if self.numpy:
            np.mean(self.x, axis=0)
        else:
            MEAN(self.x, axis=0)

    def time_mean_axis1(self, impl, dtype, size):
        if self.numpy:
            np.mean(self.x, axis=1)
        else:
            MEAN(self.x, axis=1)


class Var:
    """``np.var`` vs ``fastdl.var`` (two passes over the input) on three axes."""

    params = (IMPLS, DTYPES, [SQUARE])
    param_names = ["impl", "dtype", "size"]

    def setup(self, impl, dtype, size):
        pin_threads()
        self.x = _matrix(size, dtype)
        self.numpy = impl == "numpy"

    def time_var_axis0(self, impl, dtype, size):
        if self.numpy:
            np.var(self.x, axis=0)
        else:
            VAR(self.x, axis=0)

    def time_var_axis1(self, impl, dtype, size):
        if self.numpy:
            np.var(self.x, axis=1)
        else:
            VAR(self.x, axis=1)

    def time_var_all(self, impl, dtype, size):
        if self.numpy:
            np.var(self.x)
        else:
            VAR(self.x)


class BatchStatistics:
    """Batch-norm statistics: mean and var over axes (0, 2, 3) of an NCHW batch."""

    params = (IMPLS, ["float32"], ["32x128x28x28"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        dims = tuple(int(s) for s in shape.split("x"))
        self.x = cached(("nchw", shape, dtype), lambda: randn(dims, dtype, seed=0))
        self.numpy = impl == "numpy"

    def time_mean_nchw(self, impl, dtype, shape):
        if self.numpy:
            np.mean(self.x, axis=(0, 2, 3))
        else:
            MEAN(self.x, axis=(0, 2, 3))

    def time_var_nchw(self, impl, dtype, shape):
        if self.numpy:
            np.var(self.x, axis=(0, 2, 3))
        else:
            VAR(self.x, axis=(0, 2, 3))


def _tiny_calls():
    calls = {}
    for dtype in DTYPES:
        x = randn((16,), dtype, seed=0)
        for op, np_func, fd_func in (("sum", np.sum, SUM), ("mean", np.mean, MEAN),
                                     ("var", np.var, VAR)):
            calls[op, "numpy", dtype] = functools.partial(np_func, x)
            calls[op, "fastdl", dtype] = functools.partial(fd_func, x)
    return calls


_TINY = _tiny_calls()


class TinyReductions:
    """Per-call overhead: sum, mean and var of 16 elements (no ``setup``: batched by asv)."""

    params = (IMPLS, DTYPES)
    param_names = ["impl", "dtype"]

    def time_sum_16(self, impl, dtype):
        _TINY["sum", impl, dtype]()

    def time_mean_16(self, impl, dtype):
        _TINY["mean", impl, dtype]()

    def time_var_16(self, impl, dtype):
        _TINY["var", impl, dtype]()
