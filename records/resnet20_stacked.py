"""The stacked fast ResNet-20 of Solomatov & Stepanov (2017): 93.4% on CIFAR-10 in 0:32 on 4×1080 Ti.

Source: Solomatov & Stepanov's 2017 report on speeding up ResNet-20 training (as summarised in this
project's issue 4): pre-activation blocks, stochastic depth 0.5 per residual block, batch 1024 with
linear lr scaling and gradual warmup. Reported: 93.4% test accuracy in 0:32 on 4 GTX 1080 Ti,
against 2:42 for the plain ResNet-20 baseline.

Commands (full CIFAR-10; the bundled real sample, for CPUs, at batch 512 with the lr milestones
moved into its 60 epochs; its reduced ``--smoke`` run)::

    ./run.sh records/resnet20_stacked.py
    ./run.sh records/resnet20_stacked.py --config.data.path=sample --config.batch_size=512 \\
        --config.epochs=60 --config.optimizer.boundaries="(7680, 11520)"
    ./run.sh records/resnet20_stacked.py --config.data.path=sample --smoke

Expected on full CIFAR-10: acc ≈ 0.934 (the report's figure).
On the sample (records/expected.json): --smoke tta_acc 14.43 ± 3.30% (5 seeds); full width not measured.
Details: docs/records.md#resnet20_stacked
"""

import pathlib

import ml_collections

from speedrun.config import load_record


def get_config() -> ml_collections.ConfigDict:
    """records/resnet20_he2015.py\'s config with what this record pins differently (docs/records.md)."""
    c = load_record(pathlib.Path(__file__).with_name("resnet20_he2015.py"))
    c.name = "resnet20_stacked"
    c.batch_size = 1024  # the optimizer's lr and milestones follow (Goyal's linear scaling)
    c.model.preact = True  # He et al. 2016
    c.model.stochastic_depth = 0.5  # uniform drop probability per residual block (Huang et al. 2016)
    # None: dropped branches are skipped (lax.cond) on GPU/TPU and computed-and-masked on CPU
    c.model.skip_dropped = ml_collections.config_dict.placeholder(bool)
    c.target_acc = 0.934  # the report's figure (single view)
    c.optimizer.warmup_epochs = 5.0  # Goyal et al.'s gradual warmup, from lr to lr x B/128
    return c
