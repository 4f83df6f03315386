# cython: language_level=3, boundscheck=False, wraparound=True, cdivision=True, initializedcheck=False
"""Scaled dot-product attention, forward and backward, blockwise (row ops: fastdl/attention.h).

softmax(scale * Q K^T + mask) V for q (..., L, E), k (..., S, E), v (..., S, Ev), the
leading (batch, head) dimensions broadcast between q, k, v and the mask as NumPy broadcasts.

Forward. A work item is a block of BLOCK_Q query rows of one batch entry. It walks the keys
in blocks of BLOCK_K: one GEMM gives the (rows x keys) tile of scores into the thread's own
scratch, the tile is masked and folded into each row's running maximum and sum (online
softmax, attention.h), and a second GEMM adds P V into the rows of the output, which were
first rescaled by exp(m_old - m_new). Extra memory: BLOCK_Q x BLOCK_K scores per thread; the
(L, S) matrix never exists. With is_causal, a block of keys wholly after the block's last
query is never computed. Items are spread over the threads (dynamic schedule: a core taken
by another process does not stall the others); each item is computed the same way on any
thread, with single-threaded GEMMs, so the bits do not depend on the thread count.

Backward. Recomputes each tile's probabilities from the forward's log-sum-exp (no stored
probabilities) and accumulates dV += P^T dO, dS = P * (dO V^T - D), dQ += scale dS K,
dK += scale dS^T Q with D = rowsum(dO * O). A work item is one batch entry (its dK and dV
sum over all query blocks, in a fixed order), so the backward runs on as many threads as
there are batch x head entries. Where k or v is broadcast over batch entries, their
gradients are computed per entry and summed over the broadcast axes afterwards.

A query row whose every key is masked gives zeros (and lse = -inf), never NaN; its gradients
are zeros.
"""

import math

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.math cimport log, INFINITY
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from fastdl._ext._blas cimport (Mat, DT_FLOAT32, DT_FLOAT64, gemm_batched, blas_pin_serial,
                                blas_unpin_serial)
from fastdl._ext._common cimport on_device, gpu_call
from fastdl._ext._common cimport as_float_array, as_typenum, current_threads

cdef extern from "fastdl/attention.h" nogil:
    enum:
        FDL_ATTN_NONE, FDL_ATTN_BOOL, FDL_ATTN_ADD
    ctypedef struct fdl_attn_mask:
        Py_ssize_t i0, j0
        int causal, kind
        const void *data
        Py_ssize_t mls, mss
    void fdl_attn_fold_tile_f32(float *s, Py_ssize_t lds, Py_ssize_t rows, Py_ssize_t n,
                                const fdl_attn_mask *mk, float *m, double *l, float *o,
                                Py_ssize_t ldo, Py_ssize_t ev)
    void fdl_attn_fold_tile_f64(double *s, Py_ssize_t lds, Py_ssize_t rows, Py_ssize_t n,
                                const fdl_attn_mask *mk, double *m, double *l, double *o,
                                Py_ssize_t ldo, Py_ssize_t ev)
    void fdl_attn_probs_tile_f32(float *s, Py_ssize_t lds, Py_ssize_t rows, Py_ssize_t n,
                                 const fdl_attn_mask *mk, const float *lse)
    void fdl_attn_probs_tile_f64(double *s, Py_ssize_t lds, Py_ssize_t rows, Py_ssize_t n,
                                 const fdl_attn_mask *mk, const double *lse)
    void fdl_attn_dscores_tile_f32(const float *p, float *dp, Py_ssize_t ld, Py_ssize_t rows,
                                   Py_ssize_t n, const float *d)
    void fdl_attn_dscores_tile_f64(const double *p, double *dp, Py_ssize_t ld, Py_ssize_t rows,
                                   Py_ssize_t n, const double *d)
    double fdl_attn_dot_f32(const float *a, const float *b, Py_ssize_t n)
    double fdl_attn_dot_f64(const double *a, const double *b, Py_ssize_t n)
    void fdl_attn_scale_f32(float *x, Py_ssize_t n, float f)
    void fdl_attn_scale_f64(double *x, Py_ssize_t n, double f)

cdef extern from "fastdl/attention_gemm.h" nogil:
    int fdl_sgemm_level()
    void fdl_sgemm_avx512(int accumulate, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                          float alpha, const float *A, Py_ssize_t lda, const float *B,
                          Py_ssize_t ldb, float *C, Py_ssize_t ldc, const float *rbias)
    void fdl_sgemm_avx2(int accumulate, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                        float alpha, const float *A, Py_ssize_t lda, const float *B,
                        Py_ssize_t ldb, float *C, Py_ssize_t ldc, const float *rbias)
    void fdl_attn_pack_kt(const float *k, Py_ssize_t ldk, Py_ssize_t n, Py_ssize_t E,
                          float *kt, Py_ssize_t ldt)
    void fdl_attn_pack_v(const float *v, Py_ssize_t ldv, Py_ssize_t n, Py_ssize_t ev,
                         float *vp, Py_ssize_t ldp)

