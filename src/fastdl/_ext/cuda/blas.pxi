# blas: matmul, linear and linear_backward on the GPU through cuBLAS (cuda/blas.cu), and the
# machinery conv.pxi shares: cuBLAS loading, the row-major GEMM, operand description,
# bias fill, channel sums, and the execution context.
#
# cuBLAS is not linked: it is found at the first GEMM with dlopen (_cublas_search_paths()
# gives the order), so building needs no cuBLAS and a machine without it still imports
# fastdl. Every function below parses and validates all of its arguments before it touches
# the device; the plans (which operand is transposed, which is copied, how batches are cut)
# are made here and run either on the device or, for the CPU test suite, on host memory
# through the launchers' *_host twins (the _host_* shims).

from libc.string cimport memcpy, memset

cdef extern from "blas.h" nogil:
    int fdl_cuda_blas_load(const char *const *paths, int npaths, char *loaded, int loaded_len,
                           char *err, int err_len)
    int fdl_cuda_blas_is_loaded()
    const char *fdl_cuda_blas_status_string(int status)
    void fdl_cuda_blas_set_tf32(int allow)
    int fdl_cuda_blas_get_tf32()
    int fdl_cuda_gemm(int dtype, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                      double alpha, const void *a, int64_t lda, int64_t stride_a,
                      const void *b, int64_t ldb, int64_t stride_b, double beta, void *c,
                      int64_t ldc, int64_t stride_c, int64_t batch, void *stream)
    int fdl_cuda_gemm_host(int dtype, int trans_a, int trans_b, int64_t m, int64_t n,
                           int64_t k, double alpha, const void *a, int64_t lda,
                           int64_t stride_a, const void *b, int64_t ldb, int64_t stride_b,
                           double beta, void *c, int64_t ldc, int64_t stride_c, int64_t batch)
    int fdl_cuda_fill_bias(int dtype, void *y, const void *bias, int64_t outer, int64_t n,
                           int64_t inner, void *stream)
    int fdl_cuda_fill_bias_host(int dtype, void *y, const void *bias, int64_t outer, int64_t n,
                                int64_t inner)
    int fdl_cuda_sum_aob(int dtype, const void *x, int64_t A, int64_t O, int64_t B, void *out,
                         void *stream)
    int fdl_cuda_sum_aob_host(int dtype, const void *x, int64_t A, int64_t O, int64_t B,
                              void *out)

cdef enum:
    _BLAS_MEMCPY_D2D = 3   # cudaMemcpyDeviceToDevice


# --------------------------------------------------------------------------------------
# cuBLAS: where it is looked for, loading, errors, TF32

_CUBLAS_SONAMES = ("libcublas.so.13", "libcublas.so.12")
_cublas_path = None


def _cublas_search_paths():
    """The files fastdl tries to dlopen for cuBLAS, in order: the pip packages
    (nvidia-cublas for CUDA 13 installs nvidia/cu13/lib, nvidia-cublas-cu12 nvidia/cublas/lib),
    then $CUDA_HOME/lib64 (or $CUDA_PATH), /usr/local/cuda/lib64, then the bare sonames
    through the dynamic loader's own path (LD_LIBRARY_PATH, ldconfig)."""
    import importlib.util
    import os
    dirs = []
    try:
        spec = importlib.util.find_spec("nvidia")
        roots = list(spec.submodule_search_locations or []) if spec is not None else []
    except (ImportError, ValueError):
        roots = []
    for root in roots:
        dirs.append(os.path.join(root, "cu13", "lib"))
        dirs.append(os.path.join(root, "cublas", "lib"))
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home:
            dirs.append(os.path.join(home, "lib64"))
    dirs.append("/usr/local/cuda/lib64")
    paths = []
    for d in dirs:
        for name in _CUBLAS_SONAMES:
            p = os.path.join(d, name)
            if p not in paths:
                paths.append(p)
    paths.extend(_CUBLAS_SONAMES)
    return paths


