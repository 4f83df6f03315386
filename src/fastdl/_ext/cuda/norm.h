/*
 * batch_norm, layer_norm and their backward passes on the GPU (norm.cu): the C ABI called by
 * cuda/norm.pxi. Arrays are C-contiguous device arrays of dtype FDL_CUDA_F32 or FDL_CUDA_F64
 * (every array of a call has that dtype); optional arrays may be NULL. Launchers return a
 * cudaError_t as int and queue their work on `stream`.
 *
 * The fdl_cuda_host_* twins run the very same phases (partition, per-thread sums, trees,
 * per-channel formulas) on the CPU over host memory: test shims for machines without a GPU.
 */
#ifndef FASTDL_CUDA_NORM_H
#define FASTDL_CUDA_NORM_H

#include "api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* x, y: (N, C, S) C-contiguous. Training: batch statistics; running_mean/running_var (may be
 * NULL, element strides rm_stride/rv_stride) updated by PyTorch's rule. Inference: running
 * statistics (required). mean_out/inv_out (C,), may be NULL. */
int fdl_cuda_batch_norm_fwd(int dtype, const void *x, void *y, int64_t N, int64_t C, int64_t S,
                            const void *gamma, const void *beta, void *running_mean,
                            int64_t rm_stride, void *running_var, int64_t rv_stride,
                            int training, double momentum, double eps, void *mean_out,
                            void *inv_out, void *stream);
/* dy, x, dx: (N, C, S); gamma (may be NULL), mean, inv_std, dgamma, dbeta: (C,) */
int fdl_cuda_batch_norm_bwd(int dtype, const void *dy, const void *x, int64_t N, int64_t C,
                            int64_t S, const void *gamma, const void *mean, const void *inv_std,
                            void *dx, void *dgamma, void *dbeta, void *stream);
/* x, y: (R, D); gamma, beta: (D,) or NULL; mean_out, inv_out: (R,) or NULL */
int fdl_cuda_layer_norm_fwd(int dtype, const void *x, void *y, int64_t R, int64_t D,
                            const void *gamma, const void *beta, double eps, void *mean_out,
                            void *inv_out, void *stream);
/* dy, x, dx: (R, D); gamma (D,) or NULL (then dgamma, dbeta are not written); mean,
 * inv_std: (R,) */
int fdl_cuda_layer_norm_bwd(int dtype, const void *dy, const void *x, int64_t R, int64_t D,
                            const void *gamma, const void *mean, const void *inv_std, void *dx,
                            void *dgamma, void *dbeta, void *stream);

/* Host twins (same arguments, host pointers, no stream). */
int fdl_cuda_host_batch_norm_fwd(int dtype, const void *x, void *y, int64_t N, int64_t C,
                                 int64_t S, const void *gamma, const void *beta,
                                 void *running_mean, int64_t rm_stride, void *running_var,
                                 int64_t rv_stride, int training, double momentum, double eps,
                                 void *mean_out, void *inv_out);
int fdl_cuda_host_batch_norm_bwd(int dtype, const void *dy, const void *x, int64_t N,
                                 int64_t C, int64_t S, const void *gamma, const void *mean,
                                 const void *inv_std, void *dx, void *dgamma, void *dbeta);
int fdl_cuda_host_layer_norm_fwd(int dtype, const void *x, void *y, int64_t R, int64_t D,
                                 const void *gamma, const void *beta, double eps,
                                 void *mean_out, void *inv_out);
int fdl_cuda_host_layer_norm_bwd(int dtype, const void *dy, const void *x, int64_t R,
                                 int64_t D, const void *gamma, const void *mean,
                                 const void *inv_std, void *dx, void *dgamma, void *dbeta);
/* The batch-norm work split for a shape: out[0] = 1 for the rows kernel (over (N, C*S)),
 * 0 for the planes kernel; out[1] = partial items per channel; out[2..3] = planes: elements
 * per block, blocks per channel, rows: rows per split, splits; out[4] = layer-norm threads
 * per row for a row of S elements (vector width 1). */
void fdl_cuda_host_norm_geometry(int64_t N, int64_t C, int64_t S, int64_t *out);
/* q[i] = n[i] / d by the kernels' multiply-shift division */
void fdl_cuda_host_norm_fastdiv(const uint32_t *n, uint32_t *q, int64_t count, uint32_t d);

#ifdef __cplusplus
}
#endif
#endif
