"""compare.py cases for the elementwise family: activations, their fused backward, broadcasting
arithmetic, a plain copy as the floor, and tiny calls.

The shapes and NumPy formulas are those of ``benchmarks/bench_elementwise.py`` (float32, the
cheat-sheet formulas). PyTorch runs the op it has: ``torch.relu``, ``torch.sigmoid``,
``torch.tanh``, ``F.leaky_relu``, ``F.gelu``, ``F.silu``, ``torch.add`` ... and, for the
backward, the fused ATen kernels its autograd calls (``threshold_backward``,
``leaky_relu_backward``, ``sigmoid_backward``, ``tanh_backward``, ``gelu_backward``,
``silu_backward``). ``out=`` rows give each library its best form with a preallocated result
(NumPy: a chain of in-place ufuncs).

The "copy" rows are the floor, not an op: every column runs ``np.copyto`` (torch:
``Tensor.copy_``, which is multi-threaded) of the same 16M elements, i.e. one read and one
write of the bytes an activation must move (a backward moves 1.5 times as many); the
"allocating" copy (``x.copy()``, ``torch.clone``) is the floor of the forms that return a new
array, which also pay for the first touch of its pages. The floor is the fastest column. Match with
``--match 16M`` to time the activations, their backward and the floor in one run,
``--match "4096x4096 "`` for the arithmetic on 4096x4096 with its own copy row (a bias-row op
moves the bytes of that copy; a same-shape one 1.5 times as many), ``--match "(64,256,1)"`` for
the cheat sheet's outer-product broadcast (it only writes: half a copy), and
``--match tiny`` for the per-call overhead.

fastdl's functions are called as ``fastdl.<name>`` once the package re-exports them, else as
``fastdl._ext._elementwise.<name>`` (two attribute look-ups more per call, ~40 ns: only the
tiny rows would notice).
"""

import numpy as np

import fastdl

from benchmarks import _common

if hasattr(fastdl, "relu"):
    FD = "fastdl."
else:
    import fastdl._ext._elementwise  # noqa: F401  (makes the attribute path work)
    FD = "fastdl._ext._elementwise."

N = 1 << 24          # 16M
C = "0.7978845608028654"   # sqrt(2 / pi)


def _stmts(numpy, fastdl_call, torch):
    return {"numpy": numpy, "fastdl": FD + fastdl_call, "torch": torch}


def _activation_ns(n):
    def build(dtype):
        out = {"x": _common.randn(n, dtype, 0), "dy": _common.randn(n, dtype, 1),
               "ys": _common.uniform(n, dtype, 2, 0.0, 1.0),
               "yt": _common.uniform(n, dtype, 3, -1.0, 1.0),
               "one": np.array(1, dtype), "alpha": np.array(0.01, dtype)}
        for name in ("o_np", "o_fd", "o_t"):
            out[name] = np.zeros(n, dtype)
        return out
    return build


def _binary_ns(shape_a, shape_b):
    def build(dtype):
        result = np.broadcast_shapes(shape_a, shape_b)
        out = {"a": _common.randn(shape_a, dtype, 0),
               "b": _common.uniform(shape_b, dtype, 1, 0.5, 1.5)}
        for name in ("c_np", "c_fd", "c_t"):
            out[name] = np.zeros(result, dtype)
        return out
    return build


OUT_RES = {"numpy": "o_np", "fastdl": "o_fd", "torch": "t_o_t"}
BIN_OUT_RES = {"numpy": "c_np", "fastdl": "c_fd", "torch": "t_c_t"}

GELU_TANH_NP = f"0.5 * x * (1 + np.tanh({C} * (x + 0.044715 * x**3)))"
GELU_TANH_NP_OUT = ("np.multiply(x, x, out=o_np); np.multiply(o_np, x, out=o_np); "
                    "np.multiply(o_np, 0.044715, out=o_np); np.add(o_np, x, out=o_np); "
                    f"np.multiply(o_np, {C}, out=o_np); np.tanh(o_np, out=o_np); "
                    "np.add(o_np, 1, out=o_np); np.multiply(o_np, x, out=o_np); "
                    "np.multiply(o_np, 0.5, out=o_np)")
GELU_ERF_NP = ("0.5 * x * (1 + __import__('scipy.special', fromlist=['erf'])"
               ".erf(x * 0.7071067811865476))")

