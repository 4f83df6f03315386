"""GPU cases: the softmax family and the losses, fastdl's kernels against PyTorch CUDA's native
ones and CuPy's (cupyx.scipy.special's softmax where it has one, else the NumPy-style formula).

Sizes of the CPU comparison (asv_benchmarks/compare_cases/softmax_losses.py): softmax rows of
1024 (4096x1024, float32 and float64) and of 32000 (512x32000), over axis 0, log_softmax and
both backward passes on 4096x1024; the fused cross-entropy with its gradient on 4096x1000
(float32, float64) and 512x32000, the loss alone on 4096x1000; cross_entropy and its gradient
on 4096x1000, mse and its gradient on 4096x4096. ``bytes`` is the least each op must move
(softmax: x read, y written; backward: dy and y read, dx written; cross-entropy with gradient:
logits and labels read, dlogits written), so ``of_copy`` compares with a copy of those bytes.
torch's cross-entropy with gradient is what autograd runs: log_softmax, nll_loss and their
backward kernels.
"""

import numpy as np


def _labels(env, rows, classes, seed=1):
    host = np.random.default_rng(seed).integers(0, classes, rows)
    if env.torch is not None:
        return env.torch.from_numpy(host).cuda()
    if env.cupy is not None:
        return env.cupy.asarray(host)
    return env.fastdl.cuda.to_device(host)


def _probs(env, shape, dtype, seed, low):
    host = np.random.default_rng(seed).uniform(low, 1.0, shape)
    host /= host.sum(-1, keepdims=True)
    host = host.astype(dtype)
    if env.torch is not None:
        return env.torch.from_numpy(host).cuda()
    if env.cupy is not None:
        return env.cupy.asarray(host)
    return env.fastdl.cuda.to_device(host)


class _Peers:
    """torch / CuPy views (no copies) of the case's arrays, and the impls dict."""

    def __init__(self, env):
        self.env = env
        special = None
        if env.cupy is not None:
            try:
                import cupyx.scipy.special as special
            except ImportError:
                special = None
        self.special = special

    def cp(self, a):
        return self.env.cupy.asarray(a)

    def impls(self, fastdl_fn, torch_fn=None, cupy_fn=None):
        out = {"fastdl": fastdl_fn}
        if self.env.torch is not None and torch_fn is not None:
            out["torch"] = torch_fn
        if self.env.cupy is not None and cupy_fn is not None:
            out["cupy"] = cupy_fn
        return out


def _size(rows, cols, dtype):
    return f"{rows}x{cols}" + ("" if dtype == "float32" else " float64")


def _softmax_cases(env, peers, rows, cols, dtype, axis=-1):
    fd, torch, cp = env.fastdl, env.torch, env.cupy
    isz = np.dtype(dtype).itemsize
    n = rows * cols
    x = env.randn((rows, cols), dtype, 0)
    cx = peers.cp(x) if cp is not None else None
    sp = peers.special

    def cupy_softmax():
        if sp is not None and hasattr(sp, "softmax"):
            return sp.softmax(cx, axis=axis)
        e = cp.exp(cx - cx.max(axis, keepdims=True))
        return e / e.sum(axis, keepdims=True)

    name = "softmax" if axis == -1 else f"softmax axis={axis}"
    yield {"name": name, "size": _size(rows, cols, dtype), "bytes": 2 * n * isz, "flops": None,
           "impls": peers.impls(lambda: fd.softmax(x, axis),
                                lambda: torch.softmax(x, axis), cupy_softmax)}


def _family_cases(env, peers, rows=4096, cols=1024):
    fd, torch, cp = env.fastdl, env.torch, env.cupy
    n = rows * cols
    x = env.randn((rows, cols), "float32", 0)
    dy = env.randn((rows, cols), "float32", 1)
    y = fd.softmax(x)
    ly = fd.log_softmax(x)
    out = fd.log_softmax(x)          # any array of x's kind, shape and dtype
    cx = peers.cp(x) if cp is not None else None
    cdy, cy, cly = ((peers.cp(dy), peers.cp(y), peers.cp(ly)) if cp is not None
                    else (None, None, None))
    sp = peers.special
    size = f"{rows}x{cols}"

    def cupy_log_softmax():
        if sp is not None and hasattr(sp, "log_softmax"):
            return sp.log_softmax(cx, axis=-1)
        z = cx - cx.max(-1, keepdims=True)
        return z - cp.log(cp.exp(z).sum(-1, keepdims=True))

    yield {"name": "softmax out=", "size": size, "bytes": 8 * n, "flops": None,
           "impls": peers.impls(lambda: fd.softmax(x, out=out),
                                lambda: torch.softmax(x, -1))}
    yield {"name": "log_softmax", "size": size, "bytes": 8 * n, "flops": None,
           "impls": peers.impls(lambda: fd.log_softmax(x),
                                lambda: torch.log_softmax(x, -1), cupy_log_softmax)}
    yield {"name": "softmax_backward", "size": size, "bytes": 12 * n, "flops": None,
           "impls": peers.impls(
               lambda: fd.softmax_backward(dy, y),
               lambda: torch._softmax_backward_data(dy, y, -1, y.dtype),
               lambda: cy * (cdy - (cdy * cy).sum(-1, keepdims=True)))}
    yield {"name": "log_softmax_backward", "size": size, "bytes": 12 * n, "flops": None,
           "impls": peers.impls(
               lambda: fd.log_softmax_backward(dy, ly),
               lambda: torch._log_softmax_backward_data(dy, ly, -1, ly.dtype),
               lambda: cdy - cp.exp(cly) * cdy.sum(-1, keepdims=True))}


