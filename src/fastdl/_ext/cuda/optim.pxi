# optim: GPU sgd_, momentum_, adam_ and the optimiser classes' engine (kernels: cuda/optim.cu).
# Same names, parameters, validation and messages as _optim.pyx: w (an array or a list of
# arrays) and the state are device arrays updated in place, g device arrays of w's dtype and
# shape; every argument (every entry of a list) is validated before require_device, so
# nothing is written by a failed call and the checks run without a GPU. A list is updated
# by one multi-tensor launch per dtype (per ~100 tensors). Strided in-place arrays are
# updated through a contiguous copy written back in place.

import bisect as _optim_bisect
import math as _optim_math
import operator as _optim_operator

from libc.stdlib cimport malloc as _optim_malloc, free as _optim_free

cdef extern from "optim.h" nogil:
    ctypedef struct fdl_cuda_opt_hp:
        double lr, wd, mu, b1, b2, bc1, bc2, eps, decay
        int mode
    int FDL_CUDA_OPT_SGD, FDL_CUDA_OPT_SGDM, FDL_CUDA_OPT_MOMENTUM, FDL_CUDA_OPT_ADAM
    int fdl_cuda_optim_multi(int op, int dtype, int ntensors, void **ptrs, const int64_t *n,
                             const fdl_cuda_opt_hp *hp, void *stream)
    int fdl_cuda_optim_scatter(void *dst, const void *src, int ndim, const int64_t *shape,
                               const int64_t *strides_bytes, int itemsize, void *stream)
    int fdl_cuda_host_optim_multi(int op, int dtype, int ntensors, void **ptrs,
                                  const int64_t *n, const fdl_cuda_opt_hp *hp)
    int fdl_cuda_optim_capacity(int op)


# --------------------------------------------------------------------------------------
# hyper-parameters (the CPU's checks and messages)

cdef double _optim_number(object x, str func, str name) except? -1.0:
    cdef double v
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"fastdl.{func}: {name} must be a real number, got {type(x).__name__}")
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"fastdl.{func}: {name} must be a real number, got "
                        f"{type(x).__name__}") from None
    if v != v:
        raise ValueError(f"fastdl.{func}: {name} is NaN")
    return v


cdef double _optim_nonneg(object x, str func, str name) except? -1.0:
    cdef double v = _optim_number(x, func, name)
    if v < 0:
        raise ValueError(f"fastdl.{func}: {name} must be >= 0, got {v!r}")
    return v


cdef double _optim_beta(object x, str func, str name) except? -1.0:
    cdef double v = _optim_number(x, func, name)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"fastdl.{func}: {name} must be in [0, 1), got {v!r}")
    return v


cdef double _optim_positive(object x, str func, str name) except? -1.0:
    cdef double v = _optim_number(x, func, name)
    if not v > 0:
        raise ValueError(f"fastdl.{func}: {name} must be > 0, got {v!r}")
    return v


cdef long long _optim_step_count(object t, str func) except? -1:
    cdef long long v
    if isinstance(t, (bool, np.bool_)):
        raise TypeError(f"fastdl.{func}: t must be an int, got {type(t).__name__}")
    try:
        v = _optim_operator.index(t)
    except TypeError:
        raise TypeError(f"fastdl.{func}: t must be an int (the step count, from 1), got "
                        f"{type(t).__name__}") from None
    if v < 1:
        raise ValueError(f"fastdl.{func}: t must be >= 1 (the step count), got {v}")
    return v


cdef void _optim_hp_init(fdl_cuda_opt_hp *h) noexcept:
    h.lr = h.wd = h.mu = h.b1 = h.b2 = h.eps = 0.0
    h.bc1 = h.bc2 = h.decay = 1.0
    h.mode = 0