def _cublas_load():
    """Load cuBLAS (once) and return the path it came from; RuntimeError naming every place
    searched, and why each failed, when none works. Needs no GPU."""
    global _cublas_path
    cdef char loaded[1024]
    cdef char err[8192]
    cdef const char **cpaths
    cdef int i, rc
    if _cublas_path is not None:
        return _cublas_path
    paths = _cublas_search_paths()
    encoded = [p.encode("utf-8", "surrogateescape") for p in paths]
    cpaths = <const char **>malloc(len(encoded) * sizeof(char *))
    if cpaths == NULL:
        raise MemoryError()
    try:
        for i in range(len(encoded)):
            cpaths[i] = <const char *>encoded[i]
        rc = fdl_cuda_blas_load(cpaths, len(encoded), loaded, sizeof(loaded), err, sizeof(err))
    finally:
        free(cpaths)
    if rc != 0:
        reasons = err.decode("utf-8", "replace").strip()
        raise RuntimeError(
            "cuBLAS could not be loaded; fastdl's GPU matmul, linear and conv2d need it. "
            "Install it with pip (CUDA 13: 'pip install nvidia-cublas'; CUDA 12: 'pip install "
            "nvidia-cublas-cu12'), or point CUDA_HOME at a CUDA toolkit that has "
            "lib64/libcublas.so. Tried, in order:\n  " + reasons.replace("\n", "\n  "))
    _cublas_path = loaded.decode("utf-8", "replace")
    return _cublas_path


cdef int _cublas_require(str func) except -1:
    if _cublas_path is None:
        try:
            _cublas_load()
        except RuntimeError as exc:
            raise RuntimeError(f"fastdl.{func}: {exc}") from None
    return 0


def set_allow_tf32(allow):
    """Let float32 GEMMs (matmul, linear, conv2d and their backward passes) run on TF32
    tensor cores: several times faster on Ampere and newer, but inputs rounded to 10-bit
    mantissas (relative error ~1e-3 instead of ~1e-6). Off by default."""
    fdl_cuda_blas_set_tf32(1 if allow else 0)


def get_allow_tf32():
    """Whether float32 GEMMs may use TF32 (set_allow_tf32); False by default."""
    return bool(fdl_cuda_blas_get_tf32())


cdef int _blas_check(int err, str func) except -1:
    if err < 0:
        raise RuntimeError(f"fastdl.{func}: cuBLAS error {-err}: "
                           f"{fdl_cuda_blas_status_string(-err).decode('utf-8', 'replace')}")
    return check(err, func)


# --------------------------------------------------------------------------------------
# Execution context: the device (the first array's stream), or host memory for the tests

class _HostArr:
    """A NumPy array seen through __cuda_array_interface__ (its pointer a host address): what
    the _host_* shims pass through the GPU functions' planning code."""

    def __init__(self, arr):
        self.arr = arr

    @property
    def __cuda_array_interface__(self):
        a = self.arr
        return {"shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False),
                "strides": None if a.flags.c_contiguous else a.strides, "version": 3,
                "stream": None}


cdef class _Ctx:
    cdef bint host
    cdef uintptr_t stream


# GEMM calls and operand copies made so far (device and host alike), so that tests can check
# that a plan is what it is meant to be (a transposed view costs no copy, a broadcast batch
# one strided-batched call).
cdef Py_ssize_t _n_gemm = 0, _n_copy = 0


def _blas_counters(reset=False):
    """{'gemm': GEMM calls, 'copy': operand copies} since the last reset."""
    global _n_gemm, _n_copy
    r = {"gemm": _n_gemm, "copy": _n_copy}
    if reset:
        _n_gemm = _n_copy = 0
    return r


cdef _Ctx _ctx(bint host):
    cdef _Ctx c = _Ctx.__new__(_Ctx)
    c.host = host
    c.stream = 0
    return c


cdef int _begin(_Ctx ctx, DevArr first, str func) except -1:
    """After validation: the device and cuBLAS must be there; work goes on first's stream."""
    if not ctx.host:
        require_device(func)
        _cublas_require(func)
        ctx.stream = first.stream
    return 0


