"""fastdl.optim: functional updates, the multi-tensor path, the classes, clip_grad_norm_."""

import numpy as np
import pytest

import fastdl
from fastdl import optim
from conftest import (assert_close, layout, snapshot, assert_unchanged, requires_openmp,
                      random_array)
import reference_optim as ref

LAYOUTS = ["C", "F", "strided", "negative", "transposed-view"]
SHAPES = [(1,), (7,), (33, 5), (1001,), (3, 4, 5)]
BIG = (41, 1001)          # above the 32K-element parallel threshold


def _close(actual, expected, dtype):
    # every step adds a few roundings relative to the values' magnitude
    assert_close(actual, expected, dtype, terms=16)


def _state(rng, shape, dtype, kind="C"):
    return layout(random_array(rng, shape, dtype), kind)


# --------------------------------------------------------------------------------------
# functional updates against the cheat sheet

@pytest.mark.parametrize("shape", SHAPES + [BIG])
@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_adam_steps(rng, dtype, shape, wd, decoupled):
    w = random_array(rng, shape, dtype)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    W, M, V = (a.astype(np.float64) for a in (w, m, v))
    for t in range(1, 6):
        g = random_array(rng, shape, dtype)
        optim.adam_(w, g, m, v, t, lr=0.01, weight_decay=wd, decoupled=decoupled)
        W, M, V = ref.adam(W, g.astype(np.float64), M, V, t, lr=0.01, weight_decay=wd,
                           decoupled=decoupled)
        _close(w, W, dtype)
        _close(m, M, dtype)
        _close(v, V, dtype)


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 5), (300, 130)])
def test_adam_layouts_in_place(rng, dtype, kind, shape):
    w0 = random_array(rng, shape, dtype)
    w = _state(rng, shape, dtype, kind)
    w[...] = w0
    m = layout(np.zeros(shape, dtype), "F" if kind == "C" else "C")
    v = layout(np.zeros(shape, dtype), kind)
    g = layout(random_array(rng, shape, dtype), "negative")
    base = w.base
    optim.adam_(w, g, m, v, 1, lr=0.1, beta1=0.8, beta2=0.99, eps=1e-6)
    W, M, V = ref.adam(w0.astype(np.float64), g.astype(np.float64), 0.0, 0.0, 1, lr=0.1,
                       beta1=0.8, beta2=0.99, eps=1e-6)
    _close(w, W, dtype)
    _close(m, M, dtype)
    _close(v, V, dtype)
    assert w.base is base
    if kind == "strided":   # the elements between the view's are untouched (NaN)
        mask = np.ones(base.shape, bool)
        mask[tuple(slice(1, None, 2) for _ in shape)] = False
        assert np.isnan(base[mask]).all()


@pytest.mark.parametrize("shape", SHAPES + [BIG])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_sgd_and_momentum_state_evolution(rng, dtype, shape, wd):
    w1 = random_array(rng, shape, dtype)
    w2, w3 = w1.copy(), w1.copy()
    v = np.zeros_like(w1)
    buf = np.zeros_like(w1)
    W1, W2, W3 = (a.astype(np.float64) for a in (w1, w2, w3))
    V = np.zeros(shape)
    B = np.zeros(shape)
    for _ in range(4):
        g = random_array(rng, shape, dtype)
        G = g.astype(np.float64)
        optim.sgd_(w1, g, 0.1, weight_decay=wd)
        optim.momentum_(w2, g, v, 0.1, beta=0.8, weight_decay=wd)
        optim.sgd_(w3, g, 0.1, weight_decay=wd, momentum=0.7, buf=buf)
        W1 = ref.sgd(W1, G, 0.1, wd)
        W2, V = ref.momentum(W2, G, V, 0.1, 0.8, wd)
        W3, B = ref.sgd_momentum(W3, G, B, 0.1, 0.7, wd)
        for a, e in ((w1, W1), (w2, W2), (v, V), (w3, W3), (buf, B)):
            _close(a, e, dtype)


def test_zero_dim_and_empty(dtype):
    w = np.array(1.5, dtype)
    g = np.array(0.5, dtype)
    optim.sgd_(w, g, 0.1)
    assert w.dtype == dtype and float(w) == pytest.approx(1.45)
    for shape in [(0,), (3, 0), (0, 4, 2)]:
        e = np.empty(shape, dtype)
        optim.adam_(e, e.copy(), e.copy(), e.copy(), 1)
        optim.sgd_([e], [e.copy()], 0.1)
        assert fastdl.clip_grad_norm_([e], 1.0) == 0.0


