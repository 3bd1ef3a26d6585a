"""Training: the jitted epoch (one ``lax.scan`` over batches) and the timed run of a record.

The host only loops over epochs. One compiled call per epoch shuffles with a key, gathers each
batch from the device-resident uint8 training set, normalises and augments it on device, and runs
forward, backward, the optax update and the EMA update (Page, "How to train your ResNet" parts 1–8;
airbench's single-graph epoch). Every jitted function is compiled ahead of time
(``jit(...).lower(...).compile()``) before the clock starts; the clock covers what Page's and
airbench's timers cover — the whitening filters, the training epochs and the final TTA
evaluation — and stops after ``block_until_ready``; per-epoch evaluation is paused out of it.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from speedrun import augment, data, ema as ema_lib, evaluate as eval_lib, optim, reporting, whitening
from speedrun import lookahead as lookahead_lib
from speedrun import flops, parallel, precision
from speedrun.models import get_model


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree.

    Attributes:
      step: int32 scalar, optimizer steps taken.
      params: model params (float32).
      batch_stats: BN running statistics (float32).
      opt_state: optax state.
      ema: ``{"params", "batch_stats"}`` EMA copy (the evaluated model), or the raw ones' copy when
        the EMA is disabled.
      loss_scale: ``flax.training.dynamic_scale.DynamicScale`` (float32 ``scale``, int32
        ``fin_steps``) under the float16 policy, else ``None`` (see :mod:`speedrun.precision`).
      run_key: PRNG key fixed for the whole run (drawn from the init key), for random choices made
        once per run, such as airbench's fixed half of flipped images
        (:func:`speedrun.augment.fixed_flip_mask`); ``None`` when built without one.

    With lookahead (``config.lookahead.enabled``, :mod:`speedrun.lookahead`) ``ema`` holds the
    lookahead average, which is written back into ``params``/``batch_stats``.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema: Any
    loss_scale: Any = None
    run_key: Any = None


def normalizer(mean=data.CIFAR10_MEAN, std=data.CIFAR10_STD) -> Callable[[jax.Array], jax.Array]:
    """``(B, H, W, 3) uint8 -> (B, H, W, 3) float32`` per-channel ``(x - mean) / std`` (pixel units;
    Page's cifar10-fast ``normalise``), run on device."""
    mean = jnp.asarray(mean, jnp.float32)
    inv_std = 1.0 / jnp.asarray(std, jnp.float32)
    return lambda x: (x.astype(jnp.float32) - mean) * inv_std


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    """Mean cross-entropy with label smoothing, float32 scalar.

    Targets are ``(1 - ε)·onehot + ε/K`` (``optax.smooth_labels``), which equals Page's
    ``label_smoothing_loss(ε)``: ``(1 - ε)·NLL + ε·mean_k(-log p_k)``.

    Args:
      logits: ``(B, K)`` float.
      labels: ``(B,)`` int.
      label_smoothing: ε in [0, 1).
    """
    k = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, k), label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()


def whitening_images_fn(config: ml_collections.ConfigDict, normalize) -> Callable[[jax.Array], dict]:
    """``x_u8 (n, 32, 32, 3) uint8 -> {"whiten_kernel": (k, k, 3, k*k*3) float32}``: the model's
    ``constants`` from the first ``config.whitening.num_images`` training images;
    ``num_images = 0`` means a net without whitening and gives ``{}`` (the model ignores it)."""
    if config.whitening.num_images == 0:  # a net without whitening (ResNet-20): no constants
        return lambda x: {}
    k, eps = config.model.whiten_patch_size, config.whitening.eps
    return lambda x: {"whiten_kernel": whitening.whitening_kernel(normalize(x), k, eps)}


#: fold_in constant deriving ``TrainState.run_key`` from the init key
RUN_KEY_FOLD = 2**31 - 2


def init_state(model, tx: optax.GradientTransformation, key: jax.Array,
               policy: precision.Policy = precision.POLICIES["float32"]) -> TrainState:
    """Initial :class:`TrainState` for ``model`` from PRNG ``key`` (jit-able: the seed is data,
    so a new seed does not recompile). ``policy`` gives the initial loss scale (float16: a
    ``DynamicScale``; otherwise none); params are float32 under every policy."""
    variables = model.init(key, jnp.zeros((1, 32, 32, 3), jnp.float32), train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
        opt_state=tx.init(params),
        # a copy, not an alias: the state is donated to the epoch, and a buffer can't be donated twice
        ema=jax.tree.map(jnp.copy, {"params": params, "batch_stats": batch_stats}),
        loss_scale=precision.init_loss_scale(policy),
        run_key=jax.random.fold_in(key, RUN_KEY_FOLD),
    )


