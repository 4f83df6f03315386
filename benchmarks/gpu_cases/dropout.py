"""GPU cases: dropout and its backward, fastdl's Philox kernels against PyTorch CUDA
(``torch.nn.functional.dropout``, ``torch.native_dropout`` for the forward with its mask,
``aten.native_dropout_backward``). CuPy has no dropout: no CuPy column.

Sizes of the CPU comparison (asv_benchmarks/compare_cases/dropout.py): 16M elements, p = 0.5,
float32 and float64, and a tiny 16-element call. ``bytes``: x read and y written, plus the
bool mask where one is written or read; fastdl's backward from the seed regenerates the mask
(reads dy, writes dx), where torch has to read a stored mask.
"""

N = 1 << 24
P = 0.5


def cases(env):
    fd = env.fastdl
    torch = env.torch
    n = (1 << 20) if env.quick else N
    size = "1M" if env.quick else "16M"
    for dtype in (("float32",) if env.quick else ("float32", "float64")):
        item = 4 if dtype == "float32" else 8
        x = env.randn((n,), dtype, 0)
        dy = env.randn((n,), dtype, 1)
        tx = torch.as_tensor(x, device="cuda") if torch is not None else None
        tdy = torch.as_tensor(dy, device="cuda") if torch is not None else None
        sz = f"{size} {dtype}"

        impls = {"fastdl": lambda x=x: fd.dropout(x, P, seed=1)}
        if torch is not None:
            impls["torch"] = lambda t=tx: torch.nn.functional.dropout(t, P, True)
        yield {"name": f"dropout p={P}", "size": sz, "bytes": 2 * n * item, "flops": None,
               "impls": impls}

        impls = {"fastdl": lambda x=x: fd.dropout(x, P, seed=1, return_mask=True)}
        if torch is not None:
            impls["torch"] = lambda t=tx: torch.native_dropout(t, P, True)
        yield {"name": f"dropout p={P} + bool mask", "size": sz, "bytes": (2 * item + 1) * n,
               "flops": None, "impls": impls}

        out = fd.dropout(x, P, seed=1)
        impls = {"fastdl": lambda x=x, o=out: fd.dropout(x, P, seed=1, out=o)}
        yield {"name": f"dropout p={P} out=", "size": sz, "bytes": 2 * n * item, "flops": None,
               "impls": impls}

        _, mask = fd.dropout(x, P, seed=1, return_mask=True)
        impls = {"fastdl": lambda d=dy, m=mask: fd.dropout_backward(d, m, P)}
        if torch is not None:
            tm = torch.as_tensor(mask, device="cuda")
            impls["torch"] = (lambda d=tdy, m=tm:
                              torch.ops.aten.native_dropout_backward(d, m, 1 / (1 - P)))
        yield {"name": "dropout_backward from mask", "size": sz, "bytes": (2 * item + 1) * n,
               "flops": None, "impls": impls}

        impls = {"fastdl": lambda d=dy: fd.dropout_backward(d, 1, P)}
        if torch is not None:
            impls["torch"] = (lambda d=tdy, m=tm:
                              torch.ops.aten.native_dropout_backward(d, m, 1 / (1 - P)))
        yield {"name": "dropout_backward from seed (torch: from its mask)", "size": sz,
               "bytes": 2 * n * item, "flops": None, "impls": impls}

    x = env.randn((16,), "float32", 2)
    impls = {"fastdl": lambda x=x: fd.dropout(x, P, seed=1)}
    if torch is not None:
        tx = torch.as_tensor(x, device="cuda")
        impls["torch"] = lambda t=tx: torch.nn.functional.dropout(t, P, True)
    yield {"name": f"dropout p={P} (tiny)", "size": "16 float32", "bytes": None, "flops": None,
           "impls": impls}
