"""GPU batch_norm, batch_norm_backward, layer_norm, layer_norm_backward (cuda/norm.cu).

Runs anywhere the CUDA extension is built:
  * validation with fake device arrays (objects with a __cuda_array_interface__ and no
    memory): the CPU's errors, raised before anything would touch the device;
  * without a device, a valid call raises RuntimeError "no CUDA device";
  * the host shims (_host_norm_*), which run the kernels' own phases (work split, per-thread
    sums, trees, per-channel formulas) on the CPU, against the CPU functions and the
    float64 references, and the kernels' fast division exhaustively on edges.
On a machine with a GPU, the device tests compare every function with the CPU on the same
data: both dtypes, odd and empty shapes, NaN/inf, strided device inputs, the caller's stream
(CuPy/torch when installed) and the kind of the results.
"""

import itertools

import numpy as np
import pytest

_cuda = pytest.importorskip("fastdl._ext._cuda")

import fastdl  # noqa: E402
from conftest import assert_close, layout, random_array  # noqa: E402
from reference_norm_pool import (batch_norm_backward_ref, batch_norm_infer_ref,  # noqa: E402
                                 batch_norm_train_ref, layer_norm_backward_ref,
                                 layer_norm_ref, running_update_ref)

HAVE_GPU = fastdl.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason="no CUDA device")
no_gpu_only = pytest.mark.skipif(HAVE_GPU, reason="fake device arrays must not reach a GPU")

BN_SHAPES = [(7, 3), (2, 1), (1, 7, 3, 3), (3, 33, 1, 1), (5, 7, 4, 5), (2, 3, 33, 35),
             (1000, 33), (4, 3, 1, 1001), (2, 5, 8, 8), (3, 4, 40, 40), (300, 2, 7, 7),
             (3, 4, 14, 14), (4, 3, 5, 10)]
LN_CASES = [((7,), 7), ((3, 5), 5), ((2, 3, 33), (33,)), ((4, 3, 5), (3, 5)),
            ((1, 1000), 1000), ((2, 7, 1), 1), ((64, 1100), 1100), ((5, 3, 4000), 4000),
            ((9, 256), 256), ((5, 33, 12), 12)]


# --------------------------------------------------------------------------------------
# fake device arrays

class Fake:
    """A device array with no memory behind it (distinct fake pointers per object)."""
    _next = 0x7f0000000000

    def __init__(self, shape, dtype=np.float32, strides=None, readonly=False, ptr=None):
        if ptr is None:
            ptr = Fake._next
            Fake._next += 1 << 32
        self.__cuda_array_interface__ = {
            "shape": tuple(shape), "typestr": np.dtype(dtype).str, "data": (ptr, readonly),
            "version": 3, "strides": strides, "stream": None}


def _bn_fakes(shape=(4, 3, 2, 2), dtype=np.float32):
    C = shape[1]
    return Fake(shape, dtype), Fake((C,), dtype), Fake((C,), dtype), Fake((C,), dtype), \
        Fake((C,), dtype)


@pytest.mark.parametrize("case,exc,match", [
    ("x-1d", ValueError, "must have shape"),
    ("x-int", TypeError, "x must be float32 or float64"),
    ("gamma-shape", ValueError, r"gamma has shape \(4,\), expected \(3,\)"),
    ("beta-shape", ValueError, "beta has shape"),
    ("gamma-dtype", TypeError, "same dtype"),
    ("gamma-host", TypeError, "gamma must be a CUDA device array"),
    ("rm-shape", ValueError, "running_mean has shape"),
    ("rv-shape", ValueError, "running_var has shape"),
    ("rm-dtype", TypeError, "running_mean has dtype float64, expected float32"),
    ("rm-host", TypeError, "running_mean is updated in place"),
    ("rv-readonly", ValueError, "running_var is read-only"),
    ("rm-only", ValueError, "both"),
    ("momentum-neg", ValueError, "momentum"),
    ("momentum-big", ValueError, "momentum"),
    ("momentum-nan", ValueError, "momentum"),
    ("momentum-str", TypeError, "momentum must be a real number"),
    ("eps-neg", ValueError, "eps"),
    ("eps-nan", ValueError, "eps"),
    ("one-value", ValueError, "more than 1 value"),
    ("one-value-2d", ValueError, "more than 1 value"),
    ("infer-no-running", ValueError, "needs running_mean"),
])
def test_batch_norm_validation(case, exc, match):
    x, g, b, rm, rv = _bn_fakes()
    kw = {}
    if case == "x-1d":
        x = Fake((12,))
    elif case == "x-int":
        x = Fake((4, 3, 2, 2), np.int64)
    elif case == "gamma-shape":
        g = Fake((4,))
    elif case == "beta-shape":
        b = Fake((3, 1))
    elif case == "gamma-dtype":
        g = Fake((3,), np.float64)
    elif case == "gamma-host":
        g = np.ones(3, np.float32)
    elif case == "rm-shape":
        rm = Fake((4,))
    elif case == "rv-shape":
        rv = Fake((1, 3))
    elif case == "rm-dtype":
        rm = Fake((3,), np.float64)
    elif case == "rm-host":
        rm = np.zeros(3, np.float32)
    elif case == "rv-readonly":
        rv = Fake((3,), readonly=True)
    elif case == "rm-only":
        rv = None
    elif case.startswith("momentum"):
        kw["momentum"] = {"momentum-neg": -0.1, "momentum-big": 1.5,
                          "momentum-nan": float("nan"), "momentum-str": "0.1"}[case]
    elif case.startswith("eps"):
        kw["eps"] = -1e-5 if case == "eps-neg" else float("nan")
    elif case == "one-value":
        x = Fake((1, 3, 1, 1))
    elif case == "one-value-2d":
        x = Fake((1, 3))
    elif case == "infer-no-running":
        rm = rv = None
        kw["training"] = False
    with pytest.raises(exc, match=match):
        fastdl.batch_norm(x, g, b, rm, rv, **kw)


