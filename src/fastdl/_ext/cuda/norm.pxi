# norm: GPU batch_norm, batch_norm_backward, layer_norm, layer_norm_backward (kernels:
# cuda/norm.cu). Same names, parameters, validation and error messages as _norm.pyx, with the
# GPU's rules: every array is a device array of x's dtype (float32 or float64; no promotion),
# results are C-contiguous arrays of the first device argument's kind, on its stream.
# Arguments are all validated before require_device, so the checks run without a GPU.

import math as _norm_math
import numbers as _norm_numbers
import operator as _norm_operator

from libc.stdint cimport uint32_t

cdef extern from "norm.h" nogil:
    int fdl_cuda_batch_norm_fwd(int dtype, const void *x, void *y, int64_t N, int64_t C,
                                int64_t S, const void *gamma, const void *beta,
                                void *running_mean, int64_t rm_stride, void *running_var,
                                int64_t rv_stride, int training, double momentum, double eps,
                                void *mean_out, void *inv_out, void *stream)
    int fdl_cuda_batch_norm_bwd(int dtype, const void *dy, const void *x, int64_t N, int64_t C,
                                int64_t S, const void *gamma, const void *mean,
                                const void *inv_std, void *dx, void *dgamma, void *dbeta,
                                void *stream)
    int fdl_cuda_layer_norm_fwd(int dtype, const void *x, void *y, int64_t R, int64_t D,
                                const void *gamma, const void *beta, double eps,
                                void *mean_out, void *inv_out, void *stream)
    int fdl_cuda_layer_norm_bwd(int dtype, const void *dy, const void *x, int64_t R, int64_t D,
                                const void *gamma, const void *mean, const void *inv_std,
                                void *dx, void *dgamma, void *dbeta, void *stream)
    int fdl_cuda_host_batch_norm_fwd(int dtype, const void *x, void *y, int64_t N, int64_t C,
                                     int64_t S, const void *gamma, const void *beta,
                                     void *running_mean, int64_t rm_stride, void *running_var,
                                     int64_t rv_stride, int training, double momentum,
                                     double eps, void *mean_out, void *inv_out)
    int fdl_cuda_host_batch_norm_bwd(int dtype, const void *dy, const void *x, int64_t N,
                                     int64_t C, int64_t S, const void *gamma, const void *mean,
                                     const void *inv_std, void *dx, void *dgamma, void *dbeta)
    int fdl_cuda_host_layer_norm_fwd(int dtype, const void *x, void *y, int64_t R, int64_t D,
                                     const void *gamma, const void *beta, double eps,
                                     void *mean_out, void *inv_out)
    int fdl_cuda_host_layer_norm_bwd(int dtype, const void *dy, const void *x, int64_t R,
                                     int64_t D, const void *gamma, const void *mean,
                                     const void *inv_std, void *dx, void *dgamma, void *dbeta)
    void fdl_cuda_host_norm_geometry(int64_t N, int64_t C, int64_t S, int64_t *out)
    void fdl_cuda_host_norm_fastdiv(const uint32_t *n, uint32_t *q, int64_t count, uint32_t d)


# --------------------------------------------------------------------------------------
# argument checks (the CPU's messages)

cdef double _norm_hyper(object v, str func, str name, double lo, double hi,
                        bint hi_open) except? -1:
    cdef double d
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, _norm_numbers.Real):
        raise TypeError(f"fastdl.{func}: {name} must be a real number, got {type(v).__name__}")
    d = float(v)
    if d != d or d < lo or d > hi or (hi_open and d == hi):
        rng = f"[{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"fastdl.{func}: {name} must be in {rng}, got {v!r}")
    return d


cdef bint _norm_readonly(object obj):
    """The read-only flag of __cuda_array_interface__'s data pair."""
    try:
        return bool(obj.__cuda_array_interface__["data"][1])
    except (AttributeError, KeyError, IndexError, TypeError):
        return False


cdef DevArr _norm_input(object x, str func, str name):
    cdef DevArr a = dev_float(x, func, name)
    if a.ndim < 2:
        raise ValueError(f"fastdl.{func}: {name} must have shape (N, C) or (N, C, H, W) "
                         f"(statistics over every axis but 1), got shape {a.shape}")
    return a


cdef DevArr _norm_param(object p, DevArr x, str func, str name, tuple shape):
    cdef DevArr a = dev_float(p, func, name)
    if a.shape != shape:
        raise ValueError(f"fastdl.{func}: {name} has shape {a.shape}, expected {shape}")
    same_dtype(x, a, func, "x", name)
    return a


