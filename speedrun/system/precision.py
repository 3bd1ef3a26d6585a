"""Precision policies: ``float32``, ``bfloat16`` and ``float16`` (``config.precision``).

Every policy keeps params and optimizer state in float32 and runs the convolutions, matmuls and
activations in its compute dtype (the model's ``dtype``; Flax ``dtype``/``param_dtype``), with
batch-norm statistics, logits and the loss in float32 — mixed-precision training as in
Micikevicius et al., "Mixed Precision Training" (ICLR 2018): float32 master weights, half-precision
arithmetic, loss scaling for float16. ``float16`` scales the loss dynamically with
``flax.training.dynamic_scale.DynamicScale`` (the scheme of PyTorch's ``GradScaler``: start at
2^16, halve on a step with non-finite gradients — that step's update is not applied — and double
after 2000 finite steps; as with ``GradScaler`` beside a scheduler, a skipped step still counts, so
the learning-rate schedules keep their length). ``float16_static`` multiplies the mean loss by the
batch size, a fixed scale — airbench's summed loss in float16 autocast — and checks nothing per
step (a non-finite loss is caught by the run's health record). ``bfloat16`` has float32's exponent
range and needs no scaling.

The sources' policies: Page's ResNet-9 trained in fp16 with float32 batch norm (cifar10-fast
``bag_of_tricks.ipynb``, ``.half()`` with BN kept in float); airbench runs its net in bf16/fp16
autocast. A record may pin a policy per backend (:func:`resolve`), since half precision is slow on
CPUs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax.training.dynamic_scale import DynamicScale


@dataclasses.dataclass(frozen=True)
class Policy:
    """A precision policy.

    Attributes:
      name: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
      compute_dtype: dtype of convolutions, matmuls and activations (the model's ``dtype``).
      loss_scaling: whether the loss is scaled dynamically (``float16``).
      static_scale: whether the loss is scaled by the batch size, unchecked (``float16_static``).
      param_dtype: dtype of params and optimizer state: always float32.
    """

    name: str
    compute_dtype: Any
    loss_scaling: bool
    static_scale: bool = False
    param_dtype: Any = jnp.float32


POLICIES: dict[str, Policy] = {
    "float32": Policy("float32", jnp.float32, False),
    "bfloat16": Policy("bfloat16", jnp.bfloat16, False),
    "float16": Policy("float16", jnp.float16, True),
    "float16_static": Policy("float16_static", jnp.float16, False, static_scale=True),
}

#: DynamicScale settings (flax's defaults, equal to PyTorch GradScaler's): initial scale 2^16,
#: ×2 after 2000 consecutive finite steps, ×0.5 on a non-finite step.
LOSS_SCALE_INIT = 2.0**16
LOSS_SCALE_GROWTH_INTERVAL = 2000


def resolve(spec: str, backend: str | None = None) -> Policy:
    """The policy named by ``spec`` for ``backend``.

    Args:
      spec: a policy name (``"float32"``, ``"bfloat16"``, ``"float16"``) for every backend, or
        comma-separated ``backend=name`` pairs pinning one per backend, e.g.
        ``"gpu=float16,tpu=bfloat16,cpu=float32"``.
      backend: ``"cpu"``, ``"gpu"`` or ``"tpu"`` (default: ``jax.default_backend()``; ``"cuda"`` and
        ``"rocm"`` count as ``"gpu"``).

    Raises:
      ValueError: an unknown policy name, a malformed pair, or no entry for ``backend``; the message
        lists the valid names.
    """
    spec = str(spec).strip()
    known = sorted(POLICIES)
    if "=" not in spec:
        if spec not in POLICIES:
            raise ValueError(f"unknown precision {spec!r}; known: {known}, or per-backend pairs like "
                             "'gpu=float16,cpu=float32'")
        return POLICIES[spec]
    backend = backend or jax.default_backend()
    backend = "gpu" if backend in ("cuda", "rocm") else backend
    table = {}
    for pair in spec.split(","):
        key, sep, name = (s.strip() for s in pair.partition("="))
        if not sep or not key or name not in POLICIES:
            raise ValueError(f"bad precision entry {pair!r} in {spec!r}: write backend=name with name in {known}")
        table[key] = name
    if backend not in table:
        raise ValueError(f"precision {spec!r} pins no policy for the {backend!r} backend; add "
                         f"{backend}=NAME (NAME in {known}) or give one name for all backends")
    return POLICIES[table[backend]]


def init_loss_scale(policy: Policy) -> DynamicScale | None:
    """The initial ``DynamicScale`` (float32 ``scale`` = :data:`LOSS_SCALE_INIT`, int32
    ``fin_steps`` = 0) for a loss-scaling policy, else ``None``."""
    if not policy.loss_scaling:
        return None
    return DynamicScale(growth_interval=LOSS_SCALE_GROWTH_INTERVAL,
                        fin_steps=jnp.zeros((), jnp.int32),
                        scale=jnp.asarray(LOSS_SCALE_INIT, jnp.float32))


def value_and_grad(loss_fn: Callable[[Any], tuple[jax.Array, Any]], params: Any,
                   loss_scale: DynamicScale | None, static_scale: float | None = None
                   ) -> tuple[DynamicScale | None, jax.Array, tuple, Any]:
    """``jax.value_and_grad(loss_fn, has_aux=True)(params)``, with dynamic loss scaling when
    ``loss_scale`` is given, or a fixed ``static_scale`` (the loss times it, the gradients divided).

    Args:
      loss_fn: ``params -> (float32 scalar loss, aux)``.
      params: float32 pytree.
      loss_scale: a ``DynamicScale`` (float16 policy) or ``None``.
      static_scale: the fixed scale (float16_static: the batch size) or ``None``.

    Returns:
      ``(new_loss_scale, finite, (loss, aux), grads)``: the updated ``DynamicScale`` (or None);
      ``finite``, a bool scalar, False when some gradient is NaN or infinite (always True without
      dynamic scaling: nothing is checked); the unscaled loss; float32 gradients, unscaled.
    """
    if loss_scale is not None:
        return loss_scale.value_and_grad(loss_fn, has_aux=True)(params)
    if static_scale is None:
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return None, jnp.asarray(True), (loss, aux), grads

    def scaled(p):
        loss, aux = loss_fn(p)
        return loss * static_scale, (loss, aux)

    (_, (loss, aux)), grads = jax.value_and_grad(scaled, has_aux=True)(params)
    return None, jnp.asarray(True), (loss, aux), jax.tree.map(lambda g: g / static_scale, grads)


def keep_if_finite(finite: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``finite`` else ``old``, for the float leaves; integer leaves (step counts of
    the optimizer's schedules) always take ``new``: a skipped step still counts, as PyTorch's
    scheduler steps past a ``GradScaler`` skip. Pytrees of the same structure; ``finite`` a bool
    scalar. Applied to what an update writes (params, optimizer state, batch stats), the select
    fuses into the update itself."""
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o) if jnp.issubdtype(n.dtype, jnp.floating) else n,
                        new, old)


def summarize_steps(metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Reduce an epoch's per-step metrics ``{name: (steps,)}`` to float32 scalars.

    Without ``"finite"`` in ``metrics`` every entry is averaged over steps. With it (float16), the
    entries are averaged over the applied (finite) steps only, and the result adds ``"skipped"``
    (number of skipped steps, float32) and ``"loss_scale"`` (the scale after the last step; taken
    from ``metrics["loss_scale"]``). An epoch whose steps were all skipped gets NaN loss and
    accuracy.
    """
    if "finite" not in metrics:
        return jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
    finite = metrics["finite"]
    w = finite.astype(jnp.float32)
    out = {}
    for name, m in metrics.items():
        if name in ("finite", "loss_scale"):
            continue
        out[name] = jnp.sum(jnp.where(finite, m, 0.0), axis=0) / jnp.sum(w)
    out["skipped"] = jnp.sum(1.0 - w)
    out["loss_scale"] = metrics["loss_scale"][-1]
    return out
