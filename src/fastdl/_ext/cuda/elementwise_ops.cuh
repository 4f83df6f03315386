/*
 * The scalar elementwise ops of the GPU kernels, __host__ __device__ so the host test shim
 * runs the very same formulas on the CPU.
 *
 * They are the CPU's (include/fastdl/elementwise.h) term for term, with CUDA's accurate libm
 * (expf, tanhf, erfcf and their double twins: never the __expf intrinsics, and the build
 * has no fast-math), so float32 results match the CPU within a few ulp: the same
 * overflow-free sigmoid, the cancellation-free tails (sigmoid' = e / (1 + e)^2,
 * tanh' = 4 e2 / (1 + e2)^2, the exact GELU's CDF as 0.5 erfc(-x / sqrt 2), the tanh-form
 * GELU as x sigmoid(2u)), the limits at +-inf where a formula would give inf * 0, and NaN
 * propagation (relu(NaN) is NaN, maximum with a NaN is NaN).
 */
#ifndef FASTDL_CUDA_ELEMENTWISE_OPS_CUH
#define FASTDL_CUDA_ELEMENTWISE_OPS_CUH

#include <math.h>
#include "elementwise.h"

#ifndef FDL_CU_HD
#define FDL_CU_HD __host__ __device__ __forceinline__
#endif

#define FDL_CU_SQRT1_2 0.70710678118654752440
#define FDL_CU_SQRT2_PI 0.79788456080286535588     /* sqrt(2 / pi) */
#define FDL_CU_INV_SQRT_2PI 0.39894228040143267794 /* 1 / sqrt(2 pi) */
#define FDL_CU_GELU_C 0.044715

FDL_CU_HD float fdl_cu_exp(float x) { return expf(x); }
FDL_CU_HD double fdl_cu_exp(double x) { return exp(x); }
FDL_CU_HD float fdl_cu_tanh(float x) { return tanhf(x); }
FDL_CU_HD double fdl_cu_tanh(double x) { return tanh(x); }
FDL_CU_HD float fdl_cu_erfc(float x) { return erfcf(x); }
FDL_CU_HD double fdl_cu_erfc(double x) { return erfc(x); }
FDL_CU_HD float fdl_cu_abs(float x) { return fabsf(x); }
FDL_CU_HD double fdl_cu_abs(double x) { return fabs(x); }

template <typename T>
FDL_CU_HD T fdl_cu_sigmoid(T x) {
    T e = fdl_cu_exp(-fdl_cu_abs(x));
    return (x >= (T)0 ? (T)1 : e) / ((T)1 + e);
}

/* sigmoid(-x) = 1 - sigmoid(x) without the cancellation */
template <typename T>
FDL_CU_HD T fdl_cu_sigmoid_neg(T x) {
    T e = fdl_cu_exp(-fdl_cu_abs(x));
    return (x >= (T)0 ? e : (T)1) / ((T)1 + e);
}

template <typename T>
FDL_CU_HD T fdl_cu_gelu_tanh_u(T x) {
    return (T)FDL_CU_SQRT2_PI * (x + (T)FDL_CU_GELU_C * x * x * x);
}

template <typename T>
FDL_CU_HD T fdl_cu_sech2(T x) {
    T e = fdl_cu_exp((T)-2 * fdl_cu_abs(x));
    T d = (T)1 + e;
    return (T)4 * e / (d * d);
}

template <typename T>
FDL_CU_HD T fdl_cu_gelu_grad(T x) {
    T cdf = (T)0.5 * fdl_cu_erfc(x * (T)-FDL_CU_SQRT1_2);
    T pdf = (T)FDL_CU_INV_SQRT_2PI * fdl_cu_exp((T)-0.5 * x * x);
    T g = cdf + x * pdf;
    T limit = x > (T)0 ? (T)1 : (T)0;
    return fdl_cu_abs(x) == (T)INFINITY ? limit : g;
}

template <typename T>
FDL_CU_HD T fdl_cu_gelu_tanh_grad(T x) {
    T u = fdl_cu_gelu_tanh_u(x);
    T g = fdl_cu_sigmoid((T)2 * u)
        + (T)0.5 * x * fdl_cu_sech2(u) * (T)FDL_CU_SQRT2_PI
          * ((T)1 + (T)(3 * FDL_CU_GELU_C) * x * x);
    /* beyond |x| = 1e4 sech^2 is 0 and x^3 may be inf (0 * inf): the limits */
    T limit = x > (T)0 ? (T)1 : (T)0;
    return fdl_cu_abs(x) > (T)1e4 ? limit : g;
}

