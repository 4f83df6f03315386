# attention: scaled_dot_product_attention and its backward on the GPU (cuda/attention.cu).
#
# The same rules as the CPU (_attention.pyx): leading dimensions broadcast between q, k, v
# and the mask; boolean (True = attend) or additive float masks broadcastable to
# (..., L, S); top-left aligned is_causal; a fully masked row gives zeros and lse = -inf;
# the backward returns gradients of the operands' own shapes (summed over the dimensions they
# were broadcast along). On the GPU q, k, v (and dout, out, lse) must share one dtype, and
# head dimensions go up to 256.
#
# Operands are read in place whatever their strides, as long as the last axis has unit
# stride (a split_heads view included); anything else is copied once. Every check runs
# before anything is allocated or launched. The _host_* shims run the kernels' block code on
# host threads over NumPy arrays (attention_host.cuh), through the same planning code, for
# tests on machines without a GPU.

import math

from libc.string cimport memset

cdef extern from "attention.h" nogil:
    int FDL_ATTN_MAXB
    int FDL_ATTN_Q, FDL_ATTN_K, FDL_ATTN_V, FDL_ATTN_MASK, FDL_ATTN_DO, FDL_ATTN_O
    int FDL_ATTN_SLOTS
    int FDL_ATTN_MASK_NONE, FDL_ATTN_MASK_BOOL, FDL_ATTN_MASK_F32, FDL_ATTN_MASK_F64

    ctypedef struct fdl_attn_batch:
        int nd
        int64_t shape[30]
        int64_t st[6][30]

    ctypedef struct fdl_attn_args:
        int dtype
        int causal
        int64_t nb, L, S, E, Ev
        double scale
        const void *q
        const void *k
        const void *v
        const void *dout
        const void *out
        int64_t ldq, ldk, ldv, lddo, ldo
        int vec_q, vec_k, vec_v, vec_do
        int mask_kind
        const void *mask
        int64_t mls, mss
        void *o_res
        void *lse_res
        const void *lse
        void *delta
        void *dq
        void *dk
        void *dv

    ctypedef struct fdl_attn_reduce:
        int nk, nr
        int64_t kshape[30]
        int64_t kst[30]
        int64_t rshape[30]
        int64_t rst[30]
        int64_t inner

    int fdl_cuda_sdpa_forward(const fdl_attn_args *a, const fdl_attn_batch *b, void *stream)
    int fdl_cuda_sdpa_backward(const fdl_attn_args *a, const fdl_attn_batch *b, void *stream)
    int fdl_cuda_attn_reduce(int dtype, void *out, const void *g, const fdl_attn_reduce *r,
                             void *stream)
    int fdl_cuda_sdpa_forward_host(const fdl_attn_args *a, const fdl_attn_batch *b)
    int fdl_cuda_sdpa_backward_host(const fdl_attn_args *a, const fdl_attn_batch *b)
    int fdl_cuda_attn_reduce_host(int dtype, void *out, const void *g, const fdl_attn_reduce *r)
    int fdl_cuda_sdpa_config(int dtype, int64_t E, int64_t Ev, int which, int *D, int *bq,
                             int *bk, int64_t *smem)

_ATTN_MAX_HEAD = 256     # the largest head-dimension template (attention.cu, Cfg)


cdef class _AttnOp:
    """One array operand, device (a DevArr) or host (a NumPy array, for the _host_ shims):
    pointer, shape, strides in elements (None when some stride is not a whole number of
    elements), dtype code."""
    cdef readonly object arr        # what keeps the memory alive
    cdef readonly DevArr view       # device operands only
    cdef readonly uintptr_t ptr
    cdef readonly tuple shape
    cdef readonly tuple est
    cdef readonly int dtype, itemsize


cdef tuple _attn_c_strides(tuple shape):
    cdef list st = []
    cdef int64_t acc = 1
    for n in reversed(shape):
        st.append(acc)
        acc *= n
    return tuple(reversed(st))


