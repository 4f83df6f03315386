"""asv benchmarks: conv2d and conv2d_backward, NumPy vs fastdl.

The NumPy side is the cheat-sheet way, written with NumPy only:

* dense convolutions: im2col with ``sliding_window_view`` (a view) reshaped into the
  ``(N*Ho*Wo, C*kh*kw)`` column matrix (the reshape copies), one matmul, a transpose back to
  NCHW; the backward reuses the column matrix (``dW = dYᵀ cols``), computes
  ``dcols = dY W`` and adds it back tap by tap into the padded dx (col2im);
* depthwise: a sum of the kh*kw shifted slices of the padded input, each times its weight.

FLOPs of a dense convolution: ``2 N O (C/groups) kh kw Ho Wo`` (forward); the backward does
twice that (dX and dW). ``peakmem_`` rows show the extra memory: fastdl's lowering buffer is
capped (``fastdl._ext._conv.get_workspace_limit()``, 64 MiB), NumPy's column matrix is not.
"""

import numpy as np

import fastdl

from ._common import DTYPES, IMPLS, cached, pin_threads, randn


# --------------------------------------------------------------------------------------
# the NumPy baselines (also used by compare_cases/conv.py)

def _pad(x, p):
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x


def np_im2col(x, kh, kw, stride, padding):
    """(N*Ho*Wo, C*kh*kw) columns, (Ho, Wo)."""
    win = np.lib.stride_tricks.sliding_window_view(_pad(x, padding), (kh, kw), axis=(2, 3))
    win = win[:, :, ::stride, ::stride]
    N, C, Ho, Wo = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(N * Ho * Wo, C * kh * kw), (Ho, Wo)


def np_conv2d(x, w, b=None, stride=1, padding=0):
    N = x.shape[0]
    O, C, kh, kw = w.shape
    cols, (Ho, Wo) = np_im2col(x, kh, kw, stride, padding)
    y = cols @ w.reshape(O, -1).T
    if b is not None:
        y += b
    return y.reshape(N, Ho, Wo, O).transpose(0, 3, 1, 2)


def np_conv2d_backward(dy, x, w, stride=1, padding=0):
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    cols, (Ho, Wo) = np_im2col(x, kh, kw, stride, padding)
    dyc = dy.transpose(0, 2, 3, 1).reshape(N * Ho * Wo, O)
    dw = (dyc.T @ cols).reshape(w.shape)
    dcols = (dyc @ w.reshape(O, -1)).reshape(N, Ho, Wo, C, kh, kw)
    dxp = np.zeros((N, C, H + 2 * padding, W + 2 * padding), x.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride] += \
                dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    dx = dxp[:, :, padding:padding + H, padding:padding + W]
    return dx, dw, dy.sum(axis=(0, 2, 3))


def np_depthwise3x3(x, w):
    """Depthwise 3x3, stride 1, padding 1: a sum of 9 shifted slices."""
    H, W = x.shape[2:]
    xp = _pad(x, 1)
    y = w[None, :, 0, 0, 0, None, None] * xp[:, :, 0:H, 0:W]
    for i in range(3):
        for j in range(3):
            if i or j:
                y += w[None, :, 0, i, j, None, None] * xp[:, :, i:i + H, j:j + W]
    return y


# --------------------------------------------------------------------------------------
# inputs

