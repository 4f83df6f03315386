"""fastdl.matmul: numpy.matmul semantics (API.md, "Tensor operations"), BLAS-backed."""

import itertools
import tracemalloc

import numpy as np
import pytest
import threadpoolctl
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import fastdl
from conftest import (requires_openmp, LAYOUTS, WRONG_OUT_KINDS, assert_close, assert_unchanged, gemm_scale,
                      layout, make_wrong_out, random_array, snapshot)
from reference import matmul_ref


def check_matmul(actual, a, b, dtype):
    """actual == a @ b within the GEMM tolerance (relative to |a| @ |b|)."""
    assert_close(actual, matmul_ref(a, b), dtype, scale=gemm_scale(a, b))


# --------------------------------------------------------------------------------------
# Values against the reference

@pytest.mark.parametrize("n", [0, 1, 7, 33, 257])
def test_vector_dot_vector_is_a_numpy_scalar(dtype, rng, n):
    a, b = random_array(rng, n, dtype), random_array(rng, n, dtype)
    result = fastdl.matmul(a, b)
    # np.matmul of two 1-D arrays gives a NumPy scalar of the result dtype, not a 0-d array.
    assert type(result) is dtype.type
    check_matmul(result, a, b, dtype)


SHAPE_PAIRS = [
    ((5,), (5, 3)),             # 1-D @ 2-D: a row vector, dimension removed
    ((4, 5), (5,)),             # 2-D @ 1-D: a column vector, dimension removed
    ((4, 5), (5, 3)),           # 2-D
    ((6, 4, 5), (6, 5, 3)),     # batched 3-D
    ((2, 3, 4, 5), (2, 3, 5, 6)),  # batched 4-D
    ((1, 5, 3, 4), (7, 1, 4, 2)),  # broadcast batch dims both ways
    ((5, 3, 4), (4, 2)),        # batch @ one matrix
    ((4, 2), (5, 2, 3)),        # one matrix @ batch
    ((4,), (6, 4, 2)),          # 1-D @ batch
    ((6, 4, 2), (2,)),          # batch @ 1-D
    ((2, 3, 4, 5), (5,)),       # 4-D @ 1-D
    ((3, 1, 4, 5), (2, 5, 6)),  # different batch ranks, broadcasting a 1
    ((1, 1, 4, 5), (5, 3)),     # unit batch dims kept in the result
    ((0, 3, 4), (4, 2)),        # empty batch
    ((2, 0, 3, 4), (1, 4, 5)),  # empty broadcast batch
    ((3, 0, 4), (3, 4, 2)),     # m = 0 in a batch
    ((3, 4, 0), (3, 0, 2)),     # k = 0 in a batch: zeros
]


@pytest.mark.parametrize("shape_a,shape_b", SHAPE_PAIRS, ids=str)
def test_shapes_against_reference(dtype, rng, shape_a, shape_b):
    a, b = random_array(rng, shape_a, dtype), random_array(rng, shape_b, dtype)
    result = fastdl.matmul(a, b)
    assert isinstance(result, np.ndarray)
    assert result.shape == np.matmul(a, b).shape
    check_matmul(result, a, b, dtype)


SIZES = [0, 1, 7, 33, 257]


@pytest.mark.parametrize("m,k,n", list(itertools.product(SIZES, SIZES, SIZES)))
def test_sizes(dtype, rng, m, k, n):
    a, b = random_array(rng, (m, k), dtype), random_array(rng, (k, n), dtype)
    check_matmul(fastdl.matmul(a, b), a, b, dtype)


@pytest.mark.parametrize("shape_a,shape_b", [((4, 0), (0, 3)), ((2, 5, 0), (0, 3)),
                                             ((0,), (0,)), ((3, 0), (0,))], ids=str)
def test_k_zero_gives_exact_zeros(dtype, shape_a, shape_b):
    a, b = np.ones(shape_a, dtype), np.ones(shape_b, dtype)
    result = fastdl.matmul(a, b)
    assert np.asarray(result).dtype == dtype
    assert np.shape(result) == np.matmul(a, b).shape
    assert np.all(np.asarray(result) == 0)
    if result.ndim >= 1:
        out = np.full(result.shape, np.nan, dtype)   # stale contents must be overwritten
        assert fastdl.matmul(a, b, out=out) is out
        assert np.all(out == 0)


