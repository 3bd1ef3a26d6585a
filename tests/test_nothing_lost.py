"""Nothing lost: a bench killed part-way keeps its finished seeds, and ``--resume`` runs only the rest.

The bench runs as ``python -m speedrun.cli bench`` in a subprocess (a tiny ResNet-9: width 1/16,
1 epoch of 2 steps of 128 real images) and is killed with SIGKILL as soon as its result file holds
two run lines. References: the seeds asked for (0..3), and the lines the killed process left, which
the resumed file must keep unchanged. A persistent compilation cache in the test's folder spares the
second process most of its compile time (its results are the same either way).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from speedrun import config
from speedrun.measure import bench, resultfile

ROOT = Path(__file__).resolve().parents[1]
N = 256


def overrides(npz):
    return ["model.width_mult=0.0625", "batch_size=128", "epochs=1", "optimizer.ema_epochs=0", "eval_batch_size=256",
            "whitening.num_images=256", f"data.path={npz}"]


def bench_cmd(npz, outdir, *extra):
    return [sys.executable, "-m", "speedrun.cli", "bench", "94pct_26s", *(f"--config.{o}" for o in overrides(npz)),
            "--runs", "4", "--target", "0.1", "--no_epoch_eval", "--outdir", str(outdir), *extra]


def run_lines(outdir):
    files = list(Path(outdir).glob("*.jsonl"))
    return files, [json.loads(ln) for f in files for ln in f.read_text().splitlines() if ln.endswith("}")]


@pytest.mark.slow
def test_killed_bench_keeps_finished_seeds_and_resume_runs_the_rest(sample, tmp_path):
    np.savez(tmp_path / "tiny.npz", **dict(zip(("x_train", "y_train", "x_test", "y_test"), (a[:N] for a in sample))))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    out = tmp_path / "out"
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(bench_cmd(tmp_path / "tiny.npz", out), cwd=ROOT, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 240
        while len(run_lines(out)[1]) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    files, killed = run_lines(out)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-2000:]
    assert len(files) == 1 and 2 <= len(killed) <= 3  # the poll may miss one more seed's line, never a summary
    assert [r["kind"] for r in killed] == ["run"] * len(killed)
    assert [r["seed"] for r in killed] == list(range(len(killed)))
    kept = files[0].read_text().splitlines()

    done = subprocess.run(bench_cmd(tmp_path / "tiny.npz", out, "--resume"), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    files, rows = run_lines(out)
    assert len(files) == 1 and files[0].read_text().splitlines()[:len(kept)] == kept
    runs = [r for r in rows if r["kind"] == "run"]
    assert sorted(r["seed"] for r in runs) == [0, 1, 2, 3]  # each seed once
    assert [r["kind"] for r in rows].count("summary") == 1 and rows[-1]["kind"] == "summary"
    assert rows[-1]["runs"] == 4 and sorted(rows[-1]["seeds"]) == [0, 1, 2, 3]
    assert rows[-1]["command"] == " ".join(["python -m speedrun.cli", *bench_cmd(tmp_path / "tiny.npz", out, "--resume")[3:]])
    assert [r["first_in_process"] for r in runs] == [True] + [False] * (len(killed) - 1) + [True] + \
        [False] * (3 - len(killed))
    assert done.stdout.count("\nseed ") + done.stdout.startswith("seed ") == 4 - len(killed)

    # a third --resume (here in-process, same config and data): nothing missing, nothing compiled
    cfg = config.load_record("94pct_26s", overrides(tmp_path / "tiny.npz"))
    results, summary = bench.run(cfg, 4, target=0.1, per_epoch_eval=False, outdir=out, resume=True,
                                 matmul=False, log=None)
    assert summary["file"] == str(files[0]) and sorted(r["seed"] for r in results) == [0, 1, 2, 3]
    rows = [json.loads(ln) for ln in files[0].read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["run"] * 4 + ["summary"]


def test_result_file_appends_whole_lines_and_drops_a_torn_last_one(tmp_path):
    f = resultfile.ResultFile(tmp_path / "a" / "r.jsonl")
    f.append({"kind": "run", "seed": 0})
    f.append({"kind": "run", "seed": 1})
    with open(f.path, "a") as raw:
        raw.write('{"kind": "run", "se')  # a kill in the middle of a write
    assert resultfile.read_rows(f.path) == [{"kind": "run", "seed": 0}, {"kind": "run", "seed": 1}]
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        resultfile.read_rows(tmp_path / "bad.jsonl")


def test_setting_id_and_resumable_file(tmp_path):
    a = config.load_record("94pct_26s")
    b = config.load_record("94pct_26s", ["checkpoint_every=3"])  # a run option: same setting
    c = config.load_record("94pct_26s", ["epochs=3"])
    sid = resultfile.setting_id(a, device="d", tile_to=None)
    assert sid == resultfile.setting_id(b, device="d", tile_to=None) and len(sid) == 12
    assert sid != resultfile.setting_id(c, device="d", tile_to=None)
    assert sid != resultfile.setting_id(a, device="e", tile_to=None)
    old = resultfile.result_path(tmp_path, "94pct_26s", "cpu x1")
    resultfile.write_jsonl(old, [{"kind": "run", "seed": 0, "setting": sid}])
    other = resultfile.result_path(tmp_path, "94pct_26s", "cpu x1")  # same second: another name
    assert other != old
    resultfile.write_jsonl(other, [{"kind": "run", "seed": 0, "setting": "elsewhere"}])
    assert resultfile.find_resumable(tmp_path, "94pct_26s", "cpu x1", sid) == old
    assert resultfile.find_resumable(tmp_path, "94pct_26s", "gpu x1", sid) is None
    with pytest.raises(config.ConfigError, match="checkpoint_dir"):
        bench.run(config.load_record("94pct_26s", ["checkpoint_dir=/tmp/x"]), 1, log=None)
