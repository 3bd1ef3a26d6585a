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
from speedrun.models import get_model

PRECISIONS = {"float32": jnp.float32}


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
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema: Any


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
    ``constants`` from the first ``config.whitening.num_images`` training images."""
    k, eps = config.model.whiten_patch_size, config.whitening.eps
    return lambda x: {"whiten_kernel": whitening.whitening_kernel(normalize(x), k, eps)}


def init_state(model, tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """Initial :class:`TrainState` for ``model`` from PRNG ``key`` (jit-able: the seed is data,
    so a new seed does not recompile)."""
    variables = model.init(key, jnp.zeros((1, 32, 32, 3), jnp.float32), train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
        opt_state=tx.init(params),
        # a copy, not an alias: the state is donated to the epoch, and a buffer can't be donated twice
        ema=jax.tree.map(jnp.copy, {"params": params, "batch_stats": batch_stats}),
    )


def make_train_step(model, tx: optax.GradientTransformation, config: ml_collections.ConfigDict):
    """``step(state, constants, x, y) -> (state, {"loss", "acc"})`` on one normalised, augmented
    batch ``x (B, 32, 32, 3) float32``, ``y (B,) int32``: forward in train mode, mean
    label-smoothed cross-entropy, gradient, optax update, then the EMA update."""
    ls = config.label_smoothing
    use_ema = config.ema.enabled

    def step(state: TrainState, constants, x, y):
        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats, "constants": constants}
            logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
            return cross_entropy(logits, y, ls), (logits, updates["batch_stats"])

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        current = {"params": params, "batch_stats": batch_stats}
        if use_ema:
            new_ema = ema_lib.ema_update(state.ema, current, state.step, config.ema.momentum, config.ema.every)
        else:
            new_ema = current
        new_state = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                               opt_state=opt_state, ema=new_ema)
        acc = jnp.mean(logits.argmax(-1) == y)
        return new_state, {"loss": loss, "acc": acc}

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


def make_train_epoch(model, tx, config: ml_collections.ConfigDict, steps_per_epoch: int, normalize):
    """``epoch(state, constants, x_train, y_train, key, epoch) -> (state, {"loss", "acc"})``.

    Args of the returned function:
      state: :class:`TrainState`.
      constants: the model's ``constants`` collection (whitening filters).
      x_train: ``(N, 32, 32, 3) uint8`` on device; y_train: ``(N,) int32``.
      key: PRNG key of this epoch.
      epoch: int32 scalar, the 0-based epoch index (traced, so per-epoch behaviour such as
        alternating flips never recompiles).

    Shuffles with ``key``, keeps the first ``steps_per_epoch * batch_size`` indices (the last
    partial batch is dropped), and scans :func:`make_train_step` over the batches, each normalised
    and augmented on device. Returns the epoch's mean training loss and accuracy (float32).
    """
    step = make_train_step(model, tx, config)
    b = config.batch_size
    unroll = scan_unroll(config.scan_unroll, steps_per_epoch)
    aug = config.augment

    def epoch(state, constants, x_train, y_train, key, epoch):  # noqa: ARG001 (epoch: see docstring)
        k_perm, k_aug = jax.random.split(key)
        idx = jax.random.permutation(k_perm, x_train.shape[0])[: steps_per_epoch * b]
        idx = idx.reshape(steps_per_epoch, b)
        keys = jax.random.split(k_aug, steps_per_epoch)

        def body(state, inputs):
            i, k = inputs
            x = augment.augment_batch(normalize(x_train[i]), k, aug.crop_padding, aug.flip, aug.cutout_size)
            return step(state, constants, x, y_train[i])

        state, metrics = jax.lax.scan(body, state, (idx, keys), unroll=unroll)
        return state, jax.tree.map(jnp.mean, metrics)

    return epoch


def _compile(fn, *args, donate=()):
    t0 = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def validate_config(config: ml_collections.ConfigDict, n_train: int) -> int:
    """Check a record config against the data; return the number of steps per epoch.

    Raises:
      ValueError: non-positive epochs or batch size, a batch larger than the training set, or an
        unknown precision.
    """
    if config.epochs <= 0 or config.batch_size <= 0:
        raise ValueError(f"epochs ({config.epochs}) and batch_size ({config.batch_size}) must be positive")
    steps = n_train // config.batch_size
    if steps == 0:
        raise ValueError(
            f"batch_size={config.batch_size} exceeds the {n_train} training images (the last partial "
            "batch is dropped, so no step would run); lower --config.batch_size"
        )
    if config.precision not in PRECISIONS:
        raise ValueError(f"unknown precision {config.precision!r}; known: {sorted(PRECISIONS)}")
    return steps


TABLE_COLUMNS = [("epoch", "d"), ("train_loss", ".4f"), ("train_acc", ".4f"), ("test_acc", ".4f"),
                 ("tta_acc", ".4f"), ("elapsed_s", ".2f")]


class Experiment:
    """A record compiled once for its data shapes; :meth:`run` trains it for any seed.

    Construction loads the data (or takes ``arrays``), puts it on the device once as uint8,
    builds model and optimizer, and compiles init, whitening, epoch and evaluation ahead of time
    (``compile_time_s``, seconds). :meth:`run` reuses the executables, so a new seed does not
    recompile.

    Args:
      config: a record config (see ``records/``).
      arrays: optional ``(x_train, y_train, x_test, y_test)`` as from
        :func:`speedrun.data.load_cifar10`; default: load ``config.data.path``.

    Raises:
      ValueError: see :func:`validate_config`; data.DataError from the loader.
    """

    def __init__(self, config: ml_collections.ConfigDict, arrays: tuple | None = None):
        self.config = config
        x_train, y_train, x_test, y_test = arrays if arrays is not None else data.load_cifar10(config.data.path)
        self.steps_per_epoch = validate_config(config, len(x_train))
        self.dataset = data.dataset_name(x_train, x_test)
        self.n_train, self.n_test = len(x_train), len(x_test)

        self.model = get_model(config.model, PRECISIONS[config.precision])
        self.tx, self.lr_schedule = optim.make_optimizer(config.optimizer, self.steps_per_epoch)
        normalize = normalizer()

        # The data goes to the device once, as uint8; normalisation happens on device.
        self.x_train, self.y_train = jax.device_put(x_train), jax.device_put(y_train)
        self.x_whiten = self.x_train[: config.whitening.num_images]
        self.test_batches = [jax.device_put(a) for a in
                             eval_lib.batch_test_set(x_test, y_test, config.eval_batch_size)]

        init_fn = lambda key: init_state(self.model, self.tx, key)  # noqa: E731
        whiten_fn = whitening_images_fn(config, normalize)
        epoch_fn = make_train_epoch(self.model, self.tx, config, self.steps_per_epoch, normalize)
        evaluate_fn = eval_lib.make_evaluate(self.model.apply, normalize)

        key = jax.random.key(0)
        state_shape = jax.eval_shape(init_fn, key)
        consts_shape = jax.eval_shape(whiten_fn, self.x_whiten)
        epoch_idx = jnp.zeros((), jnp.int32)
        self.init, t_i = _compile(init_fn, key)
        self.whiten, t_w = _compile(whiten_fn, self.x_whiten)
        self.epoch, t_e = _compile(epoch_fn, state_shape, consts_shape, self.x_train, self.y_train,
                                   key, epoch_idx, donate=(0,))
        eval_vars = {**state_shape.ema, "constants": consts_shape}
        self.evaluate, t_v = _compile(evaluate_fn, eval_vars, *self.test_batches)
        self.compile_times = {"init": t_i, "whitening": t_w, "epoch": t_e, "eval": t_v}
        self.compile_time_s = sum(self.compile_times.values())

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
        state = self.init(key_init)
        epoch_keys = [jax.random.fold_in(key_train, e) for e in range(config.epochs)]
        epoch_ids = [jnp.asarray(e, jnp.int32) for e in range(config.epochs)]
        jax.block_until_ready((state, epoch_keys, epoch_ids))
        table = reporting.EpochTable(log, TABLE_COLUMNS) if log is not None else None

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
            if last:
                row.update(test_acc=float(final["acc"]), tta_acc=float(final["tta_acc"]))
            elif per_epoch_eval:  # untimed
                ev = self.evaluate(self.eval_variables(state, constants), *self.test_batches)
                row.update(test_acc=float(ev["acc"]))
            history.append(row)
            if table is not None:
                table.row(**row)
            t0 = time.perf_counter()

        images = config.epochs * self.steps_per_epoch * config.batch_size
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
            "steps": int(config.epochs * self.steps_per_epoch),
            "final_train_loss": round(history[-1]["train_loss"], 5),
            "precision": config.precision,
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
      steps, final_train_loss, precision, width_mult, device, jax_version, log (the log file);
      ``history`` (the table rows) is returned but not printed.

    Raises:
      ValueError, data.DataError: see :class:`Experiment`.
      FloatingPointError: the training loss became NaN or infinite.
    """
    log = reporting.RunLog(workdir, config.name)
    log.header(config)
    exp = Experiment(config)
    log.write(f"# data {exp.dataset}: {exp.n_train} train, {exp.n_test} test images; "
              f"{exp.steps_per_epoch} steps of {config.batch_size} per epoch")
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