def test_batch_norm_backward_validation():
    x = Fake((4, 3, 2, 2))
    c = (3,)
    with pytest.raises(ValueError, match="dy has shape"):
        fastdl.batch_norm_backward(Fake((2, 3, 2, 2)), x, Fake(c), Fake(c), Fake(c))
    with pytest.raises(ValueError, match="mean has shape"):
        fastdl.batch_norm_backward(Fake(x.__cuda_array_interface__["shape"]), x, None,
                                   Fake((2,)), Fake(c))
    with pytest.raises(ValueError, match="inv_std has shape"):
        fastdl.batch_norm_backward(Fake((4, 3, 2, 2)), x, None, Fake(c), Fake((1, 3)))
    with pytest.raises(TypeError, match="same dtype"):
        fastdl.batch_norm_backward(Fake((4, 3, 2, 2), np.float64), x, None, Fake(c), Fake(c))
    with pytest.raises(ValueError, match="must have shape"):
        fastdl.batch_norm_backward(Fake((4,)), Fake((4,)), None, Fake(c), Fake(c))
    with pytest.raises(TypeError, match="mean must be a CUDA device array"):
        fastdl.batch_norm_backward(Fake((4, 3, 2, 2)), x, None, np.zeros(3, np.float32),
                                   Fake(c))


@pytest.mark.parametrize("case,exc,match", [
    ("ns-mismatch", ValueError, "normalized_shape"),
    ("ns-too-long", ValueError, "normalized_shape"),
    ("ns-empty", ValueError, "normalized_shape"),
    ("ns-float", TypeError, "normalized_shape"),
    ("gamma-shape", ValueError, "gamma"),
    ("beta-shape", ValueError, "beta"),
    ("beta-dtype", TypeError, "same dtype"),
    ("eps-neg", ValueError, "eps"),
    ("eps-nan", ValueError, "eps"),
    ("x-int", TypeError, "x must be float32 or float64"),
])
def test_layer_norm_validation(case, exc, match):
    x = Fake((3, 4, 5))
    args, kw = [x, (4, 5)], {}
    if case == "ns-mismatch":
        args[1] = (5, 4)
    elif case == "ns-too-long":
        args[1] = (2, 3, 4, 5)
    elif case == "ns-empty":
        args[1] = ()
    elif case == "ns-float":
        args[1] = 5.0
    elif case == "gamma-shape":
        kw["gamma"] = Fake((5,))
    elif case == "beta-shape":
        kw["beta"] = Fake((5, 4))
    elif case == "beta-dtype":
        kw["beta"] = Fake((4, 5), np.float64)
    elif case == "x-int":
        args[0] = Fake((3, 4, 5), np.int32)
    else:
        kw["eps"] = -1.0 if case == "eps-neg" else float("nan")
    with pytest.raises(exc, match=match):
        fastdl.layer_norm(*args, **kw)


def test_layer_norm_backward_validation():
    x = Fake((3, 4))
    with pytest.raises(ValueError, match="dy has shape"):
        fastdl.layer_norm_backward(Fake((2, 4)), x, 4, None, Fake((3,)), Fake((3,)))
    with pytest.raises(ValueError, match="mean has shape"):
        fastdl.layer_norm_backward(Fake((3, 4)), x, 4, None, Fake((2,)), Fake((3,)))
    with pytest.raises(ValueError, match="gamma has shape"):
        fastdl.layer_norm_backward(Fake((3, 4)), x, 4, Fake((3,)), Fake((3,)), Fake((3,)))
    with pytest.raises(ValueError, match="normalized_shape"):
        fastdl.layer_norm_backward(Fake((3, 4)), x, 5, None, Fake((3,)), Fake((3,)))
    with pytest.raises(TypeError, match="inv_std"):
        fastdl.layer_norm_backward(Fake((3, 4)), x, 4, None, Fake((3,)),
                                   Fake((3,), np.float64))


