"""compare.py cases: batch_norm, layer_norm and 2-D pooling, NumPy (cheat-sheet formulas) vs
fastdl vs torch.

Run e.g. ``python asv_benchmarks/compare.py --match batch_norm --quick`` (also ``layer_norm``,
``pool``, ``copy``). The "copy" rows are the floor of these memory-bound ops: the bytes of x
copied once (read x, write y). Training batch_norm reads x twice and writes y once; its
floor is about 1.5 copies. torch's backward rows call its native kernels directly
(``native_batch_norm_backward``, ``native_layer_norm_backward``), what autograd runs.
"""

import numpy as np

import fastdl

from benchmarks import _common

EPS = 1e-5


def _bn_ns(shape):
    def build(dtype):
        C = shape[1]
        x = _common.randn(shape, dtype, 0, scale=2.0)
        x += np.asarray(1.0, dtype)
        g = _common.uniform(C, dtype, 1, low=0.5, high=1.5)
        b = _common.randn(C, dtype, 2)
        _, m, inv = fastdl.batch_norm(x, g, b, None, None, return_stats=True)
        sh = (1, C) + (1,) * (len(shape) - 2)
        return {"x": x, "g": g, "b": b, "g4": g.reshape(sh), "b4": b.reshape(sh),
                "rm": np.zeros(C, dtype), "rv": np.ones(C, dtype),
                "rm4": np.zeros(sh, dtype), "rv4": np.ones(sh, dtype),
                "m": m, "inv": inv, "m4": m.reshape(sh), "inv4": inv.reshape(sh),
                "dy": _common.randn(shape, dtype, 3), "out": np.empty_like(x)}
    return build


AX = "(0, 2, 3)"
BN_TRAIN = {
    "numpy": f"mean = x.mean(axis={AX}, keepdims=True); var = x.var(axis={AX}, keepdims=True); "
             f"y = (x - mean) / np.sqrt(var + {EPS}) * g4 + b4",
    "fastdl": "y = fastdl.batch_norm(x, g, b, rm, rv)",
    "torch": f"y = torch.nn.functional.batch_norm(t_x, t_rm, t_rv, t_g, t_b, training=True, "
             f"eps={EPS})"}
BN_INFER = {
    "numpy": f"y = g4 * (x - rm4) / np.sqrt(rv4 + {EPS}) + b4",
    "fastdl": "y = fastdl.batch_norm(x, g, b, rm, rv, training=False)",
    "torch": f"y = torch.nn.functional.batch_norm(t_x, t_rm, t_rv, t_g, t_b, training=False, "
             f"eps={EPS})"}
BN_BWD = {
    "numpy": f"M = x.size // x.shape[1]; xhat = (x - m4) * inv4; "
             f"db = dy.sum(axis={AX}); dg = (dy * xhat).sum(axis={AX}); "
             f"dx = g4 * inv4 * (dy - db.reshape(g4.shape) / M - xhat * dg.reshape(g4.shape) / M)",
    "fastdl": "dx, dg, db = fastdl.batch_norm_backward(dy, x, g, m, inv)",
    "torch": "dx, dg, db = torch.ops.aten.native_batch_norm_backward(t_dy, t_x, t_g, None, "
             f"None, t_m, t_inv, True, {EPS}, [True, True, True])"}
BN_BWD_RES = {"numpy": "(dx, dg, db)", "fastdl": "(dx, dg, db)", "torch": "(dx, dg, db)"}
COPY = {"numpy": "np.copyto(out, x)", "fastdl": "np.copyto(out, x)",
        "torch": "t_out.copy_(t_x)"}
COPY_RES = {"numpy": "out", "fastdl": "out", "torch": "t_out"}
# the floor of an op that returns a new array: it also pays the first touch of its pages
COPY_ALLOC = {"numpy": "x.copy()", "fastdl": "x.copy()", "torch": "t_x.clone()"}
Y_RES = {"numpy": "y", "fastdl": "y", "torch": "y"}


