"""Shared fixtures and helpers of the fastdl test suite.

* ``dtype``: the two dtypes fastdl computes natively (float32, float64).
* ``rng``: a seeded ``numpy.random.Generator`` (fixed seed: failures reproduce).
* ``layout(x, kind)``: the same values as ``x`` in another memory layout.
* ``assert_close(actual, expected, dtype, ...)``: THE comparison against a reference.
* ``gemm_scale(a, b)``: the ``|a| @ |b|`` bound that GEMM tolerances are relative to.
* ``snapshot`` / ``assert_unchanged``: bitwise "a failed call wrote nothing" checks.
* ``make_wrong_out(kind, dtype, shape)``: an ``out=`` every function must refuse.
* ``blas_provider``: runs a test once per BLAS library fastdl can call.
* ``blas_int_limit``: lowers fastdl's BLAS integer limit for a test, always restoring it.

Test modules import the helpers with ``from conftest import ...`` (pytest puts this
directory on ``sys.path``, the tests folder being no package).
"""

import math

import numpy as np
import pytest

import fastdl
from fastdl._ext import _blas

SEED = 20240607
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
LAYOUTS = ("C", "F", "strided", "negative", "transposed-view")

# Relative tolerances, per dtype, for ONE rounding-error "unit" of an operation.
#
# Unit roundoff u is 2**-24 = 6.0e-8 (float32) and 2**-53 = 1.1e-16 (float64). An
# elementwise op or a short chain of them is within a few u of the exact value; the
# tolerances leave room for that, for libm/vector-math differences and for SIMD
# reassociation: 1e-5 is ~170 u in float32, 1e-12 is ~9000 u in float64 (DESIGN.md,
# "Tests"). Anything a real bug produces (a wrong element, a lost block of a sum, a stale
# value) is orders of magnitude larger.
#
# A GEMM element is a sum of k products. Its rounding error is bounded by
# gamma_k * sum_p |a_ip| |b_pj| with gamma_k ~ k u (Higham, "Accuracy and Stability of
# Numerical Algorithms", Thm 3.5), and in practice it grows like sqrt(k) u times the typical
# term (rounding errors of random sign), far below the worst case. So GEMM-like results
# are compared elementwise with
#     |actual - expected| <= RTOL * (|a| @ |b|)
# i.e. ``assert_close(..., scale=gemm_scale(a, b))``: the bound |a| @ |b| itself grows
# linearly with k, so no extra sqrt(k) factor is needed (the worst case k u stays under
# RTOL up to k ~ 170 in float32; beyond that the realistic sqrt(k) growth is what
# matters, and it stays ~100x under RTOL * (|a| @ |b|) for every size in this suite).
# Relative to |a| @ |b| rather than to |c|, the bound stays meaningful when c cancels to ~0,
# while an element that lost even one product (~|a_ip b_pj|) fails it.
# Without a scale, the largest |expected| is the scale; ``terms`` then widens the tolerance
# by sqrt(terms) for sums of that many values (e.g. a reduction compared to its result).
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


@pytest.fixture(params=DTYPES, ids=lambda d: d.name)
def dtype(request):
    """float32 and float64, the dtypes fastdl computes natively (a ``numpy.dtype``)."""
    return request.param


@pytest.fixture
def rng():
    """A freshly seeded Generator per test: values do not depend on test order."""
    return np.random.default_rng(SEED)


@pytest.fixture(autouse=True)
def _restore_thread_count():
    # A test that fails inside set_num_threads must not change the next test's threads.
    before = fastdl.get_num_threads()
    yield
    if fastdl.get_num_threads() != before:
        fastdl.set_num_threads(before)


# The BLAS libraries fastdl can call (e.g. "scipy": scipy's LP64 cython_blas, "numpy": the
# ILP64 OpenBLAS of NumPy's wheels); tests of the BLAS layer run on each of them.
BLAS_PROVIDERS = sorted(getattr(_blas, "_providers", {}) or ["default"])