cdef tuple _attn_elem_strides(tuple shape, object byte_strides, int itemsize):
    if byte_strides is None:
        return _attn_c_strides(shape)
    out = []
    for n, s in zip(shape, byte_strides):
        if n > 1 and s % itemsize:
            return None
        out.append(s // itemsize if n > 1 else 0)
    return tuple(out)


cdef _AttnOp _attn_dev_op(DevArr a):
    cdef _AttnOp o = _AttnOp.__new__(_AttnOp)
    o.arr = a.obj
    o.view = a
    o.ptr = a.ptr
    o.shape = a.shape
    o.dtype = a.dtype
    o.itemsize = a.itemsize
    o.est = _attn_elem_strides(a.shape, a.strides, a.itemsize)
    return o


cdef _AttnOp _attn_host_op(object x):
    cdef _AttnOp o = _AttnOp.__new__(_AttnOp)
    cdef cnp.ndarray arr = np.asarray(x)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    o.arr = arr
    o.view = None
    o.ptr = <uintptr_t>cnp.PyArray_DATA(arr)
    o.shape = tuple((<object>arr).shape)
    o.dtype = dtype_code_of(arr.dtype)
    o.itemsize = arr.dtype.itemsize
    o.est = _attn_elem_strides(o.shape, (<object>arr).strides, o.itemsize) if arr.size else \
        _attn_c_strides(o.shape)
    return o


cdef _AttnOp _attn_float_op(object x, str func, str name, bint host):
    cdef _AttnOp o
    if not host:
        return _attn_dev_op(dev_float(x, func, name))
    o = _attn_host_op(x)
    if o.dtype != FDL_CUDA_F32 and o.dtype != FDL_CUDA_F64:
        raise TypeError(f"fastdl.{func}: {name} must be float32 or float64, got "
                        f"{o.arr.dtype}")
    return o


cdef int _attn_same_dtype(_AttnOp a, _AttnOp b, str func, str na, str nb) except -1:
    if a.dtype != b.dtype:
        raise TypeError(f"fastdl.{func}: {na} and {nb} must have the same dtype on the GPU, "
                        f"got {_CODE_NUMPY[a.dtype]} and {_CODE_NUMPY[b.dtype]}")
    return 0


cdef bint _attn_is_c(_AttnOp o) except -1:
    """Whether o is C-contiguous (strides of size-1 axes do not matter)."""
    if o.est is None:
        return False
    for n, s, c in zip(o.shape, o.est, _attn_c_strides(o.shape)):
        if n > 1 and s != c:
            return False
    return True


cdef _AttnOp _attn_rows(_AttnOp o, str func):
    """o itself when its last axis has unit stride (strides in whole elements), else a
    C-contiguous copy."""
    cdef _AttnOp c
    cdef int nd = len(o.shape)
    if o.est is not None and (o.shape[nd - 1] <= 1 or o.est[nd - 1] == 1):
        return o
    if o.view is None:
        c = _attn_host_op(np.ascontiguousarray(o.arr))
    else:
        c = _attn_dev_op(dev_contig(o.view, func))
    return c


cdef class _AttnPlan:
    """A validated call: sizes, the broadcast batch shape, scale, mask."""
    cdef str func
    cdef bint host
    cdef int dtype, itemsize
    cdef tuple batch
    cdef int64_t nb, L, S, E, Ev
    cdef double scale
    cdef bint causal
    cdef _AttnOp q, k, v, dout, out, lse, mask
    cdef int mask_kind


cdef _AttnPlan _attn_plan(str func, q, k, v, attn_mask, is_causal, scale, bint host):
    """Everything the CPU checks for q, k, v, scale and the mask, in the CPU's order and with
    its messages where the GPU rules agree."""
    cdef _AttnPlan p = _AttnPlan.__new__(_AttnPlan)
    p.func = func
    p.host = host
    p.q = _attn_float_op(q, func, "q", host)
    p.k = _attn_float_op(k, func, "k", host)
    p.v = _attn_float_op(v, func, "v", host)
    for name, o in (("q", p.q), ("k", p.k), ("v", p.v)):
        if len(o.shape) < 2:
            raise ValueError(f"fastdl.{func}: '{name}' must have at least 2 dimensions "
                             f"(..., length, features), got shape {o.shape}")
    qs, ks, vs = p.q.shape, p.k.shape, p.v.shape
    cdef int nq = len(qs), nk = len(ks), nv = len(vs)
    if ks[nk - 1] != qs[nq - 1]:
        raise ValueError(f"fastdl.{func}: q and k must have the same last dimension (E); "
                         f"got q {qs} and k {ks}")
    if vs[nv - 2] != ks[nk - 2]:
        raise ValueError(f"fastdl.{func}: k and v must have the same number of keys "
                         f"(dimension -2); got k {ks} and v {vs}")
    try:
        p.batch = tuple(np.broadcast_shapes(qs[:nq - 2], ks[:nk - 2], vs[:nv - 2]))
    except ValueError:
        raise ValueError(f"fastdl.{func}: the leading (batch) dimensions of q {qs}, "
                         f"k {ks} and v {vs} do not broadcast") from None
    _attn_same_dtype(p.q, p.k, func, "q", "k")
    _attn_same_dtype(p.q, p.v, func, "q", "v")
    p.dtype = p.q.dtype
    p.itemsize = p.q.itemsize
    p.L = qs[nq - 2]
    p.S = ks[nk - 2]
    p.E = qs[nq - 1]
    p.Ev = vs[nv - 1]
    p.nb = 1
    for n in p.batch:
        p.nb *= n
    return p


cdef int _attn_finish_plan(_AttnPlan p, attn_mask, is_causal, scale) except -1:
    """scale, mask and head-size checks (after the backward's dout/out/lse checks, as the
    CPU orders them)."""
    func = p.func
    if scale is None:
        p.scale = 1.0 / math.sqrt(p.E) if p.E > 0 else 1.0
    else:
        try:
            s = float(scale)
        except (TypeError, ValueError):
            raise TypeError(f"fastdl.{func}: scale must be a real number or None, got "
                            f"{type(scale).__name__}") from None
        if not math.isfinite(s):
            raise ValueError(f"fastdl.{func}: scale must be finite, got {s}")
        p.scale = s
    p.causal = bool(is_causal)
    p.mask = None
    p.mask_kind = FDL_ATTN_MASK_NONE
    if attn_mask is not None:
        if p.host:
            m = _attn_host_op(attn_mask)
        else:
            m = _attn_dev_op(dev_view(attn_mask, func, "attn_mask"))
        if m.dtype == FDL_CUDA_BOOL:
            p.mask_kind = FDL_ATTN_MASK_BOOL
        elif m.dtype == FDL_CUDA_F32:
            p.mask_kind = FDL_ATTN_MASK_F32
        elif m.dtype == FDL_CUDA_F64:
            p.mask_kind = FDL_ATTN_MASK_F64
        else:
            dt = _CODE_NUMPY[m.dtype] if m.dtype >= 0 else m.arr.dtype
            raise TypeError(f"fastdl.{func}: attn_mask must be boolean (True = attend) or a "
                            f"float additive mask, got dtype {dt}")
        target = p.batch + (p.L, p.S)
        try:
            ok = tuple(np.broadcast_shapes(m.shape, target)) == target
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"fastdl.{func}: attn_mask of shape {m.shape} does not broadcast "
                             f"to the scores' shape {target} (batch..., L, S)")
        p.mask = m
    if p.E > _ATTN_MAX_HEAD or p.Ev > _ATTN_MAX_HEAD:
        raise ValueError(f"fastdl.{func}: head dimensions up to {_ATTN_MAX_HEAD} on the GPU, "
                         f"got E={p.E} (q {p.q.shape}) and Ev={p.Ev} (v {p.v.shape})")
    if p.nb * max(p.L, p.S, 1) >= (<int64_t>1 << 62):
        raise ValueError(f"fastdl.{func}: too many rows for the GPU kernels")
    return 0


