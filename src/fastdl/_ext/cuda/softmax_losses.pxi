# softmax_losses: the GPU twins of fastdl._ext._softmax (softmax, log_softmax and their
# backward) and of fastdl._ext._losses (softmax_cross_entropy, cross_entropy,
# cross_entropy_grad, mse, mse_grad). Kernels: cuda/softmax_losses.cu. Included at the end of
# _cuda.pyx (DevArr, dev_view, dev_new, dev_out, check, require_device, ... are in scope).
#
# Same names, parameters, results and error messages as the CPU functions, except where the
# device makes a difference:
# - the two arrays of a pair must have the same float dtype (the CPU promotes), and integer or
#   bool inputs are refused (the CPU promotes them to float64);
# - out= must be C-contiguous (it may be the input itself: an exact alias is computed in
#   place; any other overlap goes through a temporary);
# - a class index outside [0, C) that is not ignore_index gives that sample a NaN loss and a
#   NaN gradient row instead of the CPU's ValueError: checking would need a device-to-host copy
#   and a synchronisation in every call, which a training step cannot afford. A target given as
#   a Python int is checked on the host, as on the CPU;
# - a single value (reduction 'mean'/'sum', or 'none' of one sample) is a 0-d device array of
#   the input's kind, as torch and CuPy return.

import operator

cdef extern from "softmax_losses.h" nogil:
    ctypedef struct fdl_cuda_sce_args:
        const void *x
        const void *t
        const int64_t *label
        void *grad
        void *loss
        double *partials
        const int64_t *count
        int64_t outer
        int64_t n
        int64_t inner
        double eps
        double gscale
        int64_t ignore
        int has_ignore
        int dtype
        int path
    int fdl_cuda_softmax(const void *x, void *y, int64_t outer, int64_t n, int64_t inner,
                         int dtype, int log, int path, void *stream)
    int fdl_cuda_softmax_backward(const void *dy, const void *y, void *dx, int64_t outer,
                                  int64_t n, int64_t inner, int dtype, int log, int path,
                                  void *stream)
    int64_t fdl_cuda_sce_blocks(int64_t outer, int64_t n, int64_t inner, int dtype, int path)
    int fdl_cuda_softmax_cross_entropy(const fdl_cuda_sce_args *a, void *stream)
    int fdl_cuda_sl_count_kept(const int64_t *label, int64_t n, int64_t ignore, int64_t *count,
                               void *stream)
    int fdl_cuda_sl_widen_labels(const void *src, int src_dtype, int64_t *dst, int64_t n,
                                 void *stream)
    int fdl_cuda_sl_finish(const double *partials, int64_t nparts, int mean, double count,
                           const int64_t *count_dev, void *out, int dtype, void *stream)
    int64_t fdl_cuda_xent_blocks(int64_t rows, int64_t n)
    int fdl_cuda_cross_entropy(const void *t, const void *p, void *loss, double *partials,
                               int64_t rows, int64_t n, int dtype, void *stream)
    int64_t fdl_cuda_mse_blocks(int64_t n, int dtype)
    int fdl_cuda_mse_sum(const void *t, const void *p, double *partials, int64_t n, int dtype,
                         void *stream)
    int fdl_cuda_sl_map(const void *t, const void *p, void *out, int64_t n, int op,
                        double scale, int dtype, void *stream)
    int fdl_cuda_sl_host_softmax(const void *x, void *y, int64_t outer, int64_t n,
                                 int64_t inner, int dtype, int log, int path)
    int fdl_cuda_sl_host_softmax_backward(const void *dy, const void *y, void *dx,
                                          int64_t outer, int64_t n, int64_t inner, int dtype,
                                          int log, int path)
    int fdl_cuda_sl_host_softmax_cross_entropy(const fdl_cuda_sce_args *a)
    int fdl_cuda_sl_host_finish(const double *partials, int64_t nparts, int mean, double count,
                                void *out, int dtype)
    int fdl_cuda_sl_host_cross_entropy(const void *t, const void *p, void *loss,
                                       double *partials, int64_t rows, int64_t n, int dtype)
    int fdl_cuda_sl_host_mse_sum(const void *t, const void *p, double *partials, int64_t n,
                                 int dtype)
    int fdl_cuda_sl_host_map(const void *t, const void *p, void *out, int64_t n, int op,
                             double scale, int dtype)
    int fdl_cuda_sl_plan(int64_t outer, int64_t n, int64_t inner, int dtype, int op, int path,
                         int *tpr, int *e, int *threads, int64_t *blocks)