cdef void _optim_adam_hp(fdl_cuda_opt_hp *h, double lr, double b1, double b2, double eps,
                         double wd, bint decoupled, long long t) noexcept:
    # as _optim.pyx's _adam_hp: bias corrections 1 - beta^t in double (C pow)
    _optim_hp_init(h)
    h.lr = lr
    h.b1 = b1
    h.b2 = b2
    h.eps = eps
    h.wd = wd
    h.bc1 = 1.0 - _optim_math.pow(b1, <double>t)
    h.bc2 = 1.0 - _optim_math.pow(b2, <double>t)
    h.decay = 1.0 - lr * wd
    h.mode = (2 if decoupled else 1) if wd != 0.0 else 0


# --------------------------------------------------------------------------------------
# arrays

cdef bint _optim_readonly(object obj):
    try:
        return bool(obj.__cuda_array_interface__["data"][1])
    except (AttributeError, KeyError, IndexError, TypeError):
        return False


cdef int _optim_aligned(DevArr a, str func, str name) except -1:
    cdef Py_ssize_t st
    bad = a.ptr % a.itemsize != 0
    if a.strides is not None:
        for st in a.strides:
            if st % a.itemsize != 0:
                bad = True
    if bad:
        raise ValueError(f"fastdl.{func}: {name} is not aligned to its dtype; the GPU cannot "
                         f"update it in place")
    return 0


cdef DevArr _optim_inplace(object x, str func, str name):
    """An array updated in place: a writeable, aligned float32/float64 device array."""
    cdef DevArr a
    if not is_device_array(x):
        raise TypeError(f"fastdl.{func}: {name} is updated in place and must be a float32 or "
                        f"float64 CUDA device array like w, got {type(x).__name__}")
    a = dev_view(x, func, name)
    if a.dtype != FDL_CUDA_F32 and a.dtype != FDL_CUDA_F64:
        raise TypeError(f"fastdl.{func}: {name} has dtype {_CODE_NUMPY[a.dtype]}; arrays "
                        "updated in place must be float32 or float64 (a converted copy would "
                        "lose the update)")
    if _optim_readonly(x):
        raise ValueError(f"fastdl.{func}: {name} is read-only; it is updated in place")
    _optim_aligned(a, func, name)
    return a


cdef DevArr _optim_like(object x, DevArr w, str func, str name, str wname, bint inplace):
    cdef DevArr a
    if inplace:
        a = _optim_inplace(x, func, name)
    else:
        a = dev_float(x, func, name)
        _optim_aligned(a, func, name)
    if a.dtype != w.dtype:
        raise TypeError(f"fastdl.{func}: {name} has dtype {_CODE_NUMPY[a.dtype]} and {wname} "
                        f"has dtype {_CODE_NUMPY[w.dtype]}; they must be equal")
    if a.shape != w.shape:
        raise ValueError(f"fastdl.{func}: {name} has shape {a.shape} and {wname} has shape "
                         f"{w.shape}; they must be equal")
    return a


cdef tuple _optim_extent(DevArr a):
    """Byte range [lo, hi) of a ((0, 0) when empty)."""
    cdef Py_ssize_t lo, hi, d, step
    if a.size == 0:
        return (0, 0)
    if a.strides is None:
        return (a.ptr, a.ptr + a.size * a.itemsize)
    lo = hi = <Py_ssize_t>a.ptr
    for d in range(a.ndim):
        step = (a.shape[d] - 1) * a.strides[d]
        if step < 0:
            lo += step
        else:
            hi += step
    return (lo, hi + a.itemsize)


cdef object _optim_line(DevArr a):
    """(first byte, stride, count) when a's elements lie on one line (contiguous, or one axis
    of extent > 1), else None."""
    if a.strides is None:
        return (a.ptr, a.itemsize, a.size)
    axes = [d for d in range(a.ndim) if a.shape[d] > 1]
    if len(axes) != 1:
        return None
    st = a.strides[axes[0]]
    n = a.shape[axes[0]]
    if st < 0:
        return (a.ptr + (n - 1) * st, -st, n)
    return (a.ptr, st, n)


