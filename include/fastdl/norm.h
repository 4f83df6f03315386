/*
 * Inner loops of batch_norm and layer_norm (_norm.pyx).
 *
 * Statistics. Moments are taken over fixed blocks of FDL_NB_BLOCK elements (or FDL_NB_ROWS
 * rows): within a block, a sum in two 64-byte vectors of the input type, then the corrected
 * two-pass deviation sum (Chan, Golub and LeVeque) from L1; blocks are merged in double, in
 * order, by Chan's update. The second read of a block hits L1, so x leaves memory once for its
 * statistics. Every lane adds at most FDL_NB_BLOCK / 32 values naively (16 in float32), so the
 * float32 moments stay accurate without widening every element to double; the tree depends
 * only on the length, never on the thread count or the SIMD level (explicit vectors: GCC
 * turned the plain 16-lane loops with two accumulators into scalar adds, 2.7 cycles per
 * element instead of ~0.4).
 *
 * Layouts. A batch-norm input is seen as (N, C, S) with S = H*W:
 *   planes: each (n, c) plane is contiguous (NCHW, or (N, C) in Fortran order seen as (1, C, N));
 *   rows:   channels are contiguous, rows are the N*S pairs (n, s) (an (N, C) C array, NHWC).
 */
#ifndef FASTDL_NORM_H
#define FASTDL_NORM_H

#include <math.h>
#include <stddef.h>
#include <string.h>
#include "config.h"
#include "reduce.h"   /* fdl_vec_f32 / fdl_vec_f64: 64-byte vectors of the lane kernels */

#define FDL_NB_BLOCK 1024     /* elements per statistics block of a plane or a row (4 KiB f32) */
#define FDL_NB_ROWS 16        /* rows per column-sum block of layer_norm_backward */

/* Rows per statistics block of the batch-norm rows layout: about 4096 elements (the block is
 * read twice, from L1/L2), 16 to 256 rows, a multiple of 4; a function of C alone. With 16
 * rows of C = 128 (NHWC), the per-block merge in double cost about a third of the pass. */
static inline ptrdiff_t fdl_nb_rows_block(ptrdiff_t C)
{
    ptrdiff_t rb = C > 0 ? 4096 / C : 256;
    rb = rb < 16 ? 16 : rb > 256 ? 256 : rb;
    return rb & ~(ptrdiff_t)3;
}

/* Chan's merge of (nb, mb, qb) into (n, m, q): count, mean, sum of squared deviations. */
FDL_INLINE void fdl_moments_merge(double *n, double *m, double *q, double nb, double mb,
                                     double qb)
{
    if (nb == 0.0) return;
    double nt = *n + nb, d = mb - *m;
    *m += d * (nb / nt);
    *q += qb + d * d * (*n * nb / nt);
    *n = nt;
}

/* The fixed lane order of a 16-lane fold. */
/* Row r = (n, s) of the rows layout: n = r / S, s = r % S, at byte strides sn, ss (dsn, dss
 * for dy). */
#define FDL_NB_ROW(base, r) ((const void *)((base) + ((r) / S) * sn + ((r) % S) * ss))
#define FDL_NB_DROW(base, r) ((const void *)((base) + ((r) / S) * dsn + ((r) % S) * dss))

/* Chan's merge of per-column partials (mean mb, deviation sum qb, nb rows each column) into
 * the running (mean, m2) of n rows: the weights are the same for every column. */
static inline void fdl_nb_merge_cols(double *FDL_RESTRICT mean, double *FDL_RESTRICT m2,
                                     const double *FDL_RESTRICT mb,
                                     const double *FDL_RESTRICT qb, ptrdiff_t C, double n,
                                     double nb)
{
    if (nb == 0.0) return;
    double nt = n + nb, w1 = nb / nt, w2 = n * nb / nt;
    for (ptrdiff_t j = 0; j < C; ++j) {
        double d = mb[j] - mean[j];
        mean[j] += d * w1;
        m2[j] += qb[j] + d * d * w2;
    }
}

