"""Keller Jordan's airbench94_muon: 94% on CIFAR-10 in 2.59 s on one A100, conv filters trained with Muon.

Source: KellerJordan/cifar10-airbench ``airbench94_muon.py`` (header: "Runs in 2.59 seconds on a
400W NVIDIA A100 using torch==2.4.1. Attains 94.01 mean accuracy (n=200 trials)"); Muon: Jordan et
al. (2024). Reported: 94.01% mean test accuracy with TTA, 2.59 s on one A100, 0.29 PFLOPs.

Commands (full CIFAR-10; the bundled real sample, for CPUs; its reduced ``--smoke`` run)::

    ./run.sh records/airbench94_muon.py
    ./run.sh records/airbench94_muon.py --config.data.path=sample
    ./run.sh records/airbench94_muon.py --config.data.path=sample --smoke

Expected on full CIFAR-10 (the source's figures, A100): tta_acc ≈ 0.9401, train time ≈ 2.59 s.
On the sample (records/expected.json): --smoke tta_acc 57.13 ± 1.35% (5 seeds); full width 69.76 ± 2.29% (2 seeds).
Details: docs/records.md#airbench94_muon
"""

import pathlib

import ml_collections

from speedrun.config import load_record


def get_config() -> ml_collections.ConfigDict:
    """records/airbench94.py\'s config with what this record pins differently (docs/records.md)."""
    c = load_record(pathlib.Path(__file__).with_name("airbench94.py"))
    c.name = "airbench94_muon"
    c.epochs = 8
    c.last_epoch_fraction = 1.0  # whole epochs
    c.batch_size = 2000
    # target_acc 0.94 (tta_acc), as airbench94

    c.model.whiten_bias_init = "torch_default"  # plain nn.Conv2d bias: U(±1/sqrt(12))
    c.model.logit_scale = 1.0  # the source's head(x) / x.size(-1): 1/256 at width_mult 1, 1/32 at the smoke's 1/8
    c.model.logit_scale_inverse_width = True
    c.model.head_init_std = 1.0  # w *= 1 / w.std()

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "airbench_muon"
    c.optimizer.muon_lr = 0.24
    c.optimizer.muon_momentum = 0.6
    c.optimizer.ns_coeffs = (3.4445, -4.7750, 2.0315)
    c.optimizer.ns_steps = 3
    c.optimizer.ns_dtype = "auto"  # bfloat16 on GPU/TPU as the source, float32 on CPU
    c.optimizer.ns_grouping = "auto"  # one zero-padded stack on GPU/TPU, per shape on CPU (docs/optim.md)
    c.optimizer.momentum = 0.85  # the SGD groups
    c.optimizer.nesterov = True
    c.optimizer.bias_lr = 0.053  # summed-loss lr of BN biases and the whitening bias
    c.optimizer.head_lr = 0.67
    c.optimizer.weight_decay = 2e-6  # per example: wd = 2e-6 * batch_size, applied as wd/lr
    c.optimizer.whiten_bias_epochs = 3

    c.lookahead.enabled = False  # no model averaging (records built on this one enable it: e1_curriculum94)
    return c
