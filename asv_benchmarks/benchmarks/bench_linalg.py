"""asv benchmarks: matmul, linear, linear backward and the batched einsum, NumPy vs fastdl.

Each class is parametrised by ``impl`` ('numpy' or 'fastdl'), ``dtype`` and a size. The NumPy
side is the cheat-sheet formula (``X @ W + b``, ``np.matmul``, ``np.einsum('bij,bjk->bik')``,
``dy @ W.T, X.T @ dy, dy.sum(0)``). ``setup`` pins threads and builds seeded inputs once per
process (``_common.cached``: asv re-runs ``setup`` before every sample); each ``time_*`` method
makes only the call being measured. ``TinyCalls`` has no ``setup``, so that asv times its
sub-microsecond calls in batches (see ``_common``).

Which BLAS each side uses (both pinned to ``_common.THREADS`` = 2 threads by default):

* **numpy**: NumPy's own bundled OpenBLAS (``libscipy_openblas64_``, ILP64, pthreads). NumPy
  threads a GEMM itself; its thread count is set through threadpoolctl.
* **fastdl**: the BLAS *provider* chosen at import (``FASTDL_BLAS=auto|numpy|scipy``, default
  ``auto``). ``auto`` picks **the same library as NumPy** (its ILP64 OpenBLAS, called through
  ``scipy_sgemm_64_``/``scipy_dgemm_64_``) when NumPy's wheel has it, else SciPy's bundled
  OpenBLAS (``libscipy_openblas``, LP64) through ``scipy.linalg.cython_blas``. Either way fastdl
  cuts a GEMM into tiles and runs them on its own OpenMP threads (``fastdl.set_num_threads``),
  each tile a single-threaded BLAS call. ``fastdl.show_config()`` prints ``blas_provider`` and
  the library. To benchmark the other provider, run asv (or ``compare.py``) with
  ``FASTDL_BLAS=scipy`` in the environment; asv passes it on to the benchmark processes.

Note (PERF.md, "OpenBLAS spin"): after a threaded NumPy GEMM, OpenBLAS's idle threads spin for
about 0.1 s; asv runs every benchmark in its own process, so they do not disturb one another
here (``compare.py`` pauses between libraries for the same reason).
"""

import functools

import numpy as np

import fastdl

from ._common import DTYPES, IMPLS, cached, linear_inputs, pin_threads, randn

pin_threads()


def _linear_case(shape, dtype):
    """(X, W, b, Y) for a shape label 'rows x in x out', built once per process."""
    rows, n_in, n_out = (int(s) for s in shape.split("x"))

    def build():
        return linear_inputs(rows, n_in, n_out, dtype) + (np.empty((rows, n_out), dtype),)
    return cached(("linear", shape, dtype), build)


# --------------------------------------------------------------------------------------
# matmul

class MatMul:
    """Square ``C = A @ B`` (n^3): ``np.matmul`` vs ``fastdl.matmul``, allocating and ``out=``."""

    params = (IMPLS, DTYPES, [512, 1024])
    param_names = ["impl", "dtype", "n"]

    def setup(self, impl, dtype, n):
        pin_threads()
        self.a, self.b, self.c = cached(("matmul", n, dtype), lambda: (
            randn((n, n), dtype, seed=0), randn((n, n), dtype, seed=1),
            np.empty((n, n), dtype=dtype)))
        self.numpy = impl == "numpy"

    def time_matmul(self, impl, dtype, n):
        if self.numpy:
            np.matmul(self.a, self.b)
        else:
            fastdl.matmul(self.a, self.b)

    def time_matmul_out(self, impl, dtype, n):
        if self.numpy:
            np.matmul(self.a, self.b, out=self.c)
        else:
            fastdl.matmul(self.a, self.b, out=self.c)


# --------------------------------------------------------------------------------------
# linear: Y = X @ W + b, W of shape (in, out)

