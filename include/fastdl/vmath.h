/*
 * Vector math for fastdl's inner loops: exp, log, tanh, erf (+ expm1, erfc), float32 and float64.
 *
 * Every function is `static inline` (always_inline), branch-free and free of libm calls, so a
 * plain loop over a contiguous block, `for (i...) y[i] = fdl_expf(x[i]);`, is vectorised by GCC
 * 12 with -O3 -fno-math-errno (no -ffast-math: NaN, inf and signed zeros stay IEEE) in every
 * FDL_DISPATCH clone: 16 floats / 8 doubles per zmm in x86-64-v4, 8 / 4 per ymm in x86-64-v3,
 * 4 floats per xmm in the SSE2 baseline (float64 stays scalar there: GCC 12 cannot vectorise a
 * 64-bit select before SSE4.1). float32 is computed in float32, at the full float SIMD width.
 * A loop containing these calls and selects of its own must write the selects as fdl_selectf /
 * fdl_select (below), not as `c ? a : b` on floating-point values, or only the AVX-512 clone
 * gets vectorised (see fdl_selectf).
 *
 * API (stable; the implementation behind it may change):
 *   float  fdl_expf(float x);   double fdl_exp(double x);
 *   float  fdl_logf(float x);   double fdl_log(double x);
 *   float  fdl_tanhf(float x);  double fdl_tanh(double x);
 *   float  fdl_erff(float x);   double fdl_erf(double x);
 * Helpers, also public:
 *   float  fdl_expm1f(float x);  double fdl_expm1(double x);   e^x - 1, accurate near 0
 *   float  fdl_erfcf(float x);   double fdl_erfc(double x);    1 - erf(x), relatively accurate
 *                                 down to the denormals (GELU's left tail: 0.5 x erfc(-x/sqrt2))
 *   float  fdl_selectf(int c, float a, float b);  double fdl_select(int c, double a, double b);
 *                                 c ? a : b as a bitwise blend (vectorises in every clone)
 *   void   fdl_{exp,log,tanh,erf,erfc,expm1}_array_{f32,f64}(const T *x, T *y, ptrdiff_t n);
 *                                 y[i] = f(x[i]), i < n, FDL_DISPATCH'ed; x, y must not overlap
 * Names fdl_vm_* are internal.
 *
 * Methods (coefficients: minimax fits by Remez exchange in 50-digit arithmetic with mpmath; for
 * float32 each coefficient was rounded to float in turn and the remaining ones refitted, except
 * erfc's, rounded directly):
 *   exp    x = k ln2 + r + rlo, |r| <= ln2/2 (Cody-Waite: k ln2_hi is exact, rlo is the rounding
 *          error of r); e^x = 2^k (1 + r + (r^2 Q(r) + rlo)), Q of degree 4 (float) / 9 (double).
 *          2^k is built in the exponent bits as 2^floor(k/2) * 2^(k - floor(k/2)), both normal,
 *          so overflow, underflow and gradual underflow come out of the two multiplications.
 *   expm1  the same reduction; e^x - 1 = 2 (((2^(k-1) - 1/2) + 2^(k-1) r) + 2^(k-1) (r^2 Q + rlo))
 *          with Q fitted for the relative error of e^r - 1; |x| below 2^-24 (2^-54) returns x.
 *   log    x = 2^e m, m in [sqrt(1/2), sqrt(2)) (denormals first scaled by 2^23 / 2^54), f = m - 1
 *          (exact), s = f / (2 + f), log m = f - f^2/2 + s (f^2/2 + R(s^2)) (fdlibm's scheme, own
 *          fit), R of degree 4 (float) / 7 (double); plus e ln2 in two parts.
 *   tanh   sign(x) tanh|x|, |x| clamped to 9.5 (20), where tanh rounds to 1.
 *          float:  |x| < 0.8: x + x^3 P(x^2), P of degree 5; above: 1 - 2 / (e^(2|x|) + 1).
 *          double: u = expm1(2|x|); |x| < 0.625: u / (u + 2), the quotient corrected for the
 *          rounding of u + 2 (TwoSum); above: 1 - 2 / (u + 2). (Tiny x gives x exactly.)
 *   erf    sign(x) erf|x|, |x| clamped to 4 (6), where erf rounds to 1.
 *          |x| < 1: x + x Q(x^2), Q of degree 6 (float) / 12 (double).
 *          |x| >= 1: 1 - e^(-x^2) P(v), v = (|x| - 2) / (|x| + 2), P of degree 5 / 12 (erfc(x)
 *          e^(x^2) is a smooth function of v); the rounding of x^2 costs at most ~0.16 ULP.
 *   erfc   |x| < 0.8: 1 -+ erf|x| (erf's polynomial above; erfc(0.8) > 1/4, so 1 - erf loses
 *          little). Above: erfc|x| = e^(-x^2) P(v) / (|x| + L), v = (|x| - L) / (|x| + L), L = 2
 *          (float) / 4 (double), P of degree 9 / 21 fitted for relative error, x^2 = hi + lo
 *          exactly (hi the square of x cut to 12 / 26 bits) so that e^(-x^2) stays relatively
 *          accurate where x^2 is large; erfc(-|x|) = 2 - erfc|x|; |x| clamped to 10.1 (27.3).
 *
 * Accuracy: max error in ULPs of the result (distance to the exact value; 0.5 would be
 * correctly rounded; for denormal results the ULP is the smallest denormal). float32: all 2^32
 * inputs (tests/exhaustive_vmath.py); float64: tens of millions of samples over the whole
 * range, densest in the hard regions and around every threshold, against long double / mpmath:
 *                                        exp    log    tanh   erf    expm1  erfc
 *   float32  FMA clones (x86-64-v3, v4)  0.88   0.76   1.05   0.99   1.30   3.64
 *            SSE2 baseline clone         0.89   0.84   1.05   1.31   1.32   4.10
 *   float64  FMA clones (x86-64-v3, v4)  0.91   0.76   2.21   0.83   1.41   4.75
 *            SSE2 baseline clone         0.92   0.85   2.18   1.19   1.39   4.97
 * tests/test_vmath.py asserts, on every clone, float32: 0.9 0.85 1.1 1.35 1.35 4.2 and
 * float64: 1.0 0.9 2.3 1.25 1.5 5.0 (in the order above). The clones differ in the last bit of
 * some results (FMA contraction of a*b+c); within one build, the result for an element never
 * depends on its position in the array (vector body or remainder), so blocked or threaded
 * loops agree bitwise.
 *
 * Special values: NaN in -> NaN out (every function). exp(+inf) = +inf, exp(-inf) = +0,
 * overflow gives +inf. Underflow is gradual: results below the smallest normal are correct
 * denormals (within 1 ULP, the denormal's ULP), and +0 only below half the smallest denormal
 * (x < -103.97 float, x < -745.13 double); nothing is flushed to zero. log(+-0) = -inf,
 * log(x < 0) = NaN (-inf included), log(+inf) = +inf, log(1) = +0, and log of denormals is as
 * accurate as of normal numbers. tanh(+-inf) = +-1, tanh(+-0) = +-0, tanh(x) = x for tiny and
 * denormal x. erf(+-inf) = +-1, erf(+-0) = +-0, erf(x) ~ 2x/sqrt(pi) to full relative accuracy
 * for tiny x (denormal x: within the bound above). expm1(+inf) = +inf, expm1(-inf) = -1,
 * expm1(+-0) = +-0. erfc(+inf) = +0, erfc(-inf) = 2, erfc(+-0) = 1, and erfc's results are
 * correct denormals down to the smallest one (x up to 10.06 float / 27.2 double). All of this
 * assumes IEEE default mode: round to nearest, FTZ/DAZ off (with DAZ on, denormal inputs count
 * as 0; with FTZ on, denormal results become 0).
 */
