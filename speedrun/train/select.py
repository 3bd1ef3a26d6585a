"""Data selection by a proxy network: each batch's hardest examples, chosen inside the compiled epoch.

Source: KellerJordan/cifar10-airbench ``airbench96_faster.py`` (f1c599c; last changed in 9e36930):
a small proxy net (widths 32/64/64, two convolutions per group, logits × 1/9, whitening bias frozen
at 0, no lookahead) runs a training-mode forward pass on every batch of 1024 and computes the
per-example label-smoothed cross-entropy; the 512 examples of highest loss form the batch's mask;
only on steps with ``step % 4 == 0`` does the proxy take an SGD step (its comment says "every
other"; the code does 1 in 4), on the *summed* loss of the masked 512 from that same forward pass,
while its lr schedule advances every step. The main net trains on the masked 512 of every batch
with the loss summed over them. The source runs the proxy over the whole run first and the main
net after, on the same seeded batch stream; the proxy never reads the main net, so interleaving
them batch by batch, as here, gives the same masks.

Here, as everywhere in speedrun, losses are batch means (summed-loss learning rates are ×B in
:mod:`speedrun.optim`): the proxy's and the main step's losses are means over the ``k`` kept rows,
and :func:`selected_optimizer` builds an optimizer whose summed-loss rates are multiplied by ``k``
while its weight decay keeps the drawn batch ``B`` of the source's formulas.

No conditional and no host round trip: a *macro step* (:func:`selecting_step`) takes ``n``
consecutive batches (``n = period``); the proxy trains on the first of them (statically: the step
``s`` with ``s % period == 0``) and scores the others with a forward pass, ``lax.top_k`` keeps each
batch's ``k`` highest-loss rows (in their batch order, as the source's boolean mask), and the main
step is scanned over the kept rows (with every row kept, over the drawn batches themselves: no
gather, so the main net trains exactly as without selection). :func:`selecting_scan` runs a stretch of steps that starts at
any step: the batches before the next multiple of ``period`` only score, then whole macro steps,
then a shorter last one — all sizes static.

Data parallel (inside ``jax.shard_map``): each device keeps the top ``k/D`` rows of its share of
the batch; the proxy's loss, gradient and batch statistics are ``pmean``-ed like the main step's.
A run selects through ``config.select`` (:mod:`speedrun.train.selection`, docs/selection.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from speedrun import optim
from speedrun.system import parallel, precision


@flax.struct.dataclass
class ProxyState:
    """The proxy net's training state (``TrainState.proxy`` when a record selects).

    Attributes:
      step: int32 scalar, proxy updates taken (``ceil(steps / period)`` after ``steps`` steps).
      params, batch_stats: the proxy's variables (float32).
      opt_state: the proxy optimizer's state; its schedule counts advance ``period`` per update
        (:func:`advance_counts`), i.e. by one per step of the run, as the source's scheduler.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def init_proxy(model, tx: optax.GradientTransformation, key: jax.Array) -> ProxyState:
    """The proxy's initial state from PRNG ``key`` (the model initialised on one ``(1, 32, 32, 3)``
    float32 image; jit-able)."""
    v = model.init(key, jnp.zeros((1, 32, 32, 3), jnp.float32), train=False)
    return ProxyState(step=jnp.zeros((), jnp.int32), params=v["params"], batch_stats=v.get("batch_stats", {}),
                      opt_state=tx.init(v["params"]))


def kept_count(batch: int, keep: float) -> int:
    """Rows kept of a batch of ``batch``: ``round(keep · batch)`` (airbench96_faster: 512 of 1024).

    Raises:
      ValueError: ``keep`` outside ``(0, 1]`` or no row kept.
    """
    k = int(round(keep * batch))
    if not 0.0 < keep <= 1.0 or k < 1:
        raise ValueError(f"config.select.keep must be in (0, 1] and keep at least one of the {batch} rows; got {keep}")
    return k


