"""cross_entropy, cross_entropy_grad, mse, mse_grad and the fused softmax_cross_entropy:
reference, reductions, layouts, special values, threads, bad input, finite-difference
gradients, and PyTorch's semantics (label_smoothing, ignore_index) where torch is installed."""

import numpy as np
import pytest

import fastdl
from conftest import (assert_close, assert_unchanged, layout, random_array, requires_openmp,
                      snapshot)
from fastdl._ext._losses import (cross_entropy, cross_entropy_grad, mse, mse_grad,
                                 softmax_cross_entropy)
from reference_softmax_losses import (cross_entropy_grad_ref, cross_entropy_ref, mse_grad_ref,
                                      mse_ref, softmax_cross_entropy_ref, softmax_ref)

REDUCTIONS = ("sum", "mean", "none")
FLAT_LAYOUTS = ("C", "F", "strided", "negative")


def _probs(rng, shape, dtype, zeros=True):
    p = rng.random(shape) + 0.05
    p /= p.sum(-1, keepdims=True)
    if zeros and p.size:
        p.reshape(-1)[::7] = 0.0        # zero targets (and, at some places, zero predictions)
    return p.astype(dtype)


def _check_result(value, reduction, dtype, shape):
    if reduction == "none":
        assert isinstance(value, (np.ndarray, np.generic)) and value.shape == shape
    else:
        assert isinstance(value, np.generic) and value.dtype == dtype, type(value)


def _numeric_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f(x)
        flat[i] = old - h
        fm = f(x)
        flat[i] = old
        g.reshape(-1)[i] = (fp - fm) / (2 * h)
    return g


# --------------------------------------------------------------------------------------
# cross_entropy (probabilities, class axis last)

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(7,), (5, 3), (4, 6, 33), (64, 1000)], ids=str)
def test_cross_entropy_matches_reference(reduction, shape, dtype, rng):
    t = _probs(rng, shape, dtype)
    p = _probs(rng, shape, dtype, zeros=False)
    p.reshape(-1)[::14] = 0.0           # y_pred == 0 where y_true == 0: contributes 0, not NaN
    before = snapshot(t, p)
    value = cross_entropy(t, p, reduction)
    expected = cross_entropy_ref(t, p, reduction)
    _check_result(value, reduction, dtype, shape[:-1])
    assert_close(value, expected, dtype, terms=shape[-1])
    assert np.all(np.isfinite(value))
    assert_unchanged(before, t, p)


def test_cross_entropy_default_is_cheat_sheet_sum(rng):
    t = _probs(rng, (8, 10), np.float64, zeros=False)
    p = _probs(rng, (8, 10), np.float64, zeros=False)
    assert_close(cross_entropy(t, p), -np.sum(t * np.log(p)), np.float64, terms=80)


@pytest.mark.parametrize("kind", FLAT_LAYOUTS)
def test_cross_entropy_layouts(kind, dtype, rng):
    t = layout(_probs(rng, (6, 5, 40), dtype), kind)
    p = layout(_probs(rng, (6, 5, 40), dtype, zeros=False), "C" if kind != "C" else "F")
    for reduction in REDUCTIONS:
        assert_close(cross_entropy(t, p, reduction), cross_entropy_ref(t, p, reduction), dtype,
                     terms=40)
        assert_close(cross_entropy_grad(t, p, reduction), cross_entropy_grad_ref(t, p, reduction),
                     dtype)


def test_cross_entropy_zero_prediction_under_positive_target_is_inf():
    assert cross_entropy([[1.0, 0.0]], [[0.0, 1.0]]) == np.inf


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_grad(reduction, dtype, rng):
    t = _probs(rng, (5, 4, 9), dtype)
    p = _probs(rng, (5, 4, 9), dtype, zeros=False)
    g = cross_entropy_grad(t, p, reduction)
    assert g.dtype == dtype and g.shape == t.shape
    assert_close(g, cross_entropy_grad_ref(t, p, reduction), dtype)
    assert np.all(g[t == 0] == 0)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_cross_entropy_grad_finite_differences(reduction, rng):
    t = _probs(rng, (3, 2, 5), np.float64)
    p = _probs(rng, (3, 2, 5), np.float64, zeros=False)
    numeric = _numeric_grad(lambda v: float(cross_entropy(t, v, reduction)), p.copy())
    np.testing.assert_allclose(cross_entropy_grad(t, p, reduction), numeric, rtol=1e-6,
                               atol=1e-8)


