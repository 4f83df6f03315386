"""fastdl.linear and fastdl.linear_backward (API.md, "Layers (functional)").

``linear(x, w, b=None, *, out=None)`` is the cheat sheet's ``Y = XW + b`` with x
``(..., in)``, w ``(in, out)``, b ``(out,)``; ``linear_backward(dy, x, w, *, need_bias=True)``
returns ``(dx, dw, db)``.
"""

import re
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import threadpoolctl

import fastdl
from conftest import (LAYOUTS, WRONG_OUT_KINDS, assert_close, assert_unchanged, gemm_scale,
                      layout, make_wrong_out, random_array, snapshot)
from reference import linear_backward_ref, linear_ref


def check_linear(actual, x, w, b, dtype):
    """actual == x @ w + b within the GEMM tolerance (relative to |x| @ |w| + |b|)."""
    scale = gemm_scale(x, w)
    if b is not None:
        scale = scale + np.abs(np.asarray(b, dtype=np.float64))
    assert_close(actual, linear_ref(x, w, b), dtype, scale=scale)


def check_linear_backward(result, dy, x, w, dtype, need_bias=True):
    dx, dw, db = result
    dx_ref, dw_ref, db_ref = linear_backward_ref(dy, x, w)
    n_in, n_out = np.shape(w)
    dy_rows = np.asarray(dy, dtype=np.float64).reshape(-1, n_out)
    x_rows = np.asarray(x, dtype=np.float64).reshape(-1, n_in)
    assert_close(dx, dx_ref, dtype, scale=gemm_scale(dy, np.asarray(w).T))
    assert_close(dw, dw_ref, dtype, scale=gemm_scale(x_rows.T, dy_rows))
    if need_bias:
        assert_close(db, db_ref, dtype, scale=np.abs(dy_rows).sum(axis=0))
    else:
        assert db is None


# --------------------------------------------------------------------------------------
# linear: values

X_SHAPES = [(5,), (7, 5), (1, 5), (2, 3, 5), (2, 3, 4, 5), (0, 5), (2, 0, 5), (33, 5)]


@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("x_shape", X_SHAPES, ids=str)
def test_linear_against_reference(dtype, rng, x_shape, with_bias):
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, (5, 6), dtype)
    b = random_array(rng, 6, dtype) if with_bias else None
    y = fastdl.linear(x, w, b)
    assert y.shape == x_shape[:-1] + (6,)
    check_linear(y, x, w, b, dtype)


@pytest.mark.parametrize("n_in,n_out", [(1, 1), (7, 33), (257, 7), (64, 300)])
def test_linear_sizes(dtype, rng, n_in, n_out):
    x = random_array(rng, (37, n_in), dtype)
    w = random_array(rng, (n_in, n_out), dtype)
    b = random_array(rng, n_out, dtype)
    check_linear(fastdl.linear(x, w, b), x, w, b, dtype)


def test_linear_zero_in_features_gives_the_bias(dtype, rng):
    x, w = np.ones((4, 0), dtype), np.ones((0, 3), dtype)
    b = random_array(rng, 3, dtype)
    y = fastdl.linear(x, w, b)
    assert y.dtype == dtype and np.array_equal(y, np.broadcast_to(b, (4, 3)))
    y0 = fastdl.linear(x, w)
    assert y0.dtype == dtype and y0.shape == (4, 3) and np.all(y0 == 0)
    out = np.full((4, 3), np.nan, dtype)
    assert fastdl.linear(x, w, out=out) is out and np.all(out == 0)


def test_linear_zero_out_features(dtype):
    y = fastdl.linear(np.ones((4, 5), dtype), np.ones((5, 0), dtype), np.ones(0, dtype))
    assert y.shape == (4, 0) and y.dtype == dtype


@pytest.mark.parametrize("x_layout", LAYOUTS)
@pytest.mark.parametrize("w_layout", LAYOUTS)
def test_linear_layouts(dtype, rng, blas_provider, x_layout, w_layout):
    x = random_array(rng, (33, 17), dtype)
    w = random_array(rng, (17, 29), dtype)
    b = random_array(rng, 29, dtype)
    check_linear(fastdl.linear(layout(x, x_layout), layout(w, w_layout), b), x, w, b, dtype)


