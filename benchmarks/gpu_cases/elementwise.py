"""GPU cases: the elementwise family (activations, their fused backward, broadcasting
arithmetic), fastdl's kernels against PyTorch CUDA and, where CuPy has the op as one ufunc,
CuPy.

Sizes of the CPU comparison (asv_benchmarks/compare_cases/elementwise.py): activations and
their backward on 16M float32 elements, the arithmetic on 4096x4096 (same shape, a bias row,
the cheat sheet's outer broadcast (64,256,1) x (1,1,1024)), and tiny 16-element calls (the
per-call overhead); also float64 for a few. ``bytes`` is what the op must move (each input
read once, the result written once), so ``of_copy`` is the fraction of the device's copy
bandwidth reached (issue 8 asks >= 0.8 for the elementwise ops).
"""

N = 1 << 24   # 16M


def _activations(fd, torch):
    """(name, fastdl thunk factory, torch thunk factory, cupy ufunc name or None)."""
    F = torch.nn.functional if torch is not None else None
    return [
        ("relu", lambda x: fd.relu(x), lambda t: torch.relu(t), "relu"),
        ("leaky_relu", lambda x: fd.leaky_relu(x, 0.01), lambda t: F.leaky_relu(t, 0.01), None),
        ("sigmoid", lambda x: fd.sigmoid(x), lambda t: torch.sigmoid(t), None),
        ("tanh", lambda x: fd.tanh(x), lambda t: torch.tanh(t), "tanh"),
        ("gelu (erf)", lambda x: fd.gelu(x), lambda t: F.gelu(t), None),
        ("gelu (tanh form)", lambda x: fd.gelu(x, "tanh"),
         lambda t: F.gelu(t, approximate="tanh"), None),
        ("silu", lambda x: fd.silu(x), lambda t: F.silu(t), None),
    ]


def _backward(fd, torch):
    aten = torch.ops.aten if torch is not None else None
    return [
        ("relu backward", lambda dy, x: fd.relu_backward(dy, x),
         lambda dy, x: aten.threshold_backward(dy, x, 0)),
        ("leaky_relu backward", lambda dy, x: fd.leaky_relu_backward(dy, x, 0.01),
         lambda dy, x: aten.leaky_relu_backward(dy, x, 0.01, False)),
        ("sigmoid backward (from y)", lambda dy, y: fd.sigmoid_backward(dy, y),
         lambda dy, y: aten.sigmoid_backward(dy, y)),
        ("tanh backward (from y)", lambda dy, y: fd.tanh_backward(dy, y),
         lambda dy, y: aten.tanh_backward(dy, y)),
        ("gelu backward (erf)", lambda dy, x: fd.gelu_backward(dy, x),
         lambda dy, x: aten.gelu_backward(dy, x)),
        ("gelu backward (tanh form)", lambda dy, x: fd.gelu_backward(dy, x, "tanh"),
         lambda dy, x: aten.gelu_backward(dy, x, approximate="tanh")),
        ("silu backward", lambda dy, x: fd.silu_backward(dy, x),
         lambda dy, x: aten.silu_backward(dy, x)),
    ]


def _cupy_ufunc(cupy, name):
    if name == "relu":
        return lambda c: cupy.maximum(c, 0)
    return getattr(cupy, name)


