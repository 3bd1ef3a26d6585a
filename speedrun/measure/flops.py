"""Training FLOPs of a record, counted from the jaxpr of the model's forward pass.

Method (the convention behind the published figures this project compares with — Page's "about
1.15 PFLOPs" for the 10-epoch ResNet-9 of "How to train your ResNet 8", and the PFLOPs column of
Keller Jordan's airbench README and paper, arXiv:2404.00498, e.g. 0.36 PFLOPs for airbench94):

- Count the multiply-adds (MACs) of every ``conv_general_dilated`` and ``dot_general`` in the
  jaxpr of ``model.apply(variables, x, train=False)`` for one ``(1, 32, 32, 3)`` image (inference
  mode, so batch norm, activations, pooling and the other elementwise ops are not counted: they
  are a few percent at most and the sources leave them out too). The frozen whitening conv is a
  conv and is counted.
- FLOPs = 2 × MACs (one multiply and one add).
- A training step costs 3 × forward per image: the backward pass is 2 × forward (one product for
  the activations' gradient, one for the weights' gradient).
- Training FLOPs of a run = 3 × forward FLOPs per image × training images processed (epochs ×
  steps per epoch × batch size); evaluation (per-epoch and the final TTA) is not included.

Hand counts (``tests/test_flops.py``): ResNet-9 at width 1: 380,008,448 MACs = 0.760 GFLOPs per
forward image, so 10 epochs × 50,000 images × 3 × 0.760 GFLOPs = 1.14 PFLOPs (Page: about 1.15);
airbench94: 118,147,360 MACs = 0.236 GFLOPs, × 3 × 9.9 epochs × 50,000 = 0.35 PFLOPs (airbench:
0.36, which also counts the TTA evaluation).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.extend as jex
import jax.numpy as jnp

#: Multiplier of the forward FLOPs for one training step (forward + backward = 1 + 2).
TRAIN_FORWARD_MULTIPLIER = 3


def _conv_macs(eqn) -> int:
    # rhs (kernel) has shape O x I/groups x spatial (in its own layout): every output element
    # takes prod(kernel) / O multiply-adds, also with feature or batch groups.
    out_shape = eqn.outvars[0].aval.shape
    rhs_shape = eqn.invars[1].aval.shape
    out_features_dim = eqn.params["dimension_numbers"].rhs_spec[0]
    return math.prod(out_shape) * math.prod(rhs_shape) // rhs_shape[out_features_dim]


def _dot_macs(eqn) -> int:
    # every output element is a sum over the contracting dimensions of lhs
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs_shape[d] for d in lhs_contract)


def count_macs(jaxpr) -> dict[str, int]:
    """Multiply-adds of the convolutions and matmuls in a jaxpr, by primitive.

    Walks nested jaxprs (``jit``/``pjit``, ``custom_jvp_call``, ``custom_vjp_call``, ``remat``,
    ``shard_map``...); a ``scan`` body counts ``length`` times, a ``cond`` counts its costliest
    branch.

    Args:
      jaxpr: a ``ClosedJaxpr`` or ``Jaxpr`` (e.g. from ``jax.make_jaxpr``).

    Returns:
      ``{"conv_general_dilated": int, "dot_general": int}`` multiply-adds (not FLOPs).

    Raises:
      ValueError: a ``while`` loop (its trip count is not static, so the count would be a guess).
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    totals = {"conv_general_dilated": 0, "dot_general": 0}

    def add(sub: dict[str, int], times: int = 1) -> None:
        for k in totals:
            totals[k] += times * sub[k]

    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            totals[name] += _conv_macs(eqn)
        elif name == "dot_general":
            totals[name] += _dot_macs(eqn)
        elif name == "scan":
            add(count_macs(eqn.params["jaxpr"]), int(eqn.params["length"]))
        elif name == "cond":
            branches = [count_macs(b) for b in eqn.params["branches"]]
            add(max(branches, key=lambda c: sum(c.values())))
        elif name == "while":
            raise ValueError("count_macs: a while loop has no static trip count; count a function "
                             "without lax.while_loop/fori_loop (or unroll it)")
        else:
            for sub in jex.core.jaxprs_in_params(eqn.params):
                add(count_macs(sub))
    return totals


def flops_of(fn: Callable[..., Any], *args: Any) -> int:
    """FLOPs (2 × multiply-adds of convolutions and matmuls) of ``fn(*args)``, from its jaxpr.

    Args:
      fn: a JAX-traceable function.
      args: its arguments: arrays or ``jax.ShapeDtypeStruct`` (nothing is computed).

    Raises:
      ValueError: see :func:`count_macs`.
    """
    return 2 * sum(count_macs(jax.make_jaxpr(fn)(*args)).values())


def forward_flops_per_image(model, image_shape: tuple[int, ...] = (32, 32, 3)) -> int:
    """Forward-pass FLOPs for one image of a Flax model in inference mode (see the module docstring).

    Args:
      model: a Flax Linen module called as ``model.apply(variables, x, train=False)`` with ``x`` of
        shape ``(B, *image_shape)`` float32 (every record network).
      image_shape: one image's shape, ``(H, W, C)``; CIFAR-10's ``(32, 32, 3)`` by default.

    Returns:
      FLOPs per image (int), e.g. 760,016,896 for Page's ResNet-9 at width 1.

    Raises:
      ValueError: see :func:`count_macs`.
    """
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    variables = jax.eval_shape(lambda k: model.init(k, jnp.zeros(x.shape, x.dtype), train=False),
                               jax.random.key(0))
    return flops_of(lambda v, xx: model.apply(v, xx, train=False), variables, x)


def training_flops(forward_flops_per_image: int, images: int) -> int:
    """Training FLOPs: ``3 × forward_flops_per_image × images`` (backward = 2 × forward).

    Args:
      forward_flops_per_image: from :func:`forward_flops_per_image`.
      images: training images processed (epochs × steps per epoch × batch size).

    Raises:
      ValueError: a negative argument.
    """
    if forward_flops_per_image < 0 or images < 0:
        raise ValueError(f"training_flops: negative input ({forward_flops_per_image}, {images})")
    return TRAIN_FORWARD_MULTIPLIER * int(forward_flops_per_image) * int(images)