@pytest.mark.parametrize("layout_a", LAYOUTS)
@pytest.mark.parametrize("layout_b", LAYOUTS)
def test_layouts_2d(dtype, rng, blas_provider, layout_a, layout_b):
    a = random_array(rng, (33, 17), dtype)
    b = random_array(rng, (17, 29), dtype)
    result = fastdl.matmul(layout(a, layout_a), layout(b, layout_b))
    check_matmul(result, a, b, dtype)


@pytest.mark.parametrize("layout_a", LAYOUTS)
@pytest.mark.parametrize("layout_b", LAYOUTS)
def test_layouts_batched(dtype, rng, layout_a, layout_b):
    a = random_array(rng, (3, 9, 7), dtype)
    b = random_array(rng, (3, 7, 5), dtype)
    check_matmul(fastdl.matmul(layout(a, layout_a), layout(b, layout_b)), a, b, dtype)
    # one matrix for the whole batch (the "fold into one tall GEMM" path)
    b2 = b[0]
    check_matmul(fastdl.matmul(layout(a, layout_a), layout(b2, layout_b)), a, b2, dtype)


@pytest.mark.parametrize("layout_v", ["C", "strided", "negative"])
@pytest.mark.parametrize("layout_m", LAYOUTS)
def test_layouts_vector_operands(dtype, rng, layout_v, layout_m):
    v = random_array(rng, 13, dtype)
    mat_right = random_array(rng, (13, 6), dtype)
    mat_left = random_array(rng, (6, 13), dtype)
    check_matmul(fastdl.matmul(layout(v, layout_v), layout(mat_right, layout_m)),
                 v, mat_right, dtype)
    check_matmul(fastdl.matmul(layout(mat_left, layout_m), layout(v, layout_v)),
                 mat_left, v, dtype)
    result = fastdl.matmul(layout(v, layout_v), layout(v, layout_v))
    assert type(result) is dtype.type
    check_matmul(result, v, v, dtype)


def test_broadcast_and_zero_stride_views(dtype, rng):
    # np.broadcast_to gives zero strides (and read-only arrays): valid inputs.
    row = random_array(rng, (1, 7), dtype)
    a = np.broadcast_to(row, (5, 7))
    b = np.broadcast_to(random_array(rng, (7, 3), dtype), (4, 7, 3))
    check_matmul(fastdl.matmul(a, b), a, b, dtype)
    col = np.broadcast_to(random_array(rng, (7, 1), dtype), (7, 6))
    check_matmul(fastdl.matmul(a, col), a, col, dtype)


def test_unaligned_operands(dtype, rng):
    # Views at an odd byte offset are valid NumPy arrays ("any memory layout").
    a = random_array(rng, (9, 6), dtype)
    b = random_array(rng, (6, 5), dtype)
    ua, ub = unaligned_copy(a), unaligned_copy(b)
    assert not ua.flags.aligned and not ub.flags.aligned
    check_matmul(fastdl.matmul(ua, ub), a, b, dtype)


def unaligned_copy(x):
    buf = bytearray(x.nbytes + 1)
    view = np.frombuffer(buf, dtype=x.dtype, offset=1, count=x.size).reshape(x.shape)
    view[...] = x
    return view


# --------------------------------------------------------------------------------------
# out=

@pytest.mark.parametrize("shape_a,shape_b", [((4, 5), (5, 3)), ((6, 4, 5), (6, 5, 3)),
                                             ((5, 3, 4), (4, 2)), ((1, 5, 3, 4), (7, 1, 4, 2)),
                                             ((5,), (5, 3)), ((4, 5), (5,)), ((5,), (5,))],
                         ids=str)
def test_out_returns_out(dtype, rng, shape_a, shape_b):
    a, b = random_array(rng, shape_a, dtype), random_array(rng, shape_b, dtype)
    out = np.full(np.matmul(a, b).shape, np.nan, dtype)
    result = fastdl.matmul(a, b, out=out)
    assert result is out
    check_matmul(out, a, b, dtype)


@pytest.mark.parametrize("out_layout", ["F", "strided", "negative", "transposed-view"])
@pytest.mark.parametrize("shape_a,shape_b", [((33, 17), (17, 29)), ((3, 9, 7), (3, 7, 5)),
                                             ((5, 9, 7), (7, 5))], ids=str)
