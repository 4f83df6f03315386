"""asv benchmarks: max_pool2d (2x2 stride 2; 3x3 stride 2 pad 1 with indices), its backward,
avg_pool2d and global_avg_pool2d, NumPy vs fastdl.

The NumPy side is what a NumPy user writes: for 2x2 stride 2, the faster of the two strided-view
forms, the maximum of the four strided slices
``np.maximum(np.maximum(x[..., ::2, ::2], x[..., ::2, 1::2]), np.maximum(x[..., 1::2, ::2],
x[..., 1::2, 1::2]))`` (``x.reshape(N, C, H/2, 2, W/2, 2).max(axis=(3, 5))`` measured 10x
slower); the mean of the reshaped windows for avg_pool2d; for 3x3/s2/p1 the running maximum of
the nine strided slices of the -inf padded input (values only: NumPy has no argmax form of
comparable cost); for the backward, a scatter with ``np.put_along_axis`` (windows do not overlap).

Bytes moved (the floor): 2x2 max pooling of 32x64x112x112 float32 reads 103 MB and writes
26 MB, 0.63 of a copy of x.
"""

import numpy as np

import fastdl

from ._common import DTYPES, IMPLS, cached, pin_threads, randn

pin_threads()


def _inputs(shape, dtype):
    dims = tuple(int(s) for s in shape.split("x"))

    def build():
        x = randn(dims, dtype, seed=0)
        y, idx = fastdl.max_pool2d(x, 2, return_indices=True)
        dy = randn(y.shape, dtype, seed=1)
        xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
        return x, idx, dy, xpad
    return cached(("pool", shape, dtype), build)


def np_max_pool_2x2(x):
    return np.maximum(np.maximum(x[:, :, ::2, ::2], x[:, :, ::2, 1::2]),
                      np.maximum(x[:, :, 1::2, ::2], x[:, :, 1::2, 1::2]))


def np_max_pool_3x3_s2_p1(xpad):
    ho, wo = (xpad.shape[2] - 3) // 2 + 1, (xpad.shape[3] - 3) // 2 + 1
    y = xpad[:, :, 0:2 * ho:2, 0:2 * wo:2].copy()
    for i in range(3):
        for j in range(3):
            np.maximum(y, xpad[:, :, i:i + 2 * ho:2, j:j + 2 * wo:2], out=y)
    return y


def np_max_pool_backward(dy, idx, x_shape):
    nc = x_shape[0] * x_shape[1]
    dx = np.zeros(x_shape, dy.dtype)
    np.put_along_axis(dx.reshape(nc, -1), idx.reshape(nc, -1), dy.reshape(nc, -1), axis=1)
    return dx


class Pool:
    """2-D pooling of a 32x64x112x112 activation (a ResNet's first pooled layer), of 56x56
    planes and of the digits CNN's small stacked planes (32x16x8x8); planes of at most 4096
    elements are pooled 16 (float32) or 8 (float64) at a time, channels last."""

    params = (IMPLS, DTYPES, ["32x64x112x112", "32x64x56x56", "32x16x8x8"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        self.x, self.idx, self.dy, self.xpad = _inputs(shape, dtype)
        self.numpy = impl == "numpy"

    def time_max_pool_2x2(self, impl, dtype, shape):
        if self.numpy:
            np_max_pool_2x2(self.x)
        else:
            fastdl.max_pool2d(self.x, 2)

    def time_max_pool_3x3_s2_p1_indices(self, impl, dtype, shape):
        if self.numpy:
            np_max_pool_3x3_s2_p1(self.xpad)
        else:
            fastdl.max_pool2d(self.x, 3, 2, 1, return_indices=True)

    def time_max_pool_backward_2x2(self, impl, dtype, shape):
        if self.numpy:
            np_max_pool_backward(self.dy, self.idx, self.x.shape)
        else:
            fastdl.max_pool2d_backward(self.dy, self.x, self.idx, 2)

    def time_avg_pool_2x2(self, impl, dtype, shape):
        if self.numpy:
            n, c, h, w = self.x.shape
            self.x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
        else:
            fastdl.avg_pool2d(self.x, 2)

    def peakmem_max_pool_2x2(self, impl, dtype, shape):
        self.time_max_pool_2x2(impl, dtype, shape)


class GlobalAvgPool:
    """global_avg_pool2d of a ResNet's last feature map."""

    params = (IMPLS, DTYPES, ["32x512x7x7"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        self.x = cached(("gap", shape, dtype),
                        lambda: randn(tuple(int(s) for s in shape.split("x")), dtype, seed=0))
        self.numpy = impl == "numpy"

    def time_global_avg_pool(self, impl, dtype, shape):
        if self.numpy:
            self.x.mean(axis=(2, 3))
        else:
            fastdl.global_avg_pool2d(self.x)
