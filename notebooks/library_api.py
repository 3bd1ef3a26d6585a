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
# # speedrun as a research tool: your own model in a record's loop, and a data-selection experiment
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/speedrun/blob/main/notebooks/library_api.ipynb)
#
# `SCALE = "full"`: a GPU and full CIFAR-10; `SCALE = "smoke"`: a CPU and the bundled real sample
# (accuracies are sample figures, not CIFAR-10 accuracy).

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
SEEDS = 2 if SCALE == "smoke" else 5  # seeds per arm of the data-selection experiment

# %%
from speedrun.system import env

env.configure()  # XLA flags before JAX starts
import tempfile
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# JAX's persistent compilation cache in a fresh folder: the two arms below train the same program
# (same model, same subset size; the data are arguments), so the second arm loads it instead of compiling
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="speedrun-jax-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

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
        logits = nn.Dense(10, dtype=self.dtype)(jnp.max(x, axis=(1, 2))).astype(jnp.float32)
        return 0.125 * logits  # Page's output scale 1/8: the recipe's learning rates expect it (without: no learning)


config = speedrun.load_record("94pct_26s")
config.whitening.num_images = 0  # SmallCNN has no whitening layer
if SCALE == "smoke":
    config = speedrun.smoke(config, epochs=8)  # a small net: cheap epochs; the lr schedule (knots 0, 2, 8) runs whole
net = SmallCNN(width=8 if SCALE == "smoke" else 64)
mine = speedrun.fit(config, data=data, model=net, seed=0)
print(f"SmallCNN: tta_acc {mine.metrics['tta_acc']:.4f}, {mine.metrics['train_time_s']:.1f} s, "
      f"{mine.metrics['flops_per_image_forward'] / 1e6:.1f} MFLOPs/image")

# %% [markdown]
# ## 2. Data selection: a subset chosen by a rule against a random subset of the same size
# The rule: keep the half of the training images that a proxy model finds hardest (lowest margin of
# the true class's logit), as in data-pruning studies with airbench; the proxy is the SmallCNN just
# trained on all of them. The control: a random half. Each arm trains the same SmallCNN by the same
# recipe for several seeds, compiled once (the seed is data).

# %%
x_train, y_train, x_test, y_test = data
logits = speedrun.predict(mine, x_train, tta_level=0)  # the proxy: part 1's model
true = logits[np.arange(len(y_train)), y_train]
margin = true - np.max(np.where(np.eye(10, dtype=bool)[y_train], -np.inf, logits), axis=1)
half = len(y_train) // 2
subsets = {"hardest half (rule)": np.argsort(margin)[:half],
           "random half": np.random.default_rng(0).permutation(len(y_train))[:half]}
results = {}
for name, idx in subsets.items():
    exp = Experiment(config, (x_train[idx], y_train[idx], x_test, y_test), model=net)  # the 2nd arm: from the cache
    results[name] = [exp.run(seed, per_epoch_eval=False)["tta_acc"] for seed in range(SEEDS)]
for name, accs in results.items():
    ci = stats.mean_ci(accs)
    print(f"{name:>20}: tta_acc {ci['mean']:.4f} ± {ci['std']:.4f} over {len(accs)} seeds {accs}")
a, b = (stats.mean_ci(results[k]) for k in subsets)
if a["ci_low"] is None or b["ci_low"] is None:
    print("one seed per arm: no interval, no conclusion")
elif a["ci_low"] > b["ci_high"] or b["ci_low"] > a["ci_high"]:
    better = "the rule" if a["mean"] > b["mean"] else "the random half"
    print(f"the 95% intervals do not overlap: {better} is better at this scale")
else:
    print("the 95% intervals overlap: no difference shown at this scale and number of seeds")
