# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""conv2d and conv2d_backward (NCHW, PyTorch's cross-correlation).

Paths, chosen from the shape (and the machine's processor count, never the thread count):

* pointwise (1x1, stride 1, no padding): Y[n] (O x HW) = W (O x C) @ X[n] (C x HW) with X read
  in place by BLAS (no lowering copy); one image per work item, its bias written just before
  its GEMM adds onto it. dX[n] = Wᵀ dY[n] the same way.
* fused lowering (im2col, at least one unit per processor): a unit is one image, or a block of
  its output rows, whose lowered columns (K x unit columns, K = C*kh*kw in (c, i, j) order)
  fit about the L2 cache (``_unit_target``). One parallel loop (dynamic schedule) takes
  units; each lowers its unit into its thread's own buffer and multiplies it at once with one
  single-threaded GEMM call through ``_blas.gemm_batched`` (one thread: no OpenMP region
  inside the loop). The columns never reach memory, and the schedule absorbs a core that
  another process takes.
* chunked lowering (fewer units than processors, or units too big for the cap): chunks of
  images, or of output rows, lowered in parallel into one buffer, then one gemm_batched call
  that spreads the chunk's GEMMs, or tiles of one, over the threads.
* direct (groups > 1 with at most ``_direct_max_cg`` channels per group, depthwise above
  all): one output plane per work item from zero-padded copies of its group's input planes,
  vectorised over the output width, no GEMM (conv.h).

Backward: db sums dy per channel in double. dW = sum over units of dY_u @ cols_uᵀ, in a
fixed number of parts (from the processor count) each summed in unit order, the parts added
in order. dX: for stride 1, the convolution of dy with w flipped and its channels swapped
(a forward conv with K = O*kh*kw, where Wᵀ dY would have K = O only, and no scatter);
otherwise dcols = Wᵀ dY per image, then col2im adds it into dx, one thread per image.

Memory: lowering buffers, padded copies and partial sums stay under ``get_workspace_limit()``
bytes (64 MiB by default, ``set_workspace_limit``), except that one output row of one image
(K x Wo) is the smallest piece. A cap below a path's needs moves work to the chunked path
and smaller pieces: the results then differ in rounding only (OpenBLAS's edge micro-kernels
round differently when a GEMM's size changes).

Determinism: every split depends on the shape and the processor count only; each unit is
computed the same way on whichever thread; sums combine in a fixed order. Results are
bitwise identical for any thread count.
"""

import operator

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy, memset

from fastdl._ext._blas cimport Mat, DT_FLOAT32, gemm_batched, check_blas_dims
from fastdl._ext._common cimport on_device, gpu_call
from fastdl._ext._common cimport (as_float_array, common_typenum, as_typenum, dtype_code,
                                  current_threads, shape_of)

cdef extern from "fastdl/threads.h" nogil:
    int fdl_omp_num_procs()

cdef extern from "fastdl/conv.h" nogil:
    ctypedef struct fdl_conv_geom:
        Py_ssize_t H, W, Ho, Wo
        Py_ssize_t kh, kw, sh, sw, pt, pl, dh, dw
    void fdl_im2col_row_f32(const float *x, Py_ssize_t sy, Py_ssize_t sx,
                            const fdl_conv_geom *g, Py_ssize_t i, Py_ssize_t j,
                            Py_ssize_t oh0, Py_ssize_t oh1, float *dst)
    void fdl_im2col_row_f64(const double *x, Py_ssize_t sy, Py_ssize_t sx,
                            const fdl_conv_geom *g, Py_ssize_t i, Py_ssize_t j,
                            Py_ssize_t oh0, Py_ssize_t oh1, double *dst)
    void fdl_col2im_row_f32(float *dx, const fdl_conv_geom *g, Py_ssize_t i, Py_ssize_t j,
                            Py_ssize_t oh0, Py_ssize_t oh1, const float *src)
    void fdl_col2im_row_f64(double *dx, const fdl_conv_geom *g, Py_ssize_t i, Py_ssize_t j,
                            Py_ssize_t oh0, Py_ssize_t oh1, const double *src)
    void fdl_direct_plane_f32(const float *x, Py_ssize_t cg, const float *w, float bias,
                              const fdl_conv_geom *g, float *y)
    void fdl_direct_plane_f64(const double *x, Py_ssize_t cg, const double *w, double bias,
                              const fdl_conv_geom *g, double *y)
    void fdl_direct_padded_plane_f32(const float *x, Py_ssize_t cg, const float *w, float bias,
                                     const fdl_conv_geom *g, float *scratch, float *y)
    void fdl_direct_padded_plane_f64(const double *x, Py_ssize_t cg, const double *w,
                                     double bias, const fdl_conv_geom *g, double *scratch,
                                     double *y)
    void fdl_padded_dims(const fdl_conv_geom *g, Py_ssize_t *Hp, Py_ssize_t *Wp)
    void fdl_cl_pad_f32(const float *x, Py_ssize_t sxn, Py_ssize_t sxc, Py_ssize_t sxh,
                        Py_ssize_t sxw, Py_ssize_t nb, Py_ssize_t C, const fdl_conv_geom *g,
                        Py_ssize_t Hp, Py_ssize_t Wp, float *xp)
    void fdl_cl_cols_f32(const float *xp, Py_ssize_t nb, Py_ssize_t C, const fdl_conv_geom *g,
                         Py_ssize_t Hp, Py_ssize_t Wp, float *cols)
    void fdl_cl_scatter_f32(const float *yt, Py_ssize_t nb, Py_ssize_t P, Py_ssize_t O,
                            const float *bias, float *y)
    double fdl_conv_sum_f32(const float *x, Py_ssize_t n)
    double fdl_conv_sum_f64(const double *x, Py_ssize_t n)

cdef extern from "fastdl/sgemm.h" nogil:
    int fdl_sgemm_level()
    Py_ssize_t fdl_sgemm_scratch(Py_ssize_t M, Py_ssize_t K)
    void fdl_sgemm_implicit_avx512(Py_ssize_t M, Py_ssize_t K, const float *A,
                                   const float *xp, const Py_ssize_t *offs, Py_ssize_t Wp,
                                   Py_ssize_t Ho, Py_ssize_t Wo, float *y, Py_ssize_t ldc,
                                   const float *rbias)
    void fdl_sgemm_implicit_avx2(Py_ssize_t M, Py_ssize_t K, const float *A,
                                 const float *xp, const Py_ssize_t *offs, Py_ssize_t Wp,
                                 Py_ssize_t Ho, Py_ssize_t Wo, float *y, Py_ssize_t ldc,
                                 const float *rbias)
    int fdl_sgemm(int level, int accumulate, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                  float alpha, const float *A, Py_ssize_t lda, const float *B,
                  Py_ssize_t ldb, float *C, Py_ssize_t ldc, const float *rbias,
                  float *scratch)

cnp.import_array()

# Below this many elements a memory-bound loop runs on one thread, with no OpenMP region.
cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 32768
# Below this many multiply-adds the GIL is kept (releasing it costs more than the work).
cdef double NOGIL_MIN_WORK = 65536.0
# Below this many multiply-adds a convolution runs on one thread with no OpenMP region (the
# threshold below which OpenBLAS does not thread a GEMM either).
cdef double PARALLEL_MIN_WORK = 262144.0

# The workspace cap (bytes), and the chunked path's chunk size aimed at (the L3 cache).
cdef Py_ssize_t _workspace_limit = 64 * 1024 * 1024
cdef Py_ssize_t _chunk_target = 8 * 1024 * 1024
# The fused path's unit: one image, or a block of its output rows, lowered into this many
# bytes at most (about the L2 cache, so the GEMM reads the columns from L2).
cdef Py_ssize_t _unit_target = 1024 * 1024
cdef Py_ssize_t _dw_unit_target = 1024 * 1024
# Grouped convolutions with at most this many input channels per group run the direct kernel
# forward (measured, 32x128x28x28 3x3, one thread: direct 5.8 / 7.1 ms against lowered 12.7 /
# 9.4 ms for 1 / 2 channels per group, but 13.5 against 9.3 ms for 4).
cdef Py_ssize_t _direct_max_cg = 2

# The float32 forward's unit GEMMs (one group): "auto" runs include/fastdl/sgemm.h's
# register-blocked kernel where the CPU has AVX2 or AVX-512 (measured on one Zen 4 core, the
# 64 x 1024 x 576 unit of a 64-channel 3x3 conv: 106 GFLOP/s against OpenBLAS's 79), "blas"
# forces gemm_batched (tests, comparisons).
GEMM_KERNEL = "auto"
cdef int _CPU_SGEMM = fdl_sgemm_level()
# Stride-1 float32 convolutions with Wo a multiple of 32 run as an implicit GEMM on that
# kernel (no lowering buffer); False forces the lowered path (tests, comparisons).
IMPLICIT_GEMM = True
# float32 one-group convolutions of images with at most SMALL_HWO output pixels: the columns
# of a group of images side by side, one kernel call (SMALL_IMAGES = False: per image).
SMALL_IMAGES = True
cdef Py_ssize_t SMALL_HWO = 64
# Small images with at least this many input channels are lowered channels last (a pixel's
# lowered row is kh*kw runs of C floats); fewer channels, NCHW rows (channels-last rows of
# K = 9 floats made the 1-channel stem of the digits CNN 3x slower)
cdef Py_ssize_t CL_MIN_CHANNELS = 8


cdef int _sgemm_level() except -1:
    if GEMM_KERNEL == "auto":
        return _CPU_SGEMM
    if GEMM_KERNEL == "blas":
        return 0
    if GEMM_KERNEL == "avx2" and _CPU_SGEMM >= 1:
        return 1
    raise ValueError(f"fastdl._ext._conv.GEMM_KERNEL must be 'auto', 'blas' or (on a CPU "
                     f"with AVX2) 'avx2', got {GEMM_KERNEL!r}")


def get_workspace_limit():
    """Bytes the lowering buffer of conv2d / conv2d_backward may take at most."""
    return _workspace_limit


def set_workspace_limit(Py_ssize_t nbytes):
    """Cap the lowering buffer at `nbytes` (at least 1); returns the previous cap.

    Work is cut into chunks of images, or of output rows of one image, so that the buffer
    stays under the cap; the smallest piece is one output row of one image (K x Wo elements).
    """
    global _workspace_limit
    if nbytes < 1:
        raise ValueError(f"fastdl.conv2d: the workspace limit must be >= 1 byte, got {nbytes}")
    previous = _workspace_limit
    _workspace_limit = nbytes
    return previous


def _set_chunk_target(Py_ssize_t nbytes):
    """Tuning hook: the chunk size aimed at (bytes, under the cap); returns the previous."""
    global _chunk_target
    previous = _chunk_target
    _chunk_target = max(1, nbytes)
    return previous


def _set_unit_target(Py_ssize_t nbytes):
    """Tuning hook: the fused path's unit size aimed at (bytes); returns the previous."""
    global _unit_target
    previous = _unit_target
    _unit_target = max(1, nbytes)
    return previous


def _set_dw_unit_target(Py_ssize_t nbytes):
    """Tuning hook: the weight gradient's unit size aimed at (bytes); returns the previous."""
    global _dw_unit_target
    previous = _dw_unit_target
    _dw_unit_target = max(1, nbytes)
    return previous


def _set_direct_max_channels(Py_ssize_t cg):
    """Tuning/testing hook: grouped convs with at most `cg` channels per group run direct
    (0: never); returns the previous value."""
    global _direct_max_cg
    previous = _direct_max_cg
    _direct_max_cg = cg
    return previous


# --------------------------------------------------------------------------------------
# Validation

cdef Py_ssize_t _hyper_int(object v, str func, str name, Py_ssize_t minimum) except? -1:
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"fastdl.{func}: {name} must be an int or a pair of ints, got {v!r}")
    if isinstance(v, (float, np.floating)):
        raise ValueError(f"fastdl.{func}: {name} must be an int or a pair of ints, got {v!r}")
    try:
        n = operator.index(v)
    except TypeError:
        raise TypeError(f"fastdl.{func}: {name} must be an int or a pair of ints, got "
                        f"{type(v).__name__}") from None
    if n < minimum:
        what = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"fastdl.{func}: {name} must be {what}, got {n}")
    return n


