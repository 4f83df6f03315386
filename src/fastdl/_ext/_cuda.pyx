# cython: language_level=3
"""fastdl's CUDA extension (built with FASTDL_CUDA=1): the device runtime and the GPU twins of
the CPU functions.

Device arrays are read through ``__cuda_array_interface__`` (version 2 or 3: pointer, shape,
strides, typestr, stream) without importing the producer's library; results are allocated as
the same kind of array as the first device argument (CuPy -> CuPy, torch -> torch, Numba ->
Numba, anything else -> fastdl.cuda.DeviceArray). Work is queued on the stream the first
device argument names (the caller's stream: CuPy and PyTorch export their current stream);
nothing here synchronises except the explicit copies to the host.

This file holds the runtime (devices, memory, array views, output allocation); each op
family's functions live in cuda/<family>.pxi, included at the end, with their kernels in
cuda/<family>.cu and launchers declared in cuda/<family>.h.
"""
import sys

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport malloc, free

cnp.import_array()

cdef extern from "api.h" nogil:
    int FDL_CUDA_F32, FDL_CUDA_F64, FDL_CUDA_I64, FDL_CUDA_I32, FDL_CUDA_U8, FDL_CUDA_BOOL
    int FDL_CUDA_MAXDIM
    const char *fdl_cuda_error_string(int err)
    int fdl_cuda_device_count(int *count)
    int fdl_cuda_versions(int *runtime, int *driver)
    int fdl_cuda_device_info(int dev, char *name, int name_len, int *major, int *minor,
                             size_t *total_mem, int *sm_count)
    int fdl_cuda_current_device(int *dev)
    int fdl_cuda_pointer_device(const void *p, int *dev, int *is_device)
    int fdl_cuda_malloc(void **p, size_t nbytes, void *stream)
    int fdl_cuda_free(void *p, void *stream)
    int fdl_cuda_memcpy(void *dst, const void *src, size_t nbytes, int kind, void *stream)
    int fdl_cuda_stream_sync(void *stream)
    int fdl_cuda_device_sync()
    int fdl_cuda_memset(void *dst, int value, size_t nbytes, void *stream)
    int fdl_cuda_strided_copy(void *dst, const void *src, int ndim, const int64_t *shape,
                              const int64_t *strides_bytes, int itemsize, void *stream)

DEF MEMCPY_H2D = 1
DEF MEMCPY_D2H = 2

# --------------------------------------------------------------------------------------
# Errors and devices

cdef int _device_count = -1
cdef str _no_device_reason = ""


cdef str error_string(int err):
    return fdl_cuda_error_string(err).decode("utf-8", "replace")


cdef int check(int err, str func) except -1:
    """Raise RuntimeError for a failed CUDA call of fastdl.<func>."""
    if err != 0:
        raise RuntimeError(f"fastdl.{func}: CUDA error {err}: {error_string(err)}")
    return 0


def device_count():
    """Number of CUDA devices the driver reports (0 without a driver or a device)."""
    global _device_count, _no_device_reason
    cdef int n = 0, err
    if _device_count < 0:
        err = fdl_cuda_device_count(&n)
        _device_count = n if err == 0 else 0
        _no_device_reason = "" if err == 0 else error_string(err)
    return _device_count


def no_device_reason():
    """Why device_count() is 0 (the runtime's message), or '' when devices exist."""
    device_count()
    return _no_device_reason


cdef int require_device(str func) except -1:
    if device_count() == 0:
        why = f" ({_no_device_reason})" if _no_device_reason else ""
        raise RuntimeError(f"fastdl.{func}: no CUDA device is available{why}; pass NumPy "
                           f"arrays to run on the CPU")
    return 0


def synchronize():
    """Wait for all work queued on the current device."""
    require_device("cuda.synchronize")
    check(fdl_cuda_device_sync(), "cuda.synchronize")


def versions():
    """(runtime version, driver version) as CUDA integers (e.g. 13000); 0 where unknown."""
    cdef int rt = 0, drv = 0
    fdl_cuda_versions(&rt, &drv)
    return rt, drv


def device_info(int dev=-1):
    """dict(name, compute_capability, total_memory, multiprocessors) of a device (default:
    the current one)."""
    cdef char name[256]
    cdef int major = 0, minor = 0, sms = 0
    cdef size_t mem = 0
    require_device("cuda.device_info")
    if dev < 0:
        check(fdl_cuda_current_device(&dev), "cuda.device_info")
    check(fdl_cuda_device_info(dev, name, 256, &major, &minor, &mem, &sms), "cuda.device_info")
    return {"device": dev, "name": name.decode("utf-8", "replace"),
            "compute_capability": (major, minor), "total_memory": int(mem),
            "multiprocessors": sms}


