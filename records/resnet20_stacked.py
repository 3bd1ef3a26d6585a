"""The stacked fast ResNet-20 of Solomatov & Stepanov (2017): 93.4% on CIFAR-10 in 0:32 on 4×1080 Ti.

Source: Solomatov & Stepanov's 2017 report on speeding up ResNet-20 training, as summarised in this
project's issue 4: the report's best model stacks pre-activation blocks (He et al. 2016, "Identity
Mappings in Deep Residual Networks"), stochastic depth with a uniform drop probability of 0.5 per
residual block (Huang et al. 2016, "Deep Networks with Stochastic Depth"), and batch 1024 with the
learning rate scaled linearly from 0.1 at batch 128 and a gradual warmup (Goyal et al. 2017,
"Accurate, Large Minibatch SGD"), keeping He et al. 2015's schedule otherwise. Reported: 93.4% test
accuracy in 0:32 on 4 GTX 1080 Ti, against 2:42 for the plain ResNet-20 baseline (a 5× speed-up).
FLOPs are not reported; this project prints ``train_flops`` (3 × forward FLOPs × images, which
overstates a stochastic-depth run: a dropped branch is not computed, on average half of them).

Recipe: network ``speedrun/models/resnet20.py`` with ``preact=True`` and
``stochastic_depth=0.5`` (every one of the 9 residual branches is dropped with probability 0.5 in
each training step, one draw per block for the whole batch; at test time each branch is scaled by
its survival probability 0.5); everything else as ``records/resnet20_he2015.py``: He init, ordinary
BN, SGD momentum 0.9, weight decay 1e-4, zero-pad-4 crop and flip, single-view test (``tta_level=0``:
``tta_acc`` equals ``acc``; ``target_acc = 0.934``), no EMA, 164 epochs with the lr divided by 10 at He's 32k and
48k iterations (at batch 128).

Batch scaling (Goyal et al. §2.1–2.2): at batch ``B`` the lr is ``0.1 · B/128`` (0.8 at 1024) and the
epochs stay 164, so He's milestones fall at ``32000·128/B`` and ``48000·128/B`` iterations (4000 and
6000 at 1024; 164 epochs of 48 steps are 7,872 iterations). Gradual warmup: the lr starts at 0.1
and rises linearly to ``0.1 · B/128`` over the first 5 epochs (240 iterations at 1024), Goyal et
al.'s length: the report's own warmup length is not available to this project, and 5 epochs is the
length the warmup rule was published with (3% of this run, well before the first milestone).

Command (full CIFAR-10)::

    ./run.sh records/resnet20_stacked.py

Expected on full CIFAR-10: acc ≈ 0.934 (the report's figure). Not yet measured by this project on
full CIFAR-10 (see README's record table). ``--config.batch_size=N`` rescales lr and milestones as
above.

On the bundled real subset (5170 train / 1017 test images, 5 steps of 1024 per epoch), the
milestones, counted in iterations, come after 800 epochs; a subset run must move them, e.g.::

    ./run.sh records/resnet20_stacked.py --config.data.path=sample --config.batch_size=512 \\
        --config.epochs=60 --config.optimizer.boundaries="(7680, 11520)"

(at batch 512, milestones ``m·128/512``: iterations 1920 and 2880 = 50% and 75% of 60 epochs of 10
steps), which is not a CIFAR-10 record: see README for what it reached on which machine.

Precision: float32 everywhere (GTX 1080 Ti training in 2017 was single precision; the card's fp16
rate is a small fraction of its fp32); override with ``--config.precision=NAME``.
"""

import pathlib

import ml_collections

from speedrun.config import load_record


def get_config() -> ml_collections.ConfigDict:
    """records/resnet20_he2015.py's config with what this record pins differently (module docstring)."""
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
