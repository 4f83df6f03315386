"""Plain NumPy float64 references for conv2d and its backward (no fastdl code involved).

The convolution is written window by window: for each kernel tap (i, j) the strided slice of
the zero-padded input that the tap sees is contracted with w[:, :, i, j] (an einsum over the
group's channels). The backward is the same loop transposed: dx scatters dy through each tap
into the padded input and crops, dw contracts dy with each tap's slice, db sums dy.
"""

import numpy as np


def _pair(v):
    return (v, v) if np.isscalar(v) else (int(v[0]), int(v[1]))


def conv_geometry(x_shape, w_shape, stride=1, padding=0, dilation=1):
    """(sh, sw), (dh, dw), (pt, pb, pl, pr), (Ho, Wo) as PyTorch defines them."""
    H, W = x_shape[2], x_shape[3]
    kh, kw = w_shape[2], w_shape[3]
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            pt = pb = pl = pr = 0
        else:  # 'same': the extra pixel of an odd total goes bottom/right
            pt, pl = dh * (kh - 1) // 2, dw * (kw - 1) // 2
            pb, pr = dh * (kh - 1) - pt, dw * (kw - 1) - pl
    else:
        pt, pl = _pair(padding)
        pb, pr = pt, pl
    Ho = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
    return (sh, sw), (dh, dw), (pt, pb, pl, pr), (Ho, Wo)


def _tap(xp, i, j, sh, sw, dh, dw, Ho, Wo):
    """The (N, C, Ho, Wo) slice of the padded input that tap (i, j) reads."""
    return xp[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh, j * dw: j * dw + sw * (Wo - 1) + 1: sw]


def conv2d_ref(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    (sh, sw), (dh, dw), (pt, pb, pl, pr), (Ho, Wo) = conv_geometry(
        x.shape, w.shape, stride, padding, dilation)
    N, C = x.shape[:2]
    O, Cg, kh, kw = w.shape
    Og = O // groups
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.zeros((N, O, Ho, Wo))
    for g in range(groups):
        xs = xp[:, g * Cg:(g + 1) * Cg]
        for i in range(kh):
            for j in range(kw):
                y[:, g * Og:(g + 1) * Og] += np.einsum(
                    "nchw,oc->nohw", _tap(xs, i, j, sh, sw, dh, dw, Ho, Wo),
                    w[g * Og:(g + 1) * Og, :, i, j])
    if b is not None:
        y += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return y


def conv2d_backward_ref(dy, x, w, stride=1, padding=0, dilation=1, groups=1):
    dy = np.asarray(dy, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    (sh, sw), (dh, dw), (pt, pb, pl, pr), (Ho, Wo) = conv_geometry(
        x.shape, w.shape, stride, padding, dilation)
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    Og = O // groups
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    dxp = np.zeros_like(xp)
    dw_ = np.zeros_like(w)
    for g in range(groups):
        xs = xp[:, g * Cg:(g + 1) * Cg]
        dxs = dxp[:, g * Cg:(g + 1) * Cg]
        dyg = dy[:, g * Og:(g + 1) * Og]
        for i in range(kh):
            for j in range(kw):
                dw_[g * Og:(g + 1) * Og, :, i, j] = np.einsum(
                    "nohw,nchw->oc", dyg, _tap(xs, i, j, sh, sw, dh, dw, Ho, Wo))
                _tap(dxs, i, j, sh, sw, dh, dw, Ho, Wo)[...] += np.einsum(
                    "nohw,oc->nchw", dyg, w[g * Og:(g + 1) * Og, :, i, j])
    dx = dxp[:, :, pt:pt + H, pl:pl + W]
    return dx, dw_, dy.sum(axis=(0, 2, 3))


def naive_conv2d_numpy(x, w, b=None, padding=1):
    """The cheat-sheet NumPy baseline of the benchmarks: im2col with sliding_window_view, then
    one matmul (stride 1, groups 1)."""
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    N, C, Ho, Wo = win.shape[:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N, Ho * Wo, C * kh * kw)
    y = cols @ w.reshape(w.shape[0], -1).T
    y = y.transpose(0, 2, 1).reshape(N, w.shape[0], Ho, Wo)
    return y if b is None else y + b[None, :, None, None]
