/*
 * Dropout kernels (dropout.h): one thread per Philox block of four elements, a grid-stride
 * loop over the blocks.
 *
 * Thread t's block b covers C-order elements 4b .. 4b + 3, whose keep decisions are exactly
 * the four words of Philox4x32-10 block b (philox.cuh): every word drawn is used, none is
 * drawn twice, and the mask depends on (seed, index) only, as on the CPU. Per block: load x
 * (one 16-byte pack for float32, two for float64, when x and y are 16-byte aligned and x
 * is C-contiguous; the loads are issued before the ten rounds, which hide their latency),
 * compute the words, select x * scale or +0, store y the same way and, when asked, the four
 * mask bytes as one 32-bit store. 16 bytes of float32 in, 16 out, 4 of mask: the rounds
 * (about 80 integer instructions per block) cost less than moving the bytes on an H100.
 *
 * Non-contiguous x (or mask) is read element by element at its strides through the C-order
 * walk of elementwise_index.cuh (magic-number divisions); y and the mask written are always
 * C-contiguous. No atomics, no shared memory: the result is the same for any grid, and the
 * host test shim runs this body on the CPU.
 */
#include "common.cuh"
#include "dropout.h"
#include "philox.cuh"
#include "elementwise_index.cuh"

namespace {

enum { DO_FLAT = 0, DO_WALK32 = 1, DO_WALK64 = 2, DO_EMPTY = 3 };

constexpr int DO_THREADS = 256;

template <typename T>
struct alignas(16) Quad {
    T v[4];
};

template <typename T>
struct DoKernel {
    const T *x;
    const unsigned char *mask_in;
    T *y;
    unsigned char *mask_out;
    int64_t n;
    uint64_t seed, thr;
    T scale;
    int mode;
    bool x_pack, y_pack;          /* 16-byte aligned (flat path) */
    bool m_in4, m_out4;           /* 4-byte aligned masks (flat path) */
    FdlCuWalk<2> walk;            /* operand 0: x (elements), 1: mask_in (bytes) */
};

template <typename T, int PATH>
FDL_CU_HD void do_block(const DoKernel<T> &k, int64_t b) {
    const int64_t i0 = 4 * b;
    const int cnt = k.n - i0 < 4 ? (int)(k.n - i0) : 4;
    const bool full = cnt == 4;
    T xv[4] = {(T)0, (T)0, (T)0, (T)0};
    bool keep[4] = {false, false, false, false};
    int64_t xo[4] = {0, 0, 0, 0}, mo[4] = {0, 0, 0, 0};
    if (PATH == DO_FLAT) {
        FDL_CU_UNROLL
        for (int e = 0; e < 4; ++e) {
            xo[e] = i0 + e;
            mo[e] = i0 + e;
        }
    } else {
        FDL_CU_UNROLL
        for (int e = 0; e < 4; ++e) {
            if (e < cnt) {
                int64_t off[2];
                fdl_cu_walk_offsets<2, PATH == DO_WALK64>(k.walk, i0 + e, off);
                xo[e] = off[0];
                mo[e] = off[1];
            }
        }
    }
    if (PATH == DO_FLAT && full && k.x_pack) {
        Quad<T> q = *reinterpret_cast<const Quad<T> *>(k.x + i0);
        FDL_CU_UNROLL
        for (int e = 0; e < 4; ++e)
            xv[e] = q.v[e];
    } else {
        FDL_CU_UNROLL
        for (int e = 0; e < 4; ++e)
            if (e < cnt)
                xv[e] = k.x[xo[e]];
    }
    if (k.mode == FDL_CU_DROPOUT_FWD) {
        if (k.thr > 0xFFFFFFFFull) {
            FDL_CU_UNROLL
            for (int e = 0; e < 4; ++e)
                keep[e] = false;
        } else {
            FdlCuPhilox w = fdl_cu_philox_block(k.seed, (uint64_t)b);
            FDL_CU_UNROLL
            for (int e = 0; e < 4; ++e)
                keep[e] = w.w[e] >= (uint32_t)k.thr;
        }
    } else if (PATH == DO_FLAT && full && k.m_in4) {
        uint32_t m = *reinterpret_cast<const uint32_t *>(k.mask_in + i0);
        FDL_CU_UNROLL
        for (int e = 0; e < 4; ++e)   /* byte e is element i0 + e (little-endian) */
            keep[e] = ((m >> (8 * e)) & 0xFFu) != 0;
    } else {
        FDL_CU_UNROLL
        for (int e = 0; e < 4; ++e)
            if (e < cnt)
                keep[e] = k.mask_in[mo[e]] != 0;
    }
    T yv[4];
    FDL_CU_UNROLL
    for (int e = 0; e < 4; ++e)
        yv[e] = keep[e] ? xv[e] * k.scale : (T)0;
    if (full && k.y_pack) {
        Quad<T> q;
        FDL_CU_UNROLL
        for (int e = 0; e < 4; ++e)
            q.v[e] = yv[e];
        *reinterpret_cast<Quad<T> *>(k.y + i0) = q;
    } else {
        FDL_CU_UNROLL
        for (int e = 0; e < 4; ++e)
            if (e < cnt)
                k.y[i0 + e] = yv[e];
    }
    if (k.mask_out) {
        if (full && k.m_out4) {
            uint32_t m = 0;
            FDL_CU_UNROLL
            for (int e = 0; e < 4; ++e)
                m |= (uint32_t)keep[e] << (8 * e);
            *reinterpret_cast<uint32_t *>(k.mask_out + i0) = m;
        } else {
            FDL_CU_UNROLL
            for (int e = 0; e < 4; ++e)
                if (e < cnt)
                    k.mask_out[i0 + e] = (unsigned char)keep[e];
        }
    }
}

template <typename T, int PATH>
FDL_CU_HD void do_body(const DoKernel<T> &k, int64_t tid, int64_t nth) {
    const int64_t nb = (k.n + 3) / 4;
    for (int64_t b = tid; b < nb; b += nth)
        do_block<T, PATH>(k, b);
}

template <typename T, int PATH>
__global__ void __launch_bounds__(DO_THREADS) do_kernel(const DoKernel<T> k) {
    do_body<T, PATH>(k, (int64_t)blockIdx.x * blockDim.x + threadIdx.x,
                     (int64_t)gridDim.x * blockDim.x);
}

template <typename T>
int do_plan(const fdl_cu_dropout_args *a, DoKernel<T> *k, int *path) {
    if (a->ndim < 0 || a->ndim > FDL_CUDA_MAXDIM)
        return (int)cudaErrorInvalidValue;
    if (a->mode != FDL_CU_DROPOUT_FWD && a->mode != FDL_CU_DROPOUT_FROM_MASK)
        return (int)cudaErrorInvalidValue;
    for (int d = 0; d < a->ndim; ++d)
        if (a->shape[d] < 0)
            return (int)cudaErrorInvalidValue;
    const bool from_mask = a->mode == FDL_CU_DROPOUT_FROM_MASK;
    const int64_t *st[2] = {a->x_strides, from_mask ? a->m_strides : NULL};
    k->n = fdl_cu_walk_make<2>(&k->walk, a->ndim, a->shape, st);
    k->x = (const T *)a->x;
    k->mask_in = from_mask ? a->mask_in : NULL;
    k->y = (T *)a->y;
    k->mask_out = from_mask ? NULL : a->mask_out;
    k->seed = a->seed;
    k->thr = a->thr;
    k->scale = (T)a->scale;
    k->mode = a->mode;
    if (k->n == 0) {
        *path = DO_EMPTY;
        return 0;
    }
    if (!a->x || !a->y || (from_mask && !a->mask_in))
        return (int)cudaErrorInvalidValue;
    if ((uintptr_t)a->x % sizeof(T) != 0 || (uintptr_t)a->y % sizeof(T) != 0)
        return (int)cudaErrorMisalignedAddress;
    bool flat = fdl_cu_walk_contiguous<2>(k->walk, 0)
                && (!from_mask || fdl_cu_walk_contiguous<2>(k->walk, 1));
    k->x_pack = flat && (uintptr_t)a->x % 16 == 0;
    k->y_pack = (uintptr_t)a->y % 16 == 0;
    k->m_in4 = flat && from_mask && (uintptr_t)a->mask_in % 4 == 0;
    k->m_out4 = k->mask_out && (uintptr_t)k->mask_out % 4 == 0;
    *path = flat ? DO_FLAT : (k->n < ((int64_t)1 << 32) ? DO_WALK32 : DO_WALK64);
    return 0;
}

template <typename T>
int do_run(const fdl_cu_dropout_args *a, cudaStream_t s, int64_t host_threads, int force_walk,
           int *path_out) {
    DoKernel<T> k;
    int path = DO_EMPTY;
    int err = do_plan<T>(a, &k, &path);
    if (err)
        return err;
    if (path_out) {
        *path_out = path;
        return 0;
    }
    if (path == DO_EMPTY)
        return 0;
    if (host_threads >= 0) {
        int64_t nth = host_threads > 0 ? host_threads : 1;
        if (force_walk)
            path = force_walk == 1 ? DO_WALK32 : DO_WALK64;
        for (int64_t t = 0; t < nth; ++t) {
            if (path == DO_FLAT)
                do_body<T, DO_FLAT>(k, t, nth);
            else if (path == DO_WALK32)
                do_body<T, DO_WALK32>(k, t, nth);
            else
                do_body<T, DO_WALK64>(k, t, nth);
        }
        return 0;
    }
    unsigned grid = fdl_cuda_grid((k.n + 3) / 4, DO_THREADS);
    if (path == DO_FLAT)
        do_kernel<T, DO_FLAT><<<grid, DO_THREADS, 0, s>>>(k);
    else if (path == DO_WALK32)
        do_kernel<T, DO_WALK32><<<grid, DO_THREADS, 0, s>>>(k);
    else
        do_kernel<T, DO_WALK64><<<grid, DO_THREADS, 0, s>>>(k);
    FDL_CUDA_RETURN_LAUNCH();
}

int do_entry(const fdl_cu_dropout_args *a, cudaStream_t s, int64_t host_threads, int force_walk,
             int *path) {
    if (a == NULL)
        return (int)cudaErrorInvalidValue;
    if (a->dtype == FDL_CUDA_F32)
        return do_run<float>(a, s, host_threads, force_walk, path);
    if (a->dtype == FDL_CUDA_F64)
        return do_run<double>(a, s, host_threads, force_walk, path);
    return (int)cudaErrorInvalidValue;
}

}  // namespace

