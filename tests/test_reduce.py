"""fastdl sum, mean and var (API.md, "Tensor operations"; issue 3).

``sum(x, axis=None, keepdims=False, *, out=None)``, ``mean(...)`` and
``var(x, axis=None, ddof=0, keepdims=False, *, out=None)`` with NumPy semantics, at least as
accurate as NumPy, bitwise identical for any thread count.

Tolerances (conftest.RTOL, one rounding "unit" per dtype) are relative to the condition scale
of each result: ``sum(|x|)`` for a sum (a sum's rounding error is bounded relative to it, so a
sum that cancels to ~0 is still checked meaningfully), ``mean(|x|)`` for a mean and, for a
variance, the variance itself plus ``(eps * |mean|)^2`` (what a mean off by one rounding unit
leaves, squared, in NumPy's float64 two-pass reference; it keeps constant data checkable).
"""

import itertools
import tracemalloc
import warnings

import numpy as np
import pytest
import threadpoolctl
from hypothesis import given, settings, strategies as st

import fastdl
from conftest import (LAYOUTS, RTOL, WRONG_OUT_KINDS, assert_close, assert_unchanged, layout,
                      make_wrong_out, random_array, requires_openmp, snapshot)
from fastdl._ext import _reduce
from reference_reduce import abs_sum_ref, exact_sum, mean_ref, sum_ref, var_ref

FUNCS = ("sum", "mean", "var")


def call(func, x, axis=None, keepdims=False, ddof=0, out=None):
    """fastdl's reduction ``func``; NumPy's RuntimeWarnings for empty/ddof cases silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if func == "var":
            return _reduce.var(x, axis=axis, ddof=ddof, keepdims=keepdims, out=out)
        return getattr(_reduce, func)(x, axis=axis, keepdims=keepdims, out=out)


def reference(func, x, axis=None, keepdims=False, ddof=0):
    """(expected float64 values, the per-element scale the tolerance is relative to)."""
    x64 = np.asarray(x, dtype=np.float64)
    finite = np.where(np.isfinite(x64), x64, 0.0)
    if func == "sum":
        return sum_ref(x64, axis, keepdims), abs_sum_ref(finite, axis, keepdims)
    if func == "mean":
        return mean_ref(x64, axis, keepdims), np.nan_to_num(mean_ref(np.abs(finite), axis,
                                                                     keepdims))
    expected = var_ref(x64, axis, ddof, keepdims)
    dt = result_dtype(x)
    mu = np.nan_to_num(mean_ref(finite, axis, keepdims))
    # A mean off by a few eps |mean| leaves that error squared in NumPy's float64 reference
    # (and in a float32 two-pass result): allowed as an absolute error, whatever RTOL is.
    floor = (8 * np.finfo(dt).eps * mu) ** 2 / RTOL[dt]
    return expected, np.nan_to_num(np.abs(var_ref(finite, axis, ddof, keepdims))) + floor


def result_dtype(x):
    t = np.asarray(x).dtype.type
    return np.dtype(t) if t in (np.float32, np.float64) else np.dtype(np.float64)


def check(func, x, axis=None, keepdims=False, ddof=0, terms=1):
    """fastdl's result: right type, shape, dtype and values (within tolerance of float64)."""
    actual = call(func, x, axis, keepdims, ddof)
    expected, scale = reference(func, x, axis, keepdims, ddof)
    dt = result_dtype(x)
    if np.ndim(expected) == 0:
        assert type(actual) is dt.type, f"{func} axis={axis}: got {type(actual).__name__}"
    else:
        assert isinstance(actual, np.ndarray)
    with np.errstate(invalid="ignore"):     # assert_close subtracts matching infinities
        assert_close(actual, expected, dt, scale=scale, terms=terms)
    return actual


def axis_variants(ndim):
    """None, every subset of the axes as a tuple, each single axis as an int, both signs."""
    yield None
    for r in range(ndim + 1):
        yield from itertools.combinations(range(ndim), r)
    for d in range(ndim):
        yield d
        yield d - ndim
    if ndim >= 2:
        yield (-1, 0)
    if ndim >= 3:
        yield (2, -3)


# --------------------------------------------------------------------------------------
# values: every axis combination of 0-D..4-D arrays

