"""GPU twins of the softmax family and the losses (fastdl._ext._cuda; kernels in
src/fastdl/_ext/cuda/softmax_losses.cu).

On any machine where the extension is built: argument validation with fake device arrays
(every error comes before a device is needed, and leaves the arguments alone), the clear
RuntimeError without a device, the CPU functions' dispatch, and the kernels' arithmetic run on
the host by the test shims (``_host_*``: the kernels' own per-thread code, reduction order and
per-block partial sums) against the CPU functions, on every kernel path.

Where a GPU is usable: every function against the CPU on the same data, float32 and float64,
odd and empty shapes, special values, every kernel path, non-contiguous device inputs, out=,
the caller's stream (CuPy / torch when installed), result kinds, determinism.
"""

import contextlib

import numpy as np
import pytest

_cuda = pytest.importorskip("fastdl._ext._cuda")

import fastdl  # noqa: E402
from conftest import assert_close, random_array  # noqa: E402
from reference_softmax_losses import softmax_cross_entropy_ref  # noqa: E402

HAS_GPU = fastdl.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no usable CUDA device")
without_gpu = pytest.mark.skipif(HAS_GPU, reason="a device is present")

PATHS = {"auto": 0, "warp": 1, "block-cached": 2, "block-online": 3, "cols": 4}
FORWARD = {"softmax": fastdl.softmax, "log_softmax": fastdl.log_softmax}
BACKWARD = {"softmax_backward": (fastdl.softmax_backward, fastdl.softmax),
            "log_softmax_backward": (fastdl.log_softmax_backward, fastdl.log_softmax)}
REDUCTIONS = ("none", "mean", "sum")

# the CPU tests' shapes: odd sizes, rows of 1, every axis, long rows (> 40 KiB: the online
# pass; > 256 KiB), and shapes that take each kernel (rows <= 1024: registers; <= 40 KiB:
# shared memory; other axes: the column kernel)
SHAPES_AXES = [((1,), 0), ((7,), -1), ((1, 1), -1), ((3, 1), -1), ((3, 1), 0), ((5, 33), -1),
               ((5, 33), 0), ((4, 7, 33), 0), ((4, 7, 33), 1), ((4, 7, 33), 2), ((64, 1000), -1),
               ((1000, 40), 0), ((9, 3000), -1), ((2, 70001), -1), ((70001, 2), 0),
               ((3, 40, 300), 1)]
CE_CASES = [((8, 5), -1), ((8, 5), 1), ((5, 8), 0), ((4, 7, 6), 1), ((3, 4, 5, 6), 1),
            ((300, 1000), -1), ((6, 3000), -1), ((2, 70001), -1), ((2, 1000, 40), 1), ((7,), 0)]


def _ids(cases):
    return ["x".join(map(str, s)) + f"-ax{a}" for s, a in cases]


def _logits(rng, shape, dtype):
    return (3 * rng.standard_normal(shape)).astype(dtype)


def _class_targets(rng, shape, axis, ignore=None):
    tshape = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    lab = rng.integers(0, shape[axis], tshape)
    if ignore is not None and lab.size:
        lab.reshape(-1)[::3] = ignore
    return lab


def _prob_targets(rng, shape, axis, dtype):
    p = rng.random(shape)
    p /= p.sum(axis, keepdims=True)
    return p.astype(dtype)


def _probs_last(rng, shape, dtype, zeros=True):
    p = rng.random(shape) + 0.05
    p /= p.sum(-1, keepdims=True)
    if zeros and p.size:
        p.reshape(-1)[::7] = 0.0
    return p.astype(dtype)


def _f64(a):
    return np.asarray(a, dtype=np.float64)


@contextlib.contextmanager
def kernel_path(name):
    previous = _cuda._sl_set_path(PATHS[name])
    try:
        yield
    finally:
        _cuda._sl_set_path(previous)


class FakeDevice:
    """An object that says it lives on a GPU (nothing is ever read from the pointer)."""

    def __init__(self, shape, typestr="<f4", strides=None, ptr=0x10000):
        self.__cuda_array_interface__ = dict(shape=shape, typestr=typestr, strides=strides,
                                             data=(ptr, False), version=3, stream=None)


# --------------------------------------------------------------------------------------
# Launch geometry

@pytest.mark.parametrize("shape,axis,dtype,op,expected", [
    ((64, 1000), -1, np.float32, 0, 1), ((64, 1000), -1, np.float64, 0, 1),
    ((64, 1000), -1, np.float64, 2, 2), ((64, 1000), -1, np.float64, 1, 3),
    ((9, 3000), -1, np.float32, 0, 2), ((2, 70001), -1, np.float32, 0, 3),
    ((2, 70001), -1, np.float32, 2, 3), ((9, 3000), -1, np.float32, 1, 3),
    ((5, 33), 0, np.float32, 0, 4), ((4, 7, 33), 1, np.float64, 2, 4), ((7,), 0, np.float32, 2, 1),
])
def test_plan_picks_the_kernel_by_shape(shape, axis, dtype, op, expected):
    path, a, b, threads, blocks = _cuda._sl_plan(shape, axis, dtype, op)
    assert path == expected
    assert blocks >= 1
    if path == 1:                       # lanes per row, elements per lane cover the row
        n = shape[axis]
        assert a * b >= n and a <= 32 and b <= 32 and (a == 32 or b == 1)
    elif path == 4:                     # TX lanes x TY splits, at most 512 threads
        assert a * b <= 512 and a & (a - 1) == 0 and b & (b - 1) == 0
    else:
        assert threads in (256, 512)


