/*
 * softmax, log_softmax and their backward, the fused softmax cross-entropy, cross_entropy, mse
 * and their gradients on the GPU (launchers: softmax_losses.h; per-thread arithmetic shared
 * with the host emulation: softmax_losses_math.cuh).
 *
 * Layout. The reduction axis of a C-contiguous array is (outer, n, inner); inner == 1 is rows.
 *  - Rows of n <= 32 * E_MAX: a group of TPR lanes of a warp per row (32, or the next power of
 *    two >= n below 32, so short rows do not leave most of a warp idle), E elements per lane in
 *    registers: the row is read once and written once, reductions are xor-shuffles.
 *  - Longer rows: a block per row. A row of at most CACHE_BYTES is copied to shared memory as
 *    it is read (one read of global memory); a longer one takes an online pass (running max,
 *    rescaled running sum) and a write pass that reads it again, from L2 in practice (a few
 *    hundred rows in flight fit in it). Shared memory stays under the 48 KiB that needs no
 *    opt-in, so several blocks share an SM and one's loads overlap another's exps.
 *  - inner > 1 (any axis but the last): a block covers TX adjacent lanes (threadIdx.x, so each
 *    step l reads TX contiguous elements) and splits the n steps of each lane over TY threads
 *    (threadIdx.y); the per-thread online statistics are merged in shared memory by a fixed
 *    tree, then the same threads write. No transpose copy.
 * The backward kernels have the same layouts (dy and y in registers for short rows; long rows
 * and columns reduce in a first pass and write in a second).
 *
 * Determinism. Launch geometry is a function of the shape only (never of the device or of
 * timing), every reduction has a fixed order, and losses summed over samples are added per
 * block in sample order into a partials buffer (double), then by one final kernel; no
 * floating-point atomics (the only atomic is an integer count).
 *
 * Class indices outside [0, n) (and not ignore_index) are never read through: that sample's
 * loss and gradient row are NaN, so a 'mean' or 'sum' is NaN. The CPU raises ValueError; doing
 * so here would need a device-to-host copy and a synchronisation in every call.
 */
#include <string.h>

#include <algorithm>
#include <vector>

#include "common.cuh"
#include "softmax_losses.h"
#include "softmax_losses_math.cuh"

