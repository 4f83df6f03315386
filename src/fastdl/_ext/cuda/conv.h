/*
 * conv2d's lowering kernels (NCHW). The GEMMs themselves go through fdl_cuda_gemm (blas.h).
 *
 * A "chunk" is images [n0, n0 + nb) and output rows [oh0, oh0 + R) (R < Ho only when one
 * image's columns exceed the workspace, then nb == 1). Its P = R*Wo output pixels per image
 * are lowered into cols, a (K x nb*P) row-major matrix with K = C*kh*kw rows in (c, i, j)
 * order and ld = nb*P: column nn*P + q is pixel q of image n0 + nn. One layout serves the
 * forward GEMMs (a strided batch over the images, ld nb*P, stride P) and the weight
 * gradient (one GEMM whose k runs over the chunk's nb*P pixels).
 *
 * Each *_host twin runs the same per-element code on host memory, for the CPU tests.
 */
#ifndef FASTDL_CUDA_CONV_H
#define FASTDL_CUDA_CONV_H

#include "api.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t N, C, H, W;        /* input */
    int64_t O, Ho, Wo;         /* output channels and size */
    int64_t kh, kw, sh, sw, pt, pl, dh, dw;   /* kernel, stride, top/left padding, dilation */
} fdl_cuda_conv_geom;

/* cols[(c*kh + i)*kw + j][nn*P + q] = x[n0+nn, c, oh*sh - pt + i*dh, ow*sw - pl + j*dw] (0 in
 * the padding), q = (oh - oh0)*Wo + ow. */
int fdl_cuda_im2col(int dtype, const void *x, const fdl_cuda_conv_geom *g, int64_t n0,
                    int64_t nb, int64_t oh0, int64_t R, void *cols, void *stream);
int fdl_cuda_im2col_host(int dtype, const void *x, const fdl_cuda_conv_geom *g, int64_t n0,
                         int64_t nb, int64_t oh0, int64_t R, void *cols);

/* The adjoint, as a gather: every input pixel of the chunk's images adds the cols entries it
 * was lowered into, in (i, j) order (deterministic, no atomics), and stores the sum into dx
 * (accumulate == 0) or adds it to dx (accumulate != 0; then only the input rows the chunk's
 * output rows reach are visited). */
int fdl_cuda_col2im(int dtype, const void *cols, const fdl_cuda_conv_geom *g, int64_t n0,
                    int64_t nb, int64_t oh0, int64_t R, void *dx, int accumulate, void *stream);
int fdl_cuda_col2im_host(int dtype, const void *cols, const fdl_cuda_conv_geom *g, int64_t n0,
                         int64_t nb, int64_t oh0, int64_t R, void *dx, int accumulate);

/* dyc (O x nb*P, ld nb*P): dyc[o][nn*P + q] = dy[n0+nn, o, oh0*Wo + q], the chunk's output
 * gradient in cols' column order. */
int fdl_cuda_conv_gather_dy(int dtype, const void *dy, const fdl_cuda_conv_geom *g, int64_t n0,
                            int64_t nb, int64_t oh0, int64_t R, void *dyc, void *stream);
int fdl_cuda_conv_gather_dy_host(int dtype, const void *dy, const fdl_cuda_conv_geom *g,
                                 int64_t n0, int64_t nb, int64_t oh0, int64_t R, void *dyc);

/* Grouped convolutions with few channels per group (depthwise above all), where lowering
 * would copy each input value kh*kw times for a GEMM of k = Cg*kh*kw: one thread per output
 * value, y[n, o] = sum over its group's Cg channels and the taps in (c, i, j) order, plus
 * bias[o] (bias may be NULL). */
int fdl_cuda_conv_direct(int dtype, const void *x, const void *w, const void *bias,
                         const fdl_cuda_conv_geom *g, int64_t groups, void *y, void *stream);
int fdl_cuda_conv_direct_host(int dtype, const void *x, const void *w, const void *bias,
                              const fdl_cuda_conv_geom *g, int64_t groups, void *y);

#ifdef __cplusplus
}
#endif
#endif
