/*
 * A register-blocked float32 GEMM for the small and skinny products where OpenBLAS's packing
 * and edge handling dominate: C = alpha A B (+ a bias per row of C, added as the block is
 * stored: no separate pass), or C += alpha A B, A (M x K, row stride lda),
 * B (K x N, row stride ldb), C (M x N, row stride ldc), all row-major with unit column stride.
 *
 * Measured on one Zen 4 core (best of 7, shared machine): attention's S = Q K^T tiles
 * (128 x 256 x 64) 105 GFLOP/s against OpenBLAS's 40-67; a 3x3 convolution's unit
 * (64 x 1024 x 576) 106 against 79. B's panel of 32 columns is walked down K while MR rows
 * of A are broadcast against it, an MR x 32 block of C accumulating in registers.
 *
 * Two builds, picked at run time from the CPU's features: AVX-512 (MR = 8 rows x two
 * 16-float vectors: 16 of the 32 zmm registers) and AVX2+FMA (MR = 6 x two 8-float vectors:
 * 12 of the 16 ymm). Written with GCC vector extensions, so one body serves both widths; a
 * CPU with neither (fdl_sgemm_level() == 0) or another compiler leaves the caller to BLAS.
 * Each element of C is a sum over k in increasing order, so results depend neither on the
 * thread count nor on how a caller splits M or N.
 */
#ifndef FASTDL_SGEMM_H
#define FASTDL_SGEMM_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#if FDL_HAVE_DISPATCH
#define FDL_SGEMM_AVAILABLE 1

/* one MR x (2 W) block of C: rows i.., columns j..; BROW is B's row e_ (an expression of the
   loop index e_: `B + e_ * ldb` for a plain matrix, `Bb + offs[e_]` for the implicit GEMM
   of a convolution, whose lowered rows are runs of a zero-padded image) */
#define FDL_SGEMM_BLOCK(VT, W, MR, K, A, lda, BROW, C, ldc, alpha, accumulate, rbias)      \
    do {                                                                                   \
        VT acc0_[MR], acc1_[MR];                                                           \
        for (int r_ = 0; r_ < (MR); ++r_) {                                                \
            acc0_[r_] = (VT){0};                                                           \
            acc1_[r_] = (VT){0};                                                           \
        }                                                                                  \
        for (ptrdiff_t e_ = 0; e_ < (K); ++e_) {                                           \
            const float *b_ = (BROW);                                                      \
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
            } else if (rbias) {                                                            \
                c0_ += (rbias)[r_];                                                        \
                c1_ += (rbias)[r_];                                                        \
            }                                                                              \
            memcpy(c_, &c0_, sizeof(VT));                                                  \
            memcpy(c_ + (W), &c1_, sizeof(VT));                                            \
        }                                                                                  \
    } while (0)

#define FDL_SGEMM_DRIVER(VT, W, MR)                                                          \
    for (ptrdiff_t j = 0; j < N; j += 2 * (W)) {                                           \
        ptrdiff_t i = 0;                                                                   \
        for (; i + (MR) <= M; i += (MR))                                                   \
            FDL_SGEMM_BLOCK(VT, W, MR, K, A + i * lda, lda, B + j + e_ * ldb, C + i * ldc + j, \
                            ldc, alpha, accumulate, rbias ? rbias + i : NULL);             \
        for (; i < M; ++i)                                                                 \
            FDL_SGEMM_BLOCK(VT, W, 1, K, A + i * lda, lda, B + j + e_ * ldb, C + i * ldc + j, \
                            ldc, alpha, accumulate, rbias ? rbias + i : NULL);             \
    }

/* y[:, oh, ow0 .. ow0 + 32) for every output row oh and 32-column panel of a stride-1,
   dilation-1 convolution of one image: A = the weights (M = O rows of K = C kh kw), xp the
   zero-padded image (rows of Wp), offs[k] the offset of lowered row k in xp; Wo a multiple
   of 32; y rows of ldc = Ho Wo. */
