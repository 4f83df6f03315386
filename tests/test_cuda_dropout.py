"""The GPU twins of dropout and dropout_backward (fastdl._ext._cuda: cuda/dropout.{cu,pxi},
cuda/philox.cuh): the CPU's generator, stream and keep rule, so that for a seed the GPU mask
and values are the CPU's bit for bit.

* Everywhere the CUDA extension is built (no GPU needed), the proof that the generator is
  the same: the kernels' Philox code, compiled for the host, gives Random123's known-answer
  vectors, fastdl._ext._random.philox_words word for word (across a change of the
  counter's high word and at the end of the 64-bit range), and, through the kernel's own
  block body run on the host (``_host_dropout``), the CPU dropout's mask and values bit for
  bit for every layout, path (contiguous, strided with 32- and 64-bit indices), thread count,
  p and dtype. Validation with fake device arrays; RuntimeError without a device; the
  signatures are the CPU's.
* On a machine with a CUDA device (skipped otherwise): dropout / dropout_backward on device
  arrays against the CPU, bit for bit.
"""

import inspect
import math

import numpy as np
import pytest

_cuda = pytest.importorskip("fastdl._ext._cuda")

import fastdl  # noqa: E402
from fastdl._ext import _random as R  # noqa: E402
from conftest import layout  # noqa: E402
import reference_random as ref  # noqa: E402

HAS_DEVICE = fastdl.cuda.is_available()
needs_device = pytest.mark.skipif(not HAS_DEVICE, reason="no CUDA device")
without_device = pytest.mark.skipif(HAS_DEVICE, reason="a CUDA device is present")

DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
# Random123's kat_vectors for philox4x32_10 (as tests/test_dropout.py)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]
SIZES = [(), (1,), (2,), (3,), (4,), (5,), (7,), (33,), (1000,), (4099,), (5, 7, 33),
         (300, 201), (3, 1, 4001)]
PS = [1e-300, 0.1, 0.5, 0.9, 0.9999, 1 - 2.0 ** -40]


@pytest.fixture
def rng():
    return np.random.default_rng(424242)


def assert_bits(got, expected):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.dtype == expected.dtype and got.shape == expected.shape, \
        (got.dtype, got.shape, expected.dtype, expected.shape)
    assert got.tobytes() == expected.tobytes(), \
        f"differ at {np.argwhere(got.view(np.uint8) != expected.view(np.uint8))[:5].tolist()}"


# ======================================================================================
# The generator: the kernels' Philox code on the host
# ======================================================================================

@pytest.mark.parametrize("counter, key, expected", KAT)
def test_philox_known_answers(counter, key, expected):
    assert _cuda._host_philox4x32_10(counter, key).tolist() == list(expected)
    assert R.philox4x32_10(counter, key).tolist() == list(expected)


@pytest.mark.parametrize("seed", [0, 1, 0xDEADBEEF, 2 ** 32, 2 ** 64 - 1, 0x0123456789ABCDEF])
@pytest.mark.parametrize("first, n", [(0, 1), (0, 7), (1, 3), (2, 1000), (3, 4099),
                                      (4 * 2 ** 32 - 13, 40),      # across a change of hi32
                                      (2 ** 64 - 4 * 300, 4 * 300),  # the last blocks
                                      (12345, 70001)])
def test_stream_is_the_cpu_stream(seed, first, n):
    got = _cuda._host_philox_words(seed, n, first)
    assert got.dtype == np.uint32 and got.shape == (n,)
    np.testing.assert_array_equal(got, R.philox_words(seed, n, first))
    if n <= 1000:
        np.testing.assert_array_equal(got, ref.philox_words(seed, first, n))


def test_stream_is_the_block_function():
    seed, b = 0x1122334455667788, 0x0000000500000007
    words = _cuda._host_philox_words(seed, 8, 4 * b)
    block = R.philox4x32_10((b & 0xFFFFFFFF, b >> 32, 0, 0), (seed & 0xFFFFFFFF, seed >> 32))
    np.testing.assert_array_equal(words[:4], block)


