/*
 * Elementwise kernels: activations, their derivatives, the fused chain rule, and the
 * arithmetic of broadcasting binary ops.
 *
 * Each op is first a scalar `static inline` function (branch-free: selects vectorise as
 * blends), then expanded by FDL_UNARY_KERNEL / FDL_BINARY_KERNEL into a strided kernel over
 * one row whose unit-stride (and broadcast-scalar) paths the compiler vectorises. The row
 * kernels are FDL_DISPATCH'ed (target_clones), so the loop runs at the CPU's SIMD width.
 *
 * Formulas are the cheat sheet's; where a formula gives NaN at +-inf through inf * 0 (gelu,
 * silu and their derivatives), the limit is returned instead, as API.md asks.
 */
#ifndef FASTDL_ELEMENTWISE_H
#define FASTDL_ELEMENTWISE_H

#include <math.h>
#include "config.h"
#include "vmath.h"

#define FDL_SQRT1_2 0.70710678118654752440
#define FDL_SQRT2_PI 0.79788456080286535588 /* sqrt(2 / pi) */
#define FDL_INV_SQRT_2PI 0.39894228040143267794 /* 1 / sqrt(2 pi) */
#define FDL_GELU_C 0.044715

/*
 * The same scalar ops for both dtypes: T the type, SFX its suffix, EXP/TANH/ERFC the vmath
 * functions, SEL the vmath blend (fdl_selectf / fdl_select: a `c ? a : b` on floating-point
 * values inside these loops would vectorise only in the AVX-512 clone, vmath.h explains).
 *
 * Tails are computed in forms that keep relative accuracy where the textbook form cancels:
 * sigmoid'(x) = e / (1 + e)^2 and 1 - tanh(x)^2 = 4 e2 / (1 + e2)^2 with e = exp(-|x|),
 * e2 = exp(-2|x|) (not s (1 - s) or 1 - t^2, which round to 0 long before the true value does),
 * the tanh-form GELU as x * sigmoid(2u) (not 0.5 x (1 + tanh(u)), which cancels for x < 0), and
 * the normal CDF of the exact GELU as 0.5 erfc(-x / sqrt 2) (not 0.5 (1 + erf(x / sqrt 2))).
 */