namespace fdl_sl {

constexpr int WARP_BLOCK = 128;                  /* threads per block of the register rows */
constexpr int64_t CACHE_BYTES = 40 * 1024;       /* longest row kept in shared memory */
constexpr int64_t MAX_GRID = (int64_t)1 << 30;   /* kernels stride over more work than this */
constexpr int XENT_BLOCK = 256;
constexpr int MSE_BLOCK = 256;
constexpr int FINISH_BLOCK = 256;
constexpr unsigned FULL_MASK = 0xffffffffu;

enum { OP_FWD = 0, OP_BWD = 1, OP_SCE = 2 };

/* ---- launch geometry (host only, a function of the shape) -------------------------------- */

struct Plan {
    int path;
    int tpr, e;          /* register rows: lanes per row, elements per lane */
    int threads;         /* block rows: threads per block */
    int tx, ty;          /* columns */
    int64_t blocks;
    size_t smem;         /* block rows: bytes of the cached row (0: online) */
};

static int64_t pow2ceil(int64_t v, int64_t cap)
{
    int64_t p = 1;
    while (p < v && p < cap) p <<= 1;
    return p;
}

static int64_t cap_grid(int64_t b) { return b < 1 ? 1 : (b > MAX_GRID ? MAX_GRID : b); }

static Plan make_plan(int64_t outer, int64_t n, int64_t inner, int itemsize, int op, int path)
{
    Plan p;
    memset(&p, 0, sizeof p);
    if (inner > 1 || path == FDL_SL_PATH_COLS) {
        /* 32 bytes per step at least (a full sector); narrower tiles when there are too few
         * of them to fill the device and the lanes are long enough to split */
        const int64_t min_tx = 32 / itemsize;
        int64_t tx = pow2ceil(inner, 32);
        int64_t tiles = outer * cdiv(inner, tx);
        while (tx > min_tx && tiles < 256 && n >= 64) {
            tx >>= 1;
            tiles = outer * cdiv(inner, tx);
        }
        const int64_t most = tiles < 256 ? 512 : 256;
        p.path = FDL_SL_PATH_COLS;
        p.tx = (int)tx;
        p.ty = (int)pow2ceil(n, most / tx);
        p.blocks = cap_grid(tiles);
        return p;
    }
    /* double rows of more than 512 elements in the backward (two arrays) or the
     * cross-entropy (more live values) would take 160+ registers and spill: blocks then */
    const int64_t emax = (itemsize == 8 && op != OP_FWD) ? 16 : 32;
    const bool force_block = path == FDL_SL_PATH_BLOCK_CACHED || path == FDL_SL_PATH_BLOCK_ONLINE;
    if (n <= 32 * emax && !force_block) {
        p.path = FDL_SL_PATH_WARP;
        if (n <= 32) {
            p.tpr = (int)pow2ceil(n, 32);
            p.e = 1;
        } else {
            p.tpr = 32;
            p.e = (int)pow2ceil(cdiv(n, 32), emax);
        }
        p.blocks = cap_grid(cdiv(outer, WARP_BLOCK / p.tpr));
        return p;
    }
    /* 512 threads at most: two blocks fit an SM, so one's loads overlap the other's
     * reductions (a row per block has no other source of overlap) */
    p.threads = n <= 4096 ? 256 : 512;
    const bool cached = op != OP_BWD && n * itemsize <= CACHE_BYTES &&
                        path != FDL_SL_PATH_BLOCK_ONLINE;
    p.path = cached ? FDL_SL_PATH_BLOCK_CACHED : FDL_SL_PATH_BLOCK_ONLINE;
    p.smem = cached ? (size_t)(n * itemsize) : 0;
    p.blocks = cap_grid(outer);
    return p;
}

/* cross_entropy rows: 8 lanes per row up to 8 classes, a warp up to 4096, else a block */
struct XentPlan {
    int tpr;             /* 0: a block per row */
    int64_t blocks;
};

static XentPlan xent_plan(int64_t rows, int64_t n)
{
    XentPlan p;
    p.tpr = n <= 8 ? 8 : (n <= 4096 ? 32 : 0);
    p.blocks = cap_grid(p.tpr ? cdiv(rows, WARP_BLOCK / p.tpr) : rows);
    return p;
}

/* mse sums: four 16-byte groups per thread at least, at most 1024 blocks */
static int64_t mse_blocks(int64_t n, int itemsize)
{
    const int64_t groups = cdiv(n, 16 / itemsize);
    int64_t b = cdiv(groups, (int64_t)MSE_BLOCK * 4);
    return b < 1 ? 1 : (b > 1024 ? 1024 : b);
}

/* (TPR, E) pairs of the register rows: one instantiation each */
#define SL_WARP_SHAPES(X) \
    X(1, 1) X(2, 1) X(4, 1) X(8, 1) X(16, 1) X(32, 1) X(32, 2) X(32, 4) X(32, 8) X(32, 16) X(32, 32)
#define SL_KEY(tpr, e) ((tpr) * 64 + (e))
/* the backward and the cross-entropy never take E = 32 for double (make_plan): clamping the
 * template argument keeps that spilling kernel from being compiled at all */
#define SL_E(T, E) (sizeof(T) == 8 && (E) > 16 ? 16 : (E))

/* ---- device reductions ------------------------------------------------------------------- */

template <typename T> __device__ __forceinline__ T shfl_xor(T v, int off)
{
    return __shfl_xor_sync(FULL_MASK, v, off);
}

template <typename T> __device__ __forceinline__ Stat<T> shfl_xor(Stat<T> v, int off)
{
    Stat<T> r;
    r.m = __shfl_xor_sync(FULL_MASK, v.m, off);
    r.s = __shfl_xor_sync(FULL_MASK, v.s, off);
    return r;
}

/* every lane of each aligned group of TPR lanes gets op over the group (xor butterfly: both
 * lanes of a step combine the same two values, and every op here is commutative bitwise) */
template <int TPR, typename T, typename Op>
__device__ __forceinline__ T group_allreduce(T v, Op op)
{
#pragma unroll
    for (int off = TPR / 2; off > 0; off >>= 1) v = op(v, shfl_xor(v, off));
    return v;
}

/* every thread of a 1-D block (a multiple of 32 threads) gets op over the block */
template <typename T, typename Op>
__device__ T block_allreduce(T v, Op op, T identity)
{
    __shared__ T red[32];
    v = group_allreduce<32>(v, op);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads();   /* red may still be read by the previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : identity;
    return group_allreduce<32>(v, op);
}

/* columns: every thread of a (TX, TY) block gets op over its column's TY values (a tree of
 * fixed shape); sh holds TX * TY values */
template <typename V, typename Op>
__device__ V col_allreduce(V *sh, V v, Op op)
{
    const int tx = threadIdx.x, ty = threadIdx.y, TX = blockDim.x;
    sh[ty * TX + tx] = v;
    __syncthreads();
    for (int stride = blockDim.y / 2; stride > 0; stride >>= 1) {
        if (ty < stride) sh[ty * TX + tx] = op(sh[ty * TX + tx], sh[(ty + stride) * TX + tx]);
        __syncthreads();
    }
    const V r = sh[tx];
    __syncthreads();   /* sh is reused by the next reduction */
    return r;
}

/* ---- softmax / log_softmax --------------------------------------------------------------- */

template <typename T, int TPR, int E>
__global__ void __launch_bounds__(WARP_BLOCK)
k_fwd_rows(const T *x, T *y, int64_t rows, int n, int log)
{
    constexpr int RPB = WARP_BLOCK / TPR;
    const int lane = threadIdx.x % TPR, grp = threadIdx.x / TPR;
    const int64_t nblk = cdiv(rows, RPB);
    for (int64_t b = blockIdx.x; b < nblk; b += gridDim.x) {
        const int64_t row = b * RPB + grp;
        const bool valid = row < rows;
        const int64_t r = valid ? row : 0;
        T v[E];
        T m = lane_load<T, E>(x + r * n, n, lane, TPR, valid, v);
        m = group_allreduce<TPR>(m, OpMax());
        T s = lane_expsum<T, E>(v, n, lane, TPR, m, !log);
        s = group_allreduce<TPR>(s, OpSum());
        if (valid)
            lane_write_fwd<T, E>(v, y + r * n, n, lane, TPR, m, log ? lg(s) : (T)1 / s, log);
    }
}

template <typename T>
__global__ void __launch_bounds__(512, 2)
k_fwd_block(const T *x, T *y, int64_t rows, int64_t n, int log, int cached)
{
    extern __shared__ __align__(16) unsigned char sl_dyn[];
    T *buf = reinterpret_cast<T *>(sl_dyn);
    const int64_t tid = threadIdx.x, nt = blockDim.x;
    double unused;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T *xr = x + row * n;
        T *yr = y + row * n;
        if (cached) {
            /* each thread reads back only the elements it stored: no barrier needed */
            T m = thread_load_max<T>(xr, buf, n, tid, nt, false, unused);
            m = block_allreduce(m, OpMax(), ninf<T>());
            T s = thread_expsum_buf<T>(buf, n, tid, nt, m, !log);
            s = block_allreduce(s, OpSum(), (T)0);
            thread_write_buf<T>(buf, yr, n, tid, nt, m, log ? lg(s) : (T)1 / s, log);
        } else {
            Stat<T> st = thread_online<T>(xr, 1, n, tid, nt, false, unused);
            st = block_allreduce(st, OpMerge(), stat0<T>());
            thread_write_fwd<T>(xr, 1, yr, 1, n, tid, nt, st.m, log ? lg(st.s) : (T)1 / st.s,
                                log);
        }
    }
}

template <typename T>
__global__ void __launch_bounds__(512, 2)
k_fwd_cols(const T *x, T *y, int64_t outer, int64_t n, int64_t inner, int log)
{
    __shared__ Stat<T> sh[512];
    const int TX = blockDim.x, TY = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
    const int64_t tpo = cdiv(inner, TX), ntiles = outer * tpo;
    double unused;
    for (int64_t tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        const int64_t o = tile / tpo, i = (tile % tpo) * TX + tx;
        const bool valid = i < inner;
        const int64_t base = o * n * inner + (valid ? i : 0);
        Stat<T> st = valid ? thread_online<T>(x + base, inner, n, ty, TY, false, unused)
                              : stat0<T>();
        st = col_allreduce(sh, st, OpMerge());
        if (valid)
            thread_write_fwd<T>(x + base, inner, y + base, inner, n, ty, TY, st.m,
                                log ? lg(st.s) : (T)1 / st.s, log);
    }
}

/* ---- backward ----------------------------------------------------------------------------- */

template <typename T, int TPR, int E>
__global__ void __launch_bounds__(WARP_BLOCK)
k_bwd_rows(const T *dy, const T *y, T *dx, int64_t rows, int n, int log)
{
    constexpr int RPB = WARP_BLOCK / TPR;
    const int lane = threadIdx.x % TPR, grp = threadIdx.x / TPR;
    const int64_t nblk = cdiv(rows, RPB);
    for (int64_t b = blockIdx.x; b < nblk; b += gridDim.x) {
        const int64_t row = b * RPB + grp;
        const bool valid = row < rows;
        const int64_t r = valid ? row : 0;
        T dv[E], yv[E];
        T d = lane_load_bwd<T, E>(dy + r * n, y + r * n, n, lane, TPR, valid, log, dv, yv);
        d = group_allreduce<TPR>(d, OpSum());
        if (valid) lane_write_bwd<T, E>(dv, yv, dx + r * n, n, lane, TPR, d, log);
    }
}

template <typename T>
__global__ void __launch_bounds__(512, 2)
k_bwd_block(const T *dy, const T *y, T *dx, int64_t rows, int64_t n, int log)
{
    const int64_t tid = threadIdx.x, nt = blockDim.x;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const int64_t off = row * n;
        T d = thread_bwd_partial<T>(dy + off, y + off, 1, n, tid, nt, log);
        d = block_allreduce(d, OpSum(), (T)0);
        thread_write_bwd<T>(dy + off, y + off, dx + off, 1, n, tid, nt, d, log);
    }
}

