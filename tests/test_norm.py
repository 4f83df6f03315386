"""batch_norm, layer_norm and their backward passes: references, layouts (NCHW, NHWC views,
Fortran, strided, negative), running statistics over several steps (and against PyTorch),
special values, threads (bitwise), bad input (nothing written), finite-difference
gradients."""

import numpy as np
import pytest

import fastdl
from conftest import (assert_close, assert_unchanged, layout, random_array, requires_openmp,
                      snapshot)
from reference_norm_pool import (batch_norm_backward_ref, batch_norm_infer_ref,
                                 batch_norm_train_ref, layer_norm_backward_ref, layer_norm_ref,
                                 running_update_ref)

from fastdl import batch_norm, batch_norm_backward, layer_norm, layer_norm_backward

BN_SHAPES = [(7, 3), (2, 1), (1, 7, 3, 3), (3, 33, 1, 1), (5, 7, 4, 5), (2, 3, 33, 35),
             (1000, 33), (4, 3, 1, 1001), (130, 3, 4, 4), (70, 2, 3, 5),
             (33, 5, 16, 32)]
LAYOUTS = ("C", "F", "strided", "negative", "transposed-view", "channels-last")


def _layout(x, kind):
    if kind == "channels-last":
        if x.ndim != 4:
            return layout(x, "C")
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return layout(x, kind)


def _params(rng, C, dtype):
    g = (rng.random(C) + 0.5).astype(dtype)
    b = random_array(rng, C, dtype)
    return g, b


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
# batch_norm forward

@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_training_matches_reference(shape, kind, dtype, rng):
    x = _layout((random_array(rng, shape) * 3 + 2).astype(dtype), kind)
    g, b = _params(rng, shape[1], dtype)
    rm = random_array(rng, shape[1], dtype)
    rv = (rng.random(shape[1]) + 0.5).astype(dtype)
    y_ref, m_ref, v_ref = batch_norm_train_ref(x, g, b)
    rm_ref, rv_ref = running_update_ref(rm, rv, x, 0.1)
    before = snapshot(x, g, b)
    y, mean, inv_std = batch_norm(x, g, b, rm, rv, return_stats=True)
    assert_unchanged(before, x, g, b)
    assert_close(y, y_ref, dtype)
    assert_close(mean, m_ref, dtype, scale=np.abs(x).max())
    assert_close(inv_std, 1 / np.sqrt(v_ref + 1e-5), dtype)
    assert_close(rm, rm_ref, dtype, scale=np.abs(x).max())
    assert_close(rv, rv_ref, dtype)


def test_batch_norm_keeps_channels_last_layout(rng):
    x = _layout(random_array(rng, (4, 8, 5, 6), np.float32), "channels-last")
    y = batch_norm(x, None, None, None, None)
    assert y.strides == x.strides


@pytest.mark.parametrize("shape", [(16, 5), (3, 4, 6, 7)], ids=str)
def test_batch_norm_optional_affine_and_no_running(shape, dtype, rng):
    x = random_array(rng, shape, dtype)
    y = batch_norm(x, None, None, None, None)
    assert_close(y, batch_norm_train_ref(x, None, None)[0], dtype)


def test_batch_norm_float32_large_offset(rng):
    # mean 1000, std 1: the statistics must not lose the variance to cancellation
    x = (random_array(rng, (16, 4, 20, 20)) + 1000.0).astype(np.float32)
    g, b = _params(rng, 4, np.float32)
    y, mean, inv_std = batch_norm(x, g, b, None, None, return_stats=True)
    y_ref, m_ref, v_ref = batch_norm_train_ref(x, g, b)
    assert_close(inv_std, 1 / np.sqrt(v_ref + 1e-5), np.float32)
    # y's own rounding: x - mean is exact-ish, but x itself carries 1000 * 6e-8 error
    assert np.max(np.abs(y - y_ref)) < 1e-3