cnp.import_array()

# The float32 forward's tile GEMMs: "auto" (sgemm.h's register-blocked kernel at the CPU's
# best level, BLAS where it has none), or forced: "blas", "avx2", "avx512" (tests).
KERNEL = "auto"
cdef int _CPU_LEVEL = fdl_sgemm_level()

# Tile sizes (rows of Q per work item, keys per tile). Module variables so that the tests can
# shrink them to exercise many tiles on small inputs.
BLOCK_Q = 64
BLOCK_K = 256

# Below this many multiply-adds (L * S * E per call) the call runs on one thread.
cdef double PARALLEL_MIN_WORK = 1 << 20


cdef struct Problem:
    int dt
    int kernel      # float32 forward: 0 BLAS, 1 AVX2 kernel, 2 AVX-512 kernel
    Py_ssize_t isz, nb, L, S, E, Ev, bq, bk
    double scale
    # operands: base pointers, byte offsets of each batch entry, row strides in elements
    char *q
    char *k
    char *v
    char *o
    char *dout
    const Py_ssize_t *qoff
    const Py_ssize_t *koff
    const Py_ssize_t *voff
    const Py_ssize_t *ooff
    const Py_ssize_t *dooff
    Py_ssize_t ldq, ldk, ldv, ldo, lddo
    # the mask: kind, base, byte offsets per entry, element strides over (L, S), item size
    int causal, mkind
    char *mask
    const Py_ssize_t *moff
    Py_ssize_t mls, mss, msz
    # results (C-contiguous, one block per batch entry)
    char *out
    char *lse
    char *dq
    char *dk
    char *dv
    # float32 kernel path: K^T of every batch entry, packed once (E x ldkt floats each)
    float *kt
    Py_ssize_t ldkt


cdef inline Mat _rows(char *data, Py_ssize_t ld) noexcept nogil:
    cdef Mat m
    m.data = data
    m.ld = ld if ld > 0 else 1
    m.colmajor = False
    return m


cdef inline Mat _cols(char *data, Py_ssize_t ld) noexcept nogil:
    # the transpose of a row-major matrix with row stride ld
    cdef Mat m
    m.data = data
    m.ld = ld if ld > 0 else 1
    m.colmajor = True
    return m


cdef inline void _tile_mask(const Problem *p, Py_ssize_t b, Py_ssize_t i0, Py_ssize_t rows,
                            Py_ssize_t j0, Py_ssize_t n, fdl_attn_mask *mk) noexcept nogil:
    mk.i0 = i0
    mk.j0 = j0
    # the causal rule touches only tiles that reach past the diagonal
    mk.causal = p.causal and j0 + n - 1 > i0
    mk.kind = p.mkind
    mk.mls = p.mls
    mk.mss = p.mss
    if p.mkind != FDL_ATTN_NONE:
        mk.data = p.mask + p.moff[b] + (i0 * p.mls + j0 * p.mss) * p.msz
    else:
        mk.data = NULL


cdef inline Py_ssize_t _key_end(const Problem *p, Py_ssize_t i0, Py_ssize_t rows) noexcept nogil:
    # keys after the block's last query are all masked under is_causal: never computed
    if p.causal and i0 + rows < p.S:
        return i0 + rows
    return p.S


cdef void _forward_item(const Problem *p, Py_ssize_t item, char *scratch) noexcept nogil:
    cdef Py_ssize_t nqb = (p.L + p.bq - 1) // p.bq
    cdef Py_ssize_t b = item // nqb, i0 = (item - b * nqb) * p.bq
    cdef Py_ssize_t rows = min(p.bq, p.L - i0), isz = p.isz, ev = p.Ev
    cdef Py_ssize_t j0, n, r, jend = _key_end(p, i0, rows)
    cdef char *s = scratch
    cdef char *mrow = scratch + p.bq * p.bk * isz
    cdef double *l = <double *>(mrow + p.bq * isz)
    cdef char *qb = p.q + p.qoff[b] + i0 * p.ldq * isz
    cdef char *kb = p.k + p.koff[b]
    cdef char *vb = p.v + p.voff[b]
    cdef char *ob = p.out + (b * p.L + i0) * ev * isz
    cdef char *lb = p.lse + (b * p.L + i0) * isz
    cdef fdl_attn_mask mk
    memset(ob, 0, rows * ev * isz)
    for r in range(rows):
        l[r] = 0.0
        if p.dt == DT_FLOAT32:
            (<float *>mrow)[r] = -INFINITY
        else:
            (<double *>mrow)[r] = -INFINITY
    j0 = 0
    while j0 < jend:
        n = min(p.bk, jend - j0)
        gemm_batched(p.dt, 1, rows, n, p.E, p.scale, _rows(qb, p.ldq), NULL,
                     _cols(kb + j0 * p.ldk * isz, p.ldk), NULL, 0.0, _rows(s, p.bk), NULL,
                     NULL, 1)
        _tile_mask(p, b, i0, rows, j0, n, &mk)
        if p.dt == DT_FLOAT32:
            fdl_attn_fold_tile_f32(<float *>s, p.bk, rows, n, &mk, <float *>mrow, l,
                                   <float *>ob, ev, ev)
        else:
            fdl_attn_fold_tile_f64(<double *>s, p.bk, rows, n, &mk, <double *>mrow, l,
                                   <double *>ob, ev, ev)
        gemm_batched(p.dt, 1, rows, ev, n, 1.0, _rows(s, p.bk), NULL,
                     _rows(vb + j0 * p.ldv * isz, p.ldv), NULL, 1.0, _rows(ob, ev), NULL,
                     NULL, 1)
        j0 += p.bk
    _finish_rows(p, rows, mrow, l, ob, ev, ob, lb)


