# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""matmul, linear and linear_backward on top of the tiled BLAS driver in _blas."""

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy

from fastdl._ext._blas cimport (Mat, DT_FLOAT32, blas_layout, check_blas_dims,
                                gemm_batched)
from fastdl._ext._common cimport on_device, gpu_call
from fastdl._ext._common cimport (as_float_array, common_typenum, as_typenum, check_out,
                                  may_overlap, dtype_code, current_threads,
                                  shape_of)

cdef extern from "fastdl/reduce.h" nogil:
    void fdl_colsum_f32(const float *x, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                        float *out, float *scratch)
    void fdl_colsum_f64(const double *x, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                        double *out, double *scratch)
    int FDL_COLSUM_BLOCK

cnp.import_array()

# Below this many elements a memory-bound loop runs on one thread (DESIGN.md).
cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 32768
# Column panel of the bias-gradient sum: fixed, so the result never depends on threads.
cdef Py_ssize_t COLSUM_PANEL = 256


# --------------------------------------------------------------------------------------
# Operand description

cdef struct Stack:
    # A stack of matrices as fastdl sees an operand of matmul: up to 64 batch dimensions
    # (stride 0 where broadcast) over a rows x cols matrix with the given strides in bytes.
    char *data
    Py_ssize_t rows, cols, row_stride, col_stride


cdef inline Py_ssize_t _stride(cnp.ndarray a, int axis) noexcept:
    return cnp.PyArray_STRIDES(a)[axis]


cdef bint _batch_folds(const Py_ssize_t *shape, const Py_ssize_t *strides, int nbatch,
                       Py_ssize_t inner) noexcept:
    """Whether batch dims step uniformly by `inner` bytes per matrix (so they fold into rows)."""
    cdef int d
    cdef Py_ssize_t expected = inner
    for d in range(nbatch - 1, -1, -1):
        if shape[d] != 1:
            if strides[d] != expected:
                return False
            expected *= shape[d]
    return True


cdef object _batch_offsets(const Py_ssize_t *shape, const Py_ssize_t *strides, int nbatch,
                           Py_ssize_t batch):
    """Byte offset of every matrix of a broadcast stack, in C order of the batch index."""
    cdef cnp.ndarray offs = np.empty(batch, dtype=np.intp)
    cdef Py_ssize_t *o = <Py_ssize_t *>cnp.PyArray_DATA(offs)
    cdef Py_ssize_t i, rem, off
    cdef int d
    for i in range(batch):
        rem = i
        off = 0
        for d in range(nbatch - 1, -1, -1):
            off += (rem % shape[d]) * strides[d]
            rem //= shape[d]
        o[i] = off
    return offs


cdef inline bint _aligned(cnp.ndarray a) noexcept:
    return cnp.PyArray_ISALIGNED(a)


cdef bint _describe(cnp.ndarray x, Py_ssize_t rows, Py_ssize_t cols, int row_axis,
                    int col_axis, Mat *mat) noexcept:
    """Describe the matrix axes of x as a BLAS operand in place, if its strides allow."""
    if not _aligned(x):
        return False
    if not blas_layout(rows, cols, _stride(x, row_axis) if row_axis >= 0 else 0,
                       _stride(x, col_axis) if col_axis >= 0 else 0,
                       cnp.PyArray_ITEMSIZE(x), mat):
        return False
    mat.data = <char *>cnp.PyArray_DATA(x)
    return True


cdef cnp.ndarray _fresh_copy(cnp.ndarray x):
    # Not ascontiguousarray: that returns misaligned contiguous data unchanged.
    return np.array(x, order="C", copy=True)


cdef cnp.ndarray _blas_operand(cnp.ndarray x, Py_ssize_t rows, Py_ssize_t cols, int row_axis,
                               int col_axis, Mat *mat):
    """x itself if BLAS can read its matrices in place, else a C-ordered copy made once."""
    if _describe(x, rows, cols, row_axis, col_axis, mat):
        return x
    x = _fresh_copy(x)
    if not _describe(x, rows, cols, row_axis, col_axis, mat):
        raise RuntimeError("fastdl internal error: a C-ordered copy is not a BLAS operand")
    return x


# --------------------------------------------------------------------------------------
# matmul