#define FDL_DEFINE_NORM(T, SFX)                                                               \
/* Fold the lanes of a vector by a halving tree (a fixed order). */                           \
FDL_INLINE double fdl_nb_fold_##SFX(const fdl_vec_##SFX *v)                                   \
{                                                                                             \
    enum { L = 64 / sizeof(T) };                                                              \
    T t[L];                                                                                   \
    memcpy(t, v, sizeof t);                                                                  \
    for (int w = L / 2; w >= 1; w >>= 1)                                                      \
        for (int l = 0; l < w; ++l) t[l] += t[l + w];                                         \
    return (double)t[0];                                                                      \
}                                                                                             \
/* The last n - i (< L) elements as a vector, the rest of its lanes `pad`. */                \
FDL_INLINE void fdl_nb_tail_##SFX(const T *x, ptrdiff_t i, ptrdiff_t n, T pad,               \
                                  fdl_vec_##SFX *v)                                           \
{                                                                                             \
    enum { L = 64 / sizeof(T) };                                                              \
    T t[L];                                                                                   \
    for (int l = 0; l < L; ++l) t[l] = i + l < n ? x[i + l] : pad;                            \
    memcpy(v, t, sizeof t);                                                                   \
}                                                                                             \
/* Over a block (n <= FDL_NB_BLOCK): sum of u into *s1 and of u*(x - c) into *s2, where      \
 * u = y, or g*y when g is given (layer norm's gamma, multiplied on the fly: no pass to      \
 * store it). Two accumulator vectors (even and odd vectors of the block), merged and folded \
 * in a fixed order: the bits depend only on n. */                                           \
FDL_INLINE void fdl_nb_sums_##SFX(const T *FDL_RESTRICT x, const T *FDL_RESTRICT y,          \
                                  const T *FDL_RESTRICT g, ptrdiff_t n, T c, double *s1,      \
                                  double *s2)                                                 \
{                                                                                             \
    enum { L = 64 / sizeof(T) };                                                              \
    typedef fdl_vec_##SFX V;                                                                  \
    V a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0};                                                 \
    ptrdiff_t i = 0;                                                                          \
    if (g) {                                                                                  \
        for (; i + 2 * L <= n; i += 2 * L) {                                                  \
            V y0 = *(const V *)(y + i) * *(const V *)(g + i);                                 \
            V y1 = *(const V *)(y + i + L) * *(const V *)(g + i + L);                         \
            a0 += y0; a1 += y1;                                                               \
            b0 += y0 * (*(const V *)(x + i) - c);                                             \
            b1 += y1 * (*(const V *)(x + i + L) - c);                                         \
        }                                                                                     \
    } else {                                                                                  \
        for (; i + 2 * L <= n; i += 2 * L) {                                                  \
            V y0 = *(const V *)(y + i), y1 = *(const V *)(y + i + L);                         \
            a0 += y0; a1 += y1;                                                               \
            b0 += y0 * (*(const V *)(x + i) - c);                                             \
            b1 += y1 * (*(const V *)(x + i + L) - c);                                         \
        }                                                                                     \
    }                                                                                         \
    if (i + L <= n) {                                                                         \
        V y0 = *(const V *)(y + i);                                                           \
        if (g) y0 *= *(const V *)(g + i);                                                     \
        a0 += y0; b0 += y0 * (*(const V *)(x + i) - c);                                       \
        i += L;                                                                               \
    }                                                                                         \
    if (i < n) {                                                                              \
        V y1, x1;                                                                             \
        fdl_nb_tail_##SFX(y, i, n, (T)0, &y1);                                                \
        if (g) { V g1; fdl_nb_tail_##SFX(g, i, n, (T)0, &g1); y1 *= g1; }                     \
        fdl_nb_tail_##SFX(x, i, n, c, &x1);                                                   \
        a1 += y1; b1 += y1 * (x1 - c);                                                        \
    }                                                                                         \
    a0 += a1; b0 += b1;                                                                       \
    *s1 += fdl_nb_fold_##SFX(&a0);                                                            \
    *s2 += fdl_nb_fold_##SFX(&b0);                                                            \
}                                                                                             \
/* moments of one block (n <= FDL_NB_BLOCK): mean, then the corrected deviation sum; four   \
 * accumulator vectors per sum (a chain of dependent adds per vector limits the loop) */     \