cdef tuple _attn_batch_strides(_AttnOp o, tuple batch, int tail):
    """o's element strides along each batch dimension (0 where o is broadcast); tail: how
    many trailing axes are not batch axes."""
    cdef int nb = len(batch), lead = nb - (len(o.shape) - tail)
    out = []
    for d in range(nb):
        od = d - lead
        if od < 0 or o.shape[od] == 1 or batch[d] == 1:
            out.append(0)
        else:
            out.append(o.est[od])
    return tuple(out)


cdef int _attn_vec(_AttnOp o, int64_t row, tuple bst) except -1:
    """Whether 16-byte copies of o's rows are aligned (base, row and batch strides)."""
    if o.ptr % 16:
        return 0
    if (row * o.itemsize) % 16:
        return 0
    for s in bst:
        if (s * o.itemsize) % 16:
            return 0
    return 1


cdef int _attn_set_op(fdl_attn_args *a, int which, _AttnOp o, tuple batch, list slots,
                      int slot) except -1:
    """An operand's pointer, row stride, vec flag and batch strides into a and slots."""
    cdef int nd = len(o.shape)
    cdef int64_t row = o.est[nd - 2] if o.shape[nd - 2] > 1 else 0
    bst = _attn_batch_strides(o, batch, 2)
    slots[slot] = bst
    cdef int vec = _attn_vec(o, row, bst)
    cdef const void *ptr = <const void *>o.ptr
    if which == 0:
        a.q = ptr
        a.ldq = row
        a.vec_q = vec
    elif which == 1:
        a.k = ptr
        a.ldk = row
        a.vec_k = vec
    elif which == 2:
        a.v = ptr
        a.ldv = row
        a.vec_v = vec
    elif which == 3:
        a.dout = ptr
        a.lddo = row
        a.vec_do = vec
    else:
        a.out = ptr
        a.ldo = row
    return 0


