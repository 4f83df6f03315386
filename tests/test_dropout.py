"""Philox4x32-10 (known-answer vectors, the C stream against a NumPy transcription), dropout and
dropout_backward: bitwise against the reference mask, layouts, threads, statistics, seeds,
identity cases, special values, finite-difference gradient, bad input."""

import math

import numpy as np
import pytest

import fastdl
from conftest import assert_close, assert_unchanged, layout, make_wrong_out, requires_openmp, \
    snapshot, WRONG_OUT_KINDS
from fastdl._ext._random import dropout, dropout_backward, philox4x32_10, philox_words
from reference_random import dropout_f64, dropout_ref, keep_mask_ref
import reference_random as ref

# Random123's kat_vectors for philox4x32_10: counter, key -> output.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]
SIZES = [(1,), (7,), (33,), (1000,), (4099,), (5, 7, 33), (300, 200), (3, 1, 40000)]
PS = [0.1, 0.5, 0.9]


# --------------------------------------------------------------------------------------
# the generator

@pytest.mark.parametrize("counter, key, expected", KAT)
def test_philox_known_answers(counter, key, expected):
    assert philox4x32_10(counter, key).tolist() == list(expected)
    assert ref.philox4x32_10(counter, key).tolist() == list(expected)


@pytest.mark.parametrize("seed", [0, 1, 0xDEADBEEF, 2 ** 32, 2 ** 64 - 1, 0x0123456789ABCDEF])
@pytest.mark.parametrize("first, n", [(0, 1), (0, 7), (1, 3), (2, 1000), (3, 4099),
                                      (4 * 2 ** 32 - 13, 40),      # across a change of hi32
                                      (2 ** 64 - 4 * 300, 4 * 300),  # the last blocks
                                      (12345, 70001)])
def test_stream_matches_numpy(seed, first, n):
    got = philox_words(seed, n, first)
    assert got.dtype == np.uint32 and got.shape == (n,)
    np.testing.assert_array_equal(got, ref.philox_words(seed, first, n))


@pytest.mark.parametrize("simd", [0, 1, 2], ids=["portable", "avx2", "avx512"])
@pytest.mark.parametrize("first, n", [(0, 64 * 4 + 3), (5, 1000), (4 * 2 ** 32 - 4 * 20 + 1, 300)])
def test_every_kernel_matches_numpy(simd, first, n):
    from fastdl._ext._random import philox_simd_level
    if simd > philox_simd_level():
        pytest.skip("this CPU lacks the instructions of that kernel")
    for seed in (0, 2 ** 64 - 1, 0xA5A5A5A5F00DF00D):
        np.testing.assert_array_equal(philox_words(seed, n, first, simd=simd),
                                      ref.philox_words(seed, first, n))


def test_stream_is_the_block_function():
    # word i = word i % 4 of block i // 4, counter (lo32, hi32, 0, 0), key (lo32, hi32)
    seed, b = 0x1122334455667788, 0x0000000500000007
    words = philox_words(seed, 8, 4 * b)
    block = philox4x32_10((b & 0xFFFFFFFF, b >> 32, 0, 0), (seed & 0xFFFFFFFF, seed >> 32))
    np.testing.assert_array_equal(words[:4], block)


def test_stream_bad_arguments():
    with pytest.raises(ValueError, match="counter range"):
        philox_words(0, 5, 2 ** 64 - 4)
    with pytest.raises(ValueError, match="seed"):
        philox_words(-1, 5)
    with pytest.raises(ValueError, match="32-bit"):
        philox4x32_10((0, 0, 0, 2 ** 32), (0, 0))
    with pytest.raises(ValueError, match="4 words"):
        philox4x32_10((0, 0, 0), (0, 0))


# --------------------------------------------------------------------------------------
# dropout against the reference

