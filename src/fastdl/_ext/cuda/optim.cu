/*
 * sgd_, momentum_ and adam_ on the GPU (optim.h): one multi-tensor kernel per step.
 *
 * A launch carries a table of up to CAP tensors by value (pointers, sizes and the prefix of
 * their chunk counts: under 4 KiB of kernel parameters, so no copy of a table to the device
 * and no limit of newer drivers is needed). Each tensor is cut into chunks of CHUNK
 * elements; block b takes chunk b of the concatenation (a binary search of the prefix, the
 * same in every thread of the block) and its threads update the chunk's elements, four
 * float32 or two float64 at a time with 16-byte loads when every operand of the tensor is
 * aligned. A list longer than CAP takes ceil(n / CAP) launches.
 *
 * The element formulas are the CPU's (include/fastdl/optim.h), in the tensors' dtype, with
 * the constants rounded from double on the host exactly as there (bias corrections
 * 1 - beta^t computed in double by the caller, their reciprocals rounded once). sqrt and the
 * division are IEEE (no fast-math); the only difference from the CPU is the compiler's
 * choice of fused multiply-adds. Each element is updated once and on its own, so results do
 * not depend on the grid.
 */
#include <math.h>
#include <string.h>
#include "common.cuh"
#include "optim.h"

#define OPT_HD __host__ __device__ inline
// unrolling hints for the device pass only (the host compiler does not know the pragma)
#ifdef __CUDA_ARCH__
#define OPT_UNROLL _Pragma("unroll")
#else
#define OPT_UNROLL
#endif