@pytest.mark.parametrize("kind", ["C", "channels-last", "strided"])
def test_batch_norm_inference(kind, dtype, rng):
    x = _layout(random_array(rng, (3, 5, 4, 7), dtype), kind)
    g, b = _params(rng, 5, dtype)
    rm = random_array(rng, 5, dtype)
    rv = (rng.random(5) + 0.5).astype(dtype)
    before = snapshot(rm, rv)
    y, mean, inv_std = batch_norm(x, g, b, rm, rv, training=False, return_stats=True)
    assert_unchanged(before, rm, rv)
    assert_close(y, batch_norm_infer_ref(x, g, b, rm, rv), dtype)
    assert_close(mean, rm, dtype)
    assert_close(inv_std, 1 / np.sqrt(rv.astype(np.float64) + 1e-5), dtype)
    # a single value per channel is fine in inference
    y1 = batch_norm(x[:1, :, :1, :1], g, b, rm, rv, training=False)
    assert_close(y1, batch_norm_infer_ref(x[:1, :, :1, :1], g, b, rm, rv), dtype)


def test_batch_norm_running_statistics_over_steps(dtype, rng):
    C = 6
    rm = np.zeros(C, dtype)
    rv = np.ones(C, dtype)
    rm_ref, rv_ref = rm.astype(np.float64), rv.astype(np.float64)
    for step, momentum in enumerate([0.1, 0.1, 0.5, 1.0, 0.0, 0.3]):
        x = (random_array(rng, (4, C, 3, 5)) * (step + 1) + step).astype(dtype)
        batch_norm(x, None, None, rm, rv, momentum=momentum)
        rm_ref, rv_ref = running_update_ref(rm_ref, rv_ref, x, momentum)
        assert_close(rm, rm_ref, dtype, scale=10)
        assert_close(rv, rv_ref, dtype)


@pytest.mark.parametrize("shape", [(8, 5), (4, 6, 3, 5), (2, 3, 1, 1)], ids=str)
def test_batch_norm_matches_torch_over_steps(shape, dtype, rng):
    torch = pytest.importorskip("torch")
    C = shape[1]
    g, b = _params(rng, C, dtype)
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    trm, trv = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    for step in range(4):
        x = (random_array(rng, shape) * 2 + step).astype(dtype)
        y = batch_norm(x, g, b, rm, rv, momentum=0.2)
        ty = torch.nn.functional.batch_norm(
            torch.from_numpy(x.astype(np.float64)), trm, trv, torch.from_numpy(g.astype(float)),
            torch.from_numpy(b.astype(float)), training=True, momentum=0.2, eps=1e-5)
        assert_close(y, ty.numpy(), dtype)
        assert_close(rm, trm.numpy(), dtype, scale=5)
        assert_close(rv, trv.numpy(), dtype)
    x = random_array(rng, shape, dtype)
    y = batch_norm(x, g, b, rm, rv, training=False)
    ty = torch.nn.functional.batch_norm(torch.from_numpy(x.astype(np.float64)), trm, trv,
                                        torch.from_numpy(g.astype(float)),
                                        torch.from_numpy(b.astype(float)), training=False)
    assert_close(y, ty.numpy(), dtype)


def test_batch_norm_special_values(dtype, rng):
    x = random_array(rng, (4, 3, 2, 2), dtype)
    x[1, 1, 0, 1] = np.nan
    x[2, 2, 1, 1] = np.inf
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    y = batch_norm(x, None, None, rm, rv)
    assert np.isnan(y[:, 1]).all() and np.isnan(y[:, 2]).all()
    with np.errstate(invalid="ignore"):
        assert_close(y[:, 0], batch_norm_train_ref(x, None, None)[0][:, 0], dtype)
    assert np.isnan(rm[1]) and np.isnan(rv[1]) and np.isfinite(rm[0])
    # a constant channel: variance 0, y = beta
    c = np.full((5, 2), 3.0, dtype)
    assert_close(batch_norm(c, None, np.array([1.0, 2.0], dtype), None, None),
                 np.tile([1.0, 2.0], (5, 1)), dtype)


def test_batch_norm_empty(dtype):
    x = np.empty((0, 3, 4, 4), dtype)
    rm, rv = np.full(3, 0.5, dtype), np.full(3, 2.0, dtype)
    before = snapshot(rm, rv)
    y, mean, inv_std = batch_norm(x, None, None, rm, rv, return_stats=True)
    assert y.shape == x.shape and y.dtype == dtype
    assert np.isnan(mean).all() and np.isnan(inv_std).all()
    assert_unchanged(before, rm, rv)
    y = batch_norm(np.empty((4, 0), dtype), None, None, None, None)
    assert y.shape == (4, 0)
    y = batch_norm(x, None, None, rm, rv, training=False)
    assert y.shape == x.shape