cdef enum:
    _SL_RED_NONE = 0
    _SL_RED_MEAN = 1
    _SL_RED_SUM = 2
    _SL_MAP_SQDIFF = 0          # the op codes of fdl_cuda_sl_map
    _SL_MAP_MSE_GRAD = 1
    _SL_MAP_XENT_GRAD = 2
    _SL_MEMCPY_D2D = 3          # cudaMemcpyDeviceToDevice

# the kernel path forced by tests (0: chosen by shape); see _sl_set_path
cdef int _sl_path = 0


def _sl_set_path(int path):
    """Test hook: force a kernel path for the softmax family and softmax_cross_entropy (0 by
    shape, 1 rows in registers, 2 a block per row cached in shared memory, 3 a block per row
    online, 4 the column kernel) where the shape allows it. Returns the previous setting."""
    global _sl_path
    if not 0 <= path <= 4:
        raise ValueError(f"fastdl.cuda: no kernel path {path}")
    previous = _sl_path
    _sl_path = path
    return previous


# --------------------------------------------------------------------------------------
# validation (the CPU's messages)

cdef int _sl_axis(object axis, int ndim, str func) except -1:
    cdef Py_ssize_t a
    try:
        a = operator.index(axis)
    except TypeError:
        raise TypeError(f"fastdl.{func}: axis must be an int, got {type(axis).__name__}") from None
    if a < -ndim or a >= ndim:
        raise ValueError(f"fastdl.{func}: axis {axis} is out of bounds for an array of "
                         f"dimension {ndim}")
    return <int>(a + ndim if a < 0 else a)


cdef int _sl_reduction(object reduction, str func) except -1:
    if isinstance(reduction, str):
        if reduction == "none":
            return _SL_RED_NONE
        if reduction == "mean":
            return _SL_RED_MEAN
        if reduction == "sum":
            return _SL_RED_SUM
    raise ValueError(f"fastdl.{func}: reduction must be 'none', 'mean' or 'sum', got "
                     f"{reduction!r}")


cdef double _sl_label_smoothing(object value, str func) except? -1.0:
    cdef double eps
    if isinstance(value, (str, bytes)):
        raise TypeError(f"fastdl.{func}: label_smoothing must be a real number, got "
                        f"{type(value).__name__}")
    try:
        eps = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"fastdl.{func}: label_smoothing must be a real number, got "
                        f"{type(value).__name__}") from None
    if not (0.0 <= eps <= 1.0):
        raise ValueError(f"fastdl.{func}: label_smoothing must be in [0, 1], got {value!r}")
    return eps


cdef DevArr _sl_float(object obj, str func, str name):
    """A device array that must be float32 or float64 (no promotion on the GPU)."""
    cdef DevArr a = dev_view(obj, func, name)
    if a.dtype != FDL_CUDA_F32 and a.dtype != FDL_CUDA_F64:
        raise TypeError(f"fastdl.{func}: argument '{name}' has dtype {_CODE_NUMPY[a.dtype]}; "
                        f"fastdl computes in float32 or float64 (on the GPU integer and bool "
                        f"arrays are not promoted: convert them first)")
    return a


cdef tuple _sl_pair(object a, object b, str func, str name_a, str name_b):
    """Two float device arrays of one dtype and one shape (the CPU's shape message)."""
    cdef DevArr A = _sl_float(a, func, name_a)
    cdef DevArr B = _sl_float(b, func, name_b)
    same_dtype(A, B, func, name_a, name_b)
    if A.shape != B.shape:
        raise ValueError(f"fastdl.{func}: {name_a} has shape {A.shape} and {name_b} has shape "
                         f"{B.shape}; they must be equal")
    return A, B


cdef tuple _sl_lanes(tuple shape, int ax):
    """(outer, n, inner) of axis ax of a C-contiguous array of this shape."""
    cdef int64_t outer = 1, inner = 1
    cdef int d
    for d in range(ax):
        outer *= shape[d]
    for d in range(ax + 1, len(shape)):
        inner *= shape[d]
    return outer, <int64_t>shape[ax], inner


