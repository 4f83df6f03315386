"""scaled_dot_product_attention and its backward: the materialised float64 reference, causal
and masked, L != S, E != Ev, sizes around the tile sizes, broadcasting, fully masked rows,
large logits, layouts, threads, finite-difference gradients, bad input, and PyTorch."""

import numpy as np
import pytest

from conftest import assert_close, layout, requires_openmp, snapshot, assert_unchanged
import fastdl
from fastdl._ext import _attention
from fastdl._ext._attention import (merge_heads, scaled_dot_product_attention as sdpa,
                                    scaled_dot_product_attention_backward as sdpa_bwd,
                                    split_heads)
from reference_attention import sdpa_backward_ref, sdpa_ref


@pytest.fixture
def small_tiles():
    """Tiles of 8 queries x 16 keys, so that small inputs cross many tile borders."""
    old = _attention.BLOCK_Q, _attention.BLOCK_K
    _attention.BLOCK_Q, _attention.BLOCK_K = 8, 16
    yield
    _attention.BLOCK_Q, _attention.BLOCK_K = old


def _qkv(rng, dtype, batch, L, S, E, Ev, scale=1.0):
    q = (scale * rng.standard_normal(batch + (L, E))).astype(dtype)
    k = (scale * rng.standard_normal(batch + (S, E))).astype(dtype)
    v = rng.standard_normal(batch + (S, Ev)).astype(dtype)
    return q, k, v


def _check(q, k, v, dtype, **kw):
    out, lse = sdpa(q, k, v, return_lse=True, **kw)
    ref, ref_lse = sdpa_ref(q, k, v, **kw)
    S = k.shape[-2]
    assert_close(out, ref, dtype, scale=np.maximum(1.0, np.abs(ref).max(initial=0)), terms=S)
    assert_close(lse, ref_lse, dtype, scale=np.maximum(1.0, np.abs(ref_lse[np.isfinite(ref_lse)])
                                                       .max(initial=0)), terms=S)
    return out, lse


SIZES = [(1, 1, 1, 1), (7, 7, 5, 3), (1, 65, 8, 8), (65, 1, 8, 8), (33, 130, 16, 9),
         (130, 33, 9, 16), (65, 65, 32, 32)]


@pytest.mark.parametrize("L,S,E,Ev", SIZES, ids=[f"L{a}S{b}E{c}Ev{d}" for a, b, c, d in SIZES])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_matches_reference(L, S, E, Ev, causal, dtype, rng, small_tiles):
    q, k, v = _qkv(rng, dtype, (2, 3), L, S, E, Ev)
    _check(q, k, v, dtype, is_causal=causal)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_default_tiles_and_long_sequences(causal, dtype, rng):
    q, k, v = _qkv(rng, dtype, (2,), 300, 600, 64, 48)
    _check(q, k, v, dtype, is_causal=causal)


def test_scale(dtype, rng, small_tiles):
    q, k, v = _qkv(rng, dtype, (2,), 9, 20, 4, 4)
    for scale in (0.5, 2.0, -1.0, 0.0):
        _check(q, k, v, dtype, scale=scale)


@pytest.mark.parametrize("mask_shape", [(20,), (9, 20), (1, 9, 20), (3, 1, 20), (2, 1, 1, 20),
                                        (2, 3, 9, 20), (3, 1, 1)], ids=str)
@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_masks_broadcast(mask_shape, kind, dtype, rng, small_tiles):
    q, k, v = _qkv(rng, dtype, (2, 3), 9, 20, 5, 6)
    if kind == "bool":
        mask = rng.random(mask_shape) < 0.7
    else:
        mask = rng.standard_normal(mask_shape).astype(dtype)
        mask[rng.random(mask_shape) < 0.2] = -np.inf
    for causal in (False, True):
        _check(q, k, v, dtype, attn_mask=mask, is_causal=causal)


def test_fully_masked_rows_give_zeros(dtype, rng, small_tiles):
    q, k, v = _qkv(rng, dtype, (2,), 9, 20, 5, 6)
    mask = rng.random((2, 9, 20)) < 0.6
    mask[0, 3] = False
    mask[1, :] = False
    add = np.where(mask, 0.0, -np.inf).astype(dtype)
    for m in (mask, add):
        out, lse = _check(q, k, v, dtype, attn_mask=m)
        assert np.all(out[0, 3] == 0) and np.all(out[1] == 0)
        assert lse[0, 3] == -np.inf and np.all(lse[1] == -np.inf)
        assert not np.isnan(out).any()
        dq, dk, dv = sdpa_bwd(np.ones_like(out), q, k, v, out, lse, attn_mask=m)
        assert np.all(dq[1] == 0) and np.all(dk[1] == 0) and np.all(dv[1] == 0)
        assert not any(np.isnan(g).any() for g in (dq, dk, dv))


