"""benchmarks/vs_source.py (the PyTorch sources on the same GPU): the one change made to a script
source, the table its runs are read from, the fulcrum harness driver, the ratio under each rule, and
a script source run end to end in a subprocess (a stand-in that prints airbench's table layout; the
real sources are CUDA-only and not in this repository)."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import vs_source  # noqa: E402

# a stand-in written in the sources' layout: a warm-up, then the main loop over 200 runs, each
# ending in an "eval" row of the | run | epoch | ... | tta_val_acc | time_seconds | table
STAND_IN = '''import os
cols = ["run   ", "epoch", "train_acc", "val_acc", "tta_val_acc", "time_seconds"]
def row(cells):
    print("".join("|  %s  " % str(c).rjust(len(h)) for c, h in zip(cells, cols)) + "|")
def main(run):
    assert os.path.exists(os.path.join("cifar10", "train.pt"))
    row([run, 0, 0.5, "", "", 1.0])
    row([run, "eval", 0.9, 0.93, 0.94 if run == "warmup" else 0.9 + run / 1000, 2.0 + (0 if run == "warmup" else run)])
print("|  " + "  |  ".join(cols) + "  |")
main("warmup")
accs = [main(run) for run in range(200)]
print("Mean accuracy after 3 runs: 0.940000 | Mean time: 2.0s", end="\\r", flush=True)
'''


def _fake_data(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.pt").write_bytes(b"")
    (folder / "test.pt").write_bytes(b"")


def test_the_run_count_is_the_only_change():
    patched = vs_source.patch_run_count(STAND_IN, 3)
    assert "range(3)" in patched and "range(200)" not in patched
    changed = [(a, b) for a, b in zip(STAND_IN.splitlines(), patched.splitlines()) if a != b]
    assert changed == [("accs = [main(run) for run in range(200)]", "accs = [main(run) for run in range(3)]")]
    for text in ("print('no loop')", STAND_IN + "\nfor run in range(5): pass\n"):
        with pytest.raises(ValueError, match="expected one 'for run in range"):
            vs_source.patch_run_count(text, 3)


def test_eval_rows_are_read_by_the_header_and_skip_the_warmup():
    log = ("|  run     |  epoch  |  train_acc  |  val_acc  |  tta_val_acc  |  time_seconds  |\n"
           "|  warmup  |   eval  |     0.9000  |   0.9300  |       0.9400  |        9.0000  |\n"
           "|       1  |      0  |     0.5000  |           |               |        0.2000  |\n"
           "progress 1\r|       1  |   eval  |     0.9500  |   0.9390  |       0.9412  |        2.0150  |\n"
           "|       2  |   eval  |     0.9500  |   0.9390  |       0.9388  |        2.0100  |\n")
    assert vs_source.parse_eval_rows(log) == [{"run": 1, "tta_acc": 0.9412, "time_s": 2.015},
                                              {"run": 2, "tta_acc": 0.9388, "time_s": 2.01}]
    assert vs_source.parse_eval_rows("no table\n") == []


def test_a_script_source_runs_end_to_end_with_its_run_count(tmp_path):
    src = tmp_path / "source.py"
    src.write_text(STAND_IN)
    out = vs_source.run_script("hiverge94", src, 3, tmp_path / "w", _fake_data)
    assert [r["run"] for r in out["runs"]] == [0, 1, 2] and out["rule"] == "train_time_s"
    assert [r["time_s"] for r in out["runs"]] == [2.0, 3.0, 4.0]
    diff = (tmp_path / "w" / "hiverge94_source.diff").read_text()
    assert [ln for ln in diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")] == [
        "-accs = [main(run) for run in range(200)]", "+accs = [main(run) for run in range(3)]"]
    src.write_text(STAND_IN.replace("main(\"warmup\")", "raise SystemExit(3)"))
    with pytest.raises(RuntimeError, match="exited 3 with 0 of 3 runs"):
        vs_source.run_script("hiverge94", src, 3, tmp_path / "w2", _fake_data)


def test_the_harness_driver_lifts_only_the_gpu_pin():
    text = vs_source.DRIVER.format(repo="/r", target="e1", data="/d", runs=4)
    ast.parse(text)
    assert "harness.sxm_single_gpu_or_exit = harness.gpu_name" in text
    assert "targets.get('e1').cls()" in text and "trial_ids=list(range(4))" in text


def test_the_ratio_is_taken_under_each_sources_rule():
    ours = {"e1_curriculum94": {"train_time_s": {"median": 3.0}, "fulcrum_time_s": {"median": 1.5}}}
    runs = [{"run": i, "tta_acc": a, "time_s": t} for i, (a, t) in enumerate([(0.94, 2.0), (0.95, 1.8), (0.93, 2.2)])]
    row = vs_source.summarize("e1_curriculum94", {"rule": "fulcrum_time_s", "runs": runs}, ours)
    assert (row["source_median_s"], row["source_min_s"], row["source_max_s"]) == (2.0, 1.8, 2.2)
    assert row["ours_median_s"] == 1.5 and row["ratio"] == pytest.approx(0.75)
    assert row["source_tta_acc"] == pytest.approx(0.94)
    assert "ratio" not in vs_source.summarize("hiverge94", {"rule": "train_time_s", "runs": runs}, ours)


def test_bad_sources_get_one_line_and_exit_2(tmp_path, capsys):
    f = tmp_path / "x.py"
    f.write_text("")
    for spec, msg in ((f"nothing={f}", "RECORD one of"), (str(f), "RECORD one of"),
                      ("hiverge94=/no/such/file", "does not exist"),
                      (f"airbench94_muon={tmp_path}", "script file, not a folder"),
                      (f"e1_curriculum94={f}", "checkout of fulcrumresearch")):
        assert vs_source.main(["--source", spec]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and msg in err, err
    assert vs_source.main([]) == 2 and "at least one --source" in capsys.readouterr().err


def test_without_cuda_it_says_so_and_exits_0(tmp_path, capsys):
    f = tmp_path / "s.py"
    f.write_text(STAND_IN)
    if not vs_source.environment():
        pytest.skip("torch with a CUDA device is present")
    assert vs_source.main(["--source", f"hiverge94={f}", "--out", str(tmp_path / "o.jsonl")]) == 0
    assert "not run here" in capsys.readouterr().out and not (tmp_path / "o.jsonl").exists()
