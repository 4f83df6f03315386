# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Losses: cross_entropy, mse, their gradients, and the fused softmax_cross_entropy.

Inner loops: fastdl/softmax.h. The class axis is walked as lanes (see _softmax); elementwise
gradients and the mse sum are walked flat, in fixed items of FDL_FLAT_ITEM elements.

Determinism: a loss is computed per sample (or per item of a flat sum) in double, written to
a buffer, and the buffer is summed pairwise in an order that depends only on its length, so
every result is bitwise identical for any thread count.
"""

import math
import operator

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int64_t

from fastdl._ext._common cimport on_device, gpu_call
from fastdl._ext._common cimport (as_float_array, common_typenum, as_typenum, normalize_axis,
                                  shape_of)
from fastdl._ext._softmax cimport (fdl_lanes, fdl_sm_block, fdl_sm_items, prefer_reverse,
                                   lanes_input, lanes_empty, thread_count)

cdef extern from "fastdl/softmax.h" nogil:
    ctypedef struct fdl_xent_args:
        fdl_lanes x, t, g
        const int64_t *label
        double *loss
        Py_ssize_t block
        double eps, gscale
        int has_ignore
        int64_t ignore
    ctypedef struct fdl_plain_xent_args:
        fdl_lanes t, p
        double *loss
        Py_ssize_t block
    enum:
        FDL_FLAT_ITEM
    double fdl_pairwise_sum(const double *v, Py_ssize_t n)
    Py_ssize_t fdl_check_labels(const int64_t *label, Py_ssize_t n, Py_ssize_t classes,
                                int has_ignore, int64_t ignore, Py_ssize_t *counted,
                                Py_ssize_t *first_bad)
    void fdl_xent_item_f32(const fdl_xent_args *a, Py_ssize_t item)
    void fdl_xent_item_f64(const fdl_xent_args *a, Py_ssize_t item)
    void fdl_plain_xent_item_f32(const fdl_plain_xent_args *a, Py_ssize_t item)
    void fdl_plain_xent_item_f64(const fdl_plain_xent_args *a, Py_ssize_t item)
    void fdl_xent_grad_f32(const float *t, const float *p, float *out, Py_ssize_t n, float s)
    void fdl_xent_grad_f64(const double *t, const double *p, double *out, Py_ssize_t n,
                           double s)
    double fdl_mse_sum_f32(const float *t, const float *p, Py_ssize_t n)
    double fdl_mse_sum_f64(const double *t, const double *p, Py_ssize_t n)
    void fdl_mse_none_f32(const float *t, const float *p, float *out, Py_ssize_t n)
    void fdl_mse_none_f64(const double *t, const double *p, double *out, Py_ssize_t n)
    void fdl_mse_grad_f32(const float *t, const float *p, float *out, Py_ssize_t n, float s)
    void fdl_mse_grad_f64(const double *t, const double *p, double *out, Py_ssize_t n,
                          double s)

cnp.import_array()

cdef enum Reduction:
    RED_NONE = 0
    RED_MEAN = 1
    RED_SUM = 2

cdef enum FlatOp:
    MSE_SUM = 0
    MSE_NONE = 1
    MSE_GRAD = 2
    XENT_GRAD = 3


# --------------------------------------------------------------------------------------
# validation helpers

cdef int _reduction(object reduction, str func) except -1:
    if isinstance(reduction, str):
        if reduction == "none":
            return RED_NONE
        if reduction == "mean":
            return RED_MEAN
        if reduction == "sum":
            return RED_SUM
    raise ValueError(f"fastdl.{func}: reduction must be 'none', 'mean' or 'sum', got "
                     f"{reduction!r}")


cdef tuple _float_pair(object y_true, object y_pred, str func):
    """Both arguments as arrays of one float dtype and one shape."""
    cdef cnp.ndarray T = as_float_array(y_true, func, "y_true")
    cdef cnp.ndarray P = as_float_array(y_pred, func, "y_pred")
    cdef int typenum = common_typenum(T, P)
    T = as_typenum(T, typenum)
    P = as_typenum(P, typenum)
    if shape_of(T) != shape_of(P):
        raise ValueError(f"fastdl.{func}: y_true has shape {shape_of(T)} and y_pred has shape "
                         f"{shape_of(P)}; they must be equal")
    return T, P


cdef object _scalar(double value, int typenum):
    """A NumPy scalar of the result dtype (as np.sum returns)."""
    return np.float32(value) if typenum == cnp.NPY_FLOAT else np.float64(value)


cdef object _per_sample(cnp.ndarray buf, tuple shape, bint fortran, int typenum):
    """Per-sample losses (double, in lane order) as an array of `shape` and the result
    dtype; a single sample (0-d) as a NumPy scalar."""
    cdef object r = buf.reshape(shape, order="F" if fortran else "C").astype(
        np.float32 if typenum == cnp.NPY_FLOAT else np.float64)
    if len(shape) == 0:
        return r[()]
    return r


# --------------------------------------------------------------------------------------
# flat (elementwise) kernels: both inputs walked in one memory order

cdef inline bint _aligned_contig(cnp.ndarray a, bint fortran) noexcept:
    if not cnp.PyArray_ISALIGNED(a):
        return False
    return cnp.PyArray_IS_F_CONTIGUOUS(a) if fortran else cnp.PyArray_IS_C_CONTIGUOUS(a)


cdef tuple _flat_operands(cnp.ndarray T, cnp.ndarray P):
    """(T, P, fortran): both contiguous in the same order, copied to C order only if not."""
    if _aligned_contig(T, False) and _aligned_contig(P, False):
        return T, P, False
    if _aligned_contig(T, True) and _aligned_contig(P, True):
        return T, P, True
    if not _aligned_contig(T, False):
        T = np.array(T, order="C", copy=True)
    if not _aligned_contig(P, False):
        P = np.array(P, order="C", copy=True)
    return T, P, False


cdef void _flat_item(int op, bint f32, char *t, char *p, char *out, double *sums,
                     Py_ssize_t n, Py_ssize_t it, double scale) noexcept nogil:
    cdef Py_ssize_t i0 = it * FDL_FLAT_ITEM
    cdef Py_ssize_t m = n - i0 if n - i0 < FDL_FLAT_ITEM else FDL_FLAT_ITEM
    if f32:
        if op == MSE_SUM:
            sums[it] = fdl_mse_sum_f32(<float *>t + i0, <float *>p + i0, m)
        elif op == MSE_NONE:
            fdl_mse_none_f32(<float *>t + i0, <float *>p + i0, <float *>out + i0, m)
        elif op == MSE_GRAD:
            fdl_mse_grad_f32(<float *>t + i0, <float *>p + i0, <float *>out + i0, m,
                             <float>scale)
        else:
            fdl_xent_grad_f32(<float *>t + i0, <float *>p + i0, <float *>out + i0, m,
                              <float>scale)
    else:
        if op == MSE_SUM:
            sums[it] = fdl_mse_sum_f64(<double *>t + i0, <double *>p + i0, m)
        elif op == MSE_NONE:
            fdl_mse_none_f64(<double *>t + i0, <double *>p + i0, <double *>out + i0, m)
        elif op == MSE_GRAD:
            fdl_mse_grad_f64(<double *>t + i0, <double *>p + i0, <double *>out + i0, m, scale)
        else:
            fdl_xent_grad_f64(<double *>t + i0, <double *>p + i0, <double *>out + i0, m,
                              scale)


cdef object _flat(int op, cnp.ndarray T, cnp.ndarray P, double scale):
    """Run a flat op: returns the output array, or (MSE_SUM) the sum as a Python float."""
    cdef int typenum = cnp.PyArray_TYPE(P)
    cdef tuple shape = shape_of(P)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(P)
    cdef bint fortran
    T, P, fortran = _flat_operands(T, P)
    cdef cnp.ndarray out = None
    cdef char *po = NULL
    cdef Py_ssize_t items = (n + FDL_FLAT_ITEM - 1) // FDL_FLAT_ITEM, it
    cdef cnp.ndarray sums = None
    cdef double *ps = NULL
    if op == MSE_SUM:
        sums = np.empty(items, dtype=np.float64)
        ps = <double *>cnp.PyArray_DATA(sums)
    else:
        out = np.empty(shape, dtype=P.dtype, order="F" if fortran else "C")
        po = <char *>cnp.PyArray_DATA(out)
    cdef char *pt = <char *>cnp.PyArray_DATA(T)
    cdef char *pp = <char *>cnp.PyArray_DATA(P)
    cdef bint f32 = typenum == cnp.NPY_FLOAT
    cdef int nth = thread_count(n, items)
    cdef double total = 0.0
    with nogil:
        if nth == 1:
            for it in range(items):
                _flat_item(op, f32, pt, pp, po, ps, n, it, scale)
        else:
            for it in prange(items, schedule='static', num_threads=nth):
                _flat_item(op, f32, pt, pp, po, ps, n, it, scale)
        if op == MSE_SUM:
            total = fdl_pairwise_sum(ps, items)
    if op == MSE_SUM:
        return total
    return out


# --------------------------------------------------------------------------------------
# mse

def mse(y_true, y_pred, reduction='mean'):
    """Mean squared error, the cheat sheet's ``np.mean((y_true - y_pred)**2)``.

    ``reduction='mean'`` (default) averages over all elements, ``'sum'`` sums them (both
    return a NumPy scalar of the result dtype), ``'none'`` returns the elementwise
    ``(y_true - y_pred)**2``. The mean of an empty array is NaN (as NumPy's).

    ``y_true`` and ``y_pred`` must have the same shape (no broadcasting): ``ValueError``
    naming both otherwise; ``TypeError`` for a non-numeric dtype; ``ValueError`` for an
    unknown reduction.
    """
    if on_device(y_true):
        return gpu_call("mse", (), {"y_true": y_true, "y_pred": y_pred, "reduction": reduction})
    cdef int red = _reduction(reduction, "mse")
    T, P = _float_pair(y_true, y_pred, "mse")
    cdef int typenum = cnp.PyArray_TYPE(P)
    cdef double total, n = <double>cnp.PyArray_SIZE(P)
    if red == RED_NONE:
        return _flat(MSE_NONE, T, P, 0.0)
    total = _flat(MSE_SUM, T, P, 0.0)
    if red == RED_MEAN:
        total = total / n
    return _scalar(total, typenum)


def mse_grad(y_true, y_pred, reduction='mean'):
    """Gradient of ``mse`` with respect to ``y_pred``: ``2 * (y_pred - y_true) / N`` for
    ``'mean'`` (N = number of elements), ``2 * (y_pred - y_true)`` for ``'sum'`` and
    ``'none'`` (elementwise derivative of each term). Same arguments and errors as ``mse``.
    """
    if on_device(y_true):
        return gpu_call("mse_grad", (), {"y_true": y_true, "y_pred": y_pred, "reduction": reduction})
    cdef int red = _reduction(reduction, "mse_grad")
    T, P = _float_pair(y_true, y_pred, "mse_grad")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(P)
    cdef double scale = 2.0 / n if (red == RED_MEAN and n > 0) else 2.0
    return _flat(MSE_GRAD, T, P, scale)


# --------------------------------------------------------------------------------------
# cross_entropy on probabilities

cdef tuple _class_pair(object y_true, object y_pred, str func):
    T, P = _float_pair(y_true, y_pred, func)
    if cnp.PyArray_NDIM(<cnp.ndarray>P) == 0:
        raise ValueError(f"fastdl.{func}: y_true and y_pred must have at least one dimension "
                         f"(the class axis, last), got shape ()")
    return T, P


def cross_entropy(y_true, y_pred, reduction='sum'):
    """Cross-entropy of predicted probabilities, the cheat sheet's
    ``-np.sum(y_true * np.log(y_pred))``, the class axis being the last.

    ``reduction='sum'`` (default) reproduces the cheat sheet; ``'mean'`` divides by the
    number of samples (the product of the leading dimensions); ``'none'`` returns the loss
    of each sample (shape ``y_pred.shape[:-1]``). A term whose ``y_true`` is 0 contributes 0
    even where ``y_pred`` is 0 (``log(0)`` is guarded); ``y_pred == 0`` under a positive
    target gives ``inf``, as the formula does.

    Raises ``ValueError`` for shapes that differ (naming both), 0-d inputs or an unknown
    reduction; ``TypeError`` for a non-numeric dtype.
    """
    if on_device(y_true):
        return gpu_call("cross_entropy", (), {"y_true": y_true, "y_pred": y_pred, "reduction": reduction})
    cdef int red = _reduction(reduction, "cross_entropy")
    cdef cnp.ndarray T, P
    T, P = _class_pair(y_true, y_pred, "cross_entropy")
    cdef int typenum = cnp.PyArray_TYPE(P), nd = cnp.PyArray_NDIM(P), ax = nd - 1
    cdef tuple shape = shape_of(P), sample_shape = shape[:nd - 1]
    cdef Py_ssize_t samples = 1, d
    for d in range(nd - 1):
        samples *= shape[d]
    cdef cnp.ndarray buf
    cdef fdl_plain_xent_args args
    cdef bint rev = False
    cdef Py_ssize_t items, it
    cdef int nth
    cdef double total
    if cnp.PyArray_SIZE(P) == 0:
        buf = np.zeros(samples, dtype=np.float64)
    else:
        buf = np.empty(samples, dtype=np.float64)
        rev = prefer_reverse(P, ax)
        P = lanes_input(P, ax, rev, &args.p)
        T = lanes_input(T, ax, rev, &args.t)
        args.loss = <double *>cnp.PyArray_DATA(buf)
        args.block = fdl_sm_block(args.p.len, args.p.inner, cnp.PyArray_ITEMSIZE(P))
        items = fdl_sm_items(args.p.outer, args.p.inner, args.block)
        nth = thread_count(cnp.PyArray_SIZE(P), items)
        with nogil:
            if nth == 1:
                if typenum == cnp.NPY_FLOAT:
                    for it in range(items):
                        fdl_plain_xent_item_f32(&args, it)
                else:
                    for it in range(items):
                        fdl_plain_xent_item_f64(&args, it)
            elif typenum == cnp.NPY_FLOAT:
                for it in prange(items, schedule='static', num_threads=nth):
                    fdl_plain_xent_item_f32(&args, it)
            else:
                for it in prange(items, schedule='static', num_threads=nth):
                    fdl_plain_xent_item_f64(&args, it)
    if red == RED_NONE:
        return _per_sample(buf, sample_shape, rev, typenum)
    with nogil:
        total = fdl_pairwise_sum(<double *>cnp.PyArray_DATA(buf), samples)
    if red == RED_MEAN:
        total = total / <double>samples
    return _scalar(total, typenum)


def cross_entropy_grad(y_true, y_pred, reduction='sum'):
    """Gradient of ``cross_entropy`` with respect to ``y_pred``: ``-y_true / y_pred``
    (divided by the number of samples for ``'mean'``; ``'none'`` gives the same elementwise
    derivative as ``'sum'``), exactly 0 where ``y_true`` is 0. Same arguments and errors as
    ``cross_entropy``.
    """
    if on_device(y_true):
        return gpu_call("cross_entropy_grad", (), {"y_true": y_true, "y_pred": y_pred, "reduction": reduction})
    cdef int red = _reduction(reduction, "cross_entropy_grad")
    cdef cnp.ndarray T, P
    T, P = _class_pair(y_true, y_pred, "cross_entropy_grad")
    cdef int nd = cnp.PyArray_NDIM(P), d
    cdef Py_ssize_t samples = 1
    for d in range(nd - 1):
        samples *= P.shape[d]
    cdef double scale = 1.0 / samples if (red == RED_MEAN and samples > 0) else 1.0
    return _flat(XENT_GRAD, T, P, scale)


# --------------------------------------------------------------------------------------
# softmax_cross_entropy

cdef double _label_smoothing(object value, str func) except? -1.0:
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


cdef cnp.ndarray _labels(cnp.ndarray tgt, bint fortran):
    """Class indices as aligned contiguous int64 in the lanes' order (a copy only if
    needed). uint64 values beyond int64 are caught first, never wrapped."""
    if cnp.PyArray_TYPE(tgt) == cnp.NPY_UINT64 and cnp.PyArray_SIZE(tgt) > 0:
        if int(tgt.max()) > 0x7FFFFFFFFFFFFFFF:
            raise OverflowError
    cdef cnp.ndarray lab = np.asarray(tgt, dtype=np.int64, order="F" if fortran else "C")
    if not _aligned_contig(lab, fortran):
        lab = np.array(lab, dtype=np.int64, order="F" if fortran else "C", copy=True)
    return lab


def softmax_cross_entropy(logits, target, axis=-1, reduction='mean', label_smoothing=0.0,
                          ignore_index=None, return_grad=False):
    """Fused, stable softmax + cross-entropy (PyTorch's ``cross_entropy`` on logits).

    ``logits`` of any shape with the classes along ``axis`` (C classes). ``target`` is
    either integer class indices of shape ``logits.shape`` without ``axis`` (any integer
    dtype; each in ``[0, C)`` or equal to ``ignore_index``), or float probabilities of the
    logits' shape. Per sample, with ``lse = log(sum(exp(logits)))`` computed stably:

    * class index k: ``(1 - eps) * (lse - x_k) + eps * (lse - mean(x))``, i.e. the
      cross-entropy against ``(1 - eps) * onehot(k) + eps / C`` (label smoothing as PyTorch);
    * probabilities p: ``sum_c p'_c * (lse - x_c)`` with ``p' = (1 - eps) * p + eps / C``; a
      class with ``p' == 0`` contributes 0 even where its logit is ``-inf`` (PyTorch gives
      NaN there: ``0 * -inf``).

    ``reduction``: ``'mean'`` (default) divides the sum by the number of samples that are
    not ignored (all ignored: NaN, as PyTorch), ``'sum'``, or ``'none'`` (the per-sample
    losses, 0 for an ignored sample). A single value is a NumPy scalar of the result dtype.
    ``ignore_index`` (an int, class-index targets only) marks samples that contribute
    nothing (their gradient is exactly 0, even where their logits are NaN).

    ``return_grad=True`` returns ``(loss, dlogits)`` computed in the same pass over the
    logits: ``dlogits = (softmax(x) * sum(target') - target') * scale``, ``scale`` being 1
    for ``'sum'``/``'none'`` and ``1 / (samples counted)`` for ``'mean'``.

    Raises ``TypeError`` for a float16/complex/object/bool target or logits dtype, a
    non-integer ``ignore_index``; ``ValueError`` for a target of the wrong shape (naming
    both shapes), a class index out of range (never read out of bounds), a bad axis,
    reduction or ``label_smoothing`` (NaN or outside [0, 1]), or ``ignore_index`` with
    probability targets.
    """
    if on_device(logits):
        return gpu_call("softmax_cross_entropy", (), {"logits": logits, "target": target, "axis": axis, "reduction": reduction, "label_smoothing": label_smoothing, "ignore_index": ignore_index, "return_grad": return_grad})
    cdef str func = "softmax_cross_entropy"
    cdef int red = _reduction(reduction, func)
    cdef double eps = _label_smoothing(label_smoothing, func)
    cdef cnp.ndarray X = as_float_array(logits, func, "logits")
    cdef int nd = cnp.PyArray_NDIM(X)
    cdef int ax = normalize_axis(axis, nd, func)
    cdef tuple shape = shape_of(X)
    cdef tuple sample_shape = shape[:ax] + shape[ax + 1:]
    cdef Py_ssize_t classes = shape[ax], samples = 1, d
    for d in range(nd):
        if d != ax:
            samples *= shape[d]

    cdef cnp.ndarray tgt, T = None, lab = None
    if isinstance(target, cnp.ndarray):
        tgt = <cnp.ndarray>target
    else:
        try:
            tgt = np.asarray(target)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"fastdl.{func}: argument 'target' cannot be converted to an "
                            f"array ({exc})") from None
    cdef bint indices = cnp.PyArray_ISINTEGER(tgt)
    cdef bint has_ignore = ignore_index is not None
    cdef int64_t ignore = 0
    if cnp.PyArray_ISBOOL(tgt):
        raise TypeError(f"fastdl.{func}: target has dtype bool; class indices must be "
                        "integers, probabilities float32/float64")
    if has_ignore:
        try:
            ignore = operator.index(ignore_index)
        except TypeError:
            raise TypeError(f"fastdl.{func}: ignore_index must be an int or None, got "
                            f"{type(ignore_index).__name__}") from None
        except OverflowError:
            raise ValueError(f"fastdl.{func}: ignore_index {ignore_index} is out of the "
                             "int64 range") from None
    cdef int typenum
    if indices:
        typenum = cnp.PyArray_TYPE(X)
        if shape_of(tgt) != sample_shape:
            raise ValueError(f"fastdl.{func}: target has shape {shape_of(tgt)} and logits have "
                             f"shape {shape}; class indices must have shape {sample_shape} "
                             f"(the logits' shape without axis {ax}), probabilities the "
                             f"logits' shape")
    else:
        T = as_float_array(tgt, func, "target")
        typenum = common_typenum(X, T)
        X = as_typenum(X, typenum)
        T = as_typenum(T, typenum)
        if shape_of(T) != shape:
            raise ValueError(f"fastdl.{func}: target has shape {shape_of(T)} and logits have "
                             f"shape {shape}; probabilities must have the logits' shape (class "
                             f"indices, an integer array, the shape {sample_shape})")
        if has_ignore:
            raise ValueError(f"fastdl.{func}: ignore_index applies to class-index targets "
                             "only, not to probabilities (as in PyTorch)")

    cdef Py_ssize_t size = cnp.PyArray_SIZE(X)
    cdef bint rev = prefer_reverse(X, ax) if size > 0 else False
    cdef Py_ssize_t counted = samples, bad = 0, first_bad = -1
    cdef int64_t *plab = NULL
    if indices:
        try:
            lab = _labels(tgt, rev)
        except OverflowError:
            raise ValueError(f"fastdl.{func}: target contains class indices outside "
                             f"[0, {classes})") from None
        plab = <int64_t *>cnp.PyArray_DATA(lab)
        with nogil:
            bad = fdl_check_labels(plab, samples, classes, has_ignore, ignore, &counted,
                                   &first_bad)
        if bad:
            raise ValueError(f"fastdl.{func}: target contains {bad} class "
                             f"{'index' if bad == 1 else 'indices'} outside [0, {classes}) "
                             f"(the first is {int(lab.reshape(-1, order='A')[first_bad])})"
                             + ("" if not has_ignore else
                                f" that {'is' if bad == 1 else 'are'} not ignore_index "
                                f"({ignore})"))

    # Everything is valid: compute.
    cdef fdl_xent_args args
    cdef cnp.ndarray buf = np.zeros(samples, dtype=np.float64)
    cdef cnp.ndarray G = None
    cdef Py_ssize_t items, it
    cdef int nth
    args.label = plab
    args.loss = <double *>cnp.PyArray_DATA(buf)
    args.eps = eps
    args.gscale = (1.0 / counted if counted > 0 else 0.0) if red == RED_MEAN else 1.0
    args.has_ignore = has_ignore
    args.ignore = ignore
    if size == 0:
        if return_grad:
            G = np.zeros(shape, dtype=np.float32 if typenum == cnp.NPY_FLOAT else np.float64)
    else:
        X = lanes_input(X, ax, rev, &args.x)
        if T is not None:
            T = lanes_input(T, ax, rev, &args.t)
        else:
            args.t.data = NULL
        if return_grad:
            G = lanes_empty(shape, typenum, rev, ax, &args.g)
        else:
            args.g.data = NULL
        args.block = fdl_sm_block(args.x.len, args.x.inner, cnp.PyArray_ITEMSIZE(X))
        items = fdl_sm_items(args.x.outer, args.x.inner, args.block)
        nth = thread_count(size, items)
        with nogil:
            if nth == 1:
                if typenum == cnp.NPY_FLOAT:
                    for it in range(items):
                        fdl_xent_item_f32(&args, it)
                else:
                    for it in range(items):
                        fdl_xent_item_f64(&args, it)
            elif typenum == cnp.NPY_FLOAT:
                for it in prange(items, schedule='static', num_threads=nth):
                    fdl_xent_item_f32(&args, it)
            else:
                for it in prange(items, schedule='static', num_threads=nth):
                    fdl_xent_item_f64(&args, it)

    cdef object loss
    cdef double total
    if red == RED_NONE:
        loss = _per_sample(buf, sample_shape, rev, typenum)
    else:
        with nogil:
            total = fdl_pairwise_sum(args.loss, samples)
        if red == RED_MEAN:
            total = total / <double>counted
        loss = _scalar(total, typenum)
    if return_grad:
        return loss, G
    return loss