cdef bint _sl_overlap(DevArr a, DevArr b):
    """Overlapping memory that is not the same array (an exact alias is computed in place:
    every kernel reads an element before the same thread writes it, and no other)."""
    if a.ptr == b.ptr:
        return False
    return (a.ptr < b.ptr + <uintptr_t>(b.size * b.itemsize) and
            b.ptr < a.ptr + <uintptr_t>(a.size * a.itemsize))


cdef uintptr_t _sl_ptr(object device_array):
    """The pointer of a fastdl-owned temporary (0 for None)."""
    if device_array is None:
        return 0
    return <uintptr_t>(<DeviceArray>device_array)._ptr


# --------------------------------------------------------------------------------------
# softmax, log_softmax, softmax_backward, log_softmax_backward

cdef object _sl_softmax_family(object x, object y, object axis, object out, bint backward,
                               bint log, str func, str xname, str yname):
    cdef DevArr X = _sl_float(x, func, xname)
    cdef DevArr Y = None, R = None, W
    cdef int ax, err = 0, dtype
    cdef int64_t outer, n, inner
    cdef uintptr_t stream
    if backward:
        Y = _sl_float(y, func, yname)
        if X.shape != Y.shape:
            raise ValueError(f"fastdl.{func}: {xname} has shape {X.shape} and {yname} has "
                             f"shape {Y.shape}; they must be equal")
        same_dtype(X, Y, func, xname, yname)
    ax = _sl_axis(axis, X.ndim, func)
    if out is not None:
        R = dev_out(out, X, X.shape, X.dtype, func)
    require_device(func)
    if R is None:
        R = dev_new(X, X.shape, X.dtype, func)
    if X.size == 0:
        return R.obj
    X = dev_contig(X, func)
    if backward:
        Y = dev_contig(Y, func)
    W = R
    if _sl_overlap(R, X) or (backward and _sl_overlap(R, Y)):
        W = dev_new(X, X.shape, X.dtype, func)
    outer, n, inner = _sl_lanes(X.shape, ax)
    stream = X.stream
    dtype = X.dtype
    with nogil:
        if backward:
            err = fdl_cuda_softmax_backward(<const void *>X.ptr, <const void *>Y.ptr,
                                            <void *>W.ptr, outer, n, inner, dtype, log,
                                            _sl_path, <void *>stream)
        else:
            err = fdl_cuda_softmax(<const void *>X.ptr, <void *>W.ptr, outer, n, inner, dtype,
                                   log, _sl_path, <void *>stream)
    check(err, func)
    if W is not R:
        check(fdl_cuda_memcpy(<void *>R.ptr, <const void *>W.ptr, R.size * R.itemsize,
                              _SL_MEMCPY_D2D, <void *>stream), func)
    return R.obj


def softmax(x, axis=-1, *, out=None):
    """GPU twin of fastdl.softmax: x a float32/float64 device array; returns a device array
    of x's kind, or out (C-contiguous; may be x itself)."""
    return _sl_softmax_family(x, None, axis, out, False, False, "softmax", "x", "")


def log_softmax(x, axis=-1, *, out=None):
    """GPU twin of fastdl.log_softmax."""
    return _sl_softmax_family(x, None, axis, out, False, True, "log_softmax", "x", "")


def softmax_backward(dy, y, axis=-1, *, out=None):
    """GPU twin of fastdl.softmax_backward (dy and y of one dtype)."""
    return _sl_softmax_family(dy, y, axis, out, True, False, "softmax_backward", "dy", "y")


def log_softmax_backward(dy, y, axis=-1, *, out=None):
    """GPU twin of fastdl.log_softmax_backward (dy and y of one dtype)."""
    return _sl_softmax_family(dy, y, axis, out, True, True, "log_softmax_backward", "dy", "y")


# --------------------------------------------------------------------------------------
# softmax_cross_entropy

cdef object _sl_finish(object parts, int64_t nparts, int red, double count, object count_dev,
                       DevArr like, str func):
    """The 0-d result: the sum of the per-block partials, or their mean over count."""
    cdef DevArr R = dev_new(like, (), like.dtype, func)
    check(fdl_cuda_sl_finish(<const double *>_sl_ptr(parts), nparts, red == _SL_RED_MEAN, count,
                             <const int64_t *>_sl_ptr(count_dev), <void *>R.ptr, like.dtype,
                             <void *>like.stream), func)
    return R.obj


