"""lstm_cell / lstm_cell_backward: reference, finite differences, layouts, threads, errors."""

import numpy as np
import pytest

import fastdl
from fastdl._ext import _lstm
from conftest import (assert_close, gemm_scale, layout, random_array, requires_openmp,
                      snapshot, assert_unchanged, LAYOUTS)
from reference_nn import lstm_cell_ref, lstm_cell_backward_ref, numeric_grad


def _operands(rng, B, I, H, dtype):
    return (random_array(rng, (B, I), dtype), random_array(rng, (B, H), dtype),
            random_array(rng, (B, H), dtype), random_array(rng, (I, 4 * H), dtype) * 0.5,
            random_array(rng, (H, 4 * H), dtype) * 0.5, random_array(rng, (4 * H,), dtype))


def _gate_scale(x, h, w_ih, w_hh, b):
    # |gates| error bound: GEMM scale of both products plus |b|; the nonlinearities have
    # derivatives <= 1, so it bounds the error of h_new/c_new too (times |c| + 1).
    return gemm_scale(x, w_ih) + gemm_scale(h, w_hh) + np.abs(np.asarray(b, np.float64))


@pytest.mark.parametrize("B,I,H", [(1, 1, 1), (7, 5, 3), (33, 17, 9), (4, 3, 1000),
                                   (1000, 7, 33)])
def test_forward_matches_reference(rng, dtype, B, I, H):
    x, h, c, w_ih, w_hh, b = _operands(rng, B, I, H, dtype)
    hn, cn = fastdl.lstm_cell(x, h, c, w_ih, w_hh, b)
    rh, rc = lstm_cell_ref(x, h, c, w_ih, w_hh, b)
    s = _gate_scale(x, h, w_ih, w_hh, b)
    gate_err = np.max(s, axis=1, keepdims=True)  # per row: one gate's error spreads via tanh(c)
    scale = 4 * (gate_err * (np.abs(np.asarray(c, np.float64)) + 2))
    assert_close(hn, rh, dtype, scale=scale)
    assert_close(cn, rc, dtype, scale=scale)


@pytest.mark.parametrize("B,I,H", [(1, 1, 1), (7, 5, 3), (33, 17, 9), (3, 4, 1000)])
def test_backward_matches_reference(rng, dtype, B, I, H):
    args = _operands(rng, B, I, H, dtype)
    dh, dc = random_array(rng, (B, H), dtype), random_array(rng, (B, H), dtype)
    got = fastdl.lstm_cell_backward(dh, dc, *args)
    ref = lstm_cell_backward_ref(dh, dc, *args)
    names = ("dx", "dh", "dc", "dw_ih", "dw_hh", "db")
    for name, g, r in zip(names, got, ref):
        # Chain of a GEMM, a few products, another GEMM: relative to the largest value,
        # widened by the inner dimensions summed over.
        terms = 4 * H + B + I + H
        assert_close(g, r, dtype, scale=np.max(np.abs(r)) * 8 if r.size else 1,
                     terms=terms), name


def test_backward_finite_differences(rng):
    B, I, H = 3, 4, 5
    args = list(_operands(rng, B, I, H, np.float64))
    dh, dc = random_array(rng, (B, H)), random_array(rng, (B, H))

    def loss():
        hn, cn = fastdl.lstm_cell(*args)
        return float(np.sum(hn * dh) + np.sum(cn * dc))

    got = fastdl.lstm_cell_backward(dh, dc, *args)
    order = (0, 1, 2, 3, 4, 5)  # (x, h, c, w_ih, w_hh, b) -> (dx, dh, dc, dw_ih, dw_hh, db)
    for k in order:
        num = numeric_grad(loss, args[k])
        np.testing.assert_allclose(got[k], num, rtol=1e-6, atol=1e-8)


def test_backward_with_cached_gates_and_none(rng, dtype):
    args = _operands(rng, 6, 5, 4, dtype)
    hn, cn, gates = fastdl.lstm_cell(*args, return_gates=True)
    gates_before = gates.copy()
    dh = random_array(rng, (6, 4), dtype)
    a = fastdl.lstm_cell_backward(dh, None, *args, gates=gates)
    b = fastdl.lstm_cell_backward(dh, np.zeros((6, 4), dtype), *args)
    assert np.array_equal(gates, gates_before)
    for u, v in zip(a, b):
        assert u.dtype == dtype
        assert np.array_equal(u, v)


