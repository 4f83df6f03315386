# elementwise: the GPU twins of fastdl._ext._elementwise (activations, their derivatives, the
# fused chain rule, the broadcasting arithmetic). Kernels: cuda/elementwise.cu.
#
# Each function has the CPU function's name and parameters. It validates everything (dtype,
# shapes, alpha, approximate, out=) before it asks for the device, then queues one kernel on
# the stream of its first device argument. Results are C-contiguous device arrays of the
# first device argument's kind; out= must be a C-contiguous device array of the exact shape
# and dtype, and may be an input itself (in place); an out= that overlaps an input in any
# other way is computed through a temporary, as NumPy's buffered semantics. Both array
# operands must have the same dtype (no promotion on the GPU); a Python scalar operand takes
# the array's dtype, as NumPy 2's weak scalars (NEP 50).
#
# The _host_* functions are test shims: the same Python path with NumPy arrays, and the
# kernels' own bodies compiled for the CPU (fdl_cuda_elementwise_host) in place of a launch.

import numbers

from libc.stdint cimport uint32_t

cdef extern from "elementwise.h" nogil:
    enum:
        FDL_CU_RELU, FDL_CU_LEAKY_RELU, FDL_CU_SIGMOID, FDL_CU_TANH, FDL_CU_GELU
        FDL_CU_GELU_TANH, FDL_CU_SILU
        FDL_CU_RELU_GRAD, FDL_CU_LEAKY_RELU_GRAD, FDL_CU_SIGMOID_GRAD, FDL_CU_TANH_GRAD
        FDL_CU_GELU_GRAD, FDL_CU_GELU_TANH_GRAD, FDL_CU_SILU_GRAD
        FDL_CU_EW_NUNARY
        FDL_CU_ADD, FDL_CU_SUBTRACT, FDL_CU_MULTIPLY, FDL_CU_DIVIDE, FDL_CU_MAXIMUM
        FDL_CU_RELU_BW, FDL_CU_LEAKY_RELU_BW, FDL_CU_SIGMOID_BW, FDL_CU_TANH_BW, FDL_CU_GELU_BW
        FDL_CU_GELU_TANH_BW, FDL_CU_SILU_BW
    ctypedef struct fdl_cu_ew_args:
        int op
        int dtype
        int ndim
        int64_t shape[32]
        void *y
        const void *src[2]
        double scalar[2]
        int64_t strides[2][32]
        double param
    int fdl_cuda_elementwise(const fdl_cu_ew_args *args, void *stream)
    int fdl_cuda_elementwise_host(const fdl_cu_ew_args *args, int64_t nthreads, int force_walk)
    int fdl_cuda_elementwise_path(const fdl_cu_ew_args *args)
    void fdl_cuda_host_fastdiv(const uint32_t *n, const uint32_t *d, uint32_t *q, int64_t count)

cdef int _EW_MEMCPY_D2D = 3      # cudaMemcpyDeviceToDevice


# --------------------------------------------------------------------------------------
# Operands

class _EwHostRun:
    """How a host shim runs the kernel bodies: as `threads` threads of the grid-stride loop,
    force_walk 1/2 for the strided body with 32/64-bit indices; `paths` collects the paths
    the plans chose."""

    def __init__(self, threads=37, force_walk=0):
        self.threads = int(threads)
        self.force_walk = int(force_walk)
        self.paths = []


class _EwHostArray:
    """A NumPy array presented through __cuda_array_interface__, so the host test shims run
    the device functions' own parsing and planning on host memory."""

    def __init__(self, arr):
        self.arr = arr

    @property
    def __cuda_array_interface__(self):
        ai = self.arr.__array_interface__
        return {"shape": ai["shape"], "typestr": ai["typestr"], "data": ai["data"],
                "strides": ai["strides"], "version": 3, "stream": None}


cdef object _ew_unwrap(object obj):
    return obj.arr if isinstance(obj, _EwHostArray) else obj