def matmul(a, b, *, out=None):
    """Matrix product with exactly ``numpy.matmul`` semantics, computed by BLAS.

    ``a (..., m, k) @ b (..., k, n) -> (..., m, n)``; a 1-D ``a`` is a row vector and a 1-D
    ``b`` a column vector, their unit dimension removed from the result; batch dimensions
    broadcast. float32 and float64 are computed natively (mixed inputs give float64;
    integers and bools are promoted to float64).

    Raises ``TypeError`` for another dtype or a wrong ``out`` dtype, ``ValueError`` for
    0-d operands, a core-dimension mismatch, batch shapes that do not broadcast, or an
    ``out`` of the wrong shape. Returns ``out`` when given.
    """
    if on_device(a):
        return gpu_call("matmul", (), {"a": a, "b": b, "out": out})
    cdef cnp.ndarray A = as_float_array(a, "matmul", "a")
    cdef cnp.ndarray B = as_float_array(b, "matmul", "b")
    cdef int typenum = common_typenum(A, B)
    A = as_typenum(A, typenum)
    B = as_typenum(B, typenum)
    cdef int nda = cnp.PyArray_NDIM(A), ndb = cnp.PyArray_NDIM(B)
    if nda == 0 or ndb == 0:
        raise ValueError(f"fastdl.matmul: operands must be at least 1-D, got shapes "
                         f"{shape_of(A)} and {shape_of(B)}")
    cdef Py_ssize_t m = 1 if nda == 1 else A.shape[nda - 2]
    cdef Py_ssize_t k = A.shape[nda - 1]
    cdef Py_ssize_t kb = B.shape[0] if ndb == 1 else B.shape[ndb - 2]
    cdef Py_ssize_t n = 1 if ndb == 1 else B.shape[ndb - 1]
    if k != kb:
        raise ValueError(f"fastdl.matmul: shapes {shape_of(A)} (a) and {shape_of(B)} (b) are not "
                         f"aligned: {k} (last dim of a) != {kb} "
                         f"({'dim 0' if ndb == 1 else 'second-to-last dim'} of b)")

    # Broadcast the batch dimensions, right-aligned as NumPy does.
    cdef int nba = nda - 2 if nda > 2 else 0
    cdef int nbb = ndb - 2 if ndb > 2 else 0
    cdef int nbatch = nba if nba > nbb else nbb
    cdef Py_ssize_t bshape[64]
    cdef Py_ssize_t astr[64]
    cdef Py_ssize_t bstr[64]
    cdef Py_ssize_t cstr[64]
    cdef Py_ssize_t batch = 1, da, db_
    cdef int d, ia, ib
    for d in range(nbatch):
        ia = d - (nbatch - nba)
        ib = d - (nbatch - nbb)
        da = A.shape[ia] if ia >= 0 else 1
        db_ = B.shape[ib] if ib >= 0 else 1
        if da != db_ and da != 1 and db_ != 1:
            raise ValueError(f"fastdl.matmul: batch dimensions of shapes {shape_of(A)} (a) and "
                             f"{shape_of(B)} (b) do not broadcast")
        bshape[d] = da if da != 1 else db_
        batch *= bshape[d]
    shape = tuple([bshape[d] for d in range(nbatch)])
    if nda > 1:
        shape += (m,)
    if ndb > 1:
        shape += (n,)

    cdef cnp.ndarray C, target = None
    if out is not None:
        target = check_out(out, shape, typenum, "matmul")
    cdef Mat ma, mb, mc
    cdef int ndc = len(shape)
    cdef cnp.npy_intp cdims[64]
    cdef Py_ssize_t size = 1
    for d in range(ndc):
        cdims[d] = shape[d]
        size *= cdims[d]
    if size == 0:
        # Nothing to compute (and NumPy gives empty arrays zero strides, which no BLAS takes).
        if target is not None:
            return target
        return cnp.PyArray_EMPTY(ndc, cdims, typenum, 0)

    # The matrix axes of each operand; -1 marks the unit axis of a promoted 1-D operand.
    A = _blas_operand(A, m, k, nda - 2 if nda > 1 else -1, nda - 1, &ma)
    B = _blas_operand(B, k, n, ndb - 2 if ndb > 1 else 0, ndb - 1 if ndb > 1 else -1, &mb)
    cdef int c_row_axis = (ndc - 1 - (ndb > 1)) if nda > 1 else -1
    cdef int c_col_axis = ndc - 1 if ndb > 1 else -1
    C = target
    if C is None or may_overlap(C, A) or may_overlap(C, B) or \
            not _describe(C, m, n, c_row_axis, c_col_axis, &mc):
        # No user out, or one BLAS cannot write in place (or that aliases an input):
        # compute into a fresh C-ordered array.
        C = _blas_operand(cnp.PyArray_EMPTY(ndc, cdims, typenum, 0), m, n, c_row_axis,
                          c_col_axis, &mc)
    check_blas_dims(ma, mb, mc)

    for d in range(nbatch):
        ia = d - (nbatch - nba)
        ib = d - (nbatch - nbb)
        astr[d] = _stride(A, ia) if ia >= 0 and A.shape[ia] != 1 else 0
        bstr[d] = _stride(B, ib) if ib >= 0 and B.shape[ib] != 1 else 0
        cstr[d] = _stride(C, d) if bshape[d] != 1 else 0

    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(A)
    cdef int dt = dtype_code(A)
    cdef int nthreads = current_threads()
    cdef bint b_batched = False
    for d in range(nbatch):
        if bstr[d] != 0:
            b_batched = True
    cdef object a_offs, b_offs, c_offs
    cdef Py_ssize_t *pa
    cdef Py_ssize_t *pb
    cdef Py_ssize_t *pc
    if batch == 1:
        with nogil:
            gemm_batched(dt, 1, m, n, k, 1.0, ma, NULL, mb, NULL, 0.0, mc, NULL, NULL, nthreads)
    elif (not b_batched and nda > 1 and not ma.colmajor and not mc.colmajor
          and _batch_folds(bshape, astr, nbatch, m * ma.ld * isz)
          and _batch_folds(bshape, cstr, nbatch, m * mc.ld * isz)):
        # A stack of row-major matrices times one matrix is one tall GEMM.
        with nogil:
            gemm_batched(dt, 1, batch * m, n, k, 1.0, ma, NULL, mb, NULL, 0.0, mc, NULL,
                         NULL, nthreads)
    else:
        a_offs = _batch_offsets(bshape, astr, nbatch, batch)
        b_offs = _batch_offsets(bshape, bstr, nbatch, batch)
        c_offs = _batch_offsets(bshape, cstr, nbatch, batch)
        pa = <Py_ssize_t *>cnp.PyArray_DATA(a_offs)
        pb = <Py_ssize_t *>cnp.PyArray_DATA(b_offs)
        pc = <Py_ssize_t *>cnp.PyArray_DATA(c_offs)
        with nogil:
            gemm_batched(dt, batch, m, n, k, 1.0, ma, pa, mb, pb, 0.0, mc, pc, NULL, nthreads)

    if target is not None:
        if C is not target:
            np.copyto(target, C)
        return target
    if ndc == 0:
        return C[()]
    return C