@no_gpu_only
def test_valid_calls_without_a_device_raise_runtime_error():
    x, g, b, rm, rv = _bn_fakes()
    c = (3,)
    calls = [
        lambda: fastdl.batch_norm(x, g, b, rm, rv),
        lambda: fastdl.batch_norm(x, None, None, rm, rv, training=False, return_stats=True),
        lambda: fastdl.batch_norm(Fake((0, 3)), None, None, None, None),
        lambda: fastdl.batch_norm_backward(Fake((4, 3, 2, 2)), x, g, Fake(c), Fake(c)),
        lambda: fastdl.layer_norm(Fake((3, 4, 5)), (4, 5), Fake((4, 5)), Fake((4, 5))),
        lambda: fastdl.layer_norm_backward(Fake((3, 4)), Fake((3, 4)), 4, Fake((4,)),
                                           Fake((3,)), Fake((3,))),
        # a strided x: the contiguous copy comes after the device check
        lambda: fastdl.layer_norm(Fake((3, 4), strides=(32, 4)), 4),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="no CUDA device"):
            call()


# --------------------------------------------------------------------------------------
# host shims: the kernels' phases on the CPU

def _err(a, ref):
    a = np.asarray(a, np.float64)
    ref = np.asarray(ref, np.float64)
    return float(np.max(np.abs(a - ref))) if a.size else 0.0


@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_host_batch_norm_training_matches_reference_and_cpu(shape, dtype, rng):
    x = (random_array(rng, shape) * 3 + 2).astype(dtype)
    C = shape[1]
    g = (rng.random(C) + 0.5).astype(dtype)
    b = random_array(rng, C, dtype)
    rm = random_array(rng, C, dtype)
    rv = (rng.random(C) + 0.5).astype(dtype)
    rm_cpu, rv_cpu = rm.copy(), rv.copy()
    y, mean, inv = _cuda._host_norm_batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5)
    y_ref, m_ref, v_ref = batch_norm_train_ref(x, g, b)
    rm_ref, rv_ref = running_update_ref(rm_cpu, rv_cpu, x, 0.1)
    assert_close(y, y_ref, dtype)
    assert_close(mean, m_ref, dtype, scale=np.abs(x).max())
    assert_close(inv, 1 / np.sqrt(v_ref + 1e-5), dtype)
    assert_close(rm, rm_ref, dtype, scale=np.abs(x).max())
    assert_close(rv, rv_ref, dtype)
    y_cpu, m_cpu, i_cpu = fastdl.batch_norm(x, g, b, rm_cpu, rv_cpu, return_stats=True)
    assert_close(y, y_cpu.astype(np.float64), dtype)
    assert_close(mean, m_cpu.astype(np.float64), dtype, scale=np.abs(x).max())
    assert_close(rv, rv_cpu.astype(np.float64), dtype)


@pytest.mark.parametrize("shape", [(7, 3), (3, 5, 4, 7), (2, 3, 33, 35)], ids=str)
def test_host_batch_norm_inference_and_optional_parameters(shape, dtype, rng):
    x = random_array(rng, shape, dtype)
    C = shape[1]
    g = (rng.random(C) + 0.5).astype(dtype)
    b = random_array(rng, C, dtype)
    rm = random_array(rng, C, dtype)
    rv = (rng.random(C) + 0.5).astype(dtype)
    before = (rm.copy(), rv.copy())
    y, mean, inv = _cuda._host_norm_batch_norm(x, g, b, rm, rv, False, 0.1, 1e-5)
    assert np.array_equal(rm, before[0]) and np.array_equal(rv, before[1])
    assert_close(y, batch_norm_infer_ref(x, g, b, rm, rv), dtype)
    assert np.array_equal(mean, rm)
    assert_close(inv, 1 / np.sqrt(rv.astype(np.float64) + 1e-5), dtype)
    y, _, _ = _cuda._host_norm_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)
    assert_close(y, batch_norm_train_ref(x, None, None)[0], dtype)


def test_host_batch_norm_strided_running_statistics(dtype, rng):
    x = random_array(rng, (6, 4, 5, 5), dtype)
    big_m = np.zeros(12, dtype)
    big_v = np.ones(12, dtype)
    rm, rv = big_m[::3], big_v[::-3]                  # stride 3 and a negative stride
    rm_ref, rv_ref = running_update_ref(rm.copy(), rv.copy(), x, 0.3)
    _cuda._host_norm_batch_norm(x, None, None, rm, rv, True, 0.3, 1e-5)
    assert_close(rm, rm_ref, dtype, scale=1)
    assert_close(rv, rv_ref, dtype)
    others = np.ones(12, bool)
    others[::3] = False
    assert (big_m[others] == 0).all()


