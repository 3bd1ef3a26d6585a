"""The epoch plan (speedrun.train.plan) and its programs: static lengths, no per-step conditional,
no gradient of the whitening bias after its freeze, each distinct epoch compiled once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from speedrun import config as config_lib
from speedrun.optim import lookahead
from speedrun.train import plan as plan_lib
from speedrun.train.plan import EpochSpec, Segment

from conftest import jaxpr_eqns


def _derived(cfg, n):
    return config_lib.derived(cfg, n, 1)


def test_airbench94_plan_on_cifar10_shapes(record):
    """airbench94 on 50000 images, batch 1024: 48 steps an epoch, T = ceil(9.9·48) = 476, the bias
    trains ceil(3·48) = 144 steps: 3 trained epochs, 6 detached, a last one of 476 − 432 = 44."""
    cfg = record("airbench94")
    plan = plan_lib.epoch_plan(cfg, _derived(cfg, 50000))
    # lookahead updates after the counts c (steps taken) with c % 5 == 0: by brute force per epoch
    at = lambda e, n: tuple(p for p in range(1, n + 1) if (48 * e + p) % 5 == 0)  # noqa: E731
    assert plan == ([EpochSpec((Segment(48, averages=at(e, 48)),)) for e in range(3)]
                    + [EpochSpec((Segment(48, whiten_bias=False, averages=at(e, 48)),)) for e in range(3, 9)]
                    + [EpochSpec((Segment(44, whiten_bias=False, averages=at(9, 44)),), final_average=True)])
    assert [s.segments[0].averages[0] for s in plan] == [5, 2, 4, 1, 3, 5, 2, 4, 1, 3]
    # 3 trained phases, 5 detached ones, the last epoch: each distinct epoch compiled once
    assert len(plan_lib.distinct(plan)) == 9 and sum(s.steps for s in plan) == 476
    assert len({s.name() for s in plan}) == 9  # compile times are keyed by name


def test_ema_updates_after_page_s_steps(record):
    """Page's EMA: after the steps of index 0, 5, 10, ... (0-based), i.e. counts 1, 6, 11, ...;
    94pct_26s on 50000 images at batch 512: 97 steps an epoch."""
    cfg = record("94pct_26s")
    plan = plan_lib.epoch_plan(cfg, _derived(cfg, 50000))
    start = 0
    for spec in plan:
        (seg,) = spec.segments
        assert seg.averages == tuple(p for p in range(1, seg.steps + 1) if (start + p - 1) % 5 == 0)
        start += seg.steps
    assert start == 970 and not plan[-1].final_average


def test_a_freeze_inside_an_epoch_cuts_it():
    """hiverge's 7 bias steps: the first epoch is 7 trained steps then the rest detached."""
    import ml_collections

    cfg = ml_collections.ConfigDict({"epochs": 2, "optimizer": {"whiten_bias_steps": 7}})
    d = config_lib.Derived(n_train=1000, batch_size=100, num_devices=1, batch_per_device=100,
                           steps_per_epoch=10, total_steps=20)
    assert plan_lib.epoch_plan(cfg, d) == [EpochSpec((Segment(7), Segment(3, whiten_bias=False))),
                                           EpochSpec((Segment(10, whiten_bias=False),))]
    cfg.resolution = (24, 32)
    assert [s.segments[-1].image_size for s in plan_lib.epoch_plan(cfg, d)] == [24, 32]
    cfg.resolution = (24,)
    with pytest.raises(config_lib.ConfigError, match="one image size"):
        plan_lib.epoch_plan(cfg, d)


@pytest.fixture(scope="module")
def tiny_exp(record, sample):
    from speedrun.train.experiment import Experiment

    cfg = record("airbench94", epochs=3, model__width_mult=0.0625)
    cfg.batch_size, cfg.last_epoch_fraction, cfg.optimizer.whiten_bias_epochs = 64, 0.5, 1
    cfg.scan_unroll = 1  # the one-program epoch (a real loop), as on a GPU
    x, y, xt, yt = sample
    return Experiment(cfg, arrays=(x[:256], y[:256], xt[:128], yt[:128]))


def _epoch_jaxpr(exp, spec):
    from speedrun.train.epoch import make_train_epoch

    fn = make_train_epoch(exp.model, exp.tx, exp.config, exp.derived, exp.normalize, mesh=exp.mesh, spec=spec)
    state = jax.eval_shape(exp.init_fn, jax.random.key(0))
    consts = jax.eval_shape(lambda x: {"whiten_kernel": jnp.zeros((2, 2, 3, 12))}, exp.x_whiten)
    return jax.make_jaxpr(fn)(state, consts, exp.x_train, exp.y_train, jax.random.key(1), jnp.int32(0))


