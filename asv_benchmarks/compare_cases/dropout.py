"""compare.py cases: dropout (forward, with mask, backward) and init, NumPy vs fastdl vs torch.

Run e.g. ``python asv_benchmarks/compare.py --match dropout --quick`` (also ``--match init``,
``--match copy``). NumPy's side is the cheat sheet with p the drop probability:
``mask = rng.binomial(1, 1 - p, x.shape); x * mask / (1 - p)`` (an int64 mask, so the result is
float64), and the faster ``x * (rng.random(x.shape, dtype=float32) >= p) / (1 - p)``; torch's
is ``torch.nn.functional.dropout``. The RNGs differ, so the accuracy check compares
``where(y != 0, y - x / (1 - p), 0)`` (zero for every side: kept values scaled, dropped zero).
The "copy" row is the floor: the bytes of reading x and writing y once.
"""

import numpy as np

from benchmarks import _common

N = 1 << 24          # 16M elements, 64 MiB of float32
P = 0.5

BINOMIAL = f"rng = np.random.default_rng(1); mask = rng.binomial(1, 1 - {P}, x.shape); " \
           f"y = x * mask / (1 - {P})"
RANDOM = f"rng = np.random.default_rng(1); y = x * (rng.random(x.shape, dtype=x.dtype) >= {P})" \
         f" / x.dtype.type(1 - {P})"
FASTDL = f"y = fastdl.dropout(x, {P}, seed=1)"
TORCH = f"t_y = torch.nn.functional.dropout(t_x, {P}, True)"
CHECK = f"np.where(y != 0, y - x / (1 - {P}), 0)"
RES = {"numpy": CHECK, "fastdl": CHECK,
       "torch": f"np.where(t_y.numpy() != 0, t_y.numpy() - x / (1 - {P}), 0)"}

OUT = {"numpy": "rng = np.random.default_rng(1); "
                f"np.multiply(x, rng.random(x.shape, dtype=x.dtype) >= {P}, out=out); "
                f"np.multiply(out, x.dtype.type(1 / (1 - {P})), out=out)",
       "fastdl": f"fastdl.dropout(x, {P}, seed=1, out=out)",
       "torch": f"t_out.copy_(t_x); torch.nn.functional.dropout(t_out, {P}, True, inplace=True)"}
OUT_CHECK = f"np.where(out != 0, out - x / (1 - {P}), 0)"
OUT_RES = {"numpy": OUT_CHECK, "fastdl": OUT_CHECK,
           "torch": f"np.where(t_out.numpy() != 0, t_out.numpy() - x / (1 - {P}), 0)"}

MASK = {"numpy": "rng = np.random.default_rng(1); "
                 f"m = rng.random(x.shape, dtype=x.dtype) >= {P}; "
                 f"y = x * m / x.dtype.type(1 - {P})",
        "fastdl": f"y, m = fastdl.dropout(x, {P}, seed=1, return_mask=True)",
        "torch": f"t_y, t_m = torch.native_dropout(t_x, {P}, True)"}
MASK_CHECK = f"(np.where(m, y - x / (1 - {P}), 0), np.where(m, 0, y))"
MASK_RES = {"numpy": MASK_CHECK, "fastdl": MASK_CHECK,
            "torch": f"(np.where(t_m.numpy(), t_y.numpy() - x / (1 - {P}), 0), "
                     f"np.where(t_m.numpy(), 0, t_y.numpy()))"}

BWD_MASK = {"numpy": f"dx = dy * keep / dy.dtype.type(1 - {P})",
            "fastdl": f"dx = fastdl.dropout_backward(dy, keep, {P})",
            "torch": f"t_dx = torch.ops.aten.native_dropout_backward(t_dy, t_keep, "
                     f"1 / (1 - {P}))"}
BWD_RES = {"numpy": "dx", "fastdl": "dx", "torch": "t_dx"}
# the backward from the seed regenerates the mask: NumPy has to redraw it too
BWD_SEED = {"numpy": "rng = np.random.default_rng(1); "
                     f"dx = dy * (rng.random(dy.shape, dtype=dy.dtype) >= {P}) "
                     f"/ dy.dtype.type(1 - {P})",
            "fastdl": f"dx = fastdl.dropout_backward(dy, 1, {P})",
            "torch": f"t_dx = torch.ops.aten.native_dropout_backward(t_dy, t_keep, "
                     f"1 / (1 - {P}))"}