@pytest.mark.parametrize("p", [1e-300, 0.1, 0.3, 0.5, 0.9, 0.999, 1 - 2.0 ** -40])
@pytest.mark.parametrize("seed", [0, 1234, 2 ** 63 + 5, 2 ** 64 - 1])
def test_mask_is_the_cpu_mask(seed, p):
    for n in (1, 3, 4, 5, 1001, 65537):
        m = _cuda._host_dropout_mask(seed, n, p)
        assert m.dtype == np.bool_ and m.shape == (n,)
        cpu = R.dropout(np.zeros(n, np.float32), p, seed=seed, return_mask=True)[1]
        np.testing.assert_array_equal(m, cpu)
        np.testing.assert_array_equal(m, ref.keep_mask_ref((n,), p, seed))


def test_threshold_rule_is_exact():
    seed = 77
    words = R.philox_words(seed, 64)
    i = int(np.argmax((words > 2 ** 20) & (words < 2 ** 32 - 2 ** 20)))
    w = int(words[i])
    assert _cuda._host_dropout_mask(seed, 64, w / 2 ** 32)[i]
    assert not _cuda._host_dropout_mask(seed, 64, (w + 0.25) / 2 ** 32)[i]
    assert _cuda._host_dropout_mask(seed, 64, (w - 0.75) / 2 ** 32)[i]
    assert not _cuda._host_dropout_mask(seed, 64, (w + 1) / 2 ** 32)[i]


# ======================================================================================
# dropout's GPU path on the host: the kernel body against the CPU, bit for bit
# ======================================================================================

