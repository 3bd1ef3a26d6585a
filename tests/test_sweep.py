"""``./run.sh sweep``: SPACE files, the Optuna study (samplers, failed trials, resume after SIGKILL, two
workers on one SQLite study, vmap batches), the report, and one end-to-end CLI run at smoke scale.

The Optuna plumbing is tested with a fake runner (no nets are trained); the references are
hand-computed values (grid points, Student-t quantiles from a table) and what the fake runner was
asked to run.
"""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from speedrun import cli
from speedrun import config as config_lib
from speedrun.errors import ConfigError
from speedrun.sweep import loop, report
from speedrun.sweep import space as space_lib
from speedrun.sweep import study as study_lib

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def airbench():
    return config_lib.load_record("airbench94")


@pytest.fixture
def lr_space(tmp_path, airbench):
    f = write(tmp_path / "lr.py", """
        from speedrun.sweep.space import grid, uniform
        SPACE = {"optimizer.lr": grid(5.0, 10.0, 20.0), "label_smoothing": uniform(0.0, 0.3, points=2)}
    """)
    return space_lib.load_space(f, airbench)


def fake_acc(values, seed):
    """The fake runner's tta accuracy: a known function of the values and the seed."""
    return 0.5 + 0.01 * math.log(values["optimizer.lr"]) - 0.1 * values.get("label_smoothing", 0.0) + 0.002 * seed


class FakeRunner:
    """Records what it was asked; lr 20 with label smoothing 0.3 "diverges"; lr 10 with 0.3 is an
    invalid combination (ConfigError, like the runner's)."""

    def __init__(self):
        self.calls = []

    def run_many(self, values_list, seeds, vmap=1):
        self.calls.append(([dict(v) for v in values_list], list(seeds), vmap))
        if any(v["optimizer.lr"] == 10.0 and v.get("label_smoothing") == 0.3 for v in values_list):
            raise ConfigError("lr 10 with label smoothing 0.3 is not allowed (fake)")
        return [self.run(v, seeds) for v in values_list]

    def run(self, values, seeds):
        if values["optimizer.lr"] == 10.0 and values.get("label_smoothing") == 0.3:
            raise ConfigError("lr 10 with label smoothing 0.3 is not allowed (fake)")
        if values["optimizer.lr"] == 20.0 and values.get("label_smoothing") == 0.3:
            return [{"seed": s, "error": "FloatingPointError: diverged at epoch 1 (fake)"} for s in seeds]
        return [{"seed": s, "tta_acc": fake_acc(values, s), "acc": fake_acc(values, s) - 0.01,
                 "train_time_s": 1.0 + values["optimizer.lr"] / 10 + s, "compile_time_s": 2.0} for s in seeds]


def new_study(tmp_path, sampler, space, name="s", **kw):
    return study_lib.open_study(f"sqlite:///{tmp_path / name}.db", name, sampler, space, {"record": "airbench94"}, **kw)


# ------------------------------------------------------------------ SPACE files


def test_space_helpers_and_grid_points(lr_space):
    assert space_lib.grid_space(lr_space) == {"optimizer.lr": [5.0, 10.0, 20.0], "label_smoothing": [0.0, 0.3]}
    assert space_lib.loguniform(1.0, 100.0, points=3).grid_values() == [1.0, 10.0, 100.0]  # geometric
    assert space_lib.integer(2, 5).grid_values() == [2, 3, 4, 5]
    assert space_lib.integer(0, 10, step=5).grid_values() == [0, 5, 10]
    d = space_lib.loguniform(0.01, 1.0).distribution()
    assert isinstance(d, optuna.distributions.FloatDistribution) and d.log and (d.low, d.high) == (0.01, 1.0)
    assert space_lib.categorical("a", "b").distribution().choices == ("a", "b")
    for bad in (lambda: space_lib.uniform(1, 1), lambda: space_lib.loguniform(0, 1), lambda: space_lib.grid(),
                lambda: space_lib.grid(1, 1), lambda: space_lib.grid([1, 2]), lambda: space_lib.integer(0, 4, step=0)):
        with pytest.raises(ConfigError):
            bad()


