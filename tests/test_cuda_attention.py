"""scaled_dot_product_attention and its backward on the GPU (fastdl._ext._cuda, cuda/attention.cu).

Without a GPU: argument checking through the public functions with fake device arrays (every
check runs before the device is needed), the "no CUDA device" error, and the kernels' own
block code run on host threads (the _host_* shims: barriers for __syncthreads, an exchange
buffer for shuffles, NaN-filled shared memory) against the CPU implementation: every
head-size template, tile borders, causal and masked, broadcasting, layouts, both dtypes.

With a GPU (fastdl.cuda.is_available()): every case against the CPU on the same data,
strided device inputs, the caller's stream (CuPy, whose array interface names it), result
kinds (DeviceArray, torch, CuPy), determinism.
"""

import numpy as np
import pytest

pytest.importorskip("fastdl._ext._cuda")

import fastdl  # noqa: E402
from fastdl._ext import _cuda  # noqa: E402
from fastdl._ext._attention import (scaled_dot_product_attention as cpu_sdpa,  # noqa: E402
                                    scaled_dot_product_attention_backward as cpu_bwd)
from conftest import assert_close, layout  # noqa: E402

GPU = fastdl.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="no CUDA device")
FWD = "scaled_dot_product_attention"
BWD = "scaled_dot_product_attention_backward"


class Fake:
    """A device array that is never touched: just a __cuda_array_interface__."""

    def __init__(self, shape, typestr="<f4", strides=None, ptr=0x10000):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr,
                                         "data": (ptr, False), "version": 3,
                                         "strides": strides, "stream": None}


def _qkv(rng, dtype, batch, L, S, E, Ev, scale=1.0):
    q = (scale * rng.standard_normal(batch + (L, E))).astype(dtype)
    k = (scale * rng.standard_normal(batch + (S, E))).astype(dtype)
    v = rng.standard_normal(batch + (S, Ev)).astype(dtype)
    return q, k, v


def _close(actual, expected, dtype, terms):
    """Results against the CPU's (itself checked against a float64 reference), within the
    suite's RTOL (float32 1e-5, float64 1e-12) times max(1, |expected|), widened by
    sqrt(terms) (conftest.assert_close). The device tests use terms = 1: float32 within
    1e-5. The host runs of the kernels use the sums' length: without FMA contraction their
    rounding is not the device's (measured: <= 1.1e-6 at L = S = 1000)."""
    expected = np.asarray(expected, np.float64)
    finite = expected[np.isfinite(expected)]
    scale = max(1.0, float(np.abs(finite).max(initial=0.0)))
    assert_close(np.asarray(actual), expected, dtype, scale=scale, terms=max(terms, 1))


def _terms(run, n):
    return 1 if run in (gpu_fwd, gpu_bwd) else n


def _check_forward(run, q, k, v, dtype, **kw):
    """run(...) (the device or a host run of the kernels) against the CPU: out and lse."""
    out, lse = run(q, k, v, return_lse=True, **kw)
    ref, ref_lse = cpu_sdpa(q, k, v, return_lse=True, **kw)
    S = k.shape[-2]
    _close(out, ref, dtype, _terms(run, S))
    _close(lse, ref_lse, dtype, _terms(run, S))
    return out, lse


def _check_backward(run, q, k, v, dtype, seed=1, **kw):
    out, lse = cpu_sdpa(q, k, v, return_lse=True, **kw)
    do = np.random.default_rng(seed).standard_normal(out.shape).astype(dtype)
    got = run(do, q, k, v, out, lse, **kw)
    ref = cpu_bwd(do, q, k, v, out, lse, **kw)
    for g, r, a in zip(got, ref, (q, k, v)):
        assert g.shape == a.shape
        _close(g, r, dtype, _terms(run, max(q.shape[-2], k.shape[-2])))
    return got


def host_fwd(q, k, v, **kw):
    return _cuda._host_sdpa_forward(q, k, v, **kw)


def host_bwd(*args, **kw):
    return _cuda._host_sdpa_backward(*args, **kw)


# --------------------------------------------------------------------------------------
# Argument checking with fake device arrays (no device needed)

def _fakes(L=5, S=6, E=4, Ev=3, batch=(2,), typestr="<f4"):
    return (Fake(batch + (L, E), typestr), Fake(batch + (S, E), typestr),
            Fake(batch + (S, Ev), typestr))