cdef DevArr _ew_view(object obj, str func, str name, object host):
    """The device view of an array argument (host shims: of a NumPy array)."""
    if host is not None:
        if not isinstance(obj, np.ndarray):
            raise TypeError(f"fastdl.{func}: {name} must be a NumPy array in the host shim, "
                            f"got {type(obj).__name__}")
        obj = _EwHostArray(obj)
    return dev_float(obj, func, name)


cdef DevArr _ew_result(object out, DevArr like, tuple shape, int dtype, str func, object host):
    """out= validated (None stays None: the result is allocated after require_device)."""
    if out is None:
        return None
    if host is not None:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"fastdl.{func}: out must be a NumPy array in the host shim")
        out = _EwHostArray(out)
    return dev_out(out, like, shape, dtype, func)


cdef DevArr _ew_new(DevArr like, tuple shape, int dtype, str func, object host):
    cdef DevArr r
    if host is not None:
        r = dev_view(_EwHostArray(np.empty(shape, _CODE_NUMPY[dtype])), func, "result")
        r.stream = like.stream
        return r
    return dev_new(like, shape, dtype, func)


cdef int _ew_elem_strides(DevArr a, tuple shape, int64_t *dst, str func, str name) except -1:
    """a's strides in elements, broadcast to shape (0 along broadcast and missing axes)."""
    cdef int nd = len(shape), off = nd - a.ndim, d, e
    cdef int64_t step
    if a.ptr % a.itemsize != 0:
        raise ValueError(f"fastdl.{func}: {name} is not aligned to its {a.itemsize}-byte "
                         f"elements; the GPU functions need aligned data")
    step = 1
    cstrides = [0] * a.ndim
    for e in range(a.ndim - 1, -1, -1):
        cstrides[e] = step
        step *= a.shape[e]
    for d in range(nd):
        e = d - off
        if e < 0 or a.shape[e] == 1:
            dst[d] = 0
        elif a.strides is None:
            dst[d] = cstrides[e]
        else:
            if a.strides[e] % a.itemsize != 0:
                raise ValueError(f"fastdl.{func}: {name} has strides {a.strides} that are not "
                                 f"multiples of its {a.itemsize}-byte elements")
            dst[d] = a.strides[e] // a.itemsize
    return 0


cdef tuple _ew_extent(DevArr a):
    """[lo, hi) bytes a touches, or None when empty."""
    cdef int d
    cdef int64_t lo = 0, hi = 0, step
    if a.size == 0:
        return None
    if a.strides is None:
        return (a.ptr, a.ptr + a.size * a.itemsize)
    for d in range(a.ndim):
        step = (a.shape[d] - 1) * a.strides[d]
        if step < 0:
            lo += step
        else:
            hi += step
    return (a.ptr + lo, a.ptr + hi + a.itemsize)


cdef bint _ew_needs_temp(DevArr r, DevArr a):
    """Whether writing r while reading a could read an element already written: they overlap
    and are not the very same C-contiguous view (each element then read and written by one
    thread, in that order)."""
    if a is None or r is None:
        return False
    er = _ew_extent(r)
    ea = _ew_extent(a)
    if er is None or ea is None or not (er[0] < ea[1] and ea[0] < er[1]):
        return False
    return not (a.ptr == r.ptr and a.contiguous and a.shape == r.shape
                and a.itemsize == r.itemsize)


cdef int _ew_copy(DevArr dst, DevArr src, str func, object host) except -1:
    """dst (C-contiguous, src's shape and dtype) = src, on dst's stream."""
    cdef int64_t shp[32]
    cdef int64_t strd[32]
    cdef int d
    if src.size == 0 or (src.ptr == dst.ptr and src.contiguous):
        return 0
    if host is not None:
        np.copyto(_ew_unwrap(dst.obj), _ew_unwrap(src.obj))
        return 0
    if src.contiguous:
        check(fdl_cuda_memcpy(<void *>dst.ptr, <const void *>src.ptr,
                              <size_t>(src.size * src.itemsize), _EW_MEMCPY_D2D,
                              <void *>dst.stream), func)
        return 0
    for d in range(src.ndim):
        shp[d] = src.shape[d]
        strd[d] = src.strides[d]
    check(fdl_cuda_strided_copy(<void *>dst.ptr, <const void *>src.ptr, src.ndim, shp, strd,
                                src.itemsize, <void *>dst.stream), func)
    return 0


