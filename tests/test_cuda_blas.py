"""GPU matmul, linear and linear_backward (fastdl._ext._cuda; cuda/blas.{cu,h,pxi}).

On any machine with the CUDA extension built:
* argument validation through the public functions with fake device arrays (objects that are
  only a ``__cuda_array_interface__``), and the "no CUDA device" error where there is none;
* where cuBLAS is looked for, and the loader's messages (stub libraries built with gcc, in a
  subprocess);
* the GPU plans themselves, run on host memory by the ``_host_*`` shims: the same Python
  planning code (operand layouts, transpose flags, batch splitting, copies, out= aliasing)
  calling the launchers' host twins (the GEMM twin implements cuBLAS's column-major contract,
  so the row-major -> column-major translation is exercised; the bias fill and the column
  sums run the kernels' own per-element code), compared with the CPU functions.

With a GPU (``fastdl.cuda.is_available()``): every function against the CPU on device
arrays: float32/float64, odd and empty sizes, NaN/inf, strided views, out=, determinism,
TF32, and with CuPy/torch where installed their kinds and streams.
"""

import ctypes
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

_cuda = pytest.importorskip("fastdl._ext._cuda")

import fastdl  # noqa: E402
from conftest import (LAYOUTS, assert_close, assert_unchanged, gemm_scale, layout,  # noqa: E402
                      random_array, snapshot)

HAVE_GPU = fastdl.cuda.is_available()
requires_gpu = pytest.mark.skipif(not HAVE_GPU, reason="no CUDA device")
without_gpu = pytest.mark.skipif(HAVE_GPU, reason="checks the error raised without a device")


class FakeDev:
    """A 'device array' that is only an interface (pointer 0x10000: never dereferenced, the
    calls below fail before any device work)."""

    def __init__(self, shape, dtype=np.float32, strides=None, ptr=0x10000):
        self.__cuda_array_interface__ = {
            "shape": tuple(shape), "typestr": np.dtype(dtype).str, "data": (ptr, False),
            "strides": strides, "version": 3, "stream": None}


def _counters():
    return _cuda._blas_counters(reset=True)


# --------------------------------------------------------------------------------------
# validation with fake device arrays (messages as the CPU's)

MATMUL_BAD = [
    ((3, 4), (5, 6), ValueError, "not aligned"),
    ((4,), (5,), ValueError, "not aligned"),
    ((2, 3, 4), (3, 4, 5), ValueError, "do not broadcast"),
    ((), (3,), ValueError, "at least 1-D"),
    ((3,), (), ValueError, "at least 1-D"),
]


@pytest.mark.parametrize("sa,sb,exc,msg", MATMUL_BAD)
def test_matmul_shape_errors(sa, sb, exc, msg):
    with pytest.raises(exc, match=msg):
        fastdl.matmul(FakeDev(sa), FakeDev(sb))


