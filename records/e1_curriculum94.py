"""Fable-5 E1: hiverge's recipe with a 24→28→32 px resolution curriculum — 94.05% in 1.83 s on one A100.

Source: fulcrumresearch/cifar-10-speedrun @ ddec65f (its only commit)
``fable-100m/recipes/e1_1.74s_single-gpu_CHAMPION.py``, vendored as ``runners/recipes/e1.py`` (facts
in ../shared/sources/frontier_recipes.md §2.1, its harness §3). Reported (fulcrum harness, n = 200,
Modal A100-SXM4-80GB, torch 2.4.0): graded accuracy 0.94046 ± 0.0015 (airbench's weighted 6-view
TTA on test[2000:]), p = 1.2e-5 one-sided against 0.94, in 1.828 ± 0.0215 s by fulcrum's rule
(per-trial preparation 0.062 s + training loop 1.766 s, evaluation excluded: ``fulcrum_time_s``).

Commands (full CIFAR-10; the bundled real sample, for CPUs; its reduced ``--smoke`` run)::

    ./run.sh records/e1_curriculum94.py
    ./run.sh records/e1_curriculum94.py --config.data.path=sample
    ./run.sh records/e1_curriculum94.py --config.data.path=sample --smoke

Expected on full CIFAR-10 (the source's figures, A100): tta_acc ≈ 0.9405, fulcrum time ≈ 1.828 s.
On the sample (records/expected.json): --smoke tta_acc 44.37 ± 2.50% (5 seeds); full width 72.25 ± 1.02% (5 seeds).
Details: docs/records.md#e1_curriculum94
"""

import pathlib

import ml_collections

from speedrun.config import load_record


def get_config() -> ml_collections.ConfigDict:
    """records/hiverge94.py's config with what E1 pins differently (docs/records.md)."""
    c = load_record(pathlib.Path(__file__).with_name("hiverge94.py"))
    c.name = "e1_curriculum94"
    c.epochs = 9
    c.last_epoch_fraction = 0.875  # train_epochs 8.875: 8·32 + 28 = 284 steps
    c.resolution = (24, 24, 24, 28, 28, 28, 32, 32, 32)  # bilinear, no antialias, of the augmented 32-px batch
    # evaluation at 32 px (the net sees the test set unresized)

    c.model.final_pool = "global_max"  # GlobalAmaxPool: the head sees (B, 256) at 24, 28 and 32 px

    c.whitening.num_images = 5000

    c.optimizer.muon_lr = 0.2255
    c.optimizer.whiten_bias_epochs = 0.2  # ceil(0.2·32) = 7 steps, as hiverge's 0.19
    c.optimizer.decay_epochs = 8.5  # ceil(8.5·32) = 272: lr·max(1 − s/272, 0.05), Muon's horizon 272
    c.optimizer.lr_floor = 0.05

    c.lookahead.enabled = True  # E1's tail: snapshot after step 272 − 8 = 264, then every 4 steps
    c.lookahead.start_before = 8  # steps before the end of the lr decay
    c.lookahead.every = 4
    c.lookahead.decay_base = 0.7 ** (1 / 4)  # ρ = decay_base**every = 0.7: ema ← 0.7·ema + 0.3·net, net ← ema
    c.lookahead.decay_pow = 0.0  # constant ρ
    c.lookahead.final_copy = False  # the run ends on the net (at 284 = 264 + 5·4 it is the average)
    return c
