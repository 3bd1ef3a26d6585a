"""speedrun: speed-record CIFAR-10 training recipes in JAX/Flax.

Subpackages and modules, one job each (README, "Layout"; start reading at ``train.step``):

- ``config``: load a record, override and validate it, derive the step counts once, shrink it.
- ``cli``: the command line (``train | bench | report | eval | sweep | profile | list``; flags in
  ``cli_parser``, the training commands in ``train_commands``, ``list_command``); sets the XLA flags
  before JAX starts. ``record_files``: where the records are (checkout or install).
- ``data``: ``cifar10`` loading (official archive, md5-checked download, bundled sample, TFDS);
  ``augment`` (normalisation, crop, flip, cutout on the device).
- ``models``: ``resnet9``, ``airbench``, ``resnet20``; ``layers`` (ghost batch norm, GELU,
  inits), ``whitening`` (frozen patch-whitening filters).
- ``optim``: optimizers by name (a registry), ``schedules``, ``sgd``, ``airbench``, ``muon``,
  ``ema``, ``lookahead``.
- ``train``: ``state`` (TrainState, init), ``step`` (one batch), ``epoch`` (the scanned, sharded
  epoch), ``experiment`` (compile once, run N seeds, one logged run).
- ``system``: ``parallel`` (mesh, shard_map, pmean, multi-host), ``precision`` (policies, loss
  scaling), ``env`` (XLA flags set before JAX starts).
- ``measure``: ``flops``, ``stats``, ``mfu``, ``bench``, ``report``, ``runlog``, ``progress`` (a run's
  tqdm bar), ``expected`` (result vs expected, ``records/expected.json``).
- ``evaluate``: batched, jitted accuracy with and without TTA.
- ``checkpoint``: orbax checkpoints of a run (save, resume, evaluate a saved model).

- ``api``: the Python API — ``speedrun.load_record``, ``speedrun.fit``, ``speedrun.predict``.

``import speedrun`` changes no environment variable and imports nothing heavy: the API names load
their modules on first use.
"""

__version__ = "0.1.0"

_API = {"load_record": "speedrun.config", "smoke": "speedrun.config", "fit": "speedrun.api",
        "predict": "speedrun.api", "FitResult": "speedrun.api"}


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'speedrun' has no attribute {name!r}")
