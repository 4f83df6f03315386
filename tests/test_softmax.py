"""softmax, log_softmax, softmax_backward, log_softmax_backward: reference, layouts, axes,
out=, empty arrays, special values, threads, bad input and finite-difference gradients."""

import numpy as np
import pytest

import fastdl
from conftest import (LAYOUTS, WRONG_OUT_KINDS, assert_close, assert_unchanged, layout,
                      make_wrong_out, random_array, requires_openmp, snapshot)
from fastdl._ext._softmax import log_softmax, log_softmax_backward, softmax, softmax_backward
from reference_softmax_losses import (log_softmax_backward_ref, log_softmax_ref,
                                      softmax_backward_ref, softmax_ref)

FORWARD = {"softmax": (softmax, softmax_ref), "log_softmax": (log_softmax, log_softmax_ref)}
BACKWARD = {"softmax_backward": (softmax_backward, softmax_backward_ref, softmax),
            "log_softmax_backward": (log_softmax_backward, log_softmax_backward_ref,
                                     log_softmax)}

# (shape, axis) pairs: odd sizes, rows of 1, every axis of 3-D arrays, negative axes, rows
# crossing the parallel threshold (32K elements), long rows (> 256 KiB: the online pass).
SHAPES_AXES = [((1,), 0), ((7,), -1), ((1, 1), -1), ((3, 1), -1), ((3, 1), 0),
               ((5, 33), -1), ((5, 33), 0), ((4, 7, 33), 0), ((4, 7, 33), 1), ((4, 7, 33), 2),
               ((4, 7, 33), -2), ((64, 1000), -1), ((1000, 40), 0), ((2, 70001), -1),
               ((70001, 2), 0), ((3, 40, 300), 1)]


def _id(v):
    return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)


def _logits(rng, shape, dtype):
    return (3 * rng.standard_normal(shape)).astype(dtype)


def _terms(shape, axis):
    return shape[axis] if shape else 1


# --------------------------------------------------------------------------------------
# forward against the reference

@pytest.mark.parametrize("name", FORWARD)
@pytest.mark.parametrize("shape,axis", SHAPES_AXES, ids=[f"{_id(s)}-ax{a}" for s, a in SHAPES_AXES])
def test_forward_matches_reference(name, shape, axis, dtype, rng):
    fn, ref = FORWARD[name]
    x = _logits(rng, shape, dtype)
    before = snapshot(x)
    y = fn(x, axis)
    assert_close(y, ref(x, axis), dtype, terms=_terms(shape, axis) ** 0.5)
    assert_unchanged(before, x)


@pytest.mark.parametrize("name", FORWARD)
@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("shape,axis", [((6, 35), -1), ((6, 35), 0), ((3, 5, 40), 1),
                                        ((3, 5, 40), -1), ((3, 5, 40), 0)])
def test_forward_layouts(name, kind, shape, axis, dtype, rng):
    fn, ref = FORWARD[name]
    x = layout(_logits(rng, shape, dtype), kind)
    assert_close(fn(x, axis), ref(x, axis), dtype, terms=shape[axis] ** 0.5)


def test_fortran_input_is_walked_in_place(rng):
    # A Fortran array is walked in reversed axis order (no copy), and the result keeps its order.
    x = np.asfortranarray(_logits(rng, (50, 30), np.float32))
    for axis in (0, 1):
        y = softmax(x, axis)
        assert y.flags.f_contiguous
        assert_close(y, softmax_ref(x, axis), np.float32, terms=6)


def test_int_and_bool_inputs_promote_to_float64():
    y = softmax(np.array([[1, 2, 3]]))
    assert y.dtype == np.float64
    assert_close(y, softmax_ref(np.array([[1.0, 2.0, 3.0]])), np.float64)
    assert log_softmax([True, False]).dtype == np.float64
    assert softmax([0.5, 1.5]).dtype == np.float64


def test_rows_of_length_one(dtype):
    x = np.array([[3.0], [-1e4], [0.0]], dtype)
    assert np.array_equal(softmax(x), np.ones((3, 1), dtype))
    assert np.array_equal(log_softmax(x), np.zeros((3, 1), dtype))
    assert np.array_equal(softmax(x, 0), softmax_ref(x, 0).astype(dtype))