def test_programs_have_no_conditional_and_the_detached_one_fewer_convolutions(tiny_exp):
    exp = tiny_exp
    # 256/64 steps, 0.5 of the last; lookahead after the counts 5 and 10 (positions 1 and 2)
    assert [s.name() for s in exp.plan] == ["4", "4/detached/avg1", "2/detached/avg2"] and exp.plan[-1].final_average
    assert len(exp.epochs.programs) == 3  # each distinct epoch compiled once
    convs = {}
    for spec in plan_lib.distinct(exp.plan):
        prims = [e.primitive.name for e in jaxpr_eqns(_epoch_jaxpr(exp, spec).jaxpr)]
        assert "cond" not in prims and "switch" not in prims
        convs[spec.segments[0].whiten_bias] = prims.count("conv_general_dilated")
    # the trained bias needs the first block conv's data gradient; the detached one does not
    assert convs[False] == convs[True] - 1


def test_the_average_adds_no_select_to_the_epoch(tiny_exp):
    """Lookahead in the epoch program selects nothing (no per-step choice between the old and the
    new average: no ``select_n`` of a kernel's shape, as without averaging); the update runs once
    per group (a scan over groups of 5 steps, between a head and a tail)."""
    import dataclasses

    exp = Experiment_like(tiny_exp, tiny_exp.config)  # batches of 16: 12 steps fit in the 256 rows
    spec = EpochSpec((Segment(12, averages=(3, 8)),))  # head of 3, one group of 5, tail of 4
    with_la = _epoch_jaxpr(exp, spec).jaxpr
    plain_cfg = exp.config.copy_and_resolve_references()
    plain_cfg.lookahead.enabled = False
    plain = Experiment_like(tiny_exp, plain_cfg, averaged=False)
    without = _epoch_jaxpr(plain, dataclasses.replace(spec, segments=(Segment(12),))).jaxpr
    count = lambda j, name: sum(e.primitive.name == name for e in jaxpr_eqns(j))  # noqa: E731
    kernels = {p.shape for p in jax.tree.leaves(jax.eval_shape(exp.init_fn, jax.random.key(0)).params) if p.ndim >= 2}
    for j in (with_la, without):  # a per-step choice of the average would select each kernel-shaped leaf
        selected = {v.aval.shape for e in jaxpr_eqns(j) if e.primitive.name == "select_n" for v in e.outvars}
        assert not selected & kernels, selected & kernels
    # the step's body three times (a scan each: the head, a group's steps, the tail), the plain epoch's once
    assert count(with_la, "conv_general_dilated") == 3 * count(without, "conv_general_dilated")


class Experiment_like:
    """The parts of an Experiment that :func:`_epoch_jaxpr` reads, with another config."""

    def __init__(self, exp, config, averaged=True):
        import dataclasses

        self.__dict__.update({k: getattr(exp, k) for k in ("model", "tx", "normalize", "mesh",
                                                            "x_whiten", "x_train", "y_train")})
        self.config, self.derived = config, dataclasses.replace(exp.derived, batch_size=16, batch_per_device=16)
        self.init_fn = exp.init_fn if averaged else lambda key: exp.init_fn(key).replace(ema=None)


def test_plan_runs_the_steps_the_config_asks(tiny_exp):
    r = tiny_exp.run(0, per_epoch_eval=False)
    assert r["steps"] == 10 and int(tiny_exp.last_state.step) == 10
    assert tiny_exp.last_state.ema is not None  # airbench94 averages (lookahead)


def test_lookahead_follows_legacy_airbench94():
    """Hand-computed: every 5th step avg ← ρ·avg + (1−ρ)·net, ρ = 0.95^5·(c/T)^3, net ← avg; the
    average starts at the initial net (legacy/airbench94.py at f1c599c)."""
    T, avg, net = 20, {"w": jnp.float32(0.0)}, {"w": jnp.float32(0.0)}
    ref_avg = 0.0
    for c in range(1, T + 1):
        net = {"w": net["w"] + 1.0}  # the optimizer's step: +1
        ref_net = float(net["w"])
        if c % 5 == 0:  # the update steps, where the epoch places the update (test_averaging)
            avg, net = lookahead.update(avg, net, jnp.int32(c), T)
            rho = 0.95**5 * (c / T) ** 3
            ref_avg = rho * ref_avg + (1 - rho) * ref_net
            ref_net = ref_avg
        np.testing.assert_allclose([float(avg["w"]), float(net["w"])], [ref_avg, ref_net], rtol=1e-6)


def test_warm_up_runs_every_program_and_changes_no_run(tiny_exp):
    first = tiny_exp.run(0, per_epoch_eval=False)
    assert tiny_exp.warm_up() > 0
    again = tiny_exp.run(0, per_epoch_eval=False)
    assert (first["acc"], first["final_train_loss"]) == (again["acc"], again["final_train_loss"])


def test_static_loss_scale_gives_the_unscaled_gradient():
    """float16_static: loss × B, gradients ÷ B — with B a power of two, exactly the plain gradient."""
    from speedrun.system import precision

    w = jnp.array([0.3, -1.7, 2.5], jnp.float32)
    loss_fn = lambda p: (jnp.sum(jnp.sin(p) * p), None)  # noqa: E731
    _, finite, (loss, _), g = precision.value_and_grad(loss_fn, w, None, static_scale=256.0)
    np.testing.assert_array_equal(g, jax.grad(lambda p: loss_fn(p)[0])(w))
    assert bool(finite) and float(loss) == float(loss_fn(w)[0])
    assert precision.resolve("float16_static").static_scale and not precision.resolve("float16").static_scale
