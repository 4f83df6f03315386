"""Plain-NumPy float64 references for fastdl.sum / mean / var (API.md, "Tensor operations").

Each reference computes in float64 whatever the input dtype (the float32 rounding error of
fastdl is then measured against a reference about 2^29 times more precise), with NumPy's axis,
keepdims and ddof semantics. ``exact_sum`` is a correctly rounded float64 sum (math.fsum) for
the accuracy tests, where even float64 rounding must not blur the comparison.
"""

import functools
import math
import warnings

import numpy as np


def _quiet(func):
    """NumPy's RuntimeWarnings (empty slice, ddof >= N, inf - inf) are expected here."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return func(*args, **kwargs)
    return wrapper


def _f64(x):
    return np.asarray(x, dtype=np.float64)


@_quiet
def sum_ref(x, axis=None, keepdims=False):
    """sum(x) over ``axis`` in float64."""
    return np.sum(_f64(x), axis=axis, keepdims=keepdims)


@_quiet
def mean_ref(x, axis=None, keepdims=False):
    """sum(x) / N over ``axis`` in float64 (NaN for N = 0)."""
    return np.mean(_f64(x), axis=axis, keepdims=keepdims)


@_quiet
def var_ref(x, axis=None, ddof=0, keepdims=False):
    """sum((x - mean)^2) / max(N - ddof, 0) over ``axis`` in float64 (two-pass, as NumPy)."""
    return np.var(_f64(x), axis=axis, ddof=ddof, keepdims=keepdims)


@_quiet
def abs_sum_ref(x, axis=None, keepdims=False):
    """sum(|x|): the condition scale of a sum (its rounding error is bounded relative to it)."""
    return np.sum(np.abs(_f64(x)), axis=axis, keepdims=keepdims)


def exact_sum(x, axis):
    """Correctly rounded float64 sum of the float values of x along one axis (math.fsum)."""
    return np.apply_along_axis(lambda v: math.fsum(v.tolist()), axis, _f64(x))