cdef bint _optim_shares(DevArr a, DevArr b):
    """Whether a and b may share memory: exact for contiguous arrays and for two views along
    one line with one stride (interleaved views do not share); otherwise the extents'."""
    alo, ahi = _optim_extent(a)
    blo, bhi = _optim_extent(b)
    if ahi <= alo or bhi <= blo or ahi <= blo or bhi <= alo:
        return False
    la = _optim_line(a)
    lb = _optim_line(b)
    if la is None or lb is None or a.itemsize != b.itemsize:
        return True
    (a0, sa, na), (b0, sb, nb) = la, lb
    if sa == a.itemsize or sb == b.itemsize:
        return True            # one of them covers its whole extent
    if sa != sb:
        return True
    # elements a0 + i*s and b0 + j*s meet iff |a0 - b0 + k*s| < itemsize, k = i - j
    d = a0 - b0
    k0 = (-d) // sa
    for k in (k0, k0 + 1):
        if -(nb - 1) <= k <= na - 1 and abs(d + k * sa) < a.itemsize:
            return True
    return False


cdef _optim_overlap_error(str a, str b, str func):
    raise ValueError(f"fastdl.{func}: {a} and {b} share memory; an array updated in place must "
                     "not overlap any other argument (pass distinct arrays)")


cdef int _optim_check_disjoint(list arrays, list names, list written, str func) except -1:
    """No written array shares memory with any other array of the call (a sweep over the
    arrays sorted by their first byte)."""
    cdef Py_ssize_t i, j
    cdef list iv = [], active
    for i in range(len(arrays)):
        lo, hi = _optim_extent(<DevArr>arrays[i])
        if hi > lo:
            iv.append((lo, hi, i))
    iv.sort()
    active = []
    for lo, hi, i in iv:
        active = [x for x in active if x[0] > lo]
        for x in active:
            j = x[1]
            if (written[i] or written[j]) and _optim_shares(<DevArr>arrays[i], <DevArr>arrays[j]):
                _optim_overlap_error(names[j], names[i], func)
        active.append((hi, i))
    return 0


cdef list _optim_as_list(object x, bint multi, Py_ssize_t n, str func, str name):
    if multi:
        if not isinstance(x, (list, tuple)):
            raise TypeError(f"fastdl.{func}: w is a list, so {name} must be a list of arrays "
                            f"too, got {type(x).__name__}")
        if len(x) != n:
            raise ValueError(f"fastdl.{func}: w has {n} arrays and {name} has {len(x)}; they "
                             "must be equal")
        return list(x)
    if isinstance(x, (list, tuple)):
        raise TypeError(f"fastdl.{func}: w is an array, so {name} must be an array, not a "
                        f"{type(x).__name__}")
    return [x]


cdef list _optim_groups(str func, tuple names, tuple args):
    """Validate (w, g, state...) or lists of them; returns [[w, g, state...], ...] (DevArr)."""
    cdef bint multi = isinstance(args[0], (list, tuple))
    cdef Py_ssize_t n = len(args[0]) if multi else 1, i, k, nops = len(names)
    cdef list cols = [list(args[0]) if multi else [args[0]]]
    cdef list groups = [], flat = [], labels = [], written = []
    cdef DevArr w
    for k in range(1, nops):
        cols.append(_optim_as_list(args[k], multi, n, func, names[k]))
    for i in range(n):
        sfx = f"[{i}]" if multi else ""
        w = _optim_inplace(cols[0][i], func, names[0] + sfx)
        grp = [w, _optim_like(cols[1][i], w, func, names[1] + sfx, names[0] + sfx, False)]
        for k in range(2, nops):
            grp.append(_optim_like(cols[k][i], w, func, names[k] + sfx, names[0] + sfx, True))
        groups.append(grp)
        for k in range(nops):
            flat.append(grp[k])
            labels.append(names[k] + sfx)
            written.append(k != 1)
    _optim_check_disjoint(flat, labels, written, func)
    return groups


cdef int _optim_scatter(DevArr dst, DevArr src, uintptr_t stream, str func) except -1:
    cdef int64_t shp[32]
    cdef int64_t strd[32]
    cdef int d
    for d in range(dst.ndim):
        shp[d] = dst.shape[d]
        strd[d] = dst.strides[d]
    check(fdl_cuda_optim_scatter(<void *>dst.ptr, <const void *>src.ptr, dst.ndim, shp, strd,
                                 dst.itemsize, <void *>stream), func)
    return 0


