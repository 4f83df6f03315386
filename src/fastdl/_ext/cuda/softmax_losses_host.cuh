/*
 * Host emulation of the kernels of softmax_losses.cu (included at its end): the
 * fdl_cuda_sl_host_* test shims. Each kernel's threads are run one after another between the
 * points where the kernel synchronises, calling the same per-thread functions
 * (softmax_losses_math.cuh) with the same arguments, and every shuffle or shared-memory
 * reduction is replayed in the kernel's order, so results match the device's up to the
 * rounding of exp/log (host libm against CUDA's). The launch geometry is the launchers' own
 * (make_plan and friends), including the per-block partial sums.
 */

namespace fdl_sl {
namespace emu {

/* xor butterfly over aligned groups of `width` lanes (group_allreduce) */
template <typename T, typename Op>
static void butterfly(std::vector<T> &v, int width, Op op)
{
    std::vector<T> w(v.size());
    for (int off = width / 2; off > 0; off >>= 1) {
        for (size_t i = 0; i < v.size(); ++i) w[i] = op(v[i], v[i ^ (size_t)off]);
        v.swap(w);
    }
}

/* block_allreduce over nt = v.size() threads (a multiple of 32) */
template <typename T, typename Op>
static T block_allreduce(std::vector<T> v, Op op, T identity)
{
    butterfly(v, 32, op);
    std::vector<T> red(32, identity);
    for (size_t w = 0; w * 32 < v.size(); ++w) red[w] = v[w * 32];
    butterfly(red, 32, op);
    return red[0];
}

/* col_allreduce over the TY = v.size() values of one column */
template <typename T, typename Op>
static T col_tree(std::vector<T> v, Op op)
{
    for (size_t stride = v.size() / 2; stride > 0; stride >>= 1)
        for (size_t ty = 0; ty < stride; ++ty) v[ty] = op(v[ty], v[ty + stride]);
    return v[0];
}

template <typename T, int E> struct Lane {
    T a[E];
};

template <typename T> static T fwd_coef(T s, int log) { return log ? lg(s) : (T)1 / s; }

/* ---- forward ---- */

template <typename T, int E>
static void fwd_rows(const T *x, T *y, int64_t rows, int n, int tpr, int log)
{
    std::vector<Lane<T, E> > v(tpr);
    std::vector<T> m(tpr), s(tpr);
    for (int64_t row = 0; row < rows; ++row) {
        for (int l = 0; l < tpr; ++l) m[l] = lane_load<T, E>(x + row * n, n, l, tpr, true, v[l].a);
        butterfly(m, tpr, OpMax());
        for (int l = 0; l < tpr; ++l) s[l] = lane_expsum<T, E>(v[l].a, n, l, tpr, m[l], !log);
        butterfly(s, tpr, OpSum());
        for (int l = 0; l < tpr; ++l)
            lane_write_fwd<T, E>(v[l].a, y + row * n, n, l, tpr, m[l], fwd_coef(s[l], log), log);
    }
}

template <typename T>
static void fwd_block(const T *x, T *y, int64_t rows, int64_t n, int nt, bool cached, int log)
{
    std::vector<T> buf(cached ? n : 0), a(nt);
    std::vector<Stat<T> > st(nt);
    double unused;
    for (int64_t row = 0; row < rows; ++row) {
        const T *xr = x + row * n;
        T *yr = y + row * n;
        if (cached) {
            for (int i = 0; i < nt; ++i)
                a[i] = thread_load_max<T>(xr, buf.data(), n, i, nt, false, unused);
            const T m = block_allreduce(a, OpMax(), ninf<T>());
            for (int i = 0; i < nt; ++i) a[i] = thread_expsum_buf<T>(buf.data(), n, i, nt, m, !log);
            const T s = block_allreduce(a, OpSum(), (T)0);
            for (int i = 0; i < nt; ++i)
                thread_write_buf<T>(buf.data(), yr, n, i, nt, m, fwd_coef(s, log), log);
        } else {
            for (int i = 0; i < nt; ++i) st[i] = thread_online<T>(xr, 1, n, i, nt, false, unused);
            const Stat<T> r = block_allreduce(st, OpMerge(), stat0<T>());
            for (int i = 0; i < nt; ++i)
                thread_write_fwd<T>(xr, 1, yr, 1, n, i, nt, r.m, fwd_coef(r.s, log), log);
        }
    }
}

template <typename T>
static void fwd_cols(const T *x, T *y, int64_t outer, int64_t n, int64_t inner, int ty_n, int log)
{
    std::vector<Stat<T> > st(ty_n);
    double unused;
    for (int64_t o = 0; o < outer; ++o) {
        for (int64_t i = 0; i < inner; ++i) {
            const int64_t base = o * n * inner + i;
            for (int ty = 0; ty < ty_n; ++ty)
                st[ty] = thread_online<T>(x + base, inner, n, ty, ty_n, false, unused);
            const Stat<T> r = col_tree(st, OpMerge());
            for (int ty = 0; ty < ty_n; ++ty)
                thread_write_fwd<T>(x + base, inner, y + base, inner, n, ty, ty_n, r.m,
                                    fwd_coef(r.s, log), log);
        }
    }
}

template <typename T>
static int fwd(const T *x, T *y, int64_t outer, int64_t n, int64_t inner, int log, int path)
{
    if (outer == 0 || n == 0 || inner == 0) return 0;
    const Plan p = make_plan(outer, n, inner, sizeof(T), OP_FWD, path);
    switch (p.path) {
    case FDL_SL_PATH_WARP:
        switch (p.e) {
        case 1: fwd_rows<T, 1>(x, y, outer, (int)n, p.tpr, log); break;
        case 2: fwd_rows<T, 2>(x, y, outer, (int)n, p.tpr, log); break;
        case 4: fwd_rows<T, 4>(x, y, outer, (int)n, p.tpr, log); break;
        case 8: fwd_rows<T, 8>(x, y, outer, (int)n, p.tpr, log); break;
        case 16: fwd_rows<T, 16>(x, y, outer, (int)n, p.tpr, log); break;
        case 32: fwd_rows<T, 32>(x, y, outer, (int)n, p.tpr, log); break;
        default: return (int)cudaErrorInvalidValue;
        }
        return 0;
    case FDL_SL_PATH_COLS: fwd_cols<T>(x, y, outer, n, inner, p.ty, log); return 0;
    default: fwd_block<T>(x, y, outer, n, p.threads, p.smem > 0, log); return 0;
    }
}

/* ---- backward ---- */

template <typename T, int E>
static void bwd_rows(const T *dy, const T *y, T *dx, int64_t rows, int n, int tpr, int log)
{
    std::vector<Lane<T, E> > dv(tpr), yv(tpr);
    std::vector<T> d(tpr);
    for (int64_t row = 0; row < rows; ++row) {
        const int64_t off = row * n;
        for (int l = 0; l < tpr; ++l)
            d[l] = lane_load_bwd<T, E>(dy + off, y + off, n, l, tpr, true, log, dv[l].a, yv[l].a);
        butterfly(d, tpr, OpSum());
        for (int l = 0; l < tpr; ++l)
            lane_write_bwd<T, E>(dv[l].a, yv[l].a, dx + off, n, l, tpr, d[l], log);
    }
}

template <typename T>
static int bwd(const T *dy, const T *y, T *dx, int64_t outer, int64_t n, int64_t inner, int log,
               int path)
{
    if (outer == 0 || n == 0 || inner == 0) return 0;
    const Plan p = make_plan(outer, n, inner, sizeof(T), OP_BWD, path);
    if (p.path == FDL_SL_PATH_WARP) {
        switch (p.e) {
        case 1: bwd_rows<T, 1>(dy, y, dx, outer, (int)n, p.tpr, log); break;
        case 2: bwd_rows<T, 2>(dy, y, dx, outer, (int)n, p.tpr, log); break;
        case 4: bwd_rows<T, 4>(dy, y, dx, outer, (int)n, p.tpr, log); break;
        case 8: bwd_rows<T, 8>(dy, y, dx, outer, (int)n, p.tpr, log); break;
        case 16: bwd_rows<T, 16>(dy, y, dx, outer, (int)n, p.tpr, log); break;
        case 32: bwd_rows<T, 32>(dy, y, dx, outer, (int)n, p.tpr, log); break;
        default: return (int)cudaErrorInvalidValue;
        }
        return 0;
    }
    const bool cols = p.path == FDL_SL_PATH_COLS;
    const int nt = cols ? p.ty : p.threads;
    const int64_t sx = cols ? inner : 1, lanes = cols ? inner : 1;
    std::vector<T> part(nt);
    for (int64_t o = 0; o < outer; ++o) {
        for (int64_t i = 0; i < lanes; ++i) {
            const int64_t base = o * n * (cols ? inner : 1) + i;
            for (int t = 0; t < nt; ++t)
                part[t] = thread_bwd_partial<T>(dy + base, y + base, sx, n, t, nt, log);
            const T d = cols ? col_tree(part, OpSum()) : block_allreduce(part, OpSum(), (T)0);
            for (int t = 0; t < nt; ++t)
                thread_write_bwd<T>(dy + base, y + base, dx + base, sx, n, t, nt, d, log);
        }
    }
    return 0;
}

/* ---- fused softmax cross-entropy ---- */

template <typename T> struct SceCtx {
    const T *x, *t;
    T *g, *loss;
    bool prob, sumx_needed;
    double gs, keep, smooth;
};

template <typename T> static SceCtx<T> sce_ctx(const fdl_cuda_sce_args *a)
{
    SceCtx<T> c;
    c.x = static_cast<const T *>(a->x);
    c.t = static_cast<const T *>(a->t);
    c.g = static_cast<T *>(a->grad);
    c.loss = static_cast<T *>(a->loss);
    c.prob = c.t != nullptr;
    c.sumx_needed = !c.prob && a->eps > 0.0;
    c.gs = 1.0;
    if (c.g) c.gs = a->count ? (*a->count > 0 ? 1.0 / (double)*a->count : 0.0) : a->gscale;
    c.keep = 1.0 - a->eps;
    c.smooth = a->n > 0 ? a->eps / (double)a->n : 0.0;
    return c;
}

/* one row of k_sce_rows, all its lanes; returns the loss lane 0 holds */
template <typename T, int E>
static double sce_row_lanes(const fdl_cuda_sce_args *a, const SceCtx<T> &c, int64_t row,
                            bool valid, int tpr)
{
    const int n = (int)a->n;
    const int64_t r = valid ? row : 0;
    const LabelInfo li = label_info(a->label, r, n, a->has_ignore, a->ignore, valid);
    const bool live = valid && !li.ignored && !li.bad;
    const T *xr = c.x + r * n, *tr = c.prob ? c.t + r * n : nullptr;
    std::vector<Lane<T, E> > v(tpr);
    std::vector<T> m(tpr), s(tpr);
    std::vector<double> sumx(tpr, 0.0), sa(tpr), st(tpr);
    for (int l = 0; l < tpr; ++l) {
        m[l] = lane_load<T, E>(xr, n, l, tpr, live, v[l].a);
        if (c.sumx_needed) sumx[l] = lane_sum_d<T, E>(v[l].a, n, l, tpr, live);
    }
    butterfly(m, tpr, OpMax());
    if (c.sumx_needed) butterfly(sumx, tpr, OpSum());
    for (int l = 0; l < tpr; ++l) {
        const SceSums<T> z = lane_sce_sums<T, E>(v[l].a, tr, n, l, tpr, m[l], c.keep, c.smooth,
                                                 c.g != nullptr, live);
        s[l] = z.s;
        sa[l] = z.sa;
        st[l] = z.st;
    }
    butterfly(s, tpr, OpSum());
    if (c.prob) {
        butterfly(sa, tpr, OpSum());
        butterfly(st, tpr, OpSum());
    }
    const double xk = live && !c.prob ? (double)xr[li.k] : 0.0;
    double loss0 = 0.0;
    for (int l = 0; l < tpr; ++l) {
        SceSums<T> z;
        z.s = s[l];
        z.sa = c.prob ? sa[l] : 0.0;
        z.st = c.prob ? st[l] : 0.0;
        const SceRow<T> rr = sce_row<T>(c.prob, a->eps, n, c.gs, m[l], z, xk, sumx[l], li);
        if (valid && c.g) lane_sce_grad<T, E>(v[l].a, tr, c.g + r * n, n, l, tpr, rr, li);
        if (l == 0) loss0 = rr.loss;
    }
    if (valid && c.loss) c.loss[row] = (T)loss0;
    return valid ? loss0 : 0.0;
}

template <typename T, int E>
static void sce_rows(const fdl_cuda_sce_args *a, int tpr, int64_t grid)
{
    const SceCtx<T> c = sce_ctx<T>(a);
    const int rpb = WARP_BLOCK / tpr;
    const int64_t nblk = cdiv(a->outer, rpb);
    std::vector<double> rowloss(rpb);
    for (int64_t bi = 0; bi < grid; ++bi) {
        double acc = 0.0;
        for (int64_t b = bi; b < nblk; b += grid) {
            for (int grp = 0; grp < rpb; ++grp) {
                const int64_t row = b * rpb + grp;
                rowloss[grp] = sce_row_lanes<T, E>(a, c, row, row < a->outer, tpr);
            }
            for (int j = 0; j < rpb; ++j) acc += rowloss[j];
        }
        if (a->partials) a->partials[bi] = acc;
    }
}

template <typename T>
static void sce_block(const fdl_cuda_sce_args *a, int nt, bool cached, int64_t grid)
{
    const SceCtx<T> c = sce_ctx<T>(a);
    const int64_t n = a->n;
    std::vector<T> buf(cached ? n : 0), mt(nt), stt(nt);
    std::vector<double> sx(nt), sa(nt), st(nt);
    std::vector<Stat<T> > on(nt);
    for (int64_t bi = 0; bi < grid; ++bi) {
        double acc = 0.0;
        for (int64_t row = bi; row < a->outer; row += grid) {
            const LabelInfo li = label_info(a->label, row, n, a->has_ignore, a->ignore, true);
            const bool live = !li.ignored && !li.bad;
            const T *xr = c.x + row * n, *tr = c.prob ? c.t + row * n : nullptr;
            T *gr = c.g ? c.g + row * n : nullptr;
            T m = ninf<T>();
            double sumx = 0.0;
            SceSums<T> z;
            z.s = (T)0;
            z.sa = z.st = 0.0;
            if (live) {
                std::fill(sx.begin(), sx.end(), 0.0);
                if (cached) {
                    for (int i = 0; i < nt; ++i)
                        mt[i] = thread_load_max<T>(xr, buf.data(), n, i, nt,
                                                   c.sumx_needed, sx[i]);
                    m = block_allreduce(mt, OpMax(), ninf<T>());
                    for (int i = 0; i < nt; ++i) {
                        const SceSums<T> q = thread_sce_sums_buf<T>(
                            buf.data(), tr, n, i, nt, m, c.keep, c.smooth, gr != nullptr);
                        stt[i] = q.s;
                        sa[i] = q.sa;
                        st[i] = q.st;
                    }
                    z.s = block_allreduce(stt, OpSum(), (T)0);
                } else {
                    for (int i = 0; i < nt; ++i)
                        on[i] = thread_online<T>(xr, 1, n, i, nt, c.sumx_needed, sx[i]);
                    const Stat<T> q = block_allreduce(on, OpMerge(), stat0<T>());
                    m = q.m;
                    for (int i = 0; i < nt; ++i) {
                        sa[i] = st[i] = 0.0;
                        if (c.prob) {
                            const SceSums<T> w = thread_prob_sums<T>(xr, tr, 1, n, i, nt, m,
                                                                     c.keep, c.smooth);
                            sa[i] = w.sa;
                            st[i] = w.st;
                        }
                    }
                    z.s = q.s;
                }
                if (c.sumx_needed) sumx = block_allreduce(sx, OpSum(), 0.0);
                if (c.prob) {
                    z.sa = block_allreduce(sa, OpSum(), 0.0);
                    z.st = block_allreduce(st, OpSum(), 0.0);
                }
            }
            const double xk = live && !c.prob ? (double)xr[li.k] : 0.0;
            const SceRow<T> rr = sce_row<T>(c.prob, a->eps, n, c.gs, m, z, xk, sumx, li);
            if (gr) {
                for (int i = 0; i < nt; ++i) {
                    if (cached && live)
                        thread_sce_grad_buf<T>(buf.data(), tr, gr, n, i, nt, rr, li);
                    else
                        thread_sce_grad<T>(xr, tr, gr, 1, n, i, nt, m, rr, li);
                }
            }
            if (c.loss) c.loss[row] = (T)rr.loss;
            acc += rr.loss;
        }
        if (a->partials) a->partials[bi] = acc;
    }
}

template <typename T>
static void sce_cols(const fdl_cuda_sce_args *a, int tx_n, int ty_n, int64_t grid)
{
    const SceCtx<T> c = sce_ctx<T>(a);
    const int64_t n = a->n, inner = a->inner, tpo = cdiv(inner, tx_n), ntiles = a->outer * tpo;
    std::vector<Stat<T> > on(ty_n);
    std::vector<double> sx(ty_n), sa(ty_n), st(ty_n), colloss(tx_n);
    for (int64_t bi = 0; bi < grid; ++bi) {
        double acc = 0.0;
        for (int64_t tile = bi; tile < ntiles; tile += grid) {
            for (int tx = 0; tx < tx_n; ++tx) {
                const int64_t o = tile / tpo, i = (tile % tpo) * tx_n + tx;
                const bool valid = i < inner;
                const int64_t sample = o * inner + (valid ? i : 0);
                const int64_t base = o * n * inner + (valid ? i : 0);
                const LabelInfo li = label_info(a->label, sample, n, a->has_ignore, a->ignore,
                                                valid);
                const bool live = valid && !li.ignored && !li.bad;
                const T *xc = c.x + base, *tc = c.prob ? c.t + base : nullptr;
                for (int ty = 0; ty < ty_n; ++ty) {
                    sx[ty] = 0.0;
                    on[ty] = live ? thread_online<T>(xc, inner, n, ty, ty_n,
                                                     c.sumx_needed, sx[ty])
                                  : stat0<T>();
                }
                const Stat<T> q = col_tree(on, OpMerge());
                const double sumx = c.sumx_needed ? col_tree(sx, OpSum()) : 0.0;
                SceSums<T> z;
                z.s = q.s;
                z.sa = z.st = 0.0;
                if (c.prob) {
                    for (int ty = 0; ty < ty_n; ++ty) {
                        sa[ty] = st[ty] = 0.0;
                        if (live) {
                            const SceSums<T> w = thread_prob_sums<T>(xc, tc, inner, n, ty, ty_n,
                                                                     q.m, c.keep, c.smooth);
                            sa[ty] = w.sa;
                            st[ty] = w.st;
                        }
                    }
                    z.sa = col_tree(sa, OpSum());
                    z.st = col_tree(st, OpSum());
                }
                const double xk = live && !c.prob ? (double)xc[li.k * inner] : 0.0;
                const SceRow<T> rr = sce_row<T>(c.prob, a->eps, n, c.gs, q.m, z, xk, sumx, li);
                if (valid && c.g)
                    for (int ty = 0; ty < ty_n; ++ty)
                        thread_sce_grad<T>(xc, tc, c.g + base, inner, n, ty, ty_n, q.m, rr, li);
                if (valid && c.loss) c.loss[sample] = (T)rr.loss;
                colloss[tx] = valid ? rr.loss : 0.0;
            }
            for (int j = 0; j < tx_n; ++j) acc += colloss[j];
        }
        if (a->partials) a->partials[bi] = acc;
    }
}

template <typename T>
static int sce(const fdl_cuda_sce_args *a)
{
    if (a->outer == 0 || a->inner == 0) return 0;
    const Plan p = make_plan(a->outer, a->n, a->inner, sizeof(T), OP_SCE, a->path);
    switch (p.path) {
    case FDL_SL_PATH_WARP:
        switch (p.e) {
        case 1: sce_rows<T, 1>(a, p.tpr, p.blocks); break;
        case 2: sce_rows<T, 2>(a, p.tpr, p.blocks); break;
        case 4: sce_rows<T, 4>(a, p.tpr, p.blocks); break;
        case 8: sce_rows<T, 8>(a, p.tpr, p.blocks); break;
        case 16: sce_rows<T, 16>(a, p.tpr, p.blocks); break;
        case 32: sce_rows<T, 32>(a, p.tpr, p.blocks); break;
        default: return (int)cudaErrorInvalidValue;
        }
        return 0;
    case FDL_SL_PATH_COLS: sce_cols<T>(a, p.tx, p.ty, p.blocks); return 0;
    default: sce_block<T>(a, p.threads, p.smem > 0, p.blocks); return 0;
    }
}

/* ---- the final sum, cross_entropy, mse ---- */

template <typename T>
static void finish(const double *p, int64_t np, int mean, double count, T *out)
{
    std::vector<double> acc(FINISH_BLOCK, 0.0);
    for (int t = 0; t < FINISH_BLOCK; ++t)
        for (int64_t i = t; i < np; i += FINISH_BLOCK) acc[t] += p[i];
    double total = block_allreduce(acc, OpSum(), 0.0);
    if (mean) total /= count;
    out[0] = (T)total;
}

template <typename T>
static void xent(const T *t, const T *p, T *loss, double *partials, int64_t rows, int64_t n)
{
    if (rows == 0) return;
    const XentPlan xp = xent_plan(rows, n);
    const int tpr = xp.tpr ? xp.tpr : XENT_BLOCK;
    const int rpb = xp.tpr ? WARP_BLOCK / xp.tpr : 1;
    const int64_t nblk = cdiv(rows, rpb);
    std::vector<double> s(tpr);
    for (int64_t bi = 0; bi < xp.blocks; ++bi) {
        double acc = 0.0;
        for (int64_t b = bi; b < nblk; b += xp.blocks) {
            for (int grp = 0; grp < rpb; ++grp) {
                const int64_t row = b * rpb + grp;
                if (row >= rows) continue;   /* adds 0.0: acc is unchanged */
                for (int l = 0; l < tpr; ++l)
                    s[l] = thread_xent<T>(t + row * n, p + row * n, n, l, tpr);
                double total;
                if (xp.tpr) {
                    butterfly(s, tpr, OpSum());
                    total = s[0];
                } else {
                    total = block_allreduce(s, OpSum(), 0.0);
                }
                if (loss) loss[row] = (T)(-total);
                acc += -total;
            }
        }
        if (partials) partials[bi] = acc;
    }
}

template <typename T>
static void mse_sum(const T *t, const T *p, double *partials, int64_t n)
{
    constexpr int V = 16 / sizeof(T);
    const int64_t grid = mse_blocks(n, sizeof(T)), groups = cdiv(n, V);
    std::vector<double> acc(MSE_BLOCK);
    for (int64_t bi = 0; bi < grid; ++bi) {
        for (int th = 0; th < MSE_BLOCK; ++th) {
            acc[th] = 0.0;
            for (int64_t q = bi * MSE_BLOCK + th; q < groups; q += grid * MSE_BLOCK) {
                T tv[V], pv[V];
                for (int u = 0; u < V; ++u) {
                    tv[u] = q * V + u < n ? t[q * V + u] : (T)0;
                    pv[u] = q * V + u < n ? p[q * V + u] : (T)0;
                }
                group_sqdiff<T, V>(tv, pv, q, n, acc[th]);
            }
        }
        partials[bi] = block_allreduce(acc, OpSum(), 0.0);
    }
}

template <typename T>
static int map(const T *t, const T *p, T *out, int64_t n, int op, T scale)
{
    for (int64_t i = 0; i < n; ++i) {
        switch (op) {
        case SL_MAP_SQDIFF: out[i] = map_elem<T, SL_MAP_SQDIFF>(t[i], p[i], scale); break;
        case SL_MAP_MSE_GRAD: out[i] = map_elem<T, SL_MAP_MSE_GRAD>(t[i], p[i], scale); break;
        case SL_MAP_XENT_GRAD: out[i] = map_elem<T, SL_MAP_XENT_GRAD>(t[i], p[i], scale); break;
        default: return (int)cudaErrorInvalidValue;
        }
    }
    return 0;
}

}  // namespace emu
}  // namespace fdl_sl

