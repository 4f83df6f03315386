# Lanes along one axis of an array, as the softmax family and the losses walk them
# (include/fastdl/softmax.h). _losses cimports these helpers.
cimport numpy as cnp

cdef extern from "fastdl/softmax.h" nogil:
    ctypedef struct fdl_lanes:
        char *data
        Py_ssize_t outer, len, inner, so, sl
    Py_ssize_t fdl_sm_block(Py_ssize_t len, Py_ssize_t inner, Py_ssize_t itemsize)
    Py_ssize_t fdl_sm_items(Py_ssize_t outer, Py_ssize_t inner, Py_ssize_t block)

cdef bint lanes_of(cnp.ndarray a, int axis, bint reverse, fdl_lanes *lay) noexcept
cdef bint prefer_reverse(cnp.ndarray a, int axis) noexcept
cdef cnp.ndarray lanes_input(cnp.ndarray a, int axis, bint reverse, fdl_lanes *lay)
cdef cnp.ndarray lanes_empty(tuple shape, int typenum, bint reverse, int axis,
                             fdl_lanes *lay)
cdef bint lanes_disjoint(const fdl_lanes *lay) noexcept
cdef bint same_lanes(const fdl_lanes *a, const fdl_lanes *b) noexcept
cdef int thread_count(Py_ssize_t elements, Py_ssize_t items) noexcept