BWD_SEED_CHECK = f"np.where(dx != 0, dx - dy / (1 - {P}), 0)"
BWD_SEED_RES = {"numpy": BWD_SEED_CHECK, "fastdl": BWD_SEED_CHECK,
                "torch": f"np.where(t_dx.numpy() != 0, t_dx.numpy() - dy / (1 - {P}), 0)"}

COPY = {"numpy": "np.copyto(out, x)", "fastdl": "np.copyto(out, x)", "torch": "t_out.copy_(t_x)"}
COPY_RES = {"numpy": "out", "fastdl": "out", "torch": "t_out"}

# init: the cheat sheet (np.random.randn, float64), a float32 Generator, fastdl, torch
FAN = 4096
INIT_CHECK = f"np.float64(round(float(w.std()) / np.sqrt(2 / {FAN}), 1))"
HE = {"numpy": f"w = np.random.randn({FAN}, {FAN}) * np.sqrt(2.0 / {FAN})",
      "fastdl": f"w = fastdl.init.he_normal({FAN}, {FAN}, rng=1)",
      "torch": "torch.nn.init.kaiming_normal_(t_w, nonlinearity='relu')"}
HE_GEN = dict(HE, numpy=f"w = np.random.default_rng(1).standard_normal(({FAN}, {FAN}), "
                        f"dtype=np.float32) * np.float32(np.sqrt(2.0 / {FAN}))")
HE_RES = {"numpy": INIT_CHECK, "fastdl": INIT_CHECK,
          "torch": f"np.float64(round(float(t_w.std()) / np.sqrt(2 / {FAN}), 1))"}
XU = {"numpy": f"b = np.sqrt(6.0 / {2 * FAN}); "
               f"w = np.random.default_rng(1).uniform(-b, b, ({FAN}, {FAN})).astype(np.float32)",
      "fastdl": f"w = fastdl.init.xavier_uniform({FAN}, {FAN}, rng=1)",
      "torch": "torch.nn.init.xavier_uniform_(t_w)"}
XU_CHECK = f"np.float64(round(float(w.std()) / np.sqrt(1 / {FAN}), 1))"
XU_RES = {"numpy": XU_CHECK, "fastdl": XU_CHECK,
          "torch": f"np.float64(round(float(t_w.std()) / np.sqrt(1 / {FAN}), 1))"}


def _ns(n):
    def build(dtype):
        x = _common.randn((n,), dtype, 0)
        return {"x": x, "dy": _common.randn((n,), dtype, 1), "out": np.empty_like(x),
                "keep": _common.rng(2).random(n) >= P}
    return build


def _init_ns(dtype):
    return {"w": np.empty((FAN, FAN), dtype)}


def cases(Case):
    out = [Case("copy (floor: read x, write y)", "16M", "float32", _ns(N), COPY, COPY_RES)]
    for dt in ("float32", "float64"):
        out.append(Case("dropout p=0.5 (numpy: cheat-sheet binomial mask)", "16M", dt, _ns(N),
                        {"numpy": BINOMIAL, "fastdl": FASTDL, "torch": TORCH}, RES))
    out.append(Case("dropout p=0.5 (numpy: rng.random >= p mask)", "16M", "float32", _ns(N),
                    {"numpy": RANDOM, "fastdl": FASTDL, "torch": TORCH}, RES))
    out.append(Case("dropout p=0.5 out=", "16M", "float32", _ns(N), OUT, OUT_RES))
    out.append(Case("dropout p=0.5 + bool mask", "16M", "float32", _ns(N), MASK, MASK_RES))
    out.append(Case("dropout_backward from mask", "16M", "float32", _ns(N), BWD_MASK, BWD_RES))
    out.append(Case("dropout_backward from seed (numpy/torch: redraw/mask)", "16M", "float32",
                    _ns(N), BWD_SEED, BWD_SEED_RES))
    out.append(Case("dropout p=0.5", "16", "float32", _ns(16),
                    {"numpy": RANDOM, "fastdl": FASTDL, "torch": TORCH}, RES, tiny=True))
    out.append(Case("init he_normal (numpy: cheat-sheet randn f64)", f"{FAN}x{FAN}", "float32",
                    _init_ns, HE, HE_RES))
    out.append(Case("init he_normal (numpy: Generator f32)", f"{FAN}x{FAN}", "float32",
                    _init_ns, HE_GEN, HE_RES))
    out.append(Case("init xavier_uniform", f"{FAN}x{FAN}", "float32", _init_ns, XU, XU_RES))
    return out
