"""Sweeps across machines, on a real PostgreSQL server (the ``postgres`` fixture: tests/pgserver.py
starts one from the machine's packages; without one these tests skip, with ``CI=true`` they fail).

Every worker is the real command, ``python -m speedrun.cli sweep ...``, in its own process, training
airbench94 at smoke scale on a 512-image slice of the bundled CIFAR-10 sample (trials of about a
second; the processes share a JAX compilation cache folder, so only the first test compiles). The
references are Optuna's own record of the study (``optuna.load_study(...).trials``: states, params,
the NSGA-II generation and retry attrs Optuna writes), the grid the SPACE file spells out, and the
processes' PIDs — never the sweep's own summary alone. docs/sweeps.md quotes what these measured.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from speedrun.data import load_cifar10

ROOT = Path(__file__).resolve().parents[1]
GRACE_S = 10  # --grace_period of the workers: heartbeats every 1 s (a sixth), stale after 10 s
TINY = ["--smoke", "--seeds", "1", "--config.epochs=1", "--config.batch_size=256", "--config.model.width_mult=0.0625",
        "--config.whitening.num_images=256", "--config.tta_level=0", "--config.eval_batch_size=256",
        "--config.optimizer.warmup_fraction=0.5"]
pytestmark = pytest.mark.slow  # each test runs three or more JAX processes: 30-90 s on 2 CPU cores


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, postgres):
    """``sweep(name, space_text, *flags)``: a started worker process (``Popen``, text pipes) of the study
    ``name`` on the server; ``sweep.load(name)`` the study as Optuna loads it."""
    tmp = tmp_path_factory.mktemp("pg_sweeps")
    x_train, y_train, x_test, y_test = load_cifar10("sample")
    data = tmp / "tiny.npz"  # 512 training and 256 test images of the real sample
    np.savez(data, x_train=x_train[:512], y_train=y_train[:512], x_test=x_test[:256], y_test=y_test[:256])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPEEDRUN_CACHE_DIR": str(tmp / "jax_cache"), "JAX_PLATFORMS": "cpu"}

    def start(name, space_text, *flags):
        space = tmp / f"{name}.py"
        space.write_text(textwrap.dedent(space_text))
        cmd = [sys.executable, "-m", "speedrun.cli", "sweep", "airbench94", "--space", str(space), "--study", name,
               "--storage", postgres.url, "--workdir", str(tmp / "wd"), "--grace_period", str(GRACE_S),
               f"--config.data.path={data}", *TINY, *flags]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)

    storage = optuna.storages.RDBStorage(postgres.url)  # one connection pool for all the polling here
    start.load = lambda name: optuna.load_study(study_name=name, storage=storage)
    start.url = postgres.url
    return start


def finish(proc, timeout=900):
    """The last JSON line of a worker that exited 0."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out + err
    return json.loads(out.strip().splitlines()[-1]), out


def pid_of(trial):
    return int(trial.user_attrs["worker"].split(":")[1])  # HOST:PID:TOKEN


GRID = """
    from speedrun.sweep.space import grid
    SPACE = {"optimizer.lr": grid(4.0, 6.0, 8.0, 11.5, 16.0, 23.0)}
"""
POINTS = [4.0, 6.0, 8.0, 11.5, 16.0, 23.0]


