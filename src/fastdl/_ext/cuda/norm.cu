/*
 * batch_norm, batch_norm_backward, layer_norm, layer_norm_backward on the GPU (norm.h).
 *
 * Determinism: every reduction runs a tree fixed by the shape alone (the elements of a
 * thread, the pairing of threads, warps and blocks; never the device or the timing) and
 * there are no atomics, so results are bitwise equal run to run and from GPU to GPU.
 *
 * Testability: each phase is a __host__ __device__ function of (block, thread) and each
 * tree has a host twin with the same pairing; a launcher template runs the phases either as
 * kernels or, for the fdl_cuda_host_* shims, as loops on the CPU. The shims are how the work
 * split, the trees and the formulas are checked against the CPU functions without a GPU.
 *
 * batch_norm statistics (x seen as (N, C, S)):
 *   planes (S >= 32): block (channel c, part k) walks a contiguous range of the channel's
 *     N*S values in (n, s) order, 8 consecutive values per thread per step (16-byte loads
 *     when S is a multiple of 4 float32 / 2 float64 and x is aligned); warps read whole
 *     plane segments.
 *   rows (S < 32): x is (N, W = C*S) and block (column tile, row split) gives each of 32
 *     threads a column (a warp reads 128 contiguous bytes of a row) and 8 row phases.
 *   A thread keeps shifted sums in double, s1 = sum(x - K) and s2 = sum((x - K)^2), with K
 *   the mean of its first chunk of 8 values: s2 = M2 + n (mean - K)^2 <= M2 (1 + n/8), so the
 *   cancellation in M2 = s2 - s1^2/n is bounded without a division per element. Threads'
 *   (count, mean, M2) are merged by Chan's formula up the block's tree, the blocks' partials
 *   per channel by a warp in a fixed order; x is read twice in all (statistics, then y).
 * batch_norm_backward: the same walks summing dy and dy*(x - mean) in double, then one
 *   elementwise pass dx = k*dy + (p*(x - mean) + q) with per-channel k, p, q (as the CPU).
 * layer_norm: 8, 32 or 256 threads per row (rows of <= 64, <= 1024 or more vectors); the
 *   mean and then the squared deviations about it are summed in double (an exact two-pass;
 *   the re-reads of a row hit L1/L2), then y. layer_norm_backward: per row the sums of u and
 *   u*(x - mean) (u = gamma*dy), then dx; dgamma/dbeta are column sums over rows by a tiled
 *   kernel, in double, its row splits added in order by a last pass.
 * Per-element and per-channel arithmetic is the CPU's (include/fastdl/norm.h, _norm.pyx):
 * the same expressions in the same types.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "common.cuh"
#include "norm.h"

#define NORM_HD __host__ __device__ inline
// unrolling hints for the device pass only (the host compiler does not know the pragma)
#ifdef __CUDA_ARCH__
#define NORM_UNROLL _Pragma("unroll")
#else
#define NORM_UNROLL
#endif

namespace fdl_norm {

constexpr int CH = 8;                   // values per thread per step of the statistics walks
constexpr int NT = 256;                 // threads of 1-D blocks
constexpr int NW = NT / 32;
constexpr int TY = 8;                   // rows kernels: blocks of (32, TY) threads
constexpr int64_t TARGET_BLOCKS = 1024; // statistics blocks aimed at (a few waves on 132 SMs)
constexpr int64_t MIN_PLANE_BLOCK = 2048;
constexpr int64_t PLANE_MIN = 32;       // S from which the planes walk is used

NORM_HD int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
NORM_HD int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

// ------------------------------------------------------------------------------------------
// partials and their merges

struct Mom {            // count, mean, sum of squared deviations
    double n, mean, m2;
};
struct Sum2 {
    double a, b;
};

NORM_HD Mom merge(const Mom &x, const Mom &y)
{
    if (y.n == 0.0) return x;
    if (x.n == 0.0) return y;
    Mom r;
    r.n = x.n + y.n;
    double d = y.mean - x.mean;
    r.mean = x.mean + d * (y.n / r.n);
    r.m2 = x.m2 + (y.m2 + d * d * (x.n * y.n / r.n));
    return r;
}
NORM_HD Sum2 merge(const Sum2 &x, const Sum2 &y)
{
    Sum2 r;
    r.a = x.a + y.a;
    r.b = x.b + y.b;
    return r;
}
NORM_HD double merge(double x, double y) { return x + y; }

NORM_HD void zero(Mom &m) { m.n = 0.0; m.mean = 0.0; m.m2 = 0.0; }
NORM_HD void zero(Sum2 &s) { s.a = 0.0; s.b = 0.0; }

template <class P> struct Slots;
template <> struct Slots<Mom> { static constexpr int K = 3; };
template <> struct Slots<Sum2> { static constexpr int K = 2; };
NORM_HD void store(const Mom &m, double *p) { p[0] = m.n; p[1] = m.mean; p[2] = m.m2; }
NORM_HD void store(const Sum2 &s, double *p) { p[0] = s.a; p[1] = s.b; }
NORM_HD void load(Mom &m, const double *p) { m.n = p[0]; m.mean = p[1]; m.m2 = p[2]; }
NORM_HD void load(Sum2 &s, const double *p) { s.a = p[0]; s.b = p[1]; }

#ifdef __CUDACC__
__device__ inline double shfl_down(double v, int off, int width)
{
    return __shfl_down_sync(0xffffffffu, v, off, width);
}
__device__ inline Mom shfl_down(const Mom &m, int off, int width)
{
    Mom r;
    r.n = shfl_down(m.n, off, width);
    r.mean = shfl_down(m.mean, off, width);
    r.m2 = shfl_down(m.m2, off, width);
    return r;
}
__device__ inline Sum2 shfl_down(const Sum2 &s, int off, int width)
{
    Sum2 r;
    r.a = shfl_down(s.a, off, width);
    r.b = shfl_down(s.b, off, width);
    return r;
}
__device__ inline double shfl0(double v, int width) { return __shfl_sync(0xffffffffu, v, 0, width); }
__device__ inline Sum2 shfl0(const Sum2 &s, int width)
{
    Sum2 r;
    r.a = shfl0(s.a, width);
    r.b = shfl0(s.b, width);
    return r;
}
#endif

// The trees. Level by level, element i takes in element i + off (off = n/2, ..., 1); on the
// device a level is one __shfl_down within segments of `width` lanes. The host twin pairs the
// same elements in the same order.
template <class P> inline void host_tree(P *v, int n)
{
    for (int off = n / 2; off > 0; off >>= 1)
        for (int i = 0; i < off; ++i) v[i] = merge(v[i], v[i + off]);
}
// n threads of a row group or block: a tree per warp (or per group when n <= 32), then a tree
// over the warps' results.
template <class P> inline P host_group(P *v, int n)
{
    if (n <= 32) {
        host_tree(v, n);
        return v[0];
    }
    P w[32];
    for (int k = 0; k < n / 32; ++k) {
        host_tree(v + 32 * k, 32);
        w[k] = v[32 * k];
    }
    host_tree(w, n / 32);
    return w[0];
}

#ifdef __CUDACC__
template <class P> __device__ inline P warp_tree(P v, int width)
{
    for (int off = width / 2; off > 0; off >>= 1) v = merge(v, shfl_down(v, off, width));
    return v;
}
// Tree over a 1-D block of NTH threads (NTH a multiple of 32); the result in thread 0.
template <class P, int NTH> __device__ inline P block_tree(P v, P *sm)
{
    v = warp_tree(v, 32);
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    if (l == 0) sm[w] = v;
    __syncthreads();
    if (w == 0) {
        v = sm[l < NTH / 32 ? l : 0];
        v = warp_tree(v, NTH / 32);
    }
    return v;
}
#endif

// ------------------------------------------------------------------------------------------
// loads

template <typename T> struct alignas(16) Pack {
    T v[16 / sizeof(T)];
};
template <typename T> constexpr int pack_width() { return (int)(16 / sizeof(T)); }

// V consecutive values at p (16-byte aligned when V > 1)
template <typename T, int V> NORM_HD void loadv(const T *p, T (&v)[V])
{
    if (V == 1) {
        v[0] = p[0];
    } else {
        constexpr int PK = pack_width<T>();
        const Pack<T> *q = reinterpret_cast<const Pack<T> *>(p);
NORM_UNROLL
        for (int j = 0; j < V / PK; ++j) {
            Pack<T> pk = q[j];
NORM_UNROLL
            for (int u = 0; u < PK; ++u) v[j * PK + u] = pk.v[u];
        }
    }
}
template <typename T, int V> NORM_HD void storev(T *p, const T (&v)[V])
{
    if (V == 1) {
        p[0] = v[0];
    } else {
        constexpr int PK = pack_width<T>();
        Pack<T> *q = reinterpret_cast<Pack<T> *>(p);
NORM_UNROLL
        for (int j = 0; j < V / PK; ++j) {
            Pack<T> pk;
NORM_UNROLL
            for (int u = 0; u < PK; ++u) pk.v[u] = v[j * PK + u];
            q[j] = pk;
        }
    }
}

inline bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

// ------------------------------------------------------------------------------------------
// division by a 32-bit constant (Granlund-Montgomery with a 33-bit multiplier: exact for
// every 32-bit dividend), so the elementwise passes find a channel in a few instructions

struct FastDiv {
    uint32_t d, m, s;
};
inline FastDiv make_fastdiv(uint32_t d)
{
    FastDiv f;
    uint32_t s = 0;
    while (s < 32 && ((uint64_t)1 << s) < d) ++s;
    f.d = d;
    f.s = s;
    f.m = (uint32_t)((((uint64_t)1 << 32) * (((uint64_t)1 << s) - d)) / d + 1);
    return f;
}
NORM_HD uint32_t fdiv(uint32_t n, const FastDiv &f)
{
#ifdef __CUDA_ARCH__
    uint32_t t = __umulhi(n, f.m);
#else
    uint32_t t = (uint32_t)(((uint64_t)n * f.m) >> 32);
#endif
    return (uint32_t)(((uint64_t)t + n) >> f.s);
}

// ------------------------------------------------------------------------------------------
// batch-norm geometry

struct BNGeom {
    int64_t N, C, S, M, W;
    int rows;                 // 1: rows walk over (N, W = C*S); 0: planes walk
    int64_t L, P;             // planes: values per block (a multiple of CH), blocks per channel
    int64_t RL, RS, CT;       // rows: rows per split, splits, column tiles of 32
    int64_t Q;                // partials per channel (P, or S * RS), contiguous per channel
};

inline BNGeom bn_geom(int64_t N, int64_t C, int64_t S)
{
    BNGeom g;
    memset(&g, 0, sizeof g);
    g.N = N; g.C = C; g.S = S; g.M = N * S; g.W = C * S;
    if (S >= PLANE_MIN) {
        g.rows = 0;
        int64_t p = clamp64(cdiv(TARGET_BLOCKS, C), 1, cdiv(g.M, MIN_PLANE_BLOCK));
        g.L = cdiv(cdiv(g.M, p), CH) * CH;
        g.P = cdiv(g.M, g.L);
        g.Q = g.P;
    } else {
        g.rows = 1;
        g.CT = cdiv(g.W, 32);
        int64_t rs = clamp64(cdiv(TARGET_BLOCKS, g.CT), 1, cdiv(N, TY * CH));
        g.RL = cdiv(N, rs);
        g.RS = cdiv(N, g.RL);
        g.Q = S * g.RS;
    }
    return g;
}

// ------------------------------------------------------------------------------------------
// per-thread accumulators of the statistics walks

// 1/n for a chunk's count (a select chain, not a division: the double division's slow
// path made the statistics kernels spill)
NORM_HD double rcp_small(int n)
{
    return n == 8 ? 0.125 : n == 7 ? 1.0 / 7.0 : n == 6 ? 1.0 / 6.0 : n == 5 ? 0.2
         : n == 4 ? 0.25 : n == 3 ? 1.0 / 3.0 : n == 2 ? 0.5 : 1.0;
}

// shifted sums about the mean of the first chunk (see the top of the file)
struct MomAcc {
    double k, s1, s2, n;
    NORM_HD void init() { k = 0.0; s1 = 0.0; s2 = 0.0; n = 0.0; }
    template <typename T> NORM_HD void add(const T (&x)[CH], const T (&)[CH], int cnt)
    {
        if (cnt <= 0) return;
        if (n == 0.0) {
            double s = 0.0;
NORM_UNROLL
            for (int i = 0; i < CH; ++i)
                if (i < cnt) s += (double)x[i];
            k = s * rcp_small(cnt);   // any shift near the chunk's mean will do
        }
NORM_UNROLL
        for (int i = 0; i < CH; ++i) {
            if (i < cnt) {
                double d = (double)x[i] - k;
                s1 += d;
                s2 += d * d;
            }
        }
        n += (double)cnt;
    }
    NORM_HD Mom result() const
    {
        Mom m;
        zero(m);
        if (n > 0.0) {
            m.n = n;
            m.mean = k + s1 / n;
            m.m2 = s2 - s1 * s1 / n;
            if (m.m2 < 0.0) m.m2 = 0.0;
        }
        return m;
    }
};

// sum(dy), sum(dy * (x - m)): the product in T as the CPU, the sums in double
template <typename T> struct DSumAcc {
    T m;
    double a, b;
    NORM_HD void init() { a = 0.0; b = 0.0; }
    NORM_HD void add(const T (&x)[CH], const T (&dy)[CH], int cnt)
    {
NORM_UNROLL
        for (int i = 0; i < CH; ++i) {
            if (i < cnt) {
                a += (double)dy[i];
                b += (double)(dy[i] * (x[i] - m));
            }
        }
    }
    NORM_HD Sum2 result() const
    {
        Sum2 s;
        s.a = a;
        s.b = b;
        return s;
    }
};

template <typename T, bool BWD> struct AccOf;
template <typename T> struct AccOf<T, false> {
    typedef MomAcc type;
    typedef Mom part;
    static NORM_HD void setup(MomAcc &a, const T *, int64_t) { a.init(); }
};
template <typename T> struct AccOf<T, true> {
    typedef DSumAcc<T> type;
    typedef Sum2 part;
    static NORM_HD void setup(DSumAcc<T> &a, const T *mean, int64_t c)
    {
        a.init();
        a.m = mean[c];
    }
};

// CH values from element (n, s) of channel c on: at base, crossing into plane n + 1 past S
// (S >= 32 > CH, so at most once). VEC: S is a multiple of the 16-byte pack and p aligned,
// so packs never straddle planes: pack by pack, the crossing decided per pack.
template <typename T, bool VEC>
NORM_HD void load_chunk(const T *p, int64_t base, int64_t S, int64_t s, int64_t ps, int cnt,
                        T (&v)[CH])
{
    if (VEC) {
        constexpr int PK = pack_width<T>();
        NORM_UNROLL
        for (int j = 0; j < CH / PK; ++j) {
            T pk[PK];
            if (j * PK < cnt) {
                const int64_t off = s + j * PK < S ? base + j * PK : base + ps - S + j * PK;
                loadv<T, PK>(p + off, pk);
            } else {
                NORM_UNROLL
                for (int u = 0; u < PK; ++u) pk[u] = T(0);
            }
            NORM_UNROLL
            for (int u = 0; u < PK; ++u) v[j * PK + u] = pk[u];
        }
    } else {
NORM_UNROLL
        for (int i = 0; i < CH; ++i) {
            if (i < cnt) {
                int64_t off = s + i < S ? base + i : base + ps - S + i;
                v[i] = p[off];
            } else {
                v[i] = T(0);
            }
        }
    }
}

// planes walk: thread t of block (c, k) takes chunks t, t + NT, ... of the block's range
template <typename T, bool VEC, bool BWD, class Acc>
NORM_HD void planes_thread(const T *x, const T *dy, const BNGeom &g, int64_t c, int64_t k, int t,
                           Acc &acc)
{
    const int64_t e0 = k * g.L;
    const int64_t e1 = e0 + g.L < g.M ? e0 + g.L : g.M;
    int64_t e = e0 + (int64_t)t * CH;
    if (e >= e1) return;
    const int64_t step = (int64_t)NT * CH;
    const int64_t dn = step / g.S, ds = step - dn * g.S;
    int64_t n = e / g.S, s = e - n * g.S;
    const int64_t ps = g.C * g.S;
    for (; e < e1; e += step) {
        const int cnt = e1 - e < CH ? (int)(e1 - e) : CH;
        const int64_t base = n * ps + c * g.S + s;
        T xv[CH], dv[CH];
        load_chunk<T, VEC>(x, base, g.S, s, ps, cnt, xv);
        if (BWD) load_chunk<T, VEC>(dy, base, g.S, s, ps, cnt, dv);
        acc.add(xv, dv, cnt);
        s += ds;
        n += dn;
        if (s >= g.S) {
            s -= g.S;
            ++n;
        }
    }
}

// rows walk: thread (tx, ty) of block (tile, k) takes column j and rows r0 + ty + TY*i,
// CH of them per step
template <typename T, bool BWD, class Acc>
NORM_HD void rows_thread(const T *x, const T *dy, const BNGeom &g, int64_t j, int64_t k, int ty,
                         Acc &acc)
{
    if (j >= g.W) return;
    const int64_t r0 = k * g.RL;
    const int64_t r1 = r0 + g.RL < g.N ? r0 + g.RL : g.N;
    for (int64_t r = r0 + ty; r < r1; r += (int64_t)TY * CH) {
        T xv[CH], dv[CH];
        int cnt = 0;
NORM_UNROLL
        for (int u = 0; u < CH; ++u) {
            const int64_t rr = r + (int64_t)u * TY;
            if (rr < r1) {
                xv[u] = x[rr * g.W + j];
                if (BWD) dv[u] = dy[rr * g.W + j];
                cnt = u + 1;
            } else {
                xv[u] = T(0);
                dv[u] = T(0);
            }
        }
        acc.add(xv, dv, cnt);
    }
}

// ------------------------------------------------------------------------------------------
// per-channel formulas (the CPU's, _norm.pyx)

template <typename T> struct BNFwdFin {
    const T *gamma, *beta;
    T *rm, *rv;
    int64_t rms, rvs;
    double mom, eps, M;
    T *pm, *pi, *pa, *pb;
    NORM_HD void operator()(int64_t c, const Mom &t) const
    {
        const double mean = t.n > 0.0 ? t.mean : (double)NAN;
        const double var = t.n > 0.0 ? t.m2 / t.n : (double)NAN;
        const T m = (T)mean;
        const T inv = (T)(1.0 / sqrt(var + eps));
        if (rm) {
            // PyTorch's rule, unbiased variance, in double as the CPU
            rm[c * rms] = (T)((1.0 - mom) * (double)rm[c * rms] + mom * mean);
            rv[c * rvs] = (T)((1.0 - mom) * (double)rv[c * rvs] + mom * (var * (M / (M - 1.0))));
        }
        const T gg = gamma ? gamma[c] : T(1);
        pm[c] = m;
        pi[c] = inv;
        pa[c] = gg * inv;
        pb[c] = beta ? beta[c] : T(0);
    }
};

template <typename T> struct BNInferPrep {
    const T *gamma, *beta, *rm, *rv;
    int64_t rms, rvs;
    double eps;
    T *pm, *pi, *pa, *pb;
    NORM_HD void operator()(int64_t c) const
    {
        const T inv = (T)(1.0 / sqrt((double)rv[c * rvs] + eps));
        const T gg = gamma ? gamma[c] : T(1);
        pm[c] = rm[c * rms];
        pi[c] = inv;
        pa[c] = gg * inv;
        pb[c] = beta ? beta[c] : T(0);
    }
};

template <typename T> struct BNBwdFin {
    const T *gamma, *inv;
    double M;
    T *dgamma, *dbeta, *pk, *pp, *pq;
    NORM_HD void operator()(int64_t c, const Sum2 &t) const
    {
        const double sb = t.a, sx = t.b;
        const double inv64 = (double)inv[c];
        const double k64 = (gamma ? (double)gamma[c] : 1.0) * inv64;
        dbeta[c] = (T)sb;
        dgamma[c] = (T)(sx * inv64);
        pk[c] = (T)k64;
        pp[c] = (T)(-k64 * inv64 * inv64 * sx / M);
        pq[c] = (T)(-k64 * sb / M);
    }
};

template <typename T> NORM_HD T bn_affine(T x, T m, T a, T b) { return (x - m) * a + b; }
template <typename T> NORM_HD T bn_dx(T x, T dy, T m, T k, T p, T q)
{
    return k * dy + (p * (x - m) + q);
}

// channel of vector iv (V values of one plane): ((iv / (S/V)) % C)
template <bool BIG>
NORM_HD int64_t channel_of(int64_t iv, int64_t spv, int64_t C, const FastDiv &ds, const FastDiv &dc)
{
    if (BIG) return (iv / spv) % C;
    const uint32_t p = fdiv((uint32_t)iv, ds);
    return (int64_t)(p - fdiv(p, dc) * (uint32_t)C);
}

// one vector of the elementwise pass: y (forward) or dx (backward)
template <typename T, int V, bool BIG, bool BWD>
NORM_HD void bn_apply_vec(const T *x, const T *dy, T *out, int64_t iv, int64_t spv, int64_t C,
                          const FastDiv &ds, const FastDiv &dc, const T *m, const T *a,
                          const T *b, const T *q)
{
    const int64_t c = channel_of<BIG>(iv, spv, C, ds, dc);
    T xv[V], r[V];
    loadv<T, V>(x + iv * V, xv);
    if (BWD) {
        T dv[V];
        loadv<T, V>(dy + iv * V, dv);
        const T mc = m[c], kc = a[c], pc = b[c], qc = q[c];
NORM_UNROLL
        for (int u = 0; u < V; ++u) r[u] = bn_dx(xv[u], dv[u], mc, kc, pc, qc);
    } else {
        const T mc = m[c], ac = a[c], bc = b[c];
NORM_UNROLL
        for (int u = 0; u < V; ++u) r[u] = bn_affine(xv[u], mc, ac, bc);
    }
    storev<T, V>(out + iv * V, r);
}

// ------------------------------------------------------------------------------------------
// layer-norm phases (a row of D values, the thread `lane` of TPR, V values per step)

template <typename T> NORM_HD T ln_y(T x, T mu, T inv, const T *g, const T *b, int64_t j)
{
    if (g && b) return ((x - mu) * inv) * g[j] + b[j];
    if (g) return ((x - mu) * inv) * g[j];
    if (b) return (x - mu) * inv + b[j];
    return (x - mu) * inv;
}

template <typename T, int V> NORM_HD double ln_sum_thread(const T *xr, int64_t nv, int lane, int tpr)
{
    double s = 0.0;
    for (int64_t iv = lane; iv < nv; iv += tpr) {
        T v[V];
        loadv<T, V>(xr + iv * V, v);
NORM_UNROLL
        for (int u = 0; u < V; ++u) s += (double)v[u];
    }
    return s;
}

template <typename T, int V>
NORM_HD double ln_sq_thread(const T *xr, int64_t nv, int lane, int tpr, double mean)
{
    double q = 0.0;
    for (int64_t iv = lane; iv < nv; iv += tpr) {
        T v[V];
        loadv<T, V>(xr + iv * V, v);
NORM_UNROLL
        for (int u = 0; u < V; ++u) {
            double d = (double)v[u] - mean;
            q += d * d;
        }
    }
    return q;
}

template <typename T, int V>
NORM_HD void ln_write_thread(const T *xr, T *yr, const T *g, const T *b, int64_t nv, int lane,
                             int tpr, T mu, T inv)
{
    for (int64_t iv = lane; iv < nv; iv += tpr) {
        T v[V], r[V];
        loadv<T, V>(xr + iv * V, v);
NORM_UNROLL
        for (int u = 0; u < V; ++u) r[u] = ln_y(v[u], mu, inv, g, b, iv * V + u);
        storev<T, V>(yr + iv * V, r);
    }
}

// (sum u, sum u * (x - mu)), u = g * dy or dy
template <typename T, int V>
NORM_HD Sum2 ln_bsum_thread(const T *xr, const T *dr, const T *g, int64_t nv, int lane, int tpr,
                            T mu)
{
    Sum2 s;
    zero(s);
    for (int64_t iv = lane; iv < nv; iv += tpr) {
        T xv[V], dv[V];
        loadv<T, V>(xr + iv * V, xv);
        loadv<T, V>(dr + iv * V, dv);
NORM_UNROLL
        for (int u = 0; u < V; ++u) {
            const T uu = g ? dv[u] * g[iv * V + u] : dv[u];
            s.a += (double)uu;
            s.b += (double)(uu * (xv[u] - mu));
        }
    }
    return s;
}

template <typename T> NORM_HD T ln_dx(T x, T dy, T mu, T inv, T c1, T c2, const T *g, int64_t j)
{
    if (g) {
        const T d = x - mu;
        return inv * ((g[j] * dy - c1) - d * c2);
    }
    return inv * ((dy - c1) - (x - mu) * c2);
}

template <typename T, int V>
NORM_HD void ln_bwrite_thread(const T *xr, const T *dr, T *outr, const T *g, int64_t nv, int lane,
                              int tpr, T mu, T inv, T c1, T c2)
{
    for (int64_t iv = lane; iv < nv; iv += tpr) {
        T xv[V], dv[V], r[V];
        loadv<T, V>(xr + iv * V, xv);
        loadv<T, V>(dr + iv * V, dv);
NORM_UNROLL
        for (int u = 0; u < V; ++u) r[u] = ln_dx(xv[u], dv[u], mu, inv, c1, c2, g, iv * V + u);
        storev<T, V>(outr + iv * V, r);
    }
}

// row statistics from the tree totals (the CPU's roundings)
template <typename T> NORM_HD void ln_stats(double sum, double m2, int64_t D, double eps, T &mu, T &inv)
{
    const double mean = sum / (double)D;
    mu = (T)mean;
    inv = (T)(1.0 / sqrt(m2 / (double)D + eps));
}
template <typename T>
NORM_HD void ln_coefs(const Sum2 &s, int64_t D, T inv, T &c1, T &c2)
{
    c1 = (T)(s.a / (double)D);
    c2 = (T)(s.b * (double)inv * (double)inv / (double)D);
}

// dgamma/dbeta column walk: column j, rows r0 + ty + TY*i of split k
template <typename T>
NORM_HD Sum2 ln_col_thread(const T *dy, const T *x, const T *mean, const T *inv, int64_t R,
                           int64_t D, int64_t RL, int64_t j, int64_t k, int ty)
{
    Sum2 s;
    zero(s);
    if (j >= D) return s;
    const int64_t r0 = k * RL;
    const int64_t r1 = r0 + RL < R ? r0 + RL : R;
    for (int64_t r = r0 + ty; r < r1; r += TY) {
        const T d = dy[r * D + j];
        const T xh = (x[r * D + j] - mean[r]) * inv[r];
        s.a += (double)(d * xh);
        s.b += (double)d;
    }
    return s;
}

inline int ln_tpr(int64_t nv) { return nv <= 64 ? 8 : nv <= 1024 ? 32 : NT; }

struct LNColGeom {
    int64_t CT, RL, RS;
};
inline LNColGeom ln_col_geom(int64_t R, int64_t D)
{
    LNColGeom g;
    g.CT = cdiv(D, 32);
    int64_t rs = clamp64(cdiv(TARGET_BLOCKS, g.CT), 1, cdiv(R, 64));
    g.RL = cdiv(R, rs);
    g.RS = cdiv(R, g.RL);
    return g;
}

// ------------------------------------------------------------------------------------------
// kernels

#ifdef __CUDACC__

// (NT, 4): at most 64 registers, so 4 blocks (32 warps) per SM keep loads in flight; the
// backward walk holds x and dy chunks (16 doubles), (NT, 3) keeps it from spilling
template <typename T, bool VEC, bool BWD>
__global__ void __launch_bounds__(NT, BWD ? 3 : 4)
bn_stats_planes(const T *__restrict__ x, const T *__restrict__ dy, const T *__restrict__ mean,
                BNGeom g, double *__restrict__ part)
{
    typedef AccOf<T, BWD> A;
    typedef typename A::part P;
    __shared__ P sm[NW];
    const int64_t c = blockIdx.x / g.Q, k = blockIdx.x - c * g.Q;
    typename A::type acc;
    A::setup(acc, mean, c);
    planes_thread<T, VEC, BWD>(x, dy, g, c, k, threadIdx.x, acc);
    P v = block_tree<P, NT>(acc.result(), sm);
    if (threadIdx.x == 0) store(v, part + (c * g.Q + k) * Slots<P>::K);
}

template <typename T, bool BWD>
__global__ void __launch_bounds__(32 * TY, BWD ? 3 : 4)
bn_stats_rows(const T *__restrict__ x, const T *__restrict__ dy, const T *__restrict__ mean,
              BNGeom g, double *__restrict__ part)
{
    typedef AccOf<T, BWD> A;
    typedef typename A::part P;
    __shared__ P sm[TY][32];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t j = (int64_t)blockIdx.x * 32 + tx, k = blockIdx.y;
    typename A::type acc;
    A::setup(acc, mean, j < g.W ? j / g.S : 0);
    rows_thread<T, BWD>(x, dy, g, j, k, ty, acc);
    sm[ty][tx] = acc.result();
    __syncthreads();
    for (int off = TY / 2; off > 0; off >>= 1) {
        if (ty < off) sm[ty][tx] = merge(sm[ty][tx], sm[ty + off][tx]);
        __syncthreads();
    }
    // column j = (c, s): its splits are items s * RS + k of channel c, i.e. j * RS + k
    if (ty == 0 && j < g.W) store(sm[0][tx], part + (j * g.RS + k) * Slots<P>::K);
}

// a warp per channel: lane l merges items l, l + 32, ... in order, then the warp's tree
template <class P, class F>
__global__ void __launch_bounds__(NT)
bn_finalize(const double *__restrict__ part, int64_t C, int64_t Q, F f)
{
    const int64_t c = (int64_t)blockIdx.x * NW + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (c >= C) return;
    P v, it;
    zero(v);
    for (int64_t q = lane; q < Q; q += 32) {
        load(it, part + (c * Q + q) * Slots<P>::K);
        v = merge(v, it);
    }
    v = warp_tree(v, 32);
    if (lane == 0) f(c, v);
}

template <class F> __global__ void per_channel(int64_t C, F f)
{
    FDL_GRID_STRIDE(c, C) f(c);
}

template <typename T> __global__ void fill_kernel(T *p, int64_t n, T v)
{
    FDL_GRID_STRIDE(i, n) p[i] = v;
}

template <typename T, int V, bool BIG, bool BWD>
__global__ void __launch_bounds__(NT)
bn_apply(const T *__restrict__ x, const T *__restrict__ dy, T *__restrict__ out, int64_t nvec,
         int64_t spv, int64_t C, FastDiv ds, FastDiv dc, const T *__restrict__ m,
         const T *__restrict__ a, const T *__restrict__ b, const T *__restrict__ q)
{
    FDL_GRID_STRIDE(iv, nvec) bn_apply_vec<T, V, BIG, BWD>(x, dy, out, iv, spv, C, ds, dc, m, a, b, q);
}

// the sum of a row group of TPR threads, in every thread of the group
template <class P, int TPR> __device__ inline P group_sum(P v, P *sm, P *bc)
{
    if constexpr (TPR <= 32) {
        v = warp_tree(v, TPR);
        return shfl0(v, TPR);
    } else {
        v = block_tree<P, TPR>(v, sm);
        if (threadIdx.x == 0) *bc = v;
        __syncthreads();
        v = *bc;
        __syncthreads();
        return v;
    }
}

template <typename T, int V, int TPR>
__global__ void __launch_bounds__(NT)
ln_fwd_kernel(const T *__restrict__ x, T *__restrict__ y, const T *__restrict__ g,
              const T *__restrict__ b, int64_t R, int64_t D, double eps, T *__restrict__ mean,
              T *__restrict__ inv)
{
    constexpr int RPB = NT / TPR;
    __shared__ double sm[NW];
    __shared__ double bc;
    const int lane = threadIdx.x % TPR;
    const int64_t r = (int64_t)blockIdx.x * RPB + threadIdx.x / TPR;
    const bool live = r < R;                  // a dead group still joins the shuffles
    const int64_t nv = D / V;
    const T *xr = x + (live ? r : 0) * D;
    double s = live ? ln_sum_thread<T, V>(xr, nv, lane, TPR) : 0.0;
    s = group_sum<double, TPR>(s, sm, &bc);
    const double mean64 = s / (double)D;
    double q = live ? ln_sq_thread<T, V>(xr, nv, lane, TPR, mean64) : 0.0;
    q = group_sum<double, TPR>(q, sm, &bc);
    if (!live) return;
    T mu, iv;
    ln_stats<T>(s, q, D, eps, mu, iv);
    if (lane == 0) {
        if (mean) mean[r] = mu;
        if (inv) inv[r] = iv;
    }
    ln_write_thread<T, V>(xr, y + r * D, g, b, nv, lane, TPR, mu, iv);
}

template <typename T, int V, int TPR>
__global__ void __launch_bounds__(NT)
ln_bwd_kernel(const T *__restrict__ dy, const T *__restrict__ x, const T *__restrict__ g,
              const T *__restrict__ mean, const T *__restrict__ inv, int64_t R, int64_t D,
              T *__restrict__ dx)
{
    constexpr int RPB = NT / TPR;
    __shared__ Sum2 sm[NW];
    __shared__ Sum2 bc;
    const int lane = threadIdx.x % TPR;
    const int64_t r = (int64_t)blockIdx.x * RPB + threadIdx.x / TPR;
    const bool live = r < R;
    const int64_t nv = D / V, rr = live ? r : 0;
    const T mu = mean[rr], is = inv[rr];
    Sum2 s;
    if (live) {
        s = ln_bsum_thread<T, V>(x + rr * D, dy + rr * D, g, nv, lane, TPR, mu);
    } else {
        zero(s);
    }
    s = group_sum<Sum2, TPR>(s, sm, &bc);
    if (!live) return;
    T c1, c2;
    ln_coefs<T>(s, D, is, c1, c2);
    ln_bwrite_thread<T, V>(x + r * D, dy + r * D, dx + r * D, g, nv, lane, TPR, mu, is, c1, c2);
}

template <typename T>
__global__ void __launch_bounds__(32 * TY)
ln_col_kernel(const T *__restrict__ dy, const T *__restrict__ x, const T *__restrict__ mean,
              const T *__restrict__ inv, int64_t R, int64_t D, int64_t RL,
              double *__restrict__ part)
{
    __shared__ Sum2 sm[TY][32];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t j = (int64_t)blockIdx.x * 32 + tx, k = blockIdx.y;
    sm[ty][tx] = ln_col_thread<T>(dy, x, mean, inv, R, D, RL, j, k, ty);
    __syncthreads();
    for (int off = TY / 2; off > 0; off >>= 1) {
        if (ty < off) sm[ty][tx] = merge(sm[ty][tx], sm[ty + off][tx]);
        __syncthreads();
    }
    if (ty == 0 && j < D) store(sm[0][tx], part + (k * D + j) * 2);
}

template <typename T>
__global__ void ln_col_finalize(const double *__restrict__ part, int64_t D, int64_t RS,
                                T *__restrict__ dgamma, T *__restrict__ dbeta)
{
    FDL_GRID_STRIDE(j, D) {
        double a = 0.0, b = 0.0;
        for (int64_t k = 0; k < RS; ++k) {
            a += part[(k * D + j) * 2];
            b += part[(k * D + j) * 2 + 1];
        }
        dgamma[j] = (T)a;
        dbeta[j] = (T)b;
    }
}

#endif  // __CUDACC__

// ------------------------------------------------------------------------------------------
// drivers: the same sequence of phases as kernels (HOST = false) or host loops (HOST = true)

template <bool HOST> struct Mem {
    static int alloc(void **p, size_t bytes, cudaStream_t st)
    {
        if (HOST) {
            *p = malloc(bytes ? bytes : 1);
            return *p ? 0 : (int)cudaErrorMemoryAllocation;
        }
        return (int)cudaMallocAsync(p, bytes ? bytes : 1, st);
    }
    static void release(void *p, cudaStream_t st)
    {
        if (HOST) free(p);
        else if (p) cudaFreeAsync(p, st);
    }
};

template <typename T> void host_fill(T *p, int64_t n, T v)
{
    for (int64_t i = 0; i < n; ++i) p[i] = v;
}

// statistics walk over x (and dy) into part
template <typename T, bool BWD, bool HOST>
int bn_stats(const T *x, const T *dy, const T *mean, const BNGeom &g, double *part, cudaStream_t st)
{
    typedef AccOf<T, BWD> A;
    typedef typename A::part P;
    const int K = Slots<P>::K;
    const bool vec = g.S % pack_width<T>() == 0 && aligned16(x) && (!BWD || aligned16(dy));
    if (HOST) {
        P vals[NT > 32 * TY ? NT : 32 * TY];
        if (!g.rows) {
            for (int64_t c = 0; c < g.C; ++c)
                for (int64_t k = 0; k < g.Q; ++k) {
                    for (int t = 0; t < NT; ++t) {
                        typename A::type acc;
                        A::setup(acc, mean, c);
                        if (vec) planes_thread<T, true, BWD>(x, dy, g, c, k, t, acc);
                        else planes_thread<T, false, BWD>(x, dy, g, c, k, t, acc);
                        vals[t] = acc.result();
                    }
                    store(host_group(vals, NT), part + (c * g.Q + k) * K);
                }
        } else {
            for (int64_t j = 0; j < g.W; ++j)
                for (int64_t k = 0; k < g.RS; ++k) {
                    for (int ty = 0; ty < TY; ++ty) {
                        typename A::type acc;
                        A::setup(acc, mean, j / g.S);
                        rows_thread<T, BWD>(x, dy, g, j, k, ty, acc);
                        vals[ty] = acc.result();
                    }
                    host_tree(vals, TY);
                    store(vals[0], part + (j * g.RS + k) * K);
                }
        }
        return 0;
    }
#ifdef __CUDACC__
    if (!g.rows) {
        const unsigned blocks = (unsigned)(g.C * g.Q);
        if (vec) bn_stats_planes<T, true, BWD><<<blocks, NT, 0, st>>>(x, dy, mean, g, part);
        else bn_stats_planes<T, false, BWD><<<blocks, NT, 0, st>>>(x, dy, mean, g, part);
    } else {
        dim3 grid((unsigned)g.CT, (unsigned)g.RS), block(32, TY);
        bn_stats_rows<T, BWD><<<grid, block, 0, st>>>(x, dy, mean, g, part);
    }
    return (int)cudaGetLastError();
#else
    return 0;
#endif
}

template <class P, class F, bool HOST>
int bn_fin(const double *part, int64_t C, int64_t Q, const F &f, cudaStream_t st)
{
    if (HOST) {
        P lanes[32], it;
        for (int64_t c = 0; c < C; ++c) {
            for (int l = 0; l < 32; ++l) {
                zero(lanes[l]);
                for (int64_t q = l; q < Q; q += 32) {
                    load(it, part + (c * Q + q) * Slots<P>::K);
                    lanes[l] = merge(lanes[l], it);
                }
            }
            host_tree(lanes, 32);
            f(c, lanes[0]);
        }
        return 0;
    }
#ifdef __CUDACC__
    bn_finalize<P, F><<<(unsigned)cdiv(C, NW), NT, 0, st>>>(part, C, Q, f);
    return (int)cudaGetLastError();
#else
    return 0;
#endif
}

template <typename T, bool BWD, bool HOST>
int bn_elementwise(const T *x, const T *dy, T *out, int64_t N, int64_t C, int64_t S, const T *m,
                   const T *a, const T *b, const T *q, cudaStream_t st)
{
    constexpr int PK = pack_width<T>();
    const bool vec = S % PK == 0 && aligned16(x) && aligned16(out) && (!BWD || aligned16(dy));
    const int V = vec ? PK : 1;
    const int64_t nvec = N * C * S / V, spv = S / V;
    const bool big = nvec > (int64_t)0xffffffffu;
    FastDiv ds, dc;
    memset(&ds, 0, sizeof ds);
    memset(&dc, 0, sizeof dc);
    if (!big) {
        ds = make_fastdiv((uint32_t)spv);
        dc = make_fastdiv((uint32_t)C);
    }
    if (HOST) {
        for (int64_t iv = 0; iv < nvec; ++iv) {
            if (vec) {
                if (big) bn_apply_vec<T, PK, true, BWD>(x, dy, out, iv, spv, C, ds, dc, m, a, b, q);
                else bn_apply_vec<T, PK, false, BWD>(x, dy, out, iv, spv, C, ds, dc, m, a, b, q);
            } else {
                if (big) bn_apply_vec<T, 1, true, BWD>(x, dy, out, iv, spv, C, ds, dc, m, a, b, q);
                else bn_apply_vec<T, 1, false, BWD>(x, dy, out, iv, spv, C, ds, dc, m, a, b, q);
            }
        }
        return 0;
    }
#ifdef __CUDACC__
    const unsigned grid = fdl_cuda_grid(nvec, NT);
    if (vec) {
        if (big) bn_apply<T, PK, true, BWD><<<grid, NT, 0, st>>>(x, dy, out, nvec, spv, C, ds, dc, m, a, b, q);
        else bn_apply<T, PK, false, BWD><<<grid, NT, 0, st>>>(x, dy, out, nvec, spv, C, ds, dc, m, a, b, q);
    } else {
        if (big) bn_apply<T, 1, true, BWD><<<grid, NT, 0, st>>>(x, dy, out, nvec, spv, C, ds, dc, m, a, b, q);
        else bn_apply<T, 1, false, BWD><<<grid, NT, 0, st>>>(x, dy, out, nvec, spv, C, ds, dc, m, a, b, q);
    }
    return (int)cudaGetLastError();
#else
    return 0;
#endif
}

template <typename T, bool HOST> int fill(T *p, int64_t n, T v, cudaStream_t st)
{
    if (!p || n <= 0) return 0;
    if (HOST) {
        host_fill(p, n, v);
        return 0;
    }
#ifdef __CUDACC__
    fill_kernel<T><<<fdl_cuda_grid(n, NT), NT, 0, st>>>(p, n, v);
    return (int)cudaGetLastError();
#else
    return 0;
#endif
}

template <class F, bool HOST> int channels(int64_t C, const F &f, cudaStream_t st)
{
    if (C <= 0) return 0;
    if (HOST) {
        for (int64_t c = 0; c < C; ++c) f(c);
        return 0;
    }
#ifdef __CUDACC__
    per_channel<F><<<fdl_cuda_grid(C, NT), NT, 0, st>>>(C, f);
    return (int)cudaGetLastError();
#else
    return 0;
#endif
}

template <typename T, bool HOST>
int bn_forward(const T *x, T *y, int64_t N, int64_t C, int64_t S, const T *gamma, const T *beta,
               T *rm, int64_t rms, T *rv, int64_t rvs, int training, double mom, double eps,
               T *mean_out, T *inv_out, cudaStream_t st)
{
    if (C <= 0) return 0;
    const int64_t M = N * S;
    int rc = 0;
    void *ws = NULL;
    BNGeom g;
    memset(&g, 0, sizeof g);
    const bool stats = training && M > 0;
    if (stats) g = bn_geom(N, C, S);
    const size_t pbytes = stats ? (size_t)(C * g.Q * 3) * sizeof(double) : 0;
    if (training && M == 0) {
        // the statistics of nothing: NaN, and the running statistics are left alone
        rc = fill<T, HOST>(mean_out, C, (T)NAN, st);
        if (!rc) rc = fill<T, HOST>(inv_out, C, (T)NAN, st);
        return rc;
    }
    rc = Mem<HOST>::alloc(&ws, pbytes + (size_t)4 * C * sizeof(T), st);
    if (rc) return rc;
    {
        double *part = (double *)ws;
        T *pm = (T *)((char *)ws + pbytes), *pi = pm + C, *pa = pm + 2 * C, *pb = pm + 3 * C;
        if (mean_out) pm = mean_out;
        if (inv_out) pi = inv_out;
        if (stats) {
            rc = bn_stats<T, false, HOST>(x, NULL, NULL, g, part, st);
            if (rc) goto done;
            BNFwdFin<T> f;
            f.gamma = gamma; f.beta = beta; f.rm = rm; f.rv = rv; f.rms = rms; f.rvs = rvs;
            f.mom = mom; f.eps = eps; f.M = (double)M;
            f.pm = pm; f.pi = pi; f.pa = pa; f.pb = pb;
            rc = bn_fin<Mom, BNFwdFin<T>, HOST>(part, C, g.Q, f, st);
        } else {
            BNInferPrep<T> f;
            f.gamma = gamma; f.beta = beta; f.rm = rm; f.rv = rv; f.rms = rms; f.rvs = rvs;
            f.eps = eps; f.pm = pm; f.pi = pi; f.pa = pa; f.pb = pb;
            rc = channels<BNInferPrep<T>, HOST>(C, f, st);
        }
        if (rc) goto done;
        if (M > 0) rc = bn_elementwise<T, false, HOST>(x, NULL, y, N, C, S, pm, pa, pb, NULL, st);
    }
done:
    Mem<HOST>::release(ws, st);
    return rc;
}

template <typename T, bool HOST>
int bn_backward(const T *dy, const T *x, int64_t N, int64_t C, int64_t S, const T *gamma,
                const T *mean, const T *inv, T *dx, T *dgamma, T *dbeta, cudaStream_t st)
{
    if (C <= 0) return 0;
    const int64_t M = N * S;
    int rc = 0;
    if (M == 0) {
        rc = fill<T, HOST>(dgamma, C, T(0), st);
        if (!rc) rc = fill<T, HOST>(dbeta, C, T(0), st);
        return rc;
    }
    const BNGeom g = bn_geom(N, C, S);
    const size_t pbytes = (size_t)(C * g.Q * 2) * sizeof(double);
    void *ws = NULL;
    rc = Mem<HOST>::alloc(&ws, pbytes + (size_t)3 * C * sizeof(T), st);
    if (rc) return rc;
    {
        double *part = (double *)ws;
        T *pk = (T *)((char *)ws + pbytes), *pp = pk + C, *pq = pk + 2 * C;
        rc = bn_stats<T, true, HOST>(x, dy, mean, g, part, st);
        if (rc) goto done;
        BNBwdFin<T> f;
        f.gamma = gamma; f.inv = inv; f.M = (double)M;
        f.dgamma = dgamma; f.dbeta = dbeta; f.pk = pk; f.pp = pp; f.pq = pq;
        rc = bn_fin<Sum2, BNBwdFin<T>, HOST>(part, C, g.Q, f, st);
        if (rc) goto done;
        rc = bn_elementwise<T, true, HOST>(x, dy, dx, N, C, S, mean, pk, pp, pq, st);
    }
done:
    Mem<HOST>::release(ws, st);
    return rc;
}

template <typename T>
inline bool ln_vec_ok(int64_t D, const void *a, const void *b, const void *c, const void *d)
{
    return D % pack_width<T>() == 0 && aligned16(a) && aligned16(b) && (!c || aligned16(c)) &&
           (!d || aligned16(d));
}

template <typename T, int V>
void host_ln_fwd(const T *x, T *y, int64_t R, int64_t D, const T *g, const T *b, double eps,
                 T *mean, T *inv)
{
    const int64_t nv = D / V;
    const int tpr = ln_tpr(nv);
    double vals[NT];
    for (int64_t r = 0; r < R; ++r) {
        const T *xr = x + r * D;
        for (int l = 0; l < tpr; ++l) vals[l] = ln_sum_thread<T, V>(xr, nv, l, tpr);
        const double s = host_group(vals, tpr);
        const double mean64 = s / (double)D;
        for (int l = 0; l < tpr; ++l) vals[l] = ln_sq_thread<T, V>(xr, nv, l, tpr, mean64);
        const double q = host_group(vals, tpr);
        T mu, iv;
        ln_stats<T>(s, q, D, eps, mu, iv);
        if (mean) mean[r] = mu;
        if (inv) inv[r] = iv;
        for (int l = 0; l < tpr; ++l) ln_write_thread<T, V>(xr, y + r * D, g, b, nv, l, tpr, mu, iv);
    }
}

template <typename T, int V>
void host_ln_bwd_rows(const T *dy, const T *x, const T *g, const T *mean, const T *inv, int64_t R,
                      int64_t D, T *dx)
{
    const int64_t nv = D / V;
    const int tpr = ln_tpr(nv);
    Sum2 vals[NT];
    for (int64_t r = 0; r < R; ++r) {
        for (int l = 0; l < tpr; ++l)
            vals[l] = ln_bsum_thread<T, V>(x + r * D, dy + r * D, g, nv, l, tpr, mean[r]);
        const Sum2 s = host_group(vals, tpr);
        T c1, c2;
        ln_coefs<T>(s, D, inv[r], c1, c2);
        for (int l = 0; l < tpr; ++l)
            ln_bwrite_thread<T, V>(x + r * D, dy + r * D, dx + r * D, g, nv, l, tpr, mean[r],
                                   inv[r], c1, c2);
    }
}

#ifdef __CUDACC__
template <typename T, int V>
int launch_ln_fwd(const T *x, T *y, int64_t R, int64_t D, const T *g, const T *b, double eps,
                  T *mean, T *inv, cudaStream_t st)
{
    const int tpr = ln_tpr(D / V);
    const unsigned grid = (unsigned)cdiv(R, NT / tpr);
    if (tpr == 8) ln_fwd_kernel<T, V, 8><<<grid, NT, 0, st>>>(x, y, g, b, R, D, eps, mean, inv);
    else if (tpr == 32) ln_fwd_kernel<T, V, 32><<<grid, NT, 0, st>>>(x, y, g, b, R, D, eps, mean, inv);
    else ln_fwd_kernel<T, V, NT><<<grid, NT, 0, st>>>(x, y, g, b, R, D, eps, mean, inv);
    return (int)cudaGetLastError();
}
template <typename T, int V>
int launch_ln_bwd(const T *dy, const T *x, const T *g, const T *mean, const T *inv, int64_t R,
                  int64_t D, T *dx, cudaStream_t st)
{
    const int tpr = ln_tpr(D / V);
    const unsigned grid = (unsigned)cdiv(R, NT / tpr);
    if (tpr == 8) ln_bwd_kernel<T, V, 8><<<grid, NT, 0, st>>>(dy, x, g, mean, inv, R, D, dx);
    else if (tpr == 32) ln_bwd_kernel<T, V, 32><<<grid, NT, 0, st>>>(dy, x, g, mean, inv, R, D, dx);
    else ln_bwd_kernel<T, V, NT><<<grid, NT, 0, st>>>(dy, x, g, mean, inv, R, D, dx);
    return (int)cudaGetLastError();
}
#endif

template <typename T, bool HOST>
int ln_forward(const T *x, T *y, int64_t R, int64_t D, const T *g, const T *b, double eps,
               T *mean, T *inv, cudaStream_t st)
{
    if (R <= 0) return 0;
    if (D == 0) {
        int rc = fill<T, HOST>(mean, R, (T)NAN, st);
        return rc ? rc : fill<T, HOST>(inv, R, (T)NAN, st);
    }
    constexpr int PK = pack_width<T>();
    const bool vec = ln_vec_ok<T>(D, x, y, g, b);
    if (HOST) {
        if (vec) host_ln_fwd<T, PK>(x, y, R, D, g, b, eps, mean, inv);
        else host_ln_fwd<T, 1>(x, y, R, D, g, b, eps, mean, inv);
        return 0;
    }
#ifdef __CUDACC__
    return vec ? launch_ln_fwd<T, PK>(x, y, R, D, g, b, eps, mean, inv, st)
               : launch_ln_fwd<T, 1>(x, y, R, D, g, b, eps, mean, inv, st);
#else
    return 0;
#endif
}

template <typename T, bool HOST>
int ln_backward(const T *dy, const T *x, int64_t R, int64_t D, const T *g, const T *mean,
                const T *inv, T *dx, T *dgamma, T *dbeta, cudaStream_t st)
{
    int rc = 0;
    if (R <= 0 || D <= 0) {
        if (g) {
            rc = fill<T, HOST>(dgamma, D, T(0), st);
            if (!rc) rc = fill<T, HOST>(dbeta, D, T(0), st);
        }
        return rc;
    }
    constexpr int PK = pack_width<T>();
    const bool vec = ln_vec_ok<T>(D, x, dy, dx, g);
    if (HOST) {
        if (vec) host_ln_bwd_rows<T, PK>(dy, x, g, mean, inv, R, D, dx);
        else host_ln_bwd_rows<T, 1>(dy, x, g, mean, inv, R, D, dx);
    } else {
#ifdef __CUDACC__
        rc = vec ? launch_ln_bwd<T, PK>(dy, x, g, mean, inv, R, D, dx, st)
                 : launch_ln_bwd<T, 1>(dy, x, g, mean, inv, R, D, dx, st);
        if (rc) return rc;
#endif
    }
    if (!g) return 0;
    const LNColGeom cg = ln_col_geom(R, D);
    void *ws = NULL;
    rc = Mem<HOST>::alloc(&ws, (size_t)(cg.RS * D * 2) * sizeof(double), st);
    if (rc) return rc;
    double *part = (double *)ws;
    if (HOST) {
        Sum2 vals[TY];
        for (int64_t j = 0; j < D; ++j)
            for (int64_t k = 0; k < cg.RS; ++k) {
                for (int ty = 0; ty < TY; ++ty)
                    vals[ty] = ln_col_thread<T>(dy, x, mean, inv, R, D, cg.RL, j, k, ty);
                host_tree(vals, TY);
                store(vals[0], part + (k * D + j) * 2);
            }
        for (int64_t j = 0; j < D; ++j) {
            double a = 0.0, b = 0.0;
            for (int64_t k = 0; k < cg.RS; ++k) {
                a += part[(k * D + j) * 2];
                b += part[(k * D + j) * 2 + 1];
            }
            dgamma[j] = (T)a;
            dbeta[j] = (T)b;
        }
    } else {
#ifdef __CUDACC__
        dim3 grid((unsigned)cg.CT, (unsigned)cg.RS), block(32, TY);
        ln_col_kernel<T><<<grid, block, 0, st>>>(dy, x, mean, inv, R, D, cg.RL, part);
        rc = (int)cudaGetLastError();
        if (!rc) {
            ln_col_finalize<T><<<fdl_cuda_grid(D, NT), NT, 0, st>>>(part, D, cg.RS, dgamma, dbeta);
            rc = (int)cudaGetLastError();
        }
#endif
    }
    Mem<HOST>::release(ws, st);
    return rc;
}

}  // namespace fdl_norm

using namespace fdl_norm;

#define NORM_DISPATCH(dtype, CALL_F32, CALL_F64)                              \
    do {                                                                      \
        if ((dtype) == FDL_CUDA_F32) return CALL_F32;                         \
        if ((dtype) == FDL_CUDA_F64) return CALL_F64;                         \
        return (int)cudaErrorInvalidValue;                                    \
    } while (0)

#define BN_FWD_ARGS(T, HOST, st)                                                              \
    bn_forward<T, HOST>((const T *)x, (T *)y, N, C, S, (const T *)gamma, (const T *)beta,     \
                        (T *)running_mean, rm_stride, (T *)running_var, rv_stride, training,  \
                        momentum, eps, (T *)mean_out, (T *)inv_out, st)
#define BN_BWD_ARGS(T, HOST, st)                                                              \
    bn_backward<T, HOST>((const T *)dy, (const T *)x, N, C, S, (const T *)gamma,              \
                         (const T *)mean, (const T *)inv_std, (T *)dx, (T *)dgamma,           \
                         (T *)dbeta, st)
#define LN_FWD_ARGS(T, HOST, st)                                                              \
    ln_forward<T, HOST>((const T *)x, (T *)y, R, D, (const T *)gamma, (const T *)beta, eps,   \
                        (T *)mean_out, (T *)inv_out, st)
#define LN_BWD_ARGS(T, HOST, st)                                                              \
    ln_backward<T, HOST>((const T *)dy, (const T *)x, R, D, (const T *)gamma,                 \
                         (const T *)mean, (const T *)inv_std, (T *)dx, (T *)dgamma,           \
                         (T *)dbeta, st)

extern "C" int fdl_cuda_batch_norm_fwd(int dtype, const void *x, void *y, int64_t N, int64_t C,
                                       int64_t S, const void *gamma, const void *beta,
                                       void *running_mean, int64_t rm_stride,
                                       void *running_var, int64_t rv_stride, int training,
                                       double momentum, double eps, void *mean_out,
                                       void *inv_out, void *stream)
{
    cudaStream_t st = FDL_CUDA_STREAM(stream);
    NORM_DISPATCH(dtype, BN_FWD_ARGS(float, false, st), BN_FWD_ARGS(double, false, st));
}

extern "C" int fdl_cuda_batch_norm_bwd(int dtype, const void *dy, const void *x, int64_t N,
                                       int64_t C, int64_t S, const void *gamma,
                                       const void *mean, const void *inv_std, void *dx,
                                       void *dgamma, void *dbeta, void *stream)
{
    cudaStream_t st = FDL_CUDA_STREAM(stream);
    NORM_DISPATCH(dtype, BN_BWD_ARGS(float, false, st), BN_BWD_ARGS(double, false, st));
}

extern "C" int fdl_cuda_layer_norm_fwd(int dtype, const void *x, void *y, int64_t R, int64_t D,
                                       const void *gamma, const void *beta, double eps,
                                       void *mean_out, void *inv_out, void *stream)
{
    cudaStream_t st = FDL_CUDA_STREAM(stream);
    NORM_DISPATCH(dtype, LN_FWD_ARGS(float, false, st), LN_FWD_ARGS(double, false, st));
}

extern "C" int fdl_cuda_layer_norm_bwd(int dtype, const void *dy, const void *x, int64_t R,
                                       int64_t D, const void *gamma, const void *mean,
                                       const void *inv_std, void *dx, void *dgamma,
                                       void *dbeta, void *stream)
{
    cudaStream_t st = FDL_CUDA_STREAM(stream);
    NORM_DISPATCH(dtype, LN_BWD_ARGS(float, false, st), LN_BWD_ARGS(double, false, st));
}

extern "C" int fdl_cuda_host_batch_norm_fwd(int dtype, const void *x, void *y, int64_t N,
                                            int64_t C, int64_t S, const void *gamma,
                                            const void *beta, void *running_mean,
                                            int64_t rm_stride, void *running_var,
                                            int64_t rv_stride, int training, double momentum,
                                            double eps, void *mean_out, void *inv_out)
{
    NORM_DISPATCH(dtype, BN_FWD_ARGS(float, true, 0), BN_FWD_ARGS(double, true, 0));
}

extern "C" int fdl_cuda_host_batch_norm_bwd(int dtype, const void *dy, const void *x, int64_t N,
                                            int64_t C, int64_t S, const void *gamma,
                                            const void *mean, const void *inv_std, void *dx,
                                            void *dgamma, void *dbeta)
{
    NORM_DISPATCH(dtype, BN_BWD_ARGS(float, true, 0), BN_BWD_ARGS(double, true, 0));
}

extern "C" int fdl_cuda_host_layer_norm_fwd(int dtype, const void *x, void *y, int64_t R,
                                            int64_t D, const void *gamma, const void *beta,
                                            double eps, void *mean_out, void *inv_out)
{
    NORM_DISPATCH(dtype, LN_FWD_ARGS(float, true, 0), LN_FWD_ARGS(double, true, 0));
}

extern "C" int fdl_cuda_host_layer_norm_bwd(int dtype, const void *dy, const void *x, int64_t R,
                                            int64_t D, const void *gamma, const void *mean,
                                            const void *inv_std, void *dx, void *dgamma,
                                            void *dbeta)
{
    NORM_DISPATCH(dtype, LN_BWD_ARGS(float, true, 0), LN_BWD_ARGS(double, true, 0));
}

extern "C" void fdl_cuda_host_norm_geometry(int64_t N, int64_t C, int64_t S, int64_t *out)
{
    const BNGeom g = bn_geom(N, C, S);
    out[0] = g.rows;
    out[1] = g.Q;
    out[2] = g.rows ? g.RL : g.L;
    out[3] = g.rows ? g.RS : g.P;
    out[4] = ln_tpr(S);
}

extern "C" void fdl_cuda_host_norm_fastdiv(const uint32_t *n, uint32_t *q, int64_t count, uint32_t d)
{
    const FastDiv f = make_fastdiv(d);
    for (int64_t i = 0; i < count; ++i) q[i] = fdiv(n[i], f);
}