# label: (x shape, w shape, stride, padding, groups)
SHAPES = {
    "N32 64->64 32x32 k3 p1": ((32, 64, 32, 32), (64, 64, 3, 3), 1, 1, 1),
    "stem N8 3->64 224x224 k7 s2 p3": ((8, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1),
    "1x1 N32 256->64 28x28": ((32, 256, 28, 28), (64, 256, 1, 1), 1, 0, 1),
    "depthwise N32 128 56x56 k3 p1": ((32, 128, 56, 56), (128, 1, 3, 3), 1, 1, 128),
    # the digits CNN's second layer: small images, lowered channels last
    "digits N32 16->32 4x4 k3 p1": ((32, 16, 4, 4), (32, 16, 3, 3), 1, 1, 1),
}


def conv_inputs(label, dtype):
    """(x, w, b, dy) for a SHAPES label, built once per process."""
    xs, ws, stride, padding, groups = SHAPES[label]

    def build():
        x = randn(xs, dtype, seed=0)
        fan_in = ws[1] * ws[2] * ws[3]
        w = randn(ws, dtype, seed=1, scale=(2.0 / fan_in) ** 0.5)
        b = randn((ws[0],), dtype, seed=2, scale=0.1)
        Ho = (xs[2] + 2 * padding - ws[2]) // stride + 1
        Wo = (xs[3] + 2 * padding - ws[3]) // stride + 1
        dy = randn((xs[0], ws[0], Ho, Wo), dtype, seed=3)
        return x, w, b, dy
    return cached(("conv", label, dtype), build)


def conv_flops(label):
    xs, ws, stride, padding, groups = SHAPES[label]
    Ho = (xs[2] + 2 * padding - ws[2]) // stride + 1
    Wo = (xs[3] + 2 * padding - ws[3]) // stride + 1
    return 2.0 * xs[0] * ws[0] * ws[1] * ws[2] * ws[3] * Ho * Wo


DENSE = [k for k in SHAPES if SHAPES[k][4] == 1]


# --------------------------------------------------------------------------------------
# benchmarks

class Conv2d:
    """Dense convolutions (3x3, the ResNet stem, 1x1): forward and backward."""

    params = (IMPLS, DTYPES, DENSE)
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        self.x, self.w, self.b, self.dy = conv_inputs(shape, dtype)
        _, _, self.stride, self.padding, _ = SHAPES[shape]
        self.numpy = impl == "numpy"

    def time_forward(self, impl, dtype, shape):
        if self.numpy:
            np_conv2d(self.x, self.w, self.b, self.stride, self.padding)
        else:
            fastdl.conv2d(self.x, self.w, self.b, self.stride, self.padding)

    def time_backward(self, impl, dtype, shape):
        if self.numpy:
            np_conv2d_backward(self.dy, self.x, self.w, self.stride, self.padding)
        else:
            fastdl.conv2d_backward(self.dy, self.x, self.w, self.stride, self.padding, 1, 1)


class Conv2dMemory:
    """Peak memory of the ResNet stem (NumPy's column matrix: 8*112*112 x 147 floats, 59 MB;
    fastdl's lowering buffer stays under its cap)."""

    params = (IMPLS, ["float32"], ["stem N8 3->64 224x224 k7 s2 p3"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        self.x, self.w, self.b, self.dy = conv_inputs(shape, dtype)
        _, _, self.stride, self.padding, _ = SHAPES[shape]
        self.numpy = impl == "numpy"

    def peakmem_forward(self, impl, dtype, shape):
        if self.numpy:
            np_conv2d(self.x, self.w, self.b, self.stride, self.padding)
        else:
            fastdl.conv2d(self.x, self.w, self.b, self.stride, self.padding)

    def peakmem_backward(self, impl, dtype, shape):
        if self.numpy:
            np_conv2d_backward(self.dy, self.x, self.w, self.stride, self.padding)
        else:
            fastdl.conv2d_backward(self.dy, self.x, self.w, self.stride, self.padding, 1, 1)


class Depthwise:
    """Depthwise 3x3 (groups == C): the direct kernel against 9 shifted NumPy slices."""

    params = (IMPLS, DTYPES, ["depthwise N32 128 56x56 k3 p1"])
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        self.x, self.w, self.b, self.dy = conv_inputs(shape, dtype)
        self.numpy = impl == "numpy"

    def time_forward(self, impl, dtype, shape):
        if self.numpy:
            np_depthwise3x3(self.x, self.w)
        else:
            fastdl.conv2d(self.x, self.w, None, 1, 1, 1, self.x.shape[1])
