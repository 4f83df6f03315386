/*
 * Summation kernels: the column sum of linear_backward's bias gradient (fdl_colsum_*) and the
 * inner loops of fastdl.sum / mean / var (_reduce.pyx).
 *
 * Every sum here follows a summation tree fixed by the shape alone (never by the thread count
 * or the SIMD level): callers may compute the pieces (chunks) on any thread, in any order, and
 * combine them afterwards with the same counter; the bits do not change.
 *
 * Pairwise merging by a binary counter. Equal-sized partial sums are merged as a binary counter
 * carries (the partial sum of 2^l pieces sits at level l), and whatever is left at the end is
 * folded smallest first. Rounding errors then grow like O(log n), not O(n) as in row-by-row
 * accumulation.
 *
 * Contiguous segments (reduction over the unit-stride axis, `fdl_segsum_*`):
 *   - fewer than FDL_SMALL_* elements: 16 lane accumulators (zero-padded tail), folded by a
 *     halving tree (below 8 elements: a plain left-to-right sum);
 *   - otherwise: the segment is cut into chunks of FDL_CHUNK_* elements; within a chunk, the
 *     elements are rows of W lanes (W = 64 float32 / 32 float64, the last row zero-padded),
 *     FDL_LANE_ROWS rows are summed naively lane by lane into a block, blocks are merged by the
 *     counter into one W-lane vector per chunk. Chunk vectors are merged by a second counter and
 *     the W lanes are folded by a halving tree at the very end. Each lane adds at most
 *     FDL_LANE_ROWS values naively; the bound is ~(8 + log2(n / 512) + 6) u for float32.
 * Column sums (reduction over an outer axis, `fdl_colchunk_*`): FDL_COL_BLOCK rows per block,
 *   added one at a time, or four at a time, (r0 + r1) + (r2 + r3), for rows of at least
 *   FDL_COL_WIDE_BYTES; blocks merged by the counter within a chunk of FDL_COL_CHUNK rows, chunk
 *   results merged by the counter. Column j's value depends only on the number of rows and the
 *   row width, never on how many columns are processed together.
 *   Why two ways: reading four rows at once quarters the accumulator traffic, which pays on
 *   wide rows (4096 floats: 3.8 against 7.5 ms for 96 MiB, one thread), but on narrow rows the
 *   four interleaved streams within a few pages defeat the hardware prefetcher (768 floats:
 *   5.6 against 3.1 ms). Reading whole rows matters most: cutting 4096-float rows into
 *   1024-float panels cost 30% to 2x, so rows are cut into panels only to feed idle threads.
 * Variance (`*_dev_*`): the same trees over d = x - mean, accumulating sum(d*d) and sum(d)
 *   together (the corrected two-pass algorithm of Chan, Golub and LeVeque).
 */
#ifndef FASTDL_REDUCE_H
#define FASTDL_REDUCE_H

#include <string.h>
#include "config.h"

/* ------------------------------------------------------------------------------------------
 * Column sums of a row-major panel, used for the bias gradient (db = dy.sum(axis=0)).
 * Rows are summed in blocks of FDL_COLSUM_BLOCK and block sums merged pairwise; callers
 * parallelise over column panels, each summed by one thread.
 */
#define FDL_COLSUM_BLOCK 64

#define FDL_DEFINE_COLSUM(T, SUFFIX)                                                      \
FDL_DISPATCH static void fdl_colsum_##SUFFIX(const T *FDL_RESTRICT x, ptrdiff_t rows,     \
                                             ptrdiff_t cols, ptrdiff_t ld,                \
                                             T *FDL_RESTRICT out, T *FDL_RESTRICT scratch)\
{                                                                                         \
    /* scratch: (1 + bit_length(ceil(rows / FDL_COLSUM_BLOCK))) * cols elements */      \
    T *block = scratch;                                                                   \
    T *stack = scratch + cols;                                                            \
    unsigned long long nblocks = 0;                                                       \
    int depth = 0;                                                                        \
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += FDL_COLSUM_BLOCK) {                           \
        ptrdiff_t r1 = r0 + FDL_COLSUM_BLOCK < rows ? r0 + FDL_COLSUM_BLOCK : rows;       \
        const T *row = x + r0 * ld;                                                       \
        for (ptrdiff_t j = 0; j < cols; ++j) block[j] = row[j];                           \
        for (ptrdiff_t r = r0 + 1; r < r1; ++r) {                                         \
            row = x + r * ld;                                                             \
            for (ptrdiff_t j = 0; j < cols; ++j) block[j] += row[j];                      \
        }                                                                                 \
        /* merge equal-sized partial sums, as a binary counter carries */                 \
        unsigned long long carry = nblocks;                                               \
        while (carry & 1ULL) {                                                            \
            T *top = stack + (ptrdiff_t)(depth - 1) * cols;                               \
            for (ptrdiff_t j = 0; j < cols; ++j) block[j] += top[j];                      \
            --depth;                                                                      \
            carry >>= 1;                                                                  \
        }                                                                                 \
        memcpy(stack + (ptrdiff_t)depth * cols, block, (size_t)cols * sizeof(T));         \
        ++depth;                                                                          \
        ++nblocks;                                                                        \
    }                                                                                     \
    if (depth == 0) {                                                                     \
        for (ptrdiff_t j = 0; j < cols; ++j) out[j] = (T)0;                               \
        return;                                                                           \
    }                                                                                     \
    /* fold what is left, smallest partial sums first */                                  \
    memcpy(block, stack + (ptrdiff_t)(depth - 1) * cols, (size_t)cols * sizeof(T));       \
    for (int l = depth - 2; l >= 0; --l) {                                                \
        const T *part = stack + (ptrdiff_t)l * cols;                                      \
        for (ptrdiff_t j = 0; j < cols; ++j) block[j] += part[j];                         \
    }                                                                                     \
    memcpy(out, block, (size_t)cols * sizeof(T));                                         \
}