#define FDL_DEFINE_SCALAR_OPS(T, SFX, EXP, TANH, ERFC, SEL)                                   \
FDL_INLINE T fdl_relu_##SFX(T x, T p) { (void)p; return SEL(x < (T)0, (T)0, x); }          \
FDL_INLINE T fdl_leaky_relu_##SFX(T x, T p) { return SEL(x < (T)0, p * x, x); }            \
/* sigmoid(x) and sigmoid(-x) = 1 - sigmoid(x), both without cancellation or overflow */     \
FDL_INLINE T fdl_sigmoid_##SFX(T x, T p) {                                                 \
    (void)p;                                                                                  \
    T e = EXP(-fabs##SFX##_(x));                                                              \
    return SEL(x >= (T)0, (T)1, e) / ((T)1 + e);   /* one rounding; no product to blend */   \
}                                                                                             \
FDL_INLINE T fdl_sigmoid_neg_##SFX(T x) {                                                  \
    T e = EXP(-fabs##SFX##_(x));                                                              \
    return SEL(x >= (T)0, e, (T)1) / ((T)1 + e);                                              \
}                                                                                             \
FDL_INLINE T fdl_tanh_##SFX(T x, T p) { (void)p; return TANH(x); }                         \
FDL_INLINE T fdl_gelu_##SFX(T x, T p) {                                                    \
    (void)p;                                                                                  \
    T y = (T)0.5 * x * ERFC(x * (T)-FDL_SQRT1_2);                                             \
    return SEL(x == -(T)INFINITY, (T)0, y);                                                   \
}                                                                                             \
FDL_INLINE T fdl_gelu_tanh_u_##SFX(T x) {                                                  \
    return (T)FDL_SQRT2_PI * (x + (T)FDL_GELU_C * x * x * x);                                 \
}                                                                                             \
FDL_INLINE T fdl_gelu_tanh_##SFX(T x, T p) {                                               \
    T y = x * fdl_sigmoid_##SFX((T)2 * fdl_gelu_tanh_u_##SFX(x), p);                          \
    return SEL(x == -(T)INFINITY, (T)0, y);                                                   \
}                                                                                             \
FDL_INLINE T fdl_silu_##SFX(T x, T p) {                                                    \
    T y = x * fdl_sigmoid_##SFX(x, p);                                                        \
    return SEL(x == -(T)INFINITY, (T)0, y);                                                   \
}                                                                                             \
/* derivatives f'(x) */                                                                       \
FDL_INLINE T fdl_relu_grad_##SFX(T x, T p) { (void)p; return SEL(x > (T)0, (T)1, (T)0); }  \
FDL_INLINE T fdl_leaky_relu_grad_##SFX(T x, T p) { return SEL(x > (T)0, (T)1, p); }        \
FDL_INLINE T fdl_sigmoid_grad_##SFX(T x, T p) {                                            \
    (void)p;                                                                                  \
    T e = EXP(-fabs##SFX##_(x));                                                              \
    T d = (T)1 + e;                                                                           \
    return e / (d * d);                                                                       \
}                                                                                             \
FDL_INLINE T fdl_sech2_##SFX(T x) {                                                        \
    T e = EXP((T)-2 * fabs##SFX##_(x));                                                       \
    T d = (T)1 + e;                                                                           \
    return (T)4 * e / (d * d);                                                                \
}                                                                                             \
FDL_INLINE T fdl_tanh_grad_##SFX(T x, T p) { (void)p; return fdl_sech2_##SFX(x); }         \
FDL_INLINE T fdl_gelu_grad_##SFX(T x, T p) {                                               \
    (void)p;                                                                                  \
    T cdf = (T)0.5 * ERFC(x * (T)-FDL_SQRT1_2);                                               \
    T pdf = (T)FDL_INV_SQRT_2PI * EXP((T)-0.5 * x * x);                                       \
    T g = cdf + x * pdf;                                                                      \
    T limit = SEL(x > (T)0, (T)1, (T)0);                                                      \
    return SEL(fabs##SFX##_(x) == (T)INFINITY, limit, g);                                     \
}                                                                                             \
FDL_INLINE T fdl_gelu_tanh_grad_##SFX(T x, T p) {                                          \
    T u = fdl_gelu_tanh_u_##SFX(x);                                                           \
    T g = fdl_sigmoid_##SFX((T)2 * u, p)                                                      \
        + (T)0.5 * x * fdl_sech2_##SFX(u) * (T)FDL_SQRT2_PI                                   \
          * ((T)1 + (T)(3 * FDL_GELU_C) * x * x);                                             \
    /* beyond |x| = 1e4, sech^2 is 0 and x^3 may be inf: 0 * inf; use the limits */           \
    T limit = SEL(x > (T)0, (T)1, (T)0);                                                      \
    return SEL(fabs##SFX##_(x) > (T)1e4, limit, g);                                           \
}                                                                                             \
FDL_INLINE T fdl_silu_grad_##SFX(T x, T p) {                                               \
    T g = fdl_sigmoid_##SFX(x, p) * ((T)1 + x * fdl_sigmoid_neg_##SFX(x));                    \
    T limit = SEL(x > (T)0, (T)1, (T)0);                                                      \
    return SEL(fabs##SFX##_(x) == (T)INFINITY, limit, g);                                     \
}                                                                                             \
/* fused chain rule: dx = dy * f'(x), or from the forward output y for sigmoid and tanh */    \
FDL_INLINE T fdl_relu_bw_##SFX(T dy, T x) { return SEL(x > (T)0, dy, (T)0); }              \
FDL_INLINE T fdl_sigmoid_bw_##SFX(T dy, T y) { return dy * y * ((T)1 - y); }               \
FDL_INLINE T fdl_tanh_bw_##SFX(T dy, T y) { return dy * ((T)1 - y * y); }                  \
/* binary arithmetic */                                                                       \
FDL_INLINE T fdl_add_##SFX(T a, T b) { return a + b; }                                     \
FDL_INLINE T fdl_subtract_##SFX(T a, T b) { return a - b; }                                \
FDL_INLINE T fdl_multiply_##SFX(T a, T b) { return a * b; }                                \
FDL_INLINE T fdl_divide_##SFX(T a, T b) { return a / b; }                                  \
/* NaN in either operand gives NaN, as np.maximum */                                          \
FDL_INLINE T fdl_maximum_##SFX(T a, T b) { return SEL(a >= b || a != a, a, b); }

FDL_INLINE float fabsf32_(float x) { return fabsf(x); }
FDL_INLINE double fabsf64_(double x) { return fabs(x); }

FDL_DEFINE_SCALAR_OPS(float, f32, fdl_expf_nonpos, fdl_tanhf, fdl_erfcf, fdl_selectf)
FDL_DEFINE_SCALAR_OPS(double, f64, fdl_exp_nonpos, fdl_tanh, fdl_erfc, fdl_select)

