# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Normalisation layers: batch_norm, layer_norm and their fused backward passes.

Inner loops: fastdl/norm.h. A batch-norm input (N, C, *S) is walked in the layout it has:
"planes" (each (n, c) plane of S elements contiguous: NCHW, or an (N, C) Fortran array seen as
(1, C, N)) or "rows" (the C channels contiguous: an (N, C) C array, NHWC); anything else is
copied once to C order. Work items depend only on the shape: a plane segment of at most
SEG elements, or a chunk of rows. Each statistics item writes its partial moments (or sums) to
its own slot, and the slots of a channel are merged in item order afterwards, so results are
bitwise identical for any thread count. Training reads x twice (statistics, normalisation).
"""

import math
import numbers
import operator

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport sqrt, isnan, NAN

from fastdl._ext._common cimport on_device, gpu_call
from fastdl._ext._common cimport as_float_array, common_typenum, as_typenum, shape_of
# (the one thread rule: serial, with no OpenMP region, below 32768 elements)
from fastdl._ext._softmax cimport thread_count

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    object PyArray_NewLikeArray(cnp.ndarray prototype, cnp.NPY_ORDER order,
                                cnp.PyArray_Descr *descr, int subok)

cdef extern from "fastdl/norm.h" nogil:
    Py_ssize_t fdl_nb_rows_block(Py_ssize_t C)
    void fdl_moments_merge(double *n, double *m, double *q, double nb, double mb, double qb)
    void fdl_nb_merge_cols(double *mean, double *m2, const double *mb, const double *qb,
                           Py_ssize_t C, double n, double nb)
    void fdl_nb_planes_moments_f32(const char *x, Py_ssize_t nplanes, Py_ssize_t sn, Py_ssize_t S,
                                   double *out)
    void fdl_nb_planes_moments_f64(const char *x, Py_ssize_t nplanes, Py_ssize_t sn, Py_ssize_t S,
                                   double *out)
    void fdl_nb_planes_dsums_f32(const char *x, const char *dy, Py_ssize_t nplanes, Py_ssize_t sxn,
                                 Py_ssize_t sdn, Py_ssize_t S, float c, double *out)
    void fdl_nb_planes_dsums_f64(const char *x, const char *dy, Py_ssize_t nplanes, Py_ssize_t sxn,
                                 Py_ssize_t sdn, Py_ssize_t S, double c, double *out)
    int FDL_NB_BLOCK
    void fdl_nb_moments_f32(const float *x, Py_ssize_t n, double *out)
    void fdl_nb_moments_f64(const double *x, Py_ssize_t n, double *out)
    void fdl_nb_dsums_f32(const float *x, const float *dy, const float *g, Py_ssize_t n, float c,
                          double *out)
    void fdl_nb_dsums_f64(const double *x, const double *dy, const double *g, Py_ssize_t n,
                          double c, double *out)
    void fdl_nb_affine_f32(const float *x, float *y, Py_ssize_t n, float m, float a, float b)
    void fdl_nb_affine_f64(const double *x, double *y, Py_ssize_t n, double m, double a,
                           double b)
    void fdl_nb_dx_f32(const float *x, const float *dy, float *dx, Py_ssize_t n, float m,
                       float k, float p, float q)
    void fdl_nb_dx_f64(const double *x, const double *dy, double *dx, Py_ssize_t n, double m,
                       double k, double p, double q)
    void fdl_nb_rows_moments_f32(const char *x, Py_ssize_t S, Py_ssize_t sn, Py_ssize_t ss,
                                 Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C, double *out,
                                 float *scratch)
    void fdl_nb_rows_moments_f64(const char *x, Py_ssize_t S, Py_ssize_t sn, Py_ssize_t ss,
                                 Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C, double *out,
                                 double *scratch)
    void fdl_nb_rows_dsums_f32(const char *x, const char *dy, Py_ssize_t S, Py_ssize_t sn,
                               Py_ssize_t ss, Py_ssize_t dsn, Py_ssize_t dss, Py_ssize_t r0,
                               Py_ssize_t r1, Py_ssize_t C, const float *m, double *out,
                               float *scratch)
    void fdl_nb_rows_dsums_f64(const char *x, const char *dy, Py_ssize_t S, Py_ssize_t sn,
                               Py_ssize_t ss, Py_ssize_t dsn, Py_ssize_t dss, Py_ssize_t r0,
                               Py_ssize_t r1, Py_ssize_t C, const double *m, double *out,
                               double *scratch)
    void fdl_nb_row_affine_f32(const float *x, float *y, Py_ssize_t C, const float *m,
                               const float *a, const float *b)
    void fdl_nb_row_affine_f64(const double *x, double *y, Py_ssize_t C, const double *m,
                               const double *a, const double *b)
    void fdl_nb_row_dx_f32(const float *x, const float *dy, float *dx, Py_ssize_t C,
                           const float *m, const float *k, const float *p, const float *q)
    void fdl_nb_row_dx_f64(const double *x, const double *dy, double *dx, Py_ssize_t C,
                           const double *m, const double *k, const double *p, const double *q)
    void fdl_ln_row_f32(const float *x, float *y, Py_ssize_t D, const float *g, const float *b,
                        double eps, float *mean, float *inv)
    void fdl_ln_row_f64(const double *x, double *y, Py_ssize_t D, const double *g,
                        const double *b, double eps, double *mean, double *inv)
    void fdl_ln_rows_bwd_f32(const float *x, const float *dy, float *dx, Py_ssize_t r0,
                             Py_ssize_t r1, Py_ssize_t D, const float *g, const float *mean,
                             const float *inv_std, double *part, float *scratch)
    void fdl_ln_rows_bwd_f64(const double *x, const double *dy, double *dx, Py_ssize_t r0,
                             Py_ssize_t r1, Py_ssize_t D, const double *g, const double *mean,
                             const double *inv_std, double *part, double *scratch)

# Kernels keep the GIL below this many elements (releasing it costs more than the work).
cdef Py_ssize_t GIL_MIN_ELEMENTS = 4096
# A plane longer than SEG elements is cut into segments (the unit of parallel work).
cdef Py_ssize_t SEG = 32768
# Rows of the rows layout per work item: about ROW_ITEM_ELEMENTS elements, a multiple of
# the statistics block (fdl_nb_rows_block), so the blocks never depend on the split.
cdef Py_ssize_t ROW_ITEM_ELEMENTS = 262144

cdef enum Layout:
    PLANES = 0
    ROWS = 1

cdef enum Phase:
    PH_STATS = 0
    PH_AFFINE = 1
    PH_DSUMS = 2
    PH_DX = 3


ctypedef struct BNJob:
    char *x
    char *y            # y (forward) or dx (backward)
    char *dy
    Py_ssize_t N, C, S, nseg, rpc, R
    Py_ssize_t gp, ng   # small planes: items of gp planes of one channel, ng per channel
    Py_ssize_t xsn, xsc, xss, ysn, ysc, yss, dsn, dsc, dss   # byte strides of (N, C, S)
    double *part
    char *scratch
    char *m
    char *a
    char *b
    char *p
    bint f32
    int layout


# --------------------------------------------------------------------------------------
# layouts

cdef tuple _merge_trailing(tuple shape, tuple strides, int start, Py_ssize_t isz):
    """(S, ss): the axes start.. as one axis of S elements and byte stride ss, or ss None."""
    cdef Py_ssize_t S = 1, ss = 0, expected = 0, d
    cdef bint first = True
    for d in range(len(shape) - 1, start - 1, -1):
        S *= shape[d]
        if shape[d] == 1:
            continue
        if first:
            ss = strides[d]
            expected = ss * shape[d]
            first = False
        elif strides[d] != expected:
            return S, None
        else:
            expected = strides[d] * shape[d]
    if first:
        ss = isz
    return S, ss


cdef tuple _bn_view(cnp.ndarray a, int layout):
    """(N, C, S, sn, sc, ss) in bytes for `layout`, or None when a does not fit it."""
    cdef tuple shape = shape_of(a)
    cdef tuple strides = (<object>a).strides
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(a)
    cdef Py_ssize_t N = shape[0], C = shape[1]
    cdef Py_ssize_t sn = strides[0], sc = strides[1]
    if C == 1:
        sc = isz
    S, ss = _merge_trailing(shape, strides, 2, isz)
    if layout == PLANES:
        if ss == isz:
            return N, C, S, sn, sc, ss
        # (N, C) with N the unit-stride axis: the (1, C, N) planes of a Fortran array
        if len(shape) == 2 and (sn == isz or N == 1):
            return 1, C, N, 0, sc, isz
        return None
    if ss is not None and sc == isz:
        return N, C, S, sn, sc, ss
    return None


cdef tuple _bn_layout(cnp.ndarray X):
    """(layout, X): the layout x is walked in; x copied to C order if it fits none."""
    cdef bint two_d = cnp.PyArray_NDIM(X) == 2
    if two_d and _bn_view(X, ROWS) is not None:
        return ROWS, X
    if _bn_view(X, PLANES) is not None:
        return PLANES, X
    if _bn_view(X, ROWS) is not None:
        return ROWS, X
    X = np.ascontiguousarray(X)
    return (ROWS if two_d else PLANES), X


cdef cnp.ndarray _like(cnp.ndarray X, int layout, object src):
    """A fresh array in X's memory order (its layout), holding src if given."""
    cdef cnp.ndarray r = <cnp.ndarray>PyArray_NewLikeArray(X, cnp.NPY_KEEPORDER, NULL, 0)
    if _bn_view(r, layout) is None:
        r = np.empty(shape_of(X), dtype=X.dtype)   # fits: X was C-ordered or fits C order
    if src is not None:
        np.copyto(r, src)
    return r


