/*
 * Inner loops of the softmax family (softmax, log_softmax and their backward) and of the
 * losses (cross_entropy, mse, the fused softmax_cross_entropy), float32 and float64.
 *
 * Layout. A reduction axis of length `len` in an array is seen as lanes: `outer` groups of
 * `inner` lanes, lane (o, i) holding the elements base[o * so + l * sl + i], l < len
 * (strides in elements). Two kernels walk lanes:
 *   - rows (inner == 1, sl == 1): one contiguous row per work item;
 *   - columns (inner > 1): a block of up to FDL_SM_COLS_MAX contiguous lanes per work item,
 *     vectorised across the lanes (a softmax over axis 0 of a C array, or any axis but the
 *     last), never gathering a strided lane into a buffer.
 *
 * Passes over memory. A row of at most FDL_SM_ROW_CACHE bytes (64K float32, 32K float64)
 * is read from memory once: the max pass brings it into L1/L2, the exp/sum pass and the
 * write pass read it from there. softmax stores exp(x - max) in the output during the sum
 * pass and rescales it in cache, so it computes one exp per element and moves exactly the
 * bytes of a copy (read x, write y). A longer row is reduced by an online pass (chunks of
 * FDL_SM_CHUNK elements: chunk max in L1, running max, rescaled running sum), then written
 * by a second pass that recomputes exp(x - max): two reads and one write, two exps.
 * Columns: when FDL_SM_MIN_COLS lanes of the column fit FDL_SM_COLS_BYTES, a block of lanes
 * is kept in cache for the three passes as a row is; longer columns (softmax over axis 0 of
 * a 4096x1024 array) take the online pass over chunks of FDL_SM_CHUNK_ROWS rows of 256 lanes
 * (1 KiB runs per row for the prefetchers), then the write pass. Measured, 4096x1024 float32
 * over axis 0, one thread: 16-lane cached blocks 11.8 ms, 128-lane 5.4 ms, online 4-5 ms.
 *
 * Measured (4096x1024 float32 softmax, one thread, Zen 4): the exp/sum pass costs 0.33 ns per
 * element, fdl_expf alone 0.30, the max and the rescaling passes 0.03-0.04 each: the kernel
 * is bound by exp, 1.85 ms against 1.6 ms for the same passes in L1. Rows of 32000 float64
 * (250 KiB): 4.9 ms cached against 8.0 ms online (128 rows), hence FDL_SM_ROW_CACHE = 256 KiB
 * (x and y rows together within a 1 MiB L2).
 *
 * Accuracy. Row sums (of exp, of dy * y, of loss terms) add blocks of FDL_SM_BLOCK terms in
 * T with a vectorised reduction (float32: each SIMD lane adds 64 terms at AVX-512 width,
 * 128 at AVX2), and the block sums in double: for the positive terms of a softmax the
 * float32 sum is within ~3e-7 relative typically (4e-6 worst case). Column sums, loss terms
 * and every per-lane quantity (log-sum-exp, the loss of a row) are in double. The order of
 * every sum depends only on the lane length and on the SIMD clone the CPU runs, never on the
 * thread count or the work split, so results are bitwise identical for any thread count.
 *
 * Special values follow the formulas: a NaN anywhere in a lane makes the lane NaN (through
 * the sum); +inf gives NaN (inf - inf); a lane of -inf with one finite value gives a
 * one-hot softmax; a lane of all -inf gives NaN, as exp(x - max(x)) / sum(...) does.
 *
 * exp/log come from vmath.h (fdl_expf, fdl_exp, fdl_logf, fdl_log), never libm directly.
 */
#ifndef FDL_SOFTMAX_TEMPLATE
#ifndef FASTDL_SOFTMAX_H
#define FASTDL_SOFTMAX_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "config.h"
#include "vmath.h"

#define FDL_SM_LANES 16          /* the column kernel blocks lanes by multiples of this */
#define FDL_SM_BLOCK 1024        /* elements per T-precision block of a row sum */
#define FDL_SM_VEC 64            /* bytes per accumulator vector of a loaded-terms sum */
#define FDL_SM_ROW_CACHE 262144  /* bytes: a row up to this size is re-read from cache */
#define FDL_SM_CHUNK 2048        /* elements per chunk of the online pass of long rows */
#define FDL_SM_COLS_MAX 256      /* lanes per work item of the column kernel */
#define FDL_SM_COLS_BYTES 262144 /* bytes of one input block of the cached column kernel */
#define FDL_SM_MIN_COLS 64       /* narrowest block of the cached column kernel */
#define FDL_SM_CHUNK_ROWS 32     /* rows per chunk of the online column pass (32 KiB f32) */
#define FDL_FLAT_ITEM 16384      /* elements per work item of a flat (elementwise) sum */

/* Helpers are inlined into each SIMD clone of the FDL_DISPATCH kernels that call them: a
 * helper left out of line would be compiled once, for the baseline CPU. */
#if defined(__GNUC__)
#  define FDL_SM_INLINE static inline __attribute__((always_inline))
#else
#  define FDL_SM_INLINE static inline
#endif

enum { FDL_SOFTMAX = 0, FDL_LOG_SOFTMAX = 1, FDL_SOFTMAX_BWD = 2, FDL_LOG_SOFTMAX_BWD = 3 };

/* Lanes of one array (see the top of this file); strides in elements. */
typedef struct {
    char *data;
    ptrdiff_t outer, len, inner, so, sl;
} fdl_lanes;

/* One call of the softmax family: x (softmax input or dy), y (backward: softmax output). */
typedef struct {
    fdl_lanes x, y, out;
    ptrdiff_t block;   /* lanes per work item of the column kernel (inner > 1) */
    int op;
} fdl_softmax_args;

