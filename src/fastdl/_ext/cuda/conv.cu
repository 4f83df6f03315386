/*
 * conv2d's lowering kernels (conv.h): im2col, its adjoint col2im as a gather, and the
 * reordering of dy into cols' column order. Each kernel walks "lines" (one image-channel
 * pair) with blockIdx.y and the pixels of a line with the threads of blockIdx.x, so that
 * consecutive threads write consecutive addresses; the per-pixel work is a __host__
 * __device__ function that the host twins call too.
 */
#include "common.cuh"
#include "conv.h"

namespace {

struct Chunk {
    int64_t n0, nb, oh0, R;
    int64_t P;    // pixels per image in the chunk (R * Wo)
    int64_t ld;   // row stride of cols and dyc (nb * P)
};

Chunk make_chunk(const fdl_cuda_conv_geom &g, int64_t n0, int64_t nb, int64_t oh0, int64_t R) {
    Chunk k;
    k.n0 = n0;
    k.nb = nb;
    k.oh0 = oh0;
    k.R = R;
    k.P = R * g.Wo;
    k.ld = nb * k.P;
    return k;
}

// Output pixel q of image nn, channel c: its kh*kw taps, one per row of cols.
template <typename T>
__host__ __device__ inline void im2col_pixel(const T *x, const fdl_cuda_conv_geom &g,
                                             const Chunk &k, T *cols, int64_t nn, int64_t c,
                                             int64_t q) {
    int64_t r = q / g.Wo;
    int64_t oh = k.oh0 + r, ow = q - r * g.Wo;
    int64_t ih0 = oh * g.sh - g.pt, iw0 = ow * g.sw - g.pl;
    const T *xp = x + ((k.n0 + nn) * g.C + c) * g.H * g.W;
    T *dst = cols + c * g.kh * g.kw * k.ld + nn * k.P + q;
    for (int64_t i = 0; i < g.kh; ++i) {
        int64_t ih = ih0 + i * g.dh;
        bool row_in = ih >= 0 && ih < g.H;
        for (int64_t j = 0; j < g.kw; ++j) {
            int64_t iw = iw0 + j * g.dw;
            *dst = row_in && iw >= 0 && iw < g.W ? xp[ih * g.W + iw] : (T)0;
            dst += k.ld;
        }
    }
}

// Input pixel (h, w) of image nn, channel c: the sum of the cols entries it was copied to by
// the chunk's output rows, taps in (i, j) order.
template <typename T>
__host__ __device__ inline void col2im_pixel(const T *cols, const fdl_cuda_conv_geom &g,
                                             const Chunk &k, T *dx, int accumulate, int64_t nn,
                                             int64_t c, int64_t h, int64_t w) {
    T acc = (T)0;
    const T *base = cols + c * g.kh * g.kw * k.ld + nn * k.P;
    for (int64_t i = 0; i < g.kh; ++i) {
        int64_t th = h + g.pt - i * g.dh;   // = oh * sh for the output row tap i reads h from
        if (th < 0) break;                  // th falls as i grows
        int64_t oh = th / g.sh;
        if (oh * g.sh != th || oh < k.oh0 || oh >= k.oh0 + k.R) continue;
        const T *row = base + i * g.kw * k.ld + (oh - k.oh0) * g.Wo;
        for (int64_t j = 0; j < g.kw; ++j) {
            int64_t tw = w + g.pl - j * g.dw;
            if (tw < 0) break;
            int64_t ow = tw / g.sw;
            if (ow * g.sw != tw || ow >= g.Wo) continue;
            acc += row[j * k.ld + ow];
        }
    }
    T *d = dx + ((k.n0 + nn) * g.C + c) * g.H * g.W + h * g.W + w;
    *d = accumulate ? *d + acc : acc;
}

template <typename T>
__host__ __device__ inline void gather_dy_elem(const T *dy, const fdl_cuda_conv_geom &g,
                                               const Chunk &k, T *dyc, int64_t nn, int64_t o,
                                               int64_t q) {
    dyc[o * k.ld + nn * k.P + q] = dy[((k.n0 + nn) * g.O + o) * g.Ho * g.Wo + k.oh0 * g.Wo + q];
}

// Output value (n, o, q) of a grouped convolution, computed directly.
template <typename T>
__host__ __device__ inline void direct_pixel(const T *x, const T *w, const T *bias,
                                             const fdl_cuda_conv_geom &g, int64_t Cg,
                                             int64_t Og, T *y, int64_t line, int64_t q) {
    int64_t n = line / g.O, o = line - n * g.O;
    int64_t r = q / g.Wo;
    int64_t ih0 = r * g.sh - g.pt, iw0 = (q - r * g.Wo) * g.sw - g.pl;
    const T *xg = x + (n * g.C + (o / Og) * Cg) * g.H * g.W;
    const T *wo = w + o * Cg * g.kh * g.kw;
    T acc = (T)0;
    for (int64_t c = 0; c < Cg; ++c) {
        const T *xc = xg + c * g.H * g.W;
        for (int64_t i = 0; i < g.kh; ++i) {
            int64_t ih = ih0 + i * g.dh;
            if (ih < 0 || ih >= g.H) continue;
            for (int64_t j = 0; j < g.kw; ++j) {
                int64_t iw = iw0 + j * g.dw;
                if (iw < 0 || iw >= g.W) continue;
                acc += xc[ih * g.W + iw] * wo[(c * g.kh + i) * g.kw + j];
            }
        }
    }
    y[line * g.Ho * g.Wo + q] = bias ? acc + bias[o] : acc;
}

// The input rows [h0, h1) that col2im visits.
void col2im_rows(const fdl_cuda_conv_geom &g, const Chunk &k, int accumulate, int64_t *h0,
                 int64_t *h1) {
    *h0 = 0;
    *h1 = g.H;
    if (!accumulate) return;   // every pixel is stored, reached or not
    int64_t lo = k.oh0 * g.sh - g.pt;
    int64_t hi = (k.oh0 + k.R - 1) * g.sh - g.pt + (g.kh - 1) * g.dh + 1;
    *h0 = lo > 0 ? lo : 0;
    *h1 = hi < g.H ? hi : g.H;
    if (*h1 < *h0) *h1 = *h0;
}

dim3 line_grid(int64_t lines, int64_t len) {
    int64_t gx = (len + 255) / 256;
    if (gx > 128) gx = 128;
    if (gx < 1) gx = 1;
    int64_t gy = lines < 65535 ? lines : 65535;
    return dim3((unsigned)gx, (unsigned)gy);
}

#define FDL_LINES(line, lines) for (int64_t line = blockIdx.y; line < (lines); line += gridDim.y)
#define FDL_ALONG(i, len) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (len); \
         i += (int64_t)gridDim.x * blockDim.x)

