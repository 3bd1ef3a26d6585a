"""Batched, jitted test-set evaluation with and without test-time augmentation (TTA).

TTA level 1 (the default) is Page's ``forward_tta([identity, flip_lr])`` (cifar10-fast
``bag_of_tricks.ipynb``): the logits of an image and of its mirror image are averaged. Level 2 adds
airbench's one-pixel translations (:func:`tta_views`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from speedrun.data.augment import flip_lr


def batch_test_set(images: np.ndarray, labels: np.ndarray, batch_size: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad the test set to whole batches.

    Args:
      images: ``(N, 32, 32, 3)`` uint8.
      labels: ``(N,)`` int32.
      batch_size: evaluation batch size.

    Returns:
      ``(nb, batch_size, 32, 32, 3)`` uint8 images, ``(nb, batch_size)`` int32 labels and
      ``(nb, batch_size)`` bool mask (False on the zero padding), ``nb = ceil(N / batch_size)``.
    """
    n = len(images)
    nb = -(-n // batch_size)
    pad = nb * batch_size - n
    images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
    mask = np.arange(nb * batch_size) < n
    shape = (nb, batch_size)
    return images.reshape(shape + images.shape[1:]), labels.reshape(shape), mask.reshape(shape)


#: test-time augmentation levels (airbench's ``tta_level``): 0 none, 1 mirror, 2 mirror + translate
TTA_LEVELS = (0, 1, 2)


def tta_views(x: jax.Array, level: int) -> list[tuple[float, jax.Array]]:
    """The weighted views whose logits TTA averages: ``[(weight, view), ...]``, weights summing to 1.

    - level 0: ``[(1, x)]``;
    - level 1 (Page's ``forward_tta([identity, flip_lr])``, airbench's ``infer_mirror``):
      ``[(1/2, x), (1/2, mirror x)]``;
    - level 2 (airbench's ``infer_mirror_translate``): ``1/2·mirror-avg(x) + 1/2·mean(mirror-avg(u),
      mirror-avg(d))`` with ``u = pad1(x)[:, 0:H, 0:W]`` and ``d = pad1(x)[:, 2:H+2, 2:W+2]``, the two
      one-pixel translations (content moved down-right resp. up-left) of the 1-pixel *reflect*
      padded image: weights 1/4, 1/4 for ``x``, ``mirror x`` and 1/8 each for ``u``, ``mirror u``,
      ``d``, ``mirror d``.

    Source: KellerJordan/cifar10-airbench ``airbench94.py`` (TTA evaluation).

    Args:
      x: ``(B, H, W, C)`` float images (normalised).
      level: one of :data:`TTA_LEVELS`.

    Raises:
      ValueError: unknown level.
    """
    if level not in TTA_LEVELS:
        raise ValueError(f"tta_level must be one of {TTA_LEVELS}; got {level!r}")
    if level == 0:
        return [(1.0, x)]
    if level == 1:
        return [(0.5, x), (0.5, flip_lr(x))]
    h, w = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    u, d = padded[:, 0:h, 0:w], padded[:, 2:h + 2, 2:w + 2]
    return [(0.25, x), (0.25, flip_lr(x)), (0.125, u), (0.125, flip_lr(u)), (0.125, d), (0.125, flip_lr(d))]


def view_logits(apply_fn: Callable[..., jax.Array], variables: Any, x: jax.Array, level: int
                ) -> tuple[jax.Array, jax.Array]:
    """The logits of every view of :func:`tta_views` from ONE forward: the views are concatenated
    along the batch, applied once (eval mode: BN uses running statistics, so the batch's
    composition changes no logit), and split.

    Args:
      x: ``(B, H, W, C)`` normalised images; level: :data:`TTA_LEVELS`.

    Returns:
      ``(V, B, classes)`` float32 logits (view 0 is ``x`` itself) and the ``(V,)`` weights.
    """
    views = tta_views(x, level)
    weights = jnp.asarray([w for w, _ in views], jnp.float32)
    stacked = jnp.concatenate([v for _, v in views]) if len(views) > 1 else x
    logits = apply_fn(variables, stacked, train=False).astype(jnp.float32)
    return logits.reshape(len(views), x.shape[0], -1), weights


def selective_logits(plain: jax.Array, tta: jax.Array, mask: jax.Array, fraction: float) -> jax.Array:
    """hiverge's selective TTA: the ``floor(fraction·n)`` unmasked images least confident by max
    softmax of ``plain`` get their ``tta`` logits, the others keep ``plain``.

    Args:
      plain, tta: ``(N, classes)`` float32; mask: ``(N,)`` bool (False: padding, never chosen,
        not counted in ``n``); fraction: in [0, 1].

    Returns:
      ``(N, classes)`` float32.
    """
    conf = jnp.where(mask, jax.nn.softmax(plain, axis=-1).max(-1), jnp.inf)
    k_max = int(fraction * plain.shape[0])
    if k_max == 0:
        return plain
    _, idx = jax.lax.top_k(-conf, k_max)  # least confident first
    k = jnp.floor(fraction * jnp.sum(mask)).astype(jnp.int32)
    chosen = jnp.zeros(plain.shape[0], bool).at[idx].set(jnp.arange(k_max) < k)
    return jnp.where(chosen[:, None], tta, plain)


def make_evaluate(apply_fn: Callable[..., jax.Array], normalize: Callable[[jax.Array], jax.Array],
                  tta_level: int = 1, tta_selective: float = 0.0) -> Callable[..., dict[str, jax.Array]]:
    """Build ``evaluate(variables, images, labels, mask) -> {"acc", "tta_acc", "loss"}``.

    Args:
      apply_fn: ``apply_fn(variables, x, train=False) -> (B, classes)`` logits.
      normalize: uint8 images → normalised float images, on device.
      tta_level: the TTA of ``tta_acc`` (:func:`tta_views`): 1 (default, Page's mirror average) or
        2 (airbench's mirror + translate); 0 makes ``tta_acc`` equal ``acc`` with one plain forward
        per batch (the untimed per-epoch evaluation).
      tta_selective: 0 (every image gets the weighted TTA), or hiverge's fraction (0.25): only the
        least-confident images get the *unweighted* mean of the level's views
        (:func:`selective_logits`, over the whole test set).

    The returned function (not jitted; jit it with the caller's shardings) takes the batched arrays
    of :func:`batch_test_set` and returns float32 scalars: accuracy without TTA, accuracy with TTA
    and the mean cross-entropy without TTA, over unmasked examples. Each batch runs one forward of
    all its views (:func:`view_logits`). Accuracies come from float32 logits.

    Raises:
      ValueError: unknown ``tta_level``, ``tta_selective`` outside [0, 1) or set with level 0.
    """
    if tta_level not in TTA_LEVELS:
        raise ValueError(f"tta_level must be one of {TTA_LEVELS}; got {tta_level!r}")
    if not 0.0 <= tta_selective < 1.0 or (tta_selective and tta_level == 0):
        raise ValueError(f"tta_selective must be in [0, 1) with tta_level 1 or 2; got {tta_selective!r} "
                         f"at level {tta_level} (hiverge: 0.25 at level 2)")

    def evaluate(variables: Any, images: jax.Array, labels: jax.Array, mask: jax.Array):
        def one_batch(x):
            logits, weights = view_logits(apply_fn, variables, normalize(x), tta_level)
            mix = jnp.full_like(weights, 1 / len(weights)) if tta_selective else weights
            return logits[0], jnp.einsum("v,vbk->bk", mix, logits)

        plain, tta = jax.lax.map(one_batch, images)
        plain, tta = plain.reshape(-1, plain.shape[-1]), tta.reshape(-1, tta.shape[-1])
        y, m = labels.reshape(-1), mask.reshape(-1)
        if tta_selective:
            tta = selective_logits(plain, tta, m, tta_selective)
        ce = -jnp.take_along_axis(jax.nn.log_softmax(plain), y[:, None], axis=1)[:, 0]
        n = jnp.sum(m)
        return {"acc": jnp.sum((plain.argmax(-1) == y) & m) / n,
                "tta_acc": jnp.sum((tta.argmax(-1) == y) & m) / n,
                "loss": jnp.sum(jnp.where(m, ce, 0.0)) / n}

    return evaluate


def tta_logits(apply_fn: Callable[..., jax.Array], variables: Any, x: jax.Array, tta_level: int) -> jax.Array:
    """``(B, classes)`` float32 logits of normalised images ``x (B, H, W, C)``: the weighted mean of
    the logits of :func:`tta_views` (level 0: the plain logits), from one forward.

    Raises:
      ValueError: unknown ``tta_level``.
    """
    logits, weights = view_logits(apply_fn, variables, x, tta_level)
    return jnp.einsum("v,vbk->bk", weights, logits)