@pytest.mark.parametrize("kind", LAYOUTS)
def test_layouts(rng, dtype, kind):
    args = _operands(rng, 9, 6, 5, dtype)
    dh, dc = random_array(rng, (9, 5), dtype), random_array(rng, (9, 5), dtype)
    want = fastdl.lstm_cell(*args)
    want_b = fastdl.lstm_cell_backward(dh, dc, *args)
    views = [layout(a, kind) for a in args]
    got = fastdl.lstm_cell(*views)
    got_b = fastdl.lstm_cell_backward(layout(dh, kind), layout(dc, kind), *views)
    for u, v in zip(got + got_b, want + want_b):
        np.testing.assert_allclose(u, v, rtol=1e-5 if dtype == np.float32 else 1e-13,
                                   atol=1e-6 if dtype == np.float32 else 1e-14)


def test_mixed_and_integer_dtypes(rng):
    args = list(_operands(rng, 3, 2, 2, np.float32))
    hn, cn = fastdl.lstm_cell(*args)
    assert hn.dtype == np.float32 and cn.dtype == np.float32
    args[5] = args[5].astype(np.float64)
    hn, cn = fastdl.lstm_cell(*args)
    assert hn.dtype == np.float64
    ints = [np.ones(a.shape, np.int64) for a in args]
    hn, _ = fastdl.lstm_cell(*ints)
    assert hn.dtype == np.float64


def test_empty(dtype):
    for B, I, H in [(0, 3, 2), (4, 0, 2), (4, 3, 0)]:
        x, h, c = np.zeros((B, I), dtype), np.zeros((B, H), dtype), np.zeros((B, H), dtype)
        w_ih, w_hh, b = (np.zeros((I, 4 * H), dtype), np.zeros((H, 4 * H), dtype),
                         np.zeros(4 * H, dtype))
        hn, cn = fastdl.lstm_cell(x, h, c, w_ih, w_hh, b)
        assert hn.shape == (B, H) and cn.shape == (B, H)
        if B and H:
            # I = 0: gates are the bias only (0): i = f = o = 0.5, g = 0
            assert np.all(cn == 0) and np.all(hn == 0)
        grads = fastdl.lstm_cell_backward(h, c, x, h, c, w_ih, w_hh, b)
        for g, ref in zip(grads, (x, h, c, w_ih, w_hh, b)):
            assert g.shape == ref.shape and g.dtype == dtype


def test_nan_inf_propagate(dtype):
    B, I, H = 2, 1, 1
    x = np.array([[np.nan], [np.inf]], dtype)
    h = np.zeros((B, H), dtype)
    c = np.ones((B, H), dtype)
    w_ih = np.ones((I, 4 * H), dtype)
    w_hh = np.zeros((H, 4 * H), dtype)
    b = np.zeros(4 * H, dtype)
    hn, cn = fastdl.lstm_cell(x, h, c, w_ih, w_hh, b)
    rh, rc = lstm_cell_ref(x, h, c, w_ih, w_hh, b)
    assert np.isnan(hn[0, 0]) and np.isnan(cn[0, 0])
    # +inf pre-activations saturate: i = f = o = 1, g = 1 -> c = 2, h = tanh(2)
    assert_close(hn[1:], rh[1:], dtype)
    assert_close(cn[1:], rc[1:], dtype)


def test_large_preactivations_do_not_overflow(dtype):
    x = np.array([[-1000.0], [1000.0]], dtype)
    h = np.zeros((2, 1), dtype)
    c = np.ones((2, 1), dtype)
    w = np.ones((1, 4), dtype)
    hn, cn = fastdl.lstm_cell(x, h, c, w, np.zeros((1, 4), dtype), np.zeros(4, dtype))
    assert np.all(np.isfinite(hn)) and np.all(np.isfinite(cn))
    assert cn[0, 0] == 0 and hn[0, 0] == 0
    dx, dh, dc, *_ = fastdl.lstm_cell_backward(np.ones((2, 1), dtype), np.ones((2, 1), dtype),
                                               x, h, c, w, np.zeros((1, 4), dtype),
                                               np.zeros(4, dtype))
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(dc))