#ifndef FASTDL_VMATH_H
#define FASTDL_VMATH_H

#include <math.h>     /* INFINITY and NAN only: nothing here calls libm */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "config.h"

#if defined(__GNUC__) || defined(__clang__)
/* always_inline: the functions must be inlined into FDL_DISPATCH clones to be vectorised */
#  define FDL_VM_INLINE static inline __attribute__((always_inline))
#  define FDL_VM_UNUSED __attribute__((unused))
#else
#  define FDL_VM_INLINE static inline
#  define FDL_VM_UNUSED
#endif

/* ---------------------------------------------------------------- bit casts */
FDL_VM_INLINE uint32_t fdl_vm_asuint(float x) { uint32_t u; memcpy(&u, &x, sizeof u); return u; }
FDL_VM_INLINE float fdl_vm_asfloat(uint32_t u) { float x; memcpy(&x, &u, sizeof x); return x; }
FDL_VM_INLINE uint64_t fdl_vm_asuint64(double x) { uint64_t u; memcpy(&u, &x, sizeof u); return u; }
FDL_VM_INLINE double fdl_vm_asdouble(uint64_t u) { double x; memcpy(&x, &u, sizeof x); return x; }

/* |t| with the sign bit of s (t >= +0 or NaN) */
FDL_VM_INLINE float fdl_vm_signf(float t, float s)
{
    return fdl_vm_asfloat(fdl_vm_asuint(t) | (fdl_vm_asuint(s) & 0x80000000u));
}
FDL_VM_INLINE double fdl_vm_sign(double t, double s)
{
    return fdl_vm_asdouble(fdl_vm_asuint64(t) | (fdl_vm_asuint64(s) & 0x8000000000000000ull));
}

/*
 * c ? a : b without a branch. A plain ternary on floating-point values does not survive: GCC
 * sinks the computation of an operand used only by the ternary into a branch (or threads a
 * clamp's constant through what follows), and with -ftrapping-math (the default) it may not
 * if-convert that branch back, so the loop is not vectorised except where AVX-512 masking
 * allows it. A bitwise select keeps both operands computed; it vectorises as a blend (or a
 * masked move / vpternlog). Conditions must be combined with & and |, never && or ||.
 */
