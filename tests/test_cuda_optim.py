"""GPU sgd_, momentum_, adam_ and the optimiser classes on device arrays (cuda/optim.cu).

Runs anywhere the CUDA extension is built:
  * validation with fake device arrays (no memory behind them): the CPU's errors, every
    entry of a list checked before anything would be written;
  * without a device, valid calls raise RuntimeError "no CUDA device";
  * the host twin of the multi-tensor launch (_host_optim_functional: the GPU functions'
    whole Python path with the launch run on the CPU over host memory) against the CPU
    functions over several steps, lists longer than a launch's table, mixed dtypes;
  * the classes' GPU routing in fastdl.optim (construction and step validation).
On a machine with a GPU, the device tests compare the functions and the classes with the
CPU for several steps (both dtypes, odd sizes, strided parameters, lists, the caller's
stream with CuPy/torch when installed).
"""

import numpy as np
import pytest

_cuda = pytest.importorskip("fastdl._ext._cuda")

import fastdl  # noqa: E402
from fastdl import optim  # noqa: E402
from conftest import assert_close, layout, random_array  # noqa: E402
import reference_optim as ref  # noqa: E402

HAVE_GPU = fastdl.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason="no CUDA device")
no_gpu_only = pytest.mark.skipif(HAVE_GPU, reason="fake device arrays must not reach a GPU")

OP_SGD, OP_SGDM, OP_MOMENTUM, OP_ADAM = 0, 1, 2, 3


def _close(actual, expected, dtype):
    assert_close(actual, expected, dtype, terms=16)


class Fake:
    """A device array with no memory behind it (distinct fake pointers per object)."""
    _next = 0x7f0000000000

    def __init__(self, shape, dtype=np.float32, strides=None, readonly=False, ptr=None):
        if ptr is None:
            ptr = Fake._next
            Fake._next += 1 << 32
        self.ptr = ptr
        self.__cuda_array_interface__ = {
            "shape": tuple(shape), "typestr": np.dtype(dtype).str, "data": (ptr, readonly),
            "version": 3, "strides": strides, "stream": None}


class Host:
    """A "device" array whose interface points at a C-contiguous host array (for the host
    twin of the launch only)."""

    def __init__(self, a):
        assert a.flags.c_contiguous
        self.a = a
        self.__cuda_array_interface__ = {
            "shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False),
            "version": 3, "strides": None, "stream": None}


def _fakes(n=4, shape=(6, 5), dtype=np.float32):
    return [Fake(shape, dtype) for _ in range(n)]


# --------------------------------------------------------------------------------------
# validation with fake device arrays

