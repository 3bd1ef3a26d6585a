"""Batched, jitted test-set evaluation with and without test-time augmentation (TTA).

TTA here is Page's ``forward_tta([identity, flip_lr])`` (cifar10-fast ``bag_of_tricks.ipynb``):
the logits of an image and of its mirror image are averaged.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from speedrun.augment import flip_lr


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


def make_evaluate(apply_fn: Callable[..., jax.Array], normalize: Callable[[jax.Array], jax.Array]
                  ) -> Callable[..., dict[str, jax.Array]]:
    """Build ``evaluate(variables, images, labels, mask) -> {"acc", "tta_acc", "loss"}``.

    Args:
      apply_fn: ``apply_fn(variables, x, train=False) -> (B, classes)`` logits.
      normalize: uint8 images → normalised float images, on device.

    The returned function (not jitted; jit it with the caller's shardings) takes the batched arrays
    of :func:`batch_test_set` and returns float32 scalars: accuracy without TTA, accuracy with TTA
    (mean logits of image and mirror) and the mean cross-entropy without TTA, over unmasked
    examples. Accuracies come from float32 logits.
    """

    def evaluate(variables: Any, images: jax.Array, labels: jax.Array, mask: jax.Array):
        def one_batch(batch):
            x, y, m = batch
            x = normalize(x)
            logits = apply_fn(variables, x, train=False).astype(jnp.float32)
            logits_tta = 0.5 * (logits + apply_fn(variables, flip_lr(x), train=False).astype(jnp.float32))
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
