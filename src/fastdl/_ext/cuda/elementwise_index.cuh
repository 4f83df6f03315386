/*
 * Index arithmetic shared by the elementwise and dropout kernels: the C-order walk of a
 * logical shape over operands with arbitrary element strides (0 for a broadcast axis).
 *
 * Every helper here is __host__ __device__ and free of CUDA intrinsics, so the host test
 * shims (the _host_* functions of the .pxi files) run exactly this code on the CPU.
 *
 * Speed: a per-element division by a run-time axis size is the cost of a strided walk. While
 * indices fit in 32 bits (fewer than 2^32 elements) each division is a multiply-high, a add
 * and a shift with a precomputed magic number (Granlund and Montgomery, "Division by
 * invariant integers using multiplication", PLDI 1994, the round-up method with a 33-bit
 * intermediate); larger arrays take the plain 64-bit division.
 */
#ifndef FASTDL_CUDA_ELEMENTWISE_INDEX_CUH
#define FASTDL_CUDA_ELEMENTWISE_INDEX_CUH

#include <stdint.h>
#include "api.h"

#ifndef FDL_CU_HD
#define FDL_CU_HD __host__ __device__ __forceinline__
#endif

/* #pragma unroll for the device pass only: the host pass of these __host__ __device__
   bodies (the test shims) would warn about an unknown pragma under -Wall */
#ifndef FDL_CU_UNROLL
#ifdef __CUDA_ARCH__
#define FDL_CU_UNROLL _Pragma("unroll")
#else
#define FDL_CU_UNROLL
#endif
#endif

/* n / d for 32-bit n and 1 <= d < 2^32: q = (mulhi(n, m) + n) >> s, the sum in 64 bits so it
   cannot wrap. With s = ceil(log2 d) and m = floor(2^32 (2^s - d) / d) + 1 this is exact for
   every 32-bit n (the test shim checks it against plain division, edges included). */
struct FdlCuDiv {
    uint32_t d, m, s;
};

static inline FdlCuDiv fdl_cu_div_make(uint32_t d) {
    FdlCuDiv v;
    uint32_t s = 0;
    while (s < 32 && ((uint64_t)1 << s) < d)
        s++;
    v.d = d;
    v.s = s;
    v.m = (uint32_t)((((uint64_t)1 << 32) * ((((uint64_t)1 << s) - d)) / d) + 1);
    return v;
}

FDL_CU_HD uint32_t fdl_cu_div(uint32_t n, const FdlCuDiv &v) {
    uint64_t hi = ((uint64_t)n * v.m) >> 32;
    return (uint32_t)((hi + n) >> v.s);
}

/* The C-order walk of up to FDL_CUDA_MAXDIM axes (outermost first) for NOPS operands;
   stride[j][d] is operand j's step along axis d in its own units (elements, or bytes for a
   mask). Built on the host by fdl_cu_walk_make, which drops unit axes and merges neighbours
   that every operand steps across uniformly, so a contiguous or broadcast operand usually
   leaves one or two axes. */
template <int NOPS>
struct FdlCuWalk {
    int nd;                                   /* >= 1 */
    int64_t size[FDL_CUDA_MAXDIM];
    FdlCuDiv div[FDL_CUDA_MAXDIM];            /* of size[d], when size[d] < 2^32 */
    int64_t stride[NOPS][FDL_CUDA_MAXDIM];
};

/* Fill w from shape (ndim axes) and the operands' strides (strides[j] == NULL: operand j has
   no memory, e.g. a scalar, and constrains nothing). Returns the element count. */
template <int NOPS>
static inline int64_t fdl_cu_walk_make(FdlCuWalk<NOPS> *w, int ndim, const int64_t *shape,
                                       const int64_t *const strides[NOPS]) {
    int64_t n = 1;
    w->nd = 0;
    for (int d = 0; d < ndim; ++d) {
        n *= shape[d];
        if (shape[d] == 1)
            continue;
        int k = w->nd;
        bool merge = k > 0;
        for (int j = 0; j < NOPS && merge; ++j) {
            int64_t st = strides[j] ? strides[j][d] : 0;
            if (w->stride[j][k - 1] != st * shape[d])
                merge = false;
        }
        if (merge) {
            w->size[k - 1] *= shape[d];
            for (int j = 0; j < NOPS; ++j)
                w->stride[j][k - 1] = strides[j] ? strides[j][d] : 0;
            continue;
        }
        w->size[k] = shape[d];
        for (int j = 0; j < NOPS; ++j)
            w->stride[j][k] = strides[j] ? strides[j][d] : 0;
        w->nd = k + 1;
    }
    if (w->nd == 0) {   /* one element (or a shape of unit axes) */
        w->nd = 1;
        w->size[0] = 1;
        for (int j = 0; j < NOPS; ++j)
            w->stride[j][0] = 0;
    }
    for (int d = 0; d < w->nd; ++d) {   /* an empty or huge axis is never divided by */
        int64_t sz = w->size[d];
        w->div[d] = fdl_cu_div_make(sz >= 1 && sz < ((int64_t)1 << 32) ? (uint32_t)sz : 1u);
    }
    return n;
}

/* Operand j's offset of element i (C order); WIDE: 64-bit indices (n >= 2^32). */
template <int NOPS, bool WIDE>
FDL_CU_HD void fdl_cu_walk_offsets(const FdlCuWalk<NOPS> &w, int64_t i, int64_t off[NOPS]) {
    for (int j = 0; j < NOPS; ++j)
        off[j] = 0;
    if (WIDE) {
        uint64_t r = (uint64_t)i;
        for (int d = w.nd - 1; d >= 1; --d) {
            uint64_t q = r / (uint64_t)w.size[d];
            int64_t c = (int64_t)(r - q * (uint64_t)w.size[d]);
            for (int j = 0; j < NOPS; ++j)
                off[j] += c * w.stride[j][d];
            r = q;
        }
        for (int j = 0; j < NOPS; ++j)
            off[j] += (int64_t)r * w.stride[j][0];
    } else {
        uint32_t r = (uint32_t)i;
        for (int d = w.nd - 1; d >= 1; --d) {
            uint32_t q = fdl_cu_div(r, w.div[d]);
            int64_t c = (int64_t)(r - q * w.div[d].d);
            for (int j = 0; j < NOPS; ++j)
                off[j] += c * w.stride[j][d];
            r = q;
        }
        for (int j = 0; j < NOPS; ++j)
            off[j] += (int64_t)r * w.stride[j][0];
    }
}

/* Whether operand j walks in plain C order (one axis of stride 1, or a single element). */
template <int NOPS>
static inline bool fdl_cu_walk_contiguous(const FdlCuWalk<NOPS> &w, int j) {
    return w.nd == 1 && (w.stride[j][0] == 1 || w.size[0] == 1);
}

#endif
