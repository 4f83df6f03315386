#!/usr/bin/env python
"""NumPy vs fastdl (and PyTorch CPU when ``import torch`` works), side by side in ONE process.

    python asv_benchmarks/compare.py [--threads N] [--quick] [--no-torch] [--match TEXT]

The cases are those of ``benchmarks/bench_linalg.py``: matmul, linear (``Y = X @ W + b``),
linear backward, the batched einsum ``'bij,bjk->bik'`` and two tiny calls that measure per-call
overhead. The NumPy side is the cheat-sheet formula; torch runs on the same buffers
(``torch.from_numpy``). torch is optional and never a dependency of fastdl.

Method (PERF.md):
* every library is pinned to ``--threads`` threads (threadpoolctl for both OpenBLAS builds and
  the OpenMP runtimes, ``fastdl.set_num_threads``, ``torch.set_num_threads``);
* each side gets 2 warm-up calls and its result is checked against NumPy's;
* the sides are then timed in alternating blocks (N F T N F T ...), 6 blocks and 0.6 s per side
  per case (3 and 0.15 s with ``--quick``), with a 0.2 s pause before each block so that OpenBLAS's
  spinning idle threads (about 0.1 s after a threaded call) do not steal a core from the next
  library;
* a sample is one call for the big cases and a loop of many calls (``timeit``, no per-call
  Python overhead of the harness) for the tiny ones; each figure is the median of its samples.

Columns: ``numpy/fastdl`` and ``torch/fastdl`` above 1 mean fastdl is faster. ``GFLOP/s`` is
2mnk per GEMM over the median time. ``err`` is max|fastdl - numpy| / max|numpy| over all
outputs. ``iqr`` is the inter-quartile range of each side's samples over its median. A row
marked with a dagger ran while other processes used more than 10% of the CPUs (``/proc/stat``);
its timings are unreliable.

The imported fastdl is this checkout's in-place build when there is one (``python setup.py
build_ext --inplace`` or ``pip install -e``), otherwise the installed one; the header says which.
"""

import argparse
import datetime
import os
import platform
import sys
import time
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

import numpy as np  # noqa: E402


def _import_fastdl():
    """This checkout's fastdl if it is built in place, else the installed one."""
    if os.path.isfile(os.path.join(SRC, "fastdl", "__init__.py")):
        sys.path.insert(0, SRC)
        try:
            import fastdl
            return fastdl
        except ImportError:
            sys.path.remove(SRC)
            for name in [m for m in sys.modules if m == "fastdl" or m.startswith("fastdl.")]:
                del sys.modules[name]
    import fastdl
    return fastdl


fastdl = _import_fastdl()
sys.path.insert(0, HERE)
from benchmarks import _common  # noqa: E402


# --------------------------------------------------------------------------------------
# cases

class Case:
    """One row: a name, a size label, a dtype, and a statement per library over a namespace.

    ``build(dtype)`` returns the namespace (NumPy arrays; torch tensors are added as ``t_<name>``
    views of the same buffers). ``stmts[impl]`` is timed with ``timeit``; ``results[impl]`` is
    an expression evaluated after running the statement once, for the accuracy check
    (defaults to the statement itself).
    """

    def __init__(self, op, size, dtype, build, stmts, results=None, flops=None, tiny=False):
        self.op, self.size, self.dtype = op, size, dtype
        self.build, self.stmts = build, stmts
        self.results = results or {}
        self.flops, self.tiny = flops, tiny
        self.load = None  # share of the CPUs other processes used while it ran


def _matmul_ns(n):
    def build(dtype):
        return {"a": _common.randn((n, n), dtype, 0), "b": _common.randn((n, n), dtype, 1),
                "c_np": np.empty((n, n), dtype), "c_fd": np.empty((n, n), dtype),
                "c_t": np.empty((n, n), dtype)}
    return build


def _linear_ns(rows, n_in, n_out):
    def build(dtype):
        x, w, b = _common.linear_inputs(rows, n_in, n_out, dtype)
        return {"x": x, "w": w, "b": b, "dy": _common.randn((rows, n_out), dtype, 3),
                "y_np": np.empty((rows, n_out), dtype), "y_fd": np.empty((rows, n_out), dtype),
                "y_t": np.empty((rows, n_out), dtype)}
    return build


def _bmm_ns(batch, m, k, n):
    def build(dtype):
        return {"a": _common.randn((batch, m, k), dtype, 0),
                "b": _common.randn((batch, k, n), dtype, 1)}
    return build


MATMUL = {"numpy": "np.matmul(a, b)", "fastdl": "fastdl.matmul(a, b)",
          "torch": "torch.matmul(t_a, t_b)"}
