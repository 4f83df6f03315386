/*
 * Elementwise GPU kernels (elementwise.h): activations, derivatives, the fused chain rule and
 * the broadcasting arithmetic, float32 and float64.
 *
 * Two kinds of kernel per op and dtype, chosen on the host from the operands' strides once
 * the shape's unit axes are dropped and neighbouring axes merged (elementwise_index.cuh):
 *
 * - flat: every array operand is C-contiguous (a Python scalar is passed by value). Threads
 *   of a grid-stride loop move 16-byte packs (float4 / double2 worth) when y and the inputs
 *   share their address modulo 16: the few elements before the first 16-byte boundary and
 *   after the last whole pack are done one by one. Two packs per thread per iteration, both
 *   loaded before either is stored, keep enough loads in flight to stream at the copy rate.
 *   Operands misaligned against each other take the same loop one element at a time.
 * - walk: anything else (broadcast, transposed, sliced, negative strides). Element i of the
 *   C-contiguous y is decomposed into coordinates with magic-number divisions (64-bit
 *   division beyond 2^32 elements), each operand read at its own strides: a broadcast operand
 *   is never copied. Four elements per thread per iteration, a grid-stride apart, so the
 *   warp's reads and writes of each stay coalesced where the layout allows.
 *   When the innermost (merged) axis is a whole number of packs, every operand steps along
 *   it by 1 (or 0: broadcast along the row) and every row starts 16-byte aligned (a bias
 *   row, a row slice of a wider array), the walk goes pack by pack instead: one
 *   decomposition per pack, 16-byte loads and stores, a row-broadcast operand read once and
 *   splatted. This is what keeps `x + bias` at the copy rate.
 *
 * No shared memory, no atomics: each output element is one thread's function of its inputs,
 * so results are the same for any grid. The grid is sized to the device (fdl_cuda_grid), 256
 * threads a block. The kernel bodies are __host__ __device__: fdl_cuda_elementwise_host runs
 * them on the CPU for the tests.
 */
#include "common.cuh"
#include "elementwise.h"
#include "elementwise_ops.cuh"
#include "elementwise_index.cuh"

