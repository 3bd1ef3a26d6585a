"""Benchmark a record over many seeds: ``./run.sh bench records/NAME.py [--runs N] [overrides]``.

Measures like the record keepers do (airbench: mean accuracy over hundreds of seeds, device timing
without compilation, FLOPs stated; DAWNBench: time to a target accuracy):

- compiles the record once (:class:`speedrun.train.Experiment`) and trains ``N`` seeds
  (``config.seed``, ``config.seed + 1``, ...) with the same executables; every run counts the XLA
  compilations it triggered (:class:`CompileCounter`): after the first run they must be 0;
- per run: test accuracy with and without TTA, timed seconds (whitening + epochs + final TTA
  evaluation; compilation and per-epoch evaluation excluded), and the DAWNBench time to the
  record's target accuracy (``config.target_acc``; :func:`speedrun.stats.time_to_target`);
- summary: tta_acc mean, std and 95% Student-t interval, share of runs at or above the target,
  train time median/min/max, time to target, compile time, images/s, training FLOPs
  (:mod:`speedrun.flops`), achieved FLOP/s, and MFU — model FLOP/s over (a) a dense matmul in the
  record's compute dtype timed in the same process (:func:`matmul_flops_per_s`) and (b) the
  datasheet peak of the GPU when its model is known (:data:`PEAK_TFLOPS`);
- prints a per-run table, a summary table and one JSON line, and writes JSON lines (one per run
  with its epoch history, then the summary) to ``{outdir}/{record}__{device}__{UTC time}.jsonl``;
  ``./run.sh report`` (:mod:`speedrun.report`) turns such files into the README table and a plot.

``--tile_to=50000`` repeats the training rows up to that count (for timing full-size epochs when
only the bundled subset is at hand); the result is labelled ``tiled_from`` and its accuracy is not a
CIFAR-10 figure.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from speedrun import reporting, stats

#: jax.monitoring event recorded once per XLA backend compilation (jax/_src/dispatch.py).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

# Dense (no structured sparsity) peak throughput in TFLOP/s by GPU model and dtype. Sources: NVIDIA
# datasheets — "NVIDIA H100 Tensor Core GPU" (SXM5 / PCIe / NVL), "NVIDIA H200 Tensor Core GPU"
# (SXM / NVL), "NVIDIA A100 Tensor Core GPU" (SXM4 and PCIe, 40 and 80 GB alike), "NVIDIA Tesla
# V100" (SXM2 / PCIe) and "NVIDIA V100S". The datasheets print the tensor-core figures of Hopper
# and Ampere "with sparsity": the dense figure is half of that. "float32" is the plain FP32 (CUDA
# core) rate and "tf32" the TF32 tensor-core rate; V100 has no bfloat16 or TF32 (absent = unknown).
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
    "H100 PCIe": {"float32": 51.0, "tf32": 378.0, "bfloat16": 756.0, "float16": 756.0},
    "H100 NVL": {"float32": 60.0, "tf32": 417.5, "bfloat16": 835.5, "float16": 835.5},
    "H200 SXM": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
    "H200 NVL": {"float32": 60.0, "tf32": 417.5, "bfloat16": 835.5, "float16": 835.5},
    "A100": {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0, "float16": 312.0},
    "V100 SXM2": {"float32": 15.7, "float16": 125.0},
    "V100 PCIe": {"float32": 14.0, "float16": 112.0},
    "V100S PCIe": {"float32": 16.4, "float16": 130.0},
}
PEAK_SOURCE = "NVIDIA datasheet, dense (sparsity figures halved)"


def gpu_model(device_kind: str) -> str | None:
    """The :data:`PEAK_TFLOPS` key for a JAX ``device_kind`` (e.g. ``"NVIDIA H100 80GB HBM3"`` ->
    ``"H100 SXM"``, ``"Tesla V100-SXM2-16GB"`` -> ``"V100 SXM2"``, ``"NVIDIA A100-SXM4-40GB"`` ->
    ``"A100"``), or ``None`` for any other device (CPUs included)."""
    k = device_kind.upper()
    if "H100" in k or "H200" in k:
        gen = "H100" if "H100" in k else "H200"
        if "NVL" in k:
            return f"{gen} NVL"
        if "PCIE" in k and gen == "H100":
            return "H100 PCIe"
        return f"{gen} SXM"
    if "A100" in k:
        return "A100"
    if "V100S" in k:
        return "V100S PCIe"
    if "V100" in k:
        return "V100 PCIe" if "PCIE" in k else "V100 SXM2"
    return None


def datasheet_peak(device_kind: str, dtype_name: str) -> float | None:
    """Datasheet dense peak in FLOP/s for ``device_kind`` (see :func:`gpu_model`) and a dtype name
    (``"float32"``, ``"tf32"``, ``"bfloat16"``, ``"float16"``); ``None`` when unknown."""
    model = gpu_model(device_kind)
    if model is None:
        return None
    tflops = PEAK_TFLOPS[model].get(dtype_name)
    return None if tflops is None else tflops * 1e12


def matmul_flops_per_s(dtype: Any, n: int | None = None, calls: int = 10, trials: int = 3) -> dict[str, Any]:
    """Measured dense matmul throughput: ``(n, n) @ (n, n)`` in ``dtype``, jitted, on the default
    device — the practical ceiling MFU is quoted against.

    ``calls`` back-to-back products are dispatched and waited for once (so host dispatch overlaps
    the device work); the best of ``trials`` counts. FLOPs per product: ``2 n³``.

    Args:
      dtype: compute dtype (``jnp.float32``, ``jnp.bfloat16``, ``jnp.float16``).
      n: matrix size; default 8192 on accelerators, 1024 on CPU.
      calls, trials: positive ints.

    Returns:
      ``{"flops_per_s": float, "n": int, "dtype": str, "seconds_per_matmul": float}``.

    Raises:
      ValueError: non-positive ``n``, ``calls`` or ``trials``.
    """
    n = n or (1024 if jax.default_backend() == "cpu" else 8192)
    if n <= 0 or calls <= 0 or trials <= 0:
        raise ValueError(f"matmul_flops_per_s: n, calls, trials must be positive ({n}, {calls}, {trials})")
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()  # compile and warm up
    best = float("inf")
    for _ in range(trials):
        t0 = time.perf_counter()
        outs = [f(a, b) for _ in range(calls)]
        jax.block_until_ready(outs)
        best = min(best, (time.perf_counter() - t0) / calls)
        del outs
    return {"flops_per_s": 2.0 * n**3 / best, "n": n, "dtype": jnp.dtype(dtype).name,
            "seconds_per_matmul": best}


class CompileCounter:
    """Counts XLA backend compilations while active (a context manager).

    Listens to the ``jax.monitoring`` duration event ``/jax/core/compile/backend_compile_duration``
    that JAX records once per compiled computation (jit, AOT ``.compile()`` and eager ops alike).

    Attributes:
      count: compilations seen so far.
      names: the compiled functions' names, in order.
    """

    def __init__(self) -> None:
        self.count = 0
        self.names: list[str] = []

    def _listener(self, event: str, duration: float, **kwargs: Any) -> None:  # noqa: ARG002
        if event == COMPILE_EVENT:
            self.count += 1
            self.names.append(str(kwargs.get("fun_name", "?")))

    def __enter__(self) -> "CompileCounter":
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc: Any) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listener)


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
              log: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Train ``exp`` (a compiled :class:`speedrun.train.Experiment`) once per seed.

    Returns one dict per run: ``exp.run``'s result plus ``time_to_target_s`` (seconds or ``None``;
    ``None`` also when ``per_epoch_eval`` is off), ``reached_target`` (bool, final tta_acc >=
    target) and ``compiles`` (XLA compilations during the run: 0 after the first run, since the
    seed is data, not a compile-time constant).

    Raises:
      FloatingPointError: a run diverged (see ``Experiment.run``).
    """
    out = []
    for seed in seeds:
        with CompileCounter() as counter:
            r = exp.run(int(seed), per_epoch_eval=per_epoch_eval)
        r["compiles"] = counter.count
        r["time_to_target_s"] = stats.time_to_target(r["history"], target) if per_epoch_eval else None
        r["reached_target"] = bool(r["tta_acc"] >= target)
        out.append(r)
        if log is not None:
            ttt = r["time_to_target_s"]
            log(f"seed {seed:>5d}  tta_acc {r['tta_acc']:.4f}  acc {r['acc']:.4f}  "
                f"train {r['train_time_s']:.3f} s  to target {'-' if ttt is None else f'{ttt:.3f} s'}  "
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
      ``target_acc``, ``tta_acc`` and ``acc`` (:func:`speedrun.stats.mean_ci`), ``share_at_target``,
      ``train_time_s`` (:func:`speedrun.stats.median_min_max`, seconds), ``time_to_target_s`` (the
      same over the runs that reached the target, plus ``reached``; ``None`` if none did),
      ``compile_time_s``, ``images_per_s`` (training images / median train time),
      ``flops_per_image_forward``, ``train_flops`` (per run), ``achieved_flops_per_s`` (train_flops /
      median train time), ``matmul_flops_per_s``, ``mfu_vs_matmul``, ``peak_flops_per_s``,
      ``peak_gpu``, ``peak_source``, ``mfu_vs_peak`` (``None`` where unknown), ``compiles_after_first``.

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
        "tta_acc": stats.mean_ci(r["tta_acc"] for r in runs),
        "acc": stats.mean_ci(r["acc"] for r in runs),
        "share_at_target": stats.share_at_least((r["tta_acc"] for r in runs), target),
        "train_time_s": times,
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
        "compiles_after_first": sum(r["compiles"] for r in runs[1:]),
    }


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    return "-" if v is None else format(v * scale, spec)


