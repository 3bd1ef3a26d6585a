"""Tests for benchmarks/ci_speed.py (the CI speed guard) and benchmarks/vs_airbench.py.

References: ratios and tolerance boundaries computed by hand; a fake experiment with fixed times
(so the ratio is known exactly); a hand-written sample of airbench's printed result table. The real
measurement is not repeated here: `.ci/run` runs the script itself after the tests.
"""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ci_speed = load("ci_speed")
from speedrun import config  # noqa: E402
vs_airbench = load("vs_airbench")


def test_compare_statuses_at_the_tolerance_boundaries():
    base = {"a": 10.0, "b": 10.0, "c": 10.0, "d": 10.0, "gone": 3.0}
    ratios = {"a": 12.5, "b": 12.6, "c": 8.0, "d": 7.9, "new": 4.0}
    rows = {r["record"]: r for r in ci_speed.compare(ratios, base, tolerance=0.25)}
    assert rows["a"]["status"] == "ok"          # 12.5 = 10 × 1.25: at the limit, not beyond
    assert rows["b"]["status"] == "SLOWER"      # 12.6 > 12.5
    assert rows["b"]["change"] == pytest.approx(0.26)
    assert rows["c"]["status"] == "ok"          # 8.0 = 10 / 1.25
    assert rows["d"]["status"] == "faster"      # 7.9 < 8.0
    assert rows["new"]["status"] == "new" and rows["gone"]["status"] == "missing"
    assert [r["record"] for r in ci_speed.compare(ratios, base, 0.25)] == sorted(set(base) | set(ratios))
    with pytest.raises(ValueError, match="tolerance"):
        ci_speed.compare(ratios, base, -0.1)
    with pytest.raises(ValueError, match="positive"):
        ci_speed.compare({"a": 0.0}, base, 0.1)


class FakeExperiment:
    """Stands in for speedrun.train.Experiment: fixed train times per call."""

    times = iter([9.0, 2.0, 1.5, 1.8])  # warm-up, then 3 timed runs

    def __init__(self, cfg, arrays):
        self.compile_time_s = 7.0

    def run(self, seed, per_epoch_eval=True):
        return {"train_time_s": next(self.times)}


def test_measure_record_ratio_is_min_over_min():
    calib = iter([0.30, 0.25, 0.27, 0.5, 0.26, 0.31]).__next__  # 3 before, 3 after
    m = ci_speed.measure_record(None, None, calib, repeats=3, calls=3, experiment_cls=FakeExperiment)
    assert m["times_s"] == [2.0, 1.5, 1.8]  # warm-up run (9.0) not counted
    assert m["time_s"] == 1.5 and m["calib_s"] == 0.25
    assert m["ratio"] == pytest.approx(6.0) and m["compile_s"] == 7.0


def test_every_record_shrinks_and_the_baseline_is_well_formed():
    base = ci_speed.load_baseline(ci_speed.BASELINE)
    assert 0 < base["tolerance"] < 10
    assert base["small"] == ci_speed.SMALL
    records = sorted(ROOT.glob("records/*.py"))
    names = set()
    for path in records:
        cfg = ci_speed.small_config(path)
        names.add(cfg.name)
        assert (cfg.epochs, cfg.batch_size, cfg.model.width_mult) == (1, 128, 0.125)
        full = config.load_record(path)
        assert cfg.model.name == full.model.name and cfg.optimizer.name == full.optimizer.name
    assert set(base["records"]) <= names, "baseline names a record that records/ no longer has"
    assert all(r > 0 for r in base["records"].values())


def test_write_and_load_baseline(tmp_path):
    runs = []
    for i, ratios in enumerate([{"a": 1.0, "b": 5.0}, {"a": 3.0, "b": 4.0}, {"a": 2.0}]):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps({"small": ci_speed.SMALL, "repeats": 3, "device": "cpu", "versions": {},
                                 "ratios": ratios}))
        runs.append(p)
    out = tmp_path / "baseline.json"
    data = ci_speed.write_baseline(runs, 0.3, out, "test")
    assert data["records"] == {"a": 2.0, "b": 4.5}  # medians of (1, 3, 2) and (5, 4)
    assert ci_speed.load_baseline(out)["tolerance"] == 0.3
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        ci_speed.load_baseline(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="no baseline file"):
        ci_speed.load_baseline(tmp_path / "absent.json")


def test_format_table_prints_every_row():
    rows = ci_speed.compare({"a": 12.6}, {"a": 10.0, "b": 2.0}, 0.25)
    text = ci_speed.format_table(rows, {"a": {"time_s": 1.26, "calib_s": 0.1}}, 0.25)
    assert "| a | 1.260 | 0.1000 | 12.60 | 10.00 | +26.0% | SLOWER |" in text
    assert "| b | - | - | - | 2.00 | - | missing |" in text


# ------------------------------------------------------------------ vs_airbench

AIRBENCH_SAMPLE = """\
---------------------------------------------------------------------------------
|  run     |  epoch  |  train_loss  |  train_acc  |  val_acc  |  tta_val_acc  |  total_time_seconds  |
---------------------------------------------------------------------------------
|       1  |      9  |      0.8512  |     0.9600  |   0.9350  |               |              3.6002  |
|          |   eval  |              |             |           |       0.9410  |              3.7514  |
---------------------------------------------------------------------------------
"""


def test_parse_airbench_eval_row():
    assert vs_airbench.parse_airbench_eval(AIRBENCH_SAMPLE) == {"tta_acc": 0.941, "time_s": 3.7514}
    with pytest.raises(ValueError, match="no 'eval' row"):
        vs_airbench.parse_airbench_eval("nothing here\n")


def test_full_shape_tiling_is_stated():
    import numpy as np

    arrays = (np.zeros((5, 32, 32, 3), np.uint8), np.arange(5), np.zeros((3, 32, 32, 3), np.uint8), np.arange(3))
    (xtr, ytr, xte, yte), note = vs_airbench.full_shape_arrays(arrays)
    assert xtr.shape == (50000, 32, 32, 3) and xte.shape == (10000, 32, 32, 3)
    assert ytr[:7].tolist() == [0, 1, 2, 3, 4, 0, 1] and "tiled" in note


def test_vs_airbench_exits_cleanly_without_cuda(capsys):
    ok, reasons = vs_airbench.environment()
    if ok:
        pytest.skip("this machine can run the comparison")
    assert vs_airbench.main(["--pairs", "1"]) == 0
    out = capsys.readouterr().out
    assert "no CUDA GPU" in out and "does not port" in out
