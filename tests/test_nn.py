"""fastdl.nn: every layer's forward against a float64 reference, every backward by finite
differences, a whole network's gradient, modes, state round trips, live parameters for an
optimiser, PyTorch parity for MultiHeadAttention and LSTM, and bad input."""

import numpy as np
import pytest

import fastdl
from fastdl import nn
from conftest import (assert_close, gemm_scale, random_array, snapshot, assert_unchanged,
                      requires_openmp)
from reference import linear_ref
from reference_conv import conv2d_ref
from reference_elementwise import (relu_ref, leaky_relu_ref, sigmoid_ref, tanh_ref, gelu_ref)
from reference_norm_pool import (batch_norm_train_ref, batch_norm_infer_ref,
                                 running_update_ref, layer_norm_ref, max_pool2d_ref,
                                 avg_pool2d_ref)
from reference_softmax_losses import softmax_cross_entropy_ref, mse_ref
from reference_nn import lstm_ref, mha_ref, numeric_grad


# --------------------------------------------------------------------------------------
# helpers

def _set_params(module, rng, scale=0.5):
    """Random values in every parameter (in place: the arrays stay live)."""
    for p in module.parameters():
        p[...] = rng.standard_normal(p.shape) * scale


def check_grads(module, inputs, rng, *, forward=None, rtol=1e-6, atol=1e-7):
    """Finite differences (float64) of sum(forward(*inputs) * R) with respect to every
    input and every parameter against module.backward(R)."""
    forward = forward or module.forward
    y = forward(*inputs)
    R = rng.standard_normal(np.shape(y))

    def loss():
        return float(np.sum(np.asarray(forward(*inputs), np.float64) * R))

    module.zero_grad()
    forward(*inputs)
    dx = module.backward(R)
    dxs = dx if isinstance(dx, tuple) else (dx,)
    for i, (x, d) in enumerate(zip(inputs, dxs)):
        np.testing.assert_allclose(d, numeric_grad(loss, x), rtol=rtol, atol=atol,
                                   err_msg=f"input {i}")
    for (name, p), g in zip(module.named_parameters(), module.gradients()):
        np.testing.assert_allclose(g, numeric_grad(loss, p), rtol=rtol, atol=atol,
                                   err_msg=name)


# --------------------------------------------------------------------------------------
# Linear

@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (33, 17), (2, 3, 1000)])
def test_linear_forward(rng, dtype, shape):
    out = 9
    m = nn.Linear(shape[-1], out, dtype=dtype, seed=1)
    _set_params(m, rng)
    x = random_array(rng, shape, dtype)
    y = m(x)
    assert_close(y, linear_ref(x, m.weight, m.bias), dtype,
                 scale=gemm_scale(x, m.weight) + np.abs(m.bias.astype(np.float64)))
    assert m.weight.shape == (shape[-1], out) and m.weight.dtype == dtype


@pytest.mark.parametrize("bias", [True, False])
def test_linear_grads(rng, bias):
    m = nn.Linear(4, 3, bias=bias, dtype=np.float64, seed=2)
    _set_params(m, rng)
    check_grads(m, [random_array(rng, (5, 4))], rng)
    check_grads(m, [random_array(rng, (2, 3, 4))], rng)
    assert len(m.parameters()) == (2 if bias else 1)


def test_linear_init_is_he_and_seeded():
    a = nn.Linear(400, 300, seed=7)
    b = nn.Linear(400, 300, seed=7)
    assert np.array_equal(a.weight, b.weight)
    assert abs(a.weight.std() - np.sqrt(2 / 400)) < 0.01 * np.sqrt(2 / 400) * 5
    assert np.all(a.bias == 0)
    c = nn.Linear(400, 300, rng=np.random.default_rng(7))
    assert c.weight.dtype == np.float32


# --------------------------------------------------------------------------------------
# Conv2d

@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(padding="same"),
                                dict(dilation=2, groups=2, padding=(1, 2))])
