"""fastdl.einsum: numpy.einsum semantics (API.md, "Tensor operations").

GEMM-shaped two-operand contractions go to BLAS, the rest to NumPy; either way the result
must be np.einsum's (in float64 here, the reference), with fastdl's dtype rules.
"""

import numpy as np
import pytest

import fastdl
from conftest import (LAYOUTS, assert_close, assert_unchanged, layout, random_array,
                      snapshot)
from reference import einsum_ref


def check_einsum(actual, subscripts, operands, dtype):
    """actual == einsum_ref within the GEMM tolerance, relative to einsum(|operands|)."""
    abs_ops = [np.abs(np.asarray(op, dtype=np.float64)) for op in operands]
    scale = np.einsum(subscripts, *abs_ops)
    assert_close(actual, einsum_ref(subscripts, *operands), dtype, scale=scale)


CASES = [
    ("bij,bjk->bik", [(4, 5, 6), (4, 6, 3)]),
    ("ij,jk->ik", [(5, 6), (6, 7)]),
    ("ij,jk", [(5, 6), (6, 7)]),                    # implicit output
    ("ij,kj->ik", [(5, 6), (7, 6)]),                # b transposed
    ("ji,jk->ik", [(6, 5), (6, 7)]),                # a transposed
    ("bhqd,bhkd->bhqk", [(2, 3, 5, 4), (2, 3, 6, 4)]),  # attention scores
    ("bhqk,bhkd->bhqd", [(2, 3, 5, 6), (2, 3, 6, 4)]),
    ("...ij,...jk->...ik", [(2, 3, 4, 5), (2, 3, 5, 6)]),
    ("...ij,...jk->...ik", [(5, 3, 4), (4, 2)]),      # ellipses of different lengths
    ("...ij,...jk->...ik", [(1, 5, 3, 4), (7, 1, 4, 2)]),  # broadcast ellipsis dims
    ("...ij,jk", [(2, 3, 4), (4, 5)]),
    ("i,i->", [(7,), (7,)]),                          # dot
    ("i,i", [(7,), (7,)]),
    ("i,j->ij", [(4,), (5,)]),                        # outer
    ("i,j->ji", [(4,), (5,)]),
    ("ij,jk->ki", [(5, 6), (6, 7)]),                  # permuted output
    ("ij,ij->ij", [(5, 6), (5, 6)]),                  # elementwise (all batch)
    ("ij,ij->", [(5, 6), (5, 6)]),                    # full contraction
    ("ij,ij->i", [(5, 6), (5, 6)]),                   # row-wise dot
    ("ikl,klj->ij", [(3, 4, 5), (4, 5, 6)]),          # two contracted indices
    ("abk,kc->abc", [(2, 3, 4), (4, 5)]),             # two M indices
    ("ak,kbc->abc", [(3, 4), (4, 2, 5)]),             # two N indices
    ("bij,jk->bik", [(4, 5, 6), (6, 3)]),
    ("ij,j->i", [(5, 6), (6,)]),                      # matrix-vector
    ("j,jk->k", [(6,), (6, 7)]),
    ("Ab,bC", [(3, 4), (4, 5)]),                      # upper-case labels, implicit
    ("ba,cb", [(4, 3), (5, 4)]),                      # implicit output is sorted: 'ac'
    ("ij,jk->ik", [(0, 6), (6, 7)]),                  # empty
    ("ij,jk->ik", [(5, 0), (0, 7)]),                  # empty contraction: zeros
    ("bij,bjk->bik", [(0, 5, 6), (0, 6, 3)]),         # empty batch
    ("ij->ji", [(5, 6)]),                             # one operand: NumPy
    ("ii->i", [(5, 5)]),                              # diagonal: NumPy
    ("ii", [(5, 5)]),                                 # trace: NumPy
    ("ij,jk,kl->il", [(3, 4), (4, 5), (5, 6)]),       # three operands
    ("ii,ij->j", [(4, 4), (4, 5)]),                   # repeated index in one operand
    ("ij,jk->i", [(3, 4), (4, 5)]),                   # index summed within b alone
]


@pytest.mark.parametrize("subscripts,shapes", CASES, ids=lambda v: str(v))
def test_einsum_against_reference(dtype, rng, subscripts, shapes):
    ops = [random_array(rng, s, dtype) for s in shapes]
    result = fastdl.einsum(subscripts, *ops)
    expected = np.einsum(subscripts, *ops)
    # the same kind of object as np.einsum: a NumPy scalar for a full contraction
    assert type(result) is type(expected)
    check_einsum(result, subscripts, ops, dtype)