def test_host_batch_norm_float32_large_offset(rng):
    # mean 1000, std 1: the shifted sums must not lose the variance to cancellation
    x = (random_array(rng, (16, 4, 20, 20)) + 1000.0).astype(np.float32)
    _, _, inv = _cuda._host_norm_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)
    v_ref = batch_norm_train_ref(x, None, None)[2]
    assert_close(inv, 1 / np.sqrt(v_ref + 1e-5), np.float32)
    # an outlier leading a thread's first chunk (the shift): still accurate
    x = (random_array(rng, (64, 2, 64)) + 3.0)
    x[0, :, :8] = 1e6
    _, mean, inv = _cuda._host_norm_batch_norm(x, None, None, None, None, True, 0.1, 0.0)
    _, m_ref, v_ref = batch_norm_train_ref(x, None, None, eps=0.0)
    np.testing.assert_allclose(mean, m_ref, rtol=1e-13)
    np.testing.assert_allclose(inv, 1 / np.sqrt(v_ref), rtol=1e-12)


def test_host_batch_norm_special_values_and_empty(dtype, rng):
    x = random_array(rng, (4, 3, 2, 2), dtype)
    x[1, 1, 0, 1] = np.nan
    x[2, 2, 1, 1] = np.inf
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    y, _, _ = _cuda._host_norm_batch_norm(x, None, None, rm, rv, True, 0.1, 1e-5)
    assert np.isnan(y[:, 1]).all() and np.isnan(y[:, 2]).all()
    with np.errstate(invalid="ignore"):
        assert_close(y[:, 0], batch_norm_train_ref(x, None, None)[0][:, 0], dtype)
    assert np.isnan(rm[1]) and np.isnan(rv[1]) and np.isfinite(rm[0])
    c = np.full((5, 2), 3.0, dtype)
    y, _, _ = _cuda._host_norm_batch_norm(c, None, np.array([1.0, 2.0], dtype), None, None,
                                          True, 0.1, 1e-5)
    assert_close(y, np.tile([1.0, 2.0], (5, 1)), dtype)
    rm, rv = np.full(3, 0.5, dtype), np.full(3, 2.0, dtype)
    y, mean, inv = _cuda._host_norm_batch_norm(np.empty((0, 3, 4, 4), dtype), None, None, rm,
                                               rv, True, 0.1, 1e-5)
    assert y.shape == (0, 3, 4, 4) and np.isnan(mean).all() and np.isnan(inv).all()
    assert (rm == 0.5).all() and (rv == 2.0).all()
    y, mean, inv = _cuda._host_norm_batch_norm(np.empty((0, 3), dtype), None, None, rm, rv,
                                               False, 0.1, 1e-5)
    assert (mean == 0.5).all()
    assert_close(inv, np.full(3, 1 / np.sqrt(2.0 + 1e-5)), dtype)


@pytest.mark.parametrize("shape", [(7, 3), (1, 7, 3, 3), (5, 7, 4, 5), (2, 3, 33, 35),
                                   (1000, 33), (4, 3, 1, 1001), (300, 2, 7, 7)], ids=str)
@pytest.mark.parametrize("with_gamma", [True, False])
def test_host_batch_norm_backward_matches_reference_and_cpu(shape, with_gamma, dtype, rng):
    x = random_array(rng, shape, dtype)
    dy = random_array(rng, shape, dtype)
    C = shape[1]
    g = (rng.random(C) + 0.5).astype(dtype) if with_gamma else None
    _, mean, inv = fastdl.batch_norm(x, g, None, None, None, return_stats=True)
    dx, dg, db = _cuda._host_norm_batch_norm_backward(dy, x, g, mean, inv)
    dx_ref, dg_ref, db_ref = batch_norm_backward_ref(dy, x, g, mean, inv)
    m = x.size // C
    gmax = 1.0 if g is None else np.abs(g).max()
    assert_close(dx, dx_ref, dtype, scale=np.abs(dy).max() * gmax * inv.max(), terms=m)
    assert_close(dg, dg_ref, dtype, scale=np.abs(dy).sum() / C * 4, terms=1)
    assert_close(db, db_ref, dtype, scale=np.abs(dy).sum() / C, terms=1)
    dx_cpu, dg_cpu, db_cpu = fastdl.batch_norm_backward(dy, x, g, mean, inv)
    assert _err(dx, dx_cpu) <= 1e-5 * np.abs(dx_cpu).max() * (10 if dtype == np.float32 else 1e-7)
    assert_close(db, db_cpu.astype(np.float64), dtype, scale=np.abs(dy).sum() / C, terms=1)


def test_host_batch_norm_backward_empty(dtype):
    e = np.empty((0, 4), dtype)
    dx, dg, db = _cuda._host_norm_batch_norm_backward(e, e, None, np.zeros(4, dtype),
                                                      np.ones(4, dtype))
    assert dx.shape == (0, 4) and (dg == 0).all() and (db == 0).all()