def test_conv2d_forward(rng, dtype, kw):
    m = nn.Conv2d(4, 6, 3, dtype=dtype, seed=3, **kw)
    _set_params(m, rng)
    x = random_array(rng, (2, 4, 9, 7), dtype)
    y = m(x)
    pad = kw.get("padding", 0)
    ref = conv2d_ref(x, m.weight, m.bias, kw.get("stride", 1), pad, kw.get("dilation", 1),
                     kw.get("groups", 1))
    assert_close(y, ref, dtype, scale=np.max(np.abs(ref)) + 1, terms=36)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1, bias=False),
                                dict(groups=2, dilation=(1, 2))])
def test_conv2d_grads(rng, kw):
    m = nn.Conv2d(2, 4, (3, 2), dtype=np.float64, seed=4, **kw)
    _set_params(m, rng)
    check_grads(m, [random_array(rng, (2, 2, 6, 5))], rng)


def test_conv2d_init_fan_in():
    m = nn.Conv2d(16, 64, 3, seed=0)
    assert m.weight.shape == (64, 16, 3, 3)
    std = np.sqrt(2 / (16 * 9))
    assert abs(m.weight.std() - std) < 0.05 * std


# --------------------------------------------------------------------------------------
# normalisation

@pytest.mark.parametrize("cls,shape", [(nn.BatchNorm1d, (7, 5)), (nn.BatchNorm2d, (3, 4, 5, 6))])
def test_batchnorm_train_eval(rng, dtype, cls, shape):
    C = shape[1]
    m = cls(C, momentum=0.2, dtype=dtype)
    m.weight[...] = rng.standard_normal(C)
    m.bias[...] = rng.standard_normal(C)
    x = random_array(rng, shape, dtype) * 3 + 1
    rm0, rv0 = m.running_mean.copy(), m.running_var.copy()
    y = m(x)
    ref, _, _ = batch_norm_train_ref(x, m.weight, m.bias, m.eps)
    assert_close(y, ref, dtype, terms=x.size // C)
    erm, erv = running_update_ref(rm0, rv0, x, 0.2)
    assert_close(m.running_mean, erm, dtype, terms=x.size // C)
    assert_close(m.running_var, erv, dtype, terms=x.size // C)
    m.eval()
    assert not m.training
    before = snapshot(m.running_mean, m.running_var)
    y = m(x)
    assert_unchanged(before, m.running_mean, m.running_var)
    assert_close(y, batch_norm_infer_ref(x, m.weight, m.bias, m.running_mean, m.running_var,
                                         m.eps), dtype)
    m.train()
    assert m.training


@pytest.mark.parametrize("cls,shape", [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm2d, (2, 3, 3, 2))])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_grads(rng, cls, shape, training):
    m = cls(shape[1], dtype=np.float64)
    _set_params(m, rng)
    m.running_mean[...] = rng.standard_normal(shape[1])
    m.running_var[...] = rng.uniform(0.5, 2, shape[1])
    m.train(training)
    check_grads(m, [random_array(rng, shape)], rng)


@pytest.mark.parametrize("ns", [(5,), (3, 4)])
def test_layernorm(rng, dtype, ns):
    m = nn.LayerNorm(ns, dtype=dtype)
    m.weight[...] = rng.standard_normal(ns)
    m.bias[...] = rng.standard_normal(ns)
    x = random_array(rng, (2, 3) + ns, dtype)
    ref = layer_norm_ref(x, ns, m.weight, m.bias)[0]
    assert_close(m(x), ref, dtype, terms=int(np.prod(ns)))
    m64 = nn.LayerNorm(ns[-1], dtype=np.float64)
    _set_params(m64, rng)
    check_grads(m64, [random_array(rng, (3, ns[-1]))], rng)


# --------------------------------------------------------------------------------------
# activations, dropout, pooling, flatten

ACTIVATIONS = [
    (nn.ReLU, {}, relu_ref),
    (nn.LeakyReLU, {"negative_slope": 0.2}, lambda x: leaky_relu_ref(x, 0.2)),
    (nn.Sigmoid, {}, sigmoid_ref),
    (nn.Tanh, {}, tanh_ref),
    (nn.GELU, {}, gelu_ref),
    (nn.GELU, {"approximate": "tanh"}, lambda x: gelu_ref(x, "tanh")),
]


@pytest.mark.parametrize("cls,kw,ref", ACTIVATIONS)
def test_activations(rng, dtype, cls, kw, ref):
    m = cls(**kw)
    x = random_array(rng, (3, 33), dtype) * 3
    x[0, :3] = [np.nan, np.inf, -np.inf]
    assert_close(m(x), ref(x), dtype)
    assert m.parameters() == [] and m.gradients() == []
    x = random_array(rng, (4, 7)) * 2
    x[np.abs(x) < 1e-3] = 0.5  # relu kinks away from the finite-difference stencil
    check_grads(m, [x], rng)


def test_dropout_train_eval(rng, dtype):
    m = nn.Dropout(0.3, seed=5)
    x = random_array(rng, (50, 40), dtype)
    y = m(x)
    kept = y != 0
    assert 0.6 < kept.mean() < 0.8
    assert_close(y[kept], x[kept] / np.float64(0.7), dtype)
    dy = random_array(rng, x.shape, dtype)
    dx = m.backward(dy)
    assert np.array_equal(dx != 0, kept & (dy != 0))
    assert_close(dx[kept], dy[kept] / np.float64(0.7), dtype)
    y2 = m(x)
    assert not np.array_equal(y2 != 0, kept)  # a fresh mask per forward
    m2 = nn.Dropout(0.3, seed=5)
    assert np.array_equal(m2(x), y)  # ... reproducible from the seed
    m.eval()
    assert np.array_equal(m(x), x)
    assert np.array_equal(m.backward(dy), dy)
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.0)


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(2, 3), stride=1)])
def test_pools(rng, dtype, kw):
    x = random_array(rng, (2, 3, 7, 8), dtype)
    args = (kw["kernel_size"], kw.get("stride"), kw.get("padding", 0))
    mp = nn.MaxPool2d(**kw)
    ap = nn.AvgPool2d(**kw)
    assert_close(mp(x), max_pool2d_ref(x, *args)[0], dtype)
    assert_close(ap(x), avg_pool2d_ref(x, *args), dtype)
    x64 = rng.permutation(2 * 3 * 7 * 8).reshape(2, 3, 7, 8) * 0.1  # distinct: no max ties
    check_grads(mp, [x64], rng)
    check_grads(ap, [random_array(rng, (2, 3, 7, 8))], rng)


