/*
 * Launchers of the softmax family and the losses on the GPU (softmax_losses.cu), C ABI.
 *
 * Arrays are C-contiguous device memory; the reduction axis of an array is described as
 * (outer, n, inner): element (o, l, i) at o * n * inner + l * inner + i. dtype is FDL_CUDA_F32
 * or FDL_CUDA_F64. Every launcher returns a cudaError_t as int and queues its work on stream.
 * `path` forces a kernel for tests (FDL_SL_PATH_*; 0 picks by shape, and a forced path the
 * shape cannot take falls back to that choice).
 *
 * The fdl_cuda_sl_host_* functions run the kernels' arithmetic on the host (host pointers, no
 * device needed), in the kernels' order of operations: test shims.
 */
#ifndef FASTDL_CUDA_SOFTMAX_LOSSES_H
#define FASTDL_CUDA_SOFTMAX_LOSSES_H

#include "api.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FDL_SL_PATH_AUTO 0
#define FDL_SL_PATH_WARP 1          /* rows in registers, a group of <= 32 lanes per row */
#define FDL_SL_PATH_BLOCK_CACHED 2  /* a block per row, the row kept in shared memory */
#define FDL_SL_PATH_BLOCK_ONLINE 3  /* a block per row, online pass then a write pass */
#define FDL_SL_PATH_COLS 4          /* lanes along a strided axis (inner > 1) */

/* The fused softmax cross-entropy over (outer, n, inner) logits. */
typedef struct {
    const void *x;          /* logits */
    const void *t;          /* probability targets (the logits' layout), or NULL */
    const int64_t *label;   /* class indices, one per sample (outer * inner), or NULL */
    void *grad;             /* dlogits (the logits' layout), or NULL */
    void *loss;             /* per-sample losses (outer * inner, the logits' dtype), or NULL */
    double *partials;       /* per-block loss sums (fdl_cuda_sce_blocks of them), or NULL */
    const int64_t *count;   /* samples counted by a mean (device), or NULL: gscale is used */
    int64_t outer, n, inner;
    double eps;             /* label smoothing */
    double gscale;          /* gradient scale when count is NULL */
    int64_t ignore;
    int has_ignore;
    int dtype;
    int path;
} fdl_cuda_sce_args;

int fdl_cuda_softmax(const void *x, void *y, int64_t outer, int64_t n, int64_t inner, int dtype,
                     int log, int path, void *stream);
int fdl_cuda_softmax_backward(const void *dy, const void *y, void *dx, int64_t outer, int64_t n,
                              int64_t inner, int dtype, int log, int path, void *stream);

/* blocks (= partial sums) of fdl_cuda_softmax_cross_entropy for this shape and path */
int64_t fdl_cuda_sce_blocks(int64_t outer, int64_t n, int64_t inner, int dtype, int path);
int fdl_cuda_softmax_cross_entropy(const fdl_cuda_sce_args *a, void *stream);

/* *count = number of labels != ignore (count must be zeroed first) */
int fdl_cuda_sl_count_kept(const int64_t *label, int64_t n, int64_t ignore, int64_t *count,
                           void *stream);
/* int32 / uint8 class indices widened to int64 */
int fdl_cuda_sl_widen_labels(const void *src, int src_dtype, int64_t *dst, int64_t n,
                             void *stream);
/* *out (a 0-d array of dtype) = sum(partials) or, mean, sum / (count_dev ? *count_dev : count) */
int fdl_cuda_sl_finish(const double *partials, int64_t np, int mean, double count,
                       const int64_t *count_dev, void *out, int dtype, void *stream);

/* cross_entropy: per-row -sum(t * log p) over rows of n (loss, or NULL) and per-block sums
 * (partials, fdl_cuda_xent_blocks of them, or NULL) */
int64_t fdl_cuda_xent_blocks(int64_t rows, int64_t n);
int fdl_cuda_cross_entropy(const void *t, const void *p, void *loss, double *partials,
                           int64_t rows, int64_t n, int dtype, void *stream);

/* mse: per-block sums of (t - p)^2 (fdl_cuda_mse_blocks of them) */
int64_t fdl_cuda_mse_blocks(int64_t n, int dtype);
int fdl_cuda_mse_sum(const void *t, const void *p, double *partials, int64_t n, int dtype,
                     void *stream);

/* elementwise: op 0 (t - p)^2, 1 (p - t) * scale, 2 -(t / p) * scale (0 where t == 0) */
int fdl_cuda_sl_map(const void *t, const void *p, void *out, int64_t n, int op, double scale,
                    int dtype, void *stream);

/* host emulation (test shims): the same results as the launchers above, on host memory */
int fdl_cuda_sl_host_softmax(const void *x, void *y, int64_t outer, int64_t n, int64_t inner,
                             int dtype, int log, int path);
int fdl_cuda_sl_host_softmax_backward(const void *dy, const void *y, void *dx, int64_t outer,
                                      int64_t n, int64_t inner, int dtype, int log, int path);
int fdl_cuda_sl_host_softmax_cross_entropy(const fdl_cuda_sce_args *a);
int fdl_cuda_sl_host_finish(const double *partials, int64_t np, int mean, double count,
                            void *out, int dtype);
int fdl_cuda_sl_host_cross_entropy(const void *t, const void *p, void *loss, double *partials,
                                   int64_t rows, int64_t n, int dtype);
int fdl_cuda_sl_host_mse_sum(const void *t, const void *p, double *partials, int64_t n,
                             int dtype);
int fdl_cuda_sl_host_map(const void *t, const void *p, void *out, int64_t n, int op,
                         double scale, int dtype);
/* the kernel a shape takes (FDL_SL_PATH_*); *tpr / *e: lanes per row and elements per lane
 * of the register path; op 0 forward, 1 backward, 2 cross-entropy */
int fdl_cuda_sl_plan(int64_t outer, int64_t n, int64_t inner, int dtype, int op, int path,
                     int *tpr, int *e, int *threads, int64_t *blocks);

#ifdef __cplusplus
}
#endif
#endif
