# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""BLAS access for fastdl: layouts, 32-bit dimension limits, thread control, tiled GEMM."""

from cython.parallel cimport prange
from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock,
                               PyThread_acquire_lock, PyThread_release_lock, WAIT_LOCK)
from libc.string cimport memcpy
from libc.stdint cimport int64_t
import os
from scipy.linalg.cython_blas cimport sgemm, dgemm

cdef extern from "<dlfcn.h>" nogil:
    ctypedef struct Dl_info:
        const char *dli_fname
        void *dli_fbase
        const char *dli_sname
        void *dli_saddr
    int dladdr(const void *addr, Dl_info *info)
    void *dlopen(const char *filename, int flags)
    void *dlsym(void *handle, const char *symbol)
    int RTLD_LAZY
    int RTLD_NOLOAD

ctypedef void (*gemm64_fn)(const char *, const char *, const int64_t *, const int64_t *,
                          const int64_t *, const void *, const void *, const int64_t *,
                          const void *, const int64_t *, const void *, void *,
                          const int64_t *) noexcept nogil
ctypedef void (*set_threads_fn)(int) noexcept nogil
ctypedef int (*get_threads_fn)() noexcept nogil
ctypedef char *(*get_config_fn)() noexcept nogil

# BLAS dimensions and leading dimensions are 32-bit ints for the LP64 provider; larger
# problems are split. A variable so that the tests can lower it and exercise splitting.
cdef Py_ssize_t _int_limit = 2147483647

# OpenBLAS runs a GEMM single-threaded below m*n*k = 65536 * 4 (its SMP threshold); above
# it, fastdl must pin BLAS to one thread or OpenBLAS would thread (non-deterministically).
cdef double BLAS_SELF_THREAD_MNK = 262144.0
# Work (m*n*k) of one tile; tiles are never smaller than MIN_TILE rows/columns.
cdef double TILE_WORK = 1048576.0
cdef Py_ssize_t MIN_TILE = 32


cdef extern from "fastdl/threads.h" nogil:
    int fdl_omp_num_procs()


cdef Py_ssize_t _tiles_for_machine():
    # As many work items as the machine has processors (a power of two, for an even split):
    # every extra tile repacks a panel of A or B, which measured 2-7% per doubling on one
    # core. The processor count is fixed for the process; set_num_threads and threadpoolctl
    # never change it, so the tile grid (and every bit of the result) is thread-count-free.
    cdef Py_ssize_t t = 1
    while t < fdl_omp_num_procs():
        t *= 2
    return t


cdef Py_ssize_t MAX_TILES = _tiles_for_machine()

# The provider: scipy's cython_blas (LP64, always there), or the ILP64 OpenBLAS that NumPy's
# wheels bundle, called through NumPy's own extension module (faster for float32 GEMMs with
# a small dimension on the machines measured: see docs/design.md).
cdef bint _use_ilp64 = False
cdef gemm64_fn _sgemm64 = NULL
cdef gemm64_fn _dgemm64 = NULL
cdef set_threads_fn _ilp64_set_threads = NULL
cdef get_threads_fn _ilp64_get_threads = NULL
cdef set_threads_fn _lp64_set_threads = NULL
cdef get_threads_fn _lp64_get_threads = NULL
cdef set_threads_fn _blas_set_threads = NULL
cdef get_threads_fn _blas_get_threads = NULL
cdef PyThread_type_lock _guard_lock = PyThread_allocate_lock()
cdef int _guard_depth = 0
cdef int _guard_saved = 0


def _set_max_tiles(Py_ssize_t tiles):
    """Tuning hook: the most work items one GEMM call is cut into (returns the previous)."""
    global MAX_TILES
    previous = MAX_TILES
    MAX_TILES = max(1, tiles)
    return previous


def _set_blas_int_limit(Py_ssize_t limit):
    """Testing hook: pretend BLAS ints stop at `limit` (returns the previous limit)."""
    global _int_limit
    if limit < 1:
        raise ValueError("limit must be >= 1")
    previous = _int_limit
    _int_limit = limit
    return previous


cdef void *_find_symbol(void *handle, names):
    cdef void *sym
    for name in names:
        sym = dlsym(handle, <bytes>name)
        if sym != NULL:
            return sym
    return NULL