def test_matmul_dtype_and_kind_errors():
    with pytest.raises(TypeError, match="same dtype"):
        fastdl.matmul(FakeDev((3, 4)), FakeDev((4, 5), np.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        fastdl.matmul(FakeDev((3, 4), np.int64), FakeDev((4, 5), np.int64))
    with pytest.raises(TypeError, match="'b'|b must be a CUDA device array"):
        fastdl.matmul(FakeDev((3, 4)), np.ones((4, 5), np.float32))


def test_matmul_out_errors():
    a, b = FakeDev((3, 4)), FakeDev((4, 5))
    with pytest.raises(ValueError, match=r"out has shape \(5, 3\), expected \(3, 5\)"):
        fastdl.matmul(a, b, out=FakeDev((5, 3)))
    with pytest.raises(TypeError, match="out has dtype float64"):
        fastdl.matmul(a, b, out=FakeDev((3, 5), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        fastdl.matmul(a, b, out=FakeDev((3, 5), strides=(4, 12)))
    with pytest.raises(TypeError, match="out"):
        fastdl.matmul(a, b, out=np.empty((3, 5), np.float32))


def test_misaligned_operand_is_refused():
    with pytest.raises(ValueError, match="not aligned to its element size"):
        fastdl.matmul(FakeDev((3, 4), ptr=0x10002), FakeDev((4, 5)))


def test_linear_errors():
    x, w, b = FakeDev((5, 4)), FakeDev((4, 3)), FakeDev((3,))
    with pytest.raises(ValueError, match="w must be 2-D"):
        fastdl.linear(x, FakeDev((4,)))
    with pytest.raises(ValueError, match=r"x.shape\[-1\] must equal w.shape\[0\] \(6\)"):
        fastdl.linear(x, FakeDev((6, 3)))
    with pytest.raises(ValueError, match="x has shape"):
        fastdl.linear(FakeDev(()), w)
    with pytest.raises(ValueError, match=r"b has shape \(4,\), expected \(3,\)"):
        fastdl.linear(x, w, FakeDev((4,)))
    with pytest.raises(TypeError, match="same dtype"):
        fastdl.linear(x, w, FakeDev((3,), np.float64))
    with pytest.raises(TypeError, match="'b'|b must be a CUDA device array"):
        fastdl.linear(x, w, np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"out has shape"):
        fastdl.linear(x, w, b, out=FakeDev((5, 4)))
    with pytest.raises(ValueError, match="w must be 2-D"):
        fastdl.linear_backward(FakeDev((5, 3)), x, FakeDev((4, 3, 1)))
    with pytest.raises(ValueError, match=r"dy has shape \(5, 4\), expected \(5, 3\)"):
        fastdl.linear_backward(FakeDev((5, 4)), x, w)
    with pytest.raises(TypeError, match="same dtype"):
        fastdl.linear_backward(FakeDev((5, 3), np.float64), x, w)


@without_gpu
@pytest.mark.parametrize("call", [
    lambda: fastdl.matmul(FakeDev((3, 4)), FakeDev((4, 5))),
    lambda: fastdl.matmul(FakeDev((2, 3, 4)), FakeDev((4,)), out=FakeDev((2, 3))),
    lambda: fastdl.linear(FakeDev((5, 4)), FakeDev((4, 3)), FakeDev((3,))),
    lambda: fastdl.linear_backward(FakeDev((5, 3)), FakeDev((5, 4)), FakeDev((4, 3))),
], ids=["matmul", "matmul-out", "linear", "linear_backward"])
def test_valid_call_without_device_raises_runtime_error(call):
    with pytest.raises(RuntimeError, match="no CUDA device"):
        call()


# --------------------------------------------------------------------------------------
# cuBLAS: search order, loading, TF32

def test_search_paths_order(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "toolkit"))
    paths = _cuda._cublas_search_paths()
    assert paths[-2:] == ["libcublas.so.13", "libcublas.so.12"]
    home = [i for i, p in enumerate(paths) if p.startswith(str(tmp_path / "toolkit"))]
    system = [i for i, p in enumerate(paths) if p.startswith("/usr/local/cuda/lib64/")]
    assert [paths[i] for i in home] == [str(tmp_path / "toolkit" / "lib64" / n)
                                        for n in ("libcublas.so.13", "libcublas.so.12")]
    assert system and max(home) < min(system)
    assert len(paths) == len(set(paths))


def test_search_paths_include_the_pip_packages(monkeypatch, tmp_path):
    # nvidia-cublas (CUDA 13) installs nvidia/cu13/lib, nvidia-cublas-cu12 nvidia/cublas/lib;
    # "nvidia" is a namespace package spread over every site directory.
    (tmp_path / "nvidia" / "cu13" / "lib").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    importlib.invalidate_caches()
    paths = _cuda._cublas_search_paths()
    pip13 = str(tmp_path / "nvidia" / "cu13" / "lib" / "libcublas.so.13")
    pip12 = str(tmp_path / "nvidia" / "cublas" / "lib" / "libcublas.so.12")
    assert pip13 in paths and pip12 in paths
    assert paths.index(pip13) < paths.index("/usr/local/cuda/lib64/libcublas.so.13")


def test_load_raises_naming_the_paths_or_returns_one():
    try:
        path = _cuda._cublas_load()
    except RuntimeError as exc:
        msg = str(exc)
        assert "cuBLAS could not be loaded" in msg and "pip install nvidia-cublas" in msg
        for p in _cuda._cublas_search_paths():
            assert p in msg
    else:
        assert os.path.basename(path).startswith("libcublas.so.")


CUBLAS_SYMBOLS = ["cublasCreate_v2", "cublasSetStream_v2", "cublasSetMathMode",
                  "cublasSgemm_v2", "cublasDgemm_v2", "cublasSgemmStridedBatched",
                  "cublasDgemmStridedBatched"]


def _stub_site(tmp_path, name, symbols):
    """A site directory whose nvidia/cu13/lib/libcublas.so.13 is a stub exporting `symbols`
    (None: a file that is no library at all)."""
    lib = tmp_path / name / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    target = lib / "libcublas.so.13"
    if symbols is None:
        target.write_text("not an ELF file\n")
    else:
        src = tmp_path / f"{name}.c"
        src.write_text("".join(f"int {s}(void) {{ return 0; }}\n" for s in symbols) or
                       "int fdl_nothing(void) { return 0; }\n")
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(target), str(src)], check=True)
    return tmp_path / name, str(target)


def _load_in_subprocess(site):
    code = textwrap.dedent("""
        from fastdl._ext import _cuda
        try:
            print("LOADED", _cuda._cublas_load())
        except RuntimeError as exc:
            print("ERROR", exc)
    """)
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(fastdl.__file__))
    env["PYTHONPATH"] = os.pathsep.join([str(site), src, env.get("PYTHONPATH", "")])
    env["CUDA_HOME"] = str(site / "no-toolkit")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build stub libraries")