/* One call of the fused softmax cross-entropy. */
typedef struct {
    fdl_lanes x;             /* logits */
    fdl_lanes t;             /* probability targets (data NULL for class indices) */
    fdl_lanes g;             /* gradient output (data NULL without gradient) */
    const int64_t *label;    /* class index of lane o * inner + i (NULL for probabilities) */
    double *loss;            /* loss of lane o * inner + i */
    ptrdiff_t block;
    double eps;              /* label smoothing */
    double gscale;           /* gradient scale: 1, or 1 / (samples counted) for 'mean' */
    int has_ignore;
    int64_t ignore;
} fdl_xent_args;

/* One call of cross_entropy: -sum(t * log(p)) over lanes, terms with t == 0 contribute 0. */
typedef struct {
    fdl_lanes t, p;
    double *loss;            /* loss of lane o * inner + i */
    ptrdiff_t block;
} fdl_plain_xent_args;

/* Whether a column block of `len` rows is kept in cache between passes (FDL_SM_MIN_COLS lanes
 * of it fit in FDL_SM_COLS_BYTES), else the forward kernels use the online pass. */
FDL_SM_INLINE int fdl_sm_cols_cached(ptrdiff_t len, ptrdiff_t itemsize)
{
    return len * itemsize * FDL_SM_MIN_COLS <= FDL_SM_COLS_BYTES;
}

/* Lanes per work item of the column kernel: cached, as many as fit FDL_SM_COLS_BYTES; online,
 * FDL_SM_COLS_MAX (each row of the block is then 1 KiB of float32: long contiguous runs for
 * the prefetchers). A multiple of FDL_SM_LANES, at most FDL_SM_COLS_MAX and inner. Results
 * never depend on the block: every lane is computed alone, in an order set by len. */
FDL_SM_INLINE ptrdiff_t fdl_sm_block(ptrdiff_t len, ptrdiff_t inner, ptrdiff_t itemsize)
{
    ptrdiff_t b = FDL_SM_COLS_MAX;
    if (len > 0 && fdl_sm_cols_cached(len, itemsize)) {
        b = FDL_SM_COLS_BYTES / (len * itemsize);
        b -= b % FDL_SM_LANES;
    }
    if (b > FDL_SM_COLS_MAX) b = FDL_SM_COLS_MAX;
    if (b > inner) b = inner;
    return b;
}

FDL_SM_INLINE ptrdiff_t fdl_sm_items(ptrdiff_t outer, ptrdiff_t inner, ptrdiff_t block)
{
    return inner == 1 ? outer : outer * ((inner + block - 1) / block);
}

/* Pairwise (recursive halving) sum of n doubles: the order depends on n only. */
static double fdl_pairwise_sum(const double *v, ptrdiff_t n)
{
    if (n <= 8) {
        double s = 0.0;
        for (ptrdiff_t i = 0; i < n; ++i) s += v[i];
        return s;
    }
    ptrdiff_t h = n / 2;
    return fdl_pairwise_sum(v, h) + fdl_pairwise_sum(v + h, n - h);
}

/* Class indices: count the ones outside [0, classes) that are not ignored, and the ones
 * counted in a mean (not ignored). Serial: one int64 per sample. */
static ptrdiff_t fdl_check_labels(const int64_t *label, ptrdiff_t n, ptrdiff_t classes,
                                  int has_ignore, int64_t ignore, ptrdiff_t *counted,
                                  ptrdiff_t *first_bad)
{
    ptrdiff_t bad = 0, cnt = 0;
    *first_bad = -1;
    for (ptrdiff_t i = 0; i < n; ++i) {
        int64_t k = label[i];
        if (has_ignore && k == ignore) continue;
        ++cnt;
        if (k < 0 || k >= (int64_t)classes) {
            if (bad == 0) *first_bad = i;
            ++bad;
        }
    }
    *counted = cnt;
    return bad;
}

/* c ? a : b as a bitwise select. A ternary on floating-point values is not if-converted by
 * GCC once it has sunk an operand's computation into a branch (with -ftrapping-math), and
 * the loop is then not vectorised (measured: cross_entropy ran at 5.8 ns per element
 * instead of 0.5); a select keeps both operands computed and vectorises as a blend. */
FDL_SM_INLINE float fdl_sm_sel_f32(int c, float a, float b)
{
    uint32_t ua, ub, m = (uint32_t)0 - (uint32_t)(c != 0);
    memcpy(&ua, &a, sizeof a);
    memcpy(&ub, &b, sizeof b);
    ua = (ua & m) | (ub & ~m);
    memcpy(&a, &ua, sizeof a);
    return a;
}

FDL_SM_INLINE double fdl_sm_sel_f64(int c, double a, double b)
{
    uint64_t ua, ub, m = (uint64_t)0 - (uint64_t)(c != 0);
    memcpy(&ua, &a, sizeof a);
    memcpy(&ub, &b, sizeof b);
    ua = (ua & m) | (ub & ~m);
    memcpy(&a, &ua, sizeof a);
    return a;
}

#define FDL_CAT_(a, b) a##_##b
#define FDL_CAT(a, b) FDL_CAT_(a, b)

/* The type-generic part, expanded once per dtype by including this file again. */
#define FDL_SOFTMAX_TEMPLATE
#define FDL_T float
#define FDL_SUF f32
#define FDL_EXP fdl_expf_nonpos
#define FDL_EXP_ANY fdl_expf
#define FDL_LOG fdl_logf
#include "softmax.h"
#undef FDL_T
#undef FDL_SUF
#undef FDL_EXP
#undef FDL_EXP_ANY
#undef FDL_LOG
#define FDL_T double
#define FDL_SUF f64
#define FDL_EXP fdl_exp_nonpos
#define FDL_EXP_ANY fdl_exp
#define FDL_LOG fdl_log
#include "softmax.h"
#undef FDL_T
#undef FDL_SUF
#undef FDL_EXP
#undef FDL_EXP_ANY
#undef FDL_LOG
#undef FDL_SOFTMAX_TEMPLATE