template <typename T>
__global__ void __launch_bounds__(512, 2)
k_bwd_cols(const T *dy, const T *y, T *dx, int64_t outer, int64_t n, int64_t inner, int log)
{
    __shared__ T sh[512];
    const int TX = blockDim.x, TY = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
    const int64_t tpo = cdiv(inner, TX), ntiles = outer * tpo;
    for (int64_t tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        const int64_t o = tile / tpo, i = (tile % tpo) * TX + tx;
        const bool valid = i < inner;
        const int64_t base = o * n * inner + (valid ? i : 0);
        T d = valid ? thread_bwd_partial<T>(dy + base, y + base, inner, n, ty, TY, log) : (T)0;
        d = col_allreduce(sh, d, OpSum());
        if (valid) thread_write_bwd<T>(dy + base, y + base, dx + base, inner, n, ty, TY, d, log);
    }
}

/* ---- fused softmax cross-entropy --------------------------------------------------------- */

__device__ __forceinline__ double grad_scale(const fdl_cuda_sce_args &a)
{
    if (!a.count) return a.gscale;
    const int64_t c = *a.count;
    return c > 0 ? 1.0 / (double)c : 0.0;
}

template <typename T, int TPR, int E>
__global__ void __launch_bounds__(WARP_BLOCK, 4) k_sce_rows(fdl_cuda_sce_args a)
{
    constexpr int RPB = WARP_BLOCK / TPR;
    __shared__ double rowloss[RPB];
    const T *x = static_cast<const T *>(a.x), *t = static_cast<const T *>(a.t);
    T *g = static_cast<T *>(a.grad), *loss = static_cast<T *>(a.loss);
    const int n = (int)a.n;
    const int lane = threadIdx.x % TPR, grp = threadIdx.x / TPR;
    const bool prob = t != nullptr, sumx_needed = !prob && a.eps > 0.0;
    const double gs = g ? grad_scale(a) : 1.0;
    const double keep = 1.0 - a.eps, smooth = n > 0 ? a.eps / (double)n : 0.0;
    const int64_t rows = a.outer, nblk = cdiv(rows, RPB);
    double acc = 0.0;
    for (int64_t b = blockIdx.x; b < nblk; b += gridDim.x) {
        const int64_t row = b * RPB + grp;
        const bool valid = row < rows;
        const int64_t r = valid ? row : 0;
        const LabelInfo li = label_info(a.label, r, n, a.has_ignore, a.ignore, valid);
        const bool live = valid && !li.ignored && !li.bad;   /* ignored rows are not read */
        const T *xr = x + r * n, *tr = prob ? t + r * n : nullptr;
        T v[E];
        T m = lane_load<T, E>(xr, n, lane, TPR, live, v);
        double sumx = sumx_needed ? lane_sum_d<T, E>(v, n, lane, TPR, live) : 0.0;
        m = group_allreduce<TPR>(m, OpMax());
        if (sumx_needed) sumx = group_allreduce<TPR>(sumx, OpSum());
        SceSums<T> z = lane_sce_sums<T, E>(v, tr, n, lane, TPR, m, keep, smooth, g != nullptr,
                                           live);
        z.s = group_allreduce<TPR>(z.s, OpSum());
        if (prob) {
            z.sa = group_allreduce<TPR>(z.sa, OpSum());
            z.st = group_allreduce<TPR>(z.st, OpSum());
        }
        const double xk = live && !prob ? (double)xr[li.k] : 0.0;
        const SceRow<T> rr = sce_row<T>(prob, a.eps, n, gs, m, z, xk, sumx, li);
        if (valid && g) lane_sce_grad<T, E>(v, tr, g + r * n, n, lane, TPR, rr, li);
        if (lane == 0) {
            if (valid && loss) loss[row] = (T)rr.loss;
            rowloss[grp] = valid ? rr.loss : 0.0;
        }
        if (a.partials) {
            __syncthreads();
            if (threadIdx.x == 0)
                for (int j = 0; j < RPB; ++j) acc += rowloss[j];
            __syncthreads();
        }
    }
    if (a.partials && threadIdx.x == 0) a.partials[blockIdx.x] = acc;
}