@pytest.mark.parametrize("kind", ["not-elf", "missing-symbols", "complete"])
def test_loader_with_stub_libraries(tmp_path, kind):
    symbols = {"not-elf": None, "missing-symbols": CUBLAS_SYMBOLS[:2],
               "complete": CUBLAS_SYMBOLS}[kind]
    site, stub = _stub_site(tmp_path, kind, symbols)
    out = _load_in_subprocess(site)
    if kind == "complete":
        # The stub comes first in the search order and has every required entry point.
        assert out.strip() == f"LOADED {stub}"
        return
    # The stub fails; a real cuBLAS later in the order may still load.
    if out.startswith("LOADED"):
        assert stub not in out
        return
    assert out.startswith("ERROR") and stub in out
    if kind == "missing-symbols":
        assert "lacks cublasSetMathMode, cublasSgemm_v2" in out
    else:
        assert "invalid ELF header" in out or "too short" in out


def test_tf32_switch_round_trips():
    before = _cuda.get_allow_tf32()
    try:
        _cuda.set_allow_tf32(True)
        assert _cuda.get_allow_tf32() is True
        _cuda.set_allow_tf32(0)
        assert _cuda.get_allow_tf32() is False
    finally:
        _cuda.set_allow_tf32(before)
    assert before is False   # the default: true FP32


# --------------------------------------------------------------------------------------
# the GPU plans on host memory (_host_* shims) against the CPU functions

