"""Speed check of fastdl's vector math (include/fastdl/vmath.h) against NumPy / SciPy.

Not a test (no assertions; pytest does not collect it). Run from the repository root:

    PYTHONPATH=src python tests/speed_vmath.py [n] [repeats]

Times ``fastdl._ext._vmath.{exp,log,tanh,erf}`` (one thread: a single loop over the array,
the SIMD clone this CPU selects) and ``np.exp``, ``np.log``, ``np.tanh`` (NumPy's own SIMD
loops) and ``scipy.special.erf``, alternating them in one run, on float32 and float64 input of
n elements (default 16M: DRAM-bound, with a plain copy of the same bytes as the floor) and of
16K elements (cache-resident: the arithmetic alone), and prints the best and median time per
call and the ratio NumPy / fastdl (> 1: fastdl is faster).
"""

import statistics
import sys
import time

import numpy as np
import scipy.special

from fastdl._ext import _vmath

REFERENCE = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "erf": scipy.special.erf}


def _inputs(rng, n, dtype):
    return {
        "exp": rng.uniform(-80, 80, n).astype(dtype),
        "log": rng.uniform(0, 100, n).astype(dtype),
        "tanh": (rng.standard_normal(n) * 3).astype(dtype),
        "erf": (rng.standard_normal(n) * 2).astype(dtype),
    }


def _per_call(fn, calls):
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def _row(label, ours, theirs, unit, scale):
    a, b = min(ours), min(theirs)
    print(f"{label:16s} {a * scale:8.3f} /{statistics.median(ours) * scale:8.3f} "
          f"{b * scale:8.3f} /{statistics.median(theirs) * scale:8.3f} {b / a:7.2f}   {unit}")


def main():
    n = int(float(sys.argv[1])) if len(sys.argv) > 1 else 16 * 2**20
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    rng = np.random.default_rng(0)
    for size, calls, unit, scale in ((n, 1, "ms per call", 1e3),
                                     (16384, 400, "ns per element", 1e9 / 16384)):
        print(f"\nn = {size}, best / median of {repeats} rounds, one thread")
        print(f"{'':16s} {'fastdl':>18s} {'numpy/scipy':>18s} {'ratio':>7s}")
        for dtype in (np.float32, np.float64):
            name = np.dtype(dtype).name
            inputs = _inputs(rng, size, dtype)
            if size == n:
                out = np.empty(size, dtype)
                src = inputs["exp"]
                copies = [_per_call(lambda: np.copyto(out, src), 1) for _ in range(repeats)]
                allocs = [_per_call(lambda: src.copy(), 1) for _ in range(repeats)]
                _row(f"{name} copy", allocs, copies, "x.copy() / np.copyto: the floor", scale)
            for fname, x in inputs.items():
                ours_fn, theirs_fn = getattr(_vmath, fname), REFERENCE[fname]
                ours_fn(x), theirs_fn(x)  # warm up (page faults, dispatch)
                ours, theirs = [], []
                for _ in range(repeats):  # alternate, so drifting machine load hits both
                    ours.append(_per_call(lambda: ours_fn(x), calls))
                    theirs.append(_per_call(lambda: theirs_fn(x), calls))
                _row(f"{name} {fname}", ours, theirs, unit, scale)


if __name__ == "__main__":
    main()