# --------------------------------------------------------------------------------------
# batch-norm work items

cdef void _bn_group_item(const BNJob *j, int phase, Py_ssize_t it) noexcept nogil:
    """Item it of small planes: planes k*gp .. of channel c (it = c*ng + k), slot it."""
    cdef Py_ssize_t c = it // j.ng, k = it % j.ng, n, n0, n1
    cdef Py_ssize_t isz = 4 if j.f32 else 8
    n0 = k * j.gp
    n1 = n0 + j.gp if n0 + j.gp < j.N else j.N
    cdef char *xp = j.x + n0 * j.xsn + c * j.xsc
    cdef char *yp
    cdef char *dp
    if phase == PH_STATS:
        if j.f32:
            fdl_nb_planes_moments_f32(xp, n1 - n0, j.xsn, j.S, j.part + 3 * it)
        else:
            fdl_nb_planes_moments_f64(xp, n1 - n0, j.xsn, j.S, j.part + 3 * it)
        return
    dp = NULL if phase == PH_AFFINE else j.dy + n0 * j.dsn + c * j.dsc
    if phase == PH_DSUMS:
        if j.f32:
            fdl_nb_planes_dsums_f32(xp, dp, n1 - n0, j.xsn, j.dsn, j.S, (<float *>j.m)[c],
                                    j.part + 2 * it)
        else:
            fdl_nb_planes_dsums_f64(xp, dp, n1 - n0, j.xsn, j.dsn, j.S, (<double *>j.m)[c],
                                    j.part + 2 * it)
        return
    yp = j.y + n0 * j.ysn + c * j.ysc
    for n in range(n1 - n0):
        if phase == PH_AFFINE:
            if j.f32:
                fdl_nb_affine_f32(<float *>xp, <float *>yp, j.S, (<float *>j.m)[c],
                                  (<float *>j.a)[c], (<float *>j.b)[c])
            else:
                fdl_nb_affine_f64(<double *>xp, <double *>yp, j.S, (<double *>j.m)[c],
                                  (<double *>j.a)[c], (<double *>j.b)[c])
        elif j.f32:
            fdl_nb_dx_f32(<float *>xp, <float *>dp, <float *>yp, j.S, (<float *>j.m)[c],
                          (<float *>j.a)[c], (<float *>j.p)[c], (<float *>j.b)[c])
        else:
            fdl_nb_dx_f64(<double *>xp, <double *>dp, <double *>yp, j.S, (<double *>j.m)[c],
                          (<double *>j.a)[c], (<double *>j.p)[c], (<double *>j.b)[c])
        xp += j.xsn
        yp += j.ysn
        if dp != NULL:
            dp += j.dsn


