"""A sweep's report: a markdown table of the best trials (mean tta accuracy, 95% CI) and PNG plots.

``./run.sh sweep ... --report`` writes, into ``WORKDIR/STUDY/``: ``report.md`` (:func:`markdown`),
``accuracy_vs_keys.png`` (mean tta accuracy against each swept key, 95% CI bars; failed trials as
red crosses), and for the genetic sampler ``generations.png`` (best and mean fitness per NSGA-II
generation) and ``pareto.png`` (accuracy against median train time; the Pareto front of the two
objectives, ``study.best_trials``). Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

GENERATION_KEY = "NSGAIISampler:generation"


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "tta_acc_mean" in t.user_attrs]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _ci(t: optuna.trial.FrozenTrial) -> str:
    lo, hi = t.user_attrs.get("tta_acc_ci_low"), t.user_attrs.get("tta_acc_ci_high")
    return f"[{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else "— (1 seed)"


def summary(study: optuna.Study) -> dict[str, Any]:
    """JSON-friendly counts and best trial of ``study``: ``{"study", "complete", "failed" (an error of
    their own), "interrupted" (failed without one: the worker was lost; re-queued), "duplicates", "best": {"number", "params", "tta_acc_mean", "tta_acc_ci_low",
    "tta_acc_ci_high", "train_time_median_s"} or None, "pareto": [trial numbers] (two objectives)}``."""
    trials = study.get_trials(deepcopy=False)
    done = sorted(_complete(study), key=lambda t: -t.user_attrs["tta_acc_mean"])
    keys = ("tta_acc_mean", "tta_acc_ci_low", "tta_acc_ci_high", "tta_accs", "train_time_median_s")
    best = ({"number": done[0].number, "params": done[0].params, **{k: done[0].user_attrs.get(k) for k in keys}}
            if done else None)
    out = {"study": study.study_name, "complete": len(done),
           "failed": sum(t.state == TrialState.FAIL and "error" in t.user_attrs for t in trials),
           "interrupted": sum(t.state == TrialState.FAIL and "error" not in t.user_attrs for t in trials),
           "duplicates": sum("duplicate_of" in t.user_attrs for t in trials), "best": best}
    if len(study.directions) == 2:
        out["pareto"] = sorted(t.number for t in study.best_trials)
    return out


def markdown(study: optuna.Study, note: str | None = None, top: int = 10) -> str:
    """The report's markdown: counts, the ``top`` trials by mean tta accuracy (params, mean, 95% CI,
    seeds, median train time s, compile time s; the Pareto front marked for two objectives) and the
    failed trials with their errors. ``note`` (e.g. the data and scale) heads the table."""
    s = summary(study)
    settings = study.user_attrs.get("sweep", {})
    keys = list(settings.get("space", {})) or sorted({k for t in study.get_trials(deepcopy=False) for k in t.params})
    pareto = set(s.get("pareto", []))
    lines = [f"## Sweep `{study.study_name}`", ""]
    if note:
        lines += [f"*{note}*", ""]
    lines += [(f"Sampler {settings.get('sampler', '?')}, record {settings.get('record', '?')}; "
               f"{s['complete']} complete, {s['failed']} failed, {s['interrupted']} interrupted (re-queued), "
               f"{s['duplicates']} duplicate grid picks skipped."), ""]
    head = ["rank", "trial", *keys, "tta_acc (mean)", "95% CI", "seeds", "train s (median)", "compile s"]
    if pareto:
        head.append("Pareto")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    done = sorted(_complete(study), key=lambda t: -t.user_attrs["tta_acc_mean"])
    for rank, t in enumerate(done[:top], 1):
        a = t.user_attrs
        row = [rank, t.number, *(_fmt(t.params.get(k, "")) for k in keys), f"{a['tta_acc_mean']:.4f}", _ci(t),
               len(a.get("tta_accs", [])), f"{a['train_time_median_s']:.2f}", f"{a.get('compile_time_s', 0.0):.1f}"]
        if pareto:
            row.append("✓" if t.number in pareto else "")
        lines.append("| " + " | ".join(map(str, row)) + " |")
    lines += ["", ("compile s: the compile time of the executable the trial ran, shared by every trial of the "
                   "same shapes (paid once; traced keys do not recompile).")]
    failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if "error" in t.user_attrs]
    if failed:
        lines += ["", "Failed trials:", "", "| trial | values | error |", "|---|---|---|"]
        for t in failed:
            err = " ".join(str(t.user_attrs["error"]).split())[:160].replace("|", "/")
            lines.append(f"| {t.number} | {', '.join(f'{k}={_fmt(v)}' for k, v in t.params.items())} | {err} |")
    return "\n".join(lines) + "\n"


def _log_axis(study: optuna.Study, key: str, values: list) -> bool:
    dist = next((t.distributions[key] for t in study.get_trials(deepcopy=False) if key in t.distributions), None)
    if not isinstance(dist, optuna.distributions.CategoricalDistribution):
        return bool(getattr(dist, "log", False))
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return len(nums) == len(values) and nums and min(nums) > 0 and max(nums) / min(nums) >= 8


def _figure(n: int, note: str | None, title: str):
    import matplotlib  # noqa: PLC0415 (only when a report is written)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, n, figsize=(max(4.2 * n, 6.0), 3.8), squeeze=False)
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=8)
    return plt, fig, axes[0]


def _errbars(trials) -> tuple[list, list]:
    ys = [t.user_attrs["tta_acc_mean"] for t in trials]
    lo = [y - (t.user_attrs.get("tta_acc_ci_low") if t.user_attrs.get("tta_acc_ci_low") is not None else y)
          for y, t in zip(ys, trials)]
    hi = [(t.user_attrs.get("tta_acc_ci_high") if t.user_attrs.get("tta_acc_ci_high") is not None else y) - y
          for y, t in zip(ys, trials)]
    return ys, [lo, hi]


def plot_keys(study: optuna.Study, path: str | Path, note: str | None = None) -> None:
    """``path`` (PNG): mean tta accuracy against each swept key, 95% CI bars (none for 1 seed);
    failed trials as red crosses at the lowest accuracy shown. Raises ValueError: no complete trial."""
    done = _complete(study)
    if not done:
        raise ValueError(f"study {study.study_name!r} has no complete trial to plot — run the sweep first")
    keys = list(study.user_attrs.get("sweep", {}).get("space", {})) or sorted(done[0].params)
    failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if "error" in t.user_attrs]
    plt, fig, axes = _figure(len(keys), note, f"sweep {study.study_name}: tta accuracy (mean, 95% CI)")
    floor = min(t.user_attrs["tta_acc_mean"] for t in done)
    for ax, key in zip(axes, keys):
        xs = [t.params[key] for t in done]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        labels = sorted({repr(x) for x in xs + [t.params.get(key) for t in failed if key in t.params]})
        pos = (lambda x: x) if numeric else (lambda x, labels=labels: labels.index(repr(x)))
        ys, err = _errbars(done)
        ax.errorbar([pos(x) for x in xs], ys, yerr=err, fmt="o", ms=4, capsize=3, alpha=0.8)
        fx = [t.params[key] for t in failed if key in t.params and (numeric or repr(t.params[key]) in labels)]
        if fx:
            ax.plot([pos(x) for x in fx], [floor] * len(fx), "rx", label="failed")
            ax.legend(fontsize=7)
        if numeric and _log_axis(study, key, xs):
            from matplotlib import ticker  # noqa: PLC0415

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        if not numeric:
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(key)
        ax.set_ylabel("tta_acc")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_generations(study: optuna.Study, path: str | Path, note: str | None = None) -> None:
    """``path`` (PNG): best and mean fitness (mean tta accuracy) of the complete trials of each NSGA-II
    generation. Raises ValueError: no complete trial with a generation."""
    gens: dict[int, list[float]] = {}
    for t in _complete(study):
        if GENERATION_KEY in t.system_attrs:
            gens.setdefault(int(t.system_attrs[GENERATION_KEY]), []).append(t.user_attrs["tta_acc_mean"])
    if not gens:
        raise ValueError(f"study {study.study_name!r} has no genetic-sampler generations to plot")
    g = sorted(gens)
    plt, fig, (ax,) = _figure(1, note, f"sweep {study.study_name}: fitness per generation")
    ax.plot(g, [max(gens[i]) for i in g], "o-", label="best")
    ax.plot(g, [sum(gens[i]) / len(gens[i]) for i in g], "s--", label="mean")
    from matplotlib import ticker  # noqa: PLC0415

    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("generation")
    ax.set_ylabel("tta_acc (mean over seeds)")
    _save(plt, fig, ax, path)


def plot_pareto(study: optuna.Study, path: str | Path, note: str | None = None) -> None:
    """``path`` (PNG): mean tta accuracy (95% CI) against median train time (s) of every complete
    trial, the Pareto front (``study.best_trials``) joined. Raises ValueError: not two objectives, or
    no complete trial."""
    done = _complete(study)
    if len(study.directions) != 2 or not done:
        raise ValueError(f"study {study.study_name!r} has no two-objective trials for a Pareto front")
    front = sorted((t for t in study.best_trials if "tta_acc_mean" in t.user_attrs),
                   key=lambda t: t.user_attrs["train_time_median_s"])
    plt, fig, (ax,) = _figure(1, note, f"sweep {study.study_name}: accuracy vs train time")
    ys, err = _errbars(done)
    ax.errorbar([t.user_attrs["train_time_median_s"] for t in done], ys, yerr=err, fmt="o", ms=3, color="0.6",
                capsize=2, label="trials")
    ax.plot([t.user_attrs["train_time_median_s"] for t in front], [t.user_attrs["tta_acc_mean"] for t in front],
            "o-", color="C3", label="Pareto front")
    ax.set_xlabel("train time, median over seeds (s)")
    ax.set_ylabel("tta_acc (mean over seeds)")
    _save(plt, fig, ax, path)


def _save(plt, fig, ax, path: str | Path) -> None:
    """Legend, grid, tight layout; write ``path`` (PNG, 110 dpi) and close the figure."""
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def default_note(study: optuna.Study) -> str | None:
    """What the accuracies are of, when not full CIFAR-10 at the record's scale: e.g. ``"5170-image
    CIFAR-10 subset, smoke scale, cpu — not CIFAR-10 accuracy"``; ``None`` for full CIFAR-10."""
    done = _complete(study)
    smoke = study.user_attrs.get("sweep", {}).get("smoke", False)
    subset = done and done[0].user_attrs.get("dataset", "cifar10") != "cifar10"
    if not (subset or smoke):
        return None
    n = done[0].user_attrs.get("train_images") if done else None
    data = f"{n}-image CIFAR-10 subset" if subset and n else ("CIFAR-10 subset" if subset else "CIFAR-10")
    device = done[0].user_attrs.get("device") if done else None
    return ", ".join(filter(None, [data, "smoke scale" if smoke else None, device])) + " — not CIFAR-10 accuracy"


def write_report(study: optuna.Study, outdir: str | Path, note: str | None = None) -> dict[str, str]:
    """Write ``report.md`` and the plots that apply (module docstring) into ``outdir``; return
    ``{name: path}``. ``note`` defaults to :func:`default_note`. Raises ValueError: no complete trial."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    note = note if note is not None else default_note(study)
    paths = {"table": out / "report.md", "accuracy_vs_keys": out / "accuracy_vs_keys.png"}
    paths["table"].write_text(markdown(study, note))
    plot_keys(study, paths["accuracy_vs_keys"], note)
    if any(GENERATION_KEY in t.system_attrs for t in _complete(study)):
        paths["generations"] = out / "generations.png"
        plot_generations(study, paths["generations"], note)
    if len(study.directions) == 2:
        paths["pareto"] = out / "pareto.png"
        plot_pareto(study, paths["pareto"], note)
    return {k: str(v) for k, v in paths.items()}
