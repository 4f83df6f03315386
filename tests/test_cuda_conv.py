"""GPU conv2d and conv2d_backward (fastdl._ext._cuda; cuda/conv.{cu,h,pxi}).

On any machine with the CUDA extension built:
* validation through the public functions with fake device arrays: the CPU's bad-input table
  (tests/test_conv.py) raises the same errors, and a valid call without a device raises
  "no CUDA device";
* the GPU plans run on host memory by the ``_host_conv2d*`` shims: the same chunking
  (workspace caps down to one output row), im2col / col2im / dy reordering (the kernels' own
  per-element code), the GEMM calls through cuBLAS's column-major contract, bias fill and
  channel sums, against the float64 reference (tests/reference_conv.py) and the CPU.

With a GPU: the same grid on device arrays, strided inputs, chunking, determinism, and with
CuPy/torch where installed their kinds and streams.
"""

import ctypes
import itertools

import numpy as np
import pytest

_cuda = pytest.importorskip("fastdl._ext._cuda")

import fastdl  # noqa: E402
from conftest import LAYOUTS, assert_close, layout, random_array  # noqa: E402
from reference_conv import conv2d_backward_ref, conv2d_ref  # noqa: E402

HAVE_GPU = fastdl.cuda.is_available()
requires_gpu = pytest.mark.skipif(not HAVE_GPU, reason="no CUDA device")
without_gpu = pytest.mark.skipif(HAVE_GPU, reason="checks the error raised without a device")


class FakeDev:
    """A 'device array' that is only an interface (never dereferenced)."""

    def __init__(self, shape, dtype=np.float32, ptr=0x10000):
        self.__cuda_array_interface__ = {
            "shape": tuple(shape), "typestr": np.dtype(dtype).str, "data": (ptr, False),
            "strides": None, "version": 3, "stream": None}


def _scales(x, w, b, dy, hp):
    """Per-element magnitudes the results are relative to: the same convolution on |values|."""
    ax, aw = np.abs(np.asarray(x, np.float64)), np.abs(np.asarray(w, np.float64))
    ys = conv2d_ref(ax, aw, None if b is None else np.abs(b), **hp)
    if dy is None:
        return ys
    dxs, dws, dbs = conv2d_backward_ref(np.abs(np.asarray(dy, np.float64)), ax, aw, **hp)
    return ys, dxs, dws, dbs


@pytest.fixture(params=["gemm", "direct"])
def grouped_path(request):
    """Grouped forward convolutions through the lowered GEMMs and through the direct kernel."""
    previous = _cuda._conv_set_direct_max_channels(0 if request.param == "gemm" else 1 << 30)
    try:
        yield request.param
    finally:
        _cuda._conv_set_direct_max_channels(previous)


@pytest.fixture
def workspace():
    """A setter for the GPU convolution's workspace cap, restored afterwards."""
    original = _cuda._conv_get_workspace_limit()
    try:
        yield _cuda._conv_set_workspace_limit
    finally:
        _cuda._conv_set_workspace_limit(original)


# --------------------------------------------------------------------------------------
# validation with fake device arrays: the CPU's table of bad calls

def _fake_good():
    return (FakeDev((2, 4, 6, 6)), FakeDev((6, 2, 3, 3)), FakeDev((6,)),
            FakeDev((2, 6, 4, 4)))