MATMUL_SHAPES = [
    ((3, 4), (4, 5)), ((1, 1), (1, 1)), ((7, 33), (33, 1)), ((4,), (4, 5)), ((3, 4), (4,)),
    ((4,), (4,)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (1, 5, 4, 2)),
    ((5, 3, 4), (1, 4, 2)), ((3, 4), (6, 4, 5)), ((7, 1, 4), (7, 4, 1)), ((4,), (3, 4, 2)),
    ((3, 2, 5), (5,)), ((0, 3), (3, 4)), ((3, 0), (0, 4)), ((2, 0, 3, 4), (4, 5)),
    ((0,), (0,)), ((2, 3, 0), (2, 0, 4)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
def test_host_matmul_shapes(dtype, rng, sa, sb):
    a, b = random_array(rng, sa, dtype), random_array(rng, sb, dtype)
    got = _cuda._host_matmul(a, b)
    assert isinstance(got, np.ndarray) and got.dtype == dtype
    assert_close(got, np.matmul(a.astype(np.float64), b), dtype, scale=gemm_scale(a, b))


@pytest.mark.parametrize("la", LAYOUTS)
@pytest.mark.parametrize("lb", LAYOUTS)
@pytest.mark.parametrize("sa,sb", [((5, 7), (7, 3)), ((3, 5, 7), (3, 7, 4)),
                                   ((2, 1, 5, 7), (3, 7, 4)), ((7,), (2, 7, 3))])
def test_host_matmul_layouts(dtype, rng, la, lb, sa, sb):
    a, b = random_array(rng, sa, dtype), random_array(rng, sb, dtype)
    got = _cuda._host_matmul(layout(a, la), layout(b, lb))
    assert_close(got, np.matmul(a.astype(np.float64), b), dtype, scale=gemm_scale(a, b))


def test_host_matmul_transposed_views_are_flags_not_copies(rng):
    a = random_array(rng, (6, 5), np.float32)
    b = random_array(rng, (4, 6), np.float32)
    _counters()
    got = _cuda._host_matmul(a.T, b.T)          # both column-major
    assert _counters() == {"gemm": 1, "copy": 0}
    assert_close(got, a.T.astype(np.float64) @ b.T, np.float32, scale=gemm_scale(a.T, b.T))
    big = random_array(rng, (6, 10), np.float32)
    got = _cuda._host_matmul(big[:, ::2].T, b.T)  # row stride 2: copied once
    assert _counters() == {"gemm": 1, "copy": 1}
    assert_close(got, big[:, ::2].T.astype(np.float64) @ b.T, np.float32,
                 scale=gemm_scale(big[:, ::2].T, b.T))


@pytest.mark.parametrize("sa,sb,calls", [
    ((8, 3, 4), (4, 5), 1),            # a stack times one matrix: one tall GEMM
    ((8, 3, 4), (8, 4, 5), 1),         # one strided batch
    ((3, 4), (8, 4, 5), 1),            # a broadcast: batch stride 0
    ((2, 1, 3, 4), (1, 5, 4, 2), 2),   # a steps over the outer dim only, b over the inner
    ((2, 5, 3, 4), (2, 1, 4, 2), 2),   # b: stride 0 inside, 8 outside: no single stride
])
def test_host_matmul_batch_plans(rng, sa, sb, calls):
    a, b = random_array(rng, sa, np.float64), random_array(rng, sb, np.float64)
    _counters()
    got = _cuda._host_matmul(a, b)
    assert _counters() == {"gemm": calls, "copy": 0}
    assert_close(got, np.matmul(a, b), np.float64, scale=gemm_scale(a, b))


def test_host_matmul_non_uniform_batch_strides(rng):
    # a's batch dims transposed in memory: no single stride; still one copy at most
    base = random_array(rng, (4, 3, 5, 6), np.float32)
    a = base.transpose(1, 0, 2, 3)                # (3, 4, 5, 6), batch strides not C order
    b = random_array(rng, (3, 4, 6, 2), np.float32)
    _counters()
    got = _cuda._host_matmul(a, b)
    counted = _counters()
    assert counted["copy"] == 0 and counted["gemm"] == 3
    assert_close(got, np.matmul(a.astype(np.float64), b), np.float32, scale=gemm_scale(a, b))


def test_host_matmul_nan_inf(rng):
    a = random_array(rng, (4, 5), np.float64)
    b = random_array(rng, (5, 3), np.float64)
    a[1, 2] = np.nan
    b[0, 1] = np.inf
    got = _cuda._host_matmul(a, b)
    ref = np.matmul(a, b)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))


def test_host_matmul_vector_dot_vector_is_0d(rng):
    a, b = random_array(rng, (5,), np.float32), random_array(rng, (5,), np.float32)
    got = _cuda._host_matmul(a, b)
    assert isinstance(got, np.ndarray) and got.shape == () and got.dtype == np.float32
    assert_close(got, a.astype(np.float64) @ b, np.float32, scale=np.abs(a) @ np.abs(b))


def test_host_matmul_out(rng, dtype):
    a, b = random_array(rng, (2, 3, 4), dtype), random_array(rng, (4, 5), dtype)
    out = np.full((2, 3, 5), 7, dtype)
    got = _cuda._host_matmul(a, b, out=out)
    assert got is out
    assert_close(out, np.matmul(a.astype(np.float64), b), dtype, scale=gemm_scale(a, b))