FDL_INLINE void fdl_nb_block_##SFX(const T *FDL_RESTRICT x, ptrdiff_t n, double *mean,       \
                                   double *m2)                                                \
{                                                                                             \
    enum { L = 64 / sizeof(T) };                                                              \
    typedef fdl_vec_##SFX V;                                                                  \
    V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                                 \
    ptrdiff_t i = 0;                                                                          \
    for (; i + 4 * L <= n; i += 4 * L) {                                                      \
        a0 += *(const V *)(x + i); a1 += *(const V *)(x + i + L);                             \
        a2 += *(const V *)(x + i + 2 * L); a3 += *(const V *)(x + i + 3 * L);                 \
    }                                                                                         \
    for (; i + L <= n; i += L) a0 += *(const V *)(x + i);                                     \
    if (i < n) { V t; fdl_nb_tail_##SFX(x, i, n, (T)0, &t); a1 += t; }                        \
    a0 += a1; a2 += a3; a0 += a2;                                                             \
    T mu = (T)(fdl_nb_fold_##SFX(&a0) / (double)n);                                           \
    V q0 = {0}, q1 = {0}, q2 = {0}, q3 = {0}, e0 = {0}, e1 = {0}, e2 = {0}, e3 = {0};         \
    for (i = 0; i + 4 * L <= n; i += 4 * L) {                                                 \
        V d0 = *(const V *)(x + i) - mu, d1 = *(const V *)(x + i + L) - mu;                   \
        V d2 = *(const V *)(x + i + 2 * L) - mu, d3 = *(const V *)(x + i + 3 * L) - mu;       \
        q0 += d0 * d0; q1 += d1 * d1; q2 += d2 * d2; q3 += d3 * d3;                           \
        e0 += d0; e1 += d1; e2 += d2; e3 += d3;                                               \
    }                                                                                         \
    for (; i + L <= n; i += L) {                                                              \
        V d0 = *(const V *)(x + i) - mu;                                                      \
        q0 += d0 * d0; e0 += d0;                                                              \
    }                                                                                         \
    if (i < n) {                                                                              \
        V d1;                                                                                 \
        fdl_nb_tail_##SFX(x, i, n, mu, &d1);                                                  \
        d1 -= mu;                                                                             \
        q1 += d1 * d1; e1 += d1;                                                              \
    }                                                                                         \
    q0 += q1; q2 += q3; q0 += q2; e0 += e1; e2 += e3; e0 += e2;                               \
    double q = fdl_nb_fold_##SFX(&q0), e = fdl_nb_fold_##SFX(&e0);                            \
    /* the mean of the block is mu + e/n; the deviation sum about it is q - e^2/n */         \
    *mean = (double)mu + e / (double)n;                                                       \
    *m2 = q - e * e / (double)n;                                                              \
    if (*m2 < 0.0) *m2 = 0.0;                                                                 \
}                                                                                             \
/* (count, mean, m2) of a contiguous run, merged block by block in order */                   \
FDL_DISPATCH static void fdl_nb_moments_##SFX(const T *x, ptrdiff_t n, double *out)           \
{                                                                                             \
    double cn = 0.0, m = 0.0, q = 0.0, bm, bq;                                                \
    for (ptrdiff_t i = 0; i < n; i += FDL_NB_BLOCK) {                                         \
        ptrdiff_t len = n - i < FDL_NB_BLOCK ? n - i : FDL_NB_BLOCK;                          \
        fdl_nb_block_##SFX(x + i, len, &bm, &bq);                                             \
        fdl_moments_merge(&cn, &m, &q, (double)len, bm, bq);                                  \
    }                                                                                         \
    out[0] = cn; out[1] = m; out[2] = q;                                                      \
}                                                                                             \
/* (sum dy, sum dy*(x - c)) of a contiguous run, block sums added in order */                \
FDL_DISPATCH static void fdl_nb_dsums_##SFX(const T *x, const T *dy, const T *g, ptrdiff_t n,  \
                                            T c, double *out)                                 \
{                                                                                             \
    double s1 = 0.0, s2 = 0.0;                                                                \
    for (ptrdiff_t i = 0; i < n; i += FDL_NB_BLOCK) {                                         \
        ptrdiff_t len = n - i < FDL_NB_BLOCK ? n - i : FDL_NB_BLOCK;                          \
        fdl_nb_sums_##SFX(x + i, dy + i, g ? g + i : NULL, len, c, &s1, &s2);                                   \
    }                                                                                         \
    out[0] = s1; out[1] = s2;                                                                 \
}                                                                                             \
/* Small planes (S < FDL_NB_BLOCK / 2: the digits CNN's 4x4 and 8x8): np planes of one       \
 * channel (S elements each, byte stride sn) taken as one statistics block of np*S <=        \
 * FDL_NB_BLOCK elements, the arithmetic of fdl_nb_block; a call and two folds per plane     \
 * cost more than its 16 elements. */                                                        \
FDL_DISPATCH static void fdl_nb_planes_moments_##SFX(const char *x, ptrdiff_t np,           \
                                                     ptrdiff_t sn, ptrdiff_t S, double *out)  \
{                                                                                             \
    enum { L = 64 / sizeof(T) };                                                              \
    typedef fdl_vec_##SFX V;                                                                  \
    V a0 = {0}, a1 = {0};                                                                     \
    ptrdiff_t i, p;                                                                           \
    for (p = 0; p < np; ++p) {                                                                \
        const T *xp = (const T *)(x + p * sn);                                                \
        for (i = 0; i + L <= S; i += L) a0 += *(const V *)(xp + i);                           \
        if (i < S) { V t; fdl_nb_tail_##SFX(xp, i, S, (T)0, &t); a1 += t; }                   \
    }                                                                                         \
    a0 += a1;                                                                                 \
    const double n = (double)(np * S);                                                        \
    T mu = (T)(fdl_nb_fold_##SFX(&a0) / n);                                                   \
    V q0 = {0}, q1 = {0}, e0 = {0}, e1 = {0};                                                 \
    for (p = 0; p < np; ++p) {                                                                \
        const T *xp = (const T *)(x + p * sn);                                                \
        for (i = 0; i + L <= S; i += L) {                                                     \
            V d0 = *(const V *)(xp + i) - mu;                                                 \
            q0 += d0 * d0; e0 += d0;                                                          \
        }                                                                                     \
        if (i < S) {                                                                          \
            V d1;                                                                             \
            fdl_nb_tail_##SFX(xp, i, S, mu, &d1);                                             \
            d1 -= mu;                                                                         \
            q1 += d1 * d1; e1 += d1;                                                          \
        }                                                                                     \
    }                                                                                         \
    q0 += q1; e0 += e1;                                                                       \
    double q = fdl_nb_fold_##SFX(&q0), e = fdl_nb_fold_##SFX(&e0);                            \
    out[0] = n;                                                                               \
    out[1] = (double)mu + e / n;                                                              \
    out[2] = q - e * e / n;                                                                   \
    if (out[2] < 0.0) out[2] = 0.0;                                                           \
}                                                                                             \
/* (sum dy, sum dy*(x - c)) of np small planes of one channel, as one block */               \
FDL_DISPATCH static void fdl_nb_planes_dsums_##SFX(const char *x, const char *dy,            \
        ptrdiff_t np, ptrdiff_t sxn, ptrdiff_t sdn, ptrdiff_t S, T c, double *out)            \
{                                                                                             \
    enum { L = 64 / sizeof(T) };                                                              \
    typedef fdl_vec_##SFX V;                                                                  \
    V a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0};                                                 \
    for (ptrdiff_t p = 0; p < np; ++p) {                                                      \
        const T *xp = (const T *)(x + p * sxn), *yp = (const T *)(dy + p * sdn);              \
        ptrdiff_t i = 0;                                                                      \
        for (; i + L <= S; i += L) {                                                          \
            V y0 = *(const V *)(yp + i);                                                      \
            a0 += y0; b0 += y0 * (*(const V *)(xp + i) - c);                                  \
        }                                                                                     \
        if (i < S) {                                                                          \
            V y1, x1;                                                                         \
            fdl_nb_tail_##SFX(yp, i, S, (T)0, &y1);                                           \
            fdl_nb_tail_##SFX(xp, i, S, c, &x1);                                              \
            a1 += y1; b1 += y1 * (x1 - c);                                                    \
        }                                                                                     \
    }                                                                                         \
    a0 += a1; b0 += b1;                                                                       \
    out[0] = fdl_nb_fold_##SFX(&a0);                                                          \
    out[1] = fdl_nb_fold_##SFX(&b0);                                                          \
}                                                                                             \
/* y = (x - m) * a + b over a contiguous run */                                               \
FDL_DISPATCH static void fdl_nb_affine_##SFX(const T *FDL_RESTRICT x, T *FDL_RESTRICT y,      \
                                             ptrdiff_t n, T m, T a, T b)                      \
{                                                                                             \
    for (ptrdiff_t i = 0; i < n; ++i) y[i] = (x[i] - m) * a + b;                              \
}                                                                                             \
/* dx = k*dy + p*(x - m) + q over a contiguous run */                                         \
FDL_DISPATCH static void fdl_nb_dx_##SFX(const T *FDL_RESTRICT x, const T *FDL_RESTRICT dy,   \
                                         T *FDL_RESTRICT dx, ptrdiff_t n, T m, T k, T p, T q) \
{                                                                                             \
    for (ptrdiff_t i = 0; i < n; ++i) dx[i] = k * dy[i] + (p * (x[i] - m) + q);              \
}                                                                                             \
/* Column helpers of the rows layout (restrict parameters, so each loop vectorises). */      \
FDL_INLINE void fdl_nb_colacc_##SFX(T *FDL_RESTRICT acc, const T *FDL_RESTRICT row,           \
                                    ptrdiff_t C)                                              \
{                                                                                             \
    for (ptrdiff_t j = 0; j < C; ++j) acc[j] += row[j];                                       \
}                                                                                             \
/* four rows at once: a quarter of the accumulator loads and stores (L1 stores bounded the  \
 * one-row loop) */                                                                           \
