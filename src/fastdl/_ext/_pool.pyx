# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""2-D pooling over NCHW inputs: max (with indices), average, global average, and backward.

Inner loops: fastdl/pool.h, one (H, W) plane at a time. Planes must be contiguous (any N and
C strides are fine); an input whose planes are not is copied once to C order. Results are
C-ordered. Work items are the N*C planes; each output element (forward) and each plane of a
gradient (backward, accumulated in a fixed order within the plane) is computed by one thread,
so results never depend on the thread count.
"""

import numbers
import operator

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t

from fastdl._ext._common cimport as_float_array, common_typenum, as_typenum, shape_of
from fastdl._ext._softmax cimport thread_count

cnp.import_array()

cdef extern from "fastdl/pool.h" nogil:
    ctypedef struct fdl_pool_geom:
        Py_ssize_t H, W, Ho, Wo, kh, kw, sh, sw, ph, pw
    void fdl_maxpool_plane_f32(const fdl_pool_geom *g, const float *x, float *y, int64_t *idx,
                               float *buf)
    void fdl_maxpool_plane_f64(const fdl_pool_geom *g, const double *x, double *y,
                               int64_t *idx, double *buf)
    void fdl_maxpool22_plane_f32(const fdl_pool_geom *g, const float *x, float *y)
    void fdl_maxpool22_plane_f64(const fdl_pool_geom *g, const double *x, double *y)
    void fdl_maxpool22i_plane_f32(const fdl_pool_geom *g, const float *x, float *y,
                                  int64_t *idx)
    void fdl_maxpool22i_plane_f64(const fdl_pool_geom *g, const double *x, double *y,
                                  int64_t *idx)
    void fdl_maxpool_bwd_plane_f32(Py_ssize_t HW, Py_ssize_t HoWo, const float *dy,
                                   const int64_t *idx, float *dx)
    void fdl_maxpool_bwd_plane_f64(Py_ssize_t HW, Py_ssize_t HoWo, const double *dy,
                                   const int64_t *idx, double *dx)
    void fdl_avgpool_plane_f32(const fdl_pool_geom *g, const float *x, float *y, float *buf)
    void fdl_avgpool_plane_f64(const fdl_pool_geom *g, const double *x, double *y,
                               double *buf)
    void fdl_avgpool_bwd_plane_f32(const fdl_pool_geom *g, const float *dy, float *dx)
    void fdl_avgpool_bwd_plane_f64(const fdl_pool_geom *g, const double *dy, double *dx)
    void fdl_gap_f32(const float *x, Py_ssize_t n, Py_ssize_t count, Py_ssize_t avail,
                     double scale, float *y)
    void fdl_gap_f64(const double *x, Py_ssize_t n, Py_ssize_t count, Py_ssize_t avail,
                     double scale, double *y)
    void fdl_pool_fill_f32(float *x, Py_ssize_t n, float v)
    void fdl_pool_fill_f64(double *x, Py_ssize_t n, double v)
    Py_ssize_t fdl_pool_check_idx(const int64_t *idx, Py_ssize_t n, int64_t hw)
    Py_ssize_t FDL_POOL22_MAXW
    void fdl_pool_lanes_f32(const fdl_pool_geom *g, int avg, const float **planes, int nplanes,
                            float *y, int64_t *idx, float *work)
    void fdl_pool_lanes_f64(const fdl_pool_geom *g, int avg, const double **planes, int nplanes,
                            double *y, int64_t *idx, double *work)
    void fdl_maxpool22_rows_f32(const float *x, Py_ssize_t rp0, Py_ssize_t rp1, Py_ssize_t W,
                                Py_ssize_t Ho, float *y, int64_t *idx)
    void fdl_maxpool22_rows_f64(const double *x, Py_ssize_t rp0, Py_ssize_t rp1,
                                Py_ssize_t W, Py_ssize_t Ho, double *y, int64_t *idx)

# Kernels keep the GIL below this many elements (releasing it costs more than the work).
cdef Py_ssize_t GIL_MIN_ELEMENTS = 4096

cdef enum Op:
    MAX_FWD = 0
    MAX22_FWD = 1
    MAX_BWD = 2
    AVG_FWD = 3
    AVG_BWD = 4
    GAP_FWD = 5
    GAP_BWD = 6


ctypedef struct PoolJob:
    fdl_pool_geom g
    char *src            # x (forward) or dy (backward), planes contiguous
    char *dst            # y (forward) or dx (backward), C order
    int64_t *idx
    char *rowbuf         # max/avg forward with horizontal padding: rowlen elements per plane
    Py_ssize_t rowlen
    Py_ssize_t C, sn, sc          # src plane p = (n, c) at src + n*sn + c*sc (bytes)
    Py_ssize_t dplane, iplane     # elements per dst plane, per idx plane
    double scale
    bint f32
    int op


cdef void _plane(const PoolJob *j, Py_ssize_t p) noexcept nogil:
    cdef Py_ssize_t isz = 4 if j.f32 else 8
    cdef char *s = j.src + (p // j.C) * j.sn + (p % j.C) * j.sc
    cdef char *d = j.dst + p * j.dplane * isz
    cdef int64_t *ix = NULL if j.idx == NULL else j.idx + p * j.iplane
    cdef char *buf
    if j.op == MAX_FWD or j.op == AVG_FWD:
        # room for a padded copy of one input row (used only with horizontal padding)
        buf = j.rowbuf + p * j.rowlen * isz
        if j.op == MAX_FWD:
            if j.f32:
                fdl_maxpool_plane_f32(&j.g, <float *>s, <float *>d, ix, <float *>buf)
            else:
                fdl_maxpool_plane_f64(&j.g, <double *>s, <double *>d, ix, <double *>buf)
        elif j.f32:
            fdl_avgpool_plane_f32(&j.g, <float *>s, <float *>d, <float *>buf)
        else:
            fdl_avgpool_plane_f64(&j.g, <double *>s, <double *>d, <double *>buf)
    elif j.op == MAX22_FWD:
        if ix != NULL:
            if j.f32:
                fdl_maxpool22i_plane_f32(&j.g, <float *>s, <float *>d, ix)
            else:
                fdl_maxpool22i_plane_f64(&j.g, <double *>s, <double *>d, ix)
        elif j.f32:
            fdl_maxpool22_plane_f32(&j.g, <float *>s, <float *>d)
        else:
            fdl_maxpool22_plane_f64(&j.g, <double *>s, <double *>d)
    elif j.op == MAX_BWD:
        if j.f32:
            fdl_maxpool_bwd_plane_f32(j.dplane, j.iplane, <float *>s, ix, <float *>d)
        else:
            fdl_maxpool_bwd_plane_f64(j.dplane, j.iplane, <double *>s, ix, <double *>d)
    elif j.op == AVG_BWD:
        if j.f32:
            fdl_avgpool_bwd_plane_f32(&j.g, <float *>s, <float *>d)
        else:
            fdl_avgpool_bwd_plane_f64(&j.g, <double *>s, <double *>d)
    elif j.op == GAP_FWD:
        # one output per plane (dplane = 1); the plane has H*W elements; avail = H*W: never
        # read past the plane (its neighbours may not follow it in memory)
        if j.f32:
            fdl_gap_f32(<float *>s, j.g.H * j.g.W, 1, j.g.H * j.g.W, j.scale, <float *>d)
        else:
            fdl_gap_f64(<double *>s, j.g.H * j.g.W, 1, j.g.H * j.g.W, j.scale, <double *>d)
    else:
        # src: dy (N, C) with element strides sn, sc; dst: planes of H*W
        if j.f32:
            fdl_pool_fill_f32(<float *>d, j.dplane, <float>((<float *>s)[0] * j.scale))
        else:
            fdl_pool_fill_f64(<double *>d, j.dplane, (<double *>s)[0] * j.scale)


cdef void _run(const PoolJob *j, Py_ssize_t planes, int nth) noexcept nogil:
    cdef Py_ssize_t p
    if nth == 1:
        for p in range(planes):
            _plane(j, p)
    else:
        for p in prange(planes, schedule='static', num_threads=nth):
            _plane(j, p)


cdef void _go(const PoolJob *j, Py_ssize_t planes, Py_ssize_t elements) noexcept:
    cdef int nth = thread_count(elements, planes)
    if elements < GIL_MIN_ELEMENTS:
        _run(j, planes, nth)
    else:
        with nogil:
            _run(j, planes, nth)


# Planes of at most this many elements, stacked in memory, are 2x2-max-pooled as one array of
# rows (fdl_maxpool22_rows): a call per plane cost more than an 8x8 plane's work.
cdef Py_ssize_t SMALL_PLANE = 4096
# row pairs per work item of that path
cdef Py_ssize_t ROWS22_ITEM = 1024


cdef void _max22_item(const PoolJob *j, Py_ssize_t it, Py_ssize_t pairs) noexcept nogil:
    cdef Py_ssize_t r0 = it * ROWS22_ITEM
    cdef Py_ssize_t r1 = pairs if pairs - r0 < ROWS22_ITEM else r0 + ROWS22_ITEM
    if j.f32:
        fdl_maxpool22_rows_f32(<const float *>j.src, r0, r1, j.g.W, j.g.Ho, <float *>j.dst,
                               j.idx)
    else:
        fdl_maxpool22_rows_f64(<const double *>j.src, r0, r1, j.g.W, j.g.Ho, <double *>j.dst,
                               j.idx)


cdef void _max22_rows(const PoolJob *j, Py_ssize_t pairs, Py_ssize_t elements) noexcept:
    cdef Py_ssize_t items = (pairs + ROWS22_ITEM - 1) // ROWS22_ITEM, it
    cdef int nth = thread_count(elements, items)
    if elements < GIL_MIN_ELEMENTS:
        for it in range(items):
            _max22_item(j, it, pairs)
        return
    with nogil:
        if nth == 1:
            for it in range(items):
                _max22_item(j, it, pairs)
        else:
            for it in prange(items, schedule='static', num_threads=nth):
                _max22_item(j, it, pairs)


# Small planes are pooled 16 (float32) or 8 (float64) at a time, channels last
# (fdl_pool_lanes): the plane kernels vectorise along an output row, which is mostly loop
# overhead when a row has a few outputs, and their per-offset passes with indices are slow at
# any size. Measured (one thread, 512 planes; 64 planes at 64x64), lanes against plane kernels:
# max 3x3/s2/p1 with indices 6.9x at 8x8, 12x at 16x16, 3.7x at 64x64; without indices 6.0x,
# 5.3x, 1.6x; 3x3/s1/p1 with indices 3.8x at 8x8, 1.0x at 64x64; average 3x3/s1/p1 6.2x at
# 8x8, 1.7x at 64x64; average 2x2/s2 2.6x at 8x8, 1.1x at 24x24 (12 outputs a row), 0.9x at
# 32x32 (16). So: planes of at most LANES_MAX_PLANE elements (the interleaved copy is 64 bytes
# an element: 256 KiB per thread, in L2), every max pooling but 2x2/s2 (its own kernels), and
# average pooling over windows of more than 4 elements or rows of fewer than LANES_MAX_WO.
# Larger planes, up to LANES_MAX_PLANE_IDX elements, still gain with indices and a stride of
# at least 2 (3x3/s2/p1, 2 threads: 32x64x112x112 17 against 30 ms, 4x64x160x160 4.1 against
# 5.6 ms), not at stride 1 (0.8-0.9x) or without indices (0.9x).
cdef Py_ssize_t LANES_MAX_PLANE = 4096
cdef Py_ssize_t LANES_MAX_PLANE_IDX = 25600
cdef Py_ssize_t LANES_MAX_WO = 16


cdef bint LANES_ON = True


def _lanes_switch(bint on):
    """Tests only: turn the lanes path on or off (off: every plane goes to the plane
    kernels); returns the previous setting."""
    global LANES_ON
    old = LANES_ON
    LANES_ON = on
    return old


cdef bint _lanes_ok(const PoolJob *j, bint avg) noexcept:
    cdef Py_ssize_t hw = j.g.H * j.g.W
    if not LANES_ON:
        return False
    if hw > LANES_MAX_PLANE:
        return not avg and j.idx != NULL and j.g.sw >= 2 and hw <= LANES_MAX_PLANE_IDX
    return not avg or j.g.Wo < LANES_MAX_WO or j.g.kh * j.g.kw > 4


cdef inline int _lanes_of(const PoolJob *j) noexcept nogil:
    return 16 if j.f32 else 8          # 64 bytes of float32 / float64


cdef void _lanes_group(const PoolJob *j, Py_ssize_t grp, Py_ssize_t planes, int avg,
                       char *work) noexcept nogil:
    cdef int L = _lanes_of(j)
    cdef Py_ssize_t p0 = grp * L, p
    cdef int n = <int>(planes - p0 if planes - p0 < L else L), l
    cdef const char *ptrs[16]
    cdef int64_t *ix = NULL if j.idx == NULL else j.idx + p0 * j.iplane
    for l in range(n):
        p = p0 + l
        ptrs[l] = j.src + (p // j.C) * j.sn + (p % j.C) * j.sc
    if j.f32:
        fdl_pool_lanes_f32(&j.g, avg, <const float **>ptrs, n, <float *>j.dst + p0 * j.dplane,
                           ix, <float *>work)
    else:
        fdl_pool_lanes_f64(&j.g, avg, <const double **>ptrs, n,
                           <double *>j.dst + p0 * j.dplane, ix, <double *>work)


cdef int _lanes(const PoolJob *j, Py_ssize_t planes, Py_ssize_t elements, int avg) except -1:
    cdef Py_ssize_t groups = (planes + _lanes_of(j) - 1) // _lanes_of(j), grp
    cdef int nth = thread_count(elements, groups)
    # per thread: 64 bytes (a vector of lanes) per element position of a plane, 64-byte aligned
    cdef Py_ssize_t per = 64 * j.g.H * j.g.W
    cdef cnp.ndarray buf = np.empty(nth * per + 64, np.uint8)
    cdef char *work = <char *>cnp.PyArray_DATA(buf)
    work += (64 - <size_t>work % 64) % 64
    if elements < GIL_MIN_ELEMENTS:
        for grp in range(groups):
            _lanes_group(j, grp, planes, avg, work)
        return 0
    with nogil:
        if nth == 1:
            for grp in range(groups):
                _lanes_group(j, grp, planes, avg, work)
        else:
            for grp in prange(groups, schedule='static', num_threads=nth):
                _lanes_group(j, grp, planes, avg, work + threadid() * per)
    return 0


cdef void _gap_item(const PoolJob *j, Py_ssize_t it, Py_ssize_t per, Py_ssize_t planes,
                    Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t p0 = it * per
    cdef Py_ssize_t cnt = planes - p0 if planes - p0 < per else per
    if j.f32:
        fdl_gap_f32(<float *>j.src + p0 * n, n, cnt, (planes - p0) * n, j.scale,
                    <float *>j.dst + p0)
    else:
        fdl_gap_f64(<double *>j.src + p0 * n, n, cnt, (planes - p0) * n, j.scale,
                    <double *>j.dst + p0)


cdef void _gap_contiguous(const PoolJob *j, Py_ssize_t planes, Py_ssize_t n,
                          Py_ssize_t elements) noexcept:
    """Global average pooling of consecutive planes, in items of about 16K elements (a
    call per plane cost more than a small plane's sum)."""
    cdef Py_ssize_t per = 16384 // n if n < 16384 else 1
    cdef Py_ssize_t items = (planes + per - 1) // per, it
    cdef int nth = thread_count(elements, items)
    if elements < GIL_MIN_ELEMENTS:
        for it in range(items):
            _gap_item(j, it, per, planes, n)
        return
    with nogil:
        if nth == 1:
            for it in range(items):
                _gap_item(j, it, per, planes, n)
        else:
            for it in prange(items, schedule='static', num_threads=nth):
                _gap_item(j, it, per, planes, n)


# --------------------------------------------------------------------------------------
# arguments

cdef tuple _pair(object v, str func, str name, Py_ssize_t lo):
    """An int or a pair of ints, each >= lo, as a 2-tuple."""
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"fastdl.{func}: {name} must be an int or a pair of ints, got {v!r}")
    try:
        if isinstance(v, (numbers.Integral, np.integer)):
            t = (operator.index(v), operator.index(v))
        else:
            t = tuple(operator.index(e) for e in v)
            if any(isinstance(e, (bool, np.bool_)) for e in v):
                raise TypeError
    except TypeError:
        raise TypeError(f"fastdl.{func}: {name} must be an int or a pair of ints, "
                        f"got {v!r}") from None
    if len(t) != 2:
        raise ValueError(f"fastdl.{func}: {name} must be an int or a pair of ints, got {v!r}")
    if t[0] < lo or t[1] < lo:
        what = "positive" if lo == 1 else "non-negative"
        raise ValueError(f"fastdl.{func}: {name} must be {what}, got {v!r}")
    return t


