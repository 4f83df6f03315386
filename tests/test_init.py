"""fastdl.init: samples against a NumPy transcription of the Philox stream and transforms,
distribution tests (Kolmogorov-Smirnov, moments, tails, pair independence), shapes, dtypes, the
cheat sheet's standard deviations, uniform bounds, fans of conv weights against PyTorch's,
thread-count independence, reproducibility, bad input."""

import math

import numpy as np
import pytest

import fastdl
from conftest import assert_close, requires_openmp
from fastdl import init
from reference_random import fans_ref, init_samples_ref

NORMAL = [init.xavier_normal, init.he_normal]
UNIFORM = [init.xavier_uniform, init.he_uniform]
ALL = NORMAL + UNIFORM


def _std(func, fan_in, fan_out):
    """The cheat sheet: Xavier sqrt(2 / (fan_in + fan_out)), He sqrt(2 / fan_in)."""
    if func.__name__.startswith("xavier"):
        return math.sqrt(2.0 / (fan_in + fan_out))
    return math.sqrt(2.0 / fan_in)


@pytest.mark.parametrize("func", ALL, ids=lambda f: f.__name__)
def test_shape_and_dtype(func, dtype):
    w = func(3, 7, rng=0)
    assert w.shape == (3, 7) and w.dtype == np.float32 and w.flags.c_contiguous
    w = func(3, 7, 0, dtype)
    assert w.shape == (3, 7) and w.dtype == dtype
    w = func(shape=(8, 4, 3, 3), rng=0, dtype=dtype)
    assert w.shape == (8, 4, 3, 3) and w.dtype == dtype
    w = func(shape=(1, 1), rng=0)
    assert w.shape == (1, 1)


@pytest.mark.parametrize("func", ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize("fans_or_shape", [(300, 700), (1000, 10), {"shape": (64, 32, 5, 5)},
                                           {"shape": (20, 3, 7)}], ids=str)
def test_standard_deviation(func, fans_or_shape, dtype):
    if isinstance(fans_or_shape, dict):
        w = func(rng=12, dtype=dtype, **fans_or_shape)
        fi, fo = fans_ref(fans_or_shape["shape"])
    else:
        w = func(*fans_or_shape, rng=12, dtype=dtype)
        fi, fo = fans_or_shape
    std = _std(func, fi, fo)
    n = w.size
    w64 = w.astype(np.float64)
    # sample mean and variance: 6-sigma bounds (the variance of s^2 is sigma^4 (kappa - 1)/n,
    # kurtosis kappa = 3 for a normal, 9/5 for a uniform)
    assert abs(w64.mean()) < 6 * std / math.sqrt(n)
    kappa = 3.0 if func in NORMAL else 1.8
    var = float(np.mean(w64 ** 2))
    assert abs(var - std ** 2) < 6 * std ** 2 * math.sqrt((kappa - 1) / n), (var, std ** 2)
    if func in UNIFORM:
        bound = math.sqrt(3.0) * std
        assert np.abs(w64).max() <= dtype.type(bound) * (1 + 1e-6)
        assert np.abs(w64).max() > 0.99 * bound          # fills the interval
        # uniform: a quarter of the values in each quarter of [-a, a]
        counts = np.histogram(w64, bins=4, range=(-bound, bound))[0]
        assert np.all(np.abs(counts - n / 4) < 6 * math.sqrt(n * 3 / 16))
    else:
        # normal: about 68.27% within one std
        inside = float(np.mean(np.abs(w64) < std))
        assert abs(inside - 0.682689) < 6 * math.sqrt(0.6827 * 0.3173 / n)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (33, 1000), (16, 8, 3, 3)], ids=str)
def test_samples_match_reference(shape, dtype):
    from fastdl._ext._random import philox_samples
    for seed in (0, 12345, 2 ** 64 - 1):
        z = philox_samples(shape, dtype, seed, "normal", 1.0)
        assert z.dtype == dtype and z.shape == shape
        assert_close(z, init_samples_ref(shape, dtype, seed, "normal", 1.0), dtype)
        u = philox_samples(shape, dtype, seed, "uniform", 0.5)
        assert_close(u, init_samples_ref(shape, dtype, seed, "uniform", 0.5), dtype)
    # the public functions are these samples, scaled by the cheat sheet's standard deviation
    w = init.he_normal(shape=shape, rng=77, dtype=dtype) if len(shape) != 2 else \
        init.he_normal(*shape, rng=77, dtype=dtype)
    fi = fans_ref(shape)[0]
    assert_close(w, init_samples_ref(shape, dtype, 77, "normal", math.sqrt(2.0 / fi)), dtype)


@pytest.mark.parametrize("kind", ["normal", "uniform"])
def test_distribution_ks(kind, dtype):
    # Kolmogorov-Smirnov against the exact CDF on 2**20 samples (critical value at
    # p = 1e-6 is about 2.7 / sqrt(n))
    from scipy.special import ndtr
    from fastdl._ext._random import philox_samples
    n = 1 << 20
    z = np.sort(philox_samples((n,), dtype, 2024, kind, 1.0).astype(np.float64))
    cdf = ndtr(z) if kind == "normal" else (z + 1.0) / 2.0
    d = max(float(np.max(np.arange(1, n + 1) / n - cdf)), float(np.max(cdf - np.arange(n) / n)))
    assert d < 2.7 / math.sqrt(n), d