template <typename T>
__global__ void im2col_kernel(const T *__restrict__ x, fdl_cuda_conv_geom g, Chunk k,
                              T *__restrict__ cols) {
    FDL_LINES(line, k.nb * g.C) {
        int64_t nn = line / g.C, c = line - nn * g.C;
        FDL_ALONG(q, k.P) im2col_pixel(x, g, k, cols, nn, c, q);
    }
}

template <typename T>
__global__ void col2im_kernel(const T *__restrict__ cols, fdl_cuda_conv_geom g, Chunk k,
                              T *__restrict__ dx, int accumulate, int64_t h0, int64_t h1) {
    int64_t len = (h1 - h0) * g.W;
    FDL_LINES(line, k.nb * g.C) {
        int64_t nn = line / g.C, c = line - nn * g.C;
        FDL_ALONG(i, len) {
            int64_t r = i / g.W;
            col2im_pixel(cols, g, k, dx, accumulate, nn, c, h0 + r, i - r * g.W);
        }
    }
}

template <typename T>
__global__ void gather_dy_kernel(const T *__restrict__ dy, fdl_cuda_conv_geom g, Chunk k,
                                 T *__restrict__ dyc) {
    FDL_LINES(line, k.nb * g.O) {
        int64_t nn = line / g.O, o = line - nn * g.O;
        FDL_ALONG(q, k.P) gather_dy_elem(dy, g, k, dyc, nn, o, q);
    }
}

template <typename T>
__global__ void direct_kernel(const T *__restrict__ x, const T *__restrict__ w,
                              const T *__restrict__ bias, fdl_cuda_conv_geom g, int64_t Cg,
                              int64_t Og, T *__restrict__ y) {
    FDL_LINES(line, g.N * g.O) {
        FDL_ALONG(q, g.Ho * g.Wo) direct_pixel(x, w, bias, g, Cg, Og, y, line, q);
    }
}

template <typename T>
int direct_t(const T *x, const T *w, const T *bias, const fdl_cuda_conv_geom &g, int64_t groups,
             T *y, cudaStream_t st) {
    int64_t lines = g.N * g.O, len = g.Ho * g.Wo;
    if (lines <= 0 || len <= 0) return 0;
    direct_kernel<T><<<line_grid(lines, len), 256, 0, st>>>(x, w, bias, g, g.C / groups,
                                                           g.O / groups, y);
    FDL_CUDA_RETURN_LAUNCH();
}

template <typename T>
void direct_host_t(const T *x, const T *w, const T *bias, const fdl_cuda_conv_geom &g,
                   int64_t groups, T *y) {
    for (int64_t line = 0; line < g.N * g.O; ++line)
        for (int64_t q = 0; q < g.Ho * g.Wo; ++q)
            direct_pixel(x, w, bias, g, g.C / groups, g.O / groups, y, line, q);
}

