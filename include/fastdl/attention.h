/*
 * Row operations of the blockwise scaled dot-product attention (_attention.pyx).
 *
 * A work item holds a block of query rows and walks the keys in blocks: the scores of a
 * (query block x key block) tile come from one GEMM, then each row of the tile is masked and
 * folded into the row's running maximum m and running sum l (the "online" softmax), the
 * tile is turned into probabilities in place, and the output accumulator, rescaled by
 * exp(m_old - m_new), gets P V from a second GEMM. Nothing of size L x S ever exists.
 *
 * A row whose every key is masked keeps m = -inf and l = 0: its reference point is taken as
 * 0 instead of -inf (so exp(-inf - ref) = 0, never exp(-inf + inf) = NaN) and the caller
 * writes zeros and lse = -inf for it. NaN in a score propagates through l to the row.
 *
 * exp comes from vmath.h: fdl_expf_nonpos where the argument is <= 0 by construction (score
 * minus the running maximum), the full fdl_expf where it depends on the caller's lse.
 */
#ifndef FASTDL_ATTENTION_H
#define FASTDL_ATTENTION_H

#include <math.h>
#include <stddef.h>

#include "config.h"
#include "vmath.h"

enum { FDL_ATTN_NONE = 0, FDL_ATTN_BOOL = 1, FDL_ATTN_ADD = 2 };

/* The masking of one tile: its first query row i0 and key j0, the causal switch, and the
   user's mask (kind, data at the tile's (i0, j0), strides in elements, 0 when broadcast). */
typedef struct {
    ptrdiff_t i0, j0;
    int causal, kind;
    const void *data;
    ptrdiff_t mls, mss;
} fdl_attn_mask;

#define FDL_ATTN_DEFINE(T, SFX, EXP_NONPOS, EXP, SEL)                                          \
/* s[j] += mask[j * ms] (an additive float mask row, any stride, 0 when broadcast) */          \
static inline void fdl_attn_mask_add_##SFX(T *FDL_RESTRICT s, const T *FDL_RESTRICT mask,     \
                                           ptrdiff_t ms, ptrdiff_t n)                          \
{                                                                                             \
    if (ms == 1) {                                                                            \
        for (ptrdiff_t j = 0; j < n; ++j) s[j] += mask[j];                                    \
    } else {                                                                                  \
        for (ptrdiff_t j = 0; j < n; ++j) s[j] += mask[j * ms];                               \
    }                                                                                         \
}                                                                                             \
/* s[j] = -inf where the boolean mask (True = attend) is False */                            \
static inline void fdl_attn_mask_bool_##SFX(T *FDL_RESTRICT s,                                \
                                            const unsigned char *FDL_RESTRICT mask,           \
                                            ptrdiff_t ms, ptrdiff_t n)                         \
{                                                                                             \
    for (ptrdiff_t j = 0; j < n; ++j)                                                         \
        s[j] = SEL(mask[j * ms] != 0, s[j], -(T)INFINITY);                                    \
}                                                                                             \
/* Fold one row of n scores into (m, l); the row becomes exp(s - m_new). Returns the factor  \
   exp(m_old - m_new) by which the row's output accumulator must be scaled. */               \
static inline T fdl_attn_online_##SFX(T *FDL_RESTRICT s, ptrdiff_t n, T *m, double *l)       \
{                                                                                             \
    T cm = -(T)INFINITY;                                                                      \
    _Pragma("omp simd reduction(max:cm)")                                                     \
    for (ptrdiff_t j = 0; j < n; ++j) cm = s[j] > cm ? s[j] : cm;                             \
    T mo = *m, mn = cm > mo ? cm : mo;                                                        \
    T ref = mn == -(T)INFINITY ? (T)0 : mn;                                                   \
    T f = EXP_NONPOS(mo - ref);                                                               \
    T acc = 0;                                                                                \
    /* a vector reduction: its order is fixed by the SIMD clone, never by the threads */      \
    _Pragma("omp simd reduction(+:acc)")                                                      \
    for (ptrdiff_t j = 0; j < n; ++j) {                                                       \
        T p = EXP_NONPOS(s[j] - ref);                                                         \
        s[j] = p;                                                                             \
        acc += p;                                                                             \
    }                                                                                         \
    *l = *l * (double)f + (double)acc;                                                        \
    *m = mn;                                                                                  \
    return f;                                                                                 \
}                                                                                             \
/* p[j] = exp(s[j] - lse) (0 for a fully masked row, lse = -inf) */                          \
static inline void fdl_attn_probs_##SFX(T *FDL_RESTRICT s, ptrdiff_t n, T lse)               \
{                                                                                             \
    T ref = lse == -(T)INFINITY ? (T)INFINITY : lse;                                          \
    for (ptrdiff_t j = 0; j < n; ++j) s[j] = EXP(s[j] - ref);                                 \
}                                                                                             \
/* dS = P * (dP - D), in place in dp */                                                       \
static inline void fdl_attn_dscores_##SFX(const T *FDL_RESTRICT p, T *FDL_RESTRICT dp,       \
                                          ptrdiff_t n, T d)                                   \
{                                                                                             \
    for (ptrdiff_t j = 0; j < n; ++j) dp[j] = p[j] * (dp[j] - d);                             \
}                                                                                             \
/* sum_j a[j] * b[j], in double (the D_i = dO_i . O_i of the backward) */                   \
static inline double fdl_attn_dot_##SFX(const T *FDL_RESTRICT a, const T *FDL_RESTRICT b,    \
                                        ptrdiff_t n)                                          \
{                                                                                             \
    double acc = 0.0;                                                                         \
    for (ptrdiff_t j = 0; j < n; ++j) acc += (double)a[j] * (double)b[j];                     \
    return acc;                                                                               \
}                                                                                             \
static inline void fdl_attn_scale_##SFX(T *FDL_RESTRICT x, ptrdiff_t n, T f)                 \
{                                                                                             \
    for (ptrdiff_t j = 0; j < n; ++j) x[j] *= f;                                              \
}                                                                                             \
/* Mask row r of a tile of scores (query i0 + r, keys j0 ..): the causal rule (key > query   \
   is masked, top-left aligned) and the user's mask, whose element (r, j) is at              \
   mask + r * mls + j * mss (kind FDL_ATTN_BOOL or FDL_ATTN_ADD). */                        \
