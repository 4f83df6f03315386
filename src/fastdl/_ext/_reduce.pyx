# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""sum, mean and var with NumPy semantics: blocked pairwise sums, identical for any thread count.

How a reduction runs (the summation trees are described in include/fastdl/reduce.h):

1. The axes are put in memory order: size-1 axes dropped, negative strides flipped (the target
   index flipped with them), axes sorted by stride, neighbours merged where the strides allow
   (reduced with reduced, kept with kept). Broadcast (zero-stride) axes go outermost and are
   never materialised. The innermost axis must then have unit stride; otherwise (every axis
   strided, misaligned data) the input is copied once, in its own memory order.
2. A stage reduces some axes:
   * A (the unit-stride axis is reduced): one contiguous segment per output item, summed by
     fdl_segsum; long segments are cut into fixed chunks that threads compute independently.
   * B (the unit-stride axis is kept): column sums, rows added vectorised across the contiguous
     axis; work is cut into (item, column panel, row chunk) units; chunks are fixed by the row
     count, and a column's value never depends on the panel width (whole rows unless threads
     would idle). Rows are added four at a time when the input's contiguous run of kept axes
     is wide, one at a time otherwise (decided from the input alone, so out= never changes
     the bits).
   Layouts with several reduced groups run two stages through a contiguous intermediate:
   A over a long inner segment first, or (a short inner segment) B over the outer reduced axes
   with the contiguous inner block as the width.
3. var: the mean (pass 1), then sum((x - mean)^2) and sum(x - mean) in one pass (pass 2);
   var = (S2 - S1^2 / N) / max(N - ddof, 0).

Threads compute whole units; partial results are combined in a fixed order, so the bits of
every result depend only on the shape (and the layout), never on the thread count. Below
PARALLEL_MIN_ELEMENTS elements, or with one unit of work, no OpenMP region is entered.
"""

import numbers
import warnings

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy

from fastdl._ext._common cimport (as_float_array, check_out, may_overlap, current_threads,
                                  normalize_axis, shape_of)

cdef extern from "fastdl/reduce.h" nogil:
    ctypedef struct fdl_dims:
        int nd
        Py_ssize_t n[64]
        Py_ssize_t s[64]
    ctypedef struct fdl_cursor:
        Py_ssize_t off
    void fdl_cursor_set(const fdl_dims *d, fdl_cursor *c, Py_ssize_t flat)
    void fdl_cursor_next(const fdl_dims *d, fdl_cursor *c)

    int FDL_LANES_f32, FDL_LANES_f64, FDL_SMALL_f32, FDL_SMALL_f64
    int FDL_CHUNK_f32, FDL_CHUNK_f64, FDL_COL_BLOCK, FDL_COL_CHUNK, FDL_COL_WIDE_BYTES

    float fdl_segsum_f32(const float *x, Py_ssize_t n)
    double fdl_segsum_f64(const double *x, Py_ssize_t n)
    void fdl_lanesum_f32(const float *x, Py_ssize_t n, float *lanes)
    void fdl_lanesum_f64(const double *x, Py_ssize_t n, double *lanes)
    float fdl_lanes_combine_f32(const float *partials, Py_ssize_t nchunks)
    double fdl_lanes_combine_f64(const double *partials, Py_ssize_t nchunks)

    void fdl_segdev_f32(const float *x, Py_ssize_t n, float m, float *q, float *d)
    void fdl_segdev_f64(const double *x, Py_ssize_t n, double m, double *q, double *d)
    void fdl_lanedev_f32(const float *x, Py_ssize_t n, float m, float *lq, float *ld)
    void fdl_lanedev_f64(const double *x, Py_ssize_t n, double m, double *lq, double *ld)
    void fdl_lanes_combine_dev_f32(const float *pq, const float *pd, Py_ssize_t nchunks,
                                   float *q, float *d)
    void fdl_lanes_combine_dev_f64(const double *pq, const double *pd, Py_ssize_t nchunks,
                                   double *q, double *d)

    void fdl_colchunk_f32(const char *base, const fdl_dims *rows, Py_ssize_t r0, Py_ssize_t r1,
                          Py_ssize_t w, int group, float *slots, float *block)
    void fdl_colchunk_f64(const char *base, const fdl_dims *rows, Py_ssize_t r0, Py_ssize_t r1,
                          Py_ssize_t w, int group, double *slots, double *block)
    void fdl_coldev_f32(const char *base, const fdl_dims *rows, Py_ssize_t r0, Py_ssize_t r1,
                        Py_ssize_t w, const float *mu, Py_ssize_t mstep, int group, float *sq,
                        float *sd, float *block_q, float *block_d)
    void fdl_coldev_f64(const char *base, const fdl_dims *rows, Py_ssize_t r0, Py_ssize_t r1,
                        Py_ssize_t w, const double *mu, Py_ssize_t mstep, int group,
                        double *sq, double *sd, double *block_q, double *block_d)
    void fdl_colcombine_f32(const float *partials, Py_ssize_t nchunks, Py_ssize_t ld,
                            Py_ssize_t w, float *slots)
    void fdl_colcombine_f64(const double *partials, Py_ssize_t nchunks, Py_ssize_t ld,
                            Py_ssize_t w, double *slots)
    void fdl_store_f32(const float *src, Py_ssize_t n, char *dst, Py_ssize_t stride, double div)
    void fdl_store_f64(const double *src, Py_ssize_t n, char *dst, Py_ssize_t stride,
                       double div)

cnp.import_array()

# Below this many elements a reduction runs on the calling thread (DESIGN.md).
cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 32768
# An inner reduced segment at least this long is summed first when other axes are reduced too.
cdef Py_ssize_t SEGMENT_FIRST_MIN = 64
# Column panels: at most this wide (elements), at least COL_PANEL_MIN when cut for threads
# (a 16384-float panel keeps the per-thread counter slots at 512 KiB).
cdef Py_ssize_t COL_PANEL_MAX = 16384
cdef Py_ssize_t COL_PANEL_MIN = 64

DEF MAXD = 64

cdef enum:
    MODE_SUM = 0
    MODE_MEAN = 1
    MODE_VAR = 2


cdef struct Dim:
    Py_ssize_t n
    Py_ssize_t sx      # input stride (bytes)
    Py_ssize_t so      # target stride (bytes), kept axes
    Py_ssize_t sm      # mean stride (bytes), kept axes (var)
    bint red


cdef struct Items:
    # Output items of a stage: a row-major multi-index with strides into the input (sx),
    # the stage's target (st) and the mean (sm).
    int nd
    Py_ssize_t n[MAXD]
    Py_ssize_t sx[MAXD]
    Py_ssize_t st[MAXD]
    Py_ssize_t sm[MAXD]


cdef struct StageA:
    bint f32, dev
    const char *x
    Items items
    Py_ssize_t nitems, L, chunk, nchunks, lanes
    char *t            # target (sum, or sum of squared deviations)
    char *t2           # target of the sum of deviations (dev)
    const char *m      # mean (dev)
    double div
    char *part         # [item][chunk][lanes] partial lane vectors when nchunks > 1
    char *part2


cdef struct StageB:
    bint f32, dev
    const char *x
    Items items
    fdl_dims rows
    Py_ssize_t nitems, nrows, w, panel, npanels, nchunks
    int group          # rows added 4 or 1 at a time (from the full width)
    Py_ssize_t tw      # target stride along the width (bytes)
    Py_ssize_t mstep   # mean step along the width (elements: 0 or 1)
    char *t
    char *t2
    const char *m
    double div
    char *part         # [item][chunk][w] when nchunks > 1
    char *part2
    char *scratch      # per thread: the counters' slots, then the blocks
    Py_ssize_t slots   # elements of one counter's slots (levels * panel)
    Py_ssize_t per_thread  # bytes of scratch per thread


# --------------------------------------------------------------------------------------
# argument handling

cdef int _axis_mask(object axis, int nd, str func, bint *red) except -1:
    """Mark the reduced axes; returns how many. NumPy's rules (AxisError is a ValueError)."""
    cdef int d, k, count = 0
    for d in range(nd):
        red[d] = False
    if axis is None:
        for d in range(nd):
            red[d] = True
        return nd
    if isinstance(axis, tuple):
        for a in axis:
            if isinstance(a, bool):
                raise TypeError(f"fastdl.{func}: axis must be an int or a tuple of ints, got "
                                f"{axis!r}")
            k = normalize_axis(a, nd, func)
            if red[k]:
                raise ValueError(f"fastdl.{func}: duplicate value in 'axis': {axis!r}")
            red[k] = True
            count += 1
        return count
    if isinstance(axis, bool):
        raise TypeError(f"fastdl.{func}: axis must be an int or a tuple of ints, got {axis!r}")
    k = normalize_axis(axis, nd, func)
    red[k] = True
    return 1