extern "C" int fdl_cuda_dropout(const fdl_cu_dropout_args *args, void *stream) {
    return do_entry(args, FDL_CUDA_STREAM(stream), -1, 0, NULL);
}

extern "C" int fdl_cuda_dropout_host(const fdl_cu_dropout_args *args, int64_t nthreads,
                                     int force_walk) {
    return do_entry(args, 0, nthreads < 1 ? 1 : nthreads, force_walk, NULL);
}

extern "C" int fdl_cuda_dropout_path(const fdl_cu_dropout_args *args) {
    int path = -1;
    if (do_entry(args, 0, 1, 0, &path) != 0)
        return -1;
    return path;
}

extern "C" void fdl_cuda_host_philox_words(uint64_t seed, uint64_t first, int64_t n,
                                           uint32_t *out) {
    for (int64_t i = 0; i < n; ++i) {
        uint64_t w = first + (uint64_t)i;
        out[i] = fdl_cu_philox_block(seed, w >> 2).w[w & 3];
    }
}

extern "C" void fdl_cuda_host_philox4x32_10(const uint32_t *ctr, const uint32_t *key,
                                            uint32_t *out) {
    FdlCuPhilox w = fdl_cu_philox4x32_10(ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1]);
    for (int e = 0; e < 4; ++e)
        out[e] = w.w[e];
}
