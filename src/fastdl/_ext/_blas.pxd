# The one door to BLAS. Every fastdl GEMM goes through gemm_batched(), which owns the
# parallelism: BLAS itself always runs single-threaded inside fastdl, and the output is cut
# into a grid of tiles that depends only on the shape, so results are bitwise identical for
# any thread count (OpenBLAS's own threading is not: measured, docs/design.md).

cdef enum:
    DT_FLOAT32 = 0
    DT_FLOAT64 = 1

cdef struct Mat:
    # A 2-D operand as BLAS sees it: element (i, j) lives at
    # data + (colmajor ? i + j * ld : i * ld + j) * itemsize.
    char *data
    Py_ssize_t ld
    bint colmajor

cdef bint blas_layout(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row_stride,
                      Py_ssize_t col_stride, Py_ssize_t itemsize, Mat *out) noexcept nogil

cdef int check_blas_dims(Mat a, Mat b, Mat c) except -1

cdef void gemm_batched(int dtype, Py_ssize_t batch, Py_ssize_t m, Py_ssize_t n,
                       Py_ssize_t k, double alpha, Mat a, const Py_ssize_t *a_off,
                       Mat b, const Py_ssize_t *b_off, double beta, Mat c,
                       const Py_ssize_t *c_off, const char *bias, int nthreads) noexcept nogil

# Around a parallel loop of single-threaded gemm_batched(..., nthreads=1) calls: pin once.
# blas_pin_serial() returns False (and pins nothing) for a BLAS that cannot be pinned; the
# caller must then not run its loop in parallel.
cdef bint blas_pin_serial() noexcept nogil
cdef void blas_unpin_serial() noexcept nogil