cdef inline int _isz(bint f32) noexcept nogil:
    return 4 if f32 else 8


cdef inline int _bit_length(Py_ssize_t v) noexcept nogil:
    cdef int b = 0
    while v > 0:
        b += 1
        v >>= 1
    return b


# --------------------------------------------------------------------------------------
# axes in memory order

cdef int _prepare(cnp.ndarray X, const bint *red, const Py_ssize_t *tstride, Dim *dims,
                  const char **xbase, char **tbase) noexcept:
    """Axes of X in memory order, flipped, sorted and merged. Returns the count, or -1 when the
    innermost axis has no unit stride (the caller copies X). tstride: target stride per axis of
    X (kept axes), the target base at *tbase is moved with the flips."""
    cdef int nd = cnp.PyArray_NDIM(X), d, k, j, cnt = 0, nred = 0
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(X), n, sx, so
    cdef const char *xb = <const char *>cnp.PyArray_DATA(X)
    cdef char *tb = tbase[0]
    cdef Dim tmp
    cdef bint broadcast = False
    for d in range(nd):
        n = cnp.PyArray_DIMS(X)[d]
        if n == 1:
            continue
        sx = cnp.PyArray_STRIDES(X)[d]
        so = 0 if red[d] else tstride[d]
        if sx < 0:
            xb += (n - 1) * sx
            sx = -sx
            if not red[d]:
                tb += (n - 1) * so
                so = -so
        dims[cnt].n = n
        dims[cnt].sx = sx
        dims[cnt].so = so
        dims[cnt].sm = 0
        dims[cnt].red = red[d]
        if red[d]:
            nred += 1
        cnt += 1
    # stable insertion sort by input stride, largest first; broadcast (zero-stride) axes
    # outermost: they cost no memory, whatever their size
    for k in range(1, cnt):
        tmp = dims[k]
        if tmp.sx == 0:
            broadcast = True
        j = k - 1
        while j >= 0 and _outer_first(tmp.sx, dims[j].sx):
            dims[j + 1] = dims[j]
            j -= 1
        dims[j + 1] = tmp
    if cnt > 0 and dims[0].sx == 0:
        broadcast = True
    cnt = _merge(dims, cnt)
    xbase[0] = xb
    tbase[0] = tb
    if cnt > 0 and dims[cnt - 1].sx == isz and cnp.PyArray_ISALIGNED(X):
        return cnt
    if (nred == 0 or broadcast) and cnp.PyArray_ISALIGNED(X):
        # nothing to reduce, or a broadcast view (a copy could be far larger than the data):
        # one-element segments, whatever the strides
        dims[cnt].n = 1
        dims[cnt].sx = isz
        dims[cnt].so = 0
        dims[cnt].sm = 0
        dims[cnt].red = True
        return cnt + 1
    return -1