cdef bint _ew_is_scalar(object v):
    return isinstance(v, (int, float, np.generic)) and not isinstance(v, np.ndarray)


cdef double _ew_scalar_value(object v, int dtype, str func, str name) except? -1.0:
    """A scalar operand as a double (the kernel rounds it to dtype). Python scalars are weak
    (NEP 50); a NumPy scalar must have the array's dtype, since the GPU does not promote."""
    if isinstance(v, np.generic):
        if v.dtype != _CODE_NUMPY[dtype]:
            raise TypeError(f"fastdl.{func}: {name} is a NumPy {v.dtype} scalar but the device "
                            f"array is {_CODE_NUMPY[dtype]}; the GPU does not promote: pass a "
                            f"Python number or a scalar of the array's dtype")
    try:
        return float(v)
    except (OverflowError, TypeError, ValueError) as exc:
        raise TypeError(f"fastdl.{func}: argument '{name}' cannot be converted to "
                        f"{_CODE_NUMPY[dtype]} ({exc})") from None


cdef tuple _ew_broadcast(tuple sa, tuple sb, str func, str na, str nb):
    cdef int nd = max(len(sa), len(sb)), d
    if sa == sb:
        return sa
    dims = []
    for d in range(nd):
        da = sa[d - (nd - len(sa))] if d >= nd - len(sa) else 1
        db = sb[d - (nd - len(sb))] if d >= nd - len(sb) else 1
        if da != db and da != 1 and db != 1:
            raise ValueError(f"fastdl.{func}: shapes {sa} ({na}) and {sb} ({nb}) do not "
                             f"broadcast")
        dims.append(da if db == 1 else db)
    return tuple(dims)


cdef double _ew_alpha(object alpha, str func) except? -1.0:
    cdef double value
    if not isinstance(alpha, numbers.Real):
        raise TypeError(f"fastdl.{func}: alpha must be a real number, got "
                        f"{type(alpha).__name__}")
    value = float(alpha)
    if value != value:
        raise ValueError(f"fastdl.{func}: alpha must not be NaN")
    return value


cdef int _ew_gelu_op(object approximate, int exact, int tanh_form, str func) except -1:
    if approximate == "none":
        return exact
    if approximate == "tanh":
        return tanh_form
    raise ValueError(f"fastdl.{func}: approximate must be 'none' or 'tanh', got {approximate!r}")


# --------------------------------------------------------------------------------------
# The one launch path

cdef object _ew_run(str func, int op, DevArr A, double a_scalar, DevArr B, double b_scalar,
                    DevArr like, DevArr R, tuple shape, double param, object host,
                    str na="x", str nb=""):
    """y = op(A or a_scalar [, B or b_scalar]) into R (allocated when None); returns the
    result object. Validation is done: this allocates and launches."""
    cdef fdl_cu_ew_args args
    cdef int d, err, nin = 1 if op < FDL_CU_EW_NUNARY else 2
    cdef DevArr target
    cdef bint temp = False
    args.op = op
    args.dtype = like.dtype
    args.ndim = len(shape)
    for d in range(args.ndim):
        args.shape[d] = shape[d]
    args.param = param
    args.src[0] = NULL
    args.src[1] = NULL
    args.scalar[0] = a_scalar
    args.scalar[1] = b_scalar
    if A is not None:
        _ew_elem_strides(A, shape, args.strides[0], func, na)
        args.src[0] = <const void *>A.ptr
    if nin == 2 and B is not None:
        _ew_elem_strides(B, shape, args.strides[1], func, nb)
        args.src[1] = <const void *>B.ptr
    if host is None:
        require_device(func)
    if R is None:
        R = _ew_new(like, shape, like.dtype, func, host)
        target = R
    elif _ew_needs_temp(R, A) or (nin == 2 and _ew_needs_temp(R, B)):
        target = _ew_new(like, shape, like.dtype, func, host)
        temp = True
    else:
        target = R
    args.y = <void *>target.ptr
    if host is not None:
        host.paths.append(fdl_cuda_elementwise_path(&args))
        err = fdl_cuda_elementwise_host(&args, host.threads, host.force_walk)
    else:
        with nogil:
            err = fdl_cuda_elementwise(&args, <void *>like.stream)
    check(err, func)
    if temp:
        _ew_copy(R, target, func, host)
    return _ew_unwrap(R.obj)


