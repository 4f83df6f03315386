"""GPU support (optional build, ``FASTDL_CUDA=1``).

The public functions of fastdl accept CUDA device arrays (anything with
``__cuda_array_interface__``: CuPy arrays, PyTorch CUDA tensors, Numba device arrays,
:class:`DeviceArray`) and return device arrays of the same kind, running on the caller's
stream. This module reports whether that is possible and moves data for users without CuPy or
torch.
"""

try:
    from fastdl._ext import _cuda
except ImportError:  # a CPU-only build
    _cuda = None

__all__ = ["is_built", "is_available", "device_count", "device_info", "to_device", "to_host",
           "DeviceArray", "info", "synchronize", "set_allow_tf32", "get_allow_tf32"]


def is_built():
    """True when this fastdl was built with its CUDA extension (FASTDL_CUDA=1)."""
    return _cuda is not None


def device_count():
    """CUDA devices usable by this build (0 when not built, or without a driver or device)."""
    return _cuda.device_count() if _cuda is not None else 0


def is_available():
    """True when fastdl was built with its CUDA extension and a CUDA device is usable."""
    return device_count() > 0


def _require_built(func):
    if _cuda is None:
        raise RuntimeError(f"fastdl.cuda.{func}: this build of fastdl has no CUDA extension "
                           f"(rebuild with FASTDL_CUDA=1 and the CUDA toolkit)")


def device_info(device=-1):
    """Name, compute capability, memory and multiprocessors of a device (default: current)."""
    _require_built("device_info")
    return _cuda.device_info(device)


def to_device(array, stream=0):
    """Copy a NumPy array to a new :class:`DeviceArray` (C-contiguous)."""
    _require_built("to_device")
    return _cuda.to_device(array, stream)


def to_host(array):
    """Copy any CUDA device array to a new NumPy array (waits for its stream)."""
    _require_built("to_host")
    return _cuda.to_host(array)


def synchronize():
    """Wait for all work queued on the current device (RuntimeError without one)."""
    _require_built("synchronize")
    _cuda.synchronize()


def set_allow_tf32(allow):
    """Let float32 GEMMs (matmul, linear, conv2d on the GPU) use TF32 tensor cores: about
    10 bits of mantissa in the products, faster on Ampere and later. Off by default, so
    float32 results match the CPU within 1e-5 relative."""
    _require_built("set_allow_tf32")
    _cuda.set_allow_tf32(bool(allow))


def get_allow_tf32():
    """Whether float32 GEMMs on the GPU may use TF32 (False unless set_allow_tf32(True))."""
    return bool(_cuda.get_allow_tf32()) if _cuda is not None else False


def info():
    """A one-line description of the GPU side, for show_config."""
    if _cuda is None:
        return "not built (pip install with FASTDL_CUDA=1 and the CUDA toolkit)"
    rt, drv = _cuda.versions()
    runtime = f"runtime {rt // 1000}.{rt % 1000 // 10}"
    n = _cuda.device_count()
    if n == 0:
        return f"built ({runtime}), no device: {_cuda.no_device_reason() or 'none found'}"
    d = _cuda.device_info()
    cc = "%d.%d" % d["compute_capability"]
    return (f"built ({runtime}, driver {drv // 1000}.{drv % 1000 // 10}), {n} device(s); "
            f"device {d['device']}: {d['name']} (sm_{cc.replace('.', '')}, "
            f"{d['multiprocessors']} SMs, {d['total_memory'] / 2**30:.1f} GiB)")


def __getattr__(name):
    if name == "DeviceArray":
        _require_built("DeviceArray")
        return _cuda.DeviceArray
    raise AttributeError(f"module 'fastdl.cuda' has no attribute {name!r}")
