# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Optimiser updates, clip_grad_norm_ and the L1/L2 penalties: one engine over many arrays.

A call is a *plan*: every array group (w, g and the state arrays of one parameter, all of one
shape) is cut into runs, 2-D blocks of rows x n elements with one element stride per operand
along a row (axes ordered by w's strides and merged wherever every operand steps across them
uniformly, so any contiguous array is one row). Runs are cut into work items of at most
FDL_OPT_CHUNK elements. The item list depends only on the shapes and strides, never on the
thread count; items run under one OpenMP region over all arrays of the call (static
schedule), serially with no region below PARALLEL_MIN elements. Updates are elementwise and
sums are combined per item in a fixed pairwise order, so every result is bitwise the same for
any thread count.

In-place arrays are updated through their own strides, never through a converted copy. Every
array and hyper-parameter is validated before the first write; arrays written by a call must
not share memory with any other array of the call (a `g` that is `w`, `m` that is `v`, two
entries of a list that are one parameter): such calls raise ValueError.
"""

import math
import operator

import numpy as np
cimport numpy as cnp
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from cython.parallel cimport prange
from libc.string cimport memcpy, memcmp
from libc.math cimport pow, sqrt, isnan

from fastdl._ext._common cimport on_device, gpu_call
from fastdl._ext._common cimport as_float_array, may_overlap, shape_of
from fastdl._ext._softmax cimport thread_count

cdef extern from "fastdl/optim.h" nogil:
    ctypedef struct fdl_opt_hp:
        double lr, wd, mu, b1, b2, bc1, bc2, eps, decay
        int mode, nesterov
    enum:
        FDL_OPT_CHUNK
    void fdl_sgd_f32(float *w, Py_ssize_t sw, const float *g, Py_ssize_t sg, Py_ssize_t n,
                     const fdl_opt_hp *h)
    void fdl_sgd_f64(double *w, Py_ssize_t sw, const double *g, Py_ssize_t sg, Py_ssize_t n,
                     const fdl_opt_hp *h)
    void fdl_sgdm_f32(float *w, Py_ssize_t sw, const float *g, Py_ssize_t sg, float *b,
                      Py_ssize_t sb, Py_ssize_t n, const fdl_opt_hp *h)
    void fdl_sgdm_f64(double *w, Py_ssize_t sw, const double *g, Py_ssize_t sg, double *b,
                      Py_ssize_t sb, Py_ssize_t n, const fdl_opt_hp *h)
    void fdl_momentum_f32(float *w, Py_ssize_t sw, const float *g, Py_ssize_t sg, float *v,
                          Py_ssize_t sv, Py_ssize_t n, const fdl_opt_hp *h)
    void fdl_momentum_f64(double *w, Py_ssize_t sw, const double *g, Py_ssize_t sg, double *v,
                          Py_ssize_t sv, Py_ssize_t n, const fdl_opt_hp *h)
    void fdl_adam_f32(float *w, Py_ssize_t sw, const float *g, Py_ssize_t sg, float *m,
                      Py_ssize_t sm, float *v, Py_ssize_t sv, Py_ssize_t n, const fdl_opt_hp *h)
    void fdl_adam_f64(double *w, Py_ssize_t sw, const double *g, Py_ssize_t sg, double *m,
                      Py_ssize_t sm, double *v, Py_ssize_t sv, Py_ssize_t n,
                      const fdl_opt_hp *h)
    void fdl_scale_f32(float *out, Py_ssize_t so, const float *x, Py_ssize_t sx, Py_ssize_t n,
                       double c)
    void fdl_scale_f64(double *out, Py_ssize_t so, const double *x, Py_ssize_t sx,
                       Py_ssize_t n, double c)
    void fdl_l1grad_f32(float *out, Py_ssize_t so, const float *x, Py_ssize_t sx,
                        Py_ssize_t n, double lam)
    void fdl_l1grad_f64(double *out, Py_ssize_t so, const double *x, Py_ssize_t sx,
                        Py_ssize_t n, double lam)
    double fdl_sumsq_f32(const float *x, Py_ssize_t sx, Py_ssize_t n)
    double fdl_sumsq_f64(const double *x, Py_ssize_t sx, Py_ssize_t n)
    double fdl_sumabs_f32(const float *x, Py_ssize_t sx, Py_ssize_t n)
    double fdl_sumabs_f64(const double *x, Py_ssize_t sx, Py_ssize_t n)

cdef extern from "fastdl/softmax.h" nogil:
    double fdl_pairwise_sum(const double *v, Py_ssize_t n)

cnp.import_array()

DEF MAXOPS = 4

cdef enum Op:
    OP_SGD = 0        # w, g
    OP_SGDM = 1       # w, g, buf
    OP_MOMENTUM = 2   # w, g, v
    OP_ADAM = 3       # w, g, m, v
    OP_SCALE = 4      # x (in place): x = c * x
    OP_SUMSQ = 5      # x -> sum(x^2)
    OP_SUMABS = 6     # x -> sum(|x|)
    OP_L2GRAD = 7     # out, x: out = c * x
    OP_L1GRAD = 8     # out, x: out = c * sign(x)

# operands per op: state arrays follow w and g
cdef int _NOPS[9]
_NOPS[:] = [2, 3, 3, 4, 1, 1, 1, 2, 2]

# Below this many elements a call runs with no OpenMP region; below GIL_MIN it keeps the GIL
# (releasing it costs more than the work).
cdef Py_ssize_t GIL_MIN = 4096


cdef struct Run:
    Py_ssize_t arr                 # array group: row of the base table
    Py_ssize_t off[MAXOPS]         # bytes from each operand's data pointer to the block
    Py_ssize_t st[MAXOPS]          # element stride along a row
    Py_ssize_t rst[MAXOPS]         # byte stride between rows
    Py_ssize_t n, rows

cdef struct Item:
    Py_ssize_t run, r0, nr, c0, nc

cdef struct PlanC:
    int nops, f32
    char **base                    # narr * nops data pointers
    Run *runs
    Item *items
    Py_ssize_t narr, nruns, nitems, size
    Py_ssize_t cap_runs, cap_items


cdef class Plan:
    """Runs and work items of one set of array groups (see the module docstring)."""
    cdef PlanC c

    def __cinit__(self):
        self.c.base = NULL
        self.c.runs = NULL
        self.c.items = NULL
        self.c.narr = self.c.nruns = self.c.nitems = self.c.size = 0
        self.c.cap_runs = self.c.cap_items = 0

    def __dealloc__(self):
        PyMem_Free(self.c.base)
        PyMem_Free(self.c.runs)
        PyMem_Free(self.c.items)


cdef int _grow(PlanC *p, bint runs) except -1:
    cdef void *q
    if runs:
        p.cap_runs = 2 * p.cap_runs + 8
        q = PyMem_Realloc(p.runs, p.cap_runs * sizeof(Run))
        if q == NULL:
            raise MemoryError()
        p.runs = <Run *>q
    else:
        p.cap_items = 2 * p.cap_items + 16
        q = PyMem_Realloc(p.items, p.cap_items * sizeof(Item))
        if q == NULL:
            raise MemoryError()
        p.items = <Item *>q
    return 0


cdef int _add_items(PlanC *p, Py_ssize_t r) except -1:
    cdef Run *run = &p.runs[r]
    cdef Py_ssize_t n = run.n, rows = run.rows, row, c0, r0, rpc
    cdef Item *it
    if n >= FDL_OPT_CHUNK:
        for row in range(rows):
            c0 = 0
            while c0 < n:
                if p.nitems == p.cap_items:
                    _grow(p, False)
                it = &p.items[p.nitems]
                it.run = r; it.r0 = row; it.nr = 1; it.c0 = c0
                it.nc = n - c0 if n - c0 < FDL_OPT_CHUNK else FDL_OPT_CHUNK
                p.nitems += 1
                c0 += FDL_OPT_CHUNK
    else:
        rpc = FDL_OPT_CHUNK // n
        r0 = 0
        while r0 < rows:
            if p.nitems == p.cap_items:
                _grow(p, False)
            it = &p.items[p.nitems]
            it.run = r; it.r0 = r0; it.c0 = 0; it.nc = n
            it.nr = rows - r0 if rows - r0 < rpc else rpc
            p.nitems += 1
            r0 += rpc
    return 0


cdef int _add_group(PlanC *p, Py_ssize_t arr, list group) except -1:
    """Append the runs and items of one array group (operands of one shape)."""
    cdef cnp.ndarray w = <cnp.ndarray>group[0], o
    cdef int nops = p.nops, k, nd = cnp.PyArray_NDIM(w), q = 0, a, b, j
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(w)
    cdef Py_ssize_t dim[32]
    cdef Py_ssize_t st[32][MAXOPS]
    cdef Py_ssize_t tdim, idx[32], size = cnp.PyArray_SIZE(w)
    cdef Py_ssize_t tst[MAXOPS]
    cdef bint merge
    cdef Run *run
    if size == 0:
        return 0
    p.size += size
    # axes of extent > 1, then ordered by decreasing |stride| of w (insertion sort)
    for a in range(nd):
        if cnp.PyArray_DIMS(w)[a] == 1:
            continue
        dim[q] = cnp.PyArray_DIMS(w)[a]
        for k in range(nops):
            o = <cnp.ndarray>group[k]
            st[q][k] = cnp.PyArray_STRIDES(o)[a]
        q += 1
    for a in range(1, q):
        b = a
        while b > 0 and abs(st[b][0]) > abs(st[b - 1][0]):
            tdim = dim[b]; dim[b] = dim[b - 1]; dim[b - 1] = tdim
            for k in range(nops):
                tst[k] = st[b][k]; st[b][k] = st[b - 1][k]; st[b - 1][k] = tst[k]
            b -= 1
    # merge an outer axis into the next inner one where every operand allows it
    j = 0
    for a in range(1, q):
        merge = True
        for k in range(nops):
            if st[j][k] != st[a][k] * dim[a]:
                merge = False
        if merge:
            dim[j] = dim[j] * dim[a]
            for k in range(nops):
                st[j][k] = st[a][k]
        else:
            j += 1
            dim[j] = dim[a]
            for k in range(nops):
                st[j][k] = st[a][k]
    q = j + 1 if q > 0 else 0
    # the outer axes (all but the last two) are enumerated, one run per index
    for a in range(q):
        idx[a] = 0
    while True:
        if p.nruns == p.cap_runs:
            _grow(p, True)
        run = &p.runs[p.nruns]
        run.arr = arr
        run.n = dim[q - 1] if q >= 1 else 1
        run.rows = dim[q - 2] if q >= 2 else 1
        for k in range(nops):
            run.off[k] = 0
            for a in range(q - 2):
                run.off[k] += idx[a] * st[a][k]
            run.st[k] = st[q - 1][k] // isz if q >= 1 else 1
            run.rst[k] = st[q - 2][k] if q >= 2 else 0
        p.nruns += 1
        _add_items(p, p.nruns - 1)
        a = q - 3
        while a >= 0:
            idx[a] += 1
            if idx[a] < dim[a]:
                break
            idx[a] = 0
            a -= 1
        if a < 0:
            break
    return 0


cdef Plan _new_plan(int nops, bint f32, Py_ssize_t narr):
    cdef Plan plan = Plan()
    plan.c.nops = nops
    plan.c.f32 = f32
    plan.c.narr = narr
    plan.c.base = <char **>PyMem_Malloc(max(narr, 1) * nops * sizeof(char *))
    if plan.c.base == NULL:
        raise MemoryError()
    return plan


cdef inline void _set_bases(PlanC *p, Py_ssize_t arr, list group):
    cdef int k
    for k in range(p.nops):
        p.base[arr * p.nops + k] = <char *>cnp.PyArray_DATA(<cnp.ndarray>group[k])


# --------------------------------------------------------------------------------------
# execution

cdef double _run_item(const PlanC *p, int op, Py_ssize_t i, const fdl_opt_hp *h,
                      double c) noexcept nogil:
    cdef const Item *it = &p.items[i]
    cdef const Run *run = &p.runs[it.run]
    cdef char *ptr[MAXOPS]
    cdef char **base = p.base + run.arr * p.nops
    cdef Py_ssize_t isz = 4 if p.f32 else 8, r, n = it.nc
    cdef int k
    cdef double s = 0.0
    for r in range(it.r0, it.r0 + it.nr):
        for k in range(p.nops):
            ptr[k] = base[k] + run.off[k] + r * run.rst[k] + it.c0 * run.st[k] * isz
        if p.f32:
            if op == OP_ADAM:
                fdl_adam_f32(<float *>ptr[0], run.st[0], <float *>ptr[1], run.st[1],
                             <float *>ptr[2], run.st[2], <float *>ptr[3], run.st[3], n, h)
            elif op == OP_SGD:
                fdl_sgd_f32(<float *>ptr[0], run.st[0], <float *>ptr[1], run.st[1], n, h)
            elif op == OP_SGDM:
                fdl_sgdm_f32(<float *>ptr[0], run.st[0], <float *>ptr[1], run.st[1],
                             <float *>ptr[2], run.st[2], n, h)
            elif op == OP_MOMENTUM:
                fdl_momentum_f32(<float *>ptr[0], run.st[0], <float *>ptr[1], run.st[1],
                                 <float *>ptr[2], run.st[2], n, h)
            elif op == OP_SCALE:
                fdl_scale_f32(<float *>ptr[0], run.st[0], <float *>ptr[0], run.st[0], n, c)
            elif op == OP_SUMSQ:
                s += fdl_sumsq_f32(<float *>ptr[0], run.st[0], n)
            elif op == OP_SUMABS:
                s += fdl_sumabs_f32(<float *>ptr[0], run.st[0], n)
            elif op == OP_L2GRAD:
                fdl_scale_f32(<float *>ptr[0], run.st[0], <float *>ptr[1], run.st[1], n, c)
            else:
                fdl_l1grad_f32(<float *>ptr[0], run.st[0], <float *>ptr[1], run.st[1], n, c)
        else:
            if op == OP_ADAM:
                fdl_adam_f64(<double *>ptr[0], run.st[0], <double *>ptr[1], run.st[1],
                             <double *>ptr[2], run.st[2], <double *>ptr[3], run.st[3], n, h)
            elif op == OP_SGD:
                fdl_sgd_f64(<double *>ptr[0], run.st[0], <double *>ptr[1], run.st[1], n, h)
            elif op == OP_SGDM:
                fdl_sgdm_f64(<double *>ptr[0], run.st[0], <double *>ptr[1], run.st[1],
                             <double *>ptr[2], run.st[2], n, h)
            elif op == OP_MOMENTUM:
                fdl_momentum_f64(<double *>ptr[0], run.st[0], <double *>ptr[1], run.st[1],
                                 <double *>ptr[2], run.st[2], n, h)
            elif op == OP_SCALE:
                fdl_scale_f64(<double *>ptr[0], run.st[0], <double *>ptr[0], run.st[0], n, c)
            elif op == OP_SUMSQ:
                s += fdl_sumsq_f64(<double *>ptr[0], run.st[0], n)
            elif op == OP_SUMABS:
                s += fdl_sumabs_f64(<double *>ptr[0], run.st[0], n)
            elif op == OP_L2GRAD:
                fdl_scale_f64(<double *>ptr[0], run.st[0], <double *>ptr[1], run.st[1], n, c)
            else:
                fdl_l1grad_f64(<double *>ptr[0], run.st[0], <double *>ptr[1], run.st[1], n, c)
    return s


cdef double _run(Plan plan, int op, const fdl_opt_hp *h, double c) except? -1.0:
    """Run `op` over the plan; a sum op returns the total (pairwise over items)."""
    cdef PlanC *p = &plan.c
    cdef bint is_sum = op == OP_SUMSQ or op == OP_SUMABS
    cdef double *partials = NULL
    cdef double total = 0.0
    cdef int nth = thread_count(p.size, p.nitems)
    if is_sum:
        partials = <double *>PyMem_Malloc(max(p.nitems, 1) * sizeof(double))
        if partials == NULL:
            raise MemoryError()
    try:
        if p.size >= GIL_MIN:
            with nogil:
                _execute_n(p, op, h, c, partials, nth)
                if is_sum:
                    total = fdl_pairwise_sum(partials, p.nitems)
        else:
            _execute_n(p, op, h, c, partials, nth)
            if is_sum:
                total = fdl_pairwise_sum(partials, p.nitems)
    finally:
        PyMem_Free(partials)
    return total


cdef void _execute_n(const PlanC *p, int op, const fdl_opt_hp *h, double c,
                     double *partials, int nth) noexcept nogil:
    cdef Py_ssize_t i, n = p.nitems
    cdef double s
    if nth == 1:
        for i in range(n):
            s = _run_item(p, op, i, h, c)
            if partials != NULL:
                partials[i] = s
    else:
        for i in prange(n, schedule='static', num_threads=nth):
            s = _run_item(p, op, i, h, c)
            if partials != NULL:
                partials[i] = s


# --------------------------------------------------------------------------------------
# validation (everything below runs before the first write)

cdef cnp.ndarray _inplace(object x, str func, str name):
    """An array updated in place: a writeable, aligned float32/float64 ndarray, as it is."""
    cdef cnp.ndarray arr
    cdef int t
    if not isinstance(x, cnp.ndarray):
        raise TypeError(f"fastdl.{func}: {name} is updated in place and must be a float32 or "
                        f"float64 numpy.ndarray, got {type(x).__name__}")
    arr = <cnp.ndarray>x
    t = cnp.PyArray_TYPE(arr)
    if (t != cnp.NPY_FLOAT and t != cnp.NPY_DOUBLE) or not cnp.PyArray_ISNOTSWAPPED(arr):
        raise TypeError(f"fastdl.{func}: {name} has dtype {arr.dtype}; arrays updated in place "
                        "must be float32 or float64 in native byte order (a converted copy "
                        "would lose the update)")
    if not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"fastdl.{func}: {name} is read-only; it is updated in place")
    if not cnp.PyArray_ISALIGNED(arr):
        raise ValueError(f"fastdl.{func}: {name} is not aligned to its dtype; it is updated in "
                         "place, so it cannot be copied")
    return arr


cdef cnp.ndarray _like(object x, cnp.ndarray w, str func, str name, str wname, bint inplace):
    """An operand of w's dtype and shape: in place (state) or read (gradient, copied only if
    it must be converted or aligned)."""
    cdef cnp.ndarray arr = _inplace(x, func, name) if inplace else as_float_array(x, func, name)
    if cnp.PyArray_TYPE(arr) != cnp.PyArray_TYPE(w):
        raise TypeError(f"fastdl.{func}: {name} has dtype {arr.dtype} and {wname} has dtype "
                        f"{w.dtype}; they must be equal")
    if shape_of(arr) != shape_of(w):
        raise ValueError(f"fastdl.{func}: {name} has shape {shape_of(arr)} and {wname} has "
                         f"shape {shape_of(w)}; they must be equal")
    if not cnp.PyArray_ISALIGNED(arr):
        arr = np.array(arr, copy=True)
    return arr


cdef double _number(object x, str func, str name) except? -1.0:
    cdef double v
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"fastdl.{func}: {name} must be a real number, got {type(x).__name__}")
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"fastdl.{func}: {name} must be a real number, got "
                        f"{type(x).__name__}") from None
    if isnan(v):
        raise ValueError(f"fastdl.{func}: {name} is NaN")
    return v


cdef double _nonneg(object x, str func, str name) except? -1.0:
    cdef double v = _number(x, func, name)
    if v < 0:
        raise ValueError(f"fastdl.{func}: {name} must be >= 0, got {v!r}")
    return v


cdef double _beta(object x, str func, str name) except? -1.0:
    cdef double v = _number(x, func, name)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"fastdl.{func}: {name} must be in [0, 1), got {v!r}")
    return v


cdef double _positive(object x, str func, str name) except? -1.0:
    cdef double v = _number(x, func, name)
    if not v > 0:
        raise ValueError(f"fastdl.{func}: {name} must be > 0, got {v!r}")
    return v


cdef long long _step_count(object t, str func) except? -1:
    cdef long long v
    if isinstance(t, (bool, np.bool_)):
        raise TypeError(f"fastdl.{func}: t must be an int, got {type(t).__name__}")
    try:
        v = operator.index(t)
    except TypeError:
        raise TypeError(f"fastdl.{func}: t must be an int (the step count, from 1), got "
                        f"{type(t).__name__}") from None
    if v < 1:
        raise ValueError(f"fastdl.{func}: t must be >= 1 (the step count), got {v}")
    return v


def check_hyper(str func, lr=None, beta=None, beta_name="beta", betas=None, eps=None,
                weight_decay=None, momentum=None):
    """Validate optimiser hyper-parameters for the classes (API.md, General rules)."""
    if lr is not None:
        _nonneg(lr, func, "lr")
    if beta is not None:
        _beta(beta, func, beta_name)
    if betas is not None:
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"fastdl.{func}: betas must be a pair (beta1, beta2), got "
                             f"{betas!r}")
        _beta(betas[0], func, "betas[0]")
        _beta(betas[1], func, "betas[1]")
    if eps is not None:
        _positive(eps, func, "eps")
    if weight_decay is not None:
        _nonneg(weight_decay, func, "weight_decay")
    if momentum is not None:
        _beta(momentum, func, "momentum")


cdef inline void _bounds(cnp.ndarray a, Py_ssize_t *lo, Py_ssize_t *hi) noexcept:
    # byte range [lo, hi) of a (empty: lo == hi == 0); the interval form of _common.may_overlap
    cdef int d
    cdef Py_ssize_t l = 0, h = 0, step
    cdef Py_ssize_t base = <Py_ssize_t>cnp.PyArray_DATA(a)
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIMS(a)[d] == 0:
            lo[0] = hi[0] = 0
            return
        step = (cnp.PyArray_DIMS(a)[d] - 1) * cnp.PyArray_STRIDES(a)[d]
        if step < 0:
            l += step
        else:
            h += step
    lo[0] = base + l
    hi[0] = base + h + cnp.PyArray_ITEMSIZE(a)


cdef bint _shares(cnp.ndarray a, cnp.ndarray b):
    """Exact test behind the conservative extent test (interleaved views do not share)."""
    if not may_overlap(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=100000))
    except np.exceptions.TooHardError:
        return True


cdef int _check_disjoint(list arrays, list names, list written, str func) except -1:
    """Every written array shares no memory with any other array of the call."""
    cdef Py_ssize_t n = len(arrays), i, j, lo, hi
    cdef list order, active, iv
    if n <= 8:
        for i in range(n):
            for j in range(i + 1, n):
                if (written[i] or written[j]) and _shares(arrays[i], arrays[j]):
                    _overlap_error(names[i], names[j], func)
        return 0
    iv = []
    for i in range(n):
        _bounds(arrays[i], &lo, &hi)
        if hi > lo:
            iv.append((lo, hi, i))
    iv.sort()
    active = []
    for lo, hi, i in iv:
        active = [x for x in active if x[0] > lo]
        for x in active:
            j = x[1]
            if (written[i] or written[j]) and _shares(arrays[i], arrays[j]):
                _overlap_error(names[j], names[i], func)
        active.append((hi, i))
    return 0


cdef _overlap_error(str a, str b, str func):
    raise ValueError(f"fastdl.{func}: {a} and {b} share memory; an array updated in place must "
                     "not overlap any other argument (pass distinct arrays)")


cdef list _as_list(object x, bint multi, Py_ssize_t n, str func, str name):
    if multi:
        if not isinstance(x, (list, tuple)):
            raise TypeError(f"fastdl.{func}: w is a list, so {name} must be a list of arrays "
                            f"too, got {type(x).__name__}")
        if len(x) != n:
            raise ValueError(f"fastdl.{func}: w has {n} arrays and {name} has {len(x)}; they "
                             "must be equal")
        return list(x)
    if isinstance(x, (list, tuple)) and name != "g":
        raise TypeError(f"fastdl.{func}: w is an array, so {name} must be an array, not a "
                        f"{type(x).__name__}")
    return [x]


cdef list _groups(str func, tuple names, tuple args):
    """Validate (w, g, state...) or lists of them; returns [[w, g, state...], ...]."""
    cdef bint multi = isinstance(args[0], (list, tuple))
    cdef Py_ssize_t n = len(args[0]) if multi else 1, i, k, nops = len(names)
    cdef list cols = [list(args[0]) if multi else [args[0]]]
    cdef list groups = [], flat = [], labels = [], written = []
    cdef cnp.ndarray w
    for k in range(1, nops):
        cols.append(_as_list(args[k], multi, n, func, names[k]))
    for i in range(n):
        sfx = f"[{i}]" if multi else ""
        w = _inplace(cols[0][i], func, "w" + sfx)
        grp = [w, _like(cols[1][i], w, func, "g" + sfx, "w" + sfx, False)]
        for k in range(2, nops):
            grp.append(_like(cols[k][i], w, func, names[k] + sfx, "w" + sfx, True))
        groups.append(grp)
        for k in range(nops):
            flat.append(grp[k])
            labels.append(names[k] + sfx)
            written.append(k != 1)
    _check_disjoint(flat, labels, written, func)
    return groups


cdef list _plans(list groups, int nops):
    """One plan per dtype present (float32 first)."""
    cdef list out = []
    cdef Plan plan
    cdef Py_ssize_t arr
    cdef int want
    for want in (cnp.NPY_FLOAT, cnp.NPY_DOUBLE):
        sel = [g for g in groups if cnp.PyArray_TYPE(<cnp.ndarray>g[0]) == want]
        if not sel:
            continue
        plan = _new_plan(nops, want == cnp.NPY_FLOAT, len(sel))
        for arr in range(len(sel)):
            _set_bases(&plan.c, arr, sel[arr])
            _add_group(&plan.c, arr, sel[arr])
        out.append(plan)
    return out


cdef void _hp_init(fdl_opt_hp *h) noexcept:
    h.lr = h.wd = h.mu = h.b1 = h.b2 = h.eps = 0.0
    h.bc1 = h.bc2 = h.decay = 1.0
    h.mode = 0
    h.nesterov = 0


cdef void _adam_hp(fdl_opt_hp *h, double lr, double b1, double b2, double eps, double wd,
                   bint decoupled, long long t) noexcept:
    _hp_init(h)
    h.lr = lr; h.b1 = b1; h.b2 = b2; h.eps = eps; h.wd = wd
    h.bc1 = 1.0 - pow(b1, <double>t)
    h.bc2 = 1.0 - pow(b2, <double>t)
    h.decay = 1.0 - lr * wd
    h.mode = (2 if decoupled else 1) if wd != 0.0 else 0


cdef _apply(list groups, int op, const fdl_opt_hp *h):
    cdef Plan plan
    for plan in _plans(groups, _NOPS[op]):
        _run(plan, op, h, 0.0)


# --------------------------------------------------------------------------------------
# functional updates

def sgd_(w, g, lr, weight_decay=0.0, *, momentum=0.0, buf=None):
    """w = w - lr * (g + weight_decay * w), in place; with momentum > 0 (PyTorch's SGD,
    dampening 0): buf = momentum * buf + d; w = w - lr * buf, buf updated in place.

    w, g (and buf) may be arrays or equal-length lists of arrays (one multi-tensor pass).
    """
    if on_device(w[0] if isinstance(w, (list, tuple)) and len(w) > 0 else w):
        return gpu_call("sgd_", (), {"w": w, "g": g, "lr": lr, "weight_decay": weight_decay, "momentum": momentum, "buf": buf})
    cdef fdl_opt_hp h
    _hp_init(&h)
    h.lr = _nonneg(lr, "sgd_", "lr")
    h.wd = _nonneg(weight_decay, "sgd_", "weight_decay")
    h.mu = _beta(momentum, "sgd_", "momentum")
    h.mode = 1 if h.wd != 0.0 else 0
    if buf is None:
        if h.mu != 0.0:
            raise ValueError("fastdl.sgd_: momentum > 0 needs buf= (the momentum buffer)")
        _apply(_groups("sgd_", ("w", "g"), (w, g)), OP_SGD, &h)
    else:
        _apply(_groups("sgd_", ("w", "g", "buf"), (w, g, buf)), OP_SGDM, &h)


def momentum_(w, g, v, lr, beta=0.9, weight_decay=0.0):
    """Cheat sheet: v = beta * v - lr * g; w = w + v, in place (g + weight_decay * w for g
    when weight_decay > 0). Arrays or equal-length lists of arrays."""
    if on_device(w[0] if isinstance(w, (list, tuple)) and len(w) > 0 else w):
        return gpu_call("momentum_", (), {"w": w, "g": g, "v": v, "lr": lr, "beta": beta, "weight_decay": weight_decay})
    cdef fdl_opt_hp h
    _hp_init(&h)
    h.lr = _nonneg(lr, "momentum_", "lr")
    h.mu = _beta(beta, "momentum_", "beta")
    h.wd = _nonneg(weight_decay, "momentum_", "weight_decay")
    h.mode = 1 if h.wd != 0.0 else 0
    _apply(_groups("momentum_", ("w", "g", "v"), (w, g, v)), OP_MOMENTUM, &h)


def adam_(w, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
          decoupled=False):
    """One Adam step in place (cheat sheet; bias corrections 1 - beta**t in double).

    weight_decay: added to the gradient as L2 (torch.optim.Adam), or with decoupled=True
    (AdamW) w is first scaled by 1 - lr * weight_decay. Arrays or equal-length lists.
    """
    if on_device(w[0] if isinstance(w, (list, tuple)) and len(w) > 0 else w):
        return gpu_call("adam_", (), {"w": w, "g": g, "m": m, "v": v, "t": t, "lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay, "decoupled": decoupled})
    cdef fdl_opt_hp h
    cdef double vlr = _nonneg(lr, "adam_", "lr")
    cdef double b1 = _beta(beta1, "adam_", "beta1"), b2 = _beta(beta2, "adam_", "beta2")
    cdef double e = _positive(eps, "adam_", "eps")
    cdef double wd = _nonneg(weight_decay, "adam_", "weight_decay")
    cdef long long tt = _step_count(t, "adam_")
    _adam_hp(&h, vlr, b1, b2, e, wd, bool(decoupled), tt)
    _apply(_groups("adam_", ("w", "g", "m", "v"), (w, g, m, v)), OP_ADAM, &h)


# --------------------------------------------------------------------------------------
# clip_grad_norm_ and the penalties

cdef list _array_list(object x, str func, str name, bint inplace):
    cdef list xs
    cdef Py_ssize_t i
    multi = isinstance(x, (list, tuple))
    xs = list(x) if multi else [x]
    for i in range(len(xs)):
        label = f"{name}[{i}]" if multi else name
        xs[i] = _inplace(xs[i], func, label) if inplace else as_float_array(xs[i], func, label)
        if not inplace and not cnp.PyArray_ISALIGNED(<cnp.ndarray>xs[i]):
            xs[i] = np.array(xs[i], copy=True)
    return xs


cdef double _total(list arrays, int op) except? -1.0:
    """sum of x^2 or |x| over all arrays, float32 arrays first, each plan pairwise."""
    cdef double total = 0.0
    cdef Plan plan
    for plan in _plans([[a] for a in arrays], 1):
        total += _run(plan, op, NULL, 0.0)
    return total


def clip_grad_norm_(grads, max_norm):
    """Scale grads in place so that their total L2 norm is at most max_norm (PyTorch's rule:
    coef = max_norm / (norm + 1e-6), applied when coef < 1, or NaN when the norm is NaN);
    returns the total norm before clipping as a Python float (sum of squares in double)."""
    cdef double mn = _nonneg(max_norm, "clip_grad_norm_", "max_norm")
    cdef list gs = _array_list(grads, "clip_grad_norm_", "grads", True)
    cdef double norm, coef
    cdef Plan plan
    _check_disjoint(gs, [f"grads[{i}]" for i in range(len(gs))], [True] * len(gs),
                    "clip_grad_norm_")
    norm = sqrt(_total(gs, OP_SUMSQ))
    coef = mn / (norm + 1e-6)
    if coef < 1.0 or isnan(coef):
        for plan in _plans([[a] for a in gs], 1):
            _run(plan, OP_SCALE, NULL, coef)
    return norm


cdef object _penalty(object weights, object lam, int op, str func):
    cdef double c = _nonneg(lam, func, "lam")
    cdef list ws = _array_list(weights, func, "weights", False)
    cdef bint f32 = len(ws) > 0 and all(cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_FLOAT
                                        for a in ws)
    cdef double total = c * _total(ws, op)
    return np.float32(total) if f32 else np.float64(total)


def l1_penalty(weights, lam):
    """lam * sum(|w|) over an array or a list of arrays (cheat sheet), summed in double."""
    return _penalty(weights, lam, OP_SUMABS, "l1_penalty")


def l2_penalty(weights, lam):
    """lam * sum(w**2) over an array or a list of arrays (cheat sheet, no 1/2)."""
    return _penalty(weights, lam, OP_SUMSQ, "l2_penalty")


cdef object _penalty_grad(object weights, object lam, int op, double factor, str func):
    cdef double c = factor * _nonneg(lam, func, "lam")
    cdef list ws = _array_list(weights, func, "weights", False)
    cdef list outs = [np.empty_like(a) for a in ws]
    cdef Plan plan
    for plan in _plans([[o, a] for o, a in zip(outs, ws)], 2):
        _run(plan, op, NULL, c)
    return outs if isinstance(weights, (list, tuple)) else outs[0]


def l1_penalty_grad(weights, lam):
    """lam * sign(w) (0 at 0, NaN at NaN); a list for a list."""
    return _penalty_grad(weights, lam, OP_L1GRAD, 1.0, "l1_penalty_grad")


def l2_penalty_grad(weights, lam):
    """2 * lam * w; a list for a list."""
    return _penalty_grad(weights, lam, OP_L2GRAD, 2.0, "l2_penalty_grad")


# --------------------------------------------------------------------------------------
# the optimiser classes' engine: parameters and state fixed at construction, plans cached

cdef class _Optimizer:
    """Base of fastdl.optim's SGD, Momentum, Adam, AdamW (see optim.py).

    Parameters and their state arrays never move, so the plans (runs, items, data pointers)
    are built once, at the first step, with the gradients' strides; a later step checks each
    gradient (type, dtype, shape, strides, no overlap with a parameter) and only swaps the
    gradient's data pointer into the plan. A gradient with other strides rebuilds the plans.
    """
    cdef readonly tuple params
    cdef readonly list _state          # _state[k][i]: state array k of parameter i
    cdef int _op, _nstate
    cdef Py_ssize_t _n
    cdef public double lr, wd, mu, b1, b2, eps
    cdef public bint decoupled
    cdef public long long t
    cdef list _plans                   # Plan per dtype present
    cdef Py_ssize_t *_where            # per parameter: plan index, array index in it
    cdef Py_ssize_t *_gstrides         # cached gradient strides, 32 per parameter
    cdef Py_ssize_t *_lo
    cdef Py_ssize_t *_hi               # parameter byte ranges, sorted (disjoint)
    cdef Py_ssize_t *_ord

    def __cinit__(self):
        self._where = self._gstrides = self._lo = self._hi = self._ord = NULL

    def __dealloc__(self):
        PyMem_Free(self._where)
        PyMem_Free(self._gstrides)
        PyMem_Free(self._lo)
        PyMem_Free(self._hi)
        PyMem_Free(self._ord)

    def _setup(self, params, int op, str func):
        cdef Py_ssize_t i, k
        cdef cnp.ndarray p
        if isinstance(params, cnp.ndarray):
            params = [params]
        try:
            params = list(params)
        except TypeError:
            raise TypeError(f"fastdl.optim.{func}: params must be a list of arrays, got "
                            f"{type(params).__name__}") from None
        ps = tuple(_inplace(params[i], f"optim.{func}", f"params[{i}]")
                   for i in range(len(params)))
        _check_disjoint(list(ps), [f"params[{i}]" for i in range(len(ps))],
                        [True] * len(ps), f"optim.{func}")
        self.params = ps
        self._n = len(ps)
        self._op = op
        self._nstate = _NOPS[op] - 2
        self._state = [[np.zeros_like(p) for p in ps] for k in range(self._nstate)]
        self._plans = None
        self.t = 0
        self._where = <Py_ssize_t *>PyMem_Malloc(max(self._n, 1) * 2 * sizeof(Py_ssize_t))
        self._gstrides = <Py_ssize_t *>PyMem_Malloc(max(self._n, 1) * 32 * sizeof(Py_ssize_t))
        self._lo = <Py_ssize_t *>PyMem_Malloc(max(self._n, 1) * sizeof(Py_ssize_t))
        self._hi = <Py_ssize_t *>PyMem_Malloc(max(self._n, 1) * sizeof(Py_ssize_t))
        self._ord = <Py_ssize_t *>PyMem_Malloc(max(self._n, 1) * sizeof(Py_ssize_t))
        if (self._where == NULL or self._gstrides == NULL or self._lo == NULL
                or self._hi == NULL or self._ord == NULL):
            raise MemoryError()
        iv = []
        for i in range(self._n):
            p = <cnp.ndarray>ps[i]
            _bounds(p, &self._lo[i], &self._hi[i])
            iv.append((self._lo[i], self._hi[i], i))
        iv.sort()
        for k in range(len(iv)):
            self._lo[k] = iv[k][0]
            self._hi[k] = iv[k][1]
            self._ord[k] = iv[k][2]

    cdef int _check_grad_overlap(self, cnp.ndarray g, Py_ssize_t i) except -1:
        cdef Py_ssize_t lo, hi, a = 0, b = self._n, mid, j
        _bounds(g, &lo, &hi)
        if hi <= lo:
            return 0
        # first parameter whose range ends after lo (ranges sorted and disjoint)
        while a < b:
            mid = (a + b) // 2
            if self._hi[mid] <= lo:
                a = mid + 1
            else:
                b = mid
        while a < self._n and self._lo[a] < hi:
            j = self._ord[a]
            if self._hi[a] > self._lo[a] and _shares(g, <cnp.ndarray>self.params[j]):
                _overlap_error(f"grads[{i}]", f"params[{j}]", "optim.step")
            a += 1
        return 0

    cdef _build(self, list grads):
        cdef Py_ssize_t i, k, pi
        cdef cnp.ndarray g
        groups = [[self.params[i], grads[i]] + [s[i] for s in self._state]
                  for i in range(self._n)]
        plans = []
        for want in (cnp.NPY_FLOAT, cnp.NPY_DOUBLE):
            sel = [i for i in range(self._n)
                   if cnp.PyArray_TYPE(<cnp.ndarray>self.params[i]) == want]
            if not sel:
                continue
            pi = len(plans)
            plans.extend(_plans([groups[i] for i in sel], _NOPS[self._op]))
            for k in range(len(sel)):
                self._where[2 * sel[k]] = pi
                self._where[2 * sel[k] + 1] = k
        for i in range(self._n):
            g = <cnp.ndarray>grads[i]
            for k in range(cnp.PyArray_NDIM(g)):
                self._gstrides[32 * i + k] = cnp.PyArray_STRIDES(g)[k]
        self._plans = plans

    def step(self, grads):
        """One update of every parameter with its gradient (validated first)."""
        cdef Py_ssize_t i, n = self._n
        cdef cnp.ndarray g, w
        cdef bint rebuild = self._plans is None
        cdef list gl
        cdef Plan plan
        cdef fdl_opt_hp h
        cdef int nd
        if isinstance(grads, cnp.ndarray):
            grads = (grads,)
        if not isinstance(grads, (list, tuple)):
            raise TypeError(f"fastdl.optim.step: grads must be a list of arrays, got "
                            f"{type(grads).__name__}")
        if len(grads) != n:
            raise ValueError(f"fastdl.optim.step: {len(grads)} gradients for {n} parameters")
        gl = list(grads)
        for i in range(n):
            w = <cnp.ndarray>self.params[i]
            x = gl[i]
            if (type(x) is not cnp.ndarray
                    or cnp.PyArray_TYPE(<cnp.ndarray>x) != cnp.PyArray_TYPE(w)
                    or not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>x)
                    or not cnp.PyArray_ISALIGNED(<cnp.ndarray>x)):
                x = _like(x, w, "optim.step", f"grads[{i}]", f"params[{i}]", False)
                gl[i] = x
            g = <cnp.ndarray>x
            nd = cnp.PyArray_NDIM(g)
            if nd != cnp.PyArray_NDIM(w) or memcmp(cnp.PyArray_DIMS(g), cnp.PyArray_DIMS(w),
                                                   nd * sizeof(Py_ssize_t)) != 0:
                raise ValueError(f"fastdl.optim.step: grads[{i}] has shape {shape_of(g)} and "
                                 f"params[{i}] has shape {shape_of(w)}; they must be equal")
            if not rebuild and memcmp(cnp.PyArray_STRIDES(g), &self._gstrides[32 * i],
                                      nd * sizeof(Py_ssize_t)) != 0:
                rebuild = True
            self._check_grad_overlap(g, i)
        # everything is valid: nothing was written before this point
        if rebuild:
            self._build(gl)
        else:
            for i in range(n):
                plan = <Plan>self._plans[self._where[2 * i]]
                plan.c.base[self._where[2 * i + 1] * plan.c.nops + 1] = \
                    <char *>cnp.PyArray_DATA(<cnp.ndarray>gl[i])
        self.t += 1
        if self._op == OP_ADAM:
            _adam_hp(&h, self.lr, self.b1, self.b2, self.eps, self.wd, self.decoupled, self.t)
        else:
            _hp_init(&h)
            h.lr = self.lr
            h.wd = self.wd
            h.mu = self.mu
            h.mode = 1 if self.wd != 0.0 else 0
        for plan in self._plans:
            _run(plan, self._op, &h, 0.0)
