# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""lstm_cell and lstm_cell_backward: two BLAS GEMMs, then one fused elementwise pass.

Inner loops: fastdl/lstm.h. The gates are ``linear(x, w_ih, b)`` and then ``h @ w_hh``
accumulated onto them by ``_blas.gemm_batched`` with beta = 1 (both on its shape-only tile
grid; no second gate buffer); the fused pass works row by
row, each element computed alone, so every result is bitwise identical for any thread count.

The backward recomputes the gates (the two forward GEMMs again) unless it is given the
activated gates that ``lstm_cell(..., return_gates=True)`` returned; the LSTM layer of
``fastdl.nn`` keeps them (it needs them anyway) and calls the row kernels directly through
``_add_matmul``, ``_forward_rows`` and ``_backward_rows``.
"""

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange

from fastdl._ext._blas cimport Mat, blas_layout, check_blas_dims, gemm_batched
from fastdl._ext._common cimport (as_float_array, as_typenum,
                                  current_threads, dtype_code, shape_of)
from fastdl._ext._linalg import linear, linear_backward

cdef extern from "fastdl/lstm.h" nogil:
    void fdl_lstm_forward_f32(float *g, const float *c, float *h_new, float *c_new,
                              Py_ssize_t H)
    void fdl_lstm_forward_f64(double *g, const double *c, double *h_new, double *c_new,
                              Py_ssize_t H)
    void fdl_lstm_backward_f32(float *g, const float *c, const float *dh, const float *dc,
                               float *dc_prev, Py_ssize_t H)
    void fdl_lstm_backward_f64(double *g, const double *c, const double *dh,
                               const double *dc, double *dc_prev, Py_ssize_t H)

cnp.import_array()

# Below this many gate elements the pass is serial with no OpenMP region (memory-bound rule
# of docs/design.md), and below RELEASE_GIL_MIN it keeps the GIL (releasing costs more).
cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 32768
cdef Py_ssize_t RELEASE_GIL_MIN = 4096


# --------------------------------------------------------------------------------------
# row kernels over (B, ...) operands whose last axis is contiguous

cdef struct Rows:
    # Up to five row operands (last axis contiguous): base pointer and row stride in bytes.
    char *p[5]
    Py_ssize_t s[5]


cdef inline void _fwd_row(const Rows *r, bint f32, Py_ssize_t b, Py_ssize_t H) noexcept nogil:
    if f32:
        fdl_lstm_forward_f32(<float *>(r.p[0] + b * r.s[0]), <float *>(r.p[1] + b * r.s[1]),
                             <float *>(r.p[2] + b * r.s[2]), <float *>(r.p[3] + b * r.s[3]), H)
    else:
        fdl_lstm_forward_f64(<double *>(r.p[0] + b * r.s[0]),
                             <double *>(r.p[1] + b * r.s[1]),
                             <double *>(r.p[2] + b * r.s[2]),
                             <double *>(r.p[3] + b * r.s[3]), H)


cdef inline void _bwd_row(const Rows *r, bint f32, Py_ssize_t b, Py_ssize_t H) noexcept nogil:
    if f32:
        fdl_lstm_backward_f32(<float *>(r.p[0] + b * r.s[0]), <float *>(r.p[1] + b * r.s[1]),
                              <float *>(r.p[2] + b * r.s[2]), <float *>(r.p[3] + b * r.s[3]),
                              <float *>(r.p[4] + b * r.s[4]), H)
    else:
        fdl_lstm_backward_f64(<double *>(r.p[0] + b * r.s[0]),
                              <double *>(r.p[1] + b * r.s[1]),
                              <double *>(r.p[2] + b * r.s[2]),
                              <double *>(r.p[3] + b * r.s[3]),
                              <double *>(r.p[4] + b * r.s[4]), H)


cdef void _run_rows(Rows *r, bint forward, bint f32, Py_ssize_t B, Py_ssize_t H) noexcept nogil:
    cdef Py_ssize_t b
    cdef int nth = 1
    if B * 4 * H >= PARALLEL_MIN_ELEMENTS and B > 1:
        nth = current_threads()
        if nth > B:
            nth = <int>B
    if nth <= 1:
        for b in range(B):
            if forward:
                _fwd_row(r, f32, b, H)
            else:
                _bwd_row(r, f32, b, H)
    else:
        for b in prange(B, schedule='static', num_threads=nth):
            if forward:
                _fwd_row(r, f32, b, H)
            else:
                _bwd_row(r, f32, b, H)


cdef int _set_rows(Rows *r, int i, cnp.ndarray a, Py_ssize_t B, Py_ssize_t width,
                   int typenum, str what, bint written=False) except -1:
    # The internal entry points trust their callers (fastdl.nn) but never their memory.
    if (cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_NDIM(a) != 2 or a.shape[0] != B
            or a.shape[1] != width or not cnp.PyArray_ISALIGNED(a)
            or (B > 0 and width > 1 and cnp.PyArray_STRIDES(a)[1] != cnp.PyArray_ITEMSIZE(a))):
        raise ValueError(f"fastdl._lstm: {what} must be a ({B}, {width}) array of the gates' "
                         f"dtype with a contiguous last axis, got {shape_of(a)} "
                         f"{a.dtype} with strides {(<object>a).strides}")
    if written and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"fastdl._lstm: {what} must be writeable")
    r.p[i] = <char *>cnp.PyArray_DATA(a)
    r.s[i] = cnp.PyArray_STRIDES(a)[0] if B > 1 else 0
    return 0


cdef void _dispatch(Rows *r, bint forward, bint f32, Py_ssize_t B, Py_ssize_t H):
    if B == 0 or H == 0:
        return
    if B * 4 * H >= RELEASE_GIL_MIN:
        with nogil:
            _run_rows(r, forward, f32, B, H)
    else:
        _run_rows(r, forward, f32, B, H)


def _forward_rows(cnp.ndarray g, cnp.ndarray c, cnp.ndarray h_new, cnp.ndarray c_new):
    """Internal (fastdl.nn): the fused forward pass, in place. ``g`` (B, 4H): the gate
    pre-activations x W_ih + b + h W_hh on entry, the activated gates on exit; ``c`` (B, H);
    results into ``h_new``, ``c_new`` (B, H). Rows may have any stride; the last axis must
    be contiguous."""
    cdef Rows r
    cdef Py_ssize_t B = g.shape[0], H = c.shape[1] if cnp.PyArray_NDIM(c) == 2 else -1
    cdef int t = cnp.PyArray_TYPE(g)
    _set_rows(&r, 0, g, B, 4 * H, t, "g", True)
    _set_rows(&r, 1, c, B, H, t, "c")
    _set_rows(&r, 2, h_new, B, H, t, "h_new", True)
    _set_rows(&r, 3, c_new, B, H, t, "c_new", True)
    _dispatch(&r, True, t == cnp.NPY_FLOAT, B, H)


cdef Mat _operand(cnp.ndarray a, str what) except *:
    cdef Mat m
    if cnp.PyArray_NDIM(a) != 2 or not cnp.PyArray_ISALIGNED(a) or not blas_layout(
            a.shape[0], a.shape[1], cnp.PyArray_STRIDES(a)[0], cnp.PyArray_STRIDES(a)[1],
            cnp.PyArray_ITEMSIZE(a), &m):
        raise ValueError(f"fastdl._lstm: {what} is not a 2-D BLAS operand")
    m.data = <char *>cnp.PyArray_DATA(a)
    return m


def _add_matmul(cnp.ndarray a, cnp.ndarray b, cnp.ndarray c):
    """Internal: ``c += a @ b`` in one BLAS call with beta = 1 (through gemm_batched, so on
    fastdl's shape-only tile grid). a (m, k), b (k, n): any layout, copied to C order only
    if BLAS cannot read them; c (m, n) of their dtype, writeable, a BLAS operand."""
    cdef int t = cnp.PyArray_TYPE(c)
    if (cnp.PyArray_NDIM(a) != 2 or cnp.PyArray_NDIM(b) != 2 or cnp.PyArray_NDIM(c) != 2
            or a.shape[1] != b.shape[0] or c.shape[0] != a.shape[0]
            or c.shape[1] != b.shape[1] or cnp.PyArray_TYPE(a) != t
            or cnp.PyArray_TYPE(b) != t or not cnp.PyArray_ISWRITEABLE(c)):
        raise ValueError(f"fastdl._lstm: c {shape_of(c)} {c.dtype} += a {shape_of(a)} "
                         f"{a.dtype} @ b {shape_of(b)} {b.dtype} does not fit")
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1]
    if m == 0 or n == 0 or k == 0:
        return
    cdef Mat ma, mb, mc = _operand(c, "c")
    try:
        ma = _operand(a, "a")
    except ValueError:
        a = np.array(a, order="C", copy=True)
        ma = _operand(a, "a")
    try:
        mb = _operand(b, "b")
    except ValueError:
        b = np.array(b, order="C", copy=True)
        mb = _operand(b, "b")
    check_blas_dims(ma, mb, mc)
    cdef int dt = dtype_code(c)
    cdef int nthreads = current_threads()
    with nogil:
        gemm_batched(dt, 1, m, n, k, 1.0, ma, NULL, mb, NULL, 1.0, mc, NULL, NULL, nthreads)


def _backward_rows(cnp.ndarray g, cnp.ndarray c, cnp.ndarray dh, cnp.ndarray dc,
                   cnp.ndarray dc_prev):
    """Internal (fastdl.nn): the fused backward pass, in place. ``g`` (B, 4H): the activated
    gates on entry, d(pre-activation gates) on exit; ``c`` (B, H): the cell state the step
    started from; ``dh``, ``dc``: gradients at h_new, c_new; ``dc_prev`` receives dc."""
    cdef Rows r
    cdef Py_ssize_t B = g.shape[0], H = c.shape[1] if cnp.PyArray_NDIM(c) == 2 else -1
    cdef int t = cnp.PyArray_TYPE(g)
    _set_rows(&r, 0, g, B, 4 * H, t, "g", True)
    _set_rows(&r, 1, c, B, H, t, "c")
    _set_rows(&r, 2, dh, B, H, t, "dh")
    _set_rows(&r, 3, dc, B, H, t, "dc")
    _set_rows(&r, 4, dc_prev, B, H, t, "dc_prev", True)
    _dispatch(&r, False, t == cnp.NPY_FLOAT, B, H)


# --------------------------------------------------------------------------------------
# validation

cdef cnp.ndarray _row_ready(cnp.ndarray a):
    """a itself if its last axis is contiguous and aligned, else a C-ordered copy."""
    if cnp.PyArray_ISALIGNED(a) and (a.shape[0] == 0 or a.shape[1] <= 1 or
                                     cnp.PyArray_STRIDES(a)[1] == cnp.PyArray_ITEMSIZE(a)):
        return a
    return np.array(a, order="C", copy=True)


cdef tuple _cell_operands(tuple arrays, tuple names, str func):
    """Convert, promote to one dtype and check the shapes of (x, h, c, w_ih, w_hh, b) plus
    any leading (dh_new, dc_new); returns (arrays..., B, I, H, typenum)."""
    cdef list conv = []
    cdef int typenum = cnp.NPY_FLOAT
    cdef cnp.ndarray a
    for value, name in zip(arrays, names):
        if value is None:
            conv.append(None)
            continue
        a = as_float_array(value, func, name)
        # as_float_array gives float32 or float64; any float64 operand makes it float64
        if typenum != cnp.NPY_DOUBLE:
            typenum = cnp.PyArray_TYPE(a)
        conv.append(a)
    conv = [None if a is None else as_typenum(a, typenum) for a in conv]
    cdef Py_ssize_t k = len(conv) - 6
    cdef cnp.ndarray x = conv[k], h = conv[k + 1], c = conv[k + 2]
    cdef cnp.ndarray w_ih = conv[k + 3], w_hh = conv[k + 4], b = conv[k + 5]
    shapes = ", ".join(f"{n} {shape_of(v)}" for n, v in zip(names, conv) if v is not None)
    if (cnp.PyArray_NDIM(x) != 2 or cnp.PyArray_NDIM(h) != 2 or cnp.PyArray_NDIM(c) != 2
            or cnp.PyArray_NDIM(w_ih) != 2 or cnp.PyArray_NDIM(w_hh) != 2
            or cnp.PyArray_NDIM(b) != 1):
        raise ValueError(f"fastdl.{func}: expected x (B, I), h (B, H), c (B, H), w_ih (I, 4H), "
                         f"w_hh (H, 4H), b (4H,); got {shapes}")
    cdef Py_ssize_t B = x.shape[0], I = x.shape[1], H = h.shape[1]
    bad = (h.shape[0] != B or shape_of(c) != (B, H) or shape_of(w_ih) != (I, 4 * H)
           or shape_of(w_hh) != (H, 4 * H) or shape_of(b) != (4 * H,))
    for i in range(k):
        a = conv[i]
        if a is not None and shape_of(a) != (B, H):
            bad = True
    if bad:
        grads = "dh_new (B, H), dc_new (B, H), " if k else ""
        raise ValueError(f"fastdl.{func}: shapes do not match {grads}x (B, I), h (B, H), "
                         f"c (B, H), w_ih (I, 4H), w_hh (H, 4H), b (4H,) with B={B}, I={I}, "
                         f"H={H} (from x and h); got {shapes}")
    return tuple(conv) + (B, I, H, typenum)


# --------------------------------------------------------------------------------------
# entry points

def lstm_cell(x, h, c, w_ih, w_hh, b, *, return_gates=False):
    """One LSTM step: ``(h_new, c_new)``.

    ``gates = x @ w_ih + h @ w_hh + b`` (x ``(B, I)``, h and c ``(B, H)``, w_ih ``(I, 4H)``,
    w_hh ``(H, 4H)``, b ``(4H,)``; the cheat sheet's ``linear`` layout), split into
    ``i, f, g, o`` (PyTorch's order); ``i, f, o = sigmoid(.)``, ``g = tanh(.)``,
    ``c_new = f * c + i * g``, ``h_new = o * tanh(c_new)``.

    The two products run on BLAS (through fastdl's tiled driver); the nonlinearities and the
    c/h update are one fused pass over the gates. float32 and float64 are native; mixed
    inputs give float64. With ``return_gates=True`` also returns the activated gates
    ``(B, 4H)`` (``[i | f | g | o]``), which ``lstm_cell_backward(..., gates=)`` accepts to
    skip recomputing them. Results are bitwise identical for any thread count.

    Raises ``TypeError`` for a non-float dtype, ``ValueError`` naming every shape if they do
    not fit together.
    """
    X, Hh, C, Wih, Whh, Bv, B, I, H, typenum = _cell_operands(
        (x, h, c, w_ih, w_hh, b), ("x", "h", "c", "w_ih", "w_hh", "b"), "lstm_cell")
    g = linear(X, Wih, Bv)
    _add_matmul(Hh, Whh, g)
    h_new = np.empty((B, H), dtype=g.dtype)
    c_new = np.empty((B, H), dtype=g.dtype)
    _forward_rows(g, _row_ready(C), h_new, c_new)
    if return_gates:
        return h_new, c_new, g
    return h_new, c_new


def lstm_cell_backward(dh_new, dc_new, x, h, c, w_ih, w_hh, b, *, gates=None):
    """Gradients of ``lstm_cell``: ``(dx, dh, dc, dw_ih, dw_hh, db)``.

    ``dh_new``, ``dc_new`` ``(B, H)`` are the gradients arriving at ``h_new`` and ``c_new``
    (either may be None: zero). The gates are recomputed from the inputs (two GEMMs) unless
    ``gates`` gives the activated gates of the forward (``lstm_cell(..., return_gates=True)``;
    they are not modified). Then one fused pass gives d(gates) and dc, and two
    ``linear_backward`` calls give ``dx = dG w_ihᵀ``, ``dw_ih = xᵀ dG``, ``db = Σ_rows dG``,
    ``dh = dG w_hhᵀ``, ``dw_hh = hᵀ dG``.

    Errors as ``lstm_cell``; ``gates`` must be ``(B, 4H)``.
    """
    if dh_new is None and dc_new is None:
        raise ValueError("fastdl.lstm_cell_backward: dh_new and dc_new are both None; give "
                         "at least one gradient")
    (DH, DC, X, Hh, C, Wih, Whh, Bv, B, I, H, typenum) = _cell_operands(
        (dh_new, dc_new, x, h, c, w_ih, w_hh, b),
        ("dh_new", "dc_new", "x", "h", "c", "w_ih", "w_hh", "b"), "lstm_cell_backward")
    dt = np.float32 if typenum == cnp.NPY_FLOAT else np.float64
    if gates is None:
        g = linear(X, Wih, Bv)
        _add_matmul(Hh, Whh, g)
        _forward_rows(g, _row_ready(C), np.empty((B, H), dtype=dt), np.empty((B, H), dtype=dt))
    else:
        G = as_float_array(gates, "lstm_cell_backward", "gates")
        if shape_of(G) != (B, 4 * H):
            raise ValueError(f"fastdl.lstm_cell_backward: gates must have shape (B, 4H) = "
                             f"{(B, 4 * H)}, got {shape_of(G)}")
        # Our own C-ordered copy: the pass overwrites it with d(gates).
        g = np.array(G, dtype=dt, order="C", copy=True)
    DH = np.zeros((B, H), dtype=dt) if DH is None else _row_ready(DH)
    DC = np.zeros((B, H), dtype=dt) if DC is None else _row_ready(DC)
    dc = np.empty((B, H), dtype=dt)
    _backward_rows(g, _row_ready(C), DH, DC, dc)
    dx, dw_ih, db = linear_backward(g, X, Wih)
    dh, dw_hh, _ = linear_backward(g, Hh, Whh, need_bias=False)
    return dx, dh, dc, dw_ih, dw_hh, db