def test_flatten(rng):
    m = nn.Flatten()
    x = random_array(rng, (2, 3, 4, 5))
    y = m(x)
    assert y.shape == (2, 60) and np.array_equal(y, x.reshape(2, 60))
    assert m.backward(y).shape == x.shape
    assert nn.Flatten(0, 1)(x).shape == (6, 4, 5)
    with pytest.raises(ValueError, match="start_dim=3, end_dim=1"):
        nn.Flatten(3, 1)(x)


# --------------------------------------------------------------------------------------
# losses

def test_cross_entropy_loss(rng, dtype):
    logits = random_array(rng, (7, 5), dtype)
    target = rng.integers(0, 5, 7)
    target[2] = -100
    lf = nn.CrossEntropyLoss(label_smoothing=0.1, ignore_index=-100)
    loss = lf(logits, target)
    ref, dref = softmax_cross_entropy_ref(logits, target, axis=1, label_smoothing=0.1,
                                          ignore_index=-100)
    assert_close(loss, ref, dtype, terms=35)
    assert_close(lf.backward(), dref, dtype, terms=35)
    none = nn.CrossEntropyLoss(reduction="none")
    per = none(logits, np.abs(target) % 5)
    assert per.shape == (7,)
    w = rng.standard_normal(7)
    g = none.backward(w)
    # 'none': the gradient of sum(w * per-sample loss)
    l64 = logits.astype(np.float64)
    t = np.abs(target) % 5
    f = lambda: float(np.sum(softmax_cross_entropy_ref(l64, t, axis=1, reduction="none")[0] * w))
    np.testing.assert_allclose(g, numeric_grad(f, l64), rtol=1e-3 if dtype == np.float32
                               else 1e-7, atol=1e-5 if dtype == np.float32 else 1e-8)
    # (N, C, d) layout: classes on axis 1 as PyTorch
    x3 = random_array(rng, (2, 4, 3), dtype)
    t3 = rng.integers(0, 4, (2, 3))
    assert_close(nn.CrossEntropyLoss()(x3, t3), softmax_cross_entropy_ref(x3, t3, axis=1)[0],
                 dtype, terms=24)