cdef object _ew_unary(str func, int op, object x, double param, object out, object host):
    cdef DevArr X = _ew_view(x, func, "x", host)
    cdef DevArr R = _ew_result(out, X, X.shape, X.dtype, func, host)
    return _ew_run(func, op, X, 0.0, None, 0.0, X, R, X.shape, param, host)


cdef object _ew_binary(str func, int op, object a, object b, double param, object out,
                       bint broadcast, str na, str nb, object host):
    cdef DevArr A = None, B = None, like
    cdef double sa = 0.0, sb = 0.0
    cdef bint a_scalar = _ew_is_scalar(a), b_scalar = _ew_is_scalar(b)
    if a_scalar and b_scalar:
        raise TypeError(f"fastdl.{func}: {na} or {nb} must be a CUDA device array, got two "
                        f"scalars")
    if not a_scalar:
        A = _ew_view(a, func, na, host)
    if not b_scalar:
        B = _ew_view(b, func, nb, host)
    if A is not None and B is not None:
        same_dtype(A, B, func, na, nb)
    like = A if A is not None else B
    if a_scalar:
        sa = _ew_scalar_value(a, like.dtype, func, na)
    if b_scalar:
        sb = _ew_scalar_value(b, like.dtype, func, nb)
    shape_a = A.shape if A is not None else ()
    shape_b = B.shape if B is not None else ()
    if broadcast:
        shape = _ew_broadcast(shape_a, shape_b, func, na, nb)
    elif shape_a != shape_b:
        raise ValueError(f"fastdl.{func}: {na} has shape {shape_a} but {nb} has shape "
                         f"{shape_b}; they must match")
    else:
        shape = shape_a
    cdef DevArr R = _ew_result(out, like, shape, like.dtype, func, host)
    return _ew_run(func, op, A, sa, B, sb, like, R, shape, param, host, na, nb)


# --------------------------------------------------------------------------------------
# The functions, by name: (kind, op or (exact op, tanh-form op)); kinds: "x" f(x), "x-alpha",
# "x-gelu", "bw" f(dy, second), "bw-alpha", "bw-gelu", "ab" (broadcasting a, b)

