# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # speedrun as a research tool: your own model in a record's loop, and a data-selection experiment
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/speedrun/blob/main/notebooks/library_api.ipynb)
#
# `SCALE = "full"`: a GPU and full CIFAR-10; `SCALE = "smoke"`: a CPU and the bundled real sample
# (accuracies are sample figures, not CIFAR-10 accuracy).

# %%
# Colab only: clone this repository and install it (does nothing elsewhere). The one place its URL is written.
REPO_URL = "https://github.com/OWNER/speedrun"
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run(["git", "clone", "--depth=1", REPO_URL, "/content/speedrun"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/speedrun[report]"], check=True)
    sys.path.insert(0, "/content/speedrun")

# %% tags=["parameters"]
SCALE = "smoke"  # "full": GPU + full CIFAR-10; "smoke": CPU + the bundled sample
SEEDS = 2  # seeds per arm of the data-selection experiment

# %%
from speedrun.system import env

env.configure()  # XLA flags before JAX starts
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

import speedrun
from speedrun.data import load_cifar10
from speedrun.measure import runlog, stats
from speedrun.train import Experiment

print("device:", runlog.device_description(), "| scale:", SCALE)
data = load_cifar10("sample" if SCALE == "smoke" else None)
if SCALE == "smoke":  # 1024 of the sample's 5170 training images: short unrolled epochs on a CPU
    data = (data[0][:1024], data[1][:1024], data[2], data[3])

# %% [markdown]
# ## 1. Your own Flax model, trained by Page's recipe (94pct_26s)
# Any Linen module with `__call__(x, train)` returning `(B, 10)` logits and (optionally) a
# `batch_stats` collection plugs in: the record supplies data on device, augmentation, the
# optimizer (Page's SGD), EMA, label smoothing, TTA evaluation and the timer.

# %%
class SmallCNN(nn.Module):
    width: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        for c in (self.width, 2 * self.width, 4 * self.width):
            x = nn.Conv(c, (3, 3), use_bias=False, dtype=self.dtype)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
            x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
        return nn.Dense(10, dtype=self.dtype)(jnp.max(x, axis=(1, 2))).astype(jnp.float32)


config = speedrun.load_record("94pct_26s")
config.whitening.num_images = 0  # SmallCNN has no whitening layer
if SCALE == "smoke":
    config = speedrun.smoke(config, epochs=3)
mine = speedrun.fit(config, data=data, model=SmallCNN(width=8 if SCALE == "smoke" else 64), seed=0)
print(f"SmallCNN: tta_acc {mine.metrics['tta_acc']:.4f}, {mine.metrics['train_time_s']:.1f} s, "
      f"{mine.metrics['flops_per_image_forward'] / 1e6:.1f} MFLOPs/image")

# %% [markdown]
# ## 2. Data selection: a subset chosen by a rule against a random subset of the same size
# The rule: keep the half of the training images that a short proxy run finds hardest (lowest
# margin of the true class's logit), as in data-pruning studies with airbench; the control: a
# random half. Each arm is trained for several seeds, compiled once (the seed is data).

# %%
x_train, y_train, x_test, y_test = data
base = speedrun.smoke(speedrun.load_record("94pct_26s"), epochs=2) if SCALE == "smoke" \
    else speedrun.load_record("94pct_26s")
proxy = speedrun.fit(base, data=data, seed=100)
logits = speedrun.predict(proxy, x_train, tta_level=0)
true = logits[np.arange(len(y_train)), y_train]
margin = true - np.max(np.where(np.eye(10, dtype=bool)[y_train], -np.inf, logits), axis=1)
half = len(y_train) // 2
subsets = {"hardest half (rule)": np.argsort(margin)[:half],
           "random half": np.random.default_rng(0).permutation(len(y_train))[:half]}
results = {}
for name, idx in subsets.items():
    exp = Experiment(base, (x_train[idx], y_train[idx], x_test, y_test))  # compiled once per arm
    results[name] = [exp.run(seed, per_epoch_eval=False)["tta_acc"] for seed in range(SEEDS)]
for name, accs in results.items():
    ci = stats.mean_ci(accs)
    print(f"{name:>20}: tta_acc {ci['mean']:.4f} ± {ci['std']:.4f} over {len(accs)} seeds {accs}")
