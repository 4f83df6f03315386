"""Accuracy and special values of fastdl's vector math header, include/fastdl/vmath.h.

The header's functions are reached through the test shim ``fastdl._ext._vmath`` (a loop over
an array, built like every fastdl kernel with FDL_DISPATCH, so the SIMD clone this CPU picks is
what is tested). Errors are measured in ULPs of the result's dtype against a more precise
reference: NumPy / SciPy float64 for float32 (their own error is ~2**-29 float32 ULP), NumPy
long double (80-bit on x86-64) or mpmath (erf, erfc) for float64. ``MAX_ULP`` holds the bounds
the header documents.

The float32 sample is every 1021st bit pattern of the 2**32 (4.2M values over the whole range,
NaN payloads and infinities included) plus 2001 consecutive floats around every threshold of
the implementation (overflow, underflow to denormals and to 0, saturation, branch switches,
the denormal / normal boundary). tests/exhaustive_vmath.py checks all 2**32 (minutes).
"""

import math

import numpy as np
import pytest

from fastdl._ext import _vmath

FUNCTIONS = ("exp", "log", "tanh", "erf", "expm1", "erfc")

# Max error in ULPs, as documented in include/fastdl/vmath.h: the measured maxima over every
# SIMD clone (the FMA-contracted x86-64-v3/v4 builds and the SSE2 baseline), rounded up.
MAX_ULP = {
    np.dtype(np.float32): {"exp": 0.9, "log": 0.85, "tanh": 1.1, "erf": 1.35, "expm1": 1.35,
                           "erfc": 4.2},
    np.dtype(np.float64): {"exp": 1.0, "log": 0.9, "tanh": 2.3, "erf": 1.25, "expm1": 1.5,
                           "erfc": 5.0},
}
# math.erf (glibc) is itself within ~0.8 ULP: comparisons against it get that much more room.
MATH_ERF_ULP = 0.8

LONGDOUBLE_IS_EXTENDED = np.finfo(np.longdouble).nmant >= 63


def _erf_float64(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


REF32 = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "expm1": np.expm1}


def reference_f32(name, x):
    """float64 values of the function at float32 x (accurate far below a float32 ULP)."""
    with np.errstate(all="ignore"):  # (signalling NaNs warn when converted)
        x64 = np.asarray(x, dtype=np.float64)
        if name in ("erf", "erfc"):
            scipy_special = pytest.importorskip("scipy.special")
            return getattr(scipy_special, name)(x64)
        return REF32[name](x64)


def ulp_of(v, dtype):
    """The ULP of ``dtype`` at the float64 values ``v`` (denormal range: the smallest denormal)."""
    info = np.finfo(dtype)
    _, e = np.frexp(v)
    e = np.where(v == 0, info.minexp, e)
    return np.ldexp(1.0, np.maximum(e, info.minexp + 1) - (info.nmant + 1))


def reference_f64(name, x):
    """(hi, frac): the function at float64 x is hi + frac ULPs (hi float64, |frac| <= 1/2).

    The part beyond hi is kept in ULPs, not as a second double, which would be rounded to
    the denormal grid for results near the bottom of the range."""
    x = np.asarray(x, dtype=np.float64)
    if name in ("erf", "erfc") or not LONGDOUBLE_IS_EXTENDED:
        mpmath = pytest.importorskip("mpmath")
        mpmath.mp.prec = 120
        fn = getattr(mpmath, name)
        hi = np.empty_like(x)
        frac = np.zeros_like(x)
        for i, v in enumerate(x.tolist()):
            if math.isnan(v) or (name == "log" and v < 0):
                hi[i] = math.nan
                continue
            if math.isinf(v) or v == 0 or (name in ("erf", "erfc") and abs(v) > 30):
                hi[i] = {"exp": math.exp, "log": _log_special, "tanh": math.tanh,
                         "erf": math.erf, "expm1": math.expm1, "erfc": math.erfc}[name](v)
                continue
            r = fn(mpmath.mpf(v))
            try:
                hi[i] = float(r)
            except OverflowError:
                hi[i] = math.inf
            if math.isfinite(hi[i]):
                frac[i] = float((r - hi[i]) / float(ulp_of(hi[i], np.float64)))
        return hi, frac
    with np.errstate(all="ignore"):
        r = getattr(np, name)(x.astype(np.longdouble))
        hi = r.astype(np.float64)
        fin = np.isfinite(hi)
        frac = np.zeros_like(hi)
        frac[fin] = ((r[fin] - hi[fin]) / ulp_of(hi[fin], np.float64)).astype(np.float64)
    return hi, frac


