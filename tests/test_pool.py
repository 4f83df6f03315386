"""max_pool2d (and its indices), avg_pool2d, global_avg_pool2d and their backward passes:
references, every kernel/stride/padding combination on small odd shapes, layouts, NaN and
ties against PyTorch, threads (bitwise), bad input, finite-difference gradients."""

import itertools

import numpy as np
import pytest

import fastdl
from conftest import (HAVE_OPENMP, assert_close, assert_unchanged, layout, random_array,
                      requires_openmp, snapshot)
from reference_norm_pool import (avg_pool2d_backward_ref, avg_pool2d_ref,
                                 global_avg_pool2d_ref, max_pool2d_backward_ref,
                                 max_pool2d_ref)

from fastdl import (avg_pool2d, avg_pool2d_backward, global_avg_pool2d,
                    global_avg_pool2d_backward, max_pool2d, max_pool2d_backward)

SHAPES = [(1, 1, 1, 1), (2, 3, 7, 5), (1, 2, 8, 8), (3, 1, 9, 11)]
# (kernel, stride, padding)
GEOMS = [(1, None, 0), (2, None, 0), (2, 1, 1), (3, 2, 1), ((3, 2), (1, 2), (1, 0)),
         (3, None, 0), ((1, 3), 1, (0, 1)), (2, (2, 1), 0)]
LAYOUTS = ("C", "F", "strided", "negative", "transposed-view", "channels-last")


def _layout(x, kind):
    if kind == "channels-last":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return layout(x, kind)


def _fits(shape, geom):
    k, s, p = geom
    k = (k, k) if np.isscalar(k) else k
    p = (p, p) if np.isscalar(p) else p
    return shape[2] + 2 * p[0] >= k[0] and shape[3] + 2 * p[1] >= k[1]


CASES = [(sh, g) for sh, g in itertools.product(SHAPES, GEOMS) if _fits(sh, g)]


def _numeric_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        g.reshape(-1)[i] = (fp - fm) / (2 * h)
    return g


# --------------------------------------------------------------------------------------
# max_pool2d

@pytest.mark.parametrize("shape,geom", CASES, ids=str)
def test_max_pool2d_matches_reference(shape, geom, dtype, rng):
    k, s, p = geom
    x = random_array(rng, shape, dtype)
    before = snapshot(x)
    y, idx = max_pool2d(x, k, s, p, return_indices=True)
    assert_unchanged(before, x)
    y_ref, idx_ref = max_pool2d_ref(x, k, s, p)
    assert idx.dtype == np.int64
    assert_close(y, y_ref, dtype)
    np.testing.assert_array_equal(idx, idx_ref)
    assert_close(max_pool2d(x, k, s, p), y_ref, dtype)


@pytest.mark.parametrize("kind", LAYOUTS)
def test_max_pool2d_layouts(kind, dtype, rng):
    x = random_array(rng, (2, 3, 9, 8), dtype)
    y_ref, idx_ref = max_pool2d_ref(x, 3, 2, 1)
    y, idx = max_pool2d(_layout(x, kind), 3, 2, 1, return_indices=True)
    assert_close(y, y_ref, dtype)
    np.testing.assert_array_equal(idx, idx_ref)
    y = max_pool2d(_layout(x, kind), 2)
    assert_close(y, max_pool2d_ref(x, 2)[0], dtype)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 9), (3, 5, 112, 112)], ids=str)
def test_max_pool2d_2x2_fast_path(shape, dtype, rng):
    x = random_array(rng, shape, dtype)
    x.reshape(-1)[::17] = np.nan
    x.reshape(-1)[5::23] = np.inf
    x.reshape(-1)[7::29] = -np.inf
    y_ref, _ = max_pool2d_ref(x, 2)
    y = max_pool2d(x, 2)           # no indices: the branch-free 2x2 kernel
    assert_close(y, y_ref, dtype)
    assert_close(max_pool2d(x, 2, return_indices=True)[0], y_ref, dtype)


