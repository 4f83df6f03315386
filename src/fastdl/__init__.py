"""fastdl: the math of deep learning for NumPy users, at the speed of the machine.

Functions take and return NumPy arrays; float32 and float64 are computed natively. See
``fastdl.show_config()`` for how this build runs (threads, BLAS, SIMD, CUDA).
"""

from fastdl._version import __version__
from fastdl._config import get_num_threads, set_num_threads, threads, show_config
from fastdl._ext._linalg import matmul, linear, linear_backward
from fastdl._einsum import einsum
from fastdl import cuda

__all__ = [
    "__version__",
    "get_num_threads", "set_num_threads", "threads", "show_config",
    "matmul", "einsum", "linear", "linear_backward",
    "cuda",
]