# --------------------------------------------------------------------------------------
# linear and its backward

cdef bint _rows_view(cnp.ndarray x, Py_ssize_t *rows, Mat *mat) noexcept:
    """View x (..., cols) as one (rows, cols) BLAS matrix without copying, if possible."""
    cdef int nd = cnp.PyArray_NDIM(x), d
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(x)
    cdef Py_ssize_t cols = x.shape[nd - 1], r = 1, rs = 0
    for d in range(nd - 1):
        r *= x.shape[d]
    rows[0] = r
    if not _aligned(x):
        return False
    if nd == 1:
        rs = cols * isz
    elif nd == 2:
        rs = _stride(x, 0)
    else:
        # Leading dims must step uniformly, in C order, so that they fold into rows.
        rs = cols * isz
        for d in range(nd - 2, -1, -1):
            if x.shape[d] != 1:
                rs = _stride(x, d)
                break
        if not _batch_folds(<Py_ssize_t *>cnp.PyArray_DIMS(x), <Py_ssize_t *>cnp.PyArray_STRIDES(x),
                            nd - 1, rs):
            return False
    if not blas_layout(r, cols, rs, _stride(x, nd - 1), isz, mat):
        return False
    if nd > 2 and mat.colmajor and r > 1 and cols > 1:
        return False
    mat.data = <char *>cnp.PyArray_DATA(x)
    return True


cdef inline Mat _transposed(Mat x) noexcept nogil:
    x.colmajor = not x.colmajor
    return x


cdef cnp.ndarray _as_rows(cnp.ndarray x, Py_ssize_t *rows, Mat *mat):
    """x as a (rows, cols) BLAS matrix, copied to C order once if its strides do not allow it."""
    if not _rows_view(x, rows, mat):
        x = _fresh_copy(x)
        if not _rows_view(x, rows, mat):
            raise RuntimeError("fastdl internal error: a C-ordered copy is not a BLAS operand")
    return x


cdef int _check_layer_shapes(cnp.ndarray X, cnp.ndarray W, str func) except -1:
    """x (..., in) and w (in, out) of a linear layer, or a ValueError naming both shapes."""
    if cnp.PyArray_NDIM(W) != 2:
        raise ValueError(f"fastdl.{func}: w must be 2-D (in_features, out_features), "
                         f"got shape {shape_of(W)}")
    if cnp.PyArray_NDIM(X) == 0 or X.shape[cnp.PyArray_NDIM(X) - 1] != W.shape[0]:
        raise ValueError(f"fastdl.{func}: x has shape {shape_of(X)} and w has shape "
                         f"{shape_of(W)}; x.shape[-1] must equal w.shape[0] ({W.shape[0]})")
    return 0


