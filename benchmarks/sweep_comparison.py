"""Grid against genetic search on one trial budget, and Page's learning-rate rescale (issue 12).

    python benchmarks/sweep_comparison.py [--trials 12] [--seeds 2] [--rescale_seeds 3] [--epochs 2]
                                          [--width 0.0625] [--outdir benchmarks/results/sweeps] [--fresh]

On the bundled 5170-image real CIFAR-10 sample, at smoke scale (airbench94 shrunk by
:func:`speedrun.config.smoke`: width ``--width``, ``--epochs`` epochs, batch 256), on the CPU:

1. Grid against genetic search, the comparison of the source that pits brute force against a
   genetic algorithm (population 20, 10 generations there): the 12 points of
   ``sweeps/airbench94_compare_grid.py`` (learning rate × weight decay × label smoothing) against
   NSGA-II (``sweeps/airbench94_compare_genetic.py``: the same box as continuous ranges, population
   ``--trials // 3``, so 3 generations) on the same number of trials, every trial ``--seeds`` seeds.
   Written: ``grid/`` and ``genetic/`` (each a :func:`speedrun.sweep.report.write_report`: table,
   accuracy against each key, for the genetic search fitness per generation and the Pareto front)
   and ``best_so_far.png`` (the best mean accuracy found after each trial, both searches).
2. Page's rescale ("How to train your ResNet", 2018: he multiplied his whole learning-rate schedule
   by factors from 1/8 to 16): airbench94's schedule is ``optimizer.lr`` times a triangle, so the
   factor multiplies ``optimizer.lr``; Page's PyTorch weight decay is coupled (``lr · wd``), while
   airbench94's is decoupled (``speedrun.optim.airbench``), so the factor multiplies
   ``optimizer.weight_decay`` too — the same rescale of every step. ``--rescale_seeds`` seeds per
   factor; ``lr_rescale.png`` (tta accuracy, mean and 95% CI, against the factor).

Both write ``summary.json`` and ``summary.md`` (what each search found). The studies are kept in
``OUTDIR/comparison.db`` (SQLite): a killed run continues where it stopped (``--fresh`` starts
over). Every accuracy here is of the smoke-scale net on the sample, not a CIFAR-10 result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NOTE = "bundled 5170-image sample, smoke scale, CPU — not CIFAR-10 accuracy"
FACTORS = (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8, 16)


def _best_so_far(study) -> list[float | None]:
    best, out = None, []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if "duplicate_of" in t.user_attrs or "interrupted" in t.user_attrs:
            continue
        v = t.user_attrs.get("tta_acc_mean") if t.state.name == "COMPLETE" else None
        best = v if v is not None and (best is None or v > best) else best
        out.append(best)
    return out


def _plot_best(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), ys, "o-", ms=3, label=name)
    ax.set_xlabel("trials run")
    ax.set_ylabel("best mean tta_acc so far")
    ax.set_title(f"grid vs genetic search, same budget\n{NOTE}", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_rescale(rows: list[dict], base_lr: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("tta_acc_mean") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    lo = [r["tta_acc_mean"] - (r["tta_acc_ci_low"] if r["tta_acc_ci_low"] is not None else r["tta_acc_mean"]) for r in ok]
    hi = [(r["tta_acc_ci_high"] if r["tta_acc_ci_high"] is not None else r["tta_acc_mean"]) - r["tta_acc_mean"] for r in ok]
    ax.errorbar([r["factor"] for r in ok], [r["tta_acc_mean"] for r in ok], yerr=[lo, hi], fmt="o-", capsize=3)
    failed = [r["factor"] for r in rows if r.get("tta_acc_mean") is None]
    if failed:
        ax.plot(failed, [min((r["tta_acc_mean"] for r in ok), default=0.1)] * len(failed), "rx", label="diverged")
        ax.legend(fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"lr schedule factor (1 = optimizer.lr {base_lr})")
    ax.set_ylabel("tta_acc (mean, 95% CI)")
    ax.set_title(f"Page's rescale of airbench94's lr schedule\n{NOTE}", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--rescale_seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--width", type=float, default=0.0625)
    p.add_argument("--vmap", type=int, default=1)
    p.add_argument("--factors", default=",".join(f"{f:g}" for f in FACTORS), help="lr schedule factors")
    p.add_argument("--outdir", default=str(ROOT / "benchmarks/results/sweeps"))
    p.add_argument("--fresh", action="store_true", help="delete the studies of an earlier run first")
    args = p.parse_args(argv)

    from speedrun.system import env

    env.configure()
    import optuna

    from speedrun import config as config_lib
    from speedrun.data import load_cifar10
    from speedrun.sweep import loop, report
    from speedrun.sweep import study as study_lib
    from speedrun.sweep.runner import TrialRunner
    from speedrun.sweep.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "comparison.db"
    if args.fresh and db.exists():
        db.unlink()
    url = f"sqlite:///{db}"
    arrays = load_cifar10("sample")
    base = config_lib.smoke(config_lib.load_record("airbench94"), n_train=len(arrays[0]),
                            model__width_mult=args.width, epochs=args.epochs)
    runner = TrialRunner(base, arrays)
    seeds = list(range(args.seeds))
    settings = {"record": "airbench94", "smoke": True, "seeds": seeds, "width": args.width, "epochs": args.epochs}
    t_start = time.perf_counter()
    summary = {"note": NOTE, "record": "airbench94", "width_mult": args.width, "epochs": args.epochs,
               "seeds_per_trial": args.seeds, "trials": args.trials, "searches": {}}
    curves = {}
    for sampler, space_file in (("grid", "airbench94_compare_grid.py"), ("genetic", "airbench94_compare_genetic.py")):
        space = load_space(ROOT / "sweeps" / space_file, base)
        population = max(2, args.trials // 3)
        study = study_lib.open_study(url, f"compare-{sampler}", sampler, space, settings, seed=0, population=population)
        t0 = time.perf_counter()
        loop.run_trials(study, space, runner, args.trials, seeds, vmap=args.vmap,
                        log=lambda s, n=sampler: print(f"[{n}] {s}", flush=True))
        paths = report.write_report(study, out / sampler, note=NOTE)
        curves[f"{sampler}" + (f" (NSGA-II, population {population})" if sampler == "genetic" else "")] = \
            _best_so_far(study)
        summary["searches"][sampler] = {**report.summary(study), "wall_s": round(time.perf_counter() - t0, 1),
                                        "population": population if sampler == "genetic" else None,
                                        "report": {k: str(Path(v).relative_to(out)) for k, v in paths.items()}}
    _plot_best(curves, out / "best_so_far.png")

    t0 = time.perf_counter()
    lr, wd = float(base.optimizer.lr), float(base.optimizer.weight_decay)
    factors = [float(f) for f in args.factors.split(",")]
    values = [{"optimizer.lr": lr * f, "optimizer.weight_decay": wd * f} for f in factors]
    rows = []
    for f, results in zip(factors, loop._train(runner, values, list(range(args.rescale_seeds)), args.vmap)):
        attrs, error = study_lib.summarize(results)
        rows.append({"factor": f, "optimizer.lr": lr * f, "optimizer.weight_decay": wd * f, "error": error,
                     **{k: attrs.get(k) for k in ("tta_acc_mean", "tta_acc_ci_low", "tta_acc_ci_high", "tta_accs",
                                                  "train_time_median_s")}})
        print(f"[rescale] factor {f:g}: " + (f"tta_acc {attrs['tta_acc_mean']:.4f}" if error is None else error),
              flush=True)
    _plot_rescale(rows, lr, out / "lr_rescale.png")
    summary["lr_rescale"] = {"factors": rows, "wall_s": round(time.perf_counter() - t0, 1),
                             "seeds": args.rescale_seeds, "plot": "lr_rescale.png"}
    summary["compile_count"] = getattr(runner, "compile_count", None)
    summary["wall_s"] = round(time.perf_counter() - t_start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "summary.md").write_text(_markdown(summary))
    print((out / "summary.md").read_text())
    return 0


def _markdown(s: dict) -> str:
    head = (f"*{s['note']}* (width {s['width_mult']}, {s['epochs']} epochs, {s['seeds_per_trial']} seeds per "
            f"trial; {s['trials']} trials per search; {s['wall_s']} s in all, compiles: {s['compile_count']})")
    lines = ["## Grid vs genetic search, and Page's lr rescale — airbench94 at smoke scale", "", head, "",
             "| search | complete | failed | best trial | its values | best mean tta_acc | 95% CI |",
             "|---|---|---|---|---|---|---|"]
    for name, r in s["searches"].items():
        b = r["best"] or {}
        vals = ", ".join(f"{k}={v:.4g}" for k, v in (b.get("params") or {}).items())
        ci = (f"[{b['tta_acc_ci_low']:.4f}, {b['tta_acc_ci_high']:.4f}]" if b.get("tta_acc_ci_low") is not None else "—")
        lines.append(f"| {name} | {r['complete']} | {r['failed']} | {b.get('number')} | {vals} | "
                     f"{b.get('tta_acc_mean', float('nan')):.4f} | {ci} |")
    lines += ["", "| lr factor | optimizer.lr | tta_acc (mean) | 95% CI |", "|---|---|---|---|"]
    for r in s["lr_rescale"]["factors"]:
        if r["tta_acc_mean"] is None:
            lines.append(f"| {r['factor']:g} | {r['optimizer.lr']:.4g} | failed: {str(r['error'])[:60]} | |")
            continue
        ci = f"[{r['tta_acc_ci_low']:.4f}, {r['tta_acc_ci_high']:.4f}]" if r["tta_acc_ci_low"] is not None else "—"
        lines.append(f"| {r['factor']:g} | {r['optimizer.lr']:.4g} | {r['tta_acc_mean']:.4f} | {ci} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
