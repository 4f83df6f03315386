"""Plain-NumPy versions of the fastdl functions the examples' networks use, with fastdl's
signatures: the cheat sheet's formulas as a NumPy user writes them (im2col convolution with
``sliding_window_view`` + ``tensordot``, reshape-and-max pooling, batch statistics with
``mean``/``var``), for the ``--numpy`` side-by-side run. Only the arguments the examples use
are supported (dilation 1, groups 1, square pooling windows).
"""

import numpy as np

_window = np.lib.stride_tricks.sliding_window_view


def _pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


def _pad(x, p):
    return np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))


def _cols(x, kh, kw, stride, padding):
    s, p = _pair(stride), _pair(padding)
    win = _window(_pad(x, p), (kh, kw), axis=(2, 3))          # (N, C, H', W', kh, kw)
    return win[:, :, ::s[0], ::s[1]]


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    assert _pair(dilation) == (1, 1) and groups == 1
    cols = _cols(x, w.shape[2], w.shape[3], stride, padding)
    y = np.tensordot(cols, w, axes=((1, 4, 5), (1, 2, 3))).transpose(0, 3, 1, 2)
    return y + b[:, None, None] if b is not None else np.ascontiguousarray(y)


def conv2d_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1, *, need_bias=True,
                    need_input=True):
    assert _pair(dilation) == (1, 1) and groups == 1
    s, p = _pair(stride), _pair(padding)
    kh, kw = w.shape[2:]
    cols = _cols(x, kh, kw, stride, padding)
    dw = np.tensordot(dy, cols, axes=((0, 2, 3), (0, 2, 3)))
    if not need_input:
        return None, dw, (dy.sum((0, 2, 3)) if need_bias else None)
    dcols = np.tensordot(dy, w, axes=((1,), (0,)))            # (N, Ho, Wo, C, kh, kw)
    ho, wo = dy.shape[2:]
    dxp = np.zeros(_pad(x, p).shape, x.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + s[0] * ho:s[0], j:j + s[1] * wo:s[1]] += \
                dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    dx = dxp[:, :, p[0]:p[0] + x.shape[2], p[1]:p[1] + x.shape[3]]
    return np.ascontiguousarray(dx), dw, (dy.sum((0, 2, 3)) if need_bias else None)


def relu(x, *, out=None):
    return np.maximum(x, 0, out=out)


def relu_backward(dy, x, *, out=None):
    return np.multiply(dy, x > 0, out=out)


def max_pool2d(x, kernel_size, stride=None, padding=0, *, return_indices=False):
    k = kernel_size
    k = _pair(k)[0]
    assert (stride is None or _pair(stride) == (k, k)) and _pair(padding) == (0, 0)
    n, c, h, w = x.shape
    win = x[:, :, :h // k * k, :w // k * k].reshape(n, c, h // k, k, w // k, k)
    y = win.max((3, 5))
    if not return_indices:
        return y
    flat = win.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // k, w // k, k * k)
    a = flat.argmax(-1)
    rows = np.arange(h // k)[:, None] * k + a // k
    cols = np.arange(w // k)[None, :] * k + a % k
    return y, rows * w + cols


def max_pool2d_backward(dy, x, idx, kernel_size, stride=None, padding=0):
    n, c, h, w = x.shape
    dx = np.zeros((n, c, h * w), x.dtype)
    np.add.at(dx, (np.arange(n)[:, None, None], np.arange(c)[None, :, None],
                   idx.reshape(n, c, -1)), dy.reshape(n, c, -1))
    return dx.reshape(x.shape)


def batch_norm(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1,
               eps=1e-5, *, return_stats=False):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        mean, var = x.mean(axes), x.var(axes)
        if running_mean is not None:
            n = x.size // x.shape[1]
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += momentum * var * n / (n - 1)
    else:
        mean, var = running_mean, running_var
    inv = 1 / np.sqrt(var + eps)
    y = (x - mean.reshape(shape)) * (gamma * inv).reshape(shape) + beta.reshape(shape)
    return (y, mean, inv) if return_stats else y


def batch_norm_backward(dy, x, gamma, mean, inv_std):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    n = x.size // x.shape[1]
    xhat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
    dbeta = dy.sum(axes)
    dgamma = (dy * xhat).sum(axes)
    dx = (gamma * inv_std).reshape(shape) / n * (n * dy - dbeta.reshape(shape)
                                                 - xhat * dgamma.reshape(shape))
    return dx, dgamma, dbeta


def linear(x, w, b=None, *, out=None):
    y = x @ w
    return y + b if b is not None else y


def linear_backward(dy, x, w, *, need_bias=True):
    return dy @ w.T, x.T @ dy, (dy.sum(0) if need_bias else None)


def softmax_cross_entropy(logits, target, axis=-1, reduction="mean", label_smoothing=0.0,
                          ignore_index=None, return_grad=False):
    assert reduction == "mean" and label_smoothing == 0.0 and ignore_index is None
    n = logits.shape[0]
    e = np.exp(logits - logits.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    loss = -np.log(p[np.arange(n), target]).mean()
    if not return_grad:
        return loss
    p[np.arange(n), target] -= 1
    return loss, p / n


NAMES = ("conv2d", "conv2d_backward", "relu", "relu_backward", "max_pool2d",
         "max_pool2d_backward", "batch_norm", "batch_norm_backward", "linear",
         "linear_backward", "softmax_cross_entropy")


class Adam:
    """The cheat sheet's Adam over a list of arrays, updated in place (NumPy, one array at a
    time), with fastdl.optim.Adam's interface for the examples' --numpy runs."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.eps = list(params), lr, eps
        self.b1, self.b2 = betas
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        for w, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            mhat = m / (1 - self.b1 ** self.t)
            vhat = v / (1 - self.b2 ** self.t)
            w -= self.lr * mhat / (np.sqrt(vhat) + self.eps)


def patch_fastdl():
    """Route the fastdl functions the nn layers call to the NumPy versions above (the layers
    look the functions up on the fastdl module at each call)."""
    import fastdl
    import sys
    me = sys.modules[__name__]
    for name in NAMES:
        setattr(fastdl, name, getattr(me, name))