@pytest.mark.parametrize("affine", ["both", "gamma", "beta", "none"])
@pytest.mark.parametrize("shape,ns", LN_CASES, ids=str)
def test_host_layer_norm_matches_reference_and_cpu(shape, ns, affine, dtype, rng):
    x = (random_array(rng, shape) * 2 + 3).astype(dtype)
    nshape = (ns,) if isinstance(ns, int) else ns
    g = (rng.random(nshape) + 0.5).astype(dtype) if affine in ("both", "gamma") else None
    b = random_array(rng, nshape, dtype) if affine in ("both", "beta") else None
    y, mean, inv = _cuda._host_norm_layer_norm(x, ns, g, b, 1e-5)
    y_ref, m_ref, i_ref = layer_norm_ref(x, nshape, g, b)
    assert_close(y, y_ref, dtype)
    assert_close(mean, m_ref, dtype, scale=np.abs(x).max())
    assert_close(inv, i_ref, dtype)
    y_cpu, m_cpu, i_cpu = fastdl.layer_norm(x, ns, g, b, return_stats=True)
    assert_close(y, y_cpu.astype(np.float64), dtype)
    assert_close(inv, i_cpu.astype(np.float64), dtype)


@pytest.mark.parametrize("with_gamma", [True, False])
@pytest.mark.parametrize("shape,ns", LN_CASES + [((300, 33), 33)], ids=str)
def test_host_layer_norm_backward_matches_reference_and_cpu(shape, ns, with_gamma, dtype, rng):
    nshape = (ns,) if isinstance(ns, int) else ns
    x = random_array(rng, shape, dtype)
    dy = random_array(rng, shape, dtype)
    g = (rng.random(nshape) + 0.5).astype(dtype) if with_gamma else None
    _, mean, inv = fastdl.layer_norm(x, ns, g, None, return_stats=True)
    dx, dg, db = _cuda._host_norm_layer_norm_backward(dy, x, ns, g, mean, inv)
    dx_ref, dg_ref, db_ref = layer_norm_backward_ref(dy, x, nshape, g, mean, inv)
    d = int(np.prod(nshape))
    assert_close(dx, dx_ref, dtype, scale=np.abs(dy).max() * 2 * inv.max(), terms=d)
    if with_gamma:
        rows = x.size // d
        assert_close(dg, dg_ref, dtype, scale=np.abs(dy).max() * 4, terms=rows)
        assert_close(db, db_ref, dtype, scale=np.abs(dy).max(), terms=rows)
        dx_c, dg_c, db_c = fastdl.layer_norm_backward(dy, x, ns, g, mean, inv)
        assert_close(db, db_c.astype(np.float64), dtype, scale=np.abs(dy).max(), terms=rows)
    else:
        assert dg is None and db is None


def test_host_layer_norm_special_and_empty(dtype, rng):
    x = random_array(rng, (3, 4), dtype)
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    y, _, _ = _cuda._host_norm_layer_norm(x, 4, None, None, 1e-5)
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()
    assert_close(y[0], layer_norm_ref(x[:1], (4,))[0][0], dtype)
    y, m, inv = _cuda._host_norm_layer_norm(np.empty((0, 5), dtype), 5, None, None, 1e-5)
    assert y.shape == (0, 5) and m.shape == (0,)
    y, m, inv = _cuda._host_norm_layer_norm(np.empty((3, 0), dtype), 0, None, None, 1e-5)
    assert y.shape == (3, 0) and np.isnan(m).all() and np.isnan(inv).all()
    c = np.full((2, 5), 7.0, dtype)
    assert_close(_cuda._host_norm_layer_norm(c, 5, None, None, 1e-5)[0], np.zeros((2, 5)),
                 dtype)
    dx, dg, db = _cuda._host_norm_layer_norm_backward(
        np.empty((0, 4), dtype), np.empty((0, 4), dtype), 4, np.ones(4, dtype),
        np.empty(0, dtype), np.empty(0, dtype))
    assert dx.shape == (0, 4) and (dg == 0).all() and (db == 0).all()


def test_host_shims_are_deterministic(rng):
    x = random_array(rng, (8, 16, 33, 31), np.float32)
    a = _cuda._host_norm_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)
    b = _cuda._host_norm_batch_norm(x.copy(), None, None, None, None, True, 0.1, 1e-5)
    assert all(p.tobytes() == q.tobytes() for p, q in zip(a, b))


@pytest.mark.parametrize("N,C,S", [(7, 3, 1), (1000, 33, 1), (2, 3, 1155), (64, 64, 3136),
                                   (32, 128, 784), (1, 1, 1 << 20), (256, 1024, 49),
                                   (4, 3, 31), (4, 3, 32), (3, 100000, 1)])