@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (2, 3, 4, 6), (4, 8, 8, 8), (40, 64, 8, 8),
                                   (3, 2, 64, 64)], ids=str)
def test_max_pool2d_2x2_small_stacked_planes(shape, dtype, rng):
    """Small C-contiguous planes are pooled as one stack of rows: values and indices (first
    maximum, last NaN) as the reference, as the per-plane kernel (a strided view), and the
    same bits for any thread count."""
    x = rng.integers(0, 3, shape).astype(dtype)                  # many ties
    x.reshape(-1)[::11] = np.nan
    x.reshape(-1)[3::13] = -np.inf
    x.reshape(-1)[5::17] = np.inf
    y_ref, idx_ref = max_pool2d_ref(x, 2)
    y, idx = max_pool2d(x, 2, return_indices=True)
    assert_close(y, y_ref, dtype)
    np.testing.assert_array_equal(idx, idx_ref)
    assert_close(max_pool2d(x, 2), y_ref, dtype)
    wide = np.zeros(shape[:1] + (2 * shape[1],) + shape[2:], dtype)
    wide[:, ::2] = x                                             # planes not stacked
    y2, idx2 = max_pool2d(wide[:, ::2], 2, return_indices=True)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(idx2, idx)
    if HAVE_OPENMP:
        with fastdl.threads(1):
            y1, idx1 = max_pool2d(x, 2, return_indices=True)
        np.testing.assert_array_equal(y1, y)
        np.testing.assert_array_equal(idx1, idx)


@pytest.mark.parametrize("geom", [(2, None, 0), (3, 1, 1), (2, 1, 0), ((2, 3), (1, 2), (1, 1))],
                         ids=str)
def test_max_pool2d_indices_match_torch_with_nan_and_ties(geom, rng):
    torch = pytest.importorskip("torch")
    k, s, p = geom
    x = rng.integers(0, 3, (2, 3, 7, 8)).astype(np.float32)     # many ties
    x.reshape(-1)[::11] = np.nan
    x.reshape(-1)[3::13] = -np.inf
    y, idx = max_pool2d(x, k, s, p, return_indices=True)
    ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s if s else None, p,
                                              return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    dy = rng.standard_normal(y.shape).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_(True)
    torch.nn.functional.max_pool2d(tx, k, s if s else None, p).backward(torch.from_numpy(dy))
    assert_close(max_pool2d_backward(dy, x, idx, k, s, p), tx.grad.numpy(), np.float32)


LANE_GEOMS = [(3, 2, 1), (3, 1, 1), (2, 1, 0), (2, None, 1), (2, None, 0),
              ((3, 2), (1, 2), (1, 0)), ((1, 3), 1, (0, 1)), (5, 2, 2), (4, 3, 2), (1, None, 0)]


def _assert_same_bits_nan_aside(a, b):
    # a sum meeting two NaNs returns one of them, which depends on the instruction's operand
    # order (inf - inf gives x86's default NaN, sign bit set): NaN positions must agree,
    # their payloads need not
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b))
    assert a[~nan].tobytes() == b[~nan].tobytes()


@pytest.fixture
def plane_kernels_only():
    """Run the body with every plane sent to the per-plane kernels (the lanes path off)."""
    from fastdl._ext import _pool

    def run(f):
        old = _pool._lanes_switch(False)
        try:
            return f()
        finally:
            _pool._lanes_switch(old)
    return run


@pytest.mark.parametrize("geom", LANE_GEOMS, ids=str)
@pytest.mark.parametrize("shape", [(3, 7, 9, 11), (2, 9, 4, 4), (1, 1, 6, 5), (2, 17, 16, 16),
                                   (1, 3, 80, 70)],
                         ids=str)