cdef void _finish_rows(const Problem *p, Py_ssize_t rows, const char *mrow, const double *l,
                       char *acc, Py_ssize_t ldacc, char *ob, char *lb) noexcept nogil:
    """out row = accumulator row / l, lse = m + log(l); zeros and -inf for a row with no key;
    acc may be ob itself."""
    cdef Py_ssize_t r, ev = p.Ev, isz = p.isz
    cdef double f
    for r in range(rows):
        if l[r] > 0.0:
            f = 1.0 / l[r]
        elif l[r] == 0.0:
            f = 0.0
        else:
            f = l[r]          # NaN: propagate
        if p.dt == DT_FLOAT32:
            _scale_copy_f32(<float *>(acc + r * ldacc * isz), <float *>(ob + r * ev * isz), ev,
                            <float>f)
            (<float *>lb)[r] = <float>(_lse(<double>(<float *>mrow)[r], l[r]))
        else:
            _scale_copy_f64(<double *>(acc + r * ldacc * isz), <double *>(ob + r * ev * isz),
                            ev, f)
            (<double *>lb)[r] = _lse((<double *>mrow)[r], l[r])


cdef inline double _lse(double m, double l) noexcept nogil:
    if l > 0.0:
        return m + log(l)
    if l == 0.0:
        return -INFINITY
    return l


cdef inline void _scale_copy_f32(const float *src, float *dst, Py_ssize_t n, float f) noexcept nogil:
    cdef Py_ssize_t i
    if f == 0.0:
        # a row with no key: zeros (also where the accumulator holds 0 * inf garbage)
        for i in range(n):
            dst[i] = 0.0
    else:
        for i in range(n):
            dst[i] = src[i] * f


cdef inline void _scale_copy_f64(const double *src, double *dst, Py_ssize_t n, double f) noexcept nogil:
    cdef Py_ssize_t i
    if f == 0.0:
        for i in range(n):
            dst[i] = 0.0
    else:
        for i in range(n):
            dst[i] = src[i] * f


cdef inline Py_ssize_t _pad32(Py_ssize_t n) noexcept nogil:
    return (n + 31) // 32 * 32


cdef inline void _agemm(int level, int accumulate, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                        float alpha, const float *A, Py_ssize_t lda, const float *B,
                        Py_ssize_t ldb, float *C, Py_ssize_t ldc) noexcept nogil:
    if level == 2:
        fdl_sgemm_avx512(accumulate, M, N, K, alpha, A, lda, B, ldb, C, ldc, NULL)
    else:
        fdl_sgemm_avx2(accumulate, M, N, K, alpha, A, lda, B, ldb, C, ldc, NULL)