def test_no_keys(dtype):
    q = np.ones((2, 4, 3), dtype)
    k = np.ones((2, 0, 3), dtype)
    v = np.ones((2, 0, 5), dtype)
    out, lse = sdpa(q, k, v, return_lse=True)
    assert out.shape == (2, 4, 5) and np.all(out == 0) and np.all(lse == -np.inf)
    dq, dk, dv = sdpa_bwd(np.ones_like(out), q, k, v, out, lse)
    assert dq.shape == q.shape and np.all(dq == 0) and dk.shape == k.shape and dv.shape == v.shape


@pytest.mark.parametrize("shape", [(0, 4, 3), (2, 0, 3), (0, 2, 0, 3)], ids=str)
def test_empty(shape, dtype):
    q = np.ones(shape, dtype)
    k = np.ones(shape[:-2] + (5, shape[-1]), dtype)
    v = np.ones(shape[:-2] + (5, 2), dtype)
    out, lse = sdpa(q, k, v, return_lse=True)
    assert out.shape == shape[:-1] + (2,) and lse.shape == shape[:-1]
    dq, dk, dv = sdpa_bwd(np.ones_like(out), q, k, v, out, lse)
    assert (dq.shape, dk.shape, dv.shape) == (q.shape, k.shape, v.shape)


def test_large_logits_do_not_overflow(dtype, rng, small_tiles):
    q, k, v = _qkv(rng, dtype, (2,), 9, 40, 4, 4, scale=100.0)   # scores ~1e4
    out, lse = _check(q, k, v, dtype, scale=1.0)
    assert np.isfinite(out).all() and np.isfinite(lse).all()


def test_nan_propagates_to_its_row(dtype, rng, small_tiles):
    q, k, v = _qkv(rng, dtype, (1,), 9, 20, 4, 4)
    q[0, 2, 1] = np.nan
    out = sdpa(q, k, v)
    assert np.isnan(out[0, 2]).all()
    assert np.isfinite(np.delete(out[0], 2, axis=0)).all()


@pytest.mark.parametrize("kind", ["F", "strided", "negative", "transposed-view"])
def test_layouts(kind, dtype, rng, small_tiles):
    q, k, v = _qkv(rng, dtype, (2, 3), 17, 33, 8, 5)
    expected, lse = sdpa(q, k, v, return_lse=True, is_causal=True)
    ql, kl, vl = (layout(a, kind) for a in (q, k, v))
    assert np.array_equal(sdpa(ql, kl, vl, is_causal=True), expected)
    do = rng.standard_normal(expected.shape).astype(dtype)
    g = sdpa_bwd(do, q, k, v, expected, lse, is_causal=True)
    gl = sdpa_bwd(layout(do, kind), ql, kl, vl, layout(expected, kind), layout(lse, kind),
                  is_causal=True)
    for a, b in zip(g, gl):
        assert np.array_equal(a, b)


def test_split_heads_view_is_read_in_place(dtype, rng):
    x = rng.standard_normal((2, 37, 24)).astype(dtype)
    h = split_heads(x, 4)
    assert h.shape == (2, 4, 37, 6) and np.shares_memory(h, x)
    out = sdpa(h, h, h)
    assert np.array_equal(out, sdpa(*(np.ascontiguousarray(h),) * 3))
    assert np.array_equal(merge_heads(h), x)
    assert merge_heads(out).shape == (2, 37, 24)


def test_split_heads_bad_input():
    with pytest.raises(ValueError, match="divide"):
        split_heads(np.ones((2, 3, 10)), 4)
    with pytest.raises(ValueError, match="at least 2"):
        split_heads(np.ones(10), 2)
    with pytest.raises(ValueError, match="at least 3"):
        merge_heads(np.ones((3, 4)))


