"""fastdl: the math of deep learning for NumPy users, at the speed of the machine.

Functions take and return NumPy arrays; float32 and float64 are computed natively. See
``fastdl.show_config()`` for how this build runs (threads, BLAS, SIMD, CUDA).
"""

from fastdl._version import __version__
from fastdl._config import get_num_threads, set_num_threads, threads, show_config
from fastdl._ext._linalg import matmul, linear, linear_backward
from fastdl._einsum import einsum
from fastdl._ext._elementwise import (
    relu, leaky_relu, sigmoid, tanh, gelu, silu,
    relu_grad, leaky_relu_grad, sigmoid_grad, tanh_grad, gelu_grad, silu_grad,
    relu_backward, leaky_relu_backward, sigmoid_backward, tanh_backward, gelu_backward,
    silu_backward,
    add, subtract, multiply, divide, maximum,
)
from fastdl._ext._softmax import softmax, log_softmax, softmax_backward, log_softmax_backward
from fastdl._ext._losses import (
    cross_entropy, cross_entropy_grad, mse, mse_grad, softmax_cross_entropy,
)
from fastdl._ext._reduce import sum, mean, var
from fastdl._ext._norm import batch_norm, batch_norm_backward, layer_norm, layer_norm_backward
from fastdl._ext._pool import (
    max_pool2d, max_pool2d_backward, avg_pool2d, avg_pool2d_backward, global_avg_pool2d,
    global_avg_pool2d_backward,
)
from fastdl._ext._conv import conv2d, conv2d_backward
from fastdl._ext._attention import (
    scaled_dot_product_attention, scaled_dot_product_attention_backward, split_heads,
    merge_heads,
)
from fastdl import optim
from fastdl.optim import (
    clip_grad_norm_, l1_penalty, l2_penalty, l1_penalty_grad, l2_penalty_grad,
)
from fastdl._ext._random import dropout, dropout_backward
from fastdl import init
from fastdl._ext._lstm import lstm_cell, lstm_cell_backward
from fastdl import nn
from fastdl import cuda

__all__ = [
    "__version__",
    "get_num_threads", "set_num_threads", "threads", "show_config",
    "matmul", "einsum", "linear", "linear_backward",
    "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu",
    "relu_grad", "leaky_relu_grad", "sigmoid_grad", "tanh_grad", "gelu_grad", "silu_grad",
    "relu_backward", "leaky_relu_backward", "sigmoid_backward", "tanh_backward",
    "gelu_backward", "silu_backward",
    "add", "subtract", "multiply", "divide", "maximum",
    "softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
    "cross_entropy", "cross_entropy_grad", "mse", "mse_grad", "softmax_cross_entropy",
    "sum", "mean", "var",
    "batch_norm", "batch_norm_backward", "layer_norm", "layer_norm_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "global_avg_pool2d", "global_avg_pool2d_backward",
    "conv2d", "conv2d_backward",
    "scaled_dot_product_attention", "scaled_dot_product_attention_backward", "split_heads",
    "merge_heads",
    "optim", "clip_grad_norm_", "l1_penalty", "l2_penalty", "l1_penalty_grad",
    "l2_penalty_grad",
    "dropout", "dropout_backward", "init",
    "lstm_cell", "lstm_cell_backward", "nn",
    "cuda",
]