# --------------------------------------------------------------------------------------
# special values

def test_large_logits_are_stable(dtype):
    x = np.array([[1e4, -1e4, 0.0, 1e4 - 1], [-1e4, -1e4 + 1, -1e4 + 2, -1e4]], dtype)
    for name, (fn, ref) in FORWARD.items():
        y = fn(x)
        assert np.all(np.isfinite(y)), name
        assert_close(y, ref(x), dtype, scale=np.maximum(1.0, np.abs(ref(x))))


def test_neg_inf_rows(dtype):
    inf = np.inf
    x = np.array([[-inf, -inf, 2.0, -inf], [-inf, -inf, -inf, -inf], [0.0, -inf, 0.0, -inf]],
                 dtype)
    y = softmax(x)
    assert np.array_equal(y[0], np.array([0, 0, 1, 0], dtype))
    assert np.all(np.isnan(y[1]))          # all -inf: NaN, as the formula (-inf - -inf)
    assert np.array_equal(y[2], np.array([0.5, 0, 0.5, 0], dtype))
    ly = log_softmax(x)
    assert np.array_equal(ly[0], np.array([-inf, -inf, 0, -inf], dtype))
    assert np.all(np.isnan(ly[1]))
    finite = np.isfinite(ly[2])
    assert np.array_equal(finite, [True, False, True, False])
    assert_close(ly[2][finite], log_softmax_ref(x[2])[finite], dtype)
    # the same along axis 0 (the column kernel)
    assert np.array_equal(softmax(x.T, 0)[:, 0], y[0])
    assert np.all(np.isnan(softmax(x.T, 0)[:, 1]))


def test_underflow_boundary(dtype):
    """exp(x - max) near and below the smallest normal: outputs within one smallest-normal of
    the reference (softmax flushes results below it to 0), log_softmax exact to rounding."""
    tiny = np.finfo(dtype).tiny
    edge = np.log(tiny)                      # -87.34 (float32), -708.40 (float64)
    offsets = np.array([0.0, -1.0, edge + 1, edge + 0.01, edge, edge - 0.01, edge - 0.7,
                        edge - 1, edge - 30, -np.inf])
    x = np.stack([offsets, offsets + 5.0]).astype(dtype)
    for y in (softmax(x), softmax(np.ascontiguousarray(x.T), 0).T):
        expected = softmax_ref(x)
        assert np.all(y >= 0) and not np.any(np.isnan(y))
        assert np.all(np.abs(y.astype(np.float64) - expected) <= 4 * np.finfo(dtype).eps * expected + tiny)
        assert np.all(y[:, -1] == 0)
    assert_close(log_softmax(x), log_softmax_ref(x), dtype)