#: fold_in constant deriving a step's ``"dropout"`` key from its batch key (never an example position)
DROPOUT_FOLD = 2**31 - 1


def make_train_step(model, tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
                    axis_name: str | None = None, steps_per_epoch: int | None = None,
                    total_steps: int | None = None):
    """``step(state, constants, x, y, key=None) -> (state, {"loss", "acc"})`` on one normalised,
    augmented batch ``x (B, 32, 32, 3) float32``, ``y (B,) int32``: forward in train mode, mean
    label-smoothed cross-entropy, gradient, optax update, then the EMA update.

    ``key``: the step's ``"dropout"`` PRNG stream (``model.apply(..., rngs={"dropout": key})``, for
    stochastic depth); the epoch passes ``fold_in(batch key, DROPOUT_FOLD)``, the same on every
    replica, so a per-batch draw is shared by the whole global batch. Nets without dropout ignore it.

    ``axis_name``: run as one replica of a data-parallel step inside ``jax.shard_map`` (see
    :mod:`speedrun.parallel`): ``x, y`` are this device's share of the global batch; the loss is
    ``lax.pmean``-ed over the axis before differentiation, so the gradient is that of the
    global-batch mean loss (all-reduced by shard_map's transpose), and batch-norm running statistics
    and the metrics are ``pmean``-ed, so every replica applies the same update. ``None``: one device,
    no collectives.

    Float16 (``state.loss_scale`` is a ``DynamicScale``): the loss is scaled, a step whose
    gradients are not all finite is skipped (the whole state but ``loss_scale`` stays as it was, the
    step counter included) and the scale halved; the metrics then also hold ``finite`` (bool) and
    ``loss_scale`` (float32, after the step).

    Lookahead (``config.lookahead.enabled``; airbench94, :mod:`speedrun.lookahead`) replaces the
    EMA: after the optimizer step, :func:`speedrun.lookahead.update` with ``count = step + 1``,
    ``steps_per_epoch`` and ``total_steps`` (both required then) mixes the net into the average held
    in ``state.ema`` and writes it back into the net on update steps.

    Loss: the mean over the batch. Recipes defined on a *summed* loss (Page, airbench) are
    expressed with the mean loss and a learning rate ``B`` times larger (see :mod:`speedrun.optim`),
    the same update.

    Raises:
      ValueError: both the EMA and lookahead enabled, or lookahead without ``steps_per_epoch`` and
        ``total_steps``.
    """
    ls = config.label_smoothing
    use_ema = config.ema.enabled
    la = config.get("lookahead")
    use_lookahead = la is not None and la.enabled
    if use_lookahead and use_ema:
        raise ValueError("config.ema.enabled and config.lookahead.enabled are exclusive (both write the "
                         "evaluated model); disable one, e.g. --config.ema.enabled=False")
    if use_lookahead and (steps_per_epoch is None or total_steps is None):
        raise ValueError("lookahead needs steps_per_epoch and total_steps (make_train_epoch passes them)")

    def step(state: TrainState, constants, x, y, key=None):
        rngs = {} if key is None else {"dropout": key}  # stochastic depth; unused by other nets

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats, "constants": constants}
            logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
            loss = parallel.pmean(cross_entropy(logits, y, ls), axis_name)  # global-batch mean
            return loss, (logits, updates["batch_stats"])

        loss_scale, finite, (loss, (logits, batch_stats)), grads = precision.value_and_grad(
            loss_fn, state.params, state.loss_scale)
        batch_stats = parallel.pmean(batch_stats, axis_name)  # identical running stats on replicas
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        current = {"params": params, "batch_stats": batch_stats}
        if use_ema:
            new_ema = ema_lib.ema_update(state.ema, current, state.step, config.ema.momentum, config.ema.every)
        elif use_lookahead:
            new_ema, current = lookahead_lib.update(
                state.ema, current, state.step + 1, steps_per_epoch, total_steps, la.every,
                la.decay_base, la.decay_pow, la.start_epoch)
            params, batch_stats = current["params"], current["batch_stats"]
        else:
            new_ema = current
        new_state = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                               opt_state=opt_state, ema=new_ema, run_key=state.run_key)
        acc = parallel.pmean(jnp.mean(logits.argmax(-1) == y), axis_name)
        if loss_scale is None:
            return new_state, {"loss": loss, "acc": acc}
        new_state = precision.keep_if_finite(finite, new_state.replace(loss_scale=loss_scale),
                                             state.replace(loss_scale=loss_scale))
        return new_state, {"loss": loss, "acc": acc, "finite": finite, "loss_scale": loss_scale.scale}

    return step


