"""The CUDA extension's runtime, on any machine: reading __cuda_array_interface__, errors
without a device, the CPU functions' dispatch. Device tests run only where a GPU is usable."""

import importlib.util

import numpy as np
import pytest

import fastdl

BUILT = importlib.util.find_spec("fastdl._ext._cuda") is not None
needs_build = pytest.mark.skipif(not BUILT, reason="fastdl built without FASTDL_CUDA=1")
needs_gpu = pytest.mark.skipif(not fastdl.cuda.is_available(), reason="no usable CUDA device")


class FakeDevice:
    """An object that says it lives on a GPU (nothing is ever read from the pointer)."""

    def __init__(self, shape, typestr="<f4", strides=None, stream=None, ptr=0x10000, **extra):
        self.__cuda_array_interface__ = dict(shape=shape, typestr=typestr, strides=strides,
                                             data=(ptr, False), version=3, stream=stream,
                                             **extra)


def test_is_built_matches_the_build():
    assert fastdl.cuda.is_built() is BUILT
    assert isinstance(fastdl.cuda.info(), str)
    if not BUILT:
        assert fastdl.cuda.device_count() == 0
        assert fastdl.cuda.is_available() is False


def test_cpu_functions_are_untouched_by_the_dispatch():
    x = np.array([-1.0, 2.0], np.float32)
    np.testing.assert_array_equal(fastdl.relu(x), [0.0, 2.0])
    # lists and scalars still take the CPU path
    np.testing.assert_array_equal(fastdl.relu([-1.0, 3.0]), [0.0, 3.0])


@pytest.mark.skipif(BUILT, reason="only for a CPU-only build")
def test_device_array_in_a_cpu_only_build_is_a_clear_runtime_error():
    with pytest.raises(RuntimeError, match="no CUDA extension"):
        fastdl.relu(FakeDevice((3,)))


@needs_build
def test_interface_is_read_without_the_producer():
    from fastdl._ext import _cuda
    got = _cuda._parse_for_tests(FakeDevice((3, 4), strides=(4, 12), stream=2))
    assert got["shape"] == (3, 4) and got["dtype"] == np.float32
    assert got["contiguous"] is False and got["strides"] == (4, 12) and got["stream"] == 2
    got = _cuda._parse_for_tests(FakeDevice((3, 4), "<f8", strides=(32, 8)))
    assert got["contiguous"] is True and got["strides"] is None and got["stream"] == 0
    # size-1 dimensions may carry any stride
    assert _cuda._parse_for_tests(FakeDevice((1, 4), strides=(999, 4)))["contiguous"] is True
    assert _cuda._parse_for_tests(FakeDevice((0, 4), strides=(4, 4)))["contiguous"] is True


@needs_build
@pytest.mark.parametrize("bad, exc, match", [
    (FakeDevice((3,), "<c8"), TypeError, "dtype"),
    (FakeDevice((3,), stream=0), TypeError, "stream 0"),
    (FakeDevice((3,), strides=(4, 4)), TypeError, "strides"),
    (FakeDevice((3,), mask=object()), TypeError, "masked"),
    (FakeDevice((1,) * 33), ValueError, "dimensions"),
])
def test_malformed_interfaces_are_refused(bad, exc, match):
    from fastdl._ext import _cuda
    with pytest.raises(exc, match=match):
        _cuda._parse_for_tests(bad)


@needs_build
def test_missing_interface_is_a_type_error():
    from fastdl._ext import _cuda
    with pytest.raises(TypeError, match="__cuda_array_interface__"):
        _cuda._parse_for_tests(np.zeros(3))
    broken = FakeDevice((3,))
    del broken.__cuda_array_interface__["data"]
    with pytest.raises(TypeError, match="malformed"):
        _cuda._parse_for_tests(broken)


@needs_build
@pytest.mark.skipif(fastdl.cuda.is_available(), reason="a device is present")
def test_without_a_device_calls_raise_runtime_error_not_crash():
    assert fastdl.cuda.device_count() == 0
    for call in (lambda: fastdl.cuda.to_device(np.ones(3)), fastdl.cuda.synchronize,
                 fastdl.cuda.device_info):
        with pytest.raises(RuntimeError, match="no CUDA device"):
            call()
    assert "no device" in fastdl.cuda.info()


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8, np.bool_])
def test_round_trip(dtype):
    x = (np.arange(35) % 7).astype(dtype).reshape(5, 7)
    d = fastdl.cuda.to_device(x)
    assert d.shape == (5, 7) and d.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(d.get(), x)
    np.testing.assert_array_equal(fastdl.cuda.to_host(d), x)
    empty = fastdl.cuda.to_device(np.zeros((0, 3), dtype))
    assert fastdl.cuda.to_host(empty).shape == (0, 3)


class StridedView:
    """A strided window into a DeviceArray (as CuPy or torch would export a slice)."""

    def __init__(self, owner, shape, strides_bytes, offset_bytes=0):
        self.owner = owner
        cai = owner.__cuda_array_interface__
        self.__cuda_array_interface__ = dict(cai, shape=shape, strides=strides_bytes,
                                             data=(cai["data"][0] + offset_bytes, False))


@needs_gpu
def test_strided_views_are_gathered_in_logical_order():
    host = np.arange(60, dtype=np.float32).reshape(6, 10)
    d = fastdl.cuda.to_device(host)
    view = StridedView(d, (3, 4), (80, 8), offset_bytes=4)      # host[::2, 1:9:2]
    np.testing.assert_array_equal(fastdl.cuda.to_host(view), host[::2, 1:9:2])
    neg = StridedView(d, (6,), (-40,), offset_bytes=5 * 40)     # host[::-1, 0]
    np.testing.assert_array_equal(fastdl.cuda.to_host(neg), host[::-1, 0])


class RefusesInterface:
    """Like a PyTorch CUDA tensor that requires grad: the interface exists but raises."""

    @property
    def __cuda_array_interface__(self):
        raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad")


def test_an_interface_that_raises_is_still_a_device_array():
    """Such an object goes to the GPU side (never silently to NumPy); a foreign one's error
    surfaces there (a torch tensor's detached view would be read instead)."""
    with pytest.raises(RuntimeError):
        fastdl.relu(RefusesInterface())
