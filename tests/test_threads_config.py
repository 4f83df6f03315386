"""Threads and configuration (API.md, "Threads and configuration")."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import threadpoolctl

import fastdl
from conftest import requires_openmp


def test_get_num_threads_is_a_positive_int():
    n = fastdl.get_num_threads()
    assert isinstance(n, int) and n >= 1


@requires_openmp
@pytest.mark.parametrize("n", [1, 2, 3, np.int64(2)], ids=str)
def test_set_num_threads(n):
    before = fastdl.get_num_threads()
    try:
        fastdl.set_num_threads(n)
        assert fastdl.get_num_threads() == int(n)
    finally:
        fastdl.set_num_threads(before)
    assert fastdl.get_num_threads() == before


@pytest.mark.parametrize("n", [0, -1, -100])
def test_set_num_threads_below_one_is_a_value_error(n):
    before = fastdl.get_num_threads()
    with pytest.raises(ValueError):
        fastdl.set_num_threads(n)
    assert fastdl.get_num_threads() == before


@pytest.mark.parametrize("n", [1.5, 2.0, "2", None, [2]], ids=repr)
def test_set_num_threads_non_int_is_a_type_error(n):
    before = fastdl.get_num_threads()
    with pytest.raises(TypeError):
        fastdl.set_num_threads(n)
    assert fastdl.get_num_threads() == before


@requires_openmp
def test_threads_context_manager_sets_and_restores():
    before = fastdl.get_num_threads()
    target = 1 if before != 1 else 2
    with fastdl.threads(target):
        assert fastdl.get_num_threads() == target
        with fastdl.threads(3):
            assert fastdl.get_num_threads() == 3
        assert fastdl.get_num_threads() == target
    assert fastdl.get_num_threads() == before


@requires_openmp
def test_threads_context_manager_restores_when_the_block_raises():
    before = fastdl.get_num_threads()
    target = 1 if before != 1 else 2

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with fastdl.threads(target):
            assert fastdl.get_num_threads() == target
            raise Boom
    assert fastdl.get_num_threads() == before


@pytest.mark.parametrize("n,exc", [(0, ValueError), (1.5, TypeError)])
def test_threads_context_manager_validates(n, exc):
    before = fastdl.get_num_threads()
    with pytest.raises(exc):
        with fastdl.threads(n):
            pass
    assert fastdl.get_num_threads() == before


@requires_openmp
def test_threadpoolctl_sees_an_openmp_runtime():
    info = threadpoolctl.threadpool_info()
    assert any(entry["internal_api"] == "openmp" for entry in info), info


@requires_openmp
def test_threadpoolctl_controls_fastdls_own_openmp_library():
    # The OpenMP library fastdl's kernels are linked to must be one threadpoolctl lists
    # (otherwise threadpool_limits would change another runtime and not fastdl's).
    from fastdl._config import config
    library = config()["openmp_library"]
    assert library, "fastdl reports no OpenMP library"
    seen = {os.path.realpath(entry["filepath"]) for entry in threadpoolctl.threadpool_info()
            if entry["internal_api"] == "openmp"}
    assert os.path.realpath(library) in seen, (library, seen)


@requires_openmp
def test_threadpool_limits_drives_get_num_threads():
    before = fastdl.get_num_threads()
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fastdl.get_num_threads() == 1
        a = np.ones((64, 64))
        assert np.array_equal(fastdl.matmul(a, a), np.full((64, 64), 64.0))
    assert fastdl.get_num_threads() == before
    with threadpoolctl.threadpool_limits(2, user_api="openmp"):
        assert fastdl.get_num_threads() == 2
    assert fastdl.get_num_threads() == before


def test_show_config_prints_the_build(capsys):
    fastdl.show_config()
    text = capsys.readouterr().out
    lines = [line.lower() for line in text.splitlines()]
    for word in ("blas", "simd", "openmp", "cuda", "compiler"):
        assert any(word in line for line in lines), f"no line mentions {word!r}:\n{text}"
    assert fastdl.__version__ in text


def _run_module(*args):
    # Run against the same fastdl this test imported (an in-place build or an install).
    root = str(Path(fastdl.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "fastdl", *args], capture_output=True,
                          text=True, env=env, cwd=root, timeout=120)


def test_python_m_fastdl_info():
    proc = _run_module("--info")
    assert proc.returncode == 0, proc.stderr
    assert fastdl.__version__ in proc.stdout
    assert "blas" in proc.stdout.lower() and "openmp" in proc.stdout.lower()


def test_python_m_fastdl_rejects_unknown_options():
    proc = _run_module("--no-such-option")
    assert proc.returncode != 0


def test_version_is_a_string():
    assert isinstance(fastdl.__version__, str) and fastdl.__version__
    assert fastdl.__version__[0].isdigit()


def test_cuda_is_not_available_without_the_cuda_extension():
    import importlib.util
    if importlib.util.find_spec("fastdl._ext._cuda") is not None:
        pytest.skip("this build has fastdl's CUDA extension")
    assert fastdl.cuda.is_available() is False


def test_concurrent_calls_from_python_threads_give_identical_results():
    # The kernels release the GIL and pin BLAS to one thread with a refcount shared by
    # concurrent calls: results from several Python threads at once must not change.
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 500))
    b = rng.standard_normal((500, 400))
    dy = rng.standard_normal((300, 400))
    expected_mm = fastdl.matmul(a, b)
    expected_bw = fastdl.linear_backward(dy, a, b)
    with ThreadPoolExecutor(4) as pool:
        mms = list(pool.map(lambda _: fastdl.matmul(a, b), range(12)))
        bws = list(pool.map(lambda _: fastdl.linear_backward(dy, a, b), range(6)))
    assert all(r.tobytes() == expected_mm.tobytes() for r in mms)
    for result in bws:
        assert all(r.tobytes() == e.tobytes() for r, e in zip(result, expected_bw))


def test_fastdl_leaves_the_users_blas_thread_setting_alone():
    # fastdl pins BLAS to one thread during its calls and must restore the user's setting.
    def blas_threads():
        return sorted((e["filepath"], e["num_threads"]) for e in threadpoolctl.threadpool_info()
                      if e["user_api"] == "blas")

    a = np.ones((300, 500))
    b = np.ones((500, 400))
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        fastdl.matmul(a, b)
        fastdl.linear(a, b)
        fastdl.linear_backward(np.ones((300, 400)), a, b)
        assert blas_threads() == before
