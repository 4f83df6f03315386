"""include/fastdl/sgemm.h, the register-blocked float32 GEMM of the attention tiles and the
convolution units: every level this CPU has, ragged M and N, accumulate, strided rows."""

import numpy as np
import pytest

from fastdl._ext import _blas

LEVELS = [lv for lv in (1, 2) if lv <= _blas.sgemm_kernel_level()]


@pytest.mark.skipif(not LEVELS, reason="this CPU has neither AVX2+FMA nor AVX-512")
@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: {1: "avx2", 2: "avx512"}[lv])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 33, 5), (8, 32, 64), (13, 64, 0),
                                   (65, 100, 577), (3, 31, 9), (16, 97, 1), (9, 16, 11),
                                   (17, 48, 33), (2, 80, 3)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_matches_float64_product(level, m, n, k, accumulate, rng):
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    c = c0.copy()
    _blas.sgemm_kernel(a, b, c, 0.5, accumulate, level)
    expected = 0.5 * (a.astype(np.float64) @ b.astype(np.float64)) + (c0 if accumulate else 0)
    tol = 1e-5 * (np.sqrt(max(k, 1)) * 3 + 1)
    np.testing.assert_allclose(c, expected, rtol=0, atol=tol * (1 + np.abs(expected).max()))


@pytest.mark.skipif(not LEVELS, reason="no kernel on this CPU")
@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: {1: "avx2", 2: "avx512"}[lv])
@pytest.mark.parametrize("m,n,k", [(1, 1, 3), (9, 45, 20), (16, 64, 7), (7, 48, 5)])
def test_row_bias_added_at_the_store(level, m, n, k, rng):
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    _blas.sgemm_kernel(a, b, c, 2.0, False, level, bias)
    expected = 2.0 * (a.astype(np.float64) @ b) + bias[:, None]
    np.testing.assert_allclose(c, expected, rtol=0, atol=1e-4 * (1 + np.abs(expected).max()))


@pytest.mark.skipif(not LEVELS, reason="no kernel on this CPU")
def test_strided_rows_and_untouched_margins(rng):
    big_a = rng.standard_normal((20, 50)).astype(np.float32)
    big_b = rng.standard_normal((40, 90)).astype(np.float32)
    big_c = np.full((30, 80), 7.0, np.float32)
    a, b, c = big_a[:9, 3:20], big_b[2:19, 5:48], big_c[4:13, 10:53]
    _blas.sgemm_kernel(a, b, c, 1.0, False, LEVELS[-1])
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, atol=1e-4)
    mask = np.ones(big_c.shape, bool)
    mask[4:13, 10:53] = False
    assert np.all(big_c[mask] == 7.0)


def test_bad_input():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError):
        _blas.sgemm_kernel(a.astype(np.float64), np.ones((3, 2), np.float32),
                           np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="shapes"):
        _blas.sgemm_kernel(a, np.ones((4, 2), np.float32), np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="level"):
        _blas.sgemm_kernel(a, np.ones((3, 2), np.float32), np.ones((2, 2), np.float32), 1.0,
                           False, 7)


@pytest.mark.skipif(len(LEVELS) < 2, reason="needs both the AVX-512 and the AVX2 kernel")
@pytest.mark.parametrize("n", [16, 48, 80])
def test_sixteen_column_remainder_has_the_bits_of_either_kernel(n, rng):
    """A remainder of 16 columns goes to the AVX2 kernel in place: every element is the same
    FMA chain over k whichever kernel computes it."""
    a = rng.standard_normal((13, 37)).astype(np.float32)
    b = rng.standard_normal((37, n)).astype(np.float32)
    c2 = np.zeros((13, n), np.float32)
    c1 = np.zeros((13, n), np.float32)
    _blas.sgemm_kernel(a, b, c2, 1.0, False, 2)
    _blas.sgemm_kernel(a, b, c1, 1.0, False, 1)
    assert np.array_equal(c1, c2)