FDL_INLINE void fdl_nb_colacc4_##SFX(T *FDL_RESTRICT acc, const T *FDL_RESTRICT r0,           \
                                     const T *FDL_RESTRICT r1, const T *FDL_RESTRICT r2,      \
                                     const T *FDL_RESTRICT r3, ptrdiff_t C)                   \
{                                                                                             \
    for (ptrdiff_t j = 0; j < C; ++j) acc[j] += (r0[j] + r1[j]) + (r2[j] + r3[j]);            \
}                                                                                             \
FDL_INLINE void fdl_nb_coldev4_##SFX(T *FDL_RESTRICT q, T *FDL_RESTRICT e,                    \
                                     const T *FDL_RESTRICT r0, const T *FDL_RESTRICT r1,      \
                                     const T *FDL_RESTRICT r2, const T *FDL_RESTRICT r3,      \
                                     const T *FDL_RESTRICT mu, ptrdiff_t C)                   \
{                                                                                             \
    for (ptrdiff_t j = 0; j < C; ++j) {                                                       \
        T d0 = r0[j] - mu[j], d1 = r1[j] - mu[j], d2 = r2[j] - mu[j], d3 = r3[j] - mu[j];     \
        q[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);                                    \
        e[j] += (d0 + d1) + (d2 + d3);                                                        \
    }                                                                                         \
}                                                                                             \
FDL_INLINE void fdl_nb_coldsum4_##SFX(T *FDL_RESTRICT a, T *FDL_RESTRICT b,                   \
                                      const T *FDL_RESTRICT g0, const T *FDL_RESTRICT g1,     \
                                      const T *FDL_RESTRICT g2, const T *FDL_RESTRICT g3,     \
                                      const T *FDL_RESTRICT x0, const T *FDL_RESTRICT x1,     \
                                      const T *FDL_RESTRICT x2, const T *FDL_RESTRICT x3,     \
                                      const T *FDL_RESTRICT m, ptrdiff_t C)                   \
{                                                                                             \
    for (ptrdiff_t j = 0; j < C; ++j) {                                                       \
        a[j] += (g0[j] + g1[j]) + (g2[j] + g3[j]);                                            \
        b[j] += (g0[j] * (x0[j] - m[j]) + g1[j] * (x1[j] - m[j]))                             \
              + (g2[j] * (x2[j] - m[j]) + g3[j] * (x3[j] - m[j]));                            \
    }                                                                                         \
}                                                                                             \
FDL_INLINE void fdl_nb_coldev_##SFX(T *FDL_RESTRICT q, T *FDL_RESTRICT e,                     \
                                    const T *FDL_RESTRICT row, const T *FDL_RESTRICT mu,      \
                                    ptrdiff_t C)                                              \
{                                                                                             \
    for (ptrdiff_t j = 0; j < C; ++j) { T d = row[j] - mu[j]; q[j] += d * d; e[j] += d; }     \
}                                                                                             \
/* Chan's merge of a block (mean mu + e/nb, deviation sum q - e^2/nb) into the running      \
 * (mean, m2) of n rows, for every column at once (the weights are the same for all). */    \