cdef DevArr _norm_running(object r, DevArr x, str func, str name, Py_ssize_t C):
    """A running statistic, updated in place: a writeable device array of x's dtype and shape
    (C,) (any stride: it is updated where it is)."""
    cdef DevArr a
    if not is_device_array(r):
        raise TypeError(f"fastdl.{func}: {name} is updated in place and must be a CUDA device "
                        f"array like x, got {type(r).__name__}")
    a = dev_view(r, func, name)
    if a.dtype != x.dtype:
        raise TypeError(f"fastdl.{func}: {name} has dtype {_CODE_NUMPY[a.dtype]}, expected "
                        f"{_CODE_NUMPY[x.dtype]} (the dtype of the result)")
    if a.shape != (C,):
        raise ValueError(f"fastdl.{func}: {name} has shape {a.shape}, expected ({C},)")
    if _norm_readonly(r):
        raise ValueError(f"fastdl.{func}: {name} is read-only; it is updated in place")
    if a.strides is not None and a.strides[0] % a.itemsize != 0:
        raise ValueError(f"fastdl.{func}: {name} has a stride of {a.strides[0]} bytes, not a "
                         f"multiple of its item size")
    return a


cdef int64_t _norm_stride(DevArr a):
    return 1 if a is None or a.strides is None else a.strides[0] // a.itemsize


cdef tuple _norm_ns(object normalized_shape, tuple xshape, str func):
    """normalized_shape as a tuple that x's trailing axes must equal."""
    if isinstance(normalized_shape, (_norm_numbers.Integral, np.integer)) and \
            not isinstance(normalized_shape, (bool, np.bool_)):
        ns = (_norm_operator.index(normalized_shape),)
    else:
        try:
            ns = tuple(_norm_operator.index(v) for v in normalized_shape)
        except TypeError:
            raise TypeError(f"fastdl.{func}: normalized_shape must be an int or a tuple of "
                            f"ints, got {normalized_shape!r}") from None
    if len(ns) == 0:
        raise ValueError(f"fastdl.{func}: normalized_shape must have at least one axis")
    if len(ns) > len(xshape) or xshape[len(xshape) - len(ns):] != ns:
        raise ValueError(f"fastdl.{func}: normalized_shape {ns} does not match the trailing "
                         f"axes of x with shape {xshape}")
    return ns


cdef int64_t _norm_prod(tuple shape):
    cdef int64_t p = 1
    for v in shape:
        p *= v
    return p


cdef void *_norm_ptr(DevArr a):
    if a is None:
        return NULL
    return <void *>a.ptr


cdef DevArr _norm_contig(DevArr a, str func, uintptr_t stream):
    """a, or its contiguous copy, made on the call's stream (whatever stream a names)."""
    if a is None:
        return None
    a.stream = stream
    return dev_contig(a, func)


# --------------------------------------------------------------------------------------
# batch_norm

def batch_norm(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1,
               eps=1e-5, *, return_stats=False):
    """GPU twin of fastdl.batch_norm (same parameters and results; device arrays)."""
    cdef str func = "batch_norm"
    cdef DevArr X = _norm_input(x, func, "x")
    cdef Py_ssize_t C = X.shape[1]
    cdef tuple cshape = (C,)
    cdef DevArr G = None if gamma is None else _norm_param(gamma, X, func, "gamma", cshape)
    cdef DevArr B = None if beta is None else _norm_param(beta, X, func, "beta", cshape)
    cdef double mom = _norm_hyper(momentum, func, "momentum", 0.0, 1.0, False)
    cdef double ep = _norm_hyper(eps, func, "eps", 0.0, _norm_math.inf, False)
    cdef bint train = bool(training)
    cdef DevArr RM = None if running_mean is None else _norm_running(
        running_mean, X, func, "running_mean", C)
    cdef DevArr RV = None if running_var is None else _norm_running(
        running_var, X, func, "running_var", C)
    if (RM is None) != (RV is None):
        raise ValueError(f"fastdl.{func}: running_mean and running_var must both be arrays "
                         "or both be None")
    if not train and RM is None:
        raise ValueError(f"fastdl.{func}: inference (training=False) needs running_mean and "
                         "running_var")
    cdef int64_t N = X.shape[0], S = _norm_prod(X.shape[2:])
    if train and N * S == 1:
        raise ValueError(f"fastdl.{func}: expected more than 1 value per channel when "
                         f"training, got input of shape {X.shape}")
    require_device(func)
    cdef DevArr Xc = dev_contig(X, func)
    G = _norm_contig(G, func, X.stream)
    B = _norm_contig(B, func, X.stream)
    cdef DevArr Y = dev_new(X, X.shape, X.dtype, func)
    cdef DevArr MU = dev_new(X, cshape, X.dtype, func) if return_stats else None
    cdef DevArr IS = dev_new(X, cshape, X.dtype, func) if return_stats else None
    check(fdl_cuda_batch_norm_fwd(
        X.dtype, <const void *>Xc.ptr, <void *>Y.ptr, N, C, S, _norm_ptr(G), _norm_ptr(B),
        _norm_ptr(RM), _norm_stride(RM), _norm_ptr(RV), _norm_stride(RV),
        train, mom, ep, _norm_ptr(MU), _norm_ptr(IS), <void *>X.stream), func)
    if return_stats:
        return Y.obj, MU.obj, IS.obj
    return Y.obj


