"""Records table and accuracy-versus-time plot from ``bench`` results: :func:`run`, or
``./run.sh report [folder]``.

Reads every ``*.jsonl`` file under the folder (default ``logs/bench``, where ``./run.sh bench``
writes; the committed GPU results are in ``benchmarks/results``; :mod:`speedrun.measure.bench`:
one ``"kind": "run"`` line per seed with its epoch history, then one ``"kind": "summary"`` line), prints the records table in markdown — the README's —
and writes it to ``{folder}/records_table.md``, and draws ``{folder}/accuracy_vs_time.png``: test
accuracy versus timed training seconds for every record and run (each run's final TTA accuracy as a
dot, its per-epoch accuracies as a thin line), with the sources' published points marked as stars
(:data:`PUBLISHED`). Different devices are different markers' colours and labels: compare times
only within one device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from speedrun.measure import stats

#: Published (accuracy, time) points of the sources, as their authors report them.
PUBLISHED: list[dict[str, Any]] = [
    {"record": "94pct_26s", "label": "Page ResNet-9 (V100)", "tta_acc": 0.941, "time_s": 26.0,
     "hardware": "1× V100", "source": "D. Page, How to train your ResNet 8: bag of tricks (myrtle.ai, 2019)"},
    {"record": "airbench94", "label": "airbench94 (A100)", "tta_acc": 0.9401, "time_s": 3.83,
     "hardware": "1× A100", "source": "K. Jordan, airbench README / arXiv:2404.00498 (mean of 1000 runs)"},
    {"record": "airbench94_muon", "label": "airbench94_muon (A100)", "tta_acc": 0.9401, "time_s": 2.59,
     "hardware": "1× A100", "source": "K. Jordan, cifar10-airbench airbench94_muon.py (mean of 200 runs)"},
    {"record": "resnet20_stacked", "label": "ResNet-20 stacked (4×1080 Ti)", "tta_acc": 0.934, "time_s": 32.0,
     "hardware": "4× GTX 1080 Ti", "source": "Solomatov & Stepanov 2017, fast ResNet-20 report"},
]


def load_results(folder: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All run and summary lines of the ``*.jsonl`` files under ``folder`` (recursively).

    Returns:
      ``(runs, summaries)``; every dict gains ``"file"`` (its path relative to ``folder``).

    Raises:
      ValueError: ``folder`` is not a folder, holds no ``.jsonl`` file, or a line is not a JSON object
        with ``kind`` ``"run"`` or ``"summary"`` (the message names file and line).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"no results folder {folder} — write results with ./run.sh bench RECORD "
                         "--outdir=FOLDER first")
    files = sorted(folder.rglob("*.jsonl"))
    if not files:
        raise ValueError(f"no *.jsonl result files under {folder} — run ./run.sh bench RECORD --outdir={folder}")
    runs, summaries = [], []
    for path in files:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{i}: not JSON ({err}) — delete or fix that line")
            kind = row.get("kind") if isinstance(row, dict) else None
            if kind not in ("run", "summary"):
                raise ValueError(f"{path}:{i}: expected a bench line with kind 'run' or 'summary' — is it a bench result file?")
            row["file"] = str(path.relative_to(folder))
            (runs if kind == "run" else summaries).append(row)
    return runs, summaries


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f}"


def summary_row(s: dict[str, Any]) -> list[str]:
    """The table cells of one bench summary (see :func:`records_table` for the columns)."""
    acc, t, ttt = s["tta_acc"], s["train_time_s"], s.get("time_to_target_s")
    ci = "" if acc.get("ci_low") is None else f" [{_pct(acc['ci_low'])}, {_pct(acc['ci_high'])}]"
    data = f"{s['dataset']} {s['train_images']}" + (f" (tiled from {s['tiled_from']})" if s.get("tiled_from") else "")
    mfu_peak = "-" if s.get("mfu_vs_peak") is None else f"{s['mfu_vs_peak']:.1%}"
    return [
        s["record"], s["device"], data, f"{s['epochs']}", f"{s['precision']}", f"{s['width_mult']:g}",
        f"{s['runs']}",
        f"{_pct(acc['mean'])} ± {_pct(acc['std'])}{ci}",
        f"{s['share_at_target']:.0%} ≥ {_pct(s['target_acc'], 1)}",
        f"{t['median']:.2f} [{t['min']:.2f}, {t['max']:.2f}]",
        "-" if not ttt else f"{ttt['median']:.2f} ({ttt['reached']}/{s['runs']})",
        f"{s['compile_time_s']:.1f}",
        f"{s['images_per_s']:.0f}",
        f"{s['train_flops'] / 1e15:.4f}",
        f"{s['achieved_flops_per_s'] / 1e12:.2f}",
        "-" if s.get("mfu_vs_matmul") is None else f"{s['mfu_vs_matmul']:.1%}",
        mfu_peak,
    ]


COLUMNS = ["record", "device", "train data", "epochs", "precision", "width", "runs",
           "tta_acc % mean ± std [95% CI]", "share at target", "train s median [min, max]",
           "to target s (reached)", "compile s", "images/s", "train PFLOPs", "TFLOP/s",
           "MFU vs matmul", "MFU vs peak"]


def records_table(summaries: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per bench summary (sorted by record, device, time), then the published
    figures. Columns: record; device; training data (dataset and image count, tiling stated);
    epochs; precision; width multiplier; runs; TTA test accuracy mean ± sample std with the 95%
    Student-t interval of the mean (%); share of runs at or above the target; timed training
    seconds median [min, max]; DAWNBench time to target (median over the runs that reached it);
    one-time compile seconds; training images/s; training PFLOPs per run; achieved TFLOP/s; MFU
    against a dense matmul measured in the same process and against the datasheet peak."""
    rows = sorted(summaries, key=lambda s: (s["record"], s["device"], s["train_time_s"]["median"]))
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(summary_row(s)) + " |" for s in rows]
    out += ["", "Published figures of the sources:", "",
            "| record | tta_acc % | time s | hardware | source |", "|---|---|---|---|---|"]
    out += [f"| {p['record']} | {p['tta_acc'] * 100:.2f} | {p['time_s']:g} | {p['hardware']} | {p['source']} |"
            for p in PUBLISHED]
    return "\n".join(out)