@pytest.mark.parametrize("which", ["a", "b", "partial"])
def test_host_matmul_out_aliasing_an_input(rng, which):
    a = random_array(rng, (5, 5), np.float64)
    b = random_array(rng, (5, 5), np.float64)
    ref = a @ b
    if which == "a":
        got = _cuda._host_matmul(a, b, out=a)
        assert got is a
    elif which == "b":
        got = _cuda._host_matmul(a, b, out=b)
        assert got is b
    else:
        buf = np.concatenate([a.ravel(), np.zeros(5)])
        av = buf[:25].reshape(5, 5)
        out = buf[5:30].reshape(5, 5)   # overlaps a's last four rows
        got = _cuda._host_matmul(av, b, out=out)
    assert_close(got, ref, np.float64, scale=gemm_scale(a, b))


def test_host_matmul_k_zero_is_zeros_even_into_dirty_out():
    out = np.full((3, 4), np.nan, np.float32)
    _cuda._host_matmul(np.ones((3, 0), np.float32), np.ones((0, 4), np.float32), out=out)
    np.testing.assert_array_equal(out, 0)


def test_host_matmul_failed_call_changes_nothing(rng):
    a, b = random_array(rng, (3, 4), np.float32), random_array(rng, (4, 5), np.float32)
    out = np.full((3, 5), 7, np.float32)
    before = snapshot(a, b, out)
    with pytest.raises(TypeError):
        _cuda._host_matmul(a, b.astype(np.float64), out=out)
    with pytest.raises(ValueError):
        _cuda._host_matmul(a, b, out=np.empty((5, 3), np.float32))
    assert_unchanged(before, a, b, out)


LINEAR_SHAPES = [((5, 4), (4, 3)), ((1, 1), (1, 1)), ((4,), (4, 3)), ((2, 3, 4), (4, 7)),
                 ((33, 17), (17, 9)), ((0, 4), (4, 3)), ((5, 0), (0, 3)), ((5, 4), (4, 0)),
                 ((2, 0, 4), (4, 3))]