@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("shape", SIZES, ids=str)
def test_dropout_matches_reference(shape, p, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    before = snapshot(x)
    y, mask = dropout(x, p, seed=1234, return_mask=True)
    y_ref, keep = dropout_ref(x, p, 1234)
    assert y.dtype == dtype and y.shape == shape and y.flags.c_contiguous
    assert mask.dtype == np.bool_ and mask.shape == shape
    np.testing.assert_array_equal(mask, keep)
    assert y.tobytes() == y_ref.tobytes()                   # bitwise: same multiply, +0.0
    assert_close(y, dropout_f64(x, p, keep), dtype)         # x / (1 - p) within rounding
    assert_unchanged(before, x)
    # without the mask: the same values
    assert dropout(x, p, seed=1234).tobytes() == y_ref.tobytes()


@pytest.mark.parametrize("kind", ["C", "F", "strided", "negative", "transposed-view"])
@pytest.mark.parametrize("shape", [(37,), (9, 33), (4, 5, 600), (2, 3, 70, 90)], ids=str)
def test_mask_does_not_depend_on_layout(kind, shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    y_ref, keep = dropout_ref(x, 0.3, 99)
    xv = layout(x, kind)
    y, mask = dropout(xv, 0.3, seed=99, return_mask=True)
    np.testing.assert_array_equal(mask, keep)
    assert y.tobytes() == y_ref.tobytes()
    dx = dropout_backward(layout(x, kind), layout(keep, kind), 0.3)
    assert dx.tobytes() == y_ref.tobytes()
    assert dropout_backward(layout(x, kind), 99, 0.3).tobytes() == y_ref.tobytes()


@pytest.mark.parametrize("shape", [(130, 200), (3, 65, 129), (64, 64), (1, 7, 300)], ids=str)
def test_tiled_walk_of_fortran_and_transposed(shape, dtype, rng):
    # x contiguous along the axis before the last: walked in tiles, fresh results in x's order
    x = rng.standard_normal(shape).astype(dtype)
    y_ref, keep = dropout_ref(x, 0.4, 2718)
    for xv in (layout(x, "F"), layout(x, "transposed-view")):
        y, mask = dropout(xv, 0.4, seed=2718, return_mask=True)
        assert y.tobytes() == y_ref.tobytes() and np.array_equal(mask, keep)
        if xv.strides[-2] == xv.itemsize and xv.ndim == 2:
            assert y.flags.f_contiguous and mask.flags.f_contiguous
        for out_kind in ("C", "F", "strided"):
            out = layout(np.zeros(shape, dtype), out_kind)
            dropout(xv, 0.4, seed=2718, out=out)
            np.testing.assert_array_equal(out, y_ref)
            out[...] = 7
            dropout_backward(xv, layout(keep, out_kind), 0.4, out=out)
            np.testing.assert_array_equal(out, y_ref)
        assert dropout_backward(xv, 2718, 0.4).tobytes() == y_ref.tobytes()
        xx = xv.copy(order="K")
        assert dropout(xx, 0.4, seed=2718, out=xx) is xx            # in place, tiled
        np.testing.assert_array_equal(xx, y_ref)


@requires_openmp
@pytest.mark.parametrize("kind", ["C", "F", "strided", "transposed-view"])
def test_thread_count_does_not_change_bits(kind, dtype, rng):
    x = layout(rng.standard_normal((301, 517)).astype(dtype), kind)
    keep = rng.random(x.shape) < 0.7
    results = []
    for n in (1, 2):
        with fastdl.threads(n):
            y, m = dropout(x, 0.25, seed=7, return_mask=True)
            results.append((y.tobytes(), m.tobytes(),
                            dropout_backward(x, 7, 0.25).tobytes(),
                            dropout_backward(x, keep, 0.25).tobytes()))
    assert results[0] == results[1]


# --------------------------------------------------------------------------------------
# statistics

@pytest.mark.parametrize("p", [1e-4, 0.01, 0.1, 0.5, 0.9, 0.999, 0.99999])
@pytest.mark.parametrize("seed", [0, 1, 2 ** 63 + 5])
def test_drop_fraction_is_binomial(p, seed):
    n = 1 << 21
    mask = dropout(np.ones(n, np.float32), p, seed=seed, return_mask=True)[1]
    dropped = n - int(np.count_nonzero(mask))
    q = math.ceil(p * 2 ** 32) / 2 ** 32                      # the exact drop probability
    assert abs(q - p) <= 2 ** -32
    sigma = math.sqrt(n * q * (1 - q))
    assert abs(dropped - n * q) <= 6 * sigma + 1, (dropped, n * q, sigma)


def _corr(a, b):
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_no_correlation_between_neighbours(p):
    n = 1 << 20
    mask = dropout(np.ones(n), p, seed=2024, return_mask=True)[1]
    bound = 6 / math.sqrt(n)
    for lag in (1, 2, 3, 4, 5, 8):     # within a Philox block (1-3) and across blocks
        assert abs(_corr(mask[:-lag], mask[lag:])) < bound, lag
    # and the raw words: lag-1 correlation of the uniforms
    w = philox_words(2024, n).astype(np.float64)
    assert abs(_corr(w[:-1], w[1:])) < bound


@pytest.mark.parametrize("s0, s1", [(0, 1), (1, 2), (41, 42), (2 ** 32 - 1, 2 ** 32),
                                    (0, 2 ** 32), (7, 7 + 2 ** 63)])
def test_no_correlation_between_seeds(s0, s1):
    n = 1 << 20
    x = np.ones(n, np.float32)
    m0 = dropout(x, 0.5, seed=s0, return_mask=True)[1]
    m1 = dropout(x, 0.5, seed=s1, return_mask=True)[1]
    assert abs(_corr(m0, m1)) < 6 / math.sqrt(n)
    assert 0.49 < np.mean(m0 == m1) < 0.51


def test_uniform_words():
    # chi-square of the top 8 bits of 2**20 words against uniform (255 degrees of freedom:
    # mean 255, sd ~22.6; 6 sigma)
    w = philox_words(314159, 1 << 20)
    counts = np.bincount(w >> 24, minlength=256)
    expected = w.size / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert abs(chi2 - 255) < 6 * math.sqrt(2 * 255)


# --------------------------------------------------------------------------------------
# backward

@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("shape", [(1,), (33,), (1000,), (6, 7, 33), (300, 200)], ids=str)
def test_backward_mask_and_seed_agree(shape, p, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y, mask, seed = dropout(x, p, seed=31337, return_mask=True, return_seed=True)
    assert seed == 31337
    before = snapshot(dy, mask)
    from_mask = dropout_backward(dy, mask, p)
    from_seed = dropout_backward(dy, seed, p)
    expected, keep = dropout_ref(dy, p, 31337)
    assert from_mask.dtype == dtype and from_mask.shape == shape
    assert from_mask.tobytes() == expected.tobytes()
    assert from_seed.tobytes() == expected.tobytes()
    assert_close(from_mask, dropout_f64(dy, p, keep), dtype)
    assert_unchanged(before, dy, mask)


def test_backward_finite_differences(rng):
    p, seed = 0.4, 5
    x = rng.standard_normal((4, 9))
    w = rng.standard_normal((4, 9))

    def f(v):
        return float(np.sum(w * dropout(v, p, seed=seed)))

    grad = dropout_backward(w, seed, p)
    num = np.zeros_like(x)
    h = 1e-6
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        num[i] = (f(xp) - f(xm)) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)
    assert np.any(grad == 0) and np.any(grad != 0)


def test_seed_none_draws_from_numpy_global_state(rng):
    x = rng.standard_normal(1000).astype(np.float32)
    np.random.seed(123)
    y1, seed1 = dropout(x, 0.5, return_seed=True)
    np.random.seed(123)
    y2, seed2 = dropout(x, 0.5, return_seed=True)
    assert seed1 == seed2 and isinstance(seed1, int) and 0 <= seed1 < 2 ** 64
    assert y1.tobytes() == y2.tobytes()
    assert y1.tobytes() == dropout(x, 0.5, seed=seed1).tobytes()
    np.testing.assert_array_equal(dropout_backward(x, seed1, 0.5), y1)
    # consecutive calls draw different seeds
    y3, seed3 = dropout(x, 0.5, return_seed=True)
    assert seed3 != seed1 and y3.tobytes() != y1.tobytes()


def test_seed_from_generator(rng):
    x = np.ones(500)
    y1, s1 = dropout(x, 0.5, seed=np.random.default_rng(8), return_seed=True)
    y2, s2 = dropout(x, 0.5, seed=np.random.default_rng(8), return_seed=True)
    assert s1 == s2 and y1.tobytes() == y2.tobytes()
    assert dropout(x, 0.5, seed=s1).tobytes() == y1.tobytes()


# --------------------------------------------------------------------------------------
# identity, empty, special values, p at the ends of its range

@pytest.mark.parametrize("p, training", [(0.0, True), (0.5, False), (0.0, False)])
def test_identity_returns_x(p, training, dtype, rng):
    x = rng.standard_normal((5, 6)).astype(dtype)
    state = np.random.get_state()[1].copy()
    pos = np.random.get_state()[2]
    assert dropout(x, p, training) is x
    y, mask, seed = dropout(x, p, training, return_mask=True, return_seed=True)
    assert y is x and mask.dtype == np.bool_ and mask.all() and mask.shape == x.shape
    assert seed is None
    # nothing drawn from NumPy's global state (as PyTorch does not touch its generator)
    assert np.array_equal(np.random.get_state()[1], state) and np.random.get_state()[2] == pos
    assert dropout(x, p, training, seed=9, return_seed=True)[1] == 9
    out = np.full_like(x, 7)
    assert dropout(x, p, training, out=out) is out
    np.testing.assert_array_equal(out, x)
    # the backward of an identity forward
    assert dropout_backward(x, None, p) is x
    np.testing.assert_array_equal(dropout_backward(x, np.ones(x.shape, bool), 0.0), x)


def test_identity_of_a_list_and_ints():
    y = dropout([[1, 2], [3, 4]], 0.5, training=False)
    assert y.dtype == np.float64 and y.tolist() == [[1, 2], [3, 4]]
    y = dropout(np.arange(6, dtype=np.int32), 0.5, seed=3)
    assert y.dtype == np.float64
    assert y.tobytes() == dropout_ref(np.arange(6.0), 0.5, 3)[0].tobytes()


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 5, 2)], ids=str)
def test_empty(shape, dtype):
    x = np.empty(shape, dtype)
    y, mask = dropout(x, 0.5, seed=1, return_mask=True)
    assert y.shape == shape and y.dtype == dtype and mask.shape == shape
    assert dropout_backward(x, 1, 0.5).shape == shape
    assert dropout_backward(x, mask, 0.5).shape == shape


