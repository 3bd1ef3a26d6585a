"""CI speed check: every record for one epoch on a small real subset, timed against a calibration.

    python benchmarks/ci_speed.py                 # measure, print the table, compare, exit 1 if slower
    python benchmarks/ci_speed.py --json=out.json # also write this run's figures
    python benchmarks/ci_speed.py --write-baseline out1.json out2.json ...   # median -> baseline.json

Each record in ``records/*.py`` is shrunk (:data:`SMALL`: 256 real training and 256 real test images
of the bundled CIFAR-10 subset, width 1/8, batch 128 so 2 steps, 1 epoch; see :func:`small_config`),
compiled once
(:class:`speedrun.train.experiment.Experiment`), run once untimed, then :data:`REPEATS` times timed
(``train_time_s``: whitening + the epoch + the final TTA evaluation, compilation excluded); its
figure is the fastest run divided by the fastest of the calibration calls timed right before and
after it in the same process — a fixed jitted convolution stack (:func:`calibration`). A ratio
cancels most of what differs between machines and between a quiet and a busy moment; taking the
minimum of repeats discards the runs that other processes slowed down (the usual practice of
micro-benchmarks, e.g. Python's ``timeit``).

The ratios are compared with ``benchmarks/baseline.json``: a record fails only when its ratio
exceeds ``baseline × (1 + tolerance)``, the tolerance being chosen from measured noise (see
``benchmarks/README.md``). Faster and missing records are reported, never failed; records without a baseline are named and
not timed unless given with ``--records``.
Exit status: 0 ok, 1 a record is slower beyond the tolerance, 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

BASELINE = ROOT / "benchmarks" / "baseline.json"
RECORDS = ROOT / "records"

#: The reduced setting every record runs in (overrides of its config, and the data slice).
SMALL: dict[str, Any] = {
    "train_images": 256, "test_images": 256, "epochs": 1, "batch_size": 128,
    "eval_batch_size": 256, "width_mult": 0.125, "whitening_images": 256,
}
#: Timed runs per record (after one untimed warm-up run); the minimum counts.
REPEATS = 3
#: Calibration calls before and after each record; the minimum counts.
CALIBRATION_CALLS = 5


def small_config(record_path: str | Path, small: dict[str, Any] = SMALL):
    """The record's config shrunk to :data:`SMALL` by :func:`speedrun.config.smoke` (the one shrink
    recipe: whole last epoch, at least one warmup step, whitening on at most ``whitening_images``;
    the record's own precision policy). Timing depends on none of these choices but the
    shapes: the epochs' arithmetic is the record's own.

    Raises:
      speedrun.config.ConfigError: the record has no ``model.width_mult`` (every record should).
    """
    from speedrun import config as config_lib

    cfg = config_lib.load_record(record_path)
    return config_lib.smoke(cfg, n_train=small["train_images"], epochs=small["epochs"], batch_size=small["batch_size"],
                            eval_batch_size=small["eval_batch_size"], model__width_mult=small["width_mult"],
                            whitening_images=small["whitening_images"])


def calibration() -> Callable[[], float]:
    """A fixed workload: four chained 3×3 convolutions (16→16 channels, SAME) with ReLU on a
    ``(64, 32, 32, 16)`` float32 batch, jitted and compiled before it is returned (1.2 GFLOPs).

    Returns:
      ``call()`` that runs it once to completion and returns the seconds it took.
    """
    import jax
    import jax.numpy as jnp

    kx, kk = jax.random.split(jax.random.key(1234))
    x = jax.random.normal(kx, (64, 32, 32, 16), jnp.float32)
    kernels = jax.random.normal(kk, (4, 3, 3, 16, 16), jnp.float32) / 12.0

    @jax.jit
    def f(x, kernels):
        for i in range(4):
            x = jax.nn.relu(jax.lax.conv_general_dilated(
                x, kernels[i], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return x

    f(x, kernels).block_until_ready()

    def call() -> float:
        t0 = time.perf_counter()
        f(x, kernels).block_until_ready()
        return time.perf_counter() - t0

    return call


def measure_record(cfg, arrays: tuple, calib: Callable[[], float], repeats: int = REPEATS,
                   calls: int = CALIBRATION_CALLS, experiment_cls=None) -> dict[str, Any]:
    """Compile ``cfg`` once, run it once untimed and ``repeats`` times timed; time the calibration
    ``calls`` times before and after.

    Returns:
      ``{"time_s": fastest train_time_s, "times_s": all of them, "calib_s": fastest calibration
      call, "ratio": time_s / calib_s, "compile_s": compile seconds}`` (seconds).
    """
    if experiment_cls is None:
        from speedrun.train.experiment import Experiment as experiment_cls  # noqa: N813
    exp = experiment_cls(cfg, arrays)
    exp.run(0, per_epoch_eval=False)  # warm-up: first-call costs (eager ops, allocations)
    before = [calib() for _ in range(calls)]
    times = [exp.run(i + 1, per_epoch_eval=False)["train_time_s"] for i in range(repeats)]
    after = [calib() for _ in range(calls)]
    calib_s = min(before + after)
    return {"time_s": min(times), "times_s": times, "calib_s": calib_s,
            "ratio": min(times) / calib_s, "compile_s": exp.compile_time_s,
            "compile_times_s": dict(getattr(exp, "compile_times", {}))}


def compare(ratios: dict[str, float], baseline: dict[str, float], tolerance: float) -> list[dict[str, Any]]:
    """Judge each measured ratio against its baseline.

    A record is ``"SLOWER"`` (a failure) when ``ratio > baseline * (1 + tolerance)``, ``"faster"``
    when ``ratio < baseline / (1 + tolerance)`` (update the baseline, with a reason), ``"ok"``
    otherwise; ``"new"`` has no baseline yet, ``"missing"`` is in the baseline but was not measured.

    Returns:
      Rows ``{"record", "ratio", "baseline", "change" (ratio / baseline - 1), "status"}``, sorted by
      record name.

    Raises:
      ValueError: a negative tolerance or a non-positive ratio or baseline.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    rows = []
    for name in sorted(set(ratios) | set(baseline)):
        r, b = ratios.get(name), baseline.get(name)
        for what, v in (("ratio", r), ("baseline", b)):
            if v is not None and not v > 0:
                raise ValueError(f"{name}: {what} must be positive, got {v}")
        if r is None:
            rows.append({"record": name, "ratio": None, "baseline": b, "change": None, "status": "missing"})
            continue
        if b is None:
            rows.append({"record": name, "ratio": r, "baseline": None, "change": None, "status": "new"})
            continue
        status = ("SLOWER" if r > b * (1 + tolerance) else "faster" if r < b / (1 + tolerance) else "ok")
        rows.append({"record": name, "ratio": r, "baseline": b, "change": r / b - 1, "status": status})
    return rows


