/*
 * Inner loops of 2-D pooling (_pool.pyx): one contiguous (H, W) plane in, one contiguous
 * (Ho, Wo) plane out. Windows start at o*s - p and are clipped to the plane; padding never
 * wins a max (it is -inf) and counts as zeros in an average (count_include_pad, as PyTorch).
 *
 * Max: an element replaces the running maximum when it is greater or NaN, scanning the window
 * row by row (PyTorch's rule, so NaN wins and the indices agree with PyTorch's); the index is
 * the flat h*W + w offset within the plane, and starts at the first element of the clipped
 * window (an all -inf window points there). Average: the window sum in the same scan order,
 * times 1/(kh*kw).
 * Measured (Zen 4, one thread, 112x112 planes in cache): the per-window scalar loop with a
 * branch took 0.96 ns per input element for 2x2 with indices and 1.8 for 3x3/s2/p1 (random
 * data: the branch mispredicts); applying each window offset to a whole output row with
 * selects, vectorised across outputs, takes 0.44 and 1.0 (short rows: loop overhead now
 * dominates; the 2x2/s2 kernel without indices takes 0.085).
 */
#ifndef FASTDL_POOL_H
#define FASTDL_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "config.h"
#include "vmath.h"
#include "reduce.h"   /* fdl_vec_f32 / fdl_vec_f64: 64-byte vectors */

/* integer vectors of the same lanes, for masks */
typedef int32_t FDL_POOL_IVEC_f32 __attribute__((vector_size(64), aligned(4), may_alias));
typedef int64_t FDL_POOL_IVEC_f64 __attribute__((vector_size(64), aligned(8), may_alias));

typedef struct {
    ptrdiff_t H, W, Ho, Wo, kh, kw, sh, sw, ph, pw;
} fdl_pool_geom;

/* The clipped window [h0, h1) x [w0, w1) of output (oh, ow). */
FDL_INLINE void fdl_pool_window(const fdl_pool_geom *g, ptrdiff_t oh, ptrdiff_t ow,
                                   ptrdiff_t *h0, ptrdiff_t *h1, ptrdiff_t *w0, ptrdiff_t *w1)
{
    ptrdiff_t hs = oh * g->sh - g->ph, ws = ow * g->sw - g->pw;
    ptrdiff_t he = hs + g->kh, we = ws + g->kw;
    *h0 = hs < 0 ? 0 : hs;
    *w0 = ws < 0 ? 0 : ws;
    *h1 = he > g->H ? g->H : he;
    *w1 = we > g->W ? g->W : we;
}

#define FDL_DEFINE_POOL(T, SFX, SEL)                                                          \
/* Input row h of the plane as seen through horizontal padding: r[pw + w] = x[h][w], pad     \
 * elsewhere. Without horizontal padding, the row itself (no copy). */                        \