@pytest.mark.parametrize("subscripts", ["i,i->", "i,i", "ij,ij->", "ij,ij"])
def test_full_contraction_returns_a_numpy_scalar(dtype, rng, subscripts):
    # API.md: "A reduction to a single value returns a NumPy scalar of the result dtype".
    shape = (7,) if subscripts.startswith("i,") else (3, 4)
    a, b = random_array(rng, shape, dtype), random_array(rng, shape, dtype)
    result = fastdl.einsum(subscripts, a, b)
    assert type(result) is dtype.type, f"got {type(result).__name__}"


@pytest.mark.parametrize("lay_a", LAYOUTS)
@pytest.mark.parametrize("lay_b", LAYOUTS)
def test_einsum_layouts(dtype, rng, lay_a, lay_b):
    a, b = random_array(rng, (3, 9, 7), dtype), random_array(rng, (3, 5, 7), dtype)
    subscripts = "bij,bkj->bik"
    check_einsum(fastdl.einsum(subscripts, layout(a, lay_a), layout(b, lay_b)),
                 subscripts, [a, b], dtype)


@pytest.mark.parametrize("subscripts,shapes,out_layout", [
    ("bij,bjk->bik", [(4, 5, 6), (4, 6, 3)], "C"),
    ("bij,bjk->bik", [(4, 5, 6), (4, 6, 3)], "F"),
    ("bij,bjk->bik", [(4, 5, 6), (4, 6, 3)], "strided"),
    ("abk,kc->abc", [(2, 3, 4), (4, 5)], "C"),
    ("abk,kc->abc", [(2, 3, 4), (4, 5)], "strided"),      # out cannot fold its (a, b) dims
    ("ij,jk->ki", [(5, 6), (6, 7)], "C"),                 # permuted output
    ("i,i->", [(7,), (7,)], "C"),
    ("ij->ji", [(5, 6)], "C"),                            # NumPy path
    ("ij,jk,kl->il", [(3, 4), (4, 5), (5, 6)], "negative"),
])
def test_einsum_out(dtype, rng, subscripts, shapes, out_layout):
    ops = [random_array(rng, s, dtype) for s in shapes]
    out = layout(np.full(np.einsum(subscripts, *ops).shape, np.nan, dtype), out_layout)
    assert fastdl.einsum(subscripts, *ops, out=out) is out
    check_einsum(out, subscripts, ops, dtype)


@pytest.mark.parametrize("subscripts,shapes", [
    ("bij,bjk->bik", [(4, 5, 6), (4, 6, 3)]),
    ("ij,jk->ki", [(5, 6), (6, 7)]),
    ("ij->ji", [(5, 6)]),
    ("ij,jk,kl->il", [(3, 4), (4, 5), (5, 6)]),
])
def test_einsum_out_wrong_shape(rng, subscripts, shapes):
    ops = [random_array(rng, s) for s in shapes]
    good_shape = np.einsum(subscripts, *ops).shape
    out = np.full(good_shape + (2,), 3.0)
    before = snapshot(*ops, out)
    with pytest.raises(ValueError):
        fastdl.einsum(subscripts, *ops, out=out)
    assert_unchanged(before, *ops, out)


def test_einsum_out_wrong_dtype_and_type(rng):
    a, b = random_array(rng, (4, 5)), random_array(rng, (5, 3))
    out32 = np.full((4, 3), 3.0, np.float32)
    with pytest.raises(TypeError, match="out"):
        fastdl.einsum("ij,jk->ik", a, b, out=out32)
    assert np.all(out32 == 3.0)
    with pytest.raises(TypeError, match="out"):
        fastdl.einsum("ij,jk->ik", a, b, out=[[0.0] * 3] * 4)
    read_only = np.zeros((4, 3))
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        fastdl.einsum("ij,jk->ik", a, b, out=read_only)
    assert np.all(read_only == 0)


def test_einsum_out_aliases_an_operand(dtype, rng):
    a, b = random_array(rng, (6, 6), dtype), random_array(rng, (6, 6), dtype)
    a0 = a.copy()
    assert fastdl.einsum("ij,jk->ik", a, b, out=a) is a
    check_einsum(a, "ij,jk->ik", [a0, b], dtype)