FDL_DEFINE_COLSUM(float, f32)
FDL_DEFINE_COLSUM(double, f64)

/* ------------------------------------------------------------------------------------------
 * Reductions of fastdl.sum / mean / var. Tree constants: changing one changes results (not
 * their accuracy class), never their independence of the thread count.
 */
#define FDL_LANES_f32 64          /* lanes of a contiguous segment sum: 4 zmm / 8 ymm of floats */
#define FDL_LANES_f64 32
#define FDL_LANE_ROWS 8           /* lane rows per block (each lane adds 8 values naively) */
#define FDL_SMALL_f32 256         /* shorter segments: 16 lanes, no chunks */
#define FDL_SMALL_f64 128
#define FDL_CHUNK_f32 65536       /* elements per chunk (256 KiB): the unit of parallel work */
#define FDL_CHUNK_f64 32768
#define FDL_CHUNK_LEVELS 9        /* counter levels within a chunk: bit_length(65536/512) + 1 */
#define FDL_COL_BLOCK 16          /* rows per block of a column sum */
#define FDL_COL_WIDE_BYTES 12288  /* rows at least this wide are added four at a time */
#define FDL_COL_CHUNK 1024        /* rows per chunk of a column sum: the unit of parallel work */
#define FDL_RED_LEVELS 65         /* counter levels for up to 2^64 chunks */
#define FDL_RED_MAXD 64           /* NPY_MAXDIMS */

/* Offsets of a row-major multi-index over up to FDL_RED_MAXD dims (byte strides). */
typedef struct {
    int nd;
    ptrdiff_t n[FDL_RED_MAXD];
    ptrdiff_t s[FDL_RED_MAXD];
} fdl_dims;

typedef struct {
    ptrdiff_t off;
    ptrdiff_t idx[FDL_RED_MAXD];
} fdl_cursor;

static inline ptrdiff_t fdl_dims_count(const fdl_dims *d)
{
    ptrdiff_t c = 1;
    for (int k = 0; k < d->nd; ++k) c *= d->n[k];
    return c;
}

static inline void fdl_cursor_set(const fdl_dims *d, fdl_cursor *c, ptrdiff_t flat)
{
    c->off = 0;
    for (int k = d->nd - 1; k >= 0; --k) {
        ptrdiff_t i = flat % d->n[k];
        flat /= d->n[k];
        c->idx[k] = i;
        c->off += i * d->s[k];
    }
}

static inline void fdl_cursor_next(const fdl_dims *d, fdl_cursor *c)
{
    for (int k = d->nd - 1; k >= 0; --k) {
        c->off += d->s[k];
        if (++c->idx[k] < d->n[k]) return;
        c->off -= d->s[k] * d->n[k];
        c->idx[k] = 0;
    }
}

/* GCC/Clang vector extensions for the lane kernels: one 64-byte vector is 16 floats or 8 doubles
 * (a zmm in the x86-64-v4 clone, two ymm or four xmm in the others); the arithmetic per lane is
 * that of the plain C fallback, so every build gives the same bits. Written with explicit
 * vectors and a loop that is not unrolled, a block is read row after row: GCC unrolled the
 * plain loops into one chain per vector that strided through the whole block, and the
 * contiguous sum ran 20-35% slower than a plain read of the same bytes. */
#if defined(__GNUC__) || defined(__clang__)
#  define FDL_VECEXT 1
#  define FDL_ALIGN64 __attribute__((aligned(64)))
typedef float fdl_vec_f32 __attribute__((vector_size(64), aligned(4), may_alias));
typedef double fdl_vec_f64 __attribute__((vector_size(64), aligned(8), may_alias));
#  if defined(__clang__)
#    define FDL_NO_UNROLL _Pragma("nounroll")
#  else
#    define FDL_NO_UNROLL _Pragma("GCC unroll 1")
#  endif
#else
#  define FDL_VECEXT 0
#  define FDL_ALIGN64
#endif

/* The counter: vectors of w elements in slots[level * w]; the vector written to the free slot
 * (fdl_counter_top) joins with fdl_counter_commit; fdl_counter_fold leaves the total in slot 0. */