cdef fdl_pool_geom _geometry(tuple xshape, object kernel_size, object stride, object padding,
                             str func) except *:
    """Window geometry for an (N, C, H, W) input, validated as PyTorch does."""
    cdef fdl_pool_geom g
    k = _pair(kernel_size, func, "kernel_size", 1)
    s = k if stride is None else _pair(stride, func, "stride", 1)
    p = _pair(padding, func, "padding", 0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"fastdl.{func}: padding {p} must be at most half of kernel_size "
                         f"{k}")
    H, W = xshape[2], xshape[3]
    if H + 2 * p[0] < k[0] or W + 2 * p[1] < k[1]:
        raise ValueError(f"fastdl.{func}: kernel_size {k} is larger than the padded input "
                         f"({H + 2 * p[0]}, {W + 2 * p[1]}) (x has shape {xshape}, padding "
                         f"{p})")
    g.H, g.W = H, W
    g.kh, g.kw = k
    g.sh, g.sw = s
    g.ph, g.pw = p
    g.Ho = (H + 2 * p[0] - k[0]) // s[0] + 1
    g.Wo = (W + 2 * p[1] - k[1]) // s[1] + 1
    return g


cdef cnp.ndarray _row_buffers(PoolJob *j, Py_ssize_t planes, object dtype):
    """Per-plane room for a padded input row (W + 2pw + kw elements; none without horizontal
    padding): about 1/H of the input, owned by the returned array."""
    cdef cnp.ndarray buf
    j.rowlen = j.g.W + 2 * j.g.pw + j.g.kw if j.g.pw else 0
    buf = np.empty(max(planes * j.rowlen, 1), dtype)
    j.rowbuf = <char *>cnp.PyArray_DATA(buf)
    return buf