FDL_VM_INLINE float fdl_selectf(int c, float a, float b)
{
    uint32_t m = (uint32_t)0 - (uint32_t)(c != 0);
    return fdl_vm_asfloat((fdl_vm_asuint(a) & m) | (fdl_vm_asuint(b) & ~m));
}
FDL_VM_INLINE double fdl_select(int c, double a, double b)
{
    uint64_t m = (uint64_t)0 - (uint64_t)(c != 0);
    return fdl_vm_asdouble((fdl_vm_asuint64(a) & m) | (fdl_vm_asuint64(b) & ~m));
}

/* ================================================================ float32 */

/*
 * x = k ln2 + r + rlo with k = round(x / ln2), |r| <= ln2/2 (+ 2e-5); valid for |x| < ~180.
 * k comes out of the low mantissa bits of x/ln2 + 1.5*2^23 (two's complement in *k).
 * ln2_hi has 15 significant bits, so k * ln2_hi is exact and x - k ln2_hi too; *rlo is the
 * rounding error of r (unused, it costs nothing: the compiler drops it).
 */
FDL_VM_INLINE float fdl_vm_reducef(float x, uint32_t *k, float *rlo)
{
    float j = x * 0x1.715476p+0f + 0x1.8p23f;
    float kf = j - 0x1.8p23f;
    *k = fdl_vm_asuint(j) - 0x4b400000u;
    float r1 = x - kf * 0x1.62e4p-1f;
    float r = r1 - kf * 0x1.7f7d1cp-20f;
    *rlo = (r1 - r) - kf * 0x1.7f7d1cp-20f;
    return r;
}

/* (e^r - 1 - r) / r^2, relative error of e^r below 2^-28.2 on |r| <= ln2/2 */
FDL_VM_INLINE float fdl_vm_expf_q(float r)
{
    float q = 0x1.6ac722p-10f;
    q = q * r + 0x1.123ddep-7f;
    q = q * r + 0x1.555858p-5f;
    q = q * r + 0x1.55548cp-3f;
    q = q * r + 0x1.fffffcp-2f;
    return q;
}

/* (e^r - 1 - r) / r^2, fitted for the relative error of e^r - 1 (2^-28.2) */
FDL_VM_INLINE float fdl_vm_expm1f_q(float r)
{
    float q = 0x1.3b8912p-13f;
    q = q * r + 0x1.6d2e48p-10f;
    q = q * r + 0x1.1155a8p-7f;
    q = q * r + 0x1.555502p-5f;
    q = q * r + 0x1.55552cp-3f;
    q = q * r + 0x1p-1f;
    return q;
}

/* e^x for x in [-87, 88] (result normal; no special values) */
FDL_VM_INLINE float fdl_vm_expf_normal(float x)
{
    uint32_t k;
    float rlo, r = fdl_vm_reducef(x, &k, &rlo);
    float p = 1.0f + (r + r * r * fdl_vm_expf_q(r));
    return p * fdl_vm_asfloat((k + 127u) << 23);
}

/* e^x - 1 for x in [-25, 89] (may overflow to +inf at the top) */
FDL_VM_INLINE float fdl_vm_expm1f_core(float x)
{
    uint32_t k;
    float rlo, r = fdl_vm_reducef(x, &k, &rlo);
    float s = fdl_vm_asfloat((k + 126u) << 23);          /* 2^(k-1): k = 128 stays finite */
    /* 2^k (1 + r + r^2 Q) - 1, summed as ((2^k - 1) + 2^k r) + 2^k (r^2 Q + rlo): for k = 1
       and r < 0 the first sum is exact and the result is ~2r, so r's own rounding error (rlo)
       and rounding e^r - 1 first would each cost a ULP */
    return 2.0f * (((s - 0.5f) + s * r) + s * (r * r * fdl_vm_expm1f_q(r) + rlo));
}

FDL_VM_INLINE float fdl_expf(float x)
{
    /* e^89 overflows and e^-104 underflows to 0 already; NaN passes the clamps */
    x = fdl_selectf(x > 89.0f, 89.0f, x);
    x = fdl_selectf(x < -104.0f, -104.0f, x);
    uint32_t k;
    float rlo, r = fdl_vm_reducef(x, &k, &rlo);          /* k in [-150, 128] */
    float p = 1.0f + (r + (r * r * fdl_vm_expf_q(r) + rlo));
    /* 2^k = 2^h1 * 2^h2, h1 = floor(k/2), h2 = k - h1, both normal: one rounding at most */
    uint32_t u = k + 256u, h = u >> 1;                   /* h = h1 + 128 */
    return p * fdl_vm_asfloat((h - 1u) << 23) * fdl_vm_asfloat((u - h - 1u) << 23);
}