def test_nan_and_inf_propagate(dtype):
    w = np.ones(9, dtype)
    g = np.zeros(9, dtype)
    g[2], g[5] = np.nan, np.inf
    m, v = np.zeros_like(w), np.zeros_like(w)
    optim.adam_(w, g, m, v, 1)
    with np.errstate(invalid="ignore"):
        W, M, V = ref.adam(np.ones(9), g.astype(np.float64), 0.0, 0.0, 1)
    _close(w, W, dtype)
    assert np.isnan(w[2]) and np.isnan(w[5]) and np.isfinite(np.delete(w, [2, 5])).all()
    w = np.ones(9, dtype)
    optim.sgd_(w, g, 0.1)
    assert np.isnan(w[2]) and w[5] == -np.inf


def test_lr_zero_and_integer_gradient():
    w = np.arange(5.0)
    optim.sgd_(w, np.ones(5, np.int64), 0.0)
    assert np.array_equal(w, np.arange(5.0))
    optim.sgd_(w, [1, 1, 1, 1, 1], 1)          # array-like, int grads promote to float64
    assert np.array_equal(w, np.arange(5.0) - 1)


# --------------------------------------------------------------------------------------
# the multi-tensor path

def _params(rng, dtype, shapes, kinds=None):
    kinds = kinds or ["C"] * len(shapes)
    return [layout(random_array(rng, s, dtype), k) for s, k in zip(shapes, kinds)]


LIST_SHAPES = [(7,), (33, 5), (1,), (0,), (200, 201), (3, 4, 5), (50000,)]
LIST_KINDS = ["C", "F", "C", "C", "strided", "negative", "C"]


def test_lists_equal_single_calls_bitwise(rng, dtype):
    ws = _params(rng, dtype, LIST_SHAPES, LIST_KINDS)
    gs = _params(rng, dtype, LIST_SHAPES)
    ms = [np.zeros_like(w) for w in ws]
    vs = [np.zeros_like(w) for w in ws]
    singles = [[a.copy() for a in grp] for grp in zip(ws, ms, vs)]
    for t in (1, 2, 3):
        optim.adam_(ws, gs, ms, vs, t, lr=0.01, weight_decay=0.01, decoupled=True)
        for (w, m, v), g in zip(singles, gs):
            optim.adam_(w, g, m, v, t, lr=0.01, weight_decay=0.01, decoupled=True)
    for (w, m, v), a, b, c in zip(singles, ws, ms, vs):
        assert np.array_equal(w, a) and np.array_equal(m, b) and np.array_equal(v, c)


def test_lists_mixed_dtypes(rng):
    ws = [random_array(rng, (40,), np.float32), random_array(rng, (40000,), np.float64)]
    gs = [random_array(rng, w.shape, w.dtype) for w in ws]
    vs = [np.zeros_like(w) for w in ws]
    expect = [ref.momentum(w.astype(np.float64), g.astype(np.float64), 0.0, 0.5, 0.9)[0]
              for w, g in zip(ws, gs)]
    optim.momentum_(ws, gs, vs, 0.5)
    for w, e in zip(ws, expect):
        _close(w, e, w.dtype)


@requires_openmp
@pytest.mark.parametrize("op", ["adam", "sgd", "momentum", "sgdm", "clip"])
def test_thread_count_bitwise(rng, dtype, op):
    shapes = [BIG, (50000,), (300, 7), (5,)]
    kinds = ["F", "C", "strided", "C"]
    results = []
    for n in (1, 2):
        norms = []
        r = np.random.default_rng(7)
        ws = [layout(random_array(r, s, dtype), k) for s, k in zip(shapes, kinds)]
        gs = [random_array(r, s, dtype) for s in shapes]
        st = [np.zeros_like(w) for w in ws]
        st2 = [np.zeros_like(w) for w in ws]
        with fastdl.threads(n):
            for t in (1, 2):
                if op == "adam":
                    optim.adam_(ws, gs, st, st2, t, lr=0.1)
                elif op == "sgd":
                    optim.sgd_(ws, gs, 0.1, 0.01)
                elif op == "momentum":
                    optim.momentum_(ws, gs, st, 0.1)
                elif op == "sgdm":
                    optim.sgd_(ws, gs, 0.1, momentum=0.9, buf=st)
                else:
                    norms.append(fastdl.clip_grad_norm_(ws, 1.0))
        results.append([w.tobytes() for w in ws] + [s.tobytes() for s in st + st2] + norms)
    assert results[0] == results[1]


