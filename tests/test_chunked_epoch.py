"""The CPU epoch run as host-called chunks of unrolled steps (speedrun.train.chunked) trains exactly
as the one-program epoch: airbench94 at width 1/16, float32, 7 steps of 32 per epoch in chunks of at
most 3, cut where lookahead updates (after the fifth step), two epochs (the second stops after 3.5
of its steps: skipped steps, lookahead's final copy, the alternating flip), and no step of its
chunk programs runs inside a while loop (jax-ml/jax#12868: XLA:CPU runs the convolutions of a loop
body slowly; the small scalar loops of threefry and the lr schedule's ``searchsorted`` remain)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from speedrun.system import parallel
from speedrun.train import chunked
from speedrun.train.epoch import make_train_epoch
from speedrun.train.experiment import Experiment

STEPS, BATCH, CHUNK = 7, 32, 3


def loops_with_convolutions(hlo: str) -> list[str]:
    """The ``while`` instructions of an HLO module's text whose body (or anything it calls, at any
    depth) runs a convolution (opcode ``convolution`` or a oneDNN convolution custom call). The
    small loops of threefry and ``searchsorted`` (the lr schedule's interp) hold none."""
    comps, name = {}, None
    for line in hlo.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m and not line.startswith(" "):
            name = m.group(1)
            comps[name] = []
        elif name is not None and line.startswith(" "):
            comps[name].append(line.split(", metadata=")[0])
    calls = {c: set(re.findall(r"(?:calls|body|condition|to_apply|_computation|computations)=\{?%([\w.\-]+)",
                                "\n".join(ls))) | set(re.findall(r", %([\w.\-]+)\}", "\n".join(ls))) for c, ls in comps.items()}
    conv = {c for c, ls in comps.items() if any(re.search(r" convolution\(|onednn\$convolution", x) for x in ls)}

    def has_conv(c, seen=()):
        return c in conv or any(has_conv(d, (*seen, c)) for d in calls.get(c, ()) if d not in seen)

    return [x for ls in comps.values() for x in ls
            if " while(" in x and has_conv(re.search(r"body=%([\w.\-]+)", x).group(1))]


@pytest.fixture(scope="module")
def setup(record, sample):
    x, y, xt, yt = sample
    n = STEPS * BATCH + 5  # the last partial batch is dropped
    cfg = record("airbench94", n_train=n, whitening_images=128, batch_size=BATCH, eval_batch_size=64,
                 model__width_mult=0.0625, tta_level=0, epochs=2, last_epoch_fraction=0.5, precision="float32")
    with cfg.unlocked():
        cfg.scan_chunk = CHUNK
    exp = Experiment(cfg, (x[:n], y[:n], xt[:64], yt[:64]))
    return cfg, exp


def test_chunk_size():
    import ml_collections

    c = ml_collections.ConfigDict({"scan_unroll": 0})
    assert chunked.chunk_size(c, 390, "cpu") == chunked.CPU_CHUNK
    assert chunked.chunk_size(c, chunked.CPU_CHUNK, "cpu") == 0  # one program is no larger
    assert chunked.chunk_size(c, 390, "gpu") == 0
    c.scan_chunk = 3
    assert chunked.chunk_size(c, 7, "cpu") == 3
    c.scan_unroll = 2  # an explicit unroll: the one program
    assert chunked.chunk_size(c, 7, "cpu") == 0


@pytest.mark.slow  # a real training run: CI's slow pass
def test_chunked_equals_one_program(setup):
    if jax.default_backend() != "cpu":
        pytest.skip("the chunked epoch is the CPU backend's")
    cfg, exp = setup
    first = exp.epochs.first()
    assert isinstance(first, chunked.ChunkedEpoch)
    assert [len(c) for c in first.plan(exp.init_run(0)[0].run_key, exp.init_run(0)[1][0])[0]] == [3, 2, 2]  # chunks of 3, cut where lookahead updates (after step 5)
    for program in set(p for spec in exp.epochs.programs.values() for p in spec.calls):  # no step inside a loop
        assert loops_with_convolutions(program.as_text()) == []
    ones = {spec: jax.jit(make_train_epoch(exp.model, exp.tx, cfg, exp.derived, exp.normalize, mesh=exp.mesh,
                                           spec=spec), donate_argnums=0) for spec in exp.epochs.programs}
    state0, keys, ids = exp.init_run(0)
    constants = exp.whiten(exp.x_whiten)
    sa, sb = (jax.tree.map(jnp.copy, state0) for _ in range(2))  # both epochs donate their state
    for e in range(cfg.epochs):
        sa, ma = exp.epochs(e, sa, constants, exp.x_train, exp.y_train, keys[e], ids[e])
        sb, mb = ones[exp.plan[e]](sb, constants, exp.x_train, exp.y_train, keys[e], ids[e])
        ma, mb = jax.device_get((ma, mb))
        assert jax.tree.structure(ma) == jax.tree.structure(mb)
        # the same ops on the same inputs; only float32 rounding may differ (XLA may fuse across a
        # step boundary differently in the two programs): a few ulps of the O(1) loss, and for the
        # weights (checked below to be of order 1, float32 ulp ~1e-7) ~100 ulps after 11 steps
        np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-5)
        np.testing.assert_allclose(ma["acc"], mb["acc"], rtol=1e-6)
        assert ma["health"]["step"] == mb["health"]["step"]
        for a, b in zip(jax.tree.leaves(jax.device_get(sa.params)), jax.tree.leaves(jax.device_get(sb.params))):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
            assert np.max(np.abs(b)) < 10
    assert int(jax.device_get(sa.step)) == exp.derived.total_steps  # the last epoch's program is shorter


@pytest.mark.slow  # a real training run: CI's slow pass
def test_loop_detector_sees_a_scan(setup):
    """The check above finds the epoch's loop when there is one (``scan_unroll=1``: a real loop)."""
    if jax.default_backend() != "cpu":
        pytest.skip("the detector reads the CPU backend's convolution opcodes")
    cfg, exp = setup
    looped = cfg.copy_and_resolve_references()
    looped.scan_unroll = 1
    rep, rows = parallel.replicated(exp.mesh), parallel.sharded(exp.mesh)
    fn = make_train_epoch(exp.model, exp.tx, looped, exp.derived, exp.normalize, mesh=exp.mesh)
    state, keys, ids = exp.init_run(0)
    hlo = jax.jit(fn, in_shardings=(rep, rep, rows, rows, rep, rep)).lower(
        state, exp.whiten(exp.x_whiten), exp.x_train, exp.y_train, keys[0], ids[0]).compile().as_text()
    assert len(loops_with_convolutions(hlo)) == 2  # the steps before lookahead's update (after step 5) and after