def format_table(rows: Sequence[dict[str, Any]], measured: dict[str, dict[str, Any]], tolerance: float) -> str:
    """Markdown table of :func:`compare` rows with the measured seconds of each record."""
    lines = [f"| record | train s (min of {REPEATS}) | calibration s | ratio | baseline | change | status "
             f"(tolerance +{tolerance:.0%}) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        m = measured.get(row["record"], {})
        m = m if "time_s" in m else {}
        cells = [row["record"],
                 f"{m['time_s']:.3f}" if m else "-", f"{m['calib_s']:.4f}" if m else "-",
                 "-" if row["ratio"] is None else f"{row['ratio']:.2f}",
                 "-" if row["baseline"] is None else f"{row['baseline']:.2f}",
                 "-" if row["change"] is None else f"{row['change']:+.1%}", row["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read ``baseline.json``: ``{"tolerance": float, "records": {name: ratio}, ...}``.

    Raises:
      ValueError: the file is missing, not JSON, or lacks ``tolerance``/``records``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"no baseline file {path}; create it with --write-baseline (see benchmarks/README.md)")
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}")
    if not isinstance(data.get("records"), dict) or not isinstance(data.get("tolerance"), (int, float)):
        raise ValueError(f"{path} needs a numeric 'tolerance' and a 'records' object of ratios")
    return data


def write_baseline(result_files: Sequence[str | Path], tolerance: float, path: str | Path = BASELINE,
                   note: str = "") -> dict[str, Any]:
    """Write the baseline: per record the median ratio over ``result_files`` (``--json`` outputs of
    separate runs), with the tolerance, the setting and the machine.

    Raises:
      ValueError: no files, or files measured in different settings.
    """
    runs = [json.loads(Path(p).read_text()) for p in result_files]
    if not runs:
        raise ValueError("--write-baseline needs the --json files of one or more runs")
    if any(r["small"] != runs[0]["small"] for r in runs):
        raise ValueError("the result files were measured in different settings (SMALL)")
    names = sorted(set().union(*(r["ratios"] for r in runs)))
    records = {n: round(statistics.median(r["ratios"][n] for r in runs if n in r["ratios"]), 4) for n in names}
    data = {
        "comment": "Ratios of record time to calibration time (benchmarks/ci_speed.py). Update only "
                   "deliberately, with the reason in the commit message (benchmarks/README.md).",
        "tolerance": tolerance,
        "records": records,
        "small": runs[0]["small"],
        "repeats": runs[0]["repeats"],
        "runs_in_median": len(runs),
        "machine": runs[0]["device"],
        "versions": runs[0]["versions"],
        "measured": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "note": note,
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
    return data


def measure_all(record_paths: Sequence[Path], log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Measure every record (see :func:`measure_record`) on the :data:`SMALL` slice of the bundled
    real subset; returns ``{record name: measurement}``, or ``{record name: {"error": message}}`` for
    a record that raised (a broken record is the test suite's failure to report; this check only
    judges speed)."""
    from speedrun import data

    xtr, ytr, xte, yte = data.load_cifar10("sample")
    arrays = (xtr[: SMALL["train_images"]], ytr[: SMALL["train_images"]],
              xte[: SMALL["test_images"]], yte[: SMALL["test_images"]])
    calib = calibration()
    out = {}
    for path in record_paths:
        cfg = small_config(path)
        t0 = time.perf_counter()
        try:
            out[cfg.name] = m = measure_record(cfg, arrays, calib)
        except Exception as err:  # noqa: BLE001 - reported in the table; the test suite owns failures
            out[cfg.name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
            log(f"# {cfg.name}: ERROR {out[cfg.name]['error']}")
            continue
        log(f"# {cfg.name}: {m['time_s']:.3f} s (runs {', '.join(f'{t:.3f}' for t in m['times_s'])}), "
            f"calibration {m['calib_s']:.4f} s, ratio {m['ratio']:.2f}; compile {m['compile_s']:.1f} s, "
            f"total {time.perf_counter() - t0:.1f} s")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring); returns the exit status."""
    from speedrun.system import env

    env.configure()  # XLA flags before JAX starts (speedrun.system.env)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default=str(BASELINE), help="baseline file (default benchmarks/baseline.json)")
    p.add_argument("--records", nargs="*", help="record files (default: the records/*.py with a baseline)")
    p.add_argument("--json", help="write this run's figures to this file")
    p.add_argument("--write-baseline", nargs="+", metavar="RESULT_JSON",
                   help="write the baseline from these --json results (median per record) and exit")
    p.add_argument("--tolerance", type=float, help="with --write-baseline: the tolerance to store")
    p.add_argument("--note", default="", help="with --write-baseline: how the figures were measured")
    args = p.parse_args(argv)

    if args.write_baseline:
        if args.tolerance is None:
            p.error("--write-baseline needs --tolerance (chosen from measured noise: benchmarks/README.md)")
        data = write_baseline(args.write_baseline, args.tolerance, args.baseline, args.note)
        print(json.dumps(data, indent=2))
        return 0

    t_start = time.perf_counter()
    try:
        base = load_baseline(args.baseline)
    except ValueError as err:
        print(f"ci_speed: {err}", file=sys.stderr)
        return 2
    # by default the records with a baseline: CI's time is bounded (each costs its compile); a
    # record without one is named, and timed only when asked for with --records
    found = sorted(RECORDS.glob("*.py"))
    paths = [Path(r) for r in args.records] if args.records else [q for q in found if q.stem in base["records"]]
    untimed = [] if args.records else [q.stem for q in found if q.stem not in base["records"]]
    if untimed:
        print(f"# not timed (no baseline; --records records/NAME.py times one): {', '.join(untimed)}")
    if not paths:
        print("ci_speed: no record files", file=sys.stderr)
        return 2
    if base.get("small") not in (None, SMALL):
        print(f"ci_speed: the baseline was measured in another setting ({base['small']} vs {SMALL}); "
              "write a new baseline", file=sys.stderr)
        return 2

    import jax

    from speedrun.measure import runlog

    measured = measure_all(paths)
    ratios = {k: v["ratio"] for k, v in measured.items() if "ratio" in v}
    rows = compare(ratios, base["records"], base["tolerance"])
    for row in rows:
        if "error" in measured.get(row["record"], {}):
            row["status"] = "error: " + measured[row["record"]]["error"]
    if args.records:  # a subset was asked for: the others are not "missing"
        rows = [r for r in rows if r["status"] != "missing"]
    device = runlog.device_description()
    print(f"\nCI speed check on {device}, jax {jax.__version__}; baseline {base.get('machine', '?')} "
          f"({base.get('measured', '?')})")
    print(format_table(rows, measured, base["tolerance"]))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "small": SMALL, "repeats": REPEATS, "device": device, "versions": runlog.versions(),
            "ratios": ratios, "measured": measured}, indent=2) + "\n")
    slower = [r["record"] for r in rows if r["status"] == "SLOWER"]
    print(f"# total {time.perf_counter() - t_start:.1f} s")
    if slower:
        print(f"ci_speed: FAIL: {', '.join(slower)} slower than baseline × (1 + {base['tolerance']})",
              file=sys.stderr)
        return 1
    print("ci_speed: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
