/*
 * Scaled dot-product attention on the GPU: a fused flash-attention forward and the
 * flash-attention-2 backward, in FP32 (or FP64) FMA arithmetic, deterministic.
 *
 * Every kernel is a __host__ __device__ "block function" templated on a synchronisation
 * policy: on the device (DevSync) barriers are __syncthreads, row reductions warp shuffles
 * and tile loads cp.async; on the host (HostSync, attention_host.cuh) each CUDA thread is a
 * host thread, barriers are condition variables and shuffles go through an exchange buffer.
 * The *_host launchers run the same block code on the CPU: the test shims check the kernels'
 * indexing, tiling, masking and launch logic against the CPU implementation without a GPU.
 *
 * Thread layout (all kernels: 128 threads). Lane l of warp w is (tx, ty) = (l % 16,
 * 2 w + l / 16): the 16 threads of a row group are one half-warp, so a row's reduction is
 * four xor-shuffles. A thread owns rows ty + 8 i of the block's row tile and, in a score
 * tile, the columns tx + 16 j; in an output tile the chunks of CW columns at
 * h * 16 CW + tx CW. Shared-memory rows are padded by 16 bytes: the 16-byte loads of eight
 * consecutive rows (a quarter-warp) fall in distinct bank groups.
 *
 * Forward (Fwd): one block per (batch entry, tile of BQ queries), tiles issued longest
 * first under is_causal. Q's tile stays in shared memory; K and V tiles of BK keys stream
 * through single buffers with cp.async, K's next tile loading during P V and V's next during
 * Q K^T. Scores live in registers: masked, folded into the running row maximum m and sum l
 * (l in double, as the CPU), exponentiated, written to shared memory once as P for P V.
 * Key tiles wholly after the tile's last query are never visited under is_causal.
 *
 * Backward: Delta (delta = rowsum(dO * O), one warp per row, in double), then BwdKV (one
 * block per (batch entry, tile of keys): recomputes P^T from lse, dV += P^T dO,
 * dP^T = V dO^T, dS^T = P^T (dP^T - delta), dK += dS^T Q over the query tiles) and BwdQ
 * (one block per (batch entry, tile of queries): dQ += dS K over the key tiles). dQ has its
 * own kernel so that no gradient is summed with atomics: results are bitwise reproducible.
 * Gradients of broadcast operands are computed per batch entry and summed by Reduce, in a
 * fixed order.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common.cuh"
#include "attention.h"

#define FDL_HD __host__ __device__ __forceinline__

namespace fdl_attn {

constexpr int NT = 128;    // threads per block, every kernel

template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
    T v[N];
};

template <class T, int N>
FDL_HD Pack<T, N> ldp(const T *p) {
    return *reinterpret_cast<const Pack<T, N> *>(p);
}

template <class T, int N>
FDL_HD void stp(T *p, const Pack<T, N> &x) {
    *reinterpret_cast<Pack<T, N> *>(p) = x;
}

// FMA on the device; the host shims need not be bitwise the device, only the same algorithm.
FDL_HD float madd(float a, float b, float c) {
#ifdef __CUDA_ARCH__
    return fmaf(a, b, c);
#else
    return a * b + c;
#endif
}
FDL_HD double madd(double a, double b, double c) {
#ifdef __CUDA_ARCH__
    return fma(a, b, c);
#else
    return a * b + c;
#endif
}

// full-precision exponentials (no __expf: float32 must match the CPU within 1e-5)
FDL_HD float ex(float x) { return expf(x); }
FDL_HD double ex(double x) { return exp(x); }

template <class T>
FDL_HD T ninf() { return -(T)INFINITY; }

struct Params {
    fdl_attn_args a;
    fdl_attn_batch b;
};

// element offsets of batch entry `e` in every operand slot
FDL_HD void batch_offsets(const fdl_attn_batch &bt, int64_t e, int64_t (&off)[FDL_ATTN_SLOTS]) {
    for (int s = 0; s < FDL_ATTN_SLOTS; ++s) off[s] = 0;
    for (int d = bt.nd - 1; d >= 0; --d) {
        int64_t n = bt.shape[d];
        int64_t q = e / n, i = e - q * n;
        e = q;
        for (int s = 0; s < FDL_ATTN_SLOTS; ++s) off[s] += i * bt.st[s][d];
    }
}

// ------------------------------------------------------------------------------------------
// Device synchronisation policy

struct DevSync {
    __device__ __forceinline__ void bar() { __syncthreads(); }

    // v[i] = v[i] of lane (this lane ^ m), for every i
    template <class T, int N>
    __device__ __forceinline__ void xor_n(T (&v)[N], int m) {
#pragma unroll
        for (int i = 0; i < N; ++i) v[i] = __shfl_xor_sync(0xffffffffu, v[i], m);
    }

    __device__ __forceinline__ void cp16(void *dst_smem, const void *src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        unsigned s = (unsigned)__cvta_generic_to_shared(dst_smem);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src) : "memory");
#else
        *reinterpret_cast<uint4 *>(dst_smem) = *reinterpret_cast<const uint4 *>(src);
#endif
    }

    __device__ __forceinline__ void commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
    }

    // wait until at most N of this thread's committed copy groups are still in flight
    template <int N>
    __device__ __forceinline__ void wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
    }
};

// ------------------------------------------------------------------------------------------
// Building blocks

// All 16 threads of each row group end with the same value (each xor step combines a pair
// symmetrically), NaN never selected.
#pragma nv_exec_check_disable
template <class Sy, class T, int N>
FDL_HD void rows_max(T (&v)[N], Sy &sy) {
#pragma unroll
    for (int m = 8; m >= 1; m >>= 1) {
        T o[N];
#pragma unroll
        for (int i = 0; i < N; ++i) o[i] = v[i];
        sy.xor_n(o, m);
#pragma unroll
        for (int i = 0; i < N; ++i) v[i] = o[i] > v[i] ? o[i] : v[i];
    }
}

#pragma nv_exec_check_disable
template <class Sy, class T, int N>
FDL_HD void rows_sum(T (&v)[N], Sy &sy) {
#pragma unroll
    for (int m = 8; m >= 1; m >>= 1) {
        T o[N];
#pragma unroll
        for (int i = 0; i < N; ++i) o[i] = v[i];
        sy.xor_n(o, m);
#pragma unroll
        for (int i = 0; i < N; ++i) v[i] = v[i] + o[i];
    }
}

// A ROWS x D tile into shared memory (row stride ldsm): element (r, c) is
// g[(row0 + r) * ld + c] where row0 + r < nrows and c < ncols, zero elsewhere. 16-byte
// chunks go by cp.async where vec allows and the chunk is whole; the rest element by element.
#pragma nv_exec_check_disable
template <class T, int ROWS, int D, class Sy>
FDL_HD void load_tile(T *sm, int ldsm, const T *g, int64_t ld, int64_t row0, int64_t nrows,
                      int64_t ncols, int vec, int tid, Sy &sy) {
    constexpr int VEC = 16 / (int)sizeof(T);
    constexpr int CPR = D / VEC;
#pragma unroll 4
    for (int idx = tid; idx < ROWS * CPR; idx += NT) {
        const int r = idx / CPR, c = (idx - r * CPR) * VEC;
        T *dst = sm + r * ldsm + c;
        const int64_t gr = row0 + r;
        if (gr < nrows && c < ncols) {
            const T *src = g + gr * ld + c;
            if (vec && c + VEC <= ncols) {
                sy.cp16(dst, src);
            } else {
#pragma unroll
                for (int e = 0; e < VEC; ++e) dst[e] = c + e < ncols ? src[e] : (T)0;
            }
        } else {
#pragma unroll
            for (int e = 0; e < VEC; ++e) dst[e] = (T)0;
        }
    }
}

// acc[i][j] += sum_d A[ty + 8 i][d] * B[tx + 16 j][d]  (rows of A and B against each other)
template <class T, int RPT, int SC, int D>
FDL_HD void gemm_nt(T (&acc)[RPT][SC], const T *A, int lda, const T *B, int ldb, int tx,
                    int ty) {
    constexpr int VEC = 16 / (int)sizeof(T);
    const T *a0 = A + ty * lda;
    const T *b0 = B + tx * ldb;
#pragma unroll 2
    for (int d = 0; d < D; d += VEC) {
        Pack<T, VEC> bv[SC];
#pragma unroll
        for (int j = 0; j < SC; ++j) bv[j] = ldp<T, VEC>(b0 + 16 * j * ldb + d);
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
            const Pack<T, VEC> av = ldp<T, VEC>(a0 + 8 * i * lda + d);
#pragma unroll
            for (int j = 0; j < SC; ++j)
#pragma unroll
                for (int e = 0; e < VEC; ++e) acc[i][j] = madd(av.v[e], bv[j].v[e], acc[i][j]);
        }
    }
}

// acc[i][col] += sum_c P[ty + 8 i][c] * V[c][col] over c < KK, for the thread's OC columns
// col = h * 16 CW + tx * CW + e (acc index h * CW + e)
template <class T, int RPT, int OC, int KK>
FDL_HD void gemm_nn(T (&acc)[RPT][OC], const T *P, int ldp_, const T *V, int ldv, int tx,
                    int ty) {
    constexpr int VEC = 16 / (int)sizeof(T);
    constexpr int CW = OC < VEC ? OC : VEC, NCH = OC / CW;
    const T *p0 = P + ty * ldp_;
    const T *v0 = V + tx * CW;
#pragma unroll 2
    for (int c = 0; c < KK; c += VEC) {
        Pack<T, VEC> pv[RPT];
#pragma unroll
        for (int i = 0; i < RPT; ++i) pv[i] = ldp<T, VEC>(p0 + 8 * i * ldp_ + c);
#pragma unroll
        for (int cc = 0; cc < VEC; ++cc) {
#pragma unroll
            for (int h = 0; h < NCH; ++h) {
                const Pack<T, CW> vv = ldp<T, CW>(v0 + (c + cc) * ldv + h * 16 * CW);
#pragma unroll
                for (int i = 0; i < RPT; ++i)
#pragma unroll
                    for (int e = 0; e < CW; ++e)
                        acc[i][h * CW + e] = madd(pv[i].v[cc], vv.v[e], acc[i][h * CW + e]);
            }
        }
    }
}

// Row `row` (ncols valid columns) of a C-contiguous result: the thread's output columns,
// each times f (or zero when zero is set). vec: 16-byte (or CW-wide) stores allowed.
template <class T, int OC>
FDL_HD void store_row(T *dst, const T (&acc)[OC], int64_t ncols, T f, bool zero, bool vec,
                      int tx) {
    constexpr int VEC = 16 / (int)sizeof(T);
    constexpr int CW = OC < VEC ? OC : VEC, NCH = OC / CW;
#pragma unroll
    for (int h = 0; h < NCH; ++h) {
        const int c0 = h * 16 * CW + tx * CW;
        Pack<T, CW> x;
#pragma unroll
        for (int e = 0; e < CW; ++e) x.v[e] = zero ? (T)0 : acc[h * CW + e] * f;
        if (vec && c0 + CW <= ncols) {
            stp<T, CW>(dst + c0, x);
        } else {
#pragma unroll
            for (int e = 0; e < CW; ++e)
                if (c0 + e < ncols) dst[c0 + e] = x.v[e];
        }
    }
}

// The scaled, masked score of query r and key c from the dot product q_r . k_c, as the CPU
// forms it: scale * dot, then the causal rule (-inf), then the user's mask (a False entry
// gives -inf, an additive one is added after conversion to T). Keys past S give -inf. The
// mask is read only for r < L and c < S.
template <class T>
FDL_HD T score(const fdl_attn_args &a, const char *mb, int64_t r, int64_t c, T dot) {
    T x = dot * (T)a.scale;
    if (a.causal && c > r) x = ninf<T>();
    if (c >= a.S) return ninf<T>();
    if (a.mask_kind != FDL_ATTN_MASK_NONE && r < a.L) {
        const int64_t e = r * a.mls + c * a.mss;
        if (a.mask_kind == FDL_ATTN_MASK_BOOL)
            x = reinterpret_cast<const unsigned char *>(mb)[e] ? x : ninf<T>();
        else if (a.mask_kind == FDL_ATTN_MASK_F32)
            x = x + (T)reinterpret_cast<const float *>(mb)[e];
        else
            x = x + (T)reinterpret_cast<const double *>(mb)[e];
    }
    return x;
}

FDL_HD const char *mask_base(const fdl_attn_args &a, int64_t off) {
    if (a.mask_kind == FDL_ATTN_MASK_NONE) return nullptr;
    const int64_t isz = a.mask_kind == FDL_ATTN_MASK_BOOL ? 1 : a.mask_kind == FDL_ATTN_MASK_F32 ? 4 : 8;
    return reinterpret_cast<const char *>(a.mask) + off * isz;
}

// ------------------------------------------------------------------------------------------
// Forward

template <class T, int D_, int BQ_, int BK_, int MINB_>
struct Fwd {
    static constexpr int D = D_, BQ = BQ_, BK = BK_, MINB = MINB_;
    static constexpr int VEC = 16 / (int)sizeof(T), LDD = D + VEC, LDP = BK + VEC;
    static constexpr int RPT = BQ / 8, SC = BK / 16, OC = D / 16;
    static_assert(BQ % 8 == 0 && BK % 16 == 0 && D % 32 == 0, "tile shape");
    static int64_t smem() { return (int64_t)sizeof(T) * ((BQ + 2 * BK) * LDD + BQ * LDP); }
    static int64_t grid(const fdl_attn_args &a) { return a.nb * ((a.L + BQ - 1) / BQ); }

#pragma nv_exec_check_disable
    template <class Sy>
    FDL_HD static void block(const Params &p, int64_t bid, int64_t, int tid, unsigned char *smem,
                             Sy &sy) {
        const fdl_attn_args &a = p.a;
        const int64_t nqt = (a.L + BQ - 1) / BQ;
        const int64_t b = bid / nqt;
        const int64_t i0 = (nqt - 1 - (bid - b * nqt)) * BQ;   // longest causal tiles first
        int64_t off[FDL_ATTN_SLOTS];
        batch_offsets(p.b, b, off);
        const T *q = reinterpret_cast<const T *>(a.q) + off[FDL_ATTN_Q];
        const T *k = reinterpret_cast<const T *>(a.k) + off[FDL_ATTN_K];
        const T *v = reinterpret_cast<const T *>(a.v) + off[FDL_ATTN_V];
        const char *mb = mask_base(a, off[FDL_ATTN_MASK]);
        const int lane = tid & 31, tx = lane & 15, ty = (tid >> 5) * 2 + (lane >> 4);

        T *Qs = reinterpret_cast<T *>(smem);
        T *Ks = Qs + BQ * LDD;
        T *Vs = Ks + BK * LDD;
        T *Ps = Vs + BK * LDD;

        // keys after the tile's last query are masked for every row of it
        const int64_t kend = a.causal && i0 + BQ < a.S ? i0 + BQ : a.S;
        const int64_t nkt = (kend + BK - 1) / BK;

        load_tile<T, BQ, D>(Qs, LDD, q, a.ldq, i0, a.L, a.E, a.vec_q, tid, sy);
        if (nkt > 0) load_tile<T, BK, D>(Ks, LDD, k, a.ldk, 0, a.S, a.E, a.vec_k, tid, sy);
        sy.commit();
        if (nkt > 0) load_tile<T, BK, D>(Vs, LDD, v, a.ldv, 0, a.S, a.Ev, a.vec_v, tid, sy);
        sy.commit();

        T o[RPT][OC];
        T m[RPT];
        double l[RPT];
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
            m[i] = ninf<T>();
            l[i] = 0.0;
#pragma unroll
            for (int c = 0; c < OC; ++c) o[i][c] = (T)0;
        }

        for (int64_t t = 0; t < nkt; ++t) {
            const int64_t j0 = t * BK;
            sy.template wait<1>();      // Q and this K tile (V's is the newest group)
            sy.bar();
            T s[RPT][SC];
#pragma unroll
            for (int i = 0; i < RPT; ++i)
#pragma unroll
                for (int j = 0; j < SC; ++j) s[i][j] = (T)0;
            gemm_nt<T, RPT, SC, D>(s, Qs, LDD, Ks, LDD, tx, ty);

            T mx[RPT];
#pragma unroll
            for (int i = 0; i < RPT; ++i) {
                const int64_t r = i0 + ty + 8 * i;
                mx[i] = ninf<T>();
#pragma unroll
                for (int j = 0; j < SC; ++j) {
                    const T x = score<T>(a, mb, r, j0 + tx + 16 * j, s[i][j]);
                    s[i][j] = x;
                    mx[i] = x > mx[i] ? x : mx[i];
                }
            }
            rows_max(mx, sy);
            T f[RPT], rs[RPT];
#pragma unroll
            for (int i = 0; i < RPT; ++i) {
                const T mn = mx[i] > m[i] ? mx[i] : m[i];
                // a row with no key so far keeps m = -inf: exp against 0, never -inf + inf
                const T ref = mn == ninf<T>() ? (T)0 : mn;
                f[i] = ex(m[i] - ref);
                m[i] = mn;
                rs[i] = (T)0;
#pragma unroll
                for (int j = 0; j < SC; ++j) {
                    const T pj = ex(s[i][j] - ref);
                    s[i][j] = pj;
                    rs[i] += pj;
                }
            }
            rows_sum(rs, sy);
#pragma unroll
            for (int i = 0; i < RPT; ++i) {
                l[i] = l[i] * (double)f[i] + (double)rs[i];
#pragma unroll
                for (int c = 0; c < OC; ++c) o[i][c] *= f[i];
#pragma unroll
                for (int j = 0; j < SC; ++j) Ps[(ty + 8 * i) * LDP + tx + 16 * j] = s[i][j];
            }
            sy.bar();                   // P complete; nobody reads this K tile any more
            if (t + 1 < nkt)
                load_tile<T, BK, D>(Ks, LDD, k, a.ldk, j0 + BK, a.S, a.E, a.vec_k, tid, sy);
            sy.commit();
            sy.template wait<1>();      // this V tile (the next K tile may still be in flight)
            sy.bar();
            gemm_nn<T, RPT, OC, BK>(o, Ps, LDP, Vs, LDD, tx, ty);
            sy.bar();                   // nobody reads this V tile or P any more
            if (t + 1 < nkt)
                load_tile<T, BK, D>(Vs, LDD, v, a.ldv, j0 + BK, a.S, a.Ev, a.vec_v, tid, sy);
            sy.commit();
        }
        sy.template wait<0>();

        T *orow = reinterpret_cast<T *>(a.o_res);
        T *lse = reinterpret_cast<T *>(a.lse_res);
        const bool vec_out = (a.Ev * (int64_t)sizeof(T)) % 16 == 0 &&
                             (reinterpret_cast<uintptr_t>(orow) & 15) == 0;
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
            const int64_t r = i0 + ty + 8 * i;
            if (r >= a.L) continue;
            const double li = l[i];
            // no key: zeros and lse = -inf; NaN in l propagates to the row
            const T f = li > 0.0 ? (T)(1.0 / li) : (T)li;
            store_row<T, OC>(orow + (b * a.L + r) * a.Ev, o[i], a.Ev, f, li == 0.0, vec_out, tx);
            if (tx == 0)
                lse[b * a.L + r] = li > 0.0 ? (T)((double)m[i] + log(li))
                                            : (li == 0.0 ? ninf<T>() : (T)li);
        }
    }
};

// ------------------------------------------------------------------------------------------
// Backward: delta = rowsum(dO * O), one warp per row (rows of all batch entries), in double

template <class T>
struct Delta {
    static constexpr int MINB = 1;
    static int64_t smem() { return 0; }

#pragma nv_exec_check_disable
    template <class Sy>
    FDL_HD static void block(const Params &p, int64_t bid, int64_t nblk, int tid, unsigned char *,
                             Sy &sy) {
        const fdl_attn_args &a = p.a;
        const int lane = tid & 31;
        const int64_t rows = a.nb * a.L;
        T *delta = reinterpret_cast<T *>(a.delta);
        for (int64_t row = bid * (NT / 32) + (tid >> 5); row < rows; row += nblk * (NT / 32)) {
            const int64_t b = row / a.L, r = row - b * a.L;
            int64_t off[FDL_ATTN_SLOTS];
            batch_offsets(p.b, b, off);
            const T *dout = reinterpret_cast<const T *>(a.dout) + off[FDL_ATTN_DO] + r * a.lddo;
            const T *out = reinterpret_cast<const T *>(a.out) + off[FDL_ATTN_O] + r * a.ldo;
            double acc[1] = {0.0};
            for (int64_t e = lane; e < a.Ev; e += 32) acc[0] += (double)dout[e] * (double)out[e];
#pragma unroll
            for (int m = 16; m >= 1; m >>= 1) {
                double o[1] = {acc[0]};
                sy.xor_n(o, m);
                acc[0] += o[0];
            }
            if (lane == 0) delta[row] = (T)acc[0];
        }
    }
};

// ------------------------------------------------------------------------------------------
// Backward dK, dV: one block per (batch entry, tile of BKV keys), over the query tiles

template <class T, int D_, int BKV_, int BQ_, int MINB_>
struct BwdKV {
    static constexpr int D = D_, BKV = BKV_, BQ = BQ_, MINB = MINB_;
    static constexpr int VEC = 16 / (int)sizeof(T), LDD = D + VEC, LDP = BQ + VEC;
    static constexpr int RPT = BKV / 8, SC = BQ / 16, OC = D / 16;
    static_assert(BKV % 8 == 0 && BQ % 16 == 0 && D % 32 == 0, "tile shape");
    static int64_t smem() {
        return (int64_t)sizeof(T) * (2 * BKV * LDD + 2 * BQ * LDD + 2 * BKV * LDP + 2 * BQ);
    }
    static int64_t grid(const fdl_attn_args &a) { return a.nb * ((a.S + BKV - 1) / BKV); }

#pragma nv_exec_check_disable
    template <class Sy>
    FDL_HD static void block(const Params &p, int64_t bid, int64_t, int tid, unsigned char *smem,
                             Sy &sy) {
        const fdl_attn_args &a = p.a;
        const int64_t nkt = (a.S + BKV - 1) / BKV;
        const int64_t b = bid / nkt;
        const int64_t k0 = (bid - b * nkt) * BKV;
        int64_t off[FDL_ATTN_SLOTS];
        batch_offsets(p.b, b, off);
        const T *q = reinterpret_cast<const T *>(a.q) + off[FDL_ATTN_Q];
        const T *k = reinterpret_cast<const T *>(a.k) + off[FDL_ATTN_K];
        const T *v = reinterpret_cast<const T *>(a.v) + off[FDL_ATTN_V];
        const T *dout = reinterpret_cast<const T *>(a.dout) + off[FDL_ATTN_DO];
        const T *lse = reinterpret_cast<const T *>(a.lse) + b * a.L;
        const T *delta = reinterpret_cast<const T *>(a.delta) + b * a.L;
        const char *mb = mask_base(a, off[FDL_ATTN_MASK]);
        const int lane = tid & 31, tx = lane & 15, ty = (tid >> 5) * 2 + (lane >> 4);

        T *Ks = reinterpret_cast<T *>(smem);
        T *Vs = Ks + BKV * LDD;
        T *Qs = Vs + BKV * LDD;
        T *dOs = Qs + BQ * LDD;
        T *Pt = dOs + BQ * LDD;
        T *dSt = Pt + BKV * LDP;
        T *refs = dSt + BKV * LDP;      // per query of the tile: lse (+inf for lse = -inf)
        T *dels = refs + BQ;            // per query of the tile: delta

        load_tile<T, BKV, D>(Ks, LDD, k, a.ldk, k0, a.S, a.E, a.vec_k, tid, sy);
        load_tile<T, BKV, D>(Vs, LDD, v, a.ldv, k0, a.S, a.Ev, a.vec_v, tid, sy);
        sy.commit();

        T dk[RPT][OC], dv[RPT][OC];
#pragma unroll
        for (int i = 0; i < RPT; ++i)
#pragma unroll
            for (int c = 0; c < OC; ++c) dk[i][c] = dv[i][c] = (T)0;

        // under is_causal, queries before the tile's first key see none of its keys
        const int64_t nqt = (a.L + BQ - 1) / BQ;
        for (int64_t qt = a.causal ? k0 / BQ : 0; qt < nqt; ++qt) {
            const int64_t i0 = qt * BQ;
            load_tile<T, BQ, D>(Qs, LDD, q, a.ldq, i0, a.L, a.E, a.vec_q, tid, sy);
            load_tile<T, BQ, D>(dOs, LDD, dout, a.lddo, i0, a.L, a.Ev, a.vec_do, tid, sy);
            sy.commit();
            if (tid < BQ) {
                const bool ok = i0 + tid < a.L;
                const T ls = ok ? lse[i0 + tid] : (T)0;
                refs[tid] = ls == ninf<T>() ? (T)INFINITY : ls;
                dels[tid] = ok ? delta[i0 + tid] : (T)0;
            }
            sy.template wait<0>();
            sy.bar();

            // P^T (keys x queries) from the recomputed scores and lse
            T st[RPT][SC];
#pragma unroll
            for (int i = 0; i < RPT; ++i)
#pragma unroll
                for (int j = 0; j < SC; ++j) st[i][j] = (T)0;
            gemm_nt<T, RPT, SC, D>(st, Ks, LDD, Qs, LDD, tx, ty);
#pragma unroll
            for (int i = 0; i < RPT; ++i) {
                const int64_t c = k0 + ty + 8 * i;
#pragma unroll
                for (int j = 0; j < SC; ++j) {
                    const int qi = tx + 16 * j;
                    const int64_t r = i0 + qi;
                    const T x = score<T>(a, mb, r, c, st[i][j]);
                    Pt[(ty + 8 * i) * LDP + qi] = r < a.L && c < a.S ? ex(x - refs[qi]) : (T)0;
                }
            }
            // dP^T = V dO^T, then dS^T = P^T (dP^T - delta), P^T re-read from this
            // thread's own entries of Pt (no barrier needed, fewer live registers)
#pragma unroll
            for (int i = 0; i < RPT; ++i)
#pragma unroll
                for (int j = 0; j < SC; ++j) st[i][j] = (T)0;
            gemm_nt<T, RPT, SC, D>(st, Vs, LDD, dOs, LDD, tx, ty);
#pragma unroll
            for (int i = 0; i < RPT; ++i)
#pragma unroll
                for (int j = 0; j < SC; ++j) {
                    const int qi = tx + 16 * j, at = (ty + 8 * i) * LDP + qi;
                    dSt[at] = Pt[at] * (st[i][j] - dels[qi]);
                }
            sy.bar();
            gemm_nn<T, RPT, OC, BQ>(dv, Pt, LDP, dOs, LDD, tx, ty);
            gemm_nn<T, RPT, OC, BQ>(dk, dSt, LDP, Qs, LDD, tx, ty);
            sy.bar();                   // tiles free for the next query tile
        }
        // no query tile at all (is_causal, keys past every query): K and V's copies were
        // never waited for, and a block must not exit with copies into its shared memory
        sy.template wait<0>();

        T *dkr = reinterpret_cast<T *>(a.dk);
        T *dvr = reinterpret_cast<T *>(a.dv);
        const bool vk = (a.E * (int64_t)sizeof(T)) % 16 == 0 && (reinterpret_cast<uintptr_t>(dkr) & 15) == 0;
        const bool vv = (a.Ev * (int64_t)sizeof(T)) % 16 == 0 && (reinterpret_cast<uintptr_t>(dvr) & 15) == 0;
        const T sc = (T)a.scale;
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
            const int64_t c = k0 + ty + 8 * i;
            if (c >= a.S) continue;
            store_row<T, OC>(dkr + (b * a.S + c) * a.E, dk[i], a.E, sc, false, vk, tx);
            store_row<T, OC>(dvr + (b * a.S + c) * a.Ev, dv[i], a.Ev, (T)1, false, vv, tx);
        }
    }
};

// ------------------------------------------------------------------------------------------
// Backward dQ: one block per (batch entry, tile of BQ queries), over the key tiles

template <class T, int D_, int BQ_, int BK_, int MINB_>
struct BwdQ {
    static constexpr int D = D_, BQ = BQ_, BK = BK_, MINB = MINB_;
    static constexpr int VEC = 16 / (int)sizeof(T), LDD = D + VEC, LDP = BK + VEC;
    static constexpr int RPT = BQ / 8, SC = BK / 16, OC = D / 16;
    static_assert(BQ % 8 == 0 && BK % 16 == 0 && D % 32 == 0, "tile shape");
    static int64_t smem() { return (int64_t)sizeof(T) * (2 * BQ * LDD + 2 * BK * LDD + BQ * LDP); }
    static int64_t grid(const fdl_attn_args &a) { return a.nb * ((a.L + BQ - 1) / BQ); }

#pragma nv_exec_check_disable
    template <class Sy>
    FDL_HD static void block(const Params &p, int64_t bid, int64_t, int tid, unsigned char *smem,
                             Sy &sy) {
        const fdl_attn_args &a = p.a;
        const int64_t nqt = (a.L + BQ - 1) / BQ;
        const int64_t b = bid / nqt;
        const int64_t i0 = (nqt - 1 - (bid - b * nqt)) * BQ;
        int64_t off[FDL_ATTN_SLOTS];
        batch_offsets(p.b, b, off);
        const T *q = reinterpret_cast<const T *>(a.q) + off[FDL_ATTN_Q];
        const T *k = reinterpret_cast<const T *>(a.k) + off[FDL_ATTN_K];
        const T *v = reinterpret_cast<const T *>(a.v) + off[FDL_ATTN_V];
        const T *dout = reinterpret_cast<const T *>(a.dout) + off[FDL_ATTN_DO];
        const char *mb = mask_base(a, off[FDL_ATTN_MASK]);
        const int lane = tid & 31, tx = lane & 15, ty = (tid >> 5) * 2 + (lane >> 4);

        T *Qs = reinterpret_cast<T *>(smem);
        T *dOs = Qs + BQ * LDD;
        T *Ks = dOs + BQ * LDD;
        T *Vs = Ks + BK * LDD;
        T *dSs = Vs + BK * LDD;

        load_tile<T, BQ, D>(Qs, LDD, q, a.ldq, i0, a.L, a.E, a.vec_q, tid, sy);
        load_tile<T, BQ, D>(dOs, LDD, dout, a.lddo, i0, a.L, a.Ev, a.vec_do, tid, sy);
        sy.commit();

        T ref[RPT], del[RPT];
        T dq[RPT][OC];
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
            const int64_t r = i0 + ty + 8 * i;
            const T ls = r < a.L ? reinterpret_cast<const T *>(a.lse)[b * a.L + r] : (T)0;
            ref[i] = ls == ninf<T>() ? (T)INFINITY : ls;
            del[i] = r < a.L ? reinterpret_cast<const T *>(a.delta)[b * a.L + r] : (T)0;
#pragma unroll
            for (int c = 0; c < OC; ++c) dq[i][c] = (T)0;
        }

        const int64_t kend = a.causal && i0 + BQ < a.S ? i0 + BQ : a.S;
        const int64_t nkt = (kend + BK - 1) / BK;
        for (int64_t t = 0; t < nkt; ++t) {
            const int64_t j0 = t * BK;
            load_tile<T, BK, D>(Ks, LDD, k, a.ldk, j0, a.S, a.E, a.vec_k, tid, sy);
            load_tile<T, BK, D>(Vs, LDD, v, a.ldv, j0, a.S, a.Ev, a.vec_v, tid, sy);
            sy.commit();
            sy.template wait<0>();
            sy.bar();
            T pr[RPT][SC], dp[RPT][SC];
#pragma unroll
            for (int i = 0; i < RPT; ++i)
#pragma unroll
                for (int j = 0; j < SC; ++j) pr[i][j] = dp[i][j] = (T)0;
            gemm_nt<T, RPT, SC, D>(pr, Qs, LDD, Ks, LDD, tx, ty);
#pragma unroll
            for (int i = 0; i < RPT; ++i) {
                const int64_t r = i0 + ty + 8 * i;
#pragma unroll
                for (int j = 0; j < SC; ++j) {
                    const int64_t c = j0 + tx + 16 * j;
                    const T x = score<T>(a, mb, r, c, pr[i][j]);
                    pr[i][j] = r < a.L && c < a.S ? ex(x - ref[i]) : (T)0;
                }
            }
            gemm_nt<T, RPT, SC, D>(dp, dOs, LDD, Vs, LDD, tx, ty);
#pragma unroll
            for (int i = 0; i < RPT; ++i)
#pragma unroll
                for (int j = 0; j < SC; ++j)
                    dSs[(ty + 8 * i) * LDP + tx + 16 * j] = pr[i][j] * (dp[i][j] - del[i]);
            sy.bar();
            gemm_nn<T, RPT, OC, BK>(dq, dSs, LDP, Ks, LDD, tx, ty);
            sy.bar();                   // K, V and dS free for the next key tile
        }
        sy.template wait<0>();          // Q and dO's copies, when there was no key tile

        T *dqr = reinterpret_cast<T *>(a.dq);
        const bool vq = (a.E * (int64_t)sizeof(T)) % 16 == 0 && (reinterpret_cast<uintptr_t>(dqr) & 15) == 0;
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
            const int64_t r = i0 + ty + 8 * i;
            if (r >= a.L) continue;
            store_row<T, OC>(dqr + (b * a.L + r) * a.E, dq[i], a.E, (T)a.scale, false, vq, tx);
        }
    }
};

// ------------------------------------------------------------------------------------------
// Sum of per-entry gradients over broadcast batch dimensions (fixed order, in double)

struct RParams {
    fdl_attn_reduce r;
    const void *g;
    void *out;
    int64_t total;
};

FDL_HD int64_t unravel(int64_t i, int n, const int64_t *shape, const int64_t *st) {
    int64_t off = 0;
    for (int d = n - 1; d >= 0; --d) {
        const int64_t q = i / shape[d];
        off += (i - q * shape[d]) * st[d];
        i = q;
    }
    return off;
}

template <class T>
struct Reduce {
    static constexpr int MINB = 1;
    static int64_t smem() { return 0; }

#pragma nv_exec_check_disable
    template <class Sy>
    FDL_HD static void block(const RParams &p, int64_t bid, int64_t nblk, int tid, unsigned char *,
                             Sy &) {
        const fdl_attn_reduce &r = p.r;
        int64_t nred = 1;
        for (int d = 0; d < r.nr; ++d) nred *= r.rshape[d];
        const T *g = reinterpret_cast<const T *>(p.g);
        T *out = reinterpret_cast<T *>(p.out);
        for (int64_t i = bid * NT + tid; i < p.total; i += nblk * NT) {
            const int64_t ko = i / r.inner, in = i - ko * r.inner;
            const T *src = g + in + unravel(ko, r.nk, r.kshape, r.kst);
            double acc = 0.0;
            for (int64_t j = 0; j < nred; ++j) acc += (double)src[unravel(j, r.nr, r.rshape, r.rst)];
            out[i] = (T)acc;
        }
    }
};

// ------------------------------------------------------------------------------------------
// Configurations: tile sizes per (dtype, padded head dimension)

// Shared memory stays under the 99 KB an sm_86/sm_89 block can have (the sm_80 code runs
// there), except the float64 backward with head dimensions over 128 (134 KB: A100, H100).
template <class T, int D>
struct Cfg;
//                                       forward             dK dV               dQ
//                                       kernel              kernel              kernel
template <> struct Cfg<float, 32>  { using F = Fwd<float, 32, 64, 64, 3>;   using KV = BwdKV<float, 32, 64, 64, 2>;   using Q = BwdQ<float, 32, 64, 64, 2>; };
template <> struct Cfg<float, 64>  { using F = Fwd<float, 64, 64, 64, 3>;   using KV = BwdKV<float, 64, 64, 32, 2>;   using Q = BwdQ<float, 64, 64, 32, 2>; };
template <> struct Cfg<float, 128> { using F = Fwd<float, 128, 64, 32, 2>;  using KV = BwdKV<float, 128, 32, 32, 2>;  using Q = BwdQ<float, 128, 32, 32, 2>; };
template <> struct Cfg<float, 256> { using F = Fwd<float, 256, 32, 16, 2>;  using KV = BwdKV<float, 256, 16, 16, 1>;  using Q = BwdQ<float, 256, 16, 16, 1>; };
template <> struct Cfg<double, 32>  { using F = Fwd<double, 32, 32, 64, 2>;  using KV = BwdKV<double, 32, 32, 32, 2>;  using Q = BwdQ<double, 32, 32, 32, 2>; };
template <> struct Cfg<double, 64>  { using F = Fwd<double, 64, 32, 32, 2>;  using KV = BwdKV<double, 64, 32, 32, 1>;  using Q = BwdQ<double, 64, 32, 32, 1>; };
template <> struct Cfg<double, 128> { using F = Fwd<double, 128, 32, 16, 1>; using KV = BwdKV<double, 128, 16, 16, 1>; using Q = BwdQ<double, 128, 16, 16, 1>; };
template <> struct Cfg<double, 256> { using F = Fwd<double, 256, 8, 16, 1>;  using KV = BwdKV<double, 256, 16, 16, 1>; using Q = BwdQ<double, 256, 16, 16, 1>; };

inline int pick_d(int64_t E, int64_t Ev) {
    const int64_t n = E > Ev ? E : Ev;
    if (n < 0) return 0;
    return n <= 32 ? 32 : n <= 64 ? 64 : n <= 128 ? 128 : n <= 256 ? 256 : 0;
}

// ------------------------------------------------------------------------------------------
// Execution: on the device, or the same block code on host threads

template <class K, class P>
__global__ void __launch_bounds__(NT, K::MINB) attn_kernel(const P p) {
    extern __shared__ __align__(16) unsigned char fdl_attn_smem[];
    DevSync sy;
    K::block(p, (int64_t)blockIdx.x, (int64_t)gridDim.x, (int)threadIdx.x, fdl_attn_smem, sy);
}

struct DevExec {
    cudaStream_t stream;

    // grid-stride kernels: a few blocks per multiprocessor
    int64_t cap(int64_t blocks) const { return (int64_t)fdl_cuda_grid(blocks * NT, NT); }

    template <class K, class P>
    int launch(const P &p, int64_t grid) {
        if (grid <= 0) return 0;
        if (grid > 0x7fffffff) return (int)cudaErrorInvalidConfiguration;
        const int64_t smem = K::smem();
        if (smem > 48 * 1024)
            FDL_CUDA_TRY(cudaFuncSetAttribute(attn_kernel<K, P>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)smem));
        attn_kernel<K, P><<<(unsigned)grid, NT, (size_t)smem, stream>>>(p);
        FDL_CUDA_RETURN_LAUNCH();
    }

    int zero(void *p, int64_t bytes) {
        if (bytes <= 0) return 0;
        return (int)cudaMemsetAsync(p, 0, (size_t)bytes, stream);
    }
};

}  // namespace fdl_attn

#include "attention_host.cuh"

namespace fdl_attn {

template <class K, class Ex>
int run(const fdl_attn_args *a, const fdl_attn_batch *b, Ex &ex) {
    Params p;
    p.a = *a;
    p.b = *b;
    return ex.template launch<K>(p, K::grid(*a));
}

template <class T, int D, class Ex>
int forward_d(const fdl_attn_args *a, const fdl_attn_batch *b, Ex &ex) {
    return run<typename Cfg<T, D>::F>(a, b, ex);
}

template <class T, int D, class Ex>
int backward_d(const fdl_attn_args *a, const fdl_attn_batch *b, Ex &ex) {
    Params p;
    p.a = *a;
    p.b = *b;
    const int64_t rows = a->nb * a->L;
    int err = ex.template launch<Delta<T>>(p, ex.cap((rows + NT / 32 - 1) / (NT / 32)));
    if (err) return err;
    if ((err = run<typename Cfg<T, D>::KV>(a, b, ex))) return err;
    return run<typename Cfg<T, D>::Q>(a, b, ex);
}

template <class Ex>
int forward(const fdl_attn_args *a, const fdl_attn_batch *b, Ex &ex) {
    if (a->nb <= 0 || a->L <= 0) return 0;
    const int D = pick_d(a->E, a->Ev);
    const bool f32 = a->dtype == FDL_CUDA_F32;
    if (!f32 && a->dtype != FDL_CUDA_F64) return (int)cudaErrorInvalidValue;
    switch (D) {
    case 32: return f32 ? forward_d<float, 32>(a, b, ex) : forward_d<double, 32>(a, b, ex);
    case 64: return f32 ? forward_d<float, 64>(a, b, ex) : forward_d<double, 64>(a, b, ex);
    case 128: return f32 ? forward_d<float, 128>(a, b, ex) : forward_d<double, 128>(a, b, ex);
    case 256: return f32 ? forward_d<float, 256>(a, b, ex) : forward_d<double, 256>(a, b, ex);
    default: return (int)cudaErrorInvalidValue;
    }
}

template <class Ex>
int backward(const fdl_attn_args *a, const fdl_attn_batch *b, Ex &ex) {
    const int64_t isz = a->dtype == FDL_CUDA_F32 ? 4 : 8;
    if (a->dtype != FDL_CUDA_F32 && a->dtype != FDL_CUDA_F64) return (int)cudaErrorInvalidValue;
    if (a->nb <= 0) return 0;
    if (a->L <= 0 || a->S <= 0) {   // no score at all: every gradient is zero
        int err = ex.zero(a->dq, a->nb * a->L * a->E * isz);
        if (!err) err = ex.zero(a->dk, a->nb * a->S * a->E * isz);
        if (!err) err = ex.zero(a->dv, a->nb * a->S * a->Ev * isz);
        return err;
    }
    const int D = pick_d(a->E, a->Ev);
    const bool f32 = a->dtype == FDL_CUDA_F32;
    switch (D) {
    case 32: return f32 ? backward_d<float, 32>(a, b, ex) : backward_d<double, 32>(a, b, ex);
    case 64: return f32 ? backward_d<float, 64>(a, b, ex) : backward_d<double, 64>(a, b, ex);
    case 128: return f32 ? backward_d<float, 128>(a, b, ex) : backward_d<double, 128>(a, b, ex);
    case 256: return f32 ? backward_d<float, 256>(a, b, ex) : backward_d<double, 256>(a, b, ex);
    default: return (int)cudaErrorInvalidValue;
    }
}

template <class Ex>
int reduce(int dtype, void *out, const void *g, const fdl_attn_reduce *r, Ex &ex) {
    RParams p;
    p.r = *r;
    p.g = g;
    p.out = out;
    p.total = r->inner;
    for (int d = 0; d < r->nk; ++d) p.total *= r->kshape[d];
    if (p.total <= 0) return 0;
    const int64_t blocks = ex.cap((p.total + NT - 1) / NT);
    if (dtype == FDL_CUDA_F32) return ex.template launch<Reduce<float>>(p, blocks);
    if (dtype == FDL_CUDA_F64) return ex.template launch<Reduce<double>>(p, blocks);
    return (int)cudaErrorInvalidValue;
}

template <class K>
void config_of(int *D, int *bq, int *bk, int64_t *smem) {
    *D = K::D;
    *bq = K::BQ;
    *bk = K::BK;
    *smem = K::smem();
}

template <class T, int D>
void config_d(int which, int *d, int *bq, int *bk, int64_t *smem) {
    using C = Cfg<T, D>;
    if (which == 0) {
        config_of<typename C::F>(d, bq, bk, smem);
    } else if (which == 1) {
        *d = C::KV::D;
        *bq = C::KV::BQ;
        *bk = C::KV::BKV;
        *smem = C::KV::smem();
    } else {
        config_of<typename C::Q>(d, bq, bk, smem);
    }
}

}  // namespace fdl_attn

extern "C" int fdl_cuda_sdpa_forward(const fdl_attn_args *a, const fdl_attn_batch *b,
                                     void *stream) {
    fdl_attn::DevExec ex{FDL_CUDA_STREAM(stream)};
    return fdl_attn::forward(a, b, ex);
}

extern "C" int fdl_cuda_sdpa_backward(const fdl_attn_args *a, const fdl_attn_batch *b,
                                      void *stream) {
    fdl_attn::DevExec ex{FDL_CUDA_STREAM(stream)};
    return fdl_attn::backward(a, b, ex);
}

extern "C" int fdl_cuda_attn_reduce(int dtype, void *out, const void *g,
                                    const fdl_attn_reduce *r, void *stream) {
    fdl_attn::DevExec ex{FDL_CUDA_STREAM(stream)};
    return fdl_attn::reduce(dtype, out, g, r, ex);
}

extern "C" int fdl_cuda_sdpa_forward_host(const fdl_attn_args *a, const fdl_attn_batch *b) {
    fdl_attn::HostExec ex;
    return fdl_attn::forward(a, b, ex);
}

extern "C" int fdl_cuda_sdpa_backward_host(const fdl_attn_args *a, const fdl_attn_batch *b) {
    fdl_attn::HostExec ex;
    return fdl_attn::backward(a, b, ex);
}

extern "C" int fdl_cuda_attn_reduce_host(int dtype, void *out, const void *g,
                                         const fdl_attn_reduce *r) {
    fdl_attn::HostExec ex;
    return fdl_attn::reduce(dtype, out, g, r, ex);
}

extern "C" int fdl_cuda_sdpa_config(int dtype, int64_t E, int64_t Ev, int which, int *D,
                                    int *bq, int *bk, int64_t *smem) {
    const int d = fdl_attn::pick_d(E, Ev);
    if (which < 0 || which > 2 || (dtype != FDL_CUDA_F32 && dtype != FDL_CUDA_F64))
        return (int)cudaErrorInvalidValue;
    const bool f32 = dtype == FDL_CUDA_F32;
    switch (d) {
    case 32: f32 ? fdl_attn::config_d<float, 32>(which, D, bq, bk, smem) : fdl_attn::config_d<double, 32>(which, D, bq, bk, smem); return 0;
    case 64: f32 ? fdl_attn::config_d<float, 64>(which, D, bq, bk, smem) : fdl_attn::config_d<double, 64>(which, D, bq, bk, smem); return 0;
    case 128: f32 ? fdl_attn::config_d<float, 128>(which, D, bq, bk, smem) : fdl_attn::config_d<double, 128>(which, D, bq, bk, smem); return 0;
    case 256: f32 ? fdl_attn::config_d<float, 256>(which, D, bq, bk, smem) : fdl_attn::config_d<double, 256>(which, D, bq, bk, smem); return 0;
    default: return (int)cudaErrorInvalidValue;
    }
}
