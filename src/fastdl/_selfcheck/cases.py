"""Every public op of fastdl as a case of ``python -m fastdl``: its inputs, the cheat-sheet
formula a NumPy user would write (timed in float32, and run on float64 copies as the check's
reference), fastdl's call, and PyTorch's where it has one.

A case's callables take one namespace dict: the inputs by name (NumPy arrays and scalars);
the torch callable gets ``t_<name>`` tensors sharing the arrays' memory and ``torch``.
In-place ops name the arrays they update in ``outputs``; those are compared after the call.
"""

import math

import numpy as np

import fastdl

C_GELU = math.sqrt(2.0 / math.pi)


class Case:
    def __init__(self, op, sizes, build, numpy, fastdl_fn, torch=None, *, reference=None,
                 outputs=(), rtol=1e-4, budget=0.6):
        self.op = op
        self._sizes = sizes              # (full, quick) labels
        self._build = build
        self.numpy, self.fastdl, self.torch = numpy, fastdl_fn, torch
        self.reference, self.outputs = reference, outputs
        self.rtol, self.budget = rtol, budget

    def size(self, quick):
        return self._sizes[1] if quick else self._sizes[0]

    def build(self, rng, dtype, quick):
        return self._build(rng, dtype, quick)


def _randn(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def _pick(quick, full, small):
    return small if quick else full


# --------------------------------------------------------------------------------------
# builders

def _vec(full=1 << 24, small=1 << 20):
    def build(rng, dtype, quick):
        n = _pick(quick, full, small)
        return {"x": _randn(rng, n, dtype, 3.0), "dy": _randn(rng, n, dtype),
                "ys": rng.uniform(0, 1, n).astype(dtype),
                "yt": rng.uniform(-1, 1, n).astype(dtype)}
    return build


def _square(full, small):
    def build(rng, dtype, quick):
        n = _pick(quick, full, small)
        return {"a": _randn(rng, (n, n), dtype), "b": _randn(rng, (n, n), dtype),
                "row": rng.uniform(0.5, 1.5, n).astype(dtype)}
    return build


def _linear(rng, dtype, quick):
    rows, k, n = _pick(quick, (256, 1024, 1024), (64, 256, 256))
    return {"x": _randn(rng, (rows, k), dtype), "w": _randn(rng, (k, n), dtype, 0.03),
            "b": _randn(rng, n, dtype), "dy": _randn(rng, (rows, n), dtype)}


def _bmm(rng, dtype, quick):
    b, n = _pick(quick, (64, 128), (16, 64))
    return {"a": _randn(rng, (b, n, n), dtype), "b": _randn(rng, (b, n, n), dtype)}


def _rows(rows_full, cols_full, rows_small, cols_small):
    def build(rng, dtype, quick):
        r, c = _pick(quick, (rows_full, cols_full), (rows_small, cols_small))
        x = _randn(rng, (r, c), dtype, 3.0)
        e = np.exp(x - x.max(-1, keepdims=True))
        y = (e / e.sum(-1, keepdims=True)).astype(dtype)
        t = rng.uniform(0, 1, (r, c))
        t /= t.sum(-1, keepdims=True)
        p = rng.uniform(0.01, 1, (r, c))
        p /= p.sum(-1, keepdims=True)
        return {"x": x, "dy": _randn(rng, (r, c), dtype), "y": y, "ly": np.log(y),
                "lab": rng.integers(0, c, r), "rows": np.arange(r),
                "t": t.astype(dtype), "p": p.astype(dtype)}
    return build


def _conv(rng, dtype, quick):
    n, c, o, h = _pick(quick, (32, 64, 64, 32), (4, 16, 16, 16))
    return {"x": _randn(rng, (n, c, h, h), dtype), "w": _randn(rng, (o, c, 3, 3), dtype, 0.05),
            "b": _randn(rng, o, dtype), "dy": _randn(rng, (n, o, h, h), dtype)}


def _image(full, small):
    def build(rng, dtype, quick):
        shape = _pick(quick, full, small)
        n, c, h, w = shape
        ns = {"x": _randn(rng, shape, dtype), "dy2": _randn(rng, (n, c, h // 2, w // 2), dtype),
              "dy": _randn(rng, shape, dtype), "g": rng.uniform(0.5, 1.5, c).astype(dtype),
              "beta": _randn(rng, c, dtype), "rm": _randn(rng, c, dtype, 0.1),
              "rv": rng.uniform(0.5, 1.5, c).astype(dtype)}
        return ns
    return build


def _ln(rng, dtype, quick):
    shape = _pick(quick, (8, 512, 768), (4, 64, 256))
    d = shape[-1]
    return {"x": _randn(rng, shape, dtype), "dy": _randn(rng, shape, dtype),
            "g": rng.uniform(0.5, 1.5, d).astype(dtype), "beta": _randn(rng, d, dtype)}


def _attn(causal):
    def build(rng, dtype, quick):
        b, h, L, e = _pick(quick, (8, 8, 512, 64), (2, 4, 128, 32))
        shape = (b, h, L, e)
        ns = {"q": _randn(rng, shape, dtype), "k": _randn(rng, shape, dtype),
              "v": _randn(rng, shape, dtype), "do": _randn(rng, shape, dtype),
              "sc": 1.0 / math.sqrt(e), "causal": causal,
              "cm": np.where(np.triu(np.ones((L, L), bool), 1), -np.inf, 0.0).astype(dtype)}
        ns["o"], ns["lse"] = fastdl.scaled_dot_product_attention(
            ns["q"], ns["k"], ns["v"], is_causal=causal, return_lse=True)
        return ns
    return build


def _params(rng, dtype, quick):
    n = _pick(quick, 10_000_000, 1 << 20)
    return {"w": _randn(rng, n, dtype), "g": _randn(rng, n, dtype, 0.1),
            "m": _randn(rng, n, dtype, 0.01), "v": rng.uniform(0, 0.01, n).astype(dtype),
            "t": 3}


def _grads(rng, dtype, quick):
    n = _pick(quick, 50_000, 5_000)
    return {"gs": [_randn(rng, n, dtype, 0.01) for _ in range(200)]}


# --------------------------------------------------------------------------------------
# NumPy formulas

def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _erf(x):
    from scipy.special import erf
    return erf(x)


def _im2col(x, k, pad):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    return np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))


def np_conv2d(x, w, b):
    cols = _im2col(x, w.shape[-1], 1)                    # (N, C, H, W, k, k)
    y = np.tensordot(cols, w, axes=((1, 4, 5), (1, 2, 3)))   # (N, H, W, O)
    return y.transpose(0, 3, 1, 2) + b[:, None, None]


def np_conv2d_backward(dy, x, w):
    cols = _im2col(x, w.shape[-1], 1)
    dw = np.tensordot(dy, cols, axes=((0, 2, 3), (0, 2, 3)))      # (O, C, k, k)
    wf = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)                  # stride 1: dx is a conv
    dx = np_conv2d(dy, wf, np.zeros(wf.shape[0], dy.dtype))
    return dx, dw, dy.sum((0, 2, 3))


