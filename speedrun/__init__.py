"""speedrun: speed-record CIFAR-10 training recipes in JAX/Flax.

Modules, one job each:

- ``data``: CIFAR-10 into numpy (official archive, md5-checked download, bundled real subset).
- ``augment``: on-device crop/flip/cutout as pure functions of (images, PRNG key).
- ``whitening``: frozen patch-whitening filters from the patch covariance.
- ``layers``: ghost batch norm and other building blocks.
- ``models``: Flax Linen networks (Page's ResNet-9, ...), looked up by name.
- ``optim``: optax optimizers and learning-rate schedules of the records.
- ``ema``: exponential moving average of params and batch stats.
- ``evaluate``: batched, jitted accuracy with and without TTA.
- ``train``: the jitted epoch (``lax.scan`` over batches) and the timed training run.
- ``reporting``: per-epoch table, result line, log file.
- ``main``: the command line (``./run.sh records/NAME.py``).
"""

import os as _os

__version__ = "0.1.0"

# XLA's CPU backend schedules an unrolled epoch for concurrency by default, keeping every step's
# activations alive at once: the full-width ResNet-9 epoch (10 unrolled steps of 512) asked for a
# 26.6 GB temp buffer; with this scheduler off it needs 4.0 GB (compiled.memory_analysis(), jax
# 0.10.2). CPU-only flag; it must be set before JAX starts its backend, hence at import. Set
# XLA_FLAGS yourself to override.
_CPU_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
if _CPU_FLAG not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + f" {_CPU_FLAG}=false").strip()