@pytest.mark.parametrize("n", [5, 70001])   # short rows and the online pass of long rows
def test_nan_and_inf_propagate(n, dtype):
    x = np.zeros((4, n), dtype)
    x[0, 1] = np.nan
    x[1, n - 1] = np.inf
    x[2, :] = -np.inf
    x[2, n // 2] = np.nan
    x[3, :] = -np.inf
    x[3, n - 1] = 1.0
    xt = np.ascontiguousarray(x.T)       # the same lanes as columns (the column kernel)
    for fn in (softmax, log_softmax):
        for y in (fn(x), fn(xt, 0).T):
            assert np.all(np.isnan(y[:3])), fn.__name__
            assert np.isfinite(y[3, n - 1])
            assert np.all(np.isfinite(y[3, :n - 1]) | (y[3, :n - 1] == -np.inf))
    assert softmax(x)[3, n - 1] == 1 and softmax(xt, 0)[n - 1, 3] == 1


def test_long_row_neg_inf_chunk_then_finite(dtype):
    # The online pass must not turn a leading chunk of -inf into NaN.
    big = np.full((1, 80000), -np.inf, dtype)
    big[0, 70000:71000] = np.linspace(-3, 3, 1000)
    y = softmax(big)
    assert not np.any(np.isnan(y))
    assert_close(y, softmax_ref(big), dtype, terms=30)
    assert_close(log_softmax(big)[0, 70000:71000], log_softmax_ref(big)[0, 70000:71000],
                 dtype, scale=10)
    col = np.ascontiguousarray(np.repeat(big, 3, axis=0).T)     # column kernel, online pass
    assert_close(softmax(col, 0), softmax_ref(col, 0), dtype, terms=30)


# --------------------------------------------------------------------------------------
# out=

@pytest.mark.parametrize("name", FORWARD)
def test_out(name, dtype, rng):
    fn, ref = FORWARD[name]
    x = _logits(rng, (9, 17), dtype)
    expected = ref(x, -1)
    for out in (np.empty((9, 17), dtype), np.empty((9, 17), dtype, order="F"),
                np.empty((18, 34), dtype)[::2, 1::2], np.empty((9, 17), dtype)[::-1]):
        r = fn(x, out=out)
        assert r is out
        assert_close(out, expected, dtype, terms=5)


@pytest.mark.parametrize("name", FORWARD)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_out_aliases_input(name, axis, dtype, rng):
    fn, ref = FORWARD[name]
    for kind in ("C", "F", "strided"):
        x = layout(_logits(rng, (40, 900), dtype), kind)
        expected = ref(x, axis)
        assert fn(x, axis, out=x) is x
        assert_close(x, expected, dtype, terms=30)


def test_out_overlapping_input_shifted(dtype, rng):
    base = _logits(rng, (1, 64), dtype)
    x = base[:, :40]
    out = base[:, 8:48]          # overlaps x, shifted by 8 elements
    expected = softmax_ref(x)
    assert softmax(x, out=out) is out
    assert_close(out, expected, dtype, terms=7)


@pytest.mark.parametrize("kind", WRONG_OUT_KINDS)
def test_wrong_out_raises_and_writes_nothing(kind, dtype, rng):
    x = _logits(rng, (4, 6), dtype)
    out, exc = make_wrong_out(kind, np.dtype(dtype), (4, 6))
    before = snapshot(x, out if isinstance(out, np.ndarray) else None)
    for fn in (softmax, log_softmax):
        with pytest.raises(exc, match="out"):
            fn(x, out=out)
    with pytest.raises(exc, match="out"):
        softmax_backward(x, x, out=out)
    assert_unchanged(before, x, out if isinstance(out, np.ndarray) else None)


# --------------------------------------------------------------------------------------
# empty arrays

@pytest.mark.parametrize("shape,axis", [((0,), 0), ((0, 5), -1), ((0, 5), 0), ((5, 0), -1),
                                        ((5, 0), 0), ((2, 0, 3), 1), ((2, 0, 3), 2)])
def test_empty(shape, axis, dtype):
    x = np.empty(shape, dtype)
    for fn in (softmax, log_softmax):
        y = fn(x, axis)
        assert y.shape == shape and y.dtype == dtype
        out = np.empty(shape, dtype)
        assert fn(x, axis, out=out) is out
    for fn in (softmax_backward, log_softmax_backward):
        dx = fn(x, x, axis)
        assert dx.shape == shape and dx.dtype == dtype


# --------------------------------------------------------------------------------------
# backward

@pytest.mark.parametrize("name", BACKWARD)
@pytest.mark.parametrize("shape,axis", SHAPES_AXES, ids=[f"{_id(s)}-ax{a}" for s, a in SHAPES_AXES])
def test_backward_matches_reference(name, shape, axis, dtype, rng):
    fn, ref, fwd = BACKWARD[name]
    y = fwd(_logits(rng, shape, dtype), axis)
    dy = random_array(rng, shape, dtype)
    before = snapshot(dy, y)
    dx = fn(dy, y, axis)
    expected = ref(dy, y, axis)
    # dx = y * (dy - s) or dy - e^y s: relative to |dy| + |s| per element, s summing a lane.
    scale = np.abs(np.asarray(dy, np.float64)).max() * (1 + _terms(shape, axis) ** 0.5)
    assert_close(dx, expected, dtype, scale=scale)
    assert_unchanged(before, dy, y)


@pytest.mark.parametrize("name", BACKWARD)
@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_backward_layouts(name, kind, axis, dtype, rng):
    fn, ref, fwd = BACKWARD[name]
    y = layout(fwd(_logits(rng, (4, 6, 35), dtype), axis), kind)
    dy = layout(random_array(rng, (4, 6, 35), dtype), "C" if kind == "F" else "F")
    assert_close(fn(dy, y, axis), ref(dy, y, axis), dtype, scale=10 * np.abs(dy).max())


@pytest.mark.parametrize("name", BACKWARD)
def test_backward_out_aliases(name, dtype, rng):
    fn, ref, fwd = BACKWARD[name]
    y = fwd(_logits(rng, (30, 1200), dtype))
    dy = random_array(rng, (30, 1200), dtype)
    expected = ref(dy, y)
    for target in ("dy", "y"):
        a, b = dy.copy(), y.copy()
        out = a if target == "dy" else b
        assert fn(a, b, out=out) is out
        assert_close(out, expected, dtype, scale=40 * np.abs(dy).max())


def test_backward_mixed_dtypes_promote(rng):
    y = softmax(_logits(rng, (3, 5), np.float32))
    dy = random_array(rng, (3, 5), np.float64)
    assert softmax_backward(dy, y).dtype == np.float64
    assert_close(softmax_backward(dy, y), softmax_backward_ref(dy, y), np.float64)


def _numeric_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f(x)
        x[i] = old - h
        fm = f(x)
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


@pytest.mark.parametrize("name", BACKWARD)
@pytest.mark.parametrize("shape,axis", [((4, 7), -1), ((4, 7), 0), ((3, 4, 5), 1), ((3, 4, 5), 2)])
def test_gradient_finite_differences(name, shape, axis, rng):
    fn, _, fwd = BACKWARD[name]
    x = rng.standard_normal(shape)
    w = rng.standard_normal(shape)          # L = sum(w * f(x)), so dL/dy = w
    numeric = _numeric_grad(lambda v: float(np.sum(w * fwd(v, axis))), x.copy())
    analytic = fn(w, fwd(x, axis), axis)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------------------
# threads: bitwise identical results

@requires_openmp
@pytest.mark.parametrize("shape,axis", [((300, 1000), -1), ((3, 80000), -1), ((2000, 50), 0),
                                        ((20, 100, 40), 1)])
def test_thread_counts_bitwise_equal(shape, axis, dtype, rng):
    x = _logits(rng, shape, dtype)
    dy = random_array(rng, shape, dtype)
    results = []
    for n in (1, 2):
        with fastdl.threads(n):
            y = softmax(x, axis)
            ly = log_softmax(x, axis)
            results.append([y, ly, softmax_backward(dy, y, axis),
                            log_softmax_backward(dy, ly, axis)])
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------------------
# bad input

def test_bad_axis(dtype):
    x = np.zeros((3, 4), dtype)
    before = snapshot(x)
    for fn in (softmax, log_softmax):
        with pytest.raises(ValueError, match="axis 2"):
            fn(x, 2)
        with pytest.raises(ValueError, match="axis -3"):
            fn(x, -3)
        with pytest.raises(TypeError, match="axis"):
            fn(x, 1.0)
        with pytest.raises(ValueError, match="axis"):
            fn(np.float64(1.0))              # 0-d: no axis -1
    for fn in (softmax_backward, log_softmax_backward):
        with pytest.raises(ValueError, match="axis 5"):
            fn(x, x, 5)
    assert_unchanged(before, x)


@pytest.mark.parametrize("bad", [np.zeros(3, np.complex128), np.zeros(3, np.float16),
                                 np.array(["a", "b"]), np.array([None, 1.0], dtype=object)])
def test_bad_dtype(bad):
    for fn in (softmax, log_softmax):
        with pytest.raises(TypeError, match="'x'"):
            fn(bad)
    with pytest.raises(TypeError, match="'dy'"):
        softmax_backward(bad, np.zeros(bad.shape))
    with pytest.raises(TypeError, match="'y'"):
        log_softmax_backward(np.zeros(bad.shape), bad)


def test_backward_shape_mismatch_names_both(dtype):
    dy, y = np.zeros((3, 4), dtype), np.zeros((4, 3), dtype)
    before = snapshot(dy, y)
    for fn in (softmax_backward, log_softmax_backward):
        with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
            fn(dy, y)
    assert_unchanged(before, dy, y)


def test_tiny_call_returns_correct_values():
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert_close(softmax(x), softmax_ref(x), np.float32)
    assert_close(log_softmax(x, 0), log_softmax_ref(x, 0), np.float32)
