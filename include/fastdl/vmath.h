/*
 * Vector math for fastdl's inner loops: exp, log, tanh, erf in float32 and float64.
 *
 * Each function is static inline and branch-free in its hot path, so that a loop calling it
 * over a contiguous block is vectorised by the compiler (no libm calls inside the loop).
 * Accuracy targets: float32 within ~1e-6 relative (a few ULP), float64 within ~1e-14 relative,
 * against the float64 / long-double reference over the whole range; NaN propagates; +-inf,
 * overflow, underflow and denormals give the IEEE limits (exp(-inf) = 0, exp(+inf) = inf,
 * log(0) = -inf, log(x < 0) = NaN, tanh(+-inf) = +-1, erf(+-inf) = +-1).
 *
 * API (stable; the implementation behind it may change):
 *   float  fdl_expf(float x);   double fdl_exp(double x);
 *   float  fdl_logf(float x);   double fdl_log(double x);
 *   float  fdl_tanhf(float x);  double fdl_tanh(double x);
 *   float  fdl_erff(float x);   double fdl_erf(double x);
 */
#ifndef FASTDL_VMATH_H
#define FASTDL_VMATH_H

#include <math.h>
#include "config.h"

/* Reference implementation through libm (correct, not vectorised). */
static inline float fdl_expf(float x) { return expf(x); }
static inline double fdl_exp(double x) { return exp(x); }
static inline float fdl_logf(float x) { return logf(x); }
static inline double fdl_log(double x) { return log(x); }
static inline float fdl_tanhf(float x) { return tanhf(x); }
static inline double fdl_tanh(double x) { return tanh(x); }
static inline float fdl_erff(float x) { return erff(x); }
static inline double fdl_erf(double x) { return erf(x); }

#endif
