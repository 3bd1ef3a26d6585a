# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Page's bag of tricks, one trick at a time
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/speedrun/blob/main/notebooks/bag_of_tricks.ipynb)
#
# David Page, "How to train your ResNet 8: bag of tricks" (myrtle.ai, 2019) takes ResNet-9 from a
# baseline to 94% in 26 s by adding, one after another: label smoothing, CELU, ghost batch norm,
# a frozen batch-norm scale, input patch whitening, an exponential moving average (EMA) of the
# weights and test-time augmentation (TTA). This notebook replays that ablation on
# `records/94pct_26s.py`: the record with every trick off is the baseline, each row adds one, and
# each point is a multi-seed mean with its 95% confidence interval and train time.
#
# `SCALE = "full"`: a GPU and full CIFAR-10 at full width, every trick its own step. `SCALE =
# "smoke"`: a CPU, 512 images of the bundled real sample and a shrunk net, with the five tricks
# before the EMA (label smoothing, CELU, ghost batch norm, frozen scale, whitening) added as one
# step, so that the notebook compiles three programs instead of seven: **sample figures, not
# CIFAR-10 accuracy**; whether a step helps at that scale is read off the printed intervals below,
# and a trick that pays off late in a long run (an EMA) need not show it in a dozen steps.

# %%
# Colab only: install this package from its repository, as `pip install "git+URL"` does (nothing is
# cloned or put on sys.path; does nothing elsewhere). The one place its URL is written.
REPO_URL = "https://github.com/OWNER/speedrun"
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"speedrun[report] @ git+{REPO_URL}"], check=True)

# %% tags=["parameters"]
SCALE = "smoke"  # "full": GPU + full CIFAR-10; "smoke": CPU + the bundled sample
import os

# seeds per point: CI runs 2 (smoke); the committed outputs ran with SPEEDRUN_NOTEBOOK_SEEDS=8, as printed below
SEEDS = int(os.environ.get("SPEEDRUN_NOTEBOOK_SEEDS", 2 if SCALE == "smoke" else 5))

# %%
from speedrun.system import env

env.configure()  # XLA flags before JAX starts
import matplotlib.pyplot as plt

import speedrun
from speedrun.data import load_cifar10
from speedrun.measure import bench, runlog

print("device:", runlog.device_description(), "| scale:", SCALE, "| seeds per point:", SEEDS)
data = load_cifar10("sample" if SCALE == "smoke" else None)
if SCALE == "smoke":  # 512 training images: 2 steps an epoch (a CPU compiles the epoch unrolled: short compiles)
    data = (data[0][:512], data[1][:512], data[2], data[3])

# %% [markdown]
# ## The steps: each is the previous one plus one trick (the last is the record itself)

# %%
BASELINE = {"label_smoothing": 0.0, "model.activation": "relu", "model.ghost_batch_size": None,
            "model.bn_scale": True, "model.whiten": False, "whitening.num_images": 0,
            "ema.enabled": False, "tta_level": 0}
STEPS = [("baseline", {}),
         ("+ label smoothing 0.2", {"label_smoothing": 0.2}),
         ("+ CELU (α 0.3)", {"model.activation": "celu"}),
         ("+ ghost batch norm (32)", {"model.ghost_batch_size": 32}),
         ("+ frozen BN scale", {"model.bn_scale": False}),
         ("+ patch whitening", {"model.whiten": True, "whitening.num_images": 10000}),
         ("+ EMA", {"ema.enabled": True, "tta_level": 1})]  # the EMA row reads acc (no TTA) ...
# ... and the last row, "+ TTA (mirror)", the same runs' tta_acc: TTA changes evaluation only
SMOKE = {"epochs": 6, "batch_size": 256, "optimizer__lr_knots": [0.0, 1.5, 6.0]}  # warm up, then decay to the end
if SCALE == "smoke":  # the tricks before the EMA as one step: 3 compiled programs instead of 7
    merged = {k: v for _, change in STEPS[1:6] for k, v in change.items()}
    STEPS = [STEPS[0], ("+ LS, CELU, GBN, BN, whiten", merged), *STEPS[6:]]

rows, settings = [], dict(BASELINE)
for name, change in STEPS:
    settings.update(change)
    config = speedrun.load_record("94pct_26s", settings)
    if SCALE == "smoke":
        config = speedrun.smoke(config, **SMOKE)
    runs, s = bench.run(config, SEEDS, target=0.94, arrays=data, per_epoch_eval=False, matmul=False, log=None)
    for label, acc in [(name, s["acc"])] + ([("+ TTA (mirror)", s["tta_acc"])] if name == "+ EMA" else []):
        rows.append({"step": label, "mean": acc["mean"], "low": acc["ci_low"], "high": acc["ci_high"],
                     "time_s": s["train_time_s"]["median"]})