def linear(x, w, b=None, *, out=None):
    """Fully connected layer ``Y = X @ W + b`` (the cheat sheet's layout).

    ``x (..., in)``, ``w (in, out)``, ``b (out,)`` or None -> ``(..., out)``. The bias is
    fused into the GEMM: each output tile starts as the broadcast bias and BLAS accumulates
    onto it, so there is no second pass and no temporary.

    Raises ``TypeError`` for a non-float/int dtype or a wrong ``out`` dtype and
    ``ValueError`` for mismatched shapes (naming them) or a wrong ``out`` shape.
    """
    if on_device(x):
        return gpu_call("linear", (), {"x": x, "w": w, "b": b, "out": out})
    cdef cnp.ndarray X = as_float_array(x, "linear", "x")
    cdef cnp.ndarray W = as_float_array(w, "linear", "w")
    cdef cnp.ndarray Bv = None
    cdef int typenum = common_typenum(X, W)
    if b is not None:
        Bv = as_float_array(b, "linear", "b")
        if cnp.PyArray_TYPE(Bv) != cnp.NPY_FLOAT:
            typenum = cnp.NPY_DOUBLE
    X = as_typenum(X, typenum)
    W = as_typenum(W, typenum)
    _check_layer_shapes(X, W, "linear")
    cdef Py_ssize_t k = W.shape[0], n = W.shape[1], rows
    if Bv is not None:
        Bv = as_typenum(Bv, typenum)
        if cnp.PyArray_NDIM(Bv) != 1 or Bv.shape[0] != n:
            raise ValueError(f"fastdl.linear: b has shape {shape_of(Bv)}, expected ({n},) to match "
                             f"w of shape {shape_of(W)}")
        if not cnp.PyArray_IS_C_CONTIGUOUS(Bv) or not _aligned(Bv):
            Bv = _fresh_copy(Bv)
    shape = shape_of(X)[:cnp.PyArray_NDIM(X) - 1] + (n,)
    cdef cnp.ndarray target = None, C
    if out is not None:
        target = check_out(out, shape, typenum, "linear")
    cdef Mat mx, mw, mc
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(X)
    X = _as_rows(X, &rows, &mx)
    W = _blas_operand(W, k, n, 0, 1, &mw)
    C = target
    if C is None or may_overlap(C, X) or may_overlap(C, W) or \
            (Bv is not None and may_overlap(C, Bv)) or not _rows_view(C, &rows, &mc):
        C = _as_rows(np.empty(shape, dtype=X.dtype), &rows, &mc)
    check_blas_dims(mx, mw, mc)
    cdef int dt = dtype_code(X)
    cdef int nthreads = current_threads()
    cdef const char *bias = <const char *>cnp.PyArray_DATA(Bv) if Bv is not None else NULL
    with nogil:
        gemm_batched(dt, 1, rows, n, k, 1.0, mx, NULL, mw, NULL, 0.0, mc, NULL, bias,
                     nthreads)
    if target is not None:
        if C is not target:
            np.copyto(target, C)
        return target
    return C


cdef void _column_panel(int dt, const char *data, Py_ssize_t rows, Py_ssize_t cols,
                        Py_ssize_t ld, char *out, Py_ssize_t p, char *scratch) noexcept nogil:
    cdef Py_ssize_t c0 = p * COLSUM_PANEL
    cdef Py_ssize_t width = min(COLSUM_PANEL, cols - c0)
    if dt == DT_FLOAT32:
        fdl_colsum_f32(<const float *>data + c0, rows, width, ld, <float *>out + c0,
                       <float *>scratch)
    else:
        fdl_colsum_f64(<const double *>data + c0, rows, width, ld, <double *>out + c0,
                       <double *>scratch)