def test_cross_entropy_empty(dtype):
    t = np.empty((0, 4), dtype)
    assert cross_entropy(t, t, "sum") == 0 and np.isnan(cross_entropy(t, t, "mean"))
    assert cross_entropy(t, t, "none").shape == (0,)
    assert cross_entropy_grad(t, t).shape == (0, 4)
    z = np.empty((3, 0), dtype)     # no classes: each sample's sum is over nothing
    assert np.array_equal(cross_entropy(z, z, "none"), np.zeros(3, dtype))
    assert cross_entropy(z, z, "mean") == 0


# --------------------------------------------------------------------------------------
# mse

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(), (1,), (7,), (5, 33), (3, 40, 1001)], ids=str)
def test_mse_matches_reference(reduction, shape, dtype, rng):
    t, p = random_array(rng, shape, dtype), random_array(rng, shape, dtype)
    value = mse(t, p, reduction)
    _check_result(value, reduction, dtype, shape)
    assert_close(value, mse_ref(t, p, reduction), dtype)
    g = mse_grad(t, p, reduction)
    assert g.shape == shape and g.dtype == dtype
    assert_close(g, mse_grad_ref(t, p, reduction), dtype)


@pytest.mark.parametrize("kind", FLAT_LAYOUTS)
def test_mse_layouts(kind, dtype, rng):
    t = layout(random_array(rng, (7, 9, 11), dtype), kind)
    for other in ("C", "F"):
        p = layout(random_array(rng, (7, 9, 11), dtype), other)
        for reduction in REDUCTIONS:
            assert_close(mse(t, p, reduction), mse_ref(t, p, reduction), dtype)
            assert_close(mse_grad(t, p, reduction), mse_grad_ref(t, p, reduction), dtype)


def test_mse_default_is_cheat_sheet_mean(rng):
    t, p = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    assert_close(mse(t, p), np.mean((t - p) ** 2), np.float64)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_mse_grad_finite_differences(reduction, rng):
    t, p = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    numeric = _numeric_grad(lambda v: float(mse(t, v, reduction)), p.copy())
    np.testing.assert_allclose(mse_grad(t, p, reduction), numeric, rtol=1e-6, atol=1e-8)


def test_mse_empty_and_special(dtype):
    e = np.empty((0, 3), dtype)
    assert np.isnan(mse(e, e)) and mse(e, e, "sum") == 0 and mse(e, e, "none").shape == (0, 3)
    assert mse_grad(e, e).shape == (0, 3)
    assert np.isnan(mse([1.0, np.nan], [1.0, 2.0]))
    assert mse([np.inf], [0.0]) == np.inf


def test_mixed_dtypes_promote(rng):
    t = random_array(rng, (3, 4), np.float32)
    p = random_array(rng, (3, 4), np.float64)
    assert mse(t, p).dtype == np.float64
    assert cross_entropy(np.abs(t), np.abs(p)).dtype == np.float64
    assert mse(np.ones((2, 2), int), np.zeros((2, 2), np.float32)).dtype == np.float64


# --------------------------------------------------------------------------------------
# softmax_cross_entropy

CE_CASES = [((8, 5), -1), ((8, 5), 1), ((5, 8), 0), ((4, 7, 6), 1), ((4, 7, 6), -1),
            ((3, 4, 5, 6), 1), ((300, 1000), -1), ((2, 70001), -1), ((2, 1000, 40), 1)]


def _class_targets(rng, shape, axis, ignore=None, dtype=np.int64):
    tshape = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    lab = rng.integers(0, shape[axis], tshape).astype(dtype)
    if ignore is not None and lab.size:
        lab.reshape(-1)[::3] = ignore
    return lab


def _prob_targets(rng, shape, axis, dtype):
    p = rng.random(shape)
    p /= p.sum(axis, keepdims=True)
    return p.astype(dtype)