SHAPES = [(), (0,), (1,), (7,), (33,), (1000,), (40000,),
          (0, 3), (3, 0), (1, 1), (7, 33), (33, 7), (1, 1000), (1000, 1), (300, 200),
          (2, 3, 4), (5, 1, 7), (17, 9, 33), (3, 0, 2), (40, 50, 30),
          (2, 3, 4, 5), (3, 1, 6, 40), (8, 16, 20, 30), (2, 0, 3, 1)]


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_axis_against_reference(dtype, rng, shape, func):
    x = random_array(rng, shape, dtype)
    for axis in axis_variants(len(shape)):
        for keepdims in (False, True):
            try:
                check(func, x, axis, keepdims)
            except AssertionError as exc:
                raise AssertionError(f"{func} shape={shape} axis={axis} "
                                     f"keepdims={keepdims}: {exc}") from None


@pytest.mark.parametrize("ddof", [0, 1, 2, 0.5])
@pytest.mark.parametrize("shape,axis", [((7,), None), ((33, 7), 0), ((33, 7), 1),
                                        ((5, 6, 7), (0, 2)), ((1000, 40), 0),
                                        ((40, 1000), -1), ((2, 3), None)], ids=str)
def test_var_ddof(dtype, rng, shape, axis, ddof):
    x = random_array(rng, shape, dtype)
    check("var", x, axis, ddof=ddof)
    check("var", x, axis, keepdims=True, ddof=ddof)