BAD_CALLS = [
    ("x int", dict(x=FakeDev((2, 4, 6, 6), np.int32)), TypeError, "float32 or float64"),
    ("w float64", dict(w=FakeDev((6, 2, 3, 3), np.float64)), TypeError, "same dtype"),
    ("x 3-D", dict(x=FakeDev((4, 6, 6))), ValueError, "x must be 4-D"),
    ("w 3-D", dict(w=FakeDev((6, 2, 3))), ValueError, "w must be 4-D"),
    ("w channels", dict(w=FakeDev((6, 3, 3, 3))), ValueError, "in_channels/groups"),
    ("C not divisible", dict(groups=3), ValueError, "divisible by groups"),
    ("O not divisible", dict(w=FakeDev((5, 1, 3, 3)), groups=4), ValueError,
     "divisible by groups"),
    ("groups 0", dict(groups=0), ValueError, "groups must be positive"),
    ("groups float", dict(groups=2.0), ValueError, "groups must be a positive int"),
    ("groups str", dict(groups="2"), TypeError, "groups must be a positive int"),
    ("stride 0", dict(stride=0), ValueError, "stride must be positive"),
    ("stride pair 0", dict(stride=(1, 0)), ValueError, "stride must be positive"),
    ("stride nan", dict(stride=float("nan")), ValueError, "stride must be an int"),
    ("stride triple", dict(stride=(1, 1, 1)), ValueError, "stride must be an int or a pair"),
    ("stride str", dict(stride="1"), TypeError, "stride must be an int"),
    ("stride bool", dict(stride=True), TypeError, "stride must be an int"),
    ("dilation 0", dict(dilation=0), ValueError, "dilation must be positive"),
    ("padding -1", dict(padding=-1), ValueError, "padding must be non-negative"),
    ("padding full", dict(padding="full"), ValueError, "'same' or 'valid'"),
    ("same strided", dict(padding="same", stride=2), ValueError, "needs stride 1"),
    ("kernel too big", dict(w=FakeDev((6, 2, 7, 3))), ValueError, "larger than the padded input"),
    ("dilated kernel too big", dict(dilation=(3, 1)), ValueError, "larger than the padded input"),
    ("kernel size 0", dict(w=FakeDev((6, 2, 0, 3))), ValueError, "kernel_size must be positive"),
    ("w on the host", dict(w=np.ones((6, 2, 3, 3), np.float32)), TypeError,
     "w must be a CUDA device array"),
]


@pytest.mark.parametrize("desc,change,exc,msg", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input(desc, change, exc, msg):
    x, w, b, dy = _fake_good()
    args = dict(x=x, w=w, stride=1, padding=0, dilation=1, groups=2)
    args.update(change)
    with pytest.raises(exc, match=msg):
        fastdl.conv2d(args["x"], args["w"], b, args["stride"], args["padding"],
                      args["dilation"], args["groups"])
    with pytest.raises(exc, match=msg):
        fastdl.conv2d_backward(dy, args["x"], args["w"], args["stride"], args["padding"],
                               args["dilation"], args["groups"])


def test_bad_bias_and_dy():
    x, w, b, dy = _fake_good()
    with pytest.raises(ValueError, match=r"b has shape \(5,\), expected \(6,\)"):
        fastdl.conv2d(x, w, FakeDev((5,)), groups=2)
    with pytest.raises(ValueError, match=r"b has shape \(6, 1\)"):
        fastdl.conv2d(x, w, FakeDev((6, 1)), groups=2)
    with pytest.raises(TypeError, match="same dtype"):
        fastdl.conv2d(x, w, FakeDev((6,), np.float64), groups=2)
    with pytest.raises(ValueError, match=r"dy has shape \(2, 6, 5, 4\), expected \(2, 6, 4, 4\)"):
        fastdl.conv2d_backward(FakeDev((2, 6, 5, 4)), x, w, groups=2)
    with pytest.raises(TypeError, match="same dtype"):
        fastdl.conv2d_backward(FakeDev((2, 6, 4, 4), np.float64), x, w, groups=2)


def test_workspace_limit_hook():
    previous = _cuda._conv_set_workspace_limit(1234)
    try:
        assert _cuda._conv_get_workspace_limit() == 1234
        with pytest.raises(ValueError, match="workspace limit"):
            _cuda._conv_set_workspace_limit(0)
        assert _cuda._conv_get_workspace_limit() == 1234
    finally:
        assert _cuda._conv_set_workspace_limit(previous) == 1234
    assert previous == 256 * 1024 * 1024


@without_gpu
def test_valid_calls_without_device_raise_runtime_error():
    x, w, b, dy = _fake_good()
    with pytest.raises(RuntimeError, match="no CUDA device"):
        fastdl.conv2d(x, w, b, groups=2)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        fastdl.conv2d_backward(dy, x, w, groups=2, need_bias=False)


# --------------------------------------------------------------------------------------
# the GPU plans on host memory

def _check(conv, conv_backward, x, w, b, dtype, need_bias=True, **hp):
    """conv/conv_backward (host shims or the GPU functions with host copies) against the
    float64 reference, within the CPU suite's tolerances."""
    y = conv(x, w, b, **hp)
    ys = _scales(x, w, b, None, hp)
    assert_close(y, conv2d_ref(x, w, b, **hp), dtype, scale=ys)
    dy = random_array(np.random.default_rng(7), y.shape, dtype)
    dx, dw, db = conv_backward(dy, x, w, need_bias=need_bias, **hp)
    rdx, rdw, rdb = conv2d_backward_ref(dy, x, w, **hp)
    _, sdx, sdw, sdb = _scales(x, w, None, dy, hp)
    assert_close(dx, rdx, dtype, scale=sdx)
    assert_close(dw, rdw, dtype, scale=sdw)
    if need_bias:
        assert_close(db, rdb, dtype, scale=sdb)
    else:
        assert db is None
    return y, (dx, dw, db)


def _host_conv(x, w, b, **hp):
    return _cuda._host_conv2d(x, w, b, **hp)


def _host_conv_backward(dy, x, w, need_bias=True, **hp):
    return _cuda._host_conv2d_backward(dy, x, w, need_bias=need_bias, **hp)


STRIDES = [1, 2, (2, 1)]
PADDINGS = [0, 1, (2, 0), "valid"]
DILATIONS = [1, 2, (1, 3)]
KERNELS = [(1, 1), (3, 3), (2, 3)]
GRID = list(itertools.product(STRIDES, PADDINGS, DILATIONS, KERNELS))


@pytest.mark.parametrize("stride,padding,dilation,kernel", GRID)
def test_host_dense_grid(dtype, rng, stride, padding, dilation, kernel):
    x = random_array(rng, (2, 3, 9, 11), dtype)
    w = random_array(rng, (5, 3) + kernel, dtype)
    b = random_array(rng, (5,), dtype)
    _check(_host_conv, _host_conv_backward, x, w, b, dtype, stride=stride, padding=padding,
           dilation=dilation)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2),
                                                      ((2, 1), (1, 0), (1, 2)), (1, "same", 1),
                                                      (3, 1, 2)])
