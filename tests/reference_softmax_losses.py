"""Plain-NumPy float64 references for the softmax family and the losses, written as the cheat
sheet writes them (``spec/cheat-sheet.md``: softmax ``exp(x_i) / sum_j exp(x_j)``, cross entropy
``-np.sum(y_true * np.log(y_pred))``, mse ``np.mean((y_true - y_pred)**2)``), in float64.

The softmax subtracts the max first (the same function, computed stably), as every user of the
cheat sheet's formula on real logits must. Each reference converts its inputs to float64, so a
float32 input is represented exactly and a difference measures fastdl's rounding only.
"""

import numpy as np

__all__ = ["softmax_ref", "log_softmax_ref", "softmax_backward_ref", "log_softmax_backward_ref",
           "cross_entropy_ref", "cross_entropy_grad_ref", "mse_ref", "mse_grad_ref",
           "softmax_cross_entropy_ref"]


def _f64(x):
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------------------
# Activations

def softmax_ref(x, axis=-1):
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``."""
    x = _f64(x)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)


def log_softmax_ref(x, axis=-1):
    """``(x - max) - log(sum(exp(x - max)))`` along ``axis``."""
    x = _f64(x)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        z = x - x.max(axis=axis, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def softmax_backward_ref(dy, y, axis=-1):
    """``dx = y * (dy - sum(dy * y))``: the softmax Jacobian (diag(y) - y y^T) applied to dy."""
    dy, y = _f64(dy), _f64(y)
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


def log_softmax_backward_ref(dy, y, axis=-1):
    """``dx = dy - exp(y) * sum(dy)`` for y = log_softmax(x)."""
    dy, y = _f64(dy), _f64(y)
    return dy - np.exp(y) * dy.sum(axis=axis, keepdims=True)


# --------------------------------------------------------------------------------------
# Losses

def _reduce(per_sample, reduction, count=None):
    if reduction == "none":
        return per_sample
    total = per_sample.sum()
    if reduction == "sum":
        return total
    n = per_sample.size if count is None else count
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.float64(total) / np.float64(n)


def cross_entropy_ref(y_true, y_pred, reduction="sum"):
    """The cheat sheet's ``-np.sum(y_true * np.log(y_pred))`` over the last (class) axis, a
    term with ``y_true == 0`` being 0 (the log(0) guard); 'sum' | 'mean' (over samples) |
    'none' (per sample)."""
    t, p = _f64(y_true), _f64(y_pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(t == 0, 0.0, t * np.log(p))
    return _reduce(-terms.sum(axis=-1), reduction)


def cross_entropy_grad_ref(y_true, y_pred, reduction="sum"):
    """``-y_true / y_pred`` (0 where y_true == 0), divided by the number of samples for 'mean'."""
    t, p = _f64(y_true), _f64(y_pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(t == 0, 0.0, -t / p)
    if reduction == "mean":
        g = g / max(int(np.prod(t.shape[:-1])), 1)
    return g


def mse_ref(y_true, y_pred, reduction="mean"):
    """The cheat sheet's ``np.mean((y_true - y_pred)**2)``; 'sum'; 'none' elementwise."""
    d2 = (_f64(y_true) - _f64(y_pred)) ** 2
    if reduction == "none":
        return d2
    if reduction == "sum":
        return d2.sum()
    with np.errstate(invalid="ignore"):
        return np.mean(d2) if d2.size else np.float64(np.nan)


def mse_grad_ref(y_true, y_pred, reduction="mean"):
    """``2 * (y_pred - y_true)``, divided by the number of elements for 'mean'."""
    g = 2.0 * (_f64(y_pred) - _f64(y_true))
    if reduction == "mean" and g.size:
        g = g / g.size
    return g


def softmax_cross_entropy_ref(logits, target, axis=-1, reduction="mean", label_smoothing=0.0,
                              ignore_index=None):
    """PyTorch's ``cross_entropy(logits, target)`` with the class axis ``axis``, in float64.

    Returns ``(loss, dlogits)``. Integer ``target``: class indices (``ignore_index`` marks
    samples with no loss and no gradient, left out of the 'mean' count); float ``target``:
    probabilities. Label smoothing mixes the target with the uniform distribution:
    ``(1 - eps) * target + eps / C``. loss = ``-sum(target' * log_softmax(x))`` per sample;
    dlogits = ``(softmax(x) * sum(target') - target') * scale``.
    """
    x = np.moveaxis(_f64(logits), axis, -1)
    classes = x.shape[-1]
    eps = float(label_smoothing)
    target = np.asarray(target)
    if target.dtype.kind in "iu":
        idx = target.astype(np.int64)
        keep = np.ones(idx.shape, bool) if ignore_index is None else idx != ignore_index
        onehot = np.zeros(x.shape)
        safe = np.where(keep, idx, 0)
        np.put_along_axis(onehot, safe[..., None], 1.0, axis=-1)
        t = (1 - eps) * onehot + eps / classes
        t = t * keep[..., None]
        count = int(keep.sum())
    else:
        t = (1 - eps) * np.moveaxis(_f64(target), axis, -1) + eps / classes
        keep = np.ones(x.shape[:-1], bool)
        count = int(keep.size)
    logp = log_softmax_ref(x, -1)
    with np.errstate(invalid="ignore"):
        terms = np.where(t == 0, 0.0, t * logp)
    per_sample = np.where(keep, -terms.sum(-1), 0.0)
    loss = _reduce(per_sample, reduction, count)
    scale = (1.0 / count if count else 0.0) if reduction == "mean" else 1.0
    p = softmax_ref(x, -1)
    grad = (p * t.sum(-1, keepdims=True) - t) * scale
    grad = np.where(keep[..., None], grad, 0.0)
    return loss, np.moveaxis(grad, -1, axis)
