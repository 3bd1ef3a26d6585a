"""Synchronous data parallelism over every device of every process: one mesh axis, ``data``.

The method is the synchronous "towers" of the TensorFlow multi-GPU CIFAR-10 tutorial
(``cifar10_multi_gpu_train.py``: each GPU computes the gradient of its slice of the batch, the
gradients are averaged, every replica applies the same update) written with current JAX:
``jax.jit`` of ``jax.shard_map`` over a 1-D ``jax.make_mesh`` (JAX docs, "Manual parallelism with
shard_map"; ``jax.pmap`` is in maintenance mode and itself runs on shard_map now).

Layout (``D`` devices on the axis ``data``):

- training images (uint8, padded once for the crop) and labels: replicated, the whole set on every
  device (150 MB of uint8 for CIFAR-10's 50000 images at 32 px, 240 MB padded by 4 px);
- each global batch of ``B`` examples: device ``d`` gathers positions ``[d·B/D, (d+1)·B/D)`` of it
  from its own copy (:func:`local_share`, :func:`gather_batch`): no collective moves images, and the
  one collective of a step is the gradient mean;
- params, optimizer state, EMA, batch-norm running statistics, PRNG keys: replicated.

Inside the shard_map the per-device loss is ``lax.pmean``-ed over ``data`` before it is
differentiated; shard_map's replication checking (``check_vma=True``) transposes that into an
all-reduce of the per-device gradients, so every replica gets the gradient of the global-batch mean
loss and applies the same update. Batch-norm running statistics and the metrics are ``pmean``-ed.

Result independence of ``D``: the global batch of every step holds the same examples in the same
order for any ``D``, each example's augmentation draws are drawn for the whole global batch and cut
to the device's share (:func:`local_share`), and ghost batch norm normalises groups
of ``ghost_batch_size`` consecutive examples, which are the same groups for any ``D`` as long as the
per-device batch is a multiple of the ghost batch (:func:`per_device_batch` enforces it). What
remains is floating-point reordering of the reductions (tests/test_parallel.py states the measured
tolerance).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The 1-D mesh ``(data,)`` over ``devices`` (default: ``jax.devices()``, every device of every
    process), with ``Auto`` axis type so code outside the shard_map is partitioned by XLA as usual.

    Raises:
      ValueError: an empty device list.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device")
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of a value held whole on every device of ``mesh`` (params, keys, scalars)."""
    return NamedSharding(mesh, P())