def test_space_errors_name_the_key(tmp_path, airbench):
    unknown = write(tmp_path / "u.py", "from speedrun.sweep.space import grid\nSPACE = {'optimizer.lrr': grid(1.0)}\n")
    with pytest.raises(ConfigError, match="optimizer.lrr"):
        space_lib.load_space(unknown, airbench)
    wrong_type = write(tmp_path / "w.py", "from speedrun.sweep.space import uniform\nSPACE = {'epochs': uniform(2, 4)}\n")
    with pytest.raises(ConfigError, match="'epochs'"):
        space_lib.load_space(wrong_type, airbench)
    ranged = write(tmp_path / "r.py", "from speedrun.sweep.space import uniform\nSPACE = {'label_smoothing': uniform(0, 1)}\n")
    with pytest.raises(ConfigError, match="grid sampler.*'label_smoothing'"):
        space_lib.grid_space(space_lib.load_space(ranged, airbench))
    with pytest.raises(ConfigError, match="no SPACE dict"):
        space_lib.load_space(write(tmp_path / "e.py", "X = 1\n"))
    with pytest.raises(ConfigError, match="no SPACE file"):
        space_lib.load_space(tmp_path / "missing.py")


@pytest.mark.parametrize("name", ["airbench94_grid", "airbench94_lr", "airbench94_genetic", "airbench94_muon_lr"])
def test_bundled_space_files_load(name):
    record = "airbench94_muon" if "muon" in name else "airbench94"
    s = space_lib.load_space(ROOT / "sweeps" / f"{name}.py", config_lib.load_record(record))
    assert s.dims


# ------------------------------------------------------------------ trials


def test_summarize_mean_ci_median():
    results = [{"tta_acc": a, "acc": a, "train_time_s": t, "compile_time_s": 3.0, "seed": i}
               for i, (a, t) in enumerate([(0.60, 2.0), (0.62, 9.0), (0.64, 3.0)])]
    attrs, error = study_lib.summarize(results)
    assert error is None
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, 2) from a table; sample std 0.02
    assert attrs["tta_acc_mean"] == pytest.approx(0.62)
    assert attrs["tta_acc_ci_half_width"] == pytest.approx(half)
    assert attrs["tta_acc_ci_low"] == pytest.approx(0.62 - half)
    assert attrs["train_time_median_s"] == 3.0
    assert study_lib.summarize([{"error": "FloatingPointError: x"}, results[0]])[1] == "FloatingPointError: x"
    assert "FloatingPointError" in study_lib.summarize([{**results[0], "tta_acc": float("nan")}])[1]


def test_grid_runs_every_point_once_and_records_failures(tmp_path, lr_space):
    runner = FakeRunner()
    study = new_study(tmp_path, "grid", lr_space)
    out = loop.run_trials(study, lr_space, runner, 100, [0, 1], log=lambda s: None)  # capped at the 6 points
    assert study_lib.default_trials("grid", lr_space) == 6
    assert out["ran"] == 6 and out["failed"] == 2
    trials = study.get_trials()
    points = sorted((t.params["optimizer.lr"], t.params["label_smoothing"]) for t in trials)
    assert points == sorted((lr, ls) for lr in (5.0, 10.0, 20.0) for ls in (0.0, 0.3))
    for t in trials:
        lr, ls = t.params["optimizer.lr"], t.params["label_smoothing"]
        if ls == 0.3 and lr in (10.0, 20.0):
            assert t.state == TrialState.FAIL
            assert ("ConfigError" if lr == 10.0 else "diverged") in t.user_attrs["error"]
        else:
            assert t.state == TrialState.COMPLETE
            assert t.value == pytest.approx((fake_acc(t.params, 0) + fake_acc(t.params, 1)) / 2)
            assert t.user_attrs["train_time_median_s"] == pytest.approx(1.5 + lr / 10)
    assert loop.run_trials(study, lr_space, runner, 6, [0, 1])["ran"] == 0  # a finished study stays finished
    paths = report.write_report(study, tmp_path / "grid_report", note="fake runner")
    assert set(paths) == {"table", "accuracy_vs_keys"}  # one objective, no generations
    table = Path(paths["table"]).read_text()
    assert "4 complete, 2 failed" in table and "diverged at epoch 1 (fake)" in table and "not allowed (fake)" in table