MATMUL_OUT = {"numpy": "np.matmul(a, b, out=c_np)", "fastdl": "fastdl.matmul(a, b, out=c_fd)",
              "torch": "torch.matmul(t_a, t_b, out=t_c_t)"}
MATMUL_OUT_RES = {"numpy": "c_np", "fastdl": "c_fd", "torch": "t_c_t"}
LINEAR = {"numpy": "x @ w + b", "fastdl": "fastdl.linear(x, w, b)",
          "torch": "torch.addmm(t_b, t_x, t_w)"}
LINEAR_OUT = {"numpy": "np.matmul(x, w, out=y_np); np.add(y_np, b, out=y_np)",
              "fastdl": "fastdl.linear(x, w, b, out=y_fd)",
              "torch": "torch.addmm(t_b, t_x, t_w, out=t_y_t)"}
LINEAR_OUT_RES = {"numpy": "y_np", "fastdl": "y_fd", "torch": "t_y_t"}
LINEAR_BWD = {"numpy": "dy @ w.T, x.T @ dy, dy.sum(0)",
              "fastdl": "fastdl.linear_backward(dy, x, w)",
              "torch": "t_dy @ t_w.T, t_x.T @ t_dy, t_dy.sum(0)"}
EINSUM = {"numpy": "np.einsum('bij,bjk->bik', a, b)",
          "fastdl": "fastdl.einsum('bij,bjk->bik', a, b)",
          "torch": "torch.einsum('bij,bjk->bik', t_a, t_b)"}
BMM = {"numpy": "np.matmul(a, b)", "fastdl": "fastdl.einsum('bij,bjk->bik', a, b)",
       "torch": "torch.bmm(t_a, t_b)"}


def cases():
    out = []
    for n, dtypes in ((1024, ("float32", "float64")), (512, ("float32", "float64"))):
        for dt in dtypes:
            out.append(Case("matmul", f"{n}^3", dt, _matmul_ns(n), MATMUL, flops=2.0 * n ** 3))
    out.append(Case("matmul out=", "1024^3", "float32", _matmul_ns(1024), MATMUL_OUT,
                    MATMUL_OUT_RES, flops=2.0 * 1024 ** 3))
    for rows, k, n, dtypes in ((256, 1024, 1024, ("float32", "float64")),
                               (32, 512, 512, ("float32",))):
        for dt in dtypes:
            out.append(Case("linear X@W+b", f"{rows}x{k} @ {k}x{n}", dt,
                            _linear_ns(rows, k, n), LINEAR, flops=2.0 * rows * k * n))
    out.append(Case("linear out=", "256x1024 @ 1024x1024", "float32",
                    _linear_ns(256, 1024, 1024), LINEAR_OUT, LINEAR_OUT_RES,
                    flops=2.0 * 256 * 1024 * 1024))
    for dt in ("float32", "float64"):
        out.append(Case("linear backward (dX,dW,db)", "256x1024 @ 1024x1024", dt,
                        _linear_ns(256, 1024, 1024), LINEAR_BWD,
                        flops=4.0 * 256 * 1024 * 1024))
    bmm_flops = 2.0 * 64 * 128 ** 3
    out.append(Case("einsum 'bij,bjk->bik'", "64x(128x128 @ 128x128)", "float32",
                    _bmm_ns(64, 128, 128, 128), EINSUM, flops=bmm_flops))
    out.append(Case("bmm (np.matmul / fastdl.einsum / torch.bmm)", "64x(128x128 @ 128x128)", "float32",
                    _bmm_ns(64, 128, 128, 128), BMM, flops=bmm_flops))
    # per-call overhead
    out.append(Case("matmul", "4x4 @ 4x4", "float32", _matmul_ns(4), MATMUL, tiny=True))
    out.append(Case("linear X@W+b", "1x16 @ 16x16 + b", "float32", _linear_ns(1, 16, 16),
                    LINEAR, tiny=True))
    return out + _family_cases()


def _family_cases():
    """Cases of the other op families: compare_cases/<family>.py, each with a cases(Case) that
    returns a list of Case objects (Case is passed in; inputs come from benchmarks._common)."""
    import importlib
    found = []
    folder = os.path.join(HERE, "compare_cases")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py") and not name.startswith("_"):
            module = importlib.import_module(f"compare_cases.{name[:-3]}")
            found.extend(module.cases(Case))
    return found


# --------------------------------------------------------------------------------------
# measurement

def _as_arrays(value):
    if not isinstance(value, (tuple, list)):
        value = (value,)
    return [v.numpy() if hasattr(v, "numpy") else np.asarray(v) for v in value]