def test_normal_moments_and_tails(dtype):
    from fastdl._ext._random import philox_samples
    n = 1 << 22
    z = philox_samples((n,), dtype, 99, "normal", 1.0).astype(np.float64)
    # skewness 0 (sd sqrt(6/n)), kurtosis 3 (sd sqrt(24/n)); tail masses beyond 2 and 3
    assert abs(np.mean(z ** 3)) < 6 * math.sqrt(6 / n)
    assert abs(np.mean(z ** 4) - 3) < 6 * math.sqrt(96 / n)
    for t, mass in ((2.0, 0.0455002638963584), (3.0, 0.0026997960632601866)):
        got = float(np.mean(np.abs(z) > t))
        assert abs(got - mass) < 6 * math.sqrt(mass * (1 - mass) / n), (t, got)
    # the two members of a Box-Muller pair, and neighbouring pairs, are uncorrelated
    assert abs(np.mean(z[0::2] * z[1::2])) < 6 / math.sqrt(n / 2)
    assert abs(np.mean(z[0:-2:2] * z[2::2])) < 6 / math.sqrt(n / 2)
    assert abs(np.mean(z[1::2] ** 2) - 1) < 6 * math.sqrt(2 / (n / 2))


@requires_openmp
@pytest.mark.parametrize("func", ALL, ids=lambda f: f.__name__)
def test_thread_count_does_not_change_bits(func, dtype):
    results = []
    for n in (1, 2):
        with fastdl.threads(n):
            results.append(func(shape=(64, 32, 7, 7), rng=3, dtype=dtype).tobytes())
    assert results[0] == results[1]


@pytest.mark.parametrize("shape", [(16, 8), (64, 3, 7, 7), (32, 16, 3, 3), (10, 4, 5),
                                   (6, 2, 3, 4, 5), (1, 1, 1, 1)], ids=str)
def test_fans_against_pytorch(shape):
    torch = pytest.importorskip("torch")
    calc = torch.nn.init._calculate_fan_in_and_fan_out
    if len(shape) == 2:
        # fastdl's 2-D weight is (in, out); torch's Linear weight is (out, in)
        t_in, t_out = calc(torch.empty(shape[::-1]))
    else:
        t_in, t_out = calc(torch.empty(shape))
    assert init.fans(shape) == (t_in, t_out) == fans_ref(shape)


def test_std_against_pytorch_formulas():
    torch = pytest.importorskip("torch")
    shape = (32, 16, 3, 3)
    fi, fo = init.fans(shape)
    # torch's xavier_normal_ std = gain * sqrt(2 / (fan_in + fan_out)); kaiming_normal_
    # (relu gain sqrt(2), fan_in mode) std = sqrt(2 / fan_in): the cheat sheet's formulas
    t = torch.empty(shape)
    torch.manual_seed(0)
    torch.nn.init.kaiming_normal_(t, nonlinearity="relu")
    w = init.he_normal(shape=shape, rng=0)
    assert abs(float(t.std()) - float(w.std())) < 0.1 * math.sqrt(2.0 / fi)
    torch.nn.init.xavier_uniform_(t)
    bound = math.sqrt(6.0 / (fi + fo))
    assert float(t.abs().max()) <= bound + 1e-7
    assert np.abs(init.xavier_uniform(shape=shape, rng=0)).max() <= np.float32(bound)


@pytest.mark.parametrize("func", ALL, ids=lambda f: f.__name__)
def test_reproducible(func):
    a = func(20, 30, rng=5)
    b = func(20, 30, rng=5)
    c = func(20, 30, rng=6)
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    assert func(20, 30, g1).tobytes() == func(20, 30, g2).tobytes()
    # a Generator advances: two draws from one differ
    assert func(20, 30, g1).tobytes() != func(20, 30, rng=np.random.default_rng(9)).tobytes()
    # rng=None follows NumPy's global state
    np.random.seed(3)
    d = func(20, 30)
    np.random.seed(3)
    e = func(20, 30)
    assert d.tobytes() == e.tobytes()
    assert func(20, 30).tobytes() != d.tobytes()


@pytest.mark.parametrize("func", ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize("args, kwargs, exc, text", [
    ((0, 5), {}, ValueError, "fan_in must be positive"),
    ((5, -1), {}, ValueError, "fan_out must be positive"),
    ((5.0, 3), {}, TypeError, "fan_in must be an int"),
    ((5,), {}, TypeError, "needs"),
    ((), {}, TypeError, "needs"),
    ((5, 3), {"shape": (5, 3)}, TypeError, "not both"),
    ((), {"shape": (5,)}, ValueError, "at least 2 dimensions"),
    ((), {"shape": (4, 0, 3, 3)}, ValueError, "positive"),
    ((), {"shape": 5}, TypeError, "shape"),
    ((4, 3), {"dtype": np.int32}, ValueError, "float32 or float64"),
    ((4, 3), {"dtype": np.complex64}, ValueError, "float32 or float64"),
    ((4, 3), {"dtype": np.float16}, ValueError, "float32 or float64"),
    ((4, 3), {"dtype": "not a dtype"}, TypeError, "dtype"),
    ((4, 3), {"rng": np.random.RandomState(0)}, TypeError, "RandomState"),
    ((4, 3), {"rng": -3}, ValueError, "rng"),
    ((4, 3), {"rng": "seed"}, TypeError, "rng"),
])
def test_bad_input(func, args, kwargs, exc, text):
    state = np.random.get_state()[1].copy()
    g = np.random.default_rng(1)
    before = g.bit_generator.state
    kwargs = dict(kwargs)
    kwargs.setdefault("rng", g)
    with pytest.raises(exc, match=text):
        func(*args, **kwargs)
    # validation comes before any draw
    assert g.bit_generator.state == before
    assert np.array_equal(np.random.get_state()[1], state)