def test_plan_forced_paths_fall_back_when_the_shape_cannot_take_them():
    assert _cuda._sl_plan((4, 2000), -1, np.float32, 0, PATHS["warp"])[0] == 2
    assert _cuda._sl_plan((4, 20000), -1, np.float32, 0, PATHS["block-cached"])[0] == 3
    assert _cuda._sl_plan((4, 5, 6), 1, np.float32, 0, PATHS["block-online"])[0] == 4
    assert _cuda._sl_plan((4, 50), -1, np.float32, 0, PATHS["cols"])[0] == 4
    assert _cuda._sl_plan((4, 50), -1, np.float32, 1, PATHS["block-cached"])[0] == 3
    with pytest.raises(ValueError):
        _cuda._sl_set_path(7)


def test_plan_geometry_depends_on_the_shape_only():
    # determinism: the partials of a reduction are fixed by the shape, never by the device
    a = _cuda._sl_plan((4096, 1000), -1, np.float32, 2)
    assert a == _cuda._sl_plan((4096, 1000), -1, np.float32, 2)
    assert a[4] == 4096 // 4      # four rows (warps) per block of 128 threads


# --------------------------------------------------------------------------------------
# Host emulation of the kernels against the CPU (every path)

@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(FORWARD))
@pytest.mark.parametrize("shape,axis", SHAPES_AXES, ids=_ids(SHAPES_AXES))
def test_host_forward_matches_cpu(shape, axis, name, path, dtype, rng):
    x = _logits(rng, shape, dtype)
    got = _cuda._host_softmax(x, axis, name == "log_softmax", path=PATHS[path])
    assert_close(got, _f64(FORWARD[name](x, axis)), dtype, terms=shape[axis] ** 0.5)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(BACKWARD))
@pytest.mark.parametrize("shape,axis", SHAPES_AXES, ids=_ids(SHAPES_AXES))
def test_host_backward_matches_cpu(shape, axis, name, path, dtype, rng):
    fn, fwd = BACKWARD[name]
    y = fwd(_logits(rng, shape, dtype), axis)
    dy = random_array(rng, shape, dtype)
    got = _cuda._host_softmax(dy, axis, name.startswith("log"), backward_y=y, path=PATHS[path])
    scale = np.abs(_f64(dy)).max() * (1 + shape[axis] ** 0.5)
    assert_close(got, _f64(fn(dy, y, axis)), dtype, scale=scale)


