# dropout: the GPU twins of fastdl._ext._random's dropout and dropout_backward, with the
# CPU's generator, stream and keep rule (include/fastdl/philox.h): for a seed, the GPU mask
# is the CPU mask bit for bit, and so are the values (one multiply by the same scale).
# Kernels: cuda/dropout.cu, Philox in cuda/philox.cuh. Uses elementwise.pxi's helpers
# (_ew_view, _ew_result, _ew_new, _ew_needs_temp, _ew_copy, _EwHostArray).
#
# Semantics as the CPU: p the drop probability in [0, 1); seed an int in [0, 2**64), a
# numpy Generator (one value drawn) or None (one value drawn from NumPy's global state,
# nothing drawn for an identity call); training=False or p == 0 returns x itself (or x
# copied into out); results (y, mask, seed) as return_mask / return_seed ask. On the GPU
# the mask is a bool device array of x's kind, y is C-contiguous, out= a C-contiguous
# device array (x itself for in place).
#
# The _host_* functions are test shims running the kernels' Philox code and block body,
# compiled for the CPU, on NumPy arrays.

import math
import operator

from libc.stdint cimport uint32_t, uint64_t

cdef extern from "dropout.h" nogil:
    enum:
        FDL_CU_DROPOUT_FWD
        FDL_CU_DROPOUT_FROM_MASK
    ctypedef struct fdl_cu_dropout_args:
        int dtype
        int mode
        int ndim
        int64_t shape[32]
        const void *x
        int64_t x_strides[32]
        const unsigned char *mask_in
        int64_t m_strides[32]
        void *y
        unsigned char *mask_out
        uint64_t seed
        uint64_t thr
        double scale
    int fdl_cuda_dropout(const fdl_cu_dropout_args *args, void *stream)
    int fdl_cuda_dropout_host(const fdl_cu_dropout_args *args, int64_t nthreads, int force_walk)
    int fdl_cuda_dropout_path(const fdl_cu_dropout_args *args)
    void fdl_cuda_host_philox_words(uint64_t seed, uint64_t first, int64_t n, uint32_t *out)
    void fdl_cuda_host_philox4x32_10(const uint32_t *ctr, const uint32_t *key, uint32_t *out)

cdef object _DO_TWO64 = 2 ** 64


cdef uint64_t _do_seed(object seed, str func) except? 0:
    """A seed as a 64-bit value: an int in [0, 2**64) (the CPU's rule and messages)."""
    if type(seed) is int and 0 <= seed < _DO_TWO64:
        return <uint64_t>seed
    if isinstance(seed, np.random.Generator):
        return <uint64_t>int(seed.integers(0, _DO_TWO64, dtype=np.uint64))
    if isinstance(seed, (float, complex, str, bytes, np.ndarray)):
        raise TypeError(f"fastdl.{func}: seed must be an int in [0, 2**64) or a "
                        f"numpy.random.Generator, got {type(seed).__name__}")
    try:
        s = operator.index(seed)
    except TypeError:
        raise TypeError(f"fastdl.{func}: seed must be an int in [0, 2**64) or a "
                        f"numpy.random.Generator, got {type(seed).__name__}") from None
    if s < 0 or s >= _DO_TWO64:
        raise ValueError(f"fastdl.{func}: seed must be in [0, 2**64), got {s}")
    return <uint64_t>s


cdef double _do_p(object p, str func) except? -1.0:
    cdef double v
    if type(p) is float:
        v = p
    elif isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"fastdl.{func}: p must be a real number in [0, 1), got "
                        f"{type(p).__name__}")
    else:
        v = float(p)
    if not (0.0 <= v < 1.0):   # NaN fails too
        raise ValueError(f"fastdl.{func}: p (the drop probability) must be in [0, 1), got {p!r}")
    return v


cdef int _do_check_layout(DevArr a, str func, str name) except -1:
    """The kernels address whole elements: aligned data, strides in whole elements."""
    if a.ptr % a.itemsize != 0:
        raise ValueError(f"fastdl.{func}: {name} is not aligned to its {a.itemsize}-byte "
                         f"elements; the GPU functions need aligned data")
    if a.strides is not None and any(st % a.itemsize != 0 for st in a.strides):
        raise ValueError(f"fastdl.{func}: {name} has strides {a.strides} that are not "
                         f"multiples of its {a.itemsize}-byte elements")
    return 0


cdef int _do_fill_strides(DevArr a, int64_t *dst, bint in_elements) except -1:
    """a's strides (elements, or bytes) along its own axes (layout already checked)."""
    cdef int d
    cdef int64_t step = 1
    for d in range(a.ndim - 1, -1, -1):
        if a.strides is None:
            dst[d] = step if in_elements else step * a.itemsize
        else:
            dst[d] = a.strides[d] // a.itemsize if in_elements else a.strides[d]
        step *= a.shape[d]
    return 0