cdef int _optim_launch(int op, list groups, const fdl_cuda_opt_hp *h, uintptr_t stream,
                       str func, bint host) except -1:
    """One multi-tensor update of every group (float32 tensors, then float64) on `stream`.
    Strided operands go through contiguous copies (gathered first, written back after)."""
    cdef list sel, keep, back
    cdef Py_ssize_t i, k, n
    cdef DevArr a, c
    cdef void **ptrs
    cdef int64_t *sizes
    cdef int rc
    for want in (FDL_CUDA_F32, FDL_CUDA_F64):
        sel = [grp for grp in groups if (<DevArr>grp[0]).dtype == want and
               (<DevArr>grp[0]).size > 0]
        if not sel:
            continue
        n = len(sel)
        ptrs = <void **>_optim_malloc(4 * n * sizeof(void *))
        sizes = <int64_t *>_optim_malloc(n * sizeof(int64_t))
        if ptrs == NULL or sizes == NULL:
            _optim_free(ptrs)
            _optim_free(sizes)
            raise MemoryError()
        keep = []
        back = []
        try:
            for i in range(n):
                grp = sel[i]
                for k in range(4):
                    ptrs[4 * i + k] = NULL
                for k in range(len(grp)):
                    a = <DevArr>grp[k]
                    if not a.contiguous:
                        if host:
                            raise ValueError("host shim: contiguous arrays only")
                        a.stream = stream        # gather and write back on the update's stream
                        c = dev_contig(a, func)
                        keep.append(c)
                        if k != 1:
                            back.append((a, c))
                        a = c
                    ptrs[4 * i + k] = <void *>a.ptr
                sizes[i] = (<DevArr>grp[0]).size
            if host:
                rc = fdl_cuda_host_optim_multi(op, want, <int>n, ptrs, sizes, h)
            else:
                rc = fdl_cuda_optim_multi(op, want, <int>n, ptrs, sizes, h, <void *>stream)
            check(rc, func)
            for a, c in back:
                _optim_scatter(a, c, stream, func)
        finally:
            _optim_free(ptrs)
            _optim_free(sizes)
    return 0


# --------------------------------------------------------------------------------------
# functional updates (host=True: the host shim's run over host memory, see below)

cdef _optim_run(int op, list groups, const fdl_cuda_opt_hp *h, str func, bint host):
    if not host:
        require_device(func)
    if groups:
        _optim_launch(op, groups, h, (<DevArr>groups[0][0]).stream, func, host)


cdef _optim_sgd(w, g, lr, weight_decay, momentum, buf, bint host):
    cdef fdl_cuda_opt_hp h
    cdef str func = "sgd_"
    _optim_hp_init(&h)
    h.lr = _optim_nonneg(lr, func, "lr")
    h.wd = _optim_nonneg(weight_decay, func, "weight_decay")
    h.mu = _optim_beta(momentum, func, "momentum")
    h.mode = 1 if h.wd != 0.0 else 0
    if buf is None:
        if h.mu != 0.0:
            raise ValueError("fastdl.sgd_: momentum > 0 needs buf= (the momentum buffer)")
        _optim_run(FDL_CUDA_OPT_SGD, _optim_groups(func, ("w", "g"), (w, g)), &h, func, host)
    else:
        _optim_run(FDL_CUDA_OPT_SGDM, _optim_groups(func, ("w", "g", "buf"), (w, g, buf)), &h,
                   func, host)


cdef _optim_momentum(w, g, v, lr, beta, weight_decay, bint host):
    cdef fdl_cuda_opt_hp h
    cdef str func = "momentum_"
    _optim_hp_init(&h)
    h.lr = _optim_nonneg(lr, func, "lr")
    h.mu = _optim_beta(beta, func, "beta")
    h.wd = _optim_nonneg(weight_decay, func, "weight_decay")
    h.mode = 1 if h.wd != 0.0 else 0
    _optim_run(FDL_CUDA_OPT_MOMENTUM, _optim_groups(func, ("w", "g", "v"), (w, g, v)), &h,
               func, host)


