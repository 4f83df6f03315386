"""``fastdl.nn``: layers with forward and backward, on fastdl's kernels.

Every layer is a ``Module`` (see ``fastdl.nn.module`` for the conventions: live parameter
and gradient arrays, gradients accumulate until ``zero_grad()``, train/eval, state_dict,
save/load as ``.npz``). Weights follow the cheat sheet's layout (``Linear.weight`` is
``(in, out)``); constructors take PyTorch's argument order plus ``dtype=`` and ``seed=``/
``rng=``.
"""

from fastdl.nn.module import Module
from fastdl.nn.layers import (
    Linear, Conv2d, BatchNorm1d, BatchNorm2d, LayerNorm, ReLU, LeakyReLU, Sigmoid, Tanh, GELU,
    Dropout, MaxPool2d, AvgPool2d, Flatten, Sequential,
)
from fastdl.nn.attention import MultiHeadAttention
from fastdl.nn.recurrent import LSTM
from fastdl.nn.losses import CrossEntropyLoss, MSELoss

__all__ = [
    "Module", "Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "ReLU",
    "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Dropout", "MaxPool2d", "AvgPool2d", "Flatten",
    "Sequential", "MultiHeadAttention", "LSTM", "CrossEntropyLoss", "MSELoss",
]
