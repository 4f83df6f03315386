/*
 * GEMM through cuBLAS (loaded at run time with dlopen: nothing of cuBLAS is needed to build),
 * the bias fill that linear and conv2d accumulate onto, and the deterministic channel sums
 * of their bias gradients.
 *
 * Return values: 0, a cudaError_t (> 0), or a negated cublasStatus_t (< 0; see
 * fdl_cuda_blas_status_string). Every *_host twin runs the same code on host memory (the
 * GEMM: a reference of cuBLAS's column-major contract, fed by the same argument translation)
 * so that the test suite can check the plans and the index math on a machine without a GPU.
 */
#ifndef FASTDL_CUDA_BLAS_H
#define FASTDL_CUDA_BLAS_H

#include "api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Try each path in order with dlopen until one resolves every required entry point. 0 when
 * cuBLAS is loaded (now or before; `loaded` gets its path), 1 when none did (`err` gets each
 * path's reason, '\n'-separated). */
int fdl_cuda_blas_load(const char *const *paths, int npaths, char *loaded, int loaded_len,
                       char *err, int err_len);
int fdl_cuda_blas_is_loaded(void);
/* A description of a negated cublasStatus_t (cuBLAS's own text when it offers one). */
const char *fdl_cuda_blas_status_string(int status);
/* float32 GEMMs on TF32 tensor cores (off by default: true FP32). */
void fdl_cuda_blas_set_tf32(int allow);
int fdl_cuda_blas_get_tf32(void);

/* Row-major, strided-batched: for b < batch,
 *   C_b = alpha * op(A_b) @ op(B_b) + beta * C_b,   op(X) = X or X^T (trans_x),
 * C_b (m x n) at c + b*stride_c with row stride ldc; A_b stored (trans_a ? k x m : m x k) at
 * a + b*stride_a with row stride lda; likewise B_b (k x n or n x k). Strides and lds are in
 * elements; beta == 0 never reads C. Runs on `stream`. */
int fdl_cuda_gemm(int dtype, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                  double alpha, const void *a, int64_t lda, int64_t stride_a, const void *b,
                  int64_t ldb, int64_t stride_b, double beta, void *c, int64_t ldc,
                  int64_t stride_c, int64_t batch, void *stream);
int fdl_cuda_gemm_host(int dtype, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                       double alpha, const void *a, int64_t lda, int64_t stride_a,
                       const void *b, int64_t ldb, int64_t stride_b, double beta, void *c,
                       int64_t ldc, int64_t stride_c, int64_t batch);

/* y (outer, n, inner), C-contiguous: y[a, j, p] = bias[j]. */
int fdl_cuda_fill_bias(int dtype, void *y, const void *bias, int64_t outer, int64_t n,
                       int64_t inner, void *stream);
int fdl_cuda_fill_bias_host(int dtype, void *y, const void *bias, int64_t outer, int64_t n,
                            int64_t inner);

/* out[o] = sum over a, p of x[a, o, p] for x (A, O, B) C-contiguous, accumulated in double
 * in an order fixed by the shape alone (deterministic). A*B == 0 gives zeros. */
int fdl_cuda_sum_aob(int dtype, const void *x, int64_t A, int64_t O, int64_t B, void *out,
                     void *stream);
int fdl_cuda_sum_aob_host(int dtype, const void *x, int64_t A, int64_t O, int64_t B,
                          void *out);

#ifdef __cplusplus
}
#endif
#endif