cdef int _column_sums(int dt, const char *data, Py_ssize_t rows, Py_ssize_t cols,
                      Py_ssize_t ld, char *out, int nthreads) except -1:
    """out[j] = sum_i x[i, j] for a row-major matrix, in fixed column panels."""
    cdef Py_ssize_t panels = (cols + COLSUM_PANEL - 1) // COLSUM_PANEL, p
    cdef Py_ssize_t isz = 4 if dt == DT_FLOAT32 else 8
    # The pairwise stack holds at most bit_length(number of row blocks) partial sums.
    cdef Py_ssize_t nblocks = (rows + FDL_COLSUM_BLOCK - 1) // FDL_COLSUM_BLOCK, levels = 0
    while nblocks >> levels:
        levels += 1
    cdef Py_ssize_t per_thread = (levels + 1) * min(COLSUM_PANEL, cols) * isz
    if rows * cols < PARALLEL_MIN_ELEMENTS or panels == 1:
        nthreads = 1
    nthreads = max(1, min(nthreads, panels))
    # Scratch for the pairwise stacks, one slice per thread, allocated with the GIL held.
    cdef cnp.ndarray scratch = np.empty(nthreads * per_thread, dtype=np.uint8)
    cdef char *base = <char *>cnp.PyArray_DATA(scratch)
    with nogil:
        if nthreads == 1:
            for p in range(panels):
                _column_panel(dt, data, rows, cols, ld, out, p, base)
        else:
            for p in prange(panels, schedule='static', num_threads=nthreads):
                _column_panel(dt, data, rows, cols, ld, out, p,
                              base + threadid() * per_thread)
    return 0


def linear_backward(dy, x, w, *, need_bias=True):
    """Gradients of ``Y = X @ W + b``: returns ``(dx, dw, db)``.

    ``dx = dy @ W.T`` (shape of x), ``dw = X.T @ dy`` (shape of w) and ``db = dy.sum(0)``
    over all leading dims (None when ``need_bias`` is false). The transposes are BLAS flags,
    never copies; ``db`` is a blocked pairwise sum, identical for any thread count.

    Raises ``ValueError`` when ``dy`` is not ``shape_of(x)[:-1] + (w.shape[1],)`` or ``x`` and
    ``w`` do not chain, ``TypeError`` for unsupported dtypes.
    """
    if on_device(dy):
        return gpu_call("linear_backward", (), {"dy": dy, "x": x, "w": w, "need_bias": need_bias})
    cdef cnp.ndarray dY = as_float_array(dy, "linear_backward", "dy")
    cdef cnp.ndarray X = as_float_array(x, "linear_backward", "x")
    cdef cnp.ndarray W = as_float_array(w, "linear_backward", "w")
    cdef int typenum = common_typenum(dY, X)
    if cnp.PyArray_TYPE(W) != cnp.NPY_FLOAT:
        typenum = cnp.NPY_DOUBLE
    dY = as_typenum(dY, typenum)
    X = as_typenum(X, typenum)
    W = as_typenum(W, typenum)
    _check_layer_shapes(X, W, "linear_backward")
    cdef Py_ssize_t k = W.shape[0], n = W.shape[1], rows, rows_dy
    expected = shape_of(X)[:cnp.PyArray_NDIM(X) - 1] + (n,)
    if shape_of(dY) != expected:
        raise ValueError(f"fastdl.linear_backward: dy has shape {shape_of(dY)}, expected "
                         f"{expected} for x of shape {shape_of(X)} and w of shape {shape_of(W)}")
    cdef Mat mx, mw, mdy, mdx, mdw
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(X)
    X = _as_rows(X, &rows, &mx)
    dY = _as_rows(dY, &rows_dy, &mdy)
    W = _blas_operand(W, k, n, 0, 1, &mw)
    cdef cnp.ndarray dX = np.empty(shape_of(X), dtype=X.dtype)
    cdef cnp.ndarray dW = np.empty((k, n), dtype=X.dtype)
    cdef cnp.ndarray dB = None, dy_rows = dY
    dX = _as_rows(dX, &rows, &mdx)
    dW = _as_rows(dW, &k, &mdw)
    check_blas_dims(mdy, mw, mdx)
    check_blas_dims(mx, mdy, mdw)
    cdef int dt = dtype_code(X)
    cdef int nthreads = current_threads()
    with nogil:
        gemm_batched(dt, 1, rows, k, n, 1.0, mdy, NULL, _transposed(mw), NULL, 0.0, mdx,
                     NULL, NULL, nthreads)
        gemm_batched(dt, 1, k, n, rows, 1.0, _transposed(mx), NULL, mdy, NULL, 0.0, mdw,
                     NULL, NULL, nthreads)
    if need_bias:
        dB = np.empty(n, dtype=X.dtype)
        if mdy.colmajor:
            # The panel sum reads rows; a Fortran-ordered dy is copied once for it.
            dy_rows = _as_rows(_fresh_copy(dY), &rows, &mdy)
        _column_sums(dt, mdy.data, rows, n, mdy.ld, <char *>cnp.PyArray_DATA(dB), nthreads)
    return dX, dW, dB
