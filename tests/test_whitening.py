"""Tests for speedrun.whitening against numpy: patch extraction against a loop, and Page's
whitening property — the filters V/sqrt(Λ+eps) applied (as the model's conv) to the 3×3 patches of
the normalised sample images give outputs whose uncentred covariance is Λ/(Λ+eps) ≈ I, with Λ
from an independent float64 numpy eigendecomposition."""

import numpy as np
import pytest

from speedrun import data
from speedrun.models import whitening

EPS = 1e-2  # Page's eps


def test_extract_patches_matches_numpy_loop():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    k = 3
    rows = []
    for n in range(2):
        for r in range(5 - k + 1):
            for c in range(4 - k + 1):
                rows.append(np.concatenate([x[n, r + i, c + j, :] for i in range(k) for j in range(k)]))
    expected = np.stack(rows)
    out = np.asarray(whitening.extract_patches(x, k))
    assert out.shape == (2 * 3 * 2, 27)
    np.testing.assert_array_equal(out, expected)


def test_patch_covariance_is_uncentred_over_n_minus_1():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 6, 6, 3)) + 0.5).astype(np.float32)  # non-zero mean
    p = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (3, 3), axis=(1, 2))
    p = p.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 27)  # (n, i, j, c) row order
    expected = p.T @ p / (len(p) - 1)
    np.testing.assert_allclose(np.asarray(whitening.patch_covariance(x, 3)), expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def normalised_sample(sample):
    x_train = sample[0][:10000]  # Page: the first 10000; the sample has 5170
    assert len(x_train) == 5170
    mean, std = np.array(data.CIFAR10_MEAN), np.array(data.CIFAR10_STD)
    return ((x_train - mean) / std).astype(np.float32)


def test_whitened_sample_patches_have_identity_covariance(normalised_sample):
    x = normalised_sample
    kernel = np.asarray(whitening.whitening_kernel(x, 3, EPS), np.float64)
    assert kernel.shape == (3, 3, 3, 27)

    # Independent reference, float64, in chunks: the uncentred patch covariance Σ (rows in
    # (i, j, channel) order, the HWIO kernel's first three axes), its eigenvalues Λ, and the
    # covariance of the kernel's VALID conv outputs, Wᵀ Σ W with W the kernel as a 27×27 matrix
    # (exactly the covariance of the outputs, by linearity).
    sigma = np.zeros((27, 27))
    n = 0
    for s in range(0, len(x), 1000):
        p = np.lib.stride_tricks.sliding_window_view(x[s:s + 1000], (3, 3), axis=(1, 2))
        p = p.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 27).astype(np.float64)
        sigma += p.T @ p
        n += len(p)
    assert n == 5170 * 30 * 30
    sigma /= n - 1
    lam = np.linalg.eigvalsh(sigma)[::-1]  # descending, as the kernel's output channels
    w = kernel.reshape(27, 27)
    cov_w = w.T @ sigma @ w

    expected = np.diag(lam / (lam + EPS))
    np.testing.assert_allclose(cov_w, expected, atol=2e-3)
    # ≈ identity up to eps: each diagonal entry is 1 - eps/(λ+eps), off-diagonals ≈ 0
    assert np.abs(cov_w - np.eye(27)).max() <= EPS / (lam.min() + EPS) + 2e-3
    big = lam > 100 * EPS  # directions well above eps are whitened to within 1%
    assert big.sum() >= 1
    np.testing.assert_allclose(np.diag(cov_w)[big], 1.0, atol=1e-2)


def _np_patches(x, k):
    p = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (k, k), axis=(1, 2))
    return p.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * x.shape[-1])


def test_patch_covariance_divides_by_n_with_ddof_0():
    """airbench's and hiverge's ``PᵀP / len(P)``."""
    x = (np.random.default_rng(2).standard_normal((2, 5, 5, 3)) + 0.3).astype(np.float32)
    p = _np_patches(x, 2)
    np.testing.assert_allclose(np.asarray(whitening.patch_covariance(x, 2, ddof=0)), p.T @ p / len(p),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="ddof"):
        whitening.patch_covariance(x, 2, ddof=2)


def test_svd_whitening_equals_the_eigendecomposition_of_the_same_covariance():
    """hiverge's SVD of the 2×2 patch covariance against numpy's float64 eigh: the same filters up
    to the sign of each column, eigenvalues distinct on random data."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((16, 8, 8, 3)) * rng.uniform(0.5, 2, 3) + 0.2).astype(np.float32)
    eps = 5e-4
    got = np.asarray(whitening.whitening_kernel(x, 2, eps, ddof=0, method="svd"), np.float64).reshape(12, 12)
    p = _np_patches(x, 2)
    lam, v = np.linalg.eigh(p.T @ p / len(p))
    lam, v = lam[::-1], v[:, ::-1]
    assert np.diff(lam).max() < 0  # distinct
    ref = v / np.sqrt(lam + eps)
    signs = np.sign(np.sum(got * ref, axis=0))
    np.testing.assert_allclose(got * signs, ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())
    eig = np.asarray(whitening.whitening_kernel(x, 2, eps, ddof=0, method="eigh"), np.float64).reshape(12, 12)
    np.testing.assert_allclose(np.abs(got), np.abs(eig), rtol=2e-3, atol=2e-3 * np.abs(ref).max())
    with pytest.raises(ValueError, match="method"):
        whitening.whitening_kernel(x, 2, eps, method="qr")
