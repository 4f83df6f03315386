"""asv benchmarks: dropout (forward, with its mask, backward from a mask or from the seed) and
fastdl.init, NumPy vs fastdl.

The NumPy side is the cheat sheet with p the drop probability (API.md): ``mask =
rng.binomial(1, 1 - p, x.shape); x * mask / (1 - p)`` (an int64 mask: the result is
float64), and the backward ``dy * mask / (1 - p)``. Init: the cheat sheet's
``np.random.randn(fan_in, fan_out) * np.sqrt(2 / fan_in)`` (float64, as NumPy draws it).

Bytes moved (the floor): dropout of 16M float32 reads 64 MiB and writes 64 MiB (+16 MiB with
the bool mask); the backward from the seed moves the same bytes and stores no mask. Philox
costs ten rounds of two 32x32 -> 64-bit multiplies per four elements.
"""

import numpy as np

import fastdl

from ._common import DTYPES, IMPLS, cached, pin_threads, randn, rng

pin_threads()

P = 0.5


def _inputs(n, dtype):
    return cached(("dropout", n, dtype), lambda: (
        randn((n,), dtype, seed=0), randn((n,), dtype, seed=1), rng(2).random(n) >= P))


class Dropout:
    """Inverted dropout, p = 0.5, on 16M elements."""

    params = (IMPLS, DTYPES, [1 << 24])
    param_names = ["impl", "dtype", "size"]

    def setup(self, impl, dtype, size):
        pin_threads()
        self.x, self.dy, self.keep = _inputs(size, dtype)
        self.numpy = impl == "numpy"
        self.gen = rng(3)

    def time_dropout(self, impl, dtype, size):
        if self.numpy:
            mask = self.gen.binomial(1, 1 - P, self.x.shape)
            self.x * mask / (1 - P)
        else:
            fastdl.dropout(self.x, P, seed=3)

    def time_dropout_with_mask(self, impl, dtype, size):
        if self.numpy:
            mask = self.gen.random(self.x.shape, dtype=self.x.dtype) >= P
            self.x * mask / self.x.dtype.type(1 - P)
        else:
            fastdl.dropout(self.x, P, seed=3, return_mask=True)

    def time_backward_from_mask(self, impl, dtype, size):
        if self.numpy:
            self.dy * self.keep / self.dy.dtype.type(1 - P)
        else:
            fastdl.dropout_backward(self.dy, self.keep, P)

    def time_backward_from_seed(self, impl, dtype, size):
        if self.numpy:   # NumPy has no counter-based stream: it redraws the mask
            mask = rng(3).random(self.dy.shape, dtype=self.dy.dtype) >= P
            self.dy * mask / self.dy.dtype.type(1 - P)
        else:
            fastdl.dropout_backward(self.dy, 3, P)

    def peakmem_dropout(self, impl, dtype, size):
        if self.numpy:
            mask = self.gen.binomial(1, 1 - P, self.x.shape)
            self.x * mask / (1 - P)
        else:
            fastdl.dropout(self.x, P, seed=3)


class DropoutTiny:
    """Per-call overhead on 16 elements (no setup: asv times batches of calls)."""

    x = np.ones(16, np.float32)

    def time_dropout_16(self):
        fastdl.dropout(self.x, P, seed=3)


class Init:
    """He (normal) and Xavier (uniform) initialisation of a 4096x4096 float32 weight."""

    params = (IMPLS, [4096])
    param_names = ["impl", "fan"]

    def setup(self, impl, fan):
        pin_threads()
        self.numpy = impl == "numpy"

    def time_he_normal(self, impl, fan):
        if self.numpy:
            np.random.randn(fan, fan) * np.sqrt(2.0 / fan)
        else:
            fastdl.init.he_normal(fan, fan, rng=1)

    def time_xavier_uniform(self, impl, fan):
        if self.numpy:
            bound = np.sqrt(6.0 / (2 * fan))
            np.random.default_rng(1).uniform(-bound, bound, (fan, fan))
        else:
            fastdl.init.xavier_uniform(fan, fan, rng=1)