/* e^x for x <= 0 (and NaN, -inf): what softmax (x - max) and the activations (e^-|x|) need.
   Bitwise equal to fdl_expf there, denormal results included, but cheaper: no overflow to
   guard, and 2^k (k in [-150, 0]) applied as 2^(k+32) * 2^-32, the first factor always normal,
   the second exact, so the result is rounded once as fdl_expf's two half scales round it.
   Measured on the 4096x1024 float32 softmax exp/sum pass: ~25% faster than fdl_expf. */
FDL_VM_INLINE float fdl_expf_nonpos(float x)
{
    x = fdl_selectf(x < -104.0f, -104.0f, x);            /* e^-104 rounds to 0; NaN passes */
    uint32_t k;
    float rlo, r = fdl_vm_reducef(x, &k, &rlo);
    float p = 1.0f + (r + (r * r * fdl_vm_expf_q(r) + rlo));
    return p * fdl_vm_asfloat((k + 159u) << 23) * 0x1p-32f;
}

FDL_VM_INLINE float fdl_expm1f(float x)
{
    float xc = fdl_selectf(x > 89.0f, 89.0f, x);
    xc = fdl_selectf(xc < -25.0f, -25.0f, xc);           /* expm1(-25) rounds to -1 */
    float y = fdl_vm_expm1f_core(xc);
    return fdl_selectf(fdl_vm_asfloat(fdl_vm_asuint(x) & 0x7fffffffu) < 0x1p-24f, x, y);
}

FDL_VM_INLINE float fdl_logf(float x)
{
    /* denormals: scale into the normal range first */
    int sub = x < 0x1p-126f;
    float xs = x * fdl_selectf(sub, 0x1p23f, 1.0f);
    uint32_t ix = fdl_vm_asuint(xs);
    uint32_t t = ix - 0x3f3504f3u;                       /* bits of sqrt(1/2) */
    float dk = (float)(((int32_t)t >> 23) - 23 * sub);   /* x = 2^dk m (arithmetic shift) */
    float f = fdl_vm_asfloat(ix - (t & 0xff800000u)) - 1.0f;   /* m - 1, exact */
    float s = f / (2.0f + f);
    float z = s * s, w = z * z;
    float R = z * (0x1.555554p-1f + w * 0x1.23d3ep-2f) + w * (0x1.999c26p-2f + w * 0x1.f13b22p-3f);
    float hfsq = 0.5f * f * f;
    float y = dk * 0x1.62e4p-1f - ((hfsq - (s * (hfsq + R) + dk * 0x1.7f7d1cp-20f)) - f);
    /* 0 -> -inf, < 0 -> NaN, +inf and NaN -> themselves */
    float special = fdl_selectf(x == 0.0f, -INFINITY, fdl_selectf(x < 0.0f, NAN, x + x));
    return fdl_selectf((x > 0.0f) & (x < INFINITY), y, special);
}

FDL_VM_INLINE float fdl_tanhf(float x)
{
    float a = fdl_vm_asfloat(fdl_vm_asuint(x) & 0x7fffffffu);
    a = fdl_selectf(a > 9.5f, 9.5f, a);                 /* tanh(9.5) rounds to 1 */
    /* |x| < 0.8: tanh = x + x^3 P(x^2) (relative error 2^-28.0); the quotient below would
       lose up to 2.4 ULP near 0 to the rounding of its denominator */
    float z = a * a;
    float q = 0x1.a00852p-10f;
    q = q * z - 0x1.e5e52p-8f;
    q = q * z + 0x1.5d160cp-6f;
    q = q * z - 0x1.b92b2ep-5f;
    q = q * z + 0x1.110b58p-3f;
    q = q * z - 0x1.55553ep-2f;
    float small = a + a * (z * q);
    /* above: tanh = 1 - 2 / (e^2a + 1); the error of the quotient is scaled down by it */
    float big = 1.0f - 2.0f / (fdl_vm_expf_normal(a + a) + 1.0f);
    return fdl_vm_signf(fdl_selectf(a < 0.8f, small, big), x);
}

/* erf(x) / x - 1 as a polynomial in z = x^2, for |x| < 1 */
FDL_VM_INLINE float fdl_vm_erff_q(float z)
{
    float q = 0x1.4771fep-14f;
    q = q * z - 0x1.a3515ep-11f;
    q = q * z + 0x1.53f224p-8f;
    q = q * z - 0x1.b7f71ap-6f;
    q = q * z + 0x1.ce2ce6p-4f;
    q = q * z - 0x1.81273ep-2f;
    q = q * z + 0x1.06eba8p-3f;
    return q;
}