@pytest.mark.parametrize("path", list(PATHS))
def test_host_special_values(path, dtype):
    inf, p = np.inf, PATHS[path]
    x = np.array([[-inf, -inf, 2.0, -inf], [-inf, -inf, -inf, -inf], [0.0, -inf, 0.0, -inf]],
                 dtype)
    for log in (False, True):
        got = _cuda._host_softmax(x, -1, log, path=p)
        assert_close(got, _f64((fastdl.log_softmax if log else fastdl.softmax)(x)), dtype)
    for n in (5, 70001):                # NaN and +inf poison the lane; -inf rows as the CPU
        x = np.zeros((4, n), dtype)
        x[0, 1] = np.nan
        x[1, n - 1] = inf
        x[2, :] = -inf
        x[2, n // 2] = np.nan
        x[3, :] = -inf
        x[3, n - 1] = 1.0
        for log in (False, True):
            for y in (_cuda._host_softmax(x, -1, log, path=p),
                      _cuda._host_softmax(np.ascontiguousarray(x.T), 0, log, path=p).T):
                assert np.all(np.isnan(y[:3]))
                assert y[3, n - 1] == (0.0 if log else 1.0)
                assert np.all(y[3, :n - 1] == (-inf if log else 0.0))
    big = np.full((1, 80000), -inf, dtype)          # a leading run of -inf, then values
    big[0, 70000:71000] = np.linspace(-3, 3, 1000)
    got = _cuda._host_softmax(big, -1, path=p)
    assert not np.any(np.isnan(got))
    assert_close(got, _f64(fastdl.softmax(big)), dtype, terms=30)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("shape,axis", CE_CASES, ids=_ids(CE_CASES))
def test_host_softmax_cross_entropy_matches_cpu(shape, axis, path, dtype, rng):
    x = _logits(rng, shape, dtype)
    lab = _class_targets(rng, shape, axis, ignore=-100)
    probs = _prob_targets(rng, shape, axis, dtype)
    for reduction in REDUCTIONS:
        for eps in (0.0, 0.1):
            for target, ignore in ((lab, -100), (np.where(lab < 0, 0, lab), None),
                                   (probs, None)):
                loss, grad = _cuda._host_softmax_cross_entropy(
                    x, target, axis, reduction, eps, ignore, True, PATHS[path])
                cpu_loss, cpu_grad = fastdl.softmax_cross_entropy(x, target, axis, reduction,
                                                                  eps, ignore, True)
                assert_close(loss, _f64(cpu_loss), dtype, terms=shape[axis])
                assert_close(grad, _f64(cpu_grad), dtype, terms=shape[axis])
                alone = _cuda._host_softmax_cross_entropy(x, target, axis, reduction, eps,
                                                          ignore, False, PATHS[path])
                assert alone.tobytes() == loss.tobytes()    # the gradient changes no bit


@pytest.mark.parametrize("path", list(PATHS))
def test_host_softmax_cross_entropy_special_values(path, dtype):
    inf, p = np.inf, PATHS[path]
    x = np.array([[1e4, -1e4, 0.0], [-inf, 3.0, -inf], [np.nan, 0.0, 1.0], [-1e4, -1e4, -1e4]],
                 dtype)
    lab = np.array([0, 1, 2, 1])
    loss, grad = _cuda._host_softmax_cross_entropy(x, lab, -1, "none", 0.0, None, True, p)
    cpu_loss, cpu_grad = fastdl.softmax_cross_entropy(x, lab, reduction="none", return_grad=True)
    assert_close(loss, _f64(cpu_loss), dtype, terms=3)
    assert_close(grad, _f64(cpu_grad), dtype, terms=3)
    smooth = _cuda._host_softmax_cross_entropy(x[1:2], lab[1:2], -1, "mean", 0.1, None, False, p)
    assert smooth == inf
    zero_prob = np.array([[0.0, 1.0, 0.0]], dtype)
    assert _cuda._host_softmax_cross_entropy(x[1:2], zero_prob, -1, "sum", 0.0, None, False,
                                             p) == 0
    # an ignored sample's NaN logits never reach the result; all ignored: mean NaN, grad 0
    x = np.array([[0.5, -1.0, 2.0], [np.nan, 0.0, 1.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype)
    loss, grad = _cuda._host_softmax_cross_entropy(x, np.array([2, -100, 0, -100]), -1, "mean",
                                                   0.0, -100, True, p)
    assert np.isfinite(loss) and np.all(grad[[1, 3]] == 0)
    loss, grad = _cuda._host_softmax_cross_entropy(x, np.full(4, 1), -1, "mean", 0.0, 1, True, p)
    assert np.isnan(loss) and np.all(grad == 0)


@pytest.mark.parametrize("path", list(PATHS))
def test_host_bad_class_index_gives_nan_for_that_sample(path, dtype, rng):
    # the GPU's rule (no synchronisation to raise): NaN loss and gradient row, nothing read
    x = _logits(rng, (4, 5), dtype)
    lab = np.array([1, 5, -1, 2])
    loss, grad = _cuda._host_softmax_cross_entropy(x, lab, -1, "none", 0.0, None, True,
                                                   PATHS[path])
    assert np.all(np.isnan(loss[1:3])) and np.all(np.isnan(grad[1:3]))
    ok = fastdl.softmax_cross_entropy(x[[0, 3]], lab[[0, 3]], reduction="none", return_grad=True)
    assert_close(loss[[0, 3]], _f64(ok[0]), dtype, terms=5)
    assert_close(grad[[0, 3]], _f64(ok[1]), dtype, terms=5)
    assert np.isnan(_cuda._host_softmax_cross_entropy(x, lab, -1, "mean", 0.0, None, False,
                                                      PATHS[path]))


@pytest.mark.parametrize("shape", [(7,), (5, 3), (4, 6, 33), (64, 1000), (3, 5000), (0, 4),
                                   (3, 0)], ids=str)
def test_host_cross_entropy_matches_cpu(shape, dtype, rng):
    t = _probs_last(rng, shape, dtype)
    p = _probs_last(rng, shape, dtype, zeros=False)
    if p.size:
        p.reshape(-1)[::14] = 0.0        # zero predictions under zero targets add 0
    samples = int(np.prod(shape[:-1]))
    for reduction in REDUCTIONS:
        got = _cuda._host_cross_entropy(t, p, reduction)
        cpu = fastdl.cross_entropy(t, p, reduction)
        assert_close(got, _f64(cpu), dtype, terms=shape[-1])
        scale = 1.0 / samples if reduction == "mean" and samples else 1.0
        assert_close(_cuda._host_map(2, t, p, scale),
                     _f64(fastdl.cross_entropy_grad(t, p, reduction)), dtype)


@pytest.mark.parametrize("shape", [(), (1,), (7,), (5, 33), (3, 40, 1001), (0, 3), (1000003,)],
                         ids=str)
def test_host_mse_matches_cpu(shape, dtype, rng):
    t, p = random_array(rng, shape, dtype), random_array(rng, shape, dtype)
    for reduction in REDUCTIONS:
        assert_close(_cuda._host_mse(t, p, reduction), _f64(fastdl.mse(t, p, reduction)), dtype)
        n = t.size
        scale = 2.0 / n if reduction == "mean" and n else 2.0
        assert_close(_cuda._host_map(1, t, p, scale), _f64(fastdl.mse_grad(t, p, reduction)),
                     dtype)


def test_host_empty_means_are_nan(dtype):
    e = np.empty((0, 3), dtype)
    assert np.isnan(_cuda._host_mse(e, e, "mean")) and _cuda._host_mse(e, e, "sum") == 0
    assert np.isnan(_cuda._host_cross_entropy(e, e, "mean"))
    loss, grad = _cuda._host_softmax_cross_entropy(e, np.empty(0, np.int64), -1, "mean", 0.0,
                                                   None, True)
    assert np.isnan(loss) and grad.shape == (0, 3)


# --------------------------------------------------------------------------------------
# Validation: fake device arrays, before any device is needed; arguments left alone

def _fake(shape, typestr="<f4", **kw):
    return FakeDevice(shape, typestr, **kw)


BAD_CALLS = [
    ("softmax", lambda: fastdl.softmax(_fake((3, 4)), 2), ValueError, "axis 2"),
    ("softmax", lambda: fastdl.softmax(_fake((3, 4)), 1.0), TypeError, "axis"),
    ("softmax", lambda: fastdl.softmax(_fake(())), ValueError, "axis"),
    ("softmax", lambda: fastdl.softmax(_fake((3,), "<i8")), TypeError, "'x'"),
    ("softmax", lambda: fastdl.softmax(_fake((3, 4)), out=np.zeros((3, 4), np.float32)),
     TypeError, "out"),
    ("softmax", lambda: fastdl.softmax(_fake((3, 4)), out=_fake((3, 5))), ValueError, "out"),
    ("softmax", lambda: fastdl.softmax(_fake((3, 4)), out=_fake((3, 4), "<f8")), TypeError,
     "out"),
    ("softmax", lambda: fastdl.softmax(_fake((3, 4)), out=_fake((3, 4), strides=(4, 12))),
     ValueError, "C-contiguous"),
    ("log_softmax", lambda: fastdl.log_softmax(_fake((3, 4)), -3), ValueError, "axis -3"),
    ("softmax_backward", lambda: fastdl.softmax_backward(_fake((3, 4)), _fake((4, 3))),
     ValueError, r"\(3, 4\).*\(4, 3\)"),
    ("softmax_backward", lambda: fastdl.softmax_backward(_fake((3, 4)), _fake((3, 4), "<f8")),
     TypeError, "dtype"),
    ("log_softmax_backward", lambda: fastdl.log_softmax_backward(_fake((3, 4)), np.zeros((3, 4))),
     TypeError, "y must be a CUDA device array"),
    ("log_softmax_backward", lambda: fastdl.log_softmax_backward(_fake((3,)), _fake((3,), "<i4")),
     TypeError, "'y'"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(
        _fake((3, 4)), _fake((3,), "<i8"), reduction="avg"), ValueError, "reduction"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(
        _fake((3, 4)), _fake((3,), "<i8"), label_smoothing=np.nan), ValueError, "label_smoothing"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(
        _fake((3, 4)), _fake((3,), "<i8"), label_smoothing="0.1"), TypeError, "label_smoothing"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(
        _fake((3, 4), "<c8"), _fake((3,), "<i8")), TypeError, "logits"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(
        _fake((3, 4)), _fake((3,), "|b1")), TypeError, "bool"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(
        _fake((3, 4)), _fake((4,), "<i8")), ValueError, r"\(4,\).*\(3, 4\)"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(
        _fake((3, 4)), _fake((4, 3))), ValueError, r"\(4, 3\).*\(3, 4\)"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(
        _fake((3, 4)), _fake((3, 4), "<f8")), TypeError, "'target'"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(
        _fake((3, 4)), _fake((3, 4)), ignore_index=-100), ValueError, "ignore_index"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(
        _fake((3, 4)), _fake((3,), "<i8"), ignore_index=1.0), TypeError, "ignore_index"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(
        _fake((3, 4)), _fake((3,), "<i8"), ignore_index=2**70), ValueError, "int64"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(
        _fake((3, 4)), _fake((3,), "<i8"), axis=2), ValueError, "axis 2"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(
        _fake((3, 4)), np.array([0, 1, 2])), TypeError, "target must be a CUDA device array"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(_fake((4,)), 4), ValueError,
     r"outside \[0, 4\)"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(_fake((4,)), -1), ValueError,
     r"outside \[0, 4\)"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(_fake((2, 4)), 1), ValueError,
     r"\(\).*\(2, 4\)"),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(_fake((4,)), True), TypeError,
     "target"),
    ("cross_entropy", lambda: fastdl.cross_entropy(_fake((3, 4)), _fake((4, 3))), ValueError,
     r"\(3, 4\).*\(4, 3\)"),
    ("cross_entropy", lambda: fastdl.cross_entropy(_fake(()), _fake(())), ValueError,
     "at least one dimension"),
    ("cross_entropy", lambda: fastdl.cross_entropy(_fake((3,)), _fake((3,)), "Mean"), ValueError,
     "reduction"),
    ("cross_entropy_grad", lambda: fastdl.cross_entropy_grad(_fake((3,)), _fake((3,), "<f8")),
     TypeError, "dtype"),
    ("mse", lambda: fastdl.mse(_fake((3,)), _fake((3,), "<i8")), TypeError, "'y_pred'"),
    ("mse", lambda: fastdl.mse(_fake((3,), "|u1"), _fake((3,))), TypeError, "'y_true'"),
    ("mse", lambda: fastdl.mse(_fake((3,)), _fake((3,)), None), ValueError, "reduction"),
    ("mse_grad", lambda: fastdl.mse_grad(_fake((2, 3)), _fake((3, 2))), ValueError,
     r"\(2, 3\).*\(3, 2\)"),
    ("mse_grad", lambda: fastdl.mse_grad(_fake((3,)), [1.0, 2.0, 3.0]), TypeError,
     "y_pred must be a CUDA device array"),
]


@pytest.mark.parametrize("name,call,exc,match", BAD_CALLS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_CALLS)])
def test_bad_arguments_are_refused_before_any_device_work(name, call, exc, match):
    with pytest.raises(exc, match=match) as info:
        call()
    assert f"fastdl.{name}" in str(info.value)