def format_summary(s: dict[str, Any]) -> str:
    """A two-column text table of a :func:`summarize` result (what each figure is and its unit)."""
    acc, ttt, t = s["tta_acc"], s["time_to_target_s"], s["train_time_s"]
    ci = ("-" if acc["ci_low"] is None else f"[{acc['ci_low'] * 100:.2f}, {acc['ci_high'] * 100:.2f}]")
    data = f"{s['dataset']} ({s['train_images']} train" + (
        f", tiled from {s['tiled_from']}" if s.get("tiled_from") else "") + f", {s['test_images']} test)"
    rows = [
        ("record", f"{s['record']}  ({s['epochs']} epochs, batch {s['batch_size']}, {s['precision']}, "
                   f"width {s['width_mult']})"),
        ("data", data),
        ("device", f"{s['device']}"),
        ("runs (seeds)", f"{s['runs']} ({s['seeds'][0]}..{s['seeds'][-1]})"),
        ("tta_acc mean ± std (%)", f"{acc['mean'] * 100:.2f} ± {acc['std'] * 100:.2f}"),
        ("tta_acc 95% CI (%, t)", ci),
        (f"share ≥ target {s['target_acc']:.4f}", f"{s['share_at_target'] * 100:.0f}%"),
        ("train time median [min, max] (s)", f"{t['median']:.3f} [{t['min']:.3f}, {t['max']:.3f}]"),
        ("time to target median (s)", "-" if ttt is None else
         f"{ttt['median']:.3f} [{ttt['min']:.3f}, {ttt['max']:.3f}] ({ttt['reached']}/{s['runs']} reached)"),
        ("compile time (s, once)", f"{s['compile_time_s']:.2f}"),
        ("images/s", f"{s['images_per_s']:.0f}"),
        ("forward GFLOPs per image", f"{s['flops_per_image_forward'] / 1e9:.4f}"),
        ("training PFLOPs per run", f"{s['train_flops'] / 1e15:.4f}"),
        ("achieved TFLOP/s", f"{s['achieved_flops_per_s'] / 1e12:.3f}"),
        ("dense matmul TFLOP/s (measured)", _fmt(s["matmul_flops_per_s"], ".3f", 1e-12)),
        ("MFU vs measured matmul", _fmt(s["mfu_vs_matmul"], ".1%")),
        ("MFU vs datasheet peak", "-" if s["mfu_vs_peak"] is None else
         f"{s['mfu_vs_peak']:.1%} of {s['peak_flops_per_s'] / 1e12:.1f} TFLOP/s ({s['peak_gpu']})"),
        ("compilations after run 1", f"{s['compiles_after_first']}"),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(w)}  {v}" for k, v in rows)