def test_mse_loss(rng, dtype):
    p = random_array(rng, (6, 4), dtype)
    t = random_array(rng, (6, 4), dtype)
    lf = nn.MSELoss()
    assert_close(lf(p, t), mse_ref(t, p), dtype, terms=24)
    g = lf.backward()
    p64 = p.astype(np.float64)
    np.testing.assert_allclose(g, numeric_grad(lambda: float(mse_ref(t, p64)), p64),
                               rtol=1e-4 if dtype == np.float32 else 1e-7, atol=1e-7)
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")


# --------------------------------------------------------------------------------------
# a whole network

def _cnn(dtype=np.float64, seed=0):
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, dtype=dtype, seed=seed),
        nn.BatchNorm2d(3, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 4, dtype=dtype, seed=seed + 1),
    )


def test_network_gradient_finite_differences(rng):
    model = _cnn()
    _set_params(model, rng)
    lf = nn.CrossEntropyLoss()
    x = rng.permutation(5 * 36).reshape(5, 1, 6, 6) * 0.05 - 4.5
    t = rng.integers(0, 4, 5)

    def loss():
        return float(lf(model(x), t))

    model.zero_grad()
    lf(model(x), t)
    dx = model.backward(lf.backward())
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-5, atol=1e-7)
    for (name, p), g in zip(model.named_parameters(), model.gradients()):
        np.testing.assert_allclose(g, numeric_grad(loss, p), rtol=1e-5, atol=1e-7,
                                   err_msg=name)


def test_backward_without_the_input_gradient(rng, dtype):
    """input_grad=False returns None and leaves every parameter gradient's bits unchanged
    (the first Conv2d skips dx), also through a nested Sequential."""
    x = rng.standard_normal((4, 1, 6, 6)).astype(dtype)
    t = rng.integers(0, 4, 4)
    lf = nn.CrossEntropyLoss()
    grads = []
    for input_grad, nested in ((True, False), (False, False), (False, True)):
        model = _cnn(dtype)
        if nested:
            model = nn.Sequential(model)
        model.zero_grad()
        lf(model(x), t)
        dx = model.backward(lf.backward(), input_grad=input_grad)
        assert (dx is None) is (not input_grad)
        grads.append([g.copy() for g in model.gradients()])
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            assert np.array_equal(a, b)


def test_sequential_matches_reference_composition(rng, dtype):
    model = _cnn(dtype)
    x = random_array(rng, (4, 1, 6, 6), dtype)
    y = model(x)
    c, bn, _, _, _, lin = model
    h = conv2d_ref(x, c.weight, c.bias, 1, 1)
    h = batch_norm_train_ref(h, bn.weight, bn.bias)[0]
    h = max_pool2d_ref(np.maximum(h, 0), 2)[0]
    ref = linear_ref(h.reshape(4, -1), lin.weight, lin.bias)
    assert_close(y, ref, dtype, scale=np.max(np.abs(ref)) + 1, terms=64)


def test_gradients_accumulate_and_zero(rng):
    m = nn.Linear(3, 2, dtype=np.float64, seed=0)
    x = random_array(rng, (4, 3))
    dy = random_array(rng, (4, 2))
    m(x)
    m.backward(dy)
    g1 = [g.copy() for g in m.gradients()]
    m(x)
    m.backward(dy)
    for a, b in zip(m.gradients(), g1):
        np.testing.assert_allclose(a, 2 * b)
    live = m.gradients()
    m.zero_grad()
    assert all(np.all(g == 0) for g in live)
    assert all(a is b for a, b in zip(live, m.gradients()))


def test_backward_without_forward_raises():
    with pytest.raises(RuntimeError, match="Linear.backward: no forward"):
        nn.Linear(2, 2).backward(np.zeros((1, 2)))


