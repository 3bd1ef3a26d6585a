"""Tests for speedrun.checkpoint (orbax save / restore / resume / evaluate) and same-seed determinism.

One tiny airbench94 (lookahead, alternating flip with the run key, whitening; width 1/16, 2 steps of
128 per epoch, 3 epochs, 256 real training and test images) is compiled once. References:

- determinism: a second run of the same seed (identical, bit for bit, on CPU);
- resume: the uninterrupted run — 1 epoch, checkpoint, restore, 2 more epochs must end with the
  same params, bit for bit: the same executables get the same inputs (the restored arrays are the
  saved bytes), so no floating-point result can differ;
- the restored step and run key: the step arithmetic by hand (256 // 128 = 2 steps per epoch) and
  the key derivation of ``Experiment.init_run`` / ``init_state`` written out with jax.random;
- evaluate(DIR): the accuracies the run itself reported at its end (its in-memory evaluation).
"""

import json
import shutil
import time

import jax
import numpy as np
import pytest

from speedrun import checkpoint, cli
from speedrun.config import ConfigError
from speedrun.train import experiment, logged_run
from speedrun.train.state import RUN_KEY_FOLD

N = 256


def leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) and jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def tiny(record, sample, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    xtr, ytr, xte, yte = (a[:N] for a in sample)
    np.savez(tmp / "tiny.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    cfg = record("airbench94", model__width_mult=0.0625, batch_size=128, epochs=3, eval_batch_size=N,
                 whitening_images=N, n_train=N, checkpoint_dir=str(tmp / "run"), checkpoint_every=1)
    exp = experiment.Experiment(cfg, (xtr, ytr, xte, yte))
    a = exp.run(0, per_epoch_eval=False, on_epoch_end=checkpoint.saver(exp, 0))
    final = jax.device_get((exp.last_state, exp.last_constants))
    return {"exp": exp, "tmp": tmp, "dir": tmp / "run", "a": a, "state": final[0], "constants": final[1]}


def test_same_seed_gives_identical_losses_and_params(tiny):
    exp = tiny["exp"]
    b = exp.run(0, per_epoch_eval=False)  # no checkpoints this time: saving must not change the run
    assert [r["train_loss"] for r in b["history"]] == [r["train_loss"] for r in tiny["a"]["history"]]
    leaves_equal(jax.device_get(exp.last_state.params), tiny["state"].params)
    leaves_equal(jax.device_get(exp.last_state.ema), tiny["state"].ema)
    assert (b["acc"], b["tta_acc"]) == (tiny["a"]["acc"], tiny["a"]["tta_acc"])


def test_checkpoint_holds_the_final_state(tiny):
    assert sorted(int(p.name) for p in tiny["dir"].iterdir() if p.name.isdigit()) == [1, 2, 3]
    state, constants, meta = checkpoint.restore(tiny["dir"], tiny["exp"])
    assert (meta["epochs_done"], meta["seed"], meta["record"]) == (3, 0, "airbench94")
    assert meta["config"]["model"]["width_mult"] == 0.0625 and meta["config"]["batch_size"] == 128
    assert int(state.step) == 3 * (N // 128)
    key_init = jax.random.split(jax.random.key(0))[0]
    np.testing.assert_array_equal(jax.random.key_data(state.run_key),
                                  jax.random.key_data(jax.random.fold_in(key_init, RUN_KEY_FOLD)))
    leaves_equal(jax.device_get(state.replace(run_key=None, health=None)),
                 tiny["state"].replace(run_key=None, health=None))
    leaves_equal(jax.device_get(constants), tiny["constants"])


def test_resumed_run_ends_with_the_uninterrupted_params(tiny):
    exp = tiny["exp"]
    state, _, meta = checkpoint.restore(tiny["dir"], exp, step=1)
    assert meta["epochs_done"] == 1 and int(state.step) == N // 128
    c = exp.run(0, per_epoch_eval=False, start=(state, 1))
    assert [r["epoch"] for r in c["history"]] == [2, 3]
    assert [r["train_loss"] for r in c["history"]] == [r["train_loss"] for r in tiny["a"]["history"][1:]]
    leaves_equal(jax.device_get(exp.last_state.params), tiny["state"].params)
    leaves_equal(jax.device_get(exp.last_state.opt_state), tiny["state"].opt_state)
    leaves_equal(jax.device_get(exp.last_state.ema), tiny["state"].ema)


def test_evaluate_reproduces_the_runs_accuracy(tiny):
    data = [f"data.path={tiny['tmp'] / 'tiny.npz'}"]  # saved as null (the record's placeholder)
    r = checkpoint.evaluate(tiny["dir"], overrides=data)  # the model rebuilt from the saved config
    assert (r["epochs_done"], r["test_images"], r["tta_level"]) == (3, N, 2)  # airbench94: tta_level 2
    assert r["acc"] == pytest.approx(tiny["a"]["acc"], abs=1e-5)
    assert r["tta_acc"] == pytest.approx(tiny["a"]["tta_acc"], abs=1e-5)
    early = checkpoint.evaluate(tiny["dir"] / "1", tta_level=0, overrides=data)  # a step folder; no TTA
    assert early["epochs_done"] == 1 and early["tta_acc"] == early["acc"]


def test_cli_eval_prints_one_json_line(tiny, capsys):
    data = f"--config.data.path={tiny['tmp'] / 'tiny.npz'}"
    assert cli.main(["eval", str(tiny["dir"]), "--tta_level", "1", data]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["acc"] == pytest.approx(tiny["a"]["acc"], abs=1e-5) and line["tta_level"] == 1
    assert cli.main(["eval", str(tiny["tmp"] / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no checkpoint folder" in err


def test_checkpoint_errors_are_one_line_config_errors(tiny):
    (tiny["tmp"] / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        checkpoint.evaluate(tiny["tmp"] / "empty")
    with pytest.raises(ConfigError, match=r"does not restore into this model: model batch_stats/\S+ is saved as "
                       r"float32\[4\], the model has float32\[8\]"):  # width 1/16 -> 1/8: 4 -> 8 channels
        checkpoint.evaluate(tiny["dir"], overrides=["model.width_mult=0.125"])
    with pytest.raises(ConfigError, match="no checkpoint after epoch 7"):
        checkpoint.evaluate(tiny["dir"], step=7)
    cfg = tiny["exp"].config
    with pytest.raises(ConfigError, match="finished run"):
        checkpoint.resume_step(cfg)
    other = cfg.copy_and_resolve_references()
    other.epochs, other.optimizer.lr = 4, 1.0
    with pytest.raises(ConfigError, match="differs in epochs, optimizer.lr"):
        checkpoint.resume_step(other)
    other.checkpoint_dir = None
    with pytest.raises(ConfigError, match="without a checkpoint_dir saves nothing"):
        checkpoint.resume_step(other)
    other.checkpoint_dir = str(tiny["tmp"] / "tiny.npz" / "under_a_file")
    with pytest.raises(ConfigError, match="not a writable folder"):
        checkpoint.resume_step(other)


def test_train_saves_off_the_clock_and_resumes(tiny, monkeypatch):
    exp, run_dir = tiny["exp"], tiny["tmp"] / "train"
    monkeypatch.setattr(exp.config, "checkpoint_dir", str(run_dir))
    monkeypatch.setattr(experiment, "Experiment", lambda config: exp)  # the compiled one
    real_saver = checkpoint.saver

    def slow_saver(exp, seed):  # 3 saves of >= 0.7 s each: counted, they would add >= 2.1 s
        save = real_saver(exp, seed)

        def on_epoch_end(*args):
            time.sleep(0.7)
            save(*args)

        return on_epoch_end

    monkeypatch.setattr(checkpoint, "saver", slow_saver)
    full = logged_run.train_and_evaluate(exp.config, tiny["tmp"] / "logs")
    assert full["train_time_s"] < tiny["a"]["train_time_s"] + 1.5
    assert full["checkpoint"] == str(run_dir.resolve() / "3")
    leaves_equal(jax.device_get(exp.last_state.params), tiny["state"].params)
    for step in ("2", "3"):  # as if killed after epoch 1
        shutil.rmtree(run_dir / step)
    resumed = logged_run.train_and_evaluate(exp.config, tiny["tmp"] / "logs")
    assert [r["epoch"] for r in resumed["history"]] == [2, 3]
    assert (full["resumed_after_epochs"], resumed["resumed_after_epochs"]) == (None, 1)
    assert resumed["images_per_s"] == pytest.approx(2 * 2 * 128 / resumed["train_time_s"], rel=1e-3)  # 2 epochs ran
    leaves_equal(jax.device_get(exp.last_state.params), tiny["state"].params)
    log = (tiny["tmp"] / "logs").glob("*.log")
    assert any("# resumed from" in p.read_text() for p in log)