cdef inline bint _outer_first(Py_ssize_t a, Py_ssize_t b) noexcept:
    """Whether an axis of stride a goes outside one of stride b (zero strides outermost)."""
    if b == 0:
        return False
    return a == 0 or a > b


cdef int _merge(Dim *dims, int cnt) noexcept:
    """Merge neighbours (outer k, inner k + 1) of the same kind whose strides chain."""
    cdef int k, out = 0
    if cnt == 0:
        return 0
    for k in range(1, cnt):
        if (dims[out].red == dims[k].red and dims[out].sx == dims[k].sx * dims[k].n
                and dims[out].so == dims[k].so * dims[k].n
                and dims[out].sm == dims[k].sm * dims[k].n):
            dims[out].n *= dims[k].n
            dims[out].sx = dims[k].sx
            dims[out].so = dims[k].so
            dims[out].sm = dims[k].sm
        else:
            out += 1
            dims[out] = dims[k]
    return out + 1


cdef inline void _item_offsets(const Items *it, Py_ssize_t flat, Py_ssize_t *ox,
                               Py_ssize_t *ot, Py_ssize_t *om) noexcept nogil:
    cdef int k
    cdef Py_ssize_t i
    ox[0] = 0
    ot[0] = 0
    om[0] = 0
    for k in range(it.nd - 1, -1, -1):
        i = flat % it.n[k]
        flat = flat // it.n[k]
        ox[0] += i * it.sx[k]
        ot[0] += i * it.st[k]
        om[0] += i * it.sm[k]


cdef inline void _add_item(Items *it, Py_ssize_t n, Py_ssize_t sx, Py_ssize_t st,
                           Py_ssize_t sm) noexcept:
    it.n[it.nd] = n
    it.sx[it.nd] = sx
    it.st[it.nd] = st
    it.sm[it.nd] = sm
    it.nd += 1


cdef inline Py_ssize_t _count(const Items *it) noexcept:
    cdef Py_ssize_t c = 1
    cdef int k
    for k in range(it.nd):
        c *= it.n[k]
    return c


cdef inline int _threads_for(Py_ssize_t units, Py_ssize_t elements, int nthreads) noexcept nogil:
    if nthreads <= 1 or units <= 1 or elements < PARALLEL_MIN_ELEMENTS:
        return 1
    return <int>min(<Py_ssize_t>nthreads, units)


# --------------------------------------------------------------------------------------
# stage A: contiguous segments

cdef cnp.ndarray _scratch(Py_ssize_t nbytes, char **aligned):
    """nbytes of scratch at a 64-byte boundary (NumPy aligns to 16 only; a block accumulator
    whose vector stores straddle cache lines ran the column sums at half speed)."""
    cdef cnp.ndarray buf = np.empty(nbytes + 64, dtype=np.uint8)
    cdef size_t addr = <size_t>cnp.PyArray_DATA(buf)
    aligned[0] = <char *>cnp.PyArray_DATA(buf) + ((64 - addr % 64) % 64)
    return buf


cdef inline void _store1(bint f32, char *dst, double v, double div) noexcept nogil:
    # v holds the T-typed sum exactly; the division, if any, in double, rounded once.
    if f32:
        (<float *>dst)[0] = <float>(v / div) if div != 1.0 else <float>v
    else:
        (<double *>dst)[0] = v / div if div != 1.0 else v


cdef void _a_unit(const StageA *s, Py_ssize_t u) noexcept nogil:
    cdef Py_ssize_t item = u // s.nchunks, c = u - item * s.nchunks, ox, ot, om, start, n
    cdef float qf, df
    cdef double qd, dd
    _item_offsets(&s.items, item, &ox, &ot, &om)
    if s.nchunks == 1:
        if not s.dev:
            if s.f32:
                _store1(True, s.t + ot, fdl_segsum_f32(<const float *>(s.x + ox), s.L), s.div)
            else:
                _store1(False, s.t + ot, fdl_segsum_f64(<const double *>(s.x + ox), s.L),
                        s.div)
        elif s.f32:
            fdl_segdev_f32(<const float *>(s.x + ox), s.L, (<const float *>(s.m + om))[0],
                           &qf, &df)
            (<float *>(s.t + ot))[0] = qf
            (<float *>(s.t2 + ot))[0] = df
        else:
            fdl_segdev_f64(<const double *>(s.x + ox), s.L, (<const double *>(s.m + om))[0],
                           &qd, &dd)
            (<double *>(s.t + ot))[0] = qd
            (<double *>(s.t2 + ot))[0] = dd
        return
    start = c * s.chunk
    n = min(s.chunk, s.L - start)
    if not s.dev:
        if s.f32:
            fdl_lanesum_f32(<const float *>(s.x + ox) + start, n,
                            <float *>s.part + u * s.lanes)
        else:
            fdl_lanesum_f64(<const double *>(s.x + ox) + start, n,
                            <double *>s.part + u * s.lanes)
    elif s.f32:
        fdl_lanedev_f32(<const float *>(s.x + ox) + start, n, (<const float *>(s.m + om))[0],
                        <float *>s.part + u * s.lanes, <float *>s.part2 + u * s.lanes)
    else:
        fdl_lanedev_f64(<const double *>(s.x + ox) + start, n,
                        (<const double *>(s.m + om))[0],
                        <double *>s.part + u * s.lanes, <double *>s.part2 + u * s.lanes)