_EW_TABLE = {
    "relu": ("x", FDL_CU_RELU), "leaky_relu": ("x-alpha", FDL_CU_LEAKY_RELU),
    "sigmoid": ("x", FDL_CU_SIGMOID), "tanh": ("x", FDL_CU_TANH),
    "gelu": ("x-gelu", (FDL_CU_GELU, FDL_CU_GELU_TANH)), "silu": ("x", FDL_CU_SILU),
    "relu_grad": ("x", FDL_CU_RELU_GRAD), "leaky_relu_grad": ("x-alpha", FDL_CU_LEAKY_RELU_GRAD),
    "sigmoid_grad": ("x", FDL_CU_SIGMOID_GRAD), "tanh_grad": ("x", FDL_CU_TANH_GRAD),
    "gelu_grad": ("x-gelu", (FDL_CU_GELU_GRAD, FDL_CU_GELU_TANH_GRAD)),
    "silu_grad": ("x", FDL_CU_SILU_GRAD),
    "relu_backward": ("bw", FDL_CU_RELU_BW), "leaky_relu_backward": ("bw-alpha", FDL_CU_LEAKY_RELU_BW),
    "sigmoid_backward": ("bw", FDL_CU_SIGMOID_BW), "tanh_backward": ("bw", FDL_CU_TANH_BW),
    "gelu_backward": ("bw-gelu", (FDL_CU_GELU_BW, FDL_CU_GELU_TANH_BW)),
    "silu_backward": ("bw", FDL_CU_SILU_BW),
    "add": ("ab", FDL_CU_ADD), "subtract": ("ab", FDL_CU_SUBTRACT),
    "multiply": ("ab", FDL_CU_MULTIPLY), "divide": ("ab", FDL_CU_DIVIDE),
    "maximum": ("ab", FDL_CU_MAXIMUM),
}


cdef object _ew_call(str name, object first, object second, object alpha, object approximate,
                     object out, object host):
    """Every elementwise function: the device twins pass host=None, the shim a _EwHostRun."""
    kind, op = _EW_TABLE[name]
    cdef double param = 0.0
    if kind.endswith("alpha"):
        param = _ew_alpha(alpha, name)
    elif kind.endswith("gelu"):
        op = _ew_gelu_op(approximate, op[0], op[1], name)
    if kind.startswith("x"):
        return _ew_unary(name, op, first, param, out, host)
    if kind == "ab":
        return _ew_binary(name, op, first, second, param, out, True, "a", "b", host)
    return _ew_binary(name, op, first, second, param, out, False, "dy",
                      "y" if name in ("sigmoid_backward", "tanh_backward") else "x", host)


def relu(x, *, out=None):
    """GPU ReLU (see fastdl.relu)."""
    return _ew_call("relu", x, None, None, None, out, None)


def leaky_relu(x, alpha=0.01, *, out=None):
    """GPU leaky ReLU (see fastdl.leaky_relu)."""
    return _ew_call("leaky_relu", x, None, alpha, None, out, None)


def sigmoid(x, *, out=None):
    """GPU sigmoid (see fastdl.sigmoid)."""
    return _ew_call("sigmoid", x, None, None, None, out, None)


def tanh(x, *, out=None):
    """GPU tanh (see fastdl.tanh)."""
    return _ew_call("tanh", x, None, None, None, out, None)


def gelu(x, approximate="none", *, out=None):
    """GPU GELU (see fastdl.gelu)."""
    return _ew_call("gelu", x, None, None, approximate, out, None)


def silu(x, *, out=None):
    """GPU SiLU (see fastdl.silu)."""
    return _ew_call("silu", x, None, None, None, out, None)


def relu_grad(x, *, out=None):
    """GPU ReLU derivative (see fastdl.relu_grad)."""
    return _ew_call("relu_grad", x, None, None, None, out, None)


def leaky_relu_grad(x, alpha=0.01, *, out=None):
    """GPU leaky ReLU derivative (see fastdl.leaky_relu_grad)."""
    return _ew_call("leaky_relu_grad", x, None, alpha, None, out, None)


def sigmoid_grad(x, *, out=None):
    """GPU sigmoid derivative from x (see fastdl.sigmoid_grad)."""
    return _ew_call("sigmoid_grad", x, None, None, None, out, None)


def tanh_grad(x, *, out=None):
    """GPU tanh derivative from x (see fastdl.tanh_grad)."""
    return _ew_call("tanh_grad", x, None, None, None, out, None)


def gelu_grad(x, approximate="none", *, out=None):
    """GPU GELU derivative (see fastdl.gelu_grad)."""
    return _ew_call("gelu_grad", x, None, None, approximate, out, None)


def silu_grad(x, *, out=None):
    """GPU SiLU derivative (see fastdl.silu_grad)."""
    return _ew_call("silu_grad", x, None, None, None, out, None)


