"""asv benchmarks: batch_norm (training, inference, backward) and layer_norm (forward,
backward), NumPy vs fastdl.

The NumPy side is the cheat-sheet formula as a NumPy user writes it:

* batch_norm training: ``mean = x.mean(axes, keepdims=True); var = x.var(axes, keepdims=True);
  (x - mean) / np.sqrt(var + eps) * gamma + beta`` over the axes (0, 2, 3); the running
  statistics update (two (C,) expressions) is left out, it costs nothing measurable;
* inference: ``gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta``;
* backward: ``xhat = (x - mean) * inv_std; dbeta = dy.sum(axes); dgamma = (dy * xhat).sum(axes);
  dx = gamma * inv_std * (dy - dbeta / M - xhat * dgamma / M)``;
* layer_norm over the last axis, and its backward, likewise.

Bytes moved (the floor): training batch_norm reads x twice and writes y once (1.5 copies of
x); inference reads and writes once (one copy); the backward reads x and dy twice and writes dx.
32x128x28x28 float32 is 12.8 MB (it fits the 32 MB L3 with its output), 64x64x56x56 is 51 MB.
``peakmem_`` rows: fastdl allocates only the result (and (C,)-sized statistics); NumPy's formula
allocates several temporaries of x's size.
"""

import numpy as np

import fastdl

from ._common import DTYPES, IMPLS, cached, pin_threads, randn, uniform

pin_threads()

EPS = 1e-5
AXES = (0, 2, 3)


def _bn_inputs(shape, dtype):
    n, c, h, w = (int(s) for s in shape.split("x"))

    def build():
        x = randn((n, c, h, w), dtype, seed=0, scale=2.0)
        g = uniform(c, dtype, seed=1, low=0.5, high=1.5)
        b = randn(c, dtype, seed=2)
        dy = randn((n, c, h, w), dtype, seed=3)
        _, m, inv = fastdl.batch_norm(x, g, b, None, None, return_stats=True)
        return x, g, b, dy, m, inv
    return cached(("bn", shape, dtype), build)


def np_batch_norm_train(x, g4, b4):
    mean = x.mean(axis=AXES, keepdims=True)
    var = x.var(axis=AXES, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * g4 + b4


def np_batch_norm_backward(dy, x, g4, m4, inv4):
    m = x.size // x.shape[1]
    xhat = (x - m4) * inv4
    db = dy.sum(axis=AXES)
    dg = (dy * xhat).sum(axis=AXES)
    dx = g4 * inv4 * (dy - db.reshape(g4.shape) / m - xhat * dg.reshape(g4.shape) / m)
    return dx, dg, db


class BatchNorm:
    """batch_norm over (N, C, H, W), statistics per channel."""

    params = (IMPLS, DTYPES, ["32x128x28x28", "64x64x56x56", "32x32x4x4"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        self.x, self.g, self.b, self.dy, self.m, self.inv = _bn_inputs(shape, dtype)
        c = self.g.size
        self.rm = np.zeros(c, dtype)
        self.rv = np.ones(c, dtype)
        sh = (1, c, 1, 1)
        self.g4, self.b4 = self.g.reshape(sh), self.b.reshape(sh)
        self.rm4, self.rv4 = self.rm.reshape(sh), self.rv.reshape(sh)
        self.m4, self.inv4 = self.m.reshape(sh), self.inv.reshape(sh)
        self.numpy = impl == "numpy"

    def time_training(self, impl, dtype, shape):
        if self.numpy:
            np_batch_norm_train(self.x, self.g4, self.b4)
        else:
            fastdl.batch_norm(self.x, self.g, self.b, self.rm, self.rv)

    def time_inference(self, impl, dtype, shape):
        if self.numpy:
            self.g4 * (self.x - self.rm4) / np.sqrt(self.rv4 + EPS) + self.b4
        else:
            fastdl.batch_norm(self.x, self.g, self.b, self.rm, self.rv, training=False)

    def time_backward(self, impl, dtype, shape):
        if self.numpy:
            np_batch_norm_backward(self.dy, self.x, self.g4, self.m4, self.inv4)
        else:
            fastdl.batch_norm_backward(self.dy, self.x, self.g, self.m, self.inv)

    def peakmem_training(self, impl, dtype, shape):
        self.time_training(impl, dtype, shape)


def _ln_inputs(shape, dtype):
    dims = tuple(int(s) for s in shape.split("x"))

    def build():
        x = randn(dims, dtype, seed=0, scale=2.0)
        g = uniform(dims[-1], dtype, seed=1, low=0.5, high=1.5)
        b = randn(dims[-1], dtype, seed=2)
        dy = randn(dims, dtype, seed=3)
        _, m, inv = fastdl.layer_norm(x, dims[-1], g, b, return_stats=True)
        return x, g, b, dy, m, inv
    return cached(("ln", shape, dtype), build)


def np_layer_norm(x, g, b):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * g + b


def np_layer_norm_backward(dy, x, g, m3, inv3):
    d = x.shape[-1]
    xhat = (x - m3) * inv3
    u = dy * g
    dx = inv3 * (u - u.mean(-1, keepdims=True) - xhat * (u * xhat).mean(-1, keepdims=True))
    return dx, (dy * xhat).reshape(-1, d).sum(0), dy.reshape(-1, d).sum(0)


class LayerNorm:
    """layer_norm over the last axis (a transformer's activations)."""

    params = (IMPLS, DTYPES, ["8x512x768"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        self.x, self.g, self.b, self.dy, self.m, self.inv = _ln_inputs(shape, dtype)
        self.m3, self.inv3 = self.m[..., None], self.inv[..., None]
        self.d = self.g.size
        self.numpy = impl == "numpy"

    def time_forward(self, impl, dtype, shape):
        if self.numpy:
            np_layer_norm(self.x, self.g, self.b)
        else:
            fastdl.layer_norm(self.x, self.d, self.g, self.b)

    def time_backward(self, impl, dtype, shape):
        if self.numpy:
            np_layer_norm_backward(self.dy, self.x, self.g, self.m3, self.inv3)
        else:
            fastdl.layer_norm_backward(self.dy, self.x, self.d, self.g, self.m, self.inv)