def test_out_in_other_layouts(dtype, rng, out_layout, shape_a, shape_b):
    a, b = random_array(rng, shape_a, dtype), random_array(rng, shape_b, dtype)
    out = layout(np.full(np.matmul(a, b).shape, np.nan, dtype), out_layout)
    base = out.base
    result = fastdl.matmul(a, b, out=out)
    assert result is out
    check_matmul(out, a, b, dtype)
    if out_layout == "strided":
        # nothing written outside the view: the NaN holes of the big buffer stay NaN
        holes = np.ones(base.shape, bool)
        holes[tuple(slice(1, None, 2) for _ in base.shape)] = False
        assert np.isnan(base[holes]).all()


@pytest.mark.parametrize("which", ["a", "b"])
def test_out_aliases_an_input(dtype, rng, which):
    a = random_array(rng, (40, 40), dtype)
    b = random_array(rng, (40, 40), dtype)
    a0, b0 = a.copy(), b.copy()
    out = a if which == "a" else b
    result = fastdl.matmul(a, b, out=out)
    assert result is out
    check_matmul(out, a0, b0, dtype)


def test_out_partially_overlaps_an_input(dtype, rng):
    # out shifted one column against a inside the same buffer
    buf = random_array(rng, (20, 21), dtype)
    a, out = buf[:, :20], buf[:, 1:]
    b = random_array(rng, (20, 20), dtype)
    a0 = a.copy()
    assert fastdl.matmul(a, b, out=out) is out
    check_matmul(out, a0, b, dtype)


def test_out_aliases_batched_input_transposed(dtype, rng):
    a = random_array(rng, (4, 12, 12), dtype)
    b = random_array(rng, (4, 12, 12), dtype)
    a0 = a.copy()
    out = a.transpose(0, 2, 1)
    assert fastdl.matmul(a, b, out=out) is out
    check_matmul(out, a0, b, dtype)


@pytest.mark.parametrize("kind", WRONG_OUT_KINDS)
def test_wrong_out_raises_and_changes_nothing(dtype, rng, kind):
    out, exc = make_wrong_out(kind, dtype, (4, 3))
    a, b = random_array(rng, (4, 5), dtype), random_array(rng, (5, 3), dtype)
    is_array = isinstance(out, np.ndarray)
    before = snapshot(a, b, out if is_array else None)
    list_before = None if is_array else [row[:] for row in out]
    with pytest.raises(exc, match="out"):
        fastdl.matmul(a, b, out=out)
    assert_unchanged(before, a, b, out if is_array else None)
    if list_before is not None:
        assert out == list_before


def test_out_of_float32_for_mixed_inputs_is_a_dtype_error(rng):
    a = random_array(rng, (4, 5), np.float32)
    b = random_array(rng, (5, 3), np.float64)
    out = np.full((4, 3), 5, np.float32)
    with pytest.raises(TypeError, match="float64"):
        fastdl.matmul(a, b, out=out)
    assert np.all(out == 5)


# --------------------------------------------------------------------------------------
# dtype rules (API.md, "General rules")

@pytest.mark.parametrize("dt_a,dt_b,expected", [
    (np.float32, np.float32, np.float32),
    (np.float64, np.float64, np.float64),
    (np.float32, np.float64, np.float64),
    (np.float64, np.float32, np.float64),
    (np.int64, np.int64, np.float64),
    (np.int32, np.float32, np.float64),
    (np.float32, np.int8, np.float64),
    (np.uint8, np.float64, np.float64),
    (np.bool_, np.bool_, np.float64),
    (np.bool_, np.float32, np.float64),
], ids=lambda v: np.dtype(v).name)
def test_dtype_promotion(rng, dt_a, dt_b, expected):
    a = (rng.integers(0, 3, (4, 5))).astype(dt_a)
    b = (rng.integers(0, 3, (5, 3))).astype(dt_b)
    result = fastdl.matmul(a, b)
    assert result.dtype == expected
    check_matmul(result, a, b, expected)


def test_array_likes(rng):
    a = [[1, 2, 3], [4, 5, 6]]
    b = ((1.5, 2.0), (0.0, -1.0), (2.0, 3.0))
    result = fastdl.matmul(a, b)
    assert result.dtype == np.float64
    check_matmul(result, a, b, np.float64)
    assert type(fastdl.matmul([1, 2], [3, 4])) is np.float64


