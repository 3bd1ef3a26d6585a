"""Keller Jordan's airbench94_muon: 94% on CIFAR-10 in 2.59 s on one A100, conv filters trained with Muon.

Source: KellerJordan/cifar10-airbench, ``airbench94_muon.py`` (header: "Runs in 2.59 seconds on a
400W NVIDIA A100 using torch==2.4.1. Attains 94.01 mean accuracy (n=200 trials)"); the airbench
README lists it at 0.29 PFLOPs; Muon: Jordan et al., "Muon: An optimizer for hidden layers in
neural networks" (2024). Reported: 94.01% mean test accuracy with TTA (level 2) over 200 runs,
2.59 s, 0.29 PFLOPs of training. Network: ``speedrun/models/airbench.py``; optimizers:
:func:`speedrun.optim.airbench_muon` (Muon from optax's Newton–Schulz, see
:func:`speedrun.optim.muon_filters` for why it is composed rather than ``optax.contrib.muon``).

Command (full CIFAR-10, downloaded and md5-checked on first use)::

    ./run.sh records/airbench94_muon.py

Expected on full CIFAR-10 (the source's figures, A100): tta_acc ≈ 0.9401, train time ≈ 2.59 s,
0.29 PFLOPs. This project has not measured it on full CIFAR-10 on a GPU (see README's record
table). On the bundled real subset (5170 train / 1017 test images), for CPU machines::

    ./run.sh records/airbench94_muon.py --config.data.path=sample

which is not a CIFAR-10 record (2 steps of 2000 per epoch): see README for what it reached.

As records/airbench94.py (data, whitening, net, alternating flip, label smoothing 0.2, TTA level
2), except:

- batch 2000, 8 whole epochs (200 steps on CIFAR-10), no lookahead;
- conv filters: Muon, lr 0.24, momentum 0.6 (Nesterov), 3 Newton–Schulz iterations with
  coefficients (3.4445, −4.7750, 2.0315) on the (out, in·3·3) update, each filter bank rescaled to
  Frobenius norm sqrt(out) before its step, no weight decay;
- everything else: Nesterov SGD, momentum 0.85, on the summed loss: BN biases and the whitening
  bias lr 0.053, head lr 0.67, weight decay 2e-6·batch (0.004 at 2000) given as wd/lr;
- every lr decays linearly to 0 over the run, no warmup; the whitening bias's over its 3 epochs
  (75 steps on CIFAR-10), after which it is frozen;
- whitening bias: PyTorch's default conv-bias init; head: PyTorch's default init rescaled to std
  1, logits divided by 256 (``logit_scale``; the source divides by the head's input width).

Batch size (``--config.batch_size=N``): the source's rule, per example — the SGD learning rates
apply to the summed loss and the weight decay is 2e-6·N, so with the mean loss used here both
grow linearly with N; Muon's lr does not change (its step is scale-free).

Precision: as records/airbench94.py (``gpu=float16,tpu=bfloat16,cpu=float32``; the source trains
in fp16 and runs Newton–Schulz in bfloat16, here in float32).
"""

import pathlib

import ml_collections

from speedrun.config import load_record


def get_config() -> ml_collections.ConfigDict:
    """records/airbench94.py's config with what this record pins differently (module docstring)."""
    c = load_record(pathlib.Path(__file__).with_name("airbench94.py"))
    c.name = "airbench94_muon"
    c.epochs = 8
    c.last_epoch_fraction = 1.0  # whole epochs
    c.batch_size = 2000
    # target_acc 0.94 (tta_acc), as airbench94

    c.model.whiten_bias_init = "torch_default"  # plain nn.Conv2d bias: U(±1/sqrt(12))
    c.model.logit_scale = 1 / 256  # head(x) / x.size(-1)
    c.model.head_init_std = 1.0  # w *= 1 / w.std()

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "airbench_muon"
    c.optimizer.muon_lr = 0.24
    c.optimizer.muon_momentum = 0.6
    c.optimizer.ns_coeffs = (3.4445, -4.7750, 2.0315)
    c.optimizer.ns_steps = 3
    c.optimizer.momentum = 0.85  # the SGD groups
    c.optimizer.nesterov = True
    c.optimizer.bias_lr = 0.053  # summed-loss lr of BN biases and the whitening bias
    c.optimizer.head_lr = 0.67
    c.optimizer.weight_decay = 2e-6  # per example: wd = 2e-6 * batch_size, applied as wd/lr
    c.optimizer.whiten_bias_epochs = 3

    c.lookahead.enabled = False
    return c