class Linear:
    """``Y = X @ W + b``: the cheat sheet's ``X @ W + b`` vs ``fastdl.linear`` (bias fused)."""

    params = (IMPLS, DTYPES, ["256x1024x1024", "32x512x512"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        self.x, self.w, self.b, self.y = _linear_case(shape, dtype)
        self.numpy = impl == "numpy"

    def time_linear(self, impl, dtype, shape):
        if self.numpy:
            self.x @ self.w + self.b
        else:
            fastdl.linear(self.x, self.w, self.b)

    def time_linear_out(self, impl, dtype, shape):
        # NumPy's best out= form: the GEMM into y, then the bias added in place.
        if self.numpy:
            np.matmul(self.x, self.w, out=self.y)
            np.add(self.y, self.b, out=self.y)
        else:
            fastdl.linear(self.x, self.w, self.b, out=self.y)


class LinearMemory:
    """Peak memory of one ``linear`` call at the big shape (NumPy makes a temporary for ``+ b``)."""

    params = (IMPLS, DTYPES)
    param_names = ["impl", "dtype"]
    shape = "256x1024x1024"

    def setup(self, impl, dtype):
        pin_threads()
        self.x, self.w, self.b, _ = _linear_case(self.shape, dtype)
        self.numpy = impl == "numpy"

    def peakmem_linear(self, impl, dtype):
        if self.numpy:
            self.x @ self.w + self.b
        else:
            fastdl.linear(self.x, self.w, self.b)


class LinearBackward:
    """Gradients of ``Y = X @ W + b``: ``dy @ W.T, X.T @ dy, dy.sum(0)`` vs ``fastdl.linear_backward``."""

    params = (IMPLS, DTYPES, ["256x1024x1024"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        self.x, self.w, _, y = _linear_case(shape, dtype)
        self.dy = cached(("dy", shape, dtype), lambda: randn(y.shape, dtype, seed=3))
        self.numpy = impl == "numpy"

    def time_linear_backward(self, impl, dtype, shape):
        if self.numpy:
            dy = self.dy
            dy @ self.w.T, self.x.T @ dy, dy.sum(0)
        else:
            fastdl.linear_backward(self.dy, self.x, self.w)


# --------------------------------------------------------------------------------------
# batched einsum 'bij,bjk->bik'

class BatchedEinsum:
    """``einsum('bij,bjk->bik')`` on 64 x (128x128 @ 128x128).

    impl 'numpy' is the cheat sheet's ``np.einsum`` (no BLAS for a batch index);
    'numpy-matmul' is ``np.matmul`` on the same stacks, NumPy's fastest way to the same result,
    a second baseline; 'fastdl' is ``fastdl.einsum`` (a batched GEMM).
    """

    params = (IMPLS[:1] + ("numpy-matmul",) + IMPLS[1:], DTYPES, ["64x128x128x128"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        batch, m, k, n = (int(s) for s in shape.split("x"))
        self.a, self.b = cached(("bmm", shape, dtype), lambda: (
            randn((batch, m, k), dtype, seed=0), randn((batch, k, n), dtype, seed=1)))

    def time_einsum(self, impl, dtype, shape):
        if impl == "numpy":
            np.einsum("bij,bjk->bik", self.a, self.b)
        elif impl == "numpy-matmul":
            np.matmul(self.a, self.b)
        else:
            fastdl.einsum("bij,bjk->bik", self.a, self.b)


# --------------------------------------------------------------------------------------
# per-call overhead on tiny inputs

def _tiny_calls():
    """One zero-argument callable per (op, impl, dtype); both sides wrapped the same way."""
    calls = {}
    for dtype in DTYPES:
        a, b = randn((4, 4), dtype, seed=0), randn((4, 4), dtype, seed=1)
        x, w, bias = linear_inputs(1, 16, 16, dtype)
        calls["matmul", "numpy", dtype] = functools.partial(lambda a, b: np.matmul(a, b), a, b)
        calls["matmul", "fastdl", dtype] = functools.partial(
            lambda a, b: fastdl.matmul(a, b), a, b)
        calls["linear", "numpy", dtype] = functools.partial(
            lambda x, w, b: x @ w + b, x, w, bias)
        calls["linear", "fastdl", dtype] = functools.partial(
            lambda x, w, b: fastdl.linear(x, w, b), x, w, bias)
    return calls


_TINY = _tiny_calls()


class TinyCalls:
    """Per-call overhead: matmul 4x4 @ 4x4 and linear 1x16 @ 16x16 + b.

    No ``setup`` on purpose: with one, asv would time each sub-microsecond call on its own,
    right after re-running setup (asv#966), and report cold-call times of several µs. Without
    it asv batches the calls. The inputs are built at import (microseconds) and the threads
    were pinned at import. Each figure includes the same ~0.1-0.2 µs of harness (dict look-up,
    partial, method call) on both sides; ``compare.py`` measures these without it.
    """

    params = (IMPLS, DTYPES)
    param_names = ["impl", "dtype"]

    def time_matmul_4x4(self, impl, dtype):
        _TINY["matmul", impl, dtype]()

    def time_linear_1x16(self, impl, dtype):
        _TINY["linear", impl, dtype]()