#endif  /* FASTDL_SOFTMAX_H */

#else  /* FDL_SOFTMAX_TEMPLATE: the body for one dtype */

#define T FDL_T
#define FN(name) FDL_CAT(name, FDL_SUF)

/* ---- row primitives (contiguous, n elements) --------------------------------------- */

/* max(x). NaN may or may not be skipped here; it reaches the result through the sum. */
FDL_SM_INLINE T FN(fdl_sm_max)(const T *x, ptrdiff_t n)
{
    T m = -(T)INFINITY;
#pragma omp simd reduction(max:m)
    for (ptrdiff_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
    return m;
}

/* Sums: the terms of a block of FDL_SM_BLOCK are added in T by a vectorised reduction
 * (float32: 64 terms per SIMD lane at AVX-512 width), the block sums in double. Measured
 * (softmax 4096x1024 float32, one thread): blocks of 1024 run 6% faster than blocks of 256,
 * whose lane-joining epilogue (a serial chain of 16 adds) costs ~0.25 cycle per element;
 * accumulating in double inside the loop runs 20% slower. */
#define FDL_SM_BLOCKED_SUM(TERM)                                                          \
    double total = 0.0;                                                                   \
    for (ptrdiff_t i0 = 0; i0 < n; i0 += FDL_SM_BLOCK) {                                  \
        ptrdiff_t i1 = n - i0 > FDL_SM_BLOCK ? i0 + FDL_SM_BLOCK : n;                     \
        T acc = 0;                                                                        \
        _Pragma("omp simd reduction(+:acc)")                                              \
        for (ptrdiff_t i = i0; i < i1; ++i) { TERM; }                                     \
        total += (double)acc;                                                             \
    }                                                                                     \
    return total;

/* Sums of terms that cost a load or two (sum, dot, squared differences): the loop is
 * latency-bound on its accumulator, so each block is added by four vectors of FDL_SM_VEC
 * bytes (GCC vector extensions: explicit lanes, the same order in every SIMD clone; an AVX2
 * CPU runs a 64-byte vector as two ymm), joined by a fixed pairwise tree. Measured
 * (softmax_backward 4096x1024 float32, one thread): 1.15 ms, against 1.5 ms for the
 * single-accumulator reduction above. TERM(i) is the vector of terms i .. i + NV - 1;
 * TERM1(i) the scalar term i. */
#define FDL_SM_NV ((ptrdiff_t)(FDL_SM_VEC / sizeof(T)))
typedef T FN(fdl_sm_vec) __attribute__((vector_size(FDL_SM_VEC)));

/* an unaligned vector load (a GCC statement expression: no vector crosses a call) */
#define FDL_SM_VLOAD(p) ({ FN(fdl_sm_vec) v_; memcpy(&v_, (p), sizeof v_); v_; })

FDL_SM_INLINE T FN(fdl_sm_hsum)(const FN(fdl_sm_vec) *v)
{
    T a[FDL_SM_NV];
    memcpy(a, v, sizeof a);
    for (ptrdiff_t w = FDL_SM_NV / 2; w >= 1; w /= 2)
        for (ptrdiff_t j = 0; j < w; ++j) a[j] += a[j + w];
    return a[0];
}

#define FDL_SM_VEC_SUM(TERM, TERM1)                                                       \
    typedef FN(fdl_sm_vec) vec_t;                                                         \
    double total = 0.0;                                                                   \
    for (ptrdiff_t i0 = 0; i0 < n; i0 += FDL_SM_BLOCK) {                                  \
        ptrdiff_t i1 = n - i0 > FDL_SM_BLOCK ? i0 + FDL_SM_BLOCK : n, i = i0;             \
        vec_t a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                     \
        for (; i + 4 * FDL_SM_NV <= i1; i += 4 * FDL_SM_NV) {                             \
            a0 += TERM(i);                                                                \
            a1 += TERM(i + FDL_SM_NV);                                                    \
            a2 += TERM(i + 2 * FDL_SM_NV);                                                \
            a3 += TERM(i + 3 * FDL_SM_NV);                                                \
        }                                                                                 \
        for (; i + FDL_SM_NV <= i1; i += FDL_SM_NV) a0 += TERM(i);                        \
        T tail = 0;                                                                       \
        for (; i < i1; ++i) tail += TERM1(i);                                             \
        a0 = (a0 + a1) + (a2 + a3);                                                       \
        total += (double)(FN(fdl_sm_hsum)(&a0) + tail);                                   \
    }                                                                                     \
    return total;

/* sum(x) */
FDL_SM_INLINE double FN(fdl_sm_sum)(const T *x, ptrdiff_t n)
{
#define FDL_SM_T(i) FDL_SM_VLOAD(x + (i))
#define FDL_SM_T1(i) x[i]
    FDL_SM_VEC_SUM(FDL_SM_T, FDL_SM_T1)
#undef FDL_SM_T
#undef FDL_SM_T1
}

/* sum(a * b) */
FDL_SM_INLINE double FN(fdl_sm_dot)(const T *a, const T *b, ptrdiff_t n)
{
#define FDL_SM_T(i) (FDL_SM_VLOAD(a + (i)) * FDL_SM_VLOAD(b + (i)))
#define FDL_SM_T1(i) (a[i] * b[i])
    FDL_SM_VEC_SUM(FDL_SM_T, FDL_SM_T1)
#undef FDL_SM_T
#undef FDL_SM_T1
}

/* sum(exp(x - m)) */
FDL_SM_INLINE double FN(fdl_sm_expsum)(const T *x, ptrdiff_t n, T m)
{
    FDL_SM_BLOCKED_SUM(acc += FDL_EXP(x[i] - m))
}

/* sum(exp(x - m)), exp(x - m) stored into y (which may be x itself: each element is read
 * before it is written) */
FDL_SM_INLINE double FN(fdl_sm_expsum_store)(const T *x, T *y, ptrdiff_t n, T m)
{
    FDL_SM_BLOCKED_SUM(T e = FDL_EXP(x[i] - m); y[i] = e; acc += e)
}

/* Online max and sum of exp(x - max) for rows too long for the cache: each chunk's max
 * is found in L1, the running sum is rescaled when the max grows, and the chunk's exps
 * are summed against the new max. A lane of -inf so far sums against 0 (so that -inf
 * contributes exp(-inf) = 0 and NaN still propagates). */
FDL_SM_INLINE void FN(fdl_sm_online)(const T *x, ptrdiff_t n, T *pm, double *ps)
{
    T m = -(T)INFINITY;
    double s = 0.0;
    for (ptrdiff_t c = 0; c < n; c += FDL_SM_CHUNK) {
        ptrdiff_t len = n - c < FDL_SM_CHUNK ? n - c : FDL_SM_CHUNK;
        T cm = FN(fdl_sm_max)(x + c, len);
        if (cm > m) {
            s *= fdl_exp((double)m - (double)cm);
            m = cm;
        }
        s += FN(fdl_sm_expsum)(x + c, len, m == -(T)INFINITY ? (T)0 : m);
    }
    *pm = m;
    *ps = s;
}

/* Max and sum of exp(x - max) of a row; y receives exp(x - max) when the row is short
 * enough to stay in cache (returns 1 then), else the sum comes from the online pass. */
FDL_SM_INLINE int FN(fdl_sm_stats)(const T *x, T *y, ptrdiff_t n, T *pm, double *ps,
                                   const int store)
{
    if ((size_t)n * sizeof(T) <= FDL_SM_ROW_CACHE) {
        T m = FN(fdl_sm_max)(x, n);
        *pm = m;
        *ps = store ? FN(fdl_sm_expsum_store)(x, y, n, m) : FN(fdl_sm_expsum)(x, n, m);
        return store;
    }
    FN(fdl_sm_online)(x, n, pm, ps);
    return 0;
}

FDL_SM_INLINE void FN(fdl_softmax_row)(const T *x, T *y, ptrdiff_t n)
{
    T m;
    double s;
    if (FN(fdl_sm_stats)(x, y, n, &m, &s, 1)) {
        T inv = (T)(1.0 / s);
#pragma omp simd
        for (ptrdiff_t i = 0; i < n; ++i) y[i] *= inv;
    } else {
        T inv = (T)(1.0 / s);
#pragma omp simd
        for (ptrdiff_t i = 0; i < n; ++i) y[i] = FDL_EXP(x[i] - m) * inv;
    }
}

FDL_SM_INLINE void FN(fdl_log_softmax_row)(const T *x, T *y, ptrdiff_t n)
{
    T m;
    double s;
    FN(fdl_sm_stats)(x, NULL, n, &m, &s, 0);
    /* (x - m) - log(s): x - m is exact for x near the max, so a logit of 1e4 keeps its
     * float32 resolution (m + log(s) rounded first would not). */
    T ls = (T)fdl_log(s);
#pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) y[i] = (x[i] - m) - ls;
}

/* dx = y * (dy - sum(dy * y)) */
FDL_SM_INLINE void FN(fdl_softmax_bwd_row)(const T *dy, const T *y, T *dx, ptrdiff_t n)
{
    T d = (T)FN(fdl_sm_dot)(dy, y, n);
#pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) dx[i] = y[i] * (dy[i] - d);
}

/* dx = dy - exp(y) * sum(dy), y = log_softmax(x) */
FDL_SM_INLINE void FN(fdl_log_softmax_bwd_row)(const T *dy, const T *y, T *dx, ptrdiff_t n)
{
    T s = (T)FN(fdl_sm_sum)(dy, n);
#pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) dx[i] = dy[i] - FDL_EXP_ANY(y[i]) * s;
}

/* ---- column primitives: b contiguous lanes, len steps of sx / sy elements ------------ */

FDL_SM_INLINE void FN(fdl_sm_cols_max)(const T *x, ptrdiff_t sx, ptrdiff_t len, ptrdiff_t b,
                                       T *m)
{
    for (ptrdiff_t i = 0; i < b; ++i) m[i] = -(T)INFINITY;
    for (ptrdiff_t l = 0; l < len; ++l) {
        const T *xr = x + l * sx;
#pragma omp simd
        for (ptrdiff_t i = 0; i < b; ++i) m[i] = xr[i] > m[i] ? xr[i] : m[i];
    }
}

/* s[i] = sum_l exp(x - m[i]), exp stored into y when `store`: chunks of FDL_SM_CHUNK_ROWS
 * rows are summed in T, the chunk sums in double (a double add per element ran 20% slower). */
FDL_SM_INLINE void FN(fdl_sm_cols_expsum)(const T *x, ptrdiff_t sx, T *y, ptrdiff_t sy,
                                          ptrdiff_t len, ptrdiff_t b, const T *m, double *s,
                                          const int store)
{
    T acc[FDL_SM_COLS_MAX];
    for (ptrdiff_t i = 0; i < b; ++i) s[i] = 0.0;
    for (ptrdiff_t l0 = 0; l0 < len; l0 += FDL_SM_CHUNK_ROWS) {
        ptrdiff_t l1 = len - l0 > FDL_SM_CHUNK_ROWS ? l0 + FDL_SM_CHUNK_ROWS : len;
        for (ptrdiff_t i = 0; i < b; ++i) acc[i] = 0;
        for (ptrdiff_t l = l0; l < l1; ++l) {
            const T *xr = x + l * sx;
            T *yr = store ? y + l * sy : NULL;
#pragma omp simd
            for (ptrdiff_t i = 0; i < b; ++i) {
                T e = FDL_EXP(xr[i] - m[i]);
                if (store) yr[i] = e;
                acc[i] += e;
            }
        }
        for (ptrdiff_t i = 0; i < b; ++i) s[i] += (double)acc[i];
    }
}

/* The online pass of long columns: per chunk of FDL_SM_CHUNK_ROWS rows (in L1), the chunk
 * max, the running sum rescaled where the max grew, then the chunk's exps against the new
 * max (against 0 while a lane has seen only -inf, so that NaN still propagates). */
FDL_SM_INLINE void FN(fdl_sm_cols_online)(const T *x, ptrdiff_t sx, ptrdiff_t len, ptrdiff_t b,
                                          T *m, double *s)
{
    T cm[FDL_SM_COLS_MAX], ref[FDL_SM_COLS_MAX], acc[FDL_SM_COLS_MAX];
    for (ptrdiff_t i = 0; i < b; ++i) {
        m[i] = -(T)INFINITY;
        s[i] = 0.0;
    }
    for (ptrdiff_t l0 = 0; l0 < len; l0 += FDL_SM_CHUNK_ROWS) {
        ptrdiff_t rows = len - l0 > FDL_SM_CHUNK_ROWS ? FDL_SM_CHUNK_ROWS : len - l0;
        const T *xc = x + l0 * sx;
        FN(fdl_sm_cols_max)(xc, sx, rows, b, cm);
#pragma omp simd
        for (ptrdiff_t i = 0; i < b; ++i) {
            int grow = cm[i] > m[i];
            double f = fdl_exp((double)m[i] - (double)cm[i]);
            s[i] = fdl_sm_sel_f64(grow, s[i] * f, s[i]);
            m[i] = cm[i] > m[i] ? cm[i] : m[i];
            ref[i] = FN(fdl_sm_sel)(m[i] == -(T)INFINITY, (T)0, m[i]);
            acc[i] = 0;
        }
        for (ptrdiff_t l = 0; l < rows; ++l) {
            const T *xr = xc + l * sx;
#pragma omp simd
            for (ptrdiff_t i = 0; i < b; ++i) acc[i] += FDL_EXP(xr[i] - ref[i]);
        }
        for (ptrdiff_t i = 0; i < b; ++i) s[i] += (double)acc[i];
    }
}

FDL_SM_INLINE void FN(fdl_softmax_cols)(const T *x, ptrdiff_t sx, T *y, ptrdiff_t sy,
                                        ptrdiff_t len, ptrdiff_t b)
{
    T m[FDL_SM_COLS_MAX], inv[FDL_SM_COLS_MAX];
    double s[FDL_SM_COLS_MAX];
    if (fdl_sm_cols_cached(len, sizeof(T))) {
        FN(fdl_sm_cols_max)(x, sx, len, b, m);
        FN(fdl_sm_cols_expsum)(x, sx, y, sy, len, b, m, s, 1);
        for (ptrdiff_t i = 0; i < b; ++i) inv[i] = (T)(1.0 / s[i]);
        for (ptrdiff_t l = 0; l < len; ++l) {
            T *yr = y + l * sy;
#pragma omp simd
            for (ptrdiff_t i = 0; i < b; ++i) yr[i] *= inv[i];
        }
    } else {
        FN(fdl_sm_cols_online)(x, sx, len, b, m, s);
        for (ptrdiff_t i = 0; i < b; ++i) inv[i] = (T)(1.0 / s[i]);
        for (ptrdiff_t l = 0; l < len; ++l) {
            const T *xr = x + l * sx;
            T *yr = y + l * sy;
#pragma omp simd
            for (ptrdiff_t i = 0; i < b; ++i) yr[i] = FDL_EXP(xr[i] - m[i]) * inv[i];
        }
    }
}

FDL_SM_INLINE void FN(fdl_log_softmax_cols)(const T *x, ptrdiff_t sx, T *y, ptrdiff_t sy,
                                            ptrdiff_t len, ptrdiff_t b)
{
    T m[FDL_SM_COLS_MAX], ls[FDL_SM_COLS_MAX];
    double s[FDL_SM_COLS_MAX];
    if (fdl_sm_cols_cached(len, sizeof(T))) {
        FN(fdl_sm_cols_max)(x, sx, len, b, m);
        FN(fdl_sm_cols_expsum)(x, sx, NULL, 0, len, b, m, s, 0);
    } else {
        FN(fdl_sm_cols_online)(x, sx, len, b, m, s);
    }
    for (ptrdiff_t i = 0; i < b; ++i) ls[i] = (T)fdl_log(s[i]);
    for (ptrdiff_t l = 0; l < len; ++l) {
        const T *xr = x + l * sx;
        T *yr = y + l * sy;
#pragma omp simd
        for (ptrdiff_t i = 0; i < b; ++i) yr[i] = (xr[i] - m[i]) - ls[i];
    }
}

FDL_SM_INLINE void FN(fdl_softmax_bwd_cols)(const T *dy, ptrdiff_t sd, const T *y,
                                            ptrdiff_t sy, T *dx, ptrdiff_t so, ptrdiff_t len,
                                            ptrdiff_t b)
{
    double acc[FDL_SM_COLS_MAX];
    T d[FDL_SM_COLS_MAX];
    for (ptrdiff_t i = 0; i < b; ++i) acc[i] = 0.0;
    for (ptrdiff_t l = 0; l < len; ++l) {
        const T *dr = dy + l * sd, *yr = y + l * sy;
#pragma omp simd
        for (ptrdiff_t i = 0; i < b; ++i) acc[i] += (double)(dr[i] * yr[i]);
    }
    for (ptrdiff_t i = 0; i < b; ++i) d[i] = (T)acc[i];
    for (ptrdiff_t l = 0; l < len; ++l) {
        const T *dr = dy + l * sd, *yr = y + l * sy;
        T *xr = dx + l * so;
#pragma omp simd
        for (ptrdiff_t i = 0; i < b; ++i) xr[i] = yr[i] * (dr[i] - d[i]);
    }
}

FDL_SM_INLINE void FN(fdl_log_softmax_bwd_cols)(const T *dy, ptrdiff_t sd, const T *y,
                                                ptrdiff_t sy, T *dx, ptrdiff_t so,
                                                ptrdiff_t len, ptrdiff_t b)
{
    double acc[FDL_SM_COLS_MAX];
    T s[FDL_SM_COLS_MAX];
    for (ptrdiff_t i = 0; i < b; ++i) acc[i] = 0.0;
    for (ptrdiff_t l = 0; l < len; ++l) {
        const T *dr = dy + l * sd;
#pragma omp simd
        for (ptrdiff_t i = 0; i < b; ++i) acc[i] += (double)dr[i];
    }
    for (ptrdiff_t i = 0; i < b; ++i) s[i] = (T)acc[i];
    for (ptrdiff_t l = 0; l < len; ++l) {
        const T *dr = dy + l * sd, *yr = y + l * sy;
        T *xr = dx + l * so;
#pragma omp simd
        for (ptrdiff_t i = 0; i < b; ++i) xr[i] = dr[i] - FDL_EXP_ANY(yr[i]) * s[i];
    }
}

/* One work item of the softmax family: a row (inner == 1) or a block of lanes. */
FDL_DISPATCH static void FN(fdl_softmax_item)(const fdl_softmax_args *a, ptrdiff_t item)
{
    ptrdiff_t o, i0, b;
    if (a->x.inner == 1) {
        o = item;
        i0 = 0;
        b = 1;
    } else {
        ptrdiff_t nb = (a->x.inner + a->block - 1) / a->block;
        o = item / nb;
        i0 = (item % nb) * a->block;
        b = a->x.inner - i0 < a->block ? a->x.inner - i0 : a->block;
    }
    const T *x = (const T *)a->x.data + o * a->x.so + i0;
    const T *y = a->y.data ? (const T *)a->y.data + o * a->y.so + i0 : NULL;
    T *out = (T *)a->out.data + o * a->out.so + i0;
    ptrdiff_t n = a->x.len;
    if (a->x.inner == 1) {
        switch (a->op) {
        case FDL_SOFTMAX: FN(fdl_softmax_row)(x, out, n); break;
        case FDL_LOG_SOFTMAX: FN(fdl_log_softmax_row)(x, out, n); break;
        case FDL_SOFTMAX_BWD: FN(fdl_softmax_bwd_row)(x, y, out, n); break;
        default: FN(fdl_log_softmax_bwd_row)(x, y, out, n); break;
        }
    } else {
        switch (a->op) {
        case FDL_SOFTMAX: FN(fdl_softmax_cols)(x, a->x.sl, out, a->out.sl, n, b); break;
        case FDL_LOG_SOFTMAX: FN(fdl_log_softmax_cols)(x, a->x.sl, out, a->out.sl, n, b); break;
        case FDL_SOFTMAX_BWD:
            FN(fdl_softmax_bwd_cols)(x, a->x.sl, y, a->y.sl, out, a->out.sl, n, b);
            break;
        default:
            FN(fdl_log_softmax_bwd_cols)(x, a->x.sl, y, a->y.sl, out, a->out.sl, n, b);
            break;
        }
    }
}

/* ---- fused softmax cross-entropy --------------------------------------------------- */

/* sum_c t'_c (m - x_c) and sum_c t'_c, t' = (1 - eps) t + eps / C; a class with t' == 0
 * contributes 0 even where x_c = -inf (the log(0) guard of cross_entropy). */
FDL_SM_INLINE void FN(fdl_xent_soft_terms)(const T *x, const T *t, ptrdiff_t n, T m,
                                           double keep, double smooth, double *pa,
                                           double *pt)
{
    double sa = 0.0, st = 0.0, md = (double)m;
#pragma omp simd reduction(+:sa, st)
    for (ptrdiff_t c = 0; c < n; ++c) {
        double tc = keep * (double)t[c] + smooth;
        double term = tc * (md - (double)x[c]);
        sa += fdl_sm_sel_f64(tc == 0.0, 0.0, term);
        st += tc;
    }
    *pa = sa;
    *pt = st;
}

/* One row of logits (contiguous), class index or probability row; loss into *loss,
 * gradient row into g (NULL: none). */
FDL_SM_INLINE void FN(fdl_xent_row)(const fdl_xent_args *a, const T *x, const T *t,
                                    int64_t k, T *g, double *loss)
{
    ptrdiff_t n = a->x.len;
    double eps = a->eps, gs = a->gscale;
    if (!t && a->has_ignore && k == a->ignore) {
        *loss = 0.0;
        if (g)
            for (ptrdiff_t c = 0; c < n; ++c) g[c] = (T)0;
        return;
    }
    T m;
    double s;
    int stored = FN(fdl_sm_stats)(x, g, n, &m, &s, g != NULL);
    double ls = fdl_log(s);
    if (!t) {
        double l = ls + (1.0 - eps) * ((double)m - (double)x[k]);
        if (eps > 0.0)  /* skipped at eps == 0: 0 * inf would be NaN for a -inf logit */
            l += eps * ((double)m - FN(fdl_sm_sum)(x, n) / (double)n);
        *loss = l;
        if (g) {
            T ga = (T)(gs / s), gb = (T)(gs * eps / (double)n);
            if (stored) {
#pragma omp simd
                for (ptrdiff_t c = 0; c < n; ++c) g[c] = g[c] * ga - gb;
            } else {
#pragma omp simd
                for (ptrdiff_t c = 0; c < n; ++c) g[c] = FDL_EXP(x[c] - m) * ga - gb;
            }
            g[k] -= (T)(gs * (1.0 - eps));
        }
    } else {
        double keep = 1.0 - eps, smooth = n > 0 ? eps / (double)n : 0.0, sa, st;
        FN(fdl_xent_soft_terms)(x, t, n, m, keep, smooth, &sa, &st);
        *loss = sa + st * ls;
        if (g) {
            T ga = (T)(gs * st / s), gk = (T)(gs * keep), gb = (T)(gs * smooth);
            if (stored) {
#pragma omp simd
                for (ptrdiff_t c = 0; c < n; ++c) g[c] = g[c] * ga - (gk * t[c] + gb);
            } else {
#pragma omp simd
                for (ptrdiff_t c = 0; c < n; ++c)
                    g[c] = FDL_EXP(x[c] - m) * ga - (gk * t[c] + gb);
            }
        }
    }
}

/* A block of b lanes of the column layout. */
FDL_SM_INLINE void FN(fdl_xent_cols)(const fdl_xent_args *a, const T *x, const T *t,
                                     const int64_t *lab, T *g, double *loss, ptrdiff_t b)
{
    ptrdiff_t n = a->x.len, sx = a->x.sl, st = a->t.sl, sg = a->g.sl;
    double eps = a->eps, gs = a->gscale;
    T m[FDL_SM_COLS_MAX], ga[FDL_SM_COLS_MAX], gb[FDL_SM_COLS_MAX];
    double s[FDL_SM_COLS_MAX], acc[FDL_SM_COLS_MAX], tt[FDL_SM_COLS_MAX];
    FN(fdl_sm_cols_max)(x, sx, n, b, m);
    if (g)
        FN(fdl_sm_cols_expsum)(x, sx, g, sg, n, b, m, s, 1);
    else
        FN(fdl_sm_cols_expsum)(x, sx, NULL, 0, n, b, m, s, 0);
    if (!t) {
        for (ptrdiff_t i = 0; i < b; ++i) acc[i] = 0.0;
        if (eps > 0.0) {
            for (ptrdiff_t l = 0; l < n; ++l) {
                const T *xr = x + l * sx;
#pragma omp simd
                for (ptrdiff_t i = 0; i < b; ++i) acc[i] += (double)xr[i];
            }
        }
        for (ptrdiff_t i = 0; i < b; ++i) {
            int64_t k = lab[i];
            if (a->has_ignore && k == a->ignore) {
                loss[i] = 0.0;          /* its gradient lane is zeroed below */
                ga[i] = gb[i] = (T)0;
                continue;
            }
            double l = fdl_log(s[i]) + (1.0 - eps) * ((double)m[i] - (double)x[k * sx + i]);
            if (eps > 0.0) l += eps * ((double)m[i] - acc[i] / (double)n);
            loss[i] = l;
            ga[i] = (T)(gs / s[i]);
            gb[i] = (T)(gs * eps / (double)n);
        }
        if (g) {
            for (ptrdiff_t l = 0; l < n; ++l) {
                T *gr = g + l * sg;
#pragma omp simd
                for (ptrdiff_t i = 0; i < b; ++i) gr[i] = gr[i] * ga[i] - gb[i];
            }
            for (ptrdiff_t i = 0; i < b; ++i) {
                int64_t k = lab[i];
                if (a->has_ignore && k == a->ignore) {
                    for (ptrdiff_t l = 0; l < n; ++l) g[l * sg + i] = (T)0;
                } else {
                    g[k * sg + i] -= (T)(gs * (1.0 - eps));
                }
            }
        }
    } else {
        double keep = 1.0 - eps, smooth = n > 0 ? eps / (double)n : 0.0;
        for (ptrdiff_t i = 0; i < b; ++i) acc[i] = tt[i] = 0.0;
        for (ptrdiff_t l = 0; l < n; ++l) {
            const T *xr = x + l * sx, *tr = t + l * st;
#pragma omp simd
            for (ptrdiff_t i = 0; i < b; ++i) {
                double tc = keep * (double)tr[i] + smooth;
                double term = tc * ((double)m[i] - (double)xr[i]);
                acc[i] += fdl_sm_sel_f64(tc == 0.0, 0.0, term);
                tt[i] += tc;
            }
        }
        for (ptrdiff_t i = 0; i < b; ++i) {
            loss[i] = acc[i] + tt[i] * fdl_log(s[i]);
            ga[i] = (T)(gs * tt[i] / s[i]);
        }
        if (g) {
            T gk = (T)(gs * keep), gb0 = (T)(gs * smooth);
            for (ptrdiff_t l = 0; l < n; ++l) {
                T *gr = g + l * sg;
                const T *tr = t + l * st;
#pragma omp simd
                for (ptrdiff_t i = 0; i < b; ++i) gr[i] = gr[i] * ga[i] - (gk * tr[i] + gb0);
            }
        }
    }
}

FDL_DISPATCH static void FN(fdl_xent_item)(const fdl_xent_args *a, ptrdiff_t item)
{
    ptrdiff_t o, i0, b;
    if (a->x.inner == 1) {
        o = item;
        i0 = 0;
        b = 1;
    } else {
        ptrdiff_t nb = (a->x.inner + a->block - 1) / a->block;
        o = item / nb;
        i0 = (item % nb) * a->block;
        b = a->x.inner - i0 < a->block ? a->x.inner - i0 : a->block;
    }
    ptrdiff_t lane = o * a->x.inner + i0;
    const T *x = (const T *)a->x.data + o * a->x.so + i0;
    const T *t = a->t.data ? (const T *)a->t.data + o * a->t.so + i0 : NULL;
    T *g = a->g.data ? (T *)a->g.data + o * a->g.so + i0 : NULL;
    const int64_t *lab = a->label ? a->label + lane : NULL;
    if (a->x.inner == 1)
        FN(fdl_xent_row)(a, x, t, lab ? lab[0] : 0, g, a->loss + lane);
    else
        FN(fdl_xent_cols)(a, x, t, lab, g, a->loss + lane, b);
}

/* ---- cross_entropy on probabilities, mse: plain losses ------------------------------ */

/* sum(t * log(p)) over a row, a term with t == 0 being 0 even where p == 0 */
FDL_SM_INLINE double FN(fdl_plain_xent_sum)(const T *t, const T *p, ptrdiff_t n)
{
    FDL_SM_BLOCKED_SUM(T term = t[i] * FDL_LOG(p[i]); acc += FN(fdl_sm_sel)(t[i] == (T)0, (T)0, term))
}

/* -sum(t * log(p)) over one lane; t == 0 contributes 0 even where p == 0. */
FDL_DISPATCH static void FN(fdl_plain_xent_item)(const fdl_plain_xent_args *a, ptrdiff_t item)
{
    ptrdiff_t n = a->p.len;
    if (a->p.inner == 1) {
        const T *t = (const T *)a->t.data + item * a->t.so;
        const T *p = (const T *)a->p.data + item * a->p.so;
        a->loss[item] = -FN(fdl_plain_xent_sum)(t, p, n);
        return;
    }
    ptrdiff_t nb = (a->p.inner + a->block - 1) / a->block;
    ptrdiff_t o = item / nb, i0 = (item % nb) * a->block;
    ptrdiff_t b = a->p.inner - i0 < a->block ? a->p.inner - i0 : a->block;
    const T *t = (const T *)a->t.data + o * a->t.so + i0;
    const T *p = (const T *)a->p.data + o * a->p.so + i0;
    double acc[FDL_SM_COLS_MAX];
    for (ptrdiff_t i = 0; i < b; ++i) acc[i] = 0.0;
    for (ptrdiff_t l = 0; l < n; ++l) {
        const T *tr = t + l * a->t.sl, *pr = p + l * a->p.sl;
#pragma omp simd
        for (ptrdiff_t i = 0; i < b; ++i) {
            T term = tr[i] * FDL_LOG(pr[i]);
            acc[i] += fdl_sm_sel_f64(tr[i] == (T)0, 0.0, (double)term);
        }
    }
    double *loss = a->loss + o * a->p.inner + i0;
    for (ptrdiff_t i = 0; i < b; ++i) loss[i] = -acc[i];
}

/* d/dp of -sum(t log p), times scale; 0 where t == 0. */
FDL_DISPATCH static void FN(fdl_xent_grad)(const T *FDL_RESTRICT t, const T *FDL_RESTRICT p,
                                           T *FDL_RESTRICT out, ptrdiff_t n, T scale)
{
#pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) {
        T v = -(t[i] / p[i]) * scale;
        out[i] = FN(fdl_sm_sel)(t[i] == (T)0, (T)0, v);
    }
}