/*
 * Row kernels. Unary: y[i*sy] = f(x[i*sx], p). Binary: y[i*sy] = f(a[i*sa], b[i*sb]) with a
 * parameter-taking variant for the fused backward of leaky_relu / gelu / silu
 * (dx = dy * f'(x, p)). Strides are in elements; 0 means a broadcast scalar.
 */
#define FDL_UNARY_KERNEL(NAME, T, SFX)                                                        \
FDL_DISPATCH static void fdl_k_##NAME##_##SFX(ptrdiff_t n, const T *x, ptrdiff_t sx, T *y,    \
                                              ptrdiff_t sy, T p)                              \
{                                                                                             \
    if (sx == 1 && sy == 1) {                                                                 \
        for (ptrdiff_t i = 0; i < n; ++i) y[i] = fdl_##NAME##_##SFX(x[i], p);                 \
    } else {                                                                                  \
        for (ptrdiff_t i = 0; i < n; ++i) y[i * sy] = fdl_##NAME##_##SFX(x[i * sx], p);       \
    }                                                                                         \
}

/* No restrict: out= may alias an input exactly (in-place use); GCC vectorises behind a
   run-time overlap check instead. */
#define FDL_BINARY_BODY(T, CALL)                                                 \
    if (sa == 1 && sb == 1 && sy == 1) {                                                      \
        for (ptrdiff_t i = 0; i < n; ++i) { T av = a[i], bv = b[i]; y[i] = CALL; }            \
    } else if (sa == 1 && sb == 0 && sy == 1) {                                               \
        T bv = b[0];                                                                          \
        for (ptrdiff_t i = 0; i < n; ++i) { T av = a[i]; y[i] = CALL; }                       \
    } else if (sa == 0 && sb == 1 && sy == 1) {                                               \
        T av = a[0];                                                                          \
        for (ptrdiff_t i = 0; i < n; ++i) { T bv = b[i]; y[i] = CALL; }                       \
    } else {                                                                                  \
        for (ptrdiff_t i = 0; i < n; ++i) { T av = a[i * sa], bv = b[i * sb]; y[i * sy] = CALL; } \
    }

