/*
 * Elementwise GPU ops (C ABI, see api.h): activations, their derivatives, the fused chain
 * rule and the broadcasting arithmetic, one entry point for all of them.
 */
#ifndef FASTDL_CUDA_ELEMENTWISE_H
#define FASTDL_CUDA_ELEMENTWISE_H

#include "api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Ops: 0 .. FDL_CU_EW_NUNARY - 1 take one operand, the rest two. */
enum {
    FDL_CU_RELU, FDL_CU_LEAKY_RELU, FDL_CU_SIGMOID, FDL_CU_TANH, FDL_CU_GELU,
    FDL_CU_GELU_TANH, FDL_CU_SILU,
    FDL_CU_RELU_GRAD, FDL_CU_LEAKY_RELU_GRAD, FDL_CU_SIGMOID_GRAD, FDL_CU_TANH_GRAD,
    FDL_CU_GELU_GRAD, FDL_CU_GELU_TANH_GRAD, FDL_CU_SILU_GRAD,
    FDL_CU_EW_NUNARY,
    FDL_CU_ADD = FDL_CU_EW_NUNARY, FDL_CU_SUBTRACT, FDL_CU_MULTIPLY, FDL_CU_DIVIDE,
    FDL_CU_MAXIMUM,
    FDL_CU_RELU_BW, FDL_CU_LEAKY_RELU_BW, FDL_CU_SIGMOID_BW, FDL_CU_TANH_BW, FDL_CU_GELU_BW,
    FDL_CU_GELU_TANH_BW, FDL_CU_SILU_BW,
    FDL_CU_EW_NOPS
};

/*
 * y = op(src[0] [, src[1]]) over `shape` (ndim axes, C order). y is C-contiguous. Operand j
 * is the array src[j] read with strides[j] (in elements, any sign, 0 along a broadcast
 * axis; already broadcast to ndim axes), or, when src[j] is NULL, the value scalar[j]
 * (rounded to the dtype). param: leaky_relu's alpha (rounded to the dtype), else unused.
 * y may be exactly an input (same memory, contiguous): each element is read before it is
 * written by the same thread. Any other overlap is the caller's to avoid.
 */
typedef struct {
    int op;
    int dtype;                      /* FDL_CUDA_F32 or FDL_CUDA_F64 */
    int ndim;
    int64_t shape[FDL_CUDA_MAXDIM];
    void *y;
    const void *src[2];
    double scalar[2];
    int64_t strides[2][FDL_CUDA_MAXDIM];
    double param;
} fdl_cu_ew_args;

int fdl_cuda_elementwise(const fdl_cu_ew_args *args, void *stream);

/* Test shims, on the CPU: the same plan and the same kernel bodies (host-compiled), run as
   `nthreads` threads of one grid-stride loop, one after the other; force_walk 1 or 2 runs
   the strided body (32- or 64-bit indices) whatever the plan chose. Returns 0, or a
   cudaError_t for bad arguments. */
int fdl_cuda_elementwise_host(const fdl_cu_ew_args *args, int64_t nthreads, int force_walk);
/* The path the device would take: 0 vectorised contiguous, 1 scalar contiguous, 2 strided
   with 32-bit indices, 3 strided with 64-bit indices, 4 nothing to do, 5 strided by 16-byte
   packs along contiguous rows; -1 bad arguments. */
int fdl_cuda_elementwise_path(const fdl_cu_ew_args *args);
/* q = n / d through the magic-number division of the strided kernels, for n[i], d[i]. */
void fdl_cuda_host_fastdiv(const uint32_t *n, const uint32_t *d, uint32_t *q, int64_t count);

#ifdef __cplusplus
}
#endif
#endif
