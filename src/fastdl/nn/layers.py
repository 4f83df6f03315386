"""Feed-forward layers of ``fastdl.nn`` on top of fastdl's functional kernels.

Initialisation rule: layers whose output usually feeds a ReLU-like activation (``Linear``,
``Conv2d``) get He normal weights (``randn * sqrt(2 / fan_in)``, PyTorch-like fan-in
scaling), biases zero; attention and LSTM weights are Xavier uniform (their outputs feed
softmax / sigmoid / tanh), see ``attention.py`` and ``recurrent.py``. Normalisation layers
start at gamma = 1, beta = 0, running mean 0 and running variance 1, as PyTorch.

Weights use the cheat sheet's layout: ``Linear.weight`` is ``(in_features, out_features)``
(``y = x @ W + b``), the transpose of PyTorch's; ``Conv2d.weight`` is
``(out_channels, in_channels / groups, kh, kw)`` as PyTorch.
"""

import math
import operator

import numpy as np

import fastdl
from fastdl.nn.module import Module, as_input, check_dtype, make_rng, positive_int

__all__ = ["Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "ReLU", "LeakyReLU",
           "Sigmoid", "Tanh", "GELU", "Dropout", "MaxPool2d", "AvgPool2d", "Flatten",
           "Sequential"]


def _float(x):
    """Inputs as NumPy arrays (fastdl's kernels validate dtypes and name the argument)."""
    return x if isinstance(x, np.ndarray) else np.asarray(x)


# --------------------------------------------------------------------------------------
# Linear and Conv2d

class Linear(Module):
    """``y = x @ weight + bias`` over the last axis; x ``(..., in_features)``.

    ``weight`` ``(in_features, out_features)`` He normal; ``bias`` ``(out_features,)`` zeros.
    """

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, seed=None,
                 rng=None):
        super().__init__()
        self.in_features = positive_int(in_features, "in_features", "Linear")
        self.out_features = positive_int(out_features, "out_features", "Linear")
        self.dtype = check_dtype(dtype, "Linear")
        gen = make_rng(seed, rng, "Linear")
        self._param("weight", fastdl.init.he_normal(self.in_features, self.out_features,
                                                    rng=gen, dtype=self.dtype))
        self.has_bias = bool(bias)
        if self.has_bias:
            self._param("bias", np.zeros(self.out_features, self.dtype))
        else:
            self.bias = None

    def forward(self, x):
        x = as_input(x, self.dtype, 'Linear')
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"fastdl.nn.Linear: x has shape {x.shape}, expected (..., "
                             f"{self.in_features}) (in_features)")
        self._cache = x
        return fastdl.linear(x, self.weight, self.bias)

    def backward(self, dy):
        x = self._cached()
        dx, dw, db = fastdl.linear_backward(dy, x, self.weight, need_bias=self.has_bias)
        self._accumulate(self._grads["weight"], dw)
        if self.has_bias:
            self._accumulate(self._grads["bias"], db)
        return dx

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.has_bias}"


def _pair(v, name, cls, allow_zero=False):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"fastdl.nn.{cls}: {name} must be an int or a pair, got {v!r}")
        a, b = v
    else:
        a = b = v
    try:
        a, b = operator.index(a), operator.index(b)
    except TypeError:
        raise TypeError(f"fastdl.nn.{cls}: {name} must be an int or a pair of ints, got "
                        f"{v!r}") from None
    if min(a, b) < (0 if allow_zero else 1):
        raise ValueError(f"fastdl.nn.{cls}: {name} must be "
                         f"{'non-negative' if allow_zero else 'positive'}, got {v!r}")
    return (a, b)