# --------------------------------------------------------------------------------------
# bad input: precise errors, nothing written

def _adam_args(rng, dtype, shape=(6, 5)):
    w = random_array(rng, shape, dtype)
    return [w, random_array(rng, shape, dtype), np.zeros_like(w), np.ones_like(w)]


@pytest.mark.parametrize("case,exc,match", [
    ("w-list", TypeError, "w"),
    ("w-int", TypeError, "dtype int64"),
    ("w-readonly", ValueError, "read-only"),
    ("w-byteswapped", TypeError, "byte order"),
    ("g-shape", ValueError, r"g has shape \(5, 6\) and w has shape \(6, 5\)"),
    ("g-dtype", TypeError, "g has dtype"),
    ("g-complex", TypeError, "complex"),
    ("m-shape", ValueError, "m has shape"),
    ("v-readonly", ValueError, "v is read-only"),
    ("g-is-w", ValueError, "share memory"),
    ("m-is-v", ValueError, "share memory"),
    ("overlap-view", ValueError, "share memory"),
    ("lr-nan", ValueError, "lr is NaN"),
    ("lr-neg", ValueError, "lr must be >= 0"),
    ("beta1-one", ValueError, r"beta1 must be in \[0, 1\)"),
    ("beta2-neg", ValueError, "beta2"),
    ("eps-zero", ValueError, "eps must be > 0"),
    ("wd-neg", ValueError, "weight_decay"),
    ("t-zero", ValueError, "t must be >= 1"),
    ("t-float", TypeError, "t must be an int"),
    ("lr-str", TypeError, "lr must be a real number"),
])
def test_adam_bad_input_changes_nothing(rng, dtype, case, exc, match):
    w, g, m, v = _adam_args(rng, dtype)
    kw = dict(t=1, lr=0.1)
    other = np.float64 if dtype == np.float32 else np.float32
    if case == "w-list":
        w = w.tolist()
    elif case == "w-int":
        w = np.ones((6, 5), np.int64)
    elif case == "w-readonly":
        w.flags.writeable = False
    elif case == "w-byteswapped":
        w = w.astype(w.dtype.newbyteorder())
    elif case == "g-shape":
        g = random_array(rng, (5, 6), dtype)
    elif case == "g-dtype":
        g = g.astype(other)
    elif case == "g-complex":
        g = g.astype(np.complex128)
    elif case == "m-shape":
        m = np.zeros((6, 6), dtype)
    elif case == "v-readonly":
        v.flags.writeable = False
    elif case == "g-is-w":
        g = w
    elif case == "m-is-v":
        v = m
    elif case == "overlap-view":
        big = np.zeros((7, 5), dtype)
        m, v = big[:6], big[1:]
    elif case == "lr-nan":
        kw["lr"] = float("nan")
    elif case == "lr-neg":
        kw["lr"] = -1e-3
    elif case == "beta1-one":
        kw["beta1"] = 1.0
    elif case == "beta2-neg":
        kw["beta2"] = -0.1
    elif case == "eps-zero":
        kw["eps"] = 0.0
    elif case == "wd-neg":
        kw["weight_decay"] = -0.1
    elif case == "t-zero":
        kw["t"] = 0
    elif case == "t-float":
        kw["t"] = 1.0
    elif case == "lr-str":
        kw["lr"] = "0.1"
    args = [w, g, m, v]
    before = snapshot(*[a if isinstance(a, np.ndarray) else None for a in args])
    with pytest.raises(exc, match=match):
        optim.adam_(w, g, m, v, **kw)
    assert_unchanged(before, *args)


def test_interleaved_views_are_not_overlap(dtype):
    a = np.arange(20, dtype=dtype)
    w, g = a[::2], a[1::2]            # extents intersect, the elements do not
    optim.sgd_(w, g, 1.0)
    assert np.array_equal(a[::2], np.arange(0, 20, 2) - np.arange(1, 20, 2))


