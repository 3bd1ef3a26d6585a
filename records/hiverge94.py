"""hiverge's CIFAR-10 speedrun: 94% in 2.0 s on one A100 — airbench94_muon tuned: batch 1536, 7.59 epochs, SiLU, selective TTA.

Source: hiverge/cifar10-speedrun @ 5cd49b1 ``cifar10_speedrun.py`` (file last changed in 828bcd7;
facts in ../shared/sources/frontier_recipes.md §1). Reported (README, n = 2000: 10 processes × 200
runs, torch 2.4.0, clocks locked): 94.01% mean selective-TTA accuracy (sample std 0.132 points,
p = 0.0034 one-sided against 0.94) in 2.015 s on one A100; its timer covers the whitening, every
epoch's augmentation and step, and the final TTA (``train_time_s``); fulcrum's rule
(``fulcrum_time_s``, evaluation excluded) timed its 7.65-epoch copy at 1.978 s.

Commands (full CIFAR-10; the bundled real sample, for CPUs; its reduced ``--smoke`` run)::

    ./run.sh records/hiverge94.py
    ./run.sh records/hiverge94.py --config.data.path=sample
    ./run.sh records/hiverge94.py --config.data.path=sample --smoke

Expected on full CIFAR-10 (the source's figures, A100): tta_acc ≈ 0.9401, train time ≈ 2.015 s.
On the sample (records/expected.json): --smoke tta_acc 54.63 ± 1.90% (5 seeds); full width 74.39 ± 1.83% (5 seeds).
Details: docs/records.md#hiverge94
"""

import pathlib

import ml_collections

from speedrun.config import load_record


def get_config() -> ml_collections.ConfigDict:
    """records/airbench94_muon.py's config with what this record pins differently (docs/records.md)."""
    c = load_record(pathlib.Path(__file__).with_name("airbench94_muon.py"))
    c.name = "hiverge94"
    c.epochs = 8
    c.last_epoch_fraction = 0.59  # ceil(7.59·32) = 243 steps: 7 epochs and 19 steps
    c.batch_size = 1536
    c.label_smoothing = 0.09
    c.tta_selective = 0.25  # the 2500 least-confident test images get the 6-view mean

    c.model.activation = "silu"  # the groups' nn.SiLU()
    c.model.whiten_activation = "gelu"  # exact (erf) nn.GELU() after the whitening conv
    c.model.bn_momentum = 0.5566  # Flax sense; PyTorch's momentum 0.4434
    c.model.bn_eps = 1e-12
    c.model.logit_scale = 1.0
    c.model.logit_scale_inverse_width = True  # head(x) / x.size(-1): ÷ 256 at full width

    c.whitening.method = "svd"  # torch.svd of the uncentred patch covariance
    c.whitening.num_images = 960
    c.whitening.ddof = 0  # covariance ÷ N

    c.augment.brightness_range = 0.1399  # x' = (x + b)·c, b ~ U(±0.1399)
    c.augment.contrast_range = 0.1308  # c ~ U(1 ± 0.1308)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "hiverge_muon"
    c.optimizer.muon_lr = 0.205
    c.optimizer.muon_momentum = 0.655
    c.optimizer.ns_coeffs = (3.4576, -4.7391, 2.0843)
    c.optimizer.ns_steps = 3
    c.optimizer.ns_eps = 1e-5
    c.optimizer.target_norm = (0.5012, 0.0786)  # τ = 0.5012·(1 − t/T) + 0.0786·t/T before the unit norm
    c.optimizer.ns_dtype = "gpu=float16,tpu=bfloat16,cpu=float32"  # the source's fp16 iteration on a GPU
    c.optimizer.ns_grouping = "auto"  # the source's one zero-padded stack on GPU/TPU, per shape on CPU
    c.optimizer.momentum = 0.825  # the SGD groups, nesterov, PyTorch's coupled decay
    c.optimizer.nesterov = True
    c.optimizer.bias_lr = 0.0573  # summed-loss lr of BN biases and the whitening bias
    c.optimizer.head_lr = 0.5415
    c.optimizer.weight_decay = 1.0418e-6  # per example: wd = 1.0418e-6 · 1536, λ = wd/lr
    c.optimizer.whiten_bias_epochs = 0.19  # ceil(0.19·32) = 7 steps, then detached
    c.optimizer.decay_epochs = None  # linear decay over the run's 243 steps, no warm-up
    c.optimizer.lr_floor = 0.0
    return c
