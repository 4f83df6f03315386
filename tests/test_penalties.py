"""L1/L2 penalties and their gradients (cheat sheet: lam * sum|w|, lam * sum(w**2))."""

import numpy as np
import pytest

import fastdl
from conftest import (assert_close, layout, snapshot, assert_unchanged, requires_openmp,
                      random_array)
import reference_optim as ref

LAYOUTS = ["C", "F", "strided", "negative", "transposed-view"]
SHAPES = [(1,), (7,), (33, 5), (1001,), (3, 4, 5), (50001,)]
PENALTIES = [(fastdl.l1_penalty, ref.l1_penalty), (fastdl.l2_penalty, ref.l2_penalty)]
GRADS = [(fastdl.l1_penalty_grad, ref.l1_penalty_grad),
         (fastdl.l2_penalty_grad, ref.l2_penalty_grad)]


@pytest.mark.parametrize("fn,rf", PENALTIES, ids=["l1", "l2"])
@pytest.mark.parametrize("shape", SHAPES)
def test_penalty_value(rng, dtype, fn, rf, shape):
    w = random_array(rng, shape, dtype)
    out = fn(w, 0.3)
    assert type(out) is np.dtype(dtype).type
    # summed in double: one rounding of the result
    assert_close(np.asarray(out), rf(w.astype(np.float64), 0.3), dtype)


@pytest.mark.parametrize("fn,rf", GRADS, ids=["l1", "l2"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_penalty_grad_layouts(rng, dtype, fn, rf, shape, kind):
    w = layout(random_array(rng, shape, dtype), kind)
    w.flat[0] = 0.0
    before = snapshot(w)
    g = fn(w, 0.3)
    assert_unchanged(before, w)
    assert_close(g, rf(w.astype(np.float64), 0.3), dtype)


@pytest.mark.parametrize("fn,rf", PENALTIES, ids=["l1", "l2"])
def test_penalty_layouts_and_lists(rng, dtype, fn, rf):
    ws = [layout(random_array(rng, s, dtype), k) for s, k in
          zip([(7,), (33, 5), (300, 200), (0,)], ["C", "strided", "negative", "F"])]
    expect = sum(rf(w.astype(np.float64), 0.5) for w in ws)
    out = fn(ws, 0.5)
    assert type(out) is np.dtype(dtype).type
    assert_close(np.asarray(out), expect, dtype)
    assert fn(tuple(ws), 0.5) == out


def test_grads_of_a_list_are_a_list(rng, dtype):
    ws = [random_array(rng, s, dtype) for s in [(4,), (2, 3)]]
    for fn, rf in GRADS:
        gs = fn(ws, 0.1)
        assert isinstance(gs, list) and len(gs) == 2
        for g, w in zip(gs, ws):
            assert_close(g, rf(w.astype(np.float64), 0.1), dtype)


def test_mixed_and_integer_inputs(rng):
    ws = [np.ones(3, np.float32), np.ones(2, np.float64)]
    assert type(fastdl.l2_penalty(ws, 1.0)) is np.float64
    assert fastdl.l2_penalty(ws, 1.0) == 5.0
    assert fastdl.l1_penalty(np.array([-2, 3]), 2) == 10.0
    assert fastdl.l1_penalty_grad(np.array([-2, 0, 3]), 1.0).dtype == np.float64
    # a list is always a list of weights (here three 0-d ones)
    assert [float(g) for g in fastdl.l1_penalty_grad([-2, 0, 3], 1.0)] == [-1.0, 0.0, 1.0]


def test_empty_and_special_values(dtype):
    assert fastdl.l1_penalty(np.empty((0, 3), dtype), 1.0) == 0
    assert fastdl.l2_penalty([], 1.0) == 0.0
    assert fastdl.l2_penalty_grad(np.empty((0, 3), dtype), 1.0).shape == (0, 3)
    w = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 2.0], dtype)
    assert np.isnan(fastdl.l1_penalty(w, 1.0))
    assert np.isnan(fastdl.l2_penalty(w, 1.0))
    assert fastdl.l2_penalty(w[1:], 1.0) == np.inf
    g = fastdl.l1_penalty_grad(w, 2.0)
    assert np.isnan(g[0]) and list(g[1:]) == [2.0, -2.0, 0.0, 0.0, 2.0]
    g = fastdl.l2_penalty_grad(w, 1.0)
    assert np.isnan(g[0]) and list(g[1:]) == [np.inf, -np.inf, 0.0, 0.0, 4.0]


def test_finite_difference_gradients(rng):
    w = rng.standard_normal(11)
    h = 1e-6
    for fn, grad in [(fastdl.l1_penalty, fastdl.l1_penalty_grad),
                     (fastdl.l2_penalty, fastdl.l2_penalty_grad)]:
        num = np.empty_like(w)
        for i in range(w.size):
            wp, wm = w.copy(), w.copy()
            wp[i] += h
            wm[i] -= h
            num[i] = (fn(wp, 0.7) - fn(wm, 0.7)) / (2 * h)
        np.testing.assert_allclose(grad(w, 0.7), num, rtol=1e-6, atol=1e-8)


@requires_openmp
def test_thread_count_bitwise(rng, dtype):
    ws = [layout(random_array(rng, (401, 333), dtype), k) for k in ["C", "strided", "F"]]
    res = []
    for n in (1, 2):
        with fastdl.threads(n):
            res.append([fastdl.l1_penalty(ws, 0.1), fastdl.l2_penalty(ws, 0.1)]
                       + [g.tobytes() for g in fastdl.l1_penalty_grad(ws, 0.1)]
                       + [g.tobytes() for g in fastdl.l2_penalty_grad(ws, 0.1)])
    assert res[0] == res[1]


@pytest.mark.parametrize("fn", [fastdl.l1_penalty, fastdl.l2_penalty, fastdl.l1_penalty_grad,
                                fastdl.l2_penalty_grad])
def test_bad_input(fn):
    w = np.ones(3)
    for lam, exc in [(-0.1, ValueError), (float("nan"), ValueError), ("a", TypeError),
                     (None, TypeError)]:
        with pytest.raises(exc, match="lam"):
            fn(w, lam)
    with pytest.raises(TypeError, match="complex"):
        fn([w, np.ones(2, np.complex64)], 0.1)
    with pytest.raises(TypeError, match="weights"):
        fn(np.array(["a"]), 0.1)
