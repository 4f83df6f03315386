/*
 * Inner loops of conv2d (_conv.pyx): the lowering to GEMM (im2col rows and their col2im
 * scatter-add) and the direct kernels of depthwise / small-group convolutions.
 *
 * Geometry shared by every loop: input plane H x W, output Ho x Wo, kernel tap (i, j) reads
 * input row h = oh * sh - pt + i * dh and column w = ow * sw - pl + j * dw; anything outside
 * [0, H) x [0, W) is zero padding (bottom/right padding is implied by Ho, Wo). For a tap, the
 * output columns that land inside the plane form one contiguous range [lo, hi), computed once
 * per tap, so the loops over ow have no bounds test and vectorise.
 *
 * Every output element is a sum in an order fixed by the shape (taps in (c, i, j) order),
 * whichever thread computes it: results never depend on the thread count.
 */
#ifndef FASTDL_CONV_H
#define FASTDL_CONV_H

#include <stddef.h>
#include <string.h>
#include "config.h"

#if defined(__GNUC__) && !defined(__clang__)
#  define FDL_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#  define FDL_NO_LIBCALLS
#endif

typedef struct {
    ptrdiff_t H, W, Ho, Wo;
    ptrdiff_t kh, kw, sh, sw, pt, pl, dh, dw;
} fdl_conv_geom;