def test_a_failed_call_leaves_the_arguments_alone():
    x, lab = _fake((3, 4)), _fake((3,), "<i8")
    before = (dict(x.__cuda_array_interface__), dict(lab.__cuda_array_interface__))
    with pytest.raises(ValueError):
        fastdl.softmax_cross_entropy(x, lab, reduction="bad")
    assert (x.__cuda_array_interface__, lab.__cuda_array_interface__) == before


VALID_CALLS = [
    ("softmax", lambda: fastdl.softmax(_fake((3, 4)))),
    ("softmax", lambda: fastdl.softmax(_fake((3, 4)), 0, out=_fake((3, 4)))),
    ("log_softmax", lambda: fastdl.log_softmax(_fake((0, 4)))),
    ("softmax_backward", lambda: fastdl.softmax_backward(_fake((3, 4)), _fake((3, 4)))),
    ("log_softmax_backward", lambda: fastdl.log_softmax_backward(_fake((2,), "<f8"),
                                                                 _fake((2,), "<f8"))),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(
        _fake((3, 4)), _fake((3,), "<i4"), ignore_index=-100, return_grad=True)),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(_fake((3, 4)), _fake((3, 4)))),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(_fake((4,)), 3)),
    ("softmax_cross_entropy", lambda: fastdl.softmax_cross_entropy(_fake((4,)), -100,
                                                                   ignore_index=-100)),
    ("cross_entropy", lambda: fastdl.cross_entropy(_fake((3, 4)), _fake((3, 4)))),
    ("cross_entropy_grad", lambda: fastdl.cross_entropy_grad(_fake((3, 4)), _fake((3, 4)))),
    ("mse", lambda: fastdl.mse(_fake((3, 4), "<f8"), _fake((3, 4), "<f8"), "none")),
    ("mse_grad", lambda: fastdl.mse_grad(_fake((3, 4)), _fake((3, 4)))),
]


