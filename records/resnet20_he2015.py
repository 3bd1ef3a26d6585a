"""ResNet-20 of He et al. 2015: 91.25% on CIFAR-10 (single-view test, no TTA).

Source: Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun, "Deep Residual Learning for Image
Recognition" (CVPR 2016, arXiv 1512.03385), §4.2 and Table 6: ResNet-20, 0.27M parameters, 8.75%
test error on CIFAR-10 (91.25% accuracy; the paper reports the error of one run for the nets up
to 56 layers, "best (mean±std)" over 5 runs only for ResNet-110). Training time and hardware are
not reported beyond "two GPUs"; about 41M multiply-adds per forward image, so 64k iterations of 128
images are ≈ 3 × 2 × 41M × 8.19M ≈ 2.0 PFLOPs (this project's count: the ``train_flops`` field of
the result line).

Recipe (§4.2): network ``speedrun/models/resnet20.py`` with ``preact=False`` (3×3 conv stem with
BN–ReLU, 3 stages × 3 basic blocks of widths 16/32/64, stride 2 and option-A shortcuts at stages 2
and 3, global average pooling, dense 64→10), He init, BN, no dropout; SGD with momentum 0.9
(plain, not Nesterov), weight decay 1e-4 (on every parameter, see ``speedrun.optim.he_sgd``),
batch 128, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k iterations; augmentation:
4 pixels of zero padding on each side, random 32×32 crop, random horizontal flip; test on the
single original view. No label smoothing, no EMA. The paper's 64k iterations are 163.84 epochs of
the 50k training images; this loop runs whole epochs and drops the last partial batch (390 steps
of 128), so ``epochs=164`` is 63,960 iterations.

The record's figure is the single-view accuracy, as the paper tests: ``tta_level=0``, so the
result line's ``tta_acc`` (what ``./run.sh bench`` compares with ``target_acc = 0.9125``) equals
``acc``.

Command (full CIFAR-10, downloaded and md5-checked on first use)::

    ./run.sh records/resnet20_he2015.py

Expected on full CIFAR-10: acc ≈ 0.9125 (the paper's single run). Not yet measured by this project on
full CIFAR-10 (see README's record table). ``--config.batch_size=N`` follows the linear scaling rule
(Goyal et al. 2017): lr ``0.1 · N/128``, milestones at ``32000·128/N`` and ``48000·128/N``
iterations, the same 164 epochs, weight decay unchanged; this record adds no warmup
(``--config.optimizer.warmup_epochs=5`` adds Goyal's).

On the bundled real subset (5170 train / 1017 test images, 40 steps of 128 per epoch) the
milestones, counted in iterations, would come after 800 epochs; a subset run must move them, e.g.
50% and 75% of 60 epochs::

    ./run.sh records/resnet20_he2015.py --config.data.path=sample --config.epochs=60 \\
        --config.optimizer.boundaries="(1200, 1800)"

which is not a CIFAR-10 record: see README for what it reached on which machine.

Precision: float32 everywhere (the paper's 2015 GPU training was single precision); override with
``--config.precision=NAME``.
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
    c.scan_unroll = 0  # 0: automatic (whole epoch on CPU, a loop on GPU); see speedrun.train.epoch.scan_unroll

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

    c.ema = ml_collections.ConfigDict()
    c.ema.enabled = False  # the paper evaluates the trained weights
    c.ema.momentum = 0.99  # unused while disabled
    c.ema.every = 5
    return c
