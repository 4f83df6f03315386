"""asv benchmarks: optimiser steps, clip_grad_norm_ and the L1/L2 penalties, NumPy vs fastdl.

The NumPy side is the cheat sheet written back into the arrays: ``w -= lr * g`` (sgd),
``v *= beta; v -= lr * g; w += v`` (momentum), the seven Adam lines assigned into m, v, w;
``np.sqrt(sum(np.sum(g**2)))`` then ``g *= c`` (clip); ``lam * np.sum(np.abs(w))``,
``lam * np.sum(w**2)``, ``lam * np.sign(w)``, ``2 * lam * w`` (penalties).

Bytes moved (the floor): Adam on 10M float32 reads w, g, m, v and writes w, m, v: 280 MB per
step; momentum 200 MB; sgd 120 MB. fastdl makes one pass; NumPy's Adam makes about ten.
``peakmem_adam``: fastdl updates in place with no temporaries, NumPy allocates ~5 arrays.
The step of a 16-element parameter measures per-call overhead (no setup: asv batches it).
"""

import numpy as np

import fastdl
from fastdl import optim

from ._common import IMPLS, cached, pin_threads, randn

pin_threads()

LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8
SIZES = {"10M": [(10_000_000,)], "200x50K": [(50_000,)] * 200}


def np_adam(w, g, m, v, t):
    m[...] = B1 * m + (1 - B1) * g
    v[...] = B2 * v + (1 - B2) * g**2
    m_hat = m / (1 - B1**t)
    v_hat = v / (1 - B2**t)
    w[...] = w - LR * m_hat / (np.sqrt(v_hat) + EPS)


def _arrays(size, dtype):
    def build():
        ws = [randn(s, dtype, seed=i) for i, s in enumerate(SIZES[size])]
        gs = [randn(s, dtype, seed=1000 + i) for i, s in enumerate(SIZES[size])]
        ms = [np.zeros_like(w) for w in ws]
        vs = [np.zeros_like(w) for w in ws]
        return ws, gs, ms, vs
    return cached(("optim", size, dtype), build)


class Adam:
    """One Adam step over 10M float32 parameters, as one array or as 200 arrays of 50K
    (fastdl: the Adam class, one parallel pass over all arrays)."""

    params = (IMPLS, ["float32"], list(SIZES))
    param_names = ["impl", "dtype", "size"]

    def setup(self, impl, dtype, size):
        pin_threads()
        self.ws, self.gs, self.ms, self.vs = _arrays(size, dtype)
        self.numpy = impl == "numpy"
        self.opt = cached(("adam-opt", size, dtype), lambda: optim.Adam(self.ws, lr=LR))
        self.t = 1

    def time_step(self, impl, dtype, size):
        if self.numpy:
            for w, g, m, v in zip(self.ws, self.gs, self.ms, self.vs):
                np_adam(w, g, m, v, self.t)
        else:
            self.opt.step(self.gs)

    def peakmem_step(self, impl, dtype, size):
        self.time_step(impl, dtype, size)


class FlatUpdates:
    """sgd_, momentum_, adam_ (functional) and clip_grad_norm_ on 10M elements."""

    params = (IMPLS, ["float32", "float64"])
    param_names = ["impl", "dtype"]

    def setup(self, impl, dtype):
        pin_threads()
        (self.w,), (self.g,), (self.m,), (self.v,) = _arrays("10M", dtype)
        self.numpy = impl == "numpy"

    def time_sgd(self, impl, dtype):
        if self.numpy:
            self.w -= LR * self.g
        else:
            optim.sgd_(self.w, self.g, LR)

    def time_momentum(self, impl, dtype):
        if self.numpy:
            self.v *= 0.9
            self.v -= LR * self.g
            self.w += self.v
        else:
            optim.momentum_(self.w, self.g, self.v, LR, 0.9)

    def time_adam(self, impl, dtype):
        if self.numpy:
            np_adam(self.w, self.g, self.m, self.v, 1)
        else:
            optim.adam_(self.w, self.g, self.m, self.v, 1, lr=LR)

    def time_clip_grad_norm(self, impl, dtype):
        if self.numpy:
            norm = np.sqrt(np.sum(self.g ** 2))
            c = 1e9 / (norm + 1e-6)
            if c < 1:
                self.g *= c
        else:
            fastdl.clip_grad_norm_([self.g], 1e9)


class Penalties:
    """L1/L2 penalties and their gradients on 10M elements."""

    params = (IMPLS, ["float32", "float64"])
    param_names = ["impl", "dtype"]

    def setup(self, impl, dtype):
        pin_threads()
        (self.w,), _, _, _ = _arrays("10M", dtype)
        self.numpy = impl == "numpy"

    def time_l1_penalty(self, impl, dtype):
        if self.numpy:
            0.1 * np.sum(np.abs(self.w))
        else:
            fastdl.l1_penalty(self.w, 0.1)

    def time_l2_penalty(self, impl, dtype):
        if self.numpy:
            0.1 * np.sum(self.w ** 2)
        else:
            fastdl.l2_penalty(self.w, 0.1)

    def time_l1_penalty_grad(self, impl, dtype):
        if self.numpy:
            0.1 * np.sign(self.w)
        else:
            fastdl.l1_penalty_grad(self.w, 0.1)

    def time_l2_penalty_grad(self, impl, dtype):
        if self.numpy:
            2 * 0.1 * self.w
        else:
            fastdl.l2_penalty_grad(self.w, 0.1)


def _tiny(impl):
    w, g = randn((16,), "float32", seed=0), randn((16,), "float32", seed=1)
    m, v = np.zeros_like(w), np.zeros_like(w)
    if impl == "numpy":
        return lambda: np_adam(w, g, m, v, 1)
    opt = optim.Adam([w], lr=LR)
    gs = [g]
    return lambda: opt.step(gs)


_TINY = {impl: _tiny(impl) for impl in IMPLS}


class TinyStep:
    """Per-step overhead of Adam on one 16-element parameter (no setup: asv batches calls)."""

    params = (IMPLS,)
    param_names = ["impl"]

    def time_adam_step_16(self, impl):
        _TINY[impl]()