namespace {

enum { EW_PACKS = 0, EW_SCALAR = 1, EW_WALK32 = 2, EW_WALK64 = 3, EW_EMPTY = 4,
       EW_WALK_PACKS = 5 };

constexpr int EW_THREADS = 256;

template <typename T>
struct alignas(16) Pack {
    T v[16 / sizeof(T)];
};

/* The contiguous case: elements [head, head + nvec * V) as packs, the rest one by one. */
template <typename T, int NIN>
struct EwFlat {
    T *y;
    const T *src[NIN];          /* NULL: the operand is scalar[j] */
    T scalar[NIN];
    T param;
    int64_t n, head, nvec;
};

template <typename T, int NIN>
struct EwWalk {
    EwFlat<T, NIN> f;
    FdlCuWalk<NIN> walk;
};

template <int OP, typename T, int NIN>
FDL_CU_HD Pack<T> ew_pack_apply(const Pack<T> (&in)[NIN], T p) {
    Pack<T> o;
    FDL_CU_UNROLL
    for (int e = 0; e < 16 / (int)sizeof(T); ++e)
        o.v[e] = fdl_cu_ew_apply<OP>(in[0].v[e], in[NIN - 1].v[e], p);   /* unary: b unused */
    return o;
}

template <typename T, int NIN>
FDL_CU_HD void ew_pack_load(const EwFlat<T, NIN> &k, int64_t i, Pack<T> (&in)[NIN]) {
    FDL_CU_UNROLL
    for (int j = 0; j < NIN; ++j) {
        if (k.src[j]) {
            in[j] = *reinterpret_cast<const Pack<T> *>(k.src[j] + i);
        } else {
            FDL_CU_UNROLL
            for (int e = 0; e < 16 / (int)sizeof(T); ++e)
                in[j].v[e] = k.scalar[j];
        }
    }
}

template <typename T, int NIN>
FDL_CU_HD T ew_load(const EwFlat<T, NIN> &k, int j, int64_t i) {
    return k.src[j] ? k.src[j][i] : k.scalar[j];
}

template <typename T, int OP, int NIN>
FDL_CU_HD void ew_flat_body(const EwFlat<T, NIN> &k, int64_t tid, int64_t nth) {
    constexpr int V = 16 / (int)sizeof(T);
    const T p = k.param;
    int64_t v = tid;
    for (; v + nth < k.nvec; v += 2 * nth) {
        Pack<T> in0[NIN], in1[NIN];
        int64_t i0 = k.head + v * V, i1 = k.head + (v + nth) * V;
        ew_pack_load(k, i0, in0);
        ew_pack_load(k, i1, in1);
        *reinterpret_cast<Pack<T> *>(k.y + i0) = ew_pack_apply<OP, T, NIN>(in0, p);
        *reinterpret_cast<Pack<T> *>(k.y + i1) = ew_pack_apply<OP, T, NIN>(in1, p);
    }
    if (v < k.nvec) {
        Pack<T> in0[NIN];
        int64_t i0 = k.head + v * V;
        ew_pack_load(k, i0, in0);
        *reinterpret_cast<Pack<T> *>(k.y + i0) = ew_pack_apply<OP, T, NIN>(in0, p);
    }
    /* the elements outside the packs: [0, head) and [tail0, n) */
    int64_t tail0 = k.head + k.nvec * V;
    int64_t ns = k.head + (k.n - tail0);
    for (int64_t s = tid; s < ns; s += nth) {
        int64_t i = s < k.head ? s : tail0 + (s - k.head);
        k.y[i] = fdl_cu_ew_apply<OP>(ew_load(k, 0, i), ew_load(k, NIN - 1, i), p);
    }
}

template <typename T, int OP, int NIN, bool WIDE>
FDL_CU_HD void ew_walk_body(const EwWalk<T, NIN> &k, int64_t tid, int64_t nth) {
    constexpr int U = 4;
    const T p = k.f.param;
    const int64_t n = k.f.n;
    for (int64_t i0 = tid; i0 < n; i0 += U * nth) {
        T a[U], b[U];
        FDL_CU_UNROLL
        for (int u = 0; u < U; ++u) {
            int64_t i = i0 + u * nth;
            if (i < n) {
                int64_t off[NIN];
                fdl_cu_walk_offsets<NIN, WIDE>(k.walk, i, off);
                a[u] = k.f.src[0] ? k.f.src[0][off[0]] : k.f.scalar[0];
                b[u] = k.f.src[NIN - 1] ? k.f.src[NIN - 1][off[NIN - 1]] : k.f.scalar[NIN - 1];
            }
        }
        FDL_CU_UNROLL
        for (int u = 0; u < U; ++u) {
            int64_t i = i0 + u * nth;
            if (i < n)
                k.f.y[i] = fdl_cu_ew_apply<OP>(a[u], b[u], p);
        }
    }
}

/* The walk by packs (EW_WALK_PACKS): pack q is elements q V .. q V + V - 1 of one row. */
template <typename T, int NIN>
FDL_CU_HD void ew_walk_pack_load(const EwWalk<T, NIN> &k, int64_t i, Pack<T> (&in)[NIN]) {
    int64_t off[NIN];
    fdl_cu_walk_offsets<NIN, false>(k.walk, i, off);
    const int last = k.walk.nd - 1;
    FDL_CU_UNROLL
    for (int j = 0; j < NIN; ++j) {
        if (k.f.src[j] && k.walk.stride[j][last] != 0) {
            in[j] = *reinterpret_cast<const Pack<T> *>(k.f.src[j] + off[j]);
        } else {
            T v = k.f.src[j] ? k.f.src[j][off[j]] : k.f.scalar[j];
            FDL_CU_UNROLL
            for (int e = 0; e < 16 / (int)sizeof(T); ++e)
                in[j].v[e] = v;
        }
    }
}

template <typename T, int OP, int NIN>
FDL_CU_HD void ew_walk_packs_body(const EwWalk<T, NIN> &k, int64_t tid, int64_t nth) {
    constexpr int V = 16 / (int)sizeof(T);
    const T p = k.f.param;
    const int64_t np = k.f.n / V;
    int64_t q = tid;
    for (; q + nth < np; q += 2 * nth) {
        Pack<T> in0[NIN], in1[NIN];
        ew_walk_pack_load(k, q * V, in0);
        ew_walk_pack_load(k, (q + nth) * V, in1);
        *reinterpret_cast<Pack<T> *>(k.f.y + q * V) = ew_pack_apply<OP, T, NIN>(in0, p);
        *reinterpret_cast<Pack<T> *>(k.f.y + (q + nth) * V) = ew_pack_apply<OP, T, NIN>(in1, p);
    }
    if (q < np) {
        Pack<T> in0[NIN];
        ew_walk_pack_load(k, q * V, in0);
        *reinterpret_cast<Pack<T> *>(k.f.y + q * V) = ew_pack_apply<OP, T, NIN>(in0, p);
    }
}

template <typename T, int OP, int NIN>
__global__ void __launch_bounds__(EW_THREADS) ew_flat_kernel(const EwFlat<T, NIN> k) {
    ew_flat_body<T, OP, NIN>(k, (int64_t)blockIdx.x * blockDim.x + threadIdx.x,
                             (int64_t)gridDim.x * blockDim.x);
}

template <typename T, int OP, int NIN, bool WIDE>
__global__ void __launch_bounds__(EW_THREADS) ew_walk_kernel(const EwWalk<T, NIN> k) {
    ew_walk_body<T, OP, NIN, WIDE>(k, (int64_t)blockIdx.x * blockDim.x + threadIdx.x,
                                   (int64_t)gridDim.x * blockDim.x);
}

template <typename T, int OP, int NIN>
__global__ void __launch_bounds__(EW_THREADS) ew_walk_packs_kernel(const EwWalk<T, NIN> k) {
    ew_walk_packs_body<T, OP, NIN>(k, (int64_t)blockIdx.x * blockDim.x + threadIdx.x,
                                   (int64_t)gridDim.x * blockDim.x);
}

/* The path and the kernel arguments for a call; cudaErrorInvalidValue for bad arguments. */
template <typename T, int NIN>
int ew_plan(const fdl_cu_ew_args *a, EwWalk<T, NIN> *k, int *path) {
    constexpr int V = 16 / (int)sizeof(T);
    if (a->ndim < 0 || a->ndim > FDL_CUDA_MAXDIM)
        return (int)cudaErrorInvalidValue;
    const int64_t *st[NIN];
    for (int d = 0; d < a->ndim; ++d)
        if (a->shape[d] < 0)
            return (int)cudaErrorInvalidValue;
    for (int j = 0; j < NIN; ++j)
        st[j] = a->src[j] ? a->strides[j] : NULL;
    int64_t n = fdl_cu_walk_make<NIN>(&k->walk, a->ndim, a->shape, st);
    EwFlat<T, NIN> &f = k->f;
    f.y = (T *)a->y;
    for (int j = 0; j < NIN; ++j) {
        f.src[j] = (const T *)a->src[j];
        f.scalar[j] = (T)a->scalar[j];
    }
    f.param = (T)a->param;
    f.n = n;
    f.head = n;
    f.nvec = 0;
    if (n == 0) {
        *path = EW_EMPTY;
        return 0;
    }
    if (a->y == NULL)
        return (int)cudaErrorInvalidValue;
    uintptr_t mis = (uintptr_t)a->y % 16;
    bool same_mis = true, flat = true;
    if ((uintptr_t)a->y % sizeof(T) != 0)
        return (int)cudaErrorMisalignedAddress;
    for (int j = 0; j < NIN; ++j) {
        if (!a->src[j])
            continue;
        if ((uintptr_t)a->src[j] % sizeof(T) != 0)
            return (int)cudaErrorMisalignedAddress;
        same_mis = same_mis && (uintptr_t)a->src[j] % 16 == mis;
        flat = flat && fdl_cu_walk_contiguous<NIN>(k->walk, j);
    }
    if (!flat) {
        *path = n < ((int64_t)1 << 32) ? EW_WALK32 : EW_WALK64;
        const int last = k->walk.nd - 1;
        bool packs = *path == EW_WALK32 && k->walk.size[last] % V == 0 && mis == 0;
        for (int j = 0; j < NIN && packs; ++j) {
            if (!a->src[j] || k->walk.stride[j][last] == 0)
                continue;
            packs = k->walk.stride[j][last] == 1 && (uintptr_t)a->src[j] % 16 == 0;
            for (int d = 0; d < last && packs; ++d)
                packs = k->walk.stride[j][d] % V == 0;
        }
        if (packs)
            *path = EW_WALK_PACKS;
        return 0;
    }
    if (same_mis) {
        int64_t head = (int64_t)((16 - mis) % 16) / (int64_t)sizeof(T);
        if (head < n) {
            f.head = head;
            f.nvec = (n - head) / V;
        }
    }
    *path = f.nvec > 0 ? EW_PACKS : EW_SCALAR;
    return 0;
}

/* host_threads < 0: launch on the device; else run the bodies on the CPU as that many
   threads of the grid-stride loop. */
template <typename T, int OP>
int ew_run(const fdl_cu_ew_args *a, cudaStream_t s, int64_t host_threads, int force_walk,
           int *path_out) {
    constexpr int NIN = OP < FDL_CU_EW_NUNARY ? 1 : 2;
    EwWalk<T, NIN> k;
    int path = EW_EMPTY;
    int err = ew_plan<T, NIN>(a, &k, &path);
    if (err)
        return err;
    if (path_out) {
        *path_out = path;
        return 0;
    }
    if (path == EW_EMPTY)
        return 0;
    if (host_threads >= 0) {
        int64_t nth = host_threads > 0 ? host_threads : 1;
        if (force_walk)
            path = force_walk == 1 ? EW_WALK32 : EW_WALK64;
        for (int64_t t = 0; t < nth; ++t) {
            if (path == EW_PACKS || path == EW_SCALAR)
                ew_flat_body<T, OP, NIN>(k.f, t, nth);
            else if (path == EW_WALK32)
                ew_walk_body<T, OP, NIN, false>(k, t, nth);
            else if (path == EW_WALK_PACKS)
                ew_walk_packs_body<T, OP, NIN>(k, t, nth);
            else
                ew_walk_body<T, OP, NIN, true>(k, t, nth);
        }
        return 0;
    }
    if (path == EW_PACKS || path == EW_SCALAR) {
        int64_t outside = k.f.n - k.f.nvec * (16 / (int64_t)sizeof(T));
        int64_t work = (k.f.nvec + 1) / 2 > outside ? (k.f.nvec + 1) / 2 : outside;
        ew_flat_kernel<T, OP, NIN><<<fdl_cuda_grid(work, EW_THREADS), EW_THREADS, 0, s>>>(k.f);
    } else if (path == EW_WALK_PACKS) {
        int64_t work = (k.f.n / (16 / (int64_t)sizeof(T)) + 1) / 2;
        ew_walk_packs_kernel<T, OP, NIN>
            <<<fdl_cuda_grid(work, EW_THREADS), EW_THREADS, 0, s>>>(k);
    } else if (path == EW_WALK32) {
        ew_walk_kernel<T, OP, NIN, false>
            <<<fdl_cuda_grid((k.f.n + 3) / 4, EW_THREADS), EW_THREADS, 0, s>>>(k);
    } else {
        ew_walk_kernel<T, OP, NIN, true>
            <<<fdl_cuda_grid((k.f.n + 3) / 4, EW_THREADS), EW_THREADS, 0, s>>>(k);
    }
    FDL_CUDA_RETURN_LAUNCH();
}

template <typename T>
int ew_dispatch(const fdl_cu_ew_args *a, cudaStream_t s, int64_t host_threads, int force_walk,
                int *path) {
    switch (a->op) {
#define FDL_CU_EW_CASE(OP) case OP: return ew_run<T, OP>(a, s, host_threads, force_walk, path);
    FDL_CU_EW_CASE(FDL_CU_RELU)
    FDL_CU_EW_CASE(FDL_CU_LEAKY_RELU)
    FDL_CU_EW_CASE(FDL_CU_SIGMOID)
    FDL_CU_EW_CASE(FDL_CU_TANH)
    FDL_CU_EW_CASE(FDL_CU_GELU)
    FDL_CU_EW_CASE(FDL_CU_GELU_TANH)
    FDL_CU_EW_CASE(FDL_CU_SILU)
    FDL_CU_EW_CASE(FDL_CU_RELU_GRAD)
    FDL_CU_EW_CASE(FDL_CU_LEAKY_RELU_GRAD)
    FDL_CU_EW_CASE(FDL_CU_SIGMOID_GRAD)
    FDL_CU_EW_CASE(FDL_CU_TANH_GRAD)
    FDL_CU_EW_CASE(FDL_CU_GELU_GRAD)
    FDL_CU_EW_CASE(FDL_CU_GELU_TANH_GRAD)
    FDL_CU_EW_CASE(FDL_CU_SILU_GRAD)
    FDL_CU_EW_CASE(FDL_CU_ADD)
    FDL_CU_EW_CASE(FDL_CU_SUBTRACT)
    FDL_CU_EW_CASE(FDL_CU_MULTIPLY)
    FDL_CU_EW_CASE(FDL_CU_DIVIDE)
    FDL_CU_EW_CASE(FDL_CU_MAXIMUM)
    FDL_CU_EW_CASE(FDL_CU_RELU_BW)
    FDL_CU_EW_CASE(FDL_CU_LEAKY_RELU_BW)
    FDL_CU_EW_CASE(FDL_CU_SIGMOID_BW)
    FDL_CU_EW_CASE(FDL_CU_TANH_BW)
    FDL_CU_EW_CASE(FDL_CU_GELU_BW)
    FDL_CU_EW_CASE(FDL_CU_GELU_TANH_BW)
    FDL_CU_EW_CASE(FDL_CU_SILU_BW)
#undef FDL_CU_EW_CASE
    default:
        return (int)cudaErrorInvalidValue;
    }
}

int ew_entry(const fdl_cu_ew_args *a, cudaStream_t s, int64_t host_threads, int force_walk,
             int *path) {
    if (a == NULL)
        return (int)cudaErrorInvalidValue;
    if (a->dtype == FDL_CUDA_F32)
        return ew_dispatch<float>(a, s, host_threads, force_walk, path);
    if (a->dtype == FDL_CUDA_F64)
        return ew_dispatch<double>(a, s, host_threads, force_walk, path);
    return (int)cudaErrorInvalidValue;
}

}  // namespace

extern "C" int fdl_cuda_elementwise(const fdl_cu_ew_args *args, void *stream) {
    return ew_entry(args, FDL_CUDA_STREAM(stream), -1, 0, NULL);
}

extern "C" int fdl_cuda_elementwise_host(const fdl_cu_ew_args *args, int64_t nthreads,
                                         int force_walk) {
    return ew_entry(args, 0, nthreads < 1 ? 1 : nthreads, force_walk, NULL);
}

extern "C" int fdl_cuda_elementwise_path(const fdl_cu_ew_args *args) {
    int path = -1;
    if (ew_entry(args, 0, 1, 0, &path) != 0)
        return -1;
    return path;
}

extern "C" void fdl_cuda_host_fastdiv(const uint32_t *n, const uint32_t *d, uint32_t *q,
                                      int64_t count) {
    for (int64_t i = 0; i < count; ++i) {
        FdlCuDiv v = fdl_cu_div_make(d[i] ? d[i] : 1u);
        q[i] = fdl_cu_div(n[i], v);
    }
}
