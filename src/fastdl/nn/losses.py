"""Loss modules: ``forward(pred, target)`` -> loss, ``backward(dloss=None)`` -> dpred.

``backward()`` without an argument is the gradient of the loss itself (dloss = 1); for
``reduction='none'`` a per-sample ``dloss`` of the loss's shape may be given (default: ones,
i.e. the gradient of the sum). Losses hold no parameters.
"""

import numpy as np

import fastdl
from fastdl.nn.module import Module

__all__ = ["CrossEntropyLoss", "MSELoss"]

_REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(reduction, cls):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"fastdl.nn.{cls}: reduction must be 'none', 'mean' or 'sum', got "
                         f"{reduction!r}")
    return reduction


def _scale(grad, dloss, loss_shape, expand_axis, cls):
    if dloss is None:
        return grad
    d = np.asarray(dloss)
    if d.shape not in ((), loss_shape):
        raise ValueError(f"fastdl.nn.{cls}.backward: dloss has shape {d.shape}, expected () "
                         f"or the loss's shape {loss_shape}")
    if d.ndim and expand_axis is not None:
        d = np.expand_dims(d, expand_axis)
    return fastdl.multiply(grad, d.astype(grad.dtype, copy=False))


class CrossEntropyLoss(Module):
    """Softmax cross-entropy over logits with the classes on axis 1 (PyTorch's layout:
    ``(N, C)`` or ``(N, C, d1, ...)``; a 1-D input is one sample of C classes).

    ``target``: integer class indices (shape of the logits without the class axis) or class
    probabilities (the logits' shape). ``reduction``, ``label_smoothing``, ``ignore_index``
    as ``fastdl.softmax_cross_entropy``, which computes the loss and the gradient in one
    pass; the gradient is kept for ``backward``.
    """

    def __init__(self, reduction="mean", label_smoothing=0.0, ignore_index=None):
        super().__init__()
        self.reduction = _check_reduction(reduction, "CrossEntropyLoss")
        label_smoothing = float(label_smoothing)
        if not 0 <= label_smoothing <= 1:
            raise ValueError(f"fastdl.nn.CrossEntropyLoss: label_smoothing must be in [0, 1], "
                             f"got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def forward(self, logits, target):
        logits = np.asarray(logits)
        axis = 0 if logits.ndim == 1 else 1
        loss, grad = fastdl.softmax_cross_entropy(
            logits, target, axis=axis, reduction=self.reduction,
            label_smoothing=self.label_smoothing, ignore_index=self.ignore_index,
            return_grad=True)
        self._cache = (grad, np.shape(loss), axis)
        return loss

    def backward(self, dloss=None):
        grad, loss_shape, axis = self._cached()
        return _scale(grad, dloss, loss_shape, axis, "CrossEntropyLoss")


class MSELoss(Module):
    """Mean squared error ``mean((pred - target) ** 2)`` (cheat sheet); ``reduction`` as
    ``fastdl.mse``."""

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = _check_reduction(reduction, "MSELoss")

    def forward(self, pred, target):
        loss = fastdl.mse(target, pred, reduction=self.reduction)
        self._cache = (pred, target, np.shape(loss))
        return loss

    def backward(self, dloss=None):
        pred, target, loss_shape = self._cached()
        grad = fastdl.mse_grad(target, pred, reduction=self.reduction)
        return _scale(grad, dloss, loss_shape, None, "MSELoss")