cdef void *_library_handle(const void *addr_in_module, path=None):
    cdef Dl_info info
    if path is None:
        if dladdr(addr_in_module, &info) == 0 or info.dli_fname == NULL:
            return NULL
        return dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD)
    return dlopen(<bytes>os.fsencode(path), RTLD_LAZY | RTLD_NOLOAD)


cdef str _library_of(void *sym):
    cdef Dl_info info
    if sym != NULL and dladdr(sym, &info) != 0 and info.dli_fname != NULL:
        return os.path.realpath((<bytes>info.dli_fname).decode("utf-8", "replace"))
    return None


cdef str _config_string(void *handle, names):
    cdef void *sym = _find_symbol(handle, names)
    if sym == NULL:
        return None
    return (<bytes>(<get_config_fn>sym)()).decode("utf-8", "replace")


_providers = {}


cdef _discover_scipy():
    """scipy's cython_blas and, in the library behind it, the thread-control functions."""
    global _lp64_set_threads, _lp64_get_threads
    # dlsym on cython_blas's own handle searches it and the libraries it depends on.
    cdef void *handle = _library_handle(<void *>sgemm)
    cdef void *setter
    cdef void *getter
    info = {"library": _library_of(<void *>sgemm), "config": None, "thread_control": None,
            "int_bits": 32}
    if handle != NULL:
        apis = (
            ("openblas", (b"scipy_openblas_set_num_threads", b"openblas_set_num_threads"),
                         (b"scipy_openblas_get_num_threads", b"openblas_get_num_threads")),
            ("mkl", (b"MKL_Set_Num_Threads",), (b"MKL_Get_Max_Threads",)),
            ("blis", (b"bli_thread_set_num_threads",), (b"bli_thread_get_num_threads",)),
        )
        for api, setters, getters in apis:
            setter = _find_symbol(handle, setters)
            getter = _find_symbol(handle, getters)
            if setter != NULL and getter != NULL:
                _lp64_set_threads = <set_threads_fn>setter
                _lp64_get_threads = <get_threads_fn>getter
                info["thread_control"] = api
                info["library"] = _library_of(setter)
                break
        info["config"] = _config_string(handle, (b"scipy_openblas_get_config",
                                                 b"openblas_get_config"))
    _providers["scipy"] = info


cdef _discover_numpy():
    """The ILP64 OpenBLAS of NumPy's wheels, if this NumPy has one (else nothing)."""
    global _sgemm64, _dgemm64, _ilp64_set_threads, _ilp64_get_threads
    import numpy._core._multiarray_umath as umath
    cdef void *handle = _library_handle(NULL, umath.__file__)
    if handle == NULL:
        return
    cdef void *s = _find_symbol(handle, (b"scipy_sgemm_64_",))
    cdef void *d = _find_symbol(handle, (b"scipy_dgemm_64_",))
    cdef void *setter = _find_symbol(handle, (b"scipy_openblas_set_num_threads64_",))
    cdef void *getter = _find_symbol(handle, (b"scipy_openblas_get_num_threads64_",))
    if s == NULL or d == NULL or setter == NULL or getter == NULL:
        return
    _sgemm64 = <gemm64_fn>s
    _dgemm64 = <gemm64_fn>d
    _ilp64_set_threads = <set_threads_fn>setter
    _ilp64_get_threads = <get_threads_fn>getter
    _providers["numpy"] = {"library": _library_of(s), "int_bits": 64,
                           "config": _config_string(handle, (b"scipy_openblas_get_config64_",)),
                           "thread_control": "openblas"}


_provider = None


def _select_provider(name):
    """Use BLAS provider `name` ('scipy' or 'numpy'; 'auto' picks numpy when available)."""
    global _provider, _use_ilp64, _blas_set_threads, _blas_get_threads, _int_limit
    if _guard_depth != 0:
        raise RuntimeError("cannot switch BLAS provider while a fastdl call is running")
    if name == "auto":
        name = "numpy" if "numpy" in _providers else "scipy"
    if name not in _providers:
        raise ValueError(f"BLAS provider {name!r} is not available here "
                         f"(available: {sorted(_providers)})")
    _provider = name
    _use_ilp64 = name == "numpy"
    _blas_set_threads = _ilp64_set_threads if _use_ilp64 else _lp64_set_threads
    _blas_get_threads = _ilp64_get_threads if _use_ilp64 else _lp64_get_threads
    _int_limit = 9223372036854775807 if _use_ilp64 else 2147483647
    return name


