"""Helpers shared by fastdl's benchmark files (bench_*.py) and by ``compare.py``.

* ``IMPLS``, ``DTYPES``: the standard parameter values of a benchmark class.
* ``pin_threads(n)``: run NumPy's BLAS, the BLAS fastdl calls and fastdl's OpenMP loops on
  the same number of threads (``THREADS`` by default: 2, or ``$FASTDL_BENCH_THREADS``).
* ``randn`` / ``uniform`` / ``rng`` / ``linear_inputs``: seeded inputs, built in the requested
  dtype directly (never by casting a float64 array, which would double the setup's memory).
* ``cached(key, build)``: build a benchmark's inputs once per process.

How asv (asv_runner >= 0.3) times a benchmark that has a ``setup``: it re-runs ``setup`` before
every sample and times one call per sample (asv#966). So ``setup`` must be cheap and must hand
back the same, already warm arrays each time: wrap input building in ``cached`` and call
``pin_threads()`` (a no-op once the process is pinned) first. Sub-microsecond calls cannot be
measured one at a time: a class for those has no ``setup`` at all (see
``bench_linalg.TinyCalls``), so asv times them in batches.
"""

import os

import numpy as np

IMPLS = ("numpy", "fastdl")
DTYPES = ("float32", "float64")

#: Threads for both libraries; 2 is the core count of the project's machines (PERF.md).
THREADS = int(os.environ.get("FASTDL_BENCH_THREADS", "2"))

_limits = None  # the active threadpoolctl limiter, kept alive for the life of the process
_pinned = None  # the thread count this process is pinned to
_cache = {}


def pin_threads(n=None, force=False):
    """Pin every thread pool a benchmark touches to ``n`` threads (default ``THREADS``).

    * threadpoolctl sets the limit of every BLAS it finds loaded (NumPy's bundled
      ``scipy_openblas64_``, which fastdl's default ``numpy`` provider also calls, and
      SciPy's ``scipy_openblas``, which its ``scipy`` provider calls through
      ``scipy.linalg.cython_blas``) and of the OpenMP runtimes (fastdl's libgomp, and
      torch's bundled libgomp when torch is loaded);
    * ``fastdl.set_num_threads(n)`` sets fastdl's own OpenMP thread count for the calling
      thread (fastdl runs its BLAS calls inside its own threads, one BLAS thread each, and
      restores the library's thread count afterwards, so NumPy's GEMMs keep ``n`` threads).

    Cheap once done: a later call with the same ``n`` does nothing unless ``force`` (call it
    again with ``force=True`` after loading another library, e.g. torch). Returns ``n``.
    """
    global _limits, _pinned
    n = THREADS if n is None else int(n)
    import fastdl  # noqa: F401  (loads the BLAS libraries, so threadpoolctl sees them)

    if not force and _pinned == n and fastdl.get_num_threads() == n:
        return n
    from threadpoolctl import threadpool_limits

    if _limits is not None:
        _limits.restore_original_limits()
    _limits = threadpool_limits(limits=n)
    fastdl.set_num_threads(n)
    _pinned = n
    return n


def cached(key, build):
    """``build()`` the first time ``key`` is asked for in this process, the same value after.

    asv re-runs ``setup`` before every sample; with this, every sample gets the arrays the
    first one got (built once, warm in cache), as a loop of calls in a program would.
    """
    try:
        return _cache[key]
    except KeyError:
        value = _cache[key] = build()
        return value


def rng(seed=0):
    """A seeded NumPy Generator (PCG64)."""
    return np.random.default_rng(seed)


def randn(shape, dtype="float32", seed=0, scale=1.0):
    """Standard-normal array of ``shape`` in ``dtype`` (times ``scale``), seeded."""
    dtype = np.dtype(dtype)
    out = rng(seed).standard_normal(shape, dtype=dtype)
    if scale != 1.0:
        out *= dtype.type(scale)
    return out


def uniform(shape, dtype="float32", seed=0, low=-1.0, high=1.0):
    """Uniform array on [low, high) of ``shape`` in ``dtype``, seeded."""
    dtype = np.dtype(dtype)
    out = rng(seed).random(shape, dtype=dtype)
    out *= dtype.type(high - low)
    out += dtype.type(low)
    return out


def linear_inputs(rows, n_in, n_out, dtype="float32", seed=0):
    """``(X, W, b)`` for ``Y = X @ W + b``: X (rows, in), W (in, out) scaled as He init, b (out,)."""
    x = randn((rows, n_in), dtype, seed)
    w = randn((n_in, n_out), dtype, seed + 1, scale=(2.0 / n_in) ** 0.5)
    b = randn((n_out,), dtype, seed + 2, scale=0.1)
    return x, w, b


def blas_summary():
    """One line per BLAS / OpenMP library loaded in this process (for reports)."""
    from threadpoolctl import threadpool_info

    lines = []
    for lib in threadpool_info():
        name = os.path.basename(lib.get("filepath", "?"))
        extra = ""
        if lib.get("internal_api") == "openblas":
            extra = f" {lib.get('version')} {lib.get('threading_layer')} {lib.get('architecture')}"
        lines.append(f"{lib.get('internal_api')}: {name}{extra}, {lib.get('num_threads')} threads")
    return lines