static inline void fdl_attn_mask_row_##SFX(T *s, ptrdiff_t r, ptrdiff_t n,                    \
                                           const fdl_attn_mask *mk)                           \
{                                                                                             \
    if (mk->causal) {                                                                         \
        ptrdiff_t first = mk->i0 + r - mk->j0 + 1;     /* first masked column */              \
        for (ptrdiff_t j = first < 0 ? 0 : first; j < n; ++j) s[j] = -(T)INFINITY;            \
    }                                                                                         \
    if (mk->kind == FDL_ATTN_BOOL)                                                            \
        fdl_attn_mask_bool_##SFX(s, (const unsigned char *)mk->data + r * mk->mls, mk->mss, n); \
    else if (mk->kind == FDL_ATTN_ADD)                                                        \
        fdl_attn_mask_add_##SFX(s, (const T *)mk->data + r * mk->mls, mk->mss, n);            \
}                                                                                             \
/* Forward: fold a rows x n tile of scores (row stride lds) into the running (m, l) of its  \
   rows, leaving probabilities in the tile, and rescale the rows of the output accumulator  \
   o (row stride ldo, ev columns) by exp(m_old - m_new). */                                  \
FDL_DISPATCH static void fdl_attn_fold_tile_##SFX(T *s, ptrdiff_t lds, ptrdiff_t rows,        \
                                                  ptrdiff_t n, const fdl_attn_mask *mk,       \
                                                  T *m, double *l, T *o, ptrdiff_t ldo,       \
                                                  ptrdiff_t ev)                               \
{                                                                                             \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        T *sr = s + r * lds;                                                                  \
        fdl_attn_mask_row_##SFX(sr, r, n, mk);                                                \
        T f = fdl_attn_online_##SFX(sr, n, m + r, l + r);                                     \
        if (f != (T)1)                                                                        \
            fdl_attn_scale_##SFX(o + r * ldo, ev, f);                                         \
    }                                                                                         \
}                                                                                             \
/* Backward: the probabilities of a tile from the forward's lse (masked as in the forward). */\
FDL_DISPATCH static void fdl_attn_probs_tile_##SFX(T *s, ptrdiff_t lds, ptrdiff_t rows,       \
                                                   ptrdiff_t n, const fdl_attn_mask *mk,      \
                                                   const T *lse)                              \
{                                                                                             \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        fdl_attn_mask_row_##SFX(s + r * lds, r, n, mk);                                       \
        fdl_attn_probs_##SFX(s + r * lds, n, lse[r]);                                         \
    }                                                                                         \
}                                                                                             \
/* Backward: dS = P * (dP - D) over a tile, in place in dp. */                               \
FDL_DISPATCH static void fdl_attn_dscores_tile_##SFX(const T *p, T *dp, ptrdiff_t ld,         \
                                                     ptrdiff_t rows, ptrdiff_t n, const T *d) \
{                                                                                             \
    for (ptrdiff_t r = 0; r < rows; ++r)                                                      \
        fdl_attn_dscores_##SFX(p + r * ld, dp + r * ld, n, d[r]);                             \
}

FDL_ATTN_DEFINE(float, f32, fdl_expf_nonpos, fdl_expf, fdl_selectf)
FDL_ATTN_DEFINE(double, f64, fdl_exp_nonpos, fdl_exp, fdl_select)

#endif