def _rel_err(ref, got):
    ref, got = _as_arrays(ref), _as_arrays(got)
    if len(ref) != len(got):
        return float("inf")
    num = max(float(np.max(np.abs(g.astype(np.float64) - r))) for r, g in zip(ref, got))
    den = max(float(np.max(np.abs(r))) for r in ref)
    return num / den if den else num


def measure(case, impls, torch, per_side, blocks, pause):
    ns = {"np": np, "fastdl": fastdl}
    data = case.build(case.dtype)
    ns.update(data)
    if torch is not None:
        ns["torch"] = torch
        ns.update({f"t_{k}": torch.from_numpy(v) for k, v in data.items()})

    # Warm up (2 calls each) and check every side against NumPy's result.
    results = {}
    for impl in impls:
        stmt = case.stmts[impl]
        exec(stmt, ns)
        exec(stmt, ns)
        results[impl] = eval(case.results.get(impl, stmt), ns)
    errs = {impl: _rel_err(results["numpy"], results[impl]) for impl in impls}
    tol = 1e-4 if case.dtype == "float32" else 1e-10
    for impl, err in errs.items():
        if not err <= tol:
            raise AssertionError(f"{case.op} {case.size} {case.dtype}: {impl} differs from "
                                 f"numpy by {err:.2e} (relative)")

    # Calls per sample: 1 for big cases, ~2 ms worth of calls for tiny ones.
    timers, number = {}, {}
    for impl in impls:
        timers[impl] = timeit.Timer(case.stmts[impl], globals=ns)
        if case.tiny:
            t = timers[impl].timeit(1000) / 1000
            number[impl] = max(1000, int(2e-3 / max(t, 1e-9)))
        else:
            number[impl] = 1

    block = per_side / blocks
    samples = {impl: [] for impl in impls}
    for _ in range(blocks):
        for impl in impls:
            time.sleep(pause)
            timer, n = timers[impl], number[impl]
            start = time.perf_counter()
            while True:
                samples[impl].append(timer.timeit(n) / n)
                if time.perf_counter() - start >= block:
                    break
    stats = {}
    for impl in impls:
        s = np.asarray(samples[impl])
        med = float(np.median(s))
        q1, q3 = np.percentile(s, [25, 75])
        stats[impl] = {"median": med, "iqr": float(q3 - q1) / med, "n": len(s) * number[impl]}
    return stats, errs


class OtherLoad:
    """Share of the machine's CPU time that other processes used while a block ran.

    Busy time of all CPUs (/proc/stat: user, nice, system, irq, softirq, steal) minus this
    process's own CPU time (all its threads), over wall time x CPU count. Linux only; None
    elsewhere. Spinning BLAS/OpenMP threads of this process count as its own.
    """

    def __init__(self):
        self.share = None

    @staticmethod
    def _busy():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    def __enter__(self):
        self._t0, self._busy0, self._own0 = time.perf_counter(), self._busy(), os.times()
        return self

    def __exit__(self, *exc):
        busy = self._busy()
        if busy is None or self._busy0 is None:
            return False
        wall = time.perf_counter() - self._t0
        own1 = os.times()
        own = (own1.user - self._own0.user) + (own1.system - self._own0.system)
        other = (busy - self._busy0) - own
        self.share = max(0.0, other / (wall * (os.cpu_count() or 1)))
        return False


# --------------------------------------------------------------------------------------
# report

def _fmt(v):
    if v != v:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


LOAD_WARN = 0.10  # share of the CPUs used by other processes above which a row is flagged