cdef object _do_launch(str func, DevArr X, DevArr M, DevArr R, bint want_mask, double p,
                       uint64_t seed, object host):
    """y = keep ? x * (1 / (1 - p)) : +0, keep from the seed's words (M None) or from the
    bool array M. Returns y, or (y, mask) when want_mask. Arguments are validated."""
    cdef fdl_cu_dropout_args args
    cdef int d, err
    cdef DevArr target, mask = None
    cdef bint temp = False
    args.dtype = X.dtype
    args.mode = FDL_CU_DROPOUT_FWD if M is None else FDL_CU_DROPOUT_FROM_MASK
    args.ndim = X.ndim
    for d in range(X.ndim):
        args.shape[d] = X.shape[d]
    _do_fill_strides(X, args.x_strides, True)
    args.x = <const void *>X.ptr
    args.mask_in = NULL
    if M is not None:
        _do_fill_strides(M, args.m_strides, False)
        args.mask_in = <const unsigned char *>M.ptr
    args.seed = seed
    # keep iff word >= ceil(p * 2**32) (exact in double); 2**32: nothing is kept
    thr = math.ceil(p * 4294967296.0)
    args.thr = <uint64_t>min(thr, 4294967296)
    args.scale = 1.0 / (1.0 - p)
    if host is None:
        require_device(func)
    if R is None:
        R = _ew_new(X, X.shape, X.dtype, func, host)
        target = R
    elif _ew_needs_temp(R, X) or _ew_needs_temp(R, M):
        target = _ew_new(X, X.shape, X.dtype, func, host)
        temp = True
    else:
        target = R
    args.y = <void *>target.ptr
    args.mask_out = NULL
    if want_mask:
        mask = _ew_new(X, X.shape, FDL_CUDA_BOOL, func, host)
        args.mask_out = <unsigned char *>mask.ptr
    if host is not None:
        host.paths.append(fdl_cuda_dropout_path(&args))
        err = fdl_cuda_dropout_host(&args, host.threads, host.force_walk)
    else:
        with nogil:
            err = fdl_cuda_dropout(&args, <void *>X.stream)
    check(err, func)
    if temp:
        _ew_copy(R, target, func, host)
    if want_mask:
        return _ew_unwrap(R.obj), _ew_unwrap(mask.obj)
    return _ew_unwrap(R.obj)


cdef object _do_ones_mask(DevArr X, str func, object host):
    """An all-True bool mask of X's shape and kind (the identity's mask)."""
    cdef DevArr m = _ew_new(X, X.shape, FDL_CUDA_BOOL, func, host)
    if host is not None:
        _ew_unwrap(m.obj).fill(True)
    elif m.size:
        check(fdl_cuda_memset(<void *>m.ptr, 1, <size_t>m.size, <void *>m.stream), func)
    return _ew_unwrap(m.obj)


cdef object _do_identity(DevArr X, DevArr R, str func, object host):
    """x itself, or x copied into out."""
    if host is None:
        require_device(func)
    cdef DevArr tmp
    if R is None:
        return _ew_unwrap(X.obj)
    if _ew_needs_temp(R, X):
        tmp = _ew_new(X, X.shape, X.dtype, func, host)
        _ew_copy(tmp, X, func, host)
        _ew_copy(R, tmp, func, host)
    else:
        _ew_copy(R, X, func, host)
    return _ew_unwrap(R.obj)


cdef object _do_forward(object x, object p, object training, object seed, object return_mask,
                        object return_seed, object out, object host):
    cdef str func = "dropout"
    cdef DevArr X = _ew_view(x, func, "x", host)
    _do_check_layout(X, func, "x")
    cdef double pv = _do_p(p, func)
    cdef bint active = bool(training) and pv > 0.0
    cdef uint64_t s = 0
    cdef DevArr R = _ew_result(out, X, X.shape, X.dtype, func, host)
    if seed is not None and not isinstance(seed, np.random.Generator):
        s = _do_seed(seed, func)
        seed = int(s)
    # draws (as the CPU: from a Generator always, from NumPy's global state when the call
    # is not the identity) only once nothing can fail before the launch
    if host is None:
        require_device(func)
    if isinstance(seed, np.random.Generator) or (seed is None and active):
        if seed is None:
            seed = int(np.random.randint(0, _DO_TWO64, dtype=np.uint64))
        else:
            seed = int(seed.integers(0, _DO_TWO64, dtype=np.uint64))
        s = _do_seed(seed, func)
    if not active:
        result = (_do_identity(X, R, func, host),)
        if return_mask:
            result += (_do_ones_mask(X, func, host),)
    else:
        r = _do_launch(func, X, None, R, bool(return_mask), pv, s, host)
        result = r if return_mask else (r,)
    if return_seed:
        result += (seed,)
    return result[0] if len(result) == 1 else result