def test_zero_dim(dtype):
    x = np.array(2.5, dtype)
    y, mask = dropout(x, 0.5, seed=3, return_mask=True)
    y_ref, keep = dropout_ref(x, 0.5, 3)
    assert y.shape == () and mask.shape == () and y.tobytes() == y_ref.tobytes()
    assert bool(mask) == bool(keep)


def test_nan_inf_propagate_through_kept_only(dtype):
    x = np.tile(np.array([np.nan, np.inf, -np.inf, 1.0, -0.0], dtype), 40)
    y, keep = dropout(x, 0.5, seed=11, return_mask=True)
    assert keep.any() and (~keep).any()
    assert np.all(y[~keep] == 0) and not np.signbit(y[~keep]).any()   # exactly +0.0
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(y[keep], x[keep] * dtype.type(2.0))
    assert y.tobytes() == dropout_ref(x, 0.5, 11)[0].tobytes()


def test_p_near_one():
    x = np.ones(10000, np.float32)
    y, mask = dropout(x, 1 - 2.0 ** -40, seed=1, return_mask=True)   # ceil(p * 2**32) = 2**32
    assert not mask.any() and not y.any()
    assert not dropout_backward(x, 1, 1 - 2.0 ** -40).any()
    xf = np.asfortranarray(np.ones((70, 90), np.float32))                # the tiled walk
    y, mask = dropout(xf, 1 - 2.0 ** -40, seed=1, return_mask=True)
    assert not mask.any() and not y.any()
    y, mask = dropout(x, 0.9999, seed=1, return_mask=True)
    assert np.count_nonzero(mask) < 10
    assert np.all(y[mask] == np.float32(1 / (1 - 0.9999)))