template <typename T>
__global__ void __launch_bounds__(512, 1) k_sce_block(fdl_cuda_sce_args a, int cached)
{
    extern __shared__ __align__(16) unsigned char sl_dyn[];
    T *buf = reinterpret_cast<T *>(sl_dyn);
    const T *x = static_cast<const T *>(a.x), *t = static_cast<const T *>(a.t);
    T *g = static_cast<T *>(a.grad), *loss = static_cast<T *>(a.loss);
    const int64_t n = a.n, tid = threadIdx.x, nt = blockDim.x;
    const bool prob = t != nullptr, sumx_needed = !prob && a.eps > 0.0;
    const double gs = g ? grad_scale(a) : 1.0;
    const double keep = 1.0 - a.eps, smooth = n > 0 ? a.eps / (double)n : 0.0;
    double acc = 0.0;
    for (int64_t row = blockIdx.x; row < a.outer; row += gridDim.x) {
        const LabelInfo li = label_info(a.label, row, n, a.has_ignore, a.ignore, true);
        const bool live = !li.ignored && !li.bad;   /* the same for the whole block */
        const T *xr = x + row * n, *tr = prob ? t + row * n : nullptr;
        T *gr = g ? g + row * n : nullptr;
        T m = ninf<T>();
        double sumx = 0.0;
        SceSums<T> z;
        z.s = (T)0;
        z.sa = z.st = 0.0;
        if (live) {
            if (cached) {
                m = thread_load_max<T>(xr, buf, n, tid, nt, sumx_needed, sumx);
                m = block_allreduce(m, OpMax(), ninf<T>());
                z = thread_sce_sums_buf<T>(buf, tr, n, tid, nt, m, keep, smooth, gr != nullptr);
                z.s = block_allreduce(z.s, OpSum(), (T)0);
            } else {
                Stat<T> st = thread_online<T>(xr, 1, n, tid, nt, sumx_needed, sumx);
                st = block_allreduce(st, OpMerge(), stat0<T>());
                m = st.m;
                if (prob) z = thread_prob_sums<T>(xr, tr, 1, n, tid, nt, m, keep, smooth);
                z.s = st.s;
            }
            if (sumx_needed) sumx = block_allreduce(sumx, OpSum(), 0.0);
            if (prob) {
                z.sa = block_allreduce(z.sa, OpSum(), 0.0);
                z.st = block_allreduce(z.st, OpSum(), 0.0);
            }
        }
        const double xk = live && !prob ? (double)xr[li.k] : 0.0;
        const SceRow<T> rr = sce_row<T>(prob, a.eps, n, gs, m, z, xk, sumx, li);
        if (gr) {
            if (cached && live)
                thread_sce_grad_buf<T>(buf, tr, gr, n, tid, nt, rr, li);
            else
                thread_sce_grad<T>(xr, tr, gr, 1, n, tid, nt, m, rr, li);
        }
        if (tid == 0) {
            if (loss) loss[row] = (T)rr.loss;
            acc += rr.loss;
        }
    }
    if (a.partials && tid == 0) a.partials[blockIdx.x] = acc;
}