def test_pool_lanes_path_is_bitwise_the_plane_kernels(shape, geom, dtype, rng,
                                                      plane_kernels_only):
    """Small planes are pooled 16 (float32) or 8 (float64) at a time, channels last: the
    values and indices (ties: first maximum; NaN: the last NaN) are bitwise those of the
    per-plane kernels, for plane counts that are not a multiple of the lanes, planes that
    are not stacked in memory, NaN/inf, and against the float64 reference."""
    if not _fits(shape, geom):
        pytest.skip("kernel larger than the padded input")
    k, s, p = geom
    x = rng.integers(0, 3, shape).astype(dtype) + rng.standard_normal(shape).astype(dtype) * (
        rng.random(shape) < 0.5)                                  # ties and distinct values
    x.reshape(-1)[::13] = np.nan
    x.reshape(-1)[4::17] = -np.inf
    x.reshape(-1)[6::19] = np.inf
    wide = np.full(shape[:1] + (2 * shape[1],) + shape[2:], np.nan, dtype)
    wide[:, 1::2] = x                                             # planes not stacked
    for arr in (x, wide[:, 1::2]):
        before = snapshot(arr)
        y, idx = max_pool2d(arr, k, s, p, return_indices=True)
        y2 = max_pool2d(arr, k, s, p)
        a = avg_pool2d(arr, k, s, p)
        assert_unchanged(before, arr)
        py, pidx = plane_kernels_only(lambda: max_pool2d(arr, k, s, p, return_indices=True))
        assert y.tobytes() == py.tobytes()
        np.testing.assert_array_equal(idx, pidx)
        assert y2.tobytes() == plane_kernels_only(lambda: max_pool2d(arr, k, s, p)).tobytes()
        _assert_same_bits_nan_aside(a, plane_kernels_only(lambda: avg_pool2d(arr, k, s, p)))
    y_ref, idx_ref = max_pool2d_ref(x, k, s, p)
    np.testing.assert_array_equal(idx, idx_ref)
    assert_close(y, y_ref, dtype)
    with np.errstate(invalid="ignore"):                          # inf - inf in windows
        a_ref = avg_pool2d_ref(x, k, s, p)
    assert_close(a, a_ref, dtype)


def test_pool_lanes_path_many_planes_match_torch(rng):
    """The digits-sized stack (32x16x8x8) and a 64x64 plane (the lanes path's largest), with
    ties and NaN, against PyTorch's values and indices."""
    torch = pytest.importorskip("torch")
    for shape in [(32, 16, 8, 8), (2, 3, 64, 64)]:
        x = rng.integers(0, 4, shape).astype(np.float32)
        x.reshape(-1)[::29] = np.nan
        for k, s, p in [(3, 2, 1), (3, 1, 1), (2, 1, 1)]:
            y, idx = max_pool2d(x, k, s, p, return_indices=True)
            ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p,
                                                      return_indices=True)
            np.testing.assert_array_equal(y, ty.numpy())
            np.testing.assert_array_equal(idx, tidx.numpy())
            ta = torch.nn.functional.avg_pool2d(torch.from_numpy(x), k, s, p)
            assert_close(avg_pool2d(x, k, s, p), ta.numpy(), np.float32)


def test_max_pool2d_all_minus_inf_window(dtype):
    x = np.full((1, 1, 3, 3), -np.inf, dtype)
    y, idx = max_pool2d(x, 3, 1, 1, return_indices=True)
    assert (y == -np.inf).all()
    # the first element of each clipped window, as PyTorch
    np.testing.assert_array_equal(idx[0, 0], [[0, 0, 1], [0, 0, 1], [3, 3, 4]])


@pytest.mark.parametrize("shape,geom", CASES, ids=str)
def test_max_pool2d_backward_matches_reference(shape, geom, dtype, rng):
    k, s, p = geom
    x = random_array(rng, shape, dtype)
    y, idx = max_pool2d(x, k, s, p, return_indices=True)
    dy = random_array(rng, y.shape, dtype)
    before = snapshot(dy, x, idx)
    dx = max_pool2d_backward(dy, x, idx, k, s, p)
    assert_unchanged(before, dy, x, idx)
    assert_close(dx, max_pool2d_backward_ref(dy, x.shape, idx), dtype, terms=9)


