"""The frontier records' PyTorch sources on this GPU, each under its own clock, beside ours.

    python benchmarks/vs_source.py --source airbench94_muon=FILE --source hiverge94=FILE \\
        --source e1_curriculum94=DIR [--runs 5] [--data sample] [--ours RESULTS_DIR] [--out FILE.jsonl]

The sources are given as files; none is copied into this repository:
- a **script** (a file): KellerJordan/cifar10-airbench f1c599c ``airbench94_muon.py`` or
  hiverge/cifar10-speedrun 5cd49b1 ``cifar10_speedrun.py``. It runs as it is in a working folder
  that holds the data where its loader reads it (``cifar10/train.pt``, ``cifar10/test.pt``), with one
  change: its main loop's ``for run in range(200)`` becomes ``range(RUNS)`` (the copy and its diff
  are written beside its log). Its clock is its own (CUDA events around whitening, epochs and the
  final TTA), printed as the ``time_seconds`` of each run's ``eval`` row: ``train_time_s``'s rule.
- a **harness** (a folder): a checkout of fulcrumresearch/cifar-10-speedrun ddec65f, whose
  ``runners.harness.run_trials`` runs its target (``e1`` for e1_curriculum94, ``hiverge`` for
  hiverge94) for RUNS trials with ``$CIFAR_DATA`` pointing at the data. Nothing in its files is
  changed; the driver replaces its A100-SXM pin (``sxm_single_gpu_or_exit``, which exits on any other
  GPU) by the GPU's name. Its clock is ``compute_honest_s`` (per-trial prepare + training loop,
  evaluation excluded): ``fulcrum_time_s``'s rule.

Data: ``speedrun.data.load_cifar10(--data)``, rows tiled to 50000 / 10000 where fewer are present
(then the accuracies are not CIFAR-10 results; the output says so). With ``--ours`` (a folder of
``./run.sh bench`` result files from the same GPU), each source's median is printed next to our
record's median under the same rule, and their ratio (ours ÷ source; below 1: ours is faster).
Without torch or a CUDA device it says so and exits 0 (the sources are CUDA-only).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, Path(__file__).resolve().parent):  # run from a checkout without installing
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

#: record -> the fulcrum harness's target that runs its source (a folder given as the source)
HARNESS_TARGETS = {"e1_curriculum94": "e1", "hiverge94": "hiverge"}
SCRIPT_RECORDS = ("airbench94_muon", "hiverge94")  # the records whose source may be a script file
RUN_LOOP = re.compile(r"\bfor run in range\((\d+)\)")
DRIVER = '''import json, sys
sys.path.insert(0, {repo!r})
from runners import harness, targets
harness.sxm_single_gpu_or_exit = harness.gpu_name  # the A100-SXM pin lifted: the same-GPU comparison
out = harness.run_trials(targets.get({target!r}).cls(), data_path={data!r}, overrides={{}},
                         trial_ids=list(range({runs})), seed_base=0, container_id=0)
print("VS_SOURCE_RESULT " + json.dumps(out), flush=True)
'''


def parse_source(spec: str) -> tuple[str, Path]:
    """``RECORD=PATH`` -> ``(record, path)``.

    Raises:
      ValueError: no ``=``, an unknown record, a missing path, or a kind of path the record has no
        source of (a folder for airbench94_muon, a file for e1_curriculum94).
    """
    name, sep, path = spec.partition("=")
    known = sorted(set(SCRIPT_RECORDS) | set(HARNESS_TARGETS))
    if not sep or name not in known:
        raise ValueError(f"--source {spec!r}: write RECORD=PATH with RECORD one of {', '.join(known)}")
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"--source {spec!r}: {p} does not exist — give the source's file or checkout")
    if p.is_dir() and name not in HARNESS_TARGETS:
        raise ValueError(f"--source {spec!r}: {name}'s source is a script file, not a folder")
    if p.is_file() and name not in SCRIPT_RECORDS:
        raise ValueError(f"--source {spec!r}: {name}'s source is a checkout of fulcrumresearch/cifar-10-speedrun")
    return name, p


def patch_run_count(text: str, runs: int) -> str:
    """``text`` with its one ``for run in range(K)`` loop made ``range(runs)``.

    Raises:
      ValueError: the loop occurs other than once (a file other than the pinned source).
    """
    found = RUN_LOOP.findall(text)
    if len(found) != 1:
        raise ValueError(f"expected one 'for run in range(K)' main loop in the source, found {len(found)}: "
                         "give the file at the commit this script names")
    return RUN_LOOP.sub(f"for run in range({runs})", text)


def parse_eval_rows(output: str) -> list[dict[str, float]]:
    """The timed runs of an airbench-style log: the ``|``-separated table whose header has ``run``,
    ``epoch``, ``tta_val_acc`` and ``time_seconds`` cells; one row per run whose ``epoch`` is
    ``eval`` (the ``warmup`` run left out). Returns ``[{"run", "tta_acc" (fraction), "time_s"}]``."""
    cols: list[str] | None = None
    rows = []
    for line in output.splitlines():
        if "|" not in line:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if {"run", "epoch", "tta_val_acc", "time_seconds"} <= set(cells):
            cols = cells
        elif cols and len(cells) == len(cols):
            row = dict(zip(cols, cells))
            if row["epoch"] == "eval" and row["run"] != "warmup":
                rows.append({"run": int(row["run"]) if row["run"].isdigit() else row["run"],
                             "tta_acc": float(row["tta_val_acc"]), "time_s": float(row["time_seconds"])})
    return rows


def run_script(record: str, source: Path, runs: int, workdir: Path, write_data: Callable[[Path], None],
               python: str = sys.executable) -> dict[str, Any]:
    """Run a script source (patched by :func:`patch_run_count`) in ``workdir`` after
    ``write_data(workdir / "cifar10")``; its output goes to ``workdir/RECORD.log``.

    Raises:
      RuntimeError: it exits non-zero or prints fewer ``eval`` rows than ``runs``.
    """
    text = source.read_text()
    patched = patch_run_count(text, runs)
    workdir.mkdir(parents=True, exist_ok=True)
    write_data(workdir / "cifar10")
    copy = workdir / f"{record}_source.py"
    copy.write_text(patched)
    (workdir / f"{record}_source.diff").write_text("".join(difflib.unified_diff(
        text.splitlines(True), patched.splitlines(True), str(source), str(copy))))
    log = workdir / f"{record}.log"
    with open(log, "w") as f:
        rc = subprocess.run([python, copy.name], cwd=workdir, stdout=f, stderr=subprocess.STDOUT).returncode
    rows = parse_eval_rows(log.read_text())
    if rc != 0 or len(rows) < runs:
        raise RuntimeError(f"{record}'s source exited {rc} with {len(rows)} of {runs} runs: see {log}")
    return {"rule": "train_time_s", "runs": rows, "log": str(log)}


def run_harness(record: str, repo: Path, runs: int, workdir: Path, write_data: Callable[[Path], None],
                python: str = sys.executable) -> dict[str, Any]:
    """Run the fulcrum harness's target of ``record`` for ``runs`` trials (:data:`DRIVER`) on the
    data ``write_data(workdir / "data")`` writes; output in ``workdir/RECORD.log``.

    Raises:
      RuntimeError: the harness exits non-zero or prints no result.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    write_data(workdir / "data")
    driver = workdir / f"{record}_driver.py"
    driver.write_text(DRIVER.format(repo=str(repo.resolve()), target=HARNESS_TARGETS[record],
                                    data=str((workdir / "data").resolve()), runs=runs))
    log = workdir / f"{record}.log"
    env = {**os.environ, "CIFAR_DATA": str((workdir / "data").resolve())}
    with open(log, "w") as f:
        rc = subprocess.run([python, driver.name], cwd=workdir, env=env, stdout=f,
                            stderr=subprocess.STDOUT).returncode
    found = [ln for ln in log.read_text().splitlines() if ln.startswith("VS_SOURCE_RESULT ")]
    if rc != 0 or not found:
        raise RuntimeError(f"{record}'s harness exited {rc} with no result: see {log}")
    out = json.loads(found[-1].split(" ", 1)[1])
    rows = [{"run": t["global_trial_id"], "tta_acc": t["graded"], "time_s": t["compute_honest_s"],
             "train_loop_s": t["train_loop_s"]} for t in out["trials"]]
    return {"rule": "fulcrum_time_s", "runs": rows, "log": str(log), "build_s": out.get("build_s")}