def is_full_cifar10(result: dict[str, Any]) -> bool:
    """Whether a bench run or summary line is a full CIFAR-10 result (50000 train / 10000 test real
    images, not tiled); anything else — the bundled sample, a tiled subset — is a subset result."""
    return result.get("dataset") == "cifar10" and not result.get("tiled_from")


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("the plot needs matplotlib: pip install -e '.[report]' (or pip install matplotlib)") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panel(ax, plt, runs: Sequence[dict[str, Any]], title: str) -> None:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["record"], r["device"], r.get("precision", "?")), []).append(r)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ((record, device, prec), rs) in enumerate(sorted(groups.items())):
        c = colors[i % len(colors)]
        for r in rs:
            pts = [(row["elapsed_s"], stats.epoch_accuracy(row)) for row in r.get("history", [])]
            pts = [(t, a * 100) for t, a in pts if a is not None]
            if len(pts) > 1:
                ax.plot(*zip(*pts), color=c, alpha=0.25, linewidth=0.8)
        ax.scatter([r["train_time_s"] for r in rs], [r["tta_acc"] * 100 for r in rs], color=c, s=18,
                   label=f"{record} — {device}, {prec} ({len(rs)} runs)", zorder=3)
    ax.set_xscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("training time, s (timed: whitening + epochs + final TTA; compilation and per-epoch "
                  "evaluation excluded)", fontsize=7)
    ax.set_ylabel("test accuracy, % (final: TTA; per epoch: no TTA)", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)