cdef cnp.ndarray _nchw(object x, str func, str name):
    cdef cnp.ndarray X = as_float_array(x, func, name)
    if cnp.PyArray_NDIM(X) != 4:
        raise ValueError(f"fastdl.{func}: {name} must have shape (N, C, H, W), got shape "
                         f"{shape_of(X)}")
    return X


cdef cnp.ndarray _planes(cnp.ndarray X):
    """X itself when each (H, W) plane is contiguous, else a C-ordered copy."""
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(X)
    cdef Py_ssize_t H = cnp.PyArray_DIMS(X)[2], W = cnp.PyArray_DIMS(X)[3]
    cdef Py_ssize_t sh = cnp.PyArray_STRIDES(X)[2], sw = cnp.PyArray_STRIDES(X)[3]
    if (W == 1 or sw == isz) and (H == 1 or sh == W * isz) and cnp.PyArray_ISALIGNED(X):
        return X
    return np.ascontiguousarray(X)


cdef void _set_src(PoolJob *j, cnp.ndarray A):
    j.src = <char *>cnp.PyArray_DATA(A)
    j.C = cnp.PyArray_DIMS(A)[1]
    j.sn = cnp.PyArray_STRIDES(A)[0]
    j.sc = cnp.PyArray_STRIDES(A)[1]


