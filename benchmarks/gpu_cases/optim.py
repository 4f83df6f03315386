"""GPU cases: optimiser steps, fastdl's multi-tensor kernels against torch.optim (fused and
foreach implementations) on the same shapes.

Sizes of the CPU comparison (asv_benchmarks/compare_cases/optim.py): an Adam step over one
10M float32 parameter (class and functional adam_), over 200 parameters of 50K, sgd_ and
momentum_ on 10M, and one 16-element parameter (the per-step overhead). Each side updates
its own parameters and state. ``bytes`` is what the update must move: Adam reads w, g, m, v
and writes w, m, v (7 arrays), momentum 5, sgd 3.
"""

import math

import numpy as np

N = 10_000_000


def _zeros(env, shape):
    if env.torch is not None:
        return env.torch.zeros(shape, device="cuda")
    if env.cupy is not None:
        return env.cupy.zeros(shape, dtype="float32")
    return env.fastdl.cuda.to_device(np.zeros(shape, np.float32))


def _torch_opt(torch, params, grads, kind, lr=1e-3):
    ps = [p.clone() for p in params]
    for p, g in zip(ps, grads):
        p.grad = g
    kw = {"fused": True} if kind == "fused" else {"foreach": True}
    return torch.optim.Adam(ps, lr=lr, **kw)


def _adam_cases(env, name, size, shapes):
    fd, torch = env.fastdl, env.torch
    ws = [env.randn(s, "float32", 10 + i) for i, s in enumerate(shapes)]
    gs = [env.randn(s, "float32", 1000 + i) for i, s in enumerate(shapes)]
    n = sum(math.prod(s) for s in shapes)
    opt = fd.optim.Adam(ws, lr=1e-3)
    impls = {"fastdl": lambda: opt.step(gs)}
    if torch is not None:
        fused = _torch_opt(torch, ws, gs, "fused")
        foreach = _torch_opt(torch, ws, gs, "foreach")
        impls["torch"] = fused.step
        yield {"name": f"{name} (torch foreach)", "size": size, "bytes": 7 * n * 4,
               "flops": None, "impls": {"fastdl": impls["fastdl"], "torch": foreach.step}}
    yield {"name": f"{name} (torch fused)", "size": size, "bytes": 7 * n * 4, "flops": None,
           "impls": impls}


def cases(env):
    fd, torch, cupy = env.fastdl, env.torch, env.cupy
    n = 1_000_000 if env.quick else N
    size = "1M" if env.quick else "10M"
    yield from _adam_cases(env, "optim adam step", size, [(n,)])
    k = 20 if env.quick else 200
    yield from _adam_cases(env, f"optim adam step, {k} arrays", f"{k}x50K", [(50_000,)] * k)
    yield from _adam_cases(env, "optim adam step, one 16-element param", "16", [(16,)])

    # functional adam_ (a step counter in a closure)
    w, g = env.randn((n,), "float32", 0), env.randn((n,), "float32", 1)
    m, v = _zeros(env, (n,)), _zeros(env, (n,))
    t = [0]

    def adam_fd():
        t[0] += 1
        fd.optim.adam_(w, g, m, v, t[0], lr=1e-3)
    impls = {"fastdl": adam_fd}
    if torch is not None:
        impls["torch"] = _torch_opt(torch, [w], [g], "fused").step
    yield {"name": "optim adam_ functional (torch fused)", "size": size, "bytes": 7 * n * 4,
           "flops": None, "impls": impls}

    w2 = env.randn((n,), "float32", 4)
    impls = {"fastdl": lambda: fd.optim.sgd_(w2, g, 0.01)}
    if torch is not None:
        tw = w2.clone()
        impls["torch"] = lambda: tw.add_(g, alpha=-0.01)
    if cupy is not None:
        cw = cupy.asarray(w2).copy()
        cg = cupy.asarray(g)
        impls["cupy"] = lambda: cupy.subtract(cw, 0.01 * cg, out=cw)
    yield {"name": "optim sgd_", "size": size, "bytes": 3 * n * 4, "flops": None,
           "impls": impls}

    w3, v3 = env.randn((n,), "float32", 5), env.randn((n,), "float32", 6)
    impls = {"fastdl": lambda: fd.optim.momentum_(w3, g, v3, 0.01, 0.9)}
    if torch is not None:
        tw3, tv3 = w3.clone(), v3.clone()

        def mom_torch():
            tv3.mul_(0.9).add_(g, alpha=-0.01)
            tw3.add_(tv3)
        impls["torch"] = mom_torch
    yield {"name": "optim momentum_", "size": size, "bytes": 5 * n * 4, "flops": None,
           "impls": impls}
