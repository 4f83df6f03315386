"""asv benchmarks: activations, their fused backward and the broadcasting arithmetic, NumPy vs
fastdl.

Each class is parametrised by ``impl`` ('numpy' or 'fastdl'), ``dtype`` and a size. The NumPy
side is the cheat-sheet formula, written the way a NumPy user writes it:

* relu ``np.maximum(x, 0)``, leaky_relu ``np.maximum(alpha * x, x)``, sigmoid
  ``1 / (1 + np.exp(-x))``, tanh ``np.tanh(x)``, gelu (tanh form)
  ``0.5 * x * (1 + np.tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))``, silu ``x / (1 + np.exp(-x))``;
  gelu (exact) has no NumPy formula: ``scipy.special.erf`` stands in;
* backward: relu ``dy * (x > 0)``, leaky_relu ``dy * np.where(x > 0, 1, alpha)`` (with ``1`` and
  ``alpha`` of the array's dtype, else NumPy computes in float64), sigmoid ``dy * y * (1 - y)``
  and tanh ``dy * (1 - y**2)`` from the forward output y, gelu and silu from x;
* arithmetic: ``a + b``, ``a * b``, ``a / b``, ``np.maximum(a, b)`` with broadcasting.

Every op has an allocating form (``time_<op>``) and an ``out=`` form (``time_<op>_out``), for
NumPy the best chain of in-place ufuncs. ``CopyFloor`` times ``np.copyto`` of the same bytes: the
floor of an op that reads one array and writes one (activations, bias-row arithmetic); a backward
reads two and writes one, 1.5 copies. ``TinyCalls`` measures the per-call overhead on 16 elements.

Sizes: 16M elements for activations (PERF.md's baselines), 4096x4096 (+ a bias row of 4096,
or + another 4096x4096) and (64,256,1) * (1,1,1024) for the arithmetic. ``setup`` pins threads and
builds seeded inputs once per process (``_common.cached``: asv re-runs ``setup`` before every
sample); each ``time_*`` method makes only the call being measured.

The fastdl functions are ``fastdl.<name>`` once the package re-exports them, else taken from
``fastdl._ext._elementwise`` (the same functions).
"""

import functools
import math

import numpy as np

import fastdl

from ._common import DTYPES, IMPLS, cached, pin_threads, randn, uniform

if hasattr(fastdl, "relu"):
    fd = fastdl
else:
    from fastdl._ext import _elementwise as fd

pin_threads()

ALPHA = 0.01
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
N_ACT = 1 << 24                      # 16M elements
ACT_SIZES = ["16M"]


def _activation_inputs(dtype):
    """x ~ N(0, 1), dy ~ N(0, 1), sigmoid-like y in (0, 1), tanh-like y in (-1, 1), and an out
    buffer (touched once, so its pages exist), all of 16M elements; built once per process."""
    def build():
        out = np.empty(N_ACT, dtype)
        out.fill(0)
        return {"x": randn(N_ACT, dtype, seed=0), "dy": randn(N_ACT, dtype, seed=1),
                "y_sigmoid": uniform(N_ACT, dtype, seed=2, low=0.0, high=1.0),
                "y_tanh": uniform(N_ACT, dtype, seed=3, low=-1.0, high=1.0), "out": out,
                "one": np.dtype(dtype).type(1), "alpha": np.dtype(dtype).type(ALPHA)}
    return cached(("elementwise-activations", dtype), build)


class _Activations:
    params = (IMPLS, DTYPES, ACT_SIZES)
    param_names = ["impl", "dtype", "size"]

    def setup(self, impl, dtype, size):
        pin_threads()
        data = _activation_inputs(dtype)
        for name, value in data.items():
            setattr(self, name, value)
        self.numpy = impl == "numpy"