@without_gpu
@pytest.mark.parametrize("name,call", VALID_CALLS, ids=[f"{c[0]}-{i}" for i, c in
                                                        enumerate(VALID_CALLS)])
def test_valid_calls_without_a_device_raise_a_clear_runtime_error(name, call):
    with pytest.raises(RuntimeError, match=f"fastdl.{name}: no CUDA device"):
        call()


def test_every_function_has_a_gpu_twin_with_the_cpu_signature():
    import inspect
    from fastdl._ext import _losses, _softmax
    for module, names in ((_softmax, ("softmax", "log_softmax", "softmax_backward",
                                      "log_softmax_backward")),
                          (_losses, ("softmax_cross_entropy", "cross_entropy",
                                     "cross_entropy_grad", "mse", "mse_grad"))):
        for name in names:
            gpu = inspect.signature(getattr(_cuda, name))
            cpu = inspect.signature(getattr(module, name))
            assert list(gpu.parameters) == list(cpu.parameters), name
            for p in cpu.parameters.values():
                q = gpu.parameters[p.name]
                assert (q.default, q.kind) == (p.default, p.kind), (name, p.name)


# --------------------------------------------------------------------------------------
# On the device

def _dev(a):
    return fastdl.cuda.to_device(np.asarray(a, order="C"))


def _host(d):
    return fastdl.cuda.to_host(d)


class StridedView:
    """A strided window into a DeviceArray (as a CuPy or torch slice would export it)."""

    def __init__(self, owner, shape, strides_bytes, offset_bytes=0):
        self.owner = owner
        cai = owner.__cuda_array_interface__
        self.__cuda_array_interface__ = dict(cai, shape=shape, strides=strides_bytes,
                                             data=(cai["data"][0] + offset_bytes, False))


def _strided(a):
    """a on the device as every-other element of a bigger array whose other elements are NaN,
    plus the owner (keep it alive)."""
    a = np.asarray(a)
    big = np.full(tuple(2 * s + 1 for s in a.shape), np.nan if a.dtype.kind == "f" else 12345,
                  a.dtype)
    big[tuple(slice(1, None, 2) for _ in a.shape)] = a
    owner = _dev(big)
    strides = tuple(2 * s for s in big.strides)
    offset = sum(big.strides)
    return StridedView(owner, a.shape, strides, offset), owner


@needs_gpu
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(FORWARD))
@pytest.mark.parametrize("shape,axis", SHAPES_AXES, ids=_ids(SHAPES_AXES))
def test_gpu_forward_matches_cpu(shape, axis, name, path, dtype, rng):
    x = _logits(rng, shape, dtype)
    with kernel_path(path):
        d = FORWARD[name](_dev(x), axis)
    assert isinstance(d, fastdl.cuda.DeviceArray)
    assert_close(_host(d), _f64(FORWARD[name](x, axis)), dtype, terms=shape[axis] ** 0.5)


@needs_gpu
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(BACKWARD))
@pytest.mark.parametrize("shape,axis", SHAPES_AXES, ids=_ids(SHAPES_AXES))
def test_gpu_backward_matches_cpu(shape, axis, name, path, dtype, rng):
    fn, fwd = BACKWARD[name]
    y = fwd(_logits(rng, shape, dtype), axis)
    dy = random_array(rng, shape, dtype)
    with kernel_path(path):
        d = fn(_dev(dy), _dev(y), axis)
    scale = np.abs(_f64(dy)).max() * (1 + shape[axis] ** 0.5)
    assert_close(_host(d), _f64(fn(dy, y, axis)), dtype, scale=scale)


@needs_gpu
@pytest.mark.parametrize("path", list(PATHS))
def test_gpu_matches_the_host_emulation(path, dtype, rng):
    # the device runs the emulated arithmetic: equal up to exp/log rounding (a few ulps)
    for shape, axis in ((64, 1000), -1), ((9, 3000), -1), ((4, 7, 33), 1):
        x = _logits(rng, shape, dtype)
        lab = _class_targets(rng, shape, axis, ignore=-100)
        with kernel_path(path):
            y = _host(fastdl.softmax(_dev(x), axis))
            loss, grad = fastdl.softmax_cross_entropy(_dev(x), _dev(lab), axis, "sum", 0.1, -100,
                                                      True)
        emu = _cuda._host_softmax(x, axis, path=PATHS[path])
        assert_close(y, _f64(emu), dtype, scale=np.abs(_f64(emu)) + np.finfo(dtype).tiny)
        emu_loss, emu_grad = _cuda._host_softmax_cross_entropy(x, lab, axis, "sum", 0.1, -100,
                                                               True, PATHS[path])
        assert_close(_host(loss), _f64(emu_loss), dtype)
        assert_close(_host(grad), _f64(emu_grad), dtype)


@needs_gpu
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("shape,axis", CE_CASES, ids=_ids(CE_CASES))
def test_gpu_softmax_cross_entropy_matches_cpu(shape, axis, path, dtype, rng):
    x = _logits(rng, shape, dtype)
    lab = _class_targets(rng, shape, axis, ignore=-100)
    probs = _prob_targets(rng, shape, axis, dtype)
    dx = _dev(x)
    for reduction in REDUCTIONS:
        for eps in (0.0, 0.1):
            for target, ignore in ((lab, -100), (probs, None)):
                with kernel_path(path):
                    loss, grad = fastdl.softmax_cross_entropy(dx, _dev(target), axis,
                                                              reduction, eps, ignore, True)
                    alone = fastdl.softmax_cross_entropy(dx, _dev(target), axis, reduction,
                                                         eps, ignore)
                cpu_loss, cpu_grad = fastdl.softmax_cross_entropy(x, target, axis, reduction,
                                                                  eps, ignore, True)
                loss, alone = _host(loss), _host(alone)
                assert loss.shape == np.shape(cpu_loss) and loss.dtype == dtype
                assert_close(loss, _f64(cpu_loss), dtype, terms=shape[axis])
                assert_close(_host(grad), _f64(cpu_grad), dtype, terms=shape[axis])
                assert alone.tobytes() == loss.tobytes()