cdef object _host_wrap(object x):
    return _HostArr(x) if isinstance(x, np.ndarray) else x


cdef object _host_unwrap(object x):
    return x.arr if isinstance(x, _HostArr) else x


cdef DevArr _new(_Ctx ctx, DevArr like, tuple shape, int dtype, str func):
    """A new C-contiguous result of like's kind."""
    if ctx.host:
        return dev_view(_HostArr(np.empty(shape, _CODE_NUMPY[dtype])), func, "result")
    return dev_new(like, shape, dtype, func)


cdef DevArr _scratch(_Ctx ctx, Py_ssize_t n, int dtype, str func):
    """A temporary of n elements owned by fastdl, freed in stream order when dropped."""
    cdef DevArr r
    if ctx.host:
        return dev_view(_HostArr(np.empty(n, _CODE_NUMPY[dtype])), func, "scratch")
    r = dev_view(DeviceArray((n,), _CODE_NUMPY[dtype], ctx.stream), func, "scratch")
    r.stream = ctx.stream
    return r


cdef DevArr _contig(_Ctx ctx, DevArr a, str func):
    """a, or a C-contiguous copy of it made on the context's stream."""
    global _n_copy
    if a is None or a.contiguous:
        return a
    _n_copy += 1
    if ctx.host:
        return dev_view(_HostArr(np.ascontiguousarray(a.obj.arr)), func, "copy")
    a.stream = ctx.stream
    return dev_contig(a, func)


cdef int _zero(_Ctx ctx, DevArr r, str func) except -1:
    cdef size_t nbytes = <size_t>r.size * r.itemsize
    if nbytes == 0:
        return 0
    if ctx.host:
        memset(<void *>r.ptr, 0, nbytes)
        return 0
    return check(fdl_cuda_memset(<void *>r.ptr, 0, nbytes, <void *>ctx.stream), func)


cdef int _copy(_Ctx ctx, DevArr dst, DevArr src, str func) except -1:
    """dst = src, both C-contiguous of the same size and dtype."""
    cdef size_t nbytes = <size_t>src.size * src.itemsize
    if nbytes == 0:
        return 0
    if ctx.host:
        memcpy(<void *>dst.ptr, <const void *>src.ptr, nbytes)
        return 0
    return check(fdl_cuda_memcpy(<void *>dst.ptr, <const void *>src.ptr, nbytes, _BLAS_MEMCPY_D2D,
                                 <void *>ctx.stream), func)


cdef int _gemm(_Ctx ctx, int dtype, int ta, int tb, int64_t m, int64_t n, int64_t k,
               double alpha, uintptr_t a, int64_t lda, int64_t sa, uintptr_t b, int64_t ldb,
               int64_t sb, double beta, uintptr_t c, int64_t ldc, int64_t sc, int64_t batch,
               str func) except -1:
    """Row-major strided-batched GEMM (blas.h's contract); pointers in bytes, the rest in
    elements."""
    global _n_gemm
    cdef int err
    _n_gemm += 1
    if ctx.host:
        with nogil:
            err = fdl_cuda_gemm_host(dtype, ta, tb, m, n, k, alpha, <const void *>a, lda, sa,
                                     <const void *>b, ldb, sb, beta, <void *>c, ldc, sc, batch)
    else:
        with nogil:
            err = fdl_cuda_gemm(dtype, ta, tb, m, n, k, alpha, <const void *>a, lda, sa,
                                <const void *>b, ldb, sb, beta, <void *>c, ldc, sc, batch,
                                <void *>ctx.stream)
    return _blas_check(err, func)


cdef int _fill_bias(_Ctx ctx, DevArr y, DevArr bias, int64_t outer, int64_t n, int64_t inner,
                    str func) except -1:
    cdef int err
    if ctx.host:
        err = fdl_cuda_fill_bias_host(y.dtype, <void *>y.ptr, <const void *>bias.ptr, outer, n,
                                      inner)
    else:
        err = fdl_cuda_fill_bias(y.dtype, <void *>y.ptr, <const void *>bias.ptr, outer, n,
                                 inner, <void *>ctx.stream)
    return check(err, func)