def test_max_pool2d_backward_gradcheck(rng):
    x = rng.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) * 0.1   # distinct: no ties
    w = random_array(rng, max_pool2d(x, 3, 2, 1).shape)

    def loss():
        return float(np.sum(w * max_pool2d(x, 3, 2, 1)))
    _, idx = max_pool2d(x, 3, 2, 1, return_indices=True)
    dx = max_pool2d_backward(w, x, idx, 3, 2, 1)
    np.testing.assert_allclose(dx, _numeric_grad(loss, x, 1e-4), rtol=1e-6, atol=1e-8)


def test_max_pool2d_backward_accepts_other_int_dtypes(rng):
    x = random_array(rng, (1, 2, 4, 4))
    y, idx = max_pool2d(x, 2, 1, return_indices=True)
    dy = np.ones_like(y)
    ref = max_pool2d_backward(dy, x, idx, 2, 1)
    for dt in (np.int32, np.uint16, np.uint64):
        np.testing.assert_array_equal(max_pool2d_backward(dy, x, idx.astype(dt), 2, 1), ref)


@pytest.mark.parametrize("case", ["float", "bool", "shape", "negative", "too-big", "uint-big",
                                  "dy-shape", "dy-3d"])
def test_max_pool2d_backward_bad_idx(case, rng):
    x = random_array(rng, (2, 2, 4, 4), np.float32)
    y, idx = max_pool2d(x, 2, return_indices=True)
    dy = np.ones_like(y)
    exc, match = ValueError, "idx"
    if case == "float":
        idx, exc = idx.astype(np.float64), TypeError
    elif case == "bool":
        idx, exc = idx > 0, TypeError
    elif case == "shape":
        idx = idx[:, :, :1]
    elif case == "negative":
        idx = idx.copy()
        idx[1, 1, 1, 0] = -1
    elif case == "too-big":
        idx = idx.copy()
        idx[0, 1, 0, 1] = 16
    elif case == "uint-big":
        idx = idx.astype(np.uint64)
        idx[0, 0, 0, 0] = 2**63 + 5
    elif case == "dy-shape":
        dy, match = dy[:, :, :1], "dy has shape"
    elif case == "dy-3d":
        dy, match = dy[0], "dy must have shape"
    before = snapshot(dy, x, idx)
    with pytest.raises(exc, match=match):
        max_pool2d_backward(dy, x, idx, 2)
    assert_unchanged(before, dy, x, idx)


# --------------------------------------------------------------------------------------
# avg_pool2d

@pytest.mark.parametrize("shape,geom", CASES, ids=str)
def test_avg_pool2d_matches_reference(shape, geom, dtype, rng):
    k, s, p = geom
    x = random_array(rng, shape, dtype)
    before = snapshot(x)
    y = avg_pool2d(x, k, s, p)
    assert_unchanged(before, x)
    assert_close(y, avg_pool2d_ref(x, k, s, p), dtype, terms=9)
    dy = random_array(rng, y.shape, dtype)
    dx = avg_pool2d_backward(dy, x, k, s, p)
    assert_close(dx, avg_pool2d_backward_ref(dy, x.shape, k, s, p), dtype, terms=9)


@pytest.mark.parametrize("kind", LAYOUTS)
def test_avg_pool2d_layouts(kind, dtype, rng):
    x = random_array(rng, (2, 3, 9, 8), dtype)
    y = avg_pool2d(_layout(x, kind), 3, 2, 1)
    assert_close(y, avg_pool2d_ref(x, 3, 2, 1), dtype, terms=9)
    dy = random_array(rng, y.shape, dtype)
    assert_close(avg_pool2d_backward(_layout(dy, kind), _layout(x, kind), 3, 2, 1),
                 avg_pool2d_backward_ref(dy, x.shape, 3, 2, 1), dtype, terms=9)