def test_norm_geometry_covers_every_value(N, C, S):
    """Every value of a channel is in exactly one block's range, whatever the split."""
    g = _cuda._host_norm_geometry(N, C, S)
    M = N * S
    if g["rows"]:
        assert S < 32
        rl, rs = g["length"], g["parts"]
        assert rs >= 1 and (rs - 1) * rl < N <= rs * rl and g["items"] == S * rs
    else:
        assert S >= 32
        length, parts = g["length"], g["parts"]
        assert length % 8 == 0 and (parts - 1) * length < M <= parts * length
        assert g["items"] == parts
        # block count: at least ~1024 in all, at least 2048 values per block when possible
        assert C * parts >= min(1024, C * -(-M // 2048))


def test_fastdiv_is_exact():
    rng = np.random.default_rng(5)
    edges = np.array([0, 1, 2, 3, 7, 8, 9, 2**16 - 1, 2**16, 2**31 - 1, 2**31, 2**31 + 1,
                      2**32 - 2, 2**32 - 1], np.uint64)
    divisors = [1, 2, 3, 5, 7, 9, 31, 32, 33, 49, 100, 196, 784, 1000, 3136, 65535, 65536,
                2**20 + 7, 2**31 - 1, 2**31, 2**31 + 11, 2**32 - 1]
    for d in divisors:
        n = np.concatenate([edges, rng.integers(0, 2**32, 20000, dtype=np.uint64),
                            (np.arange(1, 200, dtype=np.uint64)[:, None] * d
                             + np.array([-1, 0, 1], np.int64)[None, :]).ravel()
                            .astype(np.uint64)])
        n = n[n < 2**32].astype(np.uint32)
        assert np.array_equal(_cuda._host_norm_fastdiv(n, d), n // np.uint32(d)), d


# --------------------------------------------------------------------------------------
# device tests

class DevView:
    """A device view with explicit byte strides into another device array's memory."""

    def __init__(self, owner, shape, strides, offset=0):
        self.owner = owner
        cai = owner.__cuda_array_interface__
        self.__cuda_array_interface__ = {
            "shape": tuple(shape), "typestr": cai["typestr"],
            "data": (cai["data"][0] + offset, False), "version": 3,
            "strides": tuple(strides), "stream": cai.get("stream")}


def to_dev(x, kind="C"):
    """x on the device, in the memory layout `kind` of conftest.layout (views keep their
    strides: the bytes of the host array's whole buffer are copied)."""
    v = layout(np.asarray(x), kind)
    root = v
    while isinstance(root.base, np.ndarray):
        root = root.base
    if v is root and v.flags.c_contiguous:
        return fastdl.cuda.to_device(v)
    flat = root.reshape(-1, order="A")
    owner = fastdl.cuda.to_device(flat)
    return DevView(owner, v.shape, v.strides, v.ctypes.data - root.ctypes.data)


def host(a):
    return fastdl.cuda.to_host(a)


@needs_gpu
@pytest.mark.parametrize("kind", ["C", "F", "strided", "negative"])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_gpu_batch_norm_training_matches_cpu(shape, kind, dtype, rng):
    x = (random_array(rng, shape) * 3 + 2).astype(dtype)
    C = shape[1]
    g = (rng.random(C) + 0.5).astype(dtype)
    b = random_array(rng, C, dtype)
    rm = random_array(rng, C, dtype)
    rv = (rng.random(C) + 0.5).astype(dtype)
    d_rm, d_rv = fastdl.cuda.to_device(rm), fastdl.cuda.to_device(rv)
    y, mean, inv = fastdl.batch_norm(to_dev(x, kind), to_dev(g), to_dev(b), d_rm, d_rv,
                                     return_stats=True)
    assert isinstance(y, fastdl.cuda.DeviceArray)
    y_c, m_c, i_c = fastdl.batch_norm(x, g, b, rm, rv, return_stats=True)
    assert host(y).dtype == dtype and host(y).shape == shape
    assert_close(host(y), y_c.astype(np.float64), dtype)
    assert_close(host(mean), m_c.astype(np.float64), dtype, scale=np.abs(x).max())
    assert_close(host(inv), i_c.astype(np.float64), dtype)
    assert_close(host(d_rm), rm.astype(np.float64), dtype, scale=np.abs(x).max())
    assert_close(host(d_rv), rv.astype(np.float64), dtype)
    y_ref = batch_norm_train_ref(x, g, b)[0]
    assert_close(host(y), y_ref, dtype)


@needs_gpu
def test_gpu_batch_norm_deterministic_and_running_steps(dtype, rng):
    x = random_array(rng, (16, 8, 30, 30), dtype)
    dx = to_dev(x)
    a = host(fastdl.batch_norm(dx, None, None, None, None))
    b = host(fastdl.batch_norm(dx, None, None, None, None))
    assert a.tobytes() == b.tobytes()
    C = 6
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    d_rm, d_rv = to_dev(rm), to_dev(rv)
    for step, momentum in enumerate([0.1, 0.5, 1.0, 0.0, 0.3]):
        xs = (random_array(rng, (4, C, 3, 5)) * (step + 1) + step).astype(dtype)
        fastdl.batch_norm(to_dev(xs), None, None, d_rm, d_rv, momentum=momentum)
        fastdl.batch_norm(xs, None, None, rm, rv, momentum=momentum)
        assert_close(host(d_rm), rm.astype(np.float64), dtype, scale=10)
        assert_close(host(d_rv), rv.astype(np.float64), dtype)


@needs_gpu
def test_gpu_batch_norm_inference_special_and_empty(dtype, rng):
    x = random_array(rng, (3, 5, 4, 7), dtype)
    g = (rng.random(5) + 0.5).astype(dtype)
    b = random_array(rng, 5, dtype)
    rm = random_array(rng, 5, dtype)
    rv = (rng.random(5) + 0.5).astype(dtype)
    d_rm, d_rv = to_dev(rm), to_dev(rv)
    y, mean, inv = fastdl.batch_norm(to_dev(x, "strided"), to_dev(g), to_dev(b), d_rm, d_rv,
                                     training=False, return_stats=True)
    assert np.array_equal(host(d_rm), rm) and np.array_equal(host(mean), rm)
    assert_close(host(y), batch_norm_infer_ref(x, g, b, rm, rv), dtype)
    # NaN / inf channels
    x = random_array(rng, (4, 3, 2, 2), dtype)
    x[1, 1, 0, 1] = np.nan
    x[2, 2, 1, 1] = np.inf
    d_rm, d_rv = to_dev(np.zeros(3, dtype)), to_dev(np.ones(3, dtype))
    y = host(fastdl.batch_norm(to_dev(x), None, None, d_rm, d_rv))
    assert np.isnan(y[:, 1]).all() and np.isnan(y[:, 2]).all()
    with np.errstate(invalid="ignore"):
        assert_close(y[:, 0], batch_norm_train_ref(x, None, None)[0][:, 0], dtype)
    assert np.isnan(host(d_rm)[1]) and np.isfinite(host(d_rm)[0])
    # empty
    d_rm, d_rv = to_dev(np.full(3, 0.5, dtype)), to_dev(np.full(3, 2.0, dtype))
    y, mean, inv = fastdl.batch_norm(to_dev(np.empty((0, 3, 4, 4), dtype)), None, None, d_rm,
                                     d_rv, return_stats=True)
    assert host(y).shape == (0, 3, 4, 4) and np.isnan(host(mean)).all()
    assert (host(d_rm) == 0.5).all()


@needs_gpu
@pytest.mark.parametrize("kind", ["C", "F", "strided"])
@pytest.mark.parametrize("shape", [(7, 3), (1, 7, 3, 3), (5, 7, 4, 5), (2, 3, 33, 35),
                                   (1000, 33), (4, 3, 1, 1001), (300, 2, 7, 7)], ids=str)
def test_gpu_batch_norm_backward_matches_cpu(shape, kind, dtype, rng):
    x = random_array(rng, shape, dtype)
    dy = random_array(rng, shape, dtype)
    C = shape[1]
    g = (rng.random(C) + 0.5).astype(dtype)
    _, mean, inv = fastdl.batch_norm(x, g, None, None, None, return_stats=True)
    dx, dg, db = fastdl.batch_norm_backward(to_dev(dy, kind), to_dev(x, kind), to_dev(g),
                                            to_dev(mean), to_dev(inv))
    dx_ref, dg_ref, db_ref = batch_norm_backward_ref(dy, x, g, mean, inv)
    m = x.size // C
    assert_close(host(dx), dx_ref, dtype, scale=np.abs(dy).max() * np.abs(g).max() * inv.max(),
                 terms=m)
    assert_close(host(dg), dg_ref, dtype, scale=np.abs(dy).sum() / C * 4, terms=1)
    assert_close(host(db), db_ref, dtype, scale=np.abs(dy).sum() / C, terms=1)
    e = to_dev(np.empty((0, C), dtype))
    dx, dg, db = fastdl.batch_norm_backward(e, e, None, to_dev(mean), to_dev(inv))
    assert host(dx).shape == (0, C) and (host(dg) == 0).all() and (host(db) == 0).all()


@needs_gpu
@pytest.mark.parametrize("affine", ["both", "gamma", "beta", "none"])
@pytest.mark.parametrize("shape,ns", LN_CASES, ids=str)
def test_gpu_layer_norm_matches_cpu(shape, ns, affine, dtype, rng):
    x = (random_array(rng, shape) * 2 + 3).astype(dtype)
    nshape = (ns,) if isinstance(ns, int) else ns
    g = (rng.random(nshape) + 0.5).astype(dtype) if affine in ("both", "gamma") else None
    b = random_array(rng, nshape, dtype) if affine in ("both", "beta") else None
    for kind in ("C", "strided"):
        y, mean, inv = fastdl.layer_norm(to_dev(x, kind), ns, None if g is None else to_dev(g),
                                         None if b is None else to_dev(b), return_stats=True)
        y_c, m_c, i_c = fastdl.layer_norm(x, ns, g, b, return_stats=True)
        assert_close(host(y), y_c.astype(np.float64), dtype)
        assert_close(host(mean), m_c.astype(np.float64), dtype, scale=np.abs(x).max())
        assert_close(host(inv), i_c.astype(np.float64), dtype)
        assert_close(host(y), layer_norm_ref(x, nshape, g, b)[0], dtype)


@needs_gpu
@pytest.mark.parametrize("with_gamma", [True, False])
@pytest.mark.parametrize("shape,ns", LN_CASES + [((300, 33), 33), ((8, 512, 768), 768)],
                         ids=str)
def test_gpu_layer_norm_backward_matches_cpu(shape, ns, with_gamma, dtype, rng):
    nshape = (ns,) if isinstance(ns, int) else ns
    x = random_array(rng, shape, dtype)
    dy = random_array(rng, shape, dtype)
    g = (rng.random(nshape) + 0.5).astype(dtype) if with_gamma else None
    _, mean, inv = fastdl.layer_norm(x, ns, g, None, return_stats=True)
    dx, dg, db = fastdl.layer_norm_backward(to_dev(dy, "F"), to_dev(x), ns,
                                            None if g is None else to_dev(g), to_dev(mean),
                                            to_dev(inv))
    dx_ref, dg_ref, db_ref = layer_norm_backward_ref(dy, x, nshape, g, mean, inv)
    d = int(np.prod(nshape))
    assert_close(host(dx), dx_ref, dtype, scale=np.abs(dy).max() * 2 * inv.max(), terms=d)
    if with_gamma:
        rows = x.size // d
        assert_close(host(dg), dg_ref, dtype, scale=np.abs(dy).max() * 4, terms=rows)
        assert_close(host(db), db_ref, dtype, scale=np.abs(dy).max(), terms=rows)
    else:
        assert dg is None and db is None


@needs_gpu
def test_gpu_layer_norm_special_and_empty(dtype, rng):
    x = random_array(rng, (3, 4), dtype)
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    y = host(fastdl.layer_norm(to_dev(x), 4))
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()
    y, m, inv = fastdl.layer_norm(to_dev(np.empty((3, 0), dtype)), 0, return_stats=True)
    assert host(y).shape == (3, 0) and np.isnan(host(m)).all()
    y = fastdl.layer_norm(to_dev(np.empty((0, 5), dtype)), 5)
    assert host(y).shape == (0, 5)


@needs_gpu
def test_gpu_norm_results_follow_the_input_kind_torch(rng):
    # torch's __cuda_array_interface__ (version 2) names no stream: the work goes to the
    # default stream, so this test stays on torch's default stream
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    x = random_array(rng, (8, 4, 9, 9), np.float32)
    tx = torch.from_numpy(x).cuda()
    y, mean, inv = fastdl.batch_norm(tx, None, None, None, None, return_stats=True)
    ly = fastdl.layer_norm(tx, (9, 9))
    dx, dg, db = fastdl.batch_norm_backward(tx, tx, None, mean, inv)
    torch.cuda.synchronize()
    assert isinstance(y, torch.Tensor) and y.device == tx.device
    assert_close(y.cpu().numpy(), batch_norm_train_ref(x, None, None)[0], np.float32)
    assert_close(ly.cpu().numpy(), layer_norm_ref(x, (9, 9))[0], np.float32)
    assert isinstance(dg, torch.Tensor)


@needs_gpu
def test_gpu_norm_results_follow_the_input_kind_and_stream_cupy(rng):
    cupy = pytest.importorskip("cupy")
    x = random_array(rng, (8, 4, 9, 9), np.float64)
    with cupy.cuda.Stream() as s:
        cx = cupy.asarray(x)
        y = fastdl.batch_norm(cx, None, None, None, None)
        ly, m, inv = fastdl.layer_norm(cx, 9, return_stats=True)
        dx, dg, db = fastdl.layer_norm_backward(cx, cx, 9, cupy.ones(9), m, inv)
    s.synchronize()
    assert isinstance(y, cupy.ndarray) and isinstance(dg, cupy.ndarray)
    assert_close(cupy.asnumpy(y), batch_norm_train_ref(x, None, None)[0], np.float64)
    assert_close(cupy.asnumpy(ly), layer_norm_ref(x, (9,))[0], np.float64)


@needs_gpu
def test_gpu_norm_odd_sizes_sweep(rng):
    """Many small shapes around the walks' boundaries (chunks of 8, S = 31/32, warps)."""
    for N, C, S in itertools.product([1, 2, 7, 33], [1, 3, 32], [1, 5, 31, 32, 33, 1000]):
        if N * S == 1:
            continue
        x = random_array(rng, (N, C, S), np.float32)
        y, m, inv = fastdl.batch_norm(to_dev(x), None, None, None, None, return_stats=True)
        y_c, m_c, i_c = fastdl.batch_norm(x, None, None, None, None, return_stats=True)
        assert_close(host(y), y_c.astype(np.float64), np.float32)
        ly = fastdl.layer_norm(to_dev(x), S)
        assert_close(host(ly), fastdl.layer_norm(x, S).astype(np.float64), np.float32)