cdef void _forward_item_kernel(const Problem *p, Py_ssize_t item, char *scratch) noexcept nogil:
    """_forward_item for float32 with attention_gemm.h's kernel: scores from the K^T packed
    once per batch entry (_pack_keys), V's tile read in place when its rows are whole
    32-float multiples (else padded), and the output accumulated in a padded scratch block
    that is scaled into the result at the end."""
    cdef Py_ssize_t nqb = (p.L + p.bq - 1) // p.bq
    cdef Py_ssize_t b = item // nqb, i0 = (item - b * nqb) * p.bq
    cdef Py_ssize_t rows = min(p.bq, p.L - i0), ev = p.Ev, E = p.E
    cdef Py_ssize_t bkp = _pad32(p.bk), evp = _pad32(ev)
    cdef Py_ssize_t j0, n, r, ldvv, jend = _key_end(p, i0, rows)
    cdef float *s = <float *>scratch
    cdef const float *kt = p.kt + b * E * p.ldkt
    cdef float *vp = s + p.bq * bkp
    cdef float *acc = vp + p.bk * evp
    cdef float *mrow = acc + p.bq * evp
    cdef double *l = <double *>(scratch + _fast_scratch_floats(p) * 4)
    cdef const float *qb = <const float *>(p.q + p.qoff[b]) + i0 * p.ldq
    cdef const float *vb = <const float *>(p.v + p.voff[b])
    cdef const float *vsrc
    cdef fdl_attn_mask mk
    memset(acc, 0, rows * evp * 4)
    for r in range(rows):
        l[r] = 0.0
        mrow[r] = -INFINITY
    j0 = 0
    while j0 < jend:
        n = min(p.bk, jend - j0)
        _agemm(p.kernel, 0, rows, _pad32(n), E, <float>p.scale, qb, p.ldq, kt + j0, p.ldkt,
               s, bkp)
        _tile_mask(p, b, i0, rows, j0, n, &mk)
        fdl_attn_fold_tile_f32(s, bkp, rows, n, &mk, mrow, l, acc, evp, evp)
        if ev == evp:
            vsrc = vb + j0 * p.ldv
            ldvv = p.ldv
        else:
            fdl_attn_pack_v(vb + j0 * p.ldv, p.ldv, n, ev, vp, evp)
            vsrc = vp
            ldvv = evp
        _agemm(p.kernel, 1, rows, evp, n, 1.0, s, bkp, vsrc, ldvv, acc, evp)
        j0 += p.bk
    _finish_rows(p, rows, <char *>mrow, l, <char *>acc, evp,
                 p.out + (b * p.L + i0) * ev * 4, p.lse + (b * p.L + i0) * 4)


cdef inline Py_ssize_t _fast_scratch_floats(const Problem *p) noexcept nogil:
    # s (bq x bkp), vp (bk x evp), acc (bq x evp), m (bq), then l in doubles
    cdef Py_ssize_t bkp = _pad32(p.bk), evp = _pad32(p.Ev)
    return (p.bq * bkp + p.bk * evp + p.bq * evp + p.bq + 1) // 2 * 2


cdef void _pack_keys(const Problem *p, int nthreads) noexcept nogil:
    """K^T of each batch entry into p.kt (zero past S: the kernel reads whole 32-column
    panels), spread over the threads; batch entries sharing one K (broadcast) pack it once
    each, which costs a copy but keeps the entries independent."""
    cdef Py_ssize_t b
    if nthreads > 1 and p.nb > 1:
        for b in prange(p.nb, nogil=True, schedule='static', num_threads=nthreads):
            fdl_attn_pack_kt(<const float *>(p.k + p.koff[b]), p.ldk, p.S, p.E,
                             p.kt + b * p.E * p.ldkt, p.ldkt)
    else:
        for b in range(p.nb):
            fdl_attn_pack_kt(<const float *>(p.k + p.koff[b]), p.ldk, p.S, p.E,
                             p.kt + b * p.E * p.ldkt, p.ldkt)


cdef void _backward_item(const Problem *p, Py_ssize_t b, char *scratch) noexcept nogil:
    cdef Py_ssize_t isz = p.isz, E = p.E, ev = p.Ev, ld = p.bk
    cdef Py_ssize_t i0, rows, j0, n, r, jend
    cdef char *s = scratch
    cdef char *dp = scratch + p.bq * p.bk * isz
    cdef char *d = dp + p.bq * p.bk * isz
    cdef char *qb = p.q + p.qoff[b]
    cdef char *kb = p.k + p.koff[b]
    cdef char *vb = p.v + p.voff[b]
    cdef char *ob = p.o + p.ooff[b]
    cdef char *dob = p.dout + p.dooff[b]
    cdef char *dqb = p.dq + b * p.L * E * isz
    cdef char *dkb = p.dk + b * p.S * E * isz
    cdef char *dvb = p.dv + b * p.S * ev * isz
    cdef char *lb = p.lse + b * p.L * isz
    cdef fdl_attn_mask mk
    memset(dqb, 0, p.L * E * isz)
    memset(dkb, 0, p.S * E * isz)
    memset(dvb, 0, p.S * ev * isz)
    i0 = 0
    while i0 < p.L:
        rows = min(p.bq, p.L - i0)
        jend = _key_end(p, i0, rows)
        for r in range(rows):
            if p.dt == DT_FLOAT32:
                (<float *>d)[r] = <float>fdl_attn_dot_f32(
                    <float *>(dob + (i0 + r) * p.lddo * isz),
                    <float *>(ob + (i0 + r) * p.ldo * isz), ev)
            else:
                (<double *>d)[r] = fdl_attn_dot_f64(
                    <double *>(dob + (i0 + r) * p.lddo * isz),
                    <double *>(ob + (i0 + r) * p.ldo * isz), ev)
        j0 = 0
        while j0 < jend:
            n = min(p.bk, jend - j0)
            gemm_batched(p.dt, 1, rows, n, E, p.scale, _rows(qb + i0 * p.ldq * isz, p.ldq),
                         NULL, _cols(kb + j0 * p.ldk * isz, p.ldk), NULL, 0.0, _rows(s, ld),
                         NULL, NULL, 1)
            _tile_mask(p, b, i0, rows, j0, n, &mk)
            if p.dt == DT_FLOAT32:
                fdl_attn_probs_tile_f32(<float *>s, ld, rows, n, &mk, <float *>lb + i0)
            else:
                fdl_attn_probs_tile_f64(<double *>s, ld, rows, n, &mk, <double *>lb + i0)
            # dV[j] += P^T dO[i]
            gemm_batched(p.dt, 1, n, ev, rows, 1.0, _cols(s, ld), NULL,
                         _rows(dob + i0 * p.lddo * isz, p.lddo), NULL, 1.0,
                         _rows(dvb + j0 * ev * isz, ev), NULL, NULL, 1)
            # dP = dO[i] V[j]^T, then dS = P * (dP - D) in place
            gemm_batched(p.dt, 1, rows, n, ev, 1.0, _rows(dob + i0 * p.lddo * isz, p.lddo),
                         NULL, _cols(vb + j0 * p.ldv * isz, p.ldv), NULL, 0.0, _rows(dp, ld),
                         NULL, NULL, 1)
            if p.dt == DT_FLOAT32:
                fdl_attn_dscores_tile_f32(<float *>s, <float *>dp, ld, rows, n, <float *>d)
            else:
                fdl_attn_dscores_tile_f64(<double *>s, <double *>dp, ld, rows, n, <double *>d)
            # dQ[i] += scale dS K[j];  dK[j] += scale dS^T Q[i]
            gemm_batched(p.dt, 1, rows, E, n, p.scale, _rows(dp, ld), NULL,
                         _rows(kb + j0 * p.ldk * isz, p.ldk), NULL, 1.0,
                         _rows(dqb + i0 * E * isz, E), NULL, NULL, 1)
            gemm_batched(p.dt, 1, n, E, rows, p.scale, _cols(dp, ld), NULL,
                         _rows(qb + i0 * p.ldq * isz, p.ldq), NULL, 1.0,
                         _rows(dkb + j0 * E * isz, E), NULL, NULL, 1)
            j0 += p.bk
        i0 += p.bq


