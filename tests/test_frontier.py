"""The frontier records hiverge94 and e1_curriculum94 against their sources' numbers
(../shared/sources/frontier_recipes.md §1–§3: step counts, decay horizon, curriculum boundaries,
lookahead tail), E1's lookahead tail against a numpy transcription of its loop
(fulcrumresearch/cifar-10-speedrun ddec65f ``run_steps`` and ``LookaheadState``), the one-sided
t-test against a hand-computed t statistic, and a tiny curriculum run: each resolution's epoch
program compiled once, none when a new seed runs, both clocks in the result.

The numbers hand-checked elsewhere are not repeated here: renormalisation steps
(tests/test_muon.py), batched Newton–Schulz (test_muon), coupled/decoupled decay
(test_hiverge_optim), selective TTA (test_evaluate), bilinear resize (test_pipeline), global max pool
and the head's shape under the curriculum (test_airbench_variants), SVD whitening (test_whitening).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from speedrun import config as config_lib
from speedrun.measure import bench, mfu, stats
from speedrun.optim import hiverge, lookahead
from speedrun.train import plan as plan_lib, step as step_lib

CIFAR10_TRAIN = 50000


def _derived(cfg, n=CIFAR10_TRAIN):
    return config_lib.derived(cfg, n, 1)


# ------------------------------------------------------------------ the pinned values

def test_hiverge94_step_counts_are_the_sources():
    """243 = ceil(7.59·32) steps; the bias trains ceil(0.19·32) = 7 steps; batch 1536, 32 steps an epoch."""
    cfg = config_lib.load_record("hiverge94")
    d = _derived(cfg)
    assert (d.steps_per_epoch, d.total_steps) == (32, 243) == (50000 // 1536, math.ceil(7.59 * 32))
    assert plan_lib.whiten_bias_steps(cfg, d) == 7
    plan = plan_lib.epoch_plan(cfg, d)
    assert [s.name() for s in plan] == ["7+25/detached"] + ["32/detached"] * 6 + ["19/detached"]
    assert not any(s.final_average for s in plan)  # no EMA, no lookahead
    _, lr = hiverge.hiverge_muon_from_config(cfg.optimizer, d)
    np.testing.assert_allclose([float(lr(s)) for s in (0, 100, 242)],
                               [0.205 * (1 - s / 243) for s in (0, 100, 242)], rtol=1e-6)
    assert (cfg.label_smoothing, cfg.tta_level, cfg.tta_selective) == (0.09, 2, 0.25)
    assert cfg.model.bn_momentum == pytest.approx(1 - 0.4434)
    assert (cfg.whitening.method, cfg.whitening.num_images, cfg.whitening.ddof) == ("svd", 960, 0)


def test_e1_step_counts_curriculum_and_tail_are_the_sources():
    """284 steps (8.875·32); decay horizon 272 (8.5·32) with floor 0.05 from step 259; steps 0–95 at
    24 px, 96–191 at 28, 192–283 at 32; the lookahead snapshot after step 264 = 272 − 8."""
    cfg = config_lib.load_record("e1_curriculum94")
    d = _derived(cfg)
    assert (d.steps_per_epoch, d.total_steps) == (32, 284)
    plan = plan_lib.epoch_plan(cfg, d)
    size_of_step = [seg.image_size for spec in plan for seg in spec.segments for _ in range(seg.steps)]
    assert len(size_of_step) == 284
    assert set(size_of_step[:96]) == {24} and set(size_of_step[96:192]) == {28} and set(size_of_step[192:]) == {32}
    assert plan_lib.whiten_bias_steps(cfg, d) == 7
    _, lr = hiverge.hiverge_muon_from_config(cfg.optimizer, d)
    s = np.array([0, 258, 259, 283])
    np.testing.assert_allclose([float(lr(c)) for c in s], 0.2255 * np.maximum(1 - s / 272, 0.05), rtol=1e-6)
    assert lookahead.tail_start(cfg, d.total_steps) == 264
    assert not plan[-1].final_average  # E1's run ends on the net (here the average: 284 = 264 + 5·4)
    assert cfg.whitening.num_images == 5000 and cfg.model.final_pool == "global_max"


def test_e1_on_the_sample_keeps_the_sources_tail_rule():
    """5170 images: 3 steps an epoch, ceil(8.875·3) = 27 steps, decay ceil(8.5·3) = 26, snapshot at 18."""
    cfg = config_lib.load_record("e1_curriculum94")
    d = _derived(cfg, 5170)
    assert d.total_steps == 27
    assert lookahead.tail_start(cfg, d.total_steps) == math.ceil(8.5 * 3) - 8 == 18


def test_smoke_keeps_a_curriculum_of_one_size_per_epoch_and_the_decay_share():
    cfg = config_lib.smoke(config_lib.load_record("e1_curriculum94"))
    assert cfg.epochs == 2 and tuple(cfg.resolution) == (24, 32)
    assert cfg.optimizer.decay_epochs == pytest.approx(8.5 * 2 / 8.875)
    three = config_lib.smoke(config_lib.load_record("e1_curriculum94"), epochs=3)
    assert tuple(three.resolution) == (24, 28, 32)


# ------------------------------------------------------------------ E1's lookahead tail

def _numpy_e1_tail(nets, start, every, decay):
    """fulcrum's loop: after step ``start`` ema = copy(net); after step ``s > start`` with
    ``(s − start) % every == 0``: ema = decay·ema + (1 − decay)·net, net = ema."""
    out, ema, net = [], None, 0.0
    for s, delta in enumerate(nets, start=1):
        net = net + delta
        if s == start:
            ema = net
        elif s > start and (s - start) % every == 0:
            ema = decay * ema + (1 - decay) * net
            net = ema
        out.append(net)
    return out


def test_tail_update_equals_the_sources_loop():
    rng = np.random.default_rng(0)
    deltas = rng.standard_normal(40)
    start, every, T = 21, 4, 40  # start not a multiple of every: the phase is counted from start
    ref = _numpy_e1_tail(deltas, start, every, 0.7)
    # the epoch runs the update only after the steps Averaging places: start, start + every, ...
    updates = set(step_lib.Averaging(every, start, None).positions(0, T))
    assert updates == {c for c in range(1, T + 1) if c >= start and (c - start) % every == 0}
    avg, net, got = {"w": jnp.float32(0.0)}, {"w": jnp.float32(0.0)}, []
    for c, delta in enumerate(deltas, start=1):
        net = {"w": net["w"] + jnp.float32(delta)}
        if c in updates:
            avg, net = lookahead.update(avg, net, jnp.int32(c), T, every, 0.7 ** (1 / every), 0.0, start)
        got.append(float(net["w"]))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_start_zero_is_airbenchs_lookahead():
    avg, net = {"w": jnp.float32(1.0)}, {"w": jnp.float32(3.0)}
    for c in (5, 7, 10):
        a0, n0 = lookahead.update(avg, net, jnp.int32(c), 20)
        a1, n1 = lookahead.update(avg, net, jnp.int32(c), 20, start=0)
        assert float(a0["w"]) == float(a1["w"]) and float(n0["w"]) == float(n1["w"])


# ------------------------------------------------------------------ the t-test

def test_t_test_greater_against_a_hand_computed_statistic():
    xs = [0.9412, 0.9398, 0.9425, 0.9409, 0.9401]
    n, mean = len(xs), sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    t = (mean - 0.94) / (sd / math.sqrt(n))
    # by hand: mean 0.9409, squared deviations 450e-8 / 4 -> sd 0.0010607, t = 0.0009 / 0.00047434
    assert t == pytest.approx(1.8974, abs=1e-3)
    r = stats.t_test_greater(xs, 0.94)
    assert r["t"] == pytest.approx(t, rel=1e-9) and r["n"] == 5
    from scipy.stats import t as student_t

    assert r["p_value"] == pytest.approx(float(student_t.sf(t, n - 1)), rel=1e-9)
    assert 0.05 < r["p_value"] < 0.1  # t(0.95, 4) = 2.132 > t > t(0.90, 4) = 1.533 (printed t-table)
    below = stats.t_test_greater([0.93, 0.935, 0.932], 0.94)
    assert below["t"] < 0 and below["p_value"] > 0.5
    assert stats.t_test_greater([0.95], 0.94)["p_value"] is None
    assert stats.t_test_greater([0.95, 0.95], 0.94)["p_value"] is None


def test_summary_has_the_p_value_and_the_fulcrum_clock():
    def run(seed, tta, t, f):
        return {"record": "r", "dataset": "d", "train_images": 1000, "test_images": 100, "epochs": 2,
                "batch_size": 100, "precision": "float32", "width_mult": 1.0, "devices": 1, "device": "dev",
                "seed": seed, "tta_acc": tta, "acc": tta, "train_time_s": t, "fulcrum_time_s": f, "steps": 10,
                "compile_time_s": 1.0, "flops_per_image_forward": 1e9, "train_flops": 3e12,
                "time_to_target_s": None, "compiles": 0}

    runs = [run(0, 0.95, 2.0, 1.5), run(1, 0.93, 4.0, 3.5), run(2, 0.97, 3.0, 2.0)]
    s = bench.summarize(runs, 0.94, 1.0)
    # mean 0.95, sd 0.02: t = 0.01 / (0.02/√3) = 0.8660
    assert s["tta_t_test"]["t"] == pytest.approx(0.01 / (0.02 / math.sqrt(3)), rel=1e-6)
    assert s["fulcrum_time_s"] == {"median": 2.0, "min": 1.5, "max": 3.5}
    text = bench.format_summary(s)
    assert "t-test tta_acc > 0.9400: p" in text and "fulcrum time" in text
    old = [{k: v for k, v in r.items() if k != "fulcrum_time_s"} for r in runs]  # a file from before
    assert bench.summarize(old, 0.94, 1.0)["fulcrum_time_s"] is None


# ------------------------------------------------------------------ one program per resolution

@pytest.fixture(scope="module")
def tiny_curriculum(sample):
    from speedrun.train.experiment import Experiment

    cfg = config_lib.smoke(config_lib.load_record("e1_curriculum94"), epochs=4, model__width_mult=0.0625,
                           batch_size=64, eval_batch_size=128)
    cfg.resolution = (24, 28, 28, 32)
    cfg.whitening.num_images = 256
    x, y, xt, yt = sample
    return Experiment(cfg, arrays=(x[:128], y[:128], xt[:128], yt[:128]))


@pytest.mark.slow  # a real training run: CI's slow pass
def test_each_resolution_compiles_one_epoch_program_and_no_seed_recompiles(tiny_curriculum):
    exp = tiny_curriculum
    # 2 steps an epoch, the bias trains ceil(0.2·2) = 1 step: 1+1/detached@24, 2/detached@28 (twice), 2/detached;
    # 8 steps are fewer than start_before: the tail starts at 0 and updates after steps 4 and 8 (every 4)
    assert [s.name() for s in exp.plan] == ["1@24px+1/detached@24px", "2/detached@28px/avg2", "2/detached@28px",
                                            "2/detached/avg2"]
    assert len(exp.epochs.programs) == len(plan_lib.distinct(exp.plan)) == 4
    assert sorted(exp.epochs.compile_times) == sorted(s.name() for s in plan_lib.distinct(exp.plan))
    runs = []
    for seed in (0, 1, 2):  # the first run may compile eager key arithmetic (init_run), not epochs
        with mfu.CompileCounter() as counter:
            runs.append(exp.run(seed, per_epoch_eval=False))
        runs[-1]["compiles"] = counter.count
    assert runs[1]["compiles"] == 0 and runs[2]["compiles"] == 0  # none per epoch or seed
    assert runs[1]["final_train_loss"] != runs[2]["final_train_loss"]
    for r in runs:  # both clocks; fulcrum's excludes the final TTA evaluation
        assert r["fulcrum_time_s"] > 0 and r["train_time_s"] > 0


@pytest.mark.slow  # a real training run: CI's slow pass
def test_the_curriculum_trains_at_its_sizes_and_evaluates_at_32(tiny_curriculum):
    """The epoch's step program sees the resized batch: its first convolution's input is 24×24 in
    the 24-px program; evaluation takes the 32-px test images."""
    from speedrun.train.epoch import make_train_epoch

    exp = tiny_curriculum
    spec = exp.plan[0]
    fn = make_train_epoch(exp.model, exp.tx, exp.config, exp.derived, exp.normalize, mesh=exp.mesh, spec=spec)
    state = jax.eval_shape(exp.init_fn, jax.random.key(0))
    consts = {"whiten_kernel": jax.ShapeDtypeStruct((2, 2, 3, 12), jnp.float32)}
    text = str(jax.make_jaxpr(fn)(state, consts, exp.x_train, exp.y_train, jax.random.key(1), jnp.int32(0)))
    assert "64,24,24,3" in text.replace(" ", "") and "64,28,28,3" not in text.replace(" ", "")
    assert exp.test_batches[0].shape[-3:-1] == (32, 32)