def test_vmap_asks_k_trials_at_once(tmp_path, lr_space):
    runner = FakeRunner()
    study = new_study(tmp_path, "tpe", lr_space)
    loop.run_trials(study, lr_space, runner, 7, [0], vmap=3, log=lambda s: None)
    sizes = [len(v) for v, _, k in runner.calls if k == 3]
    assert sizes[:3] == [3, 3, 1] and len(study.get_trials()) == 7


def test_tpe_and_genetic_are_seeded(tmp_path, lr_space):
    for sampler in ("tpe", "genetic"):
        runs = []
        for name in ("a", "b"):
            study = new_study(tmp_path, sampler, lr_space, name=f"{sampler}{name}", seed=3, population=2)
            loop.run_trials(study, lr_space, FakeRunner(), 5, [0], log=lambda s: None)
            runs.append([t.params for t in study.get_trials()])
        assert runs[0] == runs[1]


def test_genetic_two_objectives_and_report(tmp_path, lr_space):
    study = new_study(tmp_path, "genetic", lr_space, population=4)
    loop.run_trials(study, lr_space, FakeRunner(), 12, [0, 1, 2], log=lambda s: None)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    gens = {t.system_attrs[report.GENERATION_KEY] for t in study.get_trials() if t.state == TrialState.COMPLETE}
    assert {0, 1, 2} <= gens  # 12 trials of population 4: three generations
    paths = report.write_report(study, tmp_path / "report", note="fake runner — not CIFAR-10 accuracy")
    assert set(paths) == {"table", "accuracy_vs_keys", "generations", "pareto"}
    for key in ("accuracy_vs_keys", "generations", "pareto"):
        assert Path(paths[key]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = Path(paths["table"]).read_text()
    assert "fake runner — not CIFAR-10 accuracy" in table and "Pareto" in table
    best = max((t for t in study.get_trials() if t.state == TrialState.COMPLETE), key=lambda t: t.values[0])
    first_row = next(line for line in table.splitlines() if line.startswith("| 1 |"))
    assert f"| 1 | {best.number} |" in first_row and f"{best.values[0]:.4f}" in first_row
    pareto = report.summary(study)["pareto"]
    assert best.number in pareto  # the most accurate trial is on the front


def test_other_settings_do_not_continue_a_study(tmp_path, lr_space):
    new_study(tmp_path, "grid", lr_space)
    study_lib.open_study(f"sqlite:///{tmp_path / 's'}.db", "s", "grid", lr_space, {"record": "airbench94"})  # same
    with pytest.raises(ConfigError, match="other settings"):
        study_lib.open_study(f"sqlite:///{tmp_path / 's'}.db", "s", "grid", lr_space, {"record": "other"})
    with pytest.raises(ConfigError, match="objectives"):
        new_study(tmp_path, "genetic", lr_space)


# ------------------------------------------------------------------ workers: kill and resume, two at once

WORKER = """
import sys, time
from speedrun import config as config_lib
from speedrun.sweep import loop, space as space_lib, study as study_lib

class Slow:
    def run_many(self, values_list, seeds, vmap=1):
        time.sleep(float(sys.argv[3]))
        return [[{"seed": s, "tta_acc": 0.5 + 0.01 * v["optimizer.lr"], "train_time_s": 1.0} for s in seeds]
                for v in values_list]

space = space_lib.load_space(sys.argv[1], config_lib.load_record("airbench94"))
study = study_lib.open_study(sys.argv[2], "w", "grid", space, {"record": "airbench94"})
print(loop.run_trials(study, space, Slow(), 100, [0], log=lambda s: print(s, flush=True)), flush=True)
"""


@pytest.fixture
def worker(tmp_path):
    script = write(tmp_path / "worker.py", WORKER)
    space = write(tmp_path / "g.py", "from speedrun.sweep.space import grid\n"
                                     "SPACE = {'optimizer.lr': grid(1.0, 2.0, 3.0, 4.0, 5.0, 6.0)}\n")
    url = f"sqlite:///{tmp_path / 'w.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(delay):
        return subprocess.Popen([sys.executable, str(script), str(space), url, str(delay)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)

    start.load = lambda: optuna.load_study(study_name="w", storage=url)
    return start


def complete_points(study):
    return sorted(t.params["optimizer.lr"] for t in study.get_trials() if t.state == TrialState.COMPLETE)


@pytest.mark.slow  # a real training run: CI's slow pass
def test_sweep_killed_mid_trial_resumes(worker):
    p = worker(3.0)
    lines = [p.stdout.readline() for _ in range(2)]  # two trials told
    assert all(line.startswith("# trial") for line in lines), lines + [p.stderr.read()]
    deadline = time.time() + 60
    while not [t for t in worker.load().get_trials() if t.state == TrialState.RUNNING and "worker" in t.user_attrs]:
        assert time.time() < deadline, "the third trial did not start"
        time.sleep(0.1)
    p.send_signal(signal.SIGKILL)  # mid-trial
    p.wait()
    before = worker.load()
    done = complete_points(before)
    running = [t for t in before.get_trials() if t.state == TrialState.RUNNING]
    assert len(done) >= 2 and len(running) == 1
    p = worker(0.0)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, out + err
    after = worker.load()
    assert complete_points(after) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # every point, none twice, none lost
    assert set(done) <= set(complete_points(after))
    killed = after.get_trials()[running[0].number]
    assert killed.state == TrialState.FAIL and "gone" in killed.user_attrs["interrupted"]
    rerun = [t for t in after.get_trials() if t.user_attrs.get("requeued_from") == killed.number]
    assert [t.params for t in rerun] == [killed.params] and rerun[0].state == TrialState.COMPLETE


def test_two_workers_share_one_study(worker):
    procs = [worker(0.3), worker(0.3)]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, out + err
    study = worker.load()
    trials = [(t.number, t.state.name, t.params, t.user_attrs.get("duplicate_of")) for t in study.get_trials()]
    assert complete_points(study) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], trials  # each grid point run exactly once
    for t in study.get_trials():
        assert t.state == TrialState.COMPLETE or "duplicate_of" in t.user_attrs, trials


# ------------------------------------------------------------------ the command


def test_cli_rejects_unknown_key_and_bad_counts(tmp_path, capsys):
    bad = write(tmp_path / "bad.py", "from speedrun.sweep.space import grid\nSPACE = {'optimizer.lrr': grid(1.0)}\n")
    assert cli.main(["sweep", "airbench94", "--space", str(bad), "--workdir", str(tmp_path)]) == 2
    assert "optimizer.lrr" in capsys.readouterr().err
    good = write(tmp_path / "good.py", "from speedrun.sweep.space import grid\nSPACE = {'optimizer.lr': grid(1.0)}\n")
    assert cli.main(["sweep", "airbench94", "--space", str(good), "--seeds", "0", "--workdir", str(tmp_path)]) == 2
    assert "--seeds 0 must be at least 1" in capsys.readouterr().err
    from speedrun import sweep_command

    assert sweep_command.SAMPLERS == study_lib.SAMPLERS


@pytest.mark.slow  # a real training run: CI's slow pass
def test_cli_sweep_end_to_end_smoke(tmp_path, capsys):
    space = write(tmp_path / "lr.py", "from speedrun.sweep.space import grid\nSPACE = {'optimizer.lr': grid(5.75, 11.5)}\n")
    argv = ["sweep", "airbench94", "--space", str(space), "--seeds", "1", "--smoke", "--workdir", str(tmp_path / "wd"),
            "--report", "--config.model.width_mult=0.0625", "--config.epochs=1", "--config.data.path=sample",
            "--config.tta_level=0"]
    t0 = time.perf_counter()
    assert cli.main(argv) == 0
    print(f"end-to-end sweep: {time.perf_counter() - t0:.1f} s", file=sys.stderr)  # not asserted: loaded CI
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["complete"] == 2 and out["failed"] == 0
    study = optuna.load_study(study_name="airbench94-lr-grid-smoke", storage=out["storage"])
    assert sorted(t.params["optimizer.lr"] for t in study.trials) == [5.75, 11.5]
    for t in study.trials:
        assert 0.0 <= t.values[0] <= 1.0 and t.user_attrs["dataset"] == "cifar10-subset"
    table = Path(out["report"]["table"]).read_text()
    assert "5170-image CIFAR-10 subset, smoke scale" in table and "not CIFAR-10 accuracy" in table
    assert Path(out["report"]["accuracy_vs_keys"]).stat().st_size > 0
