"""The GPU twins of the elementwise ops (fastdl._ext._cuda: cuda/elementwise.{cu,pxi}).

Two kinds of tests:

* Everywhere the CUDA extension is built (no GPU needed):
  - the host shim ``_host_elementwise`` runs each GPU function's own validation, planning
    (axis merging, path choice, 16-byte packs with their head and tail, strides, broadcast,
    temporaries for overlapping out=) and the kernels' own bodies compiled for the CPU,
    as N threads of the grid-stride loop; its results are compared with the CPU functions
    (bitwise for the single-IEEE-operation ops, within 1e-5 / 1e-12 of the condition-scaled
    value for the transcendental ones), on odd sizes, special values, every layout;
  - the magic-number division of the strided kernels against plain division;
  - validation with fake device arrays (objects exposing a __cuda_array_interface__ at a
    made-up address): errors come before any device work; without a device a valid call
    raises RuntimeError "no CUDA device", also through the public fastdl.<name> dispatch;
  - the GPU functions' signatures are the CPU functions'.
* On a machine with a CUDA device (skipped otherwise): every function on device arrays
  against the CPU, float32 and float64, odd and empty sizes, NaN/inf, non-contiguous and
  misaligned views, broadcasting, scalars, out= (in place, overlapping), the result kind and
  the caller's stream (with CuPy or torch when installed).
"""

import inspect

import numpy as np
import pytest

_cuda = pytest.importorskip("fastdl._ext._cuda")

import fastdl  # noqa: E402
from fastdl._ext import _elementwise as E  # noqa: E402
from conftest import layout  # noqa: E402

HAS_DEVICE = fastdl.cuda.is_available()
needs_device = pytest.mark.skipif(not HAS_DEVICE, reason="no CUDA device")
without_device = pytest.mark.skipif(HAS_DEVICE, reason="a CUDA device is present")

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
DTYPES = [F32, F64]
RTOL = {F32: 1e-5, F64: 1e-12}

# (name, keyword arguments): every unary function and every parameter form
UNARY = [("relu", {}), ("leaky_relu", {}), ("leaky_relu", {"alpha": 0.1}),
         ("leaky_relu", {"alpha": -1.5}), ("sigmoid", {}), ("tanh", {}), ("gelu", {}),
         ("gelu", {"approximate": "tanh"}), ("silu", {}),
         ("relu_grad", {}), ("leaky_relu_grad", {"alpha": 0.2}), ("sigmoid_grad", {}),
         ("tanh_grad", {}), ("gelu_grad", {}), ("gelu_grad", {"approximate": "tanh"}),
         ("silu_grad", {})]
BACKWARD = [("relu_backward", {}), ("leaky_relu_backward", {"alpha": 0.3}),
            ("sigmoid_backward", {}), ("tanh_backward", {}), ("gelu_backward", {}),
            ("gelu_backward", {"approximate": "tanh"}), ("silu_backward", {})]
ARITH = ["add", "subtract", "multiply", "divide", "maximum"]
ALL_NAMES = sorted({n for n, _ in UNARY} | {n for n, _ in BACKWARD} | set(ARITH))
# single IEEE operations or selects: the GPU must give the CPU's bits
EXACT = {"relu", "leaky_relu", "relu_grad", "leaky_relu_grad", "relu_backward",
         "leaky_relu_backward", "add", "subtract", "multiply", "divide", "maximum"}
SIZES = [(), (0,), (1,), (7,), (33,), (1000,), (4099,), (3, 5, 7), (2, 0, 3)]
BROADCAST_CASES = [
    ((7,), (7,)), ((1000,), (1000,)), ((3, 2001), (2001,)), ((64, 32, 1), (1, 1, 100)),
    ((5, 7), (7,)), ((5, 7), (1, 7)), ((5, 7), (5, 1)), ((5, 1), (1, 7)), ((2001, 1), (1, 3)),
    ((5, 7), ()), ((), (5, 7)), ((), ()), ((1,), (6,)), ((6,), (1,)), ((4, 1, 3), (2, 1)),
    ((2, 1, 3, 1), (1, 4, 1, 5)), ((0, 3), (3,)), ((3, 1), (3, 0)),
    ((5, 8), (8,)), ((6, 1), (1, 8)), ((3, 4, 12), (4, 1)),     # rows of whole 16-byte packs
]


def ids(case):
    name, kw = case
    return name + "".join(f"-{k}={v}" for k, v in kw.items())