def batch_norm_backward(dy, x, gamma, mean, inv_std):
    """GPU twin of fastdl.batch_norm_backward: (dx, dgamma, dbeta) as device arrays."""
    cdef str func = "batch_norm_backward"
    cdef DevArr DY = _norm_input(dy, func, "dy")
    cdef DevArr X = _norm_input(x, func, "x")
    if DY.shape != X.shape:
        raise ValueError(f"fastdl.{func}: dy has shape {DY.shape} and x has shape {X.shape}; "
                         f"they must be equal")
    same_dtype(X, DY, func, "x", "dy")
    cdef Py_ssize_t C = X.shape[1]
    cdef tuple cshape = (C,)
    cdef DevArr G = None if gamma is None else _norm_param(gamma, X, func, "gamma", cshape)
    cdef DevArr MU = _norm_param(mean, X, func, "mean", cshape)
    cdef DevArr IS = _norm_param(inv_std, X, func, "inv_std", cshape)
    cdef int64_t N = X.shape[0], S = _norm_prod(X.shape[2:])
    require_device(func)
    cdef DevArr DYc = dev_contig(DY, func)
    cdef DevArr Xc = _norm_contig(X, func, DY.stream)
    G = _norm_contig(G, func, DY.stream)
    MU = _norm_contig(MU, func, DY.stream)
    IS = _norm_contig(IS, func, DY.stream)
    cdef DevArr DX = dev_new(DY, X.shape, X.dtype, func)
    cdef DevArr DG = dev_new(DY, cshape, X.dtype, func)
    cdef DevArr DB = dev_new(DY, cshape, X.dtype, func)
    check(fdl_cuda_batch_norm_bwd(
        X.dtype, <const void *>DYc.ptr, <const void *>Xc.ptr, N, C, S, _norm_ptr(G),
        _norm_ptr(MU), _norm_ptr(IS), <void *>DX.ptr, <void *>DG.ptr, <void *>DB.ptr,
        <void *>DY.stream), func)
    return DX.obj, DG.obj, DB.obj


# --------------------------------------------------------------------------------------
# layer_norm

def layer_norm(x, normalized_shape, gamma=None, beta=None, eps=1e-5, *, return_stats=False):
    """GPU twin of fastdl.layer_norm (same parameters and results; device arrays)."""
    cdef str func = "layer_norm"
    cdef DevArr X = dev_float(x, func, "x")
    cdef tuple ns = _norm_ns(normalized_shape, X.shape, func)
    cdef DevArr G = None if gamma is None else _norm_param(gamma, X, func, "gamma", ns)
    cdef DevArr B = None if beta is None else _norm_param(beta, X, func, "beta", ns)
    cdef double ep = _norm_hyper(eps, func, "eps", 0.0, _norm_math.inf, False)
    cdef tuple outer = X.shape[:X.ndim - len(ns)]
    cdef int64_t D = _norm_prod(ns), R = _norm_prod(outer)
    require_device(func)
    cdef DevArr Xc = dev_contig(X, func)
    G = _norm_contig(G, func, X.stream)
    B = _norm_contig(B, func, X.stream)
    cdef DevArr Y = dev_new(X, X.shape, X.dtype, func)
    cdef DevArr MU = dev_new(X, outer, X.dtype, func) if return_stats else None
    cdef DevArr IS = dev_new(X, outer, X.dtype, func) if return_stats else None
    check(fdl_cuda_layer_norm_fwd(
        X.dtype, <const void *>Xc.ptr, <void *>Y.ptr, R, D, _norm_ptr(G), _norm_ptr(B), ep,
        _norm_ptr(MU), _norm_ptr(IS), <void *>X.stream), func)
    if return_stats:
        return Y.obj, MU.obj, IS.obj
    return Y.obj