def relu_backward(dy, x, *, out=None):
    """GPU ``dy * relu_grad(x)`` (see fastdl.relu_backward)."""
    return _ew_call("relu_backward", dy, x, None, None, out, None)


def leaky_relu_backward(dy, x, alpha=0.01, *, out=None):
    """GPU ``dy * leaky_relu_grad(x, alpha)`` (see fastdl.leaky_relu_backward)."""
    return _ew_call("leaky_relu_backward", dy, x, alpha, None, out, None)


def sigmoid_backward(dy, y, *, out=None):
    """GPU ``dy * y * (1 - y)`` from the sigmoid output y (see fastdl.sigmoid_backward)."""
    return _ew_call("sigmoid_backward", dy, y, None, None, out, None)


def tanh_backward(dy, y, *, out=None):
    """GPU ``dy * (1 - y^2)`` from the tanh output y (see fastdl.tanh_backward)."""
    return _ew_call("tanh_backward", dy, y, None, None, out, None)


def gelu_backward(dy, x, approximate="none", *, out=None):
    """GPU ``dy * gelu_grad(x, approximate)`` (see fastdl.gelu_backward)."""
    return _ew_call("gelu_backward", dy, x, None, approximate, out, None)


def silu_backward(dy, x, *, out=None):
    """GPU ``dy * silu_grad(x)`` (see fastdl.silu_backward)."""
    return _ew_call("silu_backward", dy, x, None, None, out, None)


def add(a, b, *, out=None):
    """GPU ``a + b`` with NumPy broadcasting (see fastdl.add)."""
    return _ew_call("add", a, b, None, None, out, None)


def subtract(a, b, *, out=None):
    """GPU ``a - b`` with NumPy broadcasting (see fastdl.subtract)."""
    return _ew_call("subtract", a, b, None, None, out, None)


def multiply(a, b, *, out=None):
    """GPU ``a * b`` with NumPy broadcasting (see fastdl.multiply)."""
    return _ew_call("multiply", a, b, None, None, out, None)


def divide(a, b, *, out=None):
    """GPU ``a / b`` with NumPy broadcasting, IEEE division (see fastdl.divide)."""
    return _ew_call("divide", a, b, None, None, out, None)


def maximum(a, b, *, out=None):
    """GPU elementwise maximum with NumPy broadcasting, NaN-propagating (see fastdl.maximum)."""
    return _ew_call("maximum", a, b, None, None, out, None)


# --------------------------------------------------------------------------------------
# Test shims (CPU only)

def _host_elementwise(name, a, b=None, *, alpha=0.01, approximate="none", out=None,
                      threads=37, force_walk=0, with_path=False):
    """Run the GPU function `name` on NumPy arrays through the device path's own validation,
    planning and kernel bodies, compiled for the host and executed as `threads` threads of
    the grid-stride loop (force_walk 1/2: the strided body, 32/64-bit indices). with_path:
    also return the path the plan chose (0 packs, 1 scalar contiguous, 2 strided 32-bit,
    3 strided 64-bit, 4 empty, 5 strided by packs along contiguous rows)."""
    run = _EwHostRun(threads, force_walk)
    r = _ew_call(name, a, b, alpha, approximate, out, run)
    return (r, run.paths[0] if run.paths else None) if with_path else r


def _host_fastdiv(n, d):
    """n // d through the strided kernels' magic-number division (uint32 arrays)."""
    nn = np.ascontiguousarray(n, dtype=np.uint32)
    dd = np.ascontiguousarray(np.broadcast_to(d, nn.shape), dtype=np.uint32)
    q = np.empty(nn.shape, np.uint32)
    fdl_cuda_host_fastdiv(<const uint32_t *><uintptr_t>nn.ctypes.data,
                          <const uint32_t *><uintptr_t>dd.ctypes.data,
                          <uint32_t *><uintptr_t>q.ctypes.data, nn.size)
    return q