_discover_scipy()
try:
    _discover_numpy()
except ImportError:
    pass
_select_provider(os.environ.get("FASTDL_BLAS", "auto").strip().lower() or "auto")


def blas_info():
    """The BLAS fastdl calls: provider, library path, config string, thread control."""
    info = dict(_providers[_provider])
    info["provider"] = _provider
    info["available"] = sorted(_providers)
    info["num_threads"] = _blas_get_threads() if _blas_get_threads != NULL else None
    return info


cdef inline void _pin_blas_to_one_thread() noexcept nogil:
    # Refcounted so that concurrent fastdl calls from several Python threads restore the
    # user's setting only when the last of them leaves.
    global _guard_depth, _guard_saved
    PyThread_acquire_lock(_guard_lock, WAIT_LOCK)
    if _guard_depth == 0:
        _guard_saved = _blas_get_threads()
        if _guard_saved != 1:
            _blas_set_threads(1)
    _guard_depth += 1
    PyThread_release_lock(_guard_lock)


cdef inline void _unpin_blas() noexcept nogil:
    global _guard_depth
    PyThread_acquire_lock(_guard_lock, WAIT_LOCK)
    _guard_depth -= 1
    if _guard_depth == 0 and _guard_saved != 1:
        _blas_set_threads(_guard_saved)
    PyThread_release_lock(_guard_lock)


cdef bint blas_pin_serial() noexcept nogil:
    """For callers that run many single-threaded GEMMs (gemm_batched(..., nthreads=1)) inside
    their own parallel loop: pin BLAS to one thread once around the loop, so the per-call
    guard never drops to zero and never calls the BLAS's set-threads between GEMMs. Returns
    False for a BLAS whose threads cannot be pinned: the caller must then run serially."""
    if _blas_set_threads == NULL:
        return False
    _pin_blas_to_one_thread()
    return True


cdef void blas_unpin_serial() noexcept nogil:
    """Undo one successful blas_pin_serial()."""
    _unpin_blas()