# --------------------------------------------------------------------------------------
# dtypes

_TYPESTR_CODE = {"<f4": FDL_CUDA_F32, "<f8": FDL_CUDA_F64, "<i8": FDL_CUDA_I64,
                 "<i4": FDL_CUDA_I32, "|u1": FDL_CUDA_U8, "|b1": FDL_CUDA_BOOL}
_CODE_TYPESTR = {v: k for k, v in _TYPESTR_CODE.items()}
_CODE_NUMPY = {FDL_CUDA_F32: np.dtype(np.float32), FDL_CUDA_F64: np.dtype(np.float64),
               FDL_CUDA_I64: np.dtype(np.int64), FDL_CUDA_I32: np.dtype(np.int32),
               FDL_CUDA_U8: np.dtype(np.uint8), FDL_CUDA_BOOL: np.dtype(np.bool_)}
_CODE_TORCH_NAME = {FDL_CUDA_F32: "float32", FDL_CUDA_F64: "float64", FDL_CUDA_I64: "int64",
                    FDL_CUDA_I32: "int32", FDL_CUDA_U8: "uint8", FDL_CUDA_BOOL: "bool"}


cdef int dtype_code_of(object dtype) except -2:
    """fastdl's dtype code of a NumPy-like dtype, or -1 when the GPU side has none."""
    return _TYPESTR_CODE.get(np.dtype(dtype).str, -1)


# --------------------------------------------------------------------------------------
# Memory owned by fastdl

cdef class DeviceArray:
    """A C-contiguous device buffer owned by fastdl, returned when the inputs were not CuPy,
    torch or Numba arrays (and by fastdl.cuda.to_device). Exposes __cuda_array_interface__,
    so CuPy, torch (torch.as_tensor) and Numba read it without a copy; get() copies it to a
    NumPy array."""
    cdef void *_ptr
    cdef readonly tuple shape
    cdef readonly object dtype
    cdef readonly Py_ssize_t size
    cdef uintptr_t _stream

    def __cinit__(self, shape, dtype=np.float32, stream=0):
        cdef size_t nbytes
        cdef void *p = NULL
        self.shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in self.shape):
            raise ValueError(f"fastdl.cuda.DeviceArray: negative dimension in {self.shape}")
        self.dtype = np.dtype(dtype)
        if dtype_code_of(self.dtype) < 0:
            raise TypeError(f"fastdl.cuda.DeviceArray: unsupported dtype {self.dtype}")
        self.size = 1
        for s in self.shape:
            self.size *= s
        self._stream = <uintptr_t>int(stream or 0)
        require_device("cuda.DeviceArray")
        nbytes = <size_t>self.size * self.dtype.itemsize
        check(fdl_cuda_malloc(&p, nbytes, <void *>self._stream), "cuda.DeviceArray")
        self._ptr = p

    def __dealloc__(self):
        if self._ptr != NULL:
            fdl_cuda_free(self._ptr, <void *>self._stream)
            self._ptr = NULL

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str,
                "data": (<uintptr_t>self._ptr, False), "version": 3, "strides": None,
                "stream": int(self._stream) if self._stream else None}

    def get(self):
        """Copy to a new NumPy array (waits for the stream)."""
        out = np.empty(self.shape, self.dtype)
        if self.size:
            check(fdl_cuda_memcpy(cnp.PyArray_DATA(out), self._ptr, self.nbytes, MEMCPY_D2H,
                                  <void *>self._stream), "cuda.DeviceArray.get")
            check(fdl_cuda_stream_sync(<void *>self._stream), "cuda.DeviceArray.get")
        return out

    def __repr__(self):
        return f"fastdl.cuda.DeviceArray(shape={self.shape}, dtype={self.dtype})"


def to_device(array, stream=0):
    """Copy a NumPy array (any layout) to a new fastdl.cuda.DeviceArray."""
    a = np.asarray(array, order="C")   # (ascontiguousarray would make a 0-d array 1-d)
    if dtype_code_of(a.dtype) < 0:
        raise TypeError(f"fastdl.cuda.to_device: unsupported dtype {a.dtype}")
    d = DeviceArray(a.shape, a.dtype, stream)
    if a.size:
        check(fdl_cuda_memcpy(d._ptr, cnp.PyArray_DATA(a), a.nbytes, MEMCPY_H2D,
                              <void *>d._stream), "cuda.to_device")
    return d