/* sum((t - p)^2) over n elements (double across blocks). */
FDL_DISPATCH static double FN(fdl_mse_sum)(const T *FDL_RESTRICT t, const T *FDL_RESTRICT p,
                                           ptrdiff_t n)
{
#define FDL_SM_D(i) (FDL_SM_VLOAD(t + (i)) - FDL_SM_VLOAD(p + (i)))
#define FDL_SM_T(i) (FDL_SM_D(i) * FDL_SM_D(i))
#define FDL_SM_T1(i) ((t[i] - p[i]) * (t[i] - p[i]))
    FDL_SM_VEC_SUM(FDL_SM_T, FDL_SM_T1)
#undef FDL_SM_D
#undef FDL_SM_T
#undef FDL_SM_T1
}

/* out = (t - p)^2 */
FDL_DISPATCH static void FN(fdl_mse_none)(const T *FDL_RESTRICT t, const T *FDL_RESTRICT p,
                                          T *FDL_RESTRICT out, ptrdiff_t n)
{
#pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) {
        T d = t[i] - p[i];
        out[i] = d * d;
    }
}

/* out = (p - t) * scale, scale = 2 / N ('mean') or 2 */
FDL_DISPATCH static void FN(fdl_mse_grad)(const T *FDL_RESTRICT t, const T *FDL_RESTRICT p,
                                          T *FDL_RESTRICT out, ptrdiff_t n, T scale)
{
#pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) out[i] = (p[i] - t[i]) * scale;
}

#undef T
#undef FN

#endif  /* FDL_SOFTMAX_TEMPLATE */