def _ce_tolerance(shape, axis):
    return shape[axis]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape,axis", CE_CASES, ids=[f"{s}-ax{a}" for s, a in CE_CASES])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softmax_cross_entropy_class_targets(reduction, shape, axis, eps, dtype, rng):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    lab = _class_targets(rng, shape, axis, ignore=-100)
    before = snapshot(x, lab)
    loss, grad = softmax_cross_entropy(x, lab, axis, reduction, eps, -100, return_grad=True)
    ref_loss, ref_grad = softmax_cross_entropy_ref(x, lab, axis, reduction, eps, -100)
    _check_result(loss, reduction, dtype, lab.shape)
    assert_close(loss, ref_loss, dtype, terms=_ce_tolerance(shape, axis))
    assert grad.shape == shape and grad.dtype == dtype
    assert_close(grad, ref_grad, dtype, terms=_ce_tolerance(shape, axis))
    # the loss alone is the same bits
    assert np.asarray(softmax_cross_entropy(x, lab, axis, reduction, eps, -100)).tobytes() == \
        np.asarray(loss).tobytes()
    assert_unchanged(before, x, lab)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape,axis", CE_CASES[:6] + [((64, 1000), -1)],
                         ids=[f"{s}-ax{a}" for s, a in CE_CASES[:6] + [((64, 1000), -1)]])
def test_softmax_cross_entropy_prob_targets(reduction, shape, axis, dtype, rng):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    p = _prob_targets(rng, shape, axis, dtype)
    for eps in (0.0, 0.25):
        loss, grad = softmax_cross_entropy(x, p, axis, reduction, eps, return_grad=True)
        ref_loss, ref_grad = softmax_cross_entropy_ref(x, p, axis, reduction, eps)
        _check_result(loss, reduction, dtype, ref_grad.shape[:axis % len(shape)]
                      + ref_grad.shape[axis % len(shape) + 1:])
        assert_close(loss, ref_loss, dtype, terms=_ce_tolerance(shape, axis))
        assert_close(grad, ref_grad, dtype, terms=_ce_tolerance(shape, axis))


@pytest.mark.parametrize("int_dtype", [np.int8, np.uint8, np.int16, np.int32, np.uint32,
                                       np.int64, np.uint64])
def test_any_integer_target_dtype(int_dtype, rng):
    x = rng.standard_normal((6, 5))
    lab = rng.integers(0, 5, 6).astype(int_dtype)
    expected = softmax_cross_entropy_ref(x, lab.astype(np.int64))[0]
    assert_close(softmax_cross_entropy(x, lab), expected, np.float64)