cdef void _a_combine(const StageA *s, Py_ssize_t item) noexcept nogil:
    cdef Py_ssize_t ox, ot, om, first = item * s.nchunks * s.lanes
    cdef float qf, df
    cdef double qd, dd
    _item_offsets(&s.items, item, &ox, &ot, &om)
    if not s.dev:
        if s.f32:
            _store1(True, s.t + ot, fdl_lanes_combine_f32(<float *>s.part + first, s.nchunks),
                    s.div)
        else:
            _store1(False, s.t + ot,
                    fdl_lanes_combine_f64(<double *>s.part + first, s.nchunks), s.div)
    elif s.f32:
        fdl_lanes_combine_dev_f32(<float *>s.part + first, <float *>s.part2 + first,
                                  s.nchunks, &qf, &df)
        (<float *>(s.t + ot))[0] = qf
        (<float *>(s.t2 + ot))[0] = df
    else:
        fdl_lanes_combine_dev_f64(<double *>s.part + first, <double *>s.part2 + first,
                                  s.nchunks, &qd, &dd)
        (<double *>(s.t + ot))[0] = qd
        (<double *>(s.t2 + ot))[0] = dd


cdef int _run_a(StageA *s, int nthreads) except -1:
    """Sum each item's contiguous segment of s.L elements into the target."""
    cdef Py_ssize_t small = FDL_SMALL_f32 if s.f32 else FDL_SMALL_f64
    cdef Py_ssize_t units, u, i
    cdef int nt
    cdef cnp.ndarray part = None, part2 = None
    s.nitems = _count(&s.items)
    s.lanes = FDL_LANES_f32 if s.f32 else FDL_LANES_f64
    s.chunk = FDL_CHUNK_f32 if s.f32 else FDL_CHUNK_f64
    s.nchunks = 1 if s.L < small else (s.L + s.chunk - 1) // s.chunk
    units = s.nitems * s.nchunks
    if s.nchunks > 1:
        part = _scratch(units * s.lanes * _isz(s.f32), &s.part)
        if s.dev:
            part2 = _scratch(units * s.lanes * _isz(s.f32), &s.part2)
    nt = _threads_for(units, s.nitems * s.L, nthreads)
    with nogil:
        if nt == 1:
            for u in range(units):
                _a_unit(s, u)
        else:
            for u in prange(units, schedule='static', num_threads=nt):
                _a_unit(s, u)
        if s.nchunks > 1:
            nt = _threads_for(s.nitems, s.nitems * s.nchunks * s.lanes, nthreads)
            if nt == 1:
                for i in range(s.nitems):
                    _a_combine(s, i)
            else:
                for i in prange(s.nitems, schedule='static', num_threads=nt):
                    _a_combine(s, i)
    return 0


# --------------------------------------------------------------------------------------
# stage B: column sums

cdef void _b_unit(const StageB *s, Py_ssize_t u, int tid) noexcept nogil:
    cdef Py_ssize_t chunk = u % s.nchunks, rest = u // s.nchunks
    cdef Py_ssize_t panel = rest % s.npanels, item = rest // s.npanels
    cdef Py_ssize_t ox, ot, om, c0 = panel * s.panel, pw = min(s.panel, s.w - c0)
    cdef Py_ssize_t r0 = chunk * FDL_COL_CHUNK, r1 = min(r0 + FDL_COL_CHUNK, s.nrows)
    cdef int isz = _isz(s.f32)
    cdef char *slots = s.scratch + <Py_ssize_t>tid * s.per_thread
    cdef char *slots2 = slots + s.slots * isz
    cdef char *block = slots + (2 if s.dev else 1) * s.slots * isz
    cdef char *block2 = block + s.panel * isz
    cdef const char *base
    cdef Py_ssize_t poff
    _item_offsets(&s.items, item, &ox, &ot, &om)
    base = s.x + ox + c0 * isz
    if not s.dev:
        if s.f32:
            fdl_colchunk_f32(base, &s.rows, r0, r1, pw, s.group, <float *>slots,
                             <float *>block)
        else:
            fdl_colchunk_f64(base, &s.rows, r0, r1, pw, s.group, <double *>slots,
                             <double *>block)
    elif s.f32:
        fdl_coldev_f32(base, &s.rows, r0, r1, pw, <const float *>(s.m + om) + c0 * s.mstep,
                       s.mstep, s.group, <float *>slots, <float *>slots2, <float *>block,
                       <float *>block2)
    else:
        fdl_coldev_f64(base, &s.rows, r0, r1, pw, <const double *>(s.m + om) + c0 * s.mstep,
                       s.mstep, s.group, <double *>slots, <double *>slots2, <double *>block,
                       <double *>block2)
    if s.nchunks == 1:
        _b_store(s, slots, slots2, ot, c0, pw)
    else:
        poff = ((item * s.nchunks + chunk) * s.w + c0) * isz
        memcpy(s.part + poff, slots, pw * isz)
        if s.dev:
            memcpy(s.part2 + poff, slots2, pw * isz)


