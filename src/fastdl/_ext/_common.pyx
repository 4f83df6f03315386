# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The one validation path of fastdl (API.md, "General rules").

float32 and float64 are computed natively; integers and bools promote to float64; any other
dtype raises TypeError naming the argument. `out=` must match shape and dtype exactly and be
writeable. These helpers run before anything is written, so a failed call changes nothing.
"""

import operator

import numpy as np
cimport numpy as cnp
from fastdl._ext._blas cimport DT_FLOAT32, DT_FLOAT64

cdef extern from "fastdl/threads.h" nogil:
    int fdl_omp_max_threads()

cnp.import_array()

cdef object _float64 = np.dtype(np.float64)


cdef cnp.ndarray as_float_array(object x, str func, str name):
    """x as a native-byte-order float32/float64 ndarray, copying only when the dtype says so."""
    cdef cnp.ndarray arr
    cdef int t
    if type(x) is cnp.ndarray:
        arr = <cnp.ndarray>x
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"fastdl.{func}: argument '{name}' cannot be converted to an "
                            f"array ({exc})") from None
    t = cnp.PyArray_TYPE(arr)
    if t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE:
        if not cnp.PyArray_ISNOTSWAPPED(arr):
            return arr.astype(arr.dtype.newbyteorder("="))
        return arr
    if cnp.PyArray_ISBOOL(arr) or cnp.PyArray_ISINTEGER(arr):
        return arr.astype(_float64)
    raise TypeError(f"fastdl.{func}: argument '{name}' has dtype {arr.dtype}; fastdl computes "
                    "in float32 or float64 (integer and bool inputs are promoted to float64)")


def to_float_array(x, str func, str name):
    """Python-level access to as_float_array, for entry points written in Python."""
    return as_float_array(x, func, name)


cdef int common_typenum(cnp.ndarray a, cnp.ndarray b) noexcept:
    """float32 only when both are float32, as NumPy promotes."""
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT and cnp.PyArray_TYPE(b) == cnp.NPY_FLOAT:
        return cnp.NPY_FLOAT
    return cnp.NPY_DOUBLE


cdef cnp.ndarray as_typenum(cnp.ndarray a, int typenum):
    if cnp.PyArray_TYPE(a) == typenum:
        return a
    return a.astype(np.float32 if typenum == cnp.NPY_FLOAT else np.float64)


cdef int dtype_code(cnp.ndarray a) noexcept:
    return DT_FLOAT32 if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT else DT_FLOAT64


cdef cnp.ndarray check_out(object out, tuple shape, int typenum, str func):
    """Validate a user `out=` array; it is written only after every check has passed."""
    cdef cnp.ndarray arr
    expected = "float32" if typenum == cnp.NPY_FLOAT else "float64"
    if not isinstance(out, cnp.ndarray):
        raise TypeError(f"fastdl.{func}: out must be a numpy.ndarray, got {type(out).__name__}")
    arr = <cnp.ndarray>out
    if cnp.PyArray_TYPE(arr) != typenum or not cnp.PyArray_ISNOTSWAPPED(arr):
        raise TypeError(f"fastdl.{func}: out has dtype {arr.dtype}, expected {expected}")
    if shape_of(arr) != shape:
        raise ValueError(f"fastdl.{func}: out has shape {shape_of(arr)}, expected {shape}")
    if not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"fastdl.{func}: out is read-only")
    return arr


cdef inline void _extent(cnp.ndarray a, char **lo, char **hi) noexcept:
    cdef int d
    cdef Py_ssize_t span_lo = 0, span_hi = 0, step
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIMS(a)[d] == 0:
            lo[0] = hi[0] = NULL
            return
        step = (cnp.PyArray_DIMS(a)[d] - 1) * cnp.PyArray_STRIDES(a)[d]
        if step < 0:
            span_lo += step
        else:
            span_hi += step
    lo[0] = <char *>cnp.PyArray_DATA(a) + span_lo
    hi[0] = <char *>cnp.PyArray_DATA(a) + span_hi + cnp.PyArray_ITEMSIZE(a)


cdef bint may_overlap(cnp.ndarray a, cnp.ndarray b) noexcept:
    """Whether the memory ranges of a and b intersect (a cheap, conservative test)."""
    cdef char *alo
    cdef char *ahi
    cdef char *blo
    cdef char *bhi
    _extent(a, &alo, &ahi)
    _extent(b, &blo, &bhi)
    if alo == NULL or blo == NULL:
        return False
    return alo < bhi and blo < ahi


cdef int current_threads() noexcept nogil:
    return fdl_omp_max_threads()


cdef int normalize_axis(object axis, int ndim, str func) except -1:
    """A single axis as a non-negative int, or a ValueError/TypeError naming it (NumPy rules)."""
    cdef Py_ssize_t a
    try:
        a = operator.index(axis)
    except TypeError:
        raise TypeError(f"fastdl.{func}: axis must be an int, got {type(axis).__name__}") from None
    if a < -ndim or a >= ndim:
        raise ValueError(f"fastdl.{func}: axis {axis} is out of bounds for an array of "
                         f"dimension {ndim}")
    return <int>(a + ndim if a < 0 else a)


cdef object gpu_call(str name, tuple args, dict kwargs):
    try:
        from fastdl._ext import _cuda
    except ImportError:
        raise RuntimeError(
            f"fastdl.{name}: got a CUDA device array, but this build of fastdl has no CUDA "
            f"extension (rebuild with FASTDL_CUDA=1 and the CUDA toolkit), or pass NumPy "
            f"arrays") from None
    fn = getattr(_cuda, name, None)
    if fn is None:
        raise TypeError(f"fastdl.{name} has no GPU implementation: copy the arrays to the host "
                        f"(NumPy) first")
    return fn(*args, **kwargs)