def _log_special(v):
    return -math.inf if v == 0 else (math.inf if v > 0 else math.nan)


def ulp_errors(y, hi, frac, dtype):
    """|y - reference| in ULPs of ``dtype`` at the reference hi + frac ULPs (denormal results:
    the ULP is the smallest denormal). For float32 an infinite y counts as 2**128, the power
    of two beyond the largest float; for float64 it is an infinite error."""
    y = np.asarray(y, dtype=np.float64)
    if dtype == np.float32:
        y = np.where(np.isinf(y), np.copysign(2.0**128, y), y)
    ulp = ulp_of(hi, dtype)
    with np.errstate(all="ignore"):
        # float64: y - hi is exact (same binade), and so is the division by a power of two
        err = np.abs((y - hi) / ulp - frac)
    return np.where(np.isinf(y), np.inf, err)


def check_accuracy(name, x, dtype, bound):
    """Check NaN/inf agreement exactly and the ULP error of everything else; return the max."""
    x = np.asarray(x, dtype=dtype)
    y = getattr(_vmath, name)(x)
    assert y.dtype == dtype and y.shape == x.shape
    if dtype == np.float32:
        hi = reference_f32(name, x)
        frac = np.zeros_like(hi)
        with np.errstate(over="ignore", invalid="ignore"):
            rounded = hi.astype(np.float32)
    else:
        hi, frac = reference_f64(name, x)
        rounded = hi
    nan = np.isnan(hi)
    bad = np.flatnonzero(np.isnan(y) != nan)
    assert bad.size == 0, \
        f"{name}({x[bad[0]]!r}) = {y[bad[0]]!r}, expected {hi[bad[0]]!r} (NaN mismatch)"
    inf = np.isinf(rounded) & ~nan
    bad = np.flatnonzero(inf & (y != rounded))
    assert bad.size == 0, f"{name}({x[bad[0]]!r}) = {y[bad[0]]!r}, expected {rounded[bad[0]]!r}"
    fin = ~(nan | inf)
    err = ulp_errors(y[fin], hi[fin], frac[fin], dtype)
    if err.size == 0:
        return 0.0
    i = int(np.argmax(err))
    assert err[i] <= bound, (
        f"{np.dtype(dtype).name} {name}({x[fin][i]!r}) = {y[fin][i]!r}, reference "
        f"{hi[fin][i]!r}: error {err[i]:.3f} ULP > {bound}")
    return float(err[i])


def neighbourhood(centers, dtype, half_width=1000):
    """``2 * half_width + 1`` consecutive values of ``dtype`` around each center (and -center)."""
    uint = np.uint32 if dtype == np.float32 else np.uint64
    out = []
    for c in centers:
        for v in {float(c), -float(c)}:
            b = np.array(v, dtype=dtype).view(uint).astype(np.int64)
            bits = b + np.arange(-half_width, half_width + 1)
            bits = bits.astype(uint)
            if v == 0:  # around +0 and -0: the smallest denormals of both signs
                small = np.arange(0, half_width, dtype=uint)
                sign = uint(1 << (8 * np.dtype(dtype).itemsize - 1))
                bits = np.concatenate([small, small | sign])
            out.append(bits.view(dtype))
    return np.concatenate(out)


F32_EDGES = {
    "exp": [0.0, 1e-30, 0.34657359, 1.0397208, 88.72283, 89.0, 87.33654, 103.27893, 103.97208,
            104.0, 80.0, 1.0],
    "log": [1.0, 0.70710677, 1.4142135, 0.5, 2.0, 1.1754944e-38, 1e-40, 3.4028235e38, 1e-30],
    "tanh": [0.0, 1e-30, 1e-4, 0.8, 0.625, 0.55, 9.0, 9.01, 9.5, 20.0, 1.0],
    "erf": [0.0, 1e-30, 1e-4, 1.0, 0.75, 2.0, 3.92, 4.0, 1e-38],
    "expm1": [0.0, 5.9604645e-08, 1e-30, 0.34657359, 1.0397208, 16.98, 17.33, 25.0, 88.72283,
              89.0, 1e-4],
    "erfc": [0.0, 1e-30, 0.46875, 0.8, 1.0, 2.0, 4.0, 9.19, 9.2, 10.0, 10.05, 10.1, 11.0],
}
F64_EDGES = {
    "exp": [0.0, 1e-300, 0.34657359027997264, 709.782712893384, 710.0, 708.3964185322641,
            744.4400719213812, 745.1332191019411, 746.0, 1.0],
    "log": [1.0, 0.7071067811865476, 1.4142135623730951, 2.2250738585072014e-308, 1e-310,
            1.7976931348623157e308, 0.5],
    "tanh": [0.0, 1e-300, 1e-8, 0.625, 0.55, 19.06, 20.0, 1.0],
    "erf": [0.0, 1e-300, 1e-8, 1.0, 2.0, 5.92, 6.0],
    "expm1": [0.0, 5.551115123125783e-17, 0.34657359027997264, 36.7, 40.0, 709.782712893384,
              710.0, 1e-8],
    "erfc": [0.0, 1e-300, 0.8, 1.0, 6.0, 26.5, 26.6, 27.2, 27.3],
}