@pytest.mark.parametrize("x_layout", LAYOUTS)
@pytest.mark.parametrize("b_layout", ["C", "strided", "negative"])
def test_linear_layouts_batched(dtype, rng, x_layout, b_layout):
    x = random_array(rng, (3, 11, 17), dtype)
    w = random_array(rng, (17, 29), dtype)
    b = random_array(rng, 29, dtype)
    check_linear(fastdl.linear(layout(x, x_layout), w, layout(b, b_layout)), x, w, b, dtype)


@pytest.mark.parametrize("view", ["batch-permuted", "row-sliced", "col-sliced", "broadcast",
                                  "middle-unit-dim"])
def test_linear_noncontiguous_batched_views(dtype, rng, view):
    base = random_array(rng, (4, 6, 10), dtype)
    if view == "batch-permuted":
        x = base.transpose(1, 0, 2)                       # (6, 4, 10): batch dims swapped
    elif view == "row-sliced":
        x = base[:, ::2, :]                               # rows stride 2
    elif view == "col-sliced":
        x = base[:, :, 1::3]                              # features stride 3
    elif view == "broadcast":
        x = np.broadcast_to(base[:1], (5, 6, 10))         # zero batch stride
    else:
        x = base[:, None, :, :]                           # (4, 1, 6, 10)
    w = random_array(rng, (x.shape[-1], 7), dtype)
    b = random_array(rng, 7, dtype)
    check_linear(fastdl.linear(x, w, b), x, w, b, dtype)


def test_linear_pytorch_weight_layout(dtype, rng):
    # A PyTorch-style (out, in) weight passed as its transposed view (in, out).
    x = random_array(rng, (9, 12), dtype)
    w_pt = random_array(rng, (8, 12), dtype)
    check_linear(fastdl.linear(x, w_pt.T), x, w_pt.T, None, dtype)


UNALIGNED_SCRIPT = """
import numpy as np, fastdl

def unaligned(x):
    buf = bytearray(x.nbytes + 1)
    v = np.frombuffer(buf, dtype=x.dtype, offset=1, count=x.size).reshape(x.shape)
    v[...] = x
    assert not v.flags.aligned
    return v

rng = np.random.default_rng(0)
for dt in (np.float32, np.float64):
    x = rng.standard_normal((9, 6)).astype(dt)
    w = rng.standard_normal((6, 5)).astype(dt)
    b = rng.standard_normal(5).astype(dt)
    dy = rng.standard_normal((9, 5)).astype(dt)
    tol = 1e-4 if dt == np.float32 else 1e-10
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    if "{op}" == "linear":
        y = fastdl.linear(unaligned(x), unaligned(w), unaligned(b))
        assert np.allclose(y, x64 @ w64 + b, rtol=tol, atol=tol), "linear values"
        out = unaligned(np.zeros((9, 5), dt))
        assert fastdl.linear(x, w, b, out=out) is out
        assert np.allclose(out, x64 @ w64 + b, rtol=tol, atol=tol), "linear out values"
    else:
        dx, dw, db = fastdl.linear_backward(unaligned(dy), unaligned(x), unaligned(w))
        assert np.allclose(dx, dy64 @ w64.T, rtol=tol, atol=tol), "dx"
        assert np.allclose(dw, x64.T @ dy64, rtol=tol, atol=tol), "dw"
        assert np.allclose(db, dy64.sum(0), rtol=tol, atol=tol), "db"
print("ok")
"""


@pytest.mark.parametrize("op", ["linear", "linear_backward"])
def test_unaligned_inputs(op):
    # Views at an odd byte offset are valid NumPy arrays ("any memory layout"). Run in a
    # child process: a kernel that mishandles them may crash rather than raise.
    root = Path(fastdl.__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(UNALIGNED_SCRIPT.format(op=op))],
                          capture_output=True, text=True, cwd=root, timeout=120)
    assert proc.returncode == 0, (
        f"exit status {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr[-2000:]}")
    assert proc.stdout.strip() == "ok"


# --------------------------------------------------------------------------------------
# linear: out=

@pytest.mark.parametrize("out_layout", LAYOUTS)
@pytest.mark.parametrize("x_shape", [(5,), (7, 5), (2, 3, 5)], ids=str)
def test_linear_out(dtype, rng, out_layout, x_shape):
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, (5, 6), dtype)
    b = random_array(rng, 6, dtype)
    out = layout(np.full(x_shape[:-1] + (6,), np.nan, dtype), out_layout)
    assert fastdl.linear(x, w, b, out=out) is out
    check_linear(out, x, w, b, dtype)
    if out_layout == "strided":
        base = out.base
        holes = np.ones(base.shape, bool)
        holes[tuple(slice(1, None, 2) for _ in base.shape)] = False
        assert np.isnan(base[holes]).all(), "written outside the out view"