cdef _optim_adam(w, g, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled, bint host):
    cdef fdl_cuda_opt_hp h
    cdef str func = "adam_"
    cdef double vlr = _optim_nonneg(lr, func, "lr")
    cdef double b1 = _optim_beta(beta1, func, "beta1"), b2 = _optim_beta(beta2, func, "beta2")
    cdef double e = _optim_positive(eps, func, "eps")
    cdef double wd = _optim_nonneg(weight_decay, func, "weight_decay")
    cdef long long tt = _optim_step_count(t, func)
    _optim_adam_hp(&h, vlr, b1, b2, e, wd, bool(decoupled), tt)
    _optim_run(FDL_CUDA_OPT_ADAM, _optim_groups(func, ("w", "g", "m", "v"), (w, g, m, v)), &h,
               func, host)


def sgd_(w, g, lr, weight_decay=0.0, *, momentum=0.0, buf=None):
    """GPU twin of fastdl.optim.sgd_ (device arrays or lists of them, updated in place)."""
    _optim_sgd(w, g, lr, weight_decay, momentum, buf, False)


def momentum_(w, g, v, lr, beta=0.9, weight_decay=0.0):
    """GPU twin of fastdl.optim.momentum_ (v = beta * v - lr * g; w = w + v, in place)."""
    _optim_momentum(w, g, v, lr, beta, weight_decay, False)


def adam_(w, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
          decoupled=False):
    """GPU twin of fastdl.optim.adam_ (one Adam step in place; bias corrections in double)."""
    _optim_adam(w, g, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled, False)


# --------------------------------------------------------------------------------------
# the optimiser classes on the GPU (fastdl.optim.SGD/Momentum/Adam/AdamW route here)

_OPTIM_NSTATE = {0: 0, 1: 1, 2: 1, 3: 2}