def softmax_cross_entropy(logits, target, axis=-1, reduction='mean', label_smoothing=0.0,
                          ignore_index=None, return_grad=False):
    """GPU twin of fastdl.softmax_cross_entropy: logits a float device array; target a device
    array of class indices (int64, int32 or uint8), a Python int (one sample), or a device
    array of probabilities (the logits' dtype and shape). One read of the logits gives the
    loss and, with return_grad, dlogits. A class index outside [0, C) that is not
    ignore_index gives NaN for that sample (loss and gradient row) instead of a ValueError."""
    cdef str func = "softmax_cross_entropy"
    cdef int red = _sl_reduction(reduction, func)
    cdef double eps = _sl_label_smoothing(label_smoothing, func)
    cdef DevArr X = _sl_float(logits, func, "logits")
    cdef int ax = _sl_axis(axis, X.ndim, func)
    cdef tuple shape = X.shape
    cdef tuple sample_shape = shape[:ax] + shape[ax + 1:]
    cdef int64_t classes = shape[ax], samples = 1, ignore = 0
    cdef int d
    for d in range(X.ndim):
        if d != ax:
            samples *= shape[d]
    cdef DevArr T = None
    cdef object host_label = None
    cdef bint indices, has_ignore = ignore_index is not None
    if is_device_array(target):
        T = dev_view(target, func, "target")
        if T.dtype == FDL_CUDA_BOOL:
            raise TypeError(f"fastdl.{func}: target has dtype bool; class indices must be "
                            "integers, probabilities float32/float64")
        indices = T.dtype == FDL_CUDA_I64 or T.dtype == FDL_CUDA_I32 or T.dtype == FDL_CUDA_U8
    elif isinstance(target, (int, np.integer)) and not isinstance(target, (bool, np.bool_)):
        host_label = int(target)
        indices = True
    else:
        raise TypeError(f"fastdl.{func}: target must be a CUDA device array (class indices or "
                        f"probabilities) or an int class index, got {type(target).__name__}")
    if has_ignore:
        try:
            ignore_value = operator.index(ignore_index)
        except TypeError:
            raise TypeError(f"fastdl.{func}: ignore_index must be an int or None, got "
                            f"{type(ignore_index).__name__}") from None
        if not -2**63 <= ignore_value < 2**63:
            raise ValueError(f"fastdl.{func}: ignore_index {ignore_index} is out of the int64 "
                             "range")
        ignore = ignore_value
    if indices:
        tshape = T.shape if T is not None else ()
        if tshape != sample_shape:
            raise ValueError(f"fastdl.{func}: target has shape {tshape} and logits have shape "
                             f"{shape}; class indices must have shape {sample_shape} (the "
                             f"logits' shape without axis {ax}), probabilities the logits' "
                             f"shape")
    else:
        if T.dtype != X.dtype:
            raise TypeError(f"fastdl.{func}: argument 'target' has dtype "
                            f"{_CODE_NUMPY[T.dtype]}; probabilities must have the logits' dtype "
                            f"({_CODE_NUMPY[X.dtype]}) on the GPU")
        if T.shape != shape:
            raise ValueError(f"fastdl.{func}: target has shape {T.shape} and logits have shape "
                             f"{shape}; probabilities must have the logits' shape (class "
                             f"indices, an integer array, the shape {sample_shape})")
        if has_ignore:
            raise ValueError(f"fastdl.{func}: ignore_index applies to class-index targets "
                             "only, not to probabilities (as in PyTorch)")
    if host_label is not None and not (has_ignore and host_label == ignore) and \
            not 0 <= host_label < classes:
        raise ValueError(f"fastdl.{func}: target contains 1 class index outside "
                         f"[0, {classes}) (the first is {host_label})"
                         + ("" if not has_ignore else f" that is not ignore_index ({ignore})"))
    require_device(func)

    # Everything is valid: compute.
    cdef uintptr_t stream = X.stream
    cdef int64_t outer, n, inner, nparts = 0
    cdef DevArr L = None, Tc, G = None, Lout = None
    cdef fdl_cuda_sce_args a
    cdef int err = 0
    cdef DevArr like = X    # results take the caller's kind, not that of a contiguous copy
    X = dev_contig(X, func)
    outer, n, inner = _sl_lanes(shape, ax)
    if indices:
        if host_label is not None:
            L = dev_view(to_device(np.array(host_label, np.int64), stream), func, "target")
        elif T.dtype == FDL_CUDA_I64:
            L = dev_contig(T, func)
        else:
            Tc = dev_contig(T, func)
            L = dev_view(DeviceArray(T.shape, np.int64, stream), func, "target")
            check(fdl_cuda_sl_widen_labels(<const void *>Tc.ptr, Tc.dtype, <int64_t *>L.ptr,
                                           samples, <void *>stream), func)
    else:
        T = dev_contig(T, func)
    if return_grad:
        G = dev_new(like, shape, X.dtype, func)
    if red == _SL_RED_NONE:
        Lout = dev_new(like, sample_shape, X.dtype, func)
    parts = count_dev = None
    if red != _SL_RED_NONE and samples > 0:
        nparts = fdl_cuda_sce_blocks(outer, n, inner, X.dtype, _sl_path)
        parts = DeviceArray((nparts,), np.float64, stream)
    if red == _SL_RED_MEAN and indices and has_ignore:
        # the mean counts the samples not ignored: counted on the device, read by the kernels
        count_dev = DeviceArray((1,), np.int64, stream)
        check(fdl_cuda_memset(<void *>_sl_ptr(count_dev), 0, 8, <void *>stream), func)
        check(fdl_cuda_sl_count_kept(<const int64_t *>L.ptr, samples, ignore,
                                     <int64_t *>_sl_ptr(count_dev), <void *>stream), func)
    a.x = <const void *>X.ptr
    a.t = NULL
    a.label = NULL
    if indices:
        a.label = <const int64_t *>L.ptr
    else:
        a.t = <const void *>T.ptr
    a.grad = <void *>G.ptr if G is not None else NULL
    a.loss = <void *>Lout.ptr if Lout is not None else NULL
    a.partials = <double *>_sl_ptr(parts)
    a.count = <const int64_t *>_sl_ptr(count_dev)
    a.outer = outer
    a.n = n
    a.inner = inner
    a.eps = eps
    a.gscale = ((1.0 / samples if samples > 0 else 0.0) if red == _SL_RED_MEAN else 1.0)
    a.ignore = ignore
    a.has_ignore = has_ignore
    a.dtype = X.dtype
    a.path = _sl_path
    if samples > 0:
        with nogil:
            err = fdl_cuda_softmax_cross_entropy(&a, <void *>stream)
        check(err, func)
    if red == _SL_RED_NONE:
        loss = Lout.obj
    else:
        loss = _sl_finish(parts, nparts, red, <double>samples, count_dev, like, func)
    if return_grad:
        return loss, G.obj
    return loss


