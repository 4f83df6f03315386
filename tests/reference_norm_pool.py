"""Plain-NumPy float64 references for batch_norm, layer_norm and 2-D pooling (cheat-sheet
formulas written out; loops where a vectorised form would hide the rule being tested)."""

import numpy as np


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


def _bn_axes(x):
    return (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)


def batch_norm_train_ref(x, gamma, beta, eps=1e-5):
    """Cheat sheet, training: (y, batch mean, biased batch variance)."""
    x, gamma, beta = _f64(x, gamma, beta)
    axes, sh = _bn_axes(x)
    mean = np.mean(x, axis=axes)
    var = np.var(x, axis=axes)
    y = (x - mean.reshape(sh)) / np.sqrt(var.reshape(sh) + eps)
    if gamma is not None:
        y = gamma.reshape(sh) * y
    if beta is not None:
        y = y + beta.reshape(sh)
    return y, mean, var


def batch_norm_infer_ref(x, gamma, beta, running_mean, running_var, eps=1e-5):
    """Cheat sheet, inference: gamma * (x - running_mean) / sqrt(running_var + eps) + beta."""
    x, gamma, beta, rm, rv = _f64(x, gamma, beta, running_mean, running_var)
    _, sh = _bn_axes(x)
    return gamma.reshape(sh) * (x - rm.reshape(sh)) / np.sqrt(rv.reshape(sh) + eps) \
        + beta.reshape(sh)


def running_update_ref(running_mean, running_var, x, momentum):
    """PyTorch's rule: r = (1 - momentum) r + momentum stat, unbiased variance."""
    x, rm, rv = _f64(x, running_mean, running_var)
    axes, _ = _bn_axes(x)
    m = x.size // x.shape[1]
    return ((1 - momentum) * rm + momentum * x.mean(axis=axes),
            (1 - momentum) * rv + momentum * x.var(axis=axes) * m / (m - 1))


def batch_norm_backward_ref(dy, x, gamma, mean, inv_std):
    dy, x, gamma, mean, inv_std = _f64(dy, x, gamma, mean, inv_std)
    axes, sh = _bn_axes(x)
    m = x.size // x.shape[1]
    xhat = (x - mean.reshape(sh)) * inv_std.reshape(sh)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    g = np.ones_like(mean) if gamma is None else gamma
    dx = (g * inv_std).reshape(sh) * (dy - dbeta.reshape(sh) / m
                                      - xhat * dgamma.reshape(sh) / m)
    return dx, dgamma, dbeta


def layer_norm_ref(x, normalized_shape, gamma=None, beta=None, eps=1e-5):
    """(y, mean, inv_std) over the trailing normalized_shape axes."""
    x, gamma, beta = _f64(x, gamma, beta)
    k = len(normalized_shape)
    axes = tuple(range(x.ndim - k, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    outer = x.shape[:x.ndim - k]
    return y, mean.reshape(outer), (1 / np.sqrt(var + eps)).reshape(outer)


def layer_norm_backward_ref(dy, x, normalized_shape, gamma, mean, inv_std):
    dy, x, gamma, mean, inv_std = _f64(dy, x, gamma, mean, inv_std)
    k = len(normalized_shape)
    axes = tuple(range(x.ndim - k, x.ndim))
    sh = mean.shape + (1,) * k
    xhat = (x - mean.reshape(sh)) * inv_std.reshape(sh)
    u = dy if gamma is None else dy * gamma
    d = int(np.prod(normalized_shape))
    dx = inv_std.reshape(sh) * (u - u.sum(axis=axes, keepdims=True) / d
                                - xhat * (u * xhat).sum(axis=axes, keepdims=True) / d)
    if gamma is None:
        return dx, None, None
    outer_axes = tuple(range(x.ndim - k))
    return dx, (dy * xhat).sum(axis=outer_axes), dy.sum(axis=outer_axes)


def _pairs(kernel_size, stride, padding):
    k = (kernel_size,) * 2 if np.isscalar(kernel_size) else tuple(kernel_size)
    s = k if stride is None else ((stride,) * 2 if np.isscalar(stride) else tuple(stride))
    p = (padding,) * 2 if np.isscalar(padding) else tuple(padding)
    return k, s, p


def _windows(shape, kernel_size, stride, padding):
    """(Ho, Wo, iterator of (oh, ow, h0, h1, w0, w1)) with windows clipped to the plane."""
    (kh, kw), (sh, sw), (ph, pw) = _pairs(kernel_size, stride, padding)
    H, W = shape[2], shape[3]
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (W + 2 * pw - kw) // sw + 1

    def it():
        for oh in range(Ho):
            for ow in range(Wo):
                hs, ws = oh * sh - ph, ow * sw - pw
                yield oh, ow, max(hs, 0), min(hs + kh, H), max(ws, 0), min(ws + kw, W)
    return Ho, Wo, it()


def max_pool2d_ref(x, kernel_size, stride=None, padding=0):
    """(y, idx): PyTorch's scan (row by row; greater or NaN replaces; idx = h*W + w)."""
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    Ho, Wo, wins = _windows(x.shape, kernel_size, stride, padding)
    y = np.empty((N, C, Ho, Wo))
    idx = np.empty((N, C, Ho, Wo), np.int64)
    for oh, ow, h0, h1, w0, w1 in wins:
        m = np.full((N, C), -np.inf)
        at = np.full((N, C), h0 * W + w0, np.int64)
        for h in range(h0, h1):
            for w in range(w0, w1):
                v = x[:, :, h, w]
                take = (v > m) | np.isnan(v)
                m = np.where(take, v, m)
                at = np.where(take, h * W + w, at)
        y[:, :, oh, ow] = m
        idx[:, :, oh, ow] = at
    return y, idx


def max_pool2d_backward_ref(dy, x_shape, idx):
    dy = np.asarray(dy, dtype=np.float64)
    N, C, H, W = x_shape
    dx = np.zeros((N * C, H * W))
    flat_dy = dy.reshape(N * C, -1)
    flat_idx = np.asarray(idx).reshape(N * C, -1)
    for p in range(N * C):
        np.add.at(dx[p], flat_idx[p], flat_dy[p])
    return dx.reshape(N, C, H, W)


def avg_pool2d_ref(x, kernel_size, stride=None, padding=0):
    """Zero padding counted: every window sum is divided by kh*kw."""
    x = np.asarray(x, dtype=np.float64)
    (kh, kw), _, _ = _pairs(kernel_size, stride, padding)
    Ho, Wo, wins = _windows(x.shape, kernel_size, stride, padding)
    y = np.empty(x.shape[:2] + (Ho, Wo))
    for oh, ow, h0, h1, w0, w1 in wins:
        y[:, :, oh, ow] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / (kh * kw)
    return y


def avg_pool2d_backward_ref(dy, x_shape, kernel_size, stride=None, padding=0):
    dy = np.asarray(dy, dtype=np.float64)
    (kh, kw), _, _ = _pairs(kernel_size, stride, padding)
    _, _, wins = _windows(x_shape, kernel_size, stride, padding)
    dx = np.zeros(x_shape)
    for oh, ow, h0, h1, w0, w1 in wins:
        dx[:, :, h0:h1, w0:w1] += dy[:, :, oh, ow][:, :, None, None] / (kh * kw)
    return dx


def global_avg_pool2d_ref(x):
    return np.asarray(x, dtype=np.float64).mean(axis=(2, 3))