cdef object _dt(int typenum):
    return np.float32 if typenum == cnp.NPY_FLOAT else np.float64


cdef tuple _out_shape(tuple xshape, const fdl_pool_geom *g):
    return (xshape[0], xshape[1], g.Ho, g.Wo)


cdef cnp.ndarray _dy(object dy, cnp.ndarray X, tuple expected, str func):
    cdef cnp.ndarray DY = _nchw(dy, func, "dy")
    if shape_of(DY) != expected:
        raise ValueError(f"fastdl.{func}: dy has shape {shape_of(DY)}, expected {expected} "
                         f"(the pooled shape of x with shape {shape_of(X)})")
    return DY


# --------------------------------------------------------------------------------------
# entry points

def max_pool2d(x, kernel_size, stride=None, padding=0, *, return_indices=False):
    """2-D max pooling of ``x`` (N, C, H, W): ``y[n, c, i, j]`` is the maximum of the window
    at ``(i*sh - ph, j*sw - pw)`` of size ``kernel_size`` (padding is -inf, so it never wins).

    ``kernel_size``, ``stride`` (default: ``kernel_size``), ``padding``: an int or a pair.
    NaN wins, as in PyTorch. ``return_indices=True`` returns ``(y, idx)``, idx (int64, y's
    shape) the flat ``h * W + w`` offset of each maximum within its (H, W) plane, as
    PyTorch's (the last NaN of a window, or the first maximum).

    ``ValueError`` for x not 4-D, a non-positive kernel_size or stride, a negative padding
    or one above half the kernel, a kernel larger than the padded input; ``TypeError`` for
    non-integer sizes or a non-float dtype.
    """
    cdef str func = "max_pool2d"
    cdef cnp.ndarray X = _nchw(x, func, "x")
    cdef PoolJob j
    j.g = _geometry(shape_of(X), kernel_size, stride, padding, func)
    cdef tuple oshape = _out_shape(shape_of(X), &j.g)
    cdef cnp.ndarray Y = np.empty(oshape, X.dtype)
    cdef cnp.ndarray I = np.empty(oshape, np.int64) if return_indices else None
    X = _planes(X)
    _set_src(&j, X)
    j.dst = <char *>cnp.PyArray_DATA(Y)
    j.idx = NULL if I is None else <int64_t *>cnp.PyArray_DATA(I)
    j.dplane = j.g.Ho * j.g.Wo
    j.iplane = j.dplane
    j.f32 = cnp.PyArray_TYPE(X) == cnp.NPY_FLOAT
    j.op = MAX_FWD
    if (j.g.kh == 2 and j.g.kw == 2 and j.g.sh == 2 and j.g.sw == 2
            and j.g.ph == 0 and j.g.pw == 0):
        if (j.g.H % 2 == 0 and j.g.W % 2 == 0 and j.g.W <= FDL_POOL22_MAXW
                and j.g.H * j.g.W <= SMALL_PLANE and cnp.PyArray_IS_C_CONTIGUOUS(X)):
            _max22_rows(&j, oshape[0] * oshape[1] * j.g.Ho, cnp.PyArray_SIZE(X))
            return (Y, I) if return_indices else Y
        j.op = MAX22_FWD
        # rows narrower than half a 64-byte vector: the 2x2 kernel's vector loops never run
        # (GCC's narrowest epilogue is half a vector) and its scalar tail is slow
        if j.g.Wo < (8 if j.f32 else 4) and _lanes_ok(&j, False):
            _lanes(&j, oshape[0] * oshape[1], cnp.PyArray_SIZE(X), 0)
            return (Y, I) if return_indices else Y
    elif _lanes_ok(&j, False):
        _lanes(&j, oshape[0] * oshape[1], cnp.PyArray_SIZE(X), 0)
        return (Y, I) if return_indices else Y
    rowbuf = _row_buffers(&j, oshape[0] * oshape[1], X.dtype)
    _go(&j, oshape[0] * oshape[1], cnp.PyArray_SIZE(X))
    if return_indices:
        return Y, I
    return Y