BAD_ARRAYS = [
    pytest.param(lambda s: np.ones(s, np.complex128), "complex128", id="complex128"),
    pytest.param(lambda s: np.ones(s, np.complex64), "complex64", id="complex64"),
    pytest.param(lambda s: np.ones(s, np.float16), "float16", id="float16"),
    pytest.param(lambda s: np.ones(s, object), "object", id="object"),
    pytest.param(lambda s: np.full(s, "x"), "<U1", id="str"),
    pytest.param(lambda s: np.full(s, b"x"), "S1", id="bytes"),
    pytest.param(lambda s: np.zeros(s, "datetime64[s]"), "datetime64", id="datetime64"),
]


@pytest.mark.parametrize("make,dtname", BAD_ARRAYS)
@pytest.mark.parametrize("side", ["a", "b"])
def test_unsupported_dtypes_raise_type_error_naming_the_argument(make, dtname, side):
    good = np.ones((3, 3))
    bad = make((3, 3))
    args = (bad, good) if side == "a" else (good, bad)
    with pytest.raises(TypeError) as info:
        fastdl.matmul(*args)
    message = str(info.value)
    assert f"'{side}'" in message
    assert dtname in message


def test_longdouble_raises_type_error():
    if np.dtype(np.longdouble) == np.dtype(np.float64):
        pytest.skip("long double is double on this platform")
    with pytest.raises(TypeError, match="'b'"):
        fastdl.matmul(np.ones((2, 2)), np.ones((2, 2), np.longdouble))


@pytest.mark.parametrize("side", ["a", "b", "both"])
def test_non_native_byte_order(dtype, rng, side):
    a, b = random_array(rng, (6, 5), dtype), random_array(rng, (5, 4), dtype)
    swapped = dtype.newbyteorder()
    a_in = a.astype(swapped) if side in ("a", "both") else a
    b_in = b.astype(swapped) if side in ("b", "both") else b
    result = fastdl.matmul(a_in, b_in)
    assert result.dtype == dtype and result.dtype.isnative
    check_matmul(result, a, b, dtype)


# --------------------------------------------------------------------------------------
# Shape errors

@pytest.mark.parametrize("shape_a,shape_b", [((3, 4), (5, 2)), ((4,), (5,)), ((3, 4), (5,)),
                                             ((4,), (5, 2)), ((2, 3, 4), (2, 5, 6)),
                                             ((3, 0), (1, 2))], ids=str)
def test_core_dimension_mismatch(shape_a, shape_b):
    a, b = np.ones(shape_a), np.ones(shape_b)
    before = snapshot(a, b)
    with pytest.raises(ValueError) as info:
        fastdl.matmul(a, b)
    assert str(shape_a) in str(info.value) and str(shape_b) in str(info.value)
    assert_unchanged(before, a, b)


@pytest.mark.parametrize("shape_a,shape_b", [((2, 3, 4), (3, 4, 5)), ((4, 2, 3, 4), (3, 4, 5)),
                                             ((2, 1, 3, 4), (3, 2, 4, 5))], ids=str)
def test_batch_dims_that_do_not_broadcast(shape_a, shape_b):
    a, b = np.ones(shape_a), np.ones(shape_b)
    out = np.full((2, 3, 5), 3.0)
    before = snapshot(a, b, out)
    with pytest.raises(ValueError) as info:
        fastdl.matmul(a, b, out=out)
    assert str(shape_a) in str(info.value) and str(shape_b) in str(info.value)
    assert_unchanged(before, a, b, out)


@pytest.mark.parametrize("a,b", [(np.float64(2.0), np.ones(3)), (np.ones(3), 3.0),
                                 (2.0, 3.0), (np.array(1.0), np.ones((1, 1)))],
                         ids=["scalar@1d", "1d@float", "float@float", "0d@2d"])
def test_zero_dimensional_operands(a, b):
    with pytest.raises(ValueError):
        fastdl.matmul(a, b)


def test_failed_call_leaves_out_unchanged_on_shape_error(rng):
    a, b = random_array(rng, (4, 5)), random_array(rng, (6, 3))
    out = random_array(rng, (4, 3))
    before = snapshot(a, b, out)
    with pytest.raises(ValueError):
        fastdl.matmul(a, b, out=out)
    assert_unchanged(before, a, b, out)


