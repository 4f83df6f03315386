"""GPU cases: conv2d and conv2d_backward (im2col + cuBLAS) against torch (cuDNN).

Shapes are the CPU comparison's (asv_benchmarks/compare_cases/conv.py, bench_conv.SHAPES):
a dense 3x3 layer, a 7x7 stride-2 stem, a 1x1 projection and a depthwise 3x3. torch runs
with cuDNN's TF32 off (on by default for convolutions) so that both sides compute in FP32;
CuPy has no NCHW convolution. GFLOP/s count 2*N*O*C/g*kh*kw*Ho*Wo per forward and twice that
per backward.
"""

# label: (x shape, w shape, stride, padding, groups)
SHAPES = {
    "N32 64->64 32x32 k3 p1": ((32, 64, 32, 32), (64, 64, 3, 3), 1, 1, 1),
    "stem N8 3->64 224x224 k7 s2 p3": ((8, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1),
    "1x1 N32 256->64 28x28": ((32, 256, 28, 28), (64, 256, 1, 1), 1, 0, 1),
    "depthwise N32 128 56x56 k3 p1": ((32, 128, 56, 56), (128, 1, 3, 3), 1, 1, 128),
}


def _out_hw(xs, ws, s, p):
    return (xs[2] + 2 * p - ws[2]) // s + 1, (xs[3] + 2 * p - ws[3]) // s + 1


def _flops(xs, ws, s, p):
    ho, wo = _out_hw(xs, ws, s, p)
    return 2 * xs[0] * ws[0] * ws[1] * ws[2] * ws[3] * ho * wo


def cases(env):
    fd, torch = env.fastdl, env.torch
    if torch is not None:
        torch.backends.cudnn.allow_tf32 = False
    labels = list(SHAPES)
    if env.quick:
        labels = labels[:1] + labels[2:3]
    dtypes = ("float32",) if env.quick else ("float32", "float64")
    for dt in dtypes:
        for label in labels:
            xs, ws, s, p, g = SHAPES[label]
            if dt == "float64" and label != labels[0]:
                continue
            x = env.randn(xs, dt, seed=0)
            w = env.randn(ws, dt, seed=1)
            b = env.randn((ws[0],), dt, seed=2)
            ho, wo = _out_hw(xs, ws, s, p)
            dy = env.randn((xs[0], ws[0], ho, wo), dt, seed=3)
            f = _flops(xs, ws, s, p)

            impls = {"fastdl": lambda x=x, w=w, b=b, s=s, p=p, g=g: fd.conv2d(x, w, b, s, p, 1, g)}
            if torch is not None:
                impls["torch"] = (lambda x=x, w=w, b=b, s=s, p=p, g=g:
                                  torch.nn.functional.conv2d(x, w, b, s, p, 1, g))
            yield {"name": f"conv2d {dt}", "size": label, "bytes": None, "flops": f,
                   "impls": impls}

            if g != 1:
                continue
            impls = {"fastdl": lambda dy=dy, x=x, w=w, s=s, p=p, g=g:
                     fd.conv2d_backward(dy, x, w, s, p, 1, g)}
            if torch is not None:
                impls["torch"] = (lambda dy=dy, x=x, w=w, s=s, p=p, g=g:
                                  torch.ops.aten.convolution_backward(
                                      dy, x, w, [w.shape[0]], [s, s], [p, p], [1, 1], False,
                                      [0, 0], g, [True, True, True]))
            yield {"name": f"conv2d backward (dx,dw,db) {dt}", "size": label, "bytes": None,
                   "flops": 2 * f, "impls": impls}