#define FDL_SGEMM_IMPLICIT(VT, W, MR)                                                        \
    for (ptrdiff_t oh = 0; oh < Ho; ++oh)                                                  \
        for (ptrdiff_t ow0 = 0; ow0 < Wo; ow0 += 2 * (W)) {                                \
            const float *bb = xp + oh * Wp + ow0;                                          \
            float *cc = y + oh * Wo + ow0;                                                 \
            ptrdiff_t i = 0;                                                               \
            for (; i + (MR) <= M; i += (MR))                                               \
                FDL_SGEMM_BLOCK(VT, W, MR, K, A + i * K, K, bb + offs[e_], cc + i * ldc, ldc, \
                                1.0f, 0, rbias ? rbias + i : NULL);                        \
            for (; i < M; ++i)                                                             \
                FDL_SGEMM_BLOCK(VT, W, 1, K, A + i * K, K, bb + offs[e_], cc + i * ldc, ldc, \
                                1.0f, 0, rbias ? rbias + i : NULL);                        \
        }

__attribute__((target("avx512f,fma")))
static void fdl_sgemm_implicit_avx512(ptrdiff_t M, ptrdiff_t K, const float *A,
                                      const float *xp, const ptrdiff_t *offs, ptrdiff_t Wp,
                                      ptrdiff_t Ho, ptrdiff_t Wo, float *y, ptrdiff_t ldc,
                                      const float *rbias)
{
    typedef float v16 __attribute__((vector_size(64)));
    FDL_SGEMM_IMPLICIT(v16, 16, 8)
}

__attribute__((target("avx2,fma")))
static void fdl_sgemm_implicit_avx2(ptrdiff_t M, ptrdiff_t K, const float *A,
                                    const float *xp, const ptrdiff_t *offs, ptrdiff_t Wp,
                                    ptrdiff_t Ho, ptrdiff_t Wo, float *y, ptrdiff_t ldc,
                                    const float *rbias)
{
    typedef float v8 __attribute__((vector_size(32)));
    FDL_SGEMM_IMPLICIT(v8, 8, 6)
}

__attribute__((target("avx512f,fma")))
static void fdl_sgemm_avx512(int accumulate, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                             float alpha, const float *A, ptrdiff_t lda, const float *B,
                             ptrdiff_t ldb, float *C, ptrdiff_t ldc, const float *rbias)
{
    typedef float v16 __attribute__((vector_size(64)));
    FDL_SGEMM_DRIVER(v16, 16, 8)
}

__attribute__((target("avx2,fma")))
static void fdl_sgemm_avx2(int accumulate, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                           float alpha, const float *A, ptrdiff_t lda, const float *B,
                           ptrdiff_t ldb, float *C, ptrdiff_t ldc, const float *rbias)
{
    typedef float v8 __attribute__((vector_size(32)));
    FDL_SGEMM_DRIVER(v8, 8, 6)
}

/* 2 = AVX-512, 1 = AVX2+FMA, 0 = neither (the caller uses BLAS) */
static inline int fdl_sgemm_level(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
    return 0;
}

#else
#define FDL_SGEMM_AVAILABLE 0
static inline void fdl_sgemm_implicit_avx512(ptrdiff_t M, ptrdiff_t K, const float *A,
                                             const float *xp, const ptrdiff_t *offs,
                                             ptrdiff_t Wp, ptrdiff_t Ho, ptrdiff_t Wo,
                                             float *y, ptrdiff_t ldc, const float *rbias)
{ (void)M; (void)K; (void)A; (void)xp; (void)offs; (void)Wp; (void)Ho; (void)Wo; (void)y;
  (void)ldc; (void)rbias; }
static inline void fdl_sgemm_implicit_avx2(ptrdiff_t M, ptrdiff_t K, const float *A,
                                           const float *xp, const ptrdiff_t *offs,
                                           ptrdiff_t Wp, ptrdiff_t Ho, ptrdiff_t Wo,
                                           float *y, ptrdiff_t ldc, const float *rbias)
{ (void)M; (void)K; (void)A; (void)xp; (void)offs; (void)Wp; (void)Ho; (void)Wo; (void)y;
  (void)ldc; (void)rbias; }
static inline int fdl_sgemm_level(void) { return 0; }
static inline void fdl_sgemm_avx512(int a, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, float al,
                                    const float *A, ptrdiff_t lda, const float *B,
                                    ptrdiff_t ldb, float *C, ptrdiff_t ldc, const float *rb)
{ (void)a; (void)M; (void)N; (void)K; (void)al; (void)A; (void)lda; (void)B; (void)ldb;
  (void)C; (void)ldc; (void)rb; }
