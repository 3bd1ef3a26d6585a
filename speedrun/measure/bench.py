"""Benchmark a record over many seeds: :func:`run`, or ``./run.sh bench records/NAME.py [--runs N]``.

Measures like the record keepers do (airbench: mean accuracy over hundreds of seeds, device timing
without compilation, FLOPs stated; DAWNBench: time to a target accuracy):

- compiles the record once (:class:`speedrun.train.experiment.Experiment`) and trains ``N`` seeds
  (``config.seed``, ``config.seed + 1``, ...) with the same executables; every run counts the XLA
  compilations it triggered (:class:`speedrun.measure.mfu.CompileCounter`): after the first run they must be 0;
- per run: test accuracy with and without TTA, timed seconds (whitening + epochs + final TTA
  evaluation; compilation and per-epoch evaluation excluded; and fulcrum's rule), the DAWNBench time to the
  record's target accuracy (``config.target_acc``; :func:`speedrun.measure.stats.time_to_target`);
- summary: tta_acc mean, std and 95% Student-t interval, the one-sided t-test of tta_acc against the
  target (p-value, :func:`speedrun.measure.stats.t_test_greater`), share of runs at or above the target,
  train time and fulcrum time (``fulcrum_time_s``, evaluation excluded) median/min/max, time to target,
  compile time, images/s, training FLOPs
  (:mod:`speedrun.measure.flops`), achieved FLOP/s, and MFU — model FLOP/s over (a) a dense matmul in the
  record's compute dtype timed in the same process (:func:`speedrun.measure.mfu.matmul_flops_per_s`) and (b)
  the datasheet peak of the GPU when its model is known (:data:`speedrun.measure.mfu.PEAK_TFLOPS`);
- prints a per-run table, a summary table and one JSON line, and writes JSON lines to
  ``{outdir}/{record}__{device}__{UTC time}.jsonl`` (:mod:`speedrun.measure.resultfile`): each run
  with its epoch history as soon as it ends (flushed: a killed bench keeps its finished seeds), then
  the summary; ``--resume`` continues the latest file of the same record, device and setting with
  only its missing seeds. ``./run.sh report`` (:mod:`speedrun.measure.report`) turns such files
  into the README table and a plot.

``--tile_to=50000`` repeats the training rows up to that count (for timing full-size epochs when
only the bundled subset is at hand); the result is labelled ``tiled_from`` and its accuracy is not a
CIFAR-10 figure.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

from speedrun.measure import resultfile, runlog, stats
from speedrun.measure.mfu import PEAK_SOURCE, CompileCounter, datasheet_peak, gpu_model, matmul_flops_per_s
from speedrun.measure.resultfile import device_slug, result_path, write_jsonl  # noqa: F401 (re-exported)
from speedrun.measure.summary_table import format_summary  # noqa: F401 (re-exported)


def tile_rows(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Repeat the rows of ``x (N, ...)`` and ``y (N,)`` cyclically to exactly ``n`` rows (for timing
    full-size epochs on a subset; accuracy on such data is not a dataset result).

    Raises:
      ValueError: ``n`` smaller than ``N`` (use a slice instead) or an empty ``x``.
    """
    if len(x) == 0 or n < len(x):
        raise ValueError(f"tile_rows: cannot tile {len(x)} rows to {n}; n must be >= the row count")
    idx = np.arange(n) % len(x)
    return x[idx], y[idx]


def target_of(config, target: float | None = None) -> float:
    """The accuracy target: ``target`` if given, else ``config.target_acc``.

    Raises:
      ValueError: neither is set (add ``c.target_acc`` to the record or pass ``--target``), or the
        value is not in (0, 1].
    """
    value = target if target is not None else config.get("target_acc")
    if value is None:
        raise ValueError(f"record {config.get('name')!r} has no target_acc; add `c.target_acc = ...` "
                         "to its config or pass --target=0.94")
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"target accuracy must be a fraction in (0, 1], got {value}")
    return value