@pytest.mark.parametrize("case", ["late-readonly", "late-shape", "dup-param", "g-len",
                                  "late-g-is-w", "w-not-list"])
def test_list_bad_late_entry_changes_nothing(rng, dtype, case):
    shapes = [(40000,), (7,), (33, 5), (9,)]
    ws = _params(rng, dtype, shapes)
    gs = _params(rng, dtype, shapes)
    vs = [np.zeros_like(w) for w in ws]
    exc = ValueError
    if case == "late-readonly":
        ws[3].flags.writeable = False
    elif case == "late-shape":
        gs[3] = gs[3][:8]
    elif case == "dup-param":
        ws[3] = ws[0][:9]
    elif case == "g-len":
        gs = gs[:3]
    elif case == "late-g-is-w":
        gs[3] = ws[3]
    elif case == "w-not-list":
        vs = vs[0]
        exc = TypeError
    before = snapshot(*ws, *(gs if isinstance(gs, list) else []))
    vb = snapshot(*(vs if isinstance(vs, list) else [vs]))
    with pytest.raises(exc):
        optim.momentum_(ws, gs, vs, 0.1)
    assert_unchanged(before, *ws, *gs)
    assert_unchanged(vb, *(vs if isinstance(vs, list) else [vs]))


def test_sgd_momentum_needs_buffer():
    w = np.ones(3)
    with pytest.raises(ValueError, match="buf"):
        optim.sgd_(w, np.ones(3), 0.1, momentum=0.9)
    assert np.array_equal(w, np.ones(3))


# --------------------------------------------------------------------------------------
# classes

def _class_run(cls, kwargs, ws, grads_seq):
    opt = cls(ws, **kwargs)
    for gs in grads_seq:
        opt.step(gs)
    return opt