@pytest.fixture(params=BLAS_PROVIDERS)
def blas_provider(request):
    """Run the test with each BLAS provider, restoring the one selected before."""
    if request.param == "default" or not hasattr(_blas, "_select_provider"):
        yield request.param
        return
    previous = _blas.blas_info()["provider"]
    _blas._select_provider(request.param)
    try:
        yield request.param
    finally:
        _blas._select_provider(previous)


@pytest.fixture
def blas_int_limit(request):
    """A setter for fastdl's BLAS integer limit; the original limit is restored afterwards.

    ``_set_blas_int_limit(n)`` returns the previous limit, which is what we restore (in a
    ``finally``: a failing test must not leave every later GEMM split into tiny pieces).
    With ``blas_provider`` the provider is selected first (selecting one resets the limit).
    """
    if "blas_provider" in request.fixturenames:
        request.getfixturevalue("blas_provider")
    original = _blas._set_blas_int_limit(2**31 - 1)
    _blas._set_blas_int_limit(original)
    try:
        yield _blas._set_blas_int_limit
    finally:
        _blas._set_blas_int_limit(original)


def random_array(rng, shape, dtype=np.float64):
    """Standard normal values of ``dtype`` (drawn in float64, then rounded)."""
    return rng.standard_normal(shape).astype(dtype)


def layout(x, kind):
    """The values of ``x`` in the memory layout ``kind`` (a new array or view).

    "C": C-contiguous; "F": Fortran-contiguous; "strided": every axis a step-2 slice of a
    bigger array whose other elements are NaN (a kernel reading a wrong element shows
    it); "negative": every axis reversed (negative strides); "transposed-view": the last
    two axes swapped in memory, i.e. ``swapaxes`` of a C array (for 1-D: the plain array).
    """
    x = np.asarray(x)
    # (not np.ascontiguousarray / np.asfortranarray: they turn a 0-d array into 1-D)
    if kind == "C":
        return np.asarray(x, order="C")
    if kind == "F":
        return np.asarray(x, order="F")
    if kind == "strided":
        big = np.empty(tuple(2 * s + 1 for s in x.shape), dtype=x.dtype)
        if big.dtype.kind == "f":
            big.fill(np.nan)
        # (a 0-d array indexed with () gives a scalar, not a view: [...] keeps it an array)
        view = big[tuple(slice(1, None, 2) for _ in x.shape)] if x.ndim else big[...]
        view[...] = x
        return view
    if kind == "negative":
        base = np.empty(x.shape, dtype=x.dtype)
        view = base[tuple(slice(None, None, -1) for _ in x.shape)] if x.ndim else base[...]
        view[...] = x
        return view
    if kind == "transposed-view":
        if x.ndim < 2:
            return np.asarray(x, order="C")
        return np.swapaxes(np.asarray(np.swapaxes(x, -1, -2), order="C"), -1, -2)
    raise ValueError(f"unknown layout {kind!r}")


def gemm_scale(a, b):
    """``|a| @ |b|`` in float64: the magnitude each GEMM result element is relative to."""
    return np.matmul(np.abs(np.asarray(a, dtype=np.float64)),
                     np.abs(np.asarray(b, dtype=np.float64)))