def np_maxpool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max((3, 5))


def np_maxpool_backward(dy, x):
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, c, h // 2, w // 2, 4)
    arg = win.argmax(-1)
    dwin = np.zeros_like(win)
    np.put_along_axis(dwin, arg[..., None], dy[..., None], -1)
    return dwin.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(x.shape)


def np_batchnorm(x, g, b, eps=1e-5):
    axes = (0, 2, 3)
    m = x.mean(axes, keepdims=True)
    v = x.var(axes, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g[:, None, None] + b[:, None, None]


def np_batchnorm_backward(dy, x, g, eps=1e-5):
    axes = (0, 2, 3)
    n = x.size // x.shape[1]
    m = x.mean(axes, keepdims=True)
    inv = 1 / np.sqrt(x.var(axes, keepdims=True) + eps)
    xhat = (x - m) * inv
    dbeta = dy.sum(axes)
    dgamma = (dy * xhat).sum(axes)
    dx = g[:, None, None] * inv / n * (n * dy - dbeta[:, None, None]
                                        - xhat * dgamma[:, None, None])
    return dx, dgamma, dbeta


def np_layernorm(x, g, b, eps=1e-5):
    m = x.mean(-1, keepdims=True)
    return (x - m) / np.sqrt(x.var(-1, keepdims=True) + eps) * g + b


def np_layernorm_backward(dy, x, g, eps=1e-5):
    d = x.shape[-1]
    m = x.mean(-1, keepdims=True)
    inv = 1 / np.sqrt(x.var(-1, keepdims=True) + eps)
    xhat = (x - m) * inv
    dxhat = dy * g
    dx = inv / d * (d * dxhat - dxhat.sum(-1, keepdims=True)
                    - xhat * (dxhat * xhat).sum(-1, keepdims=True))
    axes = tuple(range(x.ndim - 1))
    return dx, (dy * xhat).sum(axes), dy.sum(axes)


def np_sdpa(ns):
    s = ns["q"] @ ns["k"].swapaxes(-1, -2) * ns["sc"]
    if ns["causal"]:
        s = s + ns["cm"]
    return _softmax(s) @ ns["v"]


def np_sdpa_backward(ns):
    q, k, v, do, sc = ns["q"], ns["k"], ns["v"], ns["do"], ns["sc"]
    p = _softmax(q @ k.swapaxes(-1, -2) * sc + (ns["cm"] if ns["causal"] else 0))
    dv = p.swapaxes(-1, -2) @ do
    dp = do @ v.swapaxes(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    return ds @ k * sc, ds.swapaxes(-1, -2) @ q * sc, dv


def np_adam(ns, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    w, g, m, v, t = ns["w"], ns["g"], ns["m"], ns["v"], ns["t"]
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * g * g
    mhat = m / (1 - b1 ** t)
    vhat = v / (1 - b2 ** t)
    w -= lr * mhat / (np.sqrt(vhat) + eps)


def np_momentum(ns, lr=0.01, beta=0.9):
    ns["v"] *= beta
    ns["v"] -= lr * ns["g"]
    ns["w"] += ns["v"]


def np_sgd(ns, lr=0.01):
    ns["w"] -= lr * ns["g"]


def np_clip(ns, max_norm=1.0):
    gs = ns["gs"]
    norm = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in gs))
    if norm > max_norm:
        f = max_norm / (norm + 1e-6)
        for g in gs:
            g *= f
    return norm


def _dropout_ref(ns):
    y, mask = fastdl.dropout(ns["x"], 0.5, seed=7, return_mask=True)
    return ns["x"] * mask / 0.5


# --------------------------------------------------------------------------------------
# the cases

def all_cases():
    V, S16 = _vec(), ("16M", "1M")
    T = "torch"
    cases = [
        Case("matmul", ("1024^3", "256^3"), _square(1024, 256),
             lambda n: n["a"] @ n["b"], lambda n: fastdl.matmul(n["a"], n["b"]),
             lambda n: n["t_a"] @ n["t_b"]),
        Case("einsum bij,bjk->bik", ("64x128^3", "16x64^3"), _bmm,
             lambda n: np.einsum("bij,bjk->bik", n["a"], n["b"]),
             lambda n: fastdl.einsum("bij,bjk->bik", n["a"], n["b"]),
             lambda n: n[T].bmm(n["t_a"], n["t_b"])),
        Case("linear", ("256x1024 @ 1024^2", "64x256 @ 256^2"), _linear,
             lambda n: n["x"] @ n["w"] + n["b"], lambda n: fastdl.linear(n["x"], n["w"], n["b"]),
             lambda n: n[T].addmm(n["t_b"], n["t_x"], n["t_w"])),
        Case("linear_backward", ("256x1024 @ 1024^2", "64x256 @ 256^2"), _linear,
             lambda n: (n["dy"] @ n["w"].T, n["x"].T @ n["dy"], n["dy"].sum(0)),
             lambda n: fastdl.linear_backward(n["dy"], n["x"], n["w"])),
        Case("relu", S16, V, lambda n: np.maximum(n["x"], 0), lambda n: fastdl.relu(n["x"]),
             lambda n: n[T].relu(n["t_x"])),
        Case("leaky_relu", S16, V, lambda n: np.where(n["x"] > 0, n["x"], 0.01 * n["x"]),
             lambda n: fastdl.leaky_relu(n["x"], 0.01),
             lambda n: n[T].nn.functional.leaky_relu(n["t_x"], 0.01)),
        Case("sigmoid", S16, V, lambda n: 1 / (1 + np.exp(-n["x"])),
             lambda n: fastdl.sigmoid(n["x"]), lambda n: n[T].sigmoid(n["t_x"])),
        Case("tanh", S16, V, lambda n: np.tanh(n["x"]), lambda n: fastdl.tanh(n["x"]),
             lambda n: n[T].tanh(n["t_x"])),
        Case("gelu (tanh)", S16, V,
             lambda n: 0.5 * n["x"] * (1 + np.tanh(C_GELU * (n["x"] + 0.044715 * n["x"] ** 3))),
             lambda n: fastdl.gelu(n["x"], "tanh"),
             lambda n: n[T].nn.functional.gelu(n["t_x"], approximate="tanh")),
        Case("gelu (erf)", S16, V, lambda n: 0.5 * n["x"] * (1 + _erf(n["x"] / math.sqrt(2))),
             lambda n: fastdl.gelu(n["x"]), lambda n: n[T].nn.functional.gelu(n["t_x"])),
        Case("silu", S16, V, lambda n: n["x"] / (1 + np.exp(-n["x"])),
             lambda n: fastdl.silu(n["x"]), lambda n: n[T].nn.functional.silu(n["t_x"])),
        Case("relu_grad", S16, V, lambda n: (n["x"] > 0).astype(n["x"].dtype),
             lambda n: fastdl.relu_grad(n["x"])),
        Case("leaky_relu_grad", S16, V, lambda n: np.where(n["x"] > 0, 1.0, 0.01).astype(
            n["x"].dtype), lambda n: fastdl.leaky_relu_grad(n["x"], 0.01)),
        Case("sigmoid_grad", S16, V,
             lambda n: (lambda s: s * (1 - s))(1 / (1 + np.exp(-n["x"]))),
             lambda n: fastdl.sigmoid_grad(n["x"])),
        Case("tanh_grad", S16, V, lambda n: 1 - np.tanh(n["x"]) ** 2,
             lambda n: fastdl.tanh_grad(n["x"])),
        Case("gelu_grad (erf)", S16, V,
             lambda n: 0.5 * (1 + _erf(n["x"] / math.sqrt(2)))
             + n["x"] * np.exp(-0.5 * n["x"] ** 2) / math.sqrt(2 * math.pi),
             lambda n: fastdl.gelu_grad(n["x"])),
        Case("silu_grad", S16, V,
             lambda n: (lambda s: s * (1 + n["x"] * (1 - s)))(1 / (1 + np.exp(-n["x"]))),
             lambda n: fastdl.silu_grad(n["x"])),
        Case("relu_backward", S16, V, lambda n: n["dy"] * (n["x"] > 0),
             lambda n: fastdl.relu_backward(n["dy"], n["x"]),
             lambda n: n[T].ops.aten.threshold_backward(n["t_dy"], n["t_x"], 0)),
        Case("leaky_relu_backward", S16, V,
             lambda n: n["dy"] * np.where(n["x"] > 0, 1.0, 0.01),
             lambda n: fastdl.leaky_relu_backward(n["dy"], n["x"], 0.01)),
        Case("sigmoid_backward", S16, V, lambda n: n["dy"] * n["ys"] * (1 - n["ys"]),
             lambda n: fastdl.sigmoid_backward(n["dy"], n["ys"]),
             lambda n: n[T].ops.aten.sigmoid_backward(n["t_dy"], n["t_ys"])),
        Case("tanh_backward", S16, V, lambda n: n["dy"] * (1 - n["yt"] ** 2),
             lambda n: fastdl.tanh_backward(n["dy"], n["yt"]),
             lambda n: n[T].ops.aten.tanh_backward(n["t_dy"], n["t_yt"])),
        Case("gelu_backward (tanh)", S16, V,
             lambda n: (lambda x, t: n["dy"] * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * C_GELU
                                                * (1 + 3 * 0.044715 * x * x)))(
                 n["x"], np.tanh(C_GELU * (n["x"] + 0.044715 * n["x"] ** 3))),
             lambda n: fastdl.gelu_backward(n["dy"], n["x"], "tanh"),
             lambda n: n[T].ops.aten.gelu_backward(n["t_dy"], n["t_x"], approximate="tanh")),
        Case("silu_backward", S16, V,
             lambda n: (lambda s: n["dy"] * s * (1 + n["x"] * (1 - s)))(
                 1 / (1 + np.exp(-n["x"]))),
             lambda n: fastdl.silu_backward(n["dy"], n["x"]),
             lambda n: n[T].ops.aten.silu_backward(n["t_dy"], n["t_x"])),
    ]
    sq = _square(4096, 1024)
    for name, npf in (("add", np.add), ("subtract", np.subtract), ("multiply", np.multiply),
                      ("divide", np.divide), ("maximum", np.maximum)):
        cases.append(Case(f"{name} (bias row)", ("4096^2 . 4096", "1024^2 . 1024"), sq,
                          (lambda f: lambda n: f(n["a"], n["row"]))(npf),
                          (lambda nm: lambda n: getattr(fastdl, nm)(n["a"], n["row"]))(name),
                          (lambda nm: lambda n: getattr(n[T], nm)(n["t_a"], n["t_row"]))(name)))
    R = _rows(4096, 1024, 1024, 256)
    RS = ("4096x1024", "1024x256")
    cases += [
        Case("softmax", RS, R, lambda n: _softmax(n["x"]), lambda n: fastdl.softmax(n["x"]),
             lambda n: n[T].softmax(n["t_x"], -1)),
        Case("log_softmax", RS, R,
             lambda n: (lambda z: z - np.log(np.exp(z).sum(-1, keepdims=True)))(
                 n["x"] - n["x"].max(-1, keepdims=True)),
             lambda n: fastdl.log_softmax(n["x"]), lambda n: n[T].log_softmax(n["t_x"], -1)),
        Case("softmax_backward", RS, R,
             lambda n: n["y"] * (n["dy"] - (n["dy"] * n["y"]).sum(-1, keepdims=True)),
             lambda n: fastdl.softmax_backward(n["dy"], n["y"])),
        Case("log_softmax_backward", RS, R,
             lambda n: n["dy"] - np.exp(n["ly"]) * n["dy"].sum(-1, keepdims=True),
             lambda n: fastdl.log_softmax_backward(n["dy"], n["ly"])),
        Case("cross_entropy", RS, R, lambda n: -np.sum(n["t"] * np.log(n["p"])),
             lambda n: fastdl.cross_entropy(n["t"], n["p"])),
        Case("cross_entropy_grad", RS, R, lambda n: -n["t"] / n["p"],
             lambda n: fastdl.cross_entropy_grad(n["t"], n["p"])),
        Case("mse", RS, R, lambda n: np.mean((n["t"] - n["p"]) ** 2),
             lambda n: fastdl.mse(n["t"], n["p"]),
             lambda n: n[T].nn.functional.mse_loss(n["t_p"], n["t_t"])),
        Case("mse_grad", RS, R, lambda n: 2 * (n["p"] - n["t"]) / n["t"].size,
             lambda n: fastdl.mse_grad(n["t"], n["p"])),
        Case("softmax_cross_entropy + grad", RS, R,
             lambda n: (lambda p: (-np.log(p[n["rows"], n["lab"]]).mean(),
                                   (p - np.eye(p.shape[1], dtype=p.dtype)[n["lab"]]) / p.shape[0]))(
                 _softmax(n["x"])),
             lambda n: fastdl.softmax_cross_entropy(n["x"], n["lab"], return_grad=True)),
        Case("sum axis=1", ("4096^2", "1024^2"), sq, lambda n: n["a"].sum(1),
             lambda n: fastdl.sum(n["a"], 1), lambda n: n["t_a"].sum(1)),
        Case("mean axis=0", ("4096^2", "1024^2"), sq, lambda n: n["a"].mean(0),
             lambda n: fastdl.mean(n["a"], 0), lambda n: n["t_a"].mean(0)),
        Case("var", ("4096^2", "1024^2"), sq, lambda n: n["a"].var(),
             lambda n: fastdl.var(n["a"]), lambda n: n["t_a"].var(unbiased=False)),
    ]
    CS = ("N32 64->64 32^2 3x3", "N4 16->16 16^2 3x3")
    cases += [
        Case("conv2d", CS, _conv, lambda n: np_conv2d(n["x"], n["w"], n["b"]),
             lambda n: fastdl.conv2d(n["x"], n["w"], n["b"], padding=1),
             lambda n: n[T].nn.functional.conv2d(n["t_x"], n["t_w"], n["t_b"], padding=1)),
        Case("conv2d_backward", CS, _conv,
             lambda n: np_conv2d_backward(n["dy"], n["x"], n["w"]),
             lambda n: fastdl.conv2d_backward(n["dy"], n["x"], n["w"], 1, 1, 1, 1)),
    ]
    P = _image((32, 64, 112, 112), (8, 16, 56, 56))
    PS = ("32x64x112^2", "8x16x56^2")
    cases += [
        Case("max_pool2d 2x2", PS, P, lambda n: np_maxpool(n["x"]),
             lambda n: fastdl.max_pool2d(n["x"], 2),
             lambda n: n[T].nn.functional.max_pool2d(n["t_x"], 2)),
        Case("max_pool2d_backward", PS, P, lambda n: np_maxpool_backward(n["dy2"], n["x"]),
             lambda n: fastdl.max_pool2d_backward(
                 n["dy2"], n["x"], fastdl.max_pool2d(n["x"], 2, return_indices=True)[1], 2)),
        Case("avg_pool2d 2x2", PS, P,
             lambda n: n["x"].reshape(n["x"].shape[:2] + (n["x"].shape[2] // 2, 2,
                                                           n["x"].shape[3] // 2, 2)).mean((3, 5)),
             lambda n: fastdl.avg_pool2d(n["x"], 2),
             lambda n: n[T].nn.functional.avg_pool2d(n["t_x"], 2)),
        Case("avg_pool2d_backward", PS, P,
             lambda n: np.repeat(np.repeat(n["dy2"], 2, 2), 2, 3) / 4,
             lambda n: fastdl.avg_pool2d_backward(n["dy2"], n["x"], 2)),
        Case("global_avg_pool2d", PS, P, lambda n: n["x"].mean((2, 3)),
             lambda n: fastdl.global_avg_pool2d(n["x"])),
    ]
    B = _image((32, 128, 28, 28), (8, 32, 28, 28))
    BS = ("32x128x28^2", "8x32x28^2")
    cases += [
        Case("batch_norm (training)", BS, B, lambda n: np_batchnorm(n["x"], n["g"], n["beta"]),
             lambda n: fastdl.batch_norm(n["x"], n["g"], n["beta"], n["rm"], n["rv"]),
             lambda n: n[T].nn.functional.batch_norm(n["t_x"], n["t_rm"], n["t_rv"], n["t_g"],
                                                     n["t_beta"], training=True)),
        Case("batch_norm (inference)", BS, B,
             lambda n: (n["x"] - n["rm"][:, None, None]) / np.sqrt(n["rv"][:, None, None] + 1e-5)
             * n["g"][:, None, None] + n["beta"][:, None, None],
             lambda n: fastdl.batch_norm(n["x"], n["g"], n["beta"], n["rm"], n["rv"],
                                         training=False),
             lambda n: n[T].nn.functional.batch_norm(n["t_x"], n["t_rm"], n["t_rv"], n["t_g"],
                                                     n["t_beta"], training=False)),
        Case("batch_norm_backward", BS, B,
             lambda n: np_batchnorm_backward(n["dy"], n["x"], n["g"]),
             lambda n: (lambda y, m, inv: fastdl.batch_norm_backward(n["dy"], n["x"], n["g"], m,
                                                                      inv))(
                 *fastdl.batch_norm(n["x"], n["g"], n["beta"], None, None, return_stats=True))),
        Case("layer_norm", ("8x512x768", "4x64x256"), _ln,
             lambda n: np_layernorm(n["x"], n["g"], n["beta"]),
             lambda n: fastdl.layer_norm(n["x"], n["x"].shape[-1], n["g"], n["beta"]),
             lambda n: n[T].nn.functional.layer_norm(n["t_x"], (n["x"].shape[-1],), n["t_g"],
                                                     n["t_beta"])),
        Case("layer_norm_backward", ("8x512x768", "4x64x256"), _ln,
             lambda n: np_layernorm_backward(n["dy"], n["x"], n["g"]),
             lambda n: (lambda y, m, inv: fastdl.layer_norm_backward(
                 n["dy"], n["x"], n["x"].shape[-1], n["g"], m, inv))(
                 *fastdl.layer_norm(n["x"], n["x"].shape[-1], n["g"], n["beta"],
                                    return_stats=True))),
    ]
    AS = ("B8 H8 L512 E64", "B2 H4 L128 E32")
    for causal in (False, True):
        cases.append(Case(
            "scaled_dot_product_attention" + (" causal" if causal else ""), AS, _attn(causal),
            np_sdpa,
            lambda n: fastdl.scaled_dot_product_attention(n["q"], n["k"], n["v"],
                                                          is_causal=n["causal"]),
            lambda n: n[T].nn.functional.scaled_dot_product_attention(
                n["t_q"], n["t_k"], n["t_v"], is_causal=n["causal"])))
    cases.append(Case(
        "scaled_dot_product_attention_backward", AS, _attn(False), np_sdpa_backward,
        lambda n: fastdl.scaled_dot_product_attention_backward(n["do"], n["q"], n["k"], n["v"],
                                                               n["o"], n["lse"])))
    PS10 = ("10M", "1M")
    cases += [
        Case("optim.sgd_", PS10, _params, np_sgd,
             lambda n: fastdl.optim.sgd_(n["w"], n["g"], 0.01), outputs=("w",)),
        Case("optim.momentum_", PS10, _params, np_momentum,
             lambda n: fastdl.optim.momentum_(n["w"], n["g"], n["v"], 0.01, 0.9),
             outputs=("w", "v")),
        Case("optim.adam_", PS10, _params, np_adam,
             lambda n: fastdl.optim.adam_(n["w"], n["g"], n["m"], n["v"], n["t"]),
             outputs=("w", "m", "v")),
        Case("clip_grad_norm_ (200 arrays)", ("200x50K", "200x5K"), _grads, np_clip,
             lambda n: fastdl.clip_grad_norm_(n["gs"], 1.0), outputs=("gs",)),
        Case("l1_penalty", PS10, _params, lambda n: 1e-3 * np.abs(n["w"]).sum(),
             lambda n: fastdl.l1_penalty(n["w"], 1e-3)),
        Case("l2_penalty", PS10, _params, lambda n: 1e-3 * np.square(n["w"]).sum(),
             lambda n: fastdl.l2_penalty(n["w"], 1e-3)),
        Case("l1_penalty_grad", PS10, _params, lambda n: 1e-3 * np.sign(n["w"]),
             lambda n: fastdl.l1_penalty_grad(n["w"], 1e-3)),
        Case("l2_penalty_grad", PS10, _params, lambda n: 2e-3 * n["w"],
             lambda n: fastdl.l2_penalty_grad(n["w"], 1e-3)),
        Case("dropout p=0.5", S16, V,
             lambda n: n["x"] * (np.random.default_rng(7).random(n["x"].shape) >= 0.5) / 0.5,
             lambda n: fastdl.dropout(n["x"], 0.5, seed=7), reference=_dropout_ref,
             torch=lambda n: n[T].nn.functional.dropout(n["t_x"], 0.5)),
        Case("dropout_backward (from seed)", S16, V,
             lambda n: n["dy"] * (np.random.default_rng(7).random(n["x"].shape) >= 0.5) / 0.5,
             lambda n: fastdl.dropout_backward(n["dy"], 7, 0.5),
             reference=lambda n: n["dy"] * fastdl.dropout(n["x"], 0.5, seed=7,
                                                          return_mask=True)[1] / 0.5),
        Case("init.he_normal", ("4096^2", "1024^2"), lambda rng, dt, q: {"n": _pick(q, 4096, 1024)},
             lambda n: np.random.default_rng(1).standard_normal((n["n"], n["n"])).astype(
                 np.float32) * math.sqrt(2 / n["n"]),
             lambda n: (lambda w: np.array([w.std(dtype=np.float64),
                                            abs(w.mean(dtype=np.float64))
                                            + math.sqrt(2 / n["n"])]))(
                 fastdl.init.he_normal(n["n"], n["n"], rng=1)),
             reference=lambda n: np.array([math.sqrt(2 / n["n"])] * 2), rtol=1e-2),
        Case("init.xavier_uniform", ("4096^2", "1024^2"),
             lambda rng, dt, q: {"n": _pick(q, 4096, 1024)},
             lambda n: np.random.default_rng(1).uniform(-1, 1, (n["n"], n["n"])).astype(
                 np.float32) * math.sqrt(3.0 / n["n"]),
             lambda n: (lambda w: np.array([w.std(dtype=np.float64),
                                            abs(w.mean(dtype=np.float64))
                                            + math.sqrt(1.0 / n["n"])]))(
                 fastdl.init.xavier_uniform(n["n"], n["n"], rng=1)),
             reference=lambda n: np.array([math.sqrt(1.0 / n["n"])] * 2), rtol=1e-2),
    ]
    if hasattr(fastdl, "lstm_cell"):
        cases += _lstm_cases()
    return cases


def _lstm_cases():
    def build(rng, dtype, quick):
        b, i, h = _pick(quick, (64, 512, 512), (16, 128, 128))
        return {"x": _randn(rng, (b, i), dtype), "h": _randn(rng, (b, h), dtype),
                "c": _randn(rng, (b, h), dtype), "wi": _randn(rng, (i, 4 * h), dtype, 0.05),
                "wh": _randn(rng, (h, 4 * h), dtype, 0.05), "b": _randn(rng, 4 * h, dtype),
                "dh": _randn(rng, (b, h), dtype), "dc": _randn(rng, (b, h), dtype)}

    def np_lstm(n):
        z = n["x"] @ n["wi"] + n["h"] @ n["wh"] + n["b"]
        H = n["h"].shape[1]
        i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
        sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
        c = sig(f) * n["c"] + sig(i) * np.tanh(g)
        return sig(o) * np.tanh(c), c

    return [Case("lstm_cell", ("B64 512->512", "B16 128->128"), build, np_lstm,
                 lambda n: fastdl.lstm_cell(n["x"], n["h"], n["c"], n["wi"], n["wh"], n["b"]))]
