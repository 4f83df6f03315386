# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""softmax, log_softmax and their backward along any axis (inner loops: fastdl/softmax.h).

An axis of an array is walked as lanes (``fdl_lanes``): ``outer`` groups of ``inner``
contiguous lanes of ``len`` elements. The last axis of a C array is rows (``inner == 1``);
any other axis keeps its natural layout and the kernel is vectorised across the contiguous
``inner`` lanes. A Fortran-ordered array is walked in reversed axis order (its transpose is
C-ordered), so it is never copied; any other layout that cannot be described so (a strided
last axis, a broadcast view) is copied once to C order. Results take the memory order the
input was walked in (C, or Fortran for a Fortran input).

Work items are rows, or blocks of lanes, spread over OpenMP threads (static schedule) from
PARALLEL_MIN_ELEMENTS elements on; each lane is computed by one thread in an order fixed by
its length, so results are bitwise identical for any thread count.
"""

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange

from fastdl._ext._common cimport on_device, gpu_call
from fastdl._ext._common cimport (as_float_array, common_typenum, as_typenum, check_out,
                                  may_overlap, current_threads, normalize_axis, shape_of)

cdef extern from "fastdl/softmax.h" nogil:
    enum:
        FDL_SOFTMAX, FDL_LOG_SOFTMAX, FDL_SOFTMAX_BWD, FDL_LOG_SOFTMAX_BWD
    ctypedef struct fdl_softmax_args:
        fdl_lanes x, y, out
        Py_ssize_t block
        int op
    void fdl_softmax_item_f32(const fdl_softmax_args *a, Py_ssize_t item)
    void fdl_softmax_item_f64(const fdl_softmax_args *a, Py_ssize_t item)

cnp.import_array()

# Below this many elements a call runs on one thread with no OpenMP region (DESIGN.md).
cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 32768


# --------------------------------------------------------------------------------------
# Lanes: shared with _losses through _softmax.pxd

cdef bint lanes_of(cnp.ndarray a, int axis, bint reverse, fdl_lanes *lay) noexcept:
    """Describe the lanes of a along axis, in C (or, if reverse, Fortran) axis order.

    The axes on the far side of `axis` (after it in C order) must be one contiguous block
    (the inner lanes), those on the near side must fold into one stride (outer); the axis
    itself may have any stride, except that rows (no inner axes) must be contiguous.
    """
    cdef int nd = cnp.PyArray_NDIM(a), d
    cdef int step = 1 if reverse else -1
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(a)
    cdef cnp.npy_intp *shp = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp *st = cnp.PyArray_STRIDES(a)
    cdef Py_ssize_t expected = isz, inner = 1, outer = 1, so = 0, length
    cdef bint first = True
    if not cnp.PyArray_ISALIGNED(a):
        return False
    d = 0 if reverse else nd - 1
    while d != axis:
        if shp[d] != 1:
            if st[d] != expected:
                return False
            expected *= shp[d]
            inner *= shp[d]
        d += step
    length = shp[axis]
    lay.sl = st[axis] // isz if length > 1 else inner
    if inner == 1 and length > 1 and lay.sl != 1:
        return False
    d = axis + step
    while 0 <= d < nd:
        if shp[d] != 1:
            if first:
                so = st[d]
                first = False
            elif st[d] != expected:
                return False
            expected = st[d] * shp[d]
            outer *= shp[d]
        d += step
    lay.data = <char *>cnp.PyArray_DATA(a)
    lay.outer = outer
    lay.len = length
    lay.inner = inner
    lay.so = so // isz
    return True


cdef bint prefer_reverse(cnp.ndarray a, int axis) noexcept:
    """Walk a in reversed (Fortran) axis order when only that describes it without a copy."""
    cdef fdl_lanes lay
    if lanes_of(a, axis, False, &lay):
        return False
    return lanes_of(a, axis, True, &lay)


cdef cnp.ndarray lanes_input(cnp.ndarray a, int axis, bint reverse, fdl_lanes *lay):
    """a itself when its lanes can be walked in place, else a copy made once."""
    if lanes_of(a, axis, reverse, lay):
        return a
    # np.array(copy=True), not ascontiguousarray: that returns misaligned data unchanged.
    a = np.array(a, order="F" if reverse else "C", copy=True)
    if not lanes_of(a, axis, reverse, lay):
        raise RuntimeError("fastdl internal error: a contiguous copy has no lanes")
    return a


cdef cnp.ndarray lanes_empty(tuple shape, int typenum, bint reverse, int axis,
                             fdl_lanes *lay):
    """A fresh result (C order, or Fortran when walking in reverse) and its lanes."""
    cdef int nd = len(shape), d
    cdef cnp.npy_intp dims[64]
    for d in range(nd):
        dims[d] = shape[d]
    cdef cnp.ndarray r = cnp.PyArray_EMPTY(nd, dims, typenum, 1 if reverse else 0)
    if not lanes_of(r, axis, reverse, lay):
        raise RuntimeError("fastdl internal error: a fresh array has no lanes")
    return r


cdef bint lanes_disjoint(const fdl_lanes *lay) noexcept:
    """Whether no two elements of the lanes share memory (conservative), so that an `out`
    can be written by several threads."""
    cdef Py_ssize_t sl = abs(lay.sl), so = abs(lay.so)
    if lay.len > 1 and sl < lay.inner:
        return False
    if lay.outer > 1 and so < (lay.len - 1) * sl + lay.inner:
        return False
    return True


cdef bint same_lanes(const fdl_lanes *a, const fdl_lanes *b) noexcept:
    """Same memory walked the same way: an in-place call (every kernel reads an element
    before it writes the same element, and no other)."""
    return (a.data == b.data and a.outer == b.outer and a.len == b.len and
            a.inner == b.inner and (a.outer <= 1 or a.so == b.so) and
            (a.len <= 1 or a.sl == b.sl))


cdef int thread_count(Py_ssize_t elements, Py_ssize_t items) noexcept:
    """Threads for a call: 1 (no OpenMP region at all) below PARALLEL_MIN_ELEMENTS."""
    cdef int n
    if elements < PARALLEL_MIN_ELEMENTS or items < 2:
        return 1
    n = current_threads()
    return <int>items if items < n else n


# --------------------------------------------------------------------------------------
# Entry points

cdef cnp.ndarray _result(object target, tuple shape, int typenum, bint rev, int ax,
                         fdl_softmax_args *args, cnp.ndarray A, cnp.ndarray B):
    """`out` itself when the kernel can write it in place, else a fresh array."""
    cdef cnp.ndarray t
    if target is not None:
        t = <cnp.ndarray>target
        if (lanes_of(t, ax, rev, &args.out) and lanes_disjoint(&args.out)
                and (not may_overlap(t, A) or same_lanes(&args.out, &args.x))
                and (B is None or not may_overlap(t, B) or same_lanes(&args.out, &args.y))):
            return t
    return lanes_empty(shape, typenum, rev, ax, &args.out)


cdef object _run(object x, object y, object axis, object out, int op, str func,
                 str xname, str yname):
    """The whole family: validate, describe the lanes, run the items, honour `out`."""
    cdef cnp.ndarray X = as_float_array(x, func, xname)
    cdef cnp.ndarray Y = None
    cdef int typenum
    if y is None:
        typenum = cnp.PyArray_TYPE(X)
    else:
        Y = as_float_array(y, func, yname)
        typenum = common_typenum(X, Y)
        X = as_typenum(X, typenum)
        Y = as_typenum(Y, typenum)
        if shape_of(X) != shape_of(Y):
            raise ValueError(f"fastdl.{func}: {xname} has shape {shape_of(X)} and {yname} has "
                             f"shape {shape_of(Y)}; they must be equal")
    cdef int nd = cnp.PyArray_NDIM(X)
    cdef int ax = normalize_axis(axis, nd, func)
    cdef tuple shape = shape_of(X)
    cdef object target = None
    if out is not None:
        target = check_out(out, shape, typenum, func)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(X)
    cdef fdl_softmax_args args
    cdef cnp.ndarray R
    if size == 0:
        if target is not None:
            return target
        return np.empty(shape, dtype=X.dtype)

    cdef bint rev = prefer_reverse(X, ax)
    X = lanes_input(X, ax, rev, &args.x)
    if Y is not None:
        Y = lanes_input(Y, ax, rev, &args.y)
    else:
        args.y.data = NULL
    R = _result(target, shape, typenum, rev, ax, &args, X, Y)
    args.op = op
    args.block = fdl_sm_block(args.x.len, args.x.inner, cnp.PyArray_ITEMSIZE(X))
    cdef Py_ssize_t items = fdl_sm_items(args.x.outer, args.x.inner, args.block), it
    cdef int nth = thread_count(size, items)
    cdef bint f32 = typenum == cnp.NPY_FLOAT
    with nogil:
        if nth == 1:
            if f32:
                for it in range(items):
                    fdl_softmax_item_f32(&args, it)
            else:
                for it in range(items):
                    fdl_softmax_item_f64(&args, it)
        elif f32:
            for it in prange(items, schedule='static', num_threads=nth):
                fdl_softmax_item_f32(&args, it)
        else:
            for it in prange(items, schedule='static', num_threads=nth):
                fdl_softmax_item_f64(&args, it)
    if target is not None and R is not target:
        np.copyto(target, R)
        return target
    return R


def softmax(x, axis=-1, *, out=None):
    """Softmax along ``axis``: ``exp(x - max) / sum(exp(x - max))`` (the cheat sheet's
    ``exp(x_i) / sum_j exp(x_j)``, computed stably).

    ``x`` of any shape, layout and float dtype (integers and bools promote to float64);
    ``axis`` any valid axis (negative counts from the end). Returns an array of x's shape
    and dtype, or ``out`` (which may be ``x`` itself, for an in-place softmax).

    Stable for any finite logits (``exp`` never overflows). A lane with a NaN or ``+inf``
    gives NaN, a lane of ``-inf`` with one finite value gives that value probability 1, and
    a lane of all ``-inf`` gives NaN, as the formula does (``-inf - -inf``).

    Raises ``TypeError`` for another dtype or a wrong ``out`` dtype, ``ValueError`` for an
    axis out of range or a wrong ``out`` shape.
    """
    if on_device(x):
        return gpu_call("softmax", (), {"x": x, "axis": axis, "out": out})
    return _run(x, None, axis, out, FDL_SOFTMAX, "softmax", "x", "")


def log_softmax(x, axis=-1, *, out=None):
    """Log-softmax along ``axis``: ``(x - max) - log(sum(exp(x - max)))``.

    Same arguments, results and errors as ``softmax``; ``-inf`` logits give ``-inf``, a
    lane of all ``-inf`` or with NaN or ``+inf`` gives NaN.
    """
    if on_device(x):
        return gpu_call("log_softmax", (), {"x": x, "axis": axis, "out": out})
    return _run(x, None, axis, out, FDL_LOG_SOFTMAX, "log_softmax", "x", "")


def softmax_backward(dy, y, axis=-1, *, out=None):
    """Gradient of softmax: ``dx = y * (dy - sum(dy * y, axis))``, y = ``softmax(x, axis)``.

    ``dy`` and ``y`` must have the same shape (mixed float32/float64 promote to float64).
    Returns ``dx`` of that shape, or ``out`` (which may be ``dy`` or ``y``).
    Raises ``ValueError`` for different shapes (naming both) or a bad axis.
    """
    if on_device(dy):
        return gpu_call("softmax_backward", (), {"dy": dy, "y": y, "axis": axis, "out": out})
    return _run(dy, y, axis, out, FDL_SOFTMAX_BWD, "softmax_backward", "dy", "y")


def log_softmax_backward(dy, y, axis=-1, *, out=None):
    """Gradient of log_softmax: ``dx = dy - exp(y) * sum(dy, axis)``, y =
    ``log_softmax(x, axis)``.

    ``dy`` and ``y`` must have the same shape. Returns ``dx``, or ``out`` (which may be
    ``dy`` or ``y``). Raises ``ValueError`` for different shapes (naming both) or a bad axis.
    """
    if on_device(dy):
        return gpu_call("log_softmax_backward", (), {"dy": dy, "y": y, "axis": axis, "out": out})
    return _run(dy, y, axis, out, FDL_LOG_SOFTMAX_BWD, "log_softmax_backward", "dy", "y")