FDL_INLINE void fdl_nb_colmerge_##SFX(double *FDL_RESTRICT mean, double *FDL_RESTRICT m2,     \
                                      const T *FDL_RESTRICT mu, const T *FDL_RESTRICT q,      \
                                      const T *FDL_RESTRICT e, ptrdiff_t C, double n,         \
                                      double nb)                                              \
{                                                                                             \
    double nt = n + nb, w1 = nb / nt, w2 = n * nb / nt, inb = 1.0 / nb;                       \
    for (ptrdiff_t j = 0; j < C; ++j) {                                                       \
        double ej = (double)e[j];                                                             \
        double mb = (double)mu[j] + ej * inb;                                                 \
        double qb = (double)q[j] - ej * ej * inb;                                             \
        qb = qb < 0.0 ? 0.0 : qb;                                                             \
        double d = mb - mean[j];                                                              \
        mean[j] += d * w1;                                                                    \
        m2[j] += qb + d * d * w2;                                                             \
    }                                                                                         \
}                                                                                             \
FDL_INLINE void fdl_nb_coldsum_##SFX(T *FDL_RESTRICT a, T *FDL_RESTRICT b,                    \
                                     const T *FDL_RESTRICT g, const T *FDL_RESTRICT row,      \
                                     const T *FDL_RESTRICT m, ptrdiff_t C)                    \
{                                                                                             \
    for (ptrdiff_t j = 0; j < C; ++j) { a[j] += g[j]; b[j] += g[j] * (row[j] - m[j]); }       \
}                                                                                             \
FDL_INLINE void fdl_nb_colflush_##SFX(double *FDL_RESTRICT oa, double *FDL_RESTRICT ob,       \
                                      T *FDL_RESTRICT a, T *FDL_RESTRICT b, ptrdiff_t C)      \
{                                                                                             \
    for (ptrdiff_t j = 0; j < C; ++j) { oa[j] += (double)a[j]; ob[j] += (double)b[j]; a[j] = 0; b[j] = 0; } \
}                                                                                             \
/* Rows layout: rows [r0, r1) of C contiguous channels at x + (r/S)*sn + (r%S)*ss (bytes).  \
 * Moments per channel, planar: out[0, C) counts, out[C, 2C) means, out[2C, 3C) deviation   \
 * sums (double); blocks of fdl_nb_rows_block(C) rows (mean, then deviations, from L1/L2),  \
 * merged in order. scratch: 3*C of T. */                                                     \