@pytest.mark.parametrize("alias", ["x", "w", "b"])
def test_linear_out_aliases_an_input(dtype, rng, alias):
    if alias == "b":
        x = random_array(rng, (1, 6), dtype)
        w = random_array(rng, (6, 6), dtype)
        b = random_array(rng, 6, dtype)
        x0, w0, b0 = x.copy(), w.copy(), b.copy()
        out = b[None, :]
    else:
        x = random_array(rng, (6, 6), dtype)
        w = random_array(rng, (6, 6), dtype)
        b = random_array(rng, 6, dtype)
        x0, w0, b0 = x.copy(), w.copy(), b.copy()
        out = x if alias == "x" else w
    assert fastdl.linear(x, w, b, out=out) is out
    check_linear(out, x0, w0, b0, dtype)


@pytest.mark.parametrize("kind", WRONG_OUT_KINDS)
def test_linear_wrong_out_raises_and_changes_nothing(dtype, rng, kind):
    out, exc = make_wrong_out(kind, dtype, (4, 3))
    x, w, b = (random_array(rng, s, dtype) for s in ((4, 5), (5, 3), (3,)))
    is_array = isinstance(out, np.ndarray)
    before = snapshot(x, w, b, out if is_array else None)
    with pytest.raises(exc, match="out"):
        fastdl.linear(x, w, b, out=out)
    assert_unchanged(before, x, w, b, out if is_array else None)


# --------------------------------------------------------------------------------------
# linear: errors and dtypes

@pytest.mark.parametrize("x_shape,w_shape", [((4, 5), (6, 3)), ((5,), (4, 3)),
                                             ((2, 3, 5), (3, 5))], ids=str)
def test_linear_feature_mismatch_names_shapes(x_shape, w_shape):
    x, w = np.ones(x_shape), np.ones(w_shape)
    out = np.full(x_shape[:-1] + (w_shape[1],), 2.0)
    before = snapshot(x, w, out)
    with pytest.raises(ValueError) as info:
        fastdl.linear(x, w, out=out)
    message = str(info.value)
    assert str(x_shape) in message and str(w_shape) in message
    assert_unchanged(before, x, w, out)


@pytest.mark.parametrize("w_shape", [(5,), (5, 3, 1), ()], ids=str)
def test_linear_w_not_2d(w_shape):
    with pytest.raises(ValueError) as info:
        fastdl.linear(np.ones((4, 5)), np.ones(w_shape))
    assert re.search(r"\bw\b", str(info.value)) and str(w_shape) in str(info.value)


@pytest.mark.parametrize("b_shape", [(4,), (1, 3), (3, 1), ()], ids=str)
def test_linear_bias_wrong_shape(b_shape):
    x, w, b = np.ones((4, 5)), np.ones((5, 3)), np.ones(b_shape)
    before = snapshot(x, w, b)
    with pytest.raises(ValueError) as info:
        fastdl.linear(x, w, b)
    assert re.search(r"\bb\b", str(info.value)) and str(b_shape) in str(info.value)
    assert_unchanged(before, x, w, b)


def test_linear_zero_dimensional_x():
    with pytest.raises(ValueError):
        fastdl.linear(np.float64(1.0), np.ones((1, 3)))


@pytest.mark.parametrize("dt_x,dt_w,dt_b,expected", [
    (np.float32, np.float32, np.float32, np.float32),
    (np.float32, np.float32, None, np.float32),
    (np.float64, np.float64, np.float64, np.float64),
    (np.float32, np.float64, None, np.float64),
    (np.float64, np.float32, np.float32, np.float64),
    (np.float32, np.float32, np.float64, np.float64),
    (np.int64, np.float32, None, np.float64),
    (np.float32, np.float32, np.int32, np.float64),
    (np.bool_, np.int16, np.uint8, np.float64),
], ids=lambda v: "none" if v is None else np.dtype(v).name)
def test_linear_dtype_promotion(rng, dt_x, dt_w, dt_b, expected):
    x = rng.integers(-2, 3, (4, 5)).astype(dt_x)
    w = rng.integers(-2, 3, (5, 3)).astype(dt_w)
    b = None if dt_b is None else rng.integers(0, 3, 3).astype(dt_b)
    y = fastdl.linear(x, w, b)
    assert y.dtype == expected
    check_linear(y, x, w, b, np.dtype(expected))