typedef struct {
    int depth;
    unsigned long long count;
} fdl_counter;

#define FDL_DEFINE_COUNTER(T, SFX)                                                         \
static inline T *fdl_counter_top_##SFX(T *slots, ptrdiff_t w, const fdl_counter *c)        \
{                                                                                          \
    return slots + (ptrdiff_t)c->depth * w;                                                \
}                                                                                          \
static inline void fdl_add_##SFX(T *FDL_RESTRICT a, const T *FDL_RESTRICT b, ptrdiff_t w)   \
{                                                                                          \
    for (ptrdiff_t j = 0; j < w; ++j) a[j] += b[j];                                        \
}                                                                                          \
static inline void fdl_counter_commit_##SFX(T *slots, ptrdiff_t w, fdl_counter *c)         \
{                                                                                          \
    unsigned long long carry = c->count;                                                   \
    T *top = slots + (ptrdiff_t)c->depth * w;                                              \
    while (carry & 1ULL) {                                                                 \
        T *below = top - w;                                                                \
        fdl_add_##SFX(below, top, w);                                                      \
        top = below;                                                                       \
        --c->depth;                                                                        \
        carry >>= 1;                                                                       \
    }                                                                                      \
    ++c->depth;                                                                            \
    ++c->count;                                                                            \
}                                                                                          \
/* the same as writing buf to the free slot and committing, without the copy when it merges */ \
static inline void fdl_counter_push_##SFX(T *slots, const T *buf, ptrdiff_t w,              \
                                          fdl_counter *c)                                   \
{                                                                                          \
    unsigned long long carry = c->count;                                                   \
    if (carry & 1ULL) {                                                                    \
        fdl_add_##SFX(slots + (ptrdiff_t)(c->depth - 1) * w, buf, w);                      \
        --c->depth;                                                                        \
        carry >>= 1;                                                                       \
        while (carry & 1ULL) {                                                             \
            T *below = slots + (ptrdiff_t)(c->depth - 1) * w;                              \
            fdl_add_##SFX(below, below + w, w);                                            \
            --c->depth;                                                                    \
            carry >>= 1;                                                                   \
        }                                                                                  \
    } else {                                                                               \
        memcpy(slots + (ptrdiff_t)c->depth * w, buf, sizeof(T) * (size_t)w);               \
    }                                                                                      \
    ++c->depth;                                                                            \
    ++c->count;                                                                            \
}                                                                                          \
static inline void fdl_counter_fold_##SFX(T *slots, ptrdiff_t w, const fdl_counter *c)     \
{                                                                                          \
    for (int l = c->depth - 2; l >= 0; --l)                                                \
        fdl_add_##SFX(slots + (ptrdiff_t)l * w, slots + (ptrdiff_t)(l + 1) * w, w);        \
}                                                                                          \
/* halving tree over the W lanes of v (destroys v) */                                      \
static inline T fdl_hsum_##SFX(T *v, int lanes)                                            \
{                                                                                          \
    for (int h = lanes / 2; h >= 1; h /= 2)                                                \
        for (int j = 0; j < h; ++j) v[j] += v[j + h];                                      \
    return v[0];                                                                           \
}

FDL_DEFINE_COUNTER(float, f32)
FDL_DEFINE_COUNTER(double, f64)

/* ---- contiguous segments ---------------------------------------------------------------- */

#if FDL_VECEXT
/* W = 4 vectors of 64 bytes (64 floats, 32 doubles) */
#define FDL_LANE_BLOCK_BODY(T, SFX)                                                         \
    const fdl_vec_##SFX *v = (const fdl_vec_##SFX *)p;                                      \
    fdl_vec_##SFX a0 = v[0], a1 = v[1], a2 = v[2], a3 = v[3];                               \
    FDL_NO_UNROLL                                                                           \
    for (int k = 1; k < FDL_LANE_ROWS; ++k) {                                               \
        v += 4;                                                                             \
        a0 += v[0]; a1 += v[1]; a2 += v[2]; a3 += v[3];                                     \
    }                                                                                       \
    fdl_vec_##SFX *d = (fdl_vec_##SFX *)dst;                                                \
    d[0] = a0; d[1] = a1; d[2] = a2; d[3] = a3;
#define FDL_LANE_DEVBLOCK_BODY(T, SFX)                                                      \
    const fdl_vec_##SFX *v = (const fdl_vec_##SFX *)p;                                      \
    fdl_vec_##SFX q0 = {0}, q1 = {0}, q2 = {0}, q3 = {0};                                   \
    fdl_vec_##SFX s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};                                   \
    FDL_NO_UNROLL                                                                           \
    for (int k = 0; k < FDL_LANE_ROWS; ++k, v += 4) {                                       \
        fdl_vec_##SFX e0 = v[0] - m, e1 = v[1] - m, e2 = v[2] - m, e3 = v[3] - m;           \
        q0 += e0 * e0; q1 += e1 * e1; q2 += e2 * e2; q3 += e3 * e3;                         \
        s0 += e0; s1 += e1; s2 += e2; s3 += e3;                                             \
    }                                                                                       \
    fdl_vec_##SFX *oq = (fdl_vec_##SFX *)dq, *od = (fdl_vec_##SFX *)dd;                     \
    oq[0] = q0; oq[1] = q1; oq[2] = q2; oq[3] = q3;                                         \
    od[0] = s0; od[1] = s1; od[2] = s2; od[3] = s3;