def test_avg_pool2d_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = random_array(rng, (2, 3, 9, 7))
    for k, s, p in [(3, 2, 1), (2, 1, 1), ((3, 2), (2, 1), (1, 1))]:
        ty = torch.nn.functional.avg_pool2d(torch.from_numpy(x), k, s, p)
        np.testing.assert_allclose(avg_pool2d(x, k, s, p), ty.numpy(), rtol=1e-13, atol=1e-15)


def test_avg_pool2d_backward_gradcheck(rng):
    x = random_array(rng, (2, 2, 6, 5))
    w = random_array(rng, avg_pool2d(x, 3, 2, 1).shape)

    def loss():
        return float(np.sum(w * avg_pool2d(x, 3, 2, 1)))
    np.testing.assert_allclose(avg_pool2d_backward(w, x, 3, 2, 1), _numeric_grad(loss, x),
                               rtol=1e-6, atol=1e-8)


def test_pool_special_values(dtype, rng):
    x = random_array(rng, (1, 2, 4, 4), dtype)
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 2, 3] = np.inf
    y = avg_pool2d(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 1, 1, 1] == np.inf
    y, idx = max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 5 and y[0, 1, 1, 1] == np.inf
    g = global_avg_pool2d(x)
    assert np.isnan(g[0, 0]) and g[0, 1] == np.inf


# --------------------------------------------------------------------------------------
# global_avg_pool2d

@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 7, 5), (3, 33, 1, 9), (2, 2, 40, 30)],
                         ids=str)
def test_global_avg_pool2d(shape, kind, dtype, rng):
    x0 = random_array(rng, shape, dtype)
    x = _layout(x0, kind)
    y = global_avg_pool2d(x)
    hw = shape[2] * shape[3]
    assert_close(y, global_avg_pool2d_ref(x), dtype, terms=hw)
    # consecutive planes (one masked load past a plane's end) and planes apart (the tail
    # gathered element by element) sum the same lanes: the same bits
    assert global_avg_pool2d(x0).tobytes() == y.tobytes()
    dy = random_array(rng, shape[:2], dtype)
    ref = np.broadcast_to(dy.astype(np.float64)[:, :, None, None] / hw, shape)
    assert_close(global_avg_pool2d_backward(dy, x), ref, dtype)
    assert_close(global_avg_pool2d_backward(dy, shape), ref, dtype)
    assert_close(global_avg_pool2d_backward(dy, list(shape)), ref, dtype)


def test_global_avg_pool2d_gradcheck(rng):
    x = random_array(rng, (2, 3, 4, 5))
    w = random_array(rng, (2, 3))

    def loss():
        return float(np.sum(w * global_avg_pool2d(x)))
    np.testing.assert_allclose(global_avg_pool2d_backward(w, x), _numeric_grad(loss, x),
                               rtol=1e-6, atol=1e-9)


def test_global_avg_pool2d_bad_input_and_empty(dtype):
    with pytest.raises(ValueError, match="x must have shape"):
        global_avg_pool2d(np.ones((2, 3, 4), dtype))
    with pytest.raises(ValueError, match="dy has shape"):
        global_avg_pool2d_backward(np.ones((2, 4), dtype), (2, 3, 4, 4))
    with pytest.raises(ValueError, match="x_shape"):
        global_avg_pool2d_backward(np.ones((2, 3), dtype), (2, 3, 4))
    assert global_avg_pool2d(np.empty((0, 3, 4, 4), dtype)).shape == (0, 3)
    assert np.isnan(global_avg_pool2d(np.empty((2, 3, 0, 4), dtype))).all()
    assert global_avg_pool2d_backward(np.empty((0, 3), dtype), (0, 3, 2, 2)).shape == (0, 3, 2, 2)