@requires_openmp
@pytest.mark.parametrize("B,I,H", [(512, 64, 64), (8, 8, 1024), (1000, 33, 17)])
def test_threads_bitwise(rng, dtype, B, I, H):
    args = _operands(rng, B, I, H, dtype)
    dh, dc = random_array(rng, (B, H), dtype), random_array(rng, (B, H), dtype)
    with fastdl.threads(1):
        a = fastdl.lstm_cell(*args) + fastdl.lstm_cell_backward(dh, dc, *args)
    with fastdl.threads(2):
        b = fastdl.lstm_cell(*args) + fastdl.lstm_cell_backward(dh, dc, *args)
    for u, v in zip(a, b):
        assert u.tobytes() == v.tobytes()


BAD_SHAPES = [
    ("x", (5, 3, 1)), ("x", (4, 3)), ("h", (5, 4)), ("c", (5, 3)), ("w_ih", (3, 6)),
    ("w_ih", (4, 8)), ("w_hh", (3, 8)), ("b", (8, 1)), ("b", (9,)),
]


@pytest.mark.parametrize("name,shape", BAD_SHAPES)
def test_bad_shapes(rng, name, shape):
    B, I, H = 5, 3, 2
    args = dict(zip(("x", "h", "c", "w_ih", "w_hh", "b"), _operands(rng, B, I, H, np.float64)))
    args[name] = random_array(rng, shape)
    before = snapshot(*args.values())
    with pytest.raises(ValueError, match=r"lstm_cell.*x \(B, I\)") as e:
        fastdl.lstm_cell(*args.values())
    assert name in str(e.value)
    dh = random_array(rng, (B, H))
    with pytest.raises(ValueError, match="lstm_cell_backward"):
        fastdl.lstm_cell_backward(dh, dh, *args.values())
    assert_unchanged(before, *args.values())


def test_bad_gradient_shapes_and_types(rng):
    args = _operands(rng, 5, 3, 2, np.float64)
    with pytest.raises(ValueError, match=r"dh_new \(5, 3\)"):
        fastdl.lstm_cell_backward(np.zeros((5, 3)), None, *args)
    with pytest.raises(ValueError, match="both None"):
        fastdl.lstm_cell_backward(None, None, *args)
    with pytest.raises(ValueError, match=r"gates must have shape \(B, 4H\) = \(5, 8\)"):
        fastdl.lstm_cell_backward(np.zeros((5, 2)), None, *args, gates=np.zeros((5, 7)))
    with pytest.raises(TypeError, match="w_hh"):
        fastdl.lstm_cell(*args[:4], args[4].astype(np.complex128), args[5])
    with pytest.raises(TypeError, match="x"):
        fastdl.lstm_cell(args[0].astype(np.float16), *args[1:])


def test_internal_helpers_refuse_bad_memory():
    g = np.zeros((2, 8))
    with pytest.raises(ValueError, match="c must be"):
        _lstm._forward_rows(g, np.zeros((2, 2), np.float32), np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="contiguous last axis"):
        _lstm._forward_rows(g, np.zeros((2, 4))[:, ::2], np.zeros((2, 2)), np.zeros((2, 2)))
    ro = np.zeros((2, 2))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _lstm._forward_rows(g, np.zeros((2, 2)), ro, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="does not fit"):
        _lstm._add_matmul(np.zeros((2, 3)), np.zeros((2, 8)), g)
    with pytest.raises(ValueError, match="does not fit"):
        _lstm._add_matmul(np.zeros((2, 3), np.float32), np.zeros((3, 8)), g)


def test_add_matmul_accumulates(rng, dtype):
    a = random_array(rng, (5, 3), dtype)[::-1]  # negative strides: copied for BLAS
    b = np.asfortranarray(random_array(rng, (3, 8), dtype))
    big = random_array(rng, (5, 2, 8), dtype)
    c = big[:, 1]  # rows with a stride: written in place
    want = c.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
    _lstm._add_matmul(a, b, c)
    assert_close(big[:, 1], want, dtype, scale=gemm_scale(a, b) + np.abs(want))


def test_read_only_inputs(rng, dtype):
    args = _operands(rng, 4, 3, 2, dtype)
    dh, dc = random_array(rng, (4, 2), dtype), random_array(rng, (4, 2), dtype)
    want = fastdl.lstm_cell(*args) + fastdl.lstm_cell_backward(dh, dc, *args)
    for a in args + (dh, dc):
        a.flags.writeable = False
    got = fastdl.lstm_cell(*args) + fastdl.lstm_cell_backward(dh, dc, *args)
    for u, v in zip(got, want):
        assert u.tobytes() == v.tobytes()
