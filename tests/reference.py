"""Plain-NumPy float64 reference implementations, one per fastdl op, written as the
cheat sheet (``spec/cheat-sheet.md``) writes them.

Every reference converts its inputs to float64 first: a float32 input is represented
exactly in float64, so the difference between fastdl and the reference measures fastdl's
own rounding, not the reference's. Keep this module free of test logic: later ops add one
function each.
"""

import numpy as np

__all__ = ["matmul_ref", "linear_ref", "linear_backward_ref", "einsum_ref"]


def _f64(x):
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------------------
# Tensor operations

def matmul_ref(a, b):
    """``C = np.matmul(A, B)`` (cheat sheet, "Matrix multiplication"), in float64."""
    return np.matmul(_f64(a), _f64(b))


def einsum_ref(subscripts, *operands):
    """``np.einsum(subscripts, *operands)`` (cheat sheet, "Einstein summation"), in float64."""
    return np.einsum(subscripts, *[_f64(op) for op in operands])


# --------------------------------------------------------------------------------------
# Layers

def linear_ref(x, w, b=None):
    """Linear layer ``Y = XW + b`` (cheat sheet): x ``(..., in)``, w ``(in, out)``, b ``(out,)``."""
    y = _f64(x) @ _f64(w)
    if b is not None:
        y = y + _f64(b)
    return y


def linear_backward_ref(dy, x, w):
    """Gradients of ``Y = XW + b`` for the upstream gradient ``dy = dL/dY``.

    ``dX = dY W^T``, ``dW = X^T dY`` and ``db = sum(dY)`` over every row, the leading
    (batch) dimensions of x and dy being flattened into rows.
    """
    dy, x, w = _f64(dy), _f64(x), _f64(w)
    dx = dy @ w.T
    x_rows = x.reshape(-1, w.shape[0])
    dy_rows = dy.reshape(-1, w.shape[1])
    dw = x_rows.T @ dy_rows
    db = dy_rows.sum(axis=0)
    return dx, dw, db