def test_batch_norm_dtype_promotion(rng):
    x = random_array(rng, (4, 3), np.float32)
    g = np.ones(3, np.float64)
    y = batch_norm(x, g, None, None, None)
    assert y.dtype == np.float64
    y = batch_norm(np.arange(12).reshape(4, 3), None, None, None, None)
    assert y.dtype == np.float64


@requires_openmp
@pytest.mark.parametrize("shape,kind", [((8, 16, 32, 33), "C"), ((8, 16, 32, 33), "channels-last"),
                                        ((4096, 24), "C"), ((3000, 17), "F"),
                                        ((2, 3, 200, 300), "C"), ((200, 48, 4, 4), "C"),
                                        ((300, 8, 3, 5), "strided")], ids=str)
def test_batch_norm_thread_count_bitwise(shape, kind, dtype, rng):
    x = _layout(random_array(rng, shape, dtype) + 1, kind)
    g, b = _params(rng, shape[1], dtype)
    dy = random_array(rng, shape, dtype)
    res = []
    for n in (1, 2):
        with fastdl.threads(n):
            rm, rv = np.zeros(shape[1], dtype), np.ones(shape[1], dtype)
            y, m, inv = batch_norm(x, g, b, rm, rv, return_stats=True)
            dx, dg, db = batch_norm_backward(dy, x, g, m, inv)
            res.append([a.tobytes() for a in (y, m, inv, rm, rv, dx, dg, db)])
    assert res[0] == res[1]


# --------------------------------------------------------------------------------------
# batch_norm backward

@pytest.mark.parametrize("kind", ["C", "F", "strided", "channels-last", "negative"])
@pytest.mark.parametrize("shape", [(7, 3), (1, 7, 3, 3), (5, 7, 4, 5), (2, 3, 33, 35),
                                   (1000, 33), (130, 3, 4, 4), (70, 2, 3, 5), (9, 4, 1, 1),
                                   (33, 5, 16, 32)], ids=str)