def run_seeds(exp, seeds: Sequence[int], target: float, per_epoch_eval: bool = True,
              log: Callable[[str], None] | None = print,
              on_run: Callable[[dict[str, Any]], None] | None = None, progress: bool | None = False
              ) -> list[dict[str, Any]]:
    """Train ``exp`` (a compiled :class:`speedrun.train.experiment.Experiment`) once per seed.

    Returns one dict per run: ``exp.run``'s result plus ``time_to_target_s`` (seconds or ``None``;
    ``None`` also when ``per_epoch_eval`` is off), ``reached_target`` (bool, final tta_acc >=
    target), ``compiles`` (XLA compilations during the run: 0 after the first run, since the
    seed is data, not a compile-time constant) and ``first_in_process`` (True for the first seed of
    this call). ``on_run(result)`` is called as soon as each run ends (the result file's line).
    ``progress``: a progress bar per seed on stderr (:func:`speedrun.measure.progress.enabled`;
    ``None``: when stderr is a terminal), cleared when the seed's line is printed.

    Raises:
      FloatingPointError: a run diverged (see ``Experiment.run``).
    """
    from speedrun.measure import progress as progress_lib  # noqa: PLC0415

    out, show = [], progress_lib.enabled(progress)
    for i, seed in enumerate(seeds):
        with CompileCounter() as counter, progress_lib.for_experiment(
                exp, f"{exp.config.name} seed {seed} ({i + 1}/{len(seeds)})", show, leave=False) as bar:
            r = exp.run(int(seed), per_epoch_eval=per_epoch_eval, on_row=bar)
        r["compiles"] = counter.count
        r["time_to_target_s"] = stats.time_to_target(r["history"], target) if per_epoch_eval else None
        r["reached_target"] = bool(r["tta_acc"] >= target)
        r["first_in_process"] = not out
        out.append(r)
        if on_run is not None:
            on_run(r)
        if log is not None:
            ttt = r["time_to_target_s"]
            log(f"seed {seed:>5d}  tta_acc {r['tta_acc']:.4f}  acc {r['acc']:.4f}  "
                f"train {r['train_time_s']:.3f} s  fulcrum {r.get('fulcrum_time_s', float('nan')):.3f} s  to target {'-' if ttt is None else f'{ttt:.3f} s'}  "
                f"compiles {counter.count}")
    return out