def test_optimiser_trains_live_parameters(rng):
    model = nn.Sequential(nn.Linear(4, 16, seed=0), nn.ReLU(), nn.Linear(16, 3, seed=1))
    params = model.parameters()
    assert [p.shape for p in params] == [(4, 16), (16,), (16, 3), (3,)]
    assert all(p is q for p, q in zip(params, [model[0].weight, model[0].bias,
                                               model[2].weight, model[2].bias]))
    opt = fastdl.optim.Adam(params, lr=0.05)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    t = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    lf = nn.CrossEntropyLoss()
    w_before = model[0].weight.copy()
    losses = []
    for _ in range(60):
        model.zero_grad()
        losses.append(float(lf(model(x), t)))
        model.backward(lf.backward())
        opt.step(model.gradients())
    assert not np.array_equal(model[0].weight, w_before)
    assert model.parameters()[0] is params[0]
    assert losses[-1] < 0.5 * losses[0]


# --------------------------------------------------------------------------------------
# state

def test_state_dict_round_trip(tmp_path, rng):
    model = _cnn(np.float32)
    model(random_array(rng, (4, 1, 6, 6), np.float32))  # moves the running statistics
    sd = model.state_dict()
    assert "1.running_mean" in sd and "0.weight" in sd
    assert set(sd) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                       "1.running_var", "5.weight", "5.bias"}
    other = _cnn(np.float32, seed=9)
    live = other.parameters()
    other.load_state_dict(sd)
    for k, v in other.state_dict().items():
        assert v.tobytes() == sd[k].tobytes() and v.dtype == sd[k].dtype
    assert all(a is b for a, b in zip(live, other.parameters()))
    path = tmp_path / "model.npz"
    model.save(path)
    third = _cnn(np.float32, seed=3)
    third.load(path)
    for k, v in third.state_dict().items():
        assert v.tobytes() == sd[k].tobytes()
    x = random_array(rng, (2, 1, 6, 6), np.float32)
    model.eval(), third.eval()
    assert model(x).tobytes() == third(x).tobytes()


def test_load_state_dict_errors_leave_module_unchanged(rng):
    model = _cnn(np.float32)
    sd = model.state_dict()
    before = snapshot(*model.state_dict().values())
    bad = dict(sd)
    bad["5.weight"] = np.zeros((2, 2))
    bad["0.weight"] = np.ones_like(sd["0.weight"])  # would be written first
    with pytest.raises(ValueError, match=r"5.weight has shape \(2, 2\), expected \(27, 4\)"):
        model.load_state_dict(bad)
    missing = dict(sd)
    del missing["1.running_var"]
    with pytest.raises(KeyError, match="running_var"):
        model.load_state_dict(missing)
    extra = dict(sd, foo=np.zeros(1))
    with pytest.raises(KeyError, match="foo"):
        model.load_state_dict(extra)
    assert_unchanged(before, *model.state_dict().values())


# --------------------------------------------------------------------------------------
# MultiHeadAttention

def _mha_params(m):
    return {k: v for k, v in m.named_parameters()}


@pytest.mark.parametrize("causal", [False, True])
def test_mha_forward(rng, dtype, causal):
    m = nn.MultiHeadAttention(8, 2, dtype=dtype, seed=0)
    _set_params(m, rng)
    x = random_array(rng, (3, 7, 8), dtype)
    ref = mha_ref(x, x, x, _mha_params(m), 2, is_causal=causal)
    assert_close(m(x, is_causal=causal), ref, dtype, scale=np.max(np.abs(ref)) + 1, terms=64)
    kv = random_array(rng, (3, 5, 8), dtype)
    mask = rng.random((7, 5)) > 0.3
    mask[:, 0] = True
    ref = mha_ref(x, kv, kv, _mha_params(m), 2, attn_mask=mask)
    assert_close(m(x, kv, attn_mask=mask), ref, dtype, scale=np.max(np.abs(ref)) + 1,
                 terms=64)


