"""Plain-NumPy references for the elementwise ops (activations, their derivatives, the fused
chain rule, broadcasting arithmetic), written as the cheat sheet (``spec/cheat-sheet.md``) and
API.md write them.

Every reference returns float64. The piecewise-linear ops and the arithmetic are the cheat
sheet's NumPy lines in float64 (a float32 input is exact in float64, and a single float64
operation is far more accurate than any float32 result). The transcendental ones are evaluated
in ``np.longdouble`` (80-bit extended precision on x86-64) in their *stable* forms, so that
the reference itself is accurate to well under one float64 unit everywhere, including the
tails where the textbook form cancels:

* ``1 / (1 + exp(-x))`` as ``1 / (1 + e)`` or ``e / (1 + e)`` with ``e = exp(-|x|)`` (never
  overflows);
* ``s (1 - s)`` and ``1 - tanh(x)^2`` as ``e / (1 + e)^2`` and ``4 e / (1 + e)^2``;
* the normal CDF of the exact GELU, ``0.5 (1 + erf(x / sqrt 2))``, as
  ``0.5 erfc(-x / sqrt 2)`` (``scipy.special.erfc``, float64 with a few ulp of relative
  error over its whole range: no cancellation for negative x);
* ``0.5 (1 + tanh(u))`` of the tanh-form GELU as ``sigmoid(2 u)``.

At +-inf, where a formula gives NaN through ``inf * 0``, the references return the limits
that API.md prescribes (gelu and silu: +inf at +inf, 0 at -inf; their derivatives 1 and 0).

``*_grad2_ref`` are second derivatives: the tests use them only to size tolerances (the
conditioning of a derivative), never as values to match.

Keep this module free of test logic.
"""

import numpy as np
from scipy.special import erfc

__all__ = [
    "relu_ref", "leaky_relu_ref", "sigmoid_ref", "tanh_ref", "gelu_ref", "silu_ref",
    "relu_grad_ref", "leaky_relu_grad_ref", "sigmoid_grad_ref", "tanh_grad_ref",
    "gelu_grad_ref", "silu_grad_ref",
    "relu_grad2_ref", "leaky_relu_grad2_ref", "sigmoid_grad2_ref", "tanh_grad2_ref",
    "gelu_grad2_ref", "silu_grad2_ref",
    "relu_backward_ref", "leaky_relu_backward_ref", "sigmoid_backward_ref",
    "tanh_backward_ref", "gelu_backward_ref", "silu_backward_ref",
    "add_ref", "subtract_ref", "multiply_ref", "divide_ref", "maximum_ref",
]

_LD = np.longdouble
SQRT_2_OVER_PI = _LD("0.797884560802865355879892119868763737")   # sqrt(2 / pi)
INV_SQRT_2PI = _LD("0.398942280401432677939946059934381868")     # 1 / sqrt(2 pi)
INV_SQRT_2 = _LD("0.707106781186547524400844362104849039")       # 1 / sqrt(2)
GELU_C = _LD("0.044715")


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _ld(x):
    return np.asarray(x, dtype=_LD)


def _out(v):
    """A long-double result as float64 (scalars stay 0-d arrays)."""
    return np.asarray(v, dtype=np.float64)


def _limits(x, value, at_pos_inf, at_neg_inf):
    """``value`` with the prescribed limits at +-inf (NaN inputs stay NaN)."""
    value = np.where(x == np.inf, at_pos_inf, value)
    return np.where(x == -np.inf, at_neg_inf, value)