def _ln_ns(shape):
    def build(dtype):
        D = shape[-1]
        x = _common.randn(shape, dtype, 0, scale=2.0)
        g = _common.uniform(D, dtype, 1, low=0.5, high=1.5)
        b = _common.randn(D, dtype, 2)
        _, m, inv = fastdl.layer_norm(x, D, g, b, return_stats=True)
        return {"x": x, "g": g, "b": b, "m": m, "inv": inv, "m3": m[..., None],
                "inv3": inv[..., None], "dy": _common.randn(shape, dtype, 3),
                "out": np.empty_like(x)}
    return build


LN = {"numpy": f"mean = x.mean(-1, keepdims=True); var = x.var(-1, keepdims=True); "
               f"y = (x - mean) / np.sqrt(var + {EPS}) * g + b",
      "fastdl": "y = fastdl.layer_norm(x, x.shape[-1], g, b)",
      "torch": f"y = torch.nn.functional.layer_norm(t_x, (t_x.shape[-1],), t_g, t_b, {EPS})"}
LN_BWD = {
    "numpy": "D = x.shape[-1]; xhat = (x - m3) * inv3; u = dy * g; "
             "dx = inv3 * (u - u.mean(-1, keepdims=True) - xhat * (u * xhat).mean(-1, keepdims=True)); "
             "dg = (dy * xhat).reshape(-1, D).sum(0); db = dy.reshape(-1, D).sum(0)",
    "fastdl": "dx, dg, db = fastdl.layer_norm_backward(dy, x, x.shape[-1], g, m, inv)",
    "torch": "dx, dg, db = torch.ops.aten.native_layer_norm_backward(t_dy, t_x, "
             "(t_x.shape[-1],), t_m3, t_inv3, t_g, t_b, [True, True, True])"}


def _pool_ns(shape, k=2, s=2, p=0):
    def build(dtype):
        x = _common.randn(shape, dtype, 0)
        y, idx = fastdl.max_pool2d(x, k, s, p, return_indices=True)
        return {"x": x, "idx": idx, "dy": _common.randn(y.shape, dtype, 1),
                "xpad": np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf),
                "out": np.empty_like(x)}
    return build


MAXPOOL_RESHAPE = {"numpy": "x.reshape(x.shape[0], x.shape[1], x.shape[2] // 2, 2, x.shape[3] // 2, 2).max(axis=(3, 5))",
                   "fastdl": "fastdl.max_pool2d(x, 2)",
                   "torch": "torch.nn.functional.max_pool2d(t_x, 2)"}
MAXPOOL_SLICE = {"numpy": "np.maximum(np.maximum(x[:, :, ::2, ::2], x[:, :, ::2, 1::2]), "
                          "np.maximum(x[:, :, 1::2, ::2], x[:, :, 1::2, 1::2]))",
                 "fastdl": "fastdl.max_pool2d(x, 2)",
                 "torch": "torch.nn.functional.max_pool2d(t_x, 2)"}
# 3x3 stride 2 pad 1 (the ResNet stem pool) with indices; NumPy: max of 9 strided slices of
# the -inf padded input (values only)
MAXPOOL_331 = {"numpy": "y = xpad[:, :, 0:-2:2, 0:-2:2].copy()\n"
                        "for i in range(3):\n"
                        "    for j in range(3):\n"
                        "        np.maximum(y, xpad[:, :, i:xpad.shape[2] - 2 + i:2, "
                        "j:xpad.shape[3] - 2 + j:2], out=y)",
               "fastdl": "y, i = fastdl.max_pool2d(x, 3, 2, 1, return_indices=True)",
               "torch": "y, i = torch.nn.functional.max_pool2d(t_x, 3, 2, 1, "
                        "return_indices=True)"}
MAXPOOL_BWD = {"numpy": "nc = x.shape[0] * x.shape[1]; dx = np.zeros(x.shape, x.dtype); "
                        "np.put_along_axis(dx.reshape(nc, -1), idx.reshape(nc, -1), "
                        "dy.reshape(nc, -1), axis=1)",
               "fastdl": "dx = fastdl.max_pool2d_backward(dy, x, idx, 2)",
               "torch": "dx = torch.ops.aten.max_pool2d_with_indices_backward(t_dy, t_x, [2, 2], "
                        "[2, 2], [0, 0], [1, 1], False, t_idx)"}