def layer_norm_backward(dy, x, normalized_shape, gamma, mean, inv_std):
    """GPU twin of fastdl.layer_norm_backward: (dx, dgamma, dbeta), the last two None when
    gamma is None."""
    cdef str func = "layer_norm_backward"
    cdef DevArr DY = dev_float(dy, func, "dy")
    cdef DevArr X = dev_float(x, func, "x")
    if DY.shape != X.shape:
        raise ValueError(f"fastdl.{func}: dy has shape {DY.shape} and x has shape {X.shape}; "
                         f"they must be equal")
    same_dtype(X, DY, func, "x", "dy")
    cdef tuple ns = _norm_ns(normalized_shape, X.shape, func)
    cdef tuple outer = X.shape[:X.ndim - len(ns)]
    cdef DevArr G = None if gamma is None else _norm_param(gamma, X, func, "gamma", ns)
    cdef DevArr MU = _norm_param(mean, X, func, "mean", outer)
    cdef DevArr IS = _norm_param(inv_std, X, func, "inv_std", outer)
    cdef int64_t D = _norm_prod(ns), R = _norm_prod(outer)
    require_device(func)
    cdef DevArr DYc = dev_contig(DY, func)
    cdef DevArr Xc = _norm_contig(X, func, DY.stream)
    G = _norm_contig(G, func, DY.stream)
    MU = _norm_contig(MU, func, DY.stream)
    IS = _norm_contig(IS, func, DY.stream)
    cdef DevArr DX = dev_new(DY, X.shape, X.dtype, func)
    cdef DevArr DG = None if G is None else dev_new(DY, ns, X.dtype, func)
    cdef DevArr DB = None if G is None else dev_new(DY, ns, X.dtype, func)
    check(fdl_cuda_layer_norm_bwd(
        X.dtype, <const void *>DYc.ptr, <const void *>Xc.ptr, R, D, _norm_ptr(G),
        _norm_ptr(MU), _norm_ptr(IS), <void *>DX.ptr, _norm_ptr(DG),
        _norm_ptr(DB), <void *>DY.stream), func)
    return DX.obj, (None if DG is None else DG.obj), (None if DB is None else DB.obj)


# --------------------------------------------------------------------------------------
# host shims: the kernels' phases run on the CPU over NumPy arrays (tests without a GPU)

cdef int _norm_code(object a) except -1:
    if a.dtype == np.float32:
        return FDL_CUDA_F32
    if a.dtype == np.float64:
        return FDL_CUDA_F64
    raise TypeError(f"host shim: float32 or float64 arrays, got {a.dtype}")


cdef void *_norm_hptr(object a):
    return NULL if a is None else <void *>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef object _norm_hin(object a, object dt):
    return None if a is None else np.ascontiguousarray(a, dtype=dt)


def _host_norm_batch_norm(x, gamma, beta, running_mean, running_var, training=True,
                          momentum=0.1, eps=1e-5):
    """norm.cu's batch_norm phases on the host: (y, mean, inv_std); running_mean/running_var
    (contiguous or 1-D strided NumPy arrays of x's dtype, or None) are updated in place."""
    X = np.ascontiguousarray(x)
    dt = X.dtype
    cdef int code = _norm_code(X)
    cdef int64_t N = X.shape[0], C = X.shape[1], S = _norm_prod(X.shape[2:])
    g = _norm_hin(gamma, dt)
    b = _norm_hin(beta, dt)
    y = np.empty(X.shape, dt)
    mean = np.empty(C, dt)
    inv = np.empty(C, dt)
    cdef int64_t rms = 1, rvs = 1
    if running_mean is not None:
        rms = running_mean.strides[0] // dt.itemsize
        rvs = running_var.strides[0] // dt.itemsize
    rc = fdl_cuda_host_batch_norm_fwd(
        code, _norm_hptr(X), _norm_hptr(y), N, C, S, _norm_hptr(g), _norm_hptr(b),
        _norm_hptr(running_mean), rms, _norm_hptr(running_var), rvs, bool(training),
        momentum, eps, _norm_hptr(mean), _norm_hptr(inv))
    if rc:
        raise RuntimeError(f"host shim: error {rc}")
    return y, mean, inv