@pytest.mark.parametrize("ddof,expected", [(3, np.inf), (4, np.inf), (10, np.inf)])
def test_var_ddof_at_least_n_gives_numpys_inf_or_nan(dtype, ddof, expected):
    x = np.array([1.0, 2.0, 4.0], dtype)
    with pytest.warns(RuntimeWarning, match="Degrees of freedom"):
        v = _reduce.var(x, ddof=ddof)
    assert type(v) is dtype.type and v == expected
    with pytest.warns(RuntimeWarning, match="Degrees of freedom"):
        c = _reduce.var(np.ones(3, dtype), ddof=3)   # 0 / 0, as NumPy
    assert np.isnan(c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert np.array_equal(_reduce.var(np.ones((3, 2), dtype) * [[1], [2], [4]], axis=0,
                                          ddof=5),
                              np.var(np.ones((3, 2)) * [[1], [2], [4]], axis=0, ddof=5))


def test_var_of_constant_data_is_zero_not_negative(dtype):
    for value in (0.1, 1e4, -3.3, 1e-30):
        for shape, axis in (((1000,), None), ((999, 5), 0), ((5, 999), 1)):
            v = _reduce.var(np.full(shape, value, dtype), axis=axis)
            assert np.all(v >= 0) and np.all(v <= (np.finfo(dtype).eps * abs(value)) ** 2 * 10)


# --------------------------------------------------------------------------------------
# layouts

@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("shape", [(1000,), (7, 33), (33, 7, 5), (4, 5, 6, 7), (300, 200),
                                   (30, 40, 50)], ids=str)
def test_layouts(dtype, rng, shape, kind, func):
    x = layout(random_array(rng, shape, dtype), kind)
    for axis in axis_variants(len(shape)):
        try:
            check(func, x, axis)
        except AssertionError as exc:
            raise AssertionError(f"{func} {kind} shape={shape} axis={axis}: {exc}") from None


@pytest.mark.parametrize("func", FUNCS)
def test_more_views(dtype, rng, func):
    base = random_array(rng, (40, 50, 60), dtype)
    views = [base.transpose(2, 0, 1), base[:, ::-3, 1::2], base[::-1, :, ::-1].T,
             base[5], base[:, 7], base[..., 9], np.moveaxis(base, 1, 0)[::2],
             np.broadcast_to(base[0, 0], (30, 60)),                # zero strides
             np.broadcast_to(base[:1, :, :3], (4, 50, 3))]
    for x in views:
        for axis in axis_variants(x.ndim):
            check(func, x, axis)


def test_misaligned_and_byteswapped_input(dtype, rng):
    values = random_array(rng, (37, 41), dtype)
    raw = np.zeros(values.nbytes + 1, np.uint8)
    misaligned = np.frombuffer(raw.data, dtype=dtype, count=values.size, offset=1)
    misaligned = misaligned.reshape(values.shape)
    misaligned[...] = values
    assert not misaligned.flags.aligned
    swapped = values.astype(dtype.newbyteorder())
    for x in (misaligned, swapped):
        for func in FUNCS:
            for axis in (None, 0, 1):
                out = check(func, x, axis)
                assert np.asarray(out).dtype == dtype


def test_contiguous_input_is_not_copied(rng):
    x = random_array(rng, (1024, 1024), np.float32)       # 4 MiB
    for arr in (x, np.asfortranarray(x), x.reshape(16, 64, 1024)):
        for func in FUNCS:
            for axis in [None] + list(range(arr.ndim)) + [(0, arr.ndim - 1)]:
                result = call(func, arr, axis)             # warm
                tracemalloc.start()
                call(func, arr, axis)
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                # no copy of the input (var keeps the mean and two sums of the result's size,
                # the column sums their counters)
                assert peak < arr.nbytes // 2, \
                    (func, arr.shape, arr.strides, axis, peak)


# --------------------------------------------------------------------------------------
# dtypes, scalars, array-likes

def test_integer_bool_and_list_inputs_promote_to_float64():
    for x in ([1, 2, 3], np.arange(12).reshape(3, 4), np.array([True, False, True]),
              np.arange(10, dtype=np.uint8), [[1.5, 2.5]]):
        for func in FUNCS:
            for axis in (None, 0, -1):
                r = check(func, x, axis)
                assert np.asarray(r).dtype == np.float64


def test_single_value_results_are_numpy_scalars(dtype):
    x = np.arange(6, dtype=dtype).reshape(2, 3)
    for func in FUNCS:
        for r in (call(func, x), call(func, x, (0, 1)), call(func, x[0], 0),
                  call(func, np.asarray(dtype.type(3)))):
            assert type(r) is dtype.type
        assert type(call(func, x, keepdims=True)) is np.ndarray
        assert call(func, x, keepdims=True).shape == (1, 1)
    assert _reduce.sum(x) == 15 and _reduce.mean(x) == 2.5
    assert _reduce.var(x) == pytest.approx(np.var(np.arange(6.0)))
    assert _reduce.sum(dtype.type(3)) == 3 and type(_reduce.sum(dtype.type(3))) is dtype.type
    zero_d = np.asarray(dtype.type(2.5))
    for func, value in (("sum", 2.5), ("mean", 2.5), ("var", 0.0)):
        assert call(func, zero_d, axis=()) == value
        assert call(func, zero_d, keepdims=True).shape == ()


@pytest.mark.parametrize("bad", [np.ones(3, np.complex64), np.ones(3, np.float16),
                                 np.array(["a", "b"]), np.array([1.0, None], dtype=object)],
                         ids=["complex", "float16", "str", "object"])
@pytest.mark.parametrize("func", FUNCS)
def test_unsupported_dtypes_raise_type_error(bad, func):
    with pytest.raises(TypeError, match=f"fastdl.{func}: argument 'x' has dtype"):
        call(func, bad)


# --------------------------------------------------------------------------------------
# axis errors

@pytest.mark.parametrize("func", FUNCS)
def test_axis_errors(func):
    x = np.ones((2, 3))
    for axis in (2, -3, (0, 2), (-3,)):
        with pytest.raises(ValueError, match="out of bounds"):
            call(func, x, axis)
    for axis in ((0, 0), (1, -1), (0, 1, 0)):
        with pytest.raises(ValueError, match="duplicate value in 'axis'"):
            call(func, x, axis)
    for axis in ([0, 1], 1.0, "0", True, (0, 1.0), (False,)):
        with pytest.raises(TypeError, match="axis"):
            call(func, x, axis)
    with pytest.raises(ValueError, match="out of bounds"):
        call(func, np.float64(1.0), 0)
    assert call(func, x, np.int64(1)).shape == (2,)


def test_ddof_errors():
    x = np.ones(4)
    with pytest.raises(ValueError, match="ddof is NaN"):
        _reduce.var(x, ddof=float("nan"))
    for bad in ("1", None, [1], 1j):
        with pytest.raises(TypeError, match="ddof"):
            _reduce.var(x, ddof=bad)
    assert _reduce.var(np.arange(4.0), ddof=np.int64(1)) == np.var(np.arange(4.0), ddof=1)
    assert _reduce.var(np.arange(4.0), ddof=-1) == np.var(np.arange(4.0), ddof=-1)


# --------------------------------------------------------------------------------------
# empty arrays, NaN and inf

@pytest.mark.parametrize("shape,axis", [((0,), None), ((0,), 0), ((0, 3), 0), ((0, 3), None),
                                        ((3, 0), 1), ((3, 0), 0), ((2, 0, 4), (0, 1)),
                                        ((2, 0, 4), 2), ((2, 0, 4), ()), ((0, 0), None)],
                         ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_empty_inputs(dtype, shape, axis, keepdims):
    x = np.ones(shape, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for func in FUNCS:
            np_func = getattr(np, func)
            expected = np_func(x, axis=axis, keepdims=keepdims)
            actual = call(func, x, axis, keepdims)
            assert np.shape(actual) == np.shape(expected)
            assert np.asarray(actual).dtype == dtype
            np.testing.assert_array_equal(actual, expected)     # 0 for a sum, NaN else


def test_empty_mean_and_var_warn_as_numpy(dtype):
    with pytest.warns(RuntimeWarning, match="Mean of empty slice"):
        assert np.isnan(_reduce.mean(np.ones(0, dtype)))
    with pytest.warns(RuntimeWarning, match="Degrees of freedom"):
        assert np.isnan(_reduce.var(np.ones((0, 2), dtype), axis=0)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _reduce.sum(np.ones(0, dtype)) == 0
        assert _reduce.mean(np.ones((3, 0), dtype), axis=0).shape == (0,)


@pytest.mark.parametrize("shape,axis", [((1000,), None), ((200001,), None), ((37, 41), 0),
                                        ((37, 41), 1), ((9000, 5), 0), ((3, 70000), 1),
                                        ((6, 7, 80), (0, 2)), ((6, 7, 8), (0, 2))], ids=str)
@pytest.mark.parametrize("func", FUNCS)
def test_nan_and_inf_propagate(dtype, rng, shape, axis, func):
    x = random_array(rng, shape, dtype)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=min(12, flat.size), replace=False)
    flat[picks[:4]] = np.nan
    flat[picks[4:8]] = np.inf
    flat[picks[8:10]] = -np.inf
    check(func, x, axis)
    y = random_array(rng, shape, dtype)
    y.reshape(-1)[picks[:3]] = np.inf
    check(func, y, axis)


# --------------------------------------------------------------------------------------
# out=

@pytest.mark.parametrize("func", FUNCS)
def test_out_right(dtype, rng, func):
    x = random_array(rng, (30, 40, 50), dtype)
    for axis, keepdims in ((1, False), ((0, 2), False), (0, True), ((0, 1), True),
                           (None, False), (None, True), (-1, False)):
        expected = call(func, x, axis, keepdims)
        shape = np.shape(expected)
        outs = [np.full(shape, 7, dtype)]
        if len(shape) >= 1:
            big = np.full(tuple(2 * s + 1 for s in shape), 7, dtype)
            picked = tuple(slice(2 * s - 1, None, -2) for s in shape)       # strided, reversed
            outs.append(big[picked])
            outs.append(np.full(shape, 7, dtype, order="F"))
        for out in outs:
            got = call(func, x, axis, keepdims, out=out)
            assert got is out
            assert out.tobytes() == np.ascontiguousarray(expected).tobytes() or \
                np.array_equal(out, expected)
        if len(shape) >= 1:
            # the strided out wrote its elements only
            mask = np.ones(big.shape, bool)
            mask[picked] = False
            assert np.all(big[mask] == 7)


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("kind", WRONG_OUT_KINDS)
def test_out_wrong_raises_and_leaves_out_unchanged(dtype, rng, kind, func):
    x = random_array(rng, (6, 5, 4), dtype)
    out, exc = make_wrong_out(kind, dtype, (5, 4))
    before = snapshot(x, out if isinstance(out, np.ndarray) else None)
    with pytest.raises(exc, match=f"fastdl.{func}: out"):
        call(func, x, 0, out=out)
    assert_unchanged(before, x, out if isinstance(out, np.ndarray) else None)


def test_out_errors_name_the_expected_shape_and_dtype():
    x = np.ones((6, 5), np.float32)
    with pytest.raises(ValueError, match=r"out has shape \(5,\), expected \(1, 5\)"):
        _reduce.sum(x, axis=0, keepdims=True, out=np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"expected \(\)"):
        _reduce.mean(x, out=np.zeros(1, np.float32))
    with pytest.raises(TypeError, match="out has dtype float32, expected float64"):
        _reduce.sum(np.ones(3, np.int64), out=np.zeros((), np.float32))


def test_out_zero_d_and_aliasing_input(dtype, rng):
    x = random_array(rng, (64, 50), dtype)
    out = np.zeros((), dtype)
    assert _reduce.sum(x, out=out) is out
    assert out == _reduce.sum(x)
    for func in FUNCS:
        # out is a row of x itself: the result must be computed from the unmodified input
        y = x.copy()
        expected = call(func, y, 0)
        got = call(func, y, 0, out=y[3])
        assert got is not None and np.array_equal(y[3], expected)
        z = x.copy()
        expected = call(func, z, 1)
        call(func, z, 1, out=z[:, 7])
        assert np.array_equal(z[:, 7], expected)


# --------------------------------------------------------------------------------------
# accuracy against NumPy

def test_outer_axis_sum_beats_numpys_row_accumulation(rng):
    # NumPy sums over an outer axis row by row (error ~ n u); fastdl pairwise (~ log n u).
    for shape, axis in (((1 << 17, 8), 0), ((1 << 16, 3, 5), 0), ((3, 1 << 16, 8), 1),
                        ((1 << 15, 2, 64), (0, 1))):
        x = rng.random(shape, dtype=np.float32)
        exact = sum_ref(x, axis)
        err_np = np.max(np.abs(np.sum(x, axis=axis) - exact) / exact)
        err_fd = np.max(np.abs(_reduce.sum(x, axis=axis) - exact) / exact)
        assert err_np > 1e-6, "the case does not show NumPy's row accumulation error"
        assert err_fd <= 2e-7 and err_fd < err_np / 10, (shape, axis, err_fd, err_np)
        exact_mean = exact / (x.size // exact.size)
        err_fd_mean = np.max(np.abs(_reduce.mean(x, axis=axis) - exact_mean) / exact_mean)
        assert err_fd_mean <= 2e-7


def test_float64_outer_axis_sum_beats_numpy(rng):
    x = rng.random((1 << 16, 4))
    exact = exact_sum(x, 0)
    err_np = np.max(np.abs(np.sum(x, axis=0) - exact) / exact)
    err_fd = np.max(np.abs(_reduce.sum(x, axis=0) - exact) / exact)
    assert err_fd <= err_np and err_fd < 1e-15, (err_fd, err_np)


@pytest.mark.parametrize("n", [10, 100, 300, 1000, 5000, 100000])
def test_contiguous_sum_as_accurate_as_numpys_pairwise_sum(rng, n):
    # Both are pairwise; the final rounding dominates. Compare the mean error over rows.
    x = rng.random((max(20, 200000 // n), n), dtype=np.float32)
    exact = sum_ref(x, 1)
    err_np = np.mean(np.abs(np.sum(x, axis=1) - exact) / exact)
    err_fd = np.mean(np.abs(_reduce.sum(x, axis=1) - exact) / exact)
    assert err_fd <= 1.25 * err_np + 1e-9, (err_fd, err_np)
    assert err_fd < 1e-7


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_var_float32_large_mean_small_spread(rng, axis):
    # |mean| >> std: 1e4 + N(0, 1) in float32 (spacing ~1e-3 there); the reference is the
    # exact variance of the stored float32 values.
    x = (1e4 + rng.standard_normal((4096, 64))).astype(np.float32)
    expected = var_ref(x, axis)
    got = _reduce.var(x, axis=axis)
    err_fd = np.max(np.abs(got - expected) / expected)
    err_np = np.max(np.abs(np.var(x, axis=axis) - expected) / expected)
    assert err_fd < 2e-6, err_fd
    assert err_fd <= err_np * 1.5 + 1e-7, (err_fd, err_np)
    if axis == 0:
        assert err_np > 1e-5       # NumPy's row accumulation, visible here
    for ddof in (1, 2):
        np.testing.assert_allclose(_reduce.var(x, axis=axis, ddof=ddof),
                                   var_ref(x, axis, ddof), rtol=2e-6)


def test_mean_float32_large_offset(rng):
    x = (1e4 + rng.standard_normal((1 << 16, 16))).astype(np.float32)
    for axis in (None, 0, 1):
        # ~2 float32 ulps of 1e4 (4.9e-8 relative each): the sum's and the division's roundings
        np.testing.assert_allclose(_reduce.mean(x, axis=axis), mean_ref(x, axis), rtol=2e-7)
    err_np = np.max(np.abs(np.mean(x, axis=0) - mean_ref(x, 0)))
    err_fd = np.max(np.abs(_reduce.mean(x, axis=0) - mean_ref(x, 0)))
    assert err_fd < err_np


# --------------------------------------------------------------------------------------
# threads: bitwise identical results

# Each crosses the parallel threshold; several cut one reduction into chunks (contiguous:
# 65536 float32 / 32768 float64 elements; columns: 1024 rows) or columns into panels.
THREAD_CASES = [((1_100_003,), None), ((3, 140_001), -1), ((200, 5000), 1),
                ((9000, 37), 0), ((2100, 700), 0), ((700, 2000), 0),
                ((40, 30, 50, 7), (0, 2)), ((16, 6, 70, 70), (0, 2, 3)),
                ((60, 70, 80), (0, 1)), ((60, 70, 80), (1, 2)), ((30, 40, 3), (0, 2))]


@requires_openmp
@pytest.mark.parametrize("shape,axis", THREAD_CASES, ids=str)
@pytest.mark.parametrize("func", FUNCS)
def test_bitwise_identical_across_threads(dtype, rng, shape, axis, func):
    x = random_array(rng, shape, dtype)
    inputs = [x]
    if len(shape) == 2:
        inputs.append(np.asfortranarray(x))
    for arr in inputs:
        results = []
        for n in (1, 2, 3):
            with fastdl.threads(n):
                results.append(call(func, arr, axis))
        with threadpoolctl.threadpool_limits(1, user_api="openmp"):
            assert fastdl.get_num_threads() == 1
            results.append(call(func, arr, axis))
        first = np.asarray(results[0])
        for other in results[1:]:
            assert first.tobytes() == np.asarray(other).tobytes(), (shape, axis)
        check(func, arr, axis)


# --------------------------------------------------------------------------------------
# property-based: any shape, axes, layout against NumPy in float64

@st.composite
def reduction_cases(draw):
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    if ndim and draw(st.booleans()):
        # one long axis, to cross the lane, chunk and parallel thresholds now and then
        d = draw(st.integers(0, ndim - 1))
        shape = shape[:d] + (draw(st.integers(7, 3000)),) + shape[d + 1:]
    axis = draw(st.one_of(
        st.none(),
        st.integers(-ndim, ndim - 1) if ndim else st.none(),
        st.lists(st.integers(0, max(ndim - 1, 0)), unique=True, max_size=ndim).map(tuple)))
    return (shape, axis, draw(st.booleans()), draw(st.sampled_from(FUNCS)),
            draw(st.sampled_from(["float32", "float64"])), draw(st.sampled_from(LAYOUTS)),
            draw(st.integers(0, 2)), draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=250, deadline=None)
@given(reduction_cases())
def test_property_matches_numpy(case):
    shape, axis, keepdims, func, dt, kind, ddof, seed = case
    if int(np.prod(shape)) > 200000:
        return
    x = random_array(np.random.default_rng(seed), shape, np.dtype(dt))
    if x.ndim:
        x = layout(x, kind)
    actual = call(func, x, axis, keepdims, ddof)
    expected, scale = reference(func, x, axis, keepdims, ddof)
    with np.errstate(invalid="ignore"):
        assert_close(actual, expected, np.dtype(dt), scale=scale)
    if np.ndim(expected) == 0:
        assert type(actual) is np.dtype(dt).type