def specials(dtype):
    """Values where the formulas have edges: NaN, infinities, signed zeros, tails, overflow
    of x^3, the largest and subnormal numbers."""
    fi = np.finfo(dtype)
    v = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 1e-3, -1e-3, 0.5, -0.5, 0.75,
         -0.75, 1.0, -1.0, 1.28, -1.28, 3.0, -3.0, 9.0, -9.0, 10.0, -10.0, 20.0, -20.0,
         40.0, -40.0, 88.0, -88.0, 100.0, -100.0, 700.0, -700.0, 1e4, -1e4, 1.0001e4,
         -1.0001e4, 1e5, -1e5, 1e13, -1e13, 1e30, -1e30, float(fi.max), -float(fi.max),
         float(fi.tiny), -float(fi.tiny), float(fi.tiny) / 8, -float(fi.tiny) / 8]
    with np.errstate(over="ignore"):
        return np.array(v, dtype=dtype)


def values(rng, shape, dtype):
    x = np.asarray(rng.standard_normal(shape) * 3, dtype=dtype)
    if x.size >= 8:   # sprinkle the special values in
        flat = x.reshape(-1)
        s = specials(dtype)
        flat[rng.integers(0, flat.size, size=min(flat.size // 4, s.size))] = \
            s[:min(flat.size // 4, s.size)]
    return x


def cpu(name, *args, **kw):
    return getattr(E, name)(*args, **kw)


def host(name, *args, **kw):
    return _cuda._host_elementwise(name, *args, **kw)


def _cond(name, args, kw, dtype):
    """|x| |df/dx| at the last argument (the value a unary op or a chain rule is a function
    of; for the arithmetic the result itself bounds the error): how much one rounding of x
    moves f, which no implementation avoids once the formula scales its argument."""
    if name in ARITH:
        return None
    args64 = [np.asarray(a, dtype=np.float64) for a in args]
    x = args64[-1]
    with np.errstate(all="ignore"):
        step = 1e-6 * np.maximum(1.0, np.abs(x))
        hi = cpu(name, *args64[:-1], x + step, **kw)
        lo = cpu(name, *args64[:-1], x - step, **kw)
        c = np.abs(x) * np.abs((np.asarray(hi) - np.asarray(lo)) / (2 * step))
    return np.where(np.isfinite(c), c, 0.0)


def assert_same(got, ref):
    """Bitwise, but any NaN matches any NaN (payloads may differ between devices)."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.dtype == ref.dtype and got.shape == ref.shape, (got.dtype, got.shape, ref.shape)
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(got), nan), "NaN positions differ"
    assert np.array_equal(got[~nan], ref[~nan]), \
        f"values differ at {np.argwhere((got != ref) & ~nan)[:5].tolist()}"
    assert np.array_equal(np.signbit(got[~nan]), np.signbit(ref[~nan])), "signs of zero differ"


def assert_matches(name, got, ref, args, kw, dtype):
    """got (the GPU path) against ref (the CPU function on the same arguments)."""
    if name in EXACT:
        return assert_same(got, ref)
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.dtype == dtype and got.shape == ref.shape, (got.dtype, got.shape, ref.shape)
    g, r = got.astype(np.float64), ref.astype(np.float64)
    assert np.array_equal(np.isnan(g), np.isnan(r)), \
        f"NaN positions differ at {np.argwhere(np.isnan(g) != np.isnan(r))[:5].tolist()}"
    inf = np.isinf(r)
    assert np.array_equal(g[inf], r[inf]), "infinities differ"
    fin = np.isfinite(r)
    cond = _cond(name, args, kw, dtype)
    with np.errstate(over="ignore"):
        scale = np.abs(r) + (0.0 if cond is None else np.broadcast_to(cond, r.shape))
        tol = RTOL[dtype] * scale + np.finfo(dtype).tiny
    err = np.where(fin, np.abs(np.where(fin, g, 0) - np.where(fin, r, 0)), 0.0)
    bad = fin & (err > tol)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        xs = [np.broadcast_to(np.asarray(a), r.shape)[i] for a in args]
        raise AssertionError(f"{int(bad.sum())} of {r.size} beyond tolerance; first at {i} "
                             f"(args {xs}): got {g[i]!r}, CPU {r[i]!r}, tol {tol[i]:.3g}")


def second_operand(name, rng, shape, dtype):
    """The second argument of a chain rule: x, or the forward output y (sigmoid in (0, 1),
    tanh in (-1, 1)) for the backward ops that take y."""
    if name == "sigmoid_backward":
        return rng.uniform(0, 1, shape).astype(dtype)
    if name == "tanh_backward":
        return rng.uniform(-1, 1, shape).astype(dtype)
    return values(rng, shape, dtype)


def arith_operands(rng, shape_a, shape_b, dtype):
    a = values(rng, shape_a, dtype)
    b = values(rng, shape_b, dtype)
    return a, b


@pytest.fixture
def rng():
    return np.random.default_rng(20260107)


# ======================================================================================
# Host shims: the kernels' code on the CPU
# ======================================================================================

@pytest.mark.parametrize("shape", SIZES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", UNARY, ids=ids)
def test_host_unary_matches_cpu(case, dtype, shape, rng):
    name, kw = case
    x = values(rng, shape, dtype)
    x0 = x.copy()
    got = host(name, x, **kw)
    assert type(got) is np.ndarray and got.flags.c_contiguous
    assert_matches(name, got, cpu(name, x, **kw), [x], kw, dtype)
    assert_same(x, x0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", UNARY, ids=ids)
def test_host_unary_special_values(case, dtype):
    name, kw = case
    x = specials(dtype)
    for threads in (1, 5):
        assert_matches(name, host(name, x, threads=threads, **kw), cpu(name, x, **kw), [x],
                       kw, dtype)


def test_host_special_value_semantics():
    # the API's rules, read directly (not only "as the CPU")
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0], np.float32)
    r = host("relu", x)
    assert np.isnan(r[0]) and r[1] == np.inf and r[2] == 0 and r[3] == 0
    assert np.signbit(r[3])                              # max(x, 0) keeps -0 (x < 0 is false)
    for name in ("gelu", "silu"):
        r = host(name, x)
        assert np.isnan(r[0]) and r[1] == np.inf and r[2] == 0
    r = host("gelu", x, approximate="tanh")
    assert np.isnan(r[0]) and r[1] == np.inf and r[2] == 0
    for name in ("gelu_grad", "silu_grad"):
        r = host(name, x)
        assert r[1] == 1 and r[2] == 0
    s = host("sigmoid", np.array([-1000, -100, 0, 100, 1000], np.float32))
    assert np.all(np.isfinite(s)) and s[2] == 0.5 and s[-1] == 1 and s[0] == 0
    m = host("maximum", np.array([np.nan, 1, 2], np.float32), np.array([1, np.nan, 1], np.float32))
    assert np.isnan(m[0]) and np.isnan(m[1]) and m[2] == 2


@pytest.mark.parametrize("shape", [(1,), (7,), (33,), (1000,), (4099,), (3, 5, 7), (0, 2), ()],
                         ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", BACKWARD, ids=ids)
def test_host_backward_matches_cpu(case, dtype, shape, rng):
    name, kw = case
    dy = values(rng, shape, dtype)
    x = second_operand(name, rng, shape, dtype)
    got = host(name, dy, x, **kw)
    assert_matches(name, got, cpu(name, dy, x, **kw), [dy, x], kw, dtype)
    # special values in both operands
    s = specials(dtype)
    dy2, x2 = np.meshgrid(s, s)
    assert_matches(name, host(name, dy2, x2, **kw), cpu(name, dy2, x2, **kw), [dy2, x2], kw,
                   dtype)


@pytest.mark.parametrize("shapes", BROADCAST_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ARITH)
def test_host_arithmetic_broadcasting(name, dtype, shapes, rng):
    a, b = arith_operands(rng, *shapes, dtype)
    got, path = host(name, a, b, with_path=True)
    ref = cpu(name, a, b)
    assert got.shape == np.broadcast_shapes(*shapes)
    assert_same(got, np.asarray(ref))
    if got.size and shapes[0] != shapes[1] and 1 in shapes[0] + shapes[1] \
            and np.prod(shapes[0]) > 1 and np.prod(shapes[1]) > 1:
        assert path in (2, 3, 5), path       # broadcast operands are walked, never copied


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ARITH)
def test_host_arithmetic_special_values(name, dtype):
    s = specials(dtype)
    a, b = np.meshgrid(s, s)
    with np.errstate(all="ignore"):
        assert_same(host(name, a, b), cpu(name, a, b))
        assert_same(host(name, s[:, None], s), cpu(name, s[:, None], s))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ARITH)
def test_host_scalar_operands(name, dtype, rng):
    a = values(rng, (5, 9), dtype)
    for s in (2, 0.1, -3.5, True, dtype.type(1.25)):
        got = host(name, a, s)
        assert got.dtype == dtype
        assert_same(got, cpu(name, a, s))
        got = host(name, s, a)                       # the scalar first (weak, NEP 50)
        assert_same(got, np.asarray(cpu(name, s, a)))
    other = np.float64(2) if dtype == F32 else np.float32(2)
    with pytest.raises(TypeError, match="does not promote"):
        host(name, a, other)
    with pytest.raises(TypeError, match="two scalars"):
        host(name, 1.0, 2.0)


@pytest.mark.parametrize("kind", ["C", "F", "strided", "negative", "transposed-view"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_host_layouts(kind, dtype, rng):
    x = values(rng, (9, 37), dtype)
    xv = layout(x, kind)
    for name, kw in UNARY:
        got, path = host(name, xv, with_path=True, **kw)
        assert_matches(name, got, cpu(name, x, **kw), [x], kw, dtype)
        assert path == (0 if kind == "C" else 2), (name, path)
    dy = values(rng, (9, 37), dtype)
    for name, kw in BACKWARD:
        sx = second_operand(name, rng, (9, 37), dtype)
        got = host(name, layout(dy, kind), layout(sx, "negative"), **kw)
        assert_matches(name, got, cpu(name, dy, sx, **kw), [dy, sx], kw, dtype)
    b = values(rng, (37,), dtype)
    for name in ARITH:
        assert_same(host(name, xv, layout(b, kind)), cpu(name, x, b))
        assert_same(host(name, layout(b, "strided"), xv), cpu(name, b, x))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_host_packs_head_and_tail(dtype, rng):
    """Contiguous operands sharing their address modulo 16 go in 16-byte packs after a
    scalar head up to the first boundary, with a scalar tail; operands misaligned against
    each other take the scalar loop. Every offset, size and thread count gives the CPU's
    result and touches nothing outside the output."""
    v = 16 // dtype.itemsize
    for n in (1, 2, 3, 4, 5, 7, 8, 9, 17, 33, 100):
        base = values(rng, (n + 8,), dtype)
        other = values(rng, (n + 8,), dtype)
        for ox in range(v):
            x = base[ox:ox + n]
            for oy in range(v):
                buf = np.full(n + 8, 7, dtype)
                out = buf[oy:oy + n]
                for threads in (1, 3, 64):
                    buf[:] = 7
                    r, path = host("sigmoid", x, out=out, threads=threads, with_path=True)
                    assert r is out
                    assert_matches("sigmoid", out, cpu("sigmoid", x), [x], {}, dtype)
                    assert np.all(buf[:oy] == 7) and np.all(buf[oy + n:] == 7)
                    aligned = (x.ctypes.data - out.ctypes.data) % 16 == 0
                    head = (-out.ctypes.data % 16) // dtype.itemsize
                    assert path == (0 if aligned and n - head >= v else 1), (n, ox, oy, path)
                    b = other[ox:ox + n]
                    buf[:] = 7
                    host("add", x, b, out=out, threads=threads)
                    assert_same(out, x + b)
                    assert np.all(buf[:oy] == 7) and np.all(buf[oy + n:] == 7)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_host_walk_by_packs(dtype, rng):
    """Rows of whole 16-byte packs, each row starting 16-byte aligned, every operand stepping
    1 (or 0, broadcast) along the row: the walk goes pack by pack (path 5). A row slice
    starting mid-pack, or rows not a whole number of packs, take the element walk (2)."""
    v = 16 // dtype.itemsize
    a = values(rng, (7, 6 * v), dtype)
    bias = values(rng, (6 * v,), dtype)
    col = values(rng, (7, 1), dtype)
    cases = [
        ("add", a, bias, 5), ("maximum", bias, a, 5), ("multiply", a, col, 5),
        ("divide", a[:, v:4 * v], a[:, 2 * v:5 * v], 5),        # aligned row slices
        ("add", a[:, 1:1 + 4 * v], bias[:4 * v], 2),            # a row slice mid-pack
        ("add", a[:, :5 * v - 1], bias[:5 * v - 1], 2),         # rows not whole packs
        ("subtract", a[::2], 2.5, 5), ("add", a[::-1], bias, 5),  # rows reversed: still packs
        ("add", a[:, ::-1], bias, 2),                           # a row read backwards
    ]
    for name, x, y, path_expected in cases:
        for threads in (1, 3, 50):
            got, path = host(name, x, y, threads=threads, with_path=True)
            assert path == path_expected, (name, x.shape, path)
            assert_same(got, cpu(name, x, y))
    for name, kw in UNARY:
        x = a[:, v:5 * v]
        got, path = host(name, x, with_path=True, **kw)
        assert path == 5
        assert_matches(name, got, cpu(name, x, **kw), [x], kw, dtype)
    for name, kw in BACKWARD:
        dy = values(rng, (3, 7, 2 * v), dtype)
        sx = second_operand(name, rng, (3, 9, 4 * v), dtype)[:, 1:8, v:3 * v]
        got, path = host(name, dy, sx, with_path=True, **kw)
        assert path == 5
        assert_matches(name, got, cpu(name, dy, sx, **kw), [dy, sx], kw, dtype)


@pytest.mark.parametrize("force_walk", [1, 2], ids=["walk32", "walk64"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_host_strided_body_with_32_and_64_bit_indices(force_walk, dtype, rng):
    """The strided kernel body (forced, whatever the plan) gives the same results with its
    magic-number and its 64-bit divisions, for contiguous, strided and broadcast operands."""
    x = values(rng, (4, 5, 6, 7), dtype)
    for name, kw in UNARY:
        for xv in (x, layout(x, "negative"), layout(x, "transposed-view")):
            got = host(name, xv, force_walk=force_walk, threads=11, **kw)
            assert_matches(name, got, cpu(name, x, **kw), [x], kw, dtype)
    for shapes in BROADCAST_CASES:
        a, b = arith_operands(rng, *shapes, dtype)
        for name in ARITH:
            assert_same(host(name, a, b, force_walk=force_walk, threads=7), cpu(name, a, b))
    dy = values(rng, x.shape, dtype)
    for name, kw in BACKWARD:
        sx = second_operand(name, rng, x.shape, dtype)
        got = host(name, dy, layout(sx, "strided"), force_walk=force_walk, **kw)
        assert_matches(name, got, cpu(name, dy, sx, **kw), [dy, sx], kw, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_host_out_in_place_and_overlap(dtype, rng):
    a = values(rng, (6, 40), dtype)
    b = values(rng, (6, 40), dtype)
    for name in ARITH:
        ref = cpu(name, a, b)
        for alias in ("a", "b"):
            aa, bb = a.copy(), b.copy()
            out = aa if alias == "a" else bb
            assert host(name, aa, bb, out=out) is out
            assert_same(out, ref)
        aa = a.copy()
        assert host(name, aa, aa, out=aa) is aa                        # a is b is out
        assert_same(aa, cpu(name, a, a))
        aa = a.copy()                                                  # row 0 broadcast from out
        assert_same(host(name, aa, aa[0], out=aa), cpu(name, a, a[0].copy()))
        buf = np.concatenate([a.reshape(-1), [0]]).astype(dtype)       # shifted by one element
        src, dst = buf[:-1], buf[1:]
        host(name, src, b.reshape(-1), out=dst)
        assert_same(dst, cpu(name, a.reshape(-1), b.reshape(-1)))
    for name, kw in UNARY:
        xx = a.copy()
        assert host(name, xx, out=xx, **kw) is xx
        assert_matches(name, xx, cpu(name, a, **kw), [a], kw, dtype)
        buf = np.concatenate([[0], a.reshape(-1)]).astype(dtype)       # out one element before x
        host(name, buf[1:], out=buf[:-1], **kw)
        assert_matches(name, buf[:-1], cpu(name, a.reshape(-1), **kw), [a.reshape(-1)], kw,
                       dtype)


def test_host_empty_and_zero_dim(rng):
    for name, kw in UNARY:
        r, path = host(name, np.empty((3, 0), np.float32), with_path=True, **kw)
        assert r.shape == (3, 0) and r.dtype == np.float32 and path == 4
        r = host(name, np.array(0.3), **kw)
        assert r.shape == () and isinstance(r, np.ndarray)
        assert_matches(name, r, cpu(name, np.array(0.3), **kw), [np.array(0.3)], kw, F64)
    for name in ARITH:
        assert host(name, np.empty((0, 3)), np.ones(3)).shape == (0, 3)
        assert host(name, np.array(2.0), np.array(3.0)).shape == ()


def test_fastdiv_matches_division():
    rng = np.random.default_rng(3)
    edges = np.array([0, 1, 2, 3, 7, 8, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**31 + 1,
                      2**32 - 2, 2**32 - 1], dtype=np.uint64)
    d_edges = np.array([1, 2, 3, 5, 7, 10, 32, 33, 641, 65535, 65536, 65537, 2**31 - 1, 2**31,
                        2**31 + 1, 2**32 - 3, 2**32 - 1], dtype=np.uint64)
    n = np.concatenate([np.repeat(edges, d_edges.size),
                        rng.integers(0, 2**32, 200000, dtype=np.uint64)])
    d = np.concatenate([np.tile(d_edges, edges.size),
                        np.where(rng.random(200000) < 0.5,
                                 rng.integers(1, 2**12, 200000, dtype=np.uint64),
                                 rng.integers(1, 2**32, 200000, dtype=np.uint64))])
    # and the largest n of every quotient boundary: q d - 1 and q d
    q = rng.integers(1, 1000, 50000, dtype=np.uint64)
    dd = rng.integers(1, 2**22, 50000, dtype=np.uint64)
    n = np.concatenate([n, q * dd - 1, q * dd])
    d = np.concatenate([d, dd, dd])
    got = _cuda._host_fastdiv(n.astype(np.uint32), d.astype(np.uint32))
    np.testing.assert_array_equal(got.astype(np.uint64), n // d)


# ======================================================================================
# Validation with fake device arrays (no device work happens)
# ======================================================================================

class Fake:
    """A made-up device array: only __cuda_array_interface__, at an address no one reads."""

    def __init__(self, shape, typestr="<f4", strides=None, ptr=0x10000, stream=None):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr,
                                         "data": (ptr, False), "strides": strides,
                                         "version": 3, "stream": stream}


def _bad_calls():
    x = Fake((3, 4))
    return [
        ("x int64", lambda: _cuda.relu(Fake((3,), "<i8")), TypeError, "float32 or float64"),
        ("x numpy", lambda: _cuda.sigmoid(np.ones(3, np.float32)), TypeError, "device array"),
        ("alpha nan", lambda: _cuda.leaky_relu(x, float("nan")), ValueError, "alpha"),
        ("alpha str", lambda: _cuda.leaky_relu_grad(x, "0.1"), TypeError, "alpha"),
        ("alpha bw", lambda: _cuda.leaky_relu_backward(x, x, None), TypeError, "alpha"),
        ("approx", lambda: _cuda.gelu(x, "fast"), ValueError, "approximate"),
        ("approx grad", lambda: _cuda.gelu_grad(x, approximate=None), ValueError,
         "approximate"),
        ("approx bw", lambda: _cuda.gelu_backward(x, x, "erf"), ValueError, "approximate"),
        ("out shape", lambda: _cuda.relu(x, out=Fake((4, 3))), ValueError, "out has shape"),
        ("out dtype", lambda: _cuda.tanh(x, out=Fake((3, 4), "<f8")), TypeError, "out has dtype"),
        ("out strided", lambda: _cuda.silu(x, out=Fake((3, 4), strides=(4, 12))), ValueError,
         "C-contiguous"),
        ("out numpy", lambda: _cuda.relu(x, out=np.empty((3, 4), np.float32)), TypeError, "out"),
        ("no broadcast", lambda: _cuda.add(x, Fake((5,))), ValueError, "do not broadcast"),
        ("dtypes", lambda: _cuda.multiply(x, Fake((4,), "<f8")), TypeError, "same dtype"),
        ("bw shapes", lambda: _cuda.relu_backward(x, Fake((4, 3))), ValueError, "must match"),
        ("bw y name", lambda: _cuda.sigmoid_backward(x, Fake((3,))), ValueError, "y has shape"),
        ("bw dtypes", lambda: _cuda.tanh_backward(x, Fake((3, 4), "<f8")), TypeError,
         "same dtype"),
        ("b numpy", lambda: _cuda.add(x, np.ones(4, np.float32)), TypeError, "b must be"),
        ("b list", lambda: _cuda.add(x, [1.0, 2.0, 3.0, 4.0]), TypeError, "b must be"),
        ("b complex", lambda: _cuda.add(x, 1j), TypeError, "b must be"),
        ("np scalar", lambda: _cuda.add(x, np.float64(1)), TypeError, "does not promote"),
        ("scalars", lambda: _cuda.add(1.0, 2.0), TypeError, "two scalars"),
        ("misaligned", lambda: _cuda.relu(Fake((3,), ptr=0x10002)), ValueError,
         "x is not aligned"),
        ("b misaligned", lambda: _cuda.add(x, Fake((4,), ptr=0x10002)), ValueError,
         "b is not aligned"),
        ("odd strides", lambda: _cuda.relu(Fake((3,), strides=(6,))), ValueError, "multiples"),
        ("out wrong stream-0", lambda: _cuda.relu(x, out=Fake((3, 4), stream=0)), TypeError,
         "stream 0"),
    ]


@pytest.mark.parametrize("label, call, exc, match", _bad_calls(), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_validation_comes_first(label, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@without_device
@pytest.mark.parametrize("name", ALL_NAMES)
def test_no_device_raises_runtime_error(name):
    x = Fake((3, 4))
    args = (x,) if name in {n for n, _ in UNARY} else (x, Fake((4,)) if name in ARITH else x)
    with pytest.raises(RuntimeError, match=f"fastdl.{name}: no CUDA device"):
        getattr(_cuda, name)(*args)
    # through the public API: the CPU function hands device arrays to its GPU twin
    with pytest.raises(RuntimeError, match=f"fastdl.{name}: no CUDA device"):
        getattr(fastdl, name, getattr(E, name))(*args)
    if name in ARITH:
        with pytest.raises(RuntimeError, match="no CUDA device"):
            getattr(_cuda, name)(x, 2.0)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_signatures_match_the_cpu_functions(name):
    gpu = inspect.signature(getattr(_cuda, name))
    cpu_sig = inspect.signature(getattr(E, name))
    assert [(p.name, p.kind, p.default) for p in gpu.parameters.values()] == \
        [(p.name, p.kind, p.default) for p in cpu_sig.parameters.values()]


# ======================================================================================
# On a device
# ======================================================================================

def to_dev(a):
    a = np.asarray(a)
    if a.ndim == 0:   # to_device goes through np.ascontiguousarray, which makes 0-d 1-d
        return DevView(fastdl.cuda.to_device(a.reshape(1)), 0, (), ())
    return fastdl.cuda.to_device(np.ascontiguousarray(a))


def to_np(d):
    return fastdl.cuda.to_host(d)


class DevView:
    """A strided view into a DeviceArray's memory (keeps the owner alive), exposing
    __cuda_array_interface__ with byte strides, like a sliced CuPy array."""

    def __init__(self, owner, offset_bytes, shape, strides):
        self.owner = owner
        ptr = owner.__cuda_array_interface__["data"][0] + offset_bytes
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": owner.dtype.str,
                                         "data": (ptr, False), "strides": tuple(strides),
                                         "version": 3, "stream": None}


def dev_like(view):
    """The NumPy view `view` (of a contiguous root) recreated on the device: the root's bytes
    uploaded, the view's offset and strides kept."""
    root = view
    while isinstance(root.base, np.ndarray):
        root = root.base
    assert root.flags.c_contiguous or root.flags.f_contiguous
    owner = to_dev(root.ravel(order="K"))
    off = view.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    return DevView(owner, off, view.shape, view.strides)


def dev_call(name, *args, **kw):
    """The public function on device copies of the arguments (NumPy arrays uploaded; views
    recreated with their strides)."""
    dargs = [a if not isinstance(a, np.ndarray) else
             (to_dev(a) if a.flags.c_contiguous else dev_like(a)) for a in args]
    r = getattr(E, name)(*dargs, **kw)
    assert isinstance(r, fastdl.cuda.DeviceArray), type(r)
    return to_np(r)


@needs_device
@pytest.mark.parametrize("shape", SIZES + [(1 << 20,), (1025, 1031)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", UNARY, ids=ids)
def test_device_unary(case, dtype, shape, rng):
    name, kw = case
    x = values(rng, shape, dtype)
    assert_matches(name, dev_call(name, x, **kw), cpu(name, x, **kw), [x], kw, dtype)


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", UNARY, ids=ids)
def test_device_unary_special_values(case, dtype):
    name, kw = case
    x = specials(dtype)
    assert_matches(name, dev_call(name, x, **kw), cpu(name, x, **kw), [x], kw, dtype)


@needs_device
@pytest.mark.parametrize("shape", [(1,), (7,), (33,), (4099,), (3, 5, 7), (0,), (1 << 20,)],
                         ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", BACKWARD, ids=ids)
def test_device_backward(case, dtype, shape, rng):
    name, kw = case
    dy = values(rng, shape, dtype)
    x = second_operand(name, rng, shape, dtype)
    assert_matches(name, dev_call(name, dy, x, **kw), cpu(name, dy, x, **kw), [dy, x], kw,
                   dtype)
    s = specials(dtype)
    dy2, x2 = np.meshgrid(s, s)
    assert_matches(name, dev_call(name, dy2, x2, **kw), cpu(name, dy2, x2, **kw), [dy2, x2],
                   kw, dtype)


@needs_device
@pytest.mark.parametrize("shapes", BROADCAST_CASES + [((1 << 20,), (1 << 20,)),
                                                      ((1024, 1031), (1031,)),
                                                      ((1024, 1032), (1032,)),
                                                      ((333, 1), (1, 1024))], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ARITH)
def test_device_arithmetic(name, dtype, shapes, rng):
    a, b = arith_operands(rng, *shapes, dtype)
    assert_same(dev_call(name, a, b), np.asarray(cpu(name, a, b)))
    s = specials(dtype)
    with np.errstate(all="ignore"):
        assert_same(dev_call(name, s[:, None], s), cpu(name, s[:, None], s))


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ARITH)
def test_device_scalars(name, dtype, rng):
    a = values(rng, (5, 9), dtype)
    for s in (2, 0.1, -3.5, True, dtype.type(1.25)):
        assert_same(dev_call(name, a, s), cpu(name, a, s))
        assert_same(to_np(getattr(_cuda, name)(s, to_dev(a))), np.asarray(cpu(name, s, a)))


@needs_device
@pytest.mark.parametrize("kind", ["F", "strided", "negative", "transposed-view"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_device_non_contiguous_inputs(kind, dtype, rng):
    x = values(rng, (33, 65), dtype)
    for name, kw in UNARY:
        assert_matches(name, dev_call(name, layout(x, kind), **kw), cpu(name, x, **kw), [x],
                       kw, dtype)
    dy = values(rng, x.shape, dtype)
    for name, kw in BACKWARD:
        sx = second_operand(name, rng, x.shape, dtype)
        assert_matches(name, dev_call(name, layout(dy, kind), layout(sx, "strided"), **kw),
                       cpu(name, dy, sx, **kw), [dy, sx], kw, dtype)
    b = values(rng, (65,), dtype)
    for name in ARITH:
        assert_same(dev_call(name, layout(x, kind), layout(b, "strided")), cpu(name, x, b))


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_device_misaligned_views_and_out(dtype, rng):
    """Views starting 1..3 elements into an allocation: the scalar loop (misaligned against
    the fresh output) or packs after a head (out= misaligned the same way)."""
    for n in (1, 5, 33, 4099, 100003):
        base = values(rng, (n + 8,), dtype)
        d_base = to_dev(base)
        for ox in range(16 // dtype.itemsize):
            xv = DevView(d_base, ox * dtype.itemsize, (n,), (dtype.itemsize,))
            x = base[ox:ox + n]
            assert_matches("gelu", to_np(_cuda.gelu(xv)), cpu("gelu", x), [x], {}, dtype)
            d_buf = to_dev(np.full(n + 8, 7, dtype))
            outv = DevView(d_buf, ox * dtype.itemsize, (n,), (dtype.itemsize,))
            assert _cuda.add(xv, 1.5, out=outv) is outv
            buf = to_np(d_buf)
            assert_same(buf[ox:ox + n], x + dtype.type(1.5))
            assert np.all(buf[:ox] == 7) and np.all(buf[ox + n:] == 7)


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_device_out_in_place_and_overlap(dtype, rng):
    a = values(rng, (6, 4001), dtype)
    b = values(rng, (6, 4001), dtype)
    for name in ARITH:
        da, db = to_dev(a), to_dev(b)
        assert getattr(_cuda, name)(da, db, out=da) is da
        assert_same(to_np(da), cpu(name, a, b))
        da = to_dev(a)
        row0 = DevView(da, 0, (4001,), (dtype.itemsize,))
        getattr(_cuda, name)(da, row0, out=da)
        assert_same(to_np(da), cpu(name, a, a[0].copy()))
        flat = np.concatenate([a.reshape(-1), [0]]).astype(dtype)
        dbuf = to_dev(flat)
        n = a.size
        src = DevView(dbuf, 0, (n,), (dtype.itemsize,))
        dst = DevView(dbuf, dtype.itemsize, (n,), (dtype.itemsize,))
        getattr(_cuda, name)(src, to_dev(b.reshape(-1)), out=dst)
        assert_same(to_np(dbuf)[1:], cpu(name, a.reshape(-1), b.reshape(-1)))
    for name, kw in UNARY:
        dx = to_dev(a)
        assert getattr(_cuda, name)(dx, out=dx, **kw) is dx
        assert_matches(name, to_np(dx), cpu(name, a, **kw), [a], kw, dtype)


@needs_device
def test_device_results_are_deterministic(rng):
    x = to_dev(values(rng, (1 << 20) + 3, np.float32))
    for name, kw in UNARY:
        r1 = to_np(getattr(_cuda, name)(x, **kw))
        r2 = to_np(getattr(_cuda, name)(x, **kw))
        assert r1.tobytes() == r2.tobytes()


@needs_device
def test_device_public_api_dispatch_and_kind(rng):
    x = values(rng, (7, 9), np.float32)
    r = fastdl.relu(to_dev(x)) if hasattr(fastdl, "relu") else E.relu(to_dev(x))
    assert isinstance(r, fastdl.cuda.DeviceArray) and r.shape == (7, 9) and r.dtype == F32
    assert_same(to_np(r), E.relu(x))


@needs_device
def test_device_torch_kind_and_stream(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    x = values(rng, (1 << 20) + 5, np.float32)
    b = values(rng, (1 << 20) + 5, np.float32)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        tx = torch.from_numpy(x).cuda()
        tb = torch.from_numpy(b).cuda()
        for name, kw in UNARY:
            r = getattr(E, name)(tx, **kw)
            assert isinstance(r, torch.Tensor) and r.is_cuda and r.dtype == torch.float32
            s.synchronize()
            assert_matches(name, r.cpu().numpy(), cpu(name, x, **kw), [x], kw, F32)
        out = torch.empty_like(tx)
        assert E.add(tx, tb, out=out) is out
        s.synchronize()
        assert_same(out.cpu().numpy(), x + b)
        tview = tx[1::3]                         # a strided torch view
        r = E.tanh(tview)
        s.synchronize()
        assert_matches("tanh", r.cpu().numpy(), cpu("tanh", x[1::3]), [x[1::3]], {}, F32)


@needs_device
def test_device_cupy_kind_and_stream(rng):
    cp = pytest.importorskip("cupy")
    x = values(rng, (1000, 1001), np.float64)
    b = values(rng, (1001,), np.float64)
    with cp.cuda.Stream(non_blocking=True) as s:
        cx, cb = cp.asarray(x), cp.asarray(b)
        r = E.maximum(cx, cb)
        assert isinstance(r, cp.ndarray)
        s.synchronize()
        assert_same(cp.asnumpy(r), np.maximum(x, b))
        r = E.gelu(cx.T)
        s.synchronize()
        assert_matches("gelu", cp.asnumpy(r), cpu("gelu", x.T), [x.T], {}, F64)