FDL_VM_INLINE float fdl_erff(float x)
{
    float a = fdl_vm_asfloat(fdl_vm_asuint(x) & 0x7fffffffu);
    a = fdl_selectf(a > 4.0f, 4.0f, a);                  /* erf(4) rounds to 1 */
    float z = a * a;
    /* |x| < 1: erf = x + x Q(x^2) (relative error 2^-29.4) */
    float small = a + a * fdl_vm_erff_q(z);
    /* |x| >= 1: erf = 1 - e^(-x^2) P((a-2)/(a+2)) (absolute error 2^-33.2) */
    float v = (a - 2.0f) / (a + 2.0f);
    float p = 0x1.d5ff3cp-8f;
    p = p * v + 0x1.e41244p-9f;
    p = p * v - 0x1.43935ap-4f;
    p = p * v + 0x1.eee962p-3f;
    p = p * v - 0x1.b57036p-2f;
    p = p * v + 0x1.058672p-2f;
    float big = 1.0f - fdl_vm_expf_normal(-z) * p;
    return fdl_vm_signf(fdl_selectf(a < 1.0f, small, big), x);
}

/* e^-(hi + lo) = (1 + d) scale1 scale2 for hi + lo in [0, 103.3] (d is returned unrounded
   from 1 + d, so that the caller's P (1 + d) = P + P d rounds once) */
FDL_VM_INLINE float fdl_vm_expf_neg2(float hi, float lo, float *scale1, float *scale2)
{
    float j = -(hi + lo) * 0x1.715476p+0f + 0x1.8p23f;
    float kf = j - 0x1.8p23f;
    uint32_t k = fdl_vm_asuint(j) - 0x4b400000u;         /* k in [-149, 0] */
    float r1 = -hi - kf * 0x1.62e4p-1f;                  /* exact (Sterbenz) */
    float t = -lo - kf * 0x1.7f7d1cp-20f;
    float r = r1 + t, rlo = (r1 - r) + t;
    uint32_t u = k + 256u, h = u >> 1;
    *scale1 = fdl_vm_asfloat((h - 1u) << 23);
    *scale2 = fdl_vm_asfloat((u - h - 1u) << 23);
    return r + (r * r * fdl_vm_expf_q(r) + rlo);
}

FDL_VM_INLINE float fdl_erfcf(float x)
{
    float a = fdl_vm_asfloat(fdl_vm_asuint(x) & 0x7fffffffu);
    a = fdl_selectf(a > 10.1f, 10.1f, a);                /* erfc(10.1) rounds to 0 */
    /* below 0.8: 1 -+ erf(a), erf as in fdl_erff; 1 - erf costs at most ~1.2 ULP while erfc
       stays in erf's binade or the one below it (erfc(0.8) > 1/4) */
    int near0 = a < 0.8f;
    float erfs = a + a * fdl_vm_erff_q(a * a);
    /* above: erfc(a) = e^(-a^2) P(v) / (a + 2), v = (a - 2) / (a + 2) (relative error
       2^-25.7), with a^2 = hi + lo exactly (hi = ah^2, ah = a to 12 bits): the rounding of
       a^2 would cost up to a^2 2^-24 relative, 6 ULP at a = 10 */
    float w = 1.0f / (a + 2.0f);
    float v = (a - 2.0f) * w;
    float p = 0x1.c28788p-14f;
    p = p * v - 0x1.19657cp-11f;
    p = p * v - 0x1.d085fap-11f;
    p = p * v + 0x1.8fafbp-9f;
    p = p * v + 0x1.a97228p-8f;
    p = p * v - 0x1.6056dep-6f;
    p = p * v - 0x1.2a8b86p-5f;
    p = p * v + 0x1.1e2ddcp-2f;
    p = p * v - 0x1.5fd386p-1f;
    p = p * v + 0x1.058672p+0f;
    float ah = fdl_vm_asfloat(fdl_vm_asuint(a) & 0xfffff000u);
    float s1, s2, d = fdl_vm_expf_neg2(ah * ah, (a - ah) * (a + ah), &s1, &s2);
    float big = (p + p * d) / (a + 2.0f) * s1 * s2;
    /* erfc(-a) = 2 - erfc(a) */
    float pos = fdl_selectf(near0, 1.0f - erfs, big);
    float neg = fdl_selectf(near0, 1.0f + erfs, 2.0f - big);
    return fdl_selectf(x < 0.0f, neg, pos);
}

/* ================================================================ float64 */

/* x = k ln2 + r + rlo, |r| <= ln2/2; ln2_hi has 32 significant bits (k * ln2_hi exact) */
FDL_VM_INLINE double fdl_vm_reduce(double x, uint64_t *k, double *rlo)
{
    double j = x * 0x1.71547652b82fep+0 + 0x1.8p52;
    double kf = j - 0x1.8p52;
    *k = fdl_vm_asuint64(j) - 0x4338000000000000ull;
    double r1 = x - kf * 0x1.62e42feep-1;
    double r = r1 - kf * 0x1.a39ef35793c76p-33;
    *rlo = (r1 - r) - kf * 0x1.a39ef35793c76p-33;
    return r;
}