#else
#define FDL_LANE_BLOCK_BODY(T, SFX)                                                         \
    enum { W = FDL_LANES_##SFX };                                                           \
    for (int j = 0; j < W; ++j) dst[j] = p[j];                                              \
    for (int k = 1; k < FDL_LANE_ROWS; ++k)                                                 \
        for (int j = 0; j < W; ++j) dst[j] += p[k * W + j];
#define FDL_LANE_DEVBLOCK_BODY(T, SFX)                                                      \
    enum { W = FDL_LANES_##SFX };                                                           \
    for (int j = 0; j < W; ++j) { dq[j] = (T)0; dd[j] = (T)0; }                             \
    for (int k = 0; k < FDL_LANE_ROWS; ++k)                                                 \
        for (int j = 0; j < W; ++j) {                                                       \
            T e = p[k * W + j] - m; dq[j] += e * e; dd[j] += e;                             \
        }
#endif

#define FDL_DEFINE_SEGMENT(T, SFX)                                                          \
/* Segments shorter than FDL_SMALL: 16 zero-padded lanes and a halving tree. */             \
FDL_DISPATCH static T fdl_sum_small_##SFX(const T *FDL_RESTRICT x, ptrdiff_t n)             \
{                                                                                           \
    if (n < 8) {                                                                            \
        T s = n > 0 ? x[0] : (T)0;                                                          \
        for (ptrdiff_t i = 1; i < n; ++i) s += x[i];                                        \
        return s;                                                                           \
    }                                                                                       \
    T a[16];                                                                                \
    for (int j = 0; j < 16; ++j) a[j] = (T)0;                                               \
    ptrdiff_t i = 0;                                                                        \
    for (; i + 16 <= n; i += 16)                                                            \
        for (int j = 0; j < 16; ++j) a[j] += x[i + j];                                      \
    for (ptrdiff_t j = 0; j < n - i; ++j) a[j] += x[i + j];                                 \
    return fdl_hsum_##SFX(a, 16);                                                           \
}                                                                                           \
FDL_DISPATCH static void fdl_dev_small_##SFX(const T *FDL_RESTRICT x, ptrdiff_t n, T m,     \
                                             T *q, T *d)                                    \
{                                                                                           \
    if (n < 8) {                                                                            \
        T sq = (T)0, sd = (T)0;                                                             \
        if (n > 0) { T e = x[0] - m; sq = e * e; sd = e; }                                  \
        for (ptrdiff_t i = 1; i < n; ++i) { T e = x[i] - m; sq += e * e; sd += e; }         \
        *q = sq; *d = sd;                                                                   \
        return;                                                                             \
    }                                                                                       \
    T aq[16], ad[16];                                                                       \
    for (int j = 0; j < 16; ++j) { aq[j] = (T)0; ad[j] = (T)0; }                            \
    ptrdiff_t i = 0;                                                                        \
    for (; i + 16 <= n; i += 16)                                                            \
        for (int j = 0; j < 16; ++j) { T e = x[i + j] - m; aq[j] += e * e; ad[j] += e; }    \
    for (ptrdiff_t j = 0; j < n - i; ++j) { T e = x[i + j] - m; aq[j] += e * e; ad[j] += e; } \
    *q = fdl_hsum_##SFX(aq, 16);                                                            \
    *d = fdl_hsum_##SFX(ad, 16);                                                            \
}                                                                                           \
/* FDL_LANE_ROWS rows of W lanes at p, summed lane by lane into dst (row after row). */      \
static inline void fdl_lane_block_##SFX(const T *FDL_RESTRICT p, T *FDL_RESTRICT dst)       \
{                                                                                           \
    FDL_LANE_BLOCK_BODY(T, SFX)                                                             \
}                                                                                           \
/* the same for (x - m)^2 into dq and x - m into dd, from zero */                           \
static inline void fdl_lane_devblock_##SFX(const T *FDL_RESTRICT p, T m,                    \
                                           T *FDL_RESTRICT dq, T *FDL_RESTRICT dd)          \
{                                                                                           \
    FDL_LANE_DEVBLOCK_BODY(T, SFX)                                                          \
}                                                                                           \
/* One chunk (1 <= n <= FDL_CHUNK) into W lanes at `lanes`. */                              \
FDL_DISPATCH static void fdl_lanesum_##SFX(const T *FDL_RESTRICT x, ptrdiff_t n,            \
                                           T *FDL_RESTRICT lanes)                           \
{                                                                                           \
    enum { W = FDL_LANES_##SFX, R = FDL_LANE_ROWS };                                        \
    T slots[FDL_CHUNK_LEVELS * W] FDL_ALIGN64;                             \
    fdl_counter c = {0, 0};                                                                 \
    ptrdiff_t rows = n / W, rem = n - rows * W, r = 0;                                      \
    for (; r + R <= rows; r += R) {                                                         \
        fdl_lane_block_##SFX(x + r * W, fdl_counter_top_##SFX(slots, W, &c));               \
        fdl_counter_commit_##SFX(slots, W, &c);                                             \
    }                                                                                       \
    if (r < rows || rem) {                                                                  \
        /* the last block: the remaining full rows and the zero-padded tail row */          \
        const T *p = x + r * W;                                                             \
        T a[W];                                                                             \
        for (int j = 0; j < W; ++j) a[j] = (T)0;                                            \
        for (; r < rows; ++r, p += W)                                                       \
            for (int j = 0; j < W; ++j) a[j] += p[j];                                       \
        for (ptrdiff_t j = 0; j < rem; ++j) a[j] += p[j];                                   \
        memcpy(fdl_counter_top_##SFX(slots, W, &c), a, sizeof(a));                          \
        fdl_counter_commit_##SFX(slots, W, &c);                                             \
    }                                                                                       \
    fdl_counter_fold_##SFX(slots, W, &c);                                                   \
    memcpy(lanes, slots, sizeof(T) * W);                                                    \
}                                                                                           \
FDL_DISPATCH static void fdl_lanedev_##SFX(const T *FDL_RESTRICT x, ptrdiff_t n, T m,       \
                                           T *FDL_RESTRICT lanes_q, T *FDL_RESTRICT lanes_d) \
{                                                                                           \
    enum { W = FDL_LANES_##SFX, R = FDL_LANE_ROWS };                                        \
    T sq[FDL_CHUNK_LEVELS * W] FDL_ALIGN64;                                \
    T sd[FDL_CHUNK_LEVELS * W] FDL_ALIGN64;                                \
    fdl_counter cq = {0, 0}, cd = {0, 0};                                                   \
    ptrdiff_t rows = n / W, rem = n - rows * W, r = 0;                                      \
    for (; r + R <= rows; r += R) {                                                         \
        fdl_lane_devblock_##SFX(x + r * W, m, fdl_counter_top_##SFX(sq, W, &cq),            \
                                fdl_counter_top_##SFX(sd, W, &cd));                         \
        fdl_counter_commit_##SFX(sq, W, &cq);                                               \
        fdl_counter_commit_##SFX(sd, W, &cd);                                               \
    }                                                                                       \
    if (r < rows || rem) {                                                                  \
        /* the last block: the remaining full rows and the zero-padded tail row */          \
        const T *p = x + r * W;                                                             \
        T aq[W], ad[W];                                                                     \
        for (int j = 0; j < W; ++j) { aq[j] = (T)0; ad[j] = (T)0; }                         \
        for (; r < rows; ++r, p += W)                                                       \
            for (int j = 0; j < W; ++j) { T e = p[j] - m; aq[j] += e * e; ad[j] += e; }     \
        for (ptrdiff_t j = 0; j < rem; ++j) { T e = p[j] - m; aq[j] += e * e; ad[j] += e; } \
        memcpy(fdl_counter_top_##SFX(sq, W, &cq), aq, sizeof(aq));                          \
        fdl_counter_commit_##SFX(sq, W, &cq);                                               \
        memcpy(fdl_counter_top_##SFX(sd, W, &cd), ad, sizeof(ad));                          \
        fdl_counter_commit_##SFX(sd, W, &cd);                                               \
    }                                                                                       \
    fdl_counter_fold_##SFX(sq, W, &cq);                                                     \
    fdl_counter_fold_##SFX(sd, W, &cd);                                                     \
    memcpy(lanes_q, sq, sizeof(T) * W);                                                     \
    memcpy(lanes_d, sd, sizeof(T) * W);                                                     \
}                                                                                           \
/* The whole segment, serially: chunks merged by the counter, lanes folded at the end. */   \
static inline T fdl_segsum_##SFX(const T *x, ptrdiff_t n)                                   \
{                                                                                           \
    enum { W = FDL_LANES_##SFX };                                                           \
    if (n < FDL_SMALL_##SFX) return fdl_sum_small_##SFX(x, n);                              \
    T slots[FDL_RED_LEVELS * W];                                                            \
    fdl_counter c = {0, 0};                                                                 \
    for (ptrdiff_t off = 0; off < n; off += FDL_CHUNK_##SFX) {                              \
        ptrdiff_t len = n - off < FDL_CHUNK_##SFX ? n - off : FDL_CHUNK_##SFX;              \
        fdl_lanesum_##SFX(x + off, len, fdl_counter_top_##SFX(slots, W, &c));               \
        fdl_counter_commit_##SFX(slots, W, &c);                                             \
    }                                                                                       \
    fdl_counter_fold_##SFX(slots, W, &c);                                                   \
    return fdl_hsum_##SFX(slots, W);                                                        \
}                                                                                           \
/* The same result from chunk lane vectors computed elsewhere (partials[c * W]). */         \
static inline T fdl_lanes_combine_##SFX(const T *partials, ptrdiff_t nchunks)               \
{                                                                                           \
    enum { W = FDL_LANES_##SFX };                                                           \
    T slots[FDL_RED_LEVELS * W];                                                            \
    fdl_counter c = {0, 0};                                                                 \
    for (ptrdiff_t k = 0; k < nchunks; ++k) {                                               \
        memcpy(fdl_counter_top_##SFX(slots, W, &c), partials + k * W, sizeof(T) * W);       \
        fdl_counter_commit_##SFX(slots, W, &c);                                             \
    }                                                                                       \
    fdl_counter_fold_##SFX(slots, W, &c);                                                   \
    return fdl_hsum_##SFX(slots, W);                                                        \
}                                                                                           \
static inline void fdl_segdev_##SFX(const T *x, ptrdiff_t n, T m, T *q, T *d)               \
{                                                                                           \
    enum { W = FDL_LANES_##SFX };                                                           \
    if (n < FDL_SMALL_##SFX) { fdl_dev_small_##SFX(x, n, m, q, d); return; }                \
    T sq[FDL_RED_LEVELS * W], sd[FDL_RED_LEVELS * W];                                       \
    fdl_counter cq = {0, 0}, cd = {0, 0};                                                   \
    for (ptrdiff_t off = 0; off < n; off += FDL_CHUNK_##SFX) {                              \
        ptrdiff_t len = n - off < FDL_CHUNK_##SFX ? n - off : FDL_CHUNK_##SFX;              \
        fdl_lanedev_##SFX(x + off, len, m, fdl_counter_top_##SFX(sq, W, &cq),               \
                          fdl_counter_top_##SFX(sd, W, &cd));                               \
        fdl_counter_commit_##SFX(sq, W, &cq);                                               \
        fdl_counter_commit_##SFX(sd, W, &cd);                                               \
    }                                                                                       \
    fdl_counter_fold_##SFX(sq, W, &cq);                                                     \
    fdl_counter_fold_##SFX(sd, W, &cd);                                                     \
    *q = fdl_hsum_##SFX(sq, W);                                                             \
    *d = fdl_hsum_##SFX(sd, W);                                                             \
}                                                                                           \
static inline void fdl_lanes_combine_dev_##SFX(const T *pq, const T *pd, ptrdiff_t nchunks, \
                                               T *q, T *d)                                  \
{                                                                                           \
    *q = fdl_lanes_combine_##SFX(pq, nchunks);                                              \
    *d = fdl_lanes_combine_##SFX(pd, nchunks);                                              \
}

/* ---- column sums over rows given by a multi-index --------------------------------------- */

#define FDL_DEFINE_COLUMNS(T, SFX)                                                          \
/* elements before p reaches a 64-byte boundary (at most w): the rest of the row is then    \
 * read with aligned loads (the arithmetic per element is the same either way) */          \
static inline ptrdiff_t fdl_head_##SFX(const T *p, ptrdiff_t w)                             \
{                                                                                           \
    size_t mis = (size_t)p % 64;                                                            \
    if (w < 256 || mis % sizeof(T)) return 0;    /* short rows: the split costs more */     \
    return (ptrdiff_t)((64 - mis) % 64 / sizeof(T));                                        \
}                                                                                           \
static inline void fdl_col4_##SFX(T *FDL_RESTRICT a, const T *FDL_RESTRICT p0,              \
                                  const T *FDL_RESTRICT p1, const T *FDL_RESTRICT p2,       \
                                  const T *FDL_RESTRICT p3, ptrdiff_t w)                    \
{                                                                                           \
    for (ptrdiff_t j = 0; j < w; ++j) a[j] += (p0[j] + p1[j]) + (p2[j] + p3[j]);            \
}                                                                                           \
static inline void fdl_col1_##SFX(T *FDL_RESTRICT a, const T *FDL_RESTRICT p0, ptrdiff_t w) \
{                                                                                           \
    for (ptrdiff_t j = 0; j < w; ++j) a[j] += p0[j];                                        \
}                                                                                           \
/* Column sums of the rows [r0, r1) (r0 a multiple of FDL_COL_CHUNK, r1 - r0 <= FDL_COL_CHUNK) \
 * of the rows at base + offsets(rows), w contiguous columns each; the result in slots[0, w). \
 * slots: bit_length(blocks) + 1 vectors of w (the counter), a: w (the block). The first    \
 * columns up to a 64-byte boundary of the (first) row are done apart, so that the rest is    \
 * read with aligned loads (NumPy's large arrays start 16 bytes past a boundary; split loads  \
 * cost the narrow-row sum 30-50%). group (4 or 1, chosen from the full row width, never \
 * from w, which is a panel of it) adds rows four or one at a time within a block. */       \
FDL_DISPATCH static void fdl_colchunk_##SFX(const char *base, const fdl_dims *rows,         \
                                            ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t w,        \
                                            int group, T *slots, T *FDL_RESTRICT a)         \
{                                                                                           \
    fdl_cursor cur;                                                                         \
    fdl_counter c = {0, 0};                                                                 \
    fdl_cursor_set(rows, &cur, r0);                                                         \
    ptrdiff_t r = r0;                                                                       \
    while (r < r1) {                                                                        \
        ptrdiff_t b1 = r + FDL_COL_BLOCK < r1 ? r + FDL_COL_BLOCK : r1;                     \
        for (ptrdiff_t j = 0; j < w; ++j) a[j] = (T)0;                                      \
        for (; group == 4 && r + 4 <= b1; r += 4) {                                         \
            const T *p0 = (const T *)(base + cur.off); fdl_cursor_next(rows, &cur);         \
            const T *p1 = (const T *)(base + cur.off); fdl_cursor_next(rows, &cur);         \
            const T *p2 = (const T *)(base + cur.off); fdl_cursor_next(rows, &cur);         \
            const T *p3 = (const T *)(base + cur.off); fdl_cursor_next(rows, &cur);         \
            ptrdiff_t head = fdl_head_##SFX(p0, w);                                         \
            fdl_col4_##SFX(a, p0, p1, p2, p3, head);                                        \
            fdl_col4_##SFX(a + head, p0 + head, p1 + head, p2 + head, p3 + head, w - head); \
        }                                                                                   \
        for (; r < b1; ++r) {                                                               \
            const T *p0 = (const T *)(base + cur.off);                                      \
            ptrdiff_t head = fdl_head_##SFX(p0, w);                                         \
            fdl_col1_##SFX(a, p0, head);                                                    \
            fdl_col1_##SFX(a + head, p0 + head, w - head);                                  \
            fdl_cursor_next(rows, &cur);                                                    \
        }                                                                                   \
        fdl_counter_push_##SFX(slots, a, w, &c);                                            \
    }                                                                                       \
    fdl_counter_fold_##SFX(slots, w, &c);                                                   \
}                                                                                           \
static inline void fdl_coldev4_##SFX(T *FDL_RESTRICT aq, T *FDL_RESTRICT ad,                \
                                     const T *FDL_RESTRICT p0, const T *FDL_RESTRICT p1,    \
                                     const T *FDL_RESTRICT p2, const T *FDL_RESTRICT p3,    \
                                     const T *FDL_RESTRICT mu, ptrdiff_t w)                 \
{                                                                                           \
    for (ptrdiff_t j = 0; j < w; ++j) {                                                     \
        T e0 = p0[j] - mu[j], e1 = p1[j] - mu[j], e2 = p2[j] - mu[j], e3 = p3[j] - mu[j];   \
        aq[j] += (e0 * e0 + e1 * e1) + (e2 * e2 + e3 * e3);                                 \
        ad[j] += (e0 + e1) + (e2 + e3);                                                     \
    }                                                                                       \
}                                                                                           \
static inline void fdl_coldev4s_##SFX(T *FDL_RESTRICT aq, T *FDL_RESTRICT ad,               \
                                      const T *FDL_RESTRICT p0, const T *FDL_RESTRICT p1,   \
                                      const T *FDL_RESTRICT p2, const T *FDL_RESTRICT p3,   \
                                      T m, ptrdiff_t w)                                     \
{                                                                                           \
    for (ptrdiff_t j = 0; j < w; ++j) {                                                     \
        T e0 = p0[j] - m, e1 = p1[j] - m, e2 = p2[j] - m, e3 = p3[j] - m;                   \
        aq[j] += (e0 * e0 + e1 * e1) + (e2 * e2 + e3 * e3);                                 \
        ad[j] += (e0 + e1) + (e2 + e3);                                                     \
    }                                                                                       \
}                                                                                           \
static inline void fdl_coldev1_##SFX(T *FDL_RESTRICT aq, T *FDL_RESTRICT ad,                \
                                     const T *FDL_RESTRICT p0, const T *FDL_RESTRICT mu,    \
                                     ptrdiff_t w)                                           \
{                                                                                           \
    for (ptrdiff_t j = 0; j < w; ++j) {                                                     \
        T e = p0[j] - mu[j];                                                                \
        aq[j] += e * e;                                                                     \
        ad[j] += e;                                                                         \
    }                                                                                       \
}                                                                                           \
static inline void fdl_coldev1s_##SFX(T *FDL_RESTRICT aq, T *FDL_RESTRICT ad,               \
                                      const T *FDL_RESTRICT p0, T m, ptrdiff_t w)           \
{                                                                                           \
    for (ptrdiff_t j = 0; j < w; ++j) {                                                     \
        T e = p0[j] - m;                                                                    \
        aq[j] += e * e;                                                                     \
        ad[j] += e;                                                                         \
    }                                                                                       \
}                                                                                           \
/* sum((x - mu)^2) into sq and sum(x - mu) into sd over the rows [r0, r1), as colchunk;     \
 * mu[j * mstep] is the mean of column j (mstep 0: one mean for every column). */           \
FDL_DISPATCH static void fdl_coldev_##SFX(const char *base, const fdl_dims *rows,           \
                                          ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t w,          \
                                          const T *mu, ptrdiff_t mstep, int group, T *sq,   \
                                          T *sd, T *FDL_RESTRICT aq, T *FDL_RESTRICT ad)    \
{                                                                                           \
    fdl_cursor cur;                                                                         \
    fdl_counter cq = {0, 0}, cd = {0, 0};                                                   \
    fdl_cursor_set(rows, &cur, r0);                                                         \
    ptrdiff_t r = r0;                                                                       \
    while (r < r1) {                                                                        \
        ptrdiff_t b1 = r + FDL_COL_BLOCK < r1 ? r + FDL_COL_BLOCK : r1;                     \
        for (ptrdiff_t j = 0; j < w; ++j) { aq[j] = (T)0; ad[j] = (T)0; }                   \
        for (; group == 4 && r + 4 <= b1; r += 4) {                                         \
            const T *p0 = (const T *)(base + cur.off); fdl_cursor_next(rows, &cur);         \
            const T *p1 = (const T *)(base + cur.off); fdl_cursor_next(rows, &cur);         \
            const T *p2 = (const T *)(base + cur.off); fdl_cursor_next(rows, &cur);         \
            const T *p3 = (const T *)(base + cur.off); fdl_cursor_next(rows, &cur);         \
            ptrdiff_t head = fdl_head_##SFX(p0, w);                                         \
            if (mstep) {                                                                    \
                fdl_coldev4_##SFX(aq, ad, p0, p1, p2, p3, mu, head);                        \
                fdl_coldev4_##SFX(aq + head, ad + head, p0 + head, p1 + head, p2 + head,    \
                                  p3 + head, mu + head, w - head);                          \
            } else {                                                                        \
                fdl_coldev4s_##SFX(aq, ad, p0, p1, p2, p3, mu[0], head);                    \
                fdl_coldev4s_##SFX(aq + head, ad + head, p0 + head, p1 + head, p2 + head,   \
                                   p3 + head, mu[0], w - head);                             \
            }                                                                               \
        }                                                                                   \
        for (; r < b1; ++r) {                                                               \
            const T *p0 = (const T *)(base + cur.off);                                      \
            ptrdiff_t head = fdl_head_##SFX(p0, w);                                         \
            if (mstep) {                                                                    \
                fdl_coldev1_##SFX(aq, ad, p0, mu, head);                                    \
                fdl_coldev1_##SFX(aq + head, ad + head, p0 + head, mu + head, w - head);    \
            } else {                                                                        \
                fdl_coldev1s_##SFX(aq, ad, p0, mu[0], head);                                \
                fdl_coldev1s_##SFX(aq + head, ad + head, p0 + head, mu[0], w - head);       \
            }                                                                               \
            fdl_cursor_next(rows, &cur);                                                    \
        }                                                                                   \
        fdl_counter_push_##SFX(sq, aq, w, &cq);                                             \
        fdl_counter_push_##SFX(sd, ad, w, &cd);                                             \
    }                                                                                       \
    fdl_counter_fold_##SFX(sq, w, &cq);                                                     \
    fdl_counter_fold_##SFX(sd, w, &cd);                                                     \
}                                                                                           \
/* Merge chunk results (partials[k * ld], k < nchunks, w columns each) into slots[0, w). */ \
static inline void fdl_colcombine_##SFX(const T *partials, ptrdiff_t nchunks, ptrdiff_t ld, \
                                        ptrdiff_t w, T *slots)                              \
{                                                                                           \
    fdl_counter c = {0, 0};                                                                 \
    for (ptrdiff_t k = 0; k < nchunks; ++k) {                                               \
        memcpy(fdl_counter_top_##SFX(slots, w, &c), partials + k * ld, sizeof(T) * (size_t)w); \
        fdl_counter_commit_##SFX(slots, w, &c);                                             \
    }                                                                                       \
    fdl_counter_fold_##SFX(slots, w, &c);                                                   \
}                                                                                           \
/* dst[j * stride] = src[j] / div (div 1: a copy) */                                        \
static inline void fdl_store_##SFX(const T *src, ptrdiff_t n, char *dst, ptrdiff_t stride,  \
                                   double div)                                              \
{                                                                                           \
    if (div == 1.0) {                                                                       \
        if (stride == (ptrdiff_t)sizeof(T)) {                                               \
            memcpy(dst, src, sizeof(T) * (size_t)n);                                        \
        } else {                                                                            \
            for (ptrdiff_t j = 0; j < n; ++j) *(T *)(dst + j * stride) = src[j];            \
        }                                                                                   \
    } else {                                                                                \
        for (ptrdiff_t j = 0; j < n; ++j)                                                   \
            *(T *)(dst + j * stride) = (T)((double)src[j] / div);                           \
    }                                                                                       \
}

FDL_DEFINE_SEGMENT(float, f32)
FDL_DEFINE_SEGMENT(double, f64)
FDL_DEFINE_COLUMNS(float, f32)
FDL_DEFINE_COLUMNS(double, f64)

#endif
