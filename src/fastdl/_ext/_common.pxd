# Validation shared by every fastdl entry point: one dtype rule, one out= rule.
cimport numpy as cnp

cdef cnp.ndarray as_float_array(object x, str func, str name)
cdef int common_typenum(cnp.ndarray a, cnp.ndarray b) noexcept
cdef cnp.ndarray as_typenum(cnp.ndarray a, int typenum)
cdef cnp.ndarray check_out(object out, tuple shape, int typenum, str func)
cdef bint may_overlap(cnp.ndarray a, cnp.ndarray b) noexcept
cdef int dtype_code(cnp.ndarray a) noexcept
cdef int current_threads() noexcept nogil
cdef int normalize_axis(object axis, int ndim, str func) except -1

cdef inline tuple shape_of(cnp.ndarray a):
    # cnp.ndarray.shape is a C pointer in Cython; this is the Python tuple.
    return (<object>a).shape


# GPU dispatch: a CPU entry point whose first array argument is a CUDA device array hands the
# whole call to its twin in fastdl._ext._cuda (same name, same signature). NumPy arrays pay
# one type check.
cdef inline bint on_device(object x):
    if type(x) is cnp.ndarray:
        return False
    try:
        return hasattr(x, "__cuda_array_interface__")
    except Exception:   # PyTorch raises RuntimeError for a CUDA tensor that requires grad
        return True

cdef object gpu_call(str name, tuple args, dict kwargs)
