# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Array access to fastdl's vector math header, ``include/fastdl/vmath.h``.

``exp``, ``log``, ``tanh``, ``erf``, ``erfc`` and ``expm1`` of a float32 or float64 array: a
new array of the same shape and dtype, computed elementwise by the header's branch-free
functions in a loop compiled for the CPU's SIMD level (``FDL_DISPATCH``), on one thread,
without the GIL.
The header documents each function's method, accuracy (max ULP error) and special values.
Other dtypes raise ``TypeError``; non-contiguous input is copied to C order first.
"""

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from "fastdl/vmath.h" nogil:
    void fdl_exp_array_f32(const float *x, float *y, Py_ssize_t n)
    void fdl_exp_nonpos_array_f32(const float *x, float *y, Py_ssize_t n)
    void fdl_log_array_f32(const float *x, float *y, Py_ssize_t n)
    void fdl_tanh_array_f32(const float *x, float *y, Py_ssize_t n)
    void fdl_erf_array_f32(const float *x, float *y, Py_ssize_t n)
    void fdl_expm1_array_f32(const float *x, float *y, Py_ssize_t n)
    void fdl_erfc_array_f32(const float *x, float *y, Py_ssize_t n)
    void fdl_exp_array_f64(const double *x, double *y, Py_ssize_t n)
    void fdl_exp_nonpos_array_f64(const double *x, double *y, Py_ssize_t n)
    void fdl_log_array_f64(const double *x, double *y, Py_ssize_t n)
    void fdl_tanh_array_f64(const double *x, double *y, Py_ssize_t n)
    void fdl_erf_array_f64(const double *x, double *y, Py_ssize_t n)
    void fdl_expm1_array_f64(const double *x, double *y, Py_ssize_t n)
    void fdl_erfc_array_f64(const double *x, double *y, Py_ssize_t n)

ctypedef void (*loop_f32)(const float *, float *, Py_ssize_t) noexcept nogil
ctypedef void (*loop_f64)(const double *, double *, Py_ssize_t) noexcept nogil


cdef cnp.ndarray _apply(object x, loop_f32 f32, loop_f64 f64, str name):
    cdef cnp.ndarray a = np.asarray(x)
    cdef int t = cnp.PyArray_TYPE(a)
    if (t != cnp.NPY_FLOAT and t != cnp.NPY_DOUBLE) or not cnp.PyArray_ISNOTSWAPPED(a):
        raise TypeError(f"fastdl._ext._vmath.{name}: expected a native float32 or float64 "
                        f"array, got dtype {a.dtype}")
    a = np.asarray(a, order="C")  # (not ascontiguousarray: it makes 0-d arrays 1-d)
    cdef cnp.ndarray out = np.empty_like(a, order="C")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    cdef void *src = cnp.PyArray_DATA(a)
    cdef void *dst = cnp.PyArray_DATA(out)
    with nogil:
        if t == cnp.NPY_FLOAT:
            f32(<const float *>src, <float *>dst, n)
        else:
            f64(<const double *>src, <double *>dst, n)
    return out


def exp(x):
    """e**x elementwise (float32 or float64): a new array."""
    return _apply(x, fdl_exp_array_f32, fdl_exp_array_f64, "exp")


def exp_nonpos(x):
    """e**x for x <= 0 only (the softmax and activation variant; any x > 0 gives garbage):
    exposed so the tests can hold it bitwise equal to ``exp``."""
    return _apply(x, fdl_exp_nonpos_array_f32, fdl_exp_nonpos_array_f64, "exp_nonpos")


def log(x):
    """Natural logarithm elementwise (float32 or float64): a new array."""
    return _apply(x, fdl_log_array_f32, fdl_log_array_f64, "log")


def tanh(x):
    """Hyperbolic tangent elementwise (float32 or float64): a new array."""
    return _apply(x, fdl_tanh_array_f32, fdl_tanh_array_f64, "tanh")


def erf(x):
    """Error function elementwise (float32 or float64): a new array."""
    return _apply(x, fdl_erf_array_f32, fdl_erf_array_f64, "erf")


def expm1(x):
    """e**x - 1 elementwise, accurate near 0 (float32 or float64): a new array."""
    return _apply(x, fdl_expm1_array_f32, fdl_expm1_array_f64, "expm1")


def erfc(x):
    """1 - erf(x) elementwise, relatively accurate for large x (float32 or float64): a new array."""
    return _apply(x, fdl_erfc_array_f32, fdl_erfc_array_f64, "erfc")