cdef tuple _pair(object v, str func, str name, Py_ssize_t minimum):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"fastdl.{func}: {name} must be an int or a pair of ints, got "
                             f"{v!r}")
        return (_hyper_int(v[0], func, name, minimum), _hyper_int(v[1], func, name, minimum))
    n = _hyper_int(v, func, name, minimum)
    return (n, n)


cdef class _Geometry:
    """Everything one convolution call needs to know, validated once."""
    cdef fdl_conv_geom g
    cdef Py_ssize_t N, C, O, groups, Cg, Og, Kg, K, HWo
    cdef int typenum


cdef cnp.ndarray _aligned_c(cnp.ndarray a):
    """a itself if C-contiguous and aligned, else a C-ordered copy (NumPy keeps alignment)."""
    if cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a):
        return a
    return np.array(a, order="C", copy=True)


cdef _Geometry _geometry(cnp.ndarray X, cnp.ndarray W, object stride, object padding,
                         object dilation, object groups, str func):
    return _shape_geometry(shape_of(X), shape_of(W), stride, padding, dilation, groups,
                           func)


def _validated_geometry(tuple xs, tuple ws, stride, padding, dilation, groups, str func):
    """The one validation of a convolution's shapes and hyper-parameters, shared with the GPU
    twins (cuda/conv.pxi): (Ho, Wo, sh, sw, pt, pl, dh, dw, groups) for x of shape xs and w of
    shape ws, or the ValueError/TypeError conv2d raises."""
    cdef _Geometry geo = _shape_geometry(xs, ws, stride, padding, dilation, groups, func)
    return (geo.g.Ho, geo.g.Wo, geo.g.sh, geo.g.sw, geo.g.pt, geo.g.pl, geo.g.dh, geo.g.dw,
            geo.groups)


cdef _Geometry _shape_geometry(tuple xs, tuple ws, object stride, object padding,
                               object dilation, object groups, str func):
    cdef _Geometry geo = _Geometry()
    if len(xs) != 4:
        raise ValueError(f"fastdl.{func}: x must be 4-D (N, C, H, W), got shape {xs}")
    if len(ws) != 4:
        raise ValueError(f"fastdl.{func}: w must be 4-D (out_channels, in_channels/groups, kh, "
                         f"kw), got shape {ws}")
    if isinstance(groups, (bool, np.bool_, float, np.floating)):
        raise ValueError(f"fastdl.{func}: groups must be a positive int, got {groups!r}")
    try:
        ngroups = operator.index(groups)
    except TypeError:
        raise TypeError(f"fastdl.{func}: groups must be a positive int, got "
                        f"{type(groups).__name__}") from None
    if ngroups < 1:
        raise ValueError(f"fastdl.{func}: groups must be positive, got {ngroups}")
    cdef Py_ssize_t N = xs[0], C = xs[1], H = xs[2], Wd = xs[3]
    cdef Py_ssize_t O = ws[0], kh = ws[2], kw = ws[3]
    if C % ngroups != 0 or O % ngroups != 0:
        raise ValueError(f"fastdl.{func}: in_channels ({C}, x of shape {xs}) and "
                         f"out_channels ({O}, w of shape {ws}) must both be divisible "
                         f"by groups ({ngroups})")
    if ws[1] != C // ngroups:
        raise ValueError(f"fastdl.{func}: w of shape {ws} must have in_channels/groups "
                         f"= {C // ngroups} as its dim 1 (x of shape {xs}, groups "
                         f"{ngroups})")
    if kh < 1 or kw < 1:
        raise ValueError(f"fastdl.{func}: kernel_size must be positive, got w of shape "
                         f"{ws}")
    sh, sw = _pair(stride, func, "stride", 1)
    dh, dw = _pair(dilation, func, "dilation", 1)
    if isinstance(padding, str):
        if padding == "valid":
            pt = pb = pl = pr = 0
        elif padding == "same":
            if sh != 1 or sw != 1:
                raise ValueError(f"fastdl.{func}: padding='same' needs stride 1 (as in "
                                 f"PyTorch), got stride {(sh, sw)}")
            # As PyTorch: the odd pixel of an even total goes to the bottom/right.
            pt = dh * (kh - 1) // 2
            pb = dh * (kh - 1) - pt
            pl = dw * (kw - 1) // 2
            pr = dw * (kw - 1) - pl
        else:
            raise ValueError(f"fastdl.{func}: padding must be an int, a pair, 'same' or "
                             f"'valid', got {padding!r}")
    else:
        pt, pl = _pair(padding, func, "padding", 0)
        pb, pr = pt, pl
    ekh = dh * (kh - 1) + 1
    ekw = dw * (kw - 1) + 1
    if ekh > H + pt + pb or ekw > Wd + pl + pr:
        raise ValueError(f"fastdl.{func}: the kernel ({kh}x{kw}, dilation {(dh, dw)}, spanning "
                         f"{ekh}x{ekw}) is larger than the padded input ({H + pt + pb}x"
                         f"{Wd + pl + pr}; x of shape {xs}, padding {(pt, pl)})")
    geo.g.H = H
    geo.g.W = Wd
    geo.g.Ho = (H + pt + pb - ekh) // sh + 1
    geo.g.Wo = (Wd + pl + pr - ekw) // sw + 1
    geo.g.kh = kh
    geo.g.kw = kw
    geo.g.sh = sh
    geo.g.sw = sw
    geo.g.pt = pt
    geo.g.pl = pl
    geo.g.dh = dh
    geo.g.dw = dw
    geo.N = N
    geo.C = C
    geo.O = O
    geo.groups = ngroups
    geo.Cg = C // ngroups
    geo.Og = O // ngroups
    geo.Kg = geo.Cg * kh * kw
    geo.K = C * kh * kw
    geo.HWo = geo.g.Ho * geo.g.Wo
    return geo


cdef inline bint _pointwise(_Geometry geo) noexcept:
    return (geo.g.kh == 1 and geo.g.kw == 1 and geo.g.sh == 1 and geo.g.sw == 1
            and geo.g.pt == 0 and geo.g.pl == 0 and geo.g.Ho == geo.g.H and geo.g.Wo == geo.g.W)


cdef inline bint _direct(_Geometry geo) noexcept:
    return geo.groups > 1 and geo.Cg <= _direct_max_cg


cdef Py_ssize_t _procs() noexcept:
    # Work is split by the processor count (rounded up to a power of two), never by the
    # thread count, so the plan (and the bits) are the same for any set_num_threads.
    cdef Py_ssize_t t = 1
    while t < fdl_omp_num_procs():
        t *= 2
    return t


cdef inline Mat _mat(char *data, Py_ssize_t ld, bint colmajor) noexcept nogil:
    cdef Mat m
    m.data = data
    m.ld = ld if ld > 0 else 1
    m.colmajor = colmajor
    return m


# --------------------------------------------------------------------------------------
# The lowered path: chunk plan, im2col/col2im work items

cdef struct Lowered:
    int dt
    Py_ssize_t isz
    fdl_conv_geom g
    Py_ssize_t N, C, O, groups, Cg, Og, Kg, K, HWo
    char *x
    Py_ssize_t sxn, sxc, sxh, sxw     # element strides of x
    char *dy                          # C-contiguous (backward)
    char *bias                        # forward, or NULL
    char *y                           # forward output / backward dx, C-contiguous
    char *cols
    char *dyc                         # backward: the chunk's dY side by side (nb > 1)
    Py_ssize_t nb, R                  # images per chunk, output rows per piece / unit
    Py_ssize_t upi                    # fused path: units (row blocks) per image
    int sgemm                         # fused forward: sgemm.h's level (0: BLAS)