def test_mha_grads(rng):
    m = nn.MultiHeadAttention(6, 3, dtype=np.float64, seed=1)
    _set_params(m, rng)
    check_grads(m, [random_array(rng, (2, 4, 6))], rng)
    check_grads(m, [random_array(rng, (2, 4, 6))], rng,
                forward=lambda x: m.forward(x, is_causal=True))
    q, k, v = random_array(rng, (2, 3, 6)), random_array(rng, (2, 5, 6)), \
        random_array(rng, (2, 5, 6))
    check_grads(m, [q, k, v], rng)
    mc = nn.MultiHeadAttention(6, 2, kdim=4, vdim=3, bias=False, dtype=np.float64, seed=2)
    _set_params(mc, rng)
    check_grads(mc, [q, random_array(rng, (2, 5, 4)), random_array(rng, (2, 5, 3))], rng)


def test_mha_matches_torch(rng):
    torch = pytest.importorskip("torch")
    E, H = 12, 3
    m = nn.MultiHeadAttention(E, H, dtype=np.float64, seed=0)
    _set_params(m, rng)
    t = torch.nn.MultiheadAttention(E, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        t.in_proj_weight.copy_(torch.from_numpy(np.concatenate(
            [m.q_weight.T, m.k_weight.T, m.v_weight.T])))
        t.in_proj_bias.copy_(torch.from_numpy(np.concatenate([m.q_bias, m.k_bias, m.v_bias])))
        t.out_proj.weight.copy_(torch.from_numpy(m.out_weight.T))
        t.out_proj.bias.copy_(torch.from_numpy(m.out_bias))
    x = random_array(rng, (2, 5, E))
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    mask = np.triu(np.ones((5, 5), bool), 1)  # PyTorch: True = masked
    yt, _ = t(xt, xt, xt, attn_mask=torch.from_numpy(mask), need_weights=False)
    y = m(x, attn_mask=~mask)  # fastdl: True = keep
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = random_array(rng, y.shape)
    yt.backward(torch.from_numpy(dy))
    m.zero_grad()
    dx = m.backward(dy)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    dw_in = np.concatenate([m.grad("q_weight").T, m.grad("k_weight").T,
                            m.grad("v_weight").T])
    np.testing.assert_allclose(dw_in, t.in_proj_weight.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(m.grad("out_weight").T, t.out_proj.weight.grad.numpy(),
                               rtol=1e-9, atol=1e-11)


def test_mha_bad_input(rng):
    with pytest.raises(ValueError, match=r"embed_dim \(10\) must be divisible by num_heads"):
        nn.MultiHeadAttention(10, 3)
    m = nn.MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"query has shape \(2, 3, 6\), expected"):
        m(np.zeros((2, 3, 6), np.float32))
    with pytest.raises(ValueError, match=r"key has shape \(3, 4, 8\), expected \(2, seq, 8\)"):
        m(np.zeros((2, 3, 8), np.float32), np.zeros((3, 4, 8), np.float32))


# --------------------------------------------------------------------------------------
# LSTM

def _lstm_layers(m):
    return [(m._params[f"weight_ih_l{l}"], m._params[f"weight_hh_l{l}"],
             m._params.get(f"bias_l{l}")) for l in range(m.num_layers)]


@pytest.mark.parametrize("num_layers", [1, 2])
def test_lstm_forward(rng, dtype, num_layers):
    m = nn.LSTM(5, 7, num_layers, dtype=dtype, seed=0)
    _set_params(m, rng)
    x = random_array(rng, (3, 6, 5), dtype)
    h0 = random_array(rng, (num_layers, 3, 7), dtype)
    c0 = random_array(rng, (num_layers, 3, 7), dtype)
    out, (hn, cn) = m(x, (h0, c0))
    ref, rh, rc = lstm_ref(x, _lstm_layers(m), h0, c0)
    tol = dict(terms=64, scale=np.max(np.abs(ref)) + 1)
    assert_close(out, ref, dtype, **tol)
    assert_close(hn, rh, dtype, **tol)
    assert_close(cn, rc, dtype, scale=np.max(np.abs(rc)) + 1, terms=64)


def test_lstm_grads(rng):
    m = nn.LSTM(3, 4, 2, dtype=np.float64, seed=1)
    _set_params(m, rng)
    check_grads(m, [random_array(rng, (2, 5, 3))], rng,
                forward=lambda x: m.forward(x)[0])
    # through the final state and into h0/c0
    x = random_array(rng, (2, 4, 3))
    h0, c0 = random_array(rng, (2, 2, 4)), random_array(rng, (2, 2, 4))
    Ry, Rh, Rc = (random_array(rng, s) for s in ((2, 4, 4), (2, 2, 4), (2, 2, 4)))

    def loss():
        y, (h, c) = m(x, (h0, c0))
        return float(np.sum(y * Ry) + np.sum(h * Rh) + np.sum(c * Rc))

    m.zero_grad()
    m(x, (h0, c0))
    dx = m.backward(Ry, Rh, Rc)
    dh0, dc0 = m.hx_grad
    for got, arr in ((dx, x), (dh0, h0), (dc0, c0)):
        np.testing.assert_allclose(got, numeric_grad(loss, arr), rtol=1e-6, atol=1e-8)
    for (name, p), g in zip(m.named_parameters(), m.gradients()):
        np.testing.assert_allclose(g, numeric_grad(loss, p), rtol=1e-6, atol=1e-8,
                                   err_msg=name)


def test_lstm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    I, H, L = 4, 6, 2
    m = nn.LSTM(I, H, L, dtype=np.float64, seed=0)
    _set_params(m, rng)
    t = torch.nn.LSTM(I, H, L, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for l, (w_ih, w_hh, b) in enumerate(_lstm_layers(m)):
            getattr(t, f"weight_ih_l{l}").copy_(torch.from_numpy(w_ih.T))
            getattr(t, f"weight_hh_l{l}").copy_(torch.from_numpy(w_hh.T))
            getattr(t, f"bias_ih_l{l}").copy_(torch.from_numpy(b))
            getattr(t, f"bias_hh_l{l}").zero_()
    x = random_array(rng, (3, 7, I))
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt, (ht, ct) = t(xt)
    y, (h, c) = m(x)
    for a, b in ((y, yt), (h, ht), (c, ct)):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = random_array(rng, y.shape)
    (yt * torch.from_numpy(dy)).sum().backward()
    m.zero_grad()
    dx = m.backward(dy)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for l in range(L):
        np.testing.assert_allclose(m.grad(f"weight_ih_l{l}").T,
                                   getattr(t, f"weight_ih_l{l}").grad.numpy(), rtol=1e-9,
                                   atol=1e-11)
        np.testing.assert_allclose(m.grad(f"bias_l{l}"),
                                   getattr(t, f"bias_hh_l{l}").grad.numpy(), rtol=1e-9,
                                   atol=1e-11)


def test_lstm_empty_sequence_and_errors(rng):
    m = nn.LSTM(3, 2, dtype=np.float64, seed=0)
    y, (h, c) = m(np.zeros((2, 0, 3)))
    assert y.shape == (2, 0, 2) and h.shape == (1, 2, 2) and np.all(h == 0)
    assert m.backward(np.zeros((2, 0, 2))).shape == (2, 0, 3)
    with pytest.raises(ValueError, match=r"x has shape \(2, 4\), expected \(batch, seq, 3\)"):
        m(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"h0 \(2, 2\) and c0 \(1, 2, 2\) must have shape"):
        m(np.zeros((2, 4, 3)), (np.zeros((2, 2)), np.zeros((1, 2, 2))))
    m(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match=r"dy has shape \(2, 4, 3\), expected \(2, 4, 2\)"):
        m.backward(np.zeros((2, 4, 3)))


# --------------------------------------------------------------------------------------
# bad input

def test_constructor_errors():
    with pytest.raises(ValueError, match="in_features must be positive"):
        nn.Linear(0, 3)
    with pytest.raises(TypeError, match="out_features must be an int"):
        nn.Linear(3, 2.5)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        nn.Linear(3, 2, dtype=np.int32)
    with pytest.raises(TypeError, match="seed= or rng="):
        nn.Linear(3, 2, seed=1, rng=np.random.default_rng(1))
    with pytest.raises(ValueError, match="kernel_size must be positive"):
        nn.Conv2d(3, 2, 0)
    with pytest.raises(ValueError, match="padding must be non-negative"):
        nn.Conv2d(3, 2, 3, padding=-1)
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 2, 3, groups=2)
    with pytest.raises(ValueError, match="momentum must be in"):
        nn.BatchNorm2d(3, momentum=1.5)
    with pytest.raises(ValueError, match="eps must be non-negative"):
        nn.BatchNorm1d(3, eps=float("nan"))
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=2)
    with pytest.raises(TypeError, match="argument 1 is a int"):
        nn.Sequential(nn.ReLU(), 3)