bool groups_ok(const fdl_cuda_conv_geom *g, int64_t groups) {
    return g && groups > 0 && g->C % groups == 0 && g->O % groups == 0 && g->sh > 0 &&
           g->sw > 0 && g->dh > 0 && g->dw > 0;
}

template <typename T>
int im2col_t(const T *x, const fdl_cuda_conv_geom &g, const Chunk &k, T *cols, cudaStream_t st) {
    int64_t lines = k.nb * g.C;
    if (lines <= 0 || k.P <= 0 || g.kh * g.kw <= 0) return 0;
    im2col_kernel<T><<<line_grid(lines, k.P), 256, 0, st>>>(x, g, k, cols);
    FDL_CUDA_RETURN_LAUNCH();
}

template <typename T>
int col2im_t(const T *cols, const fdl_cuda_conv_geom &g, const Chunk &k, T *dx, int accumulate,
             cudaStream_t st) {
    int64_t h0, h1;
    col2im_rows(g, k, accumulate, &h0, &h1);
    int64_t lines = k.nb * g.C, len = (h1 - h0) * g.W;
    if (lines <= 0 || len <= 0) return 0;
    col2im_kernel<T><<<line_grid(lines, len), 256, 0, st>>>(cols, g, k, dx, accumulate, h0, h1);
    FDL_CUDA_RETURN_LAUNCH();
}

template <typename T>
int gather_dy_t(const T *dy, const fdl_cuda_conv_geom &g, const Chunk &k, T *dyc, cudaStream_t st) {
    int64_t lines = k.nb * g.O;
    if (lines <= 0 || k.P <= 0) return 0;
    gather_dy_kernel<T><<<line_grid(lines, k.P), 256, 0, st>>>(dy, g, k, dyc);
    FDL_CUDA_RETURN_LAUNCH();
}

template <typename T>
void im2col_host_t(const T *x, const fdl_cuda_conv_geom &g, const Chunk &k, T *cols) {
    for (int64_t nn = 0; nn < k.nb; ++nn)
        for (int64_t c = 0; c < g.C; ++c)
            for (int64_t q = 0; q < k.P; ++q) im2col_pixel(x, g, k, cols, nn, c, q);
}

template <typename T>
void col2im_host_t(const T *cols, const fdl_cuda_conv_geom &g, const Chunk &k, T *dx,
                   int accumulate) {
    int64_t h0, h1;
    col2im_rows(g, k, accumulate, &h0, &h1);
    for (int64_t nn = 0; nn < k.nb; ++nn)
        for (int64_t c = 0; c < g.C; ++c)
            for (int64_t h = h0; h < h1; ++h)
                for (int64_t w = 0; w < g.W; ++w)
                    col2im_pixel(cols, g, k, dx, accumulate, nn, c, h, w);
}

template <typename T>
void gather_dy_host_t(const T *dy, const fdl_cuda_conv_geom &g, const Chunk &k, T *dyc) {
    for (int64_t nn = 0; nn < k.nb; ++nn)
        for (int64_t o = 0; o < g.O; ++o)
            for (int64_t q = 0; q < k.P; ++q) gather_dy_elem(dy, g, k, dyc, nn, o, q);
}

// A chunk inside the geometry, or false (a caller bug, reported as cudaErrorInvalidValue
// rather than as an out-of-bounds access).
bool chunk_ok(const fdl_cuda_conv_geom *g, int64_t n0, int64_t nb, int64_t oh0, int64_t R) {
    return g && n0 >= 0 && nb >= 0 && n0 + nb <= g->N && oh0 >= 0 && R >= 0 &&
           oh0 + R <= g->Ho && g->sh > 0 &&
           g->sw > 0 && g->dh > 0 && g->dw > 0 && g->Wo >= 0;
}

}  // namespace

#define FDL_CONV_DISPATCH(call_f32, call_f64)                     \
    do {                                                          \
        if (dtype == FDL_CUDA_F32) return call_f32;               \
        if (dtype == FDL_CUDA_F64) return call_f64;               \
        return (int)cudaErrorInvalidValue;                        \
    } while (0)

#define FDL_CONV_HOST_DISPATCH(call_f32, call_f64)                \
    do {                                                          \
        if (dtype == FDL_CUDA_F32) { call_f32; return 0; }        \
        if (dtype == FDL_CUDA_F64) { call_f64; return 0; }        \
        return (int)cudaErrorInvalidValue;                        \
    } while (0)

extern "C" int fdl_cuda_im2col(int dtype, const void *x, const fdl_cuda_conv_geom *g, int64_t n0,
                               int64_t nb, int64_t oh0, int64_t R, void *cols, void *stream) {
    if (!chunk_ok(g, n0, nb, oh0, R)) return (int)cudaErrorInvalidValue;
    Chunk k = make_chunk(*g, n0, nb, oh0, R);
    cudaStream_t st = FDL_CUDA_STREAM(stream);
    FDL_CONV_DISPATCH(im2col_t((const float *)x, *g, k, (float *)cols, st),
                      im2col_t((const double *)x, *g, k, (double *)cols, st));
}