/* (e^r - 1 - r) / r^2 for e^r (relative error 2^-56.3) */
FDL_VM_INLINE double fdl_vm_exp_q(double r)
{
    double q = 0x1.ad7f71093207p-26;
    q = q * r + 0x1.28ad6e9093351p-22;
    q = q * r + 0x1.71df2549e5dc5p-19;
    q = q * r + 0x1.a0199a10c040bp-16;
    q = q * r + 0x1.a01a012a5e85dp-13;
    q = q * r + 0x1.6c16c18428914p-10;
    q = q * r + 0x1.1111111127bc8p-7;
    q = q * r + 0x1.5555555550883p-5;
    q = q * r + 0x1.55555555554fap-3;
    q = q * r + 0x1.000000000000ap-1;
    return q;
}

/* (e^r - 1 - r) / r^2 for e^r - 1 (relative error 2^-54.7) */
FDL_VM_INLINE double fdl_vm_expm1_q(double r)
{
    double q = 0x1.ae6ba914cc0f5p-26;
    q = q * r + 0x1.28a1dbd2c9b73p-22;
    q = q * r + 0x1.71de880269066p-19;
    q = q * r + 0x1.a019a7733fc51p-16;
    q = q * r + 0x1.a01a01751826cp-13;
    q = q * r + 0x1.6c16c17eda6cp-10;
    q = q * r + 0x1.1111111118f9ep-7;
    q = q * r + 0x1.55555555522bcp-5;
    q = q * r + 0x1.5555555555539p-3;
    q = q * r + 0x1.0000000000005p-1;
    return q;
}

/* e^x for x in [-708, 709] (result normal; no special values) */
FDL_VM_INLINE double fdl_vm_exp_normal(double x)
{
    uint64_t k;
    double rlo, r = fdl_vm_reduce(x, &k, &rlo);
    double p = 1.0 + (r + r * r * fdl_vm_exp_q(r));
    return p * fdl_vm_asdouble((k + 1023u) << 52);
}

/* e^x - 1 for x in [-40, 710] (may overflow to +inf at the top) */
FDL_VM_INLINE double fdl_vm_expm1_core(double x)
{
    uint64_t k;
    double rlo, r = fdl_vm_reduce(x, &k, &rlo);
    double s = fdl_vm_asdouble((k + 1022u) << 52);       /* 2^(k-1) */
    return 2.0 * (((s - 0.5) + s * r) + s * (r * r * fdl_vm_expm1_q(r) + rlo));
}

FDL_VM_INLINE double fdl_exp(double x)
{
    x = fdl_select(x > 710.0, 710.0, x);
    x = fdl_select(x < -746.0, -746.0, x);
    uint64_t k;
    double rlo, r = fdl_vm_reduce(x, &k, &rlo);           /* k in [-1077, 1025] */
    double p = 1.0 + (r + (r * r * fdl_vm_exp_q(r) + rlo));
    uint64_t u = k + 2048u, h = u >> 1;                   /* h = floor(k/2) + 1024 */
    return p * fdl_vm_asdouble((h - 1u) << 52) * fdl_vm_asdouble((u - h - 1u) << 52);
}

/* e^x for x <= 0: fdl_expf_nonpos's double twin (2^k, k in [-1077, 0], as 2^(k+64) 2^-64) */
FDL_VM_INLINE double fdl_exp_nonpos(double x)
{
    x = fdl_select(x < -746.0, -746.0, x);
    uint64_t k;
    double rlo, r = fdl_vm_reduce(x, &k, &rlo);
    double p = 1.0 + (r + (r * r * fdl_vm_exp_q(r) + rlo));
    return p * fdl_vm_asdouble((k + 1087u) << 52) * 0x1p-64;
}

FDL_VM_INLINE double fdl_expm1(double x)
{
    double xc = fdl_select(x > 710.0, 710.0, x);
    xc = fdl_select(xc < -40.0, -40.0, xc);              /* expm1(-40) rounds to -1 */
    double y = fdl_vm_expm1_core(xc);
    return fdl_select(fdl_vm_asdouble(fdl_vm_asuint64(x) & 0x7fffffffffffffffull) < 0x1p-54, x, y);
}

FDL_VM_INLINE double fdl_log(double x)
{
    int sub = x < 0x1p-1022;
    double xs = x * fdl_select(sub, 0x1p54, 1.0);
    uint64_t ix = fdl_vm_asuint64(xs);
    uint64_t t = ix - 0x3fe6a09e667f3bcdull;             /* bits of sqrt(1/2) */
    /* the exponent, a 12-bit two's complement number in t's top bits, to double without a
       64-bit arithmetic shift or int64 -> double conversion (neither exists before AVX-512) */
    double dk = fdl_vm_asdouble(0x4330000000000000ull | ((t >> 52) ^ 0x800u))
              - (0x1p52 + 2048.0) - fdl_select(sub, 54.0, 0.0);
    double f = fdl_vm_asdouble(ix - (t & 0xfff0000000000000ull)) - 1.0;
    double s = f / (2.0 + f);
    double z = s * s, w = z * z;
    double t1 = w * (0x1.999999997fdb8p-2 + w * (0x1.c71c5209603cp-3 + w * 0x1.39a1bac1f3148p-3));
    double t2 = z * (0x1.5555555555592p-1 + w * (0x1.24924941f1206p-2
                + w * (0x1.74663ee7e78c9p-3 + w * 0x1.2f056334dbe6ap-3)));
    double R = t2 + t1;
    double hfsq = 0.5 * f * f;
    double y = dk * 0x1.62e42feep-1 - ((hfsq - (s * (hfsq + R) + dk * 0x1.a39ef35793c76p-33)) - f);
    double special = fdl_select(x == 0.0, -(double)INFINITY,
                                fdl_select(x < 0.0, (double)NAN, x + x));
    return fdl_select((x > 0.0) & (x < (double)INFINITY), y, special);
}