extern "C" int fdl_cuda_sl_host_softmax(const void *x, void *y, int64_t outer, int64_t n,
                                        int64_t inner, int dtype, int log, int path)
{
    return SL_DISPATCH(dtype,
        emu::fwd<float>((const float *)x, (float *)y, outer, n, inner, log, path),
        emu::fwd<double>((const double *)x, (double *)y, outer, n, inner, log, path));
}

extern "C" int fdl_cuda_sl_host_softmax_backward(const void *dy, const void *y, void *dx,
                                                 int64_t outer, int64_t n, int64_t inner,
                                                 int dtype, int log, int path)
{
    return SL_DISPATCH(dtype,
        emu::bwd<float>((const float *)dy, (const float *)y, (float *)dx, outer, n, inner, log,
                        path),
        emu::bwd<double>((const double *)dy, (const double *)y, (double *)dx, outer, n, inner,
                         log, path));
}

extern "C" int fdl_cuda_sl_host_softmax_cross_entropy(const fdl_cuda_sce_args *a)
{
    return SL_DISPATCH(a->dtype, emu::sce<float>(a), emu::sce<double>(a));
}

extern "C" int fdl_cuda_sl_host_finish(const double *partials, int64_t np, int mean,
                                       double count, void *out, int dtype)
{
    if (dtype == FDL_CUDA_F32)
        emu::finish<float>(partials, np, mean, count, (float *)out);
    else if (dtype == FDL_CUDA_F64)
        emu::finish<double>(partials, np, mean, count, (double *)out);
    else
        return (int)cudaErrorInvalidValue;
    return 0;
}

