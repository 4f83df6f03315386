"""GPU benchmarks: fastdl's CUDA kernels beside PyTorch CUDA and CuPy, where installed.

    python benchmarks/gpu.py [--quick] [--match TEXT] [--json FILE] [--repeat N]

Each case module in benchmarks/gpu_cases/ yields cases (see gpu_cases/__init__.py); every
implementation of a case is timed on the same inputs with CUDA events (or a device
synchronize around the calls without torch/CuPy), after warm-up calls, as the median of
``--repeat`` timed batches. The table gives milliseconds, fastdl's speed-up over each peer
(> 1 = fastdl faster), and achieved GB/s or GFLOP/s where the case states its bytes or FLOPs.
Also prints the device's copy bandwidth (a device-to-device copy of 256 MiB), the floor for
elementwise ops.
"""

import argparse
import importlib
import json
import pkgutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _optional(name):
    try:
        return importlib.import_module(name)
    except Exception:  # not installed, or installed without a usable GPU
        return None


class Env:
    """What case modules get: libraries, a device-array factory, the quick flag."""

    def __init__(self, quick):
        import fastdl
        self.fastdl = fastdl
        torch = _optional("torch")
        self.torch = torch if torch is not None and torch.cuda.is_available() else None
        cupy = _optional("cupy")
        try:
            self.cupy = cupy if cupy is not None and cupy.cuda.runtime.getDeviceCount() else None
        except Exception:
            self.cupy = None
        self.quick = quick

    def randn(self, shape, dtype="float32", seed=0):
        host = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
        if self.torch is not None:
            return self.torch.from_numpy(host).cuda()
        if self.cupy is not None:
            return self.cupy.asarray(host)
        return self.fastdl.cuda.to_device(host)

    def synchronize(self):
        if self.torch is not None:
            self.torch.cuda.synchronize()
        elif self.cupy is not None:
            self.cupy.cuda.runtime.deviceSynchronize()
        else:
            self.fastdl.cuda.synchronize()


def time_ms(env, fn, repeat, target_s=0.05):
    """Median milliseconds per call over `repeat` batches of calls."""
    fn()
    env.synchronize()
    t0 = time.perf_counter()
    fn()
    env.synchronize()
    one = max(time.perf_counter() - t0, 1e-6)
    calls = max(1, min(1000, int(target_s / one)))
    samples = []
    for _ in range(repeat):
        if env.torch is not None:
            start = env.torch.cuda.Event(enable_timing=True)
            end = env.torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / calls)
        else:
            env.synchronize()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            env.synchronize()
            samples.append((time.perf_counter() - t0) * 1e3 / calls)
    return statistics.median(samples)


def copy_bandwidth(env, repeat):
    n = (256 << 20) // 4
    x = env.randn((n,))
    if env.torch is not None:
        y = env.torch.empty_like(x)
        fn = lambda: y.copy_(x)  # noqa: E731
    elif env.cupy is not None:
        y = env.cupy.empty_like(x)
        fn = lambda: env.cupy.copyto(y, x)  # noqa: E731
    else:
        return None
    ms = time_ms(env, fn, repeat)
    return 2 * n * 4 / ms / 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--match", default="")
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)

    import fastdl
    if not fastdl.cuda.is_available():
        print(f"no usable GPU: fastdl.cuda: {fastdl.cuda.info()}")
        return 0
    env = Env(args.quick)
    print(f"fastdl {fastdl.__version__}; {fastdl.cuda.info()}")
    print(f"peers: torch {'yes' if env.torch else 'no'}, cupy {'yes' if env.cupy else 'no'}")
    bw = copy_bandwidth(env, args.repeat)
    if bw:
        print(f"device copy bandwidth (256 MiB, read + write): {bw:.0f} GB/s")
    rows = []
    import gpu_cases
    for info in pkgutil.iter_modules(gpu_cases.__path__):
        mod = importlib.import_module(f"gpu_cases.{info.name}")
        for case in mod.cases(env):
            name = f"{case['name']} {case['size']}"
            if args.match and args.match not in name:
                continue
            times = {impl: time_ms(env, fn, args.repeat) for impl, fn in case["impls"].items()
                     if fn is not None}
            row = {"case": case["name"], "size": case["size"], "ms": times}
            f = times.get("fastdl")
            if f:
                for peer in ("torch", "cupy"):
                    if peer in times:
                        row[f"vs_{peer}"] = times[peer] / f
                if case.get("bytes"):
                    row["GB/s"] = case["bytes"] / f / 1e6
                    if bw:
                        row["of_copy"] = row["GB/s"] / bw
                if case.get("flops"):
                    row["GFLOP/s"] = case["flops"] / f / 1e6
            rows.append(row)
            extras = " ".join(f"{k}={v:.2f}" for k, v in row.items()
                              if isinstance(v, float))
            ms = " ".join(f"{k}={v:.3f}ms" for k, v in times.items())
            print(f"{name:48s} {ms} {extras}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": fastdl.cuda.info(), "copy_GBps": bw, "rows": rows}, fh,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