template <typename T>
__global__ void __launch_bounds__(512, 1) k_sce_cols(fdl_cuda_sce_args a)
{
    __shared__ Stat<T> shs[512];
    __shared__ double shd[512];
    __shared__ double colloss[32];
    const T *x = static_cast<const T *>(a.x), *t = static_cast<const T *>(a.t);
    T *g = static_cast<T *>(a.grad), *loss = static_cast<T *>(a.loss);
    const int TX = blockDim.x, TY = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
    const int64_t n = a.n, inner = a.inner, tpo = cdiv(inner, TX), ntiles = a.outer * tpo;
    const bool prob = t != nullptr, sumx_needed = !prob && a.eps > 0.0;
    const double gs = g ? grad_scale(a) : 1.0;
    const double keep = 1.0 - a.eps, smooth = n > 0 ? a.eps / (double)n : 0.0;
    double acc = 0.0;
    for (int64_t tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        const int64_t o = tile / tpo, i = (tile % tpo) * TX + tx;
        const bool valid = i < inner;
        const int64_t sample = o * inner + (valid ? i : 0);
        const int64_t base = o * n * inner + (valid ? i : 0);
        const LabelInfo li = label_info(a.label, sample, n, a.has_ignore, a.ignore, valid);
        const bool live = valid && !li.ignored && !li.bad;
        const T *xc = x + base, *tc = prob ? t + base : nullptr;
        double sumx = 0.0;
        Stat<T> st = live ? thread_online<T>(xc, inner, n, ty, TY, sumx_needed, sumx)
                          : stat0<T>();
        st = col_allreduce(shs, st, OpMerge());
        if (sumx_needed) sumx = col_allreduce(shd, sumx, OpSum());
        SceSums<T> z;
        z.s = st.s;
        z.sa = z.st = 0.0;
        if (prob) {
            SceSums<T> q;
            q.sa = q.st = 0.0;
            if (live) q = thread_prob_sums<T>(xc, tc, inner, n, ty, TY, st.m, keep, smooth);
            z.sa = col_allreduce(shd, q.sa, OpSum());
            z.st = col_allreduce(shd, q.st, OpSum());
        }
        const double xk = live && !prob ? (double)xc[li.k * inner] : 0.0;
        const SceRow<T> rr = sce_row<T>(prob, a.eps, n, gs, st.m, z, xk, sumx, li);
        if (valid && g) thread_sce_grad<T>(xc, tc, g + base, inner, n, ty, TY, st.m, rr, li);
        if (ty == 0) {
            if (valid && loss) loss[sample] = (T)rr.loss;
            colloss[tx] = valid ? rr.loss : 0.0;
        }
        if (a.partials) {
            __syncthreads();
            if (tx == 0 && ty == 0)
                for (int j = 0; j < TX; ++j) acc += colloss[j];
            __syncthreads();
        }
    }
    if (a.partials && tx == 0 && ty == 0) a.partials[blockIdx.x] = acc;
}

/* ---- small kernels: label counts and widening, the final sum ----------------------------- */

__global__ void __launch_bounds__(256)
k_count_kept(const int64_t *label, int64_t n, int64_t ignore, unsigned long long *count)
{
    unsigned long long c = 0;
    FDL_GRID_STRIDE(i, n) c += label[i] != ignore;
    c = block_allreduce(c, OpSum(), 0ull);
    if (threadIdx.x == 0 && c) atomicAdd(count, c);
}

template <typename L> __global__ void k_widen(const L *src, int64_t *dst, int64_t n)
{
    FDL_GRID_STRIDE(i, n) dst[i] = (int64_t)src[i];
}

template <typename T>
__global__ void __launch_bounds__(FINISH_BLOCK)
k_finish(const double *p, int64_t np, int mean, double count, const int64_t *count_dev, T *out)
{
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < np; i += blockDim.x) acc += p[i];
    acc = block_allreduce(acc, OpSum(), 0.0);
    if (threadIdx.x == 0) {
        if (mean) acc /= count_dev ? (double)*count_dev : count;
        out[0] = (T)acc;
    }
}

/* ---- cross_entropy, mse ------------------------------------------------------------------- */

template <typename T, int TPR>
__global__ void __launch_bounds__(WARP_BLOCK)
k_xent_rows(const T *t, const T *p, T *loss, double *partials, int64_t rows, int64_t n)
{
    constexpr int RPB = WARP_BLOCK / TPR;
    __shared__ double rowloss[RPB];
    const int lane = threadIdx.x % TPR, grp = threadIdx.x / TPR;
    const int64_t nblk = cdiv(rows, RPB);
    double acc = 0.0;
    for (int64_t b = blockIdx.x; b < nblk; b += gridDim.x) {
        const int64_t row = b * RPB + grp;
        const bool valid = row < rows;
        const int64_t r = valid ? row : 0;
        double s = valid ? thread_xent<T>(t + r * n, p + r * n, n, lane, TPR) : 0.0;
        s = group_allreduce<TPR>(s, OpSum());
        if (lane == 0) {
            if (valid && loss) loss[row] = (T)(-s);
            rowloss[grp] = valid ? -s : 0.0;
        }
        if (partials) {
            __syncthreads();
            if (threadIdx.x == 0)
                for (int j = 0; j < RPB; ++j) acc += rowloss[j];
            __syncthreads();
        }
    }
    if (partials && threadIdx.x == 0) partials[blockIdx.x] = acc;
}