FDL_DISPATCH static void fdl_nb_rows_moments_##SFX(const char *x, ptrdiff_t S, ptrdiff_t sn,  \
                                                   ptrdiff_t ss, ptrdiff_t r0, ptrdiff_t r1,  \
                                                   ptrdiff_t C, double *out, T *scratch)      \
{                                                                                             \
    T *acc = scratch, *q = scratch + C, *e = scratch + 2 * C;                                 \
    double *mean = out + C, *m2 = out + 2 * C, n = 0.0;                                       \
    for (ptrdiff_t j = 0; j < 3 * C; ++j) out[j] = 0.0;                                       \
    const ptrdiff_t rb = fdl_nb_rows_block(C);                                                \
    for (ptrdiff_t b0 = r0; b0 < r1; b0 += rb) {                                              \
        ptrdiff_t b1 = b0 + rb < r1 ? b0 + rb : r1;                                           \
        T inv = (T)1 / (T)(b1 - b0);                                                          \
        for (ptrdiff_t j = 0; j < C; ++j) { acc[j] = 0; q[j] = 0; e[j] = 0; }                 \
        ptrdiff_t r = b0;                                                                     \
        for (; r + 4 <= b1; r += 4)                                                           \
            fdl_nb_colacc4_##SFX(acc, FDL_NB_ROW(x, r), FDL_NB_ROW(x, r + 1),                 \
                                 FDL_NB_ROW(x, r + 2), FDL_NB_ROW(x, r + 3), C);              \
        for (; r < b1; ++r) fdl_nb_colacc_##SFX(acc, FDL_NB_ROW(x, r), C);                    \
        for (ptrdiff_t j = 0; j < C; ++j) acc[j] *= inv;                                      \
        for (r = b0; r + 4 <= b1; r += 4)                                                     \
            fdl_nb_coldev4_##SFX(q, e, FDL_NB_ROW(x, r), FDL_NB_ROW(x, r + 1),                \
                                 FDL_NB_ROW(x, r + 2), FDL_NB_ROW(x, r + 3), acc, C);         \
        for (; r < b1; ++r) fdl_nb_coldev_##SFX(q, e, FDL_NB_ROW(x, r), acc, C);              \
        fdl_nb_colmerge_##SFX(mean, m2, acc, q, e, C, n, (double)(b1 - b0));                  \
        n += (double)(b1 - b0);                                                               \
    }                                                                                         \
    for (ptrdiff_t j = 0; j < C; ++j) out[j] = n;                                             \
}                                                                                             \
/* Rows layout, backward sums, planar: out[j] = sum dy, out[C + j] = sum dy*(x - m[j]);     \
 * blocks of fdl_nb_rows_block(C) rows summed in T, added to double in order. scratch: 2*C  \
 * of T. */                                                                                   \