def _host_norm_batch_norm_backward(dy, x, gamma, mean, inv_std):
    X = np.ascontiguousarray(x)
    dt = X.dtype
    cdef int code = _norm_code(X)
    DY = np.ascontiguousarray(dy, dtype=dt)
    cdef int64_t N = X.shape[0], C = X.shape[1], S = _norm_prod(X.shape[2:])
    g = _norm_hin(gamma, dt)
    mu = _norm_hin(mean, dt)
    iv = _norm_hin(inv_std, dt)
    dx = np.empty(X.shape, dt)
    dg = np.empty(C, dt)
    db = np.empty(C, dt)
    rc = fdl_cuda_host_batch_norm_bwd(code, _norm_hptr(DY), _norm_hptr(X), N, C, S,
                                      _norm_hptr(g), _norm_hptr(mu), _norm_hptr(iv),
                                      _norm_hptr(dx), _norm_hptr(dg), _norm_hptr(db))
    if rc:
        raise RuntimeError(f"host shim: error {rc}")
    return dx, dg, db


def _host_norm_layer_norm(x, normalized_shape, gamma=None, beta=None, eps=1e-5):
    """norm.cu's layer_norm phases on the host: (y, mean, inv_std)."""
    X = np.ascontiguousarray(x)
    dt = X.dtype
    cdef int code = _norm_code(X)
    ns = _norm_ns(normalized_shape, X.shape, "_host_norm_layer_norm")
    outer = X.shape[:X.ndim - len(ns)]
    cdef int64_t D = _norm_prod(ns), R = _norm_prod(outer)
    g = _norm_hin(gamma, dt)
    b = _norm_hin(beta, dt)
    y = np.empty(X.shape, dt)
    mean = np.empty(outer, dt)
    inv = np.empty(outer, dt)
    rc = fdl_cuda_host_layer_norm_fwd(code, _norm_hptr(X), _norm_hptr(y), R, D, _norm_hptr(g),
                                      _norm_hptr(b), eps, _norm_hptr(mean), _norm_hptr(inv))
    if rc:
        raise RuntimeError(f"host shim: error {rc}")
    return y, mean, inv


def _host_norm_layer_norm_backward(dy, x, normalized_shape, gamma, mean, inv_std):
    X = np.ascontiguousarray(x)
    dt = X.dtype
    cdef int code = _norm_code(X)
    DY = np.ascontiguousarray(dy, dtype=dt)
    ns = _norm_ns(normalized_shape, X.shape, "_host_norm_layer_norm_backward")
    outer = X.shape[:X.ndim - len(ns)]
    cdef int64_t D = _norm_prod(ns), R = _norm_prod(outer)
    g = _norm_hin(gamma, dt)
    mu = _norm_hin(mean, dt)
    iv = _norm_hin(inv_std, dt)
    dx = np.empty(X.shape, dt)
    dg = None if g is None else np.empty(ns, dt)
    db = None if g is None else np.empty(ns, dt)
    rc = fdl_cuda_host_layer_norm_bwd(code, _norm_hptr(DY), _norm_hptr(X), R, D, _norm_hptr(g),
                                      _norm_hptr(mu), _norm_hptr(iv), _norm_hptr(dx),
                                      _norm_hptr(dg), _norm_hptr(db))
    if rc:
        raise RuntimeError(f"host shim: error {rc}")
    return dx, dg, db


def _host_norm_geometry(int64_t N, int64_t C, int64_t S):
    """The batch-norm work split: dict(rows, items, length, parts, ln_threads_per_row)."""
    cdef int64_t out[5]
    fdl_cuda_host_norm_geometry(N, C, S, out)
    return {"rows": bool(out[0]), "items": out[1], "length": out[2], "parts": out[3],
            "ln_threads_per_row": out[4]}


def _host_norm_fastdiv(n, uint32_t d):
    """n // d (uint32 array) by the kernels' multiply-shift division."""
    cdef cnp.ndarray a = np.ascontiguousarray(n, dtype=np.uint32)
    cdef cnp.ndarray q = np.empty_like(a)
    if d == 0:
        raise ValueError("host shim: divisor 0")
    fdl_cuda_host_norm_fastdiv(<const uint32_t *>cnp.PyArray_DATA(a),
                               <uint32_t *>cnp.PyArray_DATA(q), a.size, d)
    return q
