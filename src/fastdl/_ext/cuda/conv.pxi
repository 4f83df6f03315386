# conv: conv2d and conv2d_backward on the GPU (NCHW), as im2col into a bounded workspace +
# cuBLAS GEMMs (cuda/conv.cu has the lowering kernels; the GEMM, bias fill and channel sums
# come from blas.pxi, included before this file).
#
# Forward, per chunk of images (or of one image's output rows when a single image's columns
# exceed the workspace): cols (K x nb*P, K = C*kh*kw) = im2col(x), then per group
# Y[n, g] = W_g @ cols_g[n] as one strided-batched GEMM over the chunk's images (or over the
# groups, whichever is fewer calls), accumulating onto the bias (beta = 1 after a fill).
# 1x1 stride-1 unpadded convolutions skip the lowering: x itself is the GEMM operand;
# grouped ones with few channels per group (depthwise) run a direct kernel instead.
# Backward, per chunk: dW_g += dyc_g @ cols_g^T (one GEMM over all groups, chunks added in
# order: deterministic), dcols_g = W_g^T @ dyc_g into the cols buffer, then col2im gathers
# dcols into dx (each input pixel sums its own taps: no atomics); db = channel sums of dy.
#
# Shapes and hyper-parameters are validated by the CPU module's own parser
# (_conv._validated_geometry): one set of rules and messages for both.

cdef extern from "conv.h" nogil:
    ctypedef struct fdl_cuda_conv_geom:
        int64_t N, C, H, W, O, Ho, Wo, kh, kw, sh, sw, pt, pl, dh, dw
    int fdl_cuda_im2col(int dtype, const void *x, const fdl_cuda_conv_geom *g, int64_t n0,
                        int64_t nb, int64_t oh0, int64_t R, void *cols, void *stream)
    int fdl_cuda_im2col_host(int dtype, const void *x, const fdl_cuda_conv_geom *g, int64_t n0,
                             int64_t nb, int64_t oh0, int64_t R, void *cols)
    int fdl_cuda_col2im(int dtype, const void *cols, const fdl_cuda_conv_geom *g, int64_t n0,
                        int64_t nb, int64_t oh0, int64_t R, void *dx, int accumulate,
                        void *stream)
    int fdl_cuda_col2im_host(int dtype, const void *cols, const fdl_cuda_conv_geom *g,
                             int64_t n0, int64_t nb, int64_t oh0, int64_t R, void *dx,
                             int accumulate)
    int fdl_cuda_conv_gather_dy(int dtype, const void *dy, const fdl_cuda_conv_geom *g,
                                int64_t n0, int64_t nb, int64_t oh0, int64_t R, void *dyc,
                                void *stream)
    int fdl_cuda_conv_gather_dy_host(int dtype, const void *dy, const fdl_cuda_conv_geom *g,
                                     int64_t n0, int64_t nb, int64_t oh0, int64_t R, void *dyc)
    int fdl_cuda_conv_direct(int dtype, const void *x, const void *w, const void *bias,
                             const fdl_cuda_conv_geom *g, int64_t groups, void *y, void *stream)
    int fdl_cuda_conv_direct_host(int dtype, const void *x, const void *w, const void *bias,
                                  const fdl_cuda_conv_geom *g, int64_t groups, void *y)

from fastdl._ext._conv import _validated_geometry as _cpu_conv_geometry

# Bytes of lowered columns (and, backward, of reordered dy) one chunk may use.
cdef Py_ssize_t _conv_workspace = 256 * 1024 * 1024


def _conv_set_workspace_limit(Py_ssize_t nbytes):
    """Cap the GPU convolution's lowering workspace (bytes; default 256 MiB); returns the
    previous cap. Smaller caps mean smaller chunks (more GEMM calls), never a failure: a
    single output row of one image is the smallest chunk."""
    global _conv_workspace
    if nbytes < 1:
        raise ValueError(f"fastdl.conv2d: the workspace limit must be positive, got {nbytes}")
    previous = _conv_workspace
    _conv_workspace = nbytes
    return previous


def _conv_get_workspace_limit():
    return _conv_workspace


# Grouped forward convolutions with at most this many input channels per group run the
# direct kernel (no lowering): depthwise layers would otherwise copy each input value
# kh*kw times for GEMMs of k = kh*kw.
cdef Py_ssize_t _conv_direct_max_cg = 4