def cases(env):
    fd = env.fastdl
    torch, cupy = env.torch, env.cupy
    n = (1 << 20) if env.quick else N
    size = "1M" if env.quick else "16M"
    dtypes = ("float32",) if env.quick else ("float32", "float64")
    for dtype in dtypes:
        item = 4 if dtype == "float32" else 8
        x = env.randn((n,), dtype, 0)
        dy = env.randn((n,), dtype, 1)
        tx = torch.as_tensor(x, device="cuda") if torch is not None else None
        tdy = torch.as_tensor(dy, device="cuda") if torch is not None else None
        cx = cupy.asarray(x) if cupy is not None else None
        acts = _activations(fd, torch)
        if dtype == "float64":
            acts = acts[:1] + acts[4:5]            # relu and the erf GELU only
        for name, f_fd, f_t, cu in acts:
            impls = {"fastdl": (lambda f=f_fd, x=x: f(x))}
            if torch is not None:
                impls["torch"] = lambda f=f_t, t=tx: f(t)
            if cupy is not None and cu is not None:
                impls["cupy"] = lambda f=_cupy_ufunc(cupy, cu), c=cx: f(c)
            yield {"name": name, "size": f"{size} {dtype}", "bytes": 2 * n * item,
                   "flops": None, "impls": impls}
        # the same with a preallocated result (no allocator in the timing)
        out = fd.relu(x)
        impls = {"fastdl": lambda x=x, o=out: fd.gelu(x, out=o)}
        if torch is not None:
            to = torch.as_tensor(out, device="cuda")
            impls["torch"] = lambda t=tx, o=to: torch.ops.aten.gelu.out(t, out=o)
        yield {"name": "gelu (erf) out=", "size": f"{size} {dtype}", "bytes": 2 * n * item,
               "flops": None, "impls": impls}
        if dtype != "float32":
            continue
        for name, f_fd, f_t in _backward(fd, torch):
            second = x
            impls = {"fastdl": (lambda f=f_fd, a=dy, b=second: f(a, b))}
            if torch is not None:
                impls["torch"] = lambda f=f_t, a=tdy, b=tx: f(a, b)
            yield {"name": name, "size": f"{size} {dtype}", "bytes": 3 * n * item,
                   "flops": None, "impls": impls}
        # the floor, timed the same way: a device-to-device copy of x
        if torch is not None:
            to = torch.empty_like(tx)
            yield {"name": "copy (floor)", "size": f"{size} {dtype}", "bytes": 2 * n * item,
                   "flops": None,
                   "impls": {"fastdl": lambda o=to, t=tx: fd.add(t, 0.0, out=o),
                             "torch": lambda o=to, t=tx: o.copy_(t)}}

    side = 1024 if env.quick else 4096
    binary = [("same", (side, side), (side, side)), ("bias", (side, side), (side,)),
              ("outer", (64, 256, 1), (1, 1, 1024))]
    ops = [("add", "add", "add"), ("multiply", "mul", "multiply"),
           ("divide", "div", "divide"), ("maximum", "maximum", "maximum"),
           ("subtract", "sub", "subtract")]
    for label, sa, sb in binary:
        a = env.randn(sa, "float32", 2)
        b = env.randn(sb, "float32", 3)
        ta = torch.as_tensor(a, device="cuda") if torch is not None else None
        tb = torch.as_tensor(b, device="cuda") if torch is not None else None
        ca = cupy.asarray(a) if cupy is not None else None
        cb = cupy.asarray(b) if cupy is not None else None
        na = 1
        for s in sa:
            na *= s
        nb = 1
        for s in sb:
            nb *= s
        nout = 1
        for s in (max(p, q) for p, q in zip(sa, sb)) if len(sa) == len(sb) else sa:
            nout *= s
        nbytes = 4 * (na + nb + nout)
        for op, top, cop in (ops if label != "outer" else ops[1:2]):
            impls = {"fastdl": lambda f=getattr(fd, op), a=a, b=b: f(a, b)}
            if torch is not None:
                impls["torch"] = lambda f=getattr(torch, top), a=ta, b=tb: f(a, b)
            if cupy is not None:
                impls["cupy"] = lambda f=getattr(cupy, cop), a=ca, b=cb: f(a, b)
            yield {"name": f"{op} ({label})", "size": f"{sa} x {sb} float32", "bytes": nbytes,
                   "flops": None, "impls": impls}

    # per-call overhead
    x = env.randn((16,), "float32", 4)
    b = env.randn((4,), "float32", 5)
    tx = torch.as_tensor(x, device="cuda") if torch is not None else None
    x4 = env.randn((4, 4), "float32", 6)
    t4 = torch.as_tensor(x4, device="cuda") if torch is not None else None
    tb = torch.as_tensor(b, device="cuda") if torch is not None else None
    for name, f_fd, f_t in [("relu", lambda: fd.relu(x), lambda: torch.relu(tx)),
                            ("add 4x4 + 4", lambda: fd.add(x4, b), lambda: torch.add(t4, tb))]:
        impls = {"fastdl": f_fd}
        if torch is not None:
            impls["torch"] = f_t
        yield {"name": name + " (tiny)", "size": "16 float32", "bytes": None, "flops": None,
               "impls": impls}
