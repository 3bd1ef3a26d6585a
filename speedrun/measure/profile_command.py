"""``./run.sh profile RECORD [--steps N] [--tile_to N] [--smoke] [--outdir DIR] [--config.KEY=VALUE ...]``:
trace training steps of a record with ``jax.profiler`` and print where the device time goes.

The record is compiled as for training (:class:`speedrun.train.experiment.Experiment`), on a
training set of ``N × batch_size`` rows with ``--steps N`` (the data's rows cut, or repeated
cyclically, so that one epoch is N steps) or of the data (tiled to ``--tile_to`` rows) otherwise.
One epoch runs untimed (warm-up), then one epoch runs under ``jax.profiler.trace(DIR)``. The trace
(``DIR/plugins/profile/<time>/*.xplane.pb`` and ``*.trace.json.gz``; view it with ``tensorboard
--logdir DIR`` (tensorboard-plugin-profile) or load the ``.trace.json.gz`` at ui.perfetto.dev) is
read back (:mod:`speedrun.measure.profile`) and printed: device time by category with shares, host
gaps against the traced wall time, the top 15 kernels, and MFU — the epoch's training FLOPs
(:func:`speedrun.measure.flops.training_flops`: 3 × forward × images) over its traced wall time,
against a dense matmul timed in the same process (:func:`speedrun.measure.mfu.matmul_flops_per_s`)
and the GPU's datasheet peak where known. The same figures go to ``<trace run folder>/profile.json``
and, as one JSON line, to stdout. The profiler's own overhead is in the traced wall time.

This module's top level is stdlib only (the command line's parser imports it for ``--help``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable


def add_parser(sub: Any, common: argparse.ArgumentParser,
               record_args: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """Add the ``profile`` command to the subparsers ``sub`` (with the ``common`` flags and the
    record arguments of ``record_args``); return its parser."""
    p = sub.add_parser("profile", parents=[common], help="trace training steps with jax.profiler: device time "
                       "by category, top kernels, MFU")
    record_args(p)
    p.add_argument("--steps", type=int, help="trace an epoch of N steps (the training rows cut or repeated to "
                   "N x batch_size; default: one epoch of the data)")
    p.add_argument("--tile_to", type=int, help="without --steps: repeat the training rows to this count (timing only)")
    p.add_argument("--outdir", default="logs/profile", help="trace folder (TensorBoard log dir; default logs/profile)")
    return p


def training_rows(n_rows: int, batch_size: int, steps: int | None, tile_to: int | None) -> int:
    """How many training rows the profiled run uses: ``steps × batch_size`` with ``steps``, else
    ``tile_to`` when given, else ``n_rows``.

    Raises:
      speedrun.errors.ConfigError: ``steps`` or ``tile_to`` below 1, ``tile_to`` below ``n_rows``."""
    from speedrun.errors import ConfigError  # noqa: PLC0415

    for flag, value in (("steps", steps), ("tile_to", tile_to)):
        if value is not None and value < 1:
            example = {"steps": 10, "tile_to": 50000}[flag]
            raise ConfigError(f"--{flag} {value} must be at least 1 (e.g. --{flag}={example})")
    if steps is not None:
        return steps * batch_size
    if tile_to is not None and tile_to < n_rows:
        raise ConfigError(f"--tile_to {tile_to} is below the {n_rows} training rows — pass --tile_to of at least "
                          f"{n_rows}, or --steps N for an epoch of N steps")
    return tile_to or n_rows


def run(args: argparse.Namespace, config) -> dict[str, Any]:
    """Profile ``config`` as the module docstring says; print the table; return the summary dict
    (:func:`speedrun.measure.profile.summarize` plus ``record``, ``steps``, ``batch_size``,
    ``train_flops``, ``flops_per_s``, ``matmul_flops_per_s``, ``mfu_vs_matmul``, ``peak_flops_per_s``,
    ``mfu_vs_peak``, ``trace_file``, ``device``, ``compile_time_s``, ``cache``).

    Raises:
      speedrun.errors.ConfigError: a bad flag or config value; speedrun.data.DataError: the loader.
    """
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from speedrun import config as config_lib, data  # noqa: PLC0415
    from speedrun.measure import flops, mfu, profile, runlog  # noqa: PLC0415
    from speedrun.system import cache, parallel  # noqa: PLC0415
    from speedrun.train.experiment import Experiment  # noqa: PLC0415

    config_lib.validate(config, jax.device_count())
    x, y, x_test, y_test = data.load_cifar10(config.data.path)
    rows = training_rows(len(x), config.batch_size, args.steps, args.tile_to)
    idx = np.arange(rows) % len(x)  # cut, or repeat cyclically (speedrun.measure.bench.tile_rows)
    with cache.Watch() as watch:
        exp = Experiment(config, (x[idx], y[idx], x_test, y_test))
    steps, batch = exp.steps_per_epoch, exp.derived.batch_size
    source = f"repeated from {len(x)}" if rows > len(x) else f"of {len(x)}"
    print(f"# profile {config.name}: {rows} training rows ({source}), {steps} steps of {batch} per epoch; "
          f"compiled in {exp.compile_time_s:.2f} s; compilation cache {watch.summary('epoch')}")
    hp = (parallel.replicate(exp.hp_values(), exp.mesh),) if getattr(exp, "hparams", None) else ()
    state, keys, ids = exp.init_run(config.seed)
    constants = exp.whiten(exp.x_whiten)
    state, metrics = exp.epochs(0, state, constants, exp.x_train, exp.y_train, keys[0], ids[0], *hp)  # warm-up
    jax.block_until_ready((state, metrics))
    e = min(1, len(keys) - 1)
    outdir = Path(args.outdir)
    with jax.profiler.trace(str(outdir)):
        t0 = time.perf_counter()
        state, metrics = exp.epochs(e, state, constants, exp.x_train, exp.y_train, keys[e], ids[e], *hp)
        jax.block_until_ready((state, metrics))
        wall = time.perf_counter() - t0
    events, trace_file = profile.read_trace(outdir)
    summary = profile.summarize(events, wall, profile.hlo_ops(exp.epochs.programs[exp.plan[e]].as_text()), module="jit_epoch")
    train_flops = flops.training_flops(exp.flops_per_image_forward, steps * batch)
    mm = mfu.matmul_flops_per_s(exp.policy.compute_dtype)["flops_per_s"]
    kind = jax.devices()[0].device_kind
    peak = mfu.datasheet_peak(kind, np.dtype(exp.policy.compute_dtype).name if exp.policy.compute_dtype is not None
                              else "float32")
    achieved = train_flops / wall
    summary.update(record=config.name, steps=steps, batch_size=batch, train_flops=train_flops, flops_per_s=achieved,
                   matmul_flops_per_s=mm, mfu_vs_matmul=achieved / mm, peak_flops_per_s=peak,
                   mfu_vs_peak=achieved / peak if peak else None, trace_file=str(trace_file),
                   device=runlog.device_description(), precision=exp.policy.name,
                   compile_time_s=exp.compile_time_s, cache=watch.summary("epoch"))
    print(profile.format_table(summary))
    if not events:
        print("# warning: the trace holds no op or kernel events (on a GPU the profiler needs CUPTI: "
              "the nvidia-cuda-cupti package of jax's CUDA wheels); the table is empty")
    peak_text = (f"{summary['mfu_vs_peak']:.1%} of the datasheet {peak / 1e12:.1f} TFLOP/s" if peak
                 else "no datasheet peak")
    print(f"\nMFU: {train_flops / 1e12:.4f} TFLOP in {wall * 1e3:.3f} ms = {achieved / 1e12:.3f} TFLOP/s: "
          f"{summary['mfu_vs_matmul']:.1%} of the measured {mm / 1e12:.3f} TFLOP/s {exp.policy.name} matmul; "
          f"{peak_text} ({summary['device']})")
    print(f"# trace: {trace_file} (tensorboard --logdir {outdir}, or the .trace.json.gz at ui.perfetto.dev)")
    (trace_file.parent / "profile.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "top"}))
    return summary