cdef void _run(const Problem *p, Py_ssize_t items, bint backward, Py_ssize_t scratch_bytes,
               int nthreads) noexcept nogil:
    cdef Py_ssize_t item
    cdef char *scratch
    cdef bint pinned = False
    if nthreads > items:
        nthreads = <int>items
    if nthreads > 1:
        pinned = blas_pin_serial()
        if not pinned:
            nthreads = 1
    scratch = <char *>malloc(scratch_bytes * (nthreads if nthreads > 1 else 1) + 64)
    if scratch == NULL:
        if pinned:
            blas_unpin_serial()
        return
    if nthreads <= 1:
        for item in range(items):
            if backward:
                _backward_item(p, item, scratch)
            elif p.kernel:
                _forward_item_kernel(p, item, scratch)
            else:
                _forward_item(p, item, scratch)
    else:
        for item in prange(items, nogil=True, schedule='dynamic', chunksize=1,
                           num_threads=nthreads):
            if backward:
                _backward_item(p, item, scratch + threadid() * scratch_bytes)
            elif p.kernel:
                _forward_item_kernel(p, item, scratch + threadid() * scratch_bytes)
            else:
                _forward_item(p, item, scratch + threadid() * scratch_bytes)
    free(scratch)
    if pinned:
        blas_unpin_serial()


# --------------------------------------------------------------------------------------
# Python side: validation, broadcasting, layouts

def _fail(msg):
    raise ValueError(f"fastdl.scaled_dot_product_attention: {msg}")