def device_slug(description: str) -> str:
    """File-name-safe form of a device description (``"NVIDIA H100 80GB HBM3 x1"`` ->
    ``"NVIDIA-H100-80GB-HBM3-x1"``)."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", description).strip("-")[:60]


def write_jsonl(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines (one object per line) to ``path`` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def bench(config, runs: int, target: float | None = None, per_epoch_eval: bool = True,
          tile_to: int | None = None, arrays: tuple | None = None, matmul: bool = True,
          log: Callable[[str], None] | None = print) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Compile ``config`` once and train it for ``runs`` seeds; return ``(run results, summary)``.

    Args:
      config: a record config (``records/NAME.py``'s ``get_config()``, overrides applied).
      runs: number of seeds, ``config.seed`` upwards.
      target: accuracy target; default ``config.target_acc``.
      per_epoch_eval: evaluate after every epoch (untimed) for the time to target.
      tile_to: repeat the training rows to this many (timing at full size on a subset).
      arrays: ``(x_train, y_train, x_test, y_test)``; default: load ``config.data.path``.
      matmul: also time a dense matmul in the compute dtype for MFU.
      log: line printer, or ``None``.

    Raises:
      ValueError: ``runs < 1``, no target (see :func:`target_of`), bad ``tile_to``, or a config
        error (see ``speedrun.train.validate_config``); ``data.DataError`` from the loader.
    """
    from speedrun import data, train  # noqa: PLC0415 (keeps `import speedrun.bench` light)

    if runs < 1:
        raise ValueError(f"--runs must be >= 1, got {runs}")
    target = target_of(config, target)
    x_train, y_train, x_test, y_test = arrays if arrays is not None else data.load_cifar10(config.data.path)
    tiled_from = None
    if tile_to:
        tiled_from = len(x_train)
        x_train, y_train = tile_rows(x_train, y_train, int(tile_to))
        if log:
            log(f"# training rows tiled from {tiled_from} to {len(x_train)} for timing; "
                "accuracy is not a CIFAR-10 result")
    exp = train.Experiment(config, (x_train, y_train, x_test, y_test))
    if log:
        log(f"# compiled once in {exp.compile_time_s:.2f} s; {exp.steps_per_epoch} steps per epoch; "
            f"target {target}")
    results = run_seeds(exp, [config.seed + i for i in range(runs)], target, per_epoch_eval, log)
    for r in results:
        r["tiled_from"] = tiled_from
    mm = matmul_flops_per_s(exp.policy.compute_dtype) if matmul else None
    summary = summarize(results, target, exp.compile_time_s, mm, jax.devices()[0].device_kind)
    summary.update(backend=jax.default_backend(), versions=reporting.versions(),
                   per_epoch_eval=per_epoch_eval,
                   time=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return results, summary


def main(argv: Sequence[str]) -> None:
    """absl entry point: see the module docstring and ``./run.sh bench --help``."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; overrides look like --config.epochs=3")
    config = _CONFIG.value
    results, summary = bench(config, _RUNS.value, _TARGET.value, not _NO_EPOCH_EVAL.value, _TILE_TO.value)
    print(format_summary(summary))
    summary["command"] = " ".join(sys.argv)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = Path(_OUTDIR.value) / f"{config.name}__{device_slug(summary['device'])}__{stamp}.jsonl"
    rows = [{"kind": "run", **r} for r in results] + [summary]
    write_jsonl(path, rows)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("versions", "matmul")}))
    print(f"# wrote {path}")


if __name__ == "__main__":
    from absl import app, flags

    from speedrun import main as _cli  # defines --config (and --workdir) on import: reused here

    check_overrides = _cli.check_overrides
    _CONFIG = _cli._CONFIG  # noqa: SLF001 (the one --config flag of the command line)
    _RUNS = flags.DEFINE_integer("runs", 5, "Number of seeds (config.seed upwards).", lower_bound=1)
    _TARGET = flags.DEFINE_float("target", None, "Accuracy target (default: the record's target_acc).")
    _TILE_TO = flags.DEFINE_integer("tile_to", None, "Tile the training rows to this count (timing only).")
    _NO_EPOCH_EVAL = flags.DEFINE_bool("no_epoch_eval", False,
                                       "Skip per-epoch evaluation (no time to target).")
    _OUTDIR = flags.DEFINE_string("outdir", "logs/bench", "Folder for the JSON-lines result file.")
    flags.mark_flags_as_required(["config"])
    check_overrides(sys.argv)
    app.run(main)