@pytest.mark.parametrize("arg", ["x", "w", "b"])
@pytest.mark.parametrize("bad_dtype", [np.complex128, np.float16, object])
def test_linear_unsupported_dtype_names_argument(arg, bad_dtype):
    arrays = {"x": np.ones((4, 5)), "w": np.ones((5, 3)), "b": np.ones(3)}
    arrays[arg] = arrays[arg].astype(bad_dtype)
    with pytest.raises(TypeError) as info:
        fastdl.linear(arrays["x"], arrays["w"], arrays["b"])
    assert f"'{arg}'" in str(info.value)
    assert np.dtype(bad_dtype).name in str(info.value)


def test_linear_non_native_byte_order(dtype, rng):
    x, w, b = (random_array(rng, s, dtype) for s in ((4, 5), (5, 3), (3,)))
    swapped = dtype.newbyteorder()
    y = fastdl.linear(x.astype(swapped), w.astype(swapped), b.astype(swapped))
    assert y.dtype == dtype and y.dtype.isnative
    check_linear(y, x, w, b, dtype)


# --------------------------------------------------------------------------------------
# linear_backward

@pytest.mark.parametrize("x_shape", [(5,), (7, 5), (1, 5), (2, 3, 5), (2, 3, 4, 5), (0, 5),
                                     (300, 5)], ids=str)
def test_linear_backward_against_reference(dtype, rng, x_shape):
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, (5, 6), dtype)
    dy = random_array(rng, x_shape[:-1] + (6,), dtype)
    dx, dw, db = fastdl.linear_backward(dy, x, w)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (6,)
    check_linear_backward((dx, dw, db), dy, x, w, dtype)


def test_linear_backward_many_rows(dtype, rng):
    # db sums 70000 rows: the blocked pairwise sum must stay within sqrt(rows) rounding.
    x = random_array(rng, (70000, 3), dtype)
    w = random_array(rng, (3, 300), dtype)
    dy = random_array(rng, (70000, 300), dtype)
    check_linear_backward(fastdl.linear_backward(dy, x, w), dy, x, w, dtype)


def test_linear_backward_zero_rows(dtype):
    x, w, dy = np.ones((0, 5), dtype), np.ones((5, 3), dtype), np.ones((0, 3), dtype)
    dx, dw, db = fastdl.linear_backward(dy, x, w)
    assert dx.shape == (0, 5) and dx.dtype == dtype
    assert dw.dtype == dtype and np.array_equal(dw, np.zeros((5, 3)))
    assert db.dtype == dtype and np.array_equal(db, np.zeros(3))


def test_linear_backward_zero_features(dtype, rng):
    x, dy = random_array(rng, (4, 0), dtype), random_array(rng, (4, 3), dtype)
    dx, dw, db = fastdl.linear_backward(dy, x, np.ones((0, 3), dtype))
    assert dx.shape == (4, 0) and dw.shape == (0, 3)
    assert_close(db, dy.astype(np.float64).sum(0), dtype)
    x = random_array(rng, (4, 5), dtype)
    dx, dw, db = fastdl.linear_backward(np.ones((4, 0), dtype), x, np.ones((5, 0), dtype))
    assert np.array_equal(dx, np.zeros((4, 5))) and dx.dtype == dtype
    assert dw.shape == (5, 0) and db.shape == (0,)


def test_linear_backward_need_bias_false(dtype, rng):
    x, w, dy = (random_array(rng, s, dtype) for s in ((7, 5), (5, 6), (7, 6)))
    result = fastdl.linear_backward(dy, x, w, need_bias=False)
    assert isinstance(result, tuple) and len(result) == 3
    assert result[2] is None
    check_linear_backward(result, dy, x, w, dtype, need_bias=False)


@pytest.mark.parametrize("dy_layout", LAYOUTS)
@pytest.mark.parametrize("x_layout", LAYOUTS)
@pytest.mark.parametrize("w_layout", ["C", "F", "negative"])
def test_linear_backward_layouts(dtype, rng, blas_provider, dy_layout, x_layout, w_layout):
    x = random_array(rng, (33, 17), dtype)
    w = random_array(rng, (17, 29), dtype)
    dy = random_array(rng, (33, 29), dtype)
    result = fastdl.linear_backward(layout(dy, dy_layout), layout(x, x_layout),
                                    layout(w, w_layout))
    check_linear_backward(result, dy, x, w, dtype)