template <typename T>
__global__ void __launch_bounds__(XENT_BLOCK)
k_xent_block(const T *t, const T *p, T *loss, double *partials, int64_t rows, int64_t n)
{
    double acc = 0.0;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        double s = thread_xent<T>(t + row * n, p + row * n, n, threadIdx.x, blockDim.x);
        s = block_allreduce(s, OpSum(), 0.0);
        if (threadIdx.x == 0) {
            if (loss) loss[row] = (T)(-s);
            acc += -s;
        }
    }
    if (partials && threadIdx.x == 0) partials[blockIdx.x] = acc;
}

template <typename T, int V> struct VecOf;
template <> struct VecOf<float, 4> { typedef float4 type; };
template <> struct VecOf<double, 2> { typedef double2 type; };

/* group q of V consecutive elements: one 16-byte load when aligned and whole */
template <typename T, int V>
__device__ __forceinline__ void load_group(const T *p, int64_t q, int64_t n, bool aligned,
                                           T (&v)[V])
{
    const int64_t i0 = q * V;
    if (aligned && i0 + V <= n) {
        const typename VecOf<T, V>::type w =
            *reinterpret_cast<const typename VecOf<T, V>::type *>(p + i0);
        memcpy(v, &w, sizeof w);
    } else {
#pragma unroll
        for (int u = 0; u < V; ++u) v[u] = i0 + u < n ? p[i0 + u] : (T)0;
    }
}

template <typename T, int V>
__device__ __forceinline__ void store_group(T *p, int64_t q, int64_t n, bool aligned,
                                            const T (&v)[V])
{
    const int64_t i0 = q * V;
    if (aligned && i0 + V <= n) {
        typename VecOf<T, V>::type w;
        memcpy(&w, v, sizeof w);
        *reinterpret_cast<typename VecOf<T, V>::type *>(p + i0) = w;
    } else {
#pragma unroll
        for (int u = 0; u < V; ++u)
            if (i0 + u < n) p[i0 + u] = v[u];
    }
}