for r in rows:
    low, high = (r["mean"] if v is None else v for v in (r["low"], r["high"]))  # one seed: no interval
    print(f"{r['step']:<26} test acc {100 * r['mean']:6.2f}% [{100 * low:.2f}, {100 * high:.2f}]  "
          f"train {r['time_s']:.2f} s  ({SEEDS} seeds)")

# %%
fig, (ax, tx) = plt.subplots(1, 2, figsize=(12, 4))
names = [r["step"] for r in rows]
means = [100 * r["mean"] for r in rows]
err = [[100 * (r["mean"] - (r["low"] if r["low"] is not None else r["mean"])) for r in rows],
       [100 * ((r["high"] if r["high"] is not None else r["mean"]) - r["mean"]) for r in rows]]
ax.errorbar(range(len(rows)), means, yerr=err, marker="o", capsize=3)
ax.set_xticks(range(len(rows)), names, rotation=35, ha="right", fontsize=8)
ax.set_ylabel("test accuracy, % (mean, 95% CI)")
ax.set_title(f"ablation on {'full CIFAR-10' if SCALE == 'full' else 'the bundled sample (not CIFAR-10)'}")
tx.bar(range(len(rows)), [r["time_s"] for r in rows])
tx.set_xticks(range(len(rows)), names, rotation=35, ha="right", fontsize=8)
tx.set_ylabel("train time, s (median)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What the numbers say
# The conclusions below are drawn from the table this run printed (re-run at `SCALE = "full"` on a
# GPU for the record's own scale): for each step, whether the change in accuracy is larger than
# the confidence intervals, and what it cost in time.

# %%
for prev, cur in zip(rows, rows[1:]):
    delta = 100 * (cur["mean"] - prev["mean"])
    overlap = (cur["low"] is None or prev["high"] is None or cur["low"] <= prev["high"]) and \
        (prev["low"] is None or cur["high"] is None or prev["low"] <= cur["high"])
    verdict = "within the noise of this many seeds" if overlap else ("a real gain" if delta > 0 else "a real loss")
    print(f"{cur['step']:<26} {delta:+6.2f} points ({verdict}); time {cur['time_s'] - prev['time_s']:+.2f} s")

# %% [markdown]
# ## Data selection on and off: airbench96 with a proxy net choosing each batch's hardest half
#
# airbench96_faster (KellerJordan/cifar10-airbench `airbench96_faster.py`) is airbench96 trained
# on the 512 highest-loss examples of every batch of 1024, chosen by a small proxy net (widths
# 32/64/64, two convolutions per group) that scores every batch and trains on one step in four,
# inside the compiled epoch and on the clock (docs/selection.md). The same `config.select` block
# goes on any record: here airbench96 without and with it, the rest equal. At `SCALE = "smoke"`
# (the 512 sample images, a shrunk net, 6 epochs) these are **sample figures, not CIFAR-10
# accuracy**; the source's claim is about the full schedule (96.00% in 27.3 s against 96.03% in
# 34.7 s on an A100).

# %%
SELECT_SMOKE = {"epochs": 6, "batch_size": 256}  # 12 steps: 3 proxy updates
selection_rows = []
for name, on in (("airbench96", False), ("airbench96 + selection", True)):
    config = speedrun.load_record("airbench96")
    if on:  # airbench96_faster's block: keep 0.5, period 4, proxy 32/64/64
        config.select = speedrun.load_record("airbench96_faster").select
    if SCALE == "smoke":
        config = speedrun.smoke(config, n_train=len(data[0]), **SELECT_SMOKE)
    runs, s = bench.run(config, SEEDS, target=0.96, arrays=data, per_epoch_eval=False, matmul=False, log=None)
    acc = s["tta_acc"]
    selection_rows.append({"name": name, **acc, "time_s": s["train_time_s"]["median"]})
    low, high = (acc["mean"] if acc[k] is None else acc[k] for k in ("ci_low", "ci_high"))
    print(f"{name:<24} tta acc {100 * acc['mean']:6.2f}% [{100 * low:.2f}, {100 * high:.2f}]  "
          f"train {s['train_time_s']['median']:.2f} s  ({SEEDS} seeds)")
off, on = selection_rows
print(f"selection: {100 * (on['mean'] - off['mean']):+.2f} points, {on['time_s'] - off['time_s']:+.2f} s "
      "(the proxy's forward and backward passes included)")

# %% [markdown]
# ## What selection did here
# In the run committed with this notebook (8 seeds, `SCALE = "smoke"`, CPU, the 512-image sample:
# sample figures, not CIFAR-10 accuracy) selection cut the median training time from 6.32 s to
# 4.69 s (−26%, the proxy's passes included) while the accuracy moved +0.33 points, well inside
# both confidence intervals ([11.53, 14.67] off, [10.18, 16.69] on): faster at no measurable cost
# in accuracy, the shape of the source's claim (96.00% in 27.3 s against 96.03% in 34.7 s), though
# at this scale the accuracy test cannot tell a loss smaller than about 3 points. Whether it holds
# at 96% is a question for `SCALE = "full"` on a GPU.