def test_tiny_p_keeps_almost_everything():
    x = np.ones(1 << 16)
    assert dropout(x, 1e-300, seed=0, return_mask=True)[1].sum() >= (1 << 16) - 1
    assert np.array_equal(dropout(x, 1e-300, seed=0, return_mask=True)[1],
                          keep_mask_ref(x.shape, 1e-300, 0))


# --------------------------------------------------------------------------------------
# out=

@pytest.mark.parametrize("kind", ["C", "F", "strided", "negative"])
def test_out_any_layout(kind, dtype, rng):
    x = rng.standard_normal((40, 50)).astype(dtype)
    out = layout(np.zeros_like(x), kind)
    y_ref, keep = dropout_ref(x, 0.5, 17)
    r = dropout(x, 0.5, seed=17, out=out)
    assert r is out
    np.testing.assert_array_equal(out, y_ref)
    r = dropout_backward(x, keep, 0.5, out=out)
    assert r is out
    np.testing.assert_array_equal(out, y_ref)


def test_out_in_place_and_overlapping(dtype, rng):
    x = rng.standard_normal(5000).astype(dtype)
    y_ref = dropout_ref(x, 0.3, 4)[0]
    a = x.copy()
    assert dropout(a, 0.3, seed=4, out=a) is a
    np.testing.assert_array_equal(a, y_ref)
    # partial overlap: computed through a temporary, as NumPy's buffered semantics
    buf = np.concatenate([x, [0]]).astype(dtype)
    src, dst = buf[:-1], buf[1:]
    dropout(src, 0.3, seed=4, out=dst)
    np.testing.assert_array_equal(dst, y_ref)