def scan_unroll(setting: int, steps_per_epoch: int, backend: str | None = None) -> int:
    """How many steps of the epoch's ``lax.scan`` to unroll.

    ``setting > 0`` is used as given. ``0`` means automatic: 1 (a real loop) on GPU/TPU, and the
    whole epoch on the CPU backend, where XLA runs the convolutions of a while-loop body far slower
    than the same ops outside one (measured here with jax 0.10.2 on 2 cores: 2 ResNet-9 steps at
    width 0.25 took 213 s in a loop, 9.8 s unrolled, 3.1 s for one step alone).
    """
    if setting > 0:
        return setting
    backend = backend or jax.default_backend()
    return steps_per_epoch if backend == "cpu" else 1


def make_train_epoch(model, tx, config: ml_collections.ConfigDict, steps_per_epoch: int, normalize,
                     mesh: jax.sharding.Mesh | None = None, n_train: int | None = None):
    """``epoch(state, constants, x_train, y_train, key, epoch) -> (state, {"loss", "acc"})``,
    data-parallel over ``mesh``: a ``jax.shard_map`` (jit it) whose replicas each run
    :func:`make_train_step` on their share of every global batch (see :mod:`speedrun.parallel`).

    Args:
      model, tx, config, normalize: the record's model, optimizer, config and uint8 → float
        normaliser.
      steps_per_epoch: batches per epoch.
      mesh: 1-D mesh with axis ``data`` (default :func:`speedrun.parallel.make_mesh`: all devices).
      n_train: number of real training images (default: all rows of ``x_train``); rows past it are
        padding (:func:`speedrun.parallel.pad_rows`) and are never drawn.

    Args of the returned function (shardings on ``mesh``):
      state: :class:`TrainState`, replicated.
      constants: the model's ``constants`` collection (whitening filters), replicated.
      x_train: ``(N, 32, 32, 3) uint8``, rows sharded along ``data`` (``N`` a multiple of the
        device count); y_train: ``(N,) int32``, likewise.
      key: PRNG key of this epoch, replicated.
      epoch: int32 scalar, the 0-based epoch index (traced, so per-epoch behaviour such as
        alternating flips never recompiles), replicated.

    Shuffles ``range(n_train)`` with ``key`` (the same permutation on every device), keeps the
    first ``steps_per_epoch * batch_size`` indices (the last partial batch is dropped), and scans
    the step over the batches; each device gathers its ``batch_size / D`` examples of the global
    batch, normalises them and augments each with its own key (its position in the global batch
    folded in, so neither replicas nor device counts share or change draws). Returns the replicated
    state and the epoch's metrics (float32 scalars, :func:`speedrun.precision.summarize_steps`:
    mean training loss and accuracy; under float16 also ``skipped`` and ``loss_scale``).

    airbench's pieces (``records/airbench94*.py``):

    - ``config.augment.alternating_flip``: instead of random flips, image ``i`` is mirrored in epoch
      ``e`` iff ``fixed_flip_mask(state.run_key)[i] XOR (e odd)``
      (:func:`speedrun.augment.alternating_flip`), after the crop.
    - ``config.last_epoch_fraction`` ``f < 1``: the run stops after
      :func:`speedrun.optim.total_train_steps` ``(epochs, steps_per_epoch, f)`` steps (airbench94's 9.9
      epochs: ``epochs=10, f=0.9``). The last epoch still scans ``steps_per_epoch`` batches, but a
      step with ``state.step`` at the limit is skipped (``lax.cond``: state unchanged, no
      compute on GPU) and left out of the epoch's metrics.
    - ``config.lookahead.enabled``: see :func:`make_train_step`; at the end of every epoch the net
      is set to the lookahead average (airbench's ``update(net, decay=1.0)``).

    Raises:
      ValueError: a batch size the device count or ghost batch size does not divide
        (:func:`speedrun.parallel.per_device_batch`); random and alternating flips both on;
        a bad ``last_epoch_fraction`` (:func:`speedrun.optim.total_train_steps`).
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    axis = parallel.DATA_AXIS
    n_dev = mesh.shape[axis]
    total_steps = optim.total_train_steps(config.epochs, steps_per_epoch, config.get("last_epoch_fraction", 1.0))
    step_limited = total_steps < config.epochs * steps_per_epoch
    step = make_train_step(model, tx, config, axis_name=axis, steps_per_epoch=steps_per_epoch,
                           total_steps=total_steps)
    la = config.get("lookahead")
    use_lookahead = la is not None and la.enabled
    b = config.batch_size
    b_local = parallel.per_device_batch(b, n_dev, config.model.get("ghost_batch_size"))
    unroll = scan_unroll(config.scan_unroll, steps_per_epoch)
    aug = config.augment
    alt_flip = aug.get("alternating_flip", False)
    if alt_flip and aug.flip:
        raise ValueError("config.augment.flip (random flips) and config.augment.alternating_flip are "
                         "exclusive; set --config.augment.flip=False for airbench's alternating flip")

    def augment_one(image, key):  # one (H, W, C) image with its own key
        return augment.augment_batch(image[None], key, aug.crop_padding, aug.flip, aug.cutout_size,
                                     aug.get("crop_mode", "reflect"))[0]

    def epoch(state, constants, x_train, y_train, key, epoch):  # noqa: ARG001 (epoch: see docstring)
        n = n_train if n_train is not None else x_train.shape[0] * n_dev  # x_train: this device's rows
        k_perm, k_aug = jax.random.split(key)
        idx = jax.random.permutation(k_perm, n)[: steps_per_epoch * b]
        idx = idx.reshape(steps_per_epoch, b)
        keys = jax.random.split(k_aug, steps_per_epoch)
        if alt_flip:
            base_flip = augment.fixed_flip_mask(state.run_key, n)  # the same in every epoch of the run

        def body(state, inputs):
            batch_idx, k = inputs  # (B,) dataset indices of the global batch; the step's key
            # this device's share: images, labels and their dataset indices i, (B/D,) each
            x_u8, y, i = parallel.gather_batch((x_train, y_train), batch_idx, axis)
            x = jax.vmap(augment_one)(normalize(x_u8), parallel.example_keys(k, b_local, axis))
            if alt_flip:
                x = augment.alternating_flip(x, base_flip[i], epoch)
            args = (constants, x, y, jax.random.fold_in(k, DROPOUT_FOLD))
            if not step_limited:
                return step(state, *args)

            def skip(state, *_):  # past the run's last step: nothing changes
                shapes = jax.eval_shape(step, state, *args)[1]
                zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
                if "loss_scale" in zeros:
                    zeros["loss_scale"] = state.loss_scale.scale
                return state, zeros

            active = state.step < total_steps
            state, metrics = jax.lax.cond(active, step, skip, state, *args)
            return state, {**metrics, "active": active}

        state, metrics = jax.lax.scan(body, state, (idx, keys), unroll=unroll)
        if use_lookahead:  # the net becomes the average at the end of every epoch
            state = state.replace(params=jax.tree.map(jnp.copy, state.ema["params"]),
                                  batch_stats=jax.tree.map(jnp.copy, state.ema["batch_stats"]))
        return state, _summarize_active(metrics)

    rep, rows = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec(axis)
    return jax.shard_map(epoch, mesh=mesh, in_specs=(rep, rep, rows, rows, rep, rep),
                         out_specs=(rep, rep))


def _summarize_active(metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """:func:`speedrun.precision.summarize_steps` over the steps marked ``metrics["active"]`` (all
    steps when there is no such entry); skipped-past-the-end steps do not count as float16 skips."""
    metrics = dict(metrics)
    active = metrics.pop("active", None)
    if active is None:
        return precision.summarize_steps(metrics)
    if "finite" in metrics:
        metrics["finite"] = metrics["finite"] & active
        out = precision.summarize_steps(metrics)
        out["skipped"] = out["skipped"] - jnp.sum(~active).astype(jnp.float32)
        return out
    w = active.astype(jnp.float32)
    return jax.tree.map(lambda m: jnp.sum(jnp.where(active, m, 0.0)) / jnp.sum(w), metrics)


def _compile(fn, *args, donate=(), in_shardings=None, out_shardings=None):
    t0 = time.perf_counter()
    kw = {k: v for k, v in (("in_shardings", in_shardings), ("out_shardings", out_shardings)) if v is not None}
    compiled = jax.jit(fn, donate_argnums=donate, **kw).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def validate_config(config: ml_collections.ConfigDict, n_train: int, num_devices: int = 1) -> int:
    """Check a record config against the data and the device count; return the number of steps
    per epoch.

    Raises:
      ValueError: non-positive epochs or batch size, a batch larger than the training set, an
        unknown precision (:func:`speedrun.precision.resolve`), or a batch size / eval batch size
        that ``num_devices`` (or, per device, the ghost batch size) does not divide
        (:func:`speedrun.parallel.per_device_batch`).
    """
    if config.epochs <= 0 or config.batch_size <= 0:
        raise ValueError(f"epochs ({config.epochs}) and batch_size ({config.batch_size}) must be positive")
    steps = n_train // config.batch_size
    if steps == 0:
        raise ValueError(
            f"batch_size={config.batch_size} exceeds the {n_train} training images (the last partial "
            "batch is dropped, so no step would run); lower --config.batch_size"
        )
    precision.resolve(config.precision)
    parallel.per_device_batch(config.batch_size, num_devices, config.model.get("ghost_batch_size"))
    parallel.per_device_batch(config.eval_batch_size, num_devices, name="eval_batch_size")
    return steps


TABLE_COLUMNS = [("epoch", "d"), ("train_loss", ".4f"), ("train_acc", ".4f"), ("test_acc", ".4f"),
                 ("tta_acc", ".4f"), ("elapsed_s", ".2f")]


class Experiment:
    """A record compiled once for its data shapes; :meth:`run` trains it for any seed.

    Construction loads the data (or takes ``arrays``), puts it on the devices once as uint8
    (training rows sharded along the mesh axis ``data``, padded to a multiple of the device count;
    whitening images replicated; test batches sharded along their batch dimension), builds model
    and optimizer with the precision policy, and compiles init, whitening, epoch and evaluation
    ahead of time (``compile_time_s``, seconds). :meth:`run` reuses the executables, so a new seed
    does not recompile. State, constants and metrics are replicated on every device.

    Args:
      config: a record config (see ``records/``).
      arrays: optional ``(x_train, y_train, x_test, y_test)`` as from
        :func:`speedrun.data.load_cifar10`; default: load ``config.data.path``. In a multi-host run
        every process passes (or loads) the same arrays and transfers only its devices' rows.
      mesh: the 1-D ``data`` mesh to train on (default :func:`speedrun.parallel.make_mesh`: every
        device of every process).

    Attributes (besides the compiled functions): ``mesh``, ``num_devices``, ``policy`` (the resolved
    :class:`speedrun.precision.Policy`).

    Raises:
      ValueError: see :func:`validate_config`; data.DataError from the loader.
    """

    def __init__(self, config: ml_collections.ConfigDict, arrays: tuple | None = None,
                 mesh: jax.sharding.Mesh | None = None):
        self.config = config
        self.mesh = parallel.make_mesh() if mesh is None else mesh
        self.num_devices = self.mesh.size
        x_train, y_train, x_test, y_test = arrays if arrays is not None else data.load_cifar10(config.data.path)
        self.steps_per_epoch = validate_config(config, len(x_train), self.num_devices)
        self.dataset = data.dataset_name(x_train, x_test)
        self.n_train, self.n_test = len(x_train), len(x_test)

        self.policy = precision.resolve(config.precision)
        self.model = get_model(config.model, self.policy.compute_dtype)
        self.tx, self.lr_schedule = optim.make_optimizer(config.optimizer, self.steps_per_epoch)
        normalize = normalizer(config.data.get("mean", data.CIFAR10_MEAN), config.data.get("std", data.CIFAR10_STD))

        # The data goes to the devices once, as uint8; normalisation happens on device.
        rep, rows = parallel.replicated(self.mesh), parallel.sharded(self.mesh)
        self.x_train = parallel.put(parallel.pad_rows(x_train, self.num_devices), rows)
        self.y_train = parallel.put(parallel.pad_rows(y_train, self.num_devices), rows)
        self.x_whiten = parallel.put(x_train[: config.whitening.num_images], rep)
        test_sharding = parallel.sharded(self.mesh, axis=1)
        self.test_batches = [parallel.put(a, test_sharding) for a in
                             eval_lib.batch_test_set(x_test, y_test, config.eval_batch_size)]

        init_fn = lambda key: init_state(self.model, self.tx, key, self.policy)  # noqa: E731
        whiten_fn = whitening_images_fn(config, normalize)
        epoch_fn = make_train_epoch(self.model, self.tx, config, self.steps_per_epoch, normalize,
                                    mesh=self.mesh, n_train=self.n_train)
        evaluate_fn = eval_lib.make_evaluate(self.model.apply, normalize, config.get("tta_level", 1))

        key = parallel.replicate(jax.random.key(0), self.mesh)
        state_shape = jax.eval_shape(init_fn, key)
        consts_shape = jax.eval_shape(whiten_fn, self.x_whiten)
        epoch_idx = parallel.replicate(np.int32(0), self.mesh)
        self.init, t_i = _compile(init_fn, key, in_shardings=rep, out_shardings=rep)
        self.whiten, t_w = _compile(whiten_fn, self.x_whiten, in_shardings=rep, out_shardings=rep)
        self.epoch, t_e = _compile(epoch_fn, state_shape, consts_shape, self.x_train, self.y_train,
                                   key, epoch_idx, donate=(0,),
                                   in_shardings=(rep, rep, rows, rows, rep, rep), out_shardings=rep)
        eval_vars = {**state_shape.ema, "constants": consts_shape}
        self.evaluate, t_v = _compile(evaluate_fn, eval_vars, *self.test_batches,
                                      in_shardings=(rep,) + (test_sharding,) * 3, out_shardings=rep)
        self.compile_times = {"init": t_i, "whitening": t_w, "epoch": t_e, "eval": t_v}
        self.compile_time_s = sum(self.compile_times.values())
        # forward FLOPs per image (2 x conv/matmul multiply-adds, inference mode; speedrun.flops)
        self.flops_per_image_forward = flops.forward_flops_per_image(self.model)

    def eval_variables(self, state: TrainState, constants: dict) -> dict:
        """The variables that are evaluated: the EMA params and batch stats, and the constants."""
        return {**state.ema, "constants": constants}

    def run(self, seed: int, log: reporting.RunLog | None = None, per_epoch_eval: bool = True
            ) -> dict[str, Any]:
        """Train once from ``seed``; return the result dict (see :func:`train_and_evaluate`).

        Args:
          seed: PRNG seed of init, shuffling and augmentation.
          log: where the per-epoch table goes (``None``: nowhere).
          per_epoch_eval: evaluate after every epoch, outside the clock (for the table).

        Raises:
          FloatingPointError: the training loss became NaN or infinite (the message names the
            epoch and what to change).
        """
        config = self.config
        key_init, key_train = jax.random.split(jax.random.key(seed))
        state = self.init(parallel.replicate(key_init, self.mesh))
        # replicated on every device of every process (host values: the same on every process)
        epoch_keys = parallel.replicate([jax.random.fold_in(key_train, e) for e in range(config.epochs)], self.mesh)
        epoch_ids = parallel.replicate([np.int32(e) for e in range(config.epochs)], self.mesh)
        jax.block_until_ready((state, epoch_keys, epoch_ids))
        scaled = self.policy.loss_scaling  # float16: log the loss scale and the skipped steps
        columns = TABLE_COLUMNS + ([("loss_scale", ".0f"), ("skipped", ".0f")] if scaled else [])
        table = reporting.EpochTable(log, columns) if log is not None else None

        timed, final, history = 0.0, None, []
        t0 = time.perf_counter()
        constants = self.whiten(self.x_whiten)
        for e in range(config.epochs):
            state, metrics = self.epoch(state, constants, self.x_train, self.y_train, epoch_keys[e], epoch_ids[e])
            last = e == config.epochs - 1
            if last:  # the final TTA evaluation is part of the timed run
                final = self.evaluate(self.eval_variables(state, constants), *self.test_batches)
            jax.block_until_ready((state, metrics, final))
            timed += time.perf_counter() - t0
            loss, acc = float(metrics["loss"]), float(metrics["acc"])
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss} in epoch {e + 1}; lower the learning rate "
                    "(config.optimizer) or use float32 (--config.precision=float32)"
                )
            row = {"epoch": e + 1, "train_loss": loss, "train_acc": acc, "elapsed_s": timed}
            if scaled:
                row.update(loss_scale=float(metrics["loss_scale"]), skipped=float(metrics["skipped"]))
            if last:
                row.update(test_acc=float(final["acc"]), tta_acc=float(final["tta_acc"]))
            elif per_epoch_eval:  # untimed
                ev = self.evaluate(self.eval_variables(state, constants), *self.test_batches)
                row.update(test_acc=float(ev["acc"]))
            history.append(row)
            if table is not None:
                table.row(**row)
            t0 = time.perf_counter()

        steps = optim.total_train_steps(config.epochs, self.steps_per_epoch, config.get("last_epoch_fraction", 1.0))
        images = steps * config.batch_size
        return {
            "record": config.name,
            "dataset": self.dataset,
            "train_images": int(self.n_train),
            "test_images": int(self.n_test),
            "epochs": int(config.epochs),
            "batch_size": int(config.batch_size),
            "seed": int(seed),
            "acc": round(float(final["acc"]), 5),
            "tta_acc": round(float(final["tta_acc"]), 5),
            "train_time_s": round(timed, 3),
            "compile_time_s": round(self.compile_time_s, 3),
            "images_per_s": round(images / timed, 1),
            "flops_per_image_forward": int(self.flops_per_image_forward),
            "train_flops": flops.training_flops(self.flops_per_image_forward, images),  # 3 x fwd x images
            "steps": int(steps),
            "final_train_loss": round(history[-1]["train_loss"], 5),
            "precision": self.policy.name,
            **({"loss_scale": history[-1]["loss_scale"],
                "skipped_steps": int(sum(r["skipped"] for r in history))} if scaled else {}),
            "devices": int(self.num_devices),
            "processes": int(jax.process_count()),
            "width_mult": float(config.model.width_mult),
            "device": reporting.device_description(),
            "jax_version": jax.__version__,
            "history": history,
        }


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | None = "logs") -> dict[str, Any]:
    """Train the record ``config`` once (seed ``config.seed``) and return its result dict.

    Prints, and writes to ``{workdir}/{record}_{UTC timestamp}.log`` after the config, versions and
    device: the compile time, a per-epoch table (epoch, train loss and accuracy, test accuracy of
    the evaluated EMA model, elapsed timed seconds) and a final line of JSON.

    Args:
      config: a record config (see ``records/``).
      workdir: folder for the log file; ``None`` writes no file.

    Returns:
      The result dict: record, dataset ("cifar10" or "cifar10-subset"), train_images, test_images,
      epochs, batch_size, seed, acc and tta_acc (fractions in [0, 1] of the test set, EMA model,
      float32 logits), train_time_s (seconds: whitening + training epochs + final TTA eval, wall
      clock after ``block_until_ready``, per-epoch evaluation excluded), compile_time_s (seconds,
      excluded from train_time_s), images_per_s (training images processed per timed second),
      flops_per_image_forward and train_flops (FLOPs: 2 x conv/matmul multiply-adds of one forward
      image, and 3 x that x training images; :mod:`speedrun.flops`),
      steps, final_train_loss, precision (the resolved policy name; under float16 also loss_scale,
      the final scale, and skipped_steps), devices and processes (of the data-parallel mesh),
      width_mult, device, jax_version, log (the log file); ``history`` (the table rows) is returned
      but not printed.

    Raises:
      ValueError, data.DataError: see :class:`Experiment`.
      FloatingPointError: the training loss became NaN or infinite.
    """
    log = reporting.RunLog(workdir, config.name)
    log.header(config)
    exp = Experiment(config)
    log.write(f"# data {exp.dataset}: {exp.n_train} train, {exp.n_test} test images; "
              f"{exp.steps_per_epoch} steps of {config.batch_size} per epoch")
    log.write(f"# parallel: {exp.num_devices} devices on mesh axis '{parallel.DATA_AXIS}' "
              f"({config.batch_size // exp.num_devices} examples per device per step), "
              f"{jax.process_count()} processes; precision {exp.policy.name}")
    times = ", ".join(f"{k} {v:.2f}" for k, v in exp.compile_times.items())
    log.write(f"# compile {exp.compile_time_s:.2f} s ({times}); excluded from train_time_s")
    try:
        result = exp.run(config.seed, log)
    except FloatingPointError as err:
        log.write(f"# error: {err}")
        raise
    result["log"] = str(log.path) if log.path else None
    log.write(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return result
