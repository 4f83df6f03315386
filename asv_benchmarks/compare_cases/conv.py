"""compare.py cases: conv2d and conv2d_backward, NumPy (im2col with sliding_window_view + matmul,
the cheat-sheet way; see benchmarks/bench_conv.py) vs fastdl vs torch (oneDNN).

Run e.g. ``python asv_benchmarks/compare.py --match conv --quick``. The "bare GEMM" row is the
floor of the 1x1 convolution: the same products as one batched matmul
``W (64x256) @ X (32x256x784)`` in every column. GFLOP/s counts 2*N*O*C/g*kh*kw*Ho*Wo per
forward and twice that per backward.
"""

import fastdl  # noqa: F401

from benchmarks.bench_conv import SHAPES, conv_flops, conv_inputs

# compare.py's namespaces hold only arrays (torch views are made of each), so the NumPy
# baselines of bench_conv are reached through the statement itself.
_NP = "__import__('benchmarks.bench_conv', fromlist=['np_conv2d'])"

FWD = {"numpy": f"{_NP}.np_conv2d(x, w, b, s, p)",
       "fastdl": "fastdl.conv2d(x, w, b, s, p)",
       "torch": "torch.nn.functional.conv2d(t_x, t_w, t_b, s, p)"}
BWD = {"numpy": f"{_NP}.np_conv2d_backward(dy, x, w, s, p)",
       "fastdl": "fastdl.conv2d_backward(dy, x, w, s, p, 1, 1)",
       # what autograd calls for conv2d (oneDNN), all three gradients
       "torch": "torch.ops.aten.convolution_backward(t_dy, t_x, t_w, [t_w.shape[0]], [s, s], "
                "[p, p], [1, 1], False, [0, 0], 1, [True, True, True])"}
DEPTHWISE = {"numpy": f"{_NP}.np_depthwise3x3(x, w)",
             "fastdl": "fastdl.conv2d(x, w, None, 1, 1, 1, x.shape[1])",
             "torch": "torch.nn.functional.conv2d(t_x, t_w, None, 1, 1, 1, t_x.shape[1])"}
GEMM_1X1 = {"numpy": "np.matmul(w2, x3)", "fastdl": "fastdl.matmul(w2, x3)",
            "torch": "torch.matmul(t_w2, t_x3)"}
FWD_1X1_NOBIAS = {"numpy": "np.matmul(w2, x3)", "fastdl": "fastdl.conv2d(x, w)",
                  "torch": "torch.nn.functional.conv2d(t_x, t_w)"}
FWD_1X1_NOBIAS_RES = {"fastdl": "fastdl.conv2d(x, w).reshape(x3.shape[0], w2.shape[0], -1)",
                      "torch": "torch.nn.functional.conv2d(t_x, t_w).reshape("
                               "x3.shape[0], w2.shape[0], -1)"}


def _ns(label):
    def build(dtype):
        x, w, b, dy = conv_inputs(label, dtype)
        ns = {"x": x, "w": w, "b": b, "dy": dy}
        if w.shape[2:] == (1, 1):
            ns["w2"] = w.reshape(w.shape[0], w.shape[1])
            ns["x3"] = x.reshape(x.shape[0], x.shape[1], -1)
        return ns
    return build


def _with_hp(stmts, label):
    """The statements with the label's stride and padding written in (namespaces hold arrays)."""
    _, _, s, p, _ = SHAPES[label]
    return {k: v.replace(", s, p", f", {s}, {p}").replace("[s, s], [p, p]", f"[{s}, {s}], [{p}, {p}]")
            for k, v in stmts.items()}


def cases(Case):
    out = []
    dense = "N32 64->64 32x32 k3 p1"
    stem = "stem N8 3->64 224x224 k7 s2 p3"
    pointwise = "1x1 N32 256->64 28x28"
    dw = "depthwise N32 128 56x56 k3 p1"
    for label in (dense, stem):
        f = conv_flops(label)
        out.append(Case("conv2d", label, "float32", _ns(label), _with_hp(FWD, label), flops=f))
        out.append(Case("conv2d backward (dX,dW,db)", label, "float32", _ns(label), _with_hp(BWD, label),
                        flops=2 * f))
    out.append(Case("conv2d", dense, "float64", _ns(dense), _with_hp(FWD, dense),
                    flops=conv_flops(dense)))
    f = conv_flops(pointwise)
    out.append(Case("conv2d 1x1 (bias)", pointwise, "float32", _ns(pointwise), _with_hp(FWD, pointwise),
                    flops=f))
    out.append(Case("conv2d 1x1 no bias (numpy column: the matmul)", pointwise, "float32",
                    _ns(pointwise), FWD_1X1_NOBIAS, FWD_1X1_NOBIAS_RES, flops=f))
    out.append(Case("bare GEMM of the 1x1 conv: W @ X[n]", pointwise, "float32",
                    _ns(pointwise), GEMM_1X1, flops=f))
    out.append(Case("conv2d 1x1 backward (dX,dW,db)", pointwise, "float32", _ns(pointwise),
                    _with_hp(BWD, pointwise), flops=2 * f))
    out.append(Case("conv2d depthwise 3x3", dw, "float32", _ns(dw), DEPTHWISE,
                    flops=conv_flops(dw)))
    return out