class Conv2d(Module):
    """2-D convolution (cross-correlation, as PyTorch) over x ``(N, C, H, W)``.

    ``weight`` ``(out_channels, in_channels / groups, kh, kw)`` He normal (fan_in =
    C/groups * kh * kw), ``bias`` ``(out_channels,)`` zeros. ``padding`` may be an int, a
    pair, ``'same'`` or ``'valid'`` (as ``fastdl.conv2d``).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, *, dtype=np.float32, seed=None, rng=None):
        super().__init__()
        cls = "Conv2d"
        self.in_channels = positive_int(in_channels, "in_channels", cls)
        self.out_channels = positive_int(out_channels, "out_channels", cls)
        self.groups = positive_int(groups, "groups", cls)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"fastdl.nn.Conv2d: in_channels ({self.in_channels}) and "
                             f"out_channels ({self.out_channels}) must be divisible by groups "
                             f"({self.groups})")
        self.kernel_size = _pair(kernel_size, "kernel_size", cls)
        self.stride = _pair(stride, "stride", cls)
        self.dilation = _pair(dilation, "dilation", cls)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"fastdl.nn.Conv2d: padding must be 'same', 'valid', an int "
                                 f"or a pair, got {padding!r}")
            self.padding = padding
        else:
            self.padding = _pair(padding, "padding", cls, allow_zero=True)
        self.dtype = check_dtype(dtype, cls)
        gen = make_rng(seed, rng, cls)
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self._param("weight", fastdl.init.he_normal(shape=shape, rng=gen, dtype=self.dtype))
        self.has_bias = bool(bias)
        if self.has_bias:
            self._param("bias", np.zeros(self.out_channels, self.dtype))
        else:
            self.bias = None

    def _args(self):
        return self.stride, self.padding, self.dilation, self.groups

    def forward(self, x):
        x = as_input(x, self.dtype, 'Conv2d')
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"fastdl.nn.Conv2d: x has shape {x.shape}, expected (N, "
                             f"{self.in_channels}, H, W)")
        self._cache = x
        return fastdl.conv2d(x, self.weight, self.bias, *self._args())

    # backward(dy, input_grad=False) skips dx (see Sequential.backward)
    _skips_input_grad = True

    def backward(self, dy, input_grad=True):
        x = self._cached()
        dx, dw, db = fastdl.conv2d_backward(dy, x, self.weight, *self._args(),
                                            need_bias=self.has_bias, need_input=input_grad)
        self._accumulate(self._grads["weight"], dw)
        if self.has_bias:
            self._accumulate(self._grads["bias"], db)
        return dx

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


# --------------------------------------------------------------------------------------
# normalisation

class _BatchNorm(Module):
    _ndim = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, *, dtype=np.float32):
        super().__init__()
        cls = type(self).__name__
        self.num_features = positive_int(num_features, "num_features", cls)
        eps, momentum = float(eps), float(momentum)
        if not eps >= 0:
            raise ValueError(f"fastdl.nn.{cls}: eps must be non-negative, got {eps}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"fastdl.nn.{cls}: momentum must be in [0, 1], got {momentum}")
        self.eps, self.momentum = eps, momentum
        self.dtype = check_dtype(dtype, cls)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        C = self.num_features
        if self.affine:
            self._param("weight", np.ones(C, self.dtype))
            self._param("bias", np.zeros(C, self.dtype))
        else:
            self.weight = self.bias = None
        if self.track_running_stats:
            self._buffer("running_mean", np.zeros(C, self.dtype))
            self._buffer("running_var", np.ones(C, self.dtype))
        else:
            self.running_mean = self.running_var = None

    def _check(self, x):
        if x.ndim not in self._ndim or x.shape[1] != self.num_features:
            want = " or ".join(f"(N, {self.num_features}{', ...' * (n - 2)})" for n in self._ndim)
            raise ValueError(f"fastdl.nn.{type(self).__name__}: x has shape {x.shape}, "
                             f"expected {want}")

    def forward(self, x):
        x = as_input(x, self.dtype, type(self).__name__)
        self._check(x)
        batch_stats = self.training or not self.track_running_stats
        y, mean, inv_std = fastdl.batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var, training=batch_stats,
            momentum=self.momentum, eps=self.eps, return_stats=True)
        self._cache = (x, mean, inv_std, batch_stats)
        return y

    def backward(self, dy):
        x, mean, inv_std, batch_stats = self._cached()
        if batch_stats:
            dx, dgamma, dbeta = fastdl.batch_norm_backward(dy, x, self.weight, mean, inv_std)
        else:
            # Inference normalises with constants: y is affine in x.
            dy = np.asarray(dy)
            if dy.shape != x.shape:
                raise ValueError(f"fastdl.nn.{type(self).__name__}.backward: dy has shape "
                                 f"{dy.shape}, expected {x.shape}")
            shape = (1, -1) + (1,) * (x.ndim - 2)
            axes = (0,) + tuple(range(2, x.ndim))
            scale = inv_std if self.weight is None else self.weight * inv_std
            dx = dy * scale.reshape(shape)
            dgamma = np.sum(dy * (x - mean.reshape(shape)) * inv_std.reshape(shape), axis=axes)
            dbeta = np.sum(dy, axis=axes)
        if self.affine:
            self._accumulate(self._grads["weight"], dgamma)
            self._accumulate(self._grads["bias"], dbeta)
        return dx

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of x ``(N, C)`` over the batch (PyTorch's BatchNorm1d on 2-D input).

    Training: batch statistics, running statistics updated in place (momentum rule of
    ``fastdl.batch_norm``); ``eval()``: the running statistics.
    """
    _ndim = (2,)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of x ``(N, C, H, W)`` per channel (see BatchNorm1d)."""
    _ndim = (4,)


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` axes (gamma 1, beta 0)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, *,
                 dtype=np.float32):
        super().__init__()
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(positive_int(s, "normalized_shape", "LayerNorm")
                                      for s in normalized_shape)
        eps = float(eps)
        if not eps >= 0:
            raise ValueError(f"fastdl.nn.LayerNorm: eps must be non-negative, got {eps}")
        self.eps = eps
        self.dtype = check_dtype(dtype, "LayerNorm")
        self.affine = bool(elementwise_affine)
        if self.affine:
            self._param("weight", np.ones(self.normalized_shape, self.dtype))
            self._param("bias", np.zeros(self.normalized_shape, self.dtype))
        else:
            self.weight = self.bias = None

    def forward(self, x):
        x = as_input(x, self.dtype, 'LayerNorm')
        n = len(self.normalized_shape)
        if x.ndim < n or x.shape[x.ndim - n:] != self.normalized_shape:
            raise ValueError(f"fastdl.nn.LayerNorm: x has shape {x.shape}, expected (..., "
                             f"{', '.join(map(str, self.normalized_shape))})")
        y, mean, inv_std = fastdl.layer_norm(x, self.normalized_shape, self.weight, self.bias,
                                             self.eps, return_stats=True)
        self._cache = (x, mean, inv_std)
        return y

    def backward(self, dy):
        x, mean, inv_std = self._cached()
        dx, dgamma, dbeta = fastdl.layer_norm_backward(dy, x, self.normalized_shape,
                                                       self.weight, mean, inv_std)
        if self.affine:
            self._accumulate(self._grads["weight"], dgamma)
            self._accumulate(self._grads["bias"], dbeta)
        return dx


# --------------------------------------------------------------------------------------
# activations (no parameters)

class ReLU(Module):
    def forward(self, x):
        self._cache = _float(x)
        return fastdl.relu(self._cache)

    def backward(self, dy):
        return fastdl.relu_backward(dy, self._cached())


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        super().__init__()
        negative_slope = float(negative_slope)
        if negative_slope != negative_slope:
            raise ValueError("fastdl.nn.LeakyReLU: negative_slope is NaN")
        self.negative_slope = negative_slope

    def forward(self, x):
        self._cache = _float(x)
        return fastdl.leaky_relu(self._cache, self.negative_slope)

    def backward(self, dy):
        return fastdl.leaky_relu_backward(dy, self._cached(), self.negative_slope)


class Sigmoid(Module):
    def forward(self, x):
        self._cache = fastdl.sigmoid(_float(x))
        return self._cache

    def backward(self, dy):
        return fastdl.sigmoid_backward(dy, self._cached())


class Tanh(Module):
    def forward(self, x):
        self._cache = fastdl.tanh(_float(x))
        return self._cache

    def backward(self, dy):
        return fastdl.tanh_backward(dy, self._cached())


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"fastdl.nn.GELU: approximate must be 'none' or 'tanh', got "
                             f"{approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        self._cache = _float(x)
        return fastdl.gelu(self._cache, self.approximate)

    def backward(self, dy):
        return fastdl.gelu_backward(dy, self._cached(), self.approximate)


class Dropout(Module):
    """Inverted dropout with drop probability ``p`` in training, the identity in eval.

    Each training forward draws a fresh seed from the layer's generator (``seed``/``rng``),
    so a run is reproducible from the seed; the keep-mask is cached for the backward.
    """

    def __init__(self, p=0.5, *, seed=None, rng=None):
        super().__init__()
        p = float(p)
        if not 0 <= p < 1:
            raise ValueError(f"fastdl.nn.Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self._rng = make_rng(seed, rng, "Dropout")

    def forward(self, x):
        x = _float(x)
        if not self.training or self.p == 0:
            self._cache = (None,)
            return fastdl.dropout(x, self.p, training=False)
        seed = int(self._rng.integers(0, 2 ** 63))
        y, mask = fastdl.dropout(x, self.p, training=True, seed=seed, return_mask=True)
        self._cache = (mask,)
        return y

    def backward(self, dy):
        (mask,) = self._cached()
        if mask is None:
            return np.asarray(dy)
        return fastdl.dropout_backward(dy, mask, self.p)

    def extra_repr(self):
        return f"p={self.p}"


# --------------------------------------------------------------------------------------
# pooling and reshaping

class MaxPool2d(Module):
    """Max pooling over (H, W) of x ``(N, C, H, W)``; -inf padding; stride defaults to
    kernel_size."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size", "MaxPool2d")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride",
                                                                     "MaxPool2d")
        self.padding = _pair(padding, "padding", "MaxPool2d", allow_zero=True)

    def forward(self, x):
        x = _float(x)
        y, idx = fastdl.max_pool2d(x, self.kernel_size, self.stride, self.padding,
                                   return_indices=True)
        self._cache = (x, idx)
        return y

    def backward(self, dy):
        x, idx = self._cached()
        return fastdl.max_pool2d_backward(dy, x, idx, self.kernel_size, self.stride,
                                          self.padding)