cdef int _attn_fill(_AttnPlan p, fdl_attn_args *a, fdl_attn_batch *bt) except -1:
    """The launch description of p (operands already in row layout): args and the batch
    collapsed (size-1 dimensions dropped; neighbours merged where every slot allows)."""
    cdef int s, d
    cdef _AttnOp m
    memset(a, 0, sizeof(fdl_attn_args))
    memset(bt, 0, sizeof(fdl_attn_batch))
    a.dtype = p.dtype
    a.causal = 1 if p.causal else 0
    a.nb = p.nb
    a.L = p.L
    a.S = p.S
    a.E = p.E
    a.Ev = p.Ev
    a.scale = p.scale
    slots = [(0,) * len(p.batch) for _ in range(FDL_ATTN_SLOTS)]
    _attn_set_op(a, 0, p.q, p.batch, slots, FDL_ATTN_Q)
    _attn_set_op(a, 1, p.k, p.batch, slots, FDL_ATTN_K)
    _attn_set_op(a, 2, p.v, p.batch, slots, FDL_ATTN_V)
    if p.dout is not None:
        _attn_set_op(a, 3, p.dout, p.batch, slots, FDL_ATTN_DO)
        _attn_set_op(a, 4, p.out, p.batch, slots, FDL_ATTN_O)
    a.mask_kind = p.mask_kind
    if p.mask is not None:
        m = p.mask
        a.mask = <const void *>m.ptr
        nd = len(m.shape)
        a.mls = m.est[nd - 2] if nd >= 2 and m.shape[nd - 2] > 1 else 0
        a.mss = m.est[nd - 1] if nd >= 1 and m.shape[nd - 1] > 1 else 0
        slots[FDL_ATTN_MASK] = _attn_batch_strides(m, p.batch, min(nd, 2))
    # collapse the batch dimensions
    dims = []
    for d in range(len(p.batch)):
        n = p.batch[d]
        if n == 1:
            continue
        st = [slots[s][d] for s in range(FDL_ATTN_SLOTS)]
        last = len(dims) - 1
        if dims and all(dims[last][1][s] == st[s] * n for s in range(FDL_ATTN_SLOTS)):
            dims[last] = (dims[last][0] * n, st)
        else:
            dims.append((n, st))
    if len(dims) > FDL_ATTN_MAXB:
        raise ValueError(f"fastdl.{p.func}: too many batch dimensions")
    bt.nd = len(dims)
    for d, (n, st) in enumerate(dims):
        bt.shape[d] = n
        for s in range(FDL_ATTN_SLOTS):
            bt.st[s][d] = st[s]
    return 0


cdef int _attn_prepare(_AttnPlan p) except -1:
    """Copies where an operand cannot be read in place (device: after require_device)."""
    p.q = _attn_rows(p.q, p.func)
    p.k = _attn_rows(p.k, p.func)
    p.v = _attn_rows(p.v, p.func)
    if p.dout is not None:
        p.dout = _attn_rows(p.dout, p.func)
        p.out = _attn_rows(p.out, p.func)
        # lse is read as (nb, L) C-contiguous
        if not _attn_is_c(p.lse):
            if p.host:
                p.lse = _attn_host_op(np.ascontiguousarray(p.lse.arr))
            else:
                p.lse = _attn_dev_op(dev_contig(p.lse.view, p.func))
    if p.mask is not None and p.mask.est is None:
        if p.host:
            p.mask = _attn_host_op(np.ascontiguousarray(p.mask.arr))
        else:
            p.mask = _attn_dev_op(dev_contig(p.mask.view, p.func))
    return 0