extern "C" int fdl_cuda_im2col_host(int dtype, const void *x, const fdl_cuda_conv_geom *g,
                                    int64_t n0, int64_t nb, int64_t oh0, int64_t R, void *cols) {
    if (!chunk_ok(g, n0, nb, oh0, R)) return (int)cudaErrorInvalidValue;
    Chunk k = make_chunk(*g, n0, nb, oh0, R);
    FDL_CONV_HOST_DISPATCH(im2col_host_t((const float *)x, *g, k, (float *)cols),
                           im2col_host_t((const double *)x, *g, k, (double *)cols));
}

extern "C" int fdl_cuda_col2im(int dtype, const void *cols, const fdl_cuda_conv_geom *g,
                               int64_t n0, int64_t nb, int64_t oh0, int64_t R, void *dx,
                               int accumulate, void *stream) {
    if (!chunk_ok(g, n0, nb, oh0, R)) return (int)cudaErrorInvalidValue;
    Chunk k = make_chunk(*g, n0, nb, oh0, R);
    cudaStream_t st = FDL_CUDA_STREAM(stream);
    FDL_CONV_DISPATCH(col2im_t((const float *)cols, *g, k, (float *)dx, accumulate, st),
                      col2im_t((const double *)cols, *g, k, (double *)dx, accumulate, st));
}

extern "C" int fdl_cuda_col2im_host(int dtype, const void *cols, const fdl_cuda_conv_geom *g,
                                    int64_t n0, int64_t nb, int64_t oh0, int64_t R, void *dx,
                                    int accumulate) {
    if (!chunk_ok(g, n0, nb, oh0, R)) return (int)cudaErrorInvalidValue;
    Chunk k = make_chunk(*g, n0, nb, oh0, R);
    FDL_CONV_HOST_DISPATCH(col2im_host_t((const float *)cols, *g, k, (float *)dx, accumulate),
                           col2im_host_t((const double *)cols, *g, k, (double *)dx, accumulate));
}

extern "C" int fdl_cuda_conv_gather_dy(int dtype, const void *dy, const fdl_cuda_conv_geom *g,
                                       int64_t n0, int64_t nb, int64_t oh0, int64_t R, void *dyc,
                                       void *stream) {
    if (!chunk_ok(g, n0, nb, oh0, R)) return (int)cudaErrorInvalidValue;
    Chunk k = make_chunk(*g, n0, nb, oh0, R);
    cudaStream_t st = FDL_CUDA_STREAM(stream);
    FDL_CONV_DISPATCH(gather_dy_t((const float *)dy, *g, k, (float *)dyc, st),
                      gather_dy_t((const double *)dy, *g, k, (double *)dyc, st));
}

extern "C" int fdl_cuda_conv_gather_dy_host(int dtype, const void *dy, const fdl_cuda_conv_geom *g,
                                            int64_t n0, int64_t nb, int64_t oh0, int64_t R,
                                            void *dyc) {
    if (!chunk_ok(g, n0, nb, oh0, R)) return (int)cudaErrorInvalidValue;
    Chunk k = make_chunk(*g, n0, nb, oh0, R);
    FDL_CONV_HOST_DISPATCH(gather_dy_host_t((const float *)dy, *g, k, (float *)dyc),
                           gather_dy_host_t((const double *)dy, *g, k, (double *)dyc));
}

extern "C" int fdl_cuda_conv_direct(int dtype, const void *x, const void *w, const void *bias,
                                    const fdl_cuda_conv_geom *g, int64_t groups, void *y,
                                    void *stream) {
    if (!groups_ok(g, groups)) return (int)cudaErrorInvalidValue;
    cudaStream_t st = FDL_CUDA_STREAM(stream);
    FDL_CONV_DISPATCH(
        direct_t((const float *)x, (const float *)w, (const float *)bias, *g, groups,
                 (float *)y, st),
        direct_t((const double *)x, (const double *)w, (const double *)bias, *g, groups,
                 (double *)y, st));
}

extern "C" int fdl_cuda_conv_direct_host(int dtype, const void *x, const void *w, const void *bias,
                                         const fdl_cuda_conv_geom *g, int64_t groups, void *y) {
    if (!groups_ok(g, groups)) return (int)cudaErrorInvalidValue;
    FDL_CONV_HOST_DISPATCH(
        direct_host_t((const float *)x, (const float *)w, (const float *)bias, *g, groups,
                      (float *)y),
        direct_host_t((const double *)x, (const double *)w, (const double *)bias, *g, groups,
                      (double *)y));
}