@pytest.mark.parametrize("case,exc,match", [
    ("w-int", TypeError, "dtype int64"),
    ("w-readonly", ValueError, "read-only"),
    ("g-shape", ValueError, r"g has shape \(5, 6\) and w has shape \(6, 5\)"),
    ("g-dtype", TypeError, "g has dtype"),
    ("g-host", TypeError, "g must be a CUDA device array"),
    ("m-host", TypeError, "m is updated in place"),
    ("m-shape", ValueError, "m has shape"),
    ("v-readonly", ValueError, "v is read-only"),
    ("g-is-w", ValueError, "share memory"),
    ("m-is-v", ValueError, "share memory"),
    ("overlap-view", ValueError, "share memory"),
    ("misaligned", ValueError, "not aligned"),
    ("lr-nan", ValueError, "lr is NaN"),
    ("lr-neg", ValueError, "lr must be >= 0"),
    ("beta1-one", ValueError, r"beta1 must be in \[0, 1\)"),
    ("beta2-neg", ValueError, "beta2"),
    ("eps-zero", ValueError, "eps must be > 0"),
    ("wd-neg", ValueError, "weight_decay"),
    ("t-zero", ValueError, "t must be >= 1"),
    ("t-float", TypeError, "t must be an int"),
    ("t-bool", TypeError, "t must be an int"),
    ("lr-str", TypeError, "lr must be a real number"),
    ("m-list", TypeError, "w is an array, so m must be an array"),
])
def test_adam_validation(case, exc, match, dtype):
    w, g, m, v = _fakes(dtype=dtype)
    kw = dict(t=1, lr=0.1)
    other = np.float64 if dtype == np.float32 else np.float32
    if case == "w-int":
        w = Fake((6, 5), np.int64)
    elif case == "w-readonly":
        w = Fake((6, 5), dtype, readonly=True)
    elif case == "g-shape":
        g = Fake((5, 6), dtype)
    elif case == "g-dtype":
        g = Fake((6, 5), other)
    elif case == "g-host":
        g = np.ones((6, 5), dtype)
    elif case == "m-host":
        m = np.zeros((6, 5), dtype)
    elif case == "m-shape":
        m = Fake((6, 6), dtype)
    elif case == "v-readonly":
        v = Fake((6, 5), dtype, readonly=True)
    elif case == "g-is-w":
        g = w
    elif case == "m-is-v":
        v = m
    elif case == "overlap-view":
        v = Fake((6, 5), dtype, ptr=m.ptr + 5 * np.dtype(dtype).itemsize)
    elif case == "misaligned":
        w = Fake((6, 5), dtype, ptr=w.ptr + 2)
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
    elif case == "t-bool":
        kw["t"] = True
    elif case == "lr-str":
        kw["lr"] = "0.1"
    elif case == "m-list":
        m = [m]
    with pytest.raises(exc, match=match):
        optim.adam_(w, g, m, v, **kw)