template <typename T>
__global__ void __launch_bounds__(MSE_BLOCK)
k_mse_sum(const T *t, const T *p, double *partials, int64_t n, int aligned)
{
    constexpr int V = 16 / sizeof(T);
    const int64_t groups = cdiv(n, V);
    double acc = 0.0;
    for (int64_t q = (int64_t)blockIdx.x * MSE_BLOCK + threadIdx.x; q < groups;
         q += (int64_t)gridDim.x * MSE_BLOCK) {
        T tv[V], pv[V];
        load_group<T, V>(t, q, n, aligned, tv);
        load_group<T, V>(p, q, n, aligned, pv);
        group_sqdiff<T, V>(tv, pv, q, n, acc);
    }
    acc = block_allreduce(acc, OpSum(), 0.0);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

template <typename T, int OP>
__global__ void __launch_bounds__(256)
k_map(const T *t, const T *p, T *out, int64_t n, T scale, int aligned)
{
    constexpr int V = 16 / sizeof(T);
    const int64_t groups = cdiv(n, V);
    FDL_GRID_STRIDE(q, groups) {
        T tv[V], pv[V], ov[V];
        load_group<T, V>(t, q, n, aligned, tv);
        load_group<T, V>(p, q, n, aligned, pv);
#pragma unroll
        for (int u = 0; u < V; ++u) ov[u] = map_elem<T, OP>(tv[u], pv[u], scale);
        store_group<T, V>(out, q, n, aligned, ov);
    }
}

/* ---- launchers ---------------------------------------------------------------------------- */

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

template <typename T>
static int launch_fwd(const T *x, T *y, int64_t outer, int64_t n, int64_t inner, int log,
                      int path, cudaStream_t s)
{
    if (outer == 0 || n == 0 || inner == 0) return 0;
    const Plan p = make_plan(outer, n, inner, sizeof(T), OP_FWD, path);
    switch (p.path) {
    case FDL_SL_PATH_WARP:
        switch (SL_KEY(p.tpr, p.e)) {
#define SL_CASE(TPR, E) \
        case SL_KEY(TPR, E): \
            k_fwd_rows<T, TPR, E> \
                <<<(unsigned)p.blocks, WARP_BLOCK, 0, s>>>(x, y, outer, (int)n, log); \
            break;
        SL_WARP_SHAPES(SL_CASE)
#undef SL_CASE
        default: return (int)cudaErrorInvalidValue;
        }
        break;
    case FDL_SL_PATH_COLS:
        k_fwd_cols<T><<<(unsigned)p.blocks, dim3(p.tx, p.ty), 0, s>>>(x, y, outer, n, inner, log);
        break;
    default:
        k_fwd_block<T><<<(unsigned)p.blocks, p.threads, p.smem, s>>>(x, y, outer, n, log,
                                                                     p.smem > 0);
        break;
    }
    FDL_CUDA_RETURN_LAUNCH();
}

template <typename T>
static int launch_bwd(const T *dy, const T *y, T *dx, int64_t outer, int64_t n, int64_t inner,
                      int log, int path, cudaStream_t s)
{
    if (outer == 0 || n == 0 || inner == 0) return 0;
    const Plan p = make_plan(outer, n, inner, sizeof(T), OP_BWD, path);
    switch (p.path) {
    case FDL_SL_PATH_WARP:
        switch (SL_KEY(p.tpr, p.e)) {
#define SL_CASE(TPR, E) \
        case SL_KEY(TPR, E): \
            if (sizeof(T) == 8 && E > 16) return (int)cudaErrorInvalidValue; \
            k_bwd_rows<T, TPR, SL_E(T, E)> \
                <<<(unsigned)p.blocks, WARP_BLOCK, 0, s>>>(dy, y, dx, outer, (int)n, log); \
            break;
        SL_WARP_SHAPES(SL_CASE)
#undef SL_CASE
        default: return (int)cudaErrorInvalidValue;
        }
        break;
    case FDL_SL_PATH_COLS:
        k_bwd_cols<T><<<(unsigned)p.blocks, dim3(p.tx, p.ty), 0, s>>>(dy, y, dx, outer, n, inner,
                                                                     log);
        break;
    default:
        k_bwd_block<T><<<(unsigned)p.blocks, p.threads, 0, s>>>(dy, y, dx, outer, n, log);
        break;
    }
    FDL_CUDA_RETURN_LAUNCH();
}

template <typename T>
static int launch_sce(const fdl_cuda_sce_args *a, cudaStream_t s)
{
    if (a->outer == 0 || a->inner == 0) return 0;
    const Plan p = make_plan(a->outer, a->n, a->inner, sizeof(T), OP_SCE, a->path);
    switch (p.path) {
    case FDL_SL_PATH_WARP:
        switch (SL_KEY(p.tpr, p.e)) {
#define SL_CASE(TPR, E) \
        case SL_KEY(TPR, E): \
            if (sizeof(T) == 8 && E > 16) return (int)cudaErrorInvalidValue; \
            k_sce_rows<T, TPR, SL_E(T, E)><<<(unsigned)p.blocks, WARP_BLOCK, 0, s>>>(*a); \
            break;
        SL_WARP_SHAPES(SL_CASE)
#undef SL_CASE
        default: return (int)cudaErrorInvalidValue;
        }
        break;
    case FDL_SL_PATH_COLS:
        k_sce_cols<T><<<(unsigned)p.blocks, dim3(p.tx, p.ty), 0, s>>>(*a);
        break;
    default:
        k_sce_block<T><<<(unsigned)p.blocks, p.threads, p.smem, s>>>(*a, p.smem > 0);
        break;
    }
    FDL_CUDA_RETURN_LAUNCH();
}

template <typename T>
static int launch_xent(const T *t, const T *p, T *loss, double *partials, int64_t rows,
                       int64_t n, cudaStream_t s)
{
    if (rows == 0) return 0;
    const XentPlan xp = xent_plan(rows, n);
    const unsigned grid = (unsigned)xp.blocks;
    if (xp.tpr == 8)
        k_xent_rows<T, 8><<<grid, WARP_BLOCK, 0, s>>>(t, p, loss, partials, rows, n);
    else if (xp.tpr == 32)
        k_xent_rows<T, 32><<<grid, WARP_BLOCK, 0, s>>>(t, p, loss, partials, rows, n);
    else
        k_xent_block<T><<<grid, XENT_BLOCK, 0, s>>>(t, p, loss, partials, rows, n);
    FDL_CUDA_RETURN_LAUNCH();
}

template <typename T>
static int launch_map(const T *t, const T *p, T *out, int64_t n, int op, double scale,
                      cudaStream_t s)
{
    if (n == 0) return 0;
    const int V = 16 / (int)sizeof(T);
    const unsigned grid = fdl_cuda_grid(cdiv(n, V), 256);
    const int al = aligned16(t) && aligned16(p) && aligned16(out);
    switch (op) {
    case SL_MAP_SQDIFF:
        k_map<T, SL_MAP_SQDIFF><<<grid, 256, 0, s>>>(t, p, out, n, (T)scale, al);
        break;
    case SL_MAP_MSE_GRAD:
        k_map<T, SL_MAP_MSE_GRAD><<<grid, 256, 0, s>>>(t, p, out, n, (T)scale, al);
        break;
    case SL_MAP_XENT_GRAD:
        k_map<T, SL_MAP_XENT_GRAD><<<grid, 256, 0, s>>>(t, p, out, n, (T)scale, al);
        break;
    default: return (int)cudaErrorInvalidValue;
    }
    FDL_CUDA_RETURN_LAUNCH();
}

}  // namespace fdl_sl

using namespace fdl_sl;

#define SL_DISPATCH(dtype, CALL_F32, CALL_F64) \
    ((dtype) == FDL_CUDA_F32 ? (CALL_F32) : (dtype) == FDL_CUDA_F64 ? (CALL_F64) \
                                                                    : (int)cudaErrorInvalidValue)

extern "C" int fdl_cuda_softmax(const void *x, void *y, int64_t outer, int64_t n, int64_t inner,
                                int dtype, int log, int path, void *stream)
{
    cudaStream_t s = FDL_CUDA_STREAM(stream);
    return SL_DISPATCH(dtype,
        launch_fwd<float>((const float *)x, (float *)y, outer, n, inner, log, path, s),
        launch_fwd<double>((const double *)x, (double *)y, outer, n, inner, log, path, s));
}

extern "C" int fdl_cuda_softmax_backward(const void *dy, const void *y, void *dx, int64_t outer,
                                         int64_t n, int64_t inner, int dtype, int log, int path,
                                         void *stream)
{
    cudaStream_t s = FDL_CUDA_STREAM(stream);
    return SL_DISPATCH(dtype,
        launch_bwd<float>((const float *)dy, (const float *)y, (float *)dx, outer, n, inner, log,
                          path, s),
        launch_bwd<double>((const double *)dy, (const double *)y, (double *)dx, outer, n, inner,
                           log, path, s));
}