def summarize(runs: Sequence[dict[str, Any]], target: float, compile_time_s: float,
              matmul: dict[str, Any] | None = None, device_kind: str | None = None) -> dict[str, Any]:
    """The summary of a set of runs (see the module docstring for every figure).

    Args:
      runs: :func:`run_seeds` results of one record and setting.
      target: accuracy target (fraction).
      compile_time_s: the experiment's one-time compile time (seconds).
      matmul: :func:`matmul_flops_per_s` result for the record's compute dtype, or ``None``.
      device_kind: ``jax.devices()[0].device_kind`` for the datasheet peak, or ``None``.

    Returns:
      A JSON-ready dict: ``kind="summary"``, the record's setting (record, dataset, train/test images,
      epochs, batch size, precision, width_mult, devices, device), ``runs``, ``seeds``,
      ``target_acc``, ``tta_acc`` and ``acc`` (:func:`speedrun.measure.stats.mean_ci`), ``share_at_target``,
      ``tta_t_test`` (:func:`speedrun.measure.stats.t_test_greater` against ``target``),
      ``train_time_s`` and ``fulcrum_time_s`` (:func:`speedrun.measure.stats.median_min_max`, seconds;
      the latter ``None`` where a run lacks it), ``time_to_target_s`` (the
      same over the runs that reached the target, plus ``reached``; ``None`` if none did),
      ``compile_time_s``, ``images_per_s`` (training images / median train time),
      ``flops_per_image_forward``, ``train_flops`` (per run), ``achieved_flops_per_s`` (train_flops /
      median train time), ``matmul_flops_per_s``, ``mfu_vs_matmul``, ``peak_flops_per_s``,
      ``peak_gpu``, ``peak_source``, ``mfu_vs_peak`` (``None`` where unknown), ``compiles_after_first``
      (over the runs after the first, and after the first of each resumed process).

    Raises:
      ValueError: no runs, or runs of different records or settings.
    """
    if not runs:
        raise ValueError("summarize: no runs")
    keys = ("record", "dataset", "train_images", "epochs", "batch_size", "precision", "width_mult")
    first = runs[0]
    for r in runs[1:]:
        diff = [k for k in keys if r.get(k) != first.get(k)]
        if diff:
            raise ValueError(f"summarize: runs differ in {diff}; summarize one record and setting at a time")
    times = stats.median_min_max(r["train_time_s"] for r in runs)
    reached = [r["time_to_target_s"] for r in runs if r.get("time_to_target_s") is not None]
    ttt = {**stats.median_min_max(reached), "reached": len(reached)} if reached else None
    images = first["steps"] * first["batch_size"]  # training images per run
    achieved = first["train_flops"] / times["median"]
    peak = datasheet_peak(device_kind, first["precision"]) if device_kind else None
    mm = matmul["flops_per_s"] if matmul else None
    return {
        "kind": "summary",
        **{k: first.get(k) for k in ("record", "dataset", "train_images", "tiled_from", "test_images",
                                     "epochs", "batch_size", "precision", "width_mult", "devices",
                                     "device")},
        "runs": len(runs),
        "seeds": [r["seed"] for r in runs],
        "target_acc": target,
        "tta_acc": stats.mean_ci((r["tta_acc"] for r in runs), bounds=stats.ACCURACY_BOUNDS),
        "acc": stats.mean_ci((r["acc"] for r in runs), bounds=stats.ACCURACY_BOUNDS),
        "share_at_target": stats.share_at_least((r["tta_acc"] for r in runs), target),
        "tta_t_test": stats.t_test_greater((r["tta_acc"] for r in runs), target),
        "train_time_s": times,
        "fulcrum_time_s": stats.median_min_max(r["fulcrum_time_s"] for r in runs)
        if all("fulcrum_time_s" in r for r in runs) else None,
        "time_to_target_s": ttt,
        "compile_time_s": first["compile_time_s"] if compile_time_s is None else compile_time_s,
        "images_per_s": images / times["median"],
        "flops_per_image_forward": first["flops_per_image_forward"],
        "train_flops": first["train_flops"],
        "achieved_flops_per_s": achieved,
        "matmul_flops_per_s": mm,
        "matmul": matmul,
        "mfu_vs_matmul": achieved / mm if mm else None,
        "peak_flops_per_s": peak,
        "peak_gpu": gpu_model(device_kind) if peak else None,
        "peak_source": PEAK_SOURCE if peak else None,
        "mfu_vs_peak": achieved / peak if peak else None,
        "compiles_after_first": sum(r["compiles"] for r in runs[1:] if not r.get("first_in_process")),
    }