cdef void _plan(Lowered *p, Py_ssize_t per_col_elems) noexcept:
    """Images per chunk (nb) and output rows per piece (R), from the shape and the caps."""
    cdef Py_ssize_t col_bytes = per_col_elems * p.isz   # buffer bytes per output position
    cdef Py_ssize_t image = col_bytes * p.HWo
    cdef Py_ssize_t target = min(_chunk_target, _workspace_limit)
    cdef Py_ssize_t procs = _procs()
    if image <= target:
        p.R = p.g.Ho
        p.nb = max(1, min(p.N, target // max(image, 1)))
        if p.nb >= procs:
            p.nb -= p.nb % procs   # whole rounds of GEMMs for the threads
    elif image <= _workspace_limit and p.N < procs:
        # Few images: one image per chunk keeps one GEMM per group (tiled by gemm_batched).
        p.nb = 1
        p.R = p.g.Ho
    else:
        p.nb = 1
        p.R = max(1, min(p.g.Ho, target // max(col_bytes * p.g.Wo, 1)))


cdef inline void _im2col_item(const Lowered *p, char *cols, Py_ssize_t n0, Py_ssize_t oh0,
                              Py_ssize_t rows, Py_ssize_t ncols, Py_ssize_t it) noexcept nogil:
    cdef Py_ssize_t khw = p.g.kh * p.g.kw
    cdef Py_ssize_t b = it // p.K
    cdef Py_ssize_t r = it - b * p.K
    cdef Py_ssize_t c = r // khw
    cdef Py_ssize_t t = r - c * khw
    cdef Py_ssize_t i = t // p.g.kw
    cdef Py_ssize_t j = t - i * p.g.kw
    cdef Py_ssize_t src = ((n0 + b) * p.sxn + c * p.sxc)
    cdef Py_ssize_t dst = r * ncols + b * rows * p.g.Wo
    if p.dt == DT_FLOAT32:
        fdl_im2col_row_f32(<float *>p.x + src, p.sxh, p.sxw, &p.g, i, j, oh0, oh0 + rows,
                           <float *>cols + dst)
    else:
        fdl_im2col_row_f64(<double *>p.x + src, p.sxh, p.sxw, &p.g, i, j, oh0, oh0 + rows,
                           <double *>cols + dst)


cdef inline void _fill_item(const Lowered *p, Py_ssize_t n0, Py_ssize_t oh0, Py_ssize_t rows,
                            Py_ssize_t it) noexcept nogil:
    """Forward: plane part (image, channel) of y starts as the bias (the GEMM adds onto it)."""
    cdef Py_ssize_t b = it // p.O
    cdef Py_ssize_t o = it - b * p.O
    cdef Py_ssize_t start = ((n0 + b) * p.O + o) * p.HWo + oh0 * p.g.Wo
    cdef Py_ssize_t n = rows * p.g.Wo, k
    cdef float *f
    cdef double *d
    if p.dt == DT_FLOAT32:
        f = <float *>p.y + start
        for k in range(n):
            f[k] = (<float *>p.bias)[o]
    else:
        d = <double *>p.y + start
        for k in range(n):
            d[k] = (<double *>p.bias)[o]


cdef inline void _dy_item(const Lowered *p, Py_ssize_t n0, Py_ssize_t ncols,
                          Py_ssize_t it) noexcept nogil:
    """Backward: plane (image b, channel o) of dy into row o of the chunk's dY matrix."""
    cdef Py_ssize_t b = it // p.O
    cdef Py_ssize_t o = it - b * p.O
    cdef Py_ssize_t k
    cdef Py_ssize_t src = ((n0 + b) * p.O + o) * p.HWo
    cdef Py_ssize_t dst = o * ncols + b * p.HWo
    if p.dt == DT_FLOAT32:
        for k in range(p.HWo):
            (<float *>p.dyc)[dst + k] = (<float *>p.dy)[src + k]
    else:
        for k in range(p.HWo):
            (<double *>p.dyc)[dst + k] = (<double *>p.dy)[src + k]


cdef inline void _col2im_item(const Lowered *p, const char *cols, Py_ssize_t n0,
                              Py_ssize_t oh0, Py_ssize_t rows, Py_ssize_t ncols,
                              Py_ssize_t it) noexcept nogil:
    """Backward: add every tap row of channel c of image b back into its dx plane."""
    cdef Py_ssize_t b = it // p.C
    cdef Py_ssize_t c = it - b * p.C
    cdef Py_ssize_t i, j, r
    cdef Py_ssize_t plane = ((n0 + b) * p.C + c) * p.g.H * p.g.W
    cdef Py_ssize_t col0 = b * rows * p.g.Wo
    for i in range(p.g.kh):
        for j in range(p.g.kw):
            r = (c * p.g.kh + i) * p.g.kw + j
            if p.dt == DT_FLOAT32:
                fdl_col2im_row_f32(<float *>p.y + plane, &p.g, i, j, oh0, oh0 + rows,
                                   <const float *>cols + r * ncols + col0)
            else:
                fdl_col2im_row_f64(<double *>p.y + plane, &p.g, i, j, oh0, oh0 + rows,
                                   <const double *>cols + r * ncols + col0)


cdef void _lower(const Lowered *p, Py_ssize_t n0, Py_ssize_t nbc, Py_ssize_t oh0,
                 Py_ssize_t rows, bint fill_bias, bint copy_dy, int nthreads,
                 bint lower_x=True) noexcept nogil:
    """Lower a chunk into cols (and fill y with the bias, or copy dY), in parallel."""
    cdef Py_ssize_t ncols = nbc * rows * p.g.Wo
    cdef Py_ssize_t n_low = nbc * p.K if lower_x else 0
    cdef Py_ssize_t n_extra = nbc * p.O if (fill_bias or copy_dy) else 0
    cdef Py_ssize_t items = n_low + n_extra, it
    if (p.K + p.O) * ncols < PARALLEL_MIN_ELEMENTS:
        nthreads = 1
    if nthreads <= 1:
        for it in range(items):
            if it < n_low:
                _im2col_item(p, p.cols, n0, oh0, rows, ncols, it)
            elif fill_bias:
                _fill_item(p, n0, oh0, rows, it - n_low)
            else:
                _dy_item(p, n0, ncols, it - n_low)
    else:
        for it in prange(items, schedule='static', num_threads=nthreads):
            if it < n_low:
                _im2col_item(p, p.cols, n0, oh0, rows, ncols, it)
            elif fill_bias:
                _fill_item(p, n0, oh0, rows, it - n_low)
            else:
                _dy_item(p, n0, ncols, it - n_low)


cdef void _col2im(const Lowered *p, Py_ssize_t n0, Py_ssize_t nbc, Py_ssize_t oh0,
                  Py_ssize_t rows, int nthreads) noexcept nogil:
    cdef Py_ssize_t ncols = nbc * rows * p.g.Wo
    cdef Py_ssize_t items = nbc * p.C, it
    if p.K * ncols < PARALLEL_MIN_ELEMENTS:
        nthreads = 1
    if nthreads <= 1:
        for it in range(items):
            _col2im_item(p, p.cols, n0, oh0, rows, ncols, it)
    else:
        for it in prange(items, schedule='static', num_threads=nthreads):
            _col2im_item(p, p.cols, n0, oh0, rows, ncols, it)


cdef void _forward_lowered(const Lowered *p, const char *w, Py_ssize_t *a_off,
                           Py_ssize_t *b_off, Py_ssize_t *c_off, int nthreads) noexcept nogil:
    cdef Py_ssize_t n0, oh0, nbc, rows, ncols, b, g, bi
    cdef Py_ssize_t isz = p.isz
    cdef bint has_bias = p.bias != NULL
    n0 = 0
    while n0 < p.N:
        nbc = min(p.nb, p.N - n0)
        oh0 = 0
        while oh0 < p.g.Ho:
            rows = min(p.R, p.g.Ho - oh0)
            ncols = nbc * rows * p.g.Wo
            _lower(p, n0, nbc, oh0, rows, has_bias, False, nthreads)
            for b in range(nbc):
                for g in range(p.groups):
                    bi = b * p.groups + g
                    a_off[bi] = g * p.Og * p.Kg * isz
                    b_off[bi] = (g * p.Kg * ncols + b * rows * p.g.Wo) * isz
                    c_off[bi] = (((n0 + b) * p.O + g * p.Og) * p.HWo + oh0 * p.g.Wo) * isz
            gemm_batched(p.dt, nbc * p.groups, p.Og, rows * p.g.Wo, p.Kg, 1.0,
                         _mat(<char *>w, p.Kg, False), a_off,
                         _mat(p.cols, ncols, False), b_off,
                         1.0 if has_bias else 0.0, _mat(p.y, p.HWo, False), c_off, NULL,
                         nthreads)
            oh0 += rows
        n0 += nbc


cdef void _backward_lowered(const Lowered *p, const char *w, char *dw, bint need_dw,
                            bint need_dx, Py_ssize_t *a_off, Py_ssize_t *b_off,
                            Py_ssize_t *c_off, int nthreads) noexcept nogil:
    """dW over chunks in order (beta 0 first, then 1), and dX by GEMM + col2im per chunk."""
    cdef Py_ssize_t n0, oh0, nbc, rows, ncols, g, ld_dy
    cdef Py_ssize_t isz = p.isz
    cdef char *dym
    cdef bint first = True
    n0 = 0
    while n0 < p.N:
        nbc = min(p.nb, p.N - n0)
        oh0 = 0
        while oh0 < p.g.Ho:
            rows = min(p.R, p.g.Ho - oh0)
            ncols = nbc * rows * p.g.Wo
            # One image's dY is already an (O x columns) matrix; several are copied side by side.
            _lower(p, n0, nbc, oh0, rows, False, nbc > 1, nthreads, need_dw)
            if nbc > 1:
                dym = p.dyc
                ld_dy = ncols
            else:
                dym = p.dy + (n0 * p.O * p.HWo + oh0 * p.g.Wo) * isz
                ld_dy = p.HWo
            for g in range(p.groups):
                a_off[g] = g * p.Og * ld_dy * isz
                b_off[g] = g * p.Kg * ncols * isz
                c_off[g] = g * p.Og * p.Kg * isz
            if need_dw:
                # dW_g += dY_g (Og x ncols) @ cols_gᵀ (ncols x Kg)
                gemm_batched(p.dt, p.groups, p.Og, p.Kg, ncols, 1.0, _mat(dym, ld_dy, False),
                             a_off, _mat(p.cols, ncols, True), b_off, 0.0 if first else 1.0,
                             _mat(dw, p.Kg, False), c_off, NULL, nthreads)
                first = False
            if need_dx:
                for g in range(p.groups):
                    a_off[g] = g * p.Og * p.Kg * isz
                    b_off[g] = g * p.Og * ld_dy * isz
                    c_off[g] = g * p.Kg * ncols * isz
                # dcols_g (Kg x ncols) = W_gᵀ (Kg x Og) @ dY_g, into the lowering buffer
                gemm_batched(p.dt, p.groups, p.Kg, ncols, p.Og, 1.0, _mat(<char *>w, p.Kg, True),
                             a_off, _mat(dym, ld_dy, False), b_off, 0.0,
                             _mat(p.cols, ncols, False), c_off, NULL, nthreads)
                _col2im(p, n0, nbc, oh0, rows, nthreads)
            oh0 += rows
        n0 += nbc


# --------------------------------------------------------------------------------------
# The fused lowered path: one work item lowers one unit (an image, or a block of its output
# rows, sized by the shape alone) into its thread's own L2-sized buffer and multiplies it at
# once with one single-threaded GEMM call (gemm_batched with one thread: no OpenMP region
# inside the parallel loop). The columns never go out to memory, there is one parallel region
# per call, and the dynamic schedule absorbs a core taken by another process; each unit's
# result is computed the same way on whichever thread, so the bits are thread-independent.

cdef inline void _unit(const Lowered *p, Py_ssize_t u, Py_ssize_t *n, Py_ssize_t *oh0,
                       Py_ssize_t *rows) noexcept nogil:
    n[0] = u // p.upi
    oh0[0] = (u - n[0] * p.upi) * p.R
    rows[0] = min(p.R, p.g.Ho - oh0[0])


cdef void _fwd_unit(const Lowered *p, const char *w, char *buf, Py_ssize_t *off,
                    Py_ssize_t u) noexcept nogil:
    cdef Py_ssize_t n, oh0, rows, ncols, r, o, g, G = p.groups, isz = p.isz
    cdef char *y0
    _unit(p, u, &n, &oh0, &rows)
    ncols = rows * p.g.Wo
    for r in range(p.K):
        _im2col_item(p, buf, n, oh0, rows, ncols, r)
    if p.bias != NULL and not p.sgemm:
        for o in range(p.O):
            _fill_item(p, n, oh0, rows, o)
    for g in range(G):
        off[g] = g * p.Og * p.Kg * isz
        off[G + g] = g * p.Kg * ncols * isz
        off[2 * G + g] = ((n * p.O + g * p.Og) * p.HWo + oh0 * p.g.Wo) * isz
    if p.sgemm:
        # one group, float32: sgemm.h's kernel, the bias added as the blocks are stored (no
        # fill pass); its partial-panel scratch follows the columns
        y0 = p.y + off[2 * G]
        if fdl_sgemm(p.sgemm, 0, p.O, ncols, p.Kg, 1.0, <const float *>w, p.Kg,
                     <const float *>buf, ncols, <float *>y0, p.HWo, <const float *>p.bias,
                     <float *>(buf + p.K * p.R * p.g.Wo * isz)) == 0:
            return
        if p.bias != NULL:
            for o in range(p.O):
                _fill_item(p, n, oh0, rows, o)
    gemm_batched(p.dt, G, p.Og, ncols, p.Kg, 1.0, _mat(<char *>w, p.Kg, False), off,
                 _mat(buf, ncols, False), off + G, 1.0 if p.bias != NULL else 0.0,
                 _mat(p.y, p.HWo, False), off + 2 * G, NULL, 1)


cdef void _implicit_image(const Lowered *p, const float *w, float *xp, const Py_ssize_t *offs,
                          Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t n, int level) noexcept nogil:
    """One image of a float32, one-group, stride-1, dilation-1 convolution with Wo a multiple
    of 32, as an implicit GEMM: x[n] copied into a zero-padded plane stack, then sgemm.h's
    kernel reads each lowered row straight from it (no K x HWo lowering buffer)."""
    cdef Py_ssize_t c, h, j, W = p.g.W
    cdef const float *src
    cdef float *dst
    memset(xp, 0, p.C * Hp * Wp * 4)
    for c in range(p.C):
        for h in range(p.g.H):
            src = <const float *>p.x + n * p.sxn + c * p.sxc + h * p.sxh
            dst = xp + (c * Hp + p.g.pt + h) * Wp + p.g.pl
            if p.sxw == 1:
                memcpy(dst, src, W * 4)
            else:
                for j in range(W):
                    dst[j] = src[j * p.sxw]
    if level == 2:
        fdl_sgemm_implicit_avx512(p.O, p.K, w, xp, offs, Wp, p.g.Ho, p.g.Wo,
                                  <float *>p.y + n * p.O * p.HWo, p.HWo, <const float *>p.bias)
    else:
        fdl_sgemm_implicit_avx2(p.O, p.K, w, xp, offs, Wp, p.g.Ho, p.g.Wo,
                                <float *>p.y + n * p.O * p.HWo, p.HWo, <const float *>p.bias)


cdef inline void _cl_dims(const Lowered *p, Py_ssize_t *Hp, Py_ssize_t *Wp) noexcept nogil:
    """Planes of the channels-last copy: the input with its top/left padding, extended to
    every row and column a tap reads."""
    Hp[0] = max(p.g.pt + p.g.H, (p.g.Ho - 1) * p.g.sh + (p.g.kh - 1) * p.g.dh + 1)
    Wp[0] = max(p.g.pl + p.g.W, (p.g.Wo - 1) * p.g.sw + (p.g.kw - 1) * p.g.dw + 1)


cdef Py_ssize_t _cl_part_floats(const Lowered *p, Py_ssize_t nbmax, bint dw) noexcept nogil:
    cdef Py_ssize_t Hp, Wp, rows = nbmax * p.HWo
    _cl_dims(p, &Hp, &Wp)
    if dw:
        return (nbmax * Hp * Wp * p.C + rows * p.K + p.O * rows
                + fdl_sgemm_scratch(p.O, rows) + 64)
    return nbmax * Hp * Wp * p.C + rows * p.K + rows * p.O + fdl_sgemm_scratch(rows, p.K) + 64


cdef float *_cl_lower(const Lowered *p, float *buf, Py_ssize_t n0, Py_ssize_t nb) noexcept nogil:
    """Images n0..n0+nb-1 lowered channels last into buf: returns colsT ((nb HWo) x K, K in
    (i, j, c) order), which follows the padded NHWC copy in buf."""
    cdef Py_ssize_t Hp, Wp
    _cl_dims(p, &Hp, &Wp)
    cdef float *cols = buf + nb * Hp * Wp * p.C
    fdl_cl_pad_f32(<const float *>p.x + n0 * p.sxn, p.sxn, p.sxc, p.sxh, p.sxw, nb, p.C, &p.g,
                   Hp, Wp, buf)
    fdl_cl_cols_f32(buf, nb, p.C, &p.g, Hp, Wp, cols)
    return cols


cdef void _small_part_nchw(const Lowered *p, const float *w, float *buf, Py_ssize_t n0, Py_ssize_t n1,
                      int level) noexcept nogil:
    """Images n0..n1-1 of a float32 one-group convolution of small images: their columns
    side by side (K x nb*HWo), one kernel call into a scratch block (bias added at the
    store), scattered into y. The kernel computes each column on its own, so the bits are
    those of one image at a time."""
    cdef Py_ssize_t nb = n1 - n0, ncols = nb * p.HWo, it, b, o
    cdef float *cols = buf
    cdef float *ct = buf + p.K * ncols
    cdef float *scratch = ct + p.O * ncols
    for it in range(nb * p.K):
        _im2col_item(p, <char *>cols, n0, 0, p.g.Ho, ncols, it)
    fdl_sgemm(level, 0, p.O, ncols, p.K, 1.0, w, p.K, cols, ncols, ct, ncols,
              <const float *>p.bias, scratch)
    for b in range(nb):
        for o in range(p.O):
            memcpy(<float *>p.y + ((n0 + b) * p.O + o) * p.HWo, ct + o * ncols + b * p.HWo,
                   p.HWo * 4)


cdef void _small_part(const Lowered *p, const float *wt, float *buf, Py_ssize_t n0,
                      Py_ssize_t n1, int level) noexcept nogil:
    """Images n0..n1-1 of a float32 one-group convolution of small images, channels last:
    Yt ((nb HWo) x O) = colsT . Wt (Wt = the weights as (i, j, c) x O), one kernel call, then
    back to NCHW with the bias. Per image the bits do not depend on the grouping (each
    output element is its own FMA chain over k)."""
    cdef Py_ssize_t nb = n1 - n0, rows = nb * p.HWo
    cdef float *cols = _cl_lower(p, buf, n0, nb)
    cdef float *yt = cols + rows * p.K
    cdef float *scratch = yt + rows * p.O
    fdl_sgemm(level, 0, rows, p.O, p.K, 1.0, cols, p.K, wt, p.O, yt, p.O, NULL, scratch)
    fdl_cl_scatter_f32(yt, nb, p.HWo, p.O, <const float *>p.bias,
                       <float *>p.y + n0 * p.O * p.HWo)


cdef inline void _small_any(const Lowered *p, const float *w, float *buf, Py_ssize_t n0,
                            Py_ssize_t n1, int level) noexcept nogil:
    if p.C >= CL_MIN_CHANNELS:
        _small_part(p, w, buf, n0, n1, level)
    else:
        _small_part_nchw(p, w, buf, n0, n1, level)


cdef void _forward_small(const Lowered *p, const float *w, float *bufs, Py_ssize_t part_floats,
                         Py_ssize_t parts, int level, int nthreads) noexcept nogil:
    cdef Py_ssize_t i
    cdef int t
    if nthreads <= 1 or parts <= 1:
        for i in range(parts):
            _small_any(p, w, bufs, p.N * i // parts, p.N * (i + 1) // parts, level)
    else:
        for i in prange(parts, schedule='static', num_threads=nthreads):
            t = threadid()
            _small_any(p, w, bufs + t * part_floats, p.N * i // parts,
                        p.N * (i + 1) // parts, level)


cdef void _dw_small_part_nchw(const Lowered *p, float *buf, float *slot, Py_ssize_t n0,
                         Py_ssize_t n1, int level) noexcept nogil:
    """dWᵀ (K x O) of images n0..n1-1 of small images: their columns side by side and their
    dY transposed ((nb*HWo) x O), one kernel call."""
    cdef Py_ssize_t nb = n1 - n0, ncols = nb * p.HWo, it, b, o, j
    cdef float *cols = buf
    cdef float *dyt = buf + p.K * ncols
    cdef float *scratch = dyt + ncols * p.O
    cdef const float *dyo
    for it in range(nb * p.K):
        _im2col_item(p, <char *>cols, n0, 0, p.g.Ho, ncols, it)
    for b in range(nb):
        for o in range(p.O):
            dyo = <const float *>p.dy + ((n0 + b) * p.O + o) * p.HWo
            for j in range(p.HWo):
                dyt[(b * p.HWo + j) * p.O + o] = dyo[j]
    fdl_sgemm(level, 0, p.K, p.O, ncols, 1.0, cols, ncols, dyt, p.O, slot, p.O, NULL, scratch)


cdef void _dw_small_part(const Lowered *p, float *buf, float *slot, Py_ssize_t n0,
                         Py_ssize_t n1, int level) noexcept nogil:
    """dW (O x K, K in (i, j, c) order) of images n0..n1-1 of small images, channels last:
    dY gathered as O x (nb HWo), times colsT, one kernel call."""
    cdef Py_ssize_t nb = n1 - n0, rows = nb * p.HWo, b, o
    cdef float *cols = _cl_lower(p, buf, n0, nb)
    cdef float *dyt = cols + rows * p.K
    cdef float *scratch = dyt + p.O * rows
    for b in range(nb):
        for o in range(p.O):
            memcpy(dyt + o * rows + b * p.HWo,
                   <const float *>p.dy + ((n0 + b) * p.O + o) * p.HWo, p.HWo * 4)
    fdl_sgemm(level, 0, p.O, p.K, rows, 1.0, dyt, rows, cols, p.K, slot, p.K, NULL, scratch)


cdef inline void _dw_small_any(const Lowered *p, float *buf, float *slot, Py_ssize_t n0,
                               Py_ssize_t n1, int level) noexcept nogil:
    if p.C >= CL_MIN_CHANNELS:
        _dw_small_part(p, buf, slot, n0, n1, level)
    else:
        _dw_small_part_nchw(p, buf, slot, n0, n1, level)


cdef void _dw_small(const Lowered *p, float *bufs, Py_ssize_t part_floats, float *slots,
                    Py_ssize_t parts, int level, int nthreads) noexcept nogil:
    cdef Py_ssize_t i
    cdef int t
    if nthreads <= 1 or parts <= 1:
        for i in range(parts):
            _dw_small_any(p, bufs, slots + i * p.K * p.O, p.N * i // parts,
                          p.N * (i + 1) // parts, level)
    else:
        for i in prange(parts, schedule='static', num_threads=nthreads):
            t = threadid()
            _dw_small_any(p, bufs + t * part_floats, slots + i * p.K * p.O,
                          p.N * i // parts, p.N * (i + 1) // parts, level)


cdef void _forward_implicit(const Lowered *p, const float *w, float *bufs, Py_ssize_t plane,
                            const Py_ssize_t *offs, Py_ssize_t Hp, Py_ssize_t Wp, int level,
                            int nthreads) noexcept nogil:
    cdef Py_ssize_t n
    cdef int t
    if nthreads <= 1:
        for n in range(p.N):
            _implicit_image(p, w, bufs, offs, Hp, Wp, n, level)
    else:
        for n in prange(p.N, schedule='dynamic', num_threads=nthreads):
            t = threadid()
            _implicit_image(p, w, bufs + t * plane, offs, Hp, Wp, n, level)


cdef void _forward_fused(const Lowered *p, const char *w, char *bufs, Py_ssize_t buf_bytes,
                         Py_ssize_t *offs, int nthreads) noexcept nogil:
    cdef Py_ssize_t units = p.N * p.upi, u
    cdef int t
    if nthreads <= 1:
        for u in range(units):
            _fwd_unit(p, w, bufs, offs, u)
    else:
        for u in prange(units, schedule='dynamic', num_threads=nthreads):
            t = threadid()
            _fwd_unit(p, w, bufs + t * buf_bytes, offs + t * 3 * p.groups, u)


cdef void _dw_range(const Lowered *p, char *buf, char *slot, Py_ssize_t *off, Py_ssize_t u0,
                    Py_ssize_t u1) noexcept nogil:
    """slot = sum over units u0..u1-1, in order, of dY_u @ cols_uᵀ (per group); with
    p.sgemm, slot holds the transpose, sum of cols_u @ dY_uᵀ (K x O), by sgemm.h's kernel
    on dY_u transposed into the buffer after the columns."""
    cdef Py_ssize_t u, n, oh0, rows, ncols, r, g, G = p.groups, isz = p.isz, o, j
    cdef float *dyt
    cdef const float *dyu
    for u in range(u0, u1):
        _unit(p, u, &n, &oh0, &rows)
        ncols = rows * p.g.Wo
        for r in range(p.K):
            _im2col_item(p, buf, n, oh0, rows, ncols, r)
        if p.sgemm:
            dyt = <float *>(buf + p.K * p.R * p.g.Wo * isz)
            dyu = <const float *>(p.dy + (n * p.O * p.HWo + oh0 * p.g.Wo) * isz)
            for o in range(p.O):
                for j in range(ncols):
                    dyt[j * p.O + o] = dyu[o * p.HWo + j]
            fdl_sgemm(p.sgemm, u != u0, p.K, p.O, ncols, 1.0, <const float *>buf, ncols,
                      dyt, p.O, <float *>slot, p.O, NULL, NULL)
            continue
        for g in range(G):
            off[g] = g * p.Og * p.HWo * isz
            off[G + g] = g * p.Kg * ncols * isz
            off[2 * G + g] = g * p.Og * p.Kg * isz
        gemm_batched(p.dt, G, p.Og, p.Kg, ncols, 1.0,
                     _mat(p.dy + (n * p.O * p.HWo + oh0 * p.g.Wo) * isz, p.HWo, False), off,
                     _mat(buf, ncols, True), off + G, 0.0 if u == u0 else 1.0,
                     _mat(slot, p.Kg, False), off + 2 * G, NULL, 1)


cdef void _dw_fused(const Lowered *p, char *dw, char *slots, Py_ssize_t parts, char *bufs,
                    Py_ssize_t buf_bytes, Py_ssize_t *offs, int nthreads) noexcept nogil:
    """dW from `parts` fixed ranges of units (part 0 into dw, part i into slot i - 1), then
    dw += slot 1, slot 2, ... in order: the bits depend on the shape and the processor count
    only (parts), never on which thread ran which part."""
    cdef Py_ssize_t units = p.N * p.upi, i, e, size = p.O * p.Kg
    cdef Py_ssize_t slot_bytes = size * p.isz
    cdef int t
    if nthreads <= 1 or parts <= 1:
        for i in range(parts):
            _dw_range(p, bufs, dw if i == 0 else slots + (i - 1) * slot_bytes, offs,
                      units * i // parts, units * (i + 1) // parts)
    else:
        for i in prange(parts, schedule='dynamic', num_threads=nthreads):
            t = threadid()
            _dw_range(p, bufs + t * buf_bytes, dw if i == 0 else slots + (i - 1) * slot_bytes,
                      offs + t * 3 * p.groups, units * i // parts, units * (i + 1) // parts)
    for i in range(1, parts):
        if p.dt == DT_FLOAT32:
            for e in range(size):
                (<float *>dw)[e] += (<float *>(slots + (i - 1) * slot_bytes))[e]
        else:
            for e in range(size):
                (<double *>dw)[e] += (<double *>(slots + (i - 1) * slot_bytes))[e]


cdef void _dx_image(const Lowered *p, const char *w, char *buf, Py_ssize_t *off,
                    Py_ssize_t n) noexcept nogil:
    """dx[n]: dcols = Wᵀ dY[n] into the thread's buffer, then col2im of every channel."""
    cdef Py_ssize_t g, c, G = p.groups, isz = p.isz
    for g in range(G):
        off[g] = g * p.Og * p.Kg * isz
        off[G + g] = (n * p.O + g * p.Og) * p.HWo * isz
        off[2 * G + g] = g * p.Kg * p.HWo * isz
    gemm_batched(p.dt, G, p.Kg, p.HWo, p.Og, 1.0, _mat(<char *>w, p.Kg, True), off,
                 _mat(p.dy, p.HWo, False), off + G, 0.0, _mat(buf, p.HWo, False), off + 2 * G,
                 NULL, 1)
    for c in range(p.C):
        _col2im_item(p, buf, n, 0, p.g.Ho, p.HWo, c)


cdef void _dx_fused(const Lowered *p, const char *w, char *bufs, Py_ssize_t buf_bytes,
                    Py_ssize_t *offs, int nthreads) noexcept nogil:
    cdef Py_ssize_t n
    cdef int t
    if nthreads <= 1:
        for n in range(p.N):
            _dx_image(p, w, bufs, offs, n)
    else:
        for n in prange(p.N, schedule='dynamic', num_threads=nthreads):
            t = threadid()
            _dx_image(p, w, bufs + t * buf_bytes, offs + t * 3 * p.groups, n)


cdef bint _fused_units(Lowered *p, Py_ssize_t target) noexcept:
    """Choose the fused path's units (p.R, p.upi) from the shape; False when the fused path
    does not apply (fewer units than processors, or a unit over its share of the cap)."""
    cdef Py_ssize_t row_bytes = p.K * p.g.Wo * p.isz
    cdef Py_ssize_t procs = _procs()
    cdef Py_ssize_t _unit_target = target
    if row_bytes * p.g.Ho <= _unit_target:
        p.R = p.g.Ho
    else:
        # As few units as fit the target, of balanced heights (no thin last unit).
        p.R = max(1, _unit_target // max(row_bytes, 1))
        p.upi = (p.g.Ho + p.R - 1) // p.R
        p.R = (p.g.Ho + p.upi - 1) // p.upi
    p.upi = (p.g.Ho + p.R - 1) // p.R
    return p.N * p.upi >= procs and row_bytes * p.R * procs <= _workspace_limit


cdef int _init_lowered(Lowered *p, _Geometry geo, cnp.ndarray X) except -1:
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(X), d
    p.dt = dtype_code(X)
    p.isz = isz
    p.g = geo.g
    p.N = geo.N
    p.C = geo.C
    p.O = geo.O
    p.groups = geo.groups
    p.Cg = geo.Cg
    p.Og = geo.Og
    p.Kg = geo.Kg
    p.K = geo.K
    p.HWo = geo.HWo
    p.sgemm = 0
    p.x = <char *>cnp.PyArray_DATA(X)
    for d in range(4):
        if cnp.PyArray_STRIDES(X)[d] % isz != 0:
            raise RuntimeError("fastdl internal error: x strides are not whole elements")
    p.sxn = cnp.PyArray_STRIDES(X)[0] // isz
    p.sxc = cnp.PyArray_STRIDES(X)[1] // isz
    p.sxh = cnp.PyArray_STRIDES(X)[2] // isz
    p.sxw = cnp.PyArray_STRIDES(X)[3] // isz
    p.dy = NULL
    p.bias = NULL
    p.y = NULL
    p.cols = NULL
    p.dyc = NULL
    return 0


cdef cnp.ndarray _strided_ok(cnp.ndarray X):
    """X if im2col can read it in place (aligned, whole-element strides), else a C copy."""
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(X), d
    if cnp.PyArray_ISALIGNED(X):
        for d in range(cnp.PyArray_NDIM(X)):
            if cnp.PyArray_STRIDES(X)[d] % isz != 0:
                break
        else:
            return X
    return np.array(X, order="C", copy=True)


# --------------------------------------------------------------------------------------
# The pointwise path (1x1, stride 1, no padding): BLAS reads x in place

cdef bint _image_matrix(cnp.ndarray X, Py_ssize_t *ld) noexcept:
    """Whether every x[n] is a (C x HW) row-major BLAS operand (row stride ld elements)."""
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(X)
    cdef Py_ssize_t H = X.shape[2], W = X.shape[3], C = X.shape[1]
    cdef Py_ssize_t *st = <Py_ssize_t *>cnp.PyArray_STRIDES(X)
    if not cnp.PyArray_ISALIGNED(X):
        return False
    if W > 1 and st[3] != isz:
        return False
    if H > 1 and st[2] != W * isz:
        return False
    if st[0] % isz != 0:
        return False
    if C > 1:
        if st[1] <= 0 or st[1] % isz != 0 or st[1] < H * W * isz:
            return False
        ld[0] = st[1] // isz
    else:
        ld[0] = H * W
    return True


cdef inline void _pointwise_image(int dt, Py_ssize_t n, Py_ssize_t G, Py_ssize_t O,
                                  Py_ssize_t Og, Py_ssize_t Cg, Py_ssize_t HW, const char *w,
                                  const char *x, Py_ssize_t ld, char *y, const char *bias,
                                  Py_ssize_t *a_off, Py_ssize_t *b_off,
                                  Py_ssize_t *c_off) noexcept nogil:
    cdef Py_ssize_t o, k
    cdef float *f
    cdef double *d
    if bias != NULL:
        for o in range(O):
            if dt == DT_FLOAT32:
                f = <float *>y + (n * O + o) * HW
                for k in range(HW):
                    f[k] = (<const float *>bias)[o]
            else:
                d = <double *>y + (n * O + o) * HW
                for k in range(HW):
                    d[k] = (<const double *>bias)[o]
    gemm_batched(dt, G, Og, HW, Cg, 1.0, _mat(<char *>w, Cg, False), a_off + n * G,
                 _mat(<char *>x, ld, False), b_off + n * G, 1.0 if bias != NULL else 0.0,
                 _mat(y, HW, False), c_off + n * G, NULL, 1)


cdef void _pointwise_images(int dt, Py_ssize_t N, Py_ssize_t G, Py_ssize_t O, Py_ssize_t Og,
                            Py_ssize_t Cg, Py_ssize_t HW, const char *w, const char *x,
                            Py_ssize_t ld, char *y, const char *bias, Py_ssize_t *a_off,
                            Py_ssize_t *b_off, Py_ssize_t *c_off, int nthreads) noexcept nogil:
    cdef Py_ssize_t n
    if nthreads <= 1:
        for n in range(N):
            _pointwise_image(dt, n, G, O, Og, Cg, HW, w, x, ld, y, bias, a_off, b_off, c_off)
    else:
        for n in prange(N, schedule='dynamic', num_threads=nthreads):
            _pointwise_image(dt, n, G, O, Og, Cg, HW, w, x, ld, y, bias, a_off, b_off, c_off)



# --------------------------------------------------------------------------------------
# The direct path (depthwise and small groups)

cdef inline void _direct_item(int dt, const char *x, const char *w, const char *bias,
                              char *y, const fdl_conv_geom *g, Py_ssize_t C, Py_ssize_t O,
                              Py_ssize_t Cg, Py_ssize_t Og, char *scratch,
                              Py_ssize_t it) noexcept nogil:
    cdef Py_ssize_t n = it // O
    cdef Py_ssize_t o = it - n * O
    cdef Py_ssize_t grp = o // Og
    cdef Py_ssize_t xoff = (n * C + grp * Cg) * g.H * g.W
    cdef Py_ssize_t woff = o * Cg * g.kh * g.kw
    cdef Py_ssize_t yoff = it * g.Ho * g.Wo
    if dt == DT_FLOAT32:
        if scratch != NULL:
            fdl_direct_padded_plane_f32(<const float *>x + xoff, Cg, <const float *>w + woff,
                                        (<const float *>bias)[o] if bias != NULL else 0.0, g,
                                        <float *>scratch, <float *>y + yoff)
        else:
            fdl_direct_plane_f32(<const float *>x + xoff, Cg, <const float *>w + woff,
                                 (<const float *>bias)[o] if bias != NULL else 0.0, g,
                                 <float *>y + yoff)
    else:
        if scratch != NULL:
            fdl_direct_padded_plane_f64(<const double *>x + xoff, Cg, <const double *>w + woff,
                                        (<const double *>bias)[o] if bias != NULL else 0.0, g,
                                        <double *>scratch, <double *>y + yoff)
        else:
            fdl_direct_plane_f64(<const double *>x + xoff, Cg, <const double *>w + woff,
                                 (<const double *>bias)[o] if bias != NULL else 0.0, g,
                                 <double *>y + yoff)


cdef void _direct_forward(int dt, const char *x, const char *w, const char *bias, char *y,
                          const fdl_conv_geom *g, Py_ssize_t C, Py_ssize_t O, Py_ssize_t Cg,
                          Py_ssize_t Og, Py_ssize_t items, char *scratch,
                          Py_ssize_t scratch_bytes, int nthreads) noexcept nogil:
    """One output plane per item; with scratch, on zero-padded copies of its input planes
    (one slice of scratch_bytes per thread)."""
    cdef Py_ssize_t it
    if items * g.Ho * g.Wo < PARALLEL_MIN_ELEMENTS:
        nthreads = 1
    if nthreads <= 1:
        for it in range(items):
            _direct_item(dt, x, w, bias, y, g, C, O, Cg, Og, scratch, it)
    else:
        for it in prange(items, schedule='static', num_threads=nthreads):
            _direct_item(dt, x, w, bias, y, g, C, O, Cg, Og,
                         scratch + threadid() * scratch_bytes if scratch != NULL else NULL, it)


# --------------------------------------------------------------------------------------
# db

cdef inline void _db_item(int dt, const char *dy, char *db, Py_ssize_t N, Py_ssize_t O,
                          Py_ssize_t HWo, Py_ssize_t o) noexcept nogil:
    cdef double s = 0.0
    cdef Py_ssize_t n
    for n in range(N):
        if dt == DT_FLOAT32:
            s += fdl_conv_sum_f32(<const float *>dy + (n * O + o) * HWo, HWo)
        else:
            s += fdl_conv_sum_f64(<const double *>dy + (n * O + o) * HWo, HWo)
    if dt == DT_FLOAT32:
        (<float *>db)[o] = <float>s
    else:
        (<double *>db)[o] = s


cdef void _bias_grad(int dt, const char *dy, char *db, Py_ssize_t N, Py_ssize_t O,
                     Py_ssize_t HWo, int nthreads) noexcept nogil:
    cdef Py_ssize_t o
    if N * O * HWo < PARALLEL_MIN_ELEMENTS or O < 2:
        nthreads = 1
    if nthreads <= 1:
        for o in range(O):
            _db_item(dt, dy, db, N, O, HWo, o)
    else:
        for o in prange(O, schedule='static', num_threads=nthreads):
            _db_item(dt, dy, db, N, O, HWo, o)


# --------------------------------------------------------------------------------------
# Entry points

cdef cnp.ndarray _new(tuple shape, int typenum):
    cdef cnp.npy_intp dims[4]
    cdef int d
    for d in range(4):
        dims[d] = shape[d]
    return cnp.PyArray_EMPTY(4, dims, typenum, 0)


cdef cnp.ndarray _forward(cnp.ndarray X, cnp.ndarray W, cnp.ndarray Bv, _Geometry geo):
    """y = conv(X, W) + b for validated, converted operands (W, Bv C-contiguous)."""
    cdef cnp.ndarray WT
    cdef const float *wtp
    cdef int typenum = cnp.PyArray_TYPE(W)
    cdef cnp.ndarray Y = _new((geo.N, geo.O, geo.g.Ho, geo.g.Wo), typenum)
    if cnp.PyArray_SIZE(Y) == 0:
        return Y
    if geo.C == 0:
        Y[...] = 0 if Bv is None else Bv[:, None, None]
        return Y

    cdef int dt = dtype_code(W)
    cdef int nthreads = current_threads()
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(W)
    cdef char *bias = <char *>cnp.PyArray_DATA(Bv) if Bv is not None else NULL
    cdef double work = <double>cnp.PyArray_SIZE(Y) * geo.Kg
    cdef int level, nth_i
    cdef Py_ssize_t Hp, Wp, plane, parts, nbmax, part_floats
    cdef float *xpbp
    cdef const Py_ssize_t *koffp
    if work < PARALLEL_MIN_WORK:
        nthreads = 1
    cdef Py_ssize_t items, ld, bi, n, g, unit_bytes, hp, wpad
    cdef fdl_conv_geom gm = geo.g
    cdef char *xp
    cdef char *sp
    cdef char *wp = <char *>cnp.PyArray_DATA(W)
    cdef char *yp = <char *>cnp.PyArray_DATA(Y)
    cdef Lowered p
    cdef cnp.ndarray offs, cols
    cdef Py_ssize_t *a_off
    cdef Py_ssize_t *b_off
    cdef Py_ssize_t *c_off

    if _direct(geo):
        X = _aligned_c(X)
        xp = <char *>cnp.PyArray_DATA(X)
        items = geo.N * geo.O
        # Zero-padded copies of a group's planes, one per thread, if they fit the cap.
        fdl_padded_dims(&gm, &hp, &wpad)
        unit_bytes = geo.Cg * hp * wpad * isz
        scratch = None
        sp = NULL
        if unit_bytes * _procs() <= _workspace_limit:
            # (decided by the processor count, so the kernel, and every bit, is the same for
            # any thread count; threads beyond the cap's share simply do not start)
            nthreads = max(1, min(nthreads, _workspace_limit // max(unit_bytes, 1)))
            scratch = np.empty(nthreads * unit_bytes, dtype=np.uint8)
            sp = <char *>cnp.PyArray_DATA(scratch)
        if work >= NOGIL_MIN_WORK:
            with nogil:
                _direct_forward(dt, xp, wp, bias, yp, &gm, geo.C, geo.O, geo.Cg, geo.Og, items,
                                sp, unit_bytes, nthreads)
        else:
            _direct_forward(dt, xp, wp, bias, yp, &gm, geo.C, geo.O, geo.Cg, geo.Og, items,
                            sp, unit_bytes, nthreads)
        return Y

    if _pointwise(geo):
        if not _image_matrix(X, &ld):
            X = np.array(X, order="C", copy=True)
            _image_matrix(X, &ld)
        xp = <char *>cnp.PyArray_DATA(X)
        items = geo.N * geo.groups
        offs = np.empty(3 * items, dtype=np.intp)
        a_off = <Py_ssize_t *>cnp.PyArray_DATA(offs)
        b_off = a_off + items
        c_off = b_off + items
        for n in range(geo.N):
            for g in range(geo.groups):
                bi = n * geo.groups + g
                a_off[bi] = g * geo.Og * geo.Cg * isz
                b_off[bi] = n * cnp.PyArray_STRIDES(X)[0] + g * geo.Cg * ld * isz
                c_off[bi] = (n * geo.O + g * geo.Og) * geo.HWo * isz
        check_blas_dims(_mat(wp, geo.Cg, False), _mat(xp, ld, False), _mat(yp, geo.HWo, False))
        if geo.N >= _procs():
            # One image per work item: its bias fill is still in cache when its GEMM adds
            # onto it (no separate pass over y), one GEMM call per image on one thread.
            with nogil:
                _pointwise_images(dt, geo.N, geo.groups, geo.O, geo.Og, geo.Cg, geo.HWo, wp,
                                  xp, ld, yp, bias, a_off, b_off, c_off, nthreads)
            return Y
        if Bv is not None:
            Y[...] = Bv[:, None, None]
        with nogil:
            gemm_batched(dt, items, geo.Og, geo.HWo, geo.Cg, 1.0, _mat(wp, geo.Cg, False),
                         a_off, _mat(xp, ld, False), b_off, 1.0 if bias != NULL else 0.0,
                         _mat(yp, geo.HWo, False), c_off, NULL, nthreads)
        return Y

    X = _strided_ok(X)
    _init_lowered(&p, geo, X)
    p.bias = bias
    p.y = yp
    level = _sgemm_level() if dt == DT_FLOAT32 and geo.groups == 1 else 0
    if level and SMALL_IMAGES and geo.HWo <= SMALL_HWO and geo.O >= 8:
        # small images, channels last: one kernel call per group of images (NCHW lowering
        # of 4x4 planes was row bookkeeping: 32x16x4x4 -> 32 took 0.14 ms on one thread)
        parts = min(geo.N, _procs())
        nbmax = (geo.N + parts - 1) // parts
        if geo.C >= CL_MIN_CHANNELS:
            part_floats = _cl_part_floats(&p, nbmax, False)
            WT = np.ascontiguousarray(W.transpose(2, 3, 1, 0))
        else:
            part_floats = ((geo.K + geo.O) * nbmax * geo.HWo
                           + fdl_sgemm_scratch(geo.O, geo.K) + 16)
            WT = W
        if part_floats * 4 * min(nthreads, parts) <= _workspace_limit:
            nth_i = max(1, min(nthreads, parts))
            xpb = np.empty(nth_i * part_floats, dtype=np.float32)
            xpbp = <float *>cnp.PyArray_DATA(xpb)
            wtp = <const float *>cnp.PyArray_DATA(WT)
            with nogil:
                _forward_small(&p, wtp, xpbp, part_floats, parts, level, nth_i)
            return Y
    if (level and IMPLICIT_GEMM and geo.g.sh == 1 and geo.g.sw == 1 and geo.g.dh == 1
            and geo.g.dw == 1 and geo.g.Wo % 32 == 0 and geo.N >= _procs()):
        Hp = geo.g.Ho + geo.g.kh - 1
        Wp = geo.g.Wo + geo.g.kw - 1
        plane = (geo.C * Hp * Wp + 15) // 16 * 16 + 32   # + slack: a panel reads 32 past ow0
        if plane * 4 <= _workspace_limit:
            nth_i = max(1, min(nthreads, _workspace_limit // (plane * 4), geo.N))
            xpb = np.empty(nth_i * plane, dtype=np.float32)
            ci, ii, jj = np.meshgrid(np.arange(geo.C), np.arange(geo.g.kh), np.arange(geo.g.kw),
                                     indexing="ij")
            koffs = np.ascontiguousarray(((ci * Hp + ii) * Wp + jj).reshape(-1), dtype=np.intp)
            xpbp = <float *>cnp.PyArray_DATA(xpb)
            koffp = <const Py_ssize_t *>cnp.PyArray_DATA(koffs)
            with nogil:
                _forward_implicit(&p, <const float *>wp, xpbp, plane, koffp, Hp, Wp, level,
                                  nth_i)
            return Y
    if _fused_units(&p, _unit_target):
        unit_bytes = geo.K * p.R * geo.g.Wo * isz
        p.sgemm = level
        if p.sgemm:
            unit_bytes += fdl_sgemm_scratch(geo.O, geo.Kg) * 4
        unit_bytes = (unit_bytes + 63) // 64 * 64
        nthreads = max(1, min(nthreads, _workspace_limit // unit_bytes, geo.N * p.upi))
        cols = np.empty(nthreads * unit_bytes, dtype=np.uint8)
        offs = np.empty(3 * geo.groups * nthreads, dtype=np.intp)
        check_blas_dims(_mat(wp, geo.Kg, False), _mat(yp, geo.HWo, False),
                        _mat(yp, geo.HWo, False))
        with nogil:
            _forward_fused(&p, wp, <char *>cnp.PyArray_DATA(cols), unit_bytes,
                           <Py_ssize_t *>cnp.PyArray_DATA(offs), nthreads)
        return Y
    _plan(&p, geo.K)
    cols = np.empty(geo.K * p.nb * p.R * geo.g.Wo, dtype=X.dtype)
    p.cols = <char *>cnp.PyArray_DATA(cols)
    items = p.nb * geo.groups
    offs = np.empty(3 * items, dtype=np.intp)
    a_off = <Py_ssize_t *>cnp.PyArray_DATA(offs)
    b_off = a_off + items
    c_off = b_off + items
    check_blas_dims(_mat(wp, geo.Kg, False), _mat(p.cols, p.nb * p.R * geo.g.Wo, False),
                    _mat(yp, geo.HWo, False))
    if work >= NOGIL_MIN_WORK:
        with nogil:
            _forward_lowered(&p, wp, a_off, b_off, c_off, nthreads)
    else:
        _forward_lowered(&p, wp, a_off, b_off, c_off, nthreads)
    return Y


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation, as PyTorch's ``conv2d``), NCHW.

    ``x (N, C, H, W)``, ``w (O, C/groups, kh, kw)``, ``b (O,)`` or None ->
    ``y (N, O, Ho, Wo)`` with ``Ho = (H + pad_top + pad_bottom - dilation*(kh-1) - 1) //
    stride + 1`` (likewise Wo). ``stride``, ``padding`` and ``dilation`` are ints or
    (height, width) pairs; ``padding`` may also be ``'valid'`` (0) or ``'same'`` (stride 1
    only; output size = input size; an odd total padding puts the extra pixel at the
    bottom/right, as PyTorch).

    Raises ``TypeError`` for a non-numeric dtype or a non-integer hyper-parameter type and
    ``ValueError`` for wrong shapes (naming them), channels not divisible by ``groups``,
    non-positive stride/dilation/groups, negative padding, or a kernel larger than the
    padded input.
    """
    if on_device(x):
        return gpu_call("conv2d", (), {"x": x, "w": w, "b": b, "stride": stride, "padding": padding, "dilation": dilation, "groups": groups})
    cdef cnp.ndarray X = as_float_array(x, "conv2d", "x")
    cdef cnp.ndarray W = as_float_array(w, "conv2d", "w")
    cdef cnp.ndarray Bv = None
    cdef int typenum = common_typenum(X, W)
    if b is not None:
        Bv = as_float_array(b, "conv2d", "b")
        if cnp.PyArray_TYPE(Bv) != cnp.NPY_FLOAT:
            typenum = cnp.NPY_DOUBLE
    cdef _Geometry geo = _geometry(X, W, stride, padding, dilation, groups, "conv2d")
    if Bv is not None and (cnp.PyArray_NDIM(Bv) != 1 or Bv.shape[0] != geo.O):
        raise ValueError(f"fastdl.conv2d: b has shape {shape_of(Bv)}, expected ({geo.O},) to "
                         f"match w of shape {shape_of(W)}")
    X = as_typenum(X, typenum)
    W = _aligned_c(as_typenum(W, typenum))
    if Bv is not None:
        Bv = _aligned_c(as_typenum(Bv, typenum))
    return _forward(X, W, Bv, geo)


cdef _Geometry _transposed_geometry(_Geometry geo):
    """The geometry of dx = conv(dy, w flipped and transposed) for a stride-1 convolution:
    input Ho x Wo, output H x W, padding d*(k-1) - p on each side (None if that is negative)."""
    cdef _Geometry t = _Geometry()
    cdef Py_ssize_t ekh = geo.g.dh * (geo.g.kh - 1), ekw = geo.g.dw * (geo.g.kw - 1)
    cdef Py_ssize_t pb = ekh + geo.g.Ho - 1 - (geo.g.H - 1) - geo.g.pt   # bottom padding
    cdef Py_ssize_t pr = ekw + geo.g.Wo - 1 - (geo.g.W - 1) - geo.g.pl
    if geo.g.sh != 1 or geo.g.sw != 1 or geo.g.pt > ekh or geo.g.pl > ekw or pb > ekh \
            or pr > ekw or pb < 0 or pr < 0:
        return None
    t.g = geo.g
    t.g.H = geo.g.Ho
    t.g.W = geo.g.Wo
    t.g.Ho = geo.g.H
    t.g.Wo = geo.g.W
    t.g.pt = ekh - geo.g.pt
    t.g.pl = ekw - geo.g.pl
    t.N = geo.N
    t.C = geo.O
    t.O = geo.C
    t.groups = geo.groups
    t.Cg = geo.Og
    t.Og = geo.Cg
    t.Kg = geo.Og * geo.g.kh * geo.g.kw
    t.K = geo.O * geo.g.kh * geo.g.kw
    t.HWo = geo.g.H * geo.g.W
    return t


def conv2d_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1, *, need_bias=True,
                    need_input=True):
    """Gradients of ``conv2d(x, w, b, stride, padding, dilation, groups)``.

    Returns ``(dx, dw, db)``: ``dx`` of x's shape, or None when ``need_input`` is false (a
    network's first layer: its input needs no gradient, as PyTorch skips it for an input
    without requires_grad); ``dw`` of w's shape; ``db (O,)`` or None when ``need_bias`` is
    false. ``dy`` must have the output shape of that convolution. The hyper-parameters and
    errors are those of ``conv2d``.
    """
    if on_device(dy):
        return gpu_call("conv2d_backward", (), {
            "dy": dy, "x": x, "w": w, "stride": stride, "padding": padding,
            "dilation": dilation, "groups": groups, "need_bias": need_bias,
            "need_input": need_input})
    cdef cnp.ndarray DY = as_float_array(dy, "conv2d_backward", "dy")
    cdef cnp.ndarray X = as_float_array(x, "conv2d_backward", "x")
    cdef cnp.ndarray W = as_float_array(w, "conv2d_backward", "w")
    cdef int typenum = common_typenum(X, W)
    if cnp.PyArray_TYPE(DY) != cnp.NPY_FLOAT:
        typenum = cnp.NPY_DOUBLE
    cdef _Geometry geo = _geometry(X, W, stride, padding, dilation, groups, "conv2d_backward")
    out_shape = (geo.N, geo.O, geo.g.Ho, geo.g.Wo)
    if shape_of(DY) != out_shape:
        raise ValueError(f"fastdl.conv2d_backward: dy has shape {shape_of(DY)}, expected "
                         f"{out_shape} (the output of x of shape {shape_of(X)} and w of shape "
                         f"{shape_of(W)})")
    X = as_typenum(X, typenum)
    W = _aligned_c(as_typenum(W, typenum))
    DY = _aligned_c(as_typenum(DY, typenum))
    cdef cnp.ndarray DX = None
    cdef cnp.ndarray DW = np.empty(shape_of(W), dtype=X.dtype)
    cdef cnp.ndarray DB = np.empty((geo.O,), dtype=X.dtype) if need_bias else None
    cdef int dt = dtype_code(X)
    cdef int nthreads = current_threads(), nth
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(X)
    cdef double work = <double>cnp.PyArray_SIZE(DY) * geo.Kg
    if work < PARALLEL_MIN_WORK:
        nthreads = 1
    cdef char *dyp = <char *>cnp.PyArray_DATA(DY)
    cdef char *wp = <char *>cnp.PyArray_DATA(W)
    cdef char *dxp
    cdef char *dwp = <char *>cnp.PyArray_DATA(DW)
    cdef char *dwtp
    cdef char *xp
    cdef float *xpbp
    cdef float *slotp
    cdef int level
    cdef Py_ssize_t nbmax, part_floats
    cdef fdl_conv_geom gm = geo.g
    cdef Py_ssize_t items, n, g, bi, ld, unit_bytes, parts
    cdef cnp.ndarray offs, cols, dyc, slots
    cdef Py_ssize_t *a_off
    cdef Py_ssize_t *b_off
    cdef Py_ssize_t *c_off
    cdef Lowered p
    cdef bint pointwise, dw_done = False, dx_done = False
    cdef _Geometry tgeo

    if DB is not None:
        if cnp.PyArray_SIZE(DY) == 0:
            DB[...] = 0
        else:
            with nogil:
                _bias_grad(dt, dyp, <char *>cnp.PyArray_DATA(DB), geo.N, geo.O, geo.HWo,
                           nthreads)
    if cnp.PyArray_SIZE(DY) == 0 or geo.C == 0:
        DW[...] = 0
        return (np.zeros(shape_of(X), dtype=X.dtype) if need_input else None), DW, DB

    pointwise = _pointwise(geo)
    tgeo = None if pointwise else _transposed_geometry(geo)
    if not need_input:
        dx_done = True
    elif pointwise:
        # dX[n] (C x HW) = Wᵀ (C x O) @ dY[n], straight into dx: no col2im.
        DX = np.empty(shape_of(X), dtype=X.dtype)
        dxp = <char *>cnp.PyArray_DATA(DX)
        items = geo.N * geo.groups
        offs = np.empty(3 * items, dtype=np.intp)
        a_off = <Py_ssize_t *>cnp.PyArray_DATA(offs)
        b_off = a_off + items
        c_off = b_off + items
        for n in range(geo.N):
            for g in range(geo.groups):
                bi = n * geo.groups + g
                a_off[bi] = g * geo.Og * geo.Cg * isz
                b_off[bi] = (n * geo.O + g * geo.Og) * geo.HWo * isz
                c_off[bi] = (n * geo.C + g * geo.Cg) * geo.HWo * isz
        with nogil:
            gemm_batched(dt, items, geo.Cg, geo.HWo, geo.Og, 1.0, _mat(wp, geo.Cg, True), a_off,
                         _mat(dyp, geo.HWo, False), b_off, 0.0, _mat(dxp, geo.HWo, False),
                         c_off, NULL, nthreads)
        dx_done = True
    elif tgeo is not None:
        # Stride 1: dx is the convolution of dy with w flipped in space and with in/out
        # channels swapped per group, a forward conv with K = O*kh*kw: one efficient GEMM
        # (k = O*kh*kw) where Wᵀ dY has k = O only, and no col2im scatter.
        Wt = W.reshape(geo.groups, geo.Og, geo.Cg, geo.g.kh, geo.g.kw)[:, :, :, ::-1, ::-1]
        Wt = np.ascontiguousarray(Wt.transpose(0, 2, 1, 3, 4)).reshape(
            geo.C, geo.Og, geo.g.kh, geo.g.kw)
        DX = _forward(DY, Wt, None, tgeo)
        dx_done = True

    X = _strided_ok(X)
    _init_lowered(&p, geo, X)
    p.dy = dyp
    level = _sgemm_level() if dt == DT_FLOAT32 and geo.groups == 1 else 0
    if level and SMALL_IMAGES and geo.HWo <= SMALL_HWO and geo.O >= 8 and not dw_done:
        # small images: dWᵀ of a group of images in one kernel call, the groups' sums added
        # in order (groups fixed by the shape and the processor count)
        parts = min(geo.N, _procs())
        nbmax = (geo.N + parts - 1) // parts
        if geo.C >= CL_MIN_CHANNELS:
            part_floats = _cl_part_floats(&p, nbmax, True)
        else:
            part_floats = ((geo.K + geo.O) * nbmax * geo.HWo
                           + 32 * (nbmax * geo.HWo + geo.K) + 16)
        if part_floats * 4 * parts + parts * geo.K * geo.O * 4 <= _workspace_limit:
            nth = max(1, min(nthreads, parts))
            xpb = np.empty(nth * part_floats, dtype=np.float32)
            slots_s = np.empty((parts, geo.O, geo.K), dtype=np.float32)
            xpbp = <float *>cnp.PyArray_DATA(xpb)
            slotp = <float *>cnp.PyArray_DATA(slots_s)
            with nogil:
                _dw_small(&p, xpbp, part_floats, slotp, parts, level, nth)
            dwt = slots_s[0]
            for i in range(1, parts):
                dwt = dwt + slots_s[i]
            if geo.C >= CL_MIN_CHANNELS:   # O x (i, j, c)
                DW[...] = dwt.reshape(geo.O, geo.g.kh, geo.g.kw, geo.C).transpose(0, 3, 1, 2)
            else:                           # dWᵀ, (c, i, j) x O
                DW.reshape(geo.O, geo.Kg)[...] = dwt.reshape(geo.K, geo.O).T
            dw_done = True
    if not dw_done and _fused_units(&p, _dw_unit_target):
        unit_bytes = geo.K * p.R * geo.g.Wo * isz
        # float32, one group, O a multiple of 32: dWᵀ = Σ cols·dYᵀ on sgemm.h's kernel (the
        # BLAS route spent a third of its time packing); dY_u's transpose follows the columns
        p.sgemm = (_sgemm_level() if dt == DT_FLOAT32 and geo.groups == 1 and geo.O % 32 == 0
                   else 0)
        if p.sgemm:
            unit_bytes = (unit_bytes + p.R * geo.g.Wo * geo.O * isz + 63) // 64 * 64
        # A few parts per processor, taken dynamically, so that a core busy elsewhere
        # delays the whole no more than one part; their number comes from the shape.
        # The partial sums count against the workspace cap too.
        parts = min(geo.N * p.upi, 4 * _procs(),
                    1 + max(0, _workspace_limit - _procs() * unit_bytes)
                    // max(1, geo.O * geo.Kg * isz))
        nth = max(1, min(nthreads, _workspace_limit // unit_bytes, parts))
        cols = np.empty(nth * unit_bytes, dtype=np.uint8)
        offs = np.empty(3 * geo.groups * nth, dtype=np.intp)
        slots = np.empty((parts - 1) * geo.O * geo.Kg, dtype=X.dtype)
        check_blas_dims(_mat(dyp, geo.HWo, False), _mat(dwp, geo.Kg, False),
                        _mat(dwp, geo.Kg, False))
        if p.sgemm:
            dwt = np.empty((geo.Kg, geo.O), dtype=X.dtype)
            dwtp = <char *>cnp.PyArray_DATA(dwt)
            with nogil:
                _dw_fused(&p, dwtp, <char *>cnp.PyArray_DATA(slots),
                          parts, <char *>cnp.PyArray_DATA(cols), unit_bytes,
                          <Py_ssize_t *>cnp.PyArray_DATA(offs), nth)
            DW.reshape(geo.O, geo.Kg)[...] = dwt.T
            p.sgemm = 0
        else:
            with nogil:
                _dw_fused(&p, dwp, <char *>cnp.PyArray_DATA(slots), parts,
                          <char *>cnp.PyArray_DATA(cols), unit_bytes,
                          <Py_ssize_t *>cnp.PyArray_DATA(offs), nth)
        dw_done = True
    cols = offs = slots = None   # the dW buffers go before the dX ones come (the cap)
    if not dx_done and geo.N >= _procs() and geo.K * geo.HWo * isz * _procs() <= _workspace_limit:
        DX = np.zeros(shape_of(X), dtype=X.dtype)
        p.y = <char *>cnp.PyArray_DATA(DX)
        unit_bytes = geo.K * geo.HWo * isz
        nth = max(1, min(nthreads, _workspace_limit // unit_bytes, geo.N))
        cols = np.empty(nth * unit_bytes, dtype=np.uint8)
        offs = np.empty(3 * geo.groups * nth, dtype=np.intp)
        with nogil:
            _dx_fused(&p, wp, <char *>cnp.PyArray_DATA(cols), unit_bytes,
                      <Py_ssize_t *>cnp.PyArray_DATA(offs), nth)
        dx_done = True
    if dw_done and dx_done:
        return DX, DW, DB

    # The chunked path (few images, or images too big for the fused path's units).
    if not dx_done:
        DX = np.zeros(shape_of(X), dtype=X.dtype)
        p.y = <char *>cnp.PyArray_DATA(DX)
    _plan(&p, geo.K + geo.O)
    ld = p.nb * p.R * geo.g.Wo
    cols = np.empty(geo.K * ld, dtype=X.dtype)
    p.cols = <char *>cnp.PyArray_DATA(cols)
    if p.nb > 1:
        dyc = np.empty(geo.O * ld, dtype=X.dtype)
        p.dyc = <char *>cnp.PyArray_DATA(dyc)
    offs = np.empty(3 * geo.groups, dtype=np.intp)
    a_off = <Py_ssize_t *>cnp.PyArray_DATA(offs)
    b_off = a_off + geo.groups
    c_off = b_off + geo.groups
    check_blas_dims(_mat(dyp, geo.HWo, False), _mat(p.cols, ld, False), _mat(dwp, geo.Kg, False))
    if work >= NOGIL_MIN_WORK:
        with nogil:
            _backward_lowered(&p, wp, dwp, not dw_done, not dx_done, a_off, b_off, c_off,
                              nthreads)
    else:
        _backward_lowered(&p, wp, dwp, not dw_done, not dx_done, a_off, b_off, c_off, nthreads)
    return DX, DW, DB