@pytest.mark.parametrize("xs,ws", LINEAR_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_host_linear(dtype, rng, xs, ws, bias):
    x, w = random_array(rng, xs, dtype), random_array(rng, ws, dtype)
    b = random_array(rng, (ws[1],), dtype) if bias else None
    got = _cuda._host_linear(x, w, b)
    ref = x.astype(np.float64) @ w + (0 if b is None else b)
    scale = gemm_scale(x, w) + (0 if b is None else np.abs(b))
    assert_close(got, ref, dtype, scale=scale)
    cpu = fastdl.linear(x, w, b)
    assert_close(got, cpu, dtype, scale=scale)


@pytest.mark.parametrize("lx", LAYOUTS)
@pytest.mark.parametrize("lw", LAYOUTS)
def test_host_linear_layouts(dtype, rng, lx, lw):
    x, w, b = (random_array(rng, s, dtype) for s in ((3, 6, 5), (5, 4), (4,)))
    got = _cuda._host_linear(layout(x, lx), layout(w, lw), layout(b, lx))
    assert_close(got, x.astype(np.float64) @ w + b, dtype,
                 scale=gemm_scale(x, w) + np.abs(b))


def test_host_linear_transposed_weight_is_not_copied(rng):
    x = random_array(rng, (6, 5), np.float32)
    wt = random_array(rng, (4, 5), np.float32)     # PyTorch's layout: w = wt.T
    b = random_array(rng, (4,), np.float32)
    _counters()
    got = _cuda._host_linear(x, wt.T, b)
    assert _counters() == {"gemm": 1, "copy": 0}
    assert_close(got, x.astype(np.float64) @ wt.T + b, np.float32,
                 scale=gemm_scale(x, wt.T) + np.abs(b))


def test_host_linear_out_and_alias(rng):
    x, w, b = (random_array(rng, s, np.float64) for s in ((4, 4), (4, 4), (4,)))
    ref = x @ w + b
    out = np.empty((4, 4))
    assert _cuda._host_linear(x, w, b, out=out) is out
    assert_close(out, ref, np.float64, scale=gemm_scale(x, w) + np.abs(b))
    scale = gemm_scale(x, w) + np.abs(b)
    got = _cuda._host_linear(x, w, b, out=x)     # out is x itself: computed aside, copied
    assert got is x
    assert_close(x, ref, np.float64, scale=scale)


@pytest.mark.parametrize("xs,ws", LINEAR_SHAPES)
@pytest.mark.parametrize("need_bias", [True, False])
def test_host_linear_backward(dtype, rng, xs, ws, need_bias):
    x, w = random_array(rng, xs, dtype), random_array(rng, ws, dtype)
    dy = random_array(rng, xs[:-1] + (ws[1],), dtype)
    dx, dw, db = _cuda._host_linear_backward(dy, x, w, need_bias=need_bias)
    rows = int(np.prod(xs[:-1]))
    dy2 = dy.reshape(rows, ws[1]).astype(np.float64)
    x2 = x.reshape(rows, ws[0]).astype(np.float64)
    assert_close(dx, (dy2 @ w.T).reshape(xs), dtype, scale=gemm_scale(dy2, w.T).reshape(xs))
    assert_close(dw, x2.T @ dy2, dtype, scale=gemm_scale(x2.T, dy2))
    if need_bias:
        assert_close(db, dy2.sum(0), dtype, scale=np.abs(dy2).sum(0))
    else:
        assert db is None
    cdx, cdw, cdb = fastdl.linear_backward(dy, x, w, need_bias=need_bias)
    assert_close(dx, cdx, dtype, scale=gemm_scale(dy2, w.T).reshape(xs))


@pytest.mark.parametrize("l", LAYOUTS)
def test_host_linear_backward_layouts(dtype, rng, l):
    x, w, dy = (random_array(rng, s, dtype) for s in ((3, 7, 5), (5, 4), (3, 7, 4)))
    dx, dw, db = _cuda._host_linear_backward(layout(dy, l), layout(x, l), layout(w, l))
    dy2, x2 = dy.reshape(21, 4).astype(np.float64), x.reshape(21, 5).astype(np.float64)
    assert_close(dx, (dy2 @ w.T).reshape(x.shape), dtype,
                 scale=gemm_scale(dy2, w.T).reshape(x.shape))
    assert_close(dw, x2.T @ dy2, dtype, scale=gemm_scale(x2.T, dy2))
    assert_close(db, dy2.sum(0), dtype, scale=np.abs(dy2).sum(0))


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 5, 1), (1000, 3, 1), (100000, 2, 1),
                                   (65, 40, 1), (3, 4, 7), (300, 3, 31), (2, 3, 33),
                                   (40, 2, 1000), (1, 3, 100000), (0, 4, 5), (4, 3, 0),
                                   (5, 0, 3)])
def test_host_channel_sums(dtype, rng, shape):
    x = random_array(rng, shape, dtype)
    got = _cuda._host_sum_aob(x)
    assert got.shape == (shape[1],) and got.dtype == dtype
    ref = x.astype(np.float64).sum(axis=(0, 2))
    # accumulated in double: one rounding to the output dtype
    assert_close(got, ref, dtype, scale=np.abs(x.astype(np.float64)).sum(axis=(0, 2)) * 1e-3
                 + np.abs(ref))


def test_host_channel_sums_round_once_from_double(rng):
    # accumulated in double, rounded once: the float32 result is the float64 sum rounded
    x = random_array(rng, (50, 3, 1000), np.float32)
    got = _cuda._host_sum_aob(x)
    np.testing.assert_array_equal(got, x.astype(np.float64).sum(axis=(0, 2)).astype(np.float32))
    x = random_array(rng, (20000, 5, 1), np.float32)
    got = _cuda._host_sum_aob(x)
    np.testing.assert_array_equal(got, x.astype(np.float64).sum(axis=(0, 2)).astype(np.float32))


# --------------------------------------------------------------------------------------
# on a GPU

class DevView:
    """A strided view into device memory owned by `owner` (kept alive), for non-contiguous
    device inputs without CuPy or torch."""

    def __init__(self, owner, shape, strides, offset, typestr):
        self.owner = owner
        ptr = owner.__cuda_array_interface__["data"][0] + offset
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr,
                                         "data": (ptr, False), "strides": tuple(strides),
                                         "version": 3, "stream": None}


