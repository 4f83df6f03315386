"""asv benchmarks: softmax_cross_entropy (with and without its gradient), cross_entropy and
mse with their gradients, NumPy vs fastdl.

The NumPy side is what a NumPy user writes from the cheat sheet:

* softmax cross-entropy with gradient (class indices, mean over the batch): the stable softmax,
  ``-np.log(p[rows, labels]).mean()`` (log + gather), and ``(p - onehot) / N``;
* cross_entropy: ``-np.sum(y_true * np.log(y_pred))``, gradient ``-y_true / y_pred``;
* mse: ``np.mean((y_true - y_pred)**2)``, gradient ``2 * (y_pred - y_true) / y_true.size``.

Bytes moved (the floor): softmax cross-entropy with gradient of 4096x1000 float32 logits reads
16 MB of logits and writes 16 MB of gradient (the labels are 32 KB); without the gradient it
reads the logits once.
"""

import numpy as np

import fastdl

from ._common import DTYPES, IMPLS, cached, pin_threads, randn, rng, uniform

pin_threads()


def _fastdl(name):
    """fastdl's public function once the package re-exports it, else the extension's own."""
    from fastdl._ext import _losses
    return getattr(fastdl, name, None) or getattr(_losses, name)


softmax_cross_entropy = _fastdl("softmax_cross_entropy")
cross_entropy = _fastdl("cross_entropy")
cross_entropy_grad = _fastdl("cross_entropy_grad")
mse = _fastdl("mse")
mse_grad = _fastdl("mse_grad")


def np_softmax_cross_entropy(x, labels, grad=True):
    """Mean cross-entropy of softmax(x) against class indices, and its gradient."""
    n = x.shape[0]
    rows = np.arange(n)
    e = np.exp(x - x.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    loss = -np.log(p[rows, labels]).mean()
    if not grad:
        return loss
    p[rows, labels] -= 1
    p /= n
    return loss, p


def _logits(shape, dtype):
    rows, cols = (int(s) for s in shape.split("x"))

    def build():
        x = randn((rows, cols), dtype, seed=0, scale=3.0)
        labels = rng(1).integers(0, cols, rows)
        return x, labels
    return cached(("logits", shape, dtype), build)


def _probabilities(shape, dtype):
    rows, cols = (int(s) for s in shape.split("x"))

    def build():
        t = uniform((rows, cols), dtype, seed=0, low=0.0, high=1.0)
        t /= t.sum(-1, keepdims=True)
        p = uniform((rows, cols), dtype, seed=1, low=0.01, high=1.0)
        p /= p.sum(-1, keepdims=True)
        return t, p
    return cached(("probabilities", shape, dtype), build)


class SoftmaxCrossEntropy:
    """Fused softmax + cross-entropy on logits with integer labels, mean over the batch."""

    params = (IMPLS, DTYPES, ["4096x1000", "512x32000"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        self.x, self.labels = _logits(shape, dtype)
        self.numpy = impl == "numpy"

    def time_loss_and_grad(self, impl, dtype, shape):
        if self.numpy:
            np_softmax_cross_entropy(self.x, self.labels)
        else:
            softmax_cross_entropy(self.x, self.labels, return_grad=True)

    def time_loss(self, impl, dtype, shape):
        if self.numpy:
            np_softmax_cross_entropy(self.x, self.labels, grad=False)
        else:
            softmax_cross_entropy(self.x, self.labels)


class CrossEntropy:
    """The cheat sheet's cross_entropy on probabilities, and its gradient."""

    params = (IMPLS, DTYPES, ["4096x1000"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        self.t, self.p = _probabilities(shape, dtype)
        self.numpy = impl == "numpy"

    def time_cross_entropy(self, impl, dtype, shape):
        if self.numpy:
            -np.sum(self.t * np.log(self.p))
        else:
            cross_entropy(self.t, self.p)

    def time_cross_entropy_grad(self, impl, dtype, shape):
        if self.numpy:
            -self.t / self.p
        else:
            cross_entropy_grad(self.t, self.p)


class MSE:
    """The cheat sheet's mse (mean over all elements) and its gradient, on 16M elements."""

    params = (IMPLS, DTYPES, ["4096x4096"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        rows, cols = (int(s) for s in shape.split("x"))
        self.t, self.p = cached(("mse", shape, dtype), lambda: (
            randn((rows, cols), dtype, seed=0), randn((rows, cols), dtype, seed=1)))
        self.numpy = impl == "numpy"

    def time_mse(self, impl, dtype, shape):
        if self.numpy:
            np.mean((self.t - self.p) ** 2)
        else:
            mse(self.t, self.p)

    def time_mse_grad(self, impl, dtype, shape):
        if self.numpy:
            2 * (self.p - self.t) / self.t.size
        else:
            mse_grad(self.t, self.p)