@pytest.mark.parametrize("subscripts,shapes", [("ij,jk->ik", [(4, 5), (5, 3)]),
                                               ("i,j->ij", [(4,), (3,)]),
                                               ("ij->ji", [(4, 5)]),
                                               ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)])])
def test_einsum_int_operands_give_float64(rng, subscripts, shapes):
    ops = [rng.integers(-3, 4, s) for s in shapes]
    result = fastdl.einsum(subscripts, *ops)
    assert result.dtype == np.float64
    check_einsum(result, subscripts, ops, np.dtype(np.float64))


def test_einsum_bool_operands_give_float64():
    a = np.array([[True, False], [True, True]])
    result = fastdl.einsum("ij,jk->ik", a, a)
    assert result.dtype == np.float64
    assert np.array_equal(result, [[1.0, 0.0], [2.0, 1.0]])


@pytest.mark.parametrize("subscripts,shapes", [("ij,jk->ik", [(4, 5), (5, 3)]),
                                               ("ij->ji", [(4, 5)]),
                                               ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)])])
def test_einsum_float32_stays_float32_and_mixed_promotes(rng, subscripts, shapes):
    ops32 = [random_array(rng, s, np.float32) for s in shapes]
    result = fastdl.einsum(subscripts, *ops32)
    assert result.dtype == np.float32
    check_einsum(result, subscripts, ops32, np.dtype(np.float32))
    mixed = [ops32[0].astype(np.float64)] + ops32[1:]
    result = fastdl.einsum(subscripts, *mixed)
    assert result.dtype == np.float64


@pytest.mark.parametrize("position", [0, 1])
def test_einsum_unsupported_dtype(position):
    ops = [np.ones((3, 3)), np.ones((3, 3))]
    ops[position] = ops[position].astype(np.complex128)
    with pytest.raises(TypeError) as info:
        fastdl.einsum("ij,jk->ik", *ops)
    assert "complex128" in str(info.value) and f"operands[{position}]" in str(info.value)


def test_einsum_shape_mismatch_raises_value_error():
    with pytest.raises(ValueError):
        fastdl.einsum("ij,jk->ik", np.ones((3, 4)), np.ones((5, 2)))
    with pytest.raises(ValueError):
        fastdl.einsum("bij,bjk->bik", np.ones((2, 3, 4)), np.ones((3, 4, 2)))
    with pytest.raises(ValueError):
        fastdl.einsum("ij,jk->ik", np.ones((3, 4, 1)), np.ones((4, 2)))


def test_einsum_subscripts_must_be_a_string():
    with pytest.raises(TypeError):
        fastdl.einsum(None, np.ones(3), np.ones(3))


# --------------------------------------------------------------------------------------
# Property-based: random two-operand contractions (most of them GEMM-shaped) vs np.einsum

from hypothesis import given, settings, strategies as st  # noqa: E402


@st.composite
def contractions(draw):
    letters = draw(st.lists(st.sampled_from("abcdeXY"), min_size=1, max_size=5, unique=True))
    sizes = {c: draw(st.integers(0, 4)) for c in letters}
    term_a = "".join(draw(st.permutations(letters))[:draw(st.integers(0, len(letters)))])
    term_b = "".join(draw(st.permutations(letters))[:draw(st.integers(0, len(letters)))])
    used = sorted(set(term_a) | set(term_b))
    if draw(st.booleans()):
        out = "".join(draw(st.permutations(used))[:draw(st.integers(0, len(used)))])
        subscripts = f"{term_a},{term_b}->{out}"
    else:
        subscripts = f"{term_a},{term_b}"
    return subscripts, tuple(sizes[c] for c in term_a), tuple(sizes[c] for c in term_b)


@settings(max_examples=60, deadline=None)
@given(case=contractions(), dt=st.sampled_from(["float32", "float64"]),
       seed=st.integers(0, 2**32 - 1))
def test_einsum_property(case, dt, seed):
    subscripts, shape_a, shape_b = case
    rng = np.random.default_rng(seed)
    a, b = random_array(rng, shape_a, dt), random_array(rng, shape_b, dt)
    result = fastdl.einsum(subscripts, a, b)
    # (whether a full contraction gives a NumPy scalar is test_full_contraction_...'s job)
    check_einsum(np.asarray(result), subscripts, [a, b], np.dtype(dt))
