/*
 * Inner loops of fastdl.optim (sgd, momentum, adam, clip_grad_norm_) and of the L1/L2
 * penalties, float32 and float64.
 *
 * Every loop walks one run of n elements of each operand, operand k at element stride s_k.
 * A run whose strides are all 1 takes the contiguous path (the same body with literal unit
 * strides, so it vectorises); any other run takes the strided path, same formulas.
 *
 * Formulas, in the array's dtype T, in exactly this order (the constants are computed once
 * per call in double and rounded to T, as NumPy rounds a Python float against a T array):
 *   weight decay, L2 (wd > 0):  d = g + wd * w           (else d = g)
 *   AdamW (decoupled):          w = w * (1 - lr * wd)     before the update
 *   sgd:          w = w - lr * d
 *   sgd momentum: b = mu * b + d;  w = w - lr * b         (PyTorch's SGD, dampening 0)
 *   momentum:     v = beta * v - lr * d;  w = w + v       (cheat sheet)
 *   adam:         m = b1 * m + (1 - b1) * d
 *                 v = b2 * v + (1 - b2) * d * d
 *                 w = w - lr * (m * ibc1) / (sqrt(v * ibc2) + eps)
 *                 with ibc = 1 / (1 - beta^t) computed in double and rounded to T once
 * The compiler may contract a product and a sum into one FMA (GCC's default): results then
 * differ from the NumPy reference by rounding, never by more. Each element is computed on
 * its own, so results do not depend on the thread count or on how runs are cut.
 *
 * Sums (the clip norm, the penalties) accumulate in double within a work item; the caller
 * combines the items pairwise in an order fixed by their count (fdl_pairwise_sum of softmax.h).
 *
 * Adam multiplies by the reciprocal bias corrections where the cheat sheet divides by them
 * (m / bc1, v / bc2): one rounding of difference per factor, and measured on Zen 4 (8192
 * float32 in L1, one thread) 1.2 cycles per element against 4.2 with the three divisions,
 * which made the 10M step compute-bound (vdivps zmm issues once per ~6 cycles). What is left
 * is one IEEE division and one sqrt (the builtin: vsqrtps/vsqrtpd with -fno-math-errno).
 */
#ifndef FASTDL_OPTIM_H
#define FASTDL_OPTIM_H

#include <stddef.h>
#include "config.h"
#include "vmath.h"

#define FDL_OPT_CHUNK 16384   /* elements per work item: 64 KiB per float32 operand */

/* Hyper-parameters of one call, in double; the kernels round them to T. */
typedef struct {
    double lr, wd, mu;           /* sgd (mu: momentum), momentum (mu: beta) */
    double b1, b2, bc1, bc2, eps;
    double decay;                /* 1 - lr * wd (AdamW) */
    int mode;                    /* 0: no decay, 1: L2 into the gradient, 2: decoupled */
    int nesterov;                /* reserved, always 0 */
} fdl_opt_hp;

#define FDL_OPT_DEFINE(T, SUF, SQRT)                                                          \
FDL_INLINE void fdl_sgd_body_##SUF(T *FDL_RESTRICT w, ptrdiff_t sw, const T *FDL_RESTRICT g,  \
                                   ptrdiff_t sg, ptrdiff_t n, T lr, T wd, int l2)             \
{                                                                                             \
    if (l2) {                                                                                 \
        for (ptrdiff_t i = 0; i < n; ++i) {                                                   \
            T d = g[i * sg] + wd * w[i * sw];                                                 \
            w[i * sw] = w[i * sw] - lr * d;                                                   \
        }                                                                                     \
    } else {                                                                                  \
        for (ptrdiff_t i = 0; i < n; ++i) w[i * sw] = w[i * sw] - lr * g[i * sg];             \
    }                                                                                         \
}                                                                                             \
FDL_DISPATCH static void fdl_sgd_##SUF(T *w, ptrdiff_t sw, const T *g, ptrdiff_t sg,          \
                                       ptrdiff_t n, const fdl_opt_hp *h)                      \
{                                                                                             \
    T lr = (T)h->lr, wd = (T)h->wd;                                                           \
    int l2 = h->mode == 1;                                                                    \
    if (sw == 1 && sg == 1) {                                                                 \
        if (l2) fdl_sgd_body_##SUF(w, 1, g, 1, n, lr, wd, 1);                                 \
        else fdl_sgd_body_##SUF(w, 1, g, 1, n, lr, wd, 0);                                    \
    } else {                                                                                  \
        fdl_sgd_body_##SUF(w, sw, g, sg, n, lr, wd, l2);                                      \
    }                                                                                         \
}                                                                                             \
                                                                                              \