cdef class _OptimGPU:
    """Parameters (device arrays, validated once) and their state: zeroed device arrays of
    the parameters' kind and shape, allocated at the first use (so that everything before,
    validation included, runs without a GPU). step() validates the gradients, then updates
    every parameter with one multi-tensor launch per dtype."""
    cdef readonly tuple params
    cdef list _state                    # _state[k][i]: state array k of parameter i (or None)
    cdef list _pv                       # DevArr of each parameter
    cdef list _sv                       # DevArr of each state array, [k][i]
    cdef list _his, _los, _ord          # parameters' byte ranges, sorted (disjoint)
    cdef int _op, _nstate
    cdef uintptr_t _stream
    cdef str _func

    def __init__(self, params, int op, str name):
        cdef str func = f"optim.{name}"
        cdef Py_ssize_t i, n
        if op not in _OPTIM_NSTATE:
            raise ValueError(f"fastdl.{func}: unknown update {op}")
        params = list(params)
        n = len(params)
        self._pv = [_optim_inplace(params[i], func, f"params[{i}]") for i in range(n)]
        _optim_check_disjoint(list(self._pv), [f"params[{i}]" for i in range(n)], [True] * n,
                              func)
        self.params = tuple(params)
        self._op = op
        self._nstate = _OPTIM_NSTATE[op]
        self._func = func
        self._stream = (<DevArr>self._pv[0]).stream if n else 0
        self._state = None
        self._sv = None
        iv = sorted(_optim_extent(<DevArr>self._pv[i]) + (i,) for i in range(n))
        iv = [x for x in iv if x[1] > x[0]]
        self._los = [x[0] for x in iv]
        self._his = [x[1] for x in iv]
        self._ord = [x[2] for x in iv]

    cdef int _ensure_state(self, uintptr_t stream) except -1:
        """Allocate and zero the state on `stream` (the stream of the first update)."""
        cdef DevArr p, s
        cdef Py_ssize_t i, k
        if self._state is not None:
            return 0
        require_device(self._func)
        state, views = [], []
        for k in range(self._nstate):
            objs, vs = [], []
            for i in range(len(self._pv)):
                p = <DevArr>self._pv[i]
                obj = _alloc_same_kind(p.obj, p.shape, p.dtype, stream)
                s = dev_view(obj, self._func, "state")
                s.stream = stream
                check(fdl_cuda_memset(<void *>s.ptr, 0, s.size * s.itemsize,
                                      <void *>s.stream), self._func)
                objs.append(obj)
                vs.append(s)
            state.append(objs)
            views.append(vs)
        self._state = state
        self._sv = views
        return 0

    @property
    def state(self):
        """state[k][i]: state array k (momentum buffer / v / m, v) of parameter i."""
        self._ensure_state(self._stream)
        return self._state

    cdef int _check_grad(self, DevArr g, Py_ssize_t i) except -1:
        lo, hi = _optim_extent(g)
        if hi <= lo:
            return 0
        a = _optim_bisect.bisect_right(self._his, lo)
        while a < len(self._los) and self._los[a] < hi:
            j = self._ord[a]
            if _optim_shares(g, <DevArr>self._pv[j]):
                _optim_overlap_error(f"grads[{i}]", f"params[{j}]", "optim.step")
            a += 1
        return 0

    def step(self, grads, double lr, double wd, double mu, double b1, double b2, double eps,
             bint decoupled, long long t):
        """Validate grads (a list, one per parameter), then update in place with step t."""
        cdef fdl_cuda_opt_hp h
        cdef Py_ssize_t i, n = len(self.params)
        cdef DevArr g, w
        cdef str func = "optim.step"
        if len(grads) != n:
            raise ValueError(f"fastdl.optim.step: {len(grads)} gradients for {n} parameters")
        gs = []
        for i in range(n):
            w = <DevArr>self._pv[i]
            g = _optim_like(grads[i], w, func, f"grads[{i}]", f"params[{i}]", False)
            self._check_grad(g, i)
            gs.append(g)
        require_device(func)
        if n:
            # the caller's stream now: the one the gradients name
            self._stream = (<DevArr>gs[0]).stream
        self._ensure_state(self._stream)
        groups = [[self._pv[i], gs[i]] + [vs[i] for vs in self._sv] for i in range(n)]
        if self._op == FDL_CUDA_OPT_ADAM:
            _optim_adam_hp(&h, lr, b1, b2, eps, wd, decoupled, t)
        else:
            _optim_hp_init(&h)
            h.lr = lr
            h.wd = wd
            h.mu = mu
            h.mode = 1 if wd != 0.0 else 0
        if n:
            _optim_launch(self._op, groups, &h, self._stream, func, False)

    def zero_state(self):
        """Zero every state array (on the parameters' stream)."""
        cdef DevArr s
        if self._state is None:
            return          # not allocated yet: zeros when it is
        for vs in self._sv:
            for s in vs:
                check(fdl_cuda_memset(<void *>s.ptr, 0, s.size * s.itemsize,
                                      <void *>self._stream), "optim.zero_state")

    def state_meta(self):
        """[[(shape, numpy dtype) of state array k of parameter i, ...] for each k]"""
        cdef DevArr p
        return [[(p.shape, _CODE_NUMPY[p.dtype]) for p in self._pv]
                for k in range(self._nstate)]

    def state_to_host(self):
        """NumPy copies of the state arrays, [k][i]."""
        cdef DevArr s
        self._ensure_state(self._stream)
        # the updates ran on self._stream, whatever stream the state arrays report
        check(fdl_cuda_stream_sync(<void *>self._stream), "optim.state_dict")
        return [[to_host(s.obj) for s in vs] for vs in self._sv]

    def load_state(self, list arrays):
        """Copy NumPy arrays ([k][i], already checked against state_meta) into the state."""
        cdef DevArr s
        cdef cnp.ndarray src
        self._ensure_state(self._stream)
        for vs, srcs in zip(self._sv, arrays):
            for s, a in zip(vs, srcs):
                src = np.ascontiguousarray(a, dtype=_CODE_NUMPY[s.dtype])
                if s.size:
                    check(fdl_cuda_memcpy(<void *>s.ptr, cnp.PyArray_DATA(src),
                                          s.size * s.itemsize, 1, <void *>self._stream),
                          "optim.load_state_dict")