cdef object _as_rows(cnp.ndarray a):
    """a with a unit-stride last axis and a positive row stride (copied once if not)."""
    cdef int nd = cnp.PyArray_NDIM(a)
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(a)
    cdef cnp.npy_intp *shp = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp *st = cnp.PyArray_STRIDES(a)
    ok = cnp.PyArray_ISALIGNED(a) and (shp[nd - 1] <= 1 or st[nd - 1] == isz) and (
        shp[nd - 2] <= 1 or (st[nd - 2] > 0 and st[nd - 2] % isz == 0
                             and st[nd - 2] // isz >= shp[nd - 1]))
    return a if ok else np.ascontiguousarray(a)


cdef tuple _batch_view(cnp.ndarray a, tuple batch):
    """(byte offsets of every batch entry as an intp array, row stride in elements)."""
    cdef int nd = cnp.PyArray_NDIM(a)
    full = np.broadcast_to(a, batch + (<object>a).shape[nd - 2:])
    isz = cnp.PyArray_ITEMSIZE(a)
    strides = full.strides[:len(batch)]
    if len(batch):
        idx = np.indices(batch, dtype=np.intp).reshape(len(batch), -1)
        offs = np.ascontiguousarray((np.asarray(strides, np.intp)[:, None] * idx).sum(0),
                                    dtype=np.intp)
    else:
        offs = np.zeros(1, np.intp)
    row = (<object>a).strides[nd - 2] // isz if (<object>a).shape[nd - 2] > 1 else \
        (<object>a).shape[nd - 1]
    return offs, row


cdef object _inputs(q, k, v, str func):
    q = as_float_array(q, func, "q")
    k = as_float_array(k, func, "k")
    v = as_float_array(v, func, "v")
    for name, a in (("q", q), ("k", k), ("v", v)):
        if a.ndim < 2:
            raise ValueError(f"fastdl.{func}: '{name}' must have at least 2 dimensions "
                             f"(..., length, features), got shape {a.shape}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"fastdl.{func}: q and k must have the same last dimension (E); "
                         f"got q {q.shape} and k {k.shape}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"fastdl.{func}: k and v must have the same number of keys "
                         f"(dimension -2); got k {k.shape} and v {v.shape}")
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(f"fastdl.{func}: the leading (batch) dimensions of q {q.shape}, "
                         f"k {k.shape} and v {v.shape} do not broadcast") from None
    typenum = cnp.NPY_FLOAT if (q.dtype == np.float32 and k.dtype == np.float32
                                and v.dtype == np.float32) else cnp.NPY_DOUBLE
    q = as_typenum(q, typenum)
    k = as_typenum(k, typenum)
    v = as_typenum(v, typenum)
    return q, k, v, tuple(batch), typenum


cdef double _scale(scale, Py_ssize_t E, str func) except? -1.0:
    if scale is None:
        return 1.0 / math.sqrt(E) if E > 0 else 1.0
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"fastdl.{func}: scale must be a real number or None, got "
                        f"{type(scale).__name__}") from None
    if not math.isfinite(s):
        raise ValueError(f"fastdl.{func}: scale must be finite, got {s}")
    return s


cdef object _mask(attn_mask, tuple batch, Py_ssize_t L, Py_ssize_t S, int typenum, str func,
                  Problem *p):
    """Validate the mask and describe it in p; returns the arrays p points into."""
    p.mkind = FDL_ATTN_NONE
    p.mask = NULL
    p.moff = NULL
    p.mls = p.mss = 0
    p.msz = 1
    if attn_mask is None:
        return None
    m = np.asarray(attn_mask)
    if m.dtype == np.bool_:
        p.mkind = FDL_ATTN_BOOL
    elif m.dtype.kind == "f" and m.dtype.itemsize in (4, 8):
        p.mkind = FDL_ATTN_ADD
        m = m.astype(np.float32 if typenum == cnp.NPY_FLOAT else np.float64, copy=False)
        if not m.dtype.isnative:
            m = m.astype(m.dtype.newbyteorder("="))
    else:
        raise TypeError(f"fastdl.{func}: attn_mask must be boolean (True = attend) or a float "
                        f"additive mask, got dtype {m.dtype}")
    target = batch + (L, S)
    try:
        ok = np.broadcast_shapes(m.shape, target) == target
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"fastdl.{func}: attn_mask of shape {m.shape} does not broadcast to "
                         f"the scores' shape {target} (batch..., L, S)")
    if not m.flags.aligned:
        m = m.copy()
    full = np.broadcast_to(m, target)
    isz = m.dtype.itemsize
    p.msz = isz
    p.mls = full.strides[-2] // isz
    p.mss = full.strides[-1] // isz
    if len(batch):
        idx = np.indices(batch, dtype=np.intp).reshape(len(batch), -1)
        offs = np.ascontiguousarray(
            (np.asarray(full.strides[:len(batch)], np.intp)[:, None] * idx).sum(0), np.intp)
    else:
        offs = np.zeros(1, np.intp)
    p.mask = <char *>cnp.PyArray_DATA(m)
    p.moff = <const Py_ssize_t *>cnp.PyArray_DATA(offs)
    return (m, offs)


cdef void _set_operand(Problem *p, int which, cnp.ndarray a, cnp.ndarray offs,
                       Py_ssize_t row):
    cdef char *data = <char *>cnp.PyArray_DATA(a)
    cdef const Py_ssize_t *o = <const Py_ssize_t *>cnp.PyArray_DATA(offs)
    if which == 0:
        p.q, p.qoff, p.ldq = data, o, row
    elif which == 1:
        p.k, p.koff, p.ldk = data, o, row
    elif which == 2:
        p.v, p.voff, p.ldv = data, o, row
    elif which == 3:
        p.o, p.ooff, p.ldo = data, o, row
    else:
        p.dout, p.dooff, p.lddo = data, o, row