/* Output columns [lo, hi) whose tap j lands inside the input row. */
static inline void fdl_conv_range(ptrdiff_t n_out, ptrdiff_t n_in, ptrdiff_t s, ptrdiff_t off,
                                  ptrdiff_t *lo, ptrdiff_t *hi)
{
    /* in = o * s + off must satisfy 0 <= in < n_in */
    ptrdiff_t a = off >= 0 ? 0 : (-off + s - 1) / s;
    ptrdiff_t b = n_in - off <= 0 ? 0 : (n_in - off - 1) / s + 1;
    if (a > n_out) a = n_out;
    if (b > n_out) b = n_out;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* Padded plane extent the direct kernel reads: rows [0, Hp) and columns [0, Wp) of the input
   shifted by (pt, pl); the bottom/right padding is whatever the last output needs. */
static inline void fdl_padded_dims(const fdl_conv_geom *g, ptrdiff_t *Hp, ptrdiff_t *Wp)
{
    *Hp = (g->Ho - 1) * g->sh + (g->kh - 1) * g->dh + 1;
    *Wp = (g->Wo - 1) * g->sw + (g->kw - 1) * g->dw + 1;
}

#define FDL_DEFINE_CONV(T, SFX, ACC)                                                            \
/* One row of the lowered matrix: tap (i, j) of one input plane for output rows [oh0, oh1).  \
   The plane may have any element strides (sy, sx); dst is contiguous. Rows are short (Wo),   \
   so the copies and zero fills are plain loops, not memcpy/memset calls: the calls cost      \
   more than the copy of a 32-element row (FDL_NO_LIBCALLS keeps GCC from putting them back). */\
FDL_DISPATCH FDL_NO_LIBCALLS static void fdl_im2col_row_##SFX(const T *x, ptrdiff_t sy,       \
        ptrdiff_t sx, const fdl_conv_geom *g, ptrdiff_t i, ptrdiff_t j, ptrdiff_t oh0,           \
        ptrdiff_t oh1, T *FDL_RESTRICT dst)                                                      \
{                                                                                                \
    ptrdiff_t Wo = g->Wo, lo, hi, oh, ow;                                                        \
    ptrdiff_t off = j * g->dw - g->pl;                                                           \
    ptrdiff_t step = g->sw * sx;                                                                 \
    fdl_conv_range(Wo, g->W, g->sw, off, &lo, &hi);                                              \
    if (step == 1 && sy == Wo && g->W == Wo && g->sh == 1 && lo < hi) {                          \
        /* Rows of the plane and of dst have the same length: the valid rows are one shifted   \
           block copy, then the padding columns of each row are zeroed (they received the      \
           neighbouring row's elements). Never reads outside the plane. */                      \
        ptrdiff_t a = oh0, b = oh1;                                                              \
        ptrdiff_t base = i * g->dh - g->pt;                                                      \
        if (a < -base) a = -base < oh1 ? -base : oh1;                                            \
        if (b > g->H - base) b = g->H - base > a ? g->H - base : a;                              \
        for (ow = 0; ow < (a - oh0) * Wo; ow++) dst[ow] = 0;                                     \
        if (b > a) {                                                                             \
            T *d = dst + (a - oh0) * Wo;                                                         \
            memcpy(d + lo, x + (a + base) * Wo + off + lo,                                       \
                   (size_t)((b - a - 1) * Wo + hi - lo) * sizeof(T));                            \
            if (lo > 0 || hi < Wo) {                                                             \
                for (oh = a; oh < b; oh++, d += Wo) {                                            \
                    for (ow = 0; ow < lo; ow++) d[ow] = 0;                                       \
                    for (ow = hi; ow < Wo; ow++) d[ow] = 0;                                      \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        for (ow = (b - oh0) * Wo; ow < (oh1 - oh0) * Wo; ow++) dst[ow] = 0;                      \
        return;                                                                                  \
    }                                                                                            \
    for (oh = oh0; oh < oh1; oh++, dst += Wo) {                                                  \
        ptrdiff_t h = oh * g->sh - g->pt + i * g->dh;                                            \
        if (h < 0 || h >= g->H || lo >= hi) {                                                    \
            for (ow = 0; ow < Wo; ow++) dst[ow] = 0;                                             \
            continue;                                                                            \
        }                                                                                        \
        const T *FDL_RESTRICT p = x + h * sy + off * sx;                                         \
        for (ow = 0; ow < lo; ow++) dst[ow] = 0;                                                 \
        if (step == 1) {                                                                         \
            for (ow = lo; ow < hi; ow++) dst[ow] = p[ow];                                        \
        } else if (step == 2) {                                                                  \
            for (ow = lo; ow < hi; ow++) dst[ow] = p[2 * ow];                                    \
        } else {                                                                                 \
            for (ow = lo; ow < hi; ow++) dst[ow] = p[ow * step];                                 \
        }                                                                                        \
        for (ow = hi; ow < Wo; ow++) dst[ow] = 0;                                                \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* The adjoint of fdl_im2col_row: add one lowered row back into a C-contiguous plane. */        \
FDL_DISPATCH static void fdl_col2im_row_##SFX(T *FDL_RESTRICT dx, const fdl_conv_geom *g,       \
        ptrdiff_t i, ptrdiff_t j, ptrdiff_t oh0, ptrdiff_t oh1, const T *FDL_RESTRICT src)       \
{                                                                                                \
    ptrdiff_t Wo = g->Wo, W = g->W, lo, hi, oh, ow;                                              \
    ptrdiff_t off = j * g->dw - g->pl;                                                           \
    fdl_conv_range(Wo, W, g->sw, off, &lo, &hi);                                                 \
    if (lo >= hi) return;                                                                        \
    for (oh = oh0; oh < oh1; oh++, src += Wo) {                                                  \
        ptrdiff_t h = oh * g->sh - g->pt + i * g->dh;                                            \
        if (h < 0 || h >= g->H) continue;                                                        \
        T *row = dx + h * W + off;                                                               \
        if (g->sw == 1) {                                                                        \
            for (ow = lo; ow < hi; ow++) row[ow] += src[ow];                                     \
        } else {                                                                                 \
            ptrdiff_t s = g->sw;                                                                 \
            for (ow = lo; ow < hi; ow++) row[ow * s] += src[ow];                                 \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* Direct convolution of one output plane from the cg input planes of its group               \
   (C-contiguous H x W each): y = bias + sum over (c, i, j) of w[c, i, j] * shifted x.         \
   The output row stays in L1 while every tap adds into it. */                                   \
FDL_DISPATCH static void fdl_direct_plane_##SFX(const T *FDL_RESTRICT x, ptrdiff_t cg,          \
        const T *FDL_RESTRICT w, T bias, const fdl_conv_geom *g, T *FDL_RESTRICT y)              \
{                                                                                                \
    ptrdiff_t H = g->H, W = g->W, Wo = g->Wo, oh, ow, c, i, j, lo, hi;                           \
    ptrdiff_t s = g->sw;                                                                         \
    for (oh = 0; oh < g->Ho; oh++) {                                                             \
        T *row = y + oh * Wo;                                                                    \
        for (ow = 0; ow < Wo; ow++) row[ow] = bias;                                              \
        for (c = 0; c < cg; c++) {                                                               \
            for (i = 0; i < g->kh; i++) {                                                        \
                ptrdiff_t h = oh * g->sh - g->pt + i * g->dh;                                    \
                if (h < 0 || h >= H) continue;                                                   \
                const T *xr = x + (c * H + h) * W;                                               \
                const T *wr = w + (c * g->kh + i) * g->kw;                                       \
                ptrdiff_t in_lo = 0, in_hi = 0;                                                  \
                if (g->kw == 3 && s == 1 && g->dw == 1) {                                        \
                    /* The three taps of a row in one pass where all of them are inside the    \
                       input (a 3x3 depthwise conv: a third of the passes over the row). */     \
                    T w0 = wr[0], w1 = wr[1], w2 = wr[2];                                        \
                    const T *p = xr - g->pl;                                                     \
                    in_lo = g->pl < Wo ? g->pl : Wo;                                             \
                    in_hi = W - 2 + g->pl < Wo ? W - 2 + g->pl : Wo;                             \
                    if (in_hi < in_lo) in_hi = in_lo;                                            \
                    for (ow = in_lo; ow < in_hi; ow++)                                           \
                        row[ow] += w0 * p[ow] + w1 * p[ow + 1] + w2 * p[ow + 2];                 \
                }                                                                                \
                for (j = 0; j < g->kw; j++) {                                                    \
                    ptrdiff_t off = j * g->dw - g->pl;                                           \
                    T wv = wr[j];                                                                \
                    fdl_conv_range(Wo, W, s, off, &lo, &hi);                                     \
                    const T *p = xr + off;                                                       \
                    if (in_hi > in_lo) {                                                         \
                        /* only the columns the three-tap pass left out */                       \
                        for (ow = lo; ow < hi && ow < in_lo; ow++) row[ow] += wv * p[ow];        \
                        for (ow = in_hi > lo ? in_hi : lo; ow < hi; ow++) row[ow] += wv * p[ow]; \
                    } else if (s == 1) {                                                         \
                        for (ow = lo; ow < hi; ow++) row[ow] += wv * p[ow];                      \
                    } else {                                                                     \
                        for (ow = lo; ow < hi; ow++) row[ow] += wv * p[ow * s];                  \
                    }                                                                            \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* The same on zero-padded copies of the cg input planes (scratch: cg * Hp * Wp elements, see  \
   fdl_padded_dims): every tap of every output column is inside, so each pass over a row is   \
   one branch-free vectorised loop (no edge columns, no per-tap ranges). */                      \
FDL_DISPATCH static void fdl_direct_padded_plane_##SFX(const T *FDL_RESTRICT x, ptrdiff_t cg,   \
        const T *FDL_RESTRICT w, T bias, const fdl_conv_geom *g, T *FDL_RESTRICT scratch,        \
        T *FDL_RESTRICT y)                                                                       \
{                                                                                                \
    ptrdiff_t H = g->H, W = g->W, Wo = g->Wo, Hp, Wp, oh, ow, c, i, j, r;                        \
    ptrdiff_t s = g->sw;                                                                         \
    fdl_padded_dims(g, &Hp, &Wp);                                                                \
    for (c = 0; c < cg; c++) {                                                                   \
        T *dst = scratch + c * Hp * Wp;                                                          \
        for (r = 0; r < Hp; r++, dst += Wp) {                                                    \
            ptrdiff_t h = r - g->pt;                                                             \
            if (h < 0 || h >= H) {                                                               \
                for (ow = 0; ow < Wp; ow++) dst[ow] = 0;                                         \
                continue;                                                                        \
            }                                                                                    \
            const T *src = x + (c * H + h) * W;                                                  \
            ptrdiff_t a = g->pl < Wp ? g->pl : Wp;                                               \
            ptrdiff_t n = Wp - g->pl < W ? Wp - g->pl : W;                                       \
            if (n < 0) n = 0;                                                                    \
            for (ow = 0; ow < a; ow++) dst[ow] = 0;                                              \
            for (ow = 0; ow < n; ow++) dst[a + ow] = src[ow];                                    \
            for (ow = a + n; ow < Wp; ow++) dst[ow] = 0;                                         \
        }                                                                                        \
    }                                                                                            \
    for (oh = 0; oh < g->Ho; oh++) {                                                             \
        T *row = y + oh * Wo;                                                                    \
        for (ow = 0; ow < Wo; ow++) row[ow] = bias;                                              \
        for (c = 0; c < cg; c++) {                                                               \
            for (i = 0; i < g->kh; i++) {                                                        \
                const T *p = scratch + (c * Hp + oh * g->sh + i * g->dh) * Wp;                   \
                const T *wr = w + (c * g->kh + i) * g->kw;                                       \
                if (g->kw == 3 && s == 1 && g->dw == 1) {                                        \
                    T w0 = wr[0], w1 = wr[1], w2 = wr[2];                                        \
                    for (ow = 0; ow < Wo; ow++)                                                  \
                        row[ow] += w0 * p[ow] + w1 * p[ow + 1] + w2 * p[ow + 2];                 \
                } else if (s == 1) {                                                             \
                    for (j = 0; j < g->kw; j++) {                                                \
                        T wv = wr[j];                                                            \
                        const T *q = p + j * g->dw;                                              \
                        for (ow = 0; ow < Wo; ow++) row[ow] += wv * q[ow];                       \
                    }                                                                            \
                } else {                                                                         \
                    for (j = 0; j < g->kw; j++) {                                                \
                        T wv = wr[j];                                                            \
                        const T *q = p + j * g->dw;                                              \
                        for (ow = 0; ow < Wo; ow++) row[ow] += wv * q[ow * s];                   \
                    }                                                                            \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* Sum of a contiguous block in ACC, 16 lanes (the bias gradient of one (n, o) plane). */       \
FDL_DISPATCH static ACC fdl_conv_sum_##SFX(const T *FDL_RESTRICT x, ptrdiff_t n)                \
{                                                                                                \
    ACC lane[16] = {0};                                                                          \
    ptrdiff_t k = 0, l;                                                                          \
    for (; k + 16 <= n; k += 16)                                                                 \
        for (l = 0; l < 16; l++) lane[l] += (ACC)x[k + l];                                       \
    for (l = 0; k < n; k++, l++) lane[l] += (ACC)x[k];                                           \
    for (l = 8; l >= 1; l /= 2) {                                                                \
        ptrdiff_t q;                                                                             \
        for (q = 0; q < l; q++) lane[q] += lane[q + l];                                          \
    }                                                                                            \
    return lane[0];                                                                              \
}

FDL_DEFINE_CONV(float, f32, double)
FDL_DEFINE_CONV(double, f64, double)

/* Channels-last lowering of small float32 images (the digits CNN's 4x4 and 8x8 planes).
 * Lowered NCHW rows of such images are runs of 4-8 floats, so im2col spent its time on row
 * bookkeeping. Channels last, each output pixel's lowered row is kh*kw contiguous runs of C
 * floats of a zero-padded NHWC copy: colsT[pixel, (i, j, c)]. The GEMMs then take the
 * weights as (i, j, c) x O (forward) or produce dW as O x (i, j, c). */

/* xp[b, h + pt, w + pl, c] = x[b, c, h, w] for nb images (strides in elements); the rest of
   the Hp x Wp x C planes zero. */
FDL_DISPATCH static void fdl_cl_pad_f32(const float *FDL_RESTRICT x, ptrdiff_t sxn,
        ptrdiff_t sxc, ptrdiff_t sxh, ptrdiff_t sxw, ptrdiff_t nb, ptrdiff_t C,
        const fdl_conv_geom *g, ptrdiff_t Hp, ptrdiff_t Wp, float *FDL_RESTRICT xp)
{
    memset(xp, 0, (size_t)(nb * Hp * Wp * C) * sizeof(float));
    for (ptrdiff_t b = 0; b < nb; ++b)
        for (ptrdiff_t h = 0; h < g->H; ++h)
            for (ptrdiff_t w = 0; w < g->W; ++w) {
                const float *src = x + b * sxn + h * sxh + w * sxw;
                float *dst = xp + ((b * Hp + h + g->pt) * Wp + w + g->pl) * C;
                for (ptrdiff_t c = 0; c < C; ++c)
                    dst[c] = src[c * sxc];
            }
}

/* colsT (nb Ho Wo) x (kh kw C), row-major, from the padded NHWC planes of fdl_cl_pad_f32. */
FDL_DISPATCH static void fdl_cl_cols_f32(const float *FDL_RESTRICT xp, ptrdiff_t nb,
        ptrdiff_t C, const fdl_conv_geom *g, ptrdiff_t Hp, ptrdiff_t Wp,
        float *FDL_RESTRICT cols)
{
    float *d = cols;
    for (ptrdiff_t b = 0; b < nb; ++b)
        for (ptrdiff_t oh = 0; oh < g->Ho; ++oh)
            for (ptrdiff_t ow = 0; ow < g->Wo; ++ow)
                for (ptrdiff_t i = 0; i < g->kh; ++i) {
                    const float *row = xp + ((b * Hp + oh * g->sh + i * g->dh) * Wp
                                             + ow * g->sw) * C;
                    for (ptrdiff_t j = 0; j < g->kw; ++j, d += C) {
                        const float *s = row + j * g->dw * C;
                        for (ptrdiff_t c = 0; c < C; ++c)
                            d[c] = s[c];
                    }
                }
}

/* y[b, o, p] = yt[b * P + p, o] + bias[o] (bias may be NULL): the channels-last GEMM result
   back to NCHW. */
FDL_DISPATCH static void fdl_cl_scatter_f32(const float *FDL_RESTRICT yt, ptrdiff_t nb,
        ptrdiff_t P, ptrdiff_t O, const float *bias, float *FDL_RESTRICT y)
{
    for (ptrdiff_t b = 0; b < nb; ++b)
        for (ptrdiff_t o = 0; o < O; ++o) {
            const float *s = yt + b * P * O + o;
            float *d = y + (b * O + o) * P;
            float bo = bias ? bias[o] : 0.0f;
            for (ptrdiff_t p = 0; p < P; ++p)
                d[p] = s[p * O] + bo;
        }
}

#endif