def _sce_cases(env, peers, rows, cols, dtype, with_grad=True):
    fd, torch, cp = env.fastdl, env.torch, env.cupy
    isz = np.dtype(dtype).itemsize
    n = rows * cols
    x = env.randn((rows, cols), dtype, 0)
    lab = _labels(env, rows, cols)
    F = torch.nn.functional if torch is not None else None
    cx = peers.cp(x) if cp is not None else None
    clab = peers.cp(lab) if cp is not None else None
    ar = cp.arange(rows) if cp is not None else None

    def torch_grad():
        xg = x.detach().requires_grad_()
        loss = F.cross_entropy(xg, lab)
        loss.backward()
        return loss, xg.grad

    def cupy_grad():
        e = cp.exp(cx - cx.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
        loss = -cp.log(p[ar, clab]).mean()
        p[ar, clab] -= 1
        p /= rows
        return loss, p

    def cupy_loss():
        z = cx - cx.max(-1, keepdims=True)
        return -(z[ar, clab] - cp.log(cp.exp(z).sum(-1))).mean()

    size = _size(rows, cols, dtype)
    if with_grad:
        yield {"name": "softmax_cross_entropy + grad (int labels, mean)", "size": size,
               "bytes": 2 * n * isz + 8 * rows, "flops": None,
               "impls": peers.impls(lambda: fd.softmax_cross_entropy(x, lab, return_grad=True),
                                    torch_grad, cupy_grad)}
    else:
        yield {"name": "softmax_cross_entropy loss only (int labels, mean)", "size": size,
               "bytes": n * isz + 8 * rows, "flops": None,
               "impls": peers.impls(lambda: fd.softmax_cross_entropy(x, lab),
                                    lambda: F.cross_entropy(x, lab), cupy_loss)}


def _loss_cases(env, peers):
    fd, torch, cp = env.fastdl, env.torch, env.cupy
    rows, cols = 4096, 1000
    n = rows * cols
    t = _probs(env, (rows, cols), "float32", 0, 0.0)
    p = _probs(env, (rows, cols), "float32", 1, 0.01)
    ct, cpp = (peers.cp(t), peers.cp(p)) if cp is not None else (None, None)
    size = f"{rows}x{cols}"
    yield {"name": "cross_entropy -sum(t*log(p))", "size": size, "bytes": 8 * n, "flops": None,
           "impls": peers.impls(lambda: fd.cross_entropy(t, p),
                                lambda: -(t * torch.log(p)).sum(),
                                lambda: -(ct * cp.log(cpp)).sum())}
    yield {"name": "cross_entropy_grad -t/p", "size": size, "bytes": 12 * n, "flops": None,
           "impls": peers.impls(lambda: fd.cross_entropy_grad(t, p), lambda: -t / p,
                                lambda: -ct / cpp)}
    rows = cols = 4096
    n = rows * cols
    a = env.randn((rows, cols), "float32", 0)
    b = env.randn((rows, cols), "float32", 1)
    ca, cb = (peers.cp(a), peers.cp(b)) if cp is not None else (None, None)
    F = torch.nn.functional if torch is not None else None
    size = f"{rows}x{cols}"
    yield {"name": "mse mean((t-p)**2)", "size": size, "bytes": 8 * n, "flops": None,
           "impls": peers.impls(lambda: fd.mse(a, b), lambda: F.mse_loss(b, a),
                                lambda: ((ca - cb) ** 2).mean())}
    yield {"name": "mse_grad 2(p-t)/N", "size": size, "bytes": 12 * n, "flops": None,
           "impls": peers.impls(lambda: fd.mse_grad(a, b), lambda: 2 * (b - a) / n,
                                lambda: 2 * (cb - ca) / n)}


def cases(env):
    peers = _Peers(env)
    yield from _softmax_cases(env, peers, 4096, 1024, "float32")
    yield from _sce_cases(env, peers, 4096, 1000, "float32")
    if env.quick:
        yield from _loss_cases(env, peers)
        return
    yield from _softmax_cases(env, peers, 4096, 1024, "float64")
    yield from _softmax_cases(env, peers, 512, 32000, "float32")
    yield from _softmax_cases(env, peers, 4096, 1024, "float32", axis=0)
    yield from _family_cases(env, peers)
    yield from _sce_cases(env, peers, 4096, 1000, "float64")
    yield from _sce_cases(env, peers, 512, 32000, "float32")
    yield from _sce_cases(env, peers, 4096, 1000, "float32", with_grad=False)
    yield from _loss_cases(env, peers)