FDL_INLINE void fdl_sgdm_body_##SUF(T *FDL_RESTRICT w, ptrdiff_t sw, const T *FDL_RESTRICT g, \
                                    ptrdiff_t sg, T *FDL_RESTRICT b, ptrdiff_t sb,            \
                                    ptrdiff_t n, T lr, T wd, T mu, int l2)                    \
{                                                                                             \
    for (ptrdiff_t i = 0; i < n; ++i) {                                                       \
        T d = l2 ? g[i * sg] + wd * w[i * sw] : g[i * sg];                                    \
        T bb = mu * b[i * sb] + d;                                                            \
        b[i * sb] = bb;                                                                       \
        w[i * sw] = w[i * sw] - lr * bb;                                                      \
    }                                                                                         \
}                                                                                             \
FDL_DISPATCH static void fdl_sgdm_##SUF(T *w, ptrdiff_t sw, const T *g, ptrdiff_t sg,         \
                                        T *b, ptrdiff_t sb, ptrdiff_t n, const fdl_opt_hp *h) \
{                                                                                             \
    T lr = (T)h->lr, wd = (T)h->wd, mu = (T)h->mu;                                            \
    int l2 = h->mode == 1;                                                                    \
    if (sw == 1 && sg == 1 && sb == 1) {                                                      \
        if (l2) fdl_sgdm_body_##SUF(w, 1, g, 1, b, 1, n, lr, wd, mu, 1);                      \
        else fdl_sgdm_body_##SUF(w, 1, g, 1, b, 1, n, lr, wd, mu, 0);                         \
    } else {                                                                                  \
        fdl_sgdm_body_##SUF(w, sw, g, sg, b, sb, n, lr, wd, mu, l2);                          \
    }                                                                                         \
}                                                                                             \
                                                                                              \
FDL_INLINE void fdl_mom_body_##SUF(T *FDL_RESTRICT w, ptrdiff_t sw, const T *FDL_RESTRICT g,  \
                                   ptrdiff_t sg, T *FDL_RESTRICT v, ptrdiff_t sv,             \
                                   ptrdiff_t n, T lr, T wd, T beta, int l2)                   \
{                                                                                             \
    for (ptrdiff_t i = 0; i < n; ++i) {                                                       \
        T d = l2 ? g[i * sg] + wd * w[i * sw] : g[i * sg];                                    \
        T vv = beta * v[i * sv] - lr * d;                                                     \
        v[i * sv] = vv;                                                                       \
        w[i * sw] = w[i * sw] + vv;                                                           \
    }                                                                                         \
}                                                                                             \
FDL_DISPATCH static void fdl_momentum_##SUF(T *w, ptrdiff_t sw, const T *g, ptrdiff_t sg,     \
                                            T *v, ptrdiff_t sv, ptrdiff_t n,                  \
                                            const fdl_opt_hp *h)                              \
{                                                                                             \
    T lr = (T)h->lr, wd = (T)h->wd, beta = (T)h->mu;                                          \
    int l2 = h->mode == 1;                                                                    \
    if (sw == 1 && sg == 1 && sv == 1) {                                                      \
        if (l2) fdl_mom_body_##SUF(w, 1, g, 1, v, 1, n, lr, wd, beta, 1);                     \
        else fdl_mom_body_##SUF(w, 1, g, 1, v, 1, n, lr, wd, beta, 0);                        \
    } else {                                                                                  \
        fdl_mom_body_##SUF(w, sw, g, sg, v, sv, n, lr, wd, beta, l2);                         \
    }                                                                                         \
}                                                                                             \
                                                                                              \
FDL_INLINE void fdl_adam_body_##SUF(T *FDL_RESTRICT w, ptrdiff_t sw, const T *FDL_RESTRICT g, \
                                    ptrdiff_t sg, T *FDL_RESTRICT m, ptrdiff_t sm,            \
                                    T *FDL_RESTRICT v, ptrdiff_t sv, ptrdiff_t n,             \
                                    const fdl_opt_hp *h, int mode)                            \
{                                                                                             \
    const T lr = (T)h->lr, wd = (T)h->wd, b1 = (T)h->b1, b2 = (T)h->b2;                       \
    const T omb1 = (T)(1.0 - h->b1), omb2 = (T)(1.0 - h->b2);                                 \
    const T ibc1 = (T)(1.0 / h->bc1), ibc2 = (T)(1.0 / h->bc2);                               \
    const T eps = (T)h->eps, decay = (T)h->decay;                                             \
    for (ptrdiff_t i = 0; i < n; ++i) {                                                       \
        T ww = w[i * sw];                                                                     \
        T d = g[i * sg];                                                                      \
        if (mode == 1) d = d + wd * ww;                                                       \
        if (mode == 2) ww = ww * decay;                                                       \
        T mm = b1 * m[i * sm] + omb1 * d;                                                     \
        T vv = b2 * v[i * sv] + omb2 * d * d;                                                 \
        m[i * sm] = mm;                                                                       \
        v[i * sv] = vv;                                                                       \
        w[i * sw] = ww - lr * (mm * ibc1) / (SQRT(vv * ibc2) + eps);                          \
    }                                                                                         \
}                                                                                             \
FDL_DISPATCH static void fdl_adam_##SUF(T *w, ptrdiff_t sw, const T *g, ptrdiff_t sg,         \
                                        T *m, ptrdiff_t sm, T *v, ptrdiff_t sv, ptrdiff_t n,  \
                                        const fdl_opt_hp *h)                                  \
{                                                                                             \
    if (sw == 1 && sg == 1 && sm == 1 && sv == 1) {                                           \
        if (h->mode == 1) fdl_adam_body_##SUF(w, 1, g, 1, m, 1, v, 1, n, h, 1);               \
        else if (h->mode == 2) fdl_adam_body_##SUF(w, 1, g, 1, m, 1, v, 1, n, h, 2);          \
        else fdl_adam_body_##SUF(w, 1, g, 1, m, 1, v, 1, n, h, 0);                            \
    } else {                                                                                  \
        fdl_adam_body_##SUF(w, sw, g, sg, m, sm, v, sv, n, h, h->mode);                       \
    }                                                                                         \
}                                                                                             \
                                                                                              \