FDL_INLINE const T *fdl_pool_row_##SFX(const fdl_pool_geom *g, const T *x, ptrdiff_t h,      \
                                       T *buf, T pad)                                         \
{                                                                                             \
    const T *row = x + h * g->W;                                                              \
    if (g->pw == 0) return row;                                                               \
    for (ptrdiff_t w = 0; w < g->pw; ++w) buf[w] = pad;                                       \
    memcpy(buf + g->pw, row, sizeof(T) * (size_t)g->W);                                       \
    for (ptrdiff_t w = g->pw + g->W; w < g->W + 2 * g->pw + g->kw; ++w) buf[w] = pad;         \
    return buf;                                                                               \
}                                                                                             \
/* One window offset applied to a row of outputs: m (and at, if given) updated in place. */   \
FDL_INLINE void fdl_maxrow_##SFX(const T *FDL_RESTRICT rj, T *FDL_RESTRICT m,                 \
                                 int64_t *FDL_RESTRICT at, int64_t base, ptrdiff_t Wo,        \
                                 ptrdiff_t sw)                                                \
{                                                                                             \
    if (at) {                                                                                 \
        for (ptrdiff_t ow = 0; ow < Wo; ++ow) {                                               \
            T v = rj[ow * sw];                                                                \
            int take = (v > m[ow]) | (v != v);                                                \
            m[ow] = SEL(take, v, m[ow]);                                                      \
            at[ow] = take ? base + (int64_t)(ow * sw) : at[ow];                               \
        }                                                                                     \
    } else {                                                                                  \
        for (ptrdiff_t ow = 0; ow < Wo; ++ow) {                                               \
            T v = rj[ow * sw];                                                                \
            m[ow] = SEL((v > m[ow]) | (v != v), v, m[ow]);                                    \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* Max pooling of one plane, any geometry; idx may be NULL. Output row by output row: the    \
 * window offsets (i, j) in PyTorch's scan order, each applied to the whole row of outputs   \
 * (branch-free selects, vectorised across outputs). Rows outside the plane are skipped (pad \
 * never wins); horizontal padding reads a -inf padded copy of the row. buf: W + 2pw + kw. */ \
FDL_DISPATCH static void fdl_maxpool_plane_##SFX(const fdl_pool_geom *g,                     \
                                                 const T *FDL_RESTRICT x, T *FDL_RESTRICT y,  \
                                                 int64_t *FDL_RESTRICT idx, T *buf)           \
{                                                                                             \
    const ptrdiff_t Wo = g->Wo, sw = g->sw, pw = g->pw, W = g->W;                             \
    for (ptrdiff_t oh = 0; oh < g->Ho; ++oh) {                                                \
        T *m = y + oh * Wo;                                                                   \
        int64_t *at = idx ? idx + oh * Wo : NULL;                                             \
        ptrdiff_t hs = oh * g->sh - g->ph;                                                    \
        ptrdiff_t h0 = hs < 0 ? 0 : hs, h1 = hs + g->kh < g->H ? hs + g->kh : g->H;           \
        for (ptrdiff_t ow = 0; ow < Wo; ++ow) m[ow] = -(T)INFINITY;                           \
        if (at) {                                                                             \
            for (ptrdiff_t ow = 0; ow < Wo; ++ow) {                                           \
                ptrdiff_t ws = ow * sw - pw;                                                  \
                at[ow] = (int64_t)(h0 * W + (ws < 0 ? 0 : ws));                               \
            }                                                                                 \
        }                                                                                     \
        for (ptrdiff_t h = h0; h < h1; ++h) {                                                 \
            const T *r = fdl_pool_row_##SFX(g, x, h, buf, -(T)INFINITY);                      \
            for (ptrdiff_t j = 0; j < g->kw; ++j) {                                           \
                int64_t base = (int64_t)(h * W + j - pw);                                     \
                /* strides 1 and 2 as constants: each gets a loop compiled for its stride     \
                 * (stride-2 loads as two loads and a permute) */                           \
                if (sw == 1) fdl_maxrow_##SFX(r + j, m, at, base, Wo, 1);                     \
                else if (sw == 2) fdl_maxrow_##SFX(r + j, m, at, base, Wo, 2);                \
                else fdl_maxrow_##SFX(r + j, m, at, base, Wo, sw);                            \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* 2x2 stride 2, no padding, no indices: branch-free selects so the row loop vectorises */   \
FDL_DISPATCH static void fdl_maxpool22_plane_##SFX(const fdl_pool_geom *g,                   \
                                                   const T *FDL_RESTRICT x,                   \
                                                   T *FDL_RESTRICT y)                         \
{                                                                                             \
    for (ptrdiff_t oh = 0; oh < g->Ho; ++oh) {                                                \
        const T *r0 = x + 2 * oh * g->W, *r1 = r0 + g->W;                                     \
        T *out = y + oh * g->Wo;                                                              \
        for (ptrdiff_t ow = 0; ow < g->Wo; ++ow) {                                            \
            T m = r0[2 * ow], v = r0[2 * ow + 1];                                             \
            m = SEL((v > m) | (v != v), v, m);                                                \
            v = r1[2 * ow];                                                                   \
            m = SEL((v > m) | (v != v), v, m);                                                \
            v = r1[2 * ow + 1];                                                               \
            m = SEL((v > m) | (v != v), v, m);                                                \
            out[ow] = m;                                                                      \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* 2x2 stride 2, no padding, with indices: the same selects in window order (the first     \
   maximum wins, a NaN wins and the last NaN's index is kept, as the general kernel and     \
   PyTorch do), one output row at a time; no row buffer, no per-offset passes (a plane of  \
   8x8 took 0.2 us through the general kernel, most of it loop overhead). */               \
FDL_DISPATCH static void fdl_maxpool22i_plane_##SFX(const fdl_pool_geom *g,                  \
                                                    const T *FDL_RESTRICT x,                  \
                                                    T *FDL_RESTRICT y,                        \
                                                    int64_t *FDL_RESTRICT idx)                \
{                                                                                             \
    const ptrdiff_t W = g->W;                                                                 \
    for (ptrdiff_t oh = 0; oh < g->Ho; ++oh) {                                                \
        const T *r0 = x + 2 * oh * W, *r1 = r0 + W;                                           \
        T *out = y + oh * g->Wo;                                                              \
        int64_t *at = idx + oh * g->Wo;                                                       \
        const int64_t row = (int64_t)(2 * oh * W);                                            \
        for (ptrdiff_t ow = 0; ow < g->Wo; ++ow) {                                            \
            int64_t b = row + 2 * ow, a = b;                                                  \
            T m = r0[2 * ow], v = r0[2 * ow + 1];                                             \
            int c = (v > m) | (v != v);                                                       \
            m = SEL(c, v, m); a = c ? b + 1 : a;                                              \
            v = r1[2 * ow];                                                                   \
            c = (v > m) | (v != v);                                                           \
            m = SEL(c, v, m); a = c ? b + W : a;                                              \
            v = r1[2 * ow + 1];                                                               \
            c = (v > m) | (v != v);                                                           \
            m = SEL(c, v, m); a = c ? b + W + 1 : a;                                          \
            out[ow] = m;                                                                      \
            at[ow] = a;                                                                       \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* dx (zeroed here) += dy scattered to the argmax positions; idx already range-checked */    \
static void fdl_maxpool_bwd_plane_##SFX(ptrdiff_t HW, ptrdiff_t HoWo,                        \
                                        const T *FDL_RESTRICT dy,                             \
                                        const int64_t *FDL_RESTRICT idx,                      \
                                        T *FDL_RESTRICT dx)                                   \
{                                                                                             \
    memset(dx, 0, sizeof(T) * (size_t)HW);                                                    \
    for (ptrdiff_t i = 0; i < HoWo; ++i) dx[idx[i]] += dy[i];                                 \
}                                                                                             \
FDL_INLINE void fdl_sumrow_##SFX(const T *FDL_RESTRICT rj, T *FDL_RESTRICT s, ptrdiff_t Wo,   \
                                 ptrdiff_t sw)                                                \
{                                                                                             \
    for (ptrdiff_t ow = 0; ow < Wo; ++ow) s[ow] += rj[ow * sw];                               \
}                                                                                             \
/* Average pooling of one plane, row by row as max pooling (zero padding: rows outside the \
 * plane add nothing, a zero-padded copy of the row otherwise). buf: W + 2pw + kw. */        \
FDL_DISPATCH static void fdl_avgpool_plane_##SFX(const fdl_pool_geom *g,                     \
                                                 const T *FDL_RESTRICT x, T *FDL_RESTRICT y,  \
                                                 T *buf)                                      \
{                                                                                             \
    const ptrdiff_t Wo = g->Wo, sw = g->sw;                                                   \
    T inv = (T)1 / (T)(g->kh * g->kw);                                                        \
    for (ptrdiff_t oh = 0; oh < g->Ho; ++oh) {                                                \
        T *s = y + oh * Wo;                                                                   \
        ptrdiff_t hs = oh * g->sh - g->ph;                                                    \
        ptrdiff_t h0 = hs < 0 ? 0 : hs, h1 = hs + g->kh < g->H ? hs + g->kh : g->H;           \
        for (ptrdiff_t ow = 0; ow < Wo; ++ow) s[ow] = 0;                                      \
        for (ptrdiff_t h = h0; h < h1; ++h) {                                                 \
            const T *r = fdl_pool_row_##SFX(g, x, h, buf, (T)0);                              \
            for (ptrdiff_t j = 0; j < g->kw; ++j) {                                           \
                if (sw == 1) fdl_sumrow_##SFX(r + j, s, Wo, 1);                               \
                else if (sw == 2) fdl_sumrow_##SFX(r + j, s, Wo, 2);                          \
                else fdl_sumrow_##SFX(r + j, s, Wo, sw);                                      \
            }                                                                                 \
        }                                                                                     \
        for (ptrdiff_t ow = 0; ow < Wo; ++ow) s[ow] *= inv;                                   \
    }                                                                                         \
}                                                                                             \
/* dx (zeroed here) += dy / (kh*kw) over each window, outputs in order */                     \
FDL_DISPATCH static void fdl_avgpool_bwd_plane_##SFX(const fdl_pool_geom *g,                 \
                                                     const T *FDL_RESTRICT dy,                \
                                                     T *FDL_RESTRICT dx)                      \
{                                                                                             \
    ptrdiff_t h0, h1, w0, w1;                                                                 \
    T inv = (T)1 / (T)(g->kh * g->kw);                                                        \
    memset(dx, 0, sizeof(T) * (size_t)(g->H * g->W));                                         \
    for (ptrdiff_t oh = 0; oh < g->Ho; ++oh) {                                                \
        for (ptrdiff_t ow = 0; ow < g->Wo; ++ow) {                                            \
            fdl_pool_window(g, oh, ow, &h0, &h1, &w0, &w1);                                   \
            T v = dy[oh * g->Wo + ow] * inv;                                                  \
            for (ptrdiff_t h = h0; h < h1; ++h)                                               \
                for (ptrdiff_t w = w0; w < w1; ++w) dx[h * g->W + w] += v;                    \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* Plane means of global average pooling: y[k] = scale * sum(x[k*n, (k+1)*n)) for the count \
 * consecutive planes at x; avail: elements readable from x (the planes and what follows   \
 * them in the array). Per 512-element block, one vector accumulator (lane l adds elements   \
 * l, l + L, ...), the last partial vector with its missing lanes zeroed, then a halving     \
 * tree; blocks added in double. Where a whole vector past the plane end is still inside    \
 * the array, the partial vector is one load and a mask, else it is gathered element by     \
 * element: the same lanes, the same bits. (Small planes: the per-element tail and a call   \
 * per plane made 32x512x7x7 cost 25 ns a plane.) */                                          \
FDL_DISPATCH static void fdl_gap_##SFX(const T *x, ptrdiff_t n, ptrdiff_t count,              \
                                       ptrdiff_t avail, double scale, T *y)                   \
{                                                                                             \
    enum { L = 64 / sizeof(T) };                                                              \
    typedef fdl_vec_##SFX V;                                                                  \
    typedef FDL_POOL_IVEC_##SFX VI;                                                           \
    VI mask;                                                                                  \
    ptrdiff_t rem = n % L;                                                                    \
    for (int l = 0; l < L; ++l) mask[l] = l < rem ? -1 : 0;                                   \
    for (ptrdiff_t k = 0; k < count; ++k) {                                                   \
        const T *p = x + k * n;                                                               \
        double s = 0.0;                                                                       \
        for (ptrdiff_t i0 = 0; i0 < n; i0 += 512) {                                           \
            ptrdiff_t m = n - i0 < 512 ? n - i0 : 512, i = 0;                                 \
            const T *q = p + i0;                                                              \
            V a = {0};                                                                        \
            for (; i + L <= m; i += L) a += *(const V *)(q + i);                              \
            if (i < m) {                                                                      \
                V t;                                                                          \
                if ((q + i) - x + L <= avail) {                                               \
                    t = (V)((VI)(*(const V *)(q + i)) & mask);                                \
                } else {                                                                      \
                    T b[L];                                                                   \
                    for (int l = 0; l < L; ++l) b[l] = i + l < m ? q[i + l] : (T)0;           \
                    memcpy(&t, b, sizeof t);                                                  \
                }                                                                             \
                a += t;                                                                       \
            }                                                                                 \
            T f[L];                                                                           \
            memcpy(f, &a, sizeof f);                                                          \
            for (int w = L / 2; w >= 1; w >>= 1)                                              \
                for (int l = 0; l < w; ++l) f[l] += f[l + w];                                 \
            s += (double)f[0];                                                                \
        }                                                                                     \
        y[k] = (T)(s * scale);                                                                \
    }                                                                                         \
}                                                                                             \
/* x[0, n) = v */                                                                             \
FDL_DISPATCH static void fdl_pool_fill_##SFX(T *FDL_RESTRICT x, ptrdiff_t n, T v)            \
{                                                                                             \
    for (ptrdiff_t i = 0; i < n; ++i) x[i] = v;                                               \
}

/* 2x2 stride 2 max pooling of small planes stacked in memory (the digits CNN's 8x8 and 4x4:
   one call per plane cost ~0.1 us for 16 outputs). Row pairs rp0..rp1 of the stacked rows
   (W even, every plane 2 Ho rows): a chunk of rows is first reduced pairwise along the row
   (one long loop over contiguous pairs), then each row pair's two halves are compared. The
   window order TL, TR, BL, BR is kept: within each pair the right element wins when greater
   or NaN, then the bottom pair's winner wins when greater or NaN; this picks the first
   maximum and the last NaN, as the sequential scan does. idx (may be NULL): the plane-local
   flat h * W + w of each maximum. W <= FDL_POOL22_MAXW. */
#define FDL_POOL22_MAXW 4096
#define FDL_DEFINE_POOL22_ROWS(T, SFX, SEL)                                                 \
FDL_DISPATCH static void fdl_maxpool22_rows_##SFX(const T *FDL_RESTRICT x, ptrdiff_t rp0,    \
        ptrdiff_t rp1, ptrdiff_t W, ptrdiff_t Ho, T *FDL_RESTRICT y,                        \
        int64_t *FDL_RESTRICT idx)                                                          \
{                                                                                           \
    T hm[FDL_POOL22_MAXW];                                                                  \
    unsigned char hi[FDL_POOL22_MAXW];                                                      \
    const ptrdiff_t Wo = W / 2, cr = Wo > 0 && FDL_POOL22_MAXW / (2 * Wo) > 0 ?             \
        FDL_POOL22_MAXW / (2 * Wo) : 1;                                                     \
    for (ptrdiff_t r = rp0; r < rp1; r += cr) {                                             \
        const ptrdiff_t n = rp1 - r < cr ? rp1 - r : cr;                                    \
        const T *src = x + 2 * r * W;                                                       \
        for (ptrdiff_t k = 0; k < 2 * n * Wo; ++k) {                                        \
            T a = src[2 * k], b = src[2 * k + 1];                                           \
            int c = (b > a) | (b != b);                                                     \
            hm[k] = SEL(c, b, a);                                                           \
            hi[k] = (unsigned char)c;                                                       \
        }                                                                                   \
        for (ptrdiff_t q = 0; q < n; ++q) {                                                 \
            const T *top = hm + 2 * q * Wo, *bot = top + Wo;                                \
            T *out = y + (r + q) * Wo;                                                      \
            for (ptrdiff_t o = 0; o < Wo; ++o) {                                            \
                int c = (bot[o] > top[o]) | (bot[o] != bot[o]);                             \
                out[o] = SEL(c, bot[o], top[o]);                                            \
            }                                                                               \
            if (idx) {                                                                      \
                const unsigned char *ht = hi + 2 * q * Wo, *hb = ht + Wo;                   \
                int64_t *at = idx + (r + q) * Wo;                                           \
                const int64_t base = (int64_t)(2 * ((r + q) % Ho) * W);                     \
                for (ptrdiff_t o = 0; o < Wo; ++o) {                                        \
                    int c = (bot[o] > top[o]) | (bot[o] != bot[o]);                         \
                    at[o] = base + 2 * o + (c ? W + hb[o] : ht[o]);                         \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
}

/* Max or average pooling of small planes, L at a time (L = 64 bytes of lanes: 16 float32,
   8 float64): the planes are first interleaved into work[(h * W + w) * L + l] (channels
   last), so that each window position of all L planes is one vector; each output then scans
   its clipped window in the plane kernels' order, with the same rule (a value replaces the
   running maximum when greater or NaN; the index starts at the clipped window's first
   element; averages add the window row by row, times 1/(kh*kw)), so the results are
   bitwise those of fdl_maxpool_plane / fdl_avgpool_plane (but which NaN a sum of two NaNs
   returns). The plane kernels vectorise along an output row, which is mostly loop overhead
   when a row has a few outputs (3x3/s2/p1 with indices on 512 8x8 planes: 0.37 us a plane
   there, 0.06 here). Both copies go through tiles of FDL_POOL_TILE positions, so that each
   line of a plane is read or written whole: planes of 4 KiB share an L1 set, and 16 of
   them written element by element thrashed it (2.2x slower at 32x32).
   planes[l] (l < np <= L): the first element of each contiguous plane; y, idx (may be
   NULL): the np planes' outputs at y + l * Ho * Wo; avg: 0 max, 1 average; work:
   L * H * W elements, 64-byte aligned. */
#define FDL_POOL_TILE 16
#define FDL_DEFINE_POOL_LANES(T, SFX, SEL, IT)                                                \
FDL_DISPATCH static void fdl_pool_lanes_##SFX(const fdl_pool_geom *g, int avg,               \
                                              const T *const *planes, int np,                 \
                                              T *FDL_RESTRICT y, int64_t *FDL_RESTRICT idx,   \
                                              T *FDL_RESTRICT work)                           \
{                                                                                             \
    enum { L = 64 / sizeof(T), K = FDL_POOL_TILE };                                           \
    const ptrdiff_t HW = g->H * g->W, HoWo = g->Ho * g->Wo, W = g->W;                         \
    const T inv = (T)1 / (T)(g->kh * g->kw);                                                  \
    for (ptrdiff_t e0 = 0; e0 < HW; e0 += K) {                                                \
        const ptrdiff_t ne = HW - e0 < K ? HW - e0 : K;                                       \
        T *dst = work + e0 * L;                                                               \
        for (int l = 0; l < np; ++l) {                                                        \
            const T *src = planes[l] + e0;                                                    \
            for (ptrdiff_t e = 0; e < ne; ++e) dst[e * L + l] = src[e];                       \
        }                                                                                     \
        for (int l = np; l < L; ++l)                                                          \
            for (ptrdiff_t e = 0; e < ne; ++e) dst[e * L + l] = (T)0;                         \
    }                                                                                         \
    T m[K][L] FDL_ALIGN64;                                                                    \
    IT at[K][L] FDL_ALIGN64;                                                                  \
    for (ptrdiff_t o0 = 0; o0 < HoWo; o0 += K) {                                              \
        const ptrdiff_t no = HoWo - o0 < K ? HoWo - o0 : K;                                   \
        ptrdiff_t oh = o0 / g->Wo, ow = o0 - oh * g->Wo;                                      \
        for (ptrdiff_t k = 0; k < no; ++k, ++ow) {                                            \
            ptrdiff_t h0, h1, w0, w1;                                                         \
            if (ow == g->Wo) { ow = 0; ++oh; }                                                \
            fdl_pool_window(g, oh, ow, &h0, &h1, &w0, &w1);                                   \
            T *mk = m[k];                                                                     \
            IT *ak = at[k];                                                                   \
            if (avg) {                                                                        \
                for (int l = 0; l < L; ++l) mk[l] = (T)0;                                     \
                for (ptrdiff_t h = h0; h < h1; ++h)                                           \
                    for (ptrdiff_t w = w0; w < w1; ++w) {                                     \
                        const T *v = work + (h * W + w) * L;                                  \
                        for (int l = 0; l < L; ++l) mk[l] += v[l];                            \
                    }                                                                         \
                for (int l = 0; l < L; ++l) mk[l] *= inv;                                     \
            } else {                                                                          \
                const IT first = (IT)(h0 * W + w0);                                           \
                for (int l = 0; l < L; ++l) { mk[l] = -(T)INFINITY; ak[l] = first; }          \
                for (ptrdiff_t h = h0; h < h1; ++h)                                           \
                    for (ptrdiff_t w = w0; w < w1; ++w) {                                     \
                        const T *v = work + (h * W + w) * L;                                  \
                        const IT e = (IT)(h * W + w);                                         \
                        /* not unrolled: GCC 12 then lowers the selects lane by lane */       \
                        FDL_NO_UNROLL                                                         \
                        for (int l = 0; l < L; ++l) {                                         \
                            int take = (v[l] > mk[l]) | (v[l] != v[l]);                       \
                            mk[l] = SEL(take, v[l], mk[l]);                                   \
                            ak[l] = take ? e : ak[l];                                         \
                        }                                                                     \
                    }                                                                         \
            }                                                                                 \
        }                                                                                     \
        for (int l = 0; l < np; ++l) {                                                        \
            T *yl = y + l * HoWo + o0;                                                        \
            for (ptrdiff_t k = 0; k < no; ++k) yl[k] = m[k][l];                               \
        }                                                                                     \
        if (idx && !avg)                                                                      \
            for (int l = 0; l < np; ++l) {                                                    \
                int64_t *il = idx + l * HoWo + o0;                                            \
                for (ptrdiff_t k = 0; k < no; ++k) il[k] = (int64_t)at[k][l];                 \
            }                                                                                 \
    }                                                                                         \
}

FDL_DEFINE_POOL(float, f32, fdl_selectf)
FDL_DEFINE_POOL(double, f64, fdl_select)
FDL_DEFINE_POOL22_ROWS(float, f32, fdl_selectf)
FDL_DEFINE_POOL22_ROWS(double, f64, fdl_select)
FDL_DEFINE_POOL_LANES(float, f32, fdl_selectf, int32_t)
FDL_DEFINE_POOL_LANES(double, f64, fdl_select, int64_t)

/* First position of an index outside [0, hw), or -1. */
static inline ptrdiff_t fdl_pool_check_idx(const int64_t *idx, ptrdiff_t n, int64_t hw)
{
    for (ptrdiff_t i = 0; i < n; ++i)
        if (idx[i] < 0 || idx[i] >= hw) return i;
    return -1;
}

#endif