cdef int _sum_aob(_Ctx ctx, DevArr x, int64_t A, int64_t O, int64_t B, DevArr out,
                  str func) except -1:
    cdef int err
    if ctx.host:
        with nogil:
            err = fdl_cuda_sum_aob_host(x.dtype, <const void *>x.ptr, A, O, B, <void *>out.ptr)
    else:
        err = fdl_cuda_sum_aob(x.dtype, <const void *>x.ptr, A, O, B, <void *>out.ptr,
                               <void *>ctx.stream)
    return check(err, func)


# --------------------------------------------------------------------------------------
# Operands

cdef int _require_aligned(DevArr a, str func, str name) except -1:
    # cuBLAS and the kernels load whole elements: a view that starts mid-element cannot be
    # read (no producer makes one; a hand-written __cuda_array_interface__ can).
    if a.size and a.ptr % a.itemsize:
        raise ValueError(f"fastdl.{func}: {name} is not aligned to its element size "
                         f"({a.itemsize} bytes) on the GPU")
    return 0


cdef tuple _elem_strides(DevArr a):
    """a's strides in elements (C order's when it has none), or None if one is not a whole
    number of elements."""
    cdef Py_ssize_t acc = 1
    cdef int d
    if a.strides is None:
        st = [0] * a.ndim
        for d in range(a.ndim - 1, -1, -1):
            st[d] = acc
            acc *= a.shape[d]
        return tuple(st)
    out = []
    for s in a.strides:
        if s % a.itemsize:
            return None
        out.append(s // a.itemsize)
    return tuple(out)


cdef tuple _matrix(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t rs, Py_ssize_t cs):
    """How BLAS reads a rows x cols matrix with element strides (rs, cs) in place:
    (0, ld) row-major, (1, ld) column-major (its transpose row-major), None when neither."""
    cdef Py_ssize_t ld
    if cols <= 1 or cs == 1:
        ld = rs if rows > 1 else max(1, cols)
        if ld >= max(1, cols):
            return (0, ld)
    if rows <= 1 or rs == 1:
        ld = cs if cols > 1 else max(1, rows)
        if ld >= max(1, rows):
            return (1, ld)
    return None


cdef object _uniform(tuple strides, tuple shape, int d0, int d1):
    """The stride s, if any, with which dims [d0, d1) step as one flattened index (stride of
    dim d == s * product of the later dims' sizes, size-1 dims ignored); None when they do
    not, or would need a negative s."""
    s = None
    expect = 0
    for d in range(d1 - 1, d0 - 1, -1):
        if shape[d] == 1:
            continue
        if s is None:
            s = strides[d]
            expect = s * shape[d]
        elif strides[d] != expect:
            return None
        else:
            expect *= shape[d]
    if s is None:
        return 0
    return s if s >= 0 else None


cdef tuple _extent(DevArr a):
    """The bytes [lo, hi) a's elements span."""
    if a.size == 0:
        return (a.ptr, a.ptr)
    st = a.strides
    if st is None:
        return (a.ptr, a.ptr + a.size * a.itemsize)
    lo = hi = <object>a.ptr
    for d in range(a.ndim):
        span = (a.shape[d] - 1) * st[d]
        if span < 0:
            lo += span
        else:
            hi += span
    return (lo, hi + a.itemsize)


cdef bint _overlap(DevArr a, DevArr b):
    if a is None or b is None or a.size == 0 or b.size == 0:
        return False
    ea = _extent(a)
    eb = _extent(b)
    return ea[0] < eb[1] and eb[0] < ea[1]


cdef tuple _as_matrix(_Ctx ctx, DevArr a, Py_ssize_t rows, Py_ssize_t cols, int row_axis,
                      int col_axis, str func):
    """(a or a C-ordered copy, trans, ld, element strides): the matrix axes of a (axis -1: a
    promoted unit axis) as a BLAS operand, copied once only when its strides do not allow."""
    st = _elem_strides(a)
    desc = None
    if st is not None:
        desc = _matrix(rows, cols, st[row_axis] if row_axis >= 0 else 0,
                       st[col_axis] if col_axis >= 0 else 0)
    if desc is None:
        a = _contig(ctx, a, func)
        st = _elem_strides(a)
        desc = _matrix(rows, cols, st[row_axis] if row_axis >= 0 else 0,
                       st[col_axis] if col_axis >= 0 else 0)
    return a, desc[0], desc[1], st


cdef tuple _as_rows(_Ctx ctx, DevArr a, Py_ssize_t rows, Py_ssize_t cols, str func):
    """a (..., cols) as one (rows, cols) BLAS operand: its leading dims must fold into one row
    stride, else it is copied. Returns (a, trans, ld)."""
    cdef int nd = a.ndim
    for attempt in range(2):
        st = _elem_strides(a)
        desc = None
        if st is not None:
            rs = _uniform(st, a.shape, 0, nd - 1) if nd > 1 else 0
            if rs is not None:
                desc = _matrix(rows, cols, rs, st[nd - 1])
        if desc is not None:
            return a, desc[0], desc[1]
        a = _contig(ctx, a, func)
    raise RuntimeError(f"fastdl.{func}: internal error: a C-ordered copy is not a BLAS operand")


cdef DevArr _result_for(_Ctx ctx, DevArr target, DevArr like, tuple shape, tuple inputs,
                        str func):
    """Where to compute: the user's out when it overlaps no input, else a new array (copied
    into out at the end)."""
    if target is not None:
        for x in inputs:
            if _overlap(target, <DevArr>x):
                break
        else:
            return target
    return _new(ctx, like, shape, like.dtype, func)


cdef object _finish(_Ctx ctx, DevArr target, DevArr result, str func):
    if target is not None and result is not target:
        _copy(ctx, target, result, func)
        return target.obj
    return result.obj


cdef Py_ssize_t _prod(tuple t):
    cdef Py_ssize_t p = 1
    for v in t:
        p *= v
    return p


# --------------------------------------------------------------------------------------
# matmul

cdef object _matmul(_Ctx ctx, object a, object b, object out):
    cdef str func = "matmul"
    cdef DevArr A = dev_float(a, func, "a")
    cdef DevArr B = dev_float(b, func, "b")
    same_dtype(A, B, func, "a", "b")
    cdef int nda = A.ndim, ndb = B.ndim, nbatch, d, ia, ib
    if nda == 0 or ndb == 0:
        raise ValueError(f"fastdl.matmul: operands must be at least 1-D, got shapes "
                         f"{A.shape} and {B.shape}")
    cdef Py_ssize_t m = 1 if nda == 1 else A.shape[nda - 2]
    cdef Py_ssize_t k = A.shape[nda - 1]
    cdef Py_ssize_t kb = B.shape[0] if ndb == 1 else B.shape[ndb - 2]
    cdef Py_ssize_t n = 1 if ndb == 1 else B.shape[ndb - 1]
    if k != kb:
        raise ValueError(f"fastdl.matmul: shapes {A.shape} (a) and {B.shape} (b) are not "
                         f"aligned: {k} (last dim of a) != {kb} "
                         f"({'dim 0' if ndb == 1 else 'second-to-last dim'} of b)")
    cdef int nba = nda - 2 if nda > 2 else 0
    cdef int nbb = ndb - 2 if ndb > 2 else 0
    nbatch = max(nba, nbb)
    bshape = []
    for d in range(nbatch):
        ia = d - (nbatch - nba)
        ib = d - (nbatch - nbb)
        da = A.shape[ia] if ia >= 0 else 1
        db_ = B.shape[ib] if ib >= 0 else 1
        if da != db_ and da != 1 and db_ != 1:
            raise ValueError(f"fastdl.matmul: batch dimensions of shapes {A.shape} (a) and "
                             f"{B.shape} (b) do not broadcast")
        bshape.append(da if da != 1 else db_)
    bshape = tuple(bshape)
    shape = bshape + ((m,) if nda > 1 else ()) + ((n,) if ndb > 1 else ())
    cdef DevArr target = None
    if out is not None:
        target = dev_out(out, A, shape, A.dtype, func)
    _require_aligned(A, func, "a")
    _require_aligned(B, func, "b")
    _begin(ctx, A, func)

    cdef DevArr C
    if _prod(shape) == 0:
        return target.obj if target is not None else _new(ctx, A, shape, A.dtype, func).obj
    C = _result_for(ctx, target, A, shape, (A, B), func)
    if k == 0:
        _zero(ctx, C, func)
        return _finish(ctx, target, C, func)

    A, ta, lda, sta = _as_matrix(ctx, A, m, k, nda - 2 if nda > 1 else -1, nda - 1, func)
    B, tb, ldb, stb = _as_matrix(ctx, B, k, n, ndb - 2 if ndb > 1 else 0,
                                 ndb - 1 if ndb > 1 else -1, func)
    cdef int dt = A.dtype
    cdef Py_ssize_t isz = A.itemsize, batch = _prod(bshape)
    cdef Py_ssize_t ldc = max(1, n)
    astr, bstr, cstr = [], [], []
    cdef Py_ssize_t inner = m * n
    for d in range(nbatch - 1, -1, -1):
        cstr.append(inner if bshape[d] != 1 else 0)
        inner *= bshape[d]
    cstr.reverse()
    for d in range(nbatch):
        ia = d - (nbatch - nba)
        ib = d - (nbatch - nbb)
        astr.append(sta[ia] if ia >= 0 and A.shape[ia] != 1 else 0)
        bstr.append(stb[ib] if ib >= 0 and B.shape[ib] != 1 else 0)
    astr, bstr, cstr = tuple(astr), tuple(bstr), tuple(cstr)

    if batch == 1:
        _gemm(ctx, dt, ta, tb, m, n, k, 1.0, A.ptr, lda, 0, B.ptr, ldb, 0, 0.0, C.ptr, ldc,
              0, 1, func)
        return _finish(ctx, target, C, func)
    if (not any(bstr) and ta == 0 and _uniform(astr, bshape, 0, nbatch) == m * lda
            and _uniform(cstr, bshape, 0, nbatch) == m * ldc):
        # A stack of row-major matrices times one matrix: one tall GEMM.
        _gemm(ctx, dt, 0, tb, batch * m, n, k, 1.0, A.ptr, lda, 0, B.ptr, ldb, 0, 0.0, C.ptr,
              ldc, 0, 1, func)
        return _finish(ctx, target, C, func)

    # The longest run of trailing batch dims that every operand steps through with one
    # stride is one strided-batched call; the leading dims left over loop over such calls.
    cdef int d0 = nbatch
    while d0 > 0 and all(_uniform(s, bshape, d0 - 1, nbatch) is not None
                         for s in (astr, bstr, cstr)):
        d0 -= 1
    cdef Py_ssize_t ninner = _prod(bshape[d0:])
    sa = _uniform(astr, bshape, d0, nbatch)
    sb = _uniform(bstr, bshape, d0, nbatch)
    sc = _uniform(cstr, bshape, d0, nbatch)
    import itertools
    for idx in itertools.product(*[range(s) for s in bshape[:d0]]):
        oa = ob = oc = 0
        for d in range(d0):
            oa += idx[d] * astr[d]
            ob += idx[d] * bstr[d]
            oc += idx[d] * cstr[d]
        _gemm(ctx, dt, ta, tb, m, n, k, 1.0, A.ptr + oa * isz, lda, sa, B.ptr + ob * isz, ldb,
              sb, 0.0, C.ptr + oc * isz, ldc, sc, ninner, func)
    return _finish(ctx, target, C, func)


def matmul(a, b, *, out=None):
    """GPU twin of fastdl.matmul (numpy.matmul semantics) on cuBLAS: a transposed view is a
    transpose flag, broadcast batches are strided-batched GEMMs; other layouts are copied
    once. float32 is true FP32 unless set_allow_tf32(True)."""
    return _matmul(_ctx(False), a, b, out)


def _host_matmul(a, b, out=None):
    """Test shim: matmul's GPU plan run on NumPy arrays (host twins of the launchers)."""
    return _host_unwrap(_matmul(_ctx(True), _host_wrap(a), _host_wrap(b), _host_wrap(out)))


# --------------------------------------------------------------------------------------
# linear and linear_backward (w is (in_features, out_features), as the CPU's)

cdef int _layer_shapes(DevArr X, DevArr W, str func) except -1:
    if W.ndim != 2:
        raise ValueError(f"fastdl.{func}: w must be 2-D (in_features, out_features), "
                         f"got shape {W.shape}")
    if X.ndim == 0 or X.shape[X.ndim - 1] != W.shape[0]:
        raise ValueError(f"fastdl.{func}: x has shape {X.shape} and w has shape "
                         f"{W.shape}; x.shape[-1] must equal w.shape[0] ({W.shape[0]})")
    return 0


cdef object _linear(_Ctx ctx, object x, object w, object b, object out):
    cdef str func = "linear"
    cdef DevArr X = dev_float(x, func, "x")
    cdef DevArr W = dev_float(w, func, "w")
    cdef DevArr Bv = None
    same_dtype(X, W, func, "x", "w")
    if b is not None:
        Bv = dev_float(b, func, "b")
        same_dtype(X, Bv, func, "x", "b")
    _layer_shapes(X, W, func)
    cdef Py_ssize_t k = W.shape[0], n = W.shape[1]
    if Bv is not None and (Bv.ndim != 1 or Bv.shape[0] != n):
        raise ValueError(f"fastdl.linear: b has shape {Bv.shape}, expected ({n},) to match "
                         f"w of shape {W.shape}")
    shape = X.shape[:X.ndim - 1] + (n,)
    cdef DevArr target = None
    if out is not None:
        target = dev_out(out, X, shape, X.dtype, func)
    _require_aligned(X, func, "x")
    _require_aligned(W, func, "w")
    if Bv is not None:
        _require_aligned(Bv, func, "b")
    _begin(ctx, X, func)

    cdef Py_ssize_t rows = _prod(X.shape[:X.ndim - 1])
    if rows * n == 0:
        return target.obj if target is not None else _new(ctx, X, shape, X.dtype, func).obj
    cdef DevArr C = _result_for(ctx, target, X, shape, (X, W, Bv), func)
    Bv = _contig(ctx, Bv, func)
    if Bv is not None:
        # GEMM accumulates onto the broadcast bias (beta = 1): no second pass over y.
        _fill_bias(ctx, C, Bv, rows, n, 1, func)
    elif k == 0:
        _zero(ctx, C, func)
    if k > 0:
        X, tx, ldx = _as_rows(ctx, X, rows, k, func)
        W, tw, ldw, _ = _as_matrix(ctx, W, k, n, 0, 1, func)
        _gemm(ctx, X.dtype, tx, tw, rows, n, k, 1.0, X.ptr, ldx, 0, W.ptr, ldw, 0,
              1.0 if Bv is not None else 0.0, C.ptr, n, 0, 1, func)
    return _finish(ctx, target, C, func)


def linear(x, w, b=None, *, out=None):
    """GPU twin of fastdl.linear: y = x @ w + b, x (..., in), w (in, out), b (out,); one cuBLAS
    GEMM accumulating onto the broadcast bias."""
    return _linear(_ctx(False), x, w, b, out)


def _host_linear(x, w, b=None, out=None):
    """Test shim: linear's GPU plan on NumPy arrays."""
    return _host_unwrap(_linear(_ctx(True), _host_wrap(x), _host_wrap(w), _host_wrap(b),
                                _host_wrap(out)))


cdef tuple _linear_backward(_Ctx ctx, object dy, object x, object w, object need_bias):
    cdef str func = "linear_backward"
    cdef DevArr dY = dev_float(dy, func, "dy")
    cdef DevArr X = dev_float(x, func, "x")
    cdef DevArr W = dev_float(w, func, "w")
    same_dtype(dY, X, func, "dy", "x")
    same_dtype(dY, W, func, "dy", "w")
    _layer_shapes(X, W, func)
    cdef Py_ssize_t k = W.shape[0], n = W.shape[1]
    expected = X.shape[:X.ndim - 1] + (n,)
    if dY.shape != expected:
        raise ValueError(f"fastdl.linear_backward: dy has shape {dY.shape}, expected "
                         f"{expected} for x of shape {X.shape} and w of shape {W.shape}")
    _require_aligned(dY, func, "dy")
    _require_aligned(X, func, "x")
    _require_aligned(W, func, "w")
    _begin(ctx, dY, func)

    cdef Py_ssize_t rows = _prod(X.shape[:X.ndim - 1])
    cdef DevArr dX = _new(ctx, dY, X.shape, dY.dtype, func)
    cdef DevArr dW = _new(ctx, dY, (k, n), dY.dtype, func)
    cdef DevArr dB = _new(ctx, dY, (n,), dY.dtype, func) if need_bias else None
    dY = _contig(ctx, dY, func)   # db reads it row by row
    if rows * k > 0:
        if n == 0:
            _zero(ctx, dX, func)
        else:
            # dx = dy @ w^T: w's own layout with the transpose flag flipped.
            dY, tdy, lddy = _as_rows(ctx, dY, rows, n, func)
            W, tw, ldw, _ = _as_matrix(ctx, W, k, n, 0, 1, func)
            _gemm(ctx, dY.dtype, tdy, 1 - tw, rows, k, n, 1.0, dY.ptr, lddy, 0, W.ptr, ldw, 0,
                  0.0, dX.ptr, k, 0, 1, func)
    if k * n > 0:
        if rows == 0:
            _zero(ctx, dW, func)
        else:
            # dw = x^T @ dy
            X, tx, ldx = _as_rows(ctx, X, rows, k, func)
            dY, tdy, lddy = _as_rows(ctx, dY, rows, n, func)
            _gemm(ctx, dY.dtype, 1 - tx, tdy, k, n, rows, 1.0, X.ptr, ldx, 0, dY.ptr, lddy, 0,
                  0.0, dW.ptr, n, 0, 1, func)
    if dB is not None:
        _sum_aob(ctx, dY, rows, n, 1, dB, func)
    return dX.obj, dW.obj, (dB.obj if dB is not None else None)


def linear_backward(dy, x, w, *, need_bias=True):
    """GPU twin of fastdl.linear_backward: (dx, dw, db) with dx = dy @ w^T, dw = x^T @ dy (two
    cuBLAS GEMMs, transposes as flags) and db the column sums of dy (None unless need_bias),
    summed in double in a fixed order."""
    return _linear_backward(_ctx(False), dy, x, w, need_bias)


def _host_linear_backward(dy, x, w, need_bias=True):
    """Test shim: linear_backward's GPU plan on NumPy arrays."""
    r = _linear_backward(_ctx(True), _host_wrap(dy), _host_wrap(x), _host_wrap(w), need_bias)
    return tuple(_host_unwrap(v) for v in r)


def _host_sum_aob(x):
    """Test shim: the device channel sum of a C-contiguous (A, O, B) array, out[o] =
    x[:, o, :].sum(), run by its host twin (same split and order)."""
    cdef DevArr X = dev_float(_HostArr(np.ascontiguousarray(x)), "_host_sum_aob", "x")
    if X.ndim != 3:
        raise ValueError("_host_sum_aob: x must be 3-D")
    cdef DevArr out = _new(_ctx(True), X, (X.shape[1],), X.dtype, "_host_sum_aob")
    _sum_aob(_ctx(True), X, X.shape[0], X.shape[1], X.shape[2], out, "_host_sum_aob")
    return out.obj.arr
