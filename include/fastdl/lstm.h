/* Fused LSTM cell nonlinearities: one pass over a row of gate pre-activations.
 *
 * Gate layout of a row of 4H values: [i | f | g | o], each H long (PyTorch's order).
 * The two GEMMs (x W_ih + b, h W_hh) happen before, in BLAS; what is left is memory-bound
 * elementwise work, so it is done once, row by row, with every transcendental from vmath.h
 * (no libm call, so the loop vectorises in every FDL_DISPATCH clone).
 *
 * Both kernels work in place on the gate row `g`, because the caller owns that buffer:
 *   forward:  g holds x W_ih + b + h W_hh on entry (the second GEMM accumulates onto the
 *             first with beta = 1, so no second gate buffer is written and read back), the
 *             activated gates (i, f, g, o) on exit (the cache of the backward);
 *   backward: g holds the activated gates on entry, d(pre-activation) on exit, which is
 *             the right-hand side of the two backward GEMMs.
 */
#ifndef FASTDL_LSTM_H
#define FASTDL_LSTM_H

#include <stddef.h>
#include "fastdl/config.h"
#include "fastdl/vmath.h"

/* sigmoid from e = exp(-|x|) <= 1: never overflows, keeps relative accuracy for x << 0
   (e / (1 + e) instead of 1 - 1 / (1 + e)); NaN passes through. */
FDL_INLINE float fdl_lstm_sigmoidf(float x)
{
    float e = fdl_expf_nonpos(-__builtin_fabsf(x));
    float r = 1.0f / (1.0f + e);
    return fdl_selectf(x >= 0.0f, r, e * r);
}

FDL_INLINE double fdl_lstm_sigmoid(double x)
{
    double e = fdl_exp_nonpos(-__builtin_fabs(x));
    double r = 1.0 / (1.0 + e);
    return fdl_select(x >= 0.0, r, e * r);
}

#define FDL_LSTM_FORWARD(NAME, T, SIG, TANH)                                                \
FDL_DISPATCH static void NAME(T *FDL_RESTRICT g, const T *FDL_RESTRICT c,                    \
                              T *FDL_RESTRICT h_new,                                         \
                              T *FDL_RESTRICT c_new, ptrdiff_t H)                            \
{                                                                                            \
    for (ptrdiff_t j = 0; j < H; j++) {                                                      \
        T gi = SIG(g[j]);                                                                    \
        T gf = SIG(g[H + j]);                                                                \
        T gg = TANH(g[2 * H + j]);                                                           \
        T go = SIG(g[3 * H + j]);                                                            \
        T cn = gf * c[j] + gi * gg;                                                          \
        g[j] = gi;                                                                           \
        g[H + j] = gf;                                                                       \
        g[2 * H + j] = gg;                                                                   \
        g[3 * H + j] = go;                                                                   \
        c_new[j] = cn;                                                                       \
        h_new[j] = go * TANH(cn);                                                            \
    }                                                                                        \
}

/* dh / dc: gradients arriving at h_new and c_new; dc_prev: gradient of c. tanh(c_new) is
   recomputed from the cached gates (one tanh per element) rather than stored: it saves a
   (B, H) buffer per time step in the LSTM layer. */
#define FDL_LSTM_BACKWARD(NAME, T, TANH)                                                    \
FDL_DISPATCH static void NAME(T *FDL_RESTRICT g, const T *FDL_RESTRICT c,                    \
                              const T *FDL_RESTRICT dh, const T *FDL_RESTRICT dc,            \
                              T *FDL_RESTRICT dc_prev, ptrdiff_t H)                          \
{                                                                                            \
    for (ptrdiff_t j = 0; j < H; j++) {                                                      \
        T gi = g[j], gf = g[H + j], gg = g[2 * H + j], go = g[3 * H + j];                    \
        T tc = TANH(gf * c[j] + gi * gg);                                                    \
        T dcn = dc[j] + dh[j] * go * ((T)1 - tc * tc);                                       \
        g[j] = dcn * gg * gi * ((T)1 - gi);                                                  \
        g[H + j] = dcn * c[j] * gf * ((T)1 - gf);                                            \
        g[2 * H + j] = dcn * gi * ((T)1 - gg * gg);                                          \
        g[3 * H + j] = dh[j] * tc * go * ((T)1 - go);                                        \
        dc_prev[j] = dcn * gf;                                                               \
    }                                                                                        \
}

FDL_LSTM_FORWARD(fdl_lstm_forward_f32, float, fdl_lstm_sigmoidf, fdl_tanhf)
FDL_LSTM_FORWARD(fdl_lstm_forward_f64, double, fdl_lstm_sigmoid, fdl_tanh)
FDL_LSTM_BACKWARD(fdl_lstm_backward_f32, float, fdl_tanhf)
FDL_LSTM_BACKWARD(fdl_lstm_backward_f64, double, fdl_tanh)

#endif