static inline void fdl_sgemm_avx2(int a, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, float al,
                                  const float *A, ptrdiff_t lda, const float *B,
                                  ptrdiff_t ldb, float *C, ptrdiff_t ldc, const float *rb)
{ (void)a; (void)M; (void)N; (void)K; (void)al; (void)A; (void)lda; (void)B; (void)ldb;
  (void)C; (void)ldc; (void)rb; }
#endif


/* Floats of scratch fdl_sgemm needs for a partial last panel. */
static inline ptrdiff_t fdl_sgemm_scratch(ptrdiff_t M, ptrdiff_t K) { return 32 * (K + M); }

/* C = alpha A B (accumulate = 0) or C += alpha A B, any N: whole 32-column panels in place,
   the last partial panel through a zero-padded copy of B's columns and a 32-wide C block in
   `scratch` (fdl_sgemm_scratch(M, K) floats; NULL: allocated here). Returns 0, or -1 when
   that allocation failed (C is then untouched: nothing has been computed). level:
   fdl_sgemm_level(). */
static inline int fdl_sgemm(int level, int accumulate, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                            float alpha, const float *A, ptrdiff_t lda, const float *B,
                            ptrdiff_t ldb, float *C, ptrdiff_t ldc, const float *rbias,
                            float *scratch)
{
    ptrdiff_t whole = N / 32 * 32, rest = N - whole;
    float *bp = scratch, *owned = NULL;
    if (rest % 16 == 0 && rest != 0) {
        /* 16 columns left: the AVX2 kernel's 6 x 16 blocks take them in place (its panels
           are 16 wide), rather than a 32-wide padded panel of which half is thrown away;
           each element is the same FMA chain over k, so the bits are the same. */
        if (whole > 0) {
            if (level == 2)
                fdl_sgemm_avx512(accumulate, M, whole, K, alpha, A, lda, B, ldb, C, ldc, rbias);
            else
                fdl_sgemm_avx2(accumulate, M, whole, K, alpha, A, lda, B, ldb, C, ldc, rbias);
        }
        fdl_sgemm_avx2(accumulate, M, rest, K, alpha, A, lda, B + whole, ldb, C + whole, ldc,
                       rbias);
        return 0;
    }
    if (rest != 0 && M != 0 && bp == NULL) {
        bp = owned = (float *)malloc(sizeof(float) * (size_t)fdl_sgemm_scratch(M, K));
        if (bp == NULL)
            return -1;
    }
    if (whole > 0) {
        if (level == 2)
            fdl_sgemm_avx512(accumulate, M, whole, K, alpha, A, lda, B, ldb, C, ldc, rbias);
        else
            fdl_sgemm_avx2(accumulate, M, whole, K, alpha, A, lda, B, ldb, C, ldc, rbias);
    }
    if (rest == 0 || M == 0)
        return 0;
    float *cp = bp + K * 32;
    for (ptrdiff_t k = 0; k < K; ++k) {
        memcpy(bp + k * 32, B + k * ldb + whole, (size_t)rest * sizeof(float));
        memset(bp + k * 32 + rest, 0, (size_t)(32 - rest) * sizeof(float));
    }
    for (ptrdiff_t i = 0; i < M; ++i) {
        if (accumulate)
            memcpy(cp + i * 32, C + i * ldc + whole, (size_t)rest * sizeof(float));
        memset(cp + i * 32 + (accumulate ? rest : 0), 0,
               (size_t)(accumulate ? 32 - rest : 32) * sizeof(float));
    }
    if (level == 2)
        fdl_sgemm_avx512(accumulate, M, 32, K, alpha, A, lda, bp, 32, cp, 32, rbias);
    else
        fdl_sgemm_avx2(accumulate, M, 32, K, alpha, A, lda, bp, 32, cp, 32, rbias);
    for (ptrdiff_t i = 0; i < M; ++i)
        memcpy(C + i * ldc + whole, cp + i * 32, (size_t)rest * sizeof(float));
    free(owned);
    return 0;
}

#endif