cdef bint blas_layout(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row_stride,
                      Py_ssize_t col_stride, Py_ssize_t itemsize, Mat *out) noexcept nogil:
    """Describe a strided matrix as a BLAS operand without copying, if it is one.

    BLAS needs one unit stride and a positive leading dimension at least as large as the
    contiguous extent; a dimension of length 1 imposes nothing on its stride.
    """
    if rows == 0 or cols == 0:
        # Never read or written (NumPy gives empty arrays zero strides).
        out.colmajor = False
        out.ld = cols if cols > 1 else 1
        return True
    if rows == 1 and cols == 1:
        out.colmajor = False
        out.ld = 1
        return True
    if (cols == 1 or col_stride == itemsize) and (
            rows == 1 or (row_stride > 0 and row_stride % itemsize == 0
                          and row_stride // itemsize >= cols)):
        out.colmajor = False
        out.ld = cols if rows == 1 else row_stride // itemsize
        if out.ld < 1:
            out.ld = 1
        return True
    if (rows == 1 or row_stride == itemsize) and (
            cols == 1 or (col_stride > 0 and col_stride % itemsize == 0
                          and col_stride // itemsize >= rows)):
        out.colmajor = True
        out.ld = rows if cols == 1 else col_stride // itemsize
        if out.ld < 1:
            out.ld = 1
        return True
    return False


cdef int check_blas_dims(Mat a, Mat b, Mat c) except -1:
    """Leading dimensions cannot be split: reject what BLAS's 32-bit ints cannot express."""
    if a.ld > _int_limit or b.ld > _int_limit or c.ld > _int_limit:
        raise ValueError(
            f"fastdl: a leading dimension ({max(a.ld, b.ld, c.ld)}) exceeds {_int_limit}, "
            f"the largest the {_provider} BLAS's integers can express; pass a copy whose "
            "rows are shorter")
    return 0


cdef inline char *_at(Mat x, Py_ssize_t i, Py_ssize_t j, Py_ssize_t itemsize) noexcept nogil:
    if x.colmajor:
        return x.data + (i + j * x.ld) * itemsize
    return x.data + (i * x.ld + j) * itemsize


cdef void _gemm_call(int dtype, Py_ssize_t m_, Py_ssize_t n_, Py_ssize_t k_, double alpha,
                     Mat a, Mat b, double beta, Mat c) noexcept nogil:
    """One BLAS call, row-major or column-major output, with transpose flags, no copies."""
    # _gemm_serial has already cut every dimension to the provider's integer range.
    cdef char ta, tb
    cdef int m = <int>m_, n = <int>n_, k = <int>k_
    cdef int lda = <int>a.ld, ldb = <int>b.ld, ldc = <int>c.ld
    cdef int64_t m64 = m_, n64 = n_, k64 = k_, lda64 = a.ld, ldb64 = b.ld, ldc64 = c.ld
    cdef float falpha = <float>alpha, fbeta = <float>beta
    cdef const void *palpha = &falpha if dtype == DT_FLOAT32 else <const void *>&alpha
    cdef const void *pbeta = &fbeta if dtype == DT_FLOAT32 else <const void *>&beta
    cdef gemm64_fn g64 = _sgemm64 if dtype == DT_FLOAT32 else _dgemm64
    if c.colmajor:
        # C = op(A) op(B) in BLAS's own column-major terms.
        ta = b'N' if a.colmajor else b'T'
        tb = b'N' if b.colmajor else b'T'
        if _use_ilp64:
            g64(&ta, &tb, &m64, &n64, &k64, palpha, a.data, &lda64, b.data, &ldb64, pbeta,
                c.data, &ldc64)
        elif dtype == DT_FLOAT32:
            sgemm(&ta, &tb, &m, &n, &k, &falpha, <float *>a.data, &lda,
                  <float *>b.data, &ldb, &fbeta, <float *>c.data, &ldc)
        else:
            dgemm(&ta, &tb, &m, &n, &k, &alpha, <double *>a.data, &lda,
                  <double *>b.data, &ldb, &beta, <double *>c.data, &ldc)
    else:
        # Row-major C is column-major C^T = B^T A^T: swap the operands, never copy them.
        tb = b'T' if b.colmajor else b'N'
        ta = b'T' if a.colmajor else b'N'
        if _use_ilp64:
            g64(&tb, &ta, &n64, &m64, &k64, palpha, b.data, &ldb64, a.data, &lda64, pbeta,
                c.data, &ldc64)
        elif dtype == DT_FLOAT32:
            sgemm(&tb, &ta, &n, &m, &k, &falpha, <float *>b.data, &ldb,
                  <float *>a.data, &lda, &fbeta, <float *>c.data, &ldc)
        else:
            dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>b.data, &ldb,
                  <double *>a.data, &lda, &beta, <double *>c.data, &ldc)


cdef void _zero_block(int dtype, Py_ssize_t m, Py_ssize_t n, double beta, Mat c) noexcept nogil:
    # k == 0: the product is empty, C = beta * C (BLAS may skip this case).
    cdef Py_ssize_t i, j
    cdef char *p
    for i in range(m):
        for j in range(n):
            p = _at(c, i, j, 4 if dtype == DT_FLOAT32 else 8)
            if dtype == DT_FLOAT32:
                (<float *>p)[0] = 0.0 if beta == 0.0 else <float>(beta * (<float *>p)[0])
            else:
                (<double *>p)[0] = 0.0 if beta == 0.0 else beta * (<double *>p)[0]


cdef void _gemm_serial(int dtype, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, double alpha,
                       Mat a, Mat b, double beta, Mat c) noexcept nogil:
    """C = alpha A B + beta C on one thread, splitting dimensions beyond 32-bit ints."""
    cdef Py_ssize_t isz = 4 if dtype == DT_FLOAT32 else 8
    cdef Py_ssize_t lim = _int_limit
    cdef Py_ssize_t i0, j0, p0, mi, nj, kp
    cdef Mat ab, bb, cb
    cdef double bcur
    if m == 0 or n == 0:
        return
    if k == 0:
        _zero_block(dtype, m, n, beta, c)
        return
    i0 = 0
    while i0 < m:
        mi = min(lim, m - i0)
        j0 = 0
        while j0 < n:
            nj = min(lim, n - j0)
            cb = c
            cb.data = _at(c, i0, j0, isz)
            p0 = 0
            bcur = beta
            while p0 < k:
                kp = min(lim, k - p0)
                ab = a
                ab.data = _at(a, i0, p0, isz)
                bb = b
                bb.data = _at(b, p0, j0, isz)
                _gemm_call(dtype, mi, nj, kp, alpha, ab, bb, bcur, cb)
                bcur = 1.0
                p0 += kp
            j0 += nj
        i0 += mi


cdef void _fill_bias(Py_ssize_t isz, Py_ssize_t m, Py_ssize_t n, const char *bias,
                     Mat c) noexcept nogil:
    cdef Py_ssize_t i, j
    if not c.colmajor:
        for i in range(m):
            memcpy(c.data + i * c.ld * isz, bias, n * isz)
    else:
        for j in range(n):
            for i in range(m):
                memcpy(c.data + (i + j * c.ld) * isz, bias + j * isz, isz)


cdef inline Py_ssize_t _split_point(Py_ssize_t extent, Py_ssize_t parts, Py_ssize_t i) noexcept nogil:
    # Tile edges on multiples of 16 keep BLAS in its full-width micro-kernels.
    if i >= parts:
        return extent
    return ((extent * i // parts) // 16) * 16


cdef void _plan_tiles(Py_ssize_t batch, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      Py_ssize_t *row_parts, Py_ssize_t *col_parts) noexcept nogil:
    """Cut each GEMM of a batch into tiles, from the shape alone (never the thread count).

    Tiles hold at least TILE_WORK multiply-adds, and there are only as many as needed to
    give MAX_TILES work items in all (MAX_TILES comes from the processor count). Splitting C's rows repacks B once per row part, and splitting
    its columns repacks A once per column part, so each doubling goes to the cheaper side.
    """
    cdef double work = <double>m * <double>n * <double>k
    cdef Py_ssize_t want = 1, rp = 1, cp = 1
    cdef bint can_rows, can_cols
    while want * 2 * batch <= MAX_TILES and work / (want * 2) >= TILE_WORK:
        want *= 2
    while rp * cp < want:
        can_rows = m // (rp * 2) >= MIN_TILE
        can_cols = n // (cp * 2) >= MIN_TILE
        if can_rows and (not can_cols or <double>n * k * rp <= <double>m * k * cp):
            rp *= 2
        elif can_cols:
            cp *= 2
        else:
            break
    row_parts[0] = rp
    col_parts[0] = cp


cdef inline void _run_item(int dtype, Py_ssize_t item, Py_ssize_t rp, Py_ssize_t cp,
                           Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, double alpha,
                           Mat a, const Py_ssize_t *a_off, Mat b, const Py_ssize_t *b_off,
                           double beta, Mat c, const Py_ssize_t *c_off, const char *bias,
                           Py_ssize_t isz) noexcept nogil:
    """One work item: tile (ti, tj) of batch entry bi, a single-threaded BLAS call."""
    cdef Py_ssize_t bi = item // (rp * cp)
    cdef Py_ssize_t t = item - bi * (rp * cp)
    cdef Py_ssize_t ti = t // cp
    cdef Py_ssize_t tj = t - ti * cp
    cdef Py_ssize_t r0 = _split_point(m, rp, ti), r1 = _split_point(m, rp, ti + 1)
    cdef Py_ssize_t c0 = _split_point(n, cp, tj), c1 = _split_point(n, cp, tj + 1)
    if a_off != NULL:
        a.data = a.data + a_off[bi]
    if b_off != NULL:
        b.data = b.data + b_off[bi]
    if c_off != NULL:
        c.data = c.data + c_off[bi]
    a.data = _at(a, r0, 0, isz)
    b.data = _at(b, 0, c0, isz)
    c.data = _at(c, r0, c0, isz)
    if bias != NULL:
        _fill_bias(isz, r1 - r0, c1 - c0, bias + c0 * isz, c)
        _gemm_serial(dtype, r1 - r0, c1 - c0, k, alpha, a, b, 1.0, c)
    else:
        _gemm_serial(dtype, r1 - r0, c1 - c0, k, alpha, a, b, beta, c)


cdef void gemm_batched(int dtype, Py_ssize_t batch, Py_ssize_t m, Py_ssize_t n,
                       Py_ssize_t k, double alpha, Mat a, const Py_ssize_t *a_off,
                       Mat b, const Py_ssize_t *b_off, double beta, Mat c,
                       const Py_ssize_t *c_off, const char *bias, int nthreads) noexcept nogil:
    """C[i] = alpha A[i] B[i] + beta C[i] for i < batch; offsets in bytes (NULL = all 0).

    With `bias` (n contiguous elements) C starts as the bias broadcast over rows and beta is
    taken as 1: each tile writes its slice of the bias just before its GEMM, so the fused
    bias costs no separate pass over C.

    Work items (batch entry x tile) are spread over `nthreads` OpenMP threads with static
    scheduling; each item is one single-threaded BLAS call.
    """
    cdef Py_ssize_t isz = 4 if dtype == DT_FLOAT32 else 8
    cdef Py_ssize_t rp, cp, items, item
    cdef bint pinned = False
    cdef double work = <double>m * <double>n * <double>k
    if batch <= 0 or m == 0 or n == 0:
        return
    _plan_tiles(batch, m, n, k, &rp, &cp)
    items = batch * rp * cp
    if work > BLAS_SELF_THREAD_MNK:
        if _blas_set_threads != NULL:
            _pin_blas_to_one_thread()
            pinned = True
        else:
            # A BLAS whose threads we cannot pin is left to thread itself, serially
            # called, so that the two thread pools never multiply.
            nthreads = 1
    if nthreads > items:
        nthreads = <int>items
    if work * batch < BLAS_SELF_THREAD_MNK:
        nthreads = 1
    if nthreads <= 1:
        # No OpenMP region at all: entering one costs more than a tiny GEMM.
        for item in range(items):
            _run_item(dtype, item, rp, cp, m, n, k, alpha, a, a_off, b, b_off, beta, c, c_off,
                      bias, isz)
    else:
        for item in prange(items, nogil=True, schedule='static', num_threads=nthreads):
            _run_item(dtype, item, rp, cp, m, n, k, alpha, a, a_off, b, b_off, beta, c, c_off,
                      bias, isz)
    if pinned:
        _unpin_blas()


# --------------------------------------------------------------------------------------
# The register-blocked float32 kernel of include/fastdl/sgemm.h (attention's tiles, the
# convolution's units call it directly from C): a test shim.

cdef extern from "fastdl/sgemm.h" nogil:
    int fdl_sgemm_level()
    int fdl_sgemm(int level, int accumulate, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                  float alpha, const float *A, Py_ssize_t lda, const float *B,
                  Py_ssize_t ldb, float *C, Py_ssize_t ldc, const float *rbias,
                  float *scratch)


def sgemm_kernel_level():
    """2: AVX-512, 1: AVX2+FMA, 0: neither (callers use BLAS)."""
    return fdl_sgemm_level()


def sgemm_kernel(a, b, c, float alpha=1.0, bint accumulate=False, int level=0, bias=None):
    """c = alpha a @ b (+ bias[:, None]) or c += alpha a @ b, in place, with sgemm.h's kernel
    at `level` (tests only): float32 arrays with unit-stride rows."""
    import numpy as np
    for name, x in (("a", a), ("b", b), ("c", c)):
        if (not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2
                or (x.size and ((x.shape[1] > 1 and x.strides[1] != 4) or x.strides[0] % 4
                                or x.strides[0] < 0)) or not x.flags.aligned):
            raise TypeError(f"sgemm_kernel: {name} must be a 2-D float32 array with unit-stride rows")
    if a.shape[1] != b.shape[0] or c.shape != (a.shape[0], b.shape[1]):
        raise ValueError(f"sgemm_kernel: shapes a {a.shape}, b {b.shape}, c {c.shape}")
    if level < 1 or level > fdl_sgemm_level():
        raise ValueError(f"sgemm_kernel: level {level} is not available on this CPU")
    if not c.flags.writeable:
        raise ValueError("sgemm_kernel: c is read-only")
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=np.float32)
        if bias.shape != (a.shape[0],):
            raise ValueError(f"sgemm_kernel: bias shape {bias.shape}, expected ({a.shape[0]},)")
    cdef Py_ssize_t addr_a = a.ctypes.data, addr_b = b.ctypes.data, addr_c = c.ctypes.data
    cdef Py_ssize_t addr_bias = 0 if bias is None else bias.ctypes.data
    cdef int rc = fdl_sgemm(level, accumulate, a.shape[0], b.shape[1], a.shape[1], alpha,
                            <const float *>addr_a, max(a.strides[0] // 4, 1),
                            <const float *>addr_b, max(b.strides[0] // 4, 1),
                            <float *>addr_c, max(c.strides[0] // 4, 1),
                            <const float *>addr_bias, NULL)
    if rc != 0:
        raise MemoryError("sgemm_kernel: scratch allocation failed")
    return c