extern "C" int fdl_cuda_sl_host_cross_entropy(const void *t, const void *p, void *loss,
                                              double *partials, int64_t rows, int64_t n,
                                              int dtype)
{
    if (dtype == FDL_CUDA_F32)
        emu::xent<float>((const float *)t, (const float *)p, (float *)loss, partials, rows, n);
    else if (dtype == FDL_CUDA_F64)
        emu::xent<double>((const double *)t, (const double *)p, (double *)loss, partials, rows, n);
    else
        return (int)cudaErrorInvalidValue;
    return 0;
}

extern "C" int fdl_cuda_sl_host_mse_sum(const void *t, const void *p, double *partials,
                                        int64_t n, int dtype)
{
    if (dtype == FDL_CUDA_F32)
        emu::mse_sum<float>((const float *)t, (const float *)p, partials, n);
    else if (dtype == FDL_CUDA_F64)
        emu::mse_sum<double>((const double *)t, (const double *)p, partials, n);
    else
        return (int)cudaErrorInvalidValue;
    return 0;
}

extern "C" int fdl_cuda_sl_host_map(const void *t, const void *p, void *out, int64_t n, int op,
                                    double scale, int dtype)
{
    return SL_DISPATCH(dtype,
        emu::map<float>((const float *)t, (const float *)p, (float *)out, n, op, (float)scale),
        emu::map<double>((const double *)t, (const double *)p, (double *)out, n, op, scale));
}
