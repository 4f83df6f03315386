"""asv benchmarks: softmax, log_softmax and their backward, NumPy vs fastdl.

Each class is parametrised by ``impl`` ('numpy' or 'fastdl'), ``dtype`` and a shape. The NumPy
side is the cheat-sheet formula made stable, as a NumPy user writes it:

* softmax: ``e = np.exp(x - x.max(-1, keepdims=True)); e / e.sum(-1, keepdims=True)``
* log_softmax: ``z = x - x.max(-1, keepdims=True); z - np.log(np.exp(z).sum(-1, keepdims=True))``
* softmax backward: ``y * (dy - (dy * y).sum(-1, keepdims=True))``
* log_softmax backward: ``dy - np.exp(y) * dy.sum(-1, keepdims=True)``

Bytes moved (the floor): softmax of 4096x1024 float32 reads 16 MiB and writes 16 MiB, like a
copy; the backward reads 32 MiB and writes 16 MiB. ``setup`` pins threads and builds seeded
inputs once per process (``_common.cached``); ``time_*`` makes only the measured call.
``TinyCalls`` has no ``setup``, so that asv times its microsecond calls in batches.
"""

import functools

import numpy as np

import fastdl

from ._common import DTYPES, IMPLS, cached, pin_threads, randn

pin_threads()


def _fastdl(name):
    """fastdl's public function once the package re-exports it, else the extension's own."""
    from fastdl._ext import _softmax
    return getattr(fastdl, name, None) or getattr(_softmax, name)


softmax = _fastdl("softmax")
log_softmax = _fastdl("log_softmax")
softmax_backward = _fastdl("softmax_backward")
log_softmax_backward = _fastdl("log_softmax_backward")


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def np_log_softmax(x, axis=-1):
    z = x - x.max(axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis, keepdims=True))


def np_softmax_out(x, out, axis=-1):
    """NumPy's best out= form: every step in place in ``out``."""
    np.subtract(x, x.max(axis, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis, keepdims=True)
    return out


def _inputs(shape, dtype):
    """(x, dy, y = softmax(x), ly = log_softmax(x), out) for a shape label 'RxC', built once."""
    rows, cols = (int(s) for s in shape.split("x"))

    def build():
        x = randn((rows, cols), dtype, seed=0, scale=3.0)
        dy = randn((rows, cols), dtype, seed=1)
        return x, dy, np_softmax(x), np_log_softmax(x), np.empty_like(x)
    return cached(("softmax", shape, dtype), build)


class Softmax:
    """softmax / log_softmax over the last axis (rows of 1024 and of a 32000-word vocabulary)."""

    params = (IMPLS, DTYPES, ["4096x1024", "512x32000"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        self.x, _, _, _, self.out = _inputs(shape, dtype)
        self.numpy = impl == "numpy"

    def time_softmax(self, impl, dtype, shape):
        if self.numpy:
            np_softmax(self.x)
        else:
            softmax(self.x)

    def time_softmax_out(self, impl, dtype, shape):
        if self.numpy:
            np_softmax_out(self.x, self.out)
        else:
            softmax(self.x, out=self.out)

    def time_log_softmax(self, impl, dtype, shape):
        if self.numpy:
            np_log_softmax(self.x)
        else:
            log_softmax(self.x)


class SoftmaxAxis0:
    """softmax over axis 0 of a C array: strided lanes (fastdl vectorises across columns)."""

    params = (IMPLS, DTYPES, ["4096x1024"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        self.x = _inputs(shape, dtype)[0]
        self.numpy = impl == "numpy"

    def time_softmax_axis0(self, impl, dtype, shape):
        if self.numpy:
            np_softmax(self.x, 0)
        else:
            softmax(self.x, 0)


class SoftmaxBackward:
    """``dx = y * (dy - sum(dy * y))`` and ``dx = dy - exp(y) * sum(dy)`` over the last axis."""

    params = (IMPLS, DTYPES, ["4096x1024"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        _, self.dy, self.y, self.ly, _ = _inputs(shape, dtype)
        self.numpy = impl == "numpy"

    def time_softmax_backward(self, impl, dtype, shape):
        if self.numpy:
            self.y * (self.dy - (self.dy * self.y).sum(-1, keepdims=True))
        else:
            softmax_backward(self.dy, self.y)

    def time_log_softmax_backward(self, impl, dtype, shape):
        if self.numpy:
            self.dy - np.exp(self.ly) * self.dy.sum(-1, keepdims=True)
        else:
            log_softmax_backward(self.dy, self.ly)


def _tiny_calls():
    calls = {}
    for dtype in DTYPES:
        x = randn((4, 4), dtype, seed=0)
        calls["numpy", dtype] = functools.partial(np_softmax, x)
        calls["fastdl", dtype] = functools.partial(softmax, x)
    return calls


_TINY = _tiny_calls()


class TinyCalls:
    """Per-call overhead: softmax of 4x4 (NumPy's formula is five ufunc calls)."""

    params = (IMPLS, DTYPES)
    param_names = ["impl", "dtype"]

    def time_softmax_4x4(self, impl, dtype):
        _TINY[impl, dtype]()