def max_pool2d_backward(dy, x, idx, kernel_size, stride=None, padding=0):
    """Gradient of ``max_pool2d``: ``dx`` of x's shape, each ``dy`` added at the position
    ``idx`` (from ``max_pool2d(..., return_indices=True)``) names in its plane; overlapping
    windows accumulate.

    ``idx`` must be an integer array of dy's shape with values in ``[0, H*W)``: ``TypeError``
    for another dtype, ``ValueError`` for a wrong shape or an index out of range (checked
    before anything is written: nothing is ever read or written out of bounds). dy must have
    the pooled shape of x (``ValueError`` naming both otherwise).
    """
    cdef str func = "max_pool2d_backward"
    cdef cnp.ndarray X = _nchw(x, func, "x")
    cdef PoolJob j
    j.g = _geometry(shape_of(X), kernel_size, stride, padding, func)
    cdef tuple oshape = _out_shape(shape_of(X), &j.g)
    cdef cnp.ndarray DY = _dy(dy, X, oshape, func)
    cdef cnp.ndarray I
    if not isinstance(idx, cnp.ndarray):
        idx = np.asarray(idx)
    I = <cnp.ndarray>idx
    if not cnp.PyArray_ISINTEGER(I):
        raise TypeError(f"fastdl.{func}: idx must be an integer array, got dtype {I.dtype}")
    if shape_of(I) != oshape:
        raise ValueError(f"fastdl.{func}: idx has shape {shape_of(I)}, expected {oshape} "
                         f"(dy's shape)")
    cdef Py_ssize_t HW = j.g.H * j.g.W
    if cnp.PyArray_TYPE(I) == cnp.NPY_UINT64:
        if I.size and I.max() >= <unsigned long long>HW:
            raise ValueError(f"fastdl.{func}: idx holds {I.max()}, outside [0, {HW}) (H*W of "
                             f"x with shape {shape_of(X)})")
    I = np.ascontiguousarray(I, dtype=np.int64)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(I), bad
    with nogil:
        bad = fdl_pool_check_idx(<int64_t *>cnp.PyArray_DATA(I), n, HW)
    if bad >= 0:
        raise ValueError(f"fastdl.{func}: idx holds {I.reshape(-1)[bad]} at flat position "
                         f"{bad}, outside [0, {HW}) (H*W of x with shape {shape_of(X)})")
    cdef int typenum = common_typenum(DY, X)
    DY = np.ascontiguousarray(as_typenum(DY, typenum))
    cdef cnp.ndarray DX = np.empty(shape_of(X), _dt(typenum))
    _set_src(&j, DY)
    j.dst = <char *>cnp.PyArray_DATA(DX)
    j.idx = <int64_t *>cnp.PyArray_DATA(I)
    j.dplane = HW
    j.iplane = j.g.Ho * j.g.Wo
    j.f32 = typenum == cnp.NPY_FLOAT
    j.op = MAX_BWD
    _go(&j, oshape[0] * oshape[1], cnp.PyArray_SIZE(DX))
    return DX


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """2-D average pooling of ``x`` (N, C, H, W): each window's sum divided by
    ``kh * kw``, zero padding counted (PyTorch's default ``count_include_pad=True``).
    Arguments and errors as ``max_pool2d``.
    """
    cdef str func = "avg_pool2d"
    cdef cnp.ndarray X = _nchw(x, func, "x")
    cdef PoolJob j
    j.g = _geometry(shape_of(X), kernel_size, stride, padding, func)
    cdef tuple oshape = _out_shape(shape_of(X), &j.g)
    cdef cnp.ndarray Y = np.empty(oshape, X.dtype)
    X = _planes(X)
    _set_src(&j, X)
    j.dst = <char *>cnp.PyArray_DATA(Y)
    j.idx = NULL
    j.dplane = j.g.Ho * j.g.Wo
    j.f32 = cnp.PyArray_TYPE(X) == cnp.NPY_FLOAT
    j.op = AVG_FWD
    if _lanes_ok(&j, True):
        _lanes(&j, oshape[0] * oshape[1], cnp.PyArray_SIZE(X), 1)
        return Y
    rowbuf = _row_buffers(&j, oshape[0] * oshape[1], X.dtype)
    _go(&j, oshape[0] * oshape[1], cnp.PyArray_SIZE(X))
    return Y