class AvgPool2d(Module):
    """Average pooling (zero padding counted, as PyTorch's default)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size", "AvgPool2d")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride",
                                                                     "AvgPool2d")
        self.padding = _pair(padding, "padding", "AvgPool2d", allow_zero=True)

    def forward(self, x):
        x = _float(x)
        self._cache = x
        return fastdl.avg_pool2d(x, self.kernel_size, self.stride, self.padding)

    def backward(self, dy):
        return fastdl.avg_pool2d_backward(dy, self._cached(), self.kernel_size, self.stride,
                                          self.padding)


class Flatten(Module):
    """Merge axes ``start_dim..end_dim`` into one (a view where NumPy can make one)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = operator.index(start_dim)
        self.end_dim = operator.index(end_dim)

    def forward(self, x):
        x = _float(x)
        nd = x.ndim
        s = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        e = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not (0 <= s < max(nd, 1) and 0 <= e < max(nd, 1) and s <= e):
            raise ValueError(f"fastdl.nn.Flatten: start_dim={self.start_dim}, "
                             f"end_dim={self.end_dim} do not fit x of shape {x.shape}")
        self._cache = x.shape
        if nd == 0:
            return x.reshape(1)
        return x.reshape(x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:])

    def backward(self, dy):
        shape = self._cached()
        return np.asarray(dy).reshape(shape)


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse."""

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"fastdl.nn.Sequential: argument {i} is a "
                                f"{type(m).__name__}, not a fastdl.nn.Module")
            setattr(self, str(i), m)

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    _skips_input_grad = True

    def backward(self, dy, input_grad=True):
        """Backward through every module in reverse; returns the gradient of the input. With
        ``input_grad=False`` (a training loop that does not need it) returns None, and a first
        module that can (Conv2d, Sequential) skips computing it, as PyTorch does for an input
        without requires_grad: parameter gradients are unchanged."""
        mods = list(self._modules.values())
        for i in range(len(mods) - 1, -1, -1):
            if i == 0 and not input_grad and getattr(mods[0], "_skips_input_grad", False):
                mods[0].backward(dy, input_grad=False)
                return None
            dy = mods[i].backward(dy)
        return dy if input_grad else None