FDL_DISPATCH static void fdl_nb_rows_dsums_##SFX(const char *x, const char *dy, ptrdiff_t S,  \
                                                 ptrdiff_t sn, ptrdiff_t ss, ptrdiff_t dsn,   \
                                                 ptrdiff_t dss, ptrdiff_t r0, ptrdiff_t r1,   \
                                                 ptrdiff_t C, const T *m, double *out,        \
                                                 T *scratch)                                  \
{                                                                                             \
    T *a = scratch, *b = scratch + C;                                                         \
    for (ptrdiff_t j = 0; j < 2 * C; ++j) out[j] = 0.0;                                       \
    for (ptrdiff_t j = 0; j < C; ++j) { a[j] = 0; b[j] = 0; }                                 \
    const ptrdiff_t rb = fdl_nb_rows_block(C);                                                \
    for (ptrdiff_t b0 = r0; b0 < r1; b0 += rb) {                                              \
        ptrdiff_t b1 = b0 + rb < r1 ? b0 + rb : r1;                                           \
        ptrdiff_t r = b0;                                                                     \
        for (; r + 4 <= b1; r += 4)                                                           \
            fdl_nb_coldsum4_##SFX(a, b, FDL_NB_DROW(dy, r), FDL_NB_DROW(dy, r + 1),           \
                                  FDL_NB_DROW(dy, r + 2), FDL_NB_DROW(dy, r + 3),             \
                                  FDL_NB_ROW(x, r), FDL_NB_ROW(x, r + 1),                     \
                                  FDL_NB_ROW(x, r + 2), FDL_NB_ROW(x, r + 3), m, C);          \
        for (; r < b1; ++r)                                                                   \
            fdl_nb_coldsum_##SFX(a, b, FDL_NB_DROW(dy, r), FDL_NB_ROW(x, r), m, C);           \
        fdl_nb_colflush_##SFX(out, out + C, a, b, C);                                         \
    }                                                                                         \
}                                                                                             \
/* y[j] = (x[j] - m[j]) * a[j] + b[j] over one row of C channels */                           \
FDL_DISPATCH static void fdl_nb_row_affine_##SFX(const T *FDL_RESTRICT x, T *FDL_RESTRICT y,  \
                                                 ptrdiff_t C, const T *FDL_RESTRICT m,        \
                                                 const T *FDL_RESTRICT a,                     \
                                                 const T *FDL_RESTRICT b)                     \
{                                                                                             \
    for (ptrdiff_t j = 0; j < C; ++j) y[j] = (x[j] - m[j]) * a[j] + b[j];                     \
}                                                                                             \
FDL_DISPATCH static void fdl_nb_row_dx_##SFX(const T *FDL_RESTRICT x, const T *FDL_RESTRICT dy,\
                                             T *FDL_RESTRICT dx, ptrdiff_t C,                 \
                                             const T *FDL_RESTRICT m, const T *FDL_RESTRICT k,\
                                             const T *FDL_RESTRICT p, const T *FDL_RESTRICT q)\
{                                                                                             \
    for (ptrdiff_t j = 0; j < C; ++j) dx[j] = k[j] * dy[j] + (p[j] * (x[j] - m[j]) + q[j]);   \
}                                                                                             \
/* Layer norm of one contiguous row of D: mean, inv_std out; y = (x - mean)*inv*g + b        \
 * (g, b may be NULL). */                                                                     \
