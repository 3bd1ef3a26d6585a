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

__version__ = "0.1.0"