# --------------------------------------------------------------------------------------
# cross_entropy, cross_entropy_grad, mse, mse_grad

cdef tuple _sl_class_pair(object y_true, object y_pred, str func):
    cdef DevArr T, P
    T, P = _sl_pair(y_true, y_pred, func, "y_true", "y_pred")
    if P.ndim == 0:
        raise ValueError(f"fastdl.{func}: y_true and y_pred must have at least one dimension "
                         f"(the class axis, last), got shape ()")
    return T, P


cdef object _sl_map(DevArr T, DevArr P, int op, double scale, str func):
    cdef DevArr R = dev_new(T, T.shape, T.dtype, func)
    cdef int err = 0
    if T.size == 0:
        return R.obj
    T = dev_contig(T, func)
    P = dev_contig(P, func)
    with nogil:
        err = fdl_cuda_sl_map(<const void *>T.ptr, <const void *>P.ptr, <void *>R.ptr, T.size,
                              op, scale, T.dtype, <void *>T.stream)
    check(err, func)
    return R.obj


def cross_entropy(y_true, y_pred, reduction='sum'):
    """GPU twin of fastdl.cross_entropy (class axis last; y_true and y_pred of one dtype)."""
    cdef str func = "cross_entropy"
    cdef int red = _sl_reduction(reduction, func)
    cdef DevArr T, P, L = None, like
    T, P = _sl_class_pair(y_true, y_pred, func)
    require_device(func)
    like = T
    cdef int64_t rows = 1, n = T.shape[T.ndim - 1], nparts = 0
    cdef int d, err = 0
    for d in range(T.ndim - 1):
        rows *= T.shape[d]
    if red == _SL_RED_NONE:
        L = dev_new(T, T.shape[:T.ndim - 1], T.dtype, func)
    parts = None
    if red != _SL_RED_NONE and rows > 0:
        nparts = fdl_cuda_xent_blocks(rows, n)
        parts = DeviceArray((nparts,), np.float64, T.stream)
    cdef void *loss_ptr = <void *>L.ptr if L is not None else NULL
    cdef double *parts_ptr = <double *>_sl_ptr(parts)
    if rows > 0:
        T = dev_contig(T, func)
        P = dev_contig(P, func)
        with nogil:
            err = fdl_cuda_cross_entropy(<const void *>T.ptr, <const void *>P.ptr, loss_ptr,
                                         parts_ptr, rows, n, T.dtype, <void *>T.stream)
        check(err, func)
    if red == _SL_RED_NONE:
        return L.obj
    return _sl_finish(parts, nparts, red, <double>rows, None, like, func)


