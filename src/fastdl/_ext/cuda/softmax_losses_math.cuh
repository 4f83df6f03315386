/*
 * The per-thread arithmetic of the softmax / loss kernels (softmax_losses.cu), written once as
 * __host__ __device__ functions: the kernels call them between their shuffles and barriers, and
 * the host emulation (the fdl_cuda_sl_host_* test shims) calls the same functions in the same
 * order, so the CPU-side tests check the kernels' math, special values and index mapping on a
 * machine without a GPU. Nothing here touches shared memory or another thread's registers.
 *
 * Semantics follow the CPU (include/fastdl/softmax.h): the max skips NaN, which then reaches
 * every result through the sum; +inf gives NaN (inf - inf); a lane of -inf sums against 0 in
 * the online pass. Loss terms and per-sample statistics are accumulated in double, the sums
 * of exp of a softmax in the element type (as the CPU's blocks are).
 */
#ifndef FASTDL_CUDA_SOFTMAX_LOSSES_MATH_CUH
#define FASTDL_CUDA_SOFTMAX_LOSSES_MATH_CUH

#include <math.h>
#include <stdint.h>

#define SL_HD __host__ __device__ __forceinline__

namespace fdl_sl {

template <typename T> SL_HD T ninf() { return -(T)INFINITY; }
template <typename T> SL_HD T qnan() { return (T)NAN; }

SL_HD float ex(float v) { return expf(v); }
SL_HD double ex(double v) { return exp(v); }
SL_HD float lg(float v) { return logf(v); }
SL_HD double lg(double v) { return log(v); }

/* A product the device compiler may not fuse into an FMA: merge() must give bitwise the same
 * result for (a, b) and (b, a), since the two lanes of a butterfly step compute it each way. */
SL_HD float mul_rn(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

SL_HD double mul_rn(double a, double b)
{
#ifdef __CUDA_ARCH__
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}

SL_HD int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* max that keeps a when b is NaN (a running max is never NaN itself) */
template <typename T> SL_HD T vmax(T a, T b) { return b > a ? b : a; }

/* running max and sum of exp(x - max) */
template <typename T> struct Stat {
    T m, s;
};

template <typename T> SL_HD Stat<T> stat0()
{
    Stat<T> r;
    r.m = ninf<T>();
    r.s = (T)0;
    return r;
}

template <typename T> SL_HD Stat<T> merge(Stat<T> a, Stat<T> b)
{
    Stat<T> r;
    r.m = vmax(a.m, b.m);
    if (r.m == ninf<T>())   /* both lanes saw only -inf (their sums are 0, or NaN) */
        r.s = a.s + b.s;
    else
        r.s = mul_rn(a.s, ex(a.m - r.m)) + mul_rn(b.s, ex(b.m - r.m));
    return r;
}

struct OpSum {
    template <typename T> SL_HD T operator()(T a, T b) const { return a + b; }
};
struct OpMax {
    template <typename T> SL_HD T operator()(T a, T b) const { return vmax(a, b); }
};
struct OpMerge {
    template <typename T> SL_HD Stat<T> operator()(Stat<T> a, Stat<T> b) const
    {
        return merge(a, b);
    }
};

/* Elements per chunk of the online pass: U independent loads in flight per thread, one
 * rescale of the running sum per chunk. */
constexpr int U = 8;

/* Add a chunk of cnt values (a prefix of v) to a running Stat: the chunk's max first, the
 * running sum rescaled once if it grew, then the exps against it (against 0 while everything
 * seen is -inf, so that -inf adds exp(-inf) = 0 and NaN still propagates). */
template <typename T>
SL_HD void push_chunk(Stat<T> &st, const T (&v)[U], int cnt)
{
    T cm = ninf<T>();
#pragma unroll
    for (int u = 0; u < U; ++u)
        if (u < cnt) cm = vmax(cm, v[u]);
    if (cm > st.m) {
        st.s = st.s * ex(st.m - cm);
        st.m = cm;
    }
    const T ref = st.m == ninf<T>() ? (T)0 : st.m;
#pragma unroll
    for (int u = 0; u < U; ++u)
        if (u < cnt) st.s += ex(v[u] - ref);
}

/* ---- strided loops: one thread's share of a lane (elements start, start + step, ...) ---- */

/* Online max/sum of x[i * sx]; with want_sum, sum receives the plain sum of the values (a
 * flag and a reference, not a pointer that may be null: that would keep sum in local memory). */
template <typename T>
SL_HD Stat<T> thread_online(const T *x, int64_t sx, int64_t n, int64_t start, int64_t step,
                            bool want_sum, double &sum)
{
    Stat<T> st = stat0<T>();
    double acc = 0.0;
    for (int64_t base = start; base < n; base += U * step) {
        T v[U];
        int cnt = 0;
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int64_t i = base + u * step;
            if (i < n) {
                v[u] = x[i * sx];
                cnt = u + 1;
            } else {
                v[u] = ninf<T>();
            }
        }
        if (want_sum) {
#pragma unroll
            for (int u = 0; u < U; ++u)
                if (u < cnt) acc += (double)v[u];
        }
        push_chunk<T>(st, v, cnt);
    }
    sum = acc;
    return st;
}

/* Copy a row into buf (shared memory on the device) and return the max of this thread's
 * elements; with want_sum, sum receives their plain sum. */
template <typename T>
SL_HD T thread_load_max(const T *x, T *buf, int64_t n, int64_t start, int64_t step,
                        bool want_sum, double &sum)
{
    T m = ninf<T>();
    double acc = 0.0;
    for (int64_t base = start; base < n; base += U * step) {
        T v[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int64_t i = base + u * step;
            v[u] = i < n ? x[i] : ninf<T>();
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int64_t i = base + u * step;
            if (i < n) {
                buf[i] = v[u];
                m = vmax(m, v[u]);
                if (want_sum) acc += (double)v[u];
            }
        }
    }
    sum = acc;
    return m;
}

/* sum of exp(buf - m) over this thread's elements, the exps stored back when store */
template <typename T>
SL_HD T thread_expsum_buf(T *buf, int64_t n, int64_t start, int64_t step, T m, bool store)
{
    T s = (T)0;
    for (int64_t i = start; i < n; i += step) {
        const T e = ex(buf[i] - m);
        if (store) buf[i] = e;
        s += e;
    }
    return s;
}

/* y = buf * c (buf holds exp(x - m), c = 1 / sum) or, log, (buf - m) - c (buf holds x,
 * c = log(sum)): (x - m) is exact near the max, so large logits keep their resolution. */
template <typename T>
SL_HD void thread_write_buf(const T *buf, T *y, int64_t n, int64_t start, int64_t step, T m, T c,
                            bool log)
{
    for (int64_t i = start; i < n; i += step) y[i] = log ? (buf[i] - m) - c : buf[i] * c;
}

/* The write pass of the online path: exp(x - m) recomputed from x. */
template <typename T>
SL_HD void thread_write_fwd(const T *x, int64_t sx, T *y, int64_t sy, int64_t n, int64_t start,
                            int64_t step, T m, T c, bool log)
{
    for (int64_t i = start; i < n; i += step) {
        const T v = x[i * sx];
        y[i * sy] = log ? (v - m) - c : ex(v - m) * c;
    }
}

/* backward: sum(dy * y) (softmax) or sum(dy) (log_softmax) over this thread's elements */
template <typename T>
SL_HD T thread_bwd_partial(const T *dy, const T *y, int64_t sx, int64_t n, int64_t start,
                           int64_t step, bool log)
{
    T acc = (T)0;
    for (int64_t i = start; i < n; i += step) acc += log ? dy[i * sx] : dy[i * sx] * y[i * sx];
    return acc;
}

/* dx = y * (dy - d) (softmax) or dy - exp(y) * d (log_softmax) */
template <typename T>
SL_HD void thread_write_bwd(const T *dy, const T *y, T *dx, int64_t sx, int64_t n, int64_t start,
                            int64_t step, T d, bool log)
{
    for (int64_t i = start; i < n; i += step) {
        const T a = dy[i * sx], b = y[i * sx];
        dx[i * sx] = log ? a - ex(b) * d : b * (a - d);
    }
}

/* ---- register lanes: element lane + j * tpr of a row is v[j] of that lane ---------------- */

template <typename T, int E>
SL_HD T lane_load(const T *xr, int n, int lane, int tpr, bool live, T (&v)[E])
{
    T m = ninf<T>();
#pragma unroll
    for (int j = 0; j < E; ++j) {
        const int i = lane + j * tpr;
        v[j] = live && i < n ? xr[i] : ninf<T>();
        m = vmax(m, v[j]);
    }
    return m;
}

template <typename T, int E>
SL_HD double lane_sum_d(const T (&v)[E], int n, int lane, int tpr, bool live)
{
    double acc = 0.0;
#pragma unroll
    for (int j = 0; j < E; ++j)
        if (live && lane + j * tpr < n) acc += (double)v[j];
    return acc;
}

template <typename T, int E>
SL_HD T lane_expsum(T (&v)[E], int n, int lane, int tpr, T m, bool store)
{
    T s = (T)0;
#pragma unroll
    for (int j = 0; j < E; ++j) {
        if (lane + j * tpr < n) {
            const T e = ex(v[j] - m);
            if (store) v[j] = e;
            s += e;
        }
    }
    return s;
}

template <typename T, int E>
SL_HD void lane_write_fwd(const T (&v)[E], T *yr, int n, int lane, int tpr, T m, T c, bool log)
{
#pragma unroll
    for (int j = 0; j < E; ++j) {
        const int i = lane + j * tpr;
        if (i < n) yr[i] = log ? (v[j] - m) - c : v[j] * c;
    }
}

/* load dy and y; returns this lane's sum(dy * y) (softmax) or sum(dy) (log_softmax) */
template <typename T, int E>
SL_HD T lane_load_bwd(const T *dyr, const T *yr, int n, int lane, int tpr, bool live, bool log,
                      T (&dv)[E], T (&yv)[E])
{
    T acc = (T)0;
#pragma unroll
    for (int j = 0; j < E; ++j) {
        const int i = lane + j * tpr;
        const bool in = live && i < n;
        dv[j] = in ? dyr[i] : (T)0;
        yv[j] = in ? yr[i] : (T)0;
    }
#pragma unroll
    for (int j = 0; j < E; ++j)
        if (live && lane + j * tpr < n) acc += log ? dv[j] : dv[j] * yv[j];
    return acc;
}

template <typename T, int E>
SL_HD void lane_write_bwd(const T (&dv)[E], const T (&yv)[E], T *dxr, int n, int lane, int tpr,
                          T d, bool log)
{
#pragma unroll
    for (int j = 0; j < E; ++j) {
        const int i = lane + j * tpr;
        if (i < n) dxr[i] = log ? dv[j] - ex(yv[j]) * d : yv[j] * (dv[j] - d);
    }
}

/* ---- softmax cross-entropy ---------------------------------------------------------------- */

/* A sample's class index: ignored (ignore_index) or out of [0, n) ("bad": the sample's loss
 * and gradient are NaN on the GPU, where the CPU raises). */
struct LabelInfo {
    int64_t k;
    bool ignored, bad;
};

SL_HD LabelInfo label_info(const int64_t *label, int64_t sample, int64_t n, int has_ignore,
                           int64_t ignore, bool valid)
{
    LabelInfo li;
    li.k = 0;
    li.ignored = li.bad = false;
    if (label && valid) {
        li.k = label[sample];
        li.ignored = has_ignore && li.k == ignore;
        li.bad = !li.ignored && (li.k < 0 || li.k >= n);
    }
    return li;
}

/* One sample's statistics: sum of exp(x - m); with probability targets also
 * sa = sum t'_c (m - x_c) (a class with t'_c == 0 adds 0, even where x_c = -inf) and
 * st = sum t'_c, t' = keep * t + smooth, in double as the CPU. */
template <typename T> struct SceSums {
    T s;
    double sa, st;
};

template <typename T> SL_HD void sce_prob_term(T x, T t, T m, double keep, double smooth,
                                               double &sa, double &st)
{
    const double tc = keep * (double)t + smooth;
    const double term = tc * ((double)m - (double)x);
    sa += tc == 0.0 ? 0.0 : term;
    st += tc;
}

template <typename T, int E>
SL_HD SceSums<T> lane_sce_sums(T (&v)[E], const T *tr, int n, int lane, int tpr, T m,
                               double keep, double smooth, bool store, bool live)
{
    SceSums<T> z;
    z.s = (T)0;
    z.sa = z.st = 0.0;
#pragma unroll
    for (int j = 0; j < E; ++j) {
        const int i = lane + j * tpr;
        if (live && i < n) {
            const T xv = v[j];
            const T e = ex(xv - m);
            if (store) v[j] = e;
            z.s += e;
            if (tr) sce_prob_term(xv, tr[i], m, keep, smooth, z.sa, z.st);
        }
    }
    return z;
}

/* the cached path: buf holds the row; exp(x - m) stored back when store */
template <typename T>
SL_HD SceSums<T> thread_sce_sums_buf(T *buf, const T *tr, int64_t n, int64_t start,
                                     int64_t step, T m, double keep, double smooth, bool store)
{
    SceSums<T> z;
    z.s = (T)0;
    z.sa = z.st = 0.0;
    for (int64_t i = start; i < n; i += step) {
        const T xv = buf[i];
        const T e = ex(xv - m);
        if (store) buf[i] = e;
        z.s += e;
        if (tr) sce_prob_term(xv, tr[i], m, keep, smooth, z.sa, z.st);
    }
    return z;
}

/* the online path, probability targets: sa and st once m is known */
template <typename T>
SL_HD SceSums<T> thread_prob_sums(const T *x, const T *t, int64_t sx, int64_t n, int64_t start,
                                  int64_t step, T m, double keep, double smooth)
{
    SceSums<T> z;
    z.s = (T)0;
    z.sa = z.st = 0.0;
    for (int64_t i = start; i < n; i += step)
        sce_prob_term(x[i * sx], t[i * sx], m, keep, smooth, z.sa, z.st);
    return z;
}

/* A sample's loss and gradient coefficients: dlogits_c = e_c * ga - gb (- gk at the class
 * k) for a class index, e_c * ga - (gk * t_c + gb) for probabilities, e_c = exp(x_c - m);
 * the CPU's formulas (fdl_xent_row), in the same order. */
template <typename T> struct SceRow {
    double loss;
    T ga, gb, gk;
};

template <typename T>
SL_HD SceRow<T> sce_row(bool prob, double eps, int64_t n, double gs, T m, const SceSums<T> &z,
                        double xk, double sumx, LabelInfo li)
{
    SceRow<T> r;
    r.ga = r.gb = r.gk = (T)0;
    if (li.ignored) {
        r.loss = 0.0;
        return r;
    }
    if (li.bad) {
        r.loss = (double)NAN;
        return r;
    }
    const double s = (double)z.s, ls = log(s);
    if (!prob) {
        r.loss = ls + (1.0 - eps) * ((double)m - xk);
        if (eps > 0.0)   /* skipped at eps == 0: 0 * inf would be NaN for a -inf logit */
            r.loss += eps * ((double)m - sumx / (double)n);
        r.ga = (T)(gs / s);
        r.gb = (T)(gs * eps / (double)n);
        r.gk = (T)(gs * (1.0 - eps));
    } else {
        const double keep = 1.0 - eps, smooth = n > 0 ? eps / (double)n : 0.0;
        r.loss = n > 0 ? z.sa + z.st * ls : 0.0;
        r.ga = (T)(gs * z.st / s);
        r.gk = (T)(gs * keep);
        r.gb = (T)(gs * smooth);
    }
    return r;
}

/* one gradient element from e = exp(x_c - m) */
template <typename T>
SL_HD T sce_grad(T e, const T *t, int64_t c, const SceRow<T> &r, LabelInfo li)
{
    if (li.ignored) return (T)0;
    if (li.bad) return qnan<T>();
    if (t) return e * r.ga - (r.gk * t[0] + r.gb);
    T v = e * r.ga - r.gb;
    if (c == li.k) v -= r.gk;
    return v;
}

template <typename T, int E>
SL_HD void lane_sce_grad(const T (&v)[E], const T *tr, T *gr, int n, int lane, int tpr,
                         const SceRow<T> &r, LabelInfo li)
{
#pragma unroll
    for (int j = 0; j < E; ++j) {
        const int i = lane + j * tpr;
        if (i < n) gr[i] = sce_grad(v[j], tr ? tr + i : (const T *)0, i, r, li);
    }
}

/* cached path: buf holds exp(x - m) */
template <typename T>
SL_HD void thread_sce_grad_buf(const T *buf, const T *tr, T *gr, int64_t n, int64_t start,
                               int64_t step, const SceRow<T> &r, LabelInfo li)
{
    for (int64_t i = start; i < n; i += step)
        gr[i] = sce_grad(buf[i], tr ? tr + i : (const T *)0, i, r, li);
}

/* online and column paths: exp(x - m) recomputed (x not read for an ignored or bad sample) */
template <typename T>
SL_HD void thread_sce_grad(const T *x, const T *t, T *g, int64_t sx, int64_t n, int64_t start,
                           int64_t step, T m, const SceRow<T> &r, LabelInfo li)
{
    const bool live = !li.ignored && !li.bad;
    for (int64_t i = start; i < n; i += step) {
        const T e = live ? ex(x[i * sx] - m) : (T)0;
        g[i * sx] = sce_grad(e, t ? t + i * sx : (const T *)0, i, r, li);
    }
}

/* ---- cross_entropy on probabilities, mse ------------------------------------------------- */

/* sum of t * log(p) over this thread's elements; a term with t == 0 adds 0 even where p == 0 */
template <typename T>
SL_HD double thread_xent(const T *t, const T *p, int64_t n, int64_t start, int64_t step)
{
    double acc = 0.0;
    for (int64_t i = start; i < n; i += step) {
        const T tv = t[i];
        const T term = tv * lg(p[i]);
        acc += tv == (T)0 ? 0.0 : (double)term;
    }
    return acc;
}

/* elementwise maps: (t - p)^2, (p - t) * scale, -(t / p) * scale (0 where t == 0) */
enum { SL_MAP_SQDIFF = 0, SL_MAP_MSE_GRAD = 1, SL_MAP_XENT_GRAD = 2 };

template <typename T, int OP> SL_HD T map_elem(T t, T p, T scale)
{
    if (OP == SL_MAP_SQDIFF) {
        const T d = t - p;
        return d * d;
    }
    if (OP == SL_MAP_MSE_GRAD) return (p - t) * scale;
    const T v = -(t / p) * scale;
    return t == (T)0 ? (T)0 : v;
}

/* mse sums: a thread takes groups of V consecutive elements (one 16-byte vector when aligned);
 * the order of the additions is the same whether the group was loaded as a vector or not. */
template <typename T, int V>
SL_HD void group_sqdiff(const T (&tv)[V], const T (&pv)[V], int64_t q, int64_t n, double &acc)
{
#pragma unroll
    for (int u = 0; u < V; ++u) {
        if (q * V + u < n) {
            const T d = tv[u] - pv[u];
            acc += (double)(d * d);
        }
    }
}

}  // namespace fdl_sl

#endif
