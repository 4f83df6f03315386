"""Thread control and the build/runtime report (``fastdl.show_config``)."""

import contextlib
import operator
import platform
import sys

from fastdl._ext import _blas, _runtime
from fastdl._version import __version__


def get_num_threads():
    """Threads fastdl's kernels use: OpenMP's ``omp_get_max_threads()``.

    The default honours ``OMP_NUM_THREADS``; ``threadpoolctl.threadpool_limits(n,
    user_api='openmp')`` changes it too, since it drives the same OpenMP runtime.
    """
    return _runtime.get_num_threads()


def set_num_threads(n):
    """Set the number of threads fastdl's kernels use (an int >= 1).

    Applies to calls made from the calling Python thread (OpenMP's setting is per thread).
    BLAS calls made by fastdl run inside fastdl's own threads, one BLAS thread each.
    """
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"fastdl.set_num_threads: n must be an int, got "
                        f"{type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"fastdl.set_num_threads: n must be >= 1, got {n}")
    _runtime._set_num_threads(n)


@contextlib.contextmanager
def threads(n):
    """Context manager: run the block with ``n`` fastdl threads, then restore the count."""
    previous = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        _runtime._set_num_threads(previous)


def config():
    """The facts ``show_config`` prints, as a dict."""
    import numpy
    import scipy

    from fastdl import cuda

    build = _runtime.build_info()
    blas = _blas.blas_info()
    return {
        "fastdl": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "compiler": build["compiler"],
        "openmp": (f"yes (OpenMP {build['openmp_version']})" if build["openmp"]
                   else "no (built without OpenMP: kernels run serially)"),
        "openmp_library": build["openmp_library"],
        "num_threads": get_num_threads(),
        "blas_provider": (f"{blas['provider']} ({blas['int_bits']}-bit ints; available: "
                          f"{', '.join(blas['available'])}; FASTDL_BLAS selects)"),
        "blas_library": blas["library"],
        "blas_config": blas["config"],
        "blas_thread_control": blas["thread_control"] or "none found (BLAS threads itself)",
        "simd_level": build["simd_level"],
        "simd_dispatch": ("runtime (GCC target_clones: x86-64-v4 / v3 / baseline)"
                          if build["simd_dispatch"] else "none (single build)"),
        "cuda": cuda.info(),
    }


def show_config():
    """Print version, compiler, OpenMP runtime, BLAS library, SIMD level and CUDA status."""
    for key, value in config().items():
        print(f"{key + ':':22s}{value}")
