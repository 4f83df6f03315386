"""The runner of ``python -m fastdl``: check every case against its NumPy formula, time both
(and PyTorch where installed), print the table, and optionally JSON and a bar chart.

Checking: the NumPy formula is evaluated on float64 copies of the inputs (the reference) and
fastdl's float32 result must be within the case's relative tolerance of it, measured against
the reference's largest magnitude. Timing: alternating blocks of NumPy / fastdl / torch calls
in one process (the machine may be shared: ratios in one run, medians of blocks).
"""

import json
import math
import os
import platform
import sys
import time

import numpy as np

from fastdl._selfcheck.cases import all_cases


def _torch():
    if os.environ.get("FASTDL_SELFCHECK_TORCH", "1") == "0":
        return None
    try:
        import torch
    except Exception:  # not installed, or broken: the check runs without it
        return None
    return torch


class _Progress:
    """A one-line progress bar on stderr (no dependency; silent when stderr is no terminal
    unless forced)."""

    def __init__(self, total, enabled):
        self.total, self.done, self.enabled = total, 0, enabled
        self.start = time.perf_counter()

    def step(self, label):
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / self.total)
        elapsed = time.perf_counter() - self.start
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                         f"{elapsed:5.1f}s  {label[:40]:<40}")
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _as_list(value):
    if isinstance(value, (tuple, list)):
        out = []
        for v in value:
            out.extend(_as_list(v))
        return out
    if value is None:
        return []
    return [np.asarray(value)]


def _max_error(result, reference):
    """Largest |result - reference| over the largest |reference| (finite values; NaN/inf must
    match), over every array of a (nested) tuple result."""
    worst = 0.0
    got, ref = _as_list(result), _as_list(reference)
    if len(got) != len(ref):
        return math.inf
    for a, r in zip(got, ref):
        a = np.asarray(a, np.float64)
        r = np.asarray(r, np.float64)
        if a.shape != r.shape:
            return math.inf
        finite = np.isfinite(r)
        if not np.array_equal(np.isnan(a), np.isnan(r)) or not np.array_equal(a[~finite & ~np.isnan(r)],
                                                                           r[~finite & ~np.isnan(r)]):
            return math.inf
        if finite.any():
            scale = max(float(np.max(np.abs(r[finite]))), 1e-30)
            worst = max(worst, float(np.max(np.abs(a[finite] - r[finite]))) / scale)
    return worst


def _copy(value, float_dtype=None):
    """A copy of an input (arrays, and lists of arrays), float32 arrays cast to float_dtype."""
    if isinstance(value, list):
        return [_copy(v, float_dtype) for v in value]
    if isinstance(value, np.ndarray):
        if float_dtype is not None and value.dtype == np.float32:
            return value.astype(float_dtype)
        return value.copy()
    return value


def _time(fn, ns, budget):
    """Seconds per call: repeat until `budget` seconds, at least 1 call."""
    fn(ns)
    t0 = time.perf_counter()
    n = 0
    while True:
        fn(ns)
        n += 1
        t = time.perf_counter() - t0
        if t >= budget:
            return t / n


def run_case(case, torch, quick, timing=True):
    """One row: {'op', 'size', 'numpy_ms', 'fastdl_ms', 'torch_ms', 'speedup', 'error', 'ok'}."""
    rng = np.random.default_rng(0)
    ns = case.build(rng, np.float32, quick)
    row = {"op": case.op, "size": case.size(quick), "dtype": "float32"}
    try:
        # the check runs on copies (in-place ops update their arrays; the timing reuses them)
        f_ns = {k: _copy(v) for k, v in ns.items()}
        got = case.fastdl(f_ns)
        ref_ns = {k: _copy(v, np.float64) for k, v in ns.items()}
        ref = (case.reference or case.numpy)(ref_ns)
        if case.outputs:
            got = tuple(f_ns[k] for k in case.outputs)
            ref = tuple(ref_ns[k] for k in case.outputs)
        err = _max_error(got, ref)
        row["error"] = err
        row["ok"] = bool(err <= case.rtol)
    except Exception as exc:  # a crash is a failed check, reported, not the end of the run
        row.update(error=math.inf, ok=False, exception=f"{type(exc).__name__}: {exc}")
        return row
    if not timing:
        return row
    budget = case.budget * (0.25 if quick else 1.0)
    sides = [("numpy", case.numpy), ("fastdl", case.fastdl)]
    tns = None
    if torch is not None and case.torch is not None:
        tns = {**ns, **{"t_" + k: torch.from_numpy(v) for k, v in ns.items()
                        if isinstance(v, np.ndarray) and v.dtype != object}}
        tns["torch"] = torch
        sides.append(("torch", case.torch))
    samples = {name: [] for name, _ in sides}
    blocks = 3 if quick else 5
    for _ in range(blocks):
        for name, fn in sides:
            samples[name].append(_time(fn, tns if name == "torch" else dict(ns), budget / blocks))
    for name, _ in sides:
        row[f"{name}_ms"] = 1e3 * float(np.median(samples[name]))
    row["speedup"] = row["numpy_ms"] / row["fastdl_ms"]
    if "torch_ms" in row:
        row["torch_speedup"] = row["torch_ms"] / row["fastdl_ms"]
    return row