def to_host(obj):
    """Copy any device array (__cuda_array_interface__) to a new NumPy array."""
    cdef DevArr a = dev_contig(dev_view(obj, "cuda.to_host", "array"), "cuda.to_host")
    out = np.empty(a.shape, _CODE_NUMPY[a.dtype])
    if a.size:
        check(fdl_cuda_memcpy(cnp.PyArray_DATA(out), <void *>a.ptr, out.nbytes, MEMCPY_D2H,
                              <void *>a.stream), "cuda.to_host")
        check(fdl_cuda_stream_sync(<void *>a.stream), "cuda.to_host")
    return out


# --------------------------------------------------------------------------------------
# Views of device arrays

cdef class DevArr:
    """A parsed __cuda_array_interface__: what a launcher needs, and the object that keeps the
    memory alive."""
    cdef readonly object obj
    cdef uintptr_t ptr
    cdef readonly tuple shape
    cdef tuple strides        # bytes; None when C-contiguous
    cdef Py_ssize_t size
    cdef int ndim, dtype, itemsize
    cdef bint contiguous
    cdef uintptr_t stream


cdef bint is_device_array(object obj):
    return type(obj) is not cnp.ndarray and hasattr(obj, "__cuda_array_interface__")


cdef object _interface(object obj):
    """obj.__cuda_array_interface__; a PyTorch tensor that requires grad refuses to export
    one (RuntimeError), so its detached view (same memory) is read instead."""
    try:
        return obj.__cuda_array_interface__
    except RuntimeError:
        if type(obj).__module__.partition(".")[0] == "torch" and hasattr(obj, "detach"):
            return obj.detach().__cuda_array_interface__
        raise


cdef object _producer_stream(object obj):
    """The caller's current stream for producers whose interface names none: PyTorch exports
    version 2 without a stream, so its current stream is asked of the already-imported torch
    (0, the legacy default stream, for everything else)."""
    if type(obj).__module__.partition(".")[0] == "torch" and "torch" in sys.modules:
        try:
            return sys.modules["torch"].cuda.current_stream(obj.device).cuda_stream or None
        except Exception:  # a torch without CUDA cannot have made this device array
            return None
    return None


cdef DevArr dev_view(object obj, str func, str name):
    """Parse obj's __cuda_array_interface__ (TypeError when it has none or it is malformed)."""
    cdef DevArr a = DevArr.__new__(DevArr)
    cdef Py_ssize_t expect, s, st
    cdef int d
    try:
        cai = _interface(obj)
    except AttributeError:
        raise TypeError(f"fastdl.{func}: {name} must be a CUDA device array like the first "
                        f"array argument (an object with __cuda_array_interface__), got "
                        f"{type(obj).__name__}") from None
    try:
        shape = tuple(int(s) for s in cai["shape"])
        typestr = cai["typestr"]
        ptr = int(cai["data"][0])
        strides = cai.get("strides")
        version = int(cai.get("version", 0))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise TypeError(f"fastdl.{func}: {name} has a malformed __cuda_array_interface__ "
                        f"({exc!r})") from None
    if cai.get("mask") is not None:
        raise TypeError(f"fastdl.{func}: {name}: masked device arrays are not supported")
    if len(shape) > FDL_CUDA_MAXDIM:
        raise ValueError(f"fastdl.{func}: {name} has {len(shape)} dimensions, at most "
                         f"{FDL_CUDA_MAXDIM} on the GPU")
    code = _TYPESTR_CODE.get(typestr, -1)
    if code < 0:
        raise TypeError(f"fastdl.{func}: {name} has dtype {typestr!r}, which the GPU functions "
                        f"do not take (float32, float64, int64, int32, uint8, bool)")
    a.obj = obj
    a.ptr = <uintptr_t>ptr
    a.shape = shape
    a.ndim = len(shape)
    a.dtype = code
    a.itemsize = _CODE_NUMPY[code].itemsize
    a.size = 1
    for s in shape:
        a.size *= s
    a.contiguous = True
    if strides is not None:
        strides = tuple(int(x) for x in strides)
        if len(strides) != a.ndim:
            raise TypeError(f"fastdl.{func}: {name}: strides {strides} do not match shape "
                            f"{shape}")
        expect = a.itemsize
        for d in range(a.ndim - 1, -1, -1):
            if shape[d] != 1 and strides[d] != expect:
                a.contiguous = False
            expect *= shape[d]
    a.strides = None if a.contiguous or a.size == 0 else strides
    if a.size == 0:
        a.contiguous = True
    stream = cai.get("stream") if version >= 3 else None
    if stream == 0:
        raise TypeError(f"fastdl.{func}: {name}: stream 0 is disallowed by the "
                        f"__cuda_array_interface__ protocol")
    if stream is None:
        stream = _producer_stream(obj)
    a.stream = <uintptr_t>int(stream) if stream is not None else 0
    return a


