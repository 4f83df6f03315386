"""asv benchmarks: whole training steps through fastdl.nn vs the same network written in plain
NumPy from the cheat sheet.

* CNNStep: conv(1->16, 3x3, pad 1) -> BN -> ReLU -> maxpool 2 -> conv(16->32) -> BN -> ReLU
  -> maxpool 2 -> flatten -> linear(1568 -> 10) -> softmax cross-entropy, on a batch of 64
  28x28 images: forward, backward and an SGD update of every parameter. The NumPy side uses
  the im2col convolution of bench_conv, the batch norm of bench_norm and reshape-max pooling.
* LSTMStep: a one-layer LSTM (input 64, hidden 128) over 32 sequences of 20 steps, forward and
  backward through time, the loss a random projection of the hidden states.
"""

import numpy as np

import fastdl
from fastdl import nn

from ._common import DTYPES, IMPLS, pin_threads, randn, rng
from .bench_conv import np_conv2d, np_conv2d_backward

pin_threads()

EPS = 1e-5
LR = 0.01


# --------------------------------------------------------------------------------------
# the NumPy CNN

def np_bn_forward(x):
    axes = (0, 2, 3)
    mean = x.mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(x.var(axis=axes, keepdims=True) + EPS)
    return (x - mean) * inv, inv


def np_bn_backward(dy, xhat, inv, g):
    axes = (0, 2, 3)
    m = dy.size // dy.shape[1]
    db = dy.sum(axis=axes)
    dg = (dy * xhat).sum(axis=axes)
    g4 = g.reshape(1, -1, 1, 1)
    dx = g4 * inv * (dy - db.reshape(g4.shape) / m - xhat * dg.reshape(g4.shape) / m)
    return dx, dg, db


def np_pool_forward(x):
    N, C, H, W = x.shape
    y = x.reshape(N, C, H // 2, 2, W // 2, 2).max(axis=(3, 5))
    return y


def np_pool_backward(dy, x, y):
    up = lambda a: a.repeat(2, axis=2).repeat(2, axis=3)  # noqa: E731
    mask = x == up(y)
    return mask * up(dy)


class NumpyCNN:
    def __init__(self, params):
        self.p = params

    def step(self, x, labels):
        p = self.p
        acts = []
        h = x
        for l in (1, 2):
            z = np_conv2d(h, p[f"w{l}"], p[f"b{l}"], 1, 1)
            xhat, inv = np_bn_forward(z)
            a = xhat * p[f"g{l}"].reshape(1, -1, 1, 1) + p[f"be{l}"].reshape(1, -1, 1, 1)
            r = np.maximum(a, 0)
            y = np_pool_forward(r)
            acts.append((h, xhat, inv, a, r, y))
            h = y
        flat = h.reshape(h.shape[0], -1)
        logits = flat @ p["wl"] + p["bl"]
        e = np.exp(logits - logits.max(-1, keepdims=True))
        prob = e / e.sum(-1, keepdims=True)
        n = x.shape[0]
        loss = -np.log(prob[np.arange(n), labels]).mean()
        prob[np.arange(n), labels] -= 1
        dlog = prob / n
        g = {"wl": flat.T @ dlog, "bl": dlog.sum(0)}
        dh = (dlog @ p["wl"].T).reshape(h.shape)
        for l in (2, 1):
            hin, xhat, inv, a, r, y = acts[l - 1]
            dr = np_pool_backward(dh, r, y)
            da = dr * (a > 0)
            dz, g[f"g{l}"], g[f"be{l}"] = np_bn_backward(da, xhat, inv, p[f"g{l}"])
            dh, g[f"w{l}"], g[f"b{l}"] = np_conv2d_backward(dz, hin, p[f"w{l}"], 1, 1)
        for k, v in g.items():
            p[k] -= LR * v.astype(p[k].dtype, copy=False)
        return loss


def fastdl_cnn(dtype):
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, dtype=dtype, seed=0), nn.BatchNorm2d(16, dtype=dtype),
        nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, dtype=dtype, seed=1), nn.BatchNorm2d(32, dtype=dtype),
        nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10, dtype=dtype, seed=2))