FDL_DISPATCH static void fdl_ln_row_##SFX(const T *FDL_RESTRICT x, T *FDL_RESTRICT y,         \
                                          ptrdiff_t D, const T *FDL_RESTRICT g,               \
                                          const T *FDL_RESTRICT b, double eps,                \
                                          T *mean_out, T *inv_out)                            \
{                                                                                             \
    double mom[3];                                                                            \
    fdl_nb_moments_##SFX(x, D, mom);                                                          \
    T mu = (T)mom[1];                                                                         \
    T inv = (T)(1.0 / sqrt(mom[2] / (double)D + eps));                                        \
    *mean_out = mu; *inv_out = inv;                                                           \
    if (g && b) {                                                                             \
        for (ptrdiff_t j = 0; j < D; ++j) y[j] = ((x[j] - mu) * inv) * g[j] + b[j];           \
    } else if (g) {                                                                           \
        for (ptrdiff_t j = 0; j < D; ++j) y[j] = ((x[j] - mu) * inv) * g[j];                  \
    } else if (b) {                                                                           \
        for (ptrdiff_t j = 0; j < D; ++j) y[j] = (x[j] - mu) * inv + b[j];                    \
    } else {                                                                                  \
        for (ptrdiff_t j = 0; j < D; ++j) y[j] = (x[j] - mu) * inv;                           \
    }                                                                                         \
}                                                                                             \
/* dx of one row, and the row's dy*xhat and dy added to the column accumulators (restrict  \
 * parameters: written inline with six pointers GCC kept the loop scalar, 3x slower) */      \
FDL_INLINE void fdl_ln_dx_cols_##SFX(const T *FDL_RESTRICT xr, const T *FDL_RESTRICT dr,     \
                                     const T *FDL_RESTRICT g, T *FDL_RESTRICT out,           \
                                     T *FDL_RESTRICT cg, T *FDL_RESTRICT cb, ptrdiff_t D,    \
                                     T mu, T inv, T c1, T c2)                                \
{                                                                                             \
    for (ptrdiff_t j = 0; j < D; ++j) {                                                       \
        T d = xr[j] - mu;                                                                     \
        out[j] = inv * ((g[j] * dr[j] - c1) - d * c2);                                        \
        cg[j] += dr[j] * (d * inv);                                                           \
        cb[j] += dr[j];                                                                       \
    }                                                                                         \
}                                                                                             \
/* Layer-norm backward of rows [r0, r1) (contiguous rows of D): dx, and (g given) the        \
 * column partials dgamma = sum dy*xhat, dbeta = sum dy of these rows into part[0, D) and    \
 * part[D, 2D) (double). Columns are summed in T over blocks of FDL_NB_ROWS rows, blocks     \
 * added to double in order. scratch: 2*D of T. */                                            \
FDL_DISPATCH static void fdl_ln_rows_bwd_##SFX(const T *x, const T *dy, T *dx, ptrdiff_t r0,  \
                                               ptrdiff_t r1, ptrdiff_t D, const T *g,         \
                                               const T *mean, const T *inv_std, double *part, \
                                               T *scratch)                                    \
{                                                                                             \
    T *FDL_RESTRICT cg = scratch, *FDL_RESTRICT cb = scratch + D;                             \
    if (g) {                                                                                  \
        for (ptrdiff_t j = 0; j < 2 * D; ++j) part[j] = 0.0;                                  \
        for (ptrdiff_t j = 0; j < D; ++j) { cg[j] = 0; cb[j] = 0; }                           \
    }                                                                                         \
    for (ptrdiff_t r = r0; r < r1; ++r) {                                                     \
        const T *FDL_RESTRICT xr = x + r * D, *FDL_RESTRICT dr = dy + r * D;                  \
        T *FDL_RESTRICT out = dx + r * D;                                                     \
        T mu = mean[r], inv = inv_std[r];                                                     \
        double s[2];                                                                          \
        fdl_nb_dsums_##SFX(xr, dr, g, D, mu, s);                                              \
        /* dx = inv * (u - mean(u) - xhat * mean(u * xhat)), xhat = (x - mu) * inv */        \
        T c1 = (T)(s[0] / (double)D);                                                         \
        T c2 = (T)(s[1] * (double)inv * (double)inv / (double)D);                             \
        if (g) {                                                                              \
            fdl_ln_dx_cols_##SFX(xr, dr, g, out, cg, cb, D, mu, inv, c1, c2);                   \
            if ((r - r0) % FDL_NB_ROWS == FDL_NB_ROWS - 1 || r == r1 - 1) {                   \
                for (ptrdiff_t j = 0; j < D; ++j) {                                           \
                    part[j] += (double)cg[j]; part[D + j] += (double)cb[j];                   \
                    cg[j] = 0; cb[j] = 0;                                                     \
                }                                                                             \
            }                                                                                 \
        } else {                                                                              \
            for (ptrdiff_t j = 0; j < D; ++j) out[j] = inv * ((dr[j] - c1) - (xr[j] - mu) * c2); \
        }                                                                                     \
    }                                                                                         \
}

FDL_DEFINE_NORM(float, f32)
FDL_DEFINE_NORM(double, f64)

#endif