AVGPOOL = {"numpy": "x.reshape(x.shape[0], x.shape[1], x.shape[2] // 2, 2, x.shape[3] // 2, 2).mean(axis=(3, 5))",
           "fastdl": "fastdl.avg_pool2d(x, 2)",
           "torch": "torch.nn.functional.avg_pool2d(t_x, 2)"}
GAP = {"numpy": "x.mean(axis=(2, 3))", "fastdl": "fastdl.global_avg_pool2d(x)",
       "torch": "t_x.mean((2, 3))"}


def cases(Case):
    out = []
    for shape in ((32, 128, 28, 28), (64, 64, 56, 56)):
        size = "x".join(map(str, shape))
        out.append(Case("copy (floor of bn/pool: x in, x out)", size, "float32", _bn_ns(shape),
                        COPY, COPY_RES))
        out.append(Case("copy, allocating (floor of bn/pool: x in, new y)", size, "float32",
                        _bn_ns(shape), COPY_ALLOC))
        out.append(Case("batch_norm training forward", size, "float32", _bn_ns(shape),
                        BN_TRAIN, Y_RES))
        out.append(Case("batch_norm inference", size, "float32", _bn_ns(shape), BN_INFER,
                        Y_RES))
        out.append(Case("batch_norm backward (dx,dgamma,dbeta)", size, "float32",
                        _bn_ns(shape), BN_BWD, BN_BWD_RES))
    out.append(Case("batch_norm training forward", "32x128x28x28", "float64",
                    _bn_ns((32, 128, 28, 28)), BN_TRAIN, Y_RES))
    out.append(Case("copy (floor of layer_norm)", "8x512x768", "float32",
                    _ln_ns((8, 512, 768)), COPY, COPY_RES))
    out.append(Case("layer_norm", "8x512x768", "float32", _ln_ns((8, 512, 768)), LN, Y_RES))
    out.append(Case("layer_norm backward (dx,dgamma,dbeta)", "8x512x768", "float32",
                    _ln_ns((8, 512, 768)), LN_BWD, BN_BWD_RES))
    pool = (32, 64, 112, 112)
    psize = "x".join(map(str, pool))
    out.append(Case("copy (floor of max_pool2d: x in)", psize, "float32", _pool_ns(pool),
                    COPY, COPY_RES))
    out.append(Case("max_pool2d 2x2 s2 (numpy reshape-max)", psize, "float32", _pool_ns(pool),
                    MAXPOOL_RESHAPE))
    out.append(Case("max_pool2d 2x2 s2 (numpy slicing max)", psize, "float32", _pool_ns(pool),
                    MAXPOOL_SLICE))
    out.append(Case("max_pool2d 3x3 s2 p1 + indices", psize, "float32",
                    _pool_ns(pool, 3, 2, 1), MAXPOOL_331, Y_RES))
    out.append(Case("max_pool2d_backward 2x2 s2", psize, "float32", _pool_ns(pool),
                    MAXPOOL_BWD, {"numpy": "dx", "fastdl": "dx", "torch": "dx"}))
    out.append(Case("avg_pool2d 2x2 s2", psize, "float32", _pool_ns(pool), AVGPOOL))
    out.append(Case("global_avg_pool2d", "32x512x7x7", "float32", _pool_ns((32, 512, 7, 7)),
                    GAP))
    # small planes, pooled 16 at a time (fdl_pool_lanes): a ResNet's 56x56 and the digits
    # CNN's 8x8 stacks
    for small in ((32, 64, 56, 56), (32, 16, 8, 8)):
        ssize = "x".join(map(str, small))
        out.append(Case("max_pool2d 3x3 s2 p1 + indices", ssize, "float32",
                        _pool_ns(small, 3, 2, 1), MAXPOOL_331, Y_RES))
    out.append(Case("avg_pool2d 2x2 s2", "32x16x8x8", "float32", _pool_ns((32, 16, 8, 8)),
                    AVGPOOL))
    return out