@needs_gpu
@pytest.mark.parametrize("label_dtype", [np.int64, np.int32, np.uint8])
def test_gpu_label_dtypes_and_int_target(label_dtype, dtype, rng):
    x = _logits(rng, (6, 5, 3), dtype)
    lab = rng.integers(0, 5, (6, 3)).astype(label_dtype)
    expected = softmax_cross_entropy_ref(x, lab.astype(np.int64), 1)
    loss, grad = fastdl.softmax_cross_entropy(_dev(x), _dev(lab), 1, return_grad=True)
    assert_close(_host(loss), expected[0], dtype, terms=5)
    assert_close(_host(grad), expected[1], dtype, terms=5)
    one = fastdl.softmax_cross_entropy(_dev(x[0, :, 0]), 3, reduction="none")
    assert _host(one).shape == ()
    assert_close(_host(one), softmax_cross_entropy_ref(x[0, :, 0][None], np.array([3]))[0],
                 dtype, terms=5)
    ignored = fastdl.softmax_cross_entropy(_dev(x[0, :, 0]), -100, ignore_index=-100)
    assert np.isnan(_host(ignored))


@needs_gpu
def test_gpu_ignore_index_mean_counts_on_the_device(dtype, rng):
    x = _logits(rng, (40, 7), dtype)
    lab = rng.integers(0, 7, 40)
    lab[::4] = 3
    for path in PATHS:
        with kernel_path(path):
            loss, grad = fastdl.softmax_cross_entropy(_dev(x), _dev(lab), ignore_index=3,
                                                      return_grad=True)
        cpu_loss, cpu_grad = fastdl.softmax_cross_entropy(x, lab, ignore_index=3,
                                                          return_grad=True)
        assert_close(_host(loss), _f64(cpu_loss), dtype, terms=7)
        assert_close(_host(grad), _f64(cpu_grad), dtype, terms=7)
    all_ignored = np.full(40, 3)
    loss, grad = fastdl.softmax_cross_entropy(_dev(x), _dev(all_ignored), ignore_index=3,
                                              return_grad=True)
    assert np.isnan(_host(loss)) and np.all(_host(grad) == 0)


@needs_gpu
def test_gpu_bad_class_index_gives_nan_not_an_error(dtype, rng):
    x = _logits(rng, (4, 5), dtype)
    lab = np.array([1, 5, -1, 2])
    for path in PATHS:
        with kernel_path(path):
            loss, grad = fastdl.softmax_cross_entropy(_dev(x), _dev(lab), reduction="none",
                                                      return_grad=True)
            mean = fastdl.softmax_cross_entropy(_dev(x), _dev(lab))
        loss, grad = _host(loss), _host(grad)
        assert np.all(np.isnan(loss[1:3])) and np.all(np.isnan(grad[1:3]))
        assert np.all(np.isfinite(loss[[0, 3]])) and np.isnan(_host(mean))