#define FDL_BINARY_KERNEL(NAME, T, SFX)                                                       \
FDL_DISPATCH static void fdl_k_##NAME##_##SFX(ptrdiff_t n, const T *a, ptrdiff_t sa,         \
                                              const T *b, ptrdiff_t sb, T *y, ptrdiff_t sy,   \
                                              T p)                                            \
{                                                                                             \
    (void)p;                                                                                  \
    FDL_BINARY_BODY(T, fdl_##NAME##_##SFX(av, bv))                                         \
}

/* dx = dy * f'(x, p) for the activations whose backward needs x and a parameter */
#define FDL_CHAIN_KERNEL(NAME, T, SFX)                                                        \
FDL_DISPATCH static void fdl_k_##NAME##_bw_##SFX(ptrdiff_t n, const T *a, ptrdiff_t sa,      \
                                                 const T *b, ptrdiff_t sb, T *y,              \
                                                 ptrdiff_t sy, T p)                           \
{                                                                                             \
    FDL_BINARY_BODY(T, av * fdl_##NAME##_grad_##SFX(bv, p))                                \
}

#define FDL_FOR_BOTH(MACRO, NAME) MACRO(NAME, float, f32) MACRO(NAME, double, f64)

FDL_FOR_BOTH(FDL_UNARY_KERNEL, relu)
FDL_FOR_BOTH(FDL_UNARY_KERNEL, leaky_relu)
FDL_FOR_BOTH(FDL_UNARY_KERNEL, sigmoid)
FDL_FOR_BOTH(FDL_UNARY_KERNEL, tanh)
FDL_FOR_BOTH(FDL_UNARY_KERNEL, gelu)
FDL_FOR_BOTH(FDL_UNARY_KERNEL, gelu_tanh)
FDL_FOR_BOTH(FDL_UNARY_KERNEL, silu)
FDL_FOR_BOTH(FDL_UNARY_KERNEL, relu_grad)
FDL_FOR_BOTH(FDL_UNARY_KERNEL, leaky_relu_grad)
FDL_FOR_BOTH(FDL_UNARY_KERNEL, sigmoid_grad)
FDL_FOR_BOTH(FDL_UNARY_KERNEL, tanh_grad)
FDL_FOR_BOTH(FDL_UNARY_KERNEL, gelu_grad)
FDL_FOR_BOTH(FDL_UNARY_KERNEL, gelu_tanh_grad)
FDL_FOR_BOTH(FDL_UNARY_KERNEL, silu_grad)

FDL_FOR_BOTH(FDL_BINARY_KERNEL, relu_bw)
FDL_FOR_BOTH(FDL_BINARY_KERNEL, sigmoid_bw)
FDL_FOR_BOTH(FDL_BINARY_KERNEL, tanh_bw)
FDL_FOR_BOTH(FDL_BINARY_KERNEL, add)
FDL_FOR_BOTH(FDL_BINARY_KERNEL, subtract)
FDL_FOR_BOTH(FDL_BINARY_KERNEL, multiply)
FDL_FOR_BOTH(FDL_BINARY_KERNEL, divide)
FDL_FOR_BOTH(FDL_BINARY_KERNEL, maximum)

FDL_FOR_BOTH(FDL_CHAIN_KERNEL, leaky_relu)
FDL_FOR_BOTH(FDL_CHAIN_KERNEL, gelu)
FDL_FOR_BOTH(FDL_CHAIN_KERNEL, gelu_tanh)
FDL_FOR_BOTH(FDL_CHAIN_KERNEL, silu)

/* Dispatch tables, indexed by the op enums below (the order must match). */
typedef void (*fdl_unary_f32)(ptrdiff_t, const float *, ptrdiff_t, float *, ptrdiff_t, float);
typedef void (*fdl_unary_f64)(ptrdiff_t, const double *, ptrdiff_t, double *, ptrdiff_t, double);
typedef void (*fdl_binary_f32)(ptrdiff_t, const float *, ptrdiff_t, const float *, ptrdiff_t,
                               float *, ptrdiff_t, float);
typedef void (*fdl_binary_f64)(ptrdiff_t, const double *, ptrdiff_t, const double *, ptrdiff_t,
                               double *, ptrdiff_t, double);

enum {
    FDL_RELU, FDL_LEAKY_RELU, FDL_SIGMOID, FDL_TANH, FDL_GELU, FDL_GELU_TANH, FDL_SILU,
    FDL_RELU_GRAD, FDL_LEAKY_RELU_GRAD, FDL_SIGMOID_GRAD, FDL_TANH_GRAD, FDL_GELU_GRAD,
    FDL_GELU_TANH_GRAD, FDL_SILU_GRAD, FDL_N_UNARY
};
enum {
    FDL_ADD, FDL_SUBTRACT, FDL_MULTIPLY, FDL_DIVIDE, FDL_MAXIMUM,
    FDL_RELU_BW, FDL_LEAKY_RELU_BW, FDL_SIGMOID_BW, FDL_TANH_BW, FDL_GELU_BW,
    FDL_GELU_TANH_BW, FDL_SILU_BW, FDL_N_BINARY
};

#define FDL_UNARY_TABLE(SFX) {                                                                \
    fdl_k_relu_##SFX, fdl_k_leaky_relu_##SFX, fdl_k_sigmoid_##SFX, fdl_k_tanh_##SFX,          \
    fdl_k_gelu_##SFX, fdl_k_gelu_tanh_##SFX, fdl_k_silu_##SFX, fdl_k_relu_grad_##SFX,         \
    fdl_k_leaky_relu_grad_##SFX, fdl_k_sigmoid_grad_##SFX, fdl_k_tanh_grad_##SFX,             \
    fdl_k_gelu_grad_##SFX, fdl_k_gelu_tanh_grad_##SFX, fdl_k_silu_grad_##SFX }
#define FDL_BINARY_TABLE(SFX) {                                                               \
    fdl_k_add_##SFX, fdl_k_subtract_##SFX, fdl_k_multiply_##SFX, fdl_k_divide_##SFX,          \
    fdl_k_maximum_##SFX, fdl_k_relu_bw_##SFX, fdl_k_leaky_relu_bw_##SFX,                      \
    fdl_k_sigmoid_bw_##SFX, fdl_k_tanh_bw_##SFX, fdl_k_gelu_bw_##SFX,                         \
    fdl_k_gelu_tanh_bw_##SFX, fdl_k_silu_bw_##SFX }

static const fdl_unary_f32 fdl_unary_table_f32[FDL_N_UNARY] = FDL_UNARY_TABLE(f32);
static const fdl_unary_f64 fdl_unary_table_f64[FDL_N_UNARY] = FDL_UNARY_TABLE(f64);
static const fdl_binary_f32 fdl_binary_table_f32[FDL_N_BINARY] = FDL_BINARY_TABLE(f32);
static const fdl_binary_f64 fdl_binary_table_f64[FDL_N_BINARY] = FDL_BINARY_TABLE(f64);

#endif