def to_dev(a):
    """a (any NumPy layout) on the device with the same strides: C-contiguous arrays as
    fastdl DeviceArrays, others as a DevView over a copy of the bytes they span."""
    a = np.asarray(a)
    if a.flags.c_contiguous or a.size == 0:
        return fastdl.cuda.to_device(np.ascontiguousarray(a))
    lo = sum((n - 1) * s for n, s in zip(a.shape, a.strides) if s < 0)
    hi = sum((n - 1) * s for n, s in zip(a.shape, a.strides) if s > 0) + a.itemsize
    raw = np.ctypeslib.as_array((ctypes.c_uint8 * (hi - lo)).from_address(a.ctypes.data + lo))
    owner = fastdl.cuda.to_device(raw.copy())
    return DevView(owner, a.shape, a.strides, -lo, a.dtype.str)


def host(d):
    return fastdl.cuda.to_host(d)


@requires_gpu
@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES + [((129, 257), (257, 65)),
                                                   ((3, 1000, 33), (33, 1001))])
def test_gpu_matmul_shapes(dtype, rng, sa, sb):
    a, b = random_array(rng, sa, dtype), random_array(rng, sb, dtype)
    got = fastdl.matmul(to_dev(a), to_dev(b))
    assert isinstance(got, fastdl.cuda.DeviceArray)
    assert_close(host(got), np.matmul(a.astype(np.float64), b), dtype, scale=gemm_scale(a, b))


@requires_gpu
@pytest.mark.parametrize("la", LAYOUTS)
@pytest.mark.parametrize("lb", LAYOUTS)
def test_gpu_matmul_layouts(dtype, rng, la, lb):
    a, b = random_array(rng, (2, 1, 9, 7), dtype), random_array(rng, (3, 7, 5), dtype)
    got = host(fastdl.matmul(to_dev(layout(a, la)), to_dev(layout(b, lb))))
    assert_close(got, np.matmul(a.astype(np.float64), b), dtype, scale=gemm_scale(a, b))


@requires_gpu
def test_gpu_matmul_out_nan_inf_and_determinism(rng):
    a = random_array(rng, (3, 40, 300), np.float32)
    b = random_array(rng, (300, 50), np.float32)
    a[0, 1, 2] = np.nan
    b[3, 4] = np.inf
    da, db = to_dev(a), to_dev(b)
    out = fastdl.cuda.to_device(np.full((3, 40, 50), 7, np.float32))
    assert fastdl.matmul(da, db, out=out) is out
    first = host(out)
    second = host(fastdl.matmul(da, db))
    np.testing.assert_array_equal(first.view(np.uint32), second.view(np.uint32))
    ref = np.matmul(a.astype(np.float64), b)
    assert_close(first, ref, np.float32, scale=gemm_scale(np.nan_to_num(a), np.nan_to_num(b)))


@requires_gpu
def test_gpu_matmul_out_aliasing_input(rng):
    a, b = random_array(rng, (64, 64), np.float64), random_array(rng, (64, 64), np.float64)
    da = to_dev(a)
    assert fastdl.matmul(da, to_dev(b), out=da) is da
    assert_close(host(da), a @ b, np.float64, scale=gemm_scale(a, b))


@requires_gpu
def test_gpu_tf32_is_opt_in(rng):
    a = random_array(rng, (256, 512), np.float32)
    b = random_array(rng, (512, 256), np.float32)
    ref = a.astype(np.float64) @ b
    exact = host(fastdl.matmul(to_dev(a), to_dev(b)))
    assert_close(exact, ref, np.float32, scale=gemm_scale(a, b))
    _cuda.set_allow_tf32(True)
    try:
        fast = host(fastdl.matmul(to_dev(a), to_dev(b)))
    finally:
        _cuda.set_allow_tf32(False)
    np.testing.assert_allclose(fast, ref, atol=2e-2 * np.abs(ref).max())