def _whole_range_f32(stride=1021):
    return np.arange(0, 2**32, stride, dtype=np.uint64).astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_float32_whole_range(name):
    bound = MAX_ULP[np.dtype(np.float32)][name]
    check_accuracy(name, _whole_range_f32(), np.float32, bound)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_float32_edges(name):
    bound = MAX_ULP[np.dtype(np.float32)][name]
    x = neighbourhood(F32_EDGES[name], np.float32)
    check_accuracy(name, x, np.float32, bound)
    # and a dense linear sweep of the region where the function is not trivial
    lo, hi = {"exp": (-105, 90), "log": (0, 4), "tanh": (-10, 10), "erf": (-4.5, 4.5),
              "expm1": (-20, 90), "erfc": (-4.5, 10.5)}[name]
    check_accuracy(name, np.linspace(lo, hi, 500_001, dtype=np.float32), np.float32, bound)


requires_extended = pytest.mark.skipif(
    not LONGDOUBLE_IS_EXTENDED, reason="np.longdouble is not more precise than float64 here")


@requires_extended
@pytest.mark.parametrize("name", [f for f in FUNCTIONS if f not in ("erf", "erfc")])
def test_float64_whole_range(name, rng):
    bound = MAX_ULP[np.dtype(np.float64)][name]
    # random bit patterns: every exponent equally often, NaNs and infinities included
    x = rng.integers(0, 2**64, 400_000, dtype=np.uint64, endpoint=False).view(np.float64)
    check_accuracy(name, x, np.float64, bound)
    lo, hi = {"exp": (-746, 710), "log": (0, 4), "tanh": (-21, 21), "expm1": (-41, 710)}[name]
    check_accuracy(name, rng.uniform(lo, hi, 400_000), np.float64, bound)
    check_accuracy(name, rng.uniform(-1, 1, 200_000) * rng.uniform(0, 1, 200_000) ** 8,
                   np.float64, bound)
    check_accuracy(name, neighbourhood(F64_EDGES[name], np.float64, 300), np.float64, bound)


def test_float64_erf(rng):
    bound = MAX_ULP[np.dtype(np.float64)]["erf"]
    # exact reference (mpmath) on a moderate sample ...
    x = np.concatenate([rng.uniform(-6.5, 6.5, 6000), rng.uniform(0.9, 1.1, 1000),
                        np.geomspace(1e-300, 1, 1000),
                        neighbourhood(F64_EDGES["erf"], np.float64, 40),
                        rng.integers(0, 2**64, 2000, dtype=np.uint64).view(np.float64)])
    check_accuracy("erf", x, np.float64, bound)
    # ... and glibc's erf (within MATH_ERF_ULP) on a dense one
    x = np.concatenate([np.linspace(-6.5, 6.5, 400_001), rng.standard_normal(200_000)])
    y = _vmath.erf(x)
    err = ulp_errors(y, _erf_float64(x), np.zeros_like(x), np.float64)
    i = int(np.argmax(err))
    assert err[i] <= bound + MATH_ERF_ULP, f"erf({x[i]!r}) = {y[i]!r}: {err[i]:.3f} ULP"


def test_float64_erfc(rng):
    # relative accuracy down to the denormals (erfc(27.2) ~ 1e-323), against mpmath
    x = np.concatenate([rng.uniform(-6.5, 27.5, 8000), rng.uniform(0.4, 1.1, 1000),
                        np.geomspace(1e-300, 1, 500),
                        neighbourhood(F64_EDGES["erfc"], np.float64, 40),
                        rng.integers(0, 2**64, 1000, dtype=np.uint64).view(np.float64)])
    check_accuracy("erfc", x, np.float64, MAX_ULP[np.dtype(np.float64)]["erfc"])