# --------------------------------------------------------------------------------------
# shared: bad hyper-parameters, empty batch, threads

@pytest.mark.parametrize("func", ["max", "avg", "max_bwd", "avg_bwd"])
@pytest.mark.parametrize("args,exc,match", [
    ((0,), ValueError, "kernel_size must be positive"),
    ((2, 0), ValueError, "stride must be positive"),
    ((3, 1, -1), ValueError, "padding must be non-negative"),
    ((3, 1, 2), ValueError, "at most half"),
    ((6,), ValueError, "larger than the padded input"),
    (((2, 8), 1, (0, 1)), ValueError, "larger than the padded input"),
    (((2, 2, 2),), ValueError, "pair"),
    ((2.0,), TypeError, "kernel_size"),
    ((True,), TypeError, "kernel_size"),
], ids=str)
def test_pool_bad_hyperparameters(func, args, exc, match, rng):
    x = random_array(rng, (2, 3, 5, 5), np.float32)
    dy = np.ones((2, 3, 2, 2), np.float32)
    idx = np.zeros((2, 3, 2, 2), np.int64)
    before = snapshot(x, dy, idx)
    with pytest.raises(exc, match=match):
        if func == "max":
            max_pool2d(x, *args)
        elif func == "avg":
            avg_pool2d(x, *args)
        elif func == "max_bwd":
            max_pool2d_backward(dy, x, idx, *args)
        else:
            avg_pool2d_backward(dy, x, *args)
    assert_unchanged(before, x, dy, idx)


def test_pool_bad_input_rank_and_dtype(rng):
    with pytest.raises(ValueError, match="x must have shape"):
        max_pool2d(np.ones((3, 5, 5)), 2)
    with pytest.raises(TypeError, match="x"):
        avg_pool2d(np.ones((1, 1, 4, 4), np.complex64), 2)
    with pytest.raises(ValueError, match="dy has shape"):
        avg_pool2d_backward(np.ones((1, 1, 3, 3)), np.ones((1, 1, 4, 4)), 2)


def test_pool_empty_batch(dtype):
    x = np.empty((0, 3, 6, 6), dtype)
    y, idx = max_pool2d(x, 2, return_indices=True)
    assert y.shape == (0, 3, 3, 3) and idx.shape == (0, 3, 3, 3)
    assert avg_pool2d(x, 3, 1, 1).shape == (0, 3, 6, 6)
    assert max_pool2d_backward(y, x, idx, 2).shape == x.shape
    assert avg_pool2d_backward(y, x, 2).shape == x.shape


def test_pool_integer_input_promotes():
    x = np.arange(16).reshape(1, 1, 4, 4)
    y = max_pool2d(x, 2)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [13, 15]])


@requires_openmp
@pytest.mark.parametrize("shape", [(4, 16, 33, 34), (32, 16, 8, 8), (2, 5, 80, 70)], ids=str)
@pytest.mark.parametrize("geom", [(2, None, 0), (3, 2, 1), (3, 1, 1)], ids=str)
def test_pool_thread_count_bitwise(geom, shape, dtype, rng):
    k, s, p = geom
    x = random_array(rng, shape, dtype)
    res = []
    for n in (1, 2):
        with fastdl.threads(n):
            y, idx = max_pool2d(x, k, s, p, return_indices=True)
            y2 = max_pool2d(x, k, s, p)
            a = avg_pool2d(x, k, s, p)
            dy = np.ones_like(y)
            dx = max_pool2d_backward(dy, x, idx, k, s, p)
            da = avg_pool2d_backward(dy, x, k, s, p)
            g = global_avg_pool2d(x)
            dg = global_avg_pool2d_backward(g, x)
            res.append([t.tobytes() for t in (y, idx, y2, a, dx, da, g, dg)])
    assert res[0] == res[1]