def avg_pool2d_backward(dy, x, kernel_size, stride=None, padding=0):
    """Gradient of ``avg_pool2d``: ``dx`` of x's shape, ``dy / (kh * kw)`` added over each
    window (overlapping windows accumulate). dy must have the pooled shape of x.
    """
    cdef str func = "avg_pool2d_backward"
    cdef cnp.ndarray X = _nchw(x, func, "x")
    cdef PoolJob j
    j.g = _geometry(shape_of(X), kernel_size, stride, padding, func)
    cdef tuple oshape = _out_shape(shape_of(X), &j.g)
    cdef cnp.ndarray DY = _dy(dy, X, oshape, func)
    cdef int typenum = common_typenum(DY, X)
    DY = _planes(as_typenum(DY, typenum))
    cdef cnp.ndarray DX = np.empty(shape_of(X), _dt(typenum))
    _set_src(&j, DY)
    j.dst = <char *>cnp.PyArray_DATA(DX)
    j.idx = NULL
    j.dplane = j.g.H * j.g.W
    j.f32 = typenum == cnp.NPY_FLOAT
    j.op = AVG_BWD
    _go(&j, oshape[0] * oshape[1], cnp.PyArray_SIZE(DX))
    return DX


def global_avg_pool2d(x):
    """Mean of each (H, W) plane of ``x`` (N, C, H, W) → ``(N, C)``. Planes of no elements
    give NaN (the mean of nothing, as NumPy)."""
    cdef str func = "global_avg_pool2d"
    cdef cnp.ndarray X = _planes(_nchw(x, func, "x"))
    cdef tuple xs = shape_of(X)
    cdef cnp.ndarray Y = np.empty(xs[:2], X.dtype)
    cdef PoolJob j
    if xs[2] * xs[3] == 0:
        Y.fill(np.nan)
        return Y
    j.g.H, j.g.W = xs[2], xs[3]
    _set_src(&j, X)
    j.dst = <char *>cnp.PyArray_DATA(Y)
    j.idx = NULL
    j.dplane = 1
    j.scale = 1.0 / (xs[2] * xs[3])
    j.f32 = cnp.PyArray_TYPE(X) == cnp.NPY_FLOAT
    j.op = GAP_FWD
    if cnp.PyArray_IS_C_CONTIGUOUS(X):
        _gap_contiguous(&j, xs[0] * xs[1], xs[2] * xs[3], cnp.PyArray_SIZE(X))
    else:
        _go(&j, xs[0] * xs[1], cnp.PyArray_SIZE(X))
    return Y