@pytest.mark.parametrize("lay", LAYOUTS)
def test_linear_backward_layouts_batched(dtype, rng, lay):
    x = random_array(rng, (3, 11, 17), dtype)
    w = random_array(rng, (17, 29), dtype)
    dy = random_array(rng, (3, 11, 29), dtype)
    result = fastdl.linear_backward(layout(dy, lay), layout(x, lay), layout(w, lay))
    check_linear_backward(result, dy, x, w, dtype)


@pytest.mark.parametrize("dy_shape", [(7, 5), (6, 6), (6,), (1, 7, 6), (7, 6, 1)], ids=str)
def test_linear_backward_dy_shape_mismatch(dy_shape):
    x, w, dy = np.ones((7, 5)), np.ones((5, 6)), np.ones(dy_shape)
    before = snapshot(x, w, dy)
    with pytest.raises(ValueError) as info:
        fastdl.linear_backward(dy, x, w)
    message = str(info.value)
    assert re.search(r"\bdy\b", message) and str(dy_shape) in message and str((7, 6)) in message
    assert_unchanged(before, x, w, dy)


def test_linear_backward_x_w_mismatch():
    with pytest.raises(ValueError) as info:
        fastdl.linear_backward(np.ones((7, 6)), np.ones((7, 5)), np.ones((4, 6)))
    assert str((7, 5)) in str(info.value) and str((4, 6)) in str(info.value)
    with pytest.raises(ValueError):
        fastdl.linear_backward(np.ones((7, 6)), np.ones((7, 5)), np.ones((5, 6, 1)))


@pytest.mark.parametrize("dt_dy,dt_x,dt_w,expected", [
    (np.float32, np.float32, np.float32, np.float32),
    (np.float64, np.float32, np.float32, np.float64),
    (np.float32, np.float64, np.float32, np.float64),
    (np.float32, np.float32, np.float64, np.float64),
    (np.int64, np.float32, np.float32, np.float64),
], ids=lambda v: np.dtype(v).name)
def test_linear_backward_dtypes(rng, dt_dy, dt_x, dt_w, expected):
    x = rng.integers(-2, 3, (7, 5)).astype(dt_x)
    w = rng.integers(-2, 3, (5, 6)).astype(dt_w)
    dy = rng.integers(-2, 3, (7, 6)).astype(dt_dy)
    result = fastdl.linear_backward(dy, x, w)
    assert all(r.dtype == expected for r in result)
    check_linear_backward(result, dy, x, w, np.dtype(expected))


@pytest.mark.parametrize("arg", ["dy", "x", "w"])
def test_linear_backward_unsupported_dtype_names_argument(arg):
    arrays = {"dy": np.ones((4, 3)), "x": np.ones((4, 5)), "w": np.ones((5, 3))}
    arrays[arg] = arrays[arg].astype(np.complex64)
    with pytest.raises(TypeError) as info:
        fastdl.linear_backward(arrays["dy"], arrays["x"], arrays["w"])
    assert f"'{arg}'" in str(info.value) and "complex64" in str(info.value)


def numerical_gradient(f, x, eps=1e-6):
    """Central differences of the scalar function f at x (x perturbed in place, restored)."""
    grad = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        saved = x[idx]
        x[idx] = saved + eps
        up = f()
        x[idx] = saved - eps
        down = f()
        x[idx] = saved
        grad[idx] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("x_shape", [(4,), (3, 4), (2, 3, 4)], ids=str)
def test_linear_backward_finite_differences(rng, x_shape):
    # L = sum(linear(x, w, b) * G): dL/dY = G, so linear_backward(G, x, w) must be the
    # gradient of L. L is linear in each single variable, so central differences are
    # exact but for rounding (~|L| 1e-16 / eps ~ 1e-10 relative): 1e-6 is ample.
    x = random_array(rng, x_shape)
    w = random_array(rng, (4, 5))
    b = random_array(rng, 5)
    g = random_array(rng, x_shape[:-1] + (5,))

    def loss():
        return float(np.sum(fastdl.linear(x, w, b) * g))

    dx, dw, db = fastdl.linear_backward(g, x, w)
    for analytic, variable in ((dx, x), (dw, w), (db, b)):
        numeric = numerical_gradient(loss, variable)
        assert analytic.shape == numeric.shape
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6,
                                   atol=1e-6 * np.max(np.abs(numeric)))


# --------------------------------------------------------------------------------------
# Threads: bitwise identical results for any thread count