/* x = x * c in place (clip_grad_norm_), or out = c * x (l2_penalty_grad). No restrict:     \
   x and out may be the same run. */                                                          \
FDL_DISPATCH static void fdl_scale_##SUF(T *out, ptrdiff_t so, const T *x, ptrdiff_t sx,      \
                                         ptrdiff_t n, double c)                               \
{                                                                                             \
    const T cc = (T)c;                                                                        \
    if (so == 1 && sx == 1) {                                                                 \
        for (ptrdiff_t i = 0; i < n; ++i) out[i] = cc * x[i];                                 \
    } else {                                                                                  \
        for (ptrdiff_t i = 0; i < n; ++i) out[i * so] = cc * x[i * sx];                       \
    }                                                                                         \
}                                                                                             \
                                                                                              \
/* out = lam * sign(x): sign(0) = 0, sign(NaN) = NaN, as np.sign. */                          \
FDL_INLINE void fdl_l1g_body_##SUF(T *FDL_RESTRICT out, ptrdiff_t so,                         \
                                   const T *FDL_RESTRICT x, ptrdiff_t sx, ptrdiff_t n, T lam) \
{                                                                                             \
    for (ptrdiff_t i = 0; i < n; ++i) {                                                       \
        T xx = x[i * sx];                                                                     \
        T s = FDL_OPT_SEL_##SUF(xx > 0, (T)1, FDL_OPT_SEL_##SUF(xx < 0, (T)-1, xx * (T)0));   \
        out[i * so] = lam * s;                                                                \
    }                                                                                         \
}                                                                                             \
FDL_DISPATCH static void fdl_l1grad_##SUF(T *out, ptrdiff_t so, const T *x, ptrdiff_t sx,     \
                                          ptrdiff_t n, double lam)                            \
{                                                                                             \
    if (so == 1 && sx == 1) fdl_l1g_body_##SUF(out, 1, x, 1, n, (T)lam);                      \
    else fdl_l1g_body_##SUF(out, so, x, sx, n, (T)lam);                                       \
}                                                                                             \
                                                                                              \
/* sum(x * x) and sum(|x|) in double over a run (lane-parallel accumulation). */              \
FDL_INLINE double fdl_sumsq_body_##SUF(const T *x, ptrdiff_t sx, ptrdiff_t n)                 \
{                                                                                             \
    double s = 0.0;                                                                           \
    _Pragma("omp simd reduction(+:s)")                                                        \
    for (ptrdiff_t i = 0; i < n; ++i) { double d = (double)x[i * sx]; s += d * d; }           \
    return s;                                                                                 \
}                                                                                             \
FDL_DISPATCH static double fdl_sumsq_##SUF(const T *x, ptrdiff_t sx, ptrdiff_t n)             \
{                                                                                             \
    return sx == 1 ? fdl_sumsq_body_##SUF(x, 1, n) : fdl_sumsq_body_##SUF(x, sx, n);          \
}                                                                                             \
FDL_INLINE double fdl_sumabs_body_##SUF(const T *x, ptrdiff_t sx, ptrdiff_t n)                \
{                                                                                             \
    double s = 0.0;                                                                           \
    _Pragma("omp simd reduction(+:s)")                                                        \
    for (ptrdiff_t i = 0; i < n; ++i) { double d = (double)x[i * sx]; s += FDL_OPT_ABS(d); }  \
    return s;                                                                                 \
}                                                                                             \
FDL_DISPATCH static double fdl_sumabs_##SUF(const T *x, ptrdiff_t sx, ptrdiff_t n)            \
{                                                                                             \
    return sx == 1 ? fdl_sumabs_body_##SUF(x, 1, n) : fdl_sumabs_body_##SUF(x, sx, n);       \
}

#define FDL_OPT_SEL_f32(c, a, b) fdl_selectf((c), (a), (b))
#define FDL_OPT_SEL_f64(c, a, b) fdl_select((c), (a), (b))
#define FDL_OPT_ABS(d) __builtin_fabs(d)

FDL_OPT_DEFINE(float, f32, __builtin_sqrtf)
FDL_OPT_DEFINE(double, f64, __builtin_sqrt)

#endif