def _conv_set_direct_max_channels(Py_ssize_t cg):
    """Test hook: the direct kernel's channels-per-group bound (0: never); returns the
    previous one."""
    global _conv_direct_max_cg
    previous = _conv_direct_max_cg
    _conv_direct_max_cg = cg
    return previous


cdef class _ConvGeom:
    cdef fdl_cuda_conv_geom g
    cdef Py_ssize_t groups, Cg, Og, Kg, K, HWo


cdef _ConvGeom _conv_geometry(tuple xs, tuple ws, object stride, object padding,
                              object dilation, object groups, str func):
    cdef _ConvGeom geo = _ConvGeom.__new__(_ConvGeom)
    Ho, Wo, sh, sw, pt, pl, dh, dw, ngroups = _cpu_conv_geometry(
        xs, ws, stride, padding, dilation, groups, func)
    N, C, H, Wd = xs
    O, kh, kw = ws[0], ws[2], ws[3]
    geo.g.N = N
    geo.g.C = C
    geo.g.H = H
    geo.g.W = Wd
    geo.g.O = O
    geo.g.Ho = Ho
    geo.g.Wo = Wo
    geo.g.kh = kh
    geo.g.kw = kw
    geo.g.sh = sh
    geo.g.sw = sw
    geo.g.pt = pt
    geo.g.pl = pl
    geo.g.dh = dh
    geo.g.dw = dw
    geo.groups = ngroups
    geo.Cg = C // ngroups
    geo.Og = O // ngroups
    geo.Kg = geo.Cg * kh * kw
    geo.K = C * kh * kw
    geo.HWo = geo.g.Ho * geo.g.Wo
    return geo


cdef bint _conv_pointwise(_ConvGeom geo):
    return (geo.g.kh == 1 and geo.g.kw == 1 and geo.g.sh == 1 and geo.g.sw == 1
            and geo.g.pt == 0 and geo.g.pl == 0 and geo.g.Ho == geo.g.H
            and geo.g.Wo == geo.g.W)