@pytest.mark.parametrize("which", ["sgd", "sgd-mom", "momentum", "adam", "adam-wd", "adamw"])
def test_classes_against_reference(rng, dtype, which):
    shapes = [(7,), (33, 5), (40001,)]
    ws = _params(rng, dtype, shapes, ["C", "F", "C"])
    W = [w.astype(np.float64) for w in ws]
    S1 = [np.zeros(s) for s in shapes]
    S2 = [np.zeros(s) for s in shapes]
    cls, kw = {
        "sgd": (optim.SGD, dict(lr=0.1, weight_decay=0.01)),
        "sgd-mom": (optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
        "momentum": (optim.Momentum, dict(lr=0.1, beta=0.8)),
        "adam": (optim.Adam, dict(lr=0.01, betas=(0.8, 0.99))),
        "adam-wd": (optim.Adam, dict(lr=0.01, weight_decay=0.1)),
        "adamw": (optim.AdamW, dict(lr=0.01)),
    }[which]
    opt = cls(ws, **kw)
    for t in range(1, 6):
        gs = _params(rng, dtype, shapes)
        opt.step(gs)
        for i, g in enumerate(gs):
            G = g.astype(np.float64)
            if which == "sgd":
                W[i] = ref.sgd(W[i], G, 0.1, 0.01)
            elif which == "sgd-mom":
                W[i], S1[i] = ref.sgd_momentum(W[i], G, S1[i], 0.1, 0.9, 0.01)
            elif which == "momentum":
                W[i], S1[i] = ref.momentum(W[i], G, S1[i], 0.1, 0.8)
            elif which == "adam":
                W[i], S1[i], S2[i] = ref.adam(W[i], G, S1[i], S2[i], t, 0.01, 0.8, 0.99)
            elif which == "adam-wd":
                W[i], S1[i], S2[i] = ref.adam(W[i], G, S1[i], S2[i], t, 0.01,
                                              weight_decay=0.1)
            else:
                W[i], S1[i], S2[i] = ref.adam(W[i], G, S1[i], S2[i], t, 0.01,
                                              weight_decay=1e-2, decoupled=True)
        for w, e in zip(ws, W):
            _close(w, e, dtype)
    assert opt.t == 5


def test_adamw_default_weight_decay_and_torch_semantics(rng):
    torch = pytest.importorskip("torch")
    shapes = [(7, 3), (300,)]
    for cls, tcls in ((optim.Adam, torch.optim.Adam), (optim.AdamW, torch.optim.AdamW)):
        ws = _params(rng, np.float64, shapes)
        tp = [torch.tensor(w.copy(), requires_grad=True) for w in ws]
        kw = dict(lr=0.01, weight_decay=0.05) if cls is optim.Adam else dict(lr=0.01)
        opt, topt = cls(ws, **kw), tcls(tp, foreach=False, **kw)
        for _ in range(4):
            gs = _params(rng, np.float64, shapes)
            opt.step(gs)
            for p, g in zip(tp, gs):
                p.grad = torch.tensor(g)
            topt.step()
        for w, p in zip(ws, tp):
            np.testing.assert_allclose(w, p.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert optim.AdamW([np.zeros(1)]).weight_decay == 1e-2


@pytest.mark.parametrize("cls,kw", [(optim.SGD, dict(lr=0.1, momentum=0.9)),
                                    (optim.SGD, dict(lr=0.1)),
                                    (optim.Momentum, dict(lr=0.1)),
                                    (optim.Adam, dict(lr=0.01, weight_decay=0.1)),
                                    (optim.AdamW, dict(lr=0.01))])
def test_state_dict_resume_is_bitwise(rng, dtype, cls, kw, tmp_path):
    shapes = [(7,), (33, 5), (40001,)]
    ws0 = _params(rng, dtype, shapes)
    grads = [_params(rng, dtype, shapes) for _ in range(6)]
    full = [w.copy() for w in ws0]
    opt = cls(full, **kw)
    for gs in grads:
        opt.step(gs)
    part = [w.copy() for w in ws0]
    opt1 = cls(part, **kw)
    for gs in grads[:3]:
        opt1.step(gs)
    sd = opt1.state_dict()
    np.savez(tmp_path / "opt.npz", **sd)
    np.savez(tmp_path / "w.npz", *part)
    opt1.step(grads[3])            # the saved state is a copy, not the live arrays
    assert sd["t"] == 3
    with np.load(tmp_path / "w.npz") as f:
        resumed = [f[f"arr_{i}"].copy() for i in range(len(shapes))]
    opt_r = cls(resumed, **kw)
    with np.load(tmp_path / "opt.npz") as f:
        opt_r.load_state_dict(dict(f))
    assert opt_r.t == 3
    for gs in grads[3:]:
        opt_r.step(gs)
    for a, b in zip(full, resumed):
        assert a.tobytes() == b.tobytes()


def test_load_state_dict_bad_changes_nothing(rng, dtype):
    ws = _params(rng, dtype, [(5,), (3, 2)])
    opt = optim.Adam(ws, lr=0.1)
    opt.step(_params(rng, dtype, [(5,), (3, 2)]))
    good = opt.state_dict()
    for bad in ({**good, "v.1": np.zeros((2, 3), dtype)},
                {**good, "beta1": 1.5},
                {**good, "lr": float("nan")},
                {k: x for k, x in good.items() if k != "m.0"},
                {**good, "extra": 1}):
        before = opt.state_dict()
        with pytest.raises(ValueError):
            opt.load_state_dict(bad)
        after = opt.state_dict()
        assert all(np.array_equal(before[k], after[k]) for k in before)


def test_step_validation(rng, dtype):
    shapes = [(5,), (3, 2)]
    ws = _params(rng, dtype, shapes)
    opt = optim.Adam(ws, lr=0.1)
    other = np.float64 if dtype == np.float32 else np.float32
    good = _params(rng, dtype, shapes)
    opt.step(good)
    cases = [
        (good[:1], ValueError, "1 gradients for 2 parameters"),
        ([good[0], good[1].T], ValueError, r"grads\[1\] has shape \(2, 3\)"),
        ([good[0], good[1].astype(other)], TypeError, r"grads\[1\] has dtype"),
        ([good[0], ws[1]], ValueError, "share memory"),
        ("abc", TypeError, "list of arrays"),
    ]
    for grads, exc, match in cases:
        before = snapshot(*ws, *opt._state[0], *opt._state[1])
        with pytest.raises(exc, match=match):
            opt.step(grads)
        assert_unchanged(before, *ws, *opt._state[0], *opt._state[1])
        assert opt.t == 1


def test_step_gradient_layout_changes(rng, dtype):
    shapes = [(30, 20), (40000,)]
    ws = _params(rng, dtype, shapes)
    W = [w.copy() for w in ws]
    opt, opt2 = optim.Momentum(ws, lr=0.1), optim.Momentum(W, lr=0.1)
    for kind in ["C", "F", "strided", "C", "negative"]:
        gs = [layout(random_array(rng, s, dtype), kind) for s in shapes]
        opt.step(gs)
        opt2.step([np.ascontiguousarray(g) for g in gs])
        for a, b in zip(ws, W):
            assert a.tobytes() == b.tobytes()


def test_class_bad_construction():
    w = np.zeros(4)
    with pytest.raises(ValueError, match="share memory"):
        optim.SGD([w, w[1:]], lr=0.1)
    with pytest.raises(TypeError, match=r"params\[0\]"):
        optim.Adam([np.zeros(3, np.int32)])
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([w], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="lr"):
        optim.Momentum([w], lr=-1)
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD([w], lr=0.1, momentum=float("nan"))


def test_zero_state(rng):
    ws = _params(rng, np.float32, [(4,)])
    opt = optim.Adam(ws)
    opt.step(_params(rng, np.float32, [(4,)]))
    opt.zero_state()
    assert opt.t == 0
    assert all(not s.any() for arrays in opt._state for s in arrays)


# --------------------------------------------------------------------------------------
# clip_grad_norm_

@pytest.mark.parametrize("max_norm", [0.5, 1e9])
def test_clip_grad_norm(rng, dtype, max_norm):
    shapes = [(7,), (33, 5), (40001,), (0,)]
    gs = _params(rng, dtype, shapes, ["C", "strided", "C", "C"])
    norm_ref, clipped = ref.clip_grad_norm(gs, max_norm)
    norm = fastdl.clip_grad_norm_(gs, max_norm)
    assert isinstance(norm, float)
    assert norm == pytest.approx(norm_ref, rel=1e-13)
    for g, e in zip(gs, clipped):
        assert_close(g, e, dtype)


def test_clip_grad_norm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    gs = _params(rng, np.float32, [(70,), (33, 5)])
    tp = [torch.zeros(g.shape, requires_grad=True) for g in gs]
    for p, g in zip(tp, gs):
        p.grad = torch.tensor(g.copy())
    tn = torch.nn.utils.clip_grad_norm_(tp, 2.0)
    n = fastdl.clip_grad_norm_(gs, 2.0)
    assert n == pytest.approx(float(tn), rel=1e-6)
    for g, p in zip(gs, tp):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-6)


def test_clip_grad_norm_nonfinite(dtype):
    g = np.array([1.0, np.inf, 2.0], dtype)
    h = np.array([3.0], dtype)
    assert fastdl.clip_grad_norm_([g, h], 1.0) == np.inf
    assert np.isnan(g[1]) and g[0] == 0 and h[0] == 0          # grads * 0, as torch
    g = np.array([1.0, np.nan], dtype)
    h = np.array([3.0], dtype)
    assert np.isnan(fastdl.clip_grad_norm_([g, h], 1.0))
    assert np.isnan(g).all() and np.isnan(h).all()              # grads * NaN, as torch


def test_clip_grad_norm_accurate_and_single_array():
    g = np.full(1_000_003, 0.1, np.float32)
    expect = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    assert fastdl.clip_grad_norm_(g, 1e9) == pytest.approx(expect, rel=1e-14)
    assert fastdl.clip_grad_norm_([], 1.0) == 0.0


def test_clip_grad_norm_bad_input():
    g = np.ones(3)
    for args, exc in [(([g], -1.0), ValueError), (([g], float("nan")), ValueError),
                      (([g, g], 1.0), ValueError), (([g, [1.0]], 1.0), TypeError)]:
        with pytest.raises(exc):
            fastdl.clip_grad_norm_(*args)
        assert np.array_equal(g, np.ones(3))


def test_public_names():
    assert fastdl.optim is optim
    for name in ["clip_grad_norm_", "l1_penalty", "l2_penalty", "l1_penalty_grad",
                 "l2_penalty_grad"]:
        assert getattr(fastdl, name) is getattr(optim, name)