@pytest.mark.parametrize("kind", ["C", "F", "strided", "negative", "transposed-view"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_cross_entropy_layouts(kind, axis, dtype, rng):
    shape = (6, 7, 8)
    x = layout((2 * rng.standard_normal(shape)).astype(dtype), kind)
    lab = layout(_class_targets(rng, shape, axis, ignore=3), "F" if kind == "C" else "C")
    p = layout(_prob_targets(rng, shape, axis, dtype), "strided")
    for target, ignore in ((lab, 3), (p, None)):
        loss, grad = softmax_cross_entropy(x, target, axis, "none", 0.1, ignore, return_grad=True)
        ref_loss, ref_grad = softmax_cross_entropy_ref(x, target, axis, "none", 0.1, ignore)
        assert_close(loss, ref_loss, dtype, terms=8)
        assert_close(grad, ref_grad, dtype, terms=8)


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("case", ["int", "int-smooth-ignore", "prob", "prob-smooth", "axis0"])
def test_softmax_cross_entropy_grad_finite_differences(reduction, case, rng):
    shape, axis = ((4, 5), -1) if case != "axis0" else ((5, 4), 0)
    x = rng.standard_normal(shape)
    eps = 0.2 if "smooth" in case else 0.0
    ignore = 2 if "ignore" in case else None
    if case.startswith("prob"):
        target = _prob_targets(rng, shape, axis, np.float64)
    else:
        target = _class_targets(rng, shape, axis)
        if ignore is not None:
            target[0] = ignore
    w = rng.standard_normal(4) if reduction == "none" else 1.0   # 'none': L = sum(w * loss)

    def loss_of(v):
        return float(np.sum(w * softmax_cross_entropy(v, target, axis, reduction, eps, ignore)))

    numeric = _numeric_grad(loss_of, x.copy())
    _, grad = softmax_cross_entropy(x, target, axis, reduction, eps, ignore, return_grad=True)
    if reduction == "none":     # dlogits of 'none' is the gradient of the sum of the losses
        numeric_sum = _numeric_grad(
            lambda v: float(np.sum(softmax_cross_entropy(v, target, axis, "none", eps, ignore))),
            x.copy())
        np.testing.assert_allclose(grad, numeric_sum, rtol=1e-6, atol=1e-8)
    else:
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_ignore_index_semantics(dtype, rng):
    x = rng.standard_normal((4, 3)).astype(dtype)
    x[1, 0] = np.nan                       # an ignored sample's logits never reach the result
    lab = np.array([2, -100, 0, -100])
    loss, grad = softmax_cross_entropy(x, lab, ignore_index=-100, return_grad=True)
    ref_loss, _ = softmax_cross_entropy_ref(x[[0, 2]], lab[[0, 2]])
    assert_close(loss, ref_loss, dtype, terms=3)
    assert np.all(grad[[1, 3]] == 0)
    none = softmax_cross_entropy(x, lab, reduction="none", ignore_index=-100)
    assert none[1] == 0 and none[3] == 0
    # every sample ignored: the mean is NaN (0 / 0, as PyTorch), the sum 0, the gradient 0
    all_ignored = np.full(4, 1)
    loss, grad = softmax_cross_entropy(x, all_ignored, ignore_index=1, return_grad=True)
    assert np.isnan(loss) and loss.dtype == dtype and np.all(grad == 0)
    assert softmax_cross_entropy(x, all_ignored, reduction="sum", ignore_index=1) == 0
    # an ignore_index inside [0, C) ignores that class's samples
    loss = softmax_cross_entropy(x[[0, 2]], np.array([2, 0]), ignore_index=0)
    assert_close(loss, softmax_cross_entropy_ref(x[[0]], np.array([2]))[0], dtype)


def test_softmax_cross_entropy_special_values(dtype):
    inf = np.inf
    x = np.array([[1e4, -1e4, 0.0], [-inf, 3.0, -inf], [np.nan, 0.0, 1.0], [-1e4, -1e4, -1e4]],
                 dtype)
    lab = np.array([0, 1, 2, 1])
    loss, grad = softmax_cross_entropy(x, lab, reduction="none", return_grad=True)
    assert loss[0] == 0 and loss[1] == 0 and np.isnan(loss[2])
    assert_close(loss[3], np.log(3.0), dtype)
    assert np.all(np.isfinite(grad[[0, 1, 3]])) and np.all(np.isnan(grad[2]))
    assert np.array_equal(grad[1], np.zeros(3, dtype))
    # label smoothing with a -inf logit: the smoothed loss is +inf (as PyTorch)
    assert softmax_cross_entropy(x[1:2], lab[1:2], label_smoothing=0.1) == inf
    # probability targets: a zero-probability class with a -inf logit contributes 0
    p = np.array([[0.0, 1.0, 0.0]], dtype)
    assert softmax_cross_entropy(x[1:2], p) == 0
    # large logits are stable in the loss of float32
    big = np.array([[1e4, 1e4 - 2, -1e4]], dtype)
    assert_close(softmax_cross_entropy(big, np.array([1])),
                 softmax_cross_entropy_ref(big, np.array([1]))[0], dtype, scale=2.2)


def test_softmax_cross_entropy_empty(dtype):
    x = np.empty((0, 5), dtype)
    lab = np.empty(0, np.int64)
    loss, grad = softmax_cross_entropy(x, lab, return_grad=True)
    assert np.isnan(loss) and loss.dtype == dtype and grad.shape == (0, 5)
    assert softmax_cross_entropy(x, lab, reduction="sum") == 0
    assert softmax_cross_entropy(x, lab, reduction="none").shape == (0,)
    assert softmax_cross_entropy(x, np.empty((0, 5), dtype), reduction="none").shape == (0,)


def test_softmax_cross_entropy_single_sample():
    x = np.array([1.0, 2.0, 0.5])
    loss = softmax_cross_entropy(x, 1, reduction="none")
    assert isinstance(loss, np.float64)
    assert_close(loss, softmax_cross_entropy_ref(x[None], np.array([1]))[0], np.float64)


def test_rows_of_one_class(dtype):
    x = np.array([[3.0], [-2.0]], dtype)
    loss, grad = softmax_cross_entropy(x, np.array([0, 0]), return_grad=True)
    assert loss == 0 and np.all(grad == 0)


# --------------------------------------------------------------------------------------
# PyTorch semantics (torch is only a test-time reference, never a dependency)

# (PyTorch rejects ignore_index with probabilities, and so does fastdl)
TORCH_CASES = [("int", None), ("int", -100), ("int", 2), ("prob", None)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [0.0, 0.3])
@pytest.mark.parametrize("target_kind,ignore", TORCH_CASES, ids=[f"{k}-{i}" for k, i in TORCH_CASES])
def test_matches_torch(reduction, eps, ignore, target_kind, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((6, 5, 3))           # classes on axis 1, as in PyTorch
    if target_kind == "int":
        target = rng.integers(0, 5, (6, 3))
        if ignore is not None:
            target[0] = ignore
            target[2, 1] = ignore
    else:
        target = _prob_targets(rng, (6, 5, 3), 1, np.float64)
    tx = torch.tensor(x, requires_grad=True)
    kwargs = {} if ignore is None else {"ignore_index": ignore}
    tl = F.cross_entropy(tx, torch.tensor(target), reduction=reduction, label_smoothing=eps,
                         **kwargs)
    tl.sum().backward()
    loss, grad = softmax_cross_entropy(x, target, 1, reduction, eps, ignore, return_grad=True)
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_matches_torch_all_ignored_mean_is_nan():
    torch = pytest.importorskip("torch")
    x = np.zeros((3, 4))
    target = np.full(3, -100)
    t = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(target))
    assert np.isnan(t.item()) and np.isnan(softmax_cross_entropy(x, target, ignore_index=-100))


# --------------------------------------------------------------------------------------
# threads: bitwise identical results

@requires_openmp
def test_thread_counts_bitwise_equal(dtype, rng):
    x = (3 * rng.standard_normal((300, 1000))).astype(dtype)
    xt = np.ascontiguousarray(np.moveaxis(x.reshape(300, 100, 10), 1, 2))   # class axis 2 -> 1
    lab = rng.integers(0, 1000, 300)
    lab2 = rng.integers(0, 10, (300, 100))
    p = _probs(rng, (300, 1000), dtype, zeros=False)
    t, q = random_array(rng, (5, 40000), dtype), random_array(rng, (5, 40000), dtype)
    results = []
    for n in (1, 2):
        with fastdl.threads(n):
            r = []
            for red in REDUCTIONS:
                r += list(softmax_cross_entropy(x, lab, reduction=red, label_smoothing=0.1,
                                                return_grad=True))
                r += list(softmax_cross_entropy(xt, lab2, axis=1, reduction=red,
                                                return_grad=True))
                r += list(softmax_cross_entropy(x, p, reduction=red, return_grad=True))
                r += [cross_entropy(p, np.abs(x) + 0.1, red), mse(t, q, red),
                      mse_grad(t, q, red), cross_entropy_grad(p, np.abs(x) + 0.1, red)]
            results.append(r)
    for a, b in zip(*results):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


# --------------------------------------------------------------------------------------
# bad input: precise errors, arguments unchanged

def test_bad_reduction(rng):
    x = rng.standard_normal((3, 4))
    before = snapshot(x)
    for fn, args in ((cross_entropy, (x, x)), (cross_entropy_grad, (x, x)), (mse, (x, x)),
                     (mse_grad, (x, x)), (softmax_cross_entropy, (x, np.array([0, 1, 2])))):
        for bad in ("avg", "Mean", None, 1):
            with pytest.raises(ValueError, match="reduction"):
                fn(*args, reduction=bad)
    assert_unchanged(before, x)


def test_shape_mismatch_names_both_shapes(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 3))
    for fn in (cross_entropy, cross_entropy_grad, mse, mse_grad):
        with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
            fn(a, b)
    with pytest.raises(ValueError, match=r"\(4,\).*\(3, 4\)"):
        softmax_cross_entropy(a, np.zeros(4, int))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(3, 4\)"):
        softmax_cross_entropy(a, b)          # float targets are probabilities
    with pytest.raises(ValueError, match=r"\(3,\).*\(3, 4\)"):
        softmax_cross_entropy(a, np.zeros(3, float))   # float class labels are no indices
    with pytest.raises(ValueError, match="at least one dimension"):
        cross_entropy(1.0, 1.0)


def test_bad_dtypes(rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(TypeError, match="bool"):
        softmax_cross_entropy(x, np.array([True, False, True]))
    with pytest.raises(TypeError, match="'target'"):
        softmax_cross_entropy(x, np.zeros((3, 4), np.float16))
    with pytest.raises(TypeError, match="'target'"):
        softmax_cross_entropy(x, np.zeros((3, 4), np.complex64))
    with pytest.raises(TypeError, match="'logits'"):
        softmax_cross_entropy(x.astype(np.complex128), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="'y_pred'"):
        mse(x, x.astype(np.float16))
    with pytest.raises(TypeError, match="'y_true'"):
        cross_entropy(np.array(["a"]), np.array([1.0]))


@pytest.mark.parametrize("bad", [[0, 4, 1], [0, -1, 1], [0, 1, 2**40], [-100, 0, 5]])
def test_class_index_out_of_range(bad, rng):
    x = rng.standard_normal((3, 4))
    lab = np.array(bad)
    before = snapshot(x, lab)
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        softmax_cross_entropy(x, lab, return_grad=True)
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        softmax_cross_entropy(x, lab, ignore_index=-100)    # 4/-1/2**40/5 are still bad
    assert_unchanged(before, x, lab)
    with pytest.raises(ValueError, match="outside"):
        softmax_cross_entropy(x, np.array([0, 1, 2**64 - 100], np.uint64), ignore_index=-100)
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):      # the column kernel too
        softmax_cross_entropy(np.zeros((3, 2, 5)), np.full((3, 5), 2), axis=1)


def test_negative_index_equal_to_ignore_index_is_accepted(rng):
    x = rng.standard_normal((3, 4))
    loss = softmax_cross_entropy(x, np.array([-1, 2, -1]), ignore_index=-1)
    assert_close(loss, softmax_cross_entropy_ref(x[[1]], np.array([2]))[0], np.float64)


@pytest.mark.parametrize("eps", [np.nan, -0.1, 1.5, -np.inf])
def test_bad_label_smoothing(eps, rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="label_smoothing"):
        softmax_cross_entropy(x, np.array([0, 1, 2]), label_smoothing=eps)


def test_label_smoothing_bounds_and_types(rng):
    x = rng.standard_normal((3, 4))
    lab = np.array([0, 1, 2])
    for eps in (0, 1, 1.0, np.float32(0.5)):
        softmax_cross_entropy(x, lab, label_smoothing=eps)
    with pytest.raises(TypeError, match="label_smoothing"):
        softmax_cross_entropy(x, lab, label_smoothing="0.1")
    with pytest.raises(TypeError, match="label_smoothing"):
        softmax_cross_entropy(x, lab, label_smoothing=None)


def test_bad_axis_and_ignore_index(rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="axis 2"):
        softmax_cross_entropy(x, np.array([0, 1, 2]), axis=2)
    with pytest.raises(TypeError, match="axis"):
        softmax_cross_entropy(x, np.array([0, 1, 2]), axis=None)
    with pytest.raises(TypeError, match="ignore_index"):
        softmax_cross_entropy(x, np.array([0, 1, 2]), ignore_index=1.0)
    with pytest.raises(ValueError, match="ignore_index"):
        softmax_cross_entropy(x, _probs(rng, (3, 4), np.float64), ignore_index=-100)
    with pytest.raises(ValueError, match="axis"):
        softmax_cross_entropy(np.float64(1.0), 0)