def test_three_workers_at_once_run_each_grid_point_once(sweep):
    t0 = time.perf_counter()
    procs = [sweep("grid3", GRID) for _ in range(3)]
    outs = [finish(p) for p in procs]
    seconds = time.perf_counter() - t0
    trials = sweep.load("grid3").trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert Counter(t.params["optimizer.lr"] for t in complete) == Counter(POINTS), [(t.number, t.state, t.params)
                                                                                   for t in trials]
    assert not [t for t in trials if t.state == TrialState.FAIL]  # nothing failed, nothing lost
    assert [t for t in trials if t.state == TrialState.PRUNED] == [t for t in trials if "duplicate_of" in t.user_attrs]
    assert sum(o["ran"] for o, _ in outs) == len(POINTS)  # trained once each, by whichever worker
    pids = {pid_of(t) for t in complete}
    assert pids <= {p.pid for p in procs} and len(pids) >= 2, pids  # the work was shared
    for t in complete:
        assert 0.0 <= t.values[0] <= 1.0 and t.user_attrs["dataset"] == "cifar10-subset"
    # a fourth process reads the whole study and writes the report; nothing is left to train
    out, text = finish(sweep("grid3", GRID, "--report"))
    assert out["ran"] == 0 and out["complete"] == len(POINTS) and out["failed"] == 0
    assert "***" in out["storage"] and "sweep-pw" not in text  # the password is not printed
    table = Path(out["report"]["table"]).read_text()
    ranked = [line for line in table.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert sorted(float(line.split("|")[3]) for line in ranked) == POINTS
    print(f"3 workers, {len(POINTS)} grid trials: {seconds:.1f} s; pids {sorted(pids)}", file=sys.stderr)


def test_killed_worker_trial_fails_by_heartbeat_and_runs_again(sweep):
    space = """
        from speedrun.sweep.space import grid
        SPACE = {"optimizer.lr": grid(5.0, 10.0, 20.0, 30.0)}
    """
    first = sweep("killed", space)
    deadline = time.time() + 240
    while True:  # its first trial claimed (user attr worker with its pid): SIGKILL mid-trial
        try:
            running = [t for t in sweep.load("killed").get_trials(states=(TrialState.RUNNING,))
                       if "worker" in t.user_attrs and pid_of(t) == first.pid]
        except KeyError:  # the study is not created yet
            running = []
        if running or first.poll() is not None:
            break
        assert time.time() < deadline, "the first worker claimed no trial"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    killed_at = time.time()
    lost = [t for t in sweep.load("killed").get_trials(states=(TrialState.RUNNING,))]
    assert len(lost) == 1 and pid_of(lost[0]) == first.pid, lost
    lost = lost[0]
    # the restarted worker and another one: the lost trial is failed after GRACE_S without heartbeat
    outs = [finish(p) for p in [sweep("killed", space), sweep("killed", space)]]
    trials = sweep.load("killed").trials
    killed = trials[lost.number]
    assert killed.state == TrialState.FAIL and "error" not in killed.user_attrs  # recorded as failed, not an error
    assert "interrupted" not in killed.user_attrs  # Optuna's heartbeat check failed it, not the pid check
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == lost.number]  # Optuna's retry callback
    assert len(retries) == 1 and retries[0].params == lost.params and retries[0].state == TrialState.COMPLETE
    assert retries[0].datetime_start.timestamp() >= killed_at + GRACE_S - 2  # no sooner than the grace period
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert Counter(t.params["optimizer.lr"] for t in complete) == Counter([5.0, 10.0, 20.0, 30.0])
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [lost.number]  # only the killed attempt
    assert sum(o["ran"] for o, _ in outs) + sum(t.state == TrialState.COMPLETE and pid_of(t) == first.pid
                                                for t in trials) == 4
    assert [o["interrupted"] for o, _ in outs] == [1, 1]  # both saw it, in the summary they print
    print(f"killed trial {lost.number} re-run as {retries[0].number}, "
          f"{retries[0].datetime_start.timestamp() - killed_at:.1f} s after the kill", file=sys.stderr)


def test_genetic_generations_continue_across_workers(sweep):
    space = """
        from speedrun.sweep.space import loguniform
        SPACE = {"optimizer.lr": loguniform(3.0, 30.0)}
    """
    flags = ("--sampler", "genetic", "--population", "2", "--sampler_seed", "3")
    workers = []
    for total in (2, 4, 6):  # one worker after the other, each to a larger budget: one generation each
        p = sweep("genetic", space, *flags, "--trials", str(total))
        out, _ = finish(p)
        assert out["ran"] == 2
        workers.append(p.pid)
    trials = sweep.load("genetic").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    generation = {t.number: t.system_attrs["NSGAIISampler:generation"] for t in trials}
    by_worker = {pid: sorted(generation[t.number] for t in trials if pid_of(t) == pid) for pid in workers}
    assert list(by_worker.values()) == [[0, 0], [1, 1], [2, 2]], by_worker  # each process bred the next one
    assert all(len(t.values) == 2 for t in trials)  # (mean tta_acc, median train time)
