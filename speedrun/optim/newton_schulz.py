"""Muon's Newton–Schulz orthogonalisation of all filter banks at once, in a chosen dtype.

Each filter bank ``w`` (HWIO ``(kh, kw, c_in, c_out)``, or any ``(..., c_out)``) is the matrix
``L = w.reshape(-1, c_out)`` (``K × c_out``, free: no copy). With ``M = Lᵀ`` the ``(c_out, K)``
matrix of the PyTorch sources, the quintic iteration ``X ← aX + (bA + cA²)X``, ``A = XXᵀ`` on ``M``
is, transposed, ``Y ← aY + Y(bB + cB²)``, ``B = YᵀY`` on ``Y = L``: the same numbers, no
transpose. A bank with ``c_out > K`` is transposed so that the Gram matrix is the smaller side
(the sources' ``if rows > cols: X = X.T``). The matrices are zero-padded to a common shape and
stacked (hiverge/cifar10-speedrun ``_zeropower_via_newtonschulz5``: one stack of 256×2304), so
one batched chain of ``dot_general`` runs per iteration; zero rows and columns stay zero through
the iteration and change no entry of the others. ``grouping="shape"`` stacks per distinct shape
instead (fulcrum E1's ``_ns_all``).

The dtype: airbench94_muon runs the iteration in bfloat16, hiverge in float16; float32 is the
right choice on CPUs (no fast half-precision matmul). :func:`resolve_ns_dtype`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from speedrun.system import precision

#: how the banks are stacked: one zero-padded stack, or one stack per distinct shape
GROUPINGS = ("pad", "shape")


def resolve_ns_dtype(spec: str = "auto", backend: str | None = None) -> Any:
    """The Newton–Schulz dtype named by ``spec`` for ``backend``.

    Args:
      spec: ``"auto"`` (bfloat16 on ``gpu``/``tpu``, float32 on ``cpu``), a name ``"float32"``,
        ``"bfloat16"``, ``"float16"``, or per-backend pairs ``"gpu=float16,cpu=float32"`` (the
        syntax of :func:`speedrun.system.precision.resolve`).
      backend: default ``jax.default_backend()``.

    Returns:
      a jnp dtype.

    Raises:
      ValueError: an unknown name, a malformed pair or no entry for the backend (one line).
    """
    if str(spec).strip() == "auto":
        backend = backend or jax.default_backend()
        return jnp.float32 if backend == "cpu" else jnp.bfloat16
    try:
        return precision.resolve(spec, backend).compute_dtype
    except ValueError as err:
        raise ValueError(f"optimizer.ns_dtype: {err} (or 'auto': bfloat16 on GPU/TPU, float32 on CPU)") from err


def resolve_grouping(spec: str = "auto", backend: str | None = None) -> str:
    """``"pad"`` or ``"shape"``; ``"auto"``: ``"pad"`` (one stack, the source's) on GPU/TPU and
    ``"shape"`` on CPU, where the padding's extra FLOPs cost time (docs/optim.md).

    Raises:
      ValueError: another name.
    """
    if spec == "auto":
        return "shape" if (backend or jax.default_backend()) == "cpu" else "pad"
    if spec not in GROUPINGS:
        raise ValueError(f"optimizer.ns_grouping must be 'auto' or one of {GROUPINGS}; got {spec!r}")
    return spec


def _as_matrix(x: jax.Array) -> tuple[jax.Array, bool]:
    """``(m, n)`` with ``m >= n`` (the Gram side ``n`` is the smaller) and whether it was transposed."""
    mat = x.reshape(-1, x.shape[-1])
    return (mat.T, True) if mat.shape[1] > mat.shape[0] else (mat, False)


def iterate(y: jax.Array, ns_coeffs: Sequence[float], ns_steps: int) -> jax.Array:
    """``ns_steps`` iterations ``Y ← aY + Y(bB + cB²)``, ``B = YᵀY``, on a stack ``(S, m, n)``
    (``m >= n``) in its own dtype: 3 batched ``dot_general`` per iteration."""
    a, b, c = ns_coeffs
    for _ in range(ns_steps):
        gram = jnp.einsum("smi,smj->sij", y, y)
        poly = b * gram + c * jnp.einsum("sij,sjk->sik", gram, gram)
        y = a * y + jnp.einsum("smi,sij->smj", y, poly)
    return y


def orthogonalize(tree: Any, ns_coeffs: Sequence[float] = (3.4445, -4.7750, 2.0315), ns_steps: int = 3,
                  eps: float = 1e-7, dtype: Any = jnp.float32, grouping: str = "pad",
                  target_norm: jax.Array | None = None) -> Any:
    """Newton–Schulz of every leaf of ``tree`` (float32 filter banks ``(..., c_out)``), batched.

    Pre-scaling per matrix ``X`` (float32, before the cast to ``dtype``): without ``target_norm``,
    ``X / (‖X‖_F + eps)`` (airbench94_muon, eps 1e-7); with it (hiverge, eps 1e-5),
    ``X·τ / (‖X‖_F + eps)`` then ``X / (‖X‖_F + eps)``.

    Args:
      tree: pytree of arrays of rank >= 2.
      ns_coeffs: (a, b, c); ns_steps: iterations.
      eps: the pre-scaling's epsilon.
      dtype: dtype of the iteration (:func:`resolve_ns_dtype`).
      grouping: :data:`GROUPINGS`.
      target_norm: τ, a float32 scalar, or None.

    Returns:
      the orthogonalised tree, float32, leaves in their shapes.

    Raises:
      ValueError: unknown ``grouping``, a leaf of rank < 2.
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"Newton-Schulz grouping must be one of {GROUPINGS}; got {grouping!r}")
    leaves, treedef = jax.tree.flatten(tree)
    if not leaves:
        return tree
    if any(leaf.ndim < 2 for leaf in leaves):
        raise ValueError(f"Muon needs leaves of rank >= 2; got shapes {[leaf.shape for leaf in leaves]}")
    mats, flips = zip(*(_as_matrix(leaf.astype(jnp.float32)) for leaf in leaves))
    groups: dict[Any, list[int]] = {}
    for i, m in enumerate(mats):
        groups.setdefault("all" if grouping == "pad" else m.shape, []).append(i)
    out: list[Any] = [None] * len(mats)
    for idx in groups.values():
        rows = max(mats[i].shape[0] for i in idx)
        cols = max(mats[i].shape[1] for i in idx)
        stack = jnp.stack([jnp.pad(mats[i], ((0, rows - mats[i].shape[0]), (0, cols - mats[i].shape[1])))
                           for i in idx])
        norm = jnp.sqrt(jnp.sum(stack * stack, axis=(1, 2), keepdims=True))
        if target_norm is None:
            stack = stack / (norm + eps)
        else:
            stack = stack * (target_norm / (norm + eps))
            stack = stack / (jnp.sqrt(jnp.sum(stack * stack, axis=(1, 2), keepdims=True)) + eps)
        stack = iterate(stack.astype(dtype), ns_coeffs, ns_steps).astype(jnp.float32)
        for j, i in enumerate(idx):
            m, n = mats[i].shape
            y = stack[j, :m, :n]
            out[i] = (y.T if flips[i] else y).reshape(leaves[i].shape)
    return jax.tree.unflatten(treedef, out)


def padded_flops(shapes: Sequence[Sequence[int]], ns_steps: int = 3, grouping: str = "pad") -> int:
    """Matmul FLOPs (2·m·n·k per product) of :func:`orthogonalize` on banks of these shapes, for
    benchmarks comparing ``"pad"`` with ``"shape"``."""
    dims = [sorted((math.prod(s[:-1]), s[-1]), reverse=True) for s in shapes]
    groups: dict[Any, list[list[int]]] = {}
    for d in dims:
        groups.setdefault("all" if grouping == "pad" else tuple(d), []).append(d)
    total = 0
    for members in groups.values():
        m, n = max(d[0] for d in members), max(d[1] for d in members)
        total += len(members) * ns_steps * (2 * m * n * n + 2 * n ** 3 + 2 * m * n * n)
    return total
