"""GPU benchmark cases, one module per op family, read by benchmarks/gpu.py.

Each module defines ``cases(env)`` yielding dicts::

    {"name": str, "size": str, "bytes": int | None, "flops": int | None,
     "impls": {"fastdl": thunk, "torch": thunk, "cupy": thunk}}

Thunks take no arguments and queue the op (no synchronisation). ``env`` has ``fastdl``,
``torch`` / ``cupy`` (modules with a usable GPU, or None), ``randn(shape, dtype, seed)`` (a
device array of the preferred kind: torch, else CuPy, else fastdl.cuda.DeviceArray) and
``quick``.
"""
