/*
 * Optimiser updates on the GPU (optim.cu): the C ABI called by cuda/optim.pxi.
 *
 * One call updates a list of tensors in place with one kernel launch per group of up to
 * about a hundred tensors of one dtype (their pointers and sizes travel by value in the
 * kernel's parameters; blocks are mapped over the tensors' concatenated chunks).
 */
#ifndef FASTDL_CUDA_OPTIM_H
#define FASTDL_CUDA_OPTIM_H

#include "api.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FDL_CUDA_OPT_SGD 0       /* w, g */
#define FDL_CUDA_OPT_SGDM 1      /* w, g, buf */
#define FDL_CUDA_OPT_MOMENTUM 2  /* w, g, v */
#define FDL_CUDA_OPT_ADAM 3      /* w, g, m, v */

/* Hyper-parameters in double, rounded to the tensors' dtype on the host, as the CPU's
 * fdl_opt_hp (include/fastdl/optim.h): mode 0 no decay, 1 L2 into the gradient, 2 AdamW;
 * bc1, bc2 = 1 - beta^t; decay = 1 - lr * wd. */
typedef struct {
    double lr, wd, mu, b1, b2, bc1, bc2, eps, decay;
    int mode;
} fdl_cuda_opt_hp;

/* ptrs[4 * i + k]: operand k (w, g, state 1, state 2; unused ones NULL) of tensor i, each a
 * C-contiguous device array of n[i] elements of `dtype`. */
int fdl_cuda_optim_multi(int op, int dtype, int ntensors, void *const *ptrs, const int64_t *n,
                         const fdl_cuda_opt_hp *hp, void *stream);
/* dst viewed through shape and byte strides (any sign) = src (C-contiguous); itemsize 4 or 8:
 * writes back an update made on a contiguous copy of a strided array */
int fdl_cuda_optim_scatter(void *dst, const void *src, int ndim, const int64_t *shape,
                           const int64_t *strides_bytes, int itemsize, void *stream);
/* Host twin of fdl_cuda_optim_multi (host pointers): the same grouping, block-to-chunk
 * mapping and element formulas, run in loops. */
int fdl_cuda_host_optim_multi(int op, int dtype, int ntensors, void *const *ptrs,
                              const int64_t *n, const fdl_cuda_opt_hp *hp);
/* Tensors per launch for an op (the capacity of the parameter table). */
int fdl_cuda_optim_capacity(int op);

#ifdef __cplusplus
}
#endif
#endif