def _fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.3g}" if v >= 0.01 else f"{v:.2e}"


def table(rows, with_torch):
    head = ["op", "size", "NumPy ms", "fastdl ms"]
    if with_torch:
        head += ["torch ms"]
    head += ["speed-up"]
    if with_torch:
        head += ["vs torch"]
    head += ["max error", "check"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["op"], r["size"], _fmt_ms(r.get("numpy_ms")), _fmt_ms(r.get("fastdl_ms"))]
        if with_torch:
            cells.append(_fmt_ms(r.get("torch_ms")))
        cells.append(f"{r['speedup']:.2f}x" if "speedup" in r else "-")
        if with_torch:
            cells.append(f"{r['torch_speedup']:.2f}x" if "torch_speedup" in r else "-")
        cells.append(f"{r['error']:.1e}")
        cells.append("ok" if r["ok"] else "FAIL " + r.get("exception", ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("python -m fastdl --plot needs matplotlib (pip install matplotlib)")
    timed = [r for r in rows if "speedup" in r]
    labels = [f"{r['op']} {r['size']}" for r in timed]
    fig, ax = plt.subplots(figsize=(9, max(3, 0.28 * len(timed))))
    y = np.arange(len(timed))
    ax.barh(y, [r["speedup"] for r in timed], color="tab:blue", label="vs NumPy")
    if any("torch_speedup" in r for r in timed):
        ax.scatter([r.get("torch_speedup", np.nan) for r in timed], y, color="tab:red",
                   zorder=3, s=12, label="vs PyTorch")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up of fastdl (x, log scale)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(quick=False, as_json=False, plot_path=None, use_torch=True, match=None,
         progress=None, timing=True):
    import fastdl
    torch = _torch() if use_torch else None
    cases = [c for c in all_cases() if match is None or match in c.op]
    if not as_json:
        fastdl.show_config()
        print()
        print(f"Checking {len(cases)} ops against their NumPy formulas "
              f"({'quick' if quick else 'full'} sizes, float32, {fastdl.get_num_threads()} "
              f"threads{', with PyTorch ' + torch.__version__ if torch else ''})\n")
    bar = _Progress(len(cases), sys.stderr.isatty() if progress is None else progress)
    rows = []
    t0 = time.perf_counter()
    for case in cases:
        rows.append(run_case(case, torch, quick, timing))
        bar.step(case.op)
    bar.close()
    failed = [r for r in rows if not r["ok"]]
    if as_json:
        print(json.dumps({"fastdl": fastdl.__version__, "machine": platform.processor() or
                          platform.machine(), "threads": fastdl.get_num_threads(),
                          "torch": torch.__version__ if torch else None, "quick": quick,
                          "seconds": time.perf_counter() - t0, "rows": rows,
                          "failed": len(failed)}, indent=1, default=float))
    else:
        print(table(rows, torch is not None))
        print(f"\n{len(rows) - len(failed)}/{len(rows)} checks passed in "
              f"{time.perf_counter() - t0:.1f} s; speed-up = NumPy ms / fastdl ms.")
    if plot_path:
        plot(rows, plot_path)
    return 1 if failed else 0