def summarize(record: str, result: dict[str, Any], ours: dict[str, dict] | None = None) -> dict[str, Any]:
    """Median/min/max of the source's times and its mean accuracy; with ``ours`` (``{record:
    bench summary}``) our median under the same rule (``result["rule"]``) and the ratio ours ÷ source."""
    times = sorted(r["time_s"] for r in result["runs"])
    row = {"kind": "vs_source", "record": record, "rule": result["rule"], "n": len(times),
           "source_median_s": statistics.median(times), "source_min_s": times[0], "source_max_s": times[-1],
           "source_tta_acc": statistics.fmean(r["tta_acc"] for r in result["runs"]), **result}
    mine = (ours or {}).get(record, {}).get(result["rule"])
    if mine:
        row["ours_median_s"] = mine["median"]
        row["ratio"] = mine["median"] / row["source_median_s"]
    return row


def environment() -> list[str]:
    """Why the sources cannot run here (no torch, no CUDA device); empty when they can."""
    try:
        import torch
    except ImportError:
        return ["torch is not importable (the sources are PyTorch: a CUDA machine's image has it)"]
    return [] if torch.cuda.is_available() else [f"torch {torch.__version__} sees no CUDA device"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (the module docstring); returns the exit status (0 when there is nothing to run
    the sources on, 2 on a bad argument, 1 when a source fails)."""
    p = argparse.ArgumentParser(description="Time the frontier records' PyTorch sources on this GPU.")
    p.add_argument("--source", action="append", default=[], metavar="RECORD=PATH",
                   help=f"a source: RECORD one of {', '.join(sorted(set(SCRIPT_RECORDS) | set(HARNESS_TARGETS)))}")
    p.add_argument("--runs", type=int, default=5, help="timed runs of each source after its own warm-up (default 5)")
    p.add_argument("--data", default=None, help="CIFAR-10 location (speedrun.data.load_cifar10; 'sample' the bundled subset)")
    p.add_argument("--ours", type=Path, help="a folder of ./run.sh bench result files from this GPU")
    p.add_argument("--workdir", type=Path, default=Path("logs/vs_source"), help="the sources' working folders and logs")
    p.add_argument("--out", type=Path, help="append one JSON line per source to this file")
    args = p.parse_args(argv)
    try:
        sources = [parse_source(s) for s in args.source]
        if not sources or args.runs < 1:
            raise ValueError("give at least one --source RECORD=PATH and --runs >= 1")
    except ValueError as err:
        print(f"vs_source: error: {err}", file=sys.stderr)
        return 2
    reasons = environment()
    if reasons:
        print("vs_source: the PyTorch sources need torch and a CUDA GPU; not run here: " + "; ".join(reasons))
        return 0
    from ab_summary import summaries
    from speedrun import data
    from vs_airbench import full_shape_arrays, write_cifar_pt

    arrays, note = full_shape_arrays(data.load_cifar10(args.data))
    if note:
        print(f"# {note}")
    ours = summaries(args.ours) if args.ours else None
    failed = 0
    for record, path in sources:
        run = run_harness if path.is_dir() else run_script
        try:
            result = run(record, path, args.runs, args.workdir / record, lambda d: write_cifar_pt(arrays, d))
        except (RuntimeError, ValueError) as err:
            print(f"vs_source: {record}: {err}")
            failed += 1
            continue
        row = summarize(record, result, ours)
        row.update(source=str(path), data_note=note, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        ratio = f"; ours {row['ours_median_s']:.3f} s, ratio {row['ratio']:.3f}" if "ratio" in row else ""
        print(f"{record}: source median {row['source_median_s']:.3f} s [{row['source_min_s']:.3f}, "
              f"{row['source_max_s']:.3f}] ({row['rule']}'s rule, n={row['n']}), tta_acc {row['source_tta_acc']:.4f}{ratio}")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
