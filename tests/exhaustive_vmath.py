"""Exhaustive float32 accuracy check of fastdl's vector math (include/fastdl/vmath.h).

Not collected by pytest (too slow for the suite: minutes). Run from the repository root:

    PYTHONPATH=src python tests/exhaustive_vmath.py [--march ARCH] [--stride N] [--jobs J] [fn ...]

Every one of the 2**32 float32 bit patterns (or every N-th with --stride) goes through
fdl_expf, fdl_logf, fdl_tanhf, fdl_erff, fdl_expm1f and fdl_erfcf (or those named), and each
result is compared with the float64 reference (NumPy's exp/log/tanh/expm1, scipy.special's
erf and erfc)
in units of the float32 ULP of the reference (denormal results: the ULP is 2**-149).
Results whose reference rounds to +-inf must be that infinity; NaN must give NaN.

By default the functions run through ``fastdl._ext._vmath``, i.e. the FDL_DISPATCH clone the
running CPU selects. ``--march x86-64`` (or ``x86-64-v3``, ``x86-64-v4``, ``native``) instead
compiles the header with ``cc -O3 -fno-math-errno -march=ARCH`` into a temporary library,
e.g. to check the baseline clone (SSE2, no FMA contraction) on an AVX-512 machine.
"""

import argparse
import ctypes
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy.special

FUNCTIONS = {
    "exp": np.exp,
    "log": np.log,
    "tanh": np.tanh,
    "erf": scipy.special.erf,
    "expm1": np.expm1,
    "erfc": scipy.special.erfc,
}
CHUNK = 1 << 22

_C_SOURCE = """
#include "fastdl/vmath.h"
#define W(F, G) void F(const float *x, float *y, ptrdiff_t n) \\
    { for (ptrdiff_t i = 0; i < n; ++i) y[i] = G(x[i]); }
W(c_exp, fdl_expf) W(c_log, fdl_logf) W(c_tanh, fdl_tanhf) W(c_erf, fdl_erff) W(c_expm1, fdl_expm1f)
W(c_erfc, fdl_erfcf)
"""

_impl = None


def _build_library(march):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tmp = tempfile.mkdtemp(prefix="fastdl-vmath-")
    src, lib = os.path.join(tmp, "v.c"), os.path.join(tmp, "v.so")
    with open(src, "w") as f:
        f.write(_C_SOURCE)
    subprocess.check_call([os.environ.get("CC", "cc"), "-O3", "-fno-math-errno", f"-march={march}",
                           "-shared", "-fPIC", "-I", os.path.join(root, "include"), src, "-o", lib])
    return lib


def _init(lib):
    global _impl
    if lib is None:
        from fastdl._ext import _vmath
        _impl = {name: getattr(_vmath, name) for name in FUNCTIONS}
        return
    so = ctypes.CDLL(lib)
    _impl = {}
    for name in FUNCTIONS:
        cfun = getattr(so, f"c_{name}")
        cfun.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ssize_t]

        def call(x, cfun=cfun):
            x = np.ascontiguousarray(x, dtype=np.float32)
            y = np.empty_like(x)
            cfun(x.ctypes.data, y.ctypes.data, x.size)
            return y
        _impl[name] = call


def ulp_error(y, ref):
    """|y - ref| in float32 ULPs of ref (float64 arrays); +-inf results count as +-2**128."""
    _, e = np.frexp(ref)
    ulp = np.ldexp(1.0, np.maximum(e, -125) - 24)
    y = np.where(np.isinf(y), np.copysign(2.0**128, y), y)
    return np.abs(y - ref) / ulp


def check_chunk(args):
    start, stride, names = args
    bits = np.arange(start, min(start + CHUNK * stride, 1 << 32), stride, dtype=np.uint64)
    x = bits.astype(np.uint32).view(np.float32)
    with np.errstate(invalid="ignore"):  # signalling NaNs
        x64 = x.astype(np.float64)
    out = {}
    for name in names:
        y = _impl[name](x).astype(np.float64)
        with np.errstate(all="ignore"):
            ref = FUNCTIONS[name](x64)
            ref32 = ref.astype(np.float32)
        nan = np.isnan(ref)
        inf = np.isinf(ref32) & ~nan
        bad_special = int(np.count_nonzero(nan != np.isnan(y)) +
                          np.count_nonzero(inf & (y != ref32)))
        fin = ~(nan | inf)
        with np.errstate(all="ignore"):
            err = ulp_error(y[fin], ref[fin])
        i = int(np.argmax(err)) if err.size else 0
        worst = (float(err[i]), float(x[fin][i])) if err.size else (0.0, 0.0)
        out[name] = (worst, bad_special, int(np.count_nonzero(err > 0.5)), int(fin.sum()))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("functions", nargs="*", default=list(FUNCTIONS))
    parser.add_argument("--march", default=None)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    lib = _build_library(args.march) if args.march else None
    starts = range(0, 1 << 32, CHUNK * args.stride)
    total = {name: [(0.0, 0.0), 0, 0, 0] for name in args.functions}
    t0 = time.time()
    with multiprocessing.Pool(args.jobs, initializer=_init, initargs=(lib,)) as pool:
        work = [(s, args.stride, args.functions) for s in starts]
        for res in pool.imap_unordered(check_chunk, work):
            for name, (worst, bad, over_half, n) in res.items():
                acc = total[name]
                if worst[0] > acc[0][0]:
                    acc[0] = worst
                acc[1] += bad
                acc[2] += over_half
                acc[3] += n
    where = f"-march={args.march}" if args.march else "fastdl._ext._vmath (run-time dispatch)"
    print(f"float32, every {args.stride}-th bit pattern, {where}, {time.time() - t0:.0f} s")
    for name, ((err, xw), bad, over_half, n) in total.items():
        bits = int(np.float32(xw).view(np.uint32))
        print(f"  {name:6s} max {err:.3f} ULP at x = {xw!r} ({bits:#010x}); "
              f"{over_half} of {n} finite results not correctly rounded; "
              f"{bad} wrong NaN/inf results")
    sys.exit(1 if any(t[1] for t in total.values()) else 0)


if __name__ == "__main__":
    main()