@pytest.mark.parametrize("kind", WRONG_OUT_KINDS)
def test_wrong_out_changes_nothing(kind, dtype, rng):
    x = rng.standard_normal((4, 6)).astype(dtype)
    out, exc = make_wrong_out(kind, dtype, x.shape)
    before = snapshot(x, out if isinstance(out, np.ndarray) else None)
    with pytest.raises(exc, match="out"):
        dropout(x, 0.5, seed=1, out=out)
    with pytest.raises(exc, match="out"):
        dropout_backward(x, 1, 0.5, out=out)
    assert_unchanged(before, x, out if isinstance(out, np.ndarray) else None)


# --------------------------------------------------------------------------------------
# bad input

@pytest.mark.parametrize("p, exc", [(-0.1, ValueError), (1.0, ValueError), (1.5, ValueError),
                                    (float("nan"), ValueError), (-float("inf"), ValueError),
                                    ("0.5", TypeError), (None, TypeError), (True, TypeError),
                                    (np.array([0.5]), TypeError)])
def test_bad_p(p, exc, rng):
    x = rng.standard_normal(10)
    out = np.full(10, 3.0)
    before = snapshot(x, out)
    with pytest.raises(exc, match="p"):
        dropout(x, p, seed=1, out=out)
    with pytest.raises(exc, match="p"):
        dropout_backward(x, 1, p, out=out)
    with pytest.raises(exc, match="p"):
        dropout_backward(x, np.ones(10, bool), p, out=out)
    assert_unchanged(before, x, out)


@pytest.mark.parametrize("seed, exc", [(-1, ValueError), (2 ** 64, ValueError),
                                       (1.5, TypeError), ("3", TypeError),
                                       (np.array([3]), TypeError)])
def test_bad_seed(seed, exc, rng):
    x = rng.standard_normal(10)
    before = snapshot(x)
    with pytest.raises(exc, match="seed"):
        dropout(x, 0.5, seed=seed)
    if not isinstance(seed, (str, np.ndarray, float)):
        with pytest.raises(exc, match="seed"):
            dropout_backward(x, seed, 0.5)
    assert_unchanged(before, x)


@pytest.mark.parametrize("mask, exc, text", [
    (np.ones((4, 5), bool), ValueError, r"mask has shape \(4, 5\) and dy has shape \(5, 4\)"),
    (np.ones(20, bool), ValueError, "shape"),
    (np.ones((5, 4), np.int64), TypeError, "bool"),
    (np.ones((5, 4), np.float32), TypeError, "bool"),
    (1.5, TypeError, "bool"),
    ("abc", TypeError, "bool"),
    (np.random.default_rng(0), TypeError, "Generator"),
])
def test_bad_mask(mask, exc, text, rng):
    dy = rng.standard_normal((5, 4))
    out = np.full((5, 4), 3.0)
    before = snapshot(dy, out)
    with pytest.raises(exc, match=text):
        dropout_backward(dy, mask, 0.5, out=out)
    assert_unchanged(before, dy, out)


def test_bad_x():
    with pytest.raises(TypeError, match="'x'"):
        dropout(np.ones(3, np.complex128), 0.5, seed=1)
    with pytest.raises(TypeError, match="'dy'"):
        dropout_backward(np.ones(3, np.float16), 1, 0.5)
    with pytest.raises(TypeError, match="'x'"):
        dropout(np.array(["a"]), 0.5, seed=1)


def test_threshold_rule_is_exact():
    # keep iff word >= ceil(p * 2**32): p exactly word / 2**32 keeps the element, any p a
    # hair above it drops it
    seed = 77
    words = philox_words(seed, 64)
    i = int(np.argmax((words > 2 ** 20) & (words < 2 ** 32 - 2 ** 20)))
    w = int(words[i])
    x = np.ones(64)
    assert dropout(x, w / 2 ** 32, seed=seed, return_mask=True)[1][i]
    assert not dropout(x, (w + 0.25) / 2 ** 32, seed=seed, return_mask=True)[1][i]
    assert dropout(x, (w - 0.75) / 2 ** 32, seed=seed, return_mask=True)[1][i]
    assert not dropout(x, (w + 1) / 2 ** 32, seed=seed, return_mask=True)[1][i]


def test_public_names():
    from fastdl._ext import _random
    assert fastdl.dropout is _random.dropout and fastdl.dropout_backward is _random.dropout_backward
    assert {"dropout", "dropout_backward", "init"} <= set(fastdl.__all__)
    assert callable(fastdl.init.he_normal)