cdef tuple _conv_chunks(_ConvGeom geo, Py_ssize_t rows, Py_ssize_t isz):
    """(images per chunk, output rows per chunk) for lowered matrices of `rows` rows."""
    cdef Py_ssize_t per_image = rows * geo.HWo * isz, per_row, nb, R
    if per_image <= _conv_workspace:
        nb = min(geo.g.N, max(1, _conv_workspace // per_image))
        return (max(1, nb), geo.g.Ho)
    per_row = rows * geo.g.Wo * isz
    R = min(geo.g.Ho, max(1, _conv_workspace // per_row))
    return (1, R)


# --------------------------------------------------------------------------------------
# Launch wrappers (device, or host twins)

cdef int _im2col(_Ctx ctx, DevArr x, _ConvGeom geo, Py_ssize_t n0, Py_ssize_t nb,
                 Py_ssize_t oh0, Py_ssize_t R, DevArr cols, str func) except -1:
    cdef int err
    if ctx.host:
        with nogil:
            err = fdl_cuda_im2col_host(x.dtype, <const void *>x.ptr, &geo.g, n0, nb, oh0, R,
                                       <void *>cols.ptr)
    else:
        err = fdl_cuda_im2col(x.dtype, <const void *>x.ptr, &geo.g, n0, nb, oh0, R,
                              <void *>cols.ptr, <void *>ctx.stream)
    return check(err, func)


cdef int _col2im(_Ctx ctx, DevArr cols, _ConvGeom geo, Py_ssize_t n0, Py_ssize_t nb,
                 Py_ssize_t oh0, Py_ssize_t R, DevArr dx, int accumulate, str func) except -1:
    cdef int err
    if ctx.host:
        with nogil:
            err = fdl_cuda_col2im_host(dx.dtype, <const void *>cols.ptr, &geo.g, n0, nb, oh0, R,
                                       <void *>dx.ptr, accumulate)
    else:
        err = fdl_cuda_col2im(dx.dtype, <const void *>cols.ptr, &geo.g, n0, nb, oh0, R,
                              <void *>dx.ptr, accumulate, <void *>ctx.stream)
    return check(err, func)


cdef int _conv_direct(_Ctx ctx, DevArr x, DevArr w, DevArr bias, _ConvGeom geo, DevArr y,
                      str func) except -1:
    cdef int err
    cdef const void *pb = <const void *>bias.ptr if bias is not None else NULL
    if ctx.host:
        with nogil:
            err = fdl_cuda_conv_direct_host(x.dtype, <const void *>x.ptr, <const void *>w.ptr,
                                            pb, &geo.g, geo.groups, <void *>y.ptr)
    else:
        err = fdl_cuda_conv_direct(x.dtype, <const void *>x.ptr, <const void *>w.ptr, pb,
                                   &geo.g, geo.groups, <void *>y.ptr, <void *>ctx.stream)
    return check(err, func)


cdef int _gather_dy(_Ctx ctx, DevArr dy, _ConvGeom geo, Py_ssize_t n0, Py_ssize_t nb,
                    Py_ssize_t oh0, Py_ssize_t R, DevArr dyc, str func) except -1:
    cdef int err
    if ctx.host:
        with nogil:
            err = fdl_cuda_conv_gather_dy_host(dy.dtype, <const void *>dy.ptr, &geo.g, n0, nb,
                                               oh0, R, <void *>dyc.ptr)
    else:
        err = fdl_cuda_conv_gather_dy(dy.dtype, <const void *>dy.ptr, &geo.g, n0, nb, oh0, R,
                                      <void *>dyc.ptr, <void *>ctx.stream)
    return check(err, func)


# --------------------------------------------------------------------------------------
# conv2d

cdef object _conv2d(_Ctx ctx, object x, object w, object b, object stride, object padding,
                    object dilation, object groups):
    cdef str func = "conv2d"
    cdef DevArr X = dev_float(x, func, "x")
    cdef DevArr W = dev_float(w, func, "w")
    cdef DevArr Bv = None
    same_dtype(X, W, func, "x", "w")
    if b is not None:
        Bv = dev_float(b, func, "b")
        same_dtype(X, Bv, func, "x", "b")
    cdef _ConvGeom geo = _conv_geometry(X.shape, W.shape, stride, padding, dilation, groups,
                                        func)
    if Bv is not None and (Bv.ndim != 1 or Bv.shape[0] != geo.g.O):
        raise ValueError(f"fastdl.conv2d: b has shape {Bv.shape}, expected ({geo.g.O},) to "
                         f"match w of shape {W.shape}")
    _require_aligned(X, func, "x")
    _require_aligned(W, func, "w")
    if Bv is not None:
        _require_aligned(Bv, func, "b")
    _begin(ctx, X, func)

    cdef Py_ssize_t N = geo.g.N, C = geo.g.C, O = geo.g.O, G = geo.groups
    cdef Py_ssize_t Og = geo.Og, Cg = geo.Cg, Kg = geo.Kg, HWo = geo.HWo, Wo = geo.g.Wo
    cdef DevArr Y = _new(ctx, X, (N, O, geo.g.Ho, Wo), X.dtype, func)
    if Y.size == 0:
        return Y.obj
    Bv = _contig(ctx, Bv, func)
    if C > 0 and G > 1 and Cg <= _conv_direct_max_cg:
        _conv_direct(ctx, _contig(ctx, X, func), _contig(ctx, W, func), Bv, geo, Y, func)
        return Y.obj
    if Bv is not None:
        _fill_bias(ctx, Y, Bv, N, O, HWo, func)
    elif C == 0:
        _zero(ctx, Y, func)
    if C == 0:
        return Y.obj
    X = _contig(ctx, X, func)
    W = _contig(ctx, W, func)
    cdef int dt = X.dtype
    cdef Py_ssize_t isz = X.itemsize, g, nn, n0, nbc, oh0, Rc, P, ld
    cdef double beta = 1.0 if Bv is not None else 0.0
    cdef DevArr cols

    if _conv_pointwise(geo):
        # Y[n, g] (Og x HW) = W_g (Og x Cg) @ X[n, g] (Cg x HW), x read in place.
        if G <= N:
            for g in range(G):
                _gemm(ctx, dt, 0, 0, Og, HWo, Cg, 1.0, W.ptr + g * Og * Cg * isz, Cg, 0,
                      X.ptr + g * Cg * HWo * isz, HWo, C * HWo, beta,
                      Y.ptr + g * Og * HWo * isz, HWo, O * HWo, N, func)
        else:
            for nn in range(N):
                _gemm(ctx, dt, 0, 0, Og, HWo, Cg, 1.0, W.ptr, Cg, Og * Cg,
                      X.ptr + nn * C * HWo * isz, HWo, Cg * HWo, beta,
                      Y.ptr + nn * O * HWo * isz, HWo, Og * HWo, G, func)
        return Y.obj

    nb, R = _conv_chunks(geo, geo.K, isz)
    cols = _scratch(ctx, geo.K * nb * R * Wo, dt, func)
    for n0 in range(0, N, nb):
        nbc = min(nb, N - n0)
        for oh0 in range(0, geo.g.Ho, R):
            Rc = min(R, geo.g.Ho - oh0)
            P = Rc * Wo
            ld = nbc * P
            _im2col(ctx, X, geo, n0, nbc, oh0, Rc, cols, func)
            y0 = Y.ptr + (n0 * O * HWo + oh0 * Wo) * isz
            if G <= nbc:
                # one call per group, batched over the chunk's images
                for g in range(G):
                    _gemm(ctx, dt, 0, 0, Og, P, Kg, 1.0, W.ptr + g * Og * Kg * isz, Kg, 0,
                          cols.ptr + g * Kg * ld * isz, ld, P, beta,
                          y0 + g * Og * HWo * isz, HWo, O * HWo, nbc, func)
            else:
                # one call per image, batched over the groups
                for nn in range(nbc):
                    _gemm(ctx, dt, 0, 0, Og, P, Kg, 1.0, W.ptr, Kg, Og * Kg,
                          cols.ptr + nn * P * isz, ld, Kg * ld, beta,
                          y0 + nn * O * HWo * isz, HWo, Og * HWo, G, func)
    return Y.obj


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """GPU twin of fastdl.conv2d (NCHW cross-correlation, PyTorch's semantics): im2col into a
    bounded workspace and cuBLAS GEMMs accumulating onto the bias."""
    return _conv2d(_ctx(False), x, w, b, stride, padding, dilation, groups)


def _host_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Test shim: conv2d's GPU plan on NumPy arrays."""
    return _host_unwrap(_conv2d(_ctx(True), _host_wrap(x), _host_wrap(w), _host_wrap(b),
                                stride, padding, dilation, groups))


# --------------------------------------------------------------------------------------
# conv2d_backward

cdef tuple _conv2d_backward(_Ctx ctx, object dy, object x, object w, object stride,
                            object padding, object dilation, object groups, object need_bias,
                            object need_input):
    cdef str func = "conv2d_backward"
    cdef DevArr dY = dev_float(dy, func, "dy")
    cdef DevArr X = dev_float(x, func, "x")
    cdef DevArr W = dev_float(w, func, "w")
    same_dtype(dY, X, func, "dy", "x")
    same_dtype(dY, W, func, "dy", "w")
    cdef _ConvGeom geo = _conv_geometry(X.shape, W.shape, stride, padding, dilation, groups,
                                        func)
    out_shape = (geo.g.N, geo.g.O, geo.g.Ho, geo.g.Wo)
    if dY.shape != out_shape:
        raise ValueError(f"fastdl.conv2d_backward: dy has shape {dY.shape}, expected "
                         f"{out_shape} (the output of x of shape {X.shape} and w of shape "
                         f"{W.shape})")
    _require_aligned(dY, func, "dy")
    _require_aligned(X, func, "x")
    _require_aligned(W, func, "w")
    _begin(ctx, dY, func)

    cdef Py_ssize_t N = geo.g.N, C = geo.g.C, O = geo.g.O, G = geo.groups
    cdef Py_ssize_t Og = geo.Og, Cg = geo.Cg, Kg = geo.Kg, HWo = geo.HWo, Wo = geo.g.Wo
    cdef DevArr DX = _new(ctx, dY, X.shape, dY.dtype, func) if need_input else None
    cdef DevArr DW = _new(ctx, dY, W.shape, dY.dtype, func)
    cdef DevArr DB = _new(ctx, dY, (O,), dY.dtype, func) if need_bias else None
    dY = _contig(ctx, dY, func)
    if DB is not None:
        _sum_aob(ctx, dY, N, O, HWo, DB, func)
    if dY.size == 0 or C == 0:
        if DX is not None:
            _zero(ctx, DX, func)
        _zero(ctx, DW, func)
        return _conv_grads(DX, DW, DB)
    X = _contig(ctx, X, func)
    W = _contig(ctx, W, func)
    cdef int dt = X.dtype
    cdef Py_ssize_t isz = X.itemsize, g, nn, n0, nbc, oh0, Rc, P, ld
    cdef bint pointwise = _conv_pointwise(geo), first = True
    # the lowered dx path: dcols GEMM + col2im per chunk (1x1 convolutions write dx directly)
    cdef bint lowered_dx = DX is not None and not pointwise
    cdef DevArr cols, dyc

    if DX is not None and pointwise:
        # dX[n, g] (Cg x HW) = W_g^T (Cg x Og) @ dY[n, g] (Og x HW), straight into dx.
        if G <= N:
            for g in range(G):
                _gemm(ctx, dt, 1, 0, Cg, HWo, Og, 1.0, W.ptr + g * Og * Cg * isz, Cg, 0,
                      dY.ptr + g * Og * HWo * isz, HWo, O * HWo, 0.0,
                      DX.ptr + g * Cg * HWo * isz, HWo, C * HWo, N, func)
        else:
            for nn in range(N):
                _gemm(ctx, dt, 1, 0, Cg, HWo, Og, 1.0, W.ptr, Cg, Og * Cg,
                      dY.ptr + nn * O * HWo * isz, HWo, Og * HWo, 0.0,
                      DX.ptr + nn * C * HWo * isz, HWo, Cg * HWo, G, func)

    nb, R = _conv_chunks(geo, geo.K + O, isz)
    cols = _scratch(ctx, geo.K * nb * R * Wo, dt, func)
    dyc = _scratch(ctx, O * nb * R * Wo, dt, func)
    for n0 in range(0, N, nb):
        nbc = min(nb, N - n0)
        for oh0 in range(0, geo.g.Ho, R):
            Rc = min(R, geo.g.Ho - oh0)
            P = Rc * Wo
            ld = nbc * P
            _im2col(ctx, X, geo, n0, nbc, oh0, Rc, cols, func)
            _gather_dy(ctx, dY, geo, n0, nbc, oh0, Rc, dyc, func)
            # dW_g (Og x Kg) += dyc_g (Og x ld) @ cols_g^T, every group in one call; the
            # chunks add in order.
            _gemm(ctx, dt, 0, 1, Og, Kg, ld, 1.0, dyc.ptr, ld, Og * ld, cols.ptr, ld, Kg * ld,
                  0.0 if first else 1.0, DW.ptr, Kg, Og * Kg, G, func)
            first = False
            if lowered_dx:
                # dcols_g (Kg x ld) = W_g^T @ dyc_g, over cols (the dW GEMM before it in
                # stream order has read them), then gathered into dx.
                _gemm(ctx, dt, 1, 0, Kg, ld, Og, 1.0, W.ptr, Kg, Og * Kg, dyc.ptr, ld,
                      Og * ld, 0.0, cols.ptr, ld, Kg * ld, G, func)
                _col2im(ctx, cols, geo, n0, nbc, oh0, Rc, DX, 1 if oh0 > 0 else 0, func)
    return _conv_grads(DX, DW, DB)


cdef tuple _conv_grads(DevArr DX, DevArr DW, DevArr DB):
    return (DX.obj if DX is not None else None, DW.obj, DB.obj if DB is not None else None)


def conv2d_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1, *, need_bias=True,
                    need_input=True):
    """GPU twin of fastdl.conv2d_backward: (dx, dw, db) of conv2d(x, w, b, ...), dx None
    when not need_input (no dcols GEMM, no col2im), db None unless need_bias. Deterministic:
    dw sums chunks in order, dx gathers (no atomics), db sums in double in a fixed order."""
    return _conv2d_backward(_ctx(False), dy, x, w, stride, padding, dilation, groups,
                            need_bias, need_input)


def _host_conv2d_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1, *,
                          need_bias=True, need_input=True):
    """Test shim: conv2d_backward's GPU plan on NumPy arrays."""
    r = _conv2d_backward(_ctx(True), _host_wrap(dy), _host_wrap(x), _host_wrap(w), stride,
                         padding, dilation, groups, need_bias, need_input)
    return tuple(_host_unwrap(v) for v in r)