@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["float32", "float64"])
def test_linear_bitwise_identical_across_threads(rng, blas_provider, dt):
    x = random_array(rng, (512, 1024), dt)
    w = random_array(rng, (1024, 768), dt)
    b = random_array(rng, 768, dt)
    results = []
    for n in (1, 2, 3):
        with fastdl.threads(n):
            results.append(fastdl.linear(x, w, b))
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fastdl.get_num_threads() == 1
        results.append(fastdl.linear(x, w, b))
    for other in results[1:]:
        assert results[0].tobytes() == other.tobytes()
    check_linear(results[0], x, w, b, np.dtype(dt))


def test_linear_backward_bitwise_identical_across_threads(rng, blas_provider):
    x = random_array(rng, (512, 1024), np.float32)
    w = random_array(rng, (1024, 768), np.float32)
    dy = random_array(rng, (512, 768), np.float32)
    results = []
    for n in (1, 2, 3):
        with fastdl.threads(n):
            results.append(fastdl.linear_backward(dy, x, w))
    for other in results[1:]:
        for r0, r1 in zip(results[0], other):
            assert r0.tobytes() == r1.tobytes()
    check_linear_backward(results[0], dy, x, w, np.dtype(np.float32))


def test_linear_backward_db_bitwise_identical_many_columns(rng):
    # > PARALLEL_MIN_ELEMENTS and several 256-column panels: the bias-gradient sum is
    # parallel over column panels and must not depend on the thread count.
    x = random_array(rng, (700, 3), np.float32)
    w = random_array(rng, (3, 1000), np.float32)
    dy = random_array(rng, (700, 1000), np.float32)
    dbs = []
    for n in (1, 2, 3):
        with fastdl.threads(n):
            dbs.append(fastdl.linear_backward(dy, x, w)[2])
    assert dbs[0].tobytes() == dbs[1].tobytes() == dbs[2].tobytes()


# --------------------------------------------------------------------------------------
# BLAS's 32-bit integers (the limit lowered through the testing hook)

@pytest.mark.parametrize("lim", [5, 16])
@pytest.mark.parametrize("x_shape", [(37, 5), (3, 13, 5)], ids=str)
def test_linear_and_backward_with_split_dimensions(dtype, rng, blas_provider, blas_int_limit,
                                                   lim, x_shape):
    # All leading dimensions (5 and 4) fit the limit while the rows (37, 39) exceed it:
    # linear splits m, linear_backward splits m (dx) and k (dw = x^T dy over the rows).
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, (5, 4), dtype)
    b = random_array(rng, 4, dtype)
    dy = random_array(rng, x_shape[:-1] + (4,), dtype)
    blas_int_limit(lim)
    check_linear(fastdl.linear(x, w, b), x, w, b, dtype)
    check_linear_backward(fastdl.linear_backward(dy, x, w), dy, x, w, dtype)


def test_linear_leading_dimension_over_the_limit(rng, blas_int_limit):
    x, w, b = random_array(rng, (3, 40)), random_array(rng, (40, 2)), random_array(rng, 2)
    out = np.full((3, 2), 4.0)
    before = snapshot(x, w, b, out)
    blas_int_limit(16)
    with pytest.raises(ValueError, match="leading dimension"):
        fastdl.linear(x, w, b, out=out)
    with pytest.raises(ValueError, match="leading dimension"):
        fastdl.linear_backward(np.ones((3, 2)), x, w)
    assert_unchanged(before, x, w, b, out)


# --------------------------------------------------------------------------------------
# No needless copies (API.md: "Contiguous inputs are never copied without need")

def peak_bytes(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_linear_does_not_copy_blas_readable_inputs(rng):
    x = random_array(rng, (256, 256))
    w_pt = random_array(rng, (256, 256))          # PyTorch layout, used as a view
    b = random_array(rng, 256)
    out = np.empty((256, 256))
    assert peak_bytes(lambda: fastdl.linear(x, w_pt.T, b, out=out)) < x.nbytes // 4
    x3 = x.reshape(4, 64, 256)
    out3 = out.reshape(4, 64, 256)
    assert peak_bytes(lambda: fastdl.linear(x3, w_pt, b, out=out3)) < x.nbytes // 4


def test_linear_backward_allocates_only_its_results(rng):
    x, w, dy = (random_array(rng, (256, 256)) for _ in range(3))
    results_bytes = 2 * x.nbytes + 256 * 8
    assert peak_bytes(lambda: fastdl.linear_backward(dy, x, w.T)) < results_bytes + x.nbytes // 4