def sharded(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Sharding that splits dimension ``axis`` of an array evenly along ``data`` (the rest
    replicated); ``axis=0`` for the training set, ``axis=1`` for the ``(nb, batch, ...)`` test
    batches of :func:`speedrun.evaluate.batch_test_set`."""
    return NamedSharding(mesh, P(*([None] * axis), DATA_AXIS))


def per_device_batch(batch_size: int, num_devices: int, ghost_batch_size: int | None = None,
                     name: str = "batch_size") -> int:
    """The per-device share ``batch_size // num_devices`` of a global batch, checked.

    Args:
      batch_size: global batch size (examples per step over all devices).
      num_devices: devices on the ``data`` axis.
      ghost_batch_size: examples per ghost-batch-norm group (``None``: no ghost groups; each device
        then normalises its whole share, so batch statistics, and the result, depend on the device
        count, as with PyTorch DDP without SyncBatchNorm).
      name: the config field, for the message.

    Raises:
      ValueError: ``batch_size`` is not a multiple of ``num_devices`` (the shards would be of
        unequal size), or the per-device batch is not a multiple of ``ghost_batch_size`` (a ghost
        group would straddle two devices: it would be cut, and the run would differ from the
        one-device run). The message names the nearest valid sizes.
    """
    if batch_size % num_devices:
        lo = batch_size // num_devices * num_devices
        raise ValueError(
            f"{name}={batch_size} is not divisible by the {num_devices} devices of the 'data' mesh "
            f"axis, so the per-device shards would be of unequal size; use a multiple of "
            f"{num_devices} (e.g. {lo or num_devices} or {lo + num_devices}) or run on fewer devices "
            "(CUDA_VISIBLE_DEVICES)"
        )
    local = batch_size // num_devices
    if ghost_batch_size and local % ghost_batch_size:
        step = num_devices * ghost_batch_size
        raise ValueError(
            f"{name}={batch_size} over {num_devices} devices gives {local} examples per device, not "
            f"a multiple of model.ghost_batch_size={ghost_batch_size}: ghost batch norm normalises "
            f"groups of {ghost_batch_size} examples on one device. Use a {name} that is a multiple "
            f"of {num_devices}×{ghost_batch_size}={step}, or a ghost_batch_size dividing {local}"
        )
    return local


def pad_rows(x: np.ndarray, multiple: int) -> np.ndarray:
    """``x`` with zero rows appended so that ``len(x)`` is a multiple of ``multiple`` (equal
    shards on every device). ``(N, ...) -> (ceil(N / multiple) * multiple, ...)``, same dtype."""
    pad = -len(x) % multiple
    if pad == 0:
        return x
    return np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])


def put(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """Place the host array ``x`` (the same on every process) as one global ``jax.Array``.

    Each process transfers only the pieces its own devices hold (``jax.make_array_from_callback``),
    so in a multi-host run every host feeds its own part of the data.

    Raises:
      ValueError: a sharded dimension is not divisible by the devices along it (from JAX; pad with
        :func:`pad_rows` first).
    """
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of ``tree`` (numpy arrays, Python scalars, ``jax.Array`` values, typed PRNG keys)
    as a global array replicated on every device of ``mesh``; same shapes and dtypes.

    Unlike ``jax.device_put`` this also works in a multi-process run, where the mesh spans devices
    the process cannot address: each process transfers the value to its own devices (so every
    process must pass the same values, e.g. keys derived from the same seed).
    """
    sharding = replicated(mesh)

    def one(x):
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = put(np.asarray(jax.random.key_data(x)), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return put(np.asarray(x), sharding)

    return jax.tree.map(one, tree)


def pmean(tree: Any, axis_name: str | None) -> Any:
    """``lax.pmean`` of every leaf over ``axis_name``; the identity when ``axis_name`` is None
    (the step then runs outside any shard_map)."""
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def local_share(tree: Any, axis_name: str | None) -> Any:
    """This device's share of a global batch: every leaf ``(B, ...)`` of ``tree`` cut to rows
    ``[d·B/D, (d+1)·B/D)`` on device ``d`` of ``D`` along ``axis_name`` (inside shard_map; the whole
    leaf when ``axis_name`` is None or of size 1). No collective: every device holds the batch's
    indices and draws, replicated."""
    if axis_name is None or jax.lax.axis_size(axis_name) == 1:
        return tree
    d, n_dev = jax.lax.axis_index(axis_name), jax.lax.axis_size(axis_name)

    def one(a):
        b = a.shape[0] // n_dev
        return jax.lax.dynamic_slice_in_dim(a, d * b, b)

    return jax.tree.map(one, tree)


def gather_batch(arrays: Sequence[jax.Array], idx: jax.Array, axis_name: str | None) -> tuple:
    """This device's slice of a global batch gathered from arrays replicated on every device
    (inside shard_map).

    Args:
      arrays: whole arrays, each ``(N, ...)`` of any dtype (e.g. ``(N, 32, 32, 3)`` uint8 images
        and ``(N,)`` int32 labels), the same on every device.
      idx: ``(B,)`` int32 row indices of the whole batch, the same on every device.
      axis_name: the mesh axis (``None``: one device).

    Returns:
      ``tuple(a[idx][d·B/D:(d+1)·B/D] for a in arrays)`` followed by that slice of ``idx`` itself
      (``(B/D,)``, the dataset indices of this device's examples), for device ``d``: a local gather
      of ``B/D`` rows, no collective (:func:`local_share`).
    """
    mine = local_share(idx, axis_name)
    return tuple(a[mine] for a in arrays) + (mine,)


def example_keys(key: jax.Array, local_batch: int, axis_name: str | None) -> jax.Array:
    """``(local_batch,)`` PRNG keys, one per example of this device's slice of the global batch.

    The example at global position ``p`` (``p = axis_index · local_batch + j``) gets
    ``jax.random.fold_in(key, p)``: devices draw different augmentations, and an example's draw does
    not depend on the number of devices.
    """
    start = 0 if axis_name is None else jax.lax.axis_index(axis_name) * local_batch
    positions = start + jnp.arange(local_batch, dtype=jnp.int32)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, positions)


_ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
        "process_id": "JAX_PROCESS_ID"}


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, auto: bool = False,
                           environ: dict[str, str] | None = None) -> bool:
    """Call ``jax.distributed.initialize`` when a multi-process run is asked for; before any JAX
    computation.

    A run is multi-process when any argument is given, ``auto`` is True, or one of the environment
    variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` or
    ``SPEEDRUN_DISTRIBUTED=1`` is set. Arguments win over the environment; what is still missing is
    left to JAX's cluster auto-detection (Slurm, Open MPI, Cloud TPU, Kubernetes).

    Args:
      coordinator_address: ``host:port`` of process 0's coordinator service.
      num_processes: total number of processes (one per host, or one per GPU).
      process_id: this process's index in ``[0, num_processes)``.
      auto: initialise with cluster auto-detection even if nothing else asks for it.
      environ: the environment to read (default ``os.environ``).

    Returns:
      True if ``jax.distributed.initialize`` was called.

    Raises:
      ValueError: a non-integer ``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``.
      RuntimeError: from JAX, when called after JAX's backend started or twice.
    """
    env = os.environ if environ is None else environ
    args = {"coordinator_address": coordinator_address, "num_processes": num_processes,
            "process_id": process_id}
    for name, var in _ENV.items():
        if args[name] is None and env.get(var):
            value = env[var]
            if name != "coordinator_address":
                try:
                    value = int(value)
                except ValueError:
                    raise ValueError(f"{var}={value!r} is not an integer") from None
            args[name] = value
    asked = auto or env.get("SPEEDRUN_DISTRIBUTED") == "1" or any(v is not None for v in args.values())
    if not asked:
        return False
    jax.distributed.initialize(**args)
    return True