# --------------------------------------------------------------------------------------
# host shim: the multi-tensor launch's grouping, chunk mapping and formulas on the CPU

def _host_optim_update(int op, list arrays, double lr=0.0, double weight_decay=0.0,
                       double mu=0.0, double beta1=0.9, double beta2=0.999, double eps=1e-8,
                       bint decoupled=False, long long t=1):
    """optim.cu's update of arrays = [[w, g, state...], ...] (C-contiguous NumPy arrays,
    updated in place), the hyper-parameters as the GPU functions derive them."""
    cdef fdl_cuda_opt_hp h
    cdef Py_ssize_t i, k, n = len(arrays)
    cdef void **ptrs
    cdef int64_t *sizes
    cdef cnp.ndarray a
    if op == FDL_CUDA_OPT_ADAM:
        _optim_adam_hp(&h, lr, beta1, beta2, eps, weight_decay, decoupled, t)
    else:
        _optim_hp_init(&h)
        h.lr = lr
        h.wd = weight_decay
        h.mu = mu
        h.mode = 1 if weight_decay != 0.0 else 0
    for want in (np.float32, np.float64):
        sel = [grp for grp in arrays if grp[0].dtype == want]
        if not sel:
            continue
        ptrs = <void **>_optim_malloc(max(len(sel), 1) * 4 * sizeof(void *))
        sizes = <int64_t *>_optim_malloc(max(len(sel), 1) * sizeof(int64_t))
        try:
            for i in range(len(sel)):
                for k in range(4):
                    ptrs[4 * i + k] = NULL
                for k in range(len(sel[i])):
                    a = <cnp.ndarray>sel[i][k]
                    if not a.flags.c_contiguous or a.dtype != want:
                        raise ValueError("host shim: C-contiguous arrays of one dtype")
                    ptrs[4 * i + k] = cnp.PyArray_DATA(a)
                sizes[i] = sel[i][0].size
            rc = fdl_cuda_host_optim_multi(op, FDL_CUDA_F32 if want is np.float32 else
                                           FDL_CUDA_F64, <int>len(sel), ptrs, sizes, &h)
            if rc:
                raise RuntimeError(f"host shim: error {rc}")
        finally:
            _optim_free(ptrs)
            _optim_free(sizes)


def _host_optim_functional(str name, *args, **kwargs):
    """sgd_ / momentum_ / adam_ (name) run through the GPU functions' whole Python path
    (validation, grouping, dtype split, pointer tables) with the host twin of the launch: the
    arrays are objects whose __cuda_array_interface__ points at C-contiguous host memory."""
    if name == "sgd_":
        w, g, lr, wd, mom, buf = _optim_sig_sgd(*args, **kwargs)
        _optim_sgd(w, g, lr, wd, mom, buf, True)
    elif name == "momentum_":
        w, g, v, lr, beta, wd = _optim_sig_momentum(*args, **kwargs)
        _optim_momentum(w, g, v, lr, beta, wd, True)
    elif name == "adam_":
        w, g, m, v, t, lr, b1, b2, eps, wd, dec = _optim_sig_adam(*args, **kwargs)
        _optim_adam(w, g, m, v, t, lr, b1, b2, eps, wd, dec, True)
    else:
        raise ValueError(name)


def _optim_sig_sgd(w, g, lr, weight_decay=0.0, *, momentum=0.0, buf=None):
    return (w, g, lr, weight_decay, momentum, buf)


def _optim_sig_momentum(w, g, v, lr, beta=0.9, weight_decay=0.0):
    return (w, g, v, lr, beta, weight_decay)


def _optim_sig_adam(w, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                    weight_decay=0.0, decoupled=False):
    return (w, g, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled)


def _optim_capacity(int op):
    """Tensors per launch of the multi-tensor kernel for op (0 sgd, 1 sgd+momentum,
    2 momentum, 3 adam)."""
    return fdl_cuda_optim_capacity(op)