@needs_gpu
def test_gpu_special_values(dtype):
    inf = np.inf
    for n in (5, 3000, 70001):
        x = np.zeros((4, n), dtype)
        x[0, 1] = np.nan
        x[1, n - 1] = inf
        x[2, :] = -inf
        x[2, n // 2] = np.nan
        x[3, :] = -inf
        x[3, n - 1] = 1.0
        for fn in FORWARD.values():
            for y in (_host(fn(_dev(x))), _host(fn(_dev(np.ascontiguousarray(x.T)), 0)).T):
                assert np.all(np.isnan(y[:3]))
                assert np.isfinite(y[3, n - 1])
    x = np.array([[-inf, -inf, 2.0, -inf], [-inf, -inf, -inf, -inf], [0.0, -inf, 0.0, -inf]],
                 dtype)
    y = _host(fastdl.softmax(_dev(x)))
    assert np.array_equal(y[0], [0, 0, 1, 0]) and np.all(np.isnan(y[1]))
    assert np.array_equal(y[2], np.array([0.5, 0, 0.5, 0], dtype))
    x = np.array([[1e4, -1e4, 0.0], [-inf, 3.0, -inf], [np.nan, 0.0, 1.0], [-1e4, -1e4, -1e4]],
                 dtype)
    loss, grad = fastdl.softmax_cross_entropy(_dev(x), _dev(np.array([0, 1, 2, 1])),
                                              reduction="none", return_grad=True)
    loss, grad = _host(loss), _host(grad)
    assert loss[0] == 0 and loss[1] == 0 and np.isnan(loss[2])
    assert_close(loss[3], np.log(3.0), dtype)
    assert np.all(np.isfinite(grad[[0, 1, 3]])) and np.all(np.isnan(grad[2]))


@needs_gpu
@pytest.mark.parametrize("shape,axis", [((0,), 0), ((0, 5), -1), ((0, 5), 0), ((5, 0), -1),
                                        ((5, 0), 0), ((2, 0, 3), 1)])
def test_gpu_empty(shape, axis, dtype):
    x = np.empty(shape, dtype)
    for fn in FORWARD.values():
        d = fn(_dev(x), axis)
        assert d.shape == shape and d.dtype == dtype
    for fn, _ in BACKWARD.values():
        assert fn(_dev(x), _dev(x), axis).shape == shape
    e = _dev(np.empty((0, 4), dtype))
    assert np.isnan(_host(fastdl.mse(e, e))) and _host(fastdl.mse(e, e, "sum")) == 0
    assert np.isnan(_host(fastdl.cross_entropy(e, e, "mean")))
    assert _host(fastdl.cross_entropy(e, e, "none")).shape == (0,)
    assert fastdl.mse_grad(e, e).shape == (0, 4) and fastdl.cross_entropy_grad(e, e).shape == (0, 4)
    loss, grad = fastdl.softmax_cross_entropy(e, _dev(np.empty(0, np.int64)), return_grad=True)
    assert np.isnan(_host(loss)) and grad.shape == (0, 4)
    z = _dev(np.empty((3, 0), dtype))     # no classes: each sample's sum is over nothing
    assert np.array_equal(_host(fastdl.cross_entropy(z, z, "none")), np.zeros(3, dtype))


@needs_gpu
@pytest.mark.parametrize("shape", [(7,), (5, 3), (4, 6, 33), (64, 1000), (3, 5000), (300, 9)],
                         ids=str)
def test_gpu_cross_entropy_matches_cpu(shape, dtype, rng):
    t = _probs_last(rng, shape, dtype)
    p = _probs_last(rng, shape, dtype, zeros=False)
    p.reshape(-1)[::14] = 0.0
    for reduction in REDUCTIONS:
        got = _host(fastdl.cross_entropy(_dev(t), _dev(p), reduction))
        assert_close(got, _f64(fastdl.cross_entropy(t, p, reduction)), dtype, terms=shape[-1])
        got = _host(fastdl.cross_entropy_grad(_dev(t), _dev(p), reduction))
        assert_close(got, _f64(fastdl.cross_entropy_grad(t, p, reduction)), dtype)


@needs_gpu
@pytest.mark.parametrize("shape", [(), (1,), (7,), (5, 33), (3, 40, 1001), (4, 1 << 20)],
                         ids=str)
def test_gpu_mse_matches_cpu(shape, dtype, rng):
    t, p = random_array(rng, shape, dtype), random_array(rng, shape, dtype)
    for reduction in REDUCTIONS:
        got = _host(fastdl.mse(_dev(t), _dev(p), reduction))
        assert got.dtype == dtype and got.shape == np.shape(fastdl.mse(t, p, reduction))
        assert_close(got, _f64(fastdl.mse(t, p, reduction)), dtype)
        got = _host(fastdl.mse_grad(_dev(t), _dev(p), reduction))
        assert_close(got, _f64(fastdl.mse_grad(t, p, reduction)), dtype)
    assert np.isnan(_host(fastdl.mse(_dev(np.array([1.0, np.nan], dtype)),
                                     _dev(np.array([1.0, 2.0], dtype)))))


@needs_gpu
def test_gpu_unaligned_views_take_the_scalar_loads(dtype, rng):
    # a view one element into a buffer: no 16-byte vectors, the same results
    t, p = random_array(rng, (1001,), dtype), random_array(rng, (1001,), dtype)
    bt = _dev(np.concatenate([[0], t]).astype(dtype))
    bp = _dev(np.concatenate([[0], p]).astype(dtype))
    vt = StridedView(bt, (1001,), (t.itemsize,), t.itemsize)
    vp = StridedView(bp, (1001,), (p.itemsize,), p.itemsize)
    for reduction in REDUCTIONS:
        assert_close(_host(fastdl.mse(vt, vp, reduction)), _f64(fastdl.mse(t, p, reduction)), dtype)
        assert_close(_host(fastdl.mse_grad(vt, vp, reduction)),
                     _f64(fastdl.mse_grad(t, p, reduction)), dtype)


@needs_gpu
def test_gpu_strided_inputs(dtype, rng):
    x = _logits(rng, (6, 7, 40), dtype)
    for axis in (0, 1, -1):
        view, owner = _strided(x)
        assert_close(_host(fastdl.softmax(view, axis)), _f64(fastdl.softmax(x, axis)), dtype,
                     terms=7)
        dy = random_array(rng, x.shape, dtype)
        y = fastdl.softmax(x, axis)
        vdy, o1 = _strided(dy)
        vy, o2 = _strided(y)
        assert_close(_host(fastdl.softmax_backward(vdy, vy, axis)),
                     _f64(fastdl.softmax_backward(dy, y, axis)), dtype, scale=10 * np.abs(dy).max())
        lab = _class_targets(rng, x.shape, axis, ignore=3)
        vlab, o3 = _strided(lab)
        loss, grad = fastdl.softmax_cross_entropy(view, vlab, axis, "none", 0.1, 3, True)
        cpu_loss, cpu_grad = fastdl.softmax_cross_entropy(x, lab, axis, "none", 0.1, 3, True)
        assert_close(_host(loss), _f64(cpu_loss), dtype, terms=8)
        assert_close(_host(grad), _f64(cpu_grad), dtype, terms=8)
    t, p = np.abs(x) + 0.1, _probs_last(rng, x.shape, dtype)
    vt, o4 = _strided(t)
    vp, o5 = _strided(p)
    for reduction in REDUCTIONS:
        assert_close(_host(fastdl.cross_entropy(vp, vt, reduction)),
                     _f64(fastdl.cross_entropy(p, t, reduction)), dtype, terms=40)
        assert_close(_host(fastdl.mse(vt, vp, reduction)), _f64(fastdl.mse(t, p, reduction)),
                     dtype)


@needs_gpu
def test_gpu_out(dtype, rng):
    x = _logits(rng, (40, 900), dtype)
    for name, fn in FORWARD.items():
        for axis in (0, -1):
            out = fastdl.cuda.DeviceArray(x.shape, dtype)
            assert fn(_dev(x), axis, out=out) is out
            assert_close(_host(out), _f64(fn(x, axis)), dtype, terms=30)
            inplace = _dev(x)                                  # out is x: in place
            assert fn(inplace, axis, out=inplace) is inplace
            assert_close(_host(inplace), _f64(fn(x, axis)), dtype, terms=30)
    y = fastdl.softmax(x)
    dy = random_array(rng, x.shape, dtype)
    for target in ("dy", "y"):
        ddy, dyy = _dev(dy), _dev(y)
        out = ddy if target == "dy" else dyy
        assert fastdl.softmax_backward(ddy, dyy, out=out) is out
        assert_close(_host(out), _f64(fastdl.softmax_backward(dy, y)), dtype,
                     scale=40 * np.abs(dy).max())
    # out overlapping x at an offset: computed through a temporary
    base = _logits(rng, (1, 64), dtype)
    owner = _dev(base)
    xv = StridedView(owner, (1, 40), (64 * base.itemsize, base.itemsize))
    ov = StridedView(owner, (1, 40), (64 * base.itemsize, base.itemsize), 8 * base.itemsize)
    assert fastdl.softmax(xv, out=ov) is ov
    assert_close(_host(owner)[:, 8:48], _f64(fastdl.softmax(base[:, :40])), dtype, terms=7)


@needs_gpu
def test_gpu_results_are_deterministic(dtype, rng):
    x = _logits(rng, (300, 1000), dtype)
    xt = _logits(rng, (64, 2000, 3), dtype)
    lab = rng.integers(0, 1000, 300)
    lab3 = rng.integers(0, 2000, (64, 3))
    t, p = random_array(rng, (5, 400000), dtype), random_array(rng, (5, 400000), dtype)

    def run():
        out = []
        for red in REDUCTIONS:
            out += list(fastdl.softmax_cross_entropy(_dev(x), _dev(lab), reduction=red,
                                                     label_smoothing=0.1, return_grad=True))
            out += list(fastdl.softmax_cross_entropy(_dev(xt), _dev(lab3), 1, reduction=red,
                                                     return_grad=True))
            out += [fastdl.mse(_dev(t), _dev(p), red)]
        out += [fastdl.softmax(_dev(x)), fastdl.softmax(_dev(xt), 1)]
        return [_host(a).tobytes() for a in out]

    assert run() == run()


@needs_gpu
def test_gpu_many_rows_and_blocks(rng):
    # more rows than one launch's blocks would cover in a pass, partial sums over many blocks
    x = _logits(rng, (200000, 3), np.float32)
    lab = rng.integers(0, 3, 200000)
    loss, grad = fastdl.softmax_cross_entropy(_dev(x), _dev(lab), return_grad=True)
    cpu_loss, cpu_grad = fastdl.softmax_cross_entropy(x, lab, return_grad=True)
    assert_close(_host(loss), _f64(cpu_loss), np.float32, terms=3)
    assert_close(_host(grad), _f64(cpu_grad), np.float32, terms=3)


@needs_gpu
def test_gpu_torch_in_torch_out(rng):
    # torch's __cuda_array_interface__ (version 2) names no stream: the work goes to the
    # default stream, so this test stays on torch's default stream (CuPy's below names one)
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    x = _logits(rng, (512, 1000), np.float32)
    lab = rng.integers(0, 1000, 512)
    tx = torch.from_numpy(x).cuda() * 1.0
    y = fastdl.softmax(tx)
    loss, grad = fastdl.softmax_cross_entropy(tx, torch.from_numpy(lab).cuda(), return_grad=True)
    xt = tx.t()                                     # non-contiguous torch view
    yt = fastdl.log_softmax(xt, 0)
    torch.cuda.synchronize()
    assert isinstance(y, torch.Tensor) and y.device.type == "cuda"
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and isinstance(grad, torch.Tensor)
    assert isinstance(yt, torch.Tensor)
    assert_close(y.cpu().numpy(), _f64(fastdl.softmax(x)), np.float32)
    assert_close(yt.cpu().numpy(), _f64(fastdl.log_softmax(x.T, 0)), np.float32)
    cpu_loss, cpu_grad = fastdl.softmax_cross_entropy(x, lab, return_grad=True)
    assert_close(loss.cpu().numpy(), _f64(cpu_loss), np.float32, terms=1000)
    assert_close(grad.cpu().numpy(), _f64(cpu_grad), np.float32, terms=1000)
    # torch's own loss agrees
    ref = torch.nn.functional.cross_entropy(torch.from_numpy(x).double(), torch.from_numpy(lab))
    assert abs(float(loss) - float(ref)) <= 1e-5 * abs(float(ref))


@needs_gpu
def test_gpu_cupy_in_cupy_out_on_the_callers_stream(rng):
    cupy = pytest.importorskip("cupy")
    x = _logits(rng, (256, 3000), np.float32)
    t, p = random_array(rng, (1000, 33), np.float32), random_array(rng, (1000, 33), np.float32)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        cx = cupy.asarray(x)
        busy = cupy.ones(1 << 24, cupy.float32).cumsum()     # keeps the stream busy
        y = fastdl.softmax(cx)
        m = fastdl.mse(cupy.asarray(t), cupy.asarray(p))
        g = fastdl.mse_grad(cupy.asarray(t), cupy.asarray(p), "sum")
    stream.synchronize()
    del busy
    assert isinstance(y, cupy.ndarray) and isinstance(m, cupy.ndarray) and m.shape == ()
    assert isinstance(g, cupy.ndarray)
    assert_close(cupy.asnumpy(y), _f64(fastdl.softmax(x)), np.float32)
    assert_close(cupy.asnumpy(m), _f64(fastdl.mse(t, p)), np.float32)
    assert_close(cupy.asnumpy(g), _f64(fastdl.mse_grad(t, p, "sum")), np.float32)