ACTIVATIONS = [
    ("relu", _stmts("np.maximum(x, 0)", "relu(x)", "torch.relu(t_x)"), None),
    ("relu out=", _stmts("np.maximum(x, 0, out=o_np)", "relu(x, out=o_fd)",
                         "torch.clamp_min(t_x, 0, out=t_o_t)"), OUT_RES),
    ("leaky_relu", _stmts("np.maximum(0.01 * x, x)", "leaky_relu(x, 0.01)",
                          "torch.nn.functional.leaky_relu(t_x, 0.01)"), None),
    ("leaky_relu out=", _stmts("np.multiply(x, 0.01, out=o_np); np.maximum(o_np, x, out=o_np)",
                               "leaky_relu(x, 0.01, out=o_fd)",
                               "torch.ops.aten.leaky_relu.out(t_x, 0.01, out=t_o_t)"), OUT_RES),
    ("sigmoid", _stmts("1 / (1 + np.exp(-x))", "sigmoid(x)", "torch.sigmoid(t_x)"), None),
    ("sigmoid out=", _stmts("np.negative(x, out=o_np); np.exp(o_np, out=o_np); "
                            "np.add(o_np, 1, out=o_np); np.reciprocal(o_np, out=o_np)",
                            "sigmoid(x, out=o_fd)", "torch.sigmoid(t_x, out=t_o_t)"), OUT_RES),
    ("tanh", _stmts("np.tanh(x)", "tanh(x)", "torch.tanh(t_x)"), None),
    ("tanh out=", _stmts("np.tanh(x, out=o_np)", "tanh(x, out=o_fd)",
                         "torch.tanh(t_x, out=t_o_t)"), OUT_RES),
    ("gelu (tanh form)", _stmts(GELU_TANH_NP, "gelu(x, 'tanh')",
                                "torch.nn.functional.gelu(t_x, approximate='tanh')"), None),
    ("gelu (tanh form) out=", _stmts(GELU_TANH_NP_OUT, "gelu(x, 'tanh', out=o_fd)",
                                     "torch.ops.aten.gelu.out(t_x, approximate='tanh', "
                                     "out=t_o_t)"), OUT_RES),
    ("gelu (erf; numpy: scipy erf)", _stmts(GELU_ERF_NP, "gelu(x)",
                                             "torch.nn.functional.gelu(t_x)"), None),
    ("gelu (erf) out=", _stmts(GELU_ERF_NP, "gelu(x, out=o_fd)",
                               "torch.ops.aten.gelu.out(t_x, out=t_o_t)"), None),
    ("silu", _stmts("x / (1 + np.exp(-x))", "silu(x)", "torch.nn.functional.silu(t_x)"), None),
    ("copy (floor; every column a copy)", {"numpy": "np.copyto(o_np, x)",
                                           "fastdl": "np.copyto(o_fd, x)",
                                           "torch": "t_o_t.copy_(t_x)"}, OUT_RES),
    ("copy, allocating (floor of the allocating forms)", {"numpy": "x.copy()",
                                                          "fastdl": "x.copy()",
                                                          "torch": "t_x.clone()"}, None),
]

GELU_TANH_BW_NP = (f"t = np.tanh({C} * (x + 0.044715 * x**3)); "
                   f"r = dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * {C} "
                   "* (1 + 0.134145 * x * x))")
SILU_BW_NP = "s = 1 / (1 + np.exp(-x)); r = dy * s * (1 + x * (1 - s))"

BACKWARD = [
    ("relu backward", _stmts("dy * (x > 0)", "relu_backward(dy, x)",
                             "torch.ops.aten.threshold_backward(t_dy, t_x, 0)"), None),
    ("relu backward out=", _stmts("np.multiply(dy, x > 0, out=o_np)",
                                  "relu_backward(dy, x, out=o_fd)",
                                  "torch.ops.aten.threshold_backward.grad_input(t_dy, t_x, 0, "
                                  "grad_input=t_o_t)"), OUT_RES),
    ("leaky_relu backward", _stmts("dy * np.where(x > 0, one, alpha)",
                                   "leaky_relu_backward(dy, x, 0.01)",
                                   "torch.ops.aten.leaky_relu_backward(t_dy, t_x, 0.01, False)"),
     None),
    ("leaky_relu backward out=", _stmts("np.multiply(dy, np.where(x > 0, one, alpha), out=o_np)",
                                        "leaky_relu_backward(dy, x, 0.01, out=o_fd)",
                                        "torch.ops.aten.leaky_relu_backward.grad_input(t_dy, t_x, "
                                        "0.01, False, grad_input=t_o_t)"), OUT_RES),
    ("sigmoid backward (from y)", _stmts("dy * ys * (1 - ys)", "sigmoid_backward(dy, ys)",
                                         "torch.ops.aten.sigmoid_backward(t_dy, t_ys)"), None),
    ("sigmoid backward (from y) out=",
     _stmts("np.subtract(1, ys, out=o_np); np.multiply(o_np, ys, out=o_np); "
            "np.multiply(o_np, dy, out=o_np)", "sigmoid_backward(dy, ys, out=o_fd)",
            "torch.ops.aten.sigmoid_backward.grad_input(t_dy, t_ys, grad_input=t_o_t)"), OUT_RES),
    ("tanh backward (from y)", _stmts("dy * (1 - yt**2)", "tanh_backward(dy, yt)",
                                      "torch.ops.aten.tanh_backward(t_dy, t_yt)"), None),
    ("tanh backward (from y) out=",
     _stmts("np.multiply(yt, yt, out=o_np); np.subtract(1, o_np, out=o_np); "
            "np.multiply(o_np, dy, out=o_np)", "tanh_backward(dy, yt, out=o_fd)",
            "torch.ops.aten.tanh_backward.grad_input(t_dy, t_yt, grad_input=t_o_t)"), OUT_RES),
    ("gelu (tanh form) backward", _stmts(GELU_TANH_BW_NP, "gelu_backward(dy, x, 'tanh')",
                                         "torch.ops.aten.gelu_backward(t_dy, t_x, "
                                         "approximate='tanh')"),
     {"numpy": "r"}),
    ("silu backward", _stmts(SILU_BW_NP, "silu_backward(dy, x)",
                             "torch.ops.aten.silu_backward(t_dy, t_x)"), {"numpy": "r"}),
]