def test_batch_broadcast(dtype, rng, small_tiles):
    """k and v shared over heads (multi-query attention), q broadcast over the batch."""
    q = rng.standard_normal((1, 4, 9, 6)).astype(dtype)
    k = rng.standard_normal((3, 1, 20, 6)).astype(dtype)
    v = rng.standard_normal((3, 1, 20, 5)).astype(dtype)
    out, lse = _check(q, k, v, dtype, is_causal=True)
    assert out.shape == (3, 4, 9, 5)
    do = rng.standard_normal(out.shape).astype(dtype)
    g = sdpa_bwd(do, q, k, v, out, lse, is_causal=True)
    ref = sdpa_backward_ref(do, q, k, v, is_causal=True)
    for a, r, arg in zip(g, ref, (q, k, v)):
        assert a.shape == arg.shape
        assert_close(a, r, dtype, scale=max(1.0, np.abs(r).max()), terms=60)


def test_mixed_dtypes_promote(rng):
    q, k, v = _qkv(rng, np.float32, (2,), 5, 7, 3, 3)
    assert sdpa(q, k.astype(np.float64), v).dtype == np.float64
    assert sdpa(q.astype(int), k, v).dtype == np.float64


# --------------------------------------------------------------------------------------
# backward

@pytest.mark.parametrize("L,S,E,Ev", SIZES, ids=[f"L{a}S{b}E{c}Ev{d}" for a, b, c, d in SIZES])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_backward_matches_reference(L, S, E, Ev, causal, dtype, rng, small_tiles):
    q, k, v = _qkv(rng, dtype, (2, 3), L, S, E, Ev)
    out, lse = sdpa(q, k, v, is_causal=causal, return_lse=True)
    do = rng.standard_normal(out.shape).astype(dtype)
    g = sdpa_bwd(do, q, k, v, out, lse, is_causal=causal)
    ref = sdpa_backward_ref(do, q, k, v, is_causal=causal)
    for a, r in zip(g, ref):
        assert_close(a, r, dtype, scale=max(1.0, np.abs(r).max()), terms=max(L, S))


def test_backward_with_masks(dtype, rng, small_tiles):
    q, k, v = _qkv(rng, dtype, (2, 3), 9, 20, 5, 6)
    for mask in (rng.random((9, 20)) < 0.7, rng.standard_normal((3, 1, 20)).astype(dtype)):
        out, lse = sdpa(q, k, v, attn_mask=mask, is_causal=True, return_lse=True)
        do = rng.standard_normal(out.shape).astype(dtype)
        g = sdpa_bwd(do, q, k, v, out, lse, attn_mask=mask, is_causal=True)
        ref = sdpa_backward_ref(do, q, k, v, attn_mask=mask, is_causal=True)
        for a, r in zip(g, ref):
            assert_close(a, r, dtype, scale=max(1.0, np.abs(r).max()), terms=20)


def test_gradient_finite_differences(rng, small_tiles):
    q, k, v = _qkv(rng, np.float64, (2,), 9, 20, 3, 2)
    mask = rng.standard_normal((9, 20))
    do = rng.standard_normal((2, 9, 2))
    kw = dict(attn_mask=mask, is_causal=True, scale=0.7)

    def loss(q, k, v):
        return float(np.sum(sdpa(q, k, v, **kw) * do))

    out, lse = sdpa(q, k, v, return_lse=True, **kw)
    grads = sdpa_bwd(do, q, k, v, out, lse, **kw)
    h = 1e-6
    for i, (arg, g) in enumerate(zip((q, k, v), grads)):
        num = np.zeros_like(arg)
        flat = arg.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + h
            up = loss(q, k, v)
            flat[j] = old - h
            down = loss(q, k, v)
            flat[j] = old
            num.reshape(-1)[j] = (up - down) / (2 * h)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8, err_msg=f"argument {i}")


@requires_openmp
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_thread_counts_bitwise_equal(causal, dtype, rng):
    q, k, v = _qkv(rng, dtype, (2, 3), 200, 300, 32, 16)
    do = rng.standard_normal((2, 3, 200, 16)).astype(dtype)
    results = []
    for n in (1, 2):
        with fastdl.threads(n):
            out, lse = sdpa(q, k, v, is_causal=causal, return_lse=True)
            results.append((out, lse) + sdpa_bwd(do, q, k, v, out, lse, is_causal=causal))
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_matches_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    q, k, v = _qkv(rng, dtype, (2, 3), 70, 90, 16, 8)
    mask = rng.random((70, 90)) < 0.8
    mask[:, 0] = True
    tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    tm = torch.from_numpy(mask)
    to = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm)
    do = rng.standard_normal(to.shape).astype(dtype)
    to.backward(torch.from_numpy(do))
    out, lse = sdpa(q, k, v, attn_mask=mask, return_lse=True)
    g = sdpa_bwd(do, q, k, v, out, lse, attn_mask=mask)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, to.detach().numpy(), rtol=tol, atol=tol)
    for a, t in zip(g, (tq.grad, tk.grad, tv.grad)):
        np.testing.assert_allclose(a, t.numpy(), rtol=20 * tol, atol=20 * tol)