cdef _AttnOp _attn_new(_AttnPlan p, tuple shape, _AttnOp like):
    """A new C-contiguous result: like's kind on the device, NumPy on the host."""
    if p.host:
        return _attn_host_op(np.empty(shape, _CODE_NUMPY[p.dtype]))
    return _attn_dev_op(dev_new(like.view, shape, p.dtype, p.func))


cdef _AttnOp _attn_scratch(_AttnPlan p, tuple shape, uintptr_t stream):
    if p.host:
        return _attn_host_op(np.empty(shape, _CODE_NUMPY[p.dtype]))
    return _attn_dev_op(dev_view(DeviceArray(shape, _CODE_NUMPY[p.dtype], stream), p.func,
                                 "scratch"))


cdef object _sdpa_forward(q, k, v, attn_mask, is_causal, scale, bint return_lse, bint host):
    func = "scaled_dot_product_attention"
    cdef _AttnPlan p = _attn_plan(func, q, k, v, attn_mask, is_causal, scale, host)
    _attn_finish_plan(p, attn_mask, is_causal, scale)
    if not host:
        require_device(func)
    cdef _AttnOp first = p.q         # results are of the caller's q kind, not of a copy's
    cdef uintptr_t st = 0 if host else first.view.stream
    cdef void *stream = <void *>st
    _attn_prepare(p)
    cdef _AttnOp o = _attn_new(p, p.batch + (p.L, p.Ev), first)
    cdef _AttnOp lse = _attn_new(p, p.batch + (p.L,), first)
    cdef fdl_attn_args a
    cdef fdl_attn_batch bt
    cdef int err
    if p.nb > 0 and p.L > 0:
        _attn_fill(p, &a, &bt)
        a.o_res = <void *>o.ptr
        a.lse_res = <void *>lse.ptr
        with nogil:
            if host:
                err = fdl_cuda_sdpa_forward_host(&a, &bt)
            else:
                err = fdl_cuda_sdpa_forward(&a, &bt, stream)
        check(err, func)
    return (o.arr, lse.arr) if return_lse else o.arr


cdef int _attn_reduce_into(_AttnPlan p, _AttnOp res, _AttnOp full, tuple batch, int64_t inner,
                           void *stream) except -1:
    """res (an operand's own shape) = full (batch + rows x cols, C-contiguous) summed over
    the batch dimensions along which the operand was broadcast."""
    cdef fdl_attn_reduce r
    cdef int err
    memset(&r, 0, sizeof(fdl_attn_reduce))
    r.inner = inner
    nbd = len(batch)
    lead = nbd - (len(res.shape) - 2)
    fst = []
    acc = inner
    for n in reversed(batch):
        fst.append(acc)
        acc *= n
    fst.reverse()
    for d in range(nbd):
        n = batch[d]
        if n == 1:
            continue
        od = d - lead
        if od >= 0 and res.shape[od] == n:
            r.kshape[r.nk] = n
            r.kst[r.nk] = fst[d]
            r.nk += 1
        else:
            r.rshape[r.nr] = n
            r.rst[r.nr] = fst[d]
            r.nr += 1
    with nogil:
        if p.host:
            err = fdl_cuda_attn_reduce_host(p.dtype, <void *>res.ptr, <const void *>full.ptr, &r)
        else:
            err = fdl_cuda_attn_reduce(p.dtype, <void *>res.ptr, <const void *>full.ptr, &r,
                                       stream)
    return check(err, p.func)


