/*
 * Dropout on the GPU (C ABI, see api.h): the forward from a seed (optionally writing the
 * keep-mask), and the backward from a stored mask or from the seed, bit for bit the CPU's
 * (include/fastdl/philox.h: element i, its C-order index, is kept iff word i of the
 * Philox4x32-10 stream of the seed is >= thr; kept values x * scale in the dtype, dropped +0).
 */
#ifndef FASTDL_CUDA_DROPOUT_H
#define FASTDL_CUDA_DROPOUT_H

#include "api.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    FDL_CU_DROPOUT_FWD = 0,        /* keep from the seed's words; mask_out written if given */
    FDL_CU_DROPOUT_FROM_MASK = 1   /* keep where mask_in is nonzero */
};

typedef struct {
    int dtype;                      /* FDL_CUDA_F32 or FDL_CUDA_F64 */
    int mode;
    int ndim;
    int64_t shape[FDL_CUDA_MAXDIM];
    const void *x;
    int64_t x_strides[FDL_CUDA_MAXDIM];     /* elements, any sign */
    const unsigned char *mask_in;           /* FROM_MASK: bool values */
    int64_t m_strides[FDL_CUDA_MAXDIM];     /* bytes */
    void *y;                                /* C-contiguous; may be x itself */
    unsigned char *mask_out;                /* C-contiguous bool, or NULL */
    uint64_t seed;
    uint64_t thr;                   /* keep iff word >= thr; 2^32 keeps nothing */
    double scale;                   /* rounded to the dtype: kept values are x * scale */
} fdl_cu_dropout_args;

int fdl_cuda_dropout(const fdl_cu_dropout_args *args, void *stream);

/* Test shims, on the CPU: the same plan and kernel body (host-compiled) run as `nthreads`
   threads of the grid-stride loop (force_walk 1 or 2: the strided body with 32- or 64-bit
   indices whatever the plan chose); the path the device would take (0 contiguous, 1
   strided with 32-bit indices, 2 with 64-bit, 3 nothing to do; -1 bad arguments); and the
   stream words and the block function from the kernels' Philox code. */
int fdl_cuda_dropout_host(const fdl_cu_dropout_args *args, int64_t nthreads, int force_walk);
int fdl_cuda_dropout_path(const fdl_cu_dropout_args *args);
void fdl_cuda_host_philox_words(uint64_t seed, uint64_t first, int64_t n, uint32_t *out);
void fdl_cuda_host_philox4x32_10(const uint32_t *ctr, const uint32_t *key, uint32_t *out);

#ifdef __cplusplus
}
#endif
#endif