def numpy_params(model):
    c1, bn1, _, _, c2, bn2, _, _, _, lin = model
    return {"w1": c1.weight.copy(), "b1": c1.bias.copy(), "g1": bn1.weight.copy(),
            "be1": bn1.bias.copy(), "w2": c2.weight.copy(), "b2": c2.bias.copy(),
            "g2": bn2.weight.copy(), "be2": bn2.bias.copy(), "wl": lin.weight.copy(),
            "bl": lin.bias.copy()}


def fastdl_step(model, loss_fn, opt, x, labels):
    model.zero_grad()
    loss = loss_fn(model(x), labels)
    model.backward(loss_fn.backward())
    opt.step(model.gradients())
    return loss


class CNNStep:
    """One training step of a two-conv CNN on 64 28x28 images."""

    params = (IMPLS, DTYPES)
    param_names = ["impl", "dtype"]

    def setup(self, impl, dtype):
        pin_threads()
        self.x = randn((64, 1, 28, 28), dtype, seed=0)
        self.labels = rng(1).integers(0, 10, 64)
        self.model = fastdl_cnn(dtype)
        self.loss = nn.CrossEntropyLoss()
        self.opt = fastdl.optim.SGD(self.model.parameters(), lr=LR)
        self.np_model = NumpyCNN(numpy_params(self.model))
        self.numpy = impl == "numpy"

    def time_train_step(self, impl, dtype):
        if self.numpy:
            self.np_model.step(self.x, self.labels)
        else:
            fastdl_step(self.model, self.loss, self.opt, self.x, self.labels)


# --------------------------------------------------------------------------------------
# the NumPy LSTM

def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_lstm_step(x, w_ih, w_hh, b, R):
    """Forward over the sequence and backward through time; returns the weight gradients."""
    B, T, _ = x.shape
    H = w_hh.shape[0]
    h = np.zeros((B, H), x.dtype)
    c = np.zeros((B, H), x.dtype)
    cache = []
    for t in range(T):
        z = x[:, t] @ w_ih + h @ w_hh + b
        i, f = _sig(z[:, :H]), _sig(z[:, H:2 * H])
        g, o = np.tanh(z[:, 2 * H:3 * H]), _sig(z[:, 3 * H:])
        cn = f * c + i * g
        tc = np.tanh(cn)
        cache.append((h, c, i, f, g, o, tc))
        h, c = o * tc, cn
    dw_ih, dw_hh, db = np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros_like(b)
    dh = np.zeros((B, H), x.dtype)
    dc = np.zeros((B, H), x.dtype)
    dx = np.empty_like(x)
    for t in range(T - 1, -1, -1):
        hp, cp, i, f, g, o, tc = cache[t]
        dh = dh + R[:, t]
        dcn = dc + dh * o * (1 - tc * tc)
        dz = np.concatenate([dcn * g * i * (1 - i), dcn * cp * f * (1 - f),
                             dcn * i * (1 - g * g), dh * tc * o * (1 - o)], axis=1)
        dx[:, t] = dz @ w_ih.T
        dw_ih += x[:, t].T @ dz
        dw_hh += hp.T @ dz
        db += dz.sum(0)
        dh = dz @ w_hh.T
        dc = dcn * f
    return dx, dw_ih, dw_hh, db


class LSTMStep:
    """Forward + backward through time of an LSTM(64 -> 128) over 32 x 20 steps."""

    params = (IMPLS, DTYPES)
    param_names = ["impl", "dtype"]

    def setup(self, impl, dtype):
        pin_threads()
        self.x = randn((32, 20, 64), dtype, seed=0)
        self.R = randn((32, 20, 128), dtype, seed=1)
        self.model = nn.LSTM(64, 128, dtype=dtype, seed=0)
        self.numpy = impl == "numpy"

    def time_forward_backward(self, impl, dtype):
        if self.numpy:
            m = self.model
            np_lstm_step(self.x, m.weight_ih_l0, m.weight_hh_l0, m.bias_l0, self.R)
        else:
            self.model.zero_grad()
            self.model(self.x)
            self.model.backward(self.R)