# --------------------------------------------------------------------------------------
# bad input

def test_bad_shapes_name_the_arrays():
    q, k, v = np.ones((2, 5, 4)), np.ones((2, 6, 4)), np.ones((2, 6, 3))
    with pytest.raises(ValueError, match=r"q \(2, 5, 4\) and k \(2, 6, 3\)"):
        sdpa(q, np.ones((2, 6, 3)), v)
    with pytest.raises(ValueError, match=r"k \(2, 6, 4\) and v \(2, 7, 3\)"):
        sdpa(q, k, np.ones((2, 7, 3)))
    with pytest.raises(ValueError, match="do not broadcast"):
        sdpa(np.ones((3, 5, 4)), k, v)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        sdpa(np.ones(4), k, v)
    with pytest.raises(ValueError, match=r"attn_mask of shape \(5, 7\)"):
        sdpa(q, k, v, attn_mask=np.ones((5, 7), bool))
    with pytest.raises(TypeError, match="attn_mask must be boolean"):
        sdpa(q, k, v, attn_mask=np.ones((5, 6), int))
    with pytest.raises(TypeError, match="dtype complex128"):
        sdpa(q.astype(complex), k, v)
    with pytest.raises(ValueError, match="scale must be finite"):
        sdpa(q, k, v, scale=float("nan"))
    with pytest.raises(TypeError, match="scale must be a real number"):
        sdpa(q, k, v, scale="x")


def test_backward_bad_shapes_leave_inputs_unchanged(rng):
    q, k, v = _qkv(rng, np.float64, (2,), 5, 6, 4, 3)
    out, lse = sdpa(q, k, v, return_lse=True)
    do = np.ones_like(out)
    before = snapshot(do, q, k, v, out, lse)
    with pytest.raises(ValueError, match=r"'dout' must have shape \(2, 5, 3\)"):
        sdpa_bwd(do[:, :4], q, k, v, out, lse)
    with pytest.raises(ValueError, match=r"'lse' must have shape \(2, 5\)"):
        sdpa_bwd(do, q, k, v, out, lse[:, None])
    with pytest.raises(ValueError, match=r"'out' must have shape"):
        sdpa_bwd(do, q, k, v, out.T, lse)
    assert_unchanged(before, do, q, k, v, out, lse)


def _kernels():
    out = ["blas"]
    for name in ("avx2", "avx512"):
        _attention.KERNEL = name
        try:
            _attention._kernel_level_py()
            out.append(name)
        except RuntimeError:
            pass
        finally:
            _attention.KERNEL = "auto"
    return out


@pytest.mark.parametrize("kernel", ["blas", "avx2", "avx512"])
@pytest.mark.parametrize("L,S,E,Ev", [(7, 9, 5, 3), (65, 130, 16, 40), (33, 70, 64, 64)],
                         ids=["tiny", "odd", "head64"])
def test_every_forward_kernel(kernel, L, S, E, Ev, rng):
    """The float32 forward's tile GEMMs: BLAS, and attention_gemm.h's AVX2 and AVX-512
    kernels (each where this CPU has it), with tiles and panels crossing every border."""
    if kernel not in _kernels():
        pytest.skip(f"this CPU lacks {kernel}")
    q, k, v = _qkv(rng, np.float32, (2, 3), L, S, E, Ev)
    mask = rng.random((L, S)) < 0.8
    old = _attention.KERNEL, _attention.BLOCK_Q, _attention.BLOCK_K
    try:
        for bq, bk in ((8, 16), (64, 256), (5, 48)):
            _attention.KERNEL, _attention.BLOCK_Q, _attention.BLOCK_K = kernel, bq, bk
            for kw in ({}, {"is_causal": True}, {"attn_mask": mask}):
                _check(q, k, v, np.float32, **kw)
    finally:
        _attention.KERNEL, _attention.BLOCK_Q, _attention.BLOCK_K = old


def test_kernel_setting_is_checked(rng):
    q, k, v = _qkv(rng, np.float32, (1,), 3, 3, 2, 2)
    old = _attention.KERNEL
    try:
        _attention.KERNEL = "fast"
        with pytest.raises(ValueError, match="KERNEL must be"):
            sdpa(q, k, v)
    finally:
        _attention.KERNEL = old
