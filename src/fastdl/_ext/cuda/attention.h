/*
 * Scaled dot-product attention on the GPU (attention.cu): the C ABI of its launchers.
 *
 * The Cython side describes a call in two structs. fdl_attn_batch: the broadcast batch
 * dimensions (already collapsed: size-1 dimensions dropped, mergeable neighbours merged) and,
 * for each operand slot, its element stride along each of them (0 where it is broadcast).
 * fdl_attn_args: pointers, row strides in elements (the last axis has unit stride), sizes,
 * the mask and the results. Results and scratch are C-contiguous over the full batch.
 *
 * Every fdl_cuda_* launcher returns a cudaError_t as int and queues work on the stream given.
 * The *_host twins run the very same block code on the CPU (one host thread per CUDA thread,
 * barriers for __syncthreads, an exchange buffer for warp shuffles) on host pointers: the
 * test shims of the .pxi use them to check the kernels' indexing on machines without a GPU.
 */
#ifndef FASTDL_CUDA_ATTENTION_H
#define FASTDL_CUDA_ATTENTION_H

#include "api.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FDL_ATTN_MAXB 30      /* batch dimensions: FDL_CUDA_MAXDIM minus (rows, columns) */

/* operand slots of fdl_attn_batch.st */
#define FDL_ATTN_Q 0
#define FDL_ATTN_K 1
#define FDL_ATTN_V 2
#define FDL_ATTN_MASK 3
#define FDL_ATTN_DO 4
#define FDL_ATTN_O 5
#define FDL_ATTN_SLOTS 6

/* mask kinds */
#define FDL_ATTN_MASK_NONE 0
#define FDL_ATTN_MASK_BOOL 1   /* one byte per element, nonzero = attend */
#define FDL_ATTN_MASK_F32 2    /* additive, converted to the compute dtype as read */
#define FDL_ATTN_MASK_F64 3

typedef struct {
    int nd;
    int64_t shape[FDL_ATTN_MAXB];
    int64_t st[FDL_ATTN_SLOTS][FDL_ATTN_MAXB];
} fdl_attn_batch;

typedef struct {
    int dtype;                    /* FDL_CUDA_F32 or FDL_CUDA_F64, every float operand */
    int causal;
    int64_t nb, L, S, E, Ev;      /* nb: batch entries (product of the batch shape) */
    double scale;
    /* inputs: q (L x E), k (S x E), v (S x Ev); backward also dout, out (L x Ev) */
    const void *q, *k, *v, *dout, *out;
    int64_t ldq, ldk, ldv, lddo, ldo;
    /* 1 where 16-byte copies are allowed: base, row and batch strides all 16-byte multiples */
    int vec_q, vec_k, vec_v, vec_do;
    /* mask element (i, j) of batch entry b: mask[off_b + i * mls + j * mss] */
    int mask_kind;
    const void *mask;
    int64_t mls, mss;
    /* forward results: o (nb, L, Ev), lse (nb, L) */
    void *o_res, *lse_res;
    /* backward: lse (nb, L) input, delta (nb, L) scratch, results dq (nb, L, E),
       dk (nb, S, E), dv (nb, S, Ev) */
    const void *lse;
    void *delta, *dq, *dk, *dv;
} fdl_attn_args;

/* out[(kept index), inner] = sum over the reduced batch dimensions of g; kept and reduced
   dimensions index g (C-contiguous (batch..., inner)) through their element strides. */
typedef struct {
    int nk, nr;
    int64_t kshape[FDL_ATTN_MAXB], kst[FDL_ATTN_MAXB];
    int64_t rshape[FDL_ATTN_MAXB], rst[FDL_ATTN_MAXB];
    int64_t inner;
} fdl_attn_reduce;

int fdl_cuda_sdpa_forward(const fdl_attn_args *a, const fdl_attn_batch *b, void *stream);
int fdl_cuda_sdpa_backward(const fdl_attn_args *a, const fdl_attn_batch *b, void *stream);
int fdl_cuda_attn_reduce(int dtype, void *out, const void *g, const fdl_attn_reduce *r,
                         void *stream);

int fdl_cuda_sdpa_forward_host(const fdl_attn_args *a, const fdl_attn_batch *b);
int fdl_cuda_sdpa_backward_host(const fdl_attn_args *a, const fdl_attn_batch *b);
int fdl_cuda_attn_reduce_host(int dtype, void *out, const void *g, const fdl_attn_reduce *r);

/* The tile configuration chosen for a call: padded head dimension D, query and key tile
   sizes of the kernel `which` (0 forward, 1 backward dK/dV, 2 backward dQ), its dynamic
   shared memory in bytes. Returns 0, or cudaErrorInvalidValue for an unsupported shape. */
int fdl_cuda_sdpa_config(int dtype, int64_t E, int64_t Ev, int which, int *D, int *bq,
                         int *bk, int64_t *smem);

#ifdef __cplusplus
}
#endif
#endif