BIAS = ((4096, 4096), (4096,))
SAME = ((4096, 4096), (4096, 4096))
OUTER = ((64, 256, 1), (1, 1, 1024))
BINARY = [
    ("add", "4096x4096 + 4096", BIAS, _stmts("a + b", "add(a, b)", "torch.add(t_a, t_b)"), None),
    ("add out=", "4096x4096 + 4096", BIAS,
     _stmts("np.add(a, b, out=c_np)", "add(a, b, out=c_fd)", "torch.add(t_a, t_b, out=t_c_t)"),
     BIN_OUT_RES),
    ("add", "4096x4096 + 4096x4096", SAME, _stmts("a + b", "add(a, b)", "torch.add(t_a, t_b)"),
     None),
    ("add out=", "4096x4096 + 4096x4096", SAME,
     _stmts("np.add(a, b, out=c_np)", "add(a, b, out=c_fd)", "torch.add(t_a, t_b, out=t_c_t)"),
     BIN_OUT_RES),
    ("multiply", "(64,256,1) * (1,1,1024)", OUTER,
     _stmts("a * b", "multiply(a, b)", "torch.mul(t_a, t_b)"), None),
    ("multiply out=", "(64,256,1) * (1,1,1024)", OUTER,
     _stmts("np.multiply(a, b, out=c_np)", "multiply(a, b, out=c_fd)",
            "torch.mul(t_a, t_b, out=t_c_t)"), BIN_OUT_RES),
    ("multiply", "4096x4096 * 4096", BIAS,
     _stmts("a * b", "multiply(a, b)", "torch.mul(t_a, t_b)"), None),
    ("divide", "4096x4096 / 4096", BIAS,
     _stmts("a / b", "divide(a, b)", "torch.div(t_a, t_b)"), None),
    ("maximum", "4096x4096 vs 4096", BIAS,
     _stmts("np.maximum(a, b)", "maximum(a, b)", "torch.maximum(t_a, t_b)"), None),
    ("copy (floor; every column a copy)", "4096x4096 (a into c)", BIAS,
     {"numpy": "np.copyto(c_np, a)", "fastdl": "np.copyto(c_fd, a)", "torch": "t_c_t.copy_(t_a)"},
     BIN_OUT_RES),
]

TINY = [
    ("relu", _activation_ns(16), _stmts("np.maximum(x, 0)", "relu(x)", "torch.relu(t_x)")),
    ("sigmoid", _activation_ns(16),
     _stmts("1 / (1 + np.exp(-x))", "sigmoid(x)", "torch.sigmoid(t_x)")),
    ("relu backward", _activation_ns(16),
     _stmts("dy * (x > 0)", "relu_backward(dy, x)",
            "torch.ops.aten.threshold_backward(t_dy, t_x, 0)")),
    ("add (4x4 + 4)", _binary_ns((4, 4), (4,)), _stmts("a + b", "add(a, b)",
                                                       "torch.add(t_a, t_b)")),
]


def cases(Case):
    out = []
    for op, stmts, results in ACTIVATIONS + BACKWARD:
        out.append(Case(op, "16M", "float32", _activation_ns(N), stmts, results))
    for op, size, (sa, sb), stmts, results in BINARY:
        out.append(Case(op, size, "float32", _binary_ns(sa, sb), stmts, results))
    for op, build, stmts in TINY:
        out.append(Case(op, "16 (tiny)", "float32", build, stmts, tiny=True))
    return out