extern "C" int64_t fdl_cuda_sce_blocks(int64_t outer, int64_t n, int64_t inner, int dtype,
                                       int path)
{
    const int itemsize = dtype == FDL_CUDA_F32 ? 4 : 8;
    return make_plan(outer, n, inner, itemsize, OP_SCE, path).blocks;
}

extern "C" int fdl_cuda_softmax_cross_entropy(const fdl_cuda_sce_args *a, void *stream)
{
    cudaStream_t s = FDL_CUDA_STREAM(stream);
    return SL_DISPATCH(a->dtype, launch_sce<float>(a, s), launch_sce<double>(a, s));
}

extern "C" int fdl_cuda_sl_count_kept(const int64_t *label, int64_t n, int64_t ignore,
                                      int64_t *count, void *stream)
{
    if (n == 0) return 0;
    k_count_kept<<<fdl_cuda_grid(n, 256), 256, 0, FDL_CUDA_STREAM(stream)>>>(
        label, n, ignore, (unsigned long long *)count);
    FDL_CUDA_RETURN_LAUNCH();
}

extern "C" int fdl_cuda_sl_widen_labels(const void *src, int src_dtype, int64_t *dst, int64_t n,
                                        void *stream)
{
    if (n == 0) return 0;
    const unsigned grid = fdl_cuda_grid(n, 256);
    cudaStream_t s = FDL_CUDA_STREAM(stream);
    if (src_dtype == FDL_CUDA_I32)
        k_widen<int32_t><<<grid, 256, 0, s>>>((const int32_t *)src, dst, n);
    else if (src_dtype == FDL_CUDA_U8)
        k_widen<uint8_t><<<grid, 256, 0, s>>>((const uint8_t *)src, dst, n);
    else
        return (int)cudaErrorInvalidValue;
    FDL_CUDA_RETURN_LAUNCH();
}

extern "C" int fdl_cuda_sl_finish(const double *partials, int64_t np, int mean, double count,
                                  const int64_t *count_dev, void *out, int dtype, void *stream)
{
    cudaStream_t s = FDL_CUDA_STREAM(stream);
    if (dtype == FDL_CUDA_F32)
        k_finish<float><<<1, FINISH_BLOCK, 0, s>>>(partials, np, mean, count, count_dev,
                                                   (float *)out);
    else if (dtype == FDL_CUDA_F64)
        k_finish<double><<<1, FINISH_BLOCK, 0, s>>>(partials, np, mean, count, count_dev,
                                                    (double *)out);
    else
        return (int)cudaErrorInvalidValue;
    FDL_CUDA_RETURN_LAUNCH();
}

extern "C" int64_t fdl_cuda_xent_blocks(int64_t rows, int64_t n)
{
    return xent_plan(rows, n).blocks;
}

extern "C" int fdl_cuda_cross_entropy(const void *t, const void *p, void *loss, double *partials,
                                      int64_t rows, int64_t n, int dtype, void *stream)
{
    cudaStream_t s = FDL_CUDA_STREAM(stream);
    return SL_DISPATCH(dtype,
        launch_xent<float>((const float *)t, (const float *)p, (float *)loss, partials, rows, n,
                           s),
        launch_xent<double>((const double *)t, (const double *)p, (double *)loss, partials, rows,
                            n, s));
}

extern "C" int64_t fdl_cuda_mse_blocks(int64_t n, int dtype)
{
    return mse_blocks(n, dtype == FDL_CUDA_F32 ? 4 : 8);
}

extern "C" int fdl_cuda_mse_sum(const void *t, const void *p, double *partials, int64_t n,
                                int dtype, void *stream)
{
    cudaStream_t s = FDL_CUDA_STREAM(stream);
    const int al = aligned16(t) && aligned16(p);
    const unsigned grid = (unsigned)fdl_cuda_mse_blocks(n, dtype);
    if (dtype == FDL_CUDA_F32)
        k_mse_sum<float><<<grid, MSE_BLOCK, 0, s>>>((const float *)t, (const float *)p, partials,
                                                    n, al);
    else if (dtype == FDL_CUDA_F64)
        k_mse_sum<double><<<grid, MSE_BLOCK, 0, s>>>((const double *)t, (const double *)p,
                                                     partials, n, al);
    else
        return (int)cudaErrorInvalidValue;
    FDL_CUDA_RETURN_LAUNCH();
}

extern "C" int fdl_cuda_sl_map(const void *t, const void *p, void *out, int64_t n, int op,
                               double scale, int dtype, void *stream)
{
    cudaStream_t s = FDL_CUDA_STREAM(stream);
    return SL_DISPATCH(dtype,
        launch_map<float>((const float *)t, (const float *)p, (float *)out, n, op, scale, s),
        launch_map<double>((const double *)t, (const double *)p, (double *)out, n, op, scale,
                           s));
}

extern "C" int fdl_cuda_sl_plan(int64_t outer, int64_t n, int64_t inner, int dtype, int op,
                                int path, int *tpr, int *e, int *threads, int64_t *blocks)
{
    const Plan p = make_plan(outer, n, inner, dtype == FDL_CUDA_F32 ? 4 : 8, op, path);
    *tpr = p.path == FDL_SL_PATH_COLS ? p.tx : p.tpr;
    *e = p.path == FDL_SL_PATH_COLS ? p.ty : p.e;
    *threads = p.threads;
    *blocks = p.blocks;
    return p.path;
}

#include "softmax_losses_host.cuh"