def cross_entropy_grad(y_true, y_pred, reduction='sum'):
    """GPU twin of fastdl.cross_entropy_grad."""
    cdef str func = "cross_entropy_grad"
    cdef int red = _sl_reduction(reduction, func)
    cdef DevArr T, P
    T, P = _sl_class_pair(y_true, y_pred, func)
    require_device(func)
    cdef int64_t rows = 1
    cdef int d
    for d in range(T.ndim - 1):
        rows *= T.shape[d]
    cdef double scale = 1.0 / rows if (red == _SL_RED_MEAN and rows > 0) else 1.0
    return _sl_map(T, P, _SL_MAP_XENT_GRAD, scale, func)


def mse(y_true, y_pred, reduction='mean'):
    """GPU twin of fastdl.mse (y_true and y_pred of one dtype and shape)."""
    cdef str func = "mse"
    cdef int red = _sl_reduction(reduction, func)
    cdef DevArr T, P, like
    T, P = _sl_pair(y_true, y_pred, func, "y_true", "y_pred")
    require_device(func)
    if red == _SL_RED_NONE:
        return _sl_map(T, P, _SL_MAP_SQDIFF, 0.0, func)
    like = T
    cdef int64_t nparts = 0
    cdef int err = 0
    cdef double *parts_ptr = NULL
    parts = None
    if T.size > 0:
        T = dev_contig(T, func)
        P = dev_contig(P, func)
        nparts = fdl_cuda_mse_blocks(T.size, T.dtype)
        parts = DeviceArray((nparts,), np.float64, T.stream)
        parts_ptr = <double *>_sl_ptr(parts)
        with nogil:
            err = fdl_cuda_mse_sum(<const void *>T.ptr, <const void *>P.ptr, parts_ptr, T.size,
                                   T.dtype, <void *>T.stream)
        check(err, func)
    return _sl_finish(parts, nparts, red, <double>T.size, None, like, func)


def mse_grad(y_true, y_pred, reduction='mean'):
    """GPU twin of fastdl.mse_grad."""
    cdef str func = "mse_grad"
    cdef int red = _sl_reduction(reduction, func)
    cdef DevArr T, P
    T, P = _sl_pair(y_true, y_pred, func, "y_true", "y_pred")
    require_device(func)
    cdef double scale = 2.0 / T.size if (red == _SL_RED_MEAN and T.size > 0) else 2.0
    return _sl_map(T, P, _SL_MAP_MSE_GRAD, scale, func)


# --------------------------------------------------------------------------------------
# Host emulation of the kernels (tests on machines without a GPU): NumPy in, NumPy out, the
# kernels' arithmetic in their order (cuda/softmax_losses_host.cuh).

cdef int _sl_host_dtype(cnp.ndarray a) except -1:
    if a.dtype == np.float32:
        return FDL_CUDA_F32
    if a.dtype == np.float64:
        return FDL_CUDA_F64
    raise TypeError(f"fastdl.cuda host emulation: float32 or float64 only, got {a.dtype}")


cdef tuple _sl_shape(cnp.ndarray a):
    return (<object>a).shape


cdef void *_sl_data(cnp.ndarray a):
    return cnp.PyArray_DATA(a)


