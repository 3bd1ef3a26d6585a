"""The orbax side of :mod:`speedrun.checkpoint`: the manager, the three items, save and restore
with the abstract targets of ``jax.eval_shape`` and a shape check against the saved metadata."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from speedrun import config as config_lib

#: the items of every step folder (:mod:`speedrun.checkpoint`)
ITEMS = ("state", "model", "meta")


def orbax():
    """The ``orbax.checkpoint`` module, imported on first use (it is heavy)."""
    import orbax.checkpoint as ocp  # noqa: PLC0415 (heavy: only when checkpoints are used)

    return ocp


def _manager(directory: str | Path, create: bool = True):
    """A synchronous orbax manager of ``directory``; ``create=False`` for readers (orbax's read_only
    mode would log two warnings per use; a reader here never saves)."""
    ocp = orbax()
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False, create=create)
    handlers = dict(zip(ITEMS, (ocp.StandardCheckpointHandler(), ocp.StandardCheckpointHandler(),
                                ocp.JsonCheckpointHandler())))
    return ocp.CheckpointManager(Path(directory).expanduser().resolve(), item_handlers=handlers, options=options)


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _key_data(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.random.key_data(a) if _is_key(a) else a, tree)


def config_json(config: ml_collections.ConfigDict) -> dict:
    """The resolved ``config`` as a JSON-ready dict (tuples become lists), as saved in ``meta``."""
    return json.loads(config.to_json_best_effort(sort_keys=True))


def setting(config_dict: dict, prefix: str = "") -> dict:
    """The dotted leaves of a :func:`config_json` dict, run options excluded."""
    out = {}
    for k, v in config_dict.items():
        if prefix or k not in config_lib.RUN_OPTIONS:
            out.update(setting(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def save(directory: str | Path, exp, seed: int, epochs_done: int, state, constants: dict) -> Path:
    """Save the run of ``seed`` of the compiled ``exp`` after ``epochs_done`` epochs: its
    :class:`TrainState` ``state`` and whitening ``constants`` (module docstring: the three items);
    return the step folder ``directory/epochs_done``. Synchronous: the arrays are written when it
    returns (the caller may then donate ``state``)."""
    ocp, path = orbax(), Path(directory).expanduser().resolve()
    meta = {"record": exp.config.name, "seed": int(seed), "epochs_done": int(epochs_done),
            "epochs": int(exp.config.epochs), "config": config_json(exp.config)}
    mngr = _manager(path)
    mngr.save(int(epochs_done), args=ocp.args.Composite(
        state=ocp.args.StandardSave(_key_data(state.replace(ema=None))),
        model=ocp.args.StandardSave(exp.eval_variables(state, constants)),
        meta=ocp.args.JsonSave(meta)))
    mngr.wait_until_finished()
    mngr.close()
    return path / str(int(epochs_done))


@contextlib.contextmanager
def open_checkpoint(directory: str | Path, step: int | None = None):
    """``with open_checkpoint(directory, step) as (manager, step, meta)``: the checkpoint folder
    ``directory`` (a step folder ``DIR/3`` is accepted too) at ``step`` (default: the latest).

    Raises:
      speedrun.config.ConfigError: no such folder, no checkpoint in it, no such step, no meta.
    """
    p = Path(directory).expanduser()
    if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").is_file() and step is None:
        p, step = p.parent, int(p.name)
    if not p.is_dir():
        raise config_lib.ConfigError(f"no checkpoint folder {str(directory)!r} — pass the "
                                     "--config.checkpoint_dir of a train run")
    with contextlib.closing(_manager(p, create=False)) as mngr:
        yield _checked(mngr, directory, step)


def saved_steps(directory: str | Path) -> list[int]:
    """The epochs done of the checkpoints in the folder ``directory`` (``[]``: none)."""
    with contextlib.closing(_manager(directory, create=False)) as mngr:
        return list(mngr.all_steps())


def _checked(mngr, directory, step: int | None):
    p = Path(mngr.directory)
    steps = mngr.all_steps()
    if not steps:
        raise config_lib.ConfigError(f"{str(directory)!r} holds no checkpoint (no step folder such as "
                                     f"{p}/10) — pass the --config.checkpoint_dir of a train run")
    step = max(steps) if step is None else int(step)
    if step not in steps:
        raise config_lib.ConfigError(f"{str(directory)!r} has no checkpoint after epoch {step} — saved "
                                     f"epochs: {sorted(steps)}")
    meta = restore_items(mngr, step, meta=orbax().args.JsonRestore())["meta"]
    if not isinstance(meta, dict) or "config" not in meta:
        raise config_lib.ConfigError(f"{p}/{step} is not a speedrun checkpoint (no config in its meta "
                                     "item) — pass a folder written by train --config.checkpoint_dir")
    return mngr, step, meta


def _specs(tree: Any) -> dict[str, tuple]:
    """``{"params/head/kernel": (shape, dtype name)}`` of a tree of arrays, shapes or orbax metadata."""
    part = lambda k: str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))  # noqa: E731
    return {"/".join(part(k) for k in path): (tuple(v.shape), str(jnp.dtype(v.dtype)))
            for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def restore_items(mngr, step: int, **items):
    """Restore ``items`` (name -> orbax restore args) of ``step``, the arrays' shapes and dtypes
    first compared with the saved metadata (orbax's own refusal would also log pages of asyncio
    errors)."""
    saved = mngr.item_metadata(step)
    for name, args in items.items():
        target = getattr(args, "item", None)
        if target is None or saved.get(name) is None:
            continue
        have, want = _specs(saved[name]), _specs(target)
        bad = sorted(k for k in have.keys() | want.keys() if have.get(k) != want.get(k))
        if bad:
            show = lambda spec: "nothing" if spec is None else f"{spec[1]}{list(spec[0])}"  # noqa: E731
            raise config_lib.ConfigError(
                f"checkpoint {mngr.directory}/{step} does not restore into this model: {name} {bad[0]} is saved "
                f"as {show(have.get(bad[0]))}, the model has {show(want.get(bad[0]))} ({len(bad)} arrays "
                "differ) — use the config it was saved with")
    try:
        return mngr.restore(step, args=orbax().args.Composite(**items))
    except (ValueError, KeyError, TypeError, FileNotFoundError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise config_lib.ConfigError(f"checkpoint {mngr.directory}/{step} does not restore into this model "
                                     f"({first[:200]}) — use the config it was saved with") from err


def _targets(exp) -> tuple[Any, Any, Any]:
    """``(state shape with keys, state target as saved, model target)``: replicated on ``exp``'s mesh."""
    from speedrun.system import parallel  # noqa: PLC0415
    from speedrun.train.state import constants_fn, evaluated, init_state  # noqa: PLC0415

    rep = parallel.replicated(exp.mesh)
    shaped = lambda t: jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), t)  # noqa: E731
    full = jax.eval_shape(exp.init_fn, jax.random.key(0))
    consts = jax.eval_shape(constants_fn(exp.config, exp.normalize), exp.x_whiten)
    shape = full.replace(ema=None)
    return shape, shaped(jax.eval_shape(_key_data, shape)), shaped({**evaluated(full), "constants": consts}), \
        full.ema is not None