# --------------------------------------------------------------------------------------
# Threads: bitwise identical results whatever the count (API.md, "General rules")

DETERMINISM_CASES = [
    pytest.param((300, 500), (500, 400), np.float64, id="300x500@500x400-f64"),
    pytest.param((300, 500), (500, 400), np.float32, id="300x500@500x400-f32"),
    pytest.param((1000, 1000), (1000, 1000), np.float32, id="1000^3-f32"),
    pytest.param((64, 128, 128), (128, 128), np.float32, id="64x128^2@128^2-f32"),
    pytest.param((64, 128, 128), (64, 128, 128), np.float64, id="64x128^2@64x128^2-f64"),
    pytest.param((2, 257, 300), (2, 300, 129), np.float32, id="odd-batched-f32"),
]


@requires_openmp
@pytest.mark.parametrize("shape_a,shape_b,dt", DETERMINISM_CASES)
def test_bitwise_identical_for_1_and_2_threads(rng, blas_provider, shape_a, shape_b, dt):
    a, b = random_array(rng, shape_a, dt), random_array(rng, shape_b, dt)
    with fastdl.threads(1):
        assert fastdl.get_num_threads() == 1
        one = fastdl.matmul(a, b)
    with fastdl.threads(2):
        assert fastdl.get_num_threads() == 2
        two = fastdl.matmul(a, b)
    with fastdl.threads(3):   # an uneven split of the tiles
        three = fastdl.matmul(a, b)
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fastdl.get_num_threads() == 1
        limited = fastdl.matmul(a, b)
    assert one.tobytes() == two.tobytes()
    assert one.tobytes() == three.tobytes()
    assert one.tobytes() == limited.tobytes()
    # An F-ordered out= is computed as the transposed product (another summation order,
    # so not bitwise equal to the C result) but must also be identical across threads.
    outs = []
    for n in (1, 2):
        out_f = np.empty(one.shape, dt, order="F")
        with fastdl.threads(n):
            fastdl.matmul(a, b, out=out_f)
        outs.append(out_f)
    assert outs[0].tobytes(order="A") == outs[1].tobytes(order="A")
    check_matmul(one, a, b, np.dtype(dt))


# --------------------------------------------------------------------------------------
# BLAS's 32-bit integers: dimensions beyond the limit are split, leading dimensions are not

def split_cases(lim):
    """Operands whose every leading dimension is <= lim but one of m, k, n is > lim.

    A BLAS matrix's leading dimension is at least its row length (row-major) or its
    column length (column-major), so with all ld <= lim only one of m, k, n at a time can
    exceed the limit: m (row-major a and out), k (column-major a, row-major b), or n
    (column-major b and out). small == lim also probes the ld == limit boundary.
    """
    small, big = lim, 2 * lim + 3   # big: two full chunks and a remainder
    return {
        "split-m": ((big, small), "C", (small, small), "C", "C"),
        "split-k": ((small, big), "F", (big, small), "C", "C"),
        "split-n": ((small, small), "C", (small, big), "F", "F"),
        "split-m-batched-fold": ((3, big, small), "C", (small, small), "C", "C"),
        "split-m-batched": ((3, big, small), "C", (3, small, small), "C", "C"),
    }


@pytest.mark.parametrize("lim", [5, 16])
@pytest.mark.parametrize("case", ["split-m", "split-k", "split-n", "split-m-batched-fold",
                                  "split-m-batched"])
def test_blas_dimension_splitting(dtype, rng, blas_provider, blas_int_limit, lim, case):
    shape_a, lay_a, shape_b, lay_b, lay_out = split_cases(lim)[case]
    a, b = random_array(rng, shape_a, dtype), random_array(rng, shape_b, dtype)
    expected_shape = np.matmul(a, b).shape
    out = np.full(expected_shape, np.nan, dtype, order="F" if lay_out == "F" else "C")
    blas_int_limit(lim)
    result = fastdl.matmul(layout(a, lay_a), layout(b, lay_b), out=out)
    assert result is out
    check_matmul(out, a, b, dtype)


def test_blas_limit_hook_returns_previous_and_rejects_bad_limits(blas_int_limit):
    previous = blas_int_limit(16)
    assert previous in (2**31 - 1, 2**63 - 1)   # LP64 or ILP64 BLAS
    assert blas_int_limit(5) == 16
    with pytest.raises(ValueError):
        blas_int_limit(0)