# ---------------------------------------------------------------- special values

SPECIAL_INPUTS = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, "max", "-max",
                  "tiny", "-tiny", "denorm", "-denorm"]
EXPECTED = {  # None: not a special value, checked for accuracy only
    "exp": [np.nan, np.nan, np.inf, 0.0, 1.0, 1.0, None, None, np.inf, 0.0, 1.0, 1.0, 1.0, 1.0],
    "log": [np.nan, np.nan, np.inf, np.nan, -np.inf, -np.inf, 0.0, np.nan, None, np.nan, None,
            np.nan, None, np.nan],
    "tanh": [np.nan, np.nan, 1.0, -1.0, 0.0, -0.0, None, None, 1.0, -1.0, "x", "x", "x", "x"],
    "erf": [np.nan, np.nan, 1.0, -1.0, 0.0, -0.0, None, None, 1.0, -1.0, None, None, None, None],
    "expm1": [np.nan, np.nan, np.inf, -1.0, 0.0, -0.0, None, None, np.inf, -1.0, "x", "x", "x",
              "x"],
    "erfc": [np.nan, np.nan, 0.0, 2.0, 1.0, 1.0, None, None, 0.0, 2.0, 1.0, 1.0, 1.0, 1.0],
}


def _special_inputs(dtype):
    info = np.finfo(dtype)
    named = {"max": info.max, "-max": -info.max, "tiny": info.tiny, "-tiny": -info.tiny,
             "denorm": info.smallest_subnormal, "-denorm": -info.smallest_subnormal}
    return np.array([named.get(v, v) if isinstance(v, str) else v for v in SPECIAL_INPUTS],
                    dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_special_values(name, dtype):
    x = _special_inputs(dtype)
    y = getattr(_vmath, name)(x)
    for xi, yi, want in zip(x, y, EXPECTED[name]):
        if want is None:
            continue
        if want == "x":  # tiny arguments: f(x) = x exactly (tanh, expm1)
            want = xi
        if np.isnan(want):
            assert np.isnan(yi), f"{name}({xi!r}) = {yi!r}, expected NaN"
        else:
            assert yi == want and np.signbit(yi) == np.signbit(want), \
                f"{name}({xi!r}) = {yi!r}, expected {want!r}"
    # and the rest within the bound
    check_accuracy(name, x, dtype, MAX_ULP[np.dtype(dtype)][name])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_nan_payloads_propagate(name, dtype):
    uint = np.uint32 if dtype == np.float32 else np.uint64
    info = np.finfo(dtype)
    expo = ((1 << (info.nexp)) - 1) << info.nmant
    sign = 1 << (info.bits - 1)
    payloads = [1, 2, 3, (1 << info.nmant) - 1, 1 << (info.nmant - 1), (1 << (info.nmant - 1)) | 5]
    bits = [expo | p for p in payloads] + [sign | expo | p for p in payloads]
    with np.errstate(invalid="ignore"):
        x = np.array(bits, dtype=uint).view(dtype)
    assert np.isnan(getattr(_vmath, name)(x)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_overflow_underflow_and_denormals(dtype):
    info = np.finfo(dtype)
    big = 89.0 if dtype == np.float32 else 710.0
    assert _vmath.exp(np.array([big, 1e4, info.max], dtype)).tolist() == [np.inf] * 3
    assert _vmath.expm1(np.array([big, 1e4], dtype)).tolist() == [np.inf] * 2
    zero = -104.0 if dtype == np.float32 else -746.0
    y = _vmath.exp(np.array([zero, -1e4, -info.max], dtype))
    assert y.tolist() == [0.0] * 3 and not np.signbit(y).any()
    # gradual underflow: exp of [ln(smallest denormal), ln(smallest normal)] gives denormals
    lo, hi = (-103.2, -87.4) if dtype == np.float32 else (-744.4, -708.4)
    x = np.linspace(lo, hi, 10_001, dtype=dtype)
    y = _vmath.exp(x)
    assert (y > 0).all() and (y < info.tiny).all()
    check_accuracy("exp", x, dtype, MAX_ULP[np.dtype(dtype)]["exp"])
    # log of every power of two down to the smallest denormal is exact to the bound
    e = np.arange(info.minexp - info.nmant, info.maxexp)
    x = np.ldexp(np.ones(e.size, dtype), e)
    check_accuracy("log", x, dtype, MAX_ULP[np.dtype(dtype)]["log"])
    # erfc's tail: denormal results, as accurate as the normal ones
    lo, hi = (9.2, 10.05) if dtype == np.float32 else (26.6, 27.2)
    x = np.linspace(lo, hi, 10_001, dtype=dtype)
    y = _vmath.erfc(x)
    assert (y > 0).all() and (y < info.tiny).all()
    check_accuracy("erfc", x, dtype, MAX_ULP[np.dtype(dtype)]["erfc"])
    # tanh and erf of tiny values: tanh x = x, erf x = 2x/sqrt(pi), relatively accurate
    x = np.ldexp(np.ones(e.size, dtype), e)[e < -(info.nmant // 2) - 2]
    assert np.array_equal(_vmath.tanh(x), x) and np.array_equal(_vmath.tanh(-x), -x)
    check_accuracy("erf", np.concatenate([x, -x]), dtype, MAX_ULP[np.dtype(dtype)]["erf"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_odd_and_monotone(name, dtype, rng):
    x = np.abs(rng.standard_normal(10_000) * 4).astype(dtype)
    x.sort()
    y = getattr(_vmath, name)(x)
    # monotone: erfc decreasing, the others increasing
    step = np.diff(y.astype(np.float64)) * (-1 if name == "erfc" else 1)
    assert (step >= 0).all()
    if name in ("tanh", "erf"):
        assert np.array_equal(getattr(_vmath, name)(-x), -y)


# ---------------------------------------------------------------- the shim itself

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_result_independent_of_position(name, dtype, rng):
    # The vectorised main loop and its remainder must give bitwise the same value, so a
    # result never depends on where an element falls in a (thread's) block.
    x = (rng.standard_normal(1031) * 5).astype(dtype)
    if name == "log":
        x = np.abs(x)
    f = getattr(_vmath, name)
    full = f(x)
    pieces = np.concatenate([f(x[i:i + n]) for i, n in zip(range(0, 1031, 37), [37] * 28)])
    singles = np.concatenate([f(x[i:i + 1]) for i in range(0, 1031, 13)])
    assert full.tobytes() == pieces.tobytes()
    assert full[::13].tobytes() == singles.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_shim_shapes_and_layouts(dtype, rng):
    x = rng.standard_normal((7, 9)).astype(dtype)
    for name in FUNCTIONS:
        f = getattr(_vmath, name)
        arg = np.abs(x) if name == "log" else x
        y = f(arg)
        assert y.dtype == dtype and y.shape == (7, 9)
        assert np.array_equal(f(arg[:, ::2]), y[:, ::2])          # non-contiguous input
        assert np.array_equal(f(np.asfortranarray(arg)), y)
        assert f(np.empty(0, dtype)).shape == (0,)
        assert f(arg[0, 0]).shape == ()


@pytest.mark.parametrize("bad", [np.arange(3), np.ones(3, np.complex128), np.ones(3, np.float16),
                                 np.ones(3, ">f8"), ["a"]])
def test_shim_rejects_other_dtypes(bad):
    with pytest.raises(TypeError):
        _vmath.exp(bad)


def test_exp_nonpos_float32_bitwise_equal_to_exp():
    """The softmax / activation exp (x <= 0, one scale) is exp bit for bit: every non-positive
    float32 from -0 down past e^x's underflow to 0 (-104), and -inf, NaN."""
    start = np.array(-0.0, np.float32).view(np.uint32)
    stop = np.array(-105.0, np.float32).view(np.uint32)
    x = np.arange(start, stop + 1, 31, dtype=np.uint32).view(np.float32)    # ~1.6e8 / 31
    # every float of the denormal-result range's ends and of the clamp
    edges = [np.arange(np.array(v, np.float32).view(np.uint32) - 3000,
                       np.array(v, np.float32).view(np.uint32) + 3000,
                       dtype=np.uint32).view(np.float32) for v in (-87.33, -103.28, -104.0)]
    x = np.concatenate([x, *edges, np.array([-np.inf, np.nan, -1e30,
                                             -np.finfo(np.float32).max], np.float32)])
    assert np.array_equal(_vmath.exp_nonpos(x), _vmath.exp(x), equal_nan=True)


def test_exp_nonpos_float64_bitwise_equal_to_exp(rng):
    x = -np.concatenate([rng.uniform(0, 750, 1_000_000), rng.exponential(1.0, 100_000),
                         np.linspace(706, 746, 100_001), [0.0, np.inf, 1e300]])
    x = np.concatenate([x, [np.nan]])
    assert np.array_equal(_vmath.exp_nonpos(x), _vmath.exp(x), equal_nan=True)