def test_forward_shape_errors(rng):
    with pytest.raises(ValueError, match=r"Linear: x has shape \(2, 4\), expected \(\.\.\., 3\)"):
        nn.Linear(3, 2)(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d: x has shape \(1, 2, 5, 5\), expected \(N, 3"):
        nn.Conv2d(3, 2, 3)(np.zeros((1, 2, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d: x has shape \(4, 3\)"):
        nn.BatchNorm2d(3)(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"LayerNorm: x has shape \(2, 4\)"):
        nn.LayerNorm(3)(np.zeros((2, 4), np.float32))
    bn = nn.BatchNorm1d(3)
    before = snapshot(bn.running_mean, bn.running_var)
    with pytest.raises((TypeError, ValueError)):
        bn(np.zeros((4, 3), np.complex64))
    assert_unchanged(before, bn.running_mean, bn.running_var)
    with pytest.raises(TypeError, match="x"):
        nn.ReLU()(np.zeros(3, np.complex64))


@requires_openmp
def test_layers_bitwise_for_1_and_2_threads(rng):
    x = random_array(rng, (64, 1, 12, 12), np.float32)
    t = rng.integers(0, 4, 64)
    seq = random_array(rng, (16, 9, 40), np.float32)

    def run():
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, seed=0), nn.BatchNorm2d(8),
                              nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(8 * 36, 4, seed=1))
        lf = nn.CrossEntropyLoss()
        loss = lf(model(x), t)
        dx = model.backward(lf.backward())
        lstm = nn.LSTM(40, 256, seed=2)
        y, (h, c) = lstm(seq)
        dseq = lstm.backward(y)
        mha = nn.MultiHeadAttention(40, 4, seed=3)
        z = mha(seq, is_causal=True)
        dz = mha.backward(z)
        return [np.asarray(loss), dx, y, h, c, dseq, z, dz] + model.gradients() + \
            lstm.gradients() + mha.gradients()

    with fastdl.threads(1):
        a = run()
    with fastdl.threads(2):
        b = run()
    for u, v in zip(a, b):
        assert u.tobytes() == v.tobytes()


def test_layers_compute_in_their_dtype(rng):
    x64 = random_array(rng, (4, 1, 6, 6))
    model = _cnn(np.float32)
    y = model(x64)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, _cnn(np.float32)(x64.astype(np.float32)))
    assert model.backward(np.ones_like(y)).dtype == np.float32
    assert nn.Linear(3, 2)(np.ones((2, 3), np.int64)).dtype == np.float32
    assert nn.LSTM(3, 2)(np.ones((2, 4, 3)))[0].dtype == np.float32
    assert nn.MultiHeadAttention(4, 2)(np.ones((2, 3, 4)))[0].dtype == np.float32
    assert nn.ReLU()(x64).dtype == np.float64  # no parameters: the input's dtype
    for m, shape in ((nn.Linear(3, 2), (2, 3)), (nn.LSTM(3, 2), (1, 2, 3)),
                     (nn.MultiHeadAttention(4, 2), (1, 2, 4)), (nn.LayerNorm(3), (2, 3))):
        with pytest.raises(TypeError, match="x has dtype complex128|query has dtype complex128"):
            m(np.zeros(shape, np.complex128))


def test_custom_layer_on_the_module_base(rng):
    class Scale(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.register_parameter("s", np.ones(n))
            self.register_buffer("calls", np.zeros(1))

        def forward(self, x):
            self._cache = x
            self.calls += 1
            return x * self.s

        def backward(self, dy):
            self._accumulate(self.grad("s"), (dy * self._cache).sum(0))
            return dy * self.s

    model = nn.Sequential(nn.Linear(3, 4, dtype=np.float64, seed=0), Scale(4))
    _set_params(model, rng)
    check_grads(model, [random_array(rng, (5, 3))], rng)
    assert set(model.state_dict()) == {"0.weight", "0.bias", "1.s", "1.calls"}
