"""GPU cases: batch_norm (training, inference, backward) and layer_norm (forward, backward),
fastdl's kernels against PyTorch CUDA's native kernels (CuPy has no normalisation op).

Sizes of the CPU comparison (asv_benchmarks/compare_cases/norm_pool.py): batch_norm on
32x128x28x28 and 64x64x56x56 float32 (and the first in float64), layer_norm on 8x512x768.
``bytes`` is the least the op must move (forward: x read once, y written once; backward: dy
and x read, dx written), so ``of_copy`` compares with a copy of those bytes. Training
batch_norm and both backward passes read their inputs twice by design (statistics, then the
elementwise pass), so they sit below 1.0 of copy even when bandwidth-bound.
"""

import numpy as np

EPS = 1e-5


def _ones(env, shape, dtype):
    if env.torch is not None:
        return env.torch.ones(shape, dtype=getattr(env.torch, dtype), device="cuda")
    if env.cupy is not None:
        return env.cupy.ones(shape, dtype=dtype)
    return env.fastdl.cuda.to_device(np.ones(shape, dtype))


def _bn_cases(env, shape, dtype):
    fd, torch = env.fastdl, env.torch
    C = shape[1]
    isz = np.dtype(dtype).itemsize
    n = int(np.prod(shape))
    size = "x".join(map(str, shape)) + ("" if dtype == "float32" else " float64")
    x = env.randn(shape, dtype, 0)
    dy = env.randn(shape, dtype, 1)
    g = _ones(env, (C,), dtype)
    b = env.randn((C,), dtype, 2)
    rm, rv = env.randn((C,), dtype, 3), _ones(env, (C,), dtype)
    _, m, inv = fd.batch_norm(x, g, b, None, None, return_stats=True)
    F = torch.nn.functional if torch is not None else None
    aten = torch.ops.aten if torch is not None else None
    trm, trv = (rm.clone(), rv.clone()) if torch is not None else (None, None)

    def impls(fd_fn, t_fn):
        out = {"fastdl": fd_fn}
        if torch is not None:
            out["torch"] = t_fn
        return out

    yield {"name": "batch_norm training forward", "size": size, "bytes": 2 * n * isz,
           "flops": None,
           "impls": impls(lambda: fd.batch_norm(x, g, b, rm, rv),
                          lambda: F.batch_norm(x, trm, trv, g, b, training=True, eps=EPS))}
    yield {"name": "batch_norm inference", "size": size, "bytes": 2 * n * isz, "flops": None,
           "impls": impls(lambda: fd.batch_norm(x, g, b, rm, rv, training=False),
                          lambda: F.batch_norm(x, trm, trv, g, b, training=False, eps=EPS))}
    yield {"name": "batch_norm backward (dx,dgamma,dbeta)", "size": size,
           "bytes": 3 * n * isz, "flops": None,
           "impls": impls(lambda: fd.batch_norm_backward(dy, x, g, m, inv),
                          lambda: aten.native_batch_norm_backward(
                              dy, x, g, None, None, m, inv, True, EPS, [True, True, True]))}


def _ln_cases(env, shape, dtype="float32"):
    fd, torch = env.fastdl, env.torch
    D = shape[-1]
    isz = np.dtype(dtype).itemsize
    n = int(np.prod(shape))
    size = "x".join(map(str, shape))
    x = env.randn(shape, dtype, 0)
    dy = env.randn(shape, dtype, 1)
    g = _ones(env, (D,), dtype)
    b = env.randn((D,), dtype, 2)
    _, m, inv = fd.layer_norm(x, D, g, b, return_stats=True)
    impl = {"fastdl": lambda: fd.layer_norm(x, D, g, b)}
    bimpl = {"fastdl": lambda: fd.layer_norm_backward(dy, x, D, g, m, inv)}
    if torch is not None:
        F = torch.nn.functional
        m3, inv3 = m.unsqueeze(-1), inv.unsqueeze(-1)
        impl["torch"] = lambda: F.layer_norm(x, (D,), g, b, EPS)
        bimpl["torch"] = lambda: torch.ops.aten.native_layer_norm_backward(
            dy, x, (D,), m3, inv3, g, b, [True, True, True])
    yield {"name": "layer_norm", "size": size, "bytes": 2 * n * isz, "flops": None,
           "impls": impl}
    yield {"name": "layer_norm backward (dx,dgamma,dbeta)", "size": size,
           "bytes": 3 * n * isz, "flops": None, "impls": bimpl}


def cases(env):
    if env.quick:
        yield from _bn_cases(env, (8, 64, 28, 28), "float32")
        yield from _bn_cases(env, (4096, 256), "float32")
        yield from _ln_cases(env, (2, 512, 768))
        return
    for shape in ((32, 128, 28, 28), (64, 64, 56, 56)):
        yield from _bn_cases(env, shape, "float32")
    yield from _bn_cases(env, (32, 128, 28, 28), "float64")
    yield from _bn_cases(env, (32, 512, 7, 7), "float32")
    yield from _bn_cases(env, (65536, 256), "float32")
    yield from _ln_cases(env, (8, 512, 768))
    yield from _ln_cases(env, (4, 1024, 4096))