class Activations(_Activations):
    """relu, leaky_relu, sigmoid, tanh, gelu, silu on 16M elements, allocating and ``out=``."""

    def time_relu(self, impl, dtype, size):
        if self.numpy:
            np.maximum(self.x, 0)
        else:
            fd.relu(self.x)

    def time_relu_out(self, impl, dtype, size):
        if self.numpy:
            np.maximum(self.x, 0, out=self.out)
        else:
            fd.relu(self.x, out=self.out)

    def time_leaky_relu(self, impl, dtype, size):
        if self.numpy:
            np.maximum(ALPHA * self.x, self.x)
        else:
            fd.leaky_relu(self.x, ALPHA)

    def time_leaky_relu_out(self, impl, dtype, size):
        if self.numpy:
            np.multiply(self.x, ALPHA, out=self.out)
            np.maximum(self.out, self.x, out=self.out)
        else:
            fd.leaky_relu(self.x, ALPHA, out=self.out)

    def time_sigmoid(self, impl, dtype, size):
        if self.numpy:
            1 / (1 + np.exp(-self.x))
        else:
            fd.sigmoid(self.x)

    def time_sigmoid_out(self, impl, dtype, size):
        if self.numpy:
            out = self.out
            np.negative(self.x, out=out)
            np.exp(out, out=out)
            np.add(out, 1, out=out)
            np.reciprocal(out, out=out)
        else:
            fd.sigmoid(self.x, out=self.out)

    def time_tanh(self, impl, dtype, size):
        if self.numpy:
            np.tanh(self.x)
        else:
            fd.tanh(self.x)

    def time_tanh_out(self, impl, dtype, size):
        if self.numpy:
            np.tanh(self.x, out=self.out)
        else:
            fd.tanh(self.x, out=self.out)

    def time_gelu_tanh(self, impl, dtype, size):
        if self.numpy:
            x = self.x
            0.5 * x * (1 + np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))
        else:
            fd.gelu(self.x, "tanh")

    def time_gelu_tanh_out(self, impl, dtype, size):
        if self.numpy:
            x, out = self.x, self.out
            np.multiply(x, x, out=out)
            np.multiply(out, x, out=out)
            np.multiply(out, 0.044715, out=out)
            np.add(out, x, out=out)
            np.multiply(out, SQRT_2_OVER_PI, out=out)
            np.tanh(out, out=out)
            np.add(out, 1, out=out)
            np.multiply(out, x, out=out)
            np.multiply(out, 0.5, out=out)
        else:
            fd.gelu(self.x, "tanh", out=self.out)

    def time_gelu(self, impl, dtype, size):
        if self.numpy:
            from scipy.special import erf
            x = self.x
            0.5 * x * (1 + erf(x * (1 / math.sqrt(2))))
        else:
            fd.gelu(self.x)

    def time_silu(self, impl, dtype, size):
        if self.numpy:
            self.x / (1 + np.exp(-self.x))
        else:
            fd.silu(self.x)


class ActivationBackward(_Activations):
    """The fused chain rule ``dy * f'`` on 16M elements, allocating and ``out=``."""

    def time_relu_backward(self, impl, dtype, size):
        if self.numpy:
            self.dy * (self.x > 0)
        else:
            fd.relu_backward(self.dy, self.x)

    def time_relu_backward_out(self, impl, dtype, size):
        if self.numpy:
            np.multiply(self.dy, self.x > 0, out=self.out)
        else:
            fd.relu_backward(self.dy, self.x, out=self.out)

    def time_leaky_relu_backward(self, impl, dtype, size):
        if self.numpy:
            self.dy * np.where(self.x > 0, self.one, self.alpha)
        else:
            fd.leaky_relu_backward(self.dy, self.x, ALPHA)

    def time_leaky_relu_backward_out(self, impl, dtype, size):
        if self.numpy:
            np.multiply(self.dy, np.where(self.x > 0, self.one, self.alpha), out=self.out)
        else:
            fd.leaky_relu_backward(self.dy, self.x, ALPHA, out=self.out)

    def time_sigmoid_backward(self, impl, dtype, size):
        if self.numpy:
            y = self.y_sigmoid
            self.dy * y * (1 - y)
        else:
            fd.sigmoid_backward(self.dy, self.y_sigmoid)

    def time_sigmoid_backward_out(self, impl, dtype, size):
        if self.numpy:
            y, out = self.y_sigmoid, self.out
            np.subtract(1, y, out=out)
            np.multiply(out, y, out=out)
            np.multiply(out, self.dy, out=out)
        else:
            fd.sigmoid_backward(self.dy, self.y_sigmoid, out=self.out)

    def time_tanh_backward(self, impl, dtype, size):
        if self.numpy:
            self.dy * (1 - self.y_tanh ** 2)
        else:
            fd.tanh_backward(self.dy, self.y_tanh)

    def time_tanh_backward_out(self, impl, dtype, size):
        if self.numpy:
            y, out = self.y_tanh, self.out
            np.multiply(y, y, out=out)
            np.subtract(1, out, out=out)
            np.multiply(out, self.dy, out=out)
        else:
            fd.tanh_backward(self.dy, self.y_tanh, out=self.out)

    def time_gelu_tanh_backward(self, impl, dtype, size):
        if self.numpy:
            x = self.x
            t = np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))
            self.dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI
                       * (1 + 3 * 0.044715 * x * x))
        else:
            fd.gelu_backward(self.dy, self.x, "tanh")

    def time_silu_backward(self, impl, dtype, size):
        if self.numpy:
            x = self.x
            s = 1 / (1 + np.exp(-x))
            self.dy * s * (1 + x * (1 - s))
        else:
            fd.silu_backward(self.dy, self.x)