cdef object _do_backward(object dy, object mask_or_seed, object p, object out, object host):
    cdef str func = "dropout_backward"
    cdef DevArr D = _ew_view(dy, func, "dy", host)
    _do_check_layout(D, func, "dy")
    cdef double pv = _do_p(p, func)
    cdef DevArr R = _ew_result(out, D, D.shape, D.dtype, func, host)
    cdef DevArr M
    if mask_or_seed is None:
        return _do_identity(D, R, func, host)
    if isinstance(mask_or_seed, np.random.Generator):
        raise TypeError("fastdl.dropout_backward: mask_or_seed must be the int seed the "
                        "forward used, not a Generator (dropout(..., return_seed=True) "
                        "returns it)")
    if (isinstance(mask_or_seed, (int, np.integer))
            and not isinstance(mask_or_seed, (bool, np.bool_))):
        return _do_launch(func, D, None, R, False, pv, _do_seed(mask_or_seed, func), host)
    if host is not None:
        if not isinstance(mask_or_seed, np.ndarray):
            raise TypeError(f"fastdl.dropout_backward: mask_or_seed must be a bool mask or "
                            f"an int seed, got {type(mask_or_seed).__name__}")
        mask_or_seed = _EwHostArray(mask_or_seed)
    elif not hasattr(mask_or_seed, "__cuda_array_interface__"):
        raise TypeError(f"fastdl.dropout_backward: mask_or_seed must be a bool mask (a CUDA "
                        f"device array, like dy) or an int seed, got "
                        f"{type(mask_or_seed).__name__}")
    M = dev_view(mask_or_seed, func, "mask_or_seed")
    if M.dtype != FDL_CUDA_BOOL:
        raise TypeError(f"fastdl.dropout_backward: mask_or_seed must be a bool mask or an int "
                        f"seed, got an array of dtype {_CODE_NUMPY[M.dtype]}")
    if M.shape != D.shape:
        raise ValueError(f"fastdl.dropout_backward: mask has shape {M.shape} and dy has "
                         f"shape {D.shape}; they must be equal")
    _do_check_layout(M, func, "mask_or_seed")
    return _do_launch(func, D, M, R, False, pv, 0, host)


def dropout(x, p, training=True, *, seed=None, return_mask=False, return_seed=False,
            out=None):
    """GPU inverted dropout (see fastdl.dropout): the CPU's mask for the same seed, bit for
    bit; the mask (return_mask) is a bool device array of x's kind."""
    return _do_forward(x, p, training, seed, return_mask, return_seed, out, None)


def dropout_backward(dy, mask_or_seed, p, *, out=None):
    """GPU gradient of dropout from the bool device mask or the int seed (see
    fastdl.dropout_backward)."""
    return _do_backward(dy, mask_or_seed, p, out, None)


# --------------------------------------------------------------------------------------
# Test shims (CPU only)

def _host_dropout(x, p, training=True, *, seed=None, return_mask=False, return_seed=False,
                  out=None, threads=37, force_walk=0, with_path=False):
    """dropout's GPU path on NumPy arrays: its validation and plan, the kernel's block body
    compiled for the host, run as `threads` threads of the grid-stride loop (force_walk 1/2:
    the strided body, 32/64-bit indices). with_path: also the path the plan chose (0
    contiguous, 1 strided 32-bit, 2 strided 64-bit, 3 empty; None: nothing launched)."""
    run = _EwHostRun(threads, force_walk)
    r = _do_forward(x, p, training, seed, return_mask, return_seed, out, run)
    return (r, run.paths[0] if run.paths else None) if with_path else r


def _host_dropout_backward(dy, mask_or_seed, p, *, out=None, threads=37, force_walk=0,
                           with_path=False):
    """dropout_backward's GPU path on NumPy arrays (see _host_dropout)."""
    run = _EwHostRun(threads, force_walk)
    r = _do_backward(dy, mask_or_seed, p, out, run)
    return (r, run.paths[0] if run.paths else None) if with_path else r


def _host_dropout_mask(seed, n, p):
    """The keep-mask of n elements for (seed, p), from the kernel's block body on the host."""
    return _do_forward(np.zeros(int(n), np.float32), p, True, seed, True, False, None,
                       _EwHostRun())[1]


def _host_philox_words(seed, n, first=0):
    """Words first .. first + n - 1 of the stream of seed (uint32), from the kernels' Philox
    code compiled for the host."""
    cdef uint64_t s = _do_seed(seed, "_host_philox_words")
    first = operator.index(first)
    n = operator.index(n)
    if n < 0 or first < 0 or first + n > _DO_TWO64:
        raise ValueError("fastdl._host_philox_words: words outside the 64-bit counter range")
    out = np.empty(n, np.uint32)
    fdl_cuda_host_philox_words(s, <uint64_t>first, <int64_t>n,
                               <uint32_t *><uintptr_t>out.ctypes.data)
    return out


def _host_philox4x32_10(counter, key):
    """Philox4x32-10 of one block (four 32-bit counter words, two key words) from the
    kernels' code compiled for the host."""
    c = np.ascontiguousarray([operator.index(v) for v in counter], dtype=np.uint32)
    k = np.ascontiguousarray([operator.index(v) for v in key], dtype=np.uint32)
    if c.shape != (4,) or k.shape != (2,):
        raise ValueError("fastdl._host_philox4x32_10: counter must have 4 words and key 2")
    out = np.empty(4, np.uint32)
    fdl_cuda_host_philox4x32_10(<const uint32_t *><uintptr_t>c.ctypes.data,
                                <const uint32_t *><uintptr_t>k.ctypes.data,
                                <uint32_t *><uintptr_t>out.ctypes.data)
    return out