@pytest.mark.parametrize("N,C,O,groups", [(3, 4, 6, 2), (3, 6, 6, 3), (3, 4, 4, 4),
                                          (3, 3, 6, 3), (5, 8, 4, 2), (1, 6, 6, 3)])
def test_host_grouped(dtype, rng, grouped_path, stride, padding, dilation, N, C, O, groups):
    # groups <= images: one call per group over the images; groups > images: one call per
    # image over the groups
    x = random_array(rng, (N, C, 10, 7), dtype)
    w = random_array(rng, (O, C // groups, 3, 3), dtype)
    b = random_array(rng, (O,), dtype)
    _check(_host_conv, _host_conv_backward, x, w, b, dtype, stride=stride, padding=padding,
           dilation=dilation, groups=groups)


@pytest.mark.parametrize("N,C,O,groups", [(2, 5, 3, 1), (3, 4, 6, 2), (1, 6, 3, 3),
                                          (4, 4, 4, 4)])
def test_host_pointwise(dtype, rng, N, C, O, groups):
    previous = _cuda._conv_set_direct_max_channels(0)
    try:
        _pointwise(dtype, rng, N, C, O, groups)
    finally:
        _cuda._conv_set_direct_max_channels(previous)


def _pointwise(dtype, rng, N, C, O, groups):
    x = random_array(rng, (N, C, 5, 7), dtype)
    w = random_array(rng, (O, C // groups, 1, 1), dtype)
    b = random_array(rng, (O,), dtype)
    _counters = _cuda._blas_counters
    _counters(reset=True)
    _check(_host_conv, _host_conv_backward, x, w, b, dtype, groups=groups)
    counted = _counters(reset=True)
    # forward: min(groups, N) calls, no lowering; backward: the same for dx, one dW call
    assert counted["gemm"] == 2 * min(groups, N) + 1


def test_host_direct_kernel_default_bound(rng):
    # depthwise (1 channel a group) and up to 4 channels a group: no lowering, no GEMM
    x = random_array(rng, (2, 8, 9, 7), np.float32)
    b = random_array(rng, (8,), np.float32)
    for cg, expect in ((1, 0), (4, 0), (8, 1)):
        w = random_array(rng, (8, cg, 3, 3), np.float32)
        _cuda._blas_counters(reset=True)
        y = _cuda._host_conv2d(x, w, b, padding=1, groups=8 // cg)
        assert _cuda._blas_counters(reset=True)["gemm"] == expect
        hp = dict(padding=1, groups=8 // cg)
        assert_close(y, conv2d_ref(x, w, b, **hp), np.float32, scale=_scales(x, w, b, None, hp))


@pytest.mark.parametrize("kernel", [(1, 1), (2, 2), (3, 3), (4, 4), (2, 5), (4, 1)])
@pytest.mark.parametrize("dilation", [1, 2, (2, 1)])
def test_host_same_padding(dtype, rng, kernel, dilation):
    x = random_array(rng, (2, 3, 8, 9), dtype)
    w = random_array(rng, (4, 3) + kernel, dtype)
    y, _ = _check(_host_conv, _host_conv_backward, x, w, None, dtype, padding="same",
                  dilation=dilation)
    assert y.shape == (2, 4, 8, 9)


@pytest.mark.parametrize("shape,kernel,hp", [
    ((1, 2, 1, 1), (3, 3), dict(padding=1)),
    ((1, 2, 1, 1), (1, 1), {}),
    ((1, 1, 1, 7), (1, 3), dict(stride=2)),
    ((1, 3, 5, 5), (5, 5), {}),
    ((1, 3, 4, 4), (6, 6), dict(padding=1)),
    ((1, 3, 33, 7), (3, 3), dict(stride=(4, 1), padding=(0, 1))),
    ((3, 2, 6, 6), (3, 3), dict(stride=4, padding=2)),     # strides that skip input rows
])
def test_host_edge_shapes(dtype, rng, shape, kernel, hp):
    x = random_array(rng, shape, dtype)
    w = random_array(rng, (3, shape[1]) + kernel, dtype)
    b = random_array(rng, (3,), dtype)
    _check(_host_conv, _host_conv_backward, x, w, b, dtype, **hp)


@pytest.mark.parametrize("limit", [1, 200, 3000, 20000, 60000])
@pytest.mark.parametrize("hp", [dict(padding=1), dict(stride=2, padding=(2, 1), dilation=2),
                                dict(groups=2, padding=1), dict()])
def test_host_chunking(rng, workspace, limit, hp):
    # caps from one output row of one image up: chunks of images, then of one image's rows
    # (the dx gather then accumulates across row chunks), results as unchunked
    x = random_array(rng, (3, 4, 11, 9), np.float64)
    w = random_array(rng, (6, 4 // hp.get("groups", 1), 3, 3), np.float64)
    b = random_array(rng, (6,), np.float64)
    workspace(limit)
    _check(_host_conv, _host_conv_backward, x, w, b, np.float64, **hp)


def test_host_chunking_is_deterministic_per_cap(rng, workspace):
    x = random_array(rng, (4, 3, 12, 10), np.float32)
    w = random_array(rng, (5, 3, 3, 3), np.float32)
    dy = random_array(rng, (4, 5, 10, 8), np.float32)
    workspace(500)
    first = _cuda._host_conv2d_backward(dy, x, w)
    again = _cuda._host_conv2d_backward(dy, x, w)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("lx", LAYOUTS)
@pytest.mark.parametrize("lw", ["C", "negative", "transposed-view"])
def test_host_layouts(dtype, rng, lx, lw):
    x = random_array(rng, (2, 3, 7, 6), dtype)
    w = random_array(rng, (4, 3, 3, 2), dtype)
    b = random_array(rng, (4,), dtype)
    hp = dict(padding=1)
    y = _cuda._host_conv2d(layout(x, lx), layout(w, lw), layout(b, lx), **hp)
    assert_close(y, conv2d_ref(x, w, b, **hp), dtype, scale=_scales(x, w, b, None, hp))
    dy = random_array(rng, y.shape, dtype)
    dx, dw, db = _cuda._host_conv2d_backward(layout(dy, lx), layout(x, lx), layout(w, lw), **hp)
    rdx, rdw, rdb = conv2d_backward_ref(dy, x, w, **hp)
    _, sdx, sdw, sdb = _scales(x, w, None, dy, hp)
    assert_close(dx, rdx, dtype, scale=sdx)
    assert_close(dw, rdw, dtype, scale=sdw)
    assert_close(db, rdb, dtype, scale=sdb)


@pytest.mark.parametrize("xs,ws", [((0, 3, 5, 5), (4, 3, 3, 3)), ((2, 0, 5, 5), (4, 0, 3, 3)),
                                   ((2, 3, 5, 5), (0, 3, 3, 3))])
def test_host_empty(dtype, xs, ws):
    x = np.ones(xs, dtype)
    w = np.ones(ws, dtype)
    b = np.full((ws[0],), 0.5, dtype)
    y = _cuda._host_conv2d(x, w, b)
    np.testing.assert_array_equal(y, conv2d_ref(x, w, b).astype(dtype))
    dy = np.ones(y.shape, dtype)
    dx, dw, db = _cuda._host_conv2d_backward(dy, x, w)
    rdx, rdw, rdb = conv2d_backward_ref(dy, x, w)
    for got, ref in ((dx, rdx), (dw, rdw), (db, rdb)):
        assert got.shape == ref.shape and got.dtype == dtype
        np.testing.assert_array_equal(got, ref.astype(dtype))


@pytest.mark.parametrize("hp", [dict(padding=1), dict(), dict(stride=2, groups=3)])
def test_host_need_input_false_skips_dx(rng, hp):
    x = random_array(rng, (2, 6, 7, 8), np.float32)
    w = random_array(rng, (6, 6 // hp.get("groups", 1), 3, 3) if hp else (6, 6, 1, 1),
                     np.float32)
    y = _cuda._host_conv2d(x, w, **hp)
    dy = random_array(rng, y.shape, np.float32)
    _cuda._blas_counters(reset=True)
    dx, dw, db = _cuda._host_conv2d_backward(dy, x, w, need_input=False, **hp)
    assert dx is None
    assert _cuda._blas_counters(reset=True)["gemm"] == 1    # dW only
    full = _cuda._host_conv2d_backward(dy, x, w, **hp)
    np.testing.assert_array_equal(dw, full[1])
    np.testing.assert_array_equal(db, full[2])
    dx, dw, db = _cuda._host_conv2d_backward(np.ones((0,) + dy.shape[1:], np.float32),
                                             x[:0], w, need_input=False, **hp)
    assert dx is None and not dw.any()


def test_host_nan_inf_propagate(rng):
    x = random_array(rng, (1, 2, 6, 6), np.float64)
    w = random_array(rng, (3, 2, 3, 3), np.float64)
    x[0, 1, 2, 3] = np.nan
    x[0, 0, 0, 0] = np.inf
    y = _cuda._host_conv2d(x, w, padding=1)
    ref = conv2d_ref(x, w, padding=1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(ref))


def test_host_matches_cpu_function(rng):
    x = random_array(rng, (3, 6, 13, 11), np.float32)
    w = random_array(rng, (8, 3, 3, 3), np.float32)
    b = random_array(rng, (8,), np.float32)
    hp = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    y = _cuda._host_conv2d(x, w, b, **hp)
    assert_close(y, fastdl.conv2d(x, w, b, **hp), np.float32, scale=2 * _scales(x, w, b, None, hp))
    dy = random_array(rng, y.shape, np.float32)
    got = _cuda._host_conv2d_backward(dy, x, w, **hp)
    cpu = fastdl.conv2d_backward(dy, x, w, **hp)
    scales = _scales(x, w, None, dy, hp)[1:]
    for g, c, s in zip(got, cpu, scales):
        assert_close(g, c, np.float32, scale=2 * s)


# --------------------------------------------------------------------------------------
# on a GPU

class DevView:
    """A strided view into device memory owned by `owner` (kept alive)."""

    def __init__(self, owner, shape, strides, offset, typestr):
        self.owner = owner
        ptr = owner.__cuda_array_interface__["data"][0] + offset
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr,
                                         "data": (ptr, False), "strides": tuple(strides),
                                         "version": 3, "stream": None}


def to_dev(a):
    """a on the device with the same strides (a DevView over a copy of the bytes it spans
    when it is not C-contiguous)."""
    if a is None:
        return None
    a = np.asarray(a)
    if a.flags.c_contiguous or a.size == 0:
        return fastdl.cuda.to_device(np.ascontiguousarray(a))
    lo = sum((n - 1) * s for n, s in zip(a.shape, a.strides) if s < 0)
    hi = sum((n - 1) * s for n, s in zip(a.shape, a.strides) if s > 0) + a.itemsize
    raw = np.ctypeslib.as_array((ctypes.c_uint8 * (hi - lo)).from_address(a.ctypes.data + lo))
    owner = fastdl.cuda.to_device(raw.copy())
    return DevView(owner, a.shape, a.strides, -lo, a.dtype.str)


def _gpu_conv(x, w, b, **hp):
    y = fastdl.conv2d(to_dev(x), to_dev(w), to_dev(b), **hp)
    assert isinstance(y, fastdl.cuda.DeviceArray)
    return fastdl.cuda.to_host(y)


def _gpu_conv_backward(dy, x, w, need_bias=True, **hp):
    r = fastdl.conv2d_backward(to_dev(dy), to_dev(x), to_dev(w), need_bias=need_bias, **hp)
    if need_bias:
        r2 = fastdl.conv2d_backward(to_dev(dy), to_dev(x), to_dev(w), need_input=False, **hp)
        assert r2[0] is None
        np.testing.assert_array_equal(fastdl.cuda.to_host(r2[1]), fastdl.cuda.to_host(r[1]))
    return tuple(None if v is None else fastdl.cuda.to_host(v) for v in r)


@requires_gpu
@pytest.mark.parametrize("stride,padding,dilation,kernel", GRID)
def test_gpu_dense_grid(dtype, rng, stride, padding, dilation, kernel):
    x = random_array(rng, (2, 3, 9, 11), dtype)
    w = random_array(rng, (5, 3) + kernel, dtype)
    b = random_array(rng, (5,), dtype)
    _check(_gpu_conv, _gpu_conv_backward, x, w, b, dtype, stride=stride, padding=padding,
           dilation=dilation)


@requires_gpu
@pytest.mark.parametrize("N,C,O,groups,k", [(3, 4, 6, 2, 3), (1, 6, 6, 3, 3), (5, 8, 4, 2, 1),
                                            (4, 32, 32, 32, 3), (2, 5, 3, 1, 1)])
def test_gpu_grouped_and_pointwise(dtype, rng, grouped_path, N, C, O, groups, k):
    x = random_array(rng, (N, C, 10, 7), dtype)
    w = random_array(rng, (O, C // groups, k, k), dtype)
    b = random_array(rng, (O,), dtype)
    _check(_gpu_conv, _gpu_conv_backward, x, w, b, dtype, padding=k // 2, groups=groups)


@requires_gpu
@pytest.mark.parametrize("limit", [1, 3000, None])
def test_gpu_bigger_shapes_and_chunking(rng, workspace, limit):
    if limit is not None:
        workspace(limit)
    x = random_array(rng, (5, 16, 33, 31), np.float32)
    w = random_array(rng, (24, 16, 3, 3), np.float32)
    b = random_array(rng, (24,), np.float32)
    _check(_gpu_conv, _gpu_conv_backward, x, w, b, np.float32, stride=(1, 2), padding=1)


@requires_gpu
def test_gpu_layouts_empty_nan_and_determinism(rng):
    x = random_array(rng, (2, 3, 7, 6), np.float32)
    w = random_array(rng, (4, 3, 3, 2), np.float32)
    for lx in LAYOUTS:
        _check(lambda *a, **k: _gpu_conv(*a, **k), _gpu_conv_backward, layout(x, lx),
               layout(w, lx), None, np.float32, padding=1)
    y = fastdl.cuda.to_host(fastdl.conv2d(to_dev(np.ones((0, 3, 5, 5), np.float32)),
                                          to_dev(np.ones((4, 3, 3, 3), np.float32))))
    assert y.shape == (0, 4, 3, 3)
    xn = x.copy()
    xn[0, 1, 2, 3] = np.nan
    y = _gpu_conv(xn, w, None, padding=1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(conv2d_ref(xn, w, padding=1)))
    dy = random_array(rng, (2, 4, 7, 7), np.float32)
    first = _gpu_conv_backward(dy, x, w, padding=1)
    again = _gpu_conv_backward(dy, x, w, padding=1)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


@requires_gpu
def test_gpu_torch_kind_and_stream(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    x = random_array(rng, (4, 8, 17, 15), np.float32)
    w = random_array(rng, (6, 8, 3, 3), np.float32)
    b = random_array(rng, (6,), np.float32)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        tx, tw, tb = (torch.from_numpy(v).cuda() for v in (x, w, b))
        y = fastdl.conv2d(tx, tw, tb, 1, 1)
        assert isinstance(y, torch.Tensor) and y.is_cuda
        ref = torch.nn.functional.conv2d(tx.double(), tw.double(), tb.double(), 1, 1)
        dx, dw, db = fastdl.conv2d_backward(y, tx, tw, 1, 1)
        s.synchronize()
    assert_close(y.cpu().numpy(), ref.cpu().numpy(), np.float32,
                 scale=_scales(x, w, b, None, dict(padding=1)))
    assert isinstance(dx, torch.Tensor) and isinstance(db, torch.Tensor)


@requires_gpu
def test_gpu_cupy_kind(rng):
    cupy = pytest.importorskip("cupy")
    x = random_array(rng, (2, 3, 9, 8), np.float64)
    w = random_array(rng, (4, 3, 3, 3), np.float64)
    with cupy.cuda.Stream(non_blocking=True):
        y = fastdl.conv2d(cupy.asarray(x), cupy.asarray(w), None, 2, 1)
        assert isinstance(y, cupy.ndarray)
        got = cupy.asnumpy(y)
    assert_close(got, conv2d_ref(x, w, None, 2, 1), np.float64,
                 scale=_scales(x, w, None, None, dict(stride=2, padding=1)))