def _sl_plan(shape, axis, dtype, op, path=0):
    """(path, tpr or TX, E or TY, threads, blocks) of the kernel a shape takes: op 0 forward,
    1 backward, 2 softmax_cross_entropy."""
    cdef int tpr = 0, e = 0, threads = 0, ax = _sl_axis(axis, len(shape), "cuda._sl_plan")
    cdef int64_t blocks = 0, outer, n, inner
    outer, n, inner = _sl_lanes(tuple(shape), ax)
    cdef int p = fdl_cuda_sl_plan(outer, n, inner, dtype_code_of(dtype), op, path, &tpr, &e,
                                  &threads, &blocks)
    return p, tpr, e, threads, blocks


def _host_softmax(x, axis=-1, log=False, backward_y=None, path=0):
    """softmax / log_softmax (or, with backward_y, their backward with dy = x) as the GPU
    computes them, on the host."""
    cdef cnp.ndarray X = np.asarray(x, order="C")
    cdef cnp.ndarray Y = None
    cdef int dtype = _sl_host_dtype(X), ax = _sl_axis(axis, X.ndim, "cuda._host_softmax")
    cdef int64_t outer, n, inner
    if backward_y is not None:
        Y = np.asarray(backward_y, dtype=X.dtype, order="C")
    cdef cnp.ndarray R = np.empty_like(X)
    if X.size == 0:
        return R
    outer, n, inner = _sl_lanes(_sl_shape(X), ax)
    if Y is None:
        err = fdl_cuda_sl_host_softmax(_sl_data(X), _sl_data(R), outer, n, inner, dtype, log,
                                       path)
    else:
        err = fdl_cuda_sl_host_softmax_backward(_sl_data(X), _sl_data(Y), _sl_data(R), outer, n,
                                                inner, dtype, log, path)
    check(err, "cuda._host_softmax")
    return R


def _host_softmax_cross_entropy(logits, target, axis=-1, reduction='mean',
                                label_smoothing=0.0, ignore_index=None, return_grad=False,
                                path=0):
    """softmax_cross_entropy as the GPU computes it (per-block partials and the final sum
    included), on the host; class indices must be valid or ignore_index."""
    cdef str func = "cuda._host_softmax_cross_entropy"
    cdef int red = _sl_reduction(reduction, func)
    cdef cnp.ndarray X = np.asarray(logits, order="C")
    cdef int dtype = _sl_host_dtype(X), ax = _sl_axis(axis, X.ndim, func)
    cdef tuple shape = _sl_shape(X)
    cdef tuple sample_shape = shape[:ax] + shape[ax + 1:]
    cdef int64_t outer, n, inner, samples = 1, nparts = 0, counted
    cdef int64_t count_value
    outer, n, inner = _sl_lanes(shape, ax)
    samples = outer * inner
    tgt = np.asarray(target)
    cdef bint indices = tgt.dtype.kind in "iu"
    cdef cnp.ndarray lab = None, T = None
    cdef cnp.ndarray G = None, Lout = None, parts = None
    cdef fdl_cuda_sce_args a
    if indices:
        lab = np.asarray(tgt, dtype=np.int64, order="C")
    else:
        T = np.asarray(tgt, dtype=X.dtype, order="C")
    if return_grad:
        G = np.empty(shape, X.dtype)
    if red == _SL_RED_NONE:
        Lout = np.empty(sample_shape, X.dtype)
    counted = samples
    if indices and ignore_index is not None:
        counted = int(np.count_nonzero(lab != ignore_index))
    count_value = counted
    if red != _SL_RED_NONE and samples > 0:
        nparts = fdl_cuda_sce_blocks(outer, n, inner, dtype, path)
        parts = np.zeros(nparts, np.float64)
    a.x = _sl_data(X)
    a.t = NULL
    a.label = NULL
    if indices:
        a.label = <const int64_t *>_sl_data(lab)
    else:
        a.t = _sl_data(T)
    a.grad = _sl_data(G) if G is not None else NULL
    a.loss = _sl_data(Lout) if Lout is not None else NULL
    a.partials = <double *>_sl_data(parts) if parts is not None else NULL
    a.count = &count_value if (red == _SL_RED_MEAN and indices and ignore_index is not None) \
        else NULL
    a.outer = outer
    a.n = n
    a.inner = inner
    a.eps = _sl_label_smoothing(label_smoothing, func)
    a.gscale = ((1.0 / samples if samples > 0 else 0.0) if red == _SL_RED_MEAN else 1.0)
    a.ignore = ignore_index if ignore_index is not None else 0
    a.has_ignore = ignore_index is not None
    a.dtype = dtype
    a.path = path
    if samples > 0:
        check(fdl_cuda_sl_host_softmax_cross_entropy(&a), func)
    if red == _SL_RED_NONE:
        loss = Lout
    else:
        loss = np.empty((), X.dtype)
        check(fdl_cuda_sl_host_finish(<const double *>_sl_data(parts) if parts is not None
                                      else NULL, nparts, red == _SL_RED_MEAN, <double>counted,
                                      _sl_data(loss), dtype), func)
    return (loss, G) if return_grad else loss