@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("shape", SIZES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_host_dropout_is_the_cpu_dropout(dtype, shape, p, rng):
    x = np.asarray(rng.standard_normal(shape), dtype=dtype)
    x0 = x.copy()
    (y, mask), path = _cuda._host_dropout(x, p, seed=1234, return_mask=True, with_path=True)
    y_cpu, m_cpu = R.dropout(x, p, seed=1234, return_mask=True)
    assert_bits(y, y_cpu)
    assert_bits(mask, m_cpu)
    assert path == 0
    assert_bits(x, x0)
    assert_bits(_cuda._host_dropout(x, p, seed=1234), y_cpu)
    # the backward, from the mask and from the seed
    dy = np.asarray(rng.standard_normal(shape), dtype=dtype)
    expected = R.dropout_backward(dy, m_cpu, p)
    assert_bits(_cuda._host_dropout_backward(dy, mask, p), expected)
    assert_bits(_cuda._host_dropout_backward(dy, 1234, p), expected)


@pytest.mark.parametrize("kind", ["F", "strided", "negative", "transposed-view"])
@pytest.mark.parametrize("shape", [(37,), (9, 33), (4, 5, 60), (2, 3, 7, 9)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_host_mask_does_not_depend_on_layout(dtype, shape, kind, rng):
    x = np.asarray(rng.standard_normal(shape), dtype=dtype)
    y_cpu, keep = R.dropout(x, 0.3, seed=99, return_mask=True)
    xv = layout(x, kind)
    (y, mask), path = _cuda._host_dropout(xv, 0.3, seed=99, return_mask=True, with_path=True)
    assert_bits(y, y_cpu)
    assert_bits(mask, keep)
    assert path == (0 if xv.flags.c_contiguous else 1)
    for mkind in ("C", kind):
        assert_bits(_cuda._host_dropout_backward(xv, layout(keep, mkind), 0.3), y_cpu)
    assert_bits(_cuda._host_dropout_backward(xv, 99, 0.3), y_cpu)


@pytest.mark.parametrize("force_walk", [0, 1, 2], ids=["plan", "walk32", "walk64"])
@pytest.mark.parametrize("threads", [1, 3, 64, 1000])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_host_paths_and_thread_counts(dtype, threads, force_walk, rng):
    x = np.asarray(rng.standard_normal((7, 301)), dtype=dtype)
    y_cpu, keep = R.dropout(x, 0.25, seed=7, return_mask=True)
    for xv in (x, layout(x, "negative"), layout(x, "strided")):
        y, m = _cuda._host_dropout(xv, 0.25, seed=7, return_mask=True, threads=threads,
                                   force_walk=force_walk)
        assert_bits(y, y_cpu)
        assert_bits(m, keep)
        assert_bits(_cuda._host_dropout_backward(xv, layout(keep, "strided"), 0.25,
                                                 threads=threads, force_walk=force_walk), y_cpu)
        assert_bits(_cuda._host_dropout_backward(xv, 7, 0.25, threads=threads,
                                                 force_walk=force_walk), y_cpu)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_host_unaligned_views_and_out(dtype, rng):
    """x and out= starting 1..3 elements into an allocation: per-element loads and stores,
    the same bits, nothing written outside out."""
    for n in (1, 4, 5, 33, 1003):
        base = np.asarray(rng.standard_normal(n + 8), dtype=dtype)
        for ox in range(4):
            x = base[ox:ox + n]
            y_cpu, keep = R.dropout(x, 0.4, seed=3, return_mask=True)
            for oy in range(4):
                buf = np.full(n + 8, 7, dtype)
                out = buf[oy:oy + n]
                assert _cuda._host_dropout(x, 0.4, seed=3, out=out) is out
                assert_bits(out, y_cpu)
                assert np.all(buf[:oy] == 7) and np.all(buf[oy + n:] == 7)
                mbuf = np.zeros(n + 8, bool)
                mbuf[oy:oy + n] = keep
                buf[:] = 7
                _cuda._host_dropout_backward(x, mbuf[oy:oy + n], 0.4, out=out)
                assert_bits(out, y_cpu)


def test_host_special_values_and_exact_zero(rng):
    for dtype in DTYPES:
        x = np.tile(np.array([np.nan, np.inf, -np.inf, 1.0, -0.0, -2.5], dtype), 40)
        y, keep = _cuda._host_dropout(x, 0.5, seed=11, return_mask=True)
        assert keep.any() and (~keep).any()
        assert np.all(y[~keep] == 0) and not np.signbit(y[~keep]).any()   # +0.0, no NaN leak
        assert_bits(y, R.dropout(x, 0.5, seed=11))


def test_host_identity_and_seed_semantics(rng):
    x = rng.standard_normal((5, 6)).astype(np.float32)
    for p, training in [(0.0, True), (0.5, False)]:
        state = np.random.get_state()[1].copy()
        assert _cuda._host_dropout(x, p, training) is x
        y, mask, seed = _cuda._host_dropout(x, p, training, return_mask=True, return_seed=True)
        assert y is x and mask.dtype == np.bool_ and mask.all() and seed is None
        assert np.array_equal(np.random.get_state()[1], state)       # nothing drawn
        out = np.full_like(x, 7)
        assert _cuda._host_dropout(x, p, training, out=out) is out
        assert_bits(out, x)
        assert _cuda._host_dropout_backward(x, None, p) is x
    # seed=None draws from NumPy's global state exactly as the CPU does
    np.random.seed(123)
    y1, s1 = R.dropout(x, 0.5, return_seed=True)
    np.random.seed(123)
    y2, s2 = _cuda._host_dropout(x, 0.5, return_seed=True)
    assert s1 == s2 and isinstance(s2, int)
    assert_bits(y2, y1)
    y3, s3 = _cuda._host_dropout(x, 0.5, seed=np.random.default_rng(8), return_seed=True)
    y4, s4 = R.dropout(x, 0.5, seed=np.random.default_rng(8), return_seed=True)
    assert s3 == s4
    assert_bits(y3, y4)


def test_host_out_in_place_and_overlapping(rng):
    for dtype in DTYPES:
        x = np.asarray(rng.standard_normal(5000), dtype=dtype)
        y_cpu, keep = R.dropout(x, 0.3, seed=4, return_mask=True)
        a = x.copy()
        assert _cuda._host_dropout(a, 0.3, seed=4, out=a) is a
        assert_bits(a, y_cpu)
        buf = np.concatenate([x, [0]]).astype(dtype)
        _cuda._host_dropout(buf[:-1], 0.3, seed=4, out=buf[1:])
        assert_bits(buf[1:], y_cpu)
        buf = np.concatenate([[0], x]).astype(dtype)
        _cuda._host_dropout_backward(buf[1:], keep, 0.3, out=buf[:-1])
        assert_bits(buf[:-1], y_cpu)
        buf = np.concatenate([x, [0]]).astype(dtype)                 # identity, overlapping
        _cuda._host_dropout(buf[:-1], 0.3, training=False, out=buf[1:])
        assert_bits(buf[1:], x)


def test_host_empty():
    for shape in [(0,), (3, 0), (0, 5, 2)]:
        x = np.empty(shape, np.float32)
        (y, mask), path = _cuda._host_dropout(x, 0.5, seed=1, return_mask=True, with_path=True)
        assert y.shape == shape and mask.shape == shape and path == 3
        assert _cuda._host_dropout_backward(x, 1, 0.5).shape == shape
        assert _cuda._host_dropout_backward(x, mask, 0.5).shape == shape


# ======================================================================================
# Validation with fake device arrays
# ======================================================================================

class Fake:
    def __init__(self, shape, typestr="<f4", strides=None, ptr=0x10000):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr,
                                         "data": (ptr, False), "strides": strides,
                                         "version": 3, "stream": None}


def _bad_calls():
    x = Fake((5, 4))
    return [
        ("x int", lambda: _cuda.dropout(Fake((3,), "<i8"), 0.5, seed=1), TypeError, "float32"),
        ("p >= 1", lambda: _cuda.dropout(x, 1.0, seed=1), ValueError, "p"),
        ("p < 0", lambda: _cuda.dropout(x, -0.1, seed=1), ValueError, "p"),
        ("p nan", lambda: _cuda.dropout(x, float("nan")), ValueError, "p"),
        ("p str", lambda: _cuda.dropout(x, "0.5"), TypeError, "p"),
        ("p bool", lambda: _cuda.dropout_backward(x, 1, True), TypeError, "p"),
        ("p array", lambda: _cuda.dropout_backward(x, 1, np.array([0.5])), TypeError, "p"),
        ("seed -1", lambda: _cuda.dropout(x, 0.5, seed=-1), ValueError, "seed"),
        ("seed 2**64", lambda: _cuda.dropout(x, 0.5, seed=2 ** 64), ValueError, "seed"),
        ("seed float", lambda: _cuda.dropout(x, 0.5, seed=1.5), TypeError, "seed"),
        ("seed str", lambda: _cuda.dropout(x, 0.5, seed="3"), TypeError, "seed"),
        ("bw seed -1", lambda: _cuda.dropout_backward(x, -1, 0.5), ValueError, "seed"),
        ("bw generator", lambda: _cuda.dropout_backward(x, np.random.default_rng(0), 0.5),
         TypeError, "Generator"),
        ("bw mask dtype", lambda: _cuda.dropout_backward(x, Fake((5, 4), "<f4"), 0.5),
         TypeError, "bool"),
        ("bw mask int", lambda: _cuda.dropout_backward(x, Fake((5, 4), "<i8"), 0.5),
         TypeError, "bool"),
        ("bw mask shape", lambda: _cuda.dropout_backward(x, Fake((4, 5), "|b1"), 0.5),
         ValueError, r"mask has shape \(4, 5\) and dy has shape \(5, 4\)"),
        ("bw mask numpy", lambda: _cuda.dropout_backward(x, np.ones((5, 4), bool), 0.5),
         TypeError, "bool"),
        ("bw mask float", lambda: _cuda.dropout_backward(x, 1.5, 0.5), TypeError, "bool"),
        ("out shape", lambda: _cuda.dropout(x, 0.5, seed=1, out=Fake((4, 5))), ValueError,
         "out"),
        ("out dtype", lambda: _cuda.dropout(x, 0.5, seed=1, out=Fake((5, 4), "<f8")),
         TypeError, "out"),
        ("bw out", lambda: _cuda.dropout_backward(x, 1, 0.5, out=Fake((5, 4), strides=(4, 20))),
         ValueError, "C-contiguous"),
        ("misaligned", lambda: _cuda.dropout(Fake((3,), ptr=0x10001), 0.5, seed=1),
         ValueError, "x is not aligned"),
        ("misaligned seedless", lambda: _cuda.dropout(Fake((3,), ptr=0x10001), 0.5),
         ValueError, "x is not aligned"),
        ("bw misaligned", lambda: _cuda.dropout_backward(Fake((3,), ptr=0x10002), 1, 0.5),
         ValueError, "dy is not aligned"),
        ("odd strides", lambda: _cuda.dropout(Fake((3,), strides=(6,)), 0.5, seed=1),
         ValueError, "multiples"),
    ]


@pytest.mark.parametrize("label, call, exc, match", _bad_calls(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_validation_comes_first(label, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@without_device
def test_no_device_raises_runtime_error():
    x = Fake((5, 4))
    calls = [lambda: _cuda.dropout(x, 0.5, seed=1), lambda: _cuda.dropout(x, 0.5),
             lambda: _cuda.dropout(x, 0.5, training=False),
             lambda: _cuda.dropout_backward(x, 3, 0.5),
             lambda: _cuda.dropout_backward(x, Fake((5, 4), "|b1"), 0.5),
             lambda: _cuda.dropout_backward(x, None, 0.5),
             lambda: fastdl.dropout(x, 0.5, seed=1),
             lambda: fastdl.dropout_backward(x, 3, 0.5)]
    for call in calls:
        with pytest.raises(RuntimeError, match="no CUDA device"):
            call()
    # a call that fails draws nothing from NumPy's global state or the caller's Generator
    state = np.random.get_state()[1].copy()
    gen = np.random.default_rng(5)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        _cuda.dropout(x, 0.5)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        _cuda.dropout(x, 0.5, seed=gen)
    assert np.array_equal(np.random.get_state()[1], state)
    assert gen.integers(0, 2 ** 63) == np.random.default_rng(5).integers(0, 2 ** 63)


@pytest.mark.parametrize("name", ["dropout", "dropout_backward"])
def test_signatures_match_the_cpu_functions(name):
    gpu = inspect.signature(getattr(_cuda, name))
    cpu = inspect.signature(getattr(R, name))
    assert [(p.name, p.kind, p.default) for p in gpu.parameters.values()] == \
        [(p.name, p.kind, p.default) for p in cpu.parameters.values()]


# ======================================================================================
# On a device
# ======================================================================================

def to_dev(a):
    a = np.asarray(a)
    if a.ndim == 0:   # to_device goes through np.ascontiguousarray, which makes 0-d 1-d
        return DevView(fastdl.cuda.to_device(a.reshape(1)), 0, (), ())
    return fastdl.cuda.to_device(np.ascontiguousarray(a))


def to_np(d):
    return fastdl.cuda.to_host(d)


class DevView:
    """A strided view into a DeviceArray's memory (keeps the owner alive)."""

    def __init__(self, owner, offset_bytes, shape, strides, typestr=None):
        self.owner = owner
        ptr = owner.__cuda_array_interface__["data"][0] + offset_bytes
        self.__cuda_array_interface__ = {"shape": tuple(shape),
                                         "typestr": typestr or owner.dtype.str,
                                         "data": (ptr, False), "strides": tuple(strides),
                                         "version": 3, "stream": None}


def dev_like(view):
    """The NumPy view recreated on the device (the root's bytes uploaded)."""
    if view.flags.c_contiguous:
        return to_dev(view)
    root = view
    while isinstance(root.base, np.ndarray):
        root = root.base
    owner = to_dev(root.ravel(order="K"))
    off = view.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    return DevView(owner, off, view.shape, view.strides)


@needs_device
@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("shape", SIZES + [(0,), (3, 0), (1 << 22,), (1 << 22 | 3,)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_device_dropout_is_the_cpu_dropout(dtype, shape, p, rng):
    x = np.asarray(rng.standard_normal(shape), dtype=dtype)
    dx = to_dev(x)
    y, mask, seed = R.dropout(dx, p, seed=1234, return_mask=True, return_seed=True)
    assert isinstance(y, fastdl.cuda.DeviceArray) and isinstance(mask, fastdl.cuda.DeviceArray)
    assert mask.dtype == np.bool_ and seed == 1234
    y_cpu, m_cpu = R.dropout(x, p, seed=1234, return_mask=True)
    assert_bits(to_np(y), y_cpu)
    assert_bits(to_np(mask), m_cpu)
    assert_bits(to_np(dx), x)
    dy = np.asarray(rng.standard_normal(shape), dtype=dtype)
    expected = R.dropout_backward(dy, m_cpu, p)
    assert_bits(to_np(R.dropout_backward(to_dev(dy), mask, p)), expected)
    assert_bits(to_np(R.dropout_backward(to_dev(dy), 1234, p)), expected)


@needs_device
@pytest.mark.parametrize("kind", ["F", "strided", "negative", "transposed-view"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_device_non_contiguous(dtype, kind, rng):
    x = np.asarray(rng.standard_normal((33, 65)), dtype=dtype)
    y_cpu, keep = R.dropout(x, 0.3, seed=99, return_mask=True)
    xv = dev_like(layout(x, kind))
    y, m = _cuda.dropout(xv, 0.3, seed=99, return_mask=True)
    assert_bits(to_np(y), y_cpu)
    assert_bits(to_np(m), keep)
    assert_bits(to_np(_cuda.dropout_backward(xv, dev_like(layout(keep, kind)), 0.3)), y_cpu)
    assert_bits(to_np(_cuda.dropout_backward(xv, 99, 0.3)), y_cpu)


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_device_unaligned_views_and_out(dtype, rng):
    for n in (1, 5, 33, 100003):
        base = np.asarray(rng.standard_normal(n + 8), dtype=dtype)
        d_base = to_dev(base)
        for off in range(4):
            x = base[off:off + n]
            y_cpu, keep = R.dropout(x, 0.4, seed=3, return_mask=True)
            xv = DevView(d_base, off * dtype.itemsize, (n,), (dtype.itemsize,))
            assert_bits(to_np(_cuda.dropout(xv, 0.4, seed=3)), y_cpu)
            d_buf = to_dev(np.full(n + 8, 7, dtype))
            outv = DevView(d_buf, off * dtype.itemsize, (n,), (dtype.itemsize,))
            assert _cuda.dropout(xv, 0.4, seed=3, out=outv) is outv
            buf = to_np(d_buf)
            assert_bits(buf[off:off + n], y_cpu)
            assert np.all(buf[:off] == 7) and np.all(buf[off + n:] == 7)
            mbuf = np.zeros(n + 8, bool)
            mbuf[off:off + n] = keep
            d_m = to_dev(mbuf)
            mv = DevView(d_m, off, (n,), (1,))
            assert_bits(to_np(_cuda.dropout_backward(xv, mv, 0.4)), y_cpu)


@needs_device
def test_device_identity_in_place_overlap_and_special_values(rng):
    x = rng.standard_normal((5, 6)).astype(np.float32)
    dx = to_dev(x)
    assert _cuda.dropout(dx, 0.5, training=False) is dx
    y, m, s = _cuda.dropout(dx, 0.0, return_mask=True, return_seed=True)
    assert y is dx and s is None and to_np(m).all()
    assert _cuda.dropout_backward(dx, None, 0.5) is dx
    xs = rng.standard_normal(5001).astype(np.float64)
    y_cpu = R.dropout(xs, 0.3, seed=4)
    d = to_dev(xs)
    assert _cuda.dropout(d, 0.3, seed=4, out=d) is d
    assert_bits(to_np(d), y_cpu)
    buf = to_dev(np.concatenate([xs, [0]]))
    src = DevView(buf, 0, (5001,), (8,))
    dst = DevView(buf, 8, (5001,), (8,))
    _cuda.dropout(src, 0.3, seed=4, out=dst)
    assert_bits(to_np(buf)[1:], y_cpu)
    sv = np.tile(np.array([np.nan, np.inf, -np.inf, 1.0, -0.0], np.float32), 40)
    assert_bits(to_np(_cuda.dropout(to_dev(sv), 0.5, seed=11)), R.dropout(sv, 0.5, seed=11))
    np.random.seed(5)
    _, s1 = _cuda.dropout(to_dev(sv), 0.5, return_seed=True)
    np.random.seed(5)
    _, s2 = R.dropout(sv, 0.5, return_seed=True)
    assert s1 == s2


@needs_device
def test_device_statistics_of_a_large_mask():
    n = 1 << 24
    for p in (0.1, 0.5):
        m = to_np(_cuda.dropout(to_dev(np.ones(n, np.float32)), p, seed=2024,
                                return_mask=True)[1])
        q = math.ceil(p * 2 ** 32) / 2 ** 32
        assert abs((n - int(m.sum())) - n * q) <= 6 * math.sqrt(n * q * (1 - q)) + 1
        np.testing.assert_array_equal(m[:1 << 20], R.dropout(np.ones(1 << 20, np.float32), p,
                                                           seed=2024, return_mask=True)[1])


@needs_device
def test_device_torch_kind_and_stream(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    x = rng.standard_normal((301, 517)).astype(np.float32)
    y_cpu, keep = R.dropout(x, 0.25, seed=7, return_mask=True)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        tx = torch.from_numpy(x).cuda()
        y, m = R.dropout(tx, 0.25, seed=7, return_mask=True)
        assert isinstance(y, torch.Tensor) and y.is_cuda and m.dtype == torch.bool
        s.synchronize()
        assert_bits(y.cpu().numpy(), y_cpu)
        assert_bits(m.cpu().numpy(), keep)
        dx = R.dropout_backward(tx.t(), m.t(), 0.25)
        s.synchronize()
        assert_bits(dx.cpu().numpy(), y_cpu.T.copy())