@requires_gpu
@pytest.mark.parametrize("xs,ws", LINEAR_SHAPES + [((1000, 257), (257, 33))])
@pytest.mark.parametrize("bias", [True, False])
def test_gpu_linear(dtype, rng, xs, ws, bias):
    x, w = random_array(rng, xs, dtype), random_array(rng, ws, dtype)
    b = random_array(rng, (ws[1],), dtype) if bias else None
    got = host(fastdl.linear(to_dev(x), to_dev(w), None if b is None else to_dev(b)))
    assert_close(got, x.astype(np.float64) @ w + (0 if b is None else b), dtype,
                 scale=gemm_scale(x, w) + (0 if b is None else np.abs(b)))


@requires_gpu
@pytest.mark.parametrize("l", LAYOUTS)
def test_gpu_linear_layouts_and_out(dtype, rng, l):
    x, w, b = (random_array(rng, s, dtype) for s in ((3, 6, 5), (5, 4), (4,)))
    out = fastdl.cuda.to_device(np.zeros((3, 6, 4), dtype))
    got = fastdl.linear(to_dev(layout(x, l)), to_dev(layout(w, l)), to_dev(layout(b, l)),
                        out=out)
    assert got is out
    assert_close(host(out), x.astype(np.float64) @ w + b, dtype,
                 scale=gemm_scale(x, w) + np.abs(b))


@requires_gpu
@pytest.mark.parametrize("xs,ws", LINEAR_SHAPES + [((1000, 257), (257, 33)),
                                                   ((70000, 3), (3, 5))])
def test_gpu_linear_backward(dtype, rng, xs, ws):
    x, w = random_array(rng, xs, dtype), random_array(rng, ws, dtype)
    dy = random_array(rng, xs[:-1] + (ws[1],), dtype)
    dx, dw, db = (host(v) for v in fastdl.linear_backward(to_dev(dy), to_dev(x), to_dev(w)))
    rows = int(np.prod(xs[:-1]))
    dy2 = dy.reshape(rows, ws[1]).astype(np.float64)
    x2 = x.reshape(rows, ws[0]).astype(np.float64)
    assert_close(dx, (dy2 @ w.T).reshape(xs), dtype, scale=gemm_scale(dy2, w.T).reshape(xs))
    assert_close(dw, x2.T @ dy2, dtype, scale=gemm_scale(x2.T, dy2))
    assert_close(db, dy2.sum(0), dtype, scale=np.abs(dy2).sum(0))
    again = fastdl.linear_backward(to_dev(dy), to_dev(x), to_dev(w))
    for first, second in zip((dx, dw, db), again):
        np.testing.assert_array_equal(first, host(second))   # deterministic
    _, _, none = fastdl.linear_backward(to_dev(dy), to_dev(x), to_dev(w), need_bias=False)
    assert none is None


@requires_gpu
def test_gpu_cupy_kind_and_stream(rng):
    cupy = pytest.importorskip("cupy")
    a, b = random_array(rng, (2, 33, 17), np.float32), random_array(rng, (17, 9), np.float32)
    with cupy.cuda.Stream(non_blocking=True):
        ca, cb = cupy.asarray(a), cupy.asarray(b)
        got = fastdl.matmul(ca, cb)
        assert isinstance(got, cupy.ndarray)
        y = fastdl.linear(ca, cb, cupy.asarray(b[0, :]))
        assert isinstance(y, cupy.ndarray)
        got_h, y_h = cupy.asnumpy(got), cupy.asnumpy(y)
    assert_close(got_h, np.matmul(a.astype(np.float64), b), np.float32, scale=gemm_scale(a, b))
    assert_close(y_h, np.matmul(a.astype(np.float64), b) + b[0], np.float32,
                 scale=gemm_scale(a, b) + np.abs(b[0]))


@requires_gpu
def test_gpu_torch_kind_and_stream(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    a, b = random_array(rng, (4, 65, 33), np.float32), random_array(rng, (4, 33, 7), np.float32)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        got = fastdl.matmul(ta, tb.transpose(1, 2).contiguous().transpose(1, 2))
        assert isinstance(got, torch.Tensor) and got.is_cuda
        dx, dw, db = fastdl.linear_backward(got, ta, tb[0].T.contiguous().T)
        s.synchronize()
    assert_close(got.cpu().numpy(), np.matmul(a.astype(np.float64), b), np.float32,
                 scale=gemm_scale(a, b))
    assert isinstance(dx, torch.Tensor) and isinstance(db, torch.Tensor)
