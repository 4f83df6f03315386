# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Elementwise ops: activations, derivatives, fused backward, broadcasting arithmetic.

One engine serves them all: operands are broadcast to the output shape (stride 0 where
broadcast), axes are ordered by the output's strides and merged wherever every operand steps
uniformly across them, and the result is walked as rows of the innermost axis, each row handed
to a vectorised C kernel (include/fastdl/elementwise.h). Rows long enough are cut into fixed
segments; work items are spread over OpenMP threads above PARALLEL_MIN_ELEMENTS. Every output
element depends only on its own inputs, so results never depend on the thread count.
"""

import math
import numbers

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange

from fastdl._ext._blas cimport DT_FLOAT32
from fastdl._ext._common cimport on_device, gpu_call
from fastdl._ext._common cimport (as_float_array, common_typenum, as_typenum, check_out,
                                  may_overlap, dtype_code, current_threads, shape_of)

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    object PyArray_NewLikeArray(cnp.ndarray prototype, cnp.NPY_ORDER order,
                                cnp.PyArray_Descr *descr, int subok)

cdef extern from "fastdl/elementwise.h" nogil:
    ctypedef void (*fdl_unary_f32)(Py_ssize_t, const float *, Py_ssize_t, float *, Py_ssize_t,
                                   float)
    ctypedef void (*fdl_unary_f64)(Py_ssize_t, const double *, Py_ssize_t, double *,
                                   Py_ssize_t, double)
    ctypedef void (*fdl_binary_f32)(Py_ssize_t, const float *, Py_ssize_t, const float *,
                                    Py_ssize_t, float *, Py_ssize_t, float)
    ctypedef void (*fdl_binary_f64)(Py_ssize_t, const double *, Py_ssize_t, const double *,
                                    Py_ssize_t, double *, Py_ssize_t, double)
    const fdl_unary_f32 fdl_unary_table_f32[]
    const fdl_unary_f64 fdl_unary_table_f64[]
    const fdl_binary_f32 fdl_binary_table_f32[]
    const fdl_binary_f64 fdl_binary_table_f64[]
    enum:
        FDL_RELU, FDL_LEAKY_RELU, FDL_SIGMOID, FDL_TANH, FDL_GELU, FDL_GELU_TANH, FDL_SILU
        FDL_RELU_GRAD, FDL_LEAKY_RELU_GRAD, FDL_SIGMOID_GRAD, FDL_TANH_GRAD, FDL_GELU_GRAD
        FDL_GELU_TANH_GRAD, FDL_SILU_GRAD
        FDL_ADD, FDL_SUBTRACT, FDL_MULTIPLY, FDL_DIVIDE, FDL_MAXIMUM
        FDL_RELU_BW, FDL_LEAKY_RELU_BW, FDL_SIGMOID_BW, FDL_TANH_BW, FDL_GELU_BW
        FDL_GELU_TANH_BW, FDL_SILU_BW

# Below this many elements a call runs on one thread (DESIGN.md: thread wake-up costs more).
cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 32768
# Rows longer than this are cut into segments of this many elements: the work items.
cdef Py_ssize_t SEGMENT = 16384
# Below this many elements the GIL is kept: releasing it costs more than the work.
cdef Py_ssize_t NOGIL_MIN_ELEMENTS = 4096


# --------------------------------------------------------------------------------------
# The engine

cdef struct Plan:
    int nd                       # axes after merging (>= 1)
    int nops                     # 2 (y, x) or 3 (y, a, b)
    Py_ssize_t shape[64]
    Py_ssize_t strides[3][64]    # in elements; operand 0 is the output
    char *base[3]
    Py_ssize_t rows, inner, segments, items


cdef bint _plan(Plan *p, tuple shape, cnp.ndarray Y, cnp.ndarray A, cnp.ndarray B,
               Py_ssize_t itemsize) except -1:
    """Fill p for the output shape: Y the output, A (and B, unless None) inputs broadcast to
    it. Returns False when the output is empty (nothing to do)."""
    cdef int nd = len(shape), nops = 2 if B is None else 3, d, e, o, k
    cdef cnp.ndarray arr
    cdef Py_ssize_t st[3][64]
    cdef Py_ssize_t sh[64]
    cdef int order[64]
    cdef int n = 0, off
    p.nops = nops
    for o in range(nops):
        arr = Y if o == 0 else (A if o == 1 else B)
        p.base[o] = <char *>cnp.PyArray_DATA(arr)
        off = nd - cnp.PyArray_NDIM(arr)
        for d in range(nd):
            e = d - off
            if e < 0 or cnp.PyArray_DIMS(arr)[e] == 1:
                st[o][d] = 0
            else:
                st[o][d] = cnp.PyArray_STRIDES(arr)[e] // itemsize
    # Drop unit axes; an empty axis means nothing to compute.
    for d in range(nd):
        if shape[d] == 0:
            return False
        if shape[d] != 1:
            order[n] = d
            n += 1
    # Walk the output in memory order: axes sorted by decreasing |output stride| (stable).
    for d in range(1, n):
        k = order[d]
        e = d - 1
        while e >= 0 and abs(st[0][order[e]]) < abs(st[0][k]):
            order[e + 1] = order[e]
            e -= 1
        order[e + 1] = k
    # Merge neighbours that every operand steps across uniformly.
    p.nd = 0
    for d in range(n):
        k = order[d]
        if p.nd > 0:
            e = p.nd - 1
            for o in range(nops):
                if p.strides[o][e] != st[o][k] * shape[k]:
                    break
            else:
                p.shape[e] *= shape[k]
                for o in range(nops):
                    p.strides[o][e] = st[o][k]
                continue
        p.shape[p.nd] = shape[k]
        for o in range(nops):
            p.strides[o][p.nd] = st[o][k]
        p.nd += 1
    if p.nd == 0:  # a single element
        p.nd = 1
        p.shape[0] = 1
        for o in range(nops):
            p.strides[o][0] = 0
    p.inner = p.shape[p.nd - 1]
    p.rows = 1
    for d in range(p.nd - 1):
        p.rows *= p.shape[d]
    p.segments = (p.inner + SEGMENT - 1) // SEGMENT
    p.items = p.rows * p.segments
    return True


cdef void _run_item(const Plan *p, Py_ssize_t item, int dt, int op, bint binary,
                    double param) noexcept nogil:
    cdef Py_ssize_t row = item // p.segments
    cdef Py_ssize_t seg = item - row * p.segments
    cdef Py_ssize_t start = seg * SEGMENT
    cdef Py_ssize_t count = min(SEGMENT, p.inner - start)
    cdef Py_ssize_t offs[3]
    cdef Py_ssize_t rem = row, idx
    cdef int d, o
    cdef int last = p.nd - 1
    for o in range(p.nops):
        offs[o] = start * p.strides[o][last]
    for d in range(last - 1, -1, -1):
        idx = rem % p.shape[d]
        rem //= p.shape[d]
        for o in range(p.nops):
            offs[o] += idx * p.strides[o][d]
    if dt == DT_FLOAT32:
        if binary:
            fdl_binary_table_f32[op](count, <const float *>p.base[1] + offs[1], p.strides[1][last],
                                     <const float *>p.base[2] + offs[2], p.strides[2][last],
                                     <float *>p.base[0] + offs[0], p.strides[0][last],
                                     <float>param)
        else:
            fdl_unary_table_f32[op](count, <const float *>p.base[1] + offs[1], p.strides[1][last],
                                    <float *>p.base[0] + offs[0], p.strides[0][last],
                                    <float>param)
    else:
        if binary:
            fdl_binary_table_f64[op](count, <const double *>p.base[1] + offs[1],
                                     p.strides[1][last], <const double *>p.base[2] + offs[2],
                                     p.strides[2][last], <double *>p.base[0] + offs[0],
                                     p.strides[0][last], param)
        else:
            fdl_unary_table_f64[op](count, <const double *>p.base[1] + offs[1],
                                    p.strides[1][last], <double *>p.base[0] + offs[0],
                                    p.strides[0][last], param)


cdef void _execute(const Plan *p, int dt, int op, bint binary, double param,
                   int nthreads) noexcept nogil:
    cdef Py_ssize_t item
    if nthreads <= 1 or p.items == 1 or p.rows * p.inner < PARALLEL_MIN_ELEMENTS:
        for item in range(p.items):
            _run_item(p, item, dt, op, binary, param)
    else:
        for item in prange(p.items, schedule='static', num_threads=nthreads):
            _run_item(p, item, dt, op, binary, param)


cdef inline bint _kernel_ready(cnp.ndarray a) noexcept:
    # Kernels index whole elements: aligned data and strides that are multiples of itemsize.
    cdef int d
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(a)
    if not cnp.PyArray_ISALIGNED(a):
        return False
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_STRIDES(a)[d] % isz != 0:
            return False
    return True


cdef inline cnp.ndarray _ready(cnp.ndarray a):
    return a if _kernel_ready(a) else np.array(a, order="C", copy=True)


cdef inline bint _same_view(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef int d
    if cnp.PyArray_DATA(a) != cnp.PyArray_DATA(b) or cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(b):
        return False
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIMS(a)[d] != cnp.PyArray_DIMS(b)[d]:
            return False
        if cnp.PyArray_DIMS(a)[d] > 1 and cnp.PyArray_STRIDES(a)[d] != cnp.PyArray_STRIDES(b)[d]:
            return False
    return True


cdef bint _full_shape(cnp.ndarray a, tuple shape):
    cdef int d
    if cnp.PyArray_NDIM(a) != len(shape):
        return False
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIMS(a)[d] != <Py_ssize_t>shape[d]:
            return False
    return True


cdef cnp.ndarray _result_like(cnp.ndarray like, tuple shape, int typenum):
    """A fresh output: in `like`'s memory order when it has the output's shape (so C and F
    inputs both stream), else C order."""
    if _full_shape(like, shape) and cnp.PyArray_TYPE(like) == typenum:
        return <cnp.ndarray>PyArray_NewLikeArray(like, cnp.NPY_KEEPORDER, NULL, 0)
    return np.empty(shape, dtype=np.float32 if typenum == cnp.NPY_FLOAT else np.float64)


cdef object _apply(int op, cnp.ndarray Y, cnp.ndarray A, cnp.ndarray B, tuple shape,
                   double param):
    cdef Plan plan
    cdef int dt = dtype_code(Y)
    cdef int nthreads = current_threads()
    cdef bint binary = B is not None
    if not _plan(&plan, shape, Y, A, B, cnp.PyArray_ITEMSIZE(Y)):
        return
    if plan.rows * plan.inner < NOGIL_MIN_ELEMENTS:
        _execute(&plan, dt, op, binary, param, 1)
    else:
        with nogil:
            _execute(&plan, dt, op, binary, param, nthreads)


cdef object _finish(cnp.ndarray Y, cnp.ndarray target, bint scalar):
    if target is not None:
        if Y is not target:
            np.copyto(target, Y)
        return target
    if scalar:
        return Y[()]
    return Y


cdef object _unary(int op, object x, object out, double param, str func):
    cdef cnp.ndarray X = as_float_array(x, func, "x")
    cdef int typenum = cnp.PyArray_TYPE(X)
    cdef tuple shape = shape_of(X)
    cdef cnp.ndarray Y, target = None
    if out is not None:
        target = check_out(out, shape, typenum, func)
    X = _ready(X)
    if target is not None and _kernel_ready(target) and (
            not may_overlap(target, X) or _same_view(target, X)):
        Y = target
    else:
        Y = _result_like(X, shape, typenum)
    _apply(op, Y, X, None, shape, param)
    return _finish(Y, target, cnp.PyArray_NDIM(X) == 0)


cdef bint _same_shape(cnp.ndarray A, cnp.ndarray B) noexcept:
    cdef int d
    if cnp.PyArray_NDIM(A) != cnp.PyArray_NDIM(B):
        return False
    for d in range(cnp.PyArray_NDIM(A)):
        if cnp.PyArray_DIMS(A)[d] != cnp.PyArray_DIMS(B)[d]:
            return False
    return True


cdef tuple _broadcast_shape(cnp.ndarray A, cnp.ndarray B, str func, str na, str nb):
    cdef int nda = cnp.PyArray_NDIM(A), ndb = cnp.PyArray_NDIM(B)
    cdef int nd = max(nda, ndb), d
    cdef Py_ssize_t da, db
    if _same_shape(A, B):
        return shape_of(A)
    dims = []
    for d in range(nd):
        da = A.shape[d - (nd - nda)] if d >= nd - nda else 1
        db = B.shape[d - (nd - ndb)] if d >= nd - ndb else 1
        if da != db and da != 1 and db != 1:
            raise ValueError(f"fastdl.{func}: shapes {shape_of(A)} ({na}) and {shape_of(B)} "
                             f"({nb}) do not broadcast")
        dims.append(da if db == 1 else db)
    return tuple(dims)


cdef inline bint _is_python_scalar(object v):
    return type(v) is float or type(v) is int or type(v) is bool


cdef object _binary(int op, object a, object b, object out, double param, str func,
                    str na, str nb, bint broadcast):
    cdef cnp.ndarray A = as_float_array(a, func, na)
    cdef cnp.ndarray B = as_float_array(b, func, nb)
    cdef int typenum
    # NumPy 2 (NEP 50): a Python int or float is "weak" and takes the array's dtype.
    if _is_python_scalar(b) and not _is_python_scalar(a):
        typenum = cnp.PyArray_TYPE(A)
    elif _is_python_scalar(a) and not _is_python_scalar(b):
        typenum = cnp.PyArray_TYPE(B)
    else:
        typenum = common_typenum(A, B)
    A = as_typenum(A, typenum)
    B = as_typenum(B, typenum)
    cdef tuple shape
    if broadcast:
        shape = _broadcast_shape(A, B, func, na, nb)
    else:
        shape = shape_of(A)
        if not _same_shape(A, B):
            raise ValueError(f"fastdl.{func}: {na} has shape {shape_of(A)} but {nb} has shape "
                             f"{shape_of(B)}; they must match")
    cdef cnp.ndarray Y, target = None
    if out is not None:
        target = check_out(out, shape, typenum, func)
    A = _ready(A)
    B = _ready(B)
    if target is not None and _kernel_ready(target) \
            and (not may_overlap(target, A) or _same_view(target, A)) \
            and (not may_overlap(target, B) or _same_view(target, B)):
        Y = target
    else:
        Y = _result_like(A if _full_shape(A, shape) else B, shape, typenum)
    _apply(op, Y, A, B, shape, param)
    return _finish(Y, target, len(shape) == 0)


cdef double _alpha(object alpha, str func) except? -1.0:
    cdef double value
    if not isinstance(alpha, numbers.Real):
        raise TypeError(f"fastdl.{func}: alpha must be a real number, got "
                        f"{type(alpha).__name__}")
    value = float(alpha)
    if math.isnan(value):
        raise ValueError(f"fastdl.{func}: alpha must not be NaN")
    return value


cdef int _gelu_op(object approximate, int exact, int tanh_form, str func) except -1:
    if approximate == "none":
        return exact
    if approximate == "tanh":
        return tanh_form
    raise ValueError(f"fastdl.{func}: approximate must be 'none' or 'tanh', got {approximate!r}")


# --------------------------------------------------------------------------------------
# Activations

def relu(x, *, out=None):
    """ReLU, ``max(x, 0)``, elementwise (NaN propagates, as ``np.maximum(x, 0)``)."""
    if on_device(x):
        return gpu_call("relu", (), {"x": x, "out": out})
    return _unary(FDL_RELU, x, out, 0.0, "relu")


def leaky_relu(x, alpha=0.01, *, out=None):
    """Leaky ReLU, ``x if x > 0 else alpha * x`` (= the cheat sheet's ``max(alpha x, x)`` for
    0 <= alpha <= 1, and PyTorch's definition for any alpha). NaN alpha raises ValueError."""
    if on_device(x):
        return gpu_call("leaky_relu", (), {"x": x, "alpha": alpha, "out": out})
    return _unary(FDL_LEAKY_RELU, x, out, _alpha(alpha, "leaky_relu"), "leaky_relu")


def sigmoid(x, *, out=None):
    """Logistic sigmoid ``1 / (1 + exp(-x))``, computed without overflow for any finite x."""
    if on_device(x):
        return gpu_call("sigmoid", (), {"x": x, "out": out})
    return _unary(FDL_SIGMOID, x, out, 0.0, "sigmoid")


def tanh(x, *, out=None):
    """Hyperbolic tangent, elementwise."""
    if on_device(x):
        return gpu_call("tanh", (), {"x": x, "out": out})
    return _unary(FDL_TANH, x, out, 0.0, "tanh")


def gelu(x, approximate="none", *, out=None):
    """GELU: ``x * Phi(x)`` with ``approximate='none'`` (erf form) or the tanh approximation
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``; +inf gives +inf and -inf gives 0."""
    if on_device(x):
        return gpu_call("gelu", (), {"x": x, "approximate": approximate, "out": out})
    return _unary(_gelu_op(approximate, FDL_GELU, FDL_GELU_TANH, "gelu"), x, out, 0.0, "gelu")


def silu(x, *, out=None):
    """SiLU (swish), ``x * sigmoid(x)``; +inf gives +inf and -inf gives 0."""
    if on_device(x):
        return gpu_call("silu", (), {"x": x, "out": out})
    return _unary(FDL_SILU, x, out, 0.0, "silu")


# --------------------------------------------------------------------------------------
# Derivatives f'(x)

def relu_grad(x, *, out=None):
    """ReLU derivative (cheat sheet): 1 where x > 0, else 0."""
    if on_device(x):
        return gpu_call("relu_grad", (), {"x": x, "out": out})
    return _unary(FDL_RELU_GRAD, x, out, 0.0, "relu_grad")


def leaky_relu_grad(x, alpha=0.01, *, out=None):
    """Leaky ReLU derivative (cheat sheet): 1 where x > 0, else alpha."""
    if on_device(x):
        return gpu_call("leaky_relu_grad", (), {"x": x, "alpha": alpha, "out": out})
    return _unary(FDL_LEAKY_RELU_GRAD, x, out, _alpha(alpha, "leaky_relu_grad"),
                  "leaky_relu_grad")


def sigmoid_grad(x, *, out=None):
    """Sigmoid derivative (cheat sheet): ``f(x) (1 - f(x))``, from the input x."""
    if on_device(x):
        return gpu_call("sigmoid_grad", (), {"x": x, "out": out})
    return _unary(FDL_SIGMOID_GRAD, x, out, 0.0, "sigmoid_grad")


def tanh_grad(x, *, out=None):
    """Tanh derivative (cheat sheet): ``1 - tanh(x)^2``, from the input x."""
    if on_device(x):
        return gpu_call("tanh_grad", (), {"x": x, "out": out})
    return _unary(FDL_TANH_GRAD, x, out, 0.0, "tanh_grad")


def gelu_grad(x, approximate="none", *, out=None):
    """GELU derivative ``Phi(x) + x phi(x)`` (or of the tanh form); 1 at +inf, 0 at -inf."""
    if on_device(x):
        return gpu_call("gelu_grad", (), {"x": x, "approximate": approximate, "out": out})
    return _unary(_gelu_op(approximate, FDL_GELU_GRAD, FDL_GELU_TANH_GRAD, "gelu_grad"), x,
                  out, 0.0, "gelu_grad")


def silu_grad(x, *, out=None):
    """SiLU derivative ``s (1 + x (1 - s))`` with s = sigmoid(x); 1 at +inf, 0 at -inf."""
    if on_device(x):
        return gpu_call("silu_grad", (), {"x": x, "out": out})
    return _unary(FDL_SILU_GRAD, x, out, 0.0, "silu_grad")


# --------------------------------------------------------------------------------------
# Fused chain rule: dx = dy * f'(...) in one pass (dy and its partner have the same shape)

def relu_backward(dy, x, *, out=None):
    """``dy * relu_grad(x)`` in one pass."""
    if on_device(dy):
        return gpu_call("relu_backward", (), {"dy": dy, "x": x, "out": out})
    return _binary(FDL_RELU_BW, dy, x, out, 0.0, "relu_backward", "dy", "x", False)


def leaky_relu_backward(dy, x, alpha=0.01, *, out=None):
    """``dy * leaky_relu_grad(x, alpha)`` in one pass."""
    if on_device(dy):
        return gpu_call("leaky_relu_backward", (), {"dy": dy, "x": x, "alpha": alpha, "out": out})
    return _binary(FDL_LEAKY_RELU_BW, dy, x, out, _alpha(alpha, "leaky_relu_backward"),
                   "leaky_relu_backward", "dy", "x", False)


def sigmoid_backward(dy, y, *, out=None):
    """``dy * y * (1 - y)`` where y is the sigmoid output, in one pass."""
    if on_device(dy):
        return gpu_call("sigmoid_backward", (), {"dy": dy, "y": y, "out": out})
    return _binary(FDL_SIGMOID_BW, dy, y, out, 0.0, "sigmoid_backward", "dy", "y", False)


def tanh_backward(dy, y, *, out=None):
    """``dy * (1 - y^2)`` where y is the tanh output, in one pass."""
    if on_device(dy):
        return gpu_call("tanh_backward", (), {"dy": dy, "y": y, "out": out})
    return _binary(FDL_TANH_BW, dy, y, out, 0.0, "tanh_backward", "dy", "y", False)


def gelu_backward(dy, x, approximate="none", *, out=None):
    """``dy * gelu_grad(x, approximate)`` in one pass."""
    if on_device(dy):
        return gpu_call("gelu_backward", (), {"dy": dy, "x": x, "approximate": approximate, "out": out})
    return _binary(_gelu_op(approximate, FDL_GELU_BW, FDL_GELU_TANH_BW, "gelu_backward"),
                   dy, x, out, 0.0, "gelu_backward", "dy", "x", False)


def silu_backward(dy, x, *, out=None):
    """``dy * silu_grad(x)`` in one pass."""
    if on_device(dy):
        return gpu_call("silu_backward", (), {"dy": dy, "x": x, "out": out})
    return _binary(FDL_SILU_BW, dy, x, out, 0.0, "silu_backward", "dy", "x", False)


# --------------------------------------------------------------------------------------
# Broadcasting arithmetic (NumPy semantics)

def add(a, b, *, out=None):
    """``a + b`` with NumPy broadcasting; multi-threaded; ``out`` may be ``a`` or ``b``."""
    if on_device(a):
        return gpu_call("add", (), {"a": a, "b": b, "out": out})
    return _binary(FDL_ADD, a, b, out, 0.0, "add", "a", "b", True)


def subtract(a, b, *, out=None):
    """``a - b`` with NumPy broadcasting."""
    if on_device(a):
        return gpu_call("subtract", (), {"a": a, "b": b, "out": out})
    return _binary(FDL_SUBTRACT, a, b, out, 0.0, "subtract", "a", "b", True)


def multiply(a, b, *, out=None):
    """``a * b`` with NumPy broadcasting."""
    if on_device(a):
        return gpu_call("multiply", (), {"a": a, "b": b, "out": out})
    return _binary(FDL_MULTIPLY, a, b, out, 0.0, "multiply", "a", "b", True)


def divide(a, b, *, out=None):
    """``a / b`` with NumPy broadcasting (IEEE: x/0 is +-inf, 0/0 is NaN, no warning)."""
    if on_device(a):
        return gpu_call("divide", (), {"a": a, "b": b, "out": out})
    return _binary(FDL_DIVIDE, a, b, out, 0.0, "divide", "a", "b", True)


def maximum(a, b, *, out=None):
    """Elementwise maximum with NumPy broadcasting; NaN in either operand gives NaN."""
    if on_device(a):
        return gpu_call("maximum", (), {"a": a, "b": b, "out": out})
    return _binary(FDL_MAXIMUM, a, b, out, 0.0, "maximum", "a", "b", True)