@pytest.mark.parametrize("operand", ["a", "b"])
def test_leading_dimension_over_the_limit_raises(rng, blas_provider, blas_int_limit, operand):
    # A contiguous (3, 40) a has ld 40: no split of m, n or k shortens a row, so BLAS's
    # 32-bit lda cannot express it; fastdl raises instead of passing a truncated int.
    if operand == "a":
        a, b = random_array(rng, (3, 40)), random_array(rng, (40, 2))
    else:
        a, b = random_array(rng, (3, 2)), random_array(rng, (2, 40))
    out = np.full(np.matmul(a, b).shape, 9.0)
    before = snapshot(a, b, out)
    blas_int_limit(16)
    with pytest.raises(ValueError, match="leading dimension"):
        fastdl.matmul(a, b, out=out)
    assert_unchanged(before, a, b, out)
    # The same values with short leading dimensions (Fortran order where a row is long)
    # are computed by splitting k (a) or n (b and out) instead.
    if operand == "a":
        result = fastdl.matmul(np.asfortranarray(a), b)
    else:
        result = fastdl.matmul(a, np.asfortranarray(b), out=np.empty((3, 40), order="F"))
    check_matmul(result, a, b, np.dtype(np.float64))


@pytest.mark.parametrize("shape_a,shape_b", [((0, 3, 4), (4, 2)), ((2, 0, 3, 4), (1, 4, 5)),
                                             ((0,), (0, 0, 2))], ids=str)
def test_empty_batch_under_a_small_int_limit(dtype, blas_int_limit, shape_a, shape_b):
    # Every matrix here has leading dimension <= 5, so a limit of 16 must not matter. (NumPy
    # gives empty arrays zero strides; a BLAS description left unset for them shows up as a
    # nonsense leading dimension once the limit is low.)
    a, b = np.ones(shape_a, dtype), np.ones(shape_b, dtype)
    blas_int_limit(16)
    result = fastdl.matmul(a, b)
    assert result.shape == np.matmul(a, b).shape and result.dtype == dtype


# --------------------------------------------------------------------------------------
# "Contiguous inputs are never copied without need" (API.md): measured with tracemalloc,
# which sees NumPy's data allocations.

def peak_bytes(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("lay_a,lay_b,lay_out", [("C", "C", "C"), ("F", "C", "C"),
                                                 ("transposed-view", "F", "C"),
                                                 ("C", "C", "F")])
def test_blas_readable_operands_are_not_copied(rng, lay_a, lay_b, lay_out):
    a = layout(random_array(rng, (256, 256)), lay_a)
    b = layout(random_array(rng, (256, 256)), lay_b)
    out = layout(np.empty((256, 256)), lay_out)
    one_matrix = 256 * 256 * 8
    assert peak_bytes(lambda: fastdl.matmul(a, b, out=out)) < one_matrix // 4
    # without out=, only the result is allocated
    assert peak_bytes(lambda: fastdl.matmul(a, b)) < one_matrix + one_matrix // 4


def test_batched_operands_are_not_copied(rng):
    a = random_array(rng, (16, 64, 64))
    b = random_array(rng, (16, 64, 64)).transpose(0, 2, 1)
    out = np.empty((16, 64, 64))
    assert peak_bytes(lambda: fastdl.matmul(a, b, out=out)) < a.nbytes // 4


# --------------------------------------------------------------------------------------
# Property-based: random broadcastable batch shapes and core sizes in [0, 9]

@settings(max_examples=60, deadline=None)
@given(shapes=mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=3,
                                            min_side=0, max_side=9),
       layouts=st.tuples(st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS)),
       seed=st.integers(0, 2**32 - 1))
def test_matmul_property(shapes, layouts, seed):
    rng = np.random.default_rng(seed)
    shape_a, shape_b = shapes.input_shapes
    a, b = random_array(rng, shape_a), random_array(rng, shape_b)
    result = fastdl.matmul(layout(a, layouts[0]), layout(b, layouts[1]))
    expected = np.matmul(a, b)
    assert np.shape(result) == expected.shape == shapes.result_shape
    if expected.ndim == 0:
        assert type(result) is np.float64
    check_matmul(result, a, b, np.dtype(np.float64))