def test_sgd_and_momentum_validation():
    w, g, b, v = _fakes()
    with pytest.raises(ValueError, match="needs buf"):
        optim.sgd_(w, g, 0.1, momentum=0.9)
    with pytest.raises(ValueError, match="momentum"):
        optim.sgd_(w, g, 0.1, momentum=1.0, buf=b)
    with pytest.raises(ValueError, match="buf has shape"):
        optim.sgd_(w, g, 0.1, momentum=0.5, buf=Fake((5,)))
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        optim.momentum_(w, g, v, 0.1, beta=1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.momentum_(w, g, v, 0.1, weight_decay=float("nan"))
    with pytest.raises(ValueError, match="v and w share memory|w and v share memory"):
        optim.momentum_(w, g, w, 0.1)


def test_interleaved_views_are_not_overlap():
    base = 0x7e0000000000
    w = Fake((10,), np.float32, strides=(8,), ptr=base)
    g = Fake((10,), np.float32, strides=(8,), ptr=base + 4)
    neg = Fake((10,), np.float32, strides=(-8,), ptr=base + 4 + 72)   # g's elements reversed
    if HAVE_GPU:
        pytest.skip("fake device arrays must not reach a GPU")
    for other in (g, neg):
        with pytest.raises(RuntimeError, match="no CUDA device"):
            optim.sgd_(w, other, 1.0)
    with pytest.raises(ValueError, match="share memory"):
        optim.sgd_(w, Fake((10,), np.float32, strides=(8,), ptr=base + 8), 1.0)


@pytest.mark.parametrize("case", ["late-readonly", "late-shape", "dup-param", "g-len",
                                  "late-g-is-w", "w-not-list", "late-host"])
def test_list_bad_late_entry(case):
    shapes = [(40000,), (7,), (33, 5), (9,)]
    ws = [Fake(s) for s in shapes]
    gs = [Fake(s) for s in shapes]
    vs = [Fake(s) for s in shapes]
    exc = ValueError
    if case == "late-readonly":
        ws[3] = Fake((9,), readonly=True)
    elif case == "late-shape":
        gs[3] = Fake((8,))
    elif case == "dup-param":
        ws[3] = Fake((9,), ptr=ws[0].ptr + 16)
    elif case == "g-len":
        gs = gs[:3]
    elif case == "late-g-is-w":
        gs[3] = ws[3]
    elif case == "w-not-list":
        vs = vs[0]
        exc = TypeError
    elif case == "late-host":
        vs[3] = np.zeros(9, np.float32)
        exc = TypeError
    with pytest.raises(exc):
        _cuda.momentum_(ws, gs, vs, 0.1)


@no_gpu_only
def test_valid_calls_without_a_device_raise_runtime_error():
    w, g, m, v = _fakes()
    ws, gs = _fakes(3, (7,)), _fakes(3, (7,))
    calls = [
        lambda: optim.sgd_(w, g, 0.1),
        lambda: optim.sgd_(w, g, 0.1, 0.01, momentum=0.9, buf=m),
        lambda: optim.momentum_(w, g, v, 0.1),
        lambda: optim.adam_(w, g, m, v, 3, lr=0.01, weight_decay=0.1, decoupled=True),
        lambda: _cuda.sgd_(ws, gs, 0.1),
        lambda: _cuda.sgd_([], [], 0.1),
        lambda: optim.adam_(Fake((3, 4), strides=(32, 4)), Fake((3, 4)), Fake((3, 4)),
                            Fake((3, 4)), 1),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="no CUDA device"):
            call()


@no_gpu_only
def test_public_functions_dispatch_lists():
    ws, gs = _fakes(3, (7,)), _fakes(3, (7,))
    with pytest.raises(RuntimeError, match="no CUDA device"):
        optim.sgd_(ws, gs, 0.1)


# --------------------------------------------------------------------------------------
# the classes on device arrays: routing and validation

def test_classes_route_device_parameters():
    ps = _fakes(3, (5, 4))
    for cls, kw, nstate in [(optim.SGD, dict(lr=0.1), 0),
                            (optim.SGD, dict(lr=0.1, momentum=0.9), 1),
                            (optim.Momentum, dict(lr=0.1), 1),
                            (optim.Adam, dict(), 2), (optim.AdamW, dict(), 2)]:
        opt = cls(ps, **kw)
        assert opt._gpu is not None and opt.params == tuple(ps) and opt.t == 0
        assert len(opt._gpu.state_meta()) == nstate
        assert opt._gpu.state_meta()[:1] in ([], [[((5, 4), np.float32)] * 3])
    single = optim.Adam(ps[0])
    assert single.params == (ps[0],)
    # CPU parameters keep the CPU engine
    assert optim.Adam([np.zeros(3)])._gpu is None


def test_class_construction_validation():
    p = Fake((4,))
    with pytest.raises(ValueError, match="share memory"):
        optim.SGD([p, Fake((4,), ptr=p.ptr + 4)], lr=0.1)
    with pytest.raises(TypeError, match=r"params\[1\]"):
        optim.Adam([p, Fake((3,), np.int32)])
    with pytest.raises(TypeError, match=r"params\[1\]"):
        optim.Adam([p, np.zeros(3)])
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        optim.Momentum([Fake((3,), readonly=True)], lr=0.1)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([p], betas=(0.9, 1.0))


def test_class_step_validation():
    ps = [Fake((5,)), Fake((3, 2), np.float64)]
    opt = optim.Adam(ps, lr=0.1)
    good = [Fake((5,)), Fake((3, 2), np.float64)]
    cases = [
        (good[:1], ValueError, "1 gradients for 2 parameters"),
        ([good[0], Fake((2, 3), np.float64)], ValueError, r"grads\[1\] has shape \(2, 3\)"),
        ([good[0], Fake((3, 2))], TypeError, r"grads\[1\] has dtype"),
        ([good[0], ps[1]], ValueError, "share memory"),
        ([Fake((5,), ptr=ps[0].ptr + 8), good[1]], ValueError, "share memory"),
        ([good[0], np.zeros((3, 2))], TypeError, r"grads\[1\] must be a CUDA device array"),
        ("abc", TypeError, "list of arrays"),
    ]
    for grads, exc, match in cases:
        with pytest.raises(exc, match=match):
            opt.step(grads)
        assert opt.t == 0
    if not HAVE_GPU:
        with pytest.raises(RuntimeError, match="no CUDA device"):
            opt.step(good)
        assert opt.t == 0
        with pytest.raises(RuntimeError, match="no CUDA device"):
            opt.state_dict()
        opt.zero_state()                 # nothing allocated yet: nothing to zero
        sd = {"t": 1, "lr": 0.1, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
              "weight_decay": 0.0, "m.0": np.zeros(5, np.float32),
              "m.1": np.zeros((3, 2)), "v.0": np.zeros(5, np.float32), "v.1": np.zeros(3)}
        with pytest.raises(ValueError, match="v.1 has shape"):
            opt.load_state_dict(sd)


# --------------------------------------------------------------------------------------
# host twin of the launch vs the CPU

LIST_SHAPES = [(7,), (33, 5), (1,), (0,), (200, 201), (3, 4, 5), (50000,), (4096,), (4097,),
               ()]


def _arrays(rng, dtype, shapes, scale=1.0):
    return [np.array(random_array(rng, s) * scale, dtype=dtype) for s in shapes]


@pytest.mark.parametrize("op", ["sgd", "sgd-wd", "sgdm", "momentum", "adam", "adam-wd",
                                "adamw"])
def test_host_launch_matches_cpu_over_steps(op, dtype, rng):
    ws = _arrays(rng, dtype, LIST_SHAPES)
    s1 = _arrays(rng, dtype, LIST_SHAPES, 0.1)
    s2 = [np.array(np.abs(a)) for a in _arrays(rng, dtype, LIST_SHAPES, 0.1)]
    cpu = [[a.copy() for a in L] for L in (ws, s1, s2)]
    W = [a.astype(np.float64) for a in ws]
    S1 = [a.astype(np.float64) for a in s1]
    S2 = [a.astype(np.float64) for a in s2]
    for t in range(1, 5):
        gs = _arrays(rng, dtype, LIST_SHAPES)
        H = lambda L: [Host(a) for a in L]  # noqa: E731
        if op in ("sgd", "sgd-wd"):
            wd = 0.01 if op == "sgd-wd" else 0.0
            _cuda._host_optim_functional("sgd_", H(ws), H(gs), 0.1, wd)
            optim.sgd_(cpu[0], gs, 0.1, wd)
            W = [ref.sgd(w, g.astype(np.float64), 0.1, wd) for w, g in zip(W, gs)]
        elif op == "sgdm":
            _cuda._host_optim_functional("sgd_", H(ws), H(gs), 0.1, 0.01, momentum=0.9,
                                         buf=H(s1))
            optim.sgd_(cpu[0], gs, 0.1, 0.01, momentum=0.9, buf=cpu[1])
            res = [ref.sgd_momentum(w, g.astype(np.float64), b, 0.1, 0.9, 0.01)
                   for w, g, b in zip(W, gs, S1)]
            W, S1 = [r[0] for r in res], [r[1] for r in res]
        elif op == "momentum":
            _cuda._host_optim_functional("momentum_", H(ws), H(gs), H(s1), 0.1, 0.8, 0.01)
            optim.momentum_(cpu[0], gs, cpu[1], 0.1, 0.8, 0.01)
            res = [ref.momentum(w, g.astype(np.float64), v, 0.1, 0.8, 0.01)
                   for w, g, v in zip(W, gs, S1)]
            W, S1 = [r[0] for r in res], [r[1] for r in res]
        else:
            kw = {"adam": dict(lr=0.01), "adam-wd": dict(lr=0.01, weight_decay=0.1),
                  "adamw": dict(lr=0.01, weight_decay=0.1, decoupled=True)}[op]
            _cuda._host_optim_functional("adam_", H(ws), H(gs), H(s1), H(s2), t, **kw)
            optim.adam_(cpu[0], gs, cpu[1], cpu[2], t, **kw)
            res = [ref.adam(w, g.astype(np.float64), m, v, t, **kw)
                   for w, g, m, v in zip(W, gs, S1, S2)]
            W, S1, S2 = [r[0] for r in res], [r[1] for r in res], [r[2] for r in res]
    for mine, theirs, exact in ((ws, cpu[0], W), (s1, cpu[1], S1), (s2, cpu[2], S2)):
        for a, b, e in zip(mine, theirs, exact):
            if a.size == 0:
                continue
            if op.startswith("sgd") and op != "sgdm" and mine is not ws:
                continue
            _close(a, e, dtype)
            # vs the CPU: rounding only (the compilers' fused multiply-adds differ)
            tol = (1e-6 if dtype == np.float32 else 1e-15) * max(np.abs(b).max(), 1e-30)
            assert np.max(np.abs(a.astype(np.float64) - b)) <= tol


def test_host_launch_lists_longer_than_a_launch(rng):
    """More tensors than a launch's table holds: several launches, each element once."""
    for op, name in ((OP_SGD, "sgd_"), (OP_ADAM, "adam_")):
        cap = _cuda._optim_capacity(op)
        assert 50 < cap < 200
        shapes = [(int(k),) for k in rng.integers(0, 9000, 2 * cap + 7)]
        ws = _arrays(rng, np.float32, shapes)
        gs = _arrays(rng, np.float32, shapes)
        ms = [np.zeros_like(w) for w in ws]
        vs = [np.zeros_like(w) for w in ws]
        cpu = [w.copy() for w in ws]
        cm = [np.zeros_like(w) for w in ws]
        cv = [np.zeros_like(w) for w in ws]
        if name == "sgd_":
            _cuda._host_optim_functional(name, [Host(a) for a in ws], [Host(a) for a in gs],
                                         0.5)
            optim.sgd_(cpu, gs, 0.5)
        else:
            _cuda._host_optim_functional(name, *[[Host(a) for a in L]
                                                 for L in (ws, gs, ms, vs)], 1, lr=0.1)
            optim.adam_(cpu, gs, cm, cv, 1, lr=0.1)
        for a, b in zip(ws, cpu):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_host_launch_mixed_dtypes_and_zero_dim(rng):
    ws = [random_array(rng, (40,), np.float32), random_array(rng, (40000,), np.float64),
          np.array(1.5, np.float32)]
    gs = [random_array(rng, w.shape, w.dtype) for w in ws]
    vs = [np.zeros_like(w) for w in ws]
    expect = [ref.momentum(w.astype(np.float64), g.astype(np.float64), 0.0, 0.5, 0.9)[0]
              for w, g in zip(ws, gs)]
    _cuda._host_optim_functional("momentum_", [Host(a) for a in ws], [Host(a) for a in gs],
                                 [Host(a) for a in vs], 0.5)
    for w, e in zip(ws, expect):
        _close(w, e, w.dtype)


def test_host_launch_nan_and_inf(dtype):
    w = np.ones(9, dtype)
    g = np.zeros(9, dtype)
    g[2], g[5] = np.nan, np.inf
    m, v = np.zeros_like(w), np.zeros_like(w)
    _cuda._host_optim_functional("adam_", Host(w), Host(g), Host(m), Host(v), 1)
    assert np.isnan(w[2]) and np.isnan(w[5]) and np.isfinite(np.delete(w, [2, 5])).all()
    w = np.ones(9, dtype)
    _cuda._host_optim_functional("sgd_", Host(w), Host(g), 0.1)
    assert np.isnan(w[2]) and w[5] == -np.inf


def test_host_update_table_is_exact_per_element(rng):
    """_host_optim_update (the launch alone) equals the element formula applied by NumPy in
    the same order, for chunk and vector boundaries."""
    for n in (1, 3, 4, 5, 4095, 4096, 4097, 8193):
        w = random_array(rng, (n,), np.float64)
        g = random_array(rng, (n,), np.float64)
        exp = w - 0.25 * g
        _cuda._host_optim_update(OP_SGD, [[w, g]], lr=0.25)
        assert np.array_equal(w, exp), n


# --------------------------------------------------------------------------------------
# device tests

def to_dev(x):
    return fastdl.cuda.to_device(np.asarray(x))


def host(a):
    return fastdl.cuda.to_host(a)


class DevView:
    def __init__(self, owner, shape, strides, offset=0):
        self.owner = owner
        cai = owner.__cuda_array_interface__
        self.__cuda_array_interface__ = {
            "shape": tuple(shape), "typestr": cai["typestr"],
            "data": (cai["data"][0] + offset, False), "version": 3,
            "strides": tuple(strides), "stream": cai.get("stream")}


def strided_dev(x):
    """x as every-other element of a device buffer (NaN in between)."""
    big = np.full(tuple(2 * s for s in x.shape), np.nan, x.dtype)
    big[tuple(slice(0, None, 2) for _ in x.shape)] = x
    owner = to_dev(big)
    return DevView(owner, x.shape, tuple(2 * s for s in big.strides)), owner


@needs_gpu
@pytest.mark.parametrize("op", ["sgd", "sgdm", "momentum", "adam", "adam-wd", "adamw"])
def test_gpu_functional_matches_cpu_over_steps(op, dtype, rng):
    shapes = LIST_SHAPES
    ws = _arrays(rng, dtype, shapes)
    s1 = [np.zeros_like(w) for w in ws]
    s2 = [np.zeros_like(w) for w in ws]
    dw, d1, d2 = [to_dev(a) for a in ws], [to_dev(a) for a in s1], [to_dev(a) for a in s2]
    for t in range(1, 4):
        gs = _arrays(rng, dtype, shapes)
        dg = [to_dev(a) for a in gs]
        for i in range(len(ws)):         # one call per array and one call for the list
            args = (dw[i], dg[i]) if i % 2 else (dw[i:i + 1], dg[i:i + 1])
            st = (d1[i], d2[i]) if i % 2 else (d1[i:i + 1], d2[i:i + 1])
            fn = _cuda
            if op == "sgd":
                fn.sgd_(*args, 0.1, 0.01)
            elif op == "sgdm":
                fn.sgd_(*args, 0.1, 0.01, momentum=0.9, buf=st[0])
            elif op == "momentum":
                fn.momentum_(*args, st[0], 0.1, 0.8, 0.01)
            else:
                kw = {"adam": dict(lr=0.01), "adam-wd": dict(lr=0.01, weight_decay=0.1),
                      "adamw": dict(lr=0.01, weight_decay=0.1, decoupled=True)}[op]
                fn.adam_(*args, st[0], st[1], t, **kw)
        if op == "sgd":
            optim.sgd_(ws, gs, 0.1, 0.01)
        elif op == "sgdm":
            optim.sgd_(ws, gs, 0.1, 0.01, momentum=0.9, buf=s1)
        elif op == "momentum":
            optim.momentum_(ws, gs, s1, 0.1, 0.8, 0.01)
        else:
            optim.adam_(ws, gs, s1, s2, t, **kw)
    for dev, cpu in ((dw, ws), (d1, s1), (d2, s2)):
        for a, b in zip(dev, cpu):
            a = host(a)
            assert a.dtype == dtype and a.shape == b.shape
            if b.size:
                tol = (1e-6 if dtype == np.float32 else 1e-14) * max(np.abs(b).max(), 1e-30)
                assert np.max(np.abs(a.astype(np.float64) - b)) <= tol


@needs_gpu
def test_gpu_strided_parameters_and_long_lists(rng):
    w = random_array(rng, (33, 7), np.float32)
    g = random_array(rng, (33, 7), np.float32)
    dw, owner = strided_dev(w)
    m, v = to_dev(np.zeros_like(w)), to_dev(np.zeros_like(w))
    dg, _ = strided_dev(g)
    optim.adam_(dw, dg, m, v, 1, lr=0.1)
    cm, cv = np.zeros_like(w), np.zeros_like(w)
    optim.adam_(w, g, cm, cv, 1, lr=0.1)
    big = host(owner)
    np.testing.assert_allclose(big[::2, ::2], w, rtol=1e-6, atol=1e-7)
    mask = np.ones(big.shape, bool)
    mask[::2, ::2] = False
    assert np.isnan(big[mask]).all()          # nothing written between the view's elements
    shapes = [(int(k),) for k in rng.integers(0, 5000, 300)]
    ws = _arrays(rng, np.float64, shapes)
    gs = _arrays(rng, np.float64, shapes)
    dws = [to_dev(a) for a in ws]
    _cuda.sgd_(dws, [to_dev(a) for a in gs], 0.5)
    optim.sgd_(ws, gs, 0.5)
    for a, b in zip(dws, ws):
        np.testing.assert_allclose(host(a), b, rtol=1e-15, atol=1e-15)


@needs_gpu
@pytest.mark.parametrize("which", ["sgd", "sgd-mom", "momentum", "adam", "adam-wd", "adamw"])
def test_gpu_classes_match_cpu_classes(which, dtype, rng):
    shapes = [(7,), (33, 5), (40001,), (0,)]
    ws = _arrays(rng, dtype, shapes)
    cls, kw = {
        "sgd": (optim.SGD, dict(lr=0.1, weight_decay=0.01)),
        "sgd-mom": (optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
        "momentum": (optim.Momentum, dict(lr=0.1, beta=0.8)),
        "adam": (optim.Adam, dict(lr=0.01, betas=(0.8, 0.99))),
        "adam-wd": (optim.Adam, dict(lr=0.01, weight_decay=0.1)),
        "adamw": (optim.AdamW, dict(lr=0.01)),
    }[which]
    dws = [to_dev(a) for a in ws]
    gpu, cpu = cls(dws, **kw), cls(ws, **kw)
    for t in range(1, 6):
        gs = _arrays(rng, dtype, shapes)
        gpu.step([to_dev(a) for a in gs])
        cpu.step(gs)
    assert gpu.t == cpu.t == 5
    for a, b in zip(dws, ws):
        if b.size:
            tol = (1e-6 if dtype == np.float32 else 1e-14) * np.abs(b).max()
            assert np.max(np.abs(host(a).astype(np.float64) - b)) <= tol
    sd, sd_cpu = gpu.state_dict(), cpu.state_dict()
    assert sorted(sd) == sorted(sd_cpu)
    # resume on the device from the saved state: the same as going on
    resumed = [to_dev(host(a)) for a in dws]
    opt_r = cls(resumed, **kw)
    opt_r.load_state_dict(sd)
    gs = _arrays(rng, dtype, shapes)
    gpu.step([to_dev(a) for a in gs])
    opt_r.step([to_dev(a) for a in gs])
    for a, b in zip(dws, resumed):
        assert host(a).tobytes() == host(b).tobytes()
    gpu.zero_state()
    assert gpu.t == 0
    assert all(not host(s).any() for arrays in gpu._state for s in arrays)


@needs_gpu
def test_gpu_optim_classes_on_torch_tensors(rng):
    # torch's __cuda_array_interface__ (version 2) names no stream: default stream only
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    w = random_array(rng, (1000,), np.float32)
    g = random_array(rng, (1000,), np.float32)
    tw, tg = torch.from_numpy(w.copy()).cuda(), torch.from_numpy(g).cuda()
    opt = optim.Adam([tw], lr=0.1)
    for _ in range(3):
        opt.step([tg])
    assert isinstance(opt._state[0][0], torch.Tensor)
    torch.cuda.synchronize()
    cw = w.copy()
    ref_opt = optim.Adam([cw], lr=0.1)
    for _ in range(3):
        ref_opt.step([g])
    np.testing.assert_allclose(tw.cpu().numpy(), cw, rtol=1e-6, atol=1e-7)


@needs_gpu
def test_gpu_optim_caller_stream_cupy(rng):
    cupy = pytest.importorskip("cupy")
    w = random_array(rng, (1000,), np.float64)
    g = random_array(rng, (1000,), np.float64)
    with cupy.cuda.Stream() as s:
        cw, cg = cupy.asarray(w), cupy.asarray(g)
        v = cupy.zeros_like(cw)
        optim.momentum_(cw, cg, v, 0.1)
    s.synchronize()
    W, _ = ref.momentum(w, g, 0.0, 0.1)
    np.testing.assert_allclose(cupy.asnumpy(cw), W, rtol=1e-14)