template <typename T>
FDL_CU_HD T fdl_cu_silu_grad(T x) {
    T g = fdl_cu_sigmoid(x) * ((T)1 + x * fdl_cu_sigmoid_neg(x));
    T limit = x > (T)0 ? (T)1 : (T)0;
    return fdl_cu_abs(x) == (T)INFINITY ? limit : g;
}

/* y = op(a, b; p): unary ops read a only (b is ignored); the chain rule takes (dy, x or y). */
template <int OP, typename T>
FDL_CU_HD T fdl_cu_ew_apply(T a, T b, T p) {
    (void)b;
    (void)p;
    if constexpr (OP == FDL_CU_RELU) {
        return a < (T)0 ? (T)0 : a;
    } else if constexpr (OP == FDL_CU_LEAKY_RELU) {
        return a < (T)0 ? p * a : a;
    } else if constexpr (OP == FDL_CU_SIGMOID) {
        return fdl_cu_sigmoid(a);
    } else if constexpr (OP == FDL_CU_TANH) {
        return fdl_cu_tanh(a);
    } else if constexpr (OP == FDL_CU_GELU) {
        T y = (T)0.5 * a * fdl_cu_erfc(a * (T)-FDL_CU_SQRT1_2);
        return a == -(T)INFINITY ? (T)0 : y;
    } else if constexpr (OP == FDL_CU_GELU_TANH) {
        T y = a * fdl_cu_sigmoid((T)2 * fdl_cu_gelu_tanh_u(a));
        return a == -(T)INFINITY ? (T)0 : y;
    } else if constexpr (OP == FDL_CU_SILU) {
        T y = a * fdl_cu_sigmoid(a);
        return a == -(T)INFINITY ? (T)0 : y;
    } else if constexpr (OP == FDL_CU_RELU_GRAD) {
        return a > (T)0 ? (T)1 : (T)0;
    } else if constexpr (OP == FDL_CU_LEAKY_RELU_GRAD) {
        return a > (T)0 ? (T)1 : p;
    } else if constexpr (OP == FDL_CU_SIGMOID_GRAD) {
        T e = fdl_cu_exp(-fdl_cu_abs(a));
        T d = (T)1 + e;
        return e / (d * d);
    } else if constexpr (OP == FDL_CU_TANH_GRAD) {
        return fdl_cu_sech2(a);
    } else if constexpr (OP == FDL_CU_GELU_GRAD) {
        return fdl_cu_gelu_grad(a);
    } else if constexpr (OP == FDL_CU_GELU_TANH_GRAD) {
        return fdl_cu_gelu_tanh_grad(a);
    } else if constexpr (OP == FDL_CU_SILU_GRAD) {
        return fdl_cu_silu_grad(a);
    } else if constexpr (OP == FDL_CU_ADD) {
        return a + b;
    } else if constexpr (OP == FDL_CU_SUBTRACT) {
        return a - b;
    } else if constexpr (OP == FDL_CU_MULTIPLY) {
        return a * b;
    } else if constexpr (OP == FDL_CU_DIVIDE) {
        return a / b;
    } else if constexpr (OP == FDL_CU_MAXIMUM) {
        return (a >= b || a != a) ? a : b;      /* NaN in either gives NaN, as np.maximum */
    } else if constexpr (OP == FDL_CU_RELU_BW) {
        return b > (T)0 ? a : (T)0;
    } else if constexpr (OP == FDL_CU_LEAKY_RELU_BW) {
        return a * (b > (T)0 ? (T)1 : p);
    } else if constexpr (OP == FDL_CU_SIGMOID_BW) {
        return a * b * ((T)1 - b);
    } else if constexpr (OP == FDL_CU_TANH_BW) {
        return a * ((T)1 - b * b);
    } else if constexpr (OP == FDL_CU_GELU_BW) {
        return a * fdl_cu_gelu_grad(b);
    } else if constexpr (OP == FDL_CU_GELU_TANH_BW) {
        return a * fdl_cu_gelu_tanh_grad(b);
    } else {
        static_assert(OP == FDL_CU_SILU_BW, "unknown elementwise op");
        return a * fdl_cu_silu_grad(b);
    }
}

#endif
