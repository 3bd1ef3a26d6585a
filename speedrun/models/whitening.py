"""Frozen patch-whitening filters for the first convolution.

Method (David Page, "How to train your ResNet 8: bag of tricks", cifar10-fast
``bag_of_tricks.ipynb``, the ``whitening_block``): take every k×k patch (stride 1, no padding) of
the first ``num_images`` normalised training images, form the *uncentred* covariance
``Σ = Pᵀ P / (n - 1)`` of the flattened patches (n patches, k·k·C values each), eigendecompose
``Σ = V Λ Vᵀ`` and use the filters ``V / sqrt(Λ + eps)`` (eigenvalues in descending order), so that
the conv outputs of a patch have covariance ``Λ / (Λ + eps) ≈ I``.

Page uses k=3, eps=1e-2, 10000 images, output channels 27 = 3·3·3. airbench (Keller Jordan) uses
k=2, eps=5e-4, 5000 images and the filters concatenated with their negatives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def extract_patches(images: jax.Array, patch_size: int) -> jax.Array:
    """All stride-1 ``patch_size``² patches of a batch, without padding.

    Args:
      images: ``(N, H, W, C)`` float.
      patch_size: k.

    Returns:
      ``(N * (H-k+1) * (W-k+1), k * k * C)`` float, each row a patch flattened in (row, column,
      channel) order — the order of a Flax HWIO kernel's first three axes.
    """
    n, h, w, c = images.shape
    k = patch_size
    ho, wo = h - k + 1, w - k + 1
    parts = [images[:, i : i + ho, j : j + wo, :] for i in range(k) for j in range(k)]
    patches = jnp.stack(parts, axis=3)  # (N, ho, wo, k*k, C), (i, j) major, channel minor
    return patches.reshape(n * ho * wo, k * k * c)


def patch_covariance(images: jax.Array, patch_size: int) -> jax.Array:
    """Uncentred covariance ``PᵀP / (n - 1)`` of the patches (Page's ``cov``), float32.

    Args:
      images: ``(N, H, W, C)`` float (normalised images).
      patch_size: k.

    Returns:
      ``(k*k*C, k*k*C)`` float32, symmetric positive semi-definite.
    """
    p = extract_patches(images.astype(jnp.float32), patch_size)
    # HIGHEST: float32 matmuls on recent GPUs default to TF32, too coarse for a covariance.
    cov = jnp.matmul(p.T, p, precision=jax.lax.Precision.HIGHEST)
    return cov / (p.shape[0] - 1)


def whitening_kernel(images: jax.Array, patch_size: int = 3, eps: float = 1e-2) -> jax.Array:
    """Page's frozen whitening filters as a Flax conv kernel.

    Args:
      images: ``(N, H, W, C)`` float, normalised training images (Page: the first 10000).
      patch_size: k (Page: 3).
      eps: added to the eigenvalues (Page: 1e-2).

    Returns:
      ``(k, k, C, k*k*C)`` float32 HWIO kernel; output channel ``o`` is eigenvector ``o`` of the
      patch covariance (eigenvalues descending) divided by ``sqrt(λ_o + eps)``.
    """
    c = images.shape[-1]
    k = patch_size
    evals, evecs = jnp.linalg.eigh(patch_covariance(images, k))  # ascending
    evals, evecs = evals[::-1], evecs[:, ::-1]  # descending, columns are eigenvectors
    filters = evecs / jnp.sqrt(evals + eps)[None, :]  # (k*k*C, out)
    return filters.reshape(k, k, c, k * k * c)