def global_avg_pool2d_backward(dy, x_shape_or_x):
    """Gradient of ``global_avg_pool2d``: ``dx[n, c, h, w] = dy[n, c] / (H * W)``.

    ``dy`` is ``(N, C)``; the second argument is x itself or its shape ``(N, C, H, W)`` (a
    tuple or list of ints: only the shape is needed, so a caller need not keep x alive; with
    an array, its dtype joins the promotion). dx is C-ordered.
    ``ValueError`` when dy is not ``(N, C)`` of that shape.
    """
    cdef str func = "global_avg_pool2d_backward"
    cdef cnp.ndarray DY = as_float_array(dy, func, "dy")
    cdef int typenum = cnp.PyArray_TYPE(DY)
    cdef cnp.ndarray X
    if isinstance(x_shape_or_x, (tuple, list)) and all(
            isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))
            for v in x_shape_or_x):
        xs = tuple(operator.index(v) for v in x_shape_or_x)
        if len(xs) != 4 or any(v < 0 for v in xs):
            raise ValueError(f"fastdl.{func}: x_shape must be a shape (N, C, H, W), got {xs}")
    else:
        X = _nchw(x_shape_or_x, func, "x")
        xs = shape_of(X)
        typenum = common_typenum(DY, X)
    if shape_of(DY) != xs[:2]:
        raise ValueError(f"fastdl.{func}: dy has shape {shape_of(DY)}, expected {xs[:2]} "
                         f"(x has shape {xs})")
    DY = as_typenum(DY, typenum)
    cdef cnp.ndarray DX = np.empty(xs, _dt(typenum))
    cdef PoolJob j
    if cnp.PyArray_SIZE(DX) == 0:
        return DX
    j.g.H, j.g.W = xs[2], xs[3]
    _set_src(&j, DY[:, :, None, None])
    j.dst = <char *>cnp.PyArray_DATA(DX)
    j.idx = NULL
    j.dplane = xs[2] * xs[3]
    j.scale = 1.0 / (xs[2] * xs[3])
    j.f32 = typenum == cnp.NPY_FLOAT
    j.op = GAP_BWD
    _go(&j, xs[0] * xs[1], cnp.PyArray_SIZE(DX))
    return DX