def per_example_loss(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    """``(B,)`` float32 label-smoothed cross-entropy of ``logits (B, K)`` and ``labels (B,)`` int
    (PyTorch's ``CrossEntropyLoss(label_smoothing=ε, reduction='none')``: targets
    ``(1 - ε)·onehot + ε/K``)."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def kept_rows(losses: jax.Array, k: int) -> jax.Array:
    """``(k,)`` int32: the positions of the ``k`` largest of ``losses (B,)``, ascending (the rows
    keep their batch order, as the source's ``inputs[mask]``); ``lax.top_k``."""
    return jnp.sort(jax.lax.top_k(losses, k)[1])


def advance_counts(opt_state: Any, n: int) -> Any:
    """``opt_state`` with every integer leaf named ``count`` (optax's schedule counters) plus ``n``."""
    def bump(path, leaf):
        named = getattr(path[-1], "name", None) == "count" if path else False
        return leaf + n if named and jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.integer) else leaf
    return jax.tree_util.tree_map_with_path(bump, opt_state)


def proxy_model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The proxy's model config: ``config.model`` with ``config.select.model``'s fields replacing
    its own (airbench96_faster: ``widths=(32, 64, 64)``, ``convs_per_group=2``,
    ``whiten_bias_init="zeros"``; the rest — whitening size, BN, ``width_mult`` — the main net's)."""
    c = ml_collections.ConfigDict(config.model.to_dict())
    for name, value in config.select.model.items():
        c[name] = value
    return c


def selected_optimizer(opt_config: Any, derived, kept: int):
    """``speedrun.optim.make_optimizer`` for steps that train on ``kept`` of the ``B`` drawn rows
    with the source's loss summed over those rows: the summed-loss learning rates ×``kept`` (the
    builder's ``batch_size``) and ``opt_config.weight_decay`` ×``B / kept``, so the decay per step is
    the builder's at ``B`` (airbench96_faster: its formulas use batch 1024, its loss sums 512 rows).
    The step counts are ``derived``'s. For the builders whose decay is ``weight_decay ·
    batch_size`` (airbench_sgd, airbench_muon, hiverge_muon). Returns ``(tx, lr_schedule)``."""
    c = ml_collections.ConfigDict(opt_config.to_dict())
    c.weight_decay = opt_config.weight_decay * derived.batch_size / kept
    return optim.make_optimizer(c, dataclasses.replace(derived, batch_size=kept))


def _loop(f: Callable, carry, xs, unroll):
    """``lax.scan(f, carry, xs, unroll=unroll)``, or with ``unroll=True`` a Python loop (no while
    loop: the CPU chunk programs, :mod:`speedrun.train.chunked`)."""
    if unroll is not True:
        return jax.lax.scan(f, carry, xs, unroll=unroll)
    n = len(jax.tree.leaves(xs)[0])
    outs = []
    for j in range(n):
        carry, out = f(carry, jax.tree.map(lambda a: a[j], xs))
        outs.append(out)
    return carry, jax.tree.map(lambda *a: jnp.stack(a), *outs)


def selecting_step(main_step: Callable, proxy_model, proxy_tx: optax.GradientTransformation, kept: int,
                   period: int, *, label_smoothing: float, axis_name: str | None = None,
                   proxy_detach: tuple[str, ...] = ("whiten_bias",), static_scale: float | None = None,
                   unroll: int | bool = 1) -> Callable:
    """The macro step: ``macro(state, proxy, constants, xs, ys, keys, train_proxy=True) ->
    (state, proxy, metrics)``.

    Args of the macro step: ``state`` the main :class:`~speedrun.train.state.TrainState`;
    ``proxy`` a :class:`ProxyState`; ``constants`` the whitening filters (the proxy's are the
    main net's: the source computes both from the same first 5000 images with the same patch
    size and eps); ``xs (n, B, H, W, 3)`` compute dtype and ``ys (n, B)`` int32, ``n`` consecutive
    batches (this device's share); ``keys (n, ...)`` the main step's per-step keys, or ``None``;
    ``train_proxy`` (static) whether the first batch trains the proxy (its step is a multiple of
    ``period``). Returns the main step's metrics stacked ``(n, ...)``.

    Args:
      main_step: ``step(state, constants, x, y, key) -> (state, metrics)``
        (:func:`speedrun.train.step.step_fn`, built for batches of ``kept`` rows).
      proxy_model, proxy_tx: the proxy net and its optimizer (:func:`selected_optimizer`).
      kept: rows kept per batch (:func:`kept_count` of the per-device batch).
      period: steps per proxy update (airbench96_faster: 4); the proxy's schedule counts advance by
        it per update.
      label_smoothing: of the per-example loss (the record's).
      axis_name: the data-parallel mesh axis inside ``jax.shard_map``, or ``None``.
      proxy_detach: proxy param leaves never trained (the source's ``requires_grad = False``).
      static_scale: the proxy loss's fixed float16 scale, or ``None``.
      unroll: of the scans over a macro step's batches (``True``: Python loops).
    """

    def score(ps: ProxyState, constants, x, y):
        variables = {"params": ps.params, "batch_stats": ps.batch_stats, "constants": constants}
        logits, upd = proxy_model.apply(variables, x, train=True, mutable=["batch_stats"])
        idx = kept_rows(per_example_loss(logits, y, label_smoothing), kept)
        return ps.replace(batch_stats=parallel.pmean(upd.get("batch_stats", {}), axis_name)), idx

    def train(ps: ProxyState, constants, x, y):
        def loss_fn(params):
            params = jax.tree_util.tree_map_with_path(
                lambda path, p: jax.lax.stop_gradient(p) if getattr(path[-1], "key", None) in proxy_detach else p,
                params)
            variables = {"params": params, "batch_stats": ps.batch_stats, "constants": constants}
            logits, upd = proxy_model.apply(variables, x, train=True, mutable=["batch_stats"])
            losses = per_example_loss(logits, y, label_smoothing)
            idx = kept_rows(jax.lax.stop_gradient(losses), kept)
            return parallel.pmean(jnp.mean(losses[idx]), axis_name), (idx, upd.get("batch_stats", {}))

        _, _, (_, (idx, batch_stats)), grads = precision.value_and_grad(loss_fn, ps.params, None, static_scale)
        updates, opt_state = proxy_tx.update(grads, ps.opt_state, ps.params)
        return ps.replace(step=ps.step + 1, params=optax.apply_updates(ps.params, updates),
                          batch_stats=parallel.pmean(batch_stats, axis_name),
                          opt_state=advance_counts(opt_state, period - 1)), idx

    def macro(state, proxy: ProxyState, constants, xs, ys, keys, train_proxy: bool = True):
        first = []
        if train_proxy:
            proxy, idx0 = train(proxy, constants, xs[0], ys[0])
            first, xs_s, ys_s = [idx0], xs[1:], ys[1:]
        else:
            xs_s, ys_s = xs, ys
        if len(xs_s):
            proxy, idx = _loop(lambda ps, b: score(ps, constants, *b), proxy, (xs_s, ys_s), unroll)
            idx = jnp.concatenate([i[None] for i in first] + [idx])
        else:
            idx = first[0][None]
        if kept < xs.shape[1]:
            take = jax.vmap(lambda a, i: a[i])  # (n, B, ...) -> the kept (n, k, ...)
            xs, ys = take(xs, idx), take(ys, idx)
        batches = (xs, ys) + (() if keys is None else (keys,))  # every row kept: the batch itself
        state, metrics = _loop(lambda s, b: main_step(s, constants, b[0], b[1], b[2] if len(b) > 2 else None),
                               state, batches, unroll)
        return state, proxy, metrics

    return macro


def selecting_scan(macro: Callable, period: int, state, proxy: ProxyState, constants, inputs: Any,
                   load: Callable, start: int = 0, unroll: int | bool = 1):
    """Steps ``start .. start + S - 1`` of the run with selection: ``(state, proxy, metrics (S, ...))``.

    Args:
      macro: :func:`selecting_step`'s macro step.
      period: its period.
      inputs: a pytree of ``(S, ...)`` arrays, one row per step (e.g. the batches' dataset
        indices and augmentation draws).
      load: ``load(inputs rows (n, ...)) -> (xs (n, B, ...), ys (n, B), keys (n, ...) or None)``,
        called inside the scan (each macro step loads its own ``n`` batches).
      start: the run's step index of the first step (static): the proxy trains at the steps that
        are multiples of ``period``.
      unroll: of the scan over macro steps (``True``: a Python loop).
    """
    S = len(jax.tree.leaves(inputs)[0])
    head = min((-start) % period, S)
    m, tail = (S - head) // period, (S - head) % period
    rows = lambda a, b: jax.tree.map(lambda x: x[a:b], inputs)  # noqa: E731
    out = []
    if head:
        state, proxy, met = macro(state, proxy, constants, *load(rows(0, head)), train_proxy=False)
        out.append(met)
    if m:
        full = jax.tree.map(lambda x: x.reshape((m, period) + x.shape[1:]), rows(head, head + m * period))

        def body(carry, chunk):
            s, ps = carry
            s, ps, met = macro(s, ps, constants, *load(chunk))
            return (s, ps), met

        (state, proxy), met = _loop(body, (state, proxy), full, unroll)
        out.append(jax.tree.map(lambda x: x.reshape((m * period,) + x.shape[2:]), met))
    if tail:
        state, proxy, met = macro(state, proxy, constants, *load(rows(S - tail, S)))
        out.append(met)
    return state, proxy, jax.tree.map(lambda *a: jnp.concatenate(a), *out)