FDL_VM_INLINE double fdl_tanh(double x)
{
    double a = fdl_vm_asdouble(fdl_vm_asuint64(x) & 0x7fffffffffffffffull);
    a = fdl_select(a > 20.0, 20.0, a);                   /* tanh(20) rounds to 1 */
    /* tanh a = u / (u + 2), u = e^2a - 1, below 0.625 (no cancellation near 0: tiny x gives
       x); 1 - 2 / (u + 2) above, where the rounding error of the quotient is scaled down.
       Near 0, u + 2 = d + e exactly (TwoSum) and the quotient is corrected for e, with
       1/d = (1 - q)/2: that takes the worst error from 2.5 to 2.2 ULP */
    double u = fdl_vm_expm1_core(a + a);
    double d = u + 2.0, bb = d - u;
    double e = (u - (d - bb)) + (2.0 - bb);
    int near0 = a < 0.625;
    double q = fdl_select(near0, u, 2.0) / d;
    double small = q - (q * (0.5 * e)) * (1.0 - q);
    double big = 1.0 - q;
    return fdl_vm_sign(fdl_select(near0, small, big), x);
}

/* erf(x) / x - 1 as a polynomial in z = x^2, for |x| < 1 */
FDL_VM_INLINE double fdl_vm_erf_q(double z)
{
    double q = 0x1.0579abd219119p-34;
    q = q * z - 0x1.386ac127e4f63p-30;
    q = q * z + 0x1.f7a4124c43dcbp-27;
    q = q * z - 0x1.5f1d36c4dcb99p-23;
    q = q * z + 0x1.b9def19e3bc69p-20;
    q = q * z - 0x1.f4d1df3950987p-17;
    q = q * z + 0x1.f9a321a11e132p-14;
    q = q * z - 0x1.c02db3d8ed269p-11;
    q = q * z + 0x1.565bcd0db02e5p-8;
    q = q * z - 0x1.b82ce3128499cp-6;
    q = q * z + 0x1.ce2f21a042b2p-4;
    q = q * z - 0x1.812746b0379e6p-2;
    q = q * z + 0x1.06eba8214db69p-3;
    return q;
}

FDL_VM_INLINE double fdl_erf(double x)
{
    double a = fdl_vm_asdouble(fdl_vm_asuint64(x) & 0x7fffffffffffffffull);
    a = fdl_select(a > 6.0, 6.0, a);                     /* erf(6) rounds to 1 */
    double z = a * a;
    /* |x| < 1: erf = x + x Q(x^2) (relative error 2^-56.3) */
    double small = a + a * fdl_vm_erf_q(z);
    /* |x| >= 1: erf = 1 - e^(-x^2) P((a-2)/(a+2)) (absolute error 2^-57.1) */
    double v = (a - 2.0) / (a + 2.0);
    double p = -0x1.a84401059b929p-17;
    p = p * v - 0x1.be7775e8a230bp-16;
    p = p * v + 0x1.cf70adf39a7fp-16;
    p = p * v + 0x1.6d826912acf05p-13;
    p = p * v + 0x1.6d35313236582p-15;
    p = p * v - 0x1.016b53752666p-10;
    p = p * v - 0x1.bc258dc50f9ccp-11;
    p = p * v + 0x1.ca95ed8640dc9p-8;
    p = p * v + 0x1.e947158adc56dp-9;
    p = p * v - 0x1.437f0b68ccc4p-4;
    p = p * v + 0x1.eeea7dc8a790bp-3;
    p = p * v - 0x1.b57034efd3f56p-2;
    p = p * v + 0x1.058671b52c776p-2;
    double big = 1.0 - fdl_vm_exp_normal(-z) * p;
    return fdl_vm_sign(fdl_select(a < 1.0, small, big), x);
}

/* e^-(hi + lo) = (1 + d) scale1 scale2 for hi + lo in [0, 746] (d returned, see above) */
FDL_VM_INLINE double fdl_vm_exp_neg2(double hi, double lo, double *scale1, double *scale2)
{
    double j = -(hi + lo) * 0x1.71547652b82fep+0 + 0x1.8p52;
    double kf = j - 0x1.8p52;
    uint64_t k = fdl_vm_asuint64(j) - 0x4338000000000000ull;   /* k in [-1076, 0] */
    double r1 = -hi - kf * 0x1.62e42feep-1;              /* exact (Sterbenz) */
    double t = -lo - kf * 0x1.a39ef35793c76p-33;
    double r = r1 + t, rlo = (r1 - r) + t;
    uint64_t u = k + 2048u, h = u >> 1;
    *scale1 = fdl_vm_asdouble((h - 1u) << 52);
    *scale2 = fdl_vm_asdouble((u - h - 1u) << 52);
    return r + (r * r * fdl_vm_exp_q(r) + rlo);
}

