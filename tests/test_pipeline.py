"""Tests for speedrun.data.pipeline and speedrun.data.resize against independent references:
numpy crops of the ``np.pad`` image at hand-chosen offsets, ``x[:, :, ::-1]`` flips, airbench's and
hiverge's alternating-flip rule, hiverge's jitter formula ``(x + b)·c`` on hand-made values, and a
numpy bilinear resize written from PyTorch's ``align_corners=False`` rule (no antialiasing).

The draws of the per-epoch plan are not those of the per-example pipeline it replaced (one
``randint`` per epoch instead of B key splits per step): the tests check the distribution (uniform,
in range, independent axes, chi-square), not the numbers.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from speedrun.data import pipeline, resize
from speedrun.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD


def aug_config(**kw):
    base = dict(crop_padding=2, crop_mode="reflect", flip=False, alternating_flip=False, cutout_size=0)
    return ml_collections.ConfigDict({**base, **kw})


def images(n=6, h=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, h, 3), dtype=np.uint8)


def normalised(x):
    return (x.astype(np.float32) - np.float32(CIFAR10_MEAN)) / np.float32(CIFAR10_STD)


def hand_draws(n, offsets=None, flip=None, corner=None, brightness=None, contrast=None):
    j = lambda a: None if a is None else jnp.asarray(a)  # noqa: E731
    return pipeline.Draws(key=jax.random.key(0), offsets=j(offsets), flip=j(flip), corner=j(corner),
                          brightness=j(brightness), contrast=j(contrast))


@pytest.mark.parametrize("mode", ["reflect", "constant"])
@pytest.mark.parametrize("padding", [2, 4])
def test_crop_and_flip_equal_numpy_at_hand_chosen_offsets(mode, padding):
    x = images()
    aug = pipeline.TrainAugment(aug_config(crop_padding=padding, crop_mode=mode, flip=True), len(x))
    xp = np.asarray(aug.prepare(jnp.asarray(x)))
    np_mode = "reflect" if mode == "reflect" else "constant"
    ref_pad = np.pad(normalised(x), ((0, 0), (padding,) * 2, (padding,) * 2, (0, 0)), mode=np_mode)
    assert xp.shape == (6, 32 + 2 * padding, 32 + 2 * padding, 3) and xp.dtype == np.uint8
    idx = np.array([3, 0, 5, 5, 1], np.int32)
    m = 2 * padding
    offsets = np.array([[0, 0], [m, m], [0, m], [m, 1], [1, 0]], np.int32)
    flip = np.array([False, True, True, False, True])
    out = np.asarray(aug.apply(jnp.asarray(xp), jnp.asarray(idx), hand_draws(5, offsets, flip), jnp.int32(0)))
    for k, (i, (dy, dx), f) in enumerate(zip(idx, offsets, flip)):
        crop = ref_pad[i, dy:dy + 32, dx:dx + 32]
        np.testing.assert_allclose(out[k], crop[:, ::-1] if f else crop, rtol=1e-6, atol=1e-6)


def test_no_padding_no_flip_is_normalised_gather():
    x = images()
    aug = pipeline.TrainAugment(aug_config(crop_padding=0), len(x))
    idx = np.array([2, 4], np.int32)
    out = aug.apply(aug.prepare(jnp.asarray(x)), jnp.asarray(idx), hand_draws(2), jnp.int32(0))
    np.testing.assert_allclose(np.asarray(out), normalised(x[idx]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_output_in_compute_dtype(dtype):
    x = images()
    aug = pipeline.TrainAugment(aug_config(), len(x), dtype=dtype)
    out = aug.apply(aug.prepare(jnp.asarray(x)), jnp.arange(3), hand_draws(3, np.full((3, 2), 2, np.int32)),
                    jnp.int32(0))
    assert out.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), normalised(x[:3]), rtol=1e-2, atol=1e-2)


def test_alternating_flip_follows_the_airbench_hiverge_rule():
    """The loader of airbench94 and hiverge: the set is pre-flipped once per run by a random mask,
    then every image is mirrored in odd epochs; epoch e shows image i mirrored iff base[i] XOR odd."""
    n = 16
    x = images(n)
    aug = pipeline.TrainAugment(aug_config(crop_padding=0, alternating_flip=True), n)
    run_key = jax.random.key(7)
    idx = np.arange(n, dtype=np.int32)[None]
    base = np.asarray(jax.random.bernoulli(run_key, 0.5, (n,)))  # airbench's pre-flip (p = 1/2)
    assert 0 < base.sum() < n
    for e in range(4):
        d = aug.draw(jax.random.key(e), run_key, jnp.asarray(idx))
        out = np.asarray(aug.apply(aug.prepare(jnp.asarray(x)), jnp.asarray(idx[0]), d[0], jnp.int32(e)))
        pre = np.where(base[:, None, None, None], x[:, :, ::-1], x)  # the pre-flipped set
        ref = pre[:, :, ::-1] if e % 2 else pre
        np.testing.assert_allclose(out, normalised(ref), rtol=1e-6, atol=1e-6)


def test_offsets_in_range_uniform_and_independent():
    aug = pipeline.TrainAugment(aug_config(crop_padding=4, flip=True, cutout_size=12), 50000)
    idx = jnp.zeros((50, 400), jnp.int32)
    d = aug.draw(jax.random.key(1), jax.random.key(2), idx)
    off = np.asarray(d.offsets)
    assert off.shape == (50, 400, 2) and off.dtype == np.int32
    assert off.min() == 0 and off.max() == 8
    counts = np.bincount(off.reshape(-1), minlength=9)
    assert stats.chisquare(counts).pvalue > 1e-3  # uniform on {0..8}, as the per-example draw was
    joint = np.zeros((9, 9))
    np.add.at(joint, (off[..., 0].ravel(), off[..., 1].ravel()), 1)
    assert stats.chi2_contingency(joint).pvalue > 1e-3  # dy independent of dx
    assert abs(np.asarray(d.flip).mean() - 0.5) < 0.01
    corner = np.asarray(d.corner)
    assert corner.min() == 0 and corner.max() == 32 - 12
    # different steps draw different offsets
    assert not np.array_equal(off[0], off[1])


def test_jitter_formula_on_hand_made_values_and_ranges():
    """hiverge's batch_color_jitter: x' = (x + b)·c on the normalised image, the same b and c for
    every pixel and channel of an image."""
    x = np.full((2, 32, 32, 3), 128, np.uint8)
    x[1] = 10
    aug = pipeline.TrainAugment(aug_config(crop_padding=0, brightness_range=0.1399, contrast_range=0.1308), 2)
    d = hand_draws(2, brightness=np.array([0.1, -0.05], np.float32), contrast=np.array([0.9, 1.1], np.float32))
    out = np.asarray(aug.apply(jnp.asarray(x), jnp.arange(2), d, jnp.int32(0)))
    np.testing.assert_allclose(out[0], (normalised(x[0]) + 0.1) * 0.9, rtol=1e-6)
    np.testing.assert_allclose(out[1], (normalised(x[1]) - 0.05) * 1.1, rtol=1e-6)
    drawn = aug.draw(jax.random.key(3), jax.random.key(0), jnp.zeros((20, 500), jnp.int32))
    b, c = np.asarray(drawn.brightness), np.asarray(drawn.contrast)
    assert -0.1399 <= b.min() < -0.139 and 0.139 < b.max() <= 0.1399
    assert 1 - 0.1308 <= c.min() < 1 - 0.13 and 1.13 < c.max() <= 1 + 0.1308
    assert stats.kstest(b.ravel(), stats.uniform(-0.1399, 2 * 0.1399).cdf).pvalue > 1e-3


def test_cutout_after_crop_zeroes_the_square():
    x = images(2)
    aug = pipeline.TrainAugment(aug_config(crop_padding=0, cutout_size=12), 2)
    out = np.asarray(aug.apply(jnp.asarray(x), jnp.arange(2), hand_draws(2, corner=np.array([[0, 20], [5, 3]])),
                               jnp.int32(0)))
    for k, (y0, x0) in enumerate([(0, 20), (5, 3)]):
        ref = normalised(x[k])
        ref[y0:y0 + 12, x0:x0 + 12] = 0
        np.testing.assert_allclose(out[k], ref, rtol=1e-6, atol=1e-6)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="exclusive"):
        pipeline.TrainAugment(aug_config(flip=True, alternating_flip=True), 1)
    with pytest.raises(ValueError, match="crop_mode"):
        pipeline.TrainAugment(aug_config(crop_mode="wrap"), 1)


# --------------------------------------------------------------------------- bilinear resize

def torch_bilinear(x, size):
    """numpy, from PyTorch's upsample_bilinear2d rule with align_corners=False: source coordinate
    (i + 0.5)·in/out - 0.5, clamped below at 0, its two neighbours weighted linearly."""
    def weights(n_in, n_out):
        w = np.zeros((n_out, n_in))
        for i in range(n_out):
            src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = int(np.floor(src))
            i1 = min(i0 + 1, n_in - 1)
            t = src - i0
            w[i, i0] += 1 - t
            w[i, i1] += t
        return w

    wh, ww = weights(x.shape[1], size), weights(x.shape[2], size)
    return np.einsum("oh,bhwc,pw->bopc", wh, x.astype(np.float64), ww)


@pytest.mark.parametrize("size", [24, 28, 16])
def test_bilinear_equals_pytorch_align_corners_false(size):
    x = np.random.default_rng(0).standard_normal((3, 32, 32, 3)).astype(np.float32)
    out = np.asarray(resize.bilinear(jnp.asarray(x), size))
    assert out.shape == (3, size, size, 3)
    np.testing.assert_allclose(out, torch_bilinear(x, size), rtol=1e-5, atol=1e-5)
    # jax.image.resize's default (antialias=True) is another filter when down-sampling
    aa = np.asarray(jax.image.resize(jnp.asarray(x), (3, size, size, 3), "bilinear"))
    assert np.abs(aa - torch_bilinear(x, size)).max() > 1e-2


def test_apply_resizes_after_augmentation():
    x = images(2)
    aug = pipeline.TrainAugment(aug_config(crop_padding=0), 2)
    out = np.asarray(aug.apply(jnp.asarray(x), jnp.arange(2), hand_draws(2), jnp.int32(0), size=24))
    np.testing.assert_allclose(out, torch_bilinear(normalised(x), 24), rtol=1e-5, atol=1e-5)