def _host_cross_entropy(y_true, y_pred, reduction='sum'):
    """cross_entropy as the GPU computes it, on the host."""
    cdef str func = "cuda._host_cross_entropy"
    cdef int red = _sl_reduction(reduction, func)
    cdef cnp.ndarray P = np.asarray(y_pred, order="C")
    cdef cnp.ndarray T = np.asarray(y_true, dtype=P.dtype, order="C")
    cdef int dtype = _sl_host_dtype(P)
    cdef int64_t n = P.shape[P.ndim - 1], rows = 1, nparts = 0
    cdef int d
    for d in range(P.ndim - 1):
        rows *= P.shape[d]
    cdef cnp.ndarray L = np.empty(_sl_shape(P)[:P.ndim - 1], P.dtype)
    cdef cnp.ndarray parts = None
    if red != _SL_RED_NONE:
        nparts = fdl_cuda_xent_blocks(rows, n) if rows > 0 else 0
        parts = np.zeros(max(nparts, 1), np.float64)
    check(fdl_cuda_sl_host_cross_entropy(_sl_data(T), _sl_data(P),
                                         _sl_data(L) if red == _SL_RED_NONE else NULL,
                                         <double *>_sl_data(parts) if parts is not None
                                         else NULL, rows, n, dtype), func)
    if red == _SL_RED_NONE:
        return L
    out = np.empty((), P.dtype)
    check(fdl_cuda_sl_host_finish(<const double *>_sl_data(parts), nparts, red == _SL_RED_MEAN,
                                  <double>rows, _sl_data(out), dtype), func)
    return out


def _host_mse(y_true, y_pred, reduction='mean'):
    """mse as the GPU computes it (the per-block sums of 16-byte groups), on the host."""
    cdef str func = "cuda._host_mse"
    cdef int red = _sl_reduction(reduction, func)
    cdef cnp.ndarray P = np.asarray(y_pred, order="C")
    cdef cnp.ndarray T = np.asarray(y_true, dtype=P.dtype, order="C")
    cdef int dtype = _sl_host_dtype(P)
    if red == _SL_RED_NONE:
        return _host_map(_SL_MAP_SQDIFF, T, P, 0.0)
    cdef int64_t nparts = fdl_cuda_mse_blocks(P.size, dtype) if P.size else 0
    cdef cnp.ndarray parts = np.zeros(max(nparts, 1), np.float64)
    if P.size:
        check(fdl_cuda_sl_host_mse_sum(_sl_data(T), _sl_data(P), <double *>_sl_data(parts),
                                       P.size, dtype), func)
    out = np.empty((), P.dtype)
    check(fdl_cuda_sl_host_finish(<const double *>_sl_data(parts), nparts, red == _SL_RED_MEAN,
                                  <double>P.size, _sl_data(out), dtype), func)
    return out


def _host_map(int op, y_true, y_pred, double scale):
    """The elementwise kernels on the host: op 0 (t - p)^2, 1 (p - t) * scale, 2 -(t / p) *
    scale (0 where t == 0)."""
    cdef cnp.ndarray P = np.asarray(y_pred, order="C")
    cdef cnp.ndarray T = np.asarray(y_true, dtype=P.dtype, order="C")
    cdef cnp.ndarray R = np.empty_like(P)
    check(fdl_cuda_sl_host_map(_sl_data(T), _sl_data(P), _sl_data(R), P.size, op, scale,
                               _sl_host_dtype(P)), "cuda._host_map")
    return R
