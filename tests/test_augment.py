"""Tests for speedrun.augment against numpy references: the crop is the slice of the
``np.pad(mode='reflect')`` image at the drawn offsets (Page's cifar10-fast ``pad`` + ``Crop``),
flips are ``x[:, :, ::-1]``, cutout zeroes exactly one square inside each image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from speedrun.data import augment


def _images(b=16, h=32, w=32, c=3, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, (b, h, w, c), dtype=np.uint8)
    # values in [1, 2): no zeros, so cutout's zeros are identifiable
    return (1.0 + rng.random((b, h, w, c))).astype(dtype)


@pytest.mark.parametrize("padding", [4, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_random_crop_equals_numpy_reflect_pad_slice(padding, dtype):
    x = _images(dtype=dtype)
    key = jax.random.key(3)
    out = np.asarray(augment.random_crop(jnp.asarray(x), key, padding))
    offsets = np.asarray(augment.crop_offsets(key, len(x), padding))
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="reflect")
    expected = np.stack([padded[i, dy:dy + 32, dx:dx + 32] for i, (dy, dx) in enumerate(offsets)])
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out, expected)


def test_crop_offsets_range_and_coverage():
    offsets = np.asarray(augment.crop_offsets(jax.random.key(0), 4000, 4))
    assert offsets.shape == (4000, 2) and offsets.dtype == np.int32
    assert offsets.min() >= 0 and offsets.max() <= 8
    # every one of the 9 positions per axis is drawn (uniform: ~444 each of 4000)
    for axis in range(2):
        assert set(np.unique(offsets[:, axis]).tolist()) == set(range(9))


def test_random_crop_padding_zero_is_identity():
    x = _images()
    np.testing.assert_array_equal(np.asarray(augment.random_crop(jnp.asarray(x), jax.random.key(0), 0)), x)


def test_different_keys_give_different_crops():
    x = jnp.asarray(_images())
    a = np.asarray(augment.random_crop(x, jax.random.key(1)))
    b = np.asarray(augment.random_crop(x, jax.random.key(2)))
    a2 = np.asarray(augment.random_crop(x, jax.random.key(1)))
    np.testing.assert_array_equal(a, a2)  # deterministic in the key
    differs = [not np.array_equal(a[i], b[i]) for i in range(len(x))]
    assert sum(differs) >= len(x) // 2  # P(same offset) = 1/81 per image


def test_flip_lr_is_mirror_and_involution():
    x = _images(b=4, w=7)  # odd width: no accidental symmetry
    f = np.asarray(augment.flip_lr(jnp.asarray(x)))
    np.testing.assert_array_equal(f, x[:, :, ::-1])
    np.testing.assert_array_equal(np.asarray(augment.flip_lr(augment.flip_lr(jnp.asarray(x)))), x)


def test_random_flip_follows_bernoulli_mask():
    x = _images(b=64)
    key = jax.random.key(7)
    out = np.asarray(augment.random_flip(jnp.asarray(x), key))
    mask = np.asarray(jax.random.bernoulli(key, 0.5, (64,)))
    expected = np.where(mask[:, None, None, None], x[:, :, ::-1], x)
    np.testing.assert_array_equal(out, expected)
    assert 0 < mask.sum() < 64
    assert out.dtype == x.dtype


@pytest.mark.parametrize("size", [8, 12, 32])
def test_cutout_zeroes_one_square_inside_each_image(size):
    x = _images(b=32, dtype=np.float32)
    out = np.asarray(augment.cutout(jnp.asarray(x), jax.random.key(5), size))
    assert out.shape == x.shape and out.dtype == x.dtype
    corners = set()
    for i in range(len(x)):
        zero = out[i] == 0
        # the same pixels are zeroed in every channel
        assert (zero == zero[..., :1]).all()
        rows, cols = np.nonzero(zero[..., 0])
        assert len(rows) == size * size
        y0, x0 = rows.min(), cols.min()
        assert rows.max() - y0 == size - 1 and cols.max() - x0 == size - 1
        assert 0 <= y0 <= 32 - size and 0 <= x0 <= 32 - size
        expected = x[i].copy()
        expected[y0:y0 + size, x0:x0 + size] = 0
        np.testing.assert_array_equal(out[i], expected)
        corners.add((y0, x0))
    if size < 32:
        assert len(corners) > 1  # positions vary across images


def test_cutout_size_zero_is_identity_and_uint8_dtype():
    x = _images(dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(augment.cutout(jnp.asarray(x), jax.random.key(0), 0)), x)
    out = augment.cutout(jnp.asarray(x), jax.random.key(0), 4)
    assert out.dtype == jnp.uint8


def test_augment_batch_shape_dtype_and_composition():
    x = jnp.asarray(_images())
    key = jax.random.key(11)
    out = jax.jit(augment.augment_batch, static_argnums=(2, 3, 4))(x, key, 4, True, 8)
    assert out.shape == x.shape and out.dtype == x.dtype
    # crop + flip only: every output image is the padded image's slice, possibly mirrored
    k_crop, k_flip, _ = jax.random.split(key, 3)
    expected = augment.random_flip(augment.random_crop(x, k_crop, 4), k_flip)
    np.testing.assert_array_equal(np.asarray(augment.augment_batch(x, key, 4, True, 0)), np.asarray(expected))
    # with cutout: exactly 8*8*3 zeros per image
    assert (np.asarray(out) == 0).reshape(16, -1).sum(1).tolist() == [8 * 8 * 3] * 16