cdef Py_ssize_t _block(object value, str name) except -1:
    cdef Py_ssize_t b = int(value)
    if b < 1:
        raise ValueError(f"fastdl._ext._attention.{name} must be >= 1, got {b}")
    return b


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, scale=None, *,
                                 return_lse=False):
    """softmax(scale * q @ k^T + mask) @ v, computed blockwise (never the (L, S) scores).

    q (..., L, E), k (..., S, E), v (..., S, Ev); leading dimensions broadcast. ``scale``
    defaults to 1/sqrt(E). ``attn_mask``: boolean (True = attend) or additive float,
    broadcastable to (..., L, S). ``is_causal`` masks key j > query i (top-left aligned, as
    PyTorch); it may be combined with attn_mask. A query whose every key is masked gives
    zeros. Returns (..., L, Ev), and with ``return_lse=True`` also the row log-sum-exp
    (..., L) of the scaled, masked scores (-inf for a fully masked row) for the backward.
    """
    if on_device(q):
        return gpu_call("scaled_dot_product_attention", (), {"q": q, "k": k, "v": v, "attn_mask": attn_mask, "is_causal": is_causal, "scale": scale, "return_lse": return_lse})
    func = "scaled_dot_product_attention"
    cdef Problem p
    q, k, v, batch, typenum = _inputs(q, k, v, func)
    cdef Py_ssize_t L = q.shape[-2], S = k.shape[-2], E = q.shape[-1], Ev = v.shape[-1]
    memset(&p, 0, sizeof(Problem))
    p.scale = _scale(scale, E, func)
    p.causal = bool(is_causal)
    keep = _mask(attn_mask, batch, L, S, typenum, func, &p)
    dtype = np.float32 if typenum == cnp.NPY_FLOAT else np.float64
    out = np.empty(batch + (L, Ev), dtype)
    lse = np.empty(batch + (L,), dtype)
    cdef Py_ssize_t nb = 1
    for d in batch:
        nb *= d
    if nb == 0 or L == 0:
        return (out, lse) if return_lse else out
    ops = []
    for which, a in enumerate((q, k, v)):
        a = _as_rows(a)
        offs, row = _batch_view(a, batch)
        _set_operand(&p, which, a, offs, row)
        ops.append((a, offs))
    p.dt = DT_FLOAT32 if typenum == cnp.NPY_FLOAT else DT_FLOAT64
    p.isz = 4 if typenum == cnp.NPY_FLOAT else 8
    p.nb, p.L, p.S, p.E, p.Ev = nb, L, S, E, Ev
    p.bq = _block(BLOCK_Q, "BLOCK_Q")
    p.bk = _block(BLOCK_K, "BLOCK_K")
    p.out = <char *>cnp.PyArray_DATA(out)
    p.lse = <char *>cnp.PyArray_DATA(lse)
    p.kernel = _kernel_level() if p.dt == DT_FLOAT32 else 0
    cdef Py_ssize_t items = nb * ((L + p.bq - 1) // p.bq)
    cdef Py_ssize_t scratch
    if p.kernel:
        scratch = _fast_scratch_floats(&p) * 4 + p.bq * 8 + 64
    else:
        scratch = p.bq * p.bk * p.isz + p.bq * p.isz + p.bq * 8 + 64
    scratch = (scratch + 63) // 64 * 64
    cdef int nthreads = current_threads()
    if <double>nb * L * max(S, 1) * max(E + Ev, 1) < PARALLEL_MIN_WORK:
        nthreads = 1
    if p.kernel:
        # K^T of every entry, padded past S by a whole panel (a tile's last panel may
        # reach 31 columns beyond S)
        p.ldkt = _pad32(S) + 32
        kt = np.empty(nb * E * p.ldkt, np.float32)
        p.kt = <float *>cnp.PyArray_DATA(kt)
        with nogil:
            _pack_keys(&p, nthreads)
    with nogil:
        _run(&p, items, False, scratch, nthreads)
    return (out, lse) if return_lse else out


cdef int _kernel_level() except -1:
    if KERNEL == "auto":
        return _CPU_LEVEL
    if KERNEL == "blas":
        return 0
    want = {"avx2": 1, "avx512": 2}.get(KERNEL)
    if want is None:
        raise ValueError(f"fastdl._ext._attention.KERNEL must be 'auto', 'blas', 'avx2' or "
                         f"'avx512', got {KERNEL!r}")
    if want > _CPU_LEVEL:
        raise RuntimeError(f"fastdl._ext._attention.KERNEL={KERNEL!r}: this CPU lacks it")
    return want


def _kernel_level_py():
    """The forward kernel KERNEL selects on this CPU (0 BLAS, 1 AVX2, 2 AVX-512)."""
    return _kernel_level()


def _sum_to(g, shape):
    """Sum a gradient computed per broadcast batch entry back to its operand's shape."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape)
                                      if n == 1 and g.shape[i + lead] != 1)
    return np.ascontiguousarray(g.sum(axis=axes, keepdims=True).reshape(shape))


def scaled_dot_product_attention_backward(dout, q, k, v, out, lse, attn_mask=None,
                                          is_causal=False, scale=None):
    """(dq, dk, dv) of scaled_dot_product_attention, from its output and ``lse``
    (``return_lse=True``), recomputing the probabilities blockwise. The mask, is_causal and
    scale must be those of the forward call."""
    if on_device(dout):
        return gpu_call("scaled_dot_product_attention_backward", (), {"dout": dout, "q": q, "k": k, "v": v, "out": out, "lse": lse, "attn_mask": attn_mask, "is_causal": is_causal, "scale": scale})
    func = "scaled_dot_product_attention_backward"
    cdef Problem p
    q, k, v, batch, typenum = _inputs(q, k, v, func)
    cdef Py_ssize_t L = q.shape[-2], S = k.shape[-2], E = q.shape[-1], Ev = v.shape[-1]
    dtype = np.float32 if typenum == cnp.NPY_FLOAT else np.float64
    arrays = {}
    for name, a, shape in (("dout", dout, batch + (L, Ev)), ("out", out, batch + (L, Ev)),
                           ("lse", lse, batch + (L,))):
        a = as_float_array(a, func, name)
        if a.shape != shape:
            raise ValueError(f"fastdl.{func}: '{name}' must have shape {shape} (from q "
                             f"{q.shape}, k {k.shape}, v {v.shape}), got {a.shape}")
        arrays[name] = as_typenum(a, typenum)
    memset(&p, 0, sizeof(Problem))
    p.scale = _scale(scale, E, func)
    p.causal = bool(is_causal)
    keep = _mask(attn_mask, batch, L, S, typenum, func, &p)
    cdef Py_ssize_t nb = 1
    for d in batch:
        nb *= d
    dq = np.zeros(batch + (L, E), dtype)
    dk = np.zeros(batch + (S, E), dtype)
    dv = np.zeros(batch + (S, Ev), dtype)
    if nb == 0 or L == 0 or S == 0:
        return _sum_to(dq, q.shape), _sum_to(dk, k.shape), _sum_to(dv, v.shape)
    ops = []
    for which, a in enumerate((q, k, v, arrays["out"], arrays["dout"])):
        a = _as_rows(a)
        offs, row = _batch_view(a, batch)
        _set_operand(&p, which, a, offs, row)
        ops.append((a, offs))
    lse_c = np.ascontiguousarray(arrays["lse"])
    p.dt = DT_FLOAT32 if typenum == cnp.NPY_FLOAT else DT_FLOAT64
    p.isz = 4 if typenum == cnp.NPY_FLOAT else 8
    p.nb, p.L, p.S, p.E, p.Ev = nb, L, S, E, Ev
    p.bq = _block(BLOCK_Q, "BLOCK_Q")
    p.bk = _block(BLOCK_K, "BLOCK_K")
    p.lse = <char *>cnp.PyArray_DATA(lse_c)
    p.dq = <char *>cnp.PyArray_DATA(dq)
    p.dk = <char *>cnp.PyArray_DATA(dk)
    p.dv = <char *>cnp.PyArray_DATA(dv)
    cdef Py_ssize_t scratch = 2 * p.bq * p.bk * p.isz + p.bq * p.isz + 64
    scratch = (scratch + 63) // 64 * 64
    cdef int nthreads = current_threads()
    if <double>nb * L * S * max(E + Ev, 1) < PARALLEL_MIN_WORK:
        nthreads = 1
    with nogil:
        _run(&p, nb, True, scratch, nthreads)
    return _sum_to(dq, q.shape), _sum_to(dk, k.shape), _sum_to(dv, v.shape)


def split_heads(x, num_heads):
    """(batch, seq, embed) -> (batch, heads, seq, embed // heads), a view (no copy)."""
    a = np.asarray(x)
    try:
        h = int(num_heads)
    except (TypeError, ValueError):
        raise TypeError(f"fastdl.split_heads: num_heads must be an int, got "
                        f"{type(num_heads).__name__}") from None
    if a.ndim < 2:
        raise ValueError(f"fastdl.split_heads: x must have at least 2 dimensions (..., seq, "
                         f"embed), got shape {a.shape}")
    if h < 1 or a.shape[-1] % h:
        raise ValueError(f"fastdl.split_heads: num_heads={h} must be >= 1 and divide the "
                         f"embedding size {a.shape[-1]} (x {a.shape})")
    s = a.shape
    return a.reshape(s[:-1] + (h, s[-1] // h)).swapaxes(-2, -3)


def merge_heads(x):
    """(batch, heads, seq, head_dim) -> (batch, seq, heads * head_dim), split_heads undone."""
    a = np.asarray(x)
    if a.ndim < 3:
        raise ValueError(f"fastdl.merge_heads: x must have at least 3 dimensions (..., heads, "
                         f"seq, head_dim), got shape {a.shape}")
    s = a.shape
    return a.swapaxes(-2, -3).reshape(s[:-3] + (s[-2], s[-3] * s[-1]))