def plot(runs: Sequence[dict[str, Any]], path: str | Path, published: Sequence[dict[str, Any]] = PUBLISHED) -> Path:
    """Accuracy (%) versus timed training seconds (log scale) as a PNG with two panels: full
    CIFAR-10 results with the sources' published points (stars), and subset results (the bundled
    sample, tiled subsets), which are not comparable with CIFAR-10 figures. Each point group is
    labelled with record, device and precision.

    Raises:
      ImportError: matplotlib is not installed (``pip install -e '.[report]'``).
    """
    plt = _pyplot()
    fig, (full_ax, sub_ax) = plt.subplots(1, 2, figsize=(14, 6))
    _panel(full_ax, plt, [r for r in runs if is_full_cifar10(r)],
           "full CIFAR-10 (50000 train / 10000 test) and the sources' published figures")
    for i, p in enumerate(sorted(published, key=lambda q: q["time_s"])):
        full_ax.scatter([p["time_s"]], [p["tta_acc"] * 100], marker="*", s=220, color="black", zorder=4)
        # labels alternate below and above their stars: neighbours in time do not overprint
        full_ax.annotate(p["label"], (p["time_s"], p["tta_acc"] * 100), textcoords="offset points",
                         xytext=(6, -14 if i % 2 == 0 else 8), fontsize=8)
    full_ax.scatter([], [], marker="*", s=120, color="black", label="published (sources' hardware)")
    subset = [r for r in runs if not is_full_cifar10(r)]
    _panel(sub_ax, plt, subset, "subset results (bundled sample or tiled rows): NOT CIFAR-10 accuracy")
    if not subset:
        sub_ax.text(0.5, 0.5, "no subset results", transform=sub_ax.transAxes, ha="center")
    for ax in (full_ax, sub_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("CIFAR-10 speed records: accuracy vs training time (compare times within one device)", fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curves(run: dict[str, Any], path: str | Path) -> Path:
    """Training curves of one bench run as a PNG: mean training loss and test accuracy (evaluated
    model, %, no TTA per epoch; TTA at the last epoch) per epoch, titled with record, device,
    precision, seed and dataset.

    Raises:
      ValueError: the run has no per-epoch history; ImportError: no matplotlib.
    """
    hist = run.get("history") or []
    if not hist:
        raise ValueError(f"run of {run.get('record')!r} seed {run.get('seed')} has no per-epoch history — bench without --no_epoch_eval")
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [h["epoch"] for h in hist]
    loss_ax.plot(epochs, [h["train_loss"] for h in hist], marker="o")
    loss_ax.set(xlabel="epoch", ylabel="training loss (mean over the epoch's batches)")
    pts = [(h["epoch"], stats.epoch_accuracy(h)) for h in hist]
    pts = [(e, a * 100) for e, a in pts if a is not None]
    if pts:
        acc_ax.plot(*zip(*pts), marker="o")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy, % (last epoch: TTA)")
    for ax in (loss_ax, acc_ax):
        ax.grid(True, alpha=0.3)
    kind = "full CIFAR-10" if is_full_cifar10(run) else "subset (not CIFAR-10 accuracy)"
    fig.suptitle(f"{run['record']} — {run['device']}, {run.get('precision')}, seed {run['seed']}, {kind}", fontsize=9)
    fig.tight_layout()
    return _save(fig, plt, path)


def run(folder: str | Path = "logs/bench", table: str | Path | None = None, plot_path: str | Path | None = None,
        curves_record: str | None = None, log=print) -> dict[str, Any]:
    """Read the bench results under ``folder``, print the records table, write it (default
    ``{folder}/records_table.md``), the plot (default ``{folder}/accuracy_vs_time.png``) and the
    training curves (``{folder}/training_curves.png``) of the latest run of ``curves_record``
    (default: the latest run of all).

    Returns:
      ``{"table": markdown str, "table_path": Path, "plot_path": Path, "curves_path": Path or None,
      "runs": int, "summaries": int}``.

    Raises:
      ValueError: see :func:`load_results`.
    """
    runs, summaries = load_results(folder)
    text = records_table(summaries)
    table_path = Path(table or Path(folder) / "records_table.md")
    table_path.write_text(text + "\n")
    png = plot(runs, plot_path or Path(folder) / "accuracy_vs_time.png")
    chosen = [r for r in runs if curves_record in (None, r["record"]) and r.get("history")]
    if curves_record is not None and not chosen:
        raise ValueError(f"no run of record {curves_record!r} with a history under {folder} — known: "
                         f"{sorted({r['record'] for r in runs})}")
    curves_png = curves(chosen[-1], Path(folder) / "training_curves.png") if chosen else None
    if log:
        log(text)
        log(f"# wrote {table_path}, {png}" + (f", {curves_png}" if curves_png else "")
            + f" ({len(summaries)} summaries, {len(runs)} runs)")
    return {"table": text, "table_path": table_path, "plot_path": png, "curves_path": curves_png, "runs": len(runs),
            "summaries": len(summaries)}