def test_batch_norm_backward_matches_reference(shape, kind, dtype, rng):
    x = _layout(random_array(rng, shape, dtype), kind)
    dy = _layout(random_array(rng, shape, dtype), "C" if kind == "F" else "F")
    g, b = _params(rng, shape[1], dtype)
    _, mean, inv_std = batch_norm(x, g, b, None, None, return_stats=True)
    before = snapshot(dy, x, g, mean, inv_std)
    dx, dg, db = batch_norm_backward(dy, x, g, mean, inv_std)
    assert_unchanged(before, dy, x, g, mean, inv_std)
    dx_ref, dg_ref, db_ref = batch_norm_backward_ref(dy, x, g, mean, inv_std)
    m = x.size // shape[1]
    assert_close(dx, dx_ref, dtype, scale=np.abs(dy).max() * np.abs(g).max() * inv_std.max(),
                 terms=m)
    assert_close(dg, dg_ref, dtype, scale=np.abs(dy).sum() / shape[1] * 4, terms=1)
    assert_close(db, db_ref, dtype, scale=np.abs(dy).sum() / shape[1], terms=1)


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 2, 3)], ids=str)
def test_batch_norm_backward_gradcheck(shape, rng):
    x = random_array(rng, shape)
    g, b = _params(rng, shape[1], np.float64)
    w = random_array(rng, shape)            # loss = sum(w * y)

    def loss():
        return float(np.sum(w * batch_norm(x, g, b, None, None)))
    _, mean, inv_std = batch_norm(x, g, b, None, None, return_stats=True)
    dx, dg, db = batch_norm_backward(w, x, g, mean, inv_std)
    np.testing.assert_allclose(dx, _numeric_grad(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dg, _numeric_grad(loss, g), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(db, _numeric_grad(loss, b), rtol=1e-5, atol=1e-7)


def test_batch_norm_backward_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = random_array(rng, (4, 5, 3, 6))
    g, b = _params(rng, 5, np.float64)
    dy = random_array(rng, x.shape)
    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(g, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    torch.nn.functional.batch_norm(tx, None, None, tg, tb, training=True).backward(
        torch.from_numpy(dy))
    _, mean, inv_std = batch_norm(x, g, b, None, None, return_stats=True)
    dx, dg, db = batch_norm_backward(dy, x, g, mean, inv_std)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dg, tg.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_batch_norm_backward_without_gamma_and_empty(dtype, rng):
    x = random_array(rng, (6, 4), dtype)
    dy = random_array(rng, (6, 4), dtype)
    _, mean, inv_std = batch_norm(x, None, None, None, None, return_stats=True)
    dx, dg, db = batch_norm_backward(dy, x, None, mean, inv_std)
    ref = batch_norm_backward_ref(dy, x, None, mean, inv_std)
    assert_close(dx, ref[0], dtype, terms=6)
    assert_close(dg, ref[1], dtype, terms=6)
    e = np.empty((0, 4), dtype)
    dx, dg, db = batch_norm_backward(e, e, None, mean, inv_std)
    assert dx.shape == (0, 4) and (dg == 0).all() and (db == 0).all()


# --------------------------------------------------------------------------------------
# batch_norm bad input: precise errors, nothing written

def _bn_args(rng, dtype=np.float32, C=3):
    x = random_array(rng, (4, C, 2, 2), dtype)
    g, b = _params(rng, C, dtype)
    return x, g, b, np.zeros(C, dtype), np.ones(C, dtype)


@pytest.mark.parametrize("case", [
    "x-1d", "gamma-shape", "beta-shape", "rm-shape", "rv-shape", "rm-dtype", "rv-int",
    "rm-list", "rv-readonly", "rm-only", "momentum-neg", "momentum-big", "momentum-nan",
    "eps-neg", "eps-nan", "one-value", "one-value-2d", "infer-no-running", "x-complex",
    "momentum-str"])
def test_batch_norm_bad_input(case, rng):
    x, g, b, rm, rv = _bn_args(rng)
    kw = {}
    exc, match = ValueError, None
    if case == "x-1d":
        x, match = x.reshape(-1), "shape"
    elif case == "gamma-shape":
        g, match = np.ones(4, np.float32), "gamma"
    elif case == "beta-shape":
        b, match = np.ones((3, 1), np.float32), "beta"
    elif case == "rm-shape":
        rm, match = np.zeros(4, np.float32), "running_mean"
    elif case == "rv-shape":
        rv, match = np.ones((1, 3), np.float32), "running_var"
    elif case == "rm-dtype":
        rm, exc, match = np.zeros(3, np.float64), TypeError, "running_mean"
    elif case == "rv-int":
        rv, exc, match = np.ones(3, np.int64), TypeError, "running_var"
    elif case == "rm-list":
        rm, exc, match = [0.0, 0.0, 0.0], TypeError, "running_mean"
    elif case == "rv-readonly":
        rv.flags.writeable = False
        match = "running_var"
    elif case == "rm-only":
        rv, match = None, "both"
    elif case in ("momentum-neg", "momentum-big", "momentum-nan"):
        kw["momentum"] = {"momentum-neg": -0.1, "momentum-big": 1.5,
                          "momentum-nan": float("nan")}[case]
        match = "momentum"
    elif case == "momentum-str":
        kw["momentum"], exc, match = "0.1", TypeError, "momentum"
    elif case in ("eps-neg", "eps-nan"):
        kw["eps"], match = (-1e-5 if case == "eps-neg" else float("nan")), "eps"
    elif case == "one-value":
        x, match = x[:1, :, :1, :1], "more than 1 value"
    elif case == "one-value-2d":
        x, match = x[:1, :, 0, 0], "more than 1 value"
    elif case == "infer-no-running":
        rm = rv = None
        kw["training"], match = False, "running"
    elif case == "x-complex":
        x, exc, match = x.astype(np.complex64), TypeError, "x"
    before = snapshot(x, g, b, rm if isinstance(rm, np.ndarray) else None,
                      rv if isinstance(rv, np.ndarray) else None)
    with pytest.raises(exc, match=match):
        batch_norm(x, g, b, rm, rv, **kw)
    assert_unchanged(before, x, g, b, rm if isinstance(rm, np.ndarray) else None,
                     rv if isinstance(rv, np.ndarray) else None)


def test_batch_norm_backward_bad_input(rng):
    x, g, b, _, _ = _bn_args(rng)
    _, m, inv = batch_norm(x, g, b, None, None, return_stats=True)
    with pytest.raises(ValueError, match="dy has shape"):
        batch_norm_backward(x[:2], x, g, m, inv)
    with pytest.raises(ValueError, match="mean"):
        batch_norm_backward(x, x, g, m[:2], inv)
    with pytest.raises(ValueError, match="inv_std"):
        batch_norm_backward(x, x, g, m, inv[None])
    with pytest.raises(TypeError, match="dy"):
        batch_norm_backward(x.astype(np.complex64), x, g, m, inv)


# --------------------------------------------------------------------------------------
# layer_norm

LN_CASES = [((7,), 7), ((3, 5), 5), ((2, 3, 33), (33,)), ((4, 3, 5), (3, 5)), ((1, 1000), 1000),
            ((2, 7, 1), 1), ((64, 1100), 1100), ((5, 3, 40000), 40000)]


@pytest.mark.parametrize("affine", ["both", "gamma", "beta", "none"])
@pytest.mark.parametrize("kind", ["C", "F", "strided", "negative"])
@pytest.mark.parametrize("shape,ns", LN_CASES, ids=str)
def test_layer_norm_matches_reference(shape, ns, kind, affine, dtype, rng):
    x = _layout((random_array(rng, shape) * 2 + 3).astype(dtype), kind)
    nshape = (ns,) if isinstance(ns, int) else ns
    g = (rng.random(nshape) + 0.5).astype(dtype) if affine in ("both", "gamma") else None
    b = random_array(rng, nshape, dtype) if affine in ("both", "beta") else None
    before = snapshot(x, g, b)
    y, mean, inv = layer_norm(x, ns, g, b, return_stats=True)
    assert_unchanged(before, x, g, b)
    y_ref, m_ref, i_ref = layer_norm_ref(x, nshape, g, b)
    assert_close(y, y_ref, dtype)
    assert_close(mean, m_ref, dtype, scale=np.abs(x).max())
    assert_close(inv, i_ref, dtype)
    assert_close(layer_norm(x, ns, g, b), y_ref, dtype)


def test_layer_norm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = random_array(rng, (3, 4, 6))
    g, b = _params(rng, 6, np.float64)
    ty = torch.nn.functional.layer_norm(torch.from_numpy(x), (6,), torch.from_numpy(g),
                                        torch.from_numpy(b), eps=1e-5)
    np.testing.assert_allclose(layer_norm(x, 6, g, b), ty.numpy(), rtol=1e-12, atol=1e-12)


def test_layer_norm_special_and_empty(dtype, rng):
    x = random_array(rng, (3, 4), dtype)
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    y = layer_norm(x, 4)
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()
    assert_close(y[0], layer_norm_ref(x[:1], (4,))[0][0], dtype)
    y, m, inv = layer_norm(np.empty((0, 5), dtype), 5, return_stats=True)
    assert y.shape == (0, 5) and m.shape == (0,) and inv.shape == (0,)
    y, m, inv = layer_norm(np.empty((3, 0), dtype), 0, return_stats=True)
    assert y.shape == (3, 0) and np.isnan(m).all() and np.isnan(inv).all()
    c = np.full((2, 5), 7.0, dtype)
    assert_close(layer_norm(c, 5), np.zeros((2, 5)), dtype)


@pytest.mark.parametrize("case", ["ns-mismatch", "ns-too-long", "ns-empty", "ns-float",
                                  "gamma-shape", "beta-shape", "eps-neg", "eps-nan"])
def test_layer_norm_bad_input(case, rng):
    x = random_array(rng, (3, 4, 5), np.float32)
    args, kw = [x, (4, 5)], {}
    exc, match = ValueError, "normalized_shape"
    if case == "ns-mismatch":
        args[1] = (5, 4)
    elif case == "ns-too-long":
        args[1] = (2, 3, 4, 5)
    elif case == "ns-empty":
        args[1] = ()
    elif case == "ns-float":
        args[1], exc = 5.0, TypeError
    elif case == "gamma-shape":
        kw["gamma"], match = np.ones(5, np.float32), "gamma"
    elif case == "beta-shape":
        kw["beta"], match = np.ones((5, 4), np.float32), "beta"
    else:
        kw["eps"], match = (-1.0 if case == "eps-neg" else float("nan")), "eps"
    before = snapshot(x)
    with pytest.raises(exc, match=match):
        layer_norm(*args, **kw)
    assert_unchanged(before, x)


@pytest.mark.parametrize("with_gamma", [True, False])
@pytest.mark.parametrize("kind", ["C", "F", "strided"])
@pytest.mark.parametrize("shape,ns", [((7,), 7), ((3, 5), 5), ((4, 3, 5), (3, 5)),
                                      ((2, 7, 1), 1), ((300, 33), 33), ((5, 3, 40000), 40000)],
                         ids=str)
def test_layer_norm_backward_matches_reference(shape, ns, kind, with_gamma, dtype, rng):
    nshape = (ns,) if isinstance(ns, int) else ns
    x = _layout(random_array(rng, shape, dtype), kind)
    dy = _layout(random_array(rng, shape, dtype), kind)
    g = (rng.random(nshape) + 0.5).astype(dtype) if with_gamma else None
    _, mean, inv = layer_norm(x, ns, g, None, return_stats=True)
    before = snapshot(dy, x, g, mean, inv)
    dx, dg, db = layer_norm_backward(dy, x, ns, g, mean, inv)
    assert_unchanged(before, dy, x, g, mean, inv)
    dx_ref, dg_ref, db_ref = layer_norm_backward_ref(dy, x, nshape, g, mean, inv)
    d = int(np.prod(nshape))
    assert_close(dx, dx_ref, dtype, scale=np.abs(dy).max() * 2 * inv.max(), terms=d)
    if with_gamma:
        rows = x.size // d
        assert_close(dg, dg_ref, dtype, scale=np.abs(dy).max() * 4, terms=rows)
        assert_close(db, db_ref, dtype, scale=np.abs(dy).max(), terms=rows)
    else:
        assert dg is None and db is None


@pytest.mark.parametrize("with_gamma", [True, False])
def test_layer_norm_backward_gradcheck(with_gamma, rng):
    x = random_array(rng, (3, 2, 4))
    g = rng.random((2, 4)) + 0.5 if with_gamma else None
    b = random_array(rng, (2, 4)) if with_gamma else None
    w = random_array(rng, x.shape)

    def loss():
        return float(np.sum(w * layer_norm(x, (2, 4), g, b)))
    _, mean, inv = layer_norm(x, (2, 4), g, b, return_stats=True)
    dx, dg, db = layer_norm_backward(w, x, (2, 4), g, mean, inv)
    np.testing.assert_allclose(dx, _numeric_grad(loss, x), rtol=1e-5, atol=1e-7)
    if with_gamma:
        np.testing.assert_allclose(dg, _numeric_grad(loss, g), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(db, _numeric_grad(loss, b), rtol=1e-5, atol=1e-7)


def test_layer_norm_backward_bad_input(rng):
    x = random_array(rng, (3, 4), np.float32)
    _, m, inv = layer_norm(x, 4, return_stats=True)
    with pytest.raises(ValueError, match="dy has shape"):
        layer_norm_backward(x[:2], x, 4, None, m, inv)
    with pytest.raises(ValueError, match="mean"):
        layer_norm_backward(x, x, 4, None, m[:2], inv)
    with pytest.raises(ValueError, match="gamma"):
        layer_norm_backward(x, x, 4, np.ones(3, np.float32), m, inv)
    dx, dg, db = layer_norm_backward(np.empty((0, 4)), np.empty((0, 4)), 4, np.ones(4),
                                     np.empty(0), np.empty(0))
    assert dx.shape == (0, 4) and (dg == 0).all() and (db == 0).all()


@requires_openmp
@pytest.mark.parametrize("shape,ns", [((8, 64, 768), 768), ((3000, 17), 17),
                                      ((2, 100000), 100000)], ids=str)
def test_layer_norm_thread_count_bitwise(shape, ns, dtype, rng):
    x = random_array(rng, shape, dtype)
    dy = random_array(rng, shape, dtype)
    g, b = _params(rng, ns, dtype)
    res = []
    for n in (1, 2):
        with fastdl.threads(n):
            y, m, inv = layer_norm(x, ns, g, b, return_stats=True)
            dx, dg, db = layer_norm_backward(dy, x, ns, g, m, inv)
            res.append([a.tobytes() for a in (y, m, inv, dx, dg, db)])
    assert res[0] == res[1]