cdef object _sdpa_backward(dout, q, k, v, out, lse, attn_mask, is_causal, scale, bint host):
    func = "scaled_dot_product_attention_backward"
    cdef _AttnPlan p = _attn_plan(func, q, k, v, attn_mask, is_causal, scale, host)
    shapes = {"dout": p.batch + (p.L, p.Ev), "out": p.batch + (p.L, p.Ev),
              "lse": p.batch + (p.L,)}
    ops = {}
    for name, x in (("dout", dout), ("out", out), ("lse", lse)):
        o = _attn_float_op(x, func, name, host)
        if o.shape != shapes[name]:
            raise ValueError(f"fastdl.{func}: '{name}' must have shape {shapes[name]} (from q "
                             f"{p.q.shape}, k {p.k.shape}, v {p.v.shape}), got {o.shape}")
        _attn_same_dtype(p.q, o, func, "q", name)
        ops[name] = o
    p.dout, p.out, p.lse = ops["dout"], ops["out"], ops["lse"]
    _attn_finish_plan(p, attn_mask, is_causal, scale)
    if not host:
        require_device(func)
    cdef _AttnOp first = p.dout
    cdef uintptr_t st = 0 if host else first.view.stream
    cdef void *stream = <void *>st
    _attn_prepare(p)
    # results in the operands' shapes, of dout's kind; per-entry scratch where broadcast
    results = []
    fulls = []
    for o, cols in ((p.q, p.E), (p.k, p.E), (p.v, p.Ev)):
        res = _attn_new(p, o.shape, first)
        nd = len(o.shape)
        rows = o.shape[nd - 2]
        if p.nb == _attn_prod(o.shape[:nd - 2]):
            full = res
        else:
            full = _attn_scratch(p, p.batch + (rows, cols), st)
        results.append(res)
        fulls.append(full)
    delta = _attn_scratch(p, (p.nb * p.L,), st)
    cdef fdl_attn_args a
    cdef fdl_attn_batch bt
    cdef int err
    _attn_fill(p, &a, &bt)
    a.lse = <const void *>(<_AttnOp>p.lse).ptr
    a.delta = <void *>(<_AttnOp>delta).ptr
    a.dq = <void *>(<_AttnOp>fulls[0]).ptr
    a.dk = <void *>(<_AttnOp>fulls[1]).ptr
    a.dv = <void *>(<_AttnOp>fulls[2]).ptr
    with nogil:
        if host:
            err = fdl_cuda_sdpa_backward_host(&a, &bt)
        else:
            err = fdl_cuda_sdpa_backward(&a, &bt, stream)
    check(err, func)
    for res, full, o in zip(results, fulls, (p.q, p.k, p.v)):
        if full is not res:
            nd = len(o.shape)
            _attn_reduce_into(p, res, full, p.batch, o.shape[nd - 2] * o.shape[nd - 1], stream)
    return tuple((<_AttnOp>r).arr for r in results)


cdef int64_t _attn_prod(tuple shape):
    cdef int64_t n = 1
    for s in shape:
        n *= s
    return n


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, scale=None, *,
                                 return_lse=False):
    """GPU twin of fastdl.scaled_dot_product_attention: a fused flash-attention kernel (the
    (L, S) scores never exist), results of q's kind on q's stream."""
    return _sdpa_forward(q, k, v, attn_mask, is_causal, scale, bool(return_lse), False)


def scaled_dot_product_attention_backward(dout, q, k, v, out, lse, attn_mask=None,
                                          is_causal=False, scale=None):
    """GPU twin of fastdl.scaled_dot_product_attention_backward: (dq, dk, dv) of dout's kind,
    recomputing the probabilities from lse, deterministic (no atomics)."""
    return _sdpa_backward(dout, q, k, v, out, lse, attn_mask, is_causal, scale, False)


def _host_sdpa_forward(q, k, v, attn_mask=None, is_causal=False, scale=None, *,
                       return_lse=False):
    """Test shim: the GPU forward's block code run on host threads over NumPy arrays."""
    return _sdpa_forward(q, k, v, attn_mask, is_causal, scale, bool(return_lse), True)


def _host_sdpa_backward(dout, q, k, v, out, lse, attn_mask=None, is_causal=False, scale=None):
    """Test shim: the GPU backward (delta, dK/dV, dQ and broadcast-sum kernels) run on host
    threads over NumPy arrays."""
    return _sdpa_backward(dout, q, k, v, out, lse, attn_mask, is_causal, scale, True)


def _sdpa_config(dtype, E, Ev, which):
    """Test/benchmark hook: (D, query tile, key tile, shared bytes) of kernel `which` (0
    forward, 1 backward dK/dV, 2 backward dQ) for these head sizes."""
    cdef int d = 0, bq = 0, bk = 0
    cdef int64_t smem = 0
    code = dtype_code_of(dtype)
    err = fdl_cuda_sdpa_config(code, E, Ev, which, &d, &bq, &bk, &smem)
    if err:
        raise ValueError(f"no attention kernel for dtype {dtype}, E={E}, Ev={Ev}, "
                         f"kernel {which}")
    return d, bq, bk, int(smem)