cdef void _bn_item(const BNJob *j, int phase, Py_ssize_t it) noexcept nogil:
    cdef Py_ssize_t n, c, seg, s0, ln, slot, r0, r1, r
    cdef Py_ssize_t isz = 4 if j.f32 else 8
    cdef char *xp
    cdef char *yp
    cdef char *dp
    if j.layout == PLANES and j.gp > 1:
        _bn_group_item(j, phase, it)
        return
    if j.layout == PLANES:
        seg = it % j.nseg
        c = (it // j.nseg) % j.C
        n = it // (j.nseg * j.C)
        s0 = seg * SEG
        ln = j.S - s0 if j.S - s0 < SEG else SEG
        xp = j.x + n * j.xsn + c * j.xsc + s0 * isz
        slot = (c * j.N + n) * j.nseg + seg
        if phase == PH_STATS:
            if j.f32:
                fdl_nb_moments_f32(<float *>xp, ln, j.part + 3 * slot)
            else:
                fdl_nb_moments_f64(<double *>xp, ln, j.part + 3 * slot)
        elif phase == PH_DSUMS:
            dp = j.dy + n * j.dsn + c * j.dsc + s0 * isz
            if j.f32:
                fdl_nb_dsums_f32(<float *>xp, <float *>dp, NULL, ln, (<float *>j.m)[c],
                                 j.part + 2 * slot)
            else:
                fdl_nb_dsums_f64(<double *>xp, <double *>dp, NULL, ln, (<double *>j.m)[c],
                                 j.part + 2 * slot)
        elif phase == PH_AFFINE:
            yp = j.y + n * j.ysn + c * j.ysc + s0 * isz
            if j.f32:
                fdl_nb_affine_f32(<float *>xp, <float *>yp, ln, (<float *>j.m)[c],
                                  (<float *>j.a)[c], (<float *>j.b)[c])
            else:
                fdl_nb_affine_f64(<double *>xp, <double *>yp, ln, (<double *>j.m)[c],
                                  (<double *>j.a)[c], (<double *>j.b)[c])
        else:
            yp = j.y + n * j.ysn + c * j.ysc + s0 * isz
            dp = j.dy + n * j.dsn + c * j.dsc + s0 * isz
            if j.f32:
                fdl_nb_dx_f32(<float *>xp, <float *>dp, <float *>yp, ln, (<float *>j.m)[c],
                              (<float *>j.a)[c], (<float *>j.p)[c], (<float *>j.b)[c])
            else:
                fdl_nb_dx_f64(<double *>xp, <double *>dp, <double *>yp, ln,
                              (<double *>j.m)[c], (<double *>j.a)[c], (<double *>j.p)[c],
                              (<double *>j.b)[c])
        return
    r0 = it * j.rpc
    r1 = r0 + j.rpc if r0 + j.rpc < j.R else j.R
    if phase == PH_STATS:
        if j.f32:
            fdl_nb_rows_moments_f32(j.x, j.S, j.xsn, j.xss, r0, r1, j.C, j.part + 3 * j.C * it,
                                    <float *>j.scratch + 3 * j.C * it)
        else:
            fdl_nb_rows_moments_f64(j.x, j.S, j.xsn, j.xss, r0, r1, j.C, j.part + 3 * j.C * it,
                                    <double *>j.scratch + 3 * j.C * it)
        return
    if phase == PH_DSUMS:
        if j.f32:
            fdl_nb_rows_dsums_f32(j.x, j.dy, j.S, j.xsn, j.xss, j.dsn, j.dss, r0, r1, j.C,
                                  <float *>j.m, j.part + 2 * j.C * it,
                                  <float *>j.scratch + 2 * j.C * it)
        else:
            fdl_nb_rows_dsums_f64(j.x, j.dy, j.S, j.xsn, j.xss, j.dsn, j.dss, r0, r1, j.C,
                                  <double *>j.m, j.part + 2 * j.C * it,
                                  <double *>j.scratch + 2 * j.C * it)
        return
    for r in range(r0, r1):
        xp = j.x + (r // j.S) * j.xsn + (r % j.S) * j.xss
        yp = j.y + (r // j.S) * j.ysn + (r % j.S) * j.yss
        if phase == PH_AFFINE:
            if j.f32:
                fdl_nb_row_affine_f32(<float *>xp, <float *>yp, j.C, <float *>j.m,
                                      <float *>j.a, <float *>j.b)
            else:
                fdl_nb_row_affine_f64(<double *>xp, <double *>yp, j.C, <double *>j.m,
                                      <double *>j.a, <double *>j.b)
        else:
            dp = j.dy + (r // j.S) * j.dsn + (r % j.S) * j.dss
            if j.f32:
                fdl_nb_row_dx_f32(<float *>xp, <float *>dp, <float *>yp, j.C, <float *>j.m,
                                  <float *>j.a, <float *>j.p, <float *>j.b)
            else:
                fdl_nb_row_dx_f64(<double *>xp, <double *>dp, <double *>yp, j.C,
                                  <double *>j.m, <double *>j.a, <double *>j.p,
                                  <double *>j.b)


cdef void _bn_run(const BNJob *j, int phase, Py_ssize_t items, int nth) noexcept nogil:
    cdef Py_ssize_t it
    if nth == 1:
        for it in range(items):
            _bn_item(j, phase, it)
    else:
        for it in prange(items, schedule='static', num_threads=nth):
            _bn_item(j, phase, it)


cdef void _bn_go(const BNJob *j, int phase, Py_ssize_t items, int nth, bint gil) noexcept:
    if gil:
        _bn_run(j, phase, items, nth)
    else:
        with nogil:
            _bn_run(j, phase, items, nth)


cdef void _bn_merge_moments(const BNJob *j, Py_ssize_t nslots, double *pm,
                            double *pv) noexcept nogil:
    """Per channel: the partial moments merged in slot order -> mean, biased variance
    (pm, pv; pv holds the deviation sums until the end). Planes: slot (c, k) holds (count,
    mean, m2) at part[3 * (c * nslots + k)]; rows: item k holds them planar,
    part[3*C*k + (0, C, 2C) + c], merged for all channels at once (equal counts)."""
    cdef Py_ssize_t c, k
    cdef double cn, cm, cq, n = 0.0
    cdef double *p
    if j.layout == PLANES:
        for c in range(j.C):
            cn = 0.0
            cm = 0.0
            cq = 0.0
            for k in range(nslots):
                p = j.part + 3 * (c * nslots + k)
                fdl_moments_merge(&cn, &cm, &cq, p[0], p[1], p[2])
            pm[c] = cm if cn > 0 else NAN
            pv[c] = cq / cn if cn > 0 else NAN
        return
    for c in range(j.C):
        pm[c] = 0.0
        pv[c] = 0.0
    for k in range(nslots):
        p = j.part + 3 * j.C * k
        if j.C > 0:
            fdl_nb_merge_cols(pm, pv, p + j.C, p + 2 * j.C, j.C, n, p[0])
            n += p[0]
    for c in range(j.C):
        pm[c] = pm[c] if n > 0 else NAN
        pv[c] = pv[c] / n if n > 0 else NAN


cdef Py_ssize_t _bn_setup(BNJob *j, int layout, tuple v, bint f32):
    """Fill the shape part of the job from x's view; returns the number of items."""
    j.N, j.C, j.S, j.xsn, j.xsc, j.xss = v
    j.f32 = f32
    j.layout = layout
    j.R = j.N * j.S
    j.gp = 1
    j.ng = 0
    if layout == PLANES:
        j.nseg = (j.S + SEG - 1) // SEG if j.S > 0 else 0
        if 0 < j.S and 2 * j.S <= FDL_NB_BLOCK:
            # small planes: gp planes of a channel per item and statistics block
            j.gp = FDL_NB_BLOCK // j.S
            j.ng = (j.N + j.gp - 1) // j.gp
            return j.C * j.ng
        return j.N * j.C * j.nseg
    j.rpc = ROW_ITEM_ELEMENTS // (j.C if j.C > 0 else 1)
    rb = fdl_nb_rows_block(j.C)
    j.rpc = (j.rpc + rb - 1) // rb * rb
    if j.rpc < rb:
        j.rpc = rb
    return (j.R + j.rpc - 1) // j.rpc


cdef Py_ssize_t _slots_per_channel(const BNJob *j) noexcept:
    if j.layout == PLANES:
        return j.ng if j.gp > 1 else j.N * j.nseg
    return (j.R + j.rpc - 1) // j.rpc


# --------------------------------------------------------------------------------------
# argument checks

cdef double _hyper(object v, str func, str name, double lo, double hi, bint hi_open) except? -1:
    cdef double d
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"fastdl.{func}: {name} must be a real number, got {type(v).__name__}")
    d = float(v)
    if isnan(d) or d < lo or d > hi or (hi_open and d == hi):
        rng = f"[{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"fastdl.{func}: {name} must be in {rng}, got {v!r}")
    return d


cdef cnp.ndarray _param(object p, str func, str name, tuple shape):
    cdef cnp.ndarray P = as_float_array(p, func, name)
    if shape_of(P) != shape:
        raise ValueError(f"fastdl.{func}: {name} has shape {shape_of(P)}, expected {shape}")
    return P


cdef cnp.ndarray _running(object r, str func, str name, Py_ssize_t C, int typenum):
    """A running statistic: updated in place, so it must be a writeable array of the result
    dtype and shape (C,) (a converted copy would lose the update)."""
    cdef cnp.ndarray R
    expected = "float32" if typenum == cnp.NPY_FLOAT else "float64"
    if not isinstance(r, cnp.ndarray):
        raise TypeError(f"fastdl.{func}: {name} is updated in place and must be a "
                        f"numpy.ndarray, got {type(r).__name__}")
    R = <cnp.ndarray>r
    if cnp.PyArray_TYPE(R) != typenum or not cnp.PyArray_ISNOTSWAPPED(R):
        raise TypeError(f"fastdl.{func}: {name} has dtype {R.dtype}, expected {expected} "
                        f"(the dtype of the result)")
    if shape_of(R) != (C,):
        raise ValueError(f"fastdl.{func}: {name} has shape {shape_of(R)}, expected ({C},)")
    if not cnp.PyArray_ISWRITEABLE(R):
        raise ValueError(f"fastdl.{func}: {name} is read-only; it is updated in place")
    return R


cdef cnp.ndarray _bn_input(object x, str func, str name):
    cdef cnp.ndarray X = as_float_array(x, func, name)
    if cnp.PyArray_NDIM(X) < 2:
        raise ValueError(f"fastdl.{func}: {name} must have shape (N, C) or (N, C, H, W) "
                         f"(statistics over every axis but 1), got shape {shape_of(X)}")
    return X


cdef int _result_type(cnp.ndarray X, tuple others):
    """float32 only when x and every other given array are float32 (NumPy's promotion)."""
    cdef int t = cnp.PyArray_TYPE(X)
    for P in others:
        if P is not None:
            t = common_typenum(X, <cnp.ndarray>P) if t == cnp.NPY_FLOAT else t
    return t


cdef object _dt(int typenum):
    return np.float32 if typenum == cnp.NPY_FLOAT else np.float64


# --------------------------------------------------------------------------------------
# batch_norm

cdef object _bn_empty(cnp.ndarray X, object dt, bint train, cnp.ndarray RM, cnp.ndarray RV,
                      double eps, bint return_stats):
    """An empty input: an empty y; batch statistics of nothing are NaN (NumPy's mean of
    nothing) and leave the running statistics untouched."""
    cdef Py_ssize_t C = cnp.PyArray_DIMS(X)[1]
    y = np.empty(shape_of(X), dt)
    if not return_stats:
        return y
    if train:
        return y, np.full(C, np.nan, dt), np.full(C, np.nan, dt)
    return y, RM.astype(dt), (1.0 / np.sqrt(RV.astype(np.float64) + eps)).astype(dt)


def batch_norm(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1,
               eps=1e-5, *, return_stats=False):
    """Batch normalisation over every axis of ``x`` but axis 1 (the channels).

    ``x`` is ``(N, C)`` or ``(N, C, H, W)`` (any ``(N, C, *S)``); ``gamma``, ``beta`` of shape
    ``(C,)`` (None: 1 and 0). Training (``training=True``): the batch mean and biased variance
    per channel (cheat sheet), ``y = gamma * (x - mean) / sqrt(var + eps) + beta``, and
    ``running_mean``/``running_var`` are updated in place by PyTorch's rule
    ``r = (1 - momentum) * r + momentum * stat`` with the unbiased variance for
    ``running_var``; they may be None (no update). Inference: the running statistics replace
    the batch's (cheat sheet), and they are required.

    ``return_stats=True`` returns ``(y, mean, inv_std)`` (shape ``(C,)``, the result dtype):
    the batch statistics in training (for ``batch_norm_backward``), the running ones in
    inference. The result has x's dtype and memory layout (NCHW or NHWC views stay so).

    Errors (raised before anything is written): ``ValueError`` for x with fewer than 2 axes,
    wrong parameter shapes, momentum outside [0, 1], negative or NaN eps, a single value per
    channel in training (N * H * W == 1, as PyTorch), missing running statistics in
    inference; ``TypeError``/``ValueError`` for running statistics that are not writeable
    arrays of the result dtype and shape ``(C,)``. An empty batch in training gives an empty
    y, NaN statistics and leaves the running statistics untouched.
    """
    if on_device(x):
        return gpu_call("batch_norm", (), {"x": x, "gamma": gamma, "beta": beta, "running_mean": running_mean, "running_var": running_var, "training": training, "momentum": momentum, "eps": eps, "return_stats": return_stats})
    cdef str func = "batch_norm"
    cdef cnp.ndarray X = _bn_input(x, func, "x")
    cdef Py_ssize_t C = cnp.PyArray_DIMS(X)[1]
    cdef tuple cshape = (C,)
    cdef cnp.ndarray G = None if gamma is None else _param(gamma, func, "gamma", cshape)
    cdef cnp.ndarray B = None if beta is None else _param(beta, func, "beta", cshape)
    cdef int typenum = _result_type(X, (G, B))
    cdef double mom = _hyper(momentum, func, "momentum", 0.0, 1.0, False)
    cdef double ep = _hyper(eps, func, "eps", 0.0, math.inf, False)
    cdef bint train = bool(training)
    cdef cnp.ndarray RM = None if running_mean is None else _running(
        running_mean, func, "running_mean", C, typenum)
    cdef cnp.ndarray RV = None if running_var is None else _running(
        running_var, func, "running_var", C, typenum)
    if (RM is None) != (RV is None):
        raise ValueError(f"fastdl.{func}: running_mean and running_var must both be arrays "
                         "or both be None")
    if not train and RM is None:
        raise ValueError(f"fastdl.{func}: inference (training=False) needs running_mean and "
                         "running_var")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(X)
    cdef Py_ssize_t M = 1
    for d in shape_of(X)[:1] + shape_of(X)[2:]:
        M *= d
    if train and M == 1:
        raise ValueError(f"fastdl.{func}: expected more than 1 value per channel when "
                         f"training, got input of shape {shape_of(X)}")
    X = as_typenum(X, typenum)
    cdef object dt = _dt(typenum)
    g = np.ones(C, dt) if G is None else np.ascontiguousarray(G, dtype=dt)
    b = np.zeros(C, dt) if B is None else np.ascontiguousarray(B, dtype=dt)

    if size == 0:
        return _bn_empty(X, dt, train, RM, RV, ep, return_stats)
    cdef int layout
    layout, X = _bn_layout(X)
    cdef cnp.ndarray Y = _like(X, layout, None)
    cdef BNJob j
    cdef Py_ssize_t items = _bn_setup(&j, layout, _bn_view(X, layout), typenum == cnp.NPY_FLOAT)
    _, _, _, j.ysn, j.ysc, j.yss = _bn_view(Y, layout)
    j.x = <char *>cnp.PyArray_DATA(X)
    j.y = <char *>cnp.PyArray_DATA(Y)
    cdef int nth = thread_count(size, items)
    cdef bint gil = size < GIL_MIN_ELEMENTS
    cdef cnp.ndarray part, scratch
    cdef cnp.ndarray mean64 = np.empty(C, np.float64), var64 = np.empty(C, np.float64)
    cdef double *pm = <double *>cnp.PyArray_DATA(mean64)
    cdef double *pv = <double *>cnp.PyArray_DATA(var64)
    cdef Py_ssize_t nslots
    if train:
        nslots = _slots_per_channel(&j)
        part = np.empty(3 * C * nslots, np.float64)
        scratch = np.empty(3 * C * items if layout == ROWS else 1, dt)
        j.part = <double *>cnp.PyArray_DATA(part)
        j.scratch = <char *>cnp.PyArray_DATA(scratch)
        _bn_go(&j, PH_STATS, items, nth, gil)
        _bn_merge_moments(&j, nslots, pm, pv)
        mean = mean64.astype(dt)
        inv_std = (1.0 / np.sqrt(var64 + ep)).astype(dt)
        if RM is not None and M > 0:
            # unbiased variance for the running estimate (PyTorch); M >= 2 here
            RM[...] = (1.0 - mom) * RM.astype(np.float64) + mom * mean64
            RV[...] = (1.0 - mom) * RV.astype(np.float64) + mom * (var64 * (M / (M - 1.0)))
    else:
        mean = np.array(RM, dtype=dt, copy=True)     # never the caller's array itself
        inv_std = (1.0 / np.sqrt(RV.astype(np.float64) + ep)).astype(dt)
    a = (g * inv_std).astype(dt)
    j.m = <char *>cnp.PyArray_DATA(<cnp.ndarray>mean)
    j.a = <char *>cnp.PyArray_DATA(<cnp.ndarray>a)
    j.b = <char *>cnp.PyArray_DATA(<cnp.ndarray>b)
    _bn_go(&j, PH_AFFINE, items, nth, gil)
    if return_stats:
        return Y, mean, inv_std
    return Y


def batch_norm_backward(dy, x, gamma, mean, inv_std):
    """Gradients of training-mode ``batch_norm``: ``(dx, dgamma, dbeta)``.

    ``mean`` and ``inv_std`` are the batch statistics ``batch_norm(...,
    return_stats=True)`` returned (shape ``(C,)``); ``gamma`` of shape ``(C,)`` or None (1).
    With ``xhat = (x - mean) * inv_std`` and M values per channel:
    ``dbeta = sum(dy)``, ``dgamma = sum(dy * xhat)`` (over every axis but 1) and
    ``dx = gamma * inv_std * (dy - dbeta / M - xhat * dgamma / M)``. Two passes: the
    per-channel sums, then dx. dx has x's layout; dgamma and dbeta shape ``(C,)``.

    ``ValueError`` when dy and x differ in shape or a statistic is not ``(C,)``.
    """
    if on_device(dy):
        return gpu_call("batch_norm_backward", (), {"dy": dy, "x": x, "gamma": gamma, "mean": mean, "inv_std": inv_std})
    cdef str func = "batch_norm_backward"
    cdef cnp.ndarray DY = _bn_input(dy, func, "dy")
    cdef cnp.ndarray X = _bn_input(x, func, "x")
    if shape_of(DY) != shape_of(X):
        raise ValueError(f"fastdl.{func}: dy has shape {shape_of(DY)} and x has shape "
                         f"{shape_of(X)}; they must be equal")
    cdef Py_ssize_t C = cnp.PyArray_DIMS(X)[1]
    cdef tuple cshape = (C,)
    cdef cnp.ndarray G = None if gamma is None else _param(gamma, func, "gamma", cshape)
    cdef cnp.ndarray MU = _param(mean, func, "mean", cshape)
    cdef cnp.ndarray IS = _param(inv_std, func, "inv_std", cshape)
    cdef int typenum = _result_type(X, (DY, G, MU, IS))
    cdef object dt = _dt(typenum)
    X = as_typenum(X, typenum)
    DY = as_typenum(DY, typenum)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(X)
    cdef Py_ssize_t M = 1
    for d in shape_of(X)[:1] + shape_of(X)[2:]:
        M *= d
    g = np.ones(C, dt) if G is None else np.ascontiguousarray(G, dtype=dt)
    mu = np.ascontiguousarray(MU, dtype=dt)
    inv = np.ascontiguousarray(IS, dtype=dt)

    if size == 0:
        return np.empty(shape_of(X), dt), np.zeros(C, dt), np.zeros(C, dt)
    cdef int layout
    layout, X = _bn_layout(X)
    dv = _bn_view(DY, layout)
    if dv is None:
        DY = _like(X, layout, DY)
        dv = _bn_view(DY, layout)
    cdef cnp.ndarray DX = _like(X, layout, None)
    cdef BNJob j
    cdef Py_ssize_t items = _bn_setup(&j, layout, _bn_view(X, layout), typenum == cnp.NPY_FLOAT)
    _, _, _, j.dsn, j.dsc, j.dss = dv
    _, _, _, j.ysn, j.ysc, j.yss = _bn_view(DX, layout)
    j.x = <char *>cnp.PyArray_DATA(X)
    j.dy = <char *>cnp.PyArray_DATA(DY)
    j.y = <char *>cnp.PyArray_DATA(DX)
    j.m = <char *>cnp.PyArray_DATA(<cnp.ndarray>mu)
    cdef int nth = thread_count(size, items)
    cdef bint gil = size < GIL_MIN_ELEMENTS
    cdef Py_ssize_t nslots = _slots_per_channel(&j), c, k, sl
    cdef cnp.ndarray part = np.zeros(2 * C * nslots, np.float64)
    cdef cnp.ndarray scratch = np.empty(2 * C * items if layout == ROWS else 1, dt)
    cdef cnp.ndarray sums = np.zeros(2 * C, np.float64)
    cdef double *ps = <double *>cnp.PyArray_DATA(sums)
    j.part = <double *>cnp.PyArray_DATA(part)
    j.scratch = <char *>cnp.PyArray_DATA(scratch)
    _bn_go(&j, PH_DSUMS, items, nth, gil)
    # partials added in slot order (planes: slot (c, k) at part[2 * (c * nslots + k)]; rows:
    # item k planar, part[2*C*k + (0, C) + c])
    for c in range(C):
        for k in range(nslots):
            if layout == PLANES:
                sl = 2 * (c * nslots + k)
                ps[2 * c] += j.part[sl]
                ps[2 * c + 1] += j.part[sl + 1]
            else:
                sl = 2 * C * k + c
                ps[2 * c] += j.part[sl]
                ps[2 * c + 1] += j.part[sl + C]
    sb = sums[0::2]
    sx = sums[1::2]
    inv64 = inv.astype(np.float64)
    k64 = g.astype(np.float64) * inv64
    dbeta = sb.astype(dt)
    dgamma = (sx * inv64).astype(dt)
    if M > 0:
        kk = k64.astype(dt)
        pp = (-k64 * inv64 * inv64 * sx / M).astype(dt)
        qq = (-k64 * sb / M).astype(dt)
        j.a = <char *>cnp.PyArray_DATA(<cnp.ndarray>kk)
        j.p = <char *>cnp.PyArray_DATA(<cnp.ndarray>pp)
        j.b = <char *>cnp.PyArray_DATA(<cnp.ndarray>qq)
        _bn_go(&j, PH_DX, items, nth, gil)
    return DX, dgamma, dbeta


# --------------------------------------------------------------------------------------
# layer_norm

cdef tuple _norm_shape(object normalized_shape, tuple xshape, str func):
    """normalized_shape as a tuple that x's trailing axes must equal."""
    if isinstance(normalized_shape, (numbers.Integral, np.integer)) and \
            not isinstance(normalized_shape, (bool, np.bool_)):
        ns = (operator.index(normalized_shape),)
    else:
        try:
            ns = tuple(operator.index(v) for v in normalized_shape)
        except TypeError:
            raise TypeError(f"fastdl.{func}: normalized_shape must be an int or a tuple of "
                            f"ints, got {normalized_shape!r}") from None
    if len(ns) == 0:
        raise ValueError(f"fastdl.{func}: normalized_shape must have at least one axis")
    if len(ns) > len(xshape) or xshape[len(xshape) - len(ns):] != ns:
        raise ValueError(f"fastdl.{func}: normalized_shape {ns} does not match the trailing "
                         f"axes of x with shape {xshape}")
    return ns


cdef int _ln_rows_per_item(Py_ssize_t D) noexcept:
    cdef Py_ssize_t r = 16384 // (D if D > 0 else 1)
    return <int>(r if r > 1 else 1)


def layer_norm(x, normalized_shape, gamma=None, beta=None, eps=1e-5, *, return_stats=False):
    """Layer normalisation over the trailing ``normalized_shape`` axes of ``x``.

    ``y = (x - mean) / sqrt(var + eps) * gamma + beta`` with the mean and biased variance of
    each row of ``D = prod(normalized_shape)`` values; ``gamma``/``beta`` of shape
    ``normalized_shape`` or None. ``return_stats=True`` returns ``(y, mean, inv_std)``, the
    statistics of shape ``x.shape[:-len(normalized_shape)]``. Rows of 0 features give NaN
    statistics (the mean of nothing) and an empty y.

    ``ValueError`` when normalized_shape does not match x's trailing axes or is empty, for
    wrong gamma/beta shapes or a negative/NaN eps; ``TypeError`` for a non-integer
    normalized_shape or a non-float dtype.
    """
    if on_device(x):
        return gpu_call("layer_norm", (), {"x": x, "normalized_shape": normalized_shape, "gamma": gamma, "beta": beta, "eps": eps, "return_stats": return_stats})
    cdef str func = "layer_norm"
    cdef cnp.ndarray X = as_float_array(x, func, "x")
    cdef tuple ns = _norm_shape(normalized_shape, shape_of(X), func)
    cdef cnp.ndarray G = None if gamma is None else _param(gamma, func, "gamma", ns)
    cdef cnp.ndarray B = None if beta is None else _param(beta, func, "beta", ns)
    cdef double ep = _hyper(eps, func, "eps", 0.0, math.inf, False)
    cdef int typenum = _result_type(X, (G, B))
    cdef object dt = _dt(typenum)
    cdef tuple outer = shape_of(X)[:cnp.PyArray_NDIM(X) - len(ns)]
    cdef Py_ssize_t D = 1, R = 1, r, it
    for v in ns:
        D *= v
    for v in outer:
        R *= v
    X = np.ascontiguousarray(as_typenum(X, typenum))
    cdef cnp.ndarray Y = np.empty(shape_of(X), dt)
    cdef cnp.ndarray mean = np.empty(outer, dt), inv = np.empty(outer, dt)
    if D == 0:
        mean.fill(np.nan)
        inv.fill(np.nan)
        return (Y, mean, inv) if return_stats else Y
    g = None if G is None else np.ascontiguousarray(G, dtype=dt)
    b = None if B is None else np.ascontiguousarray(B, dtype=dt)
    cdef char *px = <char *>cnp.PyArray_DATA(X)
    cdef char *py = <char *>cnp.PyArray_DATA(Y)
    cdef char *pg = NULL if g is None else <char *>cnp.PyArray_DATA(<cnp.ndarray>g)
    cdef char *pb = NULL if b is None else <char *>cnp.PyArray_DATA(<cnp.ndarray>b)
    cdef char *pm = <char *>cnp.PyArray_DATA(mean)
    cdef char *pi = <char *>cnp.PyArray_DATA(inv)
    cdef bint f32 = typenum == cnp.NPY_FLOAT
    cdef Py_ssize_t rpi = _ln_rows_per_item(D)
    cdef Py_ssize_t items = (R + rpi - 1) // rpi
    cdef int nth = thread_count(R * D, items)
    if R * D < GIL_MIN_ELEMENTS:
        for r in range(R):
            _ln_row(f32, px, py, pg, pb, pm, pi, D, r, ep)
    else:
        with nogil:
            if nth == 1:
                for r in range(R):
                    _ln_row(f32, px, py, pg, pb, pm, pi, D, r, ep)
            else:
                for it in prange(items, schedule='static', num_threads=nth):
                    _ln_rows(f32, px, py, pg, pb, pm, pi, D, R, rpi, it, ep)
    if return_stats:
        return Y, mean, inv
    return Y


cdef inline void _ln_row(bint f32, char *px, char *py, char *pg, char *pb, char *pm, char *pi,
                         Py_ssize_t D, Py_ssize_t r, double eps) noexcept nogil:
    if f32:
        fdl_ln_row_f32(<float *>px + r * D, <float *>py + r * D, D, <float *>pg, <float *>pb,
                       eps, <float *>pm + r, <float *>pi + r)
    else:
        fdl_ln_row_f64(<double *>px + r * D, <double *>py + r * D, D, <double *>pg,
                       <double *>pb, eps, <double *>pm + r, <double *>pi + r)


cdef void _ln_rows(bint f32, char *px, char *py, char *pg, char *pb, char *pm, char *pi,
                   Py_ssize_t D, Py_ssize_t R, Py_ssize_t rpi, Py_ssize_t it,
                   double eps) noexcept nogil:
    cdef Py_ssize_t r, r1 = (it + 1) * rpi
    if r1 > R:
        r1 = R
    for r in range(it * rpi, r1):
        _ln_row(f32, px, py, pg, pb, pm, pi, D, r, eps)


ctypedef struct LNBwd:
    char *x
    char *dy
    char *dx
    char *g
    char *m
    char *inv
    char *gdy
    double *part
    Py_ssize_t D, R, rpc
    bint f32


cdef void _ln_bwd_chunk(const LNBwd *a, Py_ssize_t k) noexcept nogil:
    """Rows of chunk k: dx, and (gamma given) its dgamma/dbeta partials in slot k."""
    cdef Py_ssize_t r1 = (k + 1) * a.rpc
    if r1 > a.R:
        r1 = a.R
    if a.f32:
        fdl_ln_rows_bwd_f32(<float *>a.x, <float *>a.dy, <float *>a.dx, k * a.rpc, r1, a.D,
                            <float *>a.g, <float *>a.m, <float *>a.inv, a.part + 2 * a.D * k,
                            <float *>a.gdy + 2 * a.D * k)
    else:
        fdl_ln_rows_bwd_f64(<double *>a.x, <double *>a.dy, <double *>a.dx, k * a.rpc, r1, a.D,
                            <double *>a.g, <double *>a.m, <double *>a.inv,
                            a.part + 2 * a.D * k, <double *>a.gdy + 2 * a.D * k)


def layer_norm_backward(dy, x, normalized_shape, gamma, mean, inv_std):
    """Gradients of ``layer_norm``: ``(dx, dgamma, dbeta)`` (``None, None`` for dgamma and
    dbeta when ``gamma`` is None).

    ``mean``/``inv_std`` are the statistics ``layer_norm(..., return_stats=True)`` returned.
    Per row, with ``xhat = (x - mean) * inv_std`` and ``u = gamma * dy``:
    ``dx = inv_std * (u - mean(u) - xhat * mean(u * xhat))``; ``dgamma = sum(dy * xhat)`` and
    ``dbeta = sum(dy)`` over the rows. The column sums run over fixed chunks of rows, added
    in chunk order: bitwise the same for any thread count.

    ``ValueError`` for mismatched shapes (naming them).
    """
    if on_device(dy):
        return gpu_call("layer_norm_backward", (), {"dy": dy, "x": x, "normalized_shape": normalized_shape, "gamma": gamma, "mean": mean, "inv_std": inv_std})
    cdef str func = "layer_norm_backward"
    cdef cnp.ndarray DY = as_float_array(dy, func, "dy")
    cdef cnp.ndarray X = as_float_array(x, func, "x")
    if shape_of(DY) != shape_of(X):
        raise ValueError(f"fastdl.{func}: dy has shape {shape_of(DY)} and x has shape "
                         f"{shape_of(X)}; they must be equal")
    cdef tuple ns = _norm_shape(normalized_shape, shape_of(X), func)
    cdef tuple outer = shape_of(X)[:cnp.PyArray_NDIM(X) - len(ns)]
    cdef cnp.ndarray G = None if gamma is None else _param(gamma, func, "gamma", ns)
    cdef cnp.ndarray MU = _param(mean, func, "mean", outer)
    cdef cnp.ndarray IS = _param(inv_std, func, "inv_std", outer)
    cdef int typenum = _result_type(X, (DY, G, MU, IS))
    cdef object dt = _dt(typenum)
    cdef Py_ssize_t D = 1, R = 1, k
    for v in ns:
        D *= v
    for v in outer:
        R *= v
    X = np.ascontiguousarray(as_typenum(X, typenum))
    DY = np.ascontiguousarray(as_typenum(DY, typenum))
    cdef cnp.ndarray DX = np.empty(shape_of(X), dt)
    dgamma = dbeta = None
    if D == 0 or R == 0:
        if G is not None:
            dgamma = np.zeros(ns, dt)
            dbeta = np.zeros(ns, dt)
        return DX, dgamma, dbeta
    g = None if G is None else np.ascontiguousarray(G, dtype=dt)
    mu = np.ascontiguousarray(MU, dtype=dt)
    inv = np.ascontiguousarray(IS, dtype=dt)
    cdef LNBwd a
    a.D = D
    a.R = R
    a.f32 = typenum == cnp.NPY_FLOAT
    # chunks of rows fixed by the shape: at most 32 partial column sums to combine (with up
    # to 256, i.e. 3.6 MB of fresh partials per call, 8x512x768 took 1.99 ms at 2 threads,
    # slower than at 1; with 32, 0.70 ms)
    a.rpc = max(_ln_rows_per_item(D), (R + 31) // 32)
    cdef Py_ssize_t chunks = (R + a.rpc - 1) // a.rpc
    cdef cnp.ndarray part = np.empty(2 * D * chunks if g is not None else 1, np.float64)
    cdef cnp.ndarray gdy = np.empty(2 * D * chunks, dt)    # per chunk: column accumulators
    a.x = <char *>cnp.PyArray_DATA(X)
    a.dy = <char *>cnp.PyArray_DATA(DY)
    a.dx = <char *>cnp.PyArray_DATA(DX)
    a.g = NULL if g is None else <char *>cnp.PyArray_DATA(<cnp.ndarray>g)
    a.m = <char *>cnp.PyArray_DATA(<cnp.ndarray>mu)
    a.inv = <char *>cnp.PyArray_DATA(<cnp.ndarray>inv)
    a.gdy = <char *>cnp.PyArray_DATA(gdy)
    a.part = <double *>cnp.PyArray_DATA(part)
    cdef int nth = thread_count(R * D, chunks)
    if R * D < GIL_MIN_ELEMENTS:
        for k in range(chunks):
            _ln_bwd_chunk(&a, k)
    else:
        with nogil:
            if nth == 1:
                for k in range(chunks):
                    _ln_bwd_chunk(&a, k)
            else:
                for k in prange(chunks, schedule='static', num_threads=nth):
                    _ln_bwd_chunk(&a, k)
    if g is not None:
        # chunk partials combined by NumPy's reduction over the chunk axis: an order fixed by
        # the number of chunks, which depends on the shape only
        tot = part.reshape(chunks, 2, D).sum(axis=0)
        dgamma = tot[0].astype(dt).reshape(ns)
        dbeta = tot[1].astype(dt).reshape(ns)
    return DX, dgamma, dbeta