cdef inline void _b_store(const StageB *s, char *slots, char *slots2, Py_ssize_t ot,
                          Py_ssize_t c0, Py_ssize_t pw) noexcept nogil:
    if s.f32:
        fdl_store_f32(<float *>slots, pw, s.t + ot + c0 * s.tw, s.tw, s.div)
        if s.dev:
            fdl_store_f32(<float *>slots2, pw, s.t2 + ot + c0 * s.tw, s.tw, 1.0)
    else:
        fdl_store_f64(<double *>slots, pw, s.t + ot + c0 * s.tw, s.tw, s.div)
        if s.dev:
            fdl_store_f64(<double *>slots2, pw, s.t2 + ot + c0 * s.tw, s.tw, 1.0)


cdef void _b_combine(const StageB *s, Py_ssize_t u, int tid) noexcept nogil:
    cdef Py_ssize_t panel = u % s.npanels, item = u // s.npanels
    cdef Py_ssize_t ox, ot, om, c0 = panel * s.panel, pw = min(s.panel, s.w - c0)
    cdef int isz = _isz(s.f32)
    cdef char *slots = s.scratch + <Py_ssize_t>tid * s.per_thread
    cdef char *slots2 = slots + s.slots * isz
    cdef Py_ssize_t first = (item * s.nchunks * s.w + c0) * isz
    _item_offsets(&s.items, item, &ox, &ot, &om)
    if s.f32:
        fdl_colcombine_f32(<const float *>(s.part + first), s.nchunks, s.w, pw, <float *>slots)
        if s.dev:
            fdl_colcombine_f32(<const float *>(s.part2 + first), s.nchunks, s.w, pw,
                               <float *>slots2)
    else:
        fdl_colcombine_f64(<const double *>(s.part + first), s.nchunks, s.w, pw,
                           <double *>slots)
        if s.dev:
            fdl_colcombine_f64(<const double *>(s.part2 + first), s.nchunks, s.w, pw,
                               <double *>slots2)
    _b_store(s, slots, slots2, ot, c0, pw)