def assert_close(actual, expected, dtype, *, scale=None, terms=1):
    """Assert ``actual`` (a fastdl result) matches ``expected`` (a float64 reference).

    ``actual`` must have exactly ``dtype`` and the reference's shape. Each element may
    differ by ``RTOL[dtype] * sqrt(terms) * scale``: ``scale`` defaults to the largest
    |expected| (one rounding unit relative to the result's magnitude); GEMM-like results
    pass ``scale=gemm_scale(a, b)`` (see RTOL above). NaNs must match NaNs, infinities must
    match exactly.
    """
    dtype = np.dtype(dtype)
    expected = np.asarray(expected, dtype=np.float64)
    assert isinstance(actual, (np.ndarray, np.generic)), \
        f"expected a NumPy array or scalar, got {type(actual).__name__}"
    assert actual.dtype == dtype, f"dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"shape {actual.shape}, expected {expected.shape}"
    actual64 = np.asarray(actual, dtype=np.float64)
    nan_actual, nan_expected = np.isnan(actual64), np.isnan(expected)
    assert np.array_equal(nan_actual, nan_expected), \
        f"NaN at {np.argwhere(nan_actual != nan_expected)[:5].tolist()} (first 5)"
    inf = np.isinf(expected)
    assert np.array_equal(actual64[inf], expected[inf]), "infinities differ"
    finite = ~(nan_expected | inf)
    if not finite.any():
        return
    if scale is None:
        scale = np.max(np.abs(expected[finite]))
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), expected.shape)
    # The smallest normal number as an absolute floor: an exact zero must come out (as
    # far as a subnormal) zero, e.g. a k = 0 product.
    tol = RTOL[dtype] * math.sqrt(max(terms, 1)) * scale + np.finfo(dtype).tiny
    # Differences only where the reference is finite (inf - inf would warn, and is checked above).
    err = np.zeros_like(expected)
    err[finite] = np.abs(actual64[finite] - expected[finite])
    bad = finite & ~(err <= tol)
    if bad.any():
        idx = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{int(bad.sum())} of {expected.size} elements differ beyond tolerance; first at "
            f"{idx}: got {actual64[idx]!r}, expected {expected[idx]!r}, |err| {err[idx]:.3g} > "
            f"tol {tol[idx]:.3g} (max |err|/tol {np.max(err[finite] / tol[finite]):.3g})")


WRONG_OUT_KINDS = ["wrong-shape", "extra-dim", "wrong-dtype", "int-dtype", "byteswapped",
                   "list", "read-only"]


def make_wrong_out(kind, dtype, shape):
    """An out= that fastdl must refuse, and the exception it must raise."""
    other = np.float64 if dtype == np.float32 else np.float32
    if kind == "wrong-shape":
        return np.full(shape[::-1], 7, dtype), ValueError
    if kind == "extra-dim":
        return np.full(shape + (1,), 7, dtype), ValueError
    if kind == "wrong-dtype":
        return np.full(shape, 7, other), TypeError
    if kind == "int-dtype":
        return np.full(shape, 7, np.int64), TypeError
    if kind == "byteswapped":
        return np.full(shape, 7, dtype.newbyteorder()), TypeError
    if kind == "list":
        return np.full(shape, 7, dtype).tolist(), TypeError
    if kind == "read-only":
        out = np.full(shape, 7, dtype)
        out.flags.writeable = False
        return out, ValueError
    raise AssertionError(kind)


def snapshot(*arrays):
    """Bitwise copies of the given arrays (None entries stay None)."""
    return [None if a is None else (np.asarray(a).dtype, np.asarray(a).shape,
                                    np.asarray(a).tobytes()) for a in arrays]


def assert_unchanged(before, *arrays):
    """Assert each array is bitwise what ``snapshot`` recorded (a failed call wrote nothing)."""
    for i, (snap, a) in enumerate(zip(before, arrays)):
        if snap is None:
            continue
        dt, shape, data = snap
        a = np.asarray(a)
        assert (a.dtype, a.shape) == (dt, shape), f"argument {i}: dtype/shape changed"
        assert a.tobytes() == data, f"argument {i} was modified by a failed call"


# A build without OpenMP (FASTDL_OPENMP=0, or a compiler without it) runs every kernel on one
# thread and reports get_num_threads() == 1; tests of thread-count behaviour do not apply.
from fastdl._ext import _runtime as _fastdl_runtime  # noqa: E402

HAVE_OPENMP = _fastdl_runtime.build_info()["openmp"]
requires_openmp = pytest.mark.skipif(
    not HAVE_OPENMP, reason="fastdl was built without OpenMP: it runs on one thread")
