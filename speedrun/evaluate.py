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


def make_evaluate(apply_fn: Callable[..., jax.Array], normalize: Callable[[jax.Array], jax.Array],
                  tta_level: int = 1) -> Callable[..., dict[str, jax.Array]]:
    """Build ``evaluate(variables, images, labels, mask) -> {"acc", "tta_acc", "loss"}``.

    Args:
      apply_fn: ``apply_fn(variables, x, train=False) -> (B, classes)`` logits.
      normalize: uint8 images → normalised float images, on device.
      tta_level: the TTA of ``tta_acc`` (:func:`tta_views`): 1 (default, Page's mirror average) or
        2 (airbench's mirror + translate); 0 makes ``tta_acc`` equal ``acc``.

    The returned function (not jitted; jit it with the caller's shardings) takes the batched arrays
    of :func:`batch_test_set` and returns float32 scalars: accuracy without TTA, accuracy with TTA
    (the weighted mean of the views' logits) and the mean cross-entropy without TTA, over unmasked
    examples. Accuracies come from float32 logits.

    Raises:
      ValueError: unknown ``tta_level``.
    """
    if tta_level not in TTA_LEVELS:
        raise ValueError(f"tta_level must be one of {TTA_LEVELS}; got {tta_level!r}")

    def evaluate(variables: Any, images: jax.Array, labels: jax.Array, mask: jax.Array):
        def one_batch(batch):
            x, y, m = batch
            x = normalize(x)
            logits = apply_fn(variables, x, train=False).astype(jnp.float32)
            if tta_level == 1:
                logits_tta = 0.5 * (logits + apply_fn(variables, flip_lr(x), train=False).astype(jnp.float32))
            else:  # the first view is x itself: reuse its logits
                views = tta_views(x, tta_level)
                logits_tta = views[0][0] * logits
                for weight, view in views[1:]:
                    logits_tta = logits_tta + weight * apply_fn(variables, view, train=False).astype(jnp.float32)
            ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1)[:, 0]
            return (
                jnp.sum((logits.argmax(-1) == y) & m),
                jnp.sum((logits_tta.argmax(-1) == y) & m),
                jnp.sum(jnp.where(m, ce, 0.0)),
            )

        correct, correct_tta, loss = jax.lax.map(one_batch, (images, labels, mask))
        n = jnp.sum(mask)
        return {"acc": correct.sum() / n, "tta_acc": correct_tta.sum() / n, "loss": loss.sum() / n}

    return evaluate


def tta_logits(apply_fn: Callable[..., jax.Array], variables: Any, x: jax.Array, tta_level: int) -> jax.Array:
    """``(B, classes)`` float32 logits of normalised images ``x (B, H, W, C)``: the weighted mean of
    the logits of :func:`tta_views` (level 0: the plain logits).

    Raises:
      ValueError: unknown ``tta_level``.
    """
    out = 0.0
    for weight, view in tta_views(x, tta_level):
        out = out + weight * apply_fn(variables, view, train=False).astype(jnp.float32)
    return out
