"""Tests for speedrun.parallel and the data-parallel epoch of speedrun.train.

The multi-device checks need 8 devices, and JAX fixes the CPU device count when its backend starts,
so they run once in a subprocess (this file run as a script: ``jax_num_cpu_devices=8`` is set
before anything touches JAX) that prints one JSON line; the rest of the suite keeps 1 device.

The 8-vs-1 comparison: the same tiny ResNet-9 record (width 1/16, global batch 64, ghost batch 8,
so 8 examples and exactly one ghost group per device with 8 devices, and 8 groups of the same 8
consecutive examples on one device), the same seed and init, 3 steps (one per epoch, 100 real
training images, replicated on every device) on a mesh of 8 CPU devices and on a mesh of 1.
Same global batches, same per-example augmentation, same ghost groups: the runs may differ only by
the order of floating-point reductions (the gradient all-reduce). Tolerance: per-step losses within
1e-5 relative; params after each step, both devices counts started from the same state (the
1-device trajectory's), within 1e-5 · max|param| absolute. The params at the end of the 3 steps are
not compared: this trajectory (Page's batch-norm bias learning rate, 64 × up to 0.4, on 3 steps) is
ill-conditioned — a rounding-sized change of the init (× (1 + 1e-7·z) or 1e-6·z) moves the final
params by 1.6e-4 to 2.6e-3 on one device, on jax 0.10 and 0.12 alike, so an end-to-end tolerance
would test luck in the reduction order, not the data parallelism (measured; see the closing note).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("speedrun") is None:  # not installed: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
N_DEV = 8


def tiny_config():
    """The 94pct_26s record shrunk for CPU tests (see the module docstring)."""
    from speedrun import config

    return config.smoke(config.load_record("94pct_26s"), model__width_mult=0.0625, batch_size=64,
                        model__ghost_batch_size=8, eval_batch_size=128, epochs=3, precision="float32")


# --------------------------------------------------------------------------- in-process (1 device)

def test_per_device_batch_values_and_errors():
    from speedrun.system.parallel import per_device_batch

    assert per_device_batch(512, 8, 32) == 64
    assert per_device_batch(512, 1, 32) == 512
    assert per_device_batch(96, 8, None) == 12  # no ghost groups: any per-device size
    with pytest.raises(ValueError, match=r"batch_size=100 is not divisible by the 8 devices.*96 or 104"):
        per_device_batch(100, 8, 4)
    # 512 over 32 devices is 16 per device: a ghost group of 32 would straddle two devices
    with pytest.raises(ValueError, match=r"16 examples per device, not a multiple of "
                                         r"model.ghost_batch_size=32.*multiple of 32×32=1024"):
        per_device_batch(512, 32, 32)
    with pytest.raises(ValueError, match="eval_batch_size=1000 is not divisible by the 16 devices"):
        per_device_batch(1000, 16, name="eval_batch_size")


def test_derived_checks_device_count():
    from speedrun.config import derived

    cfg = tiny_config()
    assert derived(cfg, 5170, 8).steps_per_epoch == 5170 // 64
    cfg.batch_size = 60
    with pytest.raises(ValueError, match="batch_size=60 is not divisible by the 8 devices"):
        derived(cfg, 5170, 8)
    cfg.batch_size = 64
    cfg.model.ghost_batch_size = 16  # 8 per device
    with pytest.raises(ValueError, match="ghost_batch_size=16"):
        derived(cfg, 5170, 8)
    cfg.model.ghost_batch_size = 8
    cfg.eval_batch_size = 100
    with pytest.raises(ValueError, match="eval_batch_size=100"):
        derived(cfg, 5170, 8)


def test_pad_rows():
    from speedrun.system.parallel import pad_rows

    x = np.arange(10 * 2, dtype=np.uint8).reshape(10, 2)
    p = pad_rows(x, 8)
    assert p.shape == (16, 2) and p.dtype == np.uint8
    np.testing.assert_array_equal(p[:10], x)
    np.testing.assert_array_equal(p[10:], 0)
    assert pad_rows(x, 5) is x


def test_initialize_distributed_reads_flags_then_env(monkeypatch):
    import jax
    from speedrun.system import parallel

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert parallel.initialize_distributed(environ={}) is False and calls == []
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert parallel.initialize_distributed(environ=env) is True
    assert calls[-1] == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}
    assert parallel.initialize_distributed(process_id=0, environ=env)  # a flag wins over the env
    assert calls[-1]["process_id"] == 0
    assert parallel.initialize_distributed(environ={"SPEEDRUN_DISTRIBUTED": "1"})  # auto-detection
    assert calls[-1] == {"coordinator_address": None, "num_processes": None, "process_id": None}
    with pytest.raises(ValueError, match="JAX_PROCESS_ID='one' is not an integer"):
        parallel.initialize_distributed(environ={"JAX_PROCESS_ID": "one"})


# --------------------------------------------------------------------------- 8 simulated devices

@pytest.fixture(scope="module")
def worker():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, "--worker"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # the 8-device worker process (about a minute): CI's slow pass
def test_worker_has_eight_devices(worker):
    assert worker["devices"] == N_DEV


@pytest.mark.slow  # the 8-device worker process (about a minute): CI's slow pass
def test_gather_batch_matches_numpy_indexing(worker):
    # the worker compares each device's slice with numpy x[idx][d*B/D:(d+1)*B/D]
    assert worker["gather_equal"] is True
    assert worker["gather_idx_equal"] is True


@pytest.mark.slow  # the 8-device worker process (about a minute): CI's slow pass
def test_example_keys_do_not_depend_on_device_count(worker):
    assert worker["keys_equal"] is True


@pytest.mark.slow  # the 8-device worker process (about a minute): CI's slow pass
def test_shardings_are_as_documented(worker):
    s = worker["shardings"]
    # the training set is replicated, padded once by the record's 4 px for the crop
    assert s["x_train_spec"] == "P()"
    assert s["x_train_shard_shapes"] == [[100, 40, 40, 3]] * N_DEV
    assert s["y_train_shard_shapes"] == [[100]] * N_DEV
    assert s["test_spec"] == "P(None, 'data')"
    assert s["state_replicated"] is True and s["metrics_replicated"] is True
    # (state, constants, x_train, y_train, key, epoch): all replicated
    # (the epoch index feeds only the alternating flip, which this record does not use: jit prunes
    # the unused argument, so it may have no sharding at all)
    assert s["epoch_in_specs"][:5] == [["P()"]] * 5
    assert s["epoch_in_specs"][5] in ([], ["P()"])


@pytest.mark.slow  # the 8-device worker process (about a minute): CI's slow pass
def test_epoch_moves_no_images_between_devices(worker):
    # the step's only collectives are the means (psum/pmean: loss, gradient, batch-norm statistics,
    # metrics); no reduce-scatter or all-gather of the batch
    prims = set(worker["epoch_collectives"])
    assert not prims & {"psum_scatter", "reduce_scatter", "all_gather", "all_to_all", "ppermute"}, prims
    assert any(p.startswith("psum") or p == "pmean" for p in prims), prims
    assert worker["epoch_hlo_collectives"] == ["all-reduce"], worker["epoch_hlo_collectives"]


@pytest.mark.slow  # the 8-device worker process (about a minute): CI's slow pass
def test_eight_devices_match_one_device(worker):
    l8, l1 = np.array(worker["loss8"]), np.array(worker["loss1"])
    assert len(l8) == 3
    np.testing.assert_allclose(l8, l1, rtol=1e-5, err_msg=f"losses 8 dev {l8} vs 1 dev {l1}")
    # the run() of the Experiment (8 devices) follows the same trajectory
    np.testing.assert_allclose(worker["run8_losses"], l1, rtol=1e-5)
    # each step from the same state: 8 devices and 1 device give the same params to rounding
    # (measured max 6.3e-7 on jax 0.12, 4.3e-7 on 0.10, max|param| ~1)
    step_diff = max(worker["param_maxdiff_per_step"])
    assert step_diff <= 1e-5 * worker["param_absmax"], worker["param_maxdiff_per_step"]
    assert worker["stats_maxdiff"] <= 1e-4 * worker["stats_absmax"]
    # the data sharding really changed something: params moved away from the init
    assert worker["param_change"] > 1000 * step_diff
    assert abs(worker["acc8"] - worker["acc1"]) <= 1 / worker["n_test"] + 1e-9


# --------------------------------------------------------------------------- 2 processes

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_share_one_mesh():
    """Two JAX processes (2 CPU devices each, gloo collectives) joined through a localhost
    coordinator, as two hosts would be: each device holds the whole (replicated) training set and
    gathers its share of the batch locally, a data-parallel gradient equals the numpy gradient of the
    global mean loss, and only process 0 logs."""
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, __file__, "--mp-worker", str(pid), str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for pid in (0, 1)]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-4000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    x = np.arange(12 * 2, dtype=np.float32).reshape(12, 2)
    for pid, out in enumerate(outs):
        assert out["process_index"] == pid and out["process_count"] == 2 and out["device_count"] == 4
        assert out["log_active"] == (pid == 0)
        assert out["local_rows"] == [[0, 12], [0, 12]]  # the whole set on each of its devices
        assert out["gather_equal"] is True
        # loss = mean over the global batch of (x·w - t)², w = (1, -1), t = row index:
        # d/dw = 2/B Σ (x·w - t) x, the numpy reference below
        idx = np.array(out["idx"])
        w, t = np.array([1.0, -1.0]), idx.astype(np.float64)
        xb = x[idx]
        ref = 2 / len(idx) * ((xb @ w - t)[:, None] * xb).sum(0)
        np.testing.assert_allclose(out["grad"], ref, rtol=1e-6)


def _mp_worker(pid: int, port: int) -> dict:
    import jax

    jax.config.update("jax_num_cpu_devices", 2)
    from speedrun.system import parallel

    assert parallel.initialize_distributed(f"127.0.0.1:{port}", 2, pid)
    import jax.numpy as jnp

    from speedrun.measure import runlog

    P = jax.sharding.PartitionSpec
    mesh = parallel.make_mesh()
    x = np.arange(12 * 2, dtype=np.float32).reshape(12, 2)  # the same host data on every process
    xs = parallel.put(x, parallel.replicated(mesh))
    local_rows = sorted([int(sh.data[0, 0]) // 2, int(sh.data[-1, 0]) // 2 + 1] for sh in xs.addressable_shards)
    idx = np.array([11, 0, 5, 6, 3, 9, 1, 10], np.int32)  # a global batch of 8 drawn from both processes
    idx_r = parallel.replicate(idx, mesh)

    ts = parallel.put(np.arange(12, dtype=np.float32), parallel.replicated(mesh))  # target = row index

    def grad_step(xl, tl, i):
        xb, t, _ = parallel.gather_batch((xl, tl), i, "data")

        def loss(w):
            return parallel.pmean(jnp.mean((xb @ w - t) ** 2), "data")

        return jax.grad(loss)(jnp.array([1.0, -1.0])), xb

    f = jax.jit(jax.shard_map(grad_step, mesh=mesh, in_specs=(P(), P(), P()),
                              out_specs=(P(), P("data"))),
                out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)))
    g, xb = f(xs, ts, idx_r)
    return {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "device_count": jax.device_count(), "log_active": runlog.RunLog(None, "t").active,
            "local_rows": local_rows, "idx": idx.tolist(),
            "gather_equal": bool(np.array_equal(np.asarray(xb.addressable_data(0)), x[idx])),
            "grad": np.asarray(g.addressable_data(0)).tolist()}


# --------------------------------------------------------------------------- the worker

def _worker() -> dict:
    import jax

    jax.config.update("jax_num_cpu_devices", N_DEV)
    import jax.numpy as jnp

    from speedrun import config, data, evaluate as eval_lib, train
    from speedrun.data import augment
    from speedrun.system import parallel
    from speedrun.train.epoch import make_train_epoch

    out = {"devices": jax.device_count()}
    mesh8 = parallel.make_mesh()
    mesh1 = parallel.make_mesh(jax.devices()[:1])
    rng = np.random.RandomState(0)
    P = jax.sharding.PartitionSpec

    # gather_batch: device d gets rows d*B/D.. of x[idx] (numpy reference), for uint8 and int32
    x = rng.randint(0, 256, (40, 4, 4, 3)).astype(np.uint8)
    y = rng.randint(0, 10, 40).astype(np.int32)
    idx = rng.permutation(37)[:16].astype(np.int32)
    f = jax.jit(jax.shard_map(lambda a, b, i: parallel.gather_batch((a, b), i, "data"), mesh=mesh8,
                              in_specs=(P(), P(), P()), out_specs=P("data")))
    rep8 = parallel.replicated(mesh8)
    gx, gy, gi = f(parallel.put(x, rep8), parallel.put(y, rep8), jnp.asarray(idx))
    out["gather_equal"] = bool(np.array_equal(np.asarray(gx), x[idx]) and np.array_equal(np.asarray(gy), y[idx]))
    out["gather_idx_equal"] = bool(np.array_equal(np.asarray(gi), idx))

    # example_keys: position p gets fold_in(key, p) whatever the device count
    key = jax.random.key(7)
    k8 = jax.jit(jax.shard_map(lambda k: jax.random.key_data(parallel.example_keys(k, 2, "data")),
                               mesh=mesh8, in_specs=P(), out_specs=P("data")))(key)
    ref = np.stack([np.asarray(jax.random.key_data(jax.random.fold_in(key, p))) for p in range(16)])
    out["keys_equal"] = bool(np.array_equal(np.asarray(k8), ref))

    # the tiny record on 8 devices (Experiment) and on 1 device (same init, same epoch keys)
    cfg = tiny_config()
    xtr, ytr, xte, yte = data.load_cifar10("sample")
    arrays = (xtr[:100], ytr[:100], xte[:256], yte[:256])
    exp = train.Experiment(cfg, arrays)  # all 8 devices
    assert exp.steps_per_epoch == 1
    rep8 = parallel.replicated(mesh8)
    key_init, key_train = jax.random.split(jax.random.key(0))
    init = jax.device_get(exp.init(jax.device_put(key_init, rep8)))
    consts = jax.device_get(exp.whiten(exp.x_whiten))
    epoch_keys = [jax.random.fold_in(key_train, e) for e in range(cfg.epochs)]

    s = {"x_train_spec": str(exp.x_train.sharding.spec),
         "x_train_shard_shapes": [list(sh.data.shape) for sh in exp.x_train.addressable_shards],
         "y_train_shard_shapes": [list(sh.data.shape) for sh in exp.y_train.addressable_shards],
         "test_spec": str(exp.test_batches[0].sharding.spec),
         # per argument of the compiled epoch: the set of its leaves' partition specs
         "epoch_in_specs": [sorted({str(sh.spec) for sh in jax.tree.leaves(arg)})
                            for arg in exp.epochs.input_shardings[0]]}

    def trajectory(epoch_fn, mesh, xs, ys, start=init, epochs=cfg.epochs):
        rep = parallel.replicated(mesh)
        # fresh buffers: the epoch donates the state, and device_get leaves PRNG key arrays on device
        state = jax.device_put(jax.tree.map(jnp.copy, start), rep)
        c = jax.device_put(consts, rep)
        losses = []
        for e in range(epochs):
            state, m = epoch_fn(state, c, xs, ys, jax.device_put(epoch_keys[e], rep),
                                jax.device_put(jnp.int32(e), rep))
            losses.append(float(m["loss"]))
        return state, c, m, losses

    # the collectives of the epoch: in its jaxpr (primitive names) and its compiled HLO
    import re

    epoch_fn = make_train_epoch(exp.model, exp.tx, cfg, exp.derived, augment.normalizer(), mesh=mesh8)
    jaxpr = str(jax.make_jaxpr(epoch_fn)(init, consts, exp.x_train, exp.y_train, epoch_keys[0], jnp.int32(0)))
    names = r"\b(psum\w*|pmean|pmax|pmin|all_gather\w*|all_to_all|ppermute|reduce_scatter|psum_scatter)\b"
    out["epoch_collectives"] = sorted(set(re.findall(names, jaxpr)))
    hlo = exp.epochs.as_text()
    out["epoch_hlo_collectives"] = sorted(set(re.findall(r"\b(all-reduce|reduce-scatter|all-gather|all-to-all|"
                                                         r"collective-permute)\b", hlo)))
    st8, c8, m8, out["loss8"] = trajectory(exp.epochs.first(), mesh8, exp.x_train, exp.y_train)
    s["state_replicated"] = all(a.sharding.is_fully_replicated for a in jax.tree.leaves(st8))
    s["metrics_replicated"] = all(a.sharding.is_fully_replicated for a in jax.tree.leaves(m8))
    out["shardings"] = s
    out["acc8"] = float(exp.evaluate(exp.eval_variables(st8, c8), *exp.test_batches)["acc"])

    epoch1 = jax.jit(make_train_epoch(exp.model, exp.tx, cfg, config.derived(cfg, 100, 1), augment.normalizer(),
                                      mesh=mesh1), donate_argnums=0)
    rows1 = parallel.replicated(mesh1)
    xs1 = jnp.pad(parallel.put(xtr[:100], rows1), ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    ys1 = parallel.put(ytr[:100], rows1)
    st1, c1, _, out["loss1"] = trajectory(epoch1, mesh1, xs1, ys1)
    # one step at a time from the same state (the 1-device trajectory's): 8 devices vs 1 device
    rep1 = parallel.replicated(mesh1)
    state, c = jax.device_put(jax.tree.map(jnp.copy, init), rep1), jax.device_put(consts, rep1)
    per_step = []
    for e in range(cfg.epochs):
        k, i = epoch_keys[e], jnp.int32(e)
        s8 = exp.epochs.first()(jax.device_put(jax.tree.map(jnp.copy, jax.device_get(state)), rep8), jax.device_put(c, rep8),
                       exp.x_train, exp.y_train, jax.device_put(k, rep8), jax.device_put(i, rep8))[0]
        state = epoch1(state, c, xs1, ys1, jax.device_put(k, rep1), jax.device_put(i, rep1))[0]
        per_step.append(float(max(jax.tree.leaves(jax.tree.map(lambda u, v: np.max(np.abs(u - v)),
                                                                jax.device_get(s8.params), jax.device_get(state.params))))))
    out["param_maxdiff_per_step"] = per_step
    batches = [jax.device_put(a, jax.devices()[0]) for a in eval_lib.batch_test_set(xte[:256], yte[:256], 128)]
    evaluate1 = jax.jit(eval_lib.make_evaluate(exp.model.apply, augment.normalizer()))
    out["acc1"] = float(evaluate1({**st1.ema, "constants": c1}, *batches)["acc"])
    out["n_test"] = 256

    p8, p1, p0 = (jax.device_get(t) for t in (st8.params, st1.params, init.params))
    diff = jax.tree.leaves(jax.tree.map(lambda a, b: np.max(np.abs(a - b)), p8, p1))
    out["param_maxdiff"] = float(max(diff))
    out["param_absmax"] = float(max(np.max(np.abs(a)) for a in jax.tree.leaves(p1)))
    out["param_change"] = float(max(jax.tree.leaves(jax.tree.map(lambda a, b: np.max(np.abs(a - b)), p1, p0))))
    b8, b1 = jax.device_get(st8.batch_stats), jax.device_get(st1.batch_stats)
    out["stats_maxdiff"] = float(max(jax.tree.leaves(jax.tree.map(lambda a, b: np.max(np.abs(a - b)), b8, b1))))
    out["stats_absmax"] = float(max(np.max(np.abs(a)) for a in jax.tree.leaves(b1)))

    r8 = exp.run(0, per_epoch_eval=False)
    out["run8_losses"] = [row["train_loss"] for row in r8["history"]]
    return out


if __name__ == "__main__" and "--worker" in sys.argv:
    print(json.dumps(_worker()))
if __name__ == "__main__" and "--mp-worker" in sys.argv:
    _i = sys.argv.index("--mp-worker")
    print(json.dumps(_mp_worker(int(sys.argv[_i + 1]), int(sys.argv[_i + 2]))))