def restore(directory: str | Path, exp, step: int | None = None) -> tuple[Any, dict, dict]:
    """``(state, constants, meta)`` of a checkpoint (default its latest step) for the compiled
    ``exp``: the :class:`TrainState` (EMA from the ``model`` item, run key re-wrapped) and the
    whitening constants as arrays replicated on ``exp.mesh``, and the ``meta`` dict (record, seed,
    epochs_done, epochs, config). Continue the run with ``exp.run(meta["seed"], start=(state,
    meta["epochs_done"]))``.

    Raises:
      speedrun.config.ConfigError: no such folder or step, or arrays that do not fit ``exp``'s
        model and optimizer (structure, shape or dtype).
    """
    shape, state_target, model_target, averaged = _targets(exp)
    ocp = orbax()
    with open_checkpoint(directory, step) as (mngr, step, meta):
        out = restore_items(mngr, step, state=ocp.args.StandardRestore(state_target),
                       model=ocp.args.StandardRestore(model_target))
    state = jax.tree.map(lambda a, s: jax.random.wrap_key_data(a) if _is_key(s) else a, out["state"], shape)
    model = out["model"]
    if averaged:  # the average is the saved model; without one the net is, and it is in the state
        state = state.replace(ema={k: v for k, v in model.items() if k != "constants"})
    return state, model["constants"], {**meta, "epochs_done": step}
