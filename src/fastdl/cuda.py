"""GPU support (optional build). This build of fastdl has no CUDA kernels compiled in."""


def is_available():
    """True when fastdl was built with its CUDA extension and a CUDA device is usable."""
    try:
        from fastdl._ext import _cuda  # noqa: F401  (only present in a FASTDL_CUDA=1 build)
    except ImportError:
        return False
    return bool(_cuda.device_count())