FDL_VM_INLINE double fdl_erfc(double x)
{
    double a = fdl_vm_asdouble(fdl_vm_asuint64(x) & 0x7fffffffffffffffull);
    a = fdl_select(a > 27.3, 27.3, a);                   /* erfc(27.3) rounds to 0 */
    int near0 = a < 0.8;                                 /* as in fdl_erfcf */
    double erfs = a + a * fdl_vm_erf_q(a * a);
    /* above: erfc(a) = e^(-a^2) P(v) / (a + 4), v = (a - 4) / (a + 4) (relative error
       2^-53.1), a^2 = hi + lo exactly (hi = ah^2, ah = a to 26 bits) */
    double w = 1.0 / (a + 4.0);
    double v = (a - 4.0) * w;
    double p = 0x1.18df4b440f69ep-29;
    p = p * v - 0x1.c6d7947faf789p-27;
    p = p * v - 0x1.09bf23bffd11ap-28;
    p = p * v + 0x1.062a1ffd73243p-23;
    p = p * v - 0x1.2eac63a481fd9p-24;
    p = p * v - 0x1.c5c1bedaf3f1p-21;
    p = p * v + 0x1.7d7cefd49b713p-20;
    p = p * v + 0x1.3b04f4237809bp-18;
    p = p * v - 0x1.3c6a0e528b7eap-16;
    p = p * v - 0x1.e7e6a230021e2p-19;
    p = p * v + 0x1.72cd846fc629p-13;
    p = p * v - 0x1.dd28462aa0dbcp-12;
    p = p * v - 0x1.269b4f8db4992p-12;
    p = p * v + 0x1.908f47262880bp-8;
    p = p * v - 0x1.b00c052d2101p-6;
    p = p * v + 0x1.38dbd2c8e004ap-4;
    p = p * v - 0x1.645fd8a4ba9f7p-3;
    p = p * v + 0x1.52cac237101a5p-2;
    p = p * v - 0x1.14eacb1ad035dp-1;
    p = p * v + 0x1.8be202d26c705p-1;
    p = p * v - 0x1.f3fe31ecb49bfp-1;
    p = p * v + 0x1.18932bf08e154p+0;
    double ah = fdl_vm_asdouble(fdl_vm_asuint64(a) & 0xfffffffff8000000ull);
    double s1, s2, d = fdl_vm_exp_neg2(ah * ah, (a - ah) * (a + ah), &s1, &s2);
    double big = (p + p * d) / (a + 4.0) * s1 * s2;
    double pos = fdl_select(near0, 1.0 - erfs, big);
    double neg = fdl_select(near0, 1.0 + erfs, 2.0 - big);
    return fdl_select(x < 0.0, neg, pos);
}

/* ================================================================ array loops */

#define FDL_VM_ARRAY(NAME, T, FN)                                                          \
FDL_DISPATCH FDL_VM_UNUSED static void NAME(const T *FDL_RESTRICT x, T *FDL_RESTRICT y,    \
                                            ptrdiff_t n)                                   \
{                                                                                          \
    for (ptrdiff_t i = 0; i < n; ++i) y[i] = FN(x[i]);                                     \
}

FDL_VM_ARRAY(fdl_exp_array_f32, float, fdl_expf)
FDL_VM_ARRAY(fdl_exp_nonpos_array_f32, float, fdl_expf_nonpos)
FDL_VM_ARRAY(fdl_log_array_f32, float, fdl_logf)
FDL_VM_ARRAY(fdl_tanh_array_f32, float, fdl_tanhf)
FDL_VM_ARRAY(fdl_erf_array_f32, float, fdl_erff)
FDL_VM_ARRAY(fdl_expm1_array_f32, float, fdl_expm1f)
FDL_VM_ARRAY(fdl_erfc_array_f32, float, fdl_erfcf)
FDL_VM_ARRAY(fdl_exp_array_f64, double, fdl_exp)
FDL_VM_ARRAY(fdl_exp_nonpos_array_f64, double, fdl_exp_nonpos)
FDL_VM_ARRAY(fdl_log_array_f64, double, fdl_log)
FDL_VM_ARRAY(fdl_tanh_array_f64, double, fdl_tanh)
FDL_VM_ARRAY(fdl_erf_array_f64, double, fdl_erf)
FDL_VM_ARRAY(fdl_expm1_array_f64, double, fdl_expm1)
FDL_VM_ARRAY(fdl_erfc_array_f64, double, fdl_erfc)

#endif