def run(config, runs: int = 5, target: float | None = None, per_epoch_eval: bool = True,
        tile_to: int | None = None, arrays: tuple | None = None, matmul: bool = True,
        outdir: str | Path | None = None, log: Callable[[str], None] | None = print, resume: bool = False,
        progress: bool | None = False, command: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Compile ``config`` once and train it for ``runs`` seeds; return ``(run results, summary)``.

    Args:
      config: a record config (``records/NAME.py``'s ``get_config()``, overrides applied).
      runs: number of seeds, ``config.seed`` upwards.
      target: accuracy target; default ``config.target_acc``.
      per_epoch_eval: evaluate after every epoch (untimed) for the time to target.
      tile_to: repeat the training rows to this many (timing at full size on a subset).
      arrays: ``(x_train, y_train, x_test, y_test)``; default: load ``config.data.path``.
      matmul: also time a dense matmul in the compute dtype for MFU.
      outdir: folder for the JSON-lines file (:func:`result_path`; each run's line is written when
        the run ends), or ``None`` for none; its path is then ``summary["file"]``.
      log: line printer, or ``None``.
      resume: continue the last written file in ``outdir`` of this record, device and setting
        (:func:`speedrun.measure.resultfile.find_resumable`): train only the seeds it lacks (none
        missing: no compilation), and summarize every run of the file, which the results then hold;
        without such a file, start a new one.
      progress: a progress bar per seed on stderr (:func:`run_seeds`; ``None``: on a terminal).
      command: the command line that asked for this bench, kept in the summary (``./run.sh bench``
        passes its own); the summary also names the git state of the code
        (:func:`speedrun.measure.runlog.git_state`).

    Raises:
      ValueError: ``runs < 1``, no target (see :func:`target_of`), bad ``tile_to``, ``resume``
        without ``outdir``; ``speedrun.config.ConfigError``: ``config.checkpoint_dir`` set (bench
        saves no checkpoints) or see :func:`speedrun.config.derived`; ``speedrun.data.DataError``
        from the loader.
    """
    from speedrun import data  # noqa: PLC0415 (keeps `import speedrun.measure.bench` light)
    from speedrun.system import precision  # noqa: PLC0415
    from speedrun.train.experiment import Experiment  # noqa: PLC0415

    _check_args(config, runs, outdir, resume)
    target = target_of(config, target)
    x_train, y_train, x_test, y_test = arrays if arrays is not None else data.load_cifar10(config.data.path)
    tiled_from = None
    if tile_to:
        tiled_from = len(x_train)
        x_train, y_train = tile_rows(x_train, y_train, int(tile_to))
        if log:
            log(f"# training rows tiled from {tiled_from} to {len(x_train)} for timing; "
                "accuracy is not a CIFAR-10 result")
    device, code, versions = runlog.device_description(), runlog.git_state(), runlog.versions()
    if log:  # what reproduces the figures below, first (the summary line repeats it)
        log(f"# bench {config.name}: {command or 'called from Python'}")
        log(f"# commit {code}; device {device}; versions {json.dumps(versions)}")
    setting = resultfile.setting_id(config, device=device, target=target, tile_to=tile_to,
                                    per_epoch_eval=per_epoch_eval, train_images=len(x_train), test_images=len(x_test))
    out, results = resultfile.open_results(outdir, config.name, device, setting, resume, log)
    seeds = [s for s in range(config.seed, config.seed + runs) if s not in {r["seed"] for r in results}]
    exp = Experiment(config, (x_train, y_train, x_test, y_test)) if seeds else None
    if log and exp:
        log(f"# compiled once in {exp.compile_time_s:.2f} s; {exp.steps_per_epoch} steps per epoch; "
            f"target {target}")

    def on_run(r: dict[str, Any]) -> None:
        r.update(tiled_from=tiled_from, setting=setting)
        if out is not None:
            out.append({"kind": "run", **r})

    results += run_seeds(exp, seeds, target, per_epoch_eval, log, on_run, progress) if seeds else []
    mm = matmul_flops_per_s(precision.resolve(config.precision).compute_dtype) if matmul else None
    summary = summarize(results, target, exp.compile_time_s if exp else None, mm, jax.devices()[0].device_kind)
    summary.update(backend=jax.default_backend(), versions=versions, commit=code,
                   command=command, per_epoch_eval=per_epoch_eval,
                   setting=setting, time=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    if out is not None:
        out.append(summary)
        summary["file"] = str(out.path)
    return results, summary


def _check_args(config, runs: int, outdir, resume: bool) -> None:
    from speedrun.config import ConfigError  # noqa: PLC0415

    if runs < 1:
        raise ValueError(f"--runs must be >= 1, got {runs}")
    if resume and outdir is None:
        raise ValueError("resume=True needs the outdir of the results to continue")
    if config.get("checkpoint_dir"):
        raise ConfigError("bench saves no checkpoints, but config.checkpoint_dir is set — drop "
                          "--config.checkpoint_dir, or use ./run.sh train for a checkpointed run")
