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
# # speedrun quickstart: train airbench94_muon, evaluate, bench
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/speedrun/blob/main/notebooks/quickstart.ipynb)
#
# Two scales from one parameter: `SCALE = "full"` (a GPU and full CIFAR-10, downloaded and
# md5-checked) trains the pinned record; `SCALE = "smoke"` (a CPU, the bundled real CIFAR-10
# sample, seconds) trains it shrunk by `speedrun.config.smoke`. **Smoke-scale accuracies are
# sample figures, not CIFAR-10 accuracy.**

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
SEEDS = 2 if SCALE == "smoke" else 10  # runs of the multi-seed bench

# %%
from speedrun.system import env

env.configure()  # XLA flags before JAX starts (what ./run.sh does)
import tempfile

import jax
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

# JAX's persistent compilation cache in a fresh folder: a program compiled once in this notebook (the
# same record and shapes, e.g. the bench after the first training run) is loaded, not compiled again
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="speedrun-jax-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

import speedrun
from speedrun.data import load_cifar10
from speedrun.measure import bench, report, runlog

print("device:", runlog.device_description(), "| jax", jax.__version__, "| scale:", SCALE)

# %%
config = speedrun.load_record("airbench94_muon")
if SCALE == "smoke":
    config = speedrun.smoke(config, epochs=4)  # width 1/8, batch 256
    data = load_cifar10("sample")
    # 1024 training images: 4 steps an epoch; a CPU compiles the epoch unrolled, so fewer steps compile faster
    data = (data[0][:1024], data[1][:1024], data[2], data[3])
else:
    data = load_cifar10(None)  # $SPEEDRUN_DATA or the user cache; downloads CIFAR-10 once
print(f"{config.name}: {config.epochs} epochs of batch {config.batch_size}, width {config.model.width_mult}, "
      f"{len(data[0])} training images")

# %% [markdown]
# ## Train once and plot loss and accuracy per epoch

# %%
result = speedrun.fit(config, data=data, seed=0)
hist = result.history
fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3))
a.plot([h["epoch"] for h in hist], [h["train_loss"] for h in hist], marker="o")
a.set(xlabel="epoch", ylabel="training loss")
b.plot([h["epoch"] for h in hist], [100 * h["test_acc"] for h in hist], marker="o")
b.set(xlabel="epoch", ylabel="test accuracy, % (no TTA)")
fig.suptitle(f"{config.name} on {result.metrics['dataset']}, {result.metrics['device']}")
plt.show()
print({k: result.metrics[k] for k in ("acc", "tta_acc", "train_time_s", "compile_time_s", "images_per_s")})

# %% [markdown]
# ## Evaluate with and without test-time augmentation

# %%
x_test, y_test = data[2], data[3]
for level in (0, 2):  # none; mirror + translate (level 1: mirror only)
    logits = speedrun.predict(result, x_test, tta_level=level)
    print(f"tta_level {level}: test accuracy {np.mean(logits.argmax(-1) == y_test):.4f}")

# %% [markdown]
# ## A multi-seed bench (compiled once) and its table

# %%
# per_epoch_eval=False: no per-epoch test passes (time to target needs them; the smoke run reaches no target)
runs, summary = bench.run(config, SEEDS, arrays=data, log=print, per_epoch_eval=SCALE == "full")
print(bench.format_summary(summary))

# %% [markdown]
# ## Where the result stands
# Published full-CIFAR-10 figures of the sources (their hardware) on the left; this run on the
# right, in its own panel when it is a sample run: the two are not comparable.

# %%
fig, (pub, ours) = plt.subplots(1, 2, figsize=(10, 3.5))
for i, p in enumerate(sorted(report.PUBLISHED, key=lambda p: p["time_s"])):
    pub.scatter(p["time_s"], 100 * p["tta_acc"], marker="*", s=120)
    # labels alternate above and below their star: records of equal accuracy sit side by side
    pub.annotate(p["label"], (p["time_s"], 100 * p["tta_acc"]), xytext=(0, 9 if i % 2 else -14),
                 textcoords="offset points", ha="center", fontsize=7)
pub.set(xscale="log", xlabel="seconds (log scale)", ylabel="tta accuracy, %", title="published, full CIFAR-10")
pub.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 1, 10, 100: no overlapping 10^x labels
pub.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
pub.margins(x=0.3, y=0.25)
pub.set_xticks([2, 5, 10, 20, 50])
ours.scatter([r["train_time_s"] for r in runs], [100 * r["tta_acc"] for r in runs])
kind = "full CIFAR-10" if report.is_full_cifar10(runs[0]) else "bundled sample: NOT CIFAR-10 accuracy"
ours.set(xlabel="seconds", ylabel="tta accuracy, %", title=f"this notebook ({kind})")
fig.tight_layout()
plt.show()
