"""GPU cases: matmul, linear and linear_backward (cuBLAS) against torch and CuPy.

Sizes are the CPU benchmarks' (asv_benchmarks/benchmarks/bench_linalg.py): square matmul
512 and 1024 (plus 4096, where a GEMM is compute-bound), linear 256x1024x1024 and
32x512x512 (rows x in x out, w of shape (in, out)), its backward at 256x1024x1024, and the
batched 64 x (128x128 @ 128x128). float32 runs in true FP32 on every side: torch with
allow_tf32 off (its default for matmul), CuPy without TF32 (its default), fastdl by default.
"""


def _flops_mm(m, n, k, batch=1):
    return 2 * m * n * k * batch


def cases(env):
    fd, torch, cupy = env.fastdl, env.torch, env.cupy
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = False
    dtypes = ("float32",) if env.quick else ("float32", "float64")
    squares = (1024,) if env.quick else (512, 1024, 4096)

    for dt in dtypes:
        isz = 4 if dt == "float32" else 8
        for n in squares:
            a, b = env.randn((n, n), dt, seed=0), env.randn((n, n), dt, seed=1)
            impls = {"fastdl": lambda a=a, b=b: fd.matmul(a, b)}
            if torch is not None:
                impls["torch"] = lambda a=a, b=b: torch.matmul(a, b)
            if cupy is not None:
                ca, cb = cupy.asarray(a), cupy.asarray(b)
                impls["cupy"] = lambda a=ca, b=cb: cupy.matmul(a, b)
            yield {"name": f"matmul {dt}", "size": f"{n}x{n}x{n}", "bytes": 3 * n * n * isz,
                   "flops": _flops_mm(n, n, n), "impls": impls}

        batch, m = 64, 128
        a, b = env.randn((batch, m, m), dt, seed=0), env.randn((batch, m, m), dt, seed=1)
        impls = {"fastdl": lambda a=a, b=b: fd.matmul(a, b)}
        if torch is not None:
            impls["torch"] = lambda a=a, b=b: torch.matmul(a, b)
        if cupy is not None:
            ca, cb = cupy.asarray(a), cupy.asarray(b)
            impls["cupy"] = lambda a=ca, b=cb: cupy.matmul(a, b)
        yield {"name": f"batched matmul {dt}", "size": f"{batch}x{m}x{m}x{m}",
               "bytes": 3 * batch * m * m * isz, "flops": _flops_mm(m, m, m, batch),
               "impls": impls}

        shapes = ((256, 1024, 1024),) if env.quick else ((256, 1024, 1024), (32, 512, 512))
        for rows, n_in, n_out in shapes:
            x = env.randn((rows, n_in), dt, seed=0)
            w = env.randn((n_in, n_out), dt, seed=1)
            bias = env.randn((n_out,), dt, seed=2)
            impls = {"fastdl": lambda x=x, w=w, bias=bias: fd.linear(x, w, bias)}
            if torch is not None:
                # torch's layout is w^T (out, in): the same GEMM on the transposed view
                wt = w.t()
                impls["torch"] = (lambda x=x, wt=wt, bias=bias:
                                  torch.nn.functional.linear(x, wt, bias))
            if cupy is not None:
                cx, cw, cbias = cupy.asarray(x), cupy.asarray(w), cupy.asarray(bias)
                impls["cupy"] = lambda x=cx, w=cw, b=cbias: x @ w + b
            yield {"name": f"linear {dt}", "size": f"{rows}x{n_in}x{n_out}",
                   "bytes": (rows * n_in + n_in * n_out + 2 * rows * n_out) * isz,
                   "flops": _flops_mm(rows, n_out, n_in), "impls": impls}

        rows, n_in, n_out = 256, 1024, 1024
        x = env.randn((rows, n_in), dt, seed=0)
        w = env.randn((n_in, n_out), dt, seed=1)
        dy = env.randn((rows, n_out), dt, seed=3)
        impls = {"fastdl": lambda dy=dy, x=x, w=w: fd.linear_backward(dy, x, w)}
        if torch is not None:
            impls["torch"] = lambda dy=dy, x=x, w=w: (dy @ w.t(), x.t() @ dy, dy.sum(0))
        if cupy is not None:
            cdy, cx, cw = cupy.asarray(dy), cupy.asarray(x), cupy.asarray(w)
            impls["cupy"] = lambda dy=cdy, x=cx, w=cw: (dy @ w.T, x.T @ dy, dy.sum(0))
        yield {"name": f"linear backward (dx,dw,db) {dt}", "size": f"{rows}x{n_in}x{n_out}",
               "bytes": None, "flops": 2 * _flops_mm(rows, n_out, n_in), "impls": impls}