def _check_gelu(approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


# --------------------------------------------------------------------------------------
# Building blocks in long double

def _sigmoid_ld(x):
    """sigmoid(x) = 1 / (1 + exp(-x)), without overflow: e = exp(-|x|) is in (0, 1]."""
    x = _ld(x)
    e = np.exp(-np.abs(x))
    r = 1 / (1 + e)
    return np.where(x >= 0, r, e * r)


def _sigmoid_prime_ld(x):
    """sigmoid'(x) = s (1 - s) = e / (1 + e)^2 with e = exp(-|x|): no cancellation."""
    e = np.exp(-np.abs(_ld(x)))
    return e / (1 + e) ** 2


def _sigmoid_second_ld(x):
    """sigmoid''(x) = s'(x) (1 - 2 s(x)) = -sign(x) e (1 - e) / (1 + e)^3."""
    x = _ld(x)
    e = np.exp(-np.abs(x))
    return -np.sign(x) * e * (1 - e) / (1 + e) ** 3


def _tanh_prime_ld(x):
    """1 - tanh(x)^2 = 4 e / (1 + e)^2 with e = exp(-2|x|): no cancellation."""
    e = np.exp(-2 * np.abs(_ld(x)))
    return 4 * e / (1 + e) ** 2


def _normal_cdf(x):
    """Phi(x) = 0.5 erfc(-x / sqrt 2), relative-accurate in both tails (float64)."""
    return 0.5 * erfc(_f64(-(_ld(x) * INV_SQRT_2)))


def _normal_pdf_ld(x):
    x = _ld(x)
    return INV_SQRT_2PI * np.exp(-0.5 * x * x)


def _gelu_tanh_u(x):
    """u(x) = sqrt(2/pi) (x + 0.044715 x^3) and u'(x), u''(x)."""
    x = _ld(x)
    u = SQRT_2_OVER_PI * (x + GELU_C * x ** 3)
    du = SQRT_2_OVER_PI * (1 + 3 * GELU_C * x * x)
    d2u = SQRT_2_OVER_PI * 6 * GELU_C * x
    return u, du, d2u


# --------------------------------------------------------------------------------------
# Activations

def relu_ref(x):
    """ReLU, the cheat sheet's ``np.maximum(x, 0)`` (NaN propagates)."""
    return np.maximum(_f64(x), 0.0)


def leaky_relu_ref(x, alpha=0.01):
    """LeakyReLU, the cheat sheet's ``max(alpha x, x)`` (valid for 0 <= alpha <= 1)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("the cheat sheet's max(alpha x, x) is LeakyReLU only for 0 <= alpha <= 1")
    x = _f64(x)
    return np.maximum(alpha * x, x)


def sigmoid_ref(x):
    """Sigmoid ``1 / (1 + exp(-x))`` (cheat sheet), evaluated stably in long double."""
    return _out(_sigmoid_ld(x))


def tanh_ref(x):
    """``tanh(x)`` in long double."""
    return _out(np.tanh(_ld(x)))


def gelu_ref(x, approximate="none"):
    """GELU (API.md): ``x Phi(x)`` (``approximate='none'``) or the tanh form
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``; 0 at -inf, +inf at +inf."""
    _check_gelu(approximate)
    x64 = _f64(x)
    with np.errstate(invalid="ignore", over="ignore"):
        if approximate == "none":
            value = _ld(x64) * _ld(_normal_cdf(x64))
        else:
            u, _, _ = _gelu_tanh_u(x64)
            value = _ld(x64) * _sigmoid_ld(2 * u)        # 0.5 (1 + tanh u) = sigmoid(2u)
        return _out(_limits(x64, value, np.inf, 0.0))


def silu_ref(x):
    """SiLU ``x * sigmoid(x)``; 0 at -inf, +inf at +inf."""
    x64 = _f64(x)
    with np.errstate(invalid="ignore"):
        return _out(_limits(x64, _ld(x64) * _sigmoid_ld(x64), np.inf, 0.0))


# --------------------------------------------------------------------------------------
# Derivatives f'(x) (cheat sheet, "Derivatives", and the calculus of API.md's gelu / silu)

def relu_grad_ref(x):
    """ReLU': ``1 if x > 0 else 0`` (cheat sheet; 0 at x = 0 and for NaN)."""
    return (_f64(x) > 0).astype(np.float64)


def leaky_relu_grad_ref(x, alpha=0.01):
    """LeakyReLU': ``1 if x > 0 else alpha`` (cheat sheet; alpha at x = 0)."""
    return np.where(_f64(x) > 0, 1.0, float(alpha))


def sigmoid_grad_ref(x):
    """Sigmoid': ``f(x) (1 - f(x))`` (cheat sheet), as ``e / (1 + e)^2`` in long double."""
    return _out(_sigmoid_prime_ld(x))


def tanh_grad_ref(x):
    """Tanh': ``1 - tanh(x)^2`` (cheat sheet), as ``4 e / (1 + e)^2`` in long double."""
    return _out(_tanh_prime_ld(x))


def gelu_grad_ref(x, approximate="none"):
    """GELU': ``Phi(x) + x phi(x)`` (exact) or the derivative of the tanh form,
    ``0.5 (1 + t) + 0.5 x (1 - t^2) u'(x)``; 1 at +inf, 0 at -inf."""
    _check_gelu(approximate)
    x64 = _f64(x)
    xl = _ld(x64)
    with np.errstate(invalid="ignore", over="ignore"):
        if approximate == "none":
            value = _ld(_normal_cdf(x64)) + xl * _normal_pdf_ld(xl)
        else:
            u, du, _ = _gelu_tanh_u(xl)
            value = _sigmoid_ld(2 * u) + xl * 2 * _sigmoid_prime_ld(2 * u) * du
        return _out(_limits(x64, value, 1.0, 0.0))


def silu_grad_ref(x):
    """SiLU': ``s (1 + x (1 - s))`` with s = sigmoid(x), as ``s + x s'``; 1 at +inf, 0 at -inf."""
    x64 = _f64(x)
    xl = _ld(x64)
    with np.errstate(invalid="ignore"):
        return _out(_limits(x64, _sigmoid_ld(xl) + xl * _sigmoid_prime_ld(xl), 1.0, 0.0))


# --------------------------------------------------------------------------------------
# Second derivatives (only to size tolerances: the conditioning of the derivatives)

def relu_grad2_ref(x):
    return np.zeros_like(_f64(x))


def leaky_relu_grad2_ref(x, alpha=0.01):
    return np.zeros_like(_f64(x))


def sigmoid_grad2_ref(x):
    return _out(_sigmoid_second_ld(x))


def tanh_grad2_ref(x):
    """d/dx (1 - t^2) = -2 t (1 - t^2)."""
    xl = _ld(x)
    return _out(-2 * np.tanh(xl) * _tanh_prime_ld(xl))


def gelu_grad2_ref(x, approximate="none"):
    _check_gelu(approximate)
    x64 = _f64(x)
    xl = _ld(x64)
    with np.errstate(invalid="ignore", over="ignore"):
        if approximate == "none":
            value = _normal_pdf_ld(xl) * (2 - xl * xl)
        else:
            u, du, d2u = _gelu_tanh_u(xl)
            sp = _sigmoid_prime_ld(2 * u)
            spp = _sigmoid_second_ld(2 * u)
            value = 4 * sp * du + xl * (4 * spp * du * du + 2 * sp * d2u)
        return _out(_limits(x64, value, 0.0, 0.0))


def silu_grad2_ref(x):
    """d/dx (s + x s') = 2 s' + x s''."""
    x64 = _f64(x)
    xl = _ld(x64)
    with np.errstate(invalid="ignore"):
        return _out(_limits(x64, 2 * _sigmoid_prime_ld(xl) + xl * _sigmoid_second_ld(xl),
                            0.0, 0.0))


# --------------------------------------------------------------------------------------
# Fused chain rule: dx = dy * f'(...)

def relu_backward_ref(dy, x):
    return _f64(dy) * relu_grad_ref(x)


def leaky_relu_backward_ref(dy, x, alpha=0.01):
    return _f64(dy) * leaky_relu_grad_ref(x, alpha)


def sigmoid_backward_ref(dy, y):
    """``dy * y * (1 - y)`` from the sigmoid OUTPUT y (cheat sheet: f'(x) = f(x)(1 - f(x)))."""
    y = _ld(y)
    return _out(_ld(dy) * y * (1 - y))


def tanh_backward_ref(dy, y):
    """``dy * (1 - y^2)`` from the tanh OUTPUT y (cheat sheet: f'(x) = 1 - tanh^2(x))."""
    y = _ld(y)
    return _out(_ld(dy) * (1 - y * y))


def gelu_backward_ref(dy, x, approximate="none"):
    return _f64(dy) * gelu_grad_ref(x, approximate)


def silu_backward_ref(dy, x):
    return _f64(dy) * silu_grad_ref(x)


# --------------------------------------------------------------------------------------
# Broadcasting arithmetic (cheat sheet: C = A + B, C = A * B, np.maximum), float64

def add_ref(a, b):
    return np.add(_f64(a), _f64(b))


def subtract_ref(a, b):
    return np.subtract(_f64(a), _f64(b))


def multiply_ref(a, b):
    return np.multiply(_f64(a), _f64(b))


def divide_ref(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(_f64(a), _f64(b))


def maximum_ref(a, b):
    return np.maximum(_f64(a), _f64(b))