class CopyFloor:
    """``np.copyto`` of 16M elements: the time to read one array and write one, the floor of
    the activations and of the bias-row arithmetic (a backward moves 1.5 times these bytes).
    No ``impl``: the floor is the same for every implementation."""

    params = (DTYPES, ACT_SIZES)
    param_names = ["dtype", "size"]

    def setup(self, dtype, size):
        pin_threads()
        data = _activation_inputs(dtype)
        self.x, self.out = data["x"], data["out"]

    def time_copy(self, dtype, size):
        np.copyto(self.out, self.x)


# --------------------------------------------------------------------------------------
# Broadcasting arithmetic

BINARY_SHAPES = {
    "4096x4096+4096": ((4096, 4096), (4096,)),              # a bias row
    "4096x4096+4096x4096": ((4096, 4096), (4096, 4096)),    # same shape
    "(64,256,1)*(1,1,1024)": ((64, 256, 1), (1, 1, 1024)),  # the cheat sheet's example, bigger
}


def _binary_inputs(shape, dtype):
    def build():
        sa, sb = BINARY_SHAPES[shape]
        a = randn(sa, dtype, seed=0)
        b = uniform(sb, dtype, seed=1, low=0.5, high=1.5)   # a divisor away from 0
        out = np.empty(np.broadcast_shapes(sa, sb), dtype)
        out.fill(0)
        return a, b, out
    return cached(("elementwise-binary", shape, dtype), build)


class Binary:
    """add, multiply, divide, maximum with broadcasting, allocating and ``out=``."""

    params = (IMPLS, DTYPES, list(BINARY_SHAPES))
    param_names = ["impl", "dtype", "shape"]

    def setup(self, impl, dtype, shape):
        pin_threads()
        self.a, self.b, self.out = _binary_inputs(shape, dtype)
        self.numpy = impl == "numpy"

    def time_add(self, impl, dtype, shape):
        if self.numpy:
            self.a + self.b
        else:
            fd.add(self.a, self.b)

    def time_add_out(self, impl, dtype, shape):
        if self.numpy:
            np.add(self.a, self.b, out=self.out)
        else:
            fd.add(self.a, self.b, out=self.out)

    def time_multiply(self, impl, dtype, shape):
        if self.numpy:
            self.a * self.b
        else:
            fd.multiply(self.a, self.b)

    def time_multiply_out(self, impl, dtype, shape):
        if self.numpy:
            np.multiply(self.a, self.b, out=self.out)
        else:
            fd.multiply(self.a, self.b, out=self.out)

    def time_divide(self, impl, dtype, shape):
        if self.numpy:
            self.a / self.b
        else:
            fd.divide(self.a, self.b)

    def time_maximum(self, impl, dtype, shape):
        if self.numpy:
            np.maximum(self.a, self.b)
        else:
            fd.maximum(self.a, self.b)


# --------------------------------------------------------------------------------------
# Per-call overhead on tiny inputs

def _tiny_calls():
    """One zero-argument callable per (op, impl, dtype); both sides wrapped the same way."""
    calls = {}
    for dtype in DTYPES:
        x, dy = randn(16, dtype, seed=0), randn(16, dtype, seed=1)
        a, b = randn((4, 4), dtype, seed=2), randn(4, dtype, seed=3)
        p = functools.partial
        calls["relu", "numpy", dtype] = p(lambda x: np.maximum(x, 0), x)
        calls["relu", "fastdl", dtype] = p(lambda x: fd.relu(x), x)
        calls["sigmoid", "numpy", dtype] = p(lambda x: 1 / (1 + np.exp(-x)), x)
        calls["sigmoid", "fastdl", dtype] = p(lambda x: fd.sigmoid(x), x)
        calls["add", "numpy", dtype] = p(lambda a, b: a + b, a, b)
        calls["add", "fastdl", dtype] = p(lambda a, b: fd.add(a, b), a, b)
        calls["relu_backward", "numpy", dtype] = p(lambda dy, x: dy * (x > 0), dy, x)
        calls["relu_backward", "fastdl", dtype] = p(lambda dy, x: fd.relu_backward(dy, x), dy, x)
    return calls


_TINY = _tiny_calls()


class TinyCalls:
    """Per-call overhead on 16 elements: relu, sigmoid, add (4x4 + 4), relu_backward.

    No ``setup`` on purpose (see ``bench_linalg.TinyCalls``): asv then times the calls in
    batches. Each figure includes the same ~0.1-0.2 µs of harness on both sides.
    """

    params = (IMPLS, DTYPES)
    param_names = ["impl", "dtype"]

    def time_relu_16(self, impl, dtype):
        _TINY["relu", impl, dtype]()

    def time_sigmoid_16(self, impl, dtype):
        _TINY["sigmoid", impl, dtype]()

    def time_add_4x4_plus_4(self, impl, dtype):
        _TINY["add", impl, dtype]()

    def time_relu_backward_16(self, impl, dtype):
        _TINY["relu_backward", impl, dtype]()