cdef DevArr dev_float(object obj, str func, str name):
    """A device view that must be float32 or float64."""
    cdef DevArr a = dev_view(obj, func, name)
    if a.dtype != FDL_CUDA_F32 and a.dtype != FDL_CUDA_F64:
        raise TypeError(f"fastdl.{func}: {name} must be float32 or float64, got "
                        f"{_CODE_NUMPY[a.dtype]}")
    return a


cdef DevArr dev_contig(DevArr a, str func):
    """a itself when C-contiguous, else a C-contiguous copy on a's stream (a DeviceArray)."""
    cdef int64_t shp[32]
    cdef int64_t strd[32]
    cdef int d
    if a.contiguous:
        return a
    for d in range(a.ndim):
        shp[d] = a.shape[d]
        strd[d] = a.strides[d]
    copy = DeviceArray(a.shape, _CODE_NUMPY[a.dtype], a.stream)
    cdef DevArr c = dev_view(copy, func, "copy")
    c.stream = a.stream
    check(fdl_cuda_strided_copy(<void *>c.ptr, <const void *>a.ptr, a.ndim, shp, strd,
                                a.itemsize, <void *>a.stream), func)
    return c


cdef object _alloc_same_kind(object proto, tuple shape, int dtype, uintptr_t stream):
    root = type(proto).__module__.partition(".")[0]
    if root == "cupy" and "cupy" in sys.modules:
        return sys.modules["cupy"].empty(shape, dtype=_CODE_NUMPY[dtype])
    if root == "torch" and "torch" in sys.modules:
        torch = sys.modules["torch"]
        return torch.empty(shape, dtype=getattr(torch, _CODE_TORCH_NAME[dtype]),
                           device=proto.device)
    if root == "numba" and "numba.cuda" in sys.modules:
        return sys.modules["numba.cuda"].device_array(shape, dtype=_CODE_NUMPY[dtype])
    return DeviceArray(shape, _CODE_NUMPY[dtype], stream)


cdef DevArr dev_new(DevArr like, tuple shape, int dtype, str func):
    """A new C-contiguous result of the same kind as like, used on like's stream."""
    cdef DevArr r = dev_view(_alloc_same_kind(like.obj, shape, dtype, like.stream), func,
                             "result")
    r.stream = like.stream
    return r


cdef DevArr dev_out(object out, DevArr like, tuple shape, int dtype, str func):
    """The result array: out validated (a C-contiguous device array of exactly this shape and
    dtype) or, when out is None, a new one of like's kind."""
    cdef DevArr r
    if out is None:
        return dev_new(like, shape, dtype, func)
    r = dev_view(out, func, "out")
    if r.shape != shape:
        raise ValueError(f"fastdl.{func}: out has shape {r.shape}, expected {shape}")
    if r.dtype != dtype:
        raise TypeError(f"fastdl.{func}: out has dtype {_CODE_NUMPY[r.dtype]}, expected "
                        f"{_CODE_NUMPY[dtype]}")
    if not r.contiguous:
        raise ValueError(f"fastdl.{func}: out must be C-contiguous on the GPU")
    r.stream = like.stream
    return r


cdef int same_dtype(DevArr a, DevArr b, str func, str name_a, str name_b) except -1:
    if a.dtype != b.dtype:
        raise TypeError(f"fastdl.{func}: {name_a} and {name_b} must have the same dtype on the "
                        f"GPU, got {_CODE_NUMPY[a.dtype]} and {_CODE_NUMPY[b.dtype]}")
    return 0


cdef int same_shape(DevArr a, DevArr b, str func, str name_a, str name_b) except -1:
    if a.shape != b.shape:
        raise ValueError(f"fastdl.{func}: {name_a} and {name_b} must have the same shape, got "
                         f"{a.shape} and {b.shape}")
    return 0


def _parse_for_tests(obj):
    """Test hook: what fastdl reads from obj's __cuda_array_interface__ (no device needed)."""
    cdef DevArr a = dev_view(obj, "cuda._parse_for_tests", "obj")
    return {"ptr": int(a.ptr), "shape": a.shape, "dtype": _CODE_NUMPY[a.dtype],
            "contiguous": bool(a.contiguous), "strides": a.strides, "stream": int(a.stream)}


# --------------------------------------------------------------------------------------
# The op families (each file: its launchers' declarations and the Python-level functions)

include "cuda/elementwise.pxi"
include "cuda/softmax_losses.pxi"
include "cuda/dropout.pxi"
include "cuda/norm.pxi"
include "cuda/optim.pxi"
include "cuda/blas.pxi"
include "cuda/conv.pxi"
include "cuda/attention.pxi"
