"""asv benchmarks: scaled dot-product attention forward (full and causal) and backward, NumPy's
materialised cheat-sheet formula vs fastdl's blockwise kernel, and peak memory at L = 4096.

NumPy: ``s = q @ k^T * scale (+ causal -inf)``, ``p = softmax(s)``, ``p @ v``; the backward
``dv = p^T do``, ``dp = do v^T``, ``ds = p * (dp - rowsum(dp * p))``, ``dq = ds k * scale``,
``dk = ds^T q * scale``. At L = S = 4096, 8 heads, the float32 scores alone take 512 MiB;
fastdl's extra memory is a few tiles per thread (plus, on the float32 kernel path, a copy of
K^T), so ``peakmem_`` compares the two.
"""

import numpy as np

import fastdl

from ._common import IMPLS, cached, pin_threads, randn

pin_threads()


def _fastdl(name):
    from fastdl._ext import _attention
    return getattr(fastdl, name, None) or getattr(_attention, name)


sdpa = _fastdl("scaled_dot_product_attention")
sdpa_backward = _fastdl("scaled_dot_product_attention_backward")


def np_sdpa(q, k, v, causal):
    scale = 1.0 / np.sqrt(q.shape[-1])
    s = (q @ k.swapaxes(-1, -2)) * np.asarray(scale, q.dtype)
    if causal:
        L, S = s.shape[-2:]
        s[..., np.triu(np.ones((L, S), bool), 1)] = -np.inf
    e = np.exp(s - s.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    return p @ v, p


def np_sdpa_backward(do, q, k, v, p):
    scale = np.asarray(1.0 / np.sqrt(q.shape[-1]), q.dtype)
    dv = p.swapaxes(-1, -2) @ do
    dp = do @ v.swapaxes(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    return ds @ k * scale, ds.swapaxes(-1, -2) @ q * scale, dv


def _qkv(b, h, length, e, dtype="float32"):
    return cached(("sdpa", b, h, length, e, dtype), lambda: tuple(
        randn((b, h, length, e), dtype, seed=s) for s in range(4)))


class Attention:
    """Forward, batch 8, 8 heads, head size 64; full and causal."""

    params = (IMPLS, [512, 1024], [False, True])
    param_names = ["impl", "length", "causal"]

    def setup(self, impl, length, causal):
        pin_threads()
        self.q, self.k, self.v, _ = _qkv(8, 8, length, 64)

    def time_forward(self, impl, length, causal):
        if impl == "numpy":
            np_sdpa(self.q, self.k, self.v, causal)
        else:
            sdpa(self.q, self.k, self.v, is_causal=causal)


class AttentionBackward:
    """Backward (dq, dk, dv), batch 8, 8 heads, L = S = 512, head size 64."""

    params = (IMPLS,)
    param_names = ["impl"]

    def setup(self, impl):
        pin_threads()
        self.q, self.k, self.v, self.do = _qkv(8, 8, 512, 64)
        if impl == "numpy":
            self.p = np_sdpa(self.q, self.k, self.v, False)[1]
        else:
            self.o, self.lse = sdpa(self.q, self.k, self.v, return_lse=True)

    def time_backward(self, impl):
        if impl == "numpy":
            np_sdpa_backward(self.do, self.q, self.k, self.v, self.p)
        else:
            sdpa_backward(self.do, self.q, self.k, self.v, self.o, self.lse)


class AttentionMemory:
    """Peak memory of the forward at L = S = 4096, batch 1, 8 heads (512 MiB of scores)."""

    params = (IMPLS,)
    param_names = ["impl"]
    timeout = 300

    def setup(self, impl):
        pin_threads()
        self.q, self.k, self.v, _ = _qkv(1, 8, 4096, 64)

    def peakmem_forward(self, impl):
        if impl == "numpy":
            np_sdpa(self.q, self.k, self.v, False)
        else:
            sdpa(self.q, self.k, self.v)
