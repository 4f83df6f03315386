/*
 * Packing helpers of the attention forward's float32 tiles; the GEMM itself is sgemm.h's
 * register-blocked kernel (K^T packed once per entry, zero past S; V padded to whole 32-float
 * rows when Ev is not a multiple of 32).
 */
#ifndef FASTDL_ATTENTION_GEMM_H
#define FASTDL_ATTENTION_GEMM_H

#include <stddef.h>
#include <string.h>

#include "config.h"
#include "sgemm.h"

/* Kt (E x ldt, zero beyond column n) = the transpose of K (n x E, row stride ldk) */
static inline void fdl_attn_pack_kt(const float *k, ptrdiff_t ldk, ptrdiff_t n, ptrdiff_t E,
                                    float *kt, ptrdiff_t ldt)
{
    for (ptrdiff_t e = 0; e < E; ++e) {
        float *row = kt + e * ldt;
        for (ptrdiff_t j = 0; j < n; ++j) row[j] = k[j * ldk + e];
        for (ptrdiff_t j = n; j < ldt; ++j) row[j] = 0.0f;
    }
}

/* Vp (n x ldp, zero beyond column ev) = V (n x ev, row stride ldv) */
static inline void fdl_attn_pack_v(const float *v, ptrdiff_t ldv, ptrdiff_t n, ptrdiff_t ev,
                                   float *vp, ptrdiff_t ldp)
{
    for (ptrdiff_t j = 0; j < n; ++j) {
        memcpy(vp + j * ldp, v + j * ldv, (size_t)ev * sizeof(float));
        for (ptrdiff_t c = ev; c < ldp; ++c) vp[j * ldp + c] = 0.0f;
    }
}

#endif
