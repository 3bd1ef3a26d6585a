"""benchmarks/gpu_session.sh (the one GPU command) and benchmarks/ab_summary.py (its A/B table):
the steps it runs and in which order (``--dry_run``), its records in one list, and, marked slow,
its A/B step run for real at ``--smoke`` on the CPU against the base commit (git archive)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))

import ab_summary  # noqa: E402


def _session(tmp_path, *args, env=None, timeout=120):
    e = {**os.environ, "SPEEDRUN_PYTHON": sys.executable, **(env or {})}
    e.pop("OUT", None)
    out = subprocess.run(["bash", str(SCRIPT), "--smoke", "--dir", str(tmp_path / "s"), *args], cwd=ROOT, env=e,
                         capture_output=True, text=True, timeout=timeout)
    return out, (tmp_path / "s" / "session.log").read_text()


def _lists():
    """The script's record lists (``read -ra NAME <<< "${SESSION_NAME-a b c}"``)."""
    text = SCRIPT.read_text()
    return {m[0]: m[1].split() for m in re.findall(r'read -ra (\w+) <<< "\$\{SESSION_\w+-([^}]*)\}"', text)}


def test_the_record_lists_are_in_one_place_and_exist():
    lists = _lists()
    assert set(lists) == {"BENCH_RECORDS", "AB_RECORDS", "PRECISION_RECORDS", "SLOW_RECORDS", "WARM_RECORDS", "FRONTIER_RECORDS"}
    for names in lists.values():
        assert names and all((ROOT / "records" / f"{n}.py").is_file() for n in names), names


def test_dry_run_lists_every_step_in_order(tmp_path):
    out, log = _session(tmp_path, "--dry_run")
    assert out.returncode == 0, out.stderr
    steps = re.findall(r"\] DRY (\S+) ", log)
    lists = _lists()
    expected = ([f"bench_{r}" for r in lists["BENCH_RECORDS"] + lists["FRONTIER_RECORDS"]]
                + [s for r in lists["AB_RECORDS"] for s in (f"ab_base1_{r}", f"ab_head1_{r}")]
                + [f"precision_{p}_{r}" for r in lists["PRECISION_RECORDS"] for p in ("float16", "float16_static", "bfloat16")]
                + ["ab_summary", "profile_airbench94_muon"])
    assert steps[:len(expected)] == expected
    slow = [f"bench_{r}" for r in lists["SLOW_RECORDS"] + lists["WARM_RECORDS"]]
    assert steps[-len(slow) - 3:] == slow + ["precision_throughput", "sweep_vmap", "report"]
    assert "FAILED" not in log
    # the A/B base is the hot-path work's base commit, benched from its own checkout
    assert re.search(r"DRY ab_base1_airbench94 .*cd '[^']*/ab_base' && \./run\.sh bench records/airbench94\.py", log)


def test_a_list_can_be_replaced_for_one_session(tmp_path):
    out, log = _session(tmp_path, "--dry_run", "--only", "^ab_", env={"SESSION_AB_RECORDS": "airbench94"})
    assert out.returncode == 0, out.stderr
    assert re.findall(r"\] DRY (\S+) ", log) == ["ab_base1_airbench94", "ab_head1_airbench94", "ab_summary"]
    assert "SKIP bench_airbench94_muon: not matched by --only" in log


def test_a_pytorch_source_given_is_a_step_of_its_own(tmp_path):
    src = tmp_path / "cifar10_speedrun.py"
    src.write_text("print('stand-in')\n")
    env = {"SOURCE_HIVERGE94": str(src), "SOURCE_AIRBENCH94_MUON": str(tmp_path / "absent.py"),
           "SOURCE_FULCRUM": str(tmp_path / "absent")}
    out, log = _session(tmp_path, "--dry_run", "--only", "^vs_source", env=env)
    assert out.returncode == 0, out.stderr
    assert re.findall(r"\] DRY (\S+) ", log) == ["vs_source_hiverge94"]
    assert f"vs_source.py --source hiverge94={src} --runs 1" in log
    assert "SKIP vs_source_airbench94_muon: its source" in log and "SKIP vs_source_e1_curriculum94: its source" in log
    if "torch" not in sys.modules and subprocess.run([sys.executable, "-c", "import torch"]).returncode != 0:
        out, log = _session(tmp_path / "run", "--only", "^vs_source_hiverge94$", env=env)  # no CUDA: says so, ok
        assert re.search(r"\] ok vs_source_hiverge94: exit 0", log), log
        assert "not run here" in (tmp_path / "run" / "s" / "vs_source_hiverge94.log").read_text()


def _summary(folder: Path, record: str, images_per_s: float, compile_s: float, acc: float = 0.5):
    folder.mkdir(parents=True)
    rows = [{"kind": "run", "record": record, "images_per_s": 1.0},
            {"kind": "summary", "record": record, "images_per_s": images_per_s, "compile_time_s": compile_s,
             "device": "cpu x1", "tta_acc": {"mean": acc}}]
    (folder / f"{record}__cpu.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_ab_summary_medians_and_ratio(tmp_path):
    _summary(tmp_path / "ab" / "base1", "r", 100.0, 10.0)
    _summary(tmp_path / "ab" / "head1", "r", 120.0, 4.0)
    _summary(tmp_path / "ab" / "base2", "r", 110.0, 12.0)
    _summary(tmp_path / "ab" / "head2", "r", 130.0, 6.0)
    _summary(tmp_path / "precision" / "bfloat16", "r", 150.0, 3.0, acc=0.25)
    (row,) = ab_summary.ab_rows(tmp_path)
    # medians: base (100 + 110)/2 = 105, head (120 + 130)/2 = 125; 125/105 = 1.190476...
    assert (row["base_images_per_s"], row["head_images_per_s"], row["pairs"]) == (105.0, 125.0, 2)
    assert row["ratio"] == pytest.approx(1.1904762, rel=1e-6)
    assert (row["base_compile_s"], row["head_compile_s"]) == (11.0, 5.0)
    text = ab_summary.table(tmp_path, "f12c58e")
    assert "| r | cpu x1 | 105.0 | 125.0 | 1.190 | 2 | 11.0 | 5.0 |" in text
    assert "| r | bfloat16 | 150.0 | 3.0 | 25.00% |" in text
    assert ab_summary.main([str(tmp_path / "nothing")]) == 2


@pytest.mark.slow
def test_the_ab_step_runs_end_to_end_at_smoke(tmp_path):
    """The A/B step for real on the CPU (a few minutes: both checkouts compile airbench94 at smoke
    size): the base commit's checkout and this tree benched, the summary's row written."""
    if subprocess.run(["git", "rev-parse", "-q", "--verify", "f12c58e^{commit}"], cwd=ROOT,
                      capture_output=True).returncode:
        pytest.skip("the A/B base commit f12c58e is not in this clone")
    out, log = _session(tmp_path, "--only", "^ab_", env={"SESSION_AB_RECORDS": "airbench94"}, timeout=1500)
    assert out.returncode == 0, out.stderr
    assert re.findall(r"\] ok (\S+):", log) == ["ab_base1_airbench94", "ab_head1_airbench94", "ab_summary"], log
    (row,) = ab_summary.ab_rows(tmp_path / "s")
    assert row["record"] == "airbench94" and row["base_images_per_s"] > 0 and row["head_images_per_s"] > 0
