/*
 * Register-blocked float32 GEMM for the attention forward's tiles: C = alpha A B or
 * C += alpha A B with A (M x K, row stride lda), B (K x N, row stride ldb) and C (M x N,
 * row stride ldc), N a multiple of 32 (the caller pads B's and C's columns).
 *
 * Why not BLAS: the tiles have a small inner dimension (the head size, 64) or a small output
 * width (Ev), where OpenBLAS's packing and edge handling dominate: measured on the Zen 4
 * machine, one thread, S = Q K^T for 256 x 1024 x 64, OpenBLAS ran at 40-67 GFLOP/s against
 * PyTorch's (MKL) 95. Here B's panel of 32 columns stays in L1 while MR rows of A are
 * broadcast against it, accumulating an MR x 32 block of C in registers.
 *
 * Two builds, picked at run time from the CPU's features (cpu.h): AVX-512 (MR = 8 rows x two
 * 16-float vectors: 16 accumulators of the 32 zmm registers) and AVX2+FMA (MR = 6 x two
 * 8-float vectors: 12 of the 16 ymm). Written with GCC vector extensions, so one body serves
 * both widths. Each element of C is a sum over k in a fixed order, so the result depends
 * neither on the thread count nor on how the caller splits its rows.
 */
#ifndef FASTDL_ATTENTION_GEMM_H
#define FASTDL_ATTENTION_GEMM_H

#include <stddef.h>
#include <string.h>

#include "config.h"

#if FDL_HAVE_DISPATCH
#define FDL_AGEMM_AVAILABLE 1

/* one MR x (2 W) block of C: rows i.., columns j.. */
#define FDL_AGEMM_BLOCK(VT, W, MR, K, A, lda, B, ldb, C, ldc, alpha, accumulate)           \
    do {                                                                                   \
        VT acc0_[MR], acc1_[MR];                                                           \
        for (int r_ = 0; r_ < (MR); ++r_) {                                                \
            acc0_[r_] = (VT){0};                                                           \
            acc1_[r_] = (VT){0};                                                           \
        }                                                                                  \
        const float *b_ = (B);                                                             \
        for (ptrdiff_t e_ = 0; e_ < (K); ++e_, b_ += (ldb)) {                              \
            VT b0_, b1_;                                                                   \
            memcpy(&b0_, b_, sizeof(VT));                                                  \
            memcpy(&b1_, b_ + (W), sizeof(VT));                                            \
            for (int r_ = 0; r_ < (MR); ++r_) {                                            \
                float a_ = (A)[r_ * (lda) + e_];                                           \
                acc0_[r_] += a_ * b0_;                                                     \
                acc1_[r_] += a_ * b1_;                                                     \
            }                                                                              \
        }                                                                                  \
        for (int r_ = 0; r_ < (MR); ++r_) {                                                \
            float *c_ = (C) + r_ * (ldc);                                                  \
            VT c0_ = (alpha) * acc0_[r_], c1_ = (alpha) * acc1_[r_];                       \
            if (accumulate) {                                                              \
                VT o0_, o1_;                                                               \
                memcpy(&o0_, c_, sizeof(VT));                                              \
                memcpy(&o1_, c_ + (W), sizeof(VT));                                        \
                c0_ += o0_;                                                                \
                c1_ += o1_;                                                                \
            }                                                                              \
            memcpy(c_, &c0_, sizeof(VT));                                                  \
            memcpy(c_ + (W), &c1_, sizeof(VT));                                            \
        }                                                                                  \
    } while (0)

#define FDL_AGEMM_DRIVER(VT, W, MR)                                                          \
    for (ptrdiff_t j = 0; j < N; j += 2 * (W)) {                                           \
        ptrdiff_t i = 0;                                                                   \
        for (; i + (MR) <= M; i += (MR))                                                   \
            FDL_AGEMM_BLOCK(VT, W, MR, K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, \
                            alpha, accumulate);                                            \
        for (; i < M; ++i)                                                                 \
            FDL_AGEMM_BLOCK(VT, W, 1, K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, \
                            alpha, accumulate);                                            \
    }

__attribute__((target("avx512f,fma")))
static void fdl_agemm_avx512(int accumulate, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                             float alpha, const float *A, ptrdiff_t lda, const float *B,
                             ptrdiff_t ldb, float *C, ptrdiff_t ldc)
{
    typedef float v16 __attribute__((vector_size(64)));
    FDL_AGEMM_DRIVER(v16, 16, 8)
}

__attribute__((target("avx2,fma")))
static void fdl_agemm_avx2(int accumulate, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                           float alpha, const float *A, ptrdiff_t lda, const float *B,
                           ptrdiff_t ldb, float *C, ptrdiff_t ldc)
{
    typedef float v8 __attribute__((vector_size(32)));
    FDL_AGEMM_DRIVER(v8, 8, 6)
}

/* 2 = AVX-512, 1 = AVX2+FMA, 0 = neither (the caller uses BLAS) */
static inline int fdl_agemm_level(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
    return 0;
}

#else
#define FDL_AGEMM_AVAILABLE 0
static inline int fdl_agemm_level(void) { return 0; }
static inline void fdl_agemm_avx512(int a, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, float al,
                                    const float *A, ptrdiff_t lda, const float *B,
                                    ptrdiff_t ldb, float *C, ptrdiff_t ldc)
{ (void)a; (void)M; (void)N; (void)K; (void)al; (void)A; (void)lda; (void)B; (void)ldb;
  (void)C; (void)ldc; }
static inline void fdl_agemm_avx2(int a, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, float al,
                                  const float *A, ptrdiff_t lda, const float *B,
                                  ptrdiff_t ldb, float *C, ptrdiff_t ldc)
{ (void)a; (void)M; (void)N; (void)K; (void)al; (void)A; (void)lda; (void)B; (void)ldb;
  (void)C; (void)ldc; }
#endif

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