cdef int _run_b(StageB *s, int nthreads) except -1:
    """Column sums: for each item, sum the rows (s.rows) of s.w contiguous elements."""
    cdef Py_ssize_t units, u, per_unit_cols, levels
    cdef int nt, isz = _isz(s.f32), tid
    cdef cnp.ndarray part = None, part2 = None, scratch
    s.nitems = _count(&s.items)
    s.nrows = 1
    for u in range(s.rows.nd):
        s.nrows *= s.rows.n[u]
    s.nchunks = (s.nrows + FDL_COL_CHUNK - 1) // FDL_COL_CHUNK
    # Panels only shape the work (a column's value does not depend on them). Whole rows read
    # fastest (reduce.h), so rows are cut only to feed threads that would idle otherwise.
    s.panel = min(s.w, COL_PANEL_MAX)
    s.npanels = (s.w + s.panel - 1) // s.panel
    units = s.nitems * s.nchunks * s.npanels
    if (nthreads > 1 and units < 2 * nthreads and s.w >= 2 * COL_PANEL_MIN
            and s.nitems * s.nrows * s.w >= PARALLEL_MIN_ELEMENTS):
        s.npanels = (2 * nthreads + s.nitems * s.nchunks - 1) // (s.nitems * s.nchunks)
        per_unit_cols = (s.w + s.npanels - 1) // s.npanels
        s.panel = max(COL_PANEL_MIN, (per_unit_cols + 15) // 16 * 16)
        s.npanels = (s.w + s.panel - 1) // s.panel
    units = s.nitems * s.npanels * s.nchunks
    nt = _threads_for(units, s.nitems * s.nrows * s.w, nthreads)
    # counter levels: within a chunk (over its blocks of rows) and over the chunks
    levels = _bit_length((min(s.nrows, <Py_ssize_t>FDL_COL_CHUNK) + FDL_COL_BLOCK - 1)
                         // FDL_COL_BLOCK) + 1
    levels = max(levels, _bit_length(s.nchunks) + 1)
    s.slots = levels * s.panel
    s.per_thread = (2 if s.dev else 1) * (s.slots + s.panel) * isz
    s.per_thread = (s.per_thread + 63) // 64 * 64
    scratch = _scratch(max(nt, nthreads) * s.per_thread, &s.scratch)
    if s.nchunks > 1:
        part = _scratch(s.nitems * s.nchunks * s.w * isz, &s.part)
        if s.dev:
            part2 = _scratch(s.nitems * s.nchunks * s.w * isz, &s.part2)
    with nogil:
        if nt == 1:
            for u in range(units):
                _b_unit(s, u, 0)
        else:
            for u in prange(units, schedule='static', num_threads=nt):
                _b_unit(s, u, threadid())
        if s.nchunks > 1:
            units = s.nitems * s.npanels
            nt = _threads_for(units, s.nitems * s.nchunks * s.w, nthreads)
            if nt == 1:
                for u in range(units):
                    _b_combine(s, u, 0)
            else:
                for u in prange(units, schedule='static', num_threads=nt):
                    _b_combine(s, u, threadid())
    return 0


# --------------------------------------------------------------------------------------
# plans

cdef cnp.ndarray _empty(tuple shape, bint f32):
    return np.empty(shape, dtype=np.float32 if f32 else np.float64)


cdef int _execute(const char *xb, Dim *dims, int nd, char *tb, char *tb2, const char *mb,
                  bint f32, bint dev, double div, int nthreads) except -1:
    """Reduce the red axes of dims (memory order, innermost unit stride) into the target at tb
    (strides dims[k].so); dev: sum((x - mean)^2) into tb and sum(x - mean) into tb2, the mean
    at mb (strides dims[k].sm)."""
    cdef StageA sa
    cdef StageB sb
    cdef int k, outer_red = -1, w0, nd2
    cdef Py_ssize_t isz = _isz(f32), stride, width
    cdef Dim dims2[MAXD]
    cdef cnp.ndarray T, T2 = None
    cdef char *tmp
    cdef Dim inner = dims[nd - 1]
    for k in range(nd - 1):
        if dims[k].red:
            outer_red = k
            break

    if inner.red and outer_red < 0:
        # A: one contiguous segment per output item
        sa.f32, sa.dev, sa.x, sa.L, sa.t, sa.t2, sa.m, sa.div = f32, dev, xb, inner.n, tb, tb2, mb, div
        sa.items.nd = 0
        for k in range(nd - 1):
            _add_item(&sa.items, dims[k].n, dims[k].sx, dims[k].so, dims[k].sm)
        return _run_a(&sa, nthreads)

    if not inner.red:
        # B: column sums over every reduced axis, vectorised along the unit-stride kept axis
        sb.f32, sb.dev, sb.x, sb.t, sb.t2, sb.m, sb.div = f32, dev, xb, tb, tb2, mb, div
        sb.w, sb.tw = inner.n, inner.so
        sb.mstep = inner.sm // isz
        sb.group = _group(dims, nd, isz)
        sb.items.nd = 0
        sb.rows.nd = 0
        for k in range(nd - 1):
            if dims[k].red:
                sb.rows.n[sb.rows.nd] = dims[k].n
                sb.rows.s[sb.rows.nd] = dims[k].sx
                sb.rows.nd += 1
            else:
                _add_item(&sb.items, dims[k].n, dims[k].sx, dims[k].so, dims[k].sm)
        return _run_b(&sb, nthreads)

    # Several reduced groups: a first stage into a C-contiguous intermediate T, then the rest.
    if inner.n >= SEGMENT_FIRST_MIN:
        # A over the inner segment: T holds one sum per index of every outer axis.
        shape = tuple([dims[k].n for k in range(nd - 1)])
        T = _empty(shape, f32)
        if dev:
            T2 = _empty(shape, f32)
        sa.f32, sa.dev, sa.x, sa.L, sa.m, sa.div = f32, dev, xb, inner.n, mb, 1.0
        sa.t = <char *>cnp.PyArray_DATA(T)
        sa.t2 = <char *>cnp.PyArray_DATA(T2) if dev else NULL
        sa.items.nd = 0
        stride = isz
        for k in range(nd - 2, -1, -1):
            dims2[k] = dims[k]
            dims2[k].sx = stride
            stride *= dims[k].n
        for k in range(nd - 1):
            _add_item(&sa.items, dims[k].n, dims[k].sx, dims2[k].sx,
                      0 if dims[k].red else dims[k].sm)
        _run_a(&sa, nthreads)
        nd2 = nd - 1
    else:
        # B over the outer reduced axes, its width the contiguous run of inner axes (for var
        # only the inner reduced axis, whose mean is one value per item).
        w0 = nd - 1
        while (not dev and w0 - 1 > outer_red
               and dims[w0 - 1].sx == dims[w0].sx * dims[w0].n):
            w0 -= 1
        width = 1
        for k in range(w0, nd):
            width *= dims[k].n
        nd2 = 0
        for k in range(w0):
            if not dims[k].red:
                dims2[nd2] = dims[k]
                nd2 += 1
        for k in range(w0, nd):
            dims2[nd2] = dims[k]
            nd2 += 1
        shape = tuple([dims2[k].n for k in range(nd2)])
        stride = isz
        for k in range(nd2 - 1, -1, -1):
            dims2[k].sx = stride
            stride *= dims2[k].n
        T = _empty(shape, f32)
        if dev:
            T2 = _empty(shape, f32)
        sb.f32, sb.dev, sb.x, sb.m, sb.div = f32, dev, xb, mb, 1.0
        sb.t = <char *>cnp.PyArray_DATA(T)
        sb.t2 = <char *>cnp.PyArray_DATA(T2) if dev else NULL
        sb.w, sb.tw, sb.mstep = width, isz, 0
        sb.group = 4 if width * isz >= FDL_COL_WIDE_BYTES else 1
        sb.items.nd = 0
        sb.rows.nd = 0
        k2 = 0
        for k in range(w0):
            if dims[k].red:
                sb.rows.n[sb.rows.nd] = dims[k].n
                sb.rows.s[sb.rows.nd] = dims[k].sx
                sb.rows.nd += 1
            else:
                _add_item(&sb.items, dims[k].n, dims[k].sx, dims2[k2].sx, dims[k].sm)
                k2 += 1
        _run_b(&sb, nthreads)
    nd2 = _merge_plain(dims2, nd2)
    _execute(<const char *>cnp.PyArray_DATA(T), dims2, nd2, tb, NULL, NULL, f32, False,
             div if not dev else 1.0, nthreads)
    if dev:
        _execute(<const char *>cnp.PyArray_DATA(T2), dims2, nd2, tb2, NULL, NULL, f32, False,
                 1.0, nthreads)
    return 0


cdef int _group(const Dim *dims, int nd, Py_ssize_t isz) noexcept:
    """Rows added 4 or 1 at a time: from the width of the input's contiguous run of kept axes,
    never from how the target's strides let them merge (out= must not change the bits)."""
    cdef Py_ssize_t width = dims[nd - 1].n * isz
    cdef int k = nd - 2
    while k >= 0 and not dims[k].red and dims[k].sx == width:
        width *= dims[k].n
        k -= 1
    return 4 if width >= FDL_COL_WIDE_BYTES else 1


cdef int _merge_plain(Dim *dims, int nd) noexcept:
    # The intermediate is contiguous; its kept axes keep their target strides (so).
    cdef int k
    for k in range(nd):
        dims[k].sm = 0
    return _merge(dims, nd)


# --------------------------------------------------------------------------------------
# entry points

cdef cnp.ndarray _alloc_korder(cnp.ndarray X, const bint *red, tuple kept_shape, bint f32):
    """The result array in the memory order of the input's kept axes (as NumPy does)."""
    cdef int nd = cnp.PyArray_NDIM(X), d
    kept = [d for d in range(nd) if not red[d]]
    if len(kept) <= 1:
        return _empty(kept_shape, f32)
    strides = [abs(cnp.PyArray_STRIDES(X)[d]) for d in kept]
    order = sorted(range(len(kept)), key=lambda j: -strides[j])   # stable
    if order == list(range(len(kept))):
        return _empty(kept_shape, f32)
    arr = _empty(tuple([kept_shape[j] for j in order]), f32)
    inverse = [0] * len(order)
    for i, j in enumerate(order):
        inverse[j] = i
    return arr.transpose(inverse)


cdef void _var_finish(bint f32, const char *q, const char *dsum, const fdl_dims *kd, char *tb,
                      double count, double den) noexcept nogil:
    """target = (S2 - S1^2 / N) / den over the kept items (S2, S1 contiguous, in item order)."""
    cdef fdl_cursor cur
    cdef Py_ssize_t k, nk = 1
    cdef double s2, s1, m2
    cdef int j
    for j in range(kd.nd):
        nk *= kd.n[j]
    fdl_cursor_set(kd, &cur, 0)
    for k in range(nk):
        if f32:
            s2 = (<const float *>q)[k]
            s1 = (<const float *>dsum)[k]
        else:
            s2 = (<const double *>q)[k]
            s1 = (<const double *>dsum)[k]
        m2 = s2 - s1 * s1 / count
        if m2 < 0.0:       # rounding; NaN stays NaN
            m2 = 0.0
        if f32:
            (<float *>(tb + cur.off))[0] = <float>(m2 / den)
        else:
            (<double *>(tb + cur.off))[0] = m2 / den
        fdl_cursor_next(kd, &cur)


cdef double _ddof_value(object ddof) except? -1.0:
    if isinstance(ddof, (bool, np.bool_)) or not isinstance(ddof, numbers.Real):
        raise TypeError(f"fastdl.var: ddof must be a real number, got {type(ddof).__name__}")
    cdef double v = float(ddof)
    if v != v:
        raise ValueError("fastdl.var: ddof is NaN")
    return v


cdef object _reduce(object x, object axis, bint keepdims, object out, str func, int mode,
                    double ddof):
    cdef cnp.ndarray X = as_float_array(x, func, "x")
    cdef int nd = cnp.PyArray_NDIM(X), d, j, cnt
    cdef bint f32 = cnp.PyArray_TYPE(X) == cnp.NPY_FLOAT
    cdef int typenum = cnp.NPY_FLOAT if f32 else cnp.NPY_DOUBLE
    cdef bint red[MAXD]
    cdef Py_ssize_t tstride[MAXD]
    cdef Dim dims[MAXD + 1]
    cdef Dim dims_w[MAXD + 1]
    cdef Py_ssize_t count = 1, nkept = 1, n, isz = cnp.PyArray_ITEMSIZE(X), stride
    cdef const char *xb
    cdef char *tb
    cdef cnp.ndarray result, target, work
    cdef fdl_dims kd
    cdef int nthreads
    cdef double den = 0.0

    _axis_mask(axis, nd, func, red)
    kept_shape = []
    full_shape = []
    for d in range(nd):
        n = cnp.PyArray_DIMS(X)[d]
        if red[d]:
            count *= n
            full_shape.append(1)
        else:
            nkept *= n
            kept_shape.append(n)
            full_shape.append(n)
    kept_shape = tuple(kept_shape)
    shape = tuple(full_shape) if keepdims else kept_shape

    if out is not None:
        result = check_out(out, shape, typenum, func)
        if keepdims:
            target = result[tuple([0 if red[d] else slice(None) for d in range(nd)]) + (Ellipsis,)]
        else:
            target = result
    else:
        target = _alloc_korder(X, red, kept_shape, f32)
        result = target
        if keepdims:
            result = target[tuple([None if red[d] else slice(None) for d in range(nd)]) + (Ellipsis,)]
    if mode == MODE_VAR:
        den = max(<double>count - ddof, 0.0)

    if nkept == 0:
        return _finish(result, out)
    if count == 0:
        if mode == MODE_SUM:
            target.fill(0.0)
        elif mode == MODE_MEAN:
            warnings.warn("Mean of empty slice", RuntimeWarning, stacklevel=3)
            target.fill(np.nan)
        else:
            warnings.warn("Degrees of freedom <= 0 for slice", RuntimeWarning, stacklevel=3)
            target.fill(0.0 / den if den > 0 else np.nan)
        return _finish(result, out)
    if mode == MODE_VAR and den <= 0.0:
        warnings.warn("Degrees of freedom <= 0 for slice", RuntimeWarning, stacklevel=3)

    work = target
    if may_overlap(target, X):
        work = _empty(kept_shape, f32)
    j = 0
    for d in range(nd):
        if red[d]:
            tstride[d] = 0
        else:
            tstride[d] = cnp.PyArray_STRIDES(work)[j]
            j += 1
    tb = <char *>cnp.PyArray_DATA(work)
    cnt = _prepare(X, red, tstride, dims, &xb, &tb)
    if cnt < 0:
        # no unit-stride axis (strided or broadcast views, misaligned data): one copy
        X = np.array(X, order="K", copy=True)
        tb = <char *>cnp.PyArray_DATA(work)
        cnt = _prepare(X, red, tstride, dims, &xb, &tb)
        if cnt < 0:
            raise RuntimeError("fastdl internal error: a copied array has no unit-stride axis")
    if cnt == 0:
        # a single element: a one-element segment
        dims[0].n = 1
        dims[0].sx = isz
        dims[0].so = 0
        dims[0].sm = 0
        dims[0].red = True
        cnt = 1
    nthreads = current_threads()

    if mode != MODE_VAR:
        _execute(xb, dims, cnt, tb, NULL, NULL, f32, False,
                 <double>count if mode == MODE_MEAN else 1.0, nthreads)
    else:
        # mean, S2 and S1 in item order (contiguous over the kept axes in memory order)
        stride = isz
        kd.nd = 0
        for d in range(cnt - 1, -1, -1):
            dims_w[d] = dims[d]
            if not dims[d].red:
                dims_w[d].so = stride
                dims_w[d].sm = stride
                stride *= dims[d].n
        for d in range(cnt):
            if not dims[d].red:
                kd.n[kd.nd] = dims[d].n
                kd.s[kd.nd] = dims[d].so
                kd.nd += 1
        M = _empty((nkept,), f32)
        S2 = _empty((nkept,), f32)
        S1 = _empty((nkept,), f32)
        _execute(xb, dims_w, cnt, <char *>cnp.PyArray_DATA(M), NULL, NULL, f32, False,
                 <double>count, nthreads)
        _execute(xb, dims_w, cnt, <char *>cnp.PyArray_DATA(S2), <char *>cnp.PyArray_DATA(S1),
                 <const char *>cnp.PyArray_DATA(M), f32, True, 1.0, nthreads)
        with nogil:
            _var_finish(f32, <const char *>cnp.PyArray_DATA(S2),
                        <const char *>cnp.PyArray_DATA(S1), &kd, tb, <double>count, den)
    if work is not target:
        np.copyto(target, work)
    return _finish(result, out)


cdef inline object _finish(cnp.ndarray result, object out):
    if out is not None:
        return out
    if cnp.PyArray_NDIM(result) == 0:
        return result[()]
    return result


def sum(x, axis=None, keepdims=False, *, out=None):
    """Sum of array elements over the given axes, with ``numpy.sum`` semantics.

    ``axis`` is None (all axes), an int or a tuple of ints (negative counts from the end);
    ``keepdims`` keeps the reduced axes with size 1. The result has the input's float dtype
    (integers and bools are promoted to float64); a reduction to a single value returns a NumPy
    scalar (``np.float32`` for float32 input); the sum of nothing is 0. NaN and inf propagate.

    Blocked pairwise summation (error growing like log n, as NumPy's contiguous sums, and
    unlike NumPy's row-by-row sums over an outer axis); the result is bitwise the same for
    any thread count.

    Raises ``TypeError`` for a non-float/int/bool dtype, a non-int axis or a wrong ``out``
    dtype; ``ValueError`` for an axis out of range, a repeated axis, or an ``out`` of the wrong
    shape or read-only. Returns ``out`` when given.
    """
    return _reduce(x, axis, keepdims, out, "sum", MODE_SUM, 0.0)


def mean(x, axis=None, keepdims=False, *, out=None):
    """Arithmetic mean over the given axes, with ``numpy.mean`` semantics: ``sum / N``.

    Axes, ``keepdims``, ``out``, dtypes and errors as :func:`sum`. The sum is the blocked
    pairwise sum of :func:`sum`, divided by N in double precision. The mean of nothing is NaN
    (with NumPy's ``RuntimeWarning: Mean of empty slice``).
    """
    return _reduce(x, axis, keepdims, out, "mean", MODE_MEAN, 0.0)


def var(x, axis=None, ddof=0, keepdims=False, *, out=None):
    """Variance over the given axes, with ``numpy.var`` semantics.

    ``var = sum((x - mean)^2) / max(N - ddof, 0)``, computed by the corrected two-pass
    algorithm: the mean first, then ``S2 = sum((x - mean)^2)`` and ``S1 = sum(x - mean)`` in
    one more pass, ``var = (S2 - S1^2 / N) / (N - ddof)``. Both sums are blocked pairwise,
    so the result stays accurate when ``|mean| >> std`` (e.g. float32 data around 1e4).
    ``N - ddof <= 0`` gives inf or NaN with NumPy's ``RuntimeWarning`` (NaN for an empty
    reduction). ``ddof`` is any real number (NaN raises ``ValueError``). Axes, ``keepdims``,
    ``out``, dtypes and errors as :func:`sum`.
    """
    return _reduce(x, axis, keepdims, out, "var", MODE_VAR, _ddof_value(ddof))