@pytest.mark.parametrize("bad, exc, match", [
    (dict(k=Fake((2, 6, 3))), ValueError, r"q \(2, 5, 4\) and k \(2, 6, 3\)"),
    (dict(v=Fake((2, 7, 3))), ValueError, r"k \(2, 6, 4\) and v \(2, 7, 3\)"),
    (dict(q=Fake((3, 5, 4))), ValueError, "do not broadcast"),
    (dict(q=Fake((4,))), ValueError, "at least 2 dimensions"),
    (dict(q=Fake((2, 5, 4), "<i8")), TypeError, "q must be float32 or float64"),
    (dict(k=Fake((2, 6, 4), "<f8")), TypeError, "q and k must have the same dtype"),
    (dict(v=Fake((2, 6, 3), "<f8")), TypeError, "q and v must have the same dtype"),
    (dict(k=np.ones((2, 6, 4), np.float32)), TypeError, "k must be a CUDA device array"),
    (dict(attn_mask=Fake((5, 7), "|b1")), ValueError, r"attn_mask of shape \(5, 7\)"),
    (dict(attn_mask=Fake((5, 6), "<i8")), TypeError, "attn_mask must be boolean"),
    (dict(attn_mask=np.ones((5, 6), bool)), TypeError, "attn_mask must be a CUDA device"),
    (dict(scale=float("nan")), ValueError, "scale must be finite"),
    (dict(scale="x"), TypeError, "scale must be a real number"),
    (dict(q=Fake((2, 5, 300)), k=Fake((2, 6, 300))), ValueError, "head dimensions up to 256"),
    (dict(v=Fake((2, 6, 257))), ValueError, "head dimensions up to 256"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_forward_checks_before_the_device(bad, exc, match):
    q, k, v = _fakes()
    kw = dict(q=q, k=k, v=v)
    kw.update(bad)
    with pytest.raises(exc, match=match):
        fastdl.scaled_dot_product_attention(**kw)


@pytest.mark.parametrize("which, shape, match", [
    ("dout", (2, 4, 3), r"'dout' must have shape \(2, 5, 3\)"),
    ("out", (2, 3, 5), r"'out' must have shape \(2, 5, 3\)"),
    ("lse", (2, 5, 1), r"'lse' must have shape \(2, 5\)"),
])
def test_backward_shape_checks(which, shape, match):
    q, k, v = _fakes()
    args = dict(dout=Fake((2, 5, 3)), q=q, k=k, v=v, out=Fake((2, 5, 3)), lse=Fake((2, 5)))
    args[which] = Fake(shape)
    with pytest.raises(ValueError, match=match):
        fastdl.scaled_dot_product_attention_backward(**args)


def test_backward_dtype_and_mask_checks():
    q, k, v = _fakes()
    base = dict(dout=Fake((2, 5, 3)), q=q, k=k, v=v, out=Fake((2, 5, 3)), lse=Fake((2, 5)))
    with pytest.raises(TypeError, match="q and lse must have the same dtype"):
        fastdl.scaled_dot_product_attention_backward(**dict(base, lse=Fake((2, 5), "<f8")))
    with pytest.raises(ValueError, match="does not broadcast"):
        fastdl.scaled_dot_product_attention_backward(**base, attn_mask=Fake((3, 5, 6), "|b1"))
    with pytest.raises(ValueError, match="scale must be finite"):
        fastdl.scaled_dot_product_attention_backward(**base, scale=float("inf"))


@pytest.mark.skipif(GPU, reason="a CUDA device is present")
def test_valid_calls_need_a_device():
    q, k, v = _fakes()
    mask = Fake((5, 6), "|b1")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        fastdl.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=True)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        fastdl.scaled_dot_product_attention_backward(Fake((2, 5, 3)), q, k, v,
                                                     Fake((2, 5, 3)), Fake((2, 5)))
    # strided, broadcast and float64 operands are accepted up to the device check too
    q64 = Fake((2, 5, 4), "<f8", strides=(8, 64, 16))
    k64 = Fake((1, 6, 4), "<f8")
    v64 = Fake((6, 3), "<f8")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        fastdl.scaled_dot_product_attention(q64, k64, v64, attn_mask=Fake((6,), "<f4"))


def test_configurations():
    """Every head size maps to a template whose shared memory fits an sm_80 block (and all
    float32 ones, an sm_86/89 block); tiles as the kernels assume."""
    for dtype in (np.float32, np.float64):
        for E, Ev, D in ((0, 0, 32), (1, 5, 32), (32, 32, 32), (33, 8, 64), (64, 64, 64),
                         (8, 65, 128), (128, 128, 128), (129, 1, 256), (256, 256, 256)):
            for which in (0, 1, 2):
                d, bq, bk, smem = _cuda._sdpa_config(dtype, E, Ev, which)
                assert d == D and bq % 8 == 0 and bk % 8 == 0
                assert smem <= 163 * 1024
                if dtype == np.float32 or D <= 128:
                    assert smem <= 99 * 1024, (dtype, D, which, smem)
    with pytest.raises(ValueError):
        _cuda._sdpa_config(np.float32, 257, 1, 0)


# --------------------------------------------------------------------------------------
# The kernels' block code on host threads, against the CPU

SIZES = [(1, 1, 1, 1), (7, 9, 5, 3), (1, 65, 8, 8), (65, 1, 8, 8), (33, 130, 16, 9),
         (130, 33, 9, 16), (65, 70, 32, 32), (17, 40, 64, 64), (20, 37, 100, 128),
         (9, 20, 129, 256), (9, 20, 256, 7)]


@pytest.mark.parametrize("L,S,E,Ev", SIZES, ids=[f"L{a}S{b}E{c}Ev{d}" for a, b, c, d in SIZES])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_host_forward_matches_cpu(L, S, E, Ev, causal, dtype, rng):
    q, k, v = _qkv(rng, dtype, (2, 3), L, S, E, Ev)
    _check_forward(host_fwd, q, k, v, dtype, is_causal=causal)


@pytest.mark.parametrize("L,S,E,Ev", SIZES, ids=[f"L{a}S{b}E{c}Ev{d}" for a, b, c, d in SIZES])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_host_backward_matches_cpu(L, S, E, Ev, causal, dtype, rng):
    q, k, v = _qkv(rng, dtype, (2, 3), L, S, E, Ev)
    _check_backward(host_bwd, q, k, v, dtype, is_causal=causal)


@pytest.mark.parametrize("mask_shape", [(20,), (9, 20), (1, 9, 20), (3, 1, 20), (2, 1, 1, 20),
                                        (2, 3, 9, 20), (3, 1, 1), ()], ids=str)
@pytest.mark.parametrize("kind", ["bool", "additive", "additive-f64", "additive-f32"])
def test_host_masks_broadcast(mask_shape, kind, dtype, rng):
    q, k, v = _qkv(rng, dtype, (2, 3), 9, 20, 5, 6)
    if kind == "bool":
        mask = np.asarray(rng.random(mask_shape) < 0.7)
    else:
        mdt = {"additive": dtype, "additive-f64": np.float64, "additive-f32": np.float32}[kind]
        mask = np.asarray(rng.standard_normal(mask_shape)).astype(mdt)
        mask[rng.random(mask_shape) < 0.2] = -np.inf
    for causal in (False, True):
        _check_forward(host_fwd, q, k, v, dtype, attn_mask=mask, is_causal=causal)
    _check_backward(host_bwd, q, k, v, dtype, attn_mask=mask, is_causal=True)


def test_host_fully_masked_rows_give_zeros(dtype, rng):
    q, k, v = _qkv(rng, dtype, (2,), 9, 20, 5, 6)
    mask = rng.random((2, 9, 20)) < 0.6
    mask[0, 3] = False
    mask[1, :] = False
    add = np.where(mask, 0.0, -np.inf).astype(dtype)
    for m in (mask, add):
        out, lse = _check_forward(host_fwd, q, k, v, dtype, attn_mask=m)
        assert np.all(out[0, 3] == 0) and np.all(out[1] == 0)
        assert lse[0, 3] == -np.inf and np.all(lse[1] == -np.inf)
        assert not np.isnan(out).any()
        dq, dk, dv = host_bwd(np.ones_like(out), q, k, v, out, lse, attn_mask=m)
        assert np.all(dq[1] == 0) and np.all(dk[1] == 0) and np.all(dv[1] == 0)
        assert not any(np.isnan(g).any() for g in (dq, dk, dv))


def test_host_no_keys_and_empty(dtype):
    q = np.ones((2, 4, 3), dtype)
    k = np.ones((2, 0, 3), dtype)
    v = np.ones((2, 0, 5), dtype)
    out, lse = host_fwd(q, k, v, return_lse=True)
    assert out.shape == (2, 4, 5) and np.all(out == 0) and np.all(lse == -np.inf)
    dq, dk, dv = host_bwd(np.ones_like(out), q, k, v, out, lse)
    assert dq.shape == q.shape and np.all(dq == 0) and dk.shape == k.shape and dv.shape == v.shape
    for shape in ((0, 4, 3), (2, 0, 3), (0, 2, 0, 3)):
        q = np.ones(shape, dtype)
        k = np.ones(shape[:-2] + (5, shape[-1]), dtype)
        v = np.ones(shape[:-2] + (5, 2), dtype)
        out, lse = host_fwd(q, k, v, return_lse=True)
        assert out.shape == shape[:-1] + (2,) and lse.shape == shape[:-1]
        g = host_bwd(np.ones_like(out), q, k, v, out, lse)
        assert [a.shape for a in g] == [q.shape, k.shape, v.shape]
        assert all(np.all(a == 0) for a in g)
    # an empty batch with a broadcast k: its gradient is a sum over nothing
    q = np.ones((0, 4, 3), dtype)
    k = np.ones((5, 3), dtype)
    v = np.ones((5, 2), dtype)
    out, lse = host_fwd(q, k, v, return_lse=True)
    dq, dk, dv = host_bwd(np.ones_like(out), q, k, v, out, lse)
    assert dk.shape == (5, 3) and np.all(dk == 0) and np.all(dv == 0)


def test_host_zero_head_dim(dtype, rng):
    """E = 0: every score is 0, out is the mean of v (and lse = log S)."""
    q = np.ones((2, 4, 0), dtype)
    k = np.ones((2, 6, 0), dtype)
    v = rng.standard_normal((2, 6, 3)).astype(dtype)
    _check_forward(host_fwd, q, k, v, dtype)
    _check_backward(host_bwd, q, k, v, dtype)


def test_host_large_logits_do_not_overflow(dtype, rng):
    q, k, v = _qkv(rng, dtype, (2,), 9, 40, 4, 4, scale=100.0)
    out, lse = _check_forward(host_fwd, q, k, v, dtype, scale=1.0)
    assert np.isfinite(out).all() and np.isfinite(lse).all()


def test_host_nan_and_inf(dtype, rng):
    q, k, v = _qkv(rng, dtype, (1,), 9, 70, 4, 4)
    q[0, 2, 1] = np.nan
    out = host_fwd(q, k, v)
    assert np.isnan(out[0, 2]).all()
    assert np.isfinite(np.delete(out[0], 2, axis=0)).all()
    q, k, v = _qkv(rng, dtype, (1,), 9, 70, 4, 4)
    mask = np.zeros((9, 70), dtype)
    mask[4, 3] = np.inf          # a +inf score: NaN in that row, as on the CPU
    out = host_fwd(q, k, v, attn_mask=mask)
    ref = cpu_sdpa(q, k, v, attn_mask=mask)
    assert np.array_equal(np.isnan(out), np.isnan(ref))


def test_host_scale(dtype, rng):
    q, k, v = _qkv(rng, dtype, (2,), 9, 20, 4, 4)
    for scale in (0.5, 2.0, -1.0, 0.0):
        _check_forward(host_fwd, q, k, v, dtype, scale=scale)
    _check_backward(host_bwd, q, k, v, dtype, scale=-0.7, is_causal=True)


@pytest.mark.parametrize("kind", ["F", "strided", "negative", "transposed-view"])
def test_host_layouts(kind, dtype, rng):
    """Operands read in place through their strides (or copied when the last axis is not
    unit-stride): the same results as C-contiguous ones."""
    q, k, v = _qkv(rng, dtype, (2, 3), 17, 33, 8, 5)
    expected, lse = host_fwd(q, k, v, return_lse=True, is_causal=True)
    ql, kl, vl = (layout(a, kind) for a in (q, k, v))
    got = host_fwd(ql, kl, vl, is_causal=True)
    _close(got, expected, dtype, 33)
    do = rng.standard_normal(expected.shape).astype(dtype)
    g = host_bwd(do, q, k, v, expected, lse, is_causal=True)
    gl = host_bwd(layout(do, kind), ql, kl, vl, layout(expected, kind), layout(lse, kind),
                  is_causal=True)
    for a, b in zip(g, gl):
        _close(b, a, dtype, 33)


def test_host_split_heads_view_and_unaligned_rows(dtype, rng):
    """A split_heads view (batch and head strides, rows of the full embedding) is read in
    place; an offset by one element (16-byte copies impossible) takes the element path."""
    x = rng.standard_normal((2, 37, 68)).astype(dtype)
    h = fastdl.split_heads(x[:, :, 1:65], 4)        # (2, 4, 37, 16), misaligned base
    h2 = fastdl.split_heads(x[:, :, :64], 4)        # aligned: rows of 68 elements
    for view in (h, h2):
        _check_forward(host_fwd, view, view, view, dtype, is_causal=True)
        _check_backward(host_bwd, view, view, view, dtype)


def test_host_batch_broadcast(dtype, rng):
    """k and v shared over heads (multi-query attention), q broadcast over the batch: the
    gradients are summed back to each operand's shape."""
    q = rng.standard_normal((1, 4, 9, 6)).astype(dtype)
    k = rng.standard_normal((3, 1, 20, 6)).astype(dtype)
    v = rng.standard_normal((3, 1, 20, 5)).astype(dtype)
    out, lse = _check_forward(host_fwd, q, k, v, dtype, is_causal=True)
    assert out.shape == (3, 4, 9, 5)
    _check_backward(host_bwd, q, k, v, dtype, is_causal=True)
    # differently broadcast k and v, and fewer leading dimensions
    k = rng.standard_normal((20, 6)).astype(dtype)
    v = rng.standard_normal((4, 20, 5)).astype(dtype)
    _check_forward(host_fwd, q, k, v, dtype)
    _check_backward(host_bwd, q, k, v, dtype, attn_mask=rng.random((4, 1, 20)) < 0.8)


def test_host_many_batch_dimensions(dtype, rng):
    """Batch dimensions that cannot be merged (a transposed batch axis, broadcast ones)."""
    q = rng.standard_normal((3, 2, 1, 2, 5, 4)).astype(dtype).swapaxes(0, 1)
    k = rng.standard_normal((2, 1, 2, 1, 7, 4)).astype(dtype)
    v = rng.standard_normal((1, 3, 1, 2, 7, 3)).astype(dtype)
    mask = rng.random((2, 1, 2, 1, 1, 7)) < 0.8
    _check_forward(host_fwd, q, k, v, dtype, attn_mask=mask)
    _check_backward(host_bwd, q, k, v, dtype, attn_mask=mask, is_causal=True)


@pytest.mark.parametrize("where", ["head", "tail"])
def test_host_reads_stay_in_bounds(where, dtype, rng):
    """Every operand at the head (or tail) of a NaN-filled buffer: a read past its end (or
    before its start) would put NaN into the results."""
    def placed(a):
        buf = np.full(a.size + 257, np.nan, a.dtype)
        part = buf[:a.size] if where == "head" else buf[257:]
        part[...] = a.reshape(-1)
        return part.reshape(a.shape)

    for L, S, E, Ev in ((7, 9, 5, 3), (65, 33, 40, 72), (9, 17, 130, 129)):
        q, k, v = _qkv(rng, dtype, (2,), L, S, E, Ev)
        mask = rng.standard_normal((L, S)).astype(dtype)
        out, lse = cpu_sdpa(q, k, v, attn_mask=mask, is_causal=True, return_lse=True)
        do = rng.standard_normal(out.shape).astype(dtype)
        args = [placed(a) for a in (do, q, k, v, out, lse)]
        o, l = host_fwd(*args[1:4], attn_mask=placed(mask), is_causal=True, return_lse=True)
        g = host_bwd(*args, attn_mask=placed(mask), is_causal=True)
        assert not any(np.isnan(x).any() for x in (o, l) + tuple(g))
        _close(o, out, dtype, S)


def test_host_is_deterministic(rng):
    q, k, v = _qkv(rng, np.float32, (2,), 70, 90, 24, 24)
    a = host_fwd(q, k, v, return_lse=True)
    b = host_fwd(q, k, v, return_lse=True)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    do = np.ones_like(a[0])
    ga = host_bwd(do, q, k, v, *a)
    gb = host_bwd(do, q, k, v, *a)
    assert all(np.array_equal(x, y) for x, y in zip(ga, gb))


def test_host_failed_calls_leave_arguments_unchanged(rng):
    q, k, v = _qkv(rng, np.float64, (2,), 5, 6, 4, 3)
    out, lse = cpu_sdpa(q, k, v, return_lse=True)
    do = np.ones_like(out)
    before = [a.copy() for a in (do, q, k, v, out, lse)]
    with pytest.raises(ValueError):
        host_bwd(do[:, :4], q, k, v, out, lse)
    with pytest.raises(ValueError):
        host_bwd(do, q, k, v, out, lse, attn_mask=np.ones((3, 5, 6), bool))
    for a, b in zip(before, (do, q, k, v, out, lse)):
        assert np.array_equal(a, b)


# --------------------------------------------------------------------------------------
# On a GPU

class View:
    """A strided device view into another device array's memory (keeps it alive)."""

    def __init__(self, owner, shape, strides, offset=0):
        cai = owner.__cuda_array_interface__
        self.owner = owner
        self.__cuda_array_interface__ = {
            "shape": tuple(shape), "typestr": cai["typestr"],
            "data": (cai["data"][0] + offset, False), "version": 3,
            "strides": tuple(strides), "stream": cai.get("stream")}


def to_dev(a):
    """A device copy of NumPy array a with a's very strides (views of a C-contiguous base
    array keep their offsets and strides, negative ones included)."""
    a = np.asarray(a)
    base = a
    while isinstance(base.base, np.ndarray):
        base = base.base
    if a.flags.c_contiguous or base.dtype != a.dtype or not (
            base.flags.c_contiguous or base.flags.f_contiguous):
        return fastdl.cuda.to_device(a)
    offset = a.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    # the base's memory in its own order: a's offset and strides index it unchanged
    return View(fastdl.cuda.to_device(np.ravel(base, order="K")), a.shape, a.strides, offset)


def host(x):
    return fastdl.cuda.to_host(x)


def gpu_fwd(q, k, v, attn_mask=None, return_lse=False, **kw):
    m = None if attn_mask is None else to_dev(attn_mask)
    r = fastdl.scaled_dot_product_attention(to_dev(q), to_dev(k), to_dev(v), attn_mask=m,
                                            return_lse=return_lse, **kw)
    return tuple(host(x) for x in r) if return_lse else host(r)


def gpu_bwd(*args, attn_mask=None, **kw):
    m = None if attn_mask is None else to_dev(attn_mask)
    r = fastdl.scaled_dot_product_attention_backward(*(to_dev(a) for a in args), attn_mask=m,
                                                     **kw)
    return tuple(host(x) for x in r)


GPU_SIZES = SIZES + [(1000, 1000, 64, 64), (513, 1031, 128, 128), (300, 257, 256, 256),
                     (2, 1100, 32, 48)]


@needs_gpu
@pytest.mark.parametrize("L,S,E,Ev", GPU_SIZES,
                         ids=[f"L{a}S{b}E{c}Ev{d}" for a, b, c, d in GPU_SIZES])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_gpu_matches_cpu(L, S, E, Ev, causal, dtype, rng):
    q, k, v = _qkv(rng, dtype, (2, 3), L, S, E, Ev)
    _check_forward(gpu_fwd, q, k, v, dtype, is_causal=causal)
    _check_backward(gpu_bwd, q, k, v, dtype, is_causal=causal)


@needs_gpu
@pytest.mark.parametrize("mask_shape", [(20,), (9, 20), (3, 1, 20), (2, 3, 9, 20), (3, 1, 1)],
                         ids=str)
@pytest.mark.parametrize("kind", ["bool", "additive", "additive-f64"])
def test_gpu_masks(mask_shape, kind, dtype, rng):
    q, k, v = _qkv(rng, dtype, (2, 3), 9, 20, 5, 6)
    if kind == "bool":
        mask = np.asarray(rng.random(mask_shape) < 0.7)
    else:
        mask = rng.standard_normal(mask_shape).astype(dtype if kind == "additive"
                                                      else np.float64)
        mask[rng.random(mask_shape) < 0.2] = -np.inf
    for causal in (False, True):
        _check_forward(gpu_fwd, q, k, v, dtype, attn_mask=mask, is_causal=causal)
        _check_backward(gpu_bwd, q, k, v, dtype, attn_mask=mask, is_causal=causal)


@needs_gpu
def test_gpu_fully_masked_rows_no_keys_empty(dtype, rng):
    q, k, v = _qkv(rng, dtype, (2,), 9, 20, 5, 6)
    mask = rng.random((2, 9, 20)) < 0.6
    mask[1, :] = False
    out, lse = _check_forward(gpu_fwd, q, k, v, dtype, attn_mask=mask)
    assert np.all(out[1] == 0) and np.all(lse[1] == -np.inf)
    g = _check_backward(gpu_bwd, q, k, v, dtype, attn_mask=mask)
    assert all(np.all(a[1] == 0) for a in g)
    q = np.ones((2, 4, 3), dtype)
    out, lse = gpu_fwd(q, np.ones((2, 0, 3), dtype), np.ones((2, 0, 5), dtype), return_lse=True)
    assert out.shape == (2, 4, 5) and np.all(out == 0) and np.all(lse == -np.inf)
    for shape in ((0, 4, 3), (2, 0, 3)):
        q = np.ones(shape, dtype)
        out, lse = gpu_fwd(q, np.ones(shape[:-2] + (5, 3), dtype),
                           np.ones(shape[:-2] + (5, 2), dtype), return_lse=True)
        assert out.shape == shape[:-1] + (2,) and lse.shape == shape[:-1]


@needs_gpu
def test_gpu_nan_inf_and_large_logits(dtype, rng):
    q, k, v = _qkv(rng, dtype, (1,), 9, 70, 4, 4)
    q[0, 2, 1] = np.nan
    out = gpu_fwd(q, k, v)
    assert np.isnan(out[0, 2]).all() and np.isfinite(np.delete(out[0], 2, axis=0)).all()
    q, k, v = _qkv(rng, dtype, (2,), 9, 40, 4, 4, scale=100.0)
    out, lse = _check_forward(gpu_fwd, q, k, v, dtype, scale=1.0)
    assert np.isfinite(out).all() and np.isfinite(lse).all()


@needs_gpu
@pytest.mark.parametrize("kind", ["F", "strided", "negative", "transposed-view"])
def test_gpu_strided_inputs(kind, dtype, rng):
    q, k, v = _qkv(rng, dtype, (2, 3), 17, 33, 8, 5)
    ql, kl, vl = (layout(a, kind) for a in (q, k, v))
    _check_forward(gpu_fwd, ql, kl, vl, dtype, is_causal=True)
    _check_backward(gpu_bwd, ql, kl, vl, dtype, is_causal=True)
    x = rng.standard_normal((2, 37, 68)).astype(dtype)
    for h in (fastdl.split_heads(x[:, :, 1:65], 4), fastdl.split_heads(x[:, :, :64], 4)):
        _check_forward(gpu_fwd, h, h, h, dtype)
        _check_backward(gpu_bwd, h, h, h, dtype)


@needs_gpu
def test_gpu_broadcast(dtype, rng):
    q = rng.standard_normal((1, 4, 9, 6)).astype(dtype)
    k = rng.standard_normal((3, 1, 20, 6)).astype(dtype)
    v = rng.standard_normal((3, 1, 20, 5)).astype(dtype)
    _check_forward(gpu_fwd, q, k, v, dtype, is_causal=True)
    _check_backward(gpu_bwd, q, k, v, dtype, is_causal=True)
    k2 = rng.standard_normal((20, 6)).astype(dtype)
    v2 = rng.standard_normal((4, 20, 5)).astype(dtype)
    _check_forward(gpu_fwd, q, k2, v2, dtype)
    _check_backward(gpu_bwd, q, k2, v2, dtype)


@needs_gpu
def test_gpu_result_kind_and_determinism(rng):
    q, k, v = _qkv(rng, np.float32, (2, 3), 300, 400, 64, 64)
    dq, dk, dv = (fastdl.cuda.to_device(a) for a in (q, k, v))
    out, lse = fastdl.scaled_dot_product_attention(dq, dk, dv, return_lse=True)
    assert isinstance(out, fastdl.cuda.DeviceArray) and out.shape == (2, 3, 300, 64)
    out2, lse2 = fastdl.scaled_dot_product_attention(dq, dk, dv, return_lse=True)
    assert np.array_equal(host(out), host(out2)) and np.array_equal(host(lse), host(lse2))
    do = fastdl.cuda.to_device(rng.standard_normal((2, 3, 300, 64)).astype(np.float32))
    g1 = fastdl.scaled_dot_product_attention_backward(do, dq, dk, dv, out, lse)
    g2 = fastdl.scaled_dot_product_attention_backward(do, dq, dk, dv, out, lse)
    assert all(isinstance(a, fastdl.cuda.DeviceArray) for a in g1)
    assert all(np.array_equal(host(a), host(b)) for a, b in zip(g1, g2))


@needs_gpu
def test_gpu_matches_host_emulation(dtype, rng):
    """The device and the host run of the same block code agree (not bitwise: FMA
    contraction and libm differ)."""
    q, k, v = _qkv(rng, dtype, (2,), 70, 90, 40, 24)
    mask = rng.random((70, 90)) < 0.8
    for kw in ({}, {"is_causal": True}, {"attn_mask": mask}):
        _check_forward(gpu_fwd, q, k, v, dtype, **kw)
        a = gpu_fwd(q, k, v, return_lse=True, **kw)
        b = host_fwd(q, k, v, return_lse=True, **kw)
        for x, y in zip(a, b):
            _close(x, y, dtype, 90)


@needs_gpu
def test_gpu_torch_kind_and_values(dtype, rng):
    """torch in, torch out, against torch's own SDPA. On torch's default stream: torch's
    __cuda_array_interface__ (version 2) names no stream, so fastdl queues torch inputs'
    work on the legacy default stream."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    q, k, v = _qkv(rng, dtype, (2, 3), 70, 90, 64, 64)
    mask = rng.random((70, 90)) < 0.8
    mask[:, 0] = True
    tq, tk, tv = (torch.from_numpy(a).cuda().requires_grad_() for a in (q, k, v))
    tm = torch.from_numpy(mask).cuda()
    out, lse = fastdl.scaled_dot_product_attention(tq.detach(), tk.detach(), tv.detach(),
                                                   attn_mask=tm, return_lse=True)
    assert isinstance(out, torch.Tensor) and out.is_cuda
    ref = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm)
    do = torch.randn_like(ref)
    ref.backward(do)
    g = fastdl.scaled_dot_product_attention_backward(do, tq.detach(), tk.detach(),
                                                     tv.detach(), out, lse, attn_mask=tm)
    torch.cuda.synchronize()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out.cpu().numpy(), ref.detach().cpu().numpy(), rtol=tol,
                               atol=tol)
    for a, t in zip(g, (tq.grad, tk.grad, tv.grad)):
        assert isinstance(a, torch.Tensor)
        np.testing.assert_allclose(a.cpu().numpy(), t.cpu().numpy(), rtol=20 * tol,
                                   atol=20 * tol)
    # a transposed (split-heads style) torch view is read in place
    x = torch.from_numpy(rng.standard_normal((2, 70, 4 * 16)).astype(dtype)).cuda()
    h = x.view(2, 70, 4, 16).transpose(1, 2)
    got = fastdl.scaled_dot_product_attention(h, h, h, is_causal=True)
    ref = torch.nn.functional.scaled_dot_product_attention(h, h, h, is_causal=True)
    np.testing.assert_allclose(got.cpu().numpy(), ref.cpu().numpy(), rtol=tol, atol=tol)


@needs_gpu
def test_gpu_cupy_stream_and_kind(dtype, rng):
    cupy = pytest.importorskip("cupy")
    q, k, v = _qkv(rng, dtype, (2,), 33, 65, 16, 16)
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        cq, ck, cv = (cupy.asarray(a) for a in (q, k, v))
        out = fastdl.scaled_dot_product_attention(cq, ck, cv, is_causal=True)
        assert isinstance(out, cupy.ndarray)
        res = cupy.asnumpy(out, stream=s)
    s.synchronize()
    _close(res, cpu_sdpa(q, k, v, is_causal=True), dtype, 1)