def _flag(case):
    return " †" if case.load is not None and case.load > LOAD_WARN else ""


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="threads for every library (default 2)")
    p.add_argument("--quick", action="store_true", help="0.15 s per side per case, not 0.6 s")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    p.add_argument("--match", default="", help="only cases whose op or size contains TEXT")
    args = p.parse_args(argv)

    torch = None
    if not args.no_torch:
        try:
            import torch
        except Exception:  # not installed, or broken: compare NumPy and fastdl only
            torch = None
    if torch is not None:
        torch.set_num_threads(args.threads)
    threads = _common.pin_threads(args.threads, force=True)
    impls = ["numpy", "fastdl"] + (["torch"] if torch is not None else [])

    per_side, blocks = (0.15, 3) if args.quick else (0.6, 6)
    pause = 0.2

    cfg = fastdl._config.config()
    print(f"# fastdl vs NumPy{' vs PyTorch' if torch is not None else ''}, "
          f"{threads} thread{'s' if threads != 1 else ''}")
    print()
    print(f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; "
          f"machine: {_cpu_model()}, {os.cpu_count()} CPUs; Python {platform.python_version()}")
    np_blas = next((lib for lib in _threadpool_info()
                    if "numpy" in lib.get("filepath", "") and lib.get("user_api") == "blas"), None)
    np_blas_txt = (f"OpenBLAS {np_blas.get('version')} ({os.path.basename(np_blas['filepath'])})"
                   if np_blas else "see threadpoolctl")
    print(f"- numpy {np.__version__}: {np_blas_txt}")
    provider = cfg.get("blas_provider", "scipy cython_blas").split(" (")[0]
    blas_cfg = " ".join(cfg["blas_config"].split()[:2])
    print(f"- fastdl {fastdl.__version__} ({os.path.dirname(fastdl.__file__)}): BLAS provider "
          f"{provider!r} ({blas_cfg}, {os.path.basename(cfg['blas_library'])}), "
          f"SIMD {cfg['simd_level']}")
    if torch is not None:
        mkl = "MKL" if torch.backends.mkl.is_available() else "no MKL"
        print(f"- torch {torch.__version__}: {mkl} for GEMM")
    print(f"- method: alternating blocks ({' '.join(i[0].upper() for i in impls)} x {blocks}), "
          f"{per_side:g} s per side per case, {pause:g} s pause between libraries, medians; "
          f"ratios > 1 mean fastdl is faster")
    print()

    selected = [c for c in cases() if args.match in c.op or args.match in c.size]
    rows_big, rows_tiny = [], []
    for case in selected:
        with OtherLoad() as load:
            stats, errs = measure(case, impls, torch, per_side, blocks, pause)
        case.load = load.share
        (rows_tiny if case.tiny else rows_big).append((case, stats, errs))
        if sys.stderr.isatty():
            print(f"  measured {case.op} {case.size} {case.dtype}", file=sys.stderr, flush=True)

    has_t = torch is not None

    def ratio_cells(stats):
        fd = stats["fastdl"]["median"]
        cells = [f"**{stats['numpy']['median'] / fd:.2f}**"]
        if has_t:
            cells.append(f"**{stats['torch']['median'] / fd:.2f}**")
        return cells

    def iqr_cell(stats):
        return "/".join(f"{100 * stats[i]['iqr']:.0f}%" for i in impls)

    names = " | ".join(impls)
    iqr_head = "iqr " + "/".join(i[0].upper() for i in impls)
    if rows_big:
        head = (["op", "size", "dtype"] + [f"{i} ms" for i in impls] + ["numpy/fastdl"]
                + (["torch/fastdl"] if has_t else []) + [f"GFLOP/s {names.replace(' | ', '/')}",
                                                         "fastdl err", iqr_head])
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for case, stats, errs in rows_big:
            cells = [case.op + _flag(case), case.size, case.dtype]
            cells += [_fmt(stats[i]["median"] * 1e3) for i in impls]
            cells += ratio_cells(stats)
            if case.flops:
                cells.append(" / ".join(f"{case.flops / stats[i]['median'] / 1e9:.0f}"
                                        for i in impls))
            else:
                cells.append("-")
            cells.append(f"{errs['fastdl']:.0e}")
            cells.append(iqr_cell(stats))
            print("| " + " | ".join(cells) + " |")
        print()
    if rows_tiny:
        print("Per-call overhead on tiny inputs (µs per call; each sample is a loop of "
              "thousands of calls):")
        print()
        head = (["op", "size", "dtype"] + [f"{i} µs" for i in impls] + ["numpy/fastdl"]
                + (["torch/fastdl"] if has_t else []) + [iqr_head])
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for case, stats, errs in rows_tiny:
            cells = [case.op + _flag(case), case.size, case.dtype]
            cells += [_fmt(stats[i]["median"] * 1e6) for i in impls]
            cells += ratio_cells(stats)
            cells.append(iqr_cell(stats))
            print("| " + " | ".join(cells) + " |")
        print()
    loads = [(c.load, c) for c in selected if c.load is not None]
    if loads:
        mean = sum(v for v, _ in loads) / len(loads)
        worst, worst_case = max(loads, key=lambda t: t[0])
        print(f"Other processes used {100 * mean:.0f}% of the {os.cpu_count()} CPUs on average "
              f"while these cases ran (at most {100 * worst:.0f}%, in {worst_case.op} "
              f"{worst_case.size} {worst_case.dtype}).", end="")
        if worst > LOAD_WARN:
            print(f" Rows marked † ran while they used more than {100 * LOAD_WARN:.0f}%: "
                  f"their timings are unreliable; re-run on a quiet machine.")
        else:
            print()
    return 0


def _threadpool_info():
    from threadpoolctl import threadpool_info
    return threadpool_info()


if __name__ == "__main__":
    sys.exit(main())