namespace fdl_optim {

constexpr int NT = 256;
constexpr int64_t CHUNK = 4096;     // a multiple of every vector width
constexpr int PARAM_BYTES = 3800;   // the tensor table's share of the 4 KiB of parameters

template <int OP> struct Ops {
    static constexpr int value = OP == FDL_CUDA_OPT_SGD ? 2 : OP == FDL_CUDA_OPT_ADAM ? 4 : 3;
};
template <int NP> struct Cap {
    static constexpr int value = PARAM_BYTES / (NP * 8 + 8 + 4);
};

template <int NP> struct Table {
    void *p[NP][Cap<NP>::value];
    int64_t n[Cap<NP>::value];
    int32_t c0[Cap<NP>::value + 1];   // chunk prefix: tensor i owns chunks [c0[i], c0[i+1])
    int count;
};

template <typename T> struct Consts {
    T lr, wd, mu, b1, b2, omb1, omb2, ibc1, ibc2, eps, decay;
    int mode;
};

template <typename T> Consts<T> make_consts(const fdl_cuda_opt_hp &h)
{
    Consts<T> k;
    k.lr = (T)h.lr;
    k.wd = (T)h.wd;
    k.mu = (T)h.mu;
    k.b1 = (T)h.b1;
    k.b2 = (T)h.b2;
    k.omb1 = (T)(1.0 - h.b1);
    k.omb2 = (T)(1.0 - h.b2);
    k.ibc1 = (T)(1.0 / h.bc1);
    k.ibc2 = (T)(1.0 / h.bc2);
    k.eps = (T)h.eps;
    k.decay = (T)h.decay;
    k.mode = h.mode;
    return k;
}

OPT_HD float opt_sqrt(float x) { return sqrtf(x); }
OPT_HD double opt_sqrt(double x) { return sqrt(x); }

// one element: w, g, and the state s1 (buf / v / m), s2 (v of Adam)
template <typename T, int OP> OPT_HD void update(T &w, T g, T &s1, T &s2, const Consts<T> &k)
{
    if (OP == FDL_CUDA_OPT_SGD) {
        if (k.mode == 1) {
            T d = g + k.wd * w;
            w = w - k.lr * d;
        } else {
            w = w - k.lr * g;
        }
    } else if (OP == FDL_CUDA_OPT_SGDM) {
        T d = k.mode == 1 ? g + k.wd * w : g;
        T bb = k.mu * s1 + d;
        s1 = bb;
        w = w - k.lr * bb;
    } else if (OP == FDL_CUDA_OPT_MOMENTUM) {
        T d = k.mode == 1 ? g + k.wd * w : g;
        T vv = k.mu * s1 - k.lr * d;
        s1 = vv;
        w = w + vv;
    } else {
        T ww = w;
        T d = g;
        if (k.mode == 1) d = d + k.wd * ww;
        if (k.mode == 2) ww = ww * k.decay;
        T mm = k.b1 * s1 + k.omb1 * d;
        T vv = k.b2 * s2 + k.omb2 * d * d;
        s1 = mm;
        s2 = vv;
        w = ww - k.lr * (mm * k.ibc1) / (opt_sqrt(vv * k.ibc2) + k.eps);
    }
}

template <typename T> struct alignas(16) Pack {
    T v[16 / sizeof(T)];
};

// thread tid of nth over the len elements of one chunk (operands already offset)
template <typename T, int OP>
OPT_HD void chunk_thread(T *w, const T *g, T *s1, T *s2, int64_t len, int tid, int nth,
                         const Consts<T> &k)
{
    constexpr int NP = Ops<OP>::value;
    constexpr int PK = (int)(16 / sizeof(T));
    uintptr_t bits = (uintptr_t)w | (uintptr_t)g;
    if (NP >= 3) bits |= (uintptr_t)s1;
    if (NP >= 4) bits |= (uintptr_t)s2;
    int64_t i0 = 0;
    if ((bits & 15) == 0) {
        const int64_t nv = len / PK;
        for (int64_t iv = tid; iv < nv; iv += nth) {
            Pack<T> pw = reinterpret_cast<Pack<T> *>(w)[iv];
            Pack<T> pg = reinterpret_cast<const Pack<T> *>(g)[iv];
            Pack<T> p1, p2;
            if (NP >= 3) p1 = reinterpret_cast<Pack<T> *>(s1)[iv];
            if (NP >= 4) p2 = reinterpret_cast<Pack<T> *>(s2)[iv];
OPT_UNROLL
            for (int u = 0; u < PK; ++u) {
                T a = T(0), b = T(0);
                if (NP >= 3) a = p1.v[u];
                if (NP >= 4) b = p2.v[u];
                update<T, OP>(pw.v[u], pg.v[u], a, b, k);
                if (NP >= 3) p1.v[u] = a;
                if (NP >= 4) p2.v[u] = b;
            }
            reinterpret_cast<Pack<T> *>(w)[iv] = pw;
            if (NP >= 3) reinterpret_cast<Pack<T> *>(s1)[iv] = p1;
            if (NP >= 4) reinterpret_cast<Pack<T> *>(s2)[iv] = p2;
        }
        i0 = nv * PK;
    }
    for (int64_t i = i0 + tid; i < len; i += nth) {
        T ww = w[i], a = T(0), b = T(0);
        if (NP >= 3) a = s1[i];
        if (NP >= 4) b = s2[i];
        update<T, OP>(ww, g[i], a, b, k);
        w[i] = ww;
        if (NP >= 3) s1[i] = a;
        if (NP >= 4) s2[i] = b;
    }
}

// the tensor owning chunk ch: the last i with c0[i] <= ch
template <int NP> OPT_HD int owner(const Table<NP> &t, int32_t ch)
{
    int lo = 0, hi = t.count - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (t.c0[mid] <= ch) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

template <typename T, int OP>
OPT_HD void block_chunk(const Table<Ops<OP>::value> &t, int32_t ch, int tid, int nth,
                        const Consts<T> &k)
{
    constexpr int NP = Ops<OP>::value;
    const int i = owner<NP>(t, ch);
    const int64_t start = (int64_t)(ch - t.c0[i]) * CHUNK;
    const int64_t left = t.n[i] - start;
    const int64_t len = left < CHUNK ? left : CHUNK;
    T *w = (T *)t.p[0][i] + start;
    const T *g = (const T *)t.p[1][i] + start;
    T *s1 = NP >= 3 ? (T *)t.p[NP >= 3 ? 2 : 0][i] + start : NULL;
    T *s2 = NP >= 4 ? (T *)t.p[NP >= 4 ? 3 : 0][i] + start : NULL;
    chunk_thread<T, OP>(w, g, s1, s2, len, tid, nth, k);
}

#ifdef __CUDACC__
// __grid_constant__: the table is read in place from the parameter bank (indexed by a
// block-uniform tensor number), never copied to local memory
template <typename T, int OP>
__global__ void __launch_bounds__(NT)
multi_kernel(const __grid_constant__ Table<Ops<OP>::value> t, const Consts<T> k)
{
    const int32_t total = t.c0[t.count];
    for (int32_t ch = blockIdx.x; ch < total; ch += gridDim.x) block_chunk<T, OP>(t, ch, threadIdx.x, NT, k);
}
#endif

template <typename T, int OP, bool HOST>
int flush(const Table<Ops<OP>::value> &t, const Consts<T> &k, cudaStream_t st)
{
    const int32_t total = t.c0[t.count];
    if (total == 0) return 0;
    if (HOST) {
        for (int32_t ch = 0; ch < total; ++ch)
            for (int tid = 0; tid < NT; ++tid) block_chunk<T, OP>(t, ch, tid, NT, k);
        return 0;
    }
#ifdef __CUDACC__
    multi_kernel<T, OP><<<(unsigned)total, NT, 0, st>>>(t, k);
    return (int)cudaGetLastError();
#else
    return 0;
#endif
}

template <typename T, int OP, bool HOST>
int run(int ntensors, void *const *ptrs, const int64_t *n, const fdl_cuda_opt_hp *hp,
        cudaStream_t st)
{
    constexpr int NP = Ops<OP>::value;
    constexpr int CAP = Cap<NP>::value;
    const Consts<T> k = make_consts<T>(*hp);
    Table<NP> t;
    memset(&t, 0, sizeof t);
    for (int i = 0; i < ntensors; ++i) {
        if (n[i] <= 0) continue;
        const int64_t chunks = (n[i] + CHUNK - 1) / CHUNK;
        if (t.count == CAP || (int64_t)t.c0[t.count] + chunks > 0x7fffffff) {
            const int rc = flush<T, OP, HOST>(t, k, st);
            if (rc) return rc;
            memset(&t, 0, sizeof t);
        }
        for (int j = 0; j < NP; ++j) t.p[j][t.count] = ptrs[4 * i + j];
        t.n[t.count] = n[i];
        t.c0[t.count + 1] = (int32_t)(t.c0[t.count] + chunks);
        ++t.count;
    }
    return flush<T, OP, HOST>(t, k, st);
}

template <typename T, bool HOST>
int run_op(int op, int ntensors, void *const *ptrs, const int64_t *n, const fdl_cuda_opt_hp *hp,
           cudaStream_t st)
{
    switch (op) {
    case FDL_CUDA_OPT_SGD: return run<T, FDL_CUDA_OPT_SGD, HOST>(ntensors, ptrs, n, hp, st);
    case FDL_CUDA_OPT_SGDM: return run<T, FDL_CUDA_OPT_SGDM, HOST>(ntensors, ptrs, n, hp, st);
    case FDL_CUDA_OPT_MOMENTUM: return run<T, FDL_CUDA_OPT_MOMENTUM, HOST>(ntensors, ptrs, n, hp, st);
    case FDL_CUDA_OPT_ADAM: return run<T, FDL_CUDA_OPT_ADAM, HOST>(ntensors, ptrs, n, hp, st);
    default: return (int)cudaErrorInvalidValue;
    }
}

struct Strided {
    int ndim;
    int64_t shape[FDL_CUDA_MAXDIM];
    int64_t strides[FDL_CUDA_MAXDIM];
};

#ifdef __CUDACC__
template <typename T>
__global__ void scatter_kernel(char *__restrict__ dst, const T *__restrict__ src, Strided v, int64_t n)
{
    FDL_GRID_STRIDE(i, n) {
        int64_t rem = i, off = 0;
        for (int d = v.ndim - 1; d >= 0; --d) {
            const int64_t idx = rem % v.shape[d];
            rem /= v.shape[d];
            off += idx * v.strides[d];
        }
        *(T *)(dst + off) = src[i];
    }
}
#endif

}  // namespace fdl_optim

using namespace fdl_optim;

extern "C" int fdl_cuda_optim_multi(int op, int dtype, int ntensors, void *const *ptrs,
                                    const int64_t *n, const fdl_cuda_opt_hp *hp, void *stream)
{
    cudaStream_t st = FDL_CUDA_STREAM(stream);
    if (dtype == FDL_CUDA_F32) return run_op<float, false>(op, ntensors, ptrs, n, hp, st);
    if (dtype == FDL_CUDA_F64) return run_op<double, false>(op, ntensors, ptrs, n, hp, st);
    return (int)cudaErrorInvalidValue;
}

extern "C" int fdl_cuda_host_optim_multi(int op, int dtype, int ntensors, void *const *ptrs,
                                         const int64_t *n, const fdl_cuda_opt_hp *hp)
{
    if (dtype == FDL_CUDA_F32) return run_op<float, true>(op, ntensors, ptrs, n, hp, 0);
    if (dtype == FDL_CUDA_F64) return run_op<double, true>(op, ntensors, ptrs, n, hp, 0);
    return (int)cudaErrorInvalidValue;
}

extern "C" int fdl_cuda_optim_capacity(int op)
{
    switch (op) {
    case FDL_CUDA_OPT_SGD: return Cap<2>::value;
    case FDL_CUDA_OPT_SGDM:
    case FDL_CUDA_OPT_MOMENTUM: return Cap<3>::value;
    case FDL_CUDA_OPT_ADAM: return Cap<4>::value;
    default: return 0;
    }
}

extern "C" int fdl_cuda_optim_scatter(void *dst, const void *src, int ndim, const int64_t *shape,
                                      const int64_t *strides_bytes, int itemsize, void *stream)
{
    if (ndim > FDL_CUDA_MAXDIM) return (int)cudaErrorInvalidValue;
    Strided v;
    v.ndim = ndim;
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) {
        v.shape[d] = shape[d];
        v.strides[d] = strides_bytes[d];
        n *= shape[d];
    }
    if (n == 0) return 0;
    const unsigned grid = fdl_cuda_grid(n, NT);
    cudaStream_t st = FDL_CUDA_STREAM(stream);
    if (itemsize == 4) scatter_kernel<uint32_t><<<grid, NT, 0, st>>>((char *)dst, (const uint32_t *)src, v, n);
    else if (itemsize == 8) scatter_kernel<uint64_t><<<grid, NT, 0, st>>>((char *)dst, (const uint64_t *)src, v, n);
    else return (int)cudaErrorInvalidValue;
    FDL_CUDA_RETURN_LAUNCH();
}
