"""ResNet-20 of He et al. 2015: 91.25% on CIFAR-10 (single-view test, no TTA).

Source: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition" (CVPR 2016, arXiv
1512.03385), §4.2 and Table 6: ResNet-20, 8.75% test error on CIFAR-10 (91.25% accuracy, one run);
training time and hardware not reported beyond "two GPUs".

Commands (full CIFAR-10; the bundled real sample, for CPUs, with the lr milestones moved into
its 60 epochs; its reduced ``--smoke`` run)::

    ./run.sh records/resnet20_he2015.py
    ./run.sh records/resnet20_he2015.py --config.data.path=sample --config.epochs=60 \\
        --config.optimizer.boundaries="(1200, 1800)"
    ./run.sh records/resnet20_he2015.py --config.data.path=sample --smoke

Expected on full CIFAR-10: acc ≈ 0.9125 (the paper's single run).
On the sample (records/expected.json): --smoke tta_acc 19.17 ± 1.42% (5 seeds); full width not measured.
Details: docs/records.md#resnet20_he2015
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The pinned hyperparameters of the record (every field can be overridden on the command line)."""
    c = ml_collections.ConfigDict()
    c.name = "resnet20_he2015"
    c.seed = 0
    c.epochs = 164  # 164 x 390 = 63,960 iterations ≈ the paper's 64k
    c.batch_size = 128
    c.eval_batch_size = 1000
    c.label_smoothing = 0.0
    c.tta_level = 0  # single-view test, as the paper: tta_acc == acc
    c.target_acc = 0.9125  # He et al.'s ResNet-20 figure; ./run.sh bench: share of runs >= it, time to it
    c.precision = "float32"
    c.scan_unroll = 0  # 0: automatic (speedrun.train.epoch.scan_unroll)

    c.data = ml_collections.ConfigDict()
    c.data.path = ml_collections.config_dict.placeholder(str)  # None: $SPEEDRUN_DATA or the cache

    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet20"
    c.model.depth = 20  # 6n+2, n=3
    c.model.width_mult = 1.0
    c.model.num_classes = 10
    c.model.preact = False
    c.model.stochastic_depth = 0.0
    c.model.ghost_batch_size = ml_collections.config_dict.placeholder(int)  # None: ordinary BN
    c.model.bn_momentum = 0.9  # Flax sense; PyTorch's 0.1
    c.model.bn_eps = 1e-5
    c.model.he_init_mode = "fan_out"  # see speedrun.models.resnet20 (fb.resnet.torch's choice)

    c.whitening = ml_collections.ConfigDict()
    c.whitening.num_images = 0  # no whitening layer

    c.augment = ml_collections.ConfigDict()
    c.augment.crop_padding = 4
    c.augment.crop_mode = "constant"  # zero padding (He et al.), after normalisation: the mean pixel
    c.augment.flip = True
    c.augment.cutout_size = 0

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "he_sgd"
    c.optimizer.lr = 0.1  # at base_batch_size
    c.optimizer.base_batch_size = 128
    c.optimizer.boundaries = (32000, 48000)  # iterations at base_batch_size
    c.optimizer.decay_factor = 0.1
    c.optimizer.warmup_epochs = 0.0
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.weight_decay = 1e-4
    c.optimizer.weight_decay_on = "all"
    # no model averaging: the paper evaluates the trained weights
    return c
