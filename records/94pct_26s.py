"""David Page's final ResNet-9: 94% on CIFAR-10 in 26 s on one V100 (10 epochs, with TTA).

Source: David Page, "How to train your ResNet 8: bag of tricks" (myrtle.ai, 2019), the final
10-epoch setup of davidcpage/cifar10-fast ``bag_of_tricks.ipynb`` (the DAWNBench entry): 94.1% mean
test accuracy with TTA in 26 s on one V100 (fp16).

Commands (full CIFAR-10; the bundled real sample, for CPUs; its reduced ``--smoke`` run)::

    ./run.sh records/94pct_26s.py
    ./run.sh records/94pct_26s.py --config.data.path=sample
    ./run.sh records/94pct_26s.py --config.data.path=sample --smoke

Expected on full CIFAR-10 (Page's figures, V100): tta_acc ≈ 0.941, train time ≈ 26 s.
On the sample (records/expected.json): --smoke tta_acc 27.32 ± 5.41% (5 seeds); full width 62.71 ± 1.40% (4 seeds).
Details: docs/records.md#94pct_26s
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The pinned hyperparameters of the record (every field can be overridden on the command line)."""
    c = ml_collections.ConfigDict()
    c.name = "94pct_26s"
    c.seed = 0
    c.target_acc = 0.94  # DAWNBench target (tta_acc); ./run.sh bench: share of runs >= it, time to it
    c.epochs = 10
    c.batch_size = 512
    c.eval_batch_size = 1024
    c.label_smoothing = 0.2
    c.tta_level = 1  # Page: mean logits of the image and its mirror
    c.precision = "gpu=float16,tpu=bfloat16,cpu=float32"  # Page: fp16 on a V100 (docs/records.md)
    c.scan_unroll = 0  # 0: automatic (speedrun.train.epoch.scan_unroll)

    c.data = ml_collections.ConfigDict()
    c.data.path = ml_collections.config_dict.placeholder(str)  # None: $SPEEDRUN_DATA or the cache

    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet9"
    c.model.width_mult = 1.0
    c.model.celu_alpha = 0.3
    c.model.logit_scale = 1 / 16
    c.model.ghost_batch_size = 32  # 16 splits of 512
    c.model.bn_momentum = 0.9  # Flax sense; PyTorch's 0.1
    c.model.bn_eps = 1e-5
    c.model.whiten_patch_size = 3
    c.model.whiten = True  # frozen patch whitening (False: Page's baseline 3x3 prep conv)
    c.model.activation = "celu"  # "relu": Page's baseline
    c.model.bn_scale = False  # BN scales frozen at 1 (True: learned, the baseline)

    c.whitening = ml_collections.ConfigDict()
    c.whitening.eps = 1e-2
    c.whitening.num_images = 10000

    c.augment = ml_collections.ConfigDict()
    c.augment.crop_padding = 4  # reflect
    c.augment.flip = True
    c.augment.cutout_size = 0

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "page_sgd"
    # Page: PiecewiseLinear([0, epochs/5, epochs - ema_epochs], [0, 1, 0.1]), ema_epochs = 2 — [0, 2, 8] at
    # 10 epochs, written from the run's length (speedrun.optim.schedules.page_lr_knots); flat after the last
    c.optimizer.lr_knots = []  # empty: Page's knots above; given (epochs, e.g. 0,2,8): those, for any length
    c.optimizer.lr_peak_fraction = 0.2  # Page's epochs/5
    c.optimizer.ema_epochs = 2.0  # Page's ema_epochs: the last epochs at the final lr
    c.optimizer.lr_values = [0.0, 1.0, 0.1]  # mean-loss form: Page's lr/512 on a summed loss
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 5e-4
    c.optimizer.bias_lr_mult = 64.0
    c.optimizer.bias_wd_mult = 1 / 64

    c.ema = ml_collections.ConfigDict()
    c.ema.enabled = True
    c.ema.momentum = 0.99
    c.ema.every = 5
    c.ema.debias = True  # weight (1-ρ)/(1-ρ^n) at update n; departs from Page's EMA by the init's ρ^194 ≈ 5.8e-5
    return c
