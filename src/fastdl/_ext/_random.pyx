# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Counter-based random numbers (Philox4x32-10) and dropout.

Inner loops: fastdl/philox.h (the generator, the stream of a seed, the keep rule). Element i of
an array (its C-order index in the logical shape) is decided by word i of the seed's stream,
so a mask depends on (seed, i) only: not on the layout, the work split or the thread count,
and a backward can regenerate it from the seed instead of storing it.

Work split: fixed items of FDL_DROPOUT_ITEM C-order elements (a function of the size only),
serial below PARALLEL_MIN_ELEMENTS with no OpenMP region, the GIL released above
GIL_MIN_ELEMENTS.
"""

import math
import numbers
import operator

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport uint32_t, uint64_t

from fastdl._ext._common cimport on_device, gpu_call
from fastdl._ext._common cimport as_float_array, check_out, current_threads, may_overlap, shape_of

cdef extern from "fastdl/philox.h" nogil:
    enum:
        FDL_DROPOUT_ITEM
        FDL_DROPOUT_MAXDIM
        FDL_DROPOUT_FWD
        FDL_DROPOUT_FROM_MASK
    ctypedef struct fdl_dropout_args:
        char *x
        char *y
        unsigned char *m
        int nd
        Py_ssize_t dims[64]
        Py_ssize_t xs[64]
        Py_ssize_t ys[64]
        Py_ssize_t ms[64]
        Py_ssize_t len, xr, yr, mr
        Py_ssize_t size
        uint64_t seed
        uint32_t thr
        int drop_all
        int mode
        double scale
        Py_ssize_t tiles_a, tiles_b
    void fdl_philox4x32_10(const uint32_t *ctr, const uint32_t *key, uint32_t *out)
    void fdl_philox_words(uint64_t seed, uint64_t first, Py_ssize_t n, uint32_t *out, int simd)
    int fdl_philox_best "fdl_philox_best_level"()
    void fdl_dropout_item_f32(const fdl_dropout_args *a, Py_ssize_t item)
    void fdl_dropout_item_f64(const fdl_dropout_args *a, Py_ssize_t item)
    enum:
        FDL_DROPOUT_TILE_A
        FDL_DROPOUT_TILE_B
    void fdl_dropout_tile_f32(const fdl_dropout_args *a, Py_ssize_t item)
    void fdl_dropout_tile_f64(const fdl_dropout_args *a, Py_ssize_t item)
    enum:
        FDL_INIT_ITEM
        FDL_INIT_NORMAL
        FDL_INIT_UNIFORM
    ctypedef struct fdl_init_args:
        char *y
        Py_ssize_t size
        uint64_t seed
        double scale, shift
        int kind
    void fdl_init_item_f32(const fdl_init_args *a, Py_ssize_t item)
    void fdl_init_item_f64(const fdl_init_args *a, Py_ssize_t item)

cnp.import_array()

cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 32768
cdef Py_ssize_t GIL_MIN_ELEMENTS = 4096
cdef object _TWO64 = 2 ** 64
cdef object _bool = np.dtype(np.bool_)


# --------------------------------------------------------------------------------------
# the generator, for tests and users who want the raw stream

def philox4x32_10(counter, key):
    """Philox4x32-10 of one block: ``counter`` four 32-bit words, ``key`` two; returns the
    four output words as a ``uint32`` array (the published algorithm, no stream mapping)."""
    cdef uint32_t c[4]
    cdef uint32_t k[2]
    cdef uint32_t o[4]
    cdef int i
    counter = [operator.index(v) for v in counter]
    key = [operator.index(v) for v in key]
    if len(counter) != 4 or len(key) != 2:
        raise ValueError("fastdl.philox4x32_10: counter must have 4 words and key 2")
    for v in counter + key:
        if not 0 <= v < 2 ** 32:
            raise ValueError(f"fastdl.philox4x32_10: word {v} is not a 32-bit unsigned value")
    for i in range(4):
        c[i] = counter[i]
    k[0] = key[0]
    k[1] = key[1]
    fdl_philox4x32_10(c, k, o)
    return np.array([o[0], o[1], o[2], o[3]], dtype=np.uint32)


def philox_simd_level():
    """The Philox kernel this CPU runs: 2 (AVX-512F), 1 (AVX2) or 0 (the portable loop)."""
    return fdl_philox_best()


def philox_words(seed, Py_ssize_t n, first=0, *, int simd=-1):
    """Words ``first .. first + n - 1`` of the stream of ``seed`` as a ``uint32`` array.

    Word i is word ``i % 4`` of Philox4x32-10 with counter ``(lo32(i // 4), hi32(i // 4), 0,
    0)`` and key ``(lo32(seed), hi32(seed))``; dropout keeps element i iff word i >=
    ``ceil(p * 2**32)``. ``simd`` picks a kernel for tests (0 portable, 1 AVX2, 2 AVX-512;
    capped at what the CPU has; -1: the best).
    """
    cdef uint64_t s = _seed(seed, "philox_words")
    first = operator.index(first)
    if n < 0 or first < 0 or first + n > _TWO64:
        raise ValueError(f"fastdl.philox_words: words {first} .. {first + n} are outside the "
                         "64-bit counter range")
    cdef cnp.ndarray out = np.empty(n, dtype=np.uint32)
    cdef uint64_t f = first
    with nogil:
        fdl_philox_words(s, f, n, <uint32_t *>cnp.PyArray_DATA(out), simd)
    return out


# --------------------------------------------------------------------------------------
# validation

cdef uint64_t _seed(object seed, str func) except? 0:
    """A seed as a 64-bit unsigned value: an int in [0, 2**64), or a numpy Generator (one
    value is drawn from it)."""
    if type(seed) is int and 0 <= seed < _TWO64:
        return <uint64_t>seed
    if isinstance(seed, np.random.Generator):
        return <uint64_t>int(seed.integers(0, _TWO64, dtype=np.uint64))
    if isinstance(seed, (float, complex, str, bytes, np.ndarray)):
        raise TypeError(f"fastdl.{func}: seed must be an int in [0, 2**64) or a "
                        f"numpy.random.Generator, got {type(seed).__name__}")
    try:
        s = operator.index(seed)
    except TypeError:
        raise TypeError(f"fastdl.{func}: seed must be an int in [0, 2**64) or a "
                        f"numpy.random.Generator, got {type(seed).__name__}") from None
    if s < 0 or s >= _TWO64:
        raise ValueError(f"fastdl.{func}: seed must be in [0, 2**64), got {s}")
    return <uint64_t>s


cdef object _fresh_seed():
    """One 64-bit value from NumPy's global random state (np.random.seed makes it
    reproducible)."""
    return int(np.random.randint(0, _TWO64, dtype=np.uint64))


cdef double _p(object p, str func) except? -1.0:
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


cdef bint _usable(cnp.ndarray a) noexcept:
    """Whether the kernel can address a in place: aligned, strides in whole elements."""
    cdef int d
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(a)
    if not cnp.PyArray_ISALIGNED(a):
        return False
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_STRIDES(a)[d] % item != 0:
            return False
    return True


cdef bint _same_view(cnp.ndarray a, cnp.ndarray b) noexcept:
    """a and b address exactly the same elements in the same order (in-place use)."""
    cdef int d
    if cnp.PyArray_DATA(a) != cnp.PyArray_DATA(b) or cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(b):
        return False
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIMS(a)[d] != cnp.PyArray_DIMS(b)[d]:
            return False
        if cnp.PyArray_DIMS(a)[d] > 1 and cnp.PyArray_STRIDES(a)[d] != cnp.PyArray_STRIDES(b)[d]:
            return False
    return True


# --------------------------------------------------------------------------------------
# the kernel driver

cdef void _rows(fdl_dropout_args *a, cnp.ndarray X, cnp.ndarray Y, cnp.ndarray M):
    """Describe the operands as C-order rows: unit axes dropped, neighbouring axes merged
    wherever every operand steps uniformly across them, the innermost one the row."""
    cdef int nd = cnp.PyArray_NDIM(X), d, k = 0
    cdef Py_ssize_t xi = cnp.PyArray_ITEMSIZE(X)
    cdef Py_ssize_t dims[64]
    cdef Py_ssize_t xs[64]
    cdef Py_ssize_t ys[64]
    cdef Py_ssize_t ms[64]
    # keep the non-unit axes, outermost first
    for d in range(nd):
        if cnp.PyArray_DIMS(X)[d] == 1:
            continue
        dims[k] = cnp.PyArray_DIMS(X)[d]
        xs[k] = cnp.PyArray_STRIDES(X)[d]
        ys[k] = cnp.PyArray_STRIDES(Y)[d]
        ms[k] = cnp.PyArray_STRIDES(M)[d] if M is not None else 0
        k += 1
    # merge axis j into the merged axis after it where every operand allows it
    cdef int n = 0, j
    cdef Py_ssize_t md[64]
    cdef Py_ssize_t mx[64]
    cdef Py_ssize_t my[64]
    cdef Py_ssize_t mm[64]
    for j in range(k - 1, -1, -1):
        if (n > 0 and xs[j] == mx[n - 1] * md[n - 1] and ys[j] == my[n - 1] * md[n - 1]
                and ms[j] == mm[n - 1] * md[n - 1]):
            md[n - 1] *= dims[j]
            continue
        md[n] = dims[j]
        mx[n] = xs[j]
        my[n] = ys[j]
        mm[n] = ms[j]
        n += 1
    # md[0] is now the innermost (row) axis; the rest, reversed, the outer axes
    if n == 0:
        a.len = 1
        a.xr = a.yr = a.mr = 0
        a.nd = 0
        return
    a.len = md[0]
    a.xr = mx[0] // xi
    a.yr = my[0] // xi
    a.mr = mm[0]
    a.nd = n - 1
    for d in range(n - 1):
        a.dims[d] = md[n - 1 - d]
        a.xs[d] = mx[n - 1 - d]
        a.ys[d] = my[n - 1 - d]
        a.ms[d] = mm[n - 1 - d]


cdef bint _tiled(fdl_dropout_args *a, Py_ssize_t itemsize) noexcept:
    """Whether x's contiguous axis is the last outer one and not the row: the tiled walk.
    Sets the tile counts (0: the C-order walk)."""
    a.tiles_a = a.tiles_b = 0
    if a.nd < 1 or a.xr == 1 or a.xr == -1:
        return False
    if a.xs[a.nd - 1] != itemsize and a.xs[a.nd - 1] != -itemsize:
        return False
    a.tiles_a = (a.dims[a.nd - 1] + FDL_DROPOUT_TILE_A - 1) // FDL_DROPOUT_TILE_A
    a.tiles_b = (a.len + FDL_DROPOUT_TILE_B - 1) // FDL_DROPOUT_TILE_B
    return True


cdef void _run(fdl_dropout_args *a, bint f32) noexcept nogil:
    cdef Py_ssize_t items, it, outer = 1
    cdef int nth = 1, d
    cdef bint tiled = a.tiles_a > 0
    if tiled:
        for d in range(a.nd - 1):
            outer *= a.dims[d]
        items = outer * a.tiles_a * a.tiles_b
    else:
        items = (a.size + FDL_DROPOUT_ITEM - 1) // FDL_DROPOUT_ITEM
    if a.size >= PARALLEL_MIN_ELEMENTS and items >= 2:
        nth = current_threads()
        if items < nth:
            nth = <int>items
    if nth <= 1:
        for it in range(items):
            if tiled:
                if f32:
                    fdl_dropout_tile_f32(a, it)
                else:
                    fdl_dropout_tile_f64(a, it)
            elif f32:
                fdl_dropout_item_f32(a, it)
            else:
                fdl_dropout_item_f64(a, it)
    else:
        for it in prange(items, schedule='static', num_threads=nth):
            if tiled:
                if f32:
                    fdl_dropout_tile_f32(a, it)
                else:
                    fdl_dropout_tile_f64(a, it)
            elif f32:
                fdl_dropout_item_f32(a, it)
            else:
                fdl_dropout_item_f64(a, it)


cdef object _apply(cnp.ndarray X, object out, cnp.ndarray M, bint want_mask, double p,
                   uint64_t seed, int mode, str func):
    """y = keep ? x * (1 / (1 - p)) : 0, the keep decisions from the seed's stream (FWD) or
    from the bool array M (FROM_MASK). Returns y, or (y, mask) when want_mask (FWD)."""
    cdef int typenum = cnp.PyArray_TYPE(X)
    cdef tuple shape = shape_of(X)
    cdef cnp.ndarray target = None
    if out is not None:
        target = check_out(out, shape, typenum, func)
    if not _usable(X):
        X = np.array(X, order="C", copy=True)
    cdef fdl_dropout_args a
    a.size = cnp.PyArray_SIZE(X)
    # x's own walk decides the layout of fresh results: C order for the C-order walk; x's
    # axis order (as NumPy's elementwise results) for the tiled one, so y streams too
    cdef bint keep_order = False
    if a.size > 0:
        _rows(&a, X, X, None)
        keep_order = _tiled(&a, cnp.PyArray_ITEMSIZE(X))
    cdef cnp.ndarray Y
    if target is not None and _usable(target) and (
            _same_view(target, X) or not may_overlap(target, X)) and (
            M is None or not may_overlap(target, M)):
        Y = target
    elif keep_order:
        Y = np.empty_like(X, order="K")
    else:
        Y = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(X), cnp.PyArray_DIMS(X), typenum, 0)
    cdef cnp.ndarray mask = None
    if want_mask:
        if keep_order:
            mask = np.empty_like(X, dtype=np.bool_, order="K")
        else:
            mask = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(X), cnp.PyArray_DIMS(X), cnp.NPY_BOOL, 0)
    a.mode = mode
    a.seed = seed
    # keep iff word >= ceil(p * 2**32): the uniform word / 2**32 is >= p (exact in double)
    cdef double t = math.ceil(p * 4294967296.0)
    a.drop_all = t >= 4294967296.0
    a.thr = 0 if a.drop_all else <uint32_t>t
    a.scale = 1.0 / (1.0 - p)
    a.x = <char *>cnp.PyArray_DATA(X)
    a.y = <char *>cnp.PyArray_DATA(Y)
    cdef cnp.ndarray Mop = mask if want_mask else M
    a.m = NULL if Mop is None else <unsigned char *>cnp.PyArray_DATA(Mop)
    if a.size > 0:
        _rows(&a, X, Y, Mop)
        _tiled(&a, cnp.PyArray_ITEMSIZE(X))
        if a.size > GIL_MIN_ELEMENTS:
            with nogil:
                _run(&a, typenum == cnp.NPY_FLOAT)
        else:
            _run(&a, typenum == cnp.NPY_FLOAT)
    if target is not None and Y is not target:
        np.copyto(target, Y)
        Y = target
    if want_mask:
        return Y, mask
    return Y


# --------------------------------------------------------------------------------------
# entry points

def dropout(x, p, training=True, *, seed=None, return_mask=False, return_seed=False,
            out=None):
    """Inverted dropout: ``y = x / (1 - p)`` where an element is kept, ``0`` where dropped.

    ``p`` is the **drop** probability (as in PyTorch and Keras), ``0 <= p < 1``; ``ValueError``
    otherwise (NaN included). Kept values are ``x * s`` with ``s = 1 / (1 - p)`` computed in
    float64 and rounded to x's dtype (one multiply, as PyTorch scales). Dropped elements are
    exactly ``+0.0``, whatever x holds there (a NaN or inf in a dropped position does not leak;
    NaN and inf propagate through kept elements).

    The mask. Element i (its C-order index in x's logical shape) is kept iff word i of the
    Philox4x32-10 stream of ``seed`` is ``>= ceil(p * 2**32)``, i.e. iff its 32-bit uniform
    ``word / 2**32`` is ``>= p``: the drop probability is ``ceil(p * 2**32) / 2**32``, within
    2**-32 of p (p's resolution). The mask depends only on ``seed`` and the index: not on x's
    memory layout, the thread count or the work split (see ``fastdl._ext._random.philox_words``).

    ``seed``: an int in ``[0, 2**64)``, or a ``numpy.random.Generator`` (one value is drawn
    from it), or None: one value is drawn from NumPy's global random state
    (``np.random.randint``), so ``np.random.seed(...)`` makes the call reproducible. As
    PyTorch consumes its generator, nothing is drawn when the call is the identity.

    Identity: with ``training=False`` or ``p == 0`` the result is x itself (the converted
    array, no copy: as PyTorch returns its input), or x copied into ``out``.

    Returns ``y``; with ``return_mask=True`` also the bool keep-mask (C order); with
    ``return_seed=True`` also the seed used (None for the identity with ``seed=None``), to
    give to ``dropout_backward`` instead of a stored mask. Order: ``(y, mask, seed)``.

    ``out``: a float array of x's shape and result dtype, any layout; may be x itself (in
    place). Otherwise the result (and the mask) is C-ordered, or, when x's contiguous axis is
    the one before its last (Fortran order, a transposed view), laid out in x's axis order as
    NumPy's elementwise results are. float32 stays float32; integer and bool inputs compute in
    float64.

    Speed: one pass, the words of 128 elements generated in L1 and applied at once, in fixed
    items of 16384 elements over fastdl's threads. Arrays whose contiguous axis is the one
    before the last are walked in 64x64 tiles (about 2x the time of a C array); other strided
    layouts are read in C order, with strides.
    """
    if on_device(x):
        return gpu_call("dropout", (), {"x": x, "p": p, "training": training, "seed": seed, "return_mask": return_mask, "return_seed": return_seed, "out": out})
    cdef cnp.ndarray X = as_float_array(x, "dropout", "x")
    cdef double pv = _p(p, "dropout")
    cdef bint active = bool(training) and pv > 0.0
    cdef uint64_t s = 0
    if seed is not None or active:
        if seed is None:
            seed = _fresh_seed()
        elif isinstance(seed, np.random.Generator):
            seed = int(seed.integers(0, _TWO64, dtype=np.uint64))
        s = _seed(seed, "dropout")
        seed = int(s)
    cdef cnp.ndarray target = None
    if out is not None:
        target = check_out(out, shape_of(X), cnp.PyArray_TYPE(X), "dropout")
    if not active:
        if target is not None:
            if not _same_view(target, X):
                np.copyto(target, X)
            y = target
        else:
            y = X
        result = (y,)
        if return_mask:
            result += (np.ones(shape_of(X), dtype=np.bool_),)
    else:
        r = _apply(X, target, None, bool(return_mask), pv, s, FDL_DROPOUT_FWD, "dropout")
        result = r if return_mask else (r,)
    if return_seed:
        result += (seed,)
    return result[0] if len(result) == 1 else result


def dropout_backward(dy, mask_or_seed, p, *, out=None):
    """Gradient of ``dropout``: ``dx = dy / (1 - p)`` where the element was kept, ``0`` where
    dropped (the same ``s = 1 / (1 - p)`` and the same select as the forward).

    ``mask_or_seed``: the bool keep-mask from ``dropout(..., return_mask=True)`` (its shape
    must equal dy's; a non-bool array is a ``TypeError``), or the int seed the forward used
    (``dropout(..., return_seed=True)`` returns it when the seed was drawn): the mask is then
    regenerated from the seed (one pass, nothing stored), or None, for a forward that was the
    identity (``training=False``/``p == 0``; ``return_seed`` gives None there): ``dx = dy``.
    ``p`` must be the forward's.
    """
    if on_device(dy):
        return gpu_call("dropout_backward", (), {"dy": dy, "mask_or_seed": mask_or_seed, "p": p, "out": out})
    cdef cnp.ndarray D = as_float_array(dy, "dropout_backward", "dy")
    cdef double pv = _p(p, "dropout_backward")
    cdef cnp.ndarray M = None
    cdef uint64_t s = 0
    cdef cnp.ndarray target = None
    if mask_or_seed is None:
        if out is not None:
            target = check_out(out, shape_of(D), cnp.PyArray_TYPE(D), "dropout_backward")
            if not _same_view(target, D):
                np.copyto(target, D)
            return target
        return D
    if (isinstance(mask_or_seed, (int, np.integer, np.random.Generator))
            and not isinstance(mask_or_seed, (bool, np.bool_))):
        if isinstance(mask_or_seed, np.random.Generator):
            raise TypeError("fastdl.dropout_backward: mask_or_seed must be the int seed the "
                            "forward used, not a Generator (dropout(..., return_seed=True) "
                            "returns it)")
        s = _seed(mask_or_seed, "dropout_backward")
        return _apply(D, out, None, False, pv, s, FDL_DROPOUT_FWD, "dropout_backward")
    try:
        M = np.asarray(mask_or_seed)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"fastdl.dropout_backward: mask_or_seed cannot be converted to an "
                        f"array ({exc})") from None
    if M.dtype != _bool:
        raise TypeError(f"fastdl.dropout_backward: mask_or_seed must be a bool mask or an int "
                        f"seed, got an array of dtype {M.dtype}")
    if shape_of(M) != shape_of(D):
        raise ValueError(f"fastdl.dropout_backward: mask has shape {shape_of(M)} and dy has "
                         f"shape {shape_of(D)}; they must be equal")
    return _apply(D, out, M, False, pv, 0, FDL_DROPOUT_FROM_MASK, "dropout_backward")


# --------------------------------------------------------------------------------------
# samples for fastdl.init

cdef void _run_init(fdl_init_args *a, bint f32) noexcept nogil:
    cdef Py_ssize_t items = (a.size + FDL_INIT_ITEM - 1) // FDL_INIT_ITEM, it
    cdef int nth = 1
    if a.size >= PARALLEL_MIN_ELEMENTS and items >= 2:
        nth = current_threads()
        if items < nth:
            nth = <int>items
    if nth <= 1:
        if f32:
            for it in range(items):
                fdl_init_item_f32(a, it)
        else:
            for it in range(items):
                fdl_init_item_f64(a, it)
    elif f32:
        for it in prange(items, schedule='static', num_threads=nth):
            fdl_init_item_f32(a, it)
    else:
        for it in prange(items, schedule='static', num_threads=nth):
            fdl_init_item_f64(a, it)


def philox_samples(tuple shape, dtype, seed, str kind, double scale):
    """A fresh C-ordered array of ``shape`` (float32/float64) from the stream of ``seed``:
    ``kind='normal'``: normal with standard deviation ``scale`` (Box-Muller pairs);
    ``kind='uniform'``: uniform on ``[-scale, scale]``. Element i (C order) depends on (seed,
    i) only, never on the thread count (see fastdl/philox.h). Arguments are trusted (this is
    fastdl.init's kernel; it validates them)."""
    cdef int typenum = cnp.NPY_FLOAT if np.dtype(dtype) == np.float32 else cnp.NPY_DOUBLE
    cdef cnp.ndarray y = np.empty(shape, dtype=np.float32 if typenum == cnp.NPY_FLOAT
                                  else np.float64)
    cdef fdl_init_args a
    cdef bint f32 = typenum == cnp.NPY_FLOAT
    a.y = <char *>cnp.PyArray_DATA(y)
    a.size = cnp.PyArray_SIZE(y)
    a.seed = _seed(seed, "init")
    if kind == "normal":
        a.kind = FDL_INIT_NORMAL
        a.scale = scale
        a.shift = 0.0
    elif kind == "uniform":
        a.kind = FDL_INIT_UNIFORM
        a.scale = 2.0 * scale * (2.0 ** -24 if f32 else 2.0 ** -53)
        a.shift = scale
    else:
        raise ValueError(f"fastdl.init: unknown kind {kind!r}")
    if a.size > GIL_MIN_ELEMENTS:
        with nogil:
            _run_init(&a, f32)
    else:
        _run_init(&a, f32)
    return y
