"""The result-vs-expected table (speedrun.measure.expected) and the measured data file
records/expected.json.

References: the range and verdict are checked against hand-computed bounds (mean ± 3·std of
made-up entries); the data file against the records themselves (the smoke setting that
``speedrun.config.smoke`` gives on the bundled sample: 5170 train / 1017 test images) and against
the record docstrings and the README, which must quote the same figures.
"""

import ast
import re
from pathlib import Path

import pytest

from speedrun import config as config_lib
from speedrun.measure import expected

ROOT = Path(__file__).resolve().parents[1]
RECORDS = sorted(p.stem for p in (ROOT / "records").glob("*.py"))
TABLE = expected.load()

ENTRY = {"dataset": "cifar10-subset", "n": 5, "tta_acc": {"mean": 0.40, "std": 0.01},
         "acc": {"mean": 0.39, "std": 0.02}, "train_time_s": 9.5, "device": "cpu x1",
         "setting": {"train_images": 5170, "test_images": 1017, "epochs": 2, "batch_size": 256, "width_mult": 0.125},
         "command": "bench --smoke", "commit": "abc1234", "date": "2026-12-01T00:00:00Z"}
RESULT = {"record": "r", "dataset": "cifar10-subset", "train_images": 5170, "test_images": 1017, "epochs": 2,
          "batch_size": 256, "width_mult": 0.125, "acc": 0.38, "tta_acc": 0.385, "train_time_s": 10.0}


def test_range_and_verdict_against_hand_computed_bounds():
    lo, hi = expected.expected_range(ENTRY)  # 0.40 ∓ 3 · 0.01
    assert (lo, hi) == pytest.approx((0.37, 0.43))
    assert expected.verdict(0.3699, ENTRY) == "below"
    assert expected.verdict(0.3701, ENTRY) == "within"
    assert expected.verdict(0.4299, ENTRY) == "within"
    assert expected.verdict(0.4301, ENTRY) == "above"
    assert expected.verdict(0.3, {**ENTRY, "n": 1, "tta_acc": {"mean": 0.4, "std": None}}) == "no range"
    assert expected.verdict(0.3, {"status": "not measured"}) == "not measured"
    assert expected.verdict(0.3, None) == "not measured"


def test_lookup_matches_dataset_and_setting_only():
    table = {"r": {"smoke": ENTRY, "full": {"status": "not measured", "dataset": "cifar10-subset",
                                            "setting": {**ENTRY["setting"], "width_mult": 1.0}}}}
    assert expected.lookup(RESULT, table) == ("smoke", ENTRY)
    assert expected.lookup({**RESULT, "epochs": 3}, table) is None
    assert expected.lookup({**RESULT, "dataset": "cifar10"}, table) is None
    assert expected.lookup({**RESULT, "width_mult": 1.0}, table)[0] == "full"
    assert expected.lookup({**RESULT, "record": "other"}, table) is None


def test_table_prints_both_figures_and_the_verdict():
    text = expected.format_comparison({**RESULT, "tta_acc": 0.36}, ("smoke", ENTRY))
    assert "36.00" in text and "40.00 ± 1.00" in text and "39.00 ± 2.00" in text  # this run, expected
    assert "n=5" in text and "9.5" in text and "10.0" in text
    assert re.search(r"verdict: tta_acc 36\.00% is BELOW the expected range \[37\.00, 43\.00\]%", text)
    ok = expected.format_comparison(RESULT, ("smoke", ENTRY))
    assert "is within the expected range [37.00, 43.00]%" in ok and "abc1234" in ok
    none = expected.format_comparison(RESULT, None)
    assert "verdict: not measured" in none and "38.50" in none


def test_entry_from_a_bench_summary():
    summary = {"dataset": "cifar10-subset", **ENTRY["setting"], "runs": 5, "seeds": [0, 1, 2, 3, 4],
               "tta_acc": {"mean": 0.4012345, "std": 0.0123456}, "acc": {"mean": 0.39, "std": 0.02},
               "train_time_s": {"median": 9.4567}, "time": "2026-12-01T00:00:00Z", "device": "cpu x1"}
    e = expected.entry_from_summary(summary, "cmd", "abc1234")
    assert e["tta_acc"] == {"mean": 0.40123, "std": 0.01235} and e["n"] == 5 and e["train_time_s"] == 9.46
    assert e["setting"] == ENTRY["setting"]
    one = expected.entry_from_summary({**summary, "runs": 1, "seeds": [0]}, "cmd", "abc1234")
    assert one["tta_acc"]["std"] is None  # one seed: no spread, not a spread of 0


def test_every_record_has_an_entry_per_setting():
    assert set(RECORDS) <= set(TABLE), f"records without expectations: {set(RECORDS) - set(TABLE)}"
    for name in RECORDS:
        assert {"smoke", "full", "cifar10"} <= set(TABLE[name]), name


@pytest.mark.parametrize("name", RECORDS)
def test_measured_entries_are_well_formed(name):
    for setting, e in TABLE[name].items():
        where = f"{name}/{setting}"
        assert e["dataset"] in ("cifar10", "cifar10-subset"), where
        assert set(e["setting"]) == set(expected.SETTING_KEYS), where
        if e.get("status") == "not measured":
            assert e.get("note"), f"{where}: say why it is not measured"
            assert "tta_acc" not in e, f"{where}: a figure in a not-measured entry"
            continue
        assert 0.0 < e["tta_acc"]["mean"] <= 1.0, where
        if e["tta_acc"]["std"] is not None:
            assert e["n"] >= 2 and 0.0 <= e["tta_acc"]["std"] < 0.5, where
        if setting == "cifar10":  # the source's published figure
            assert e["source"], where
            continue
        assert re.fullmatch(r"[0-9a-f]{7,40}", e["commit"]), where
        assert re.match(r"\d{4}-\d\d-\d\d", e["date"]), where
        assert e["device"] and e["train_time_s"] > 0 and name in e["command"], where
        if setting == "smoke":
            assert e["n"] >= 5 and len(e["seeds"]) == e["n"] and "--smoke" in e["command"], where


@pytest.mark.parametrize("name", RECORDS)
def test_smoke_entry_is_the_setting_of_smoke_on_the_sample(name):
    e = TABLE[name]["smoke"]
    c = config_lib.smoke(config_lib.load_record(name))
    want = {"train_images": 5170, "test_images": 1017, "epochs": c.epochs, "batch_size": c.batch_size,
            "width_mult": c.model.width_mult}
    assert e["setting"] == want and e["dataset"] == "cifar10-subset"
    full = TABLE[name]["full"]
    pinned = config_lib.load_record(name)
    assert full["setting"] == {**want, "epochs": pinned.epochs, "batch_size": pinned.batch_size,
                               "width_mult": pinned.model.width_mult}


@pytest.mark.parametrize("name", RECORDS)
def test_docstring_and_readme_quote_the_smoke_figure(name):
    e = TABLE[name]["smoke"]
    doc = ast.get_docstring(ast.parse((ROOT / "records" / f"{name}.py").read_text(encoding="utf-8")))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if e.get("status") == "not measured":
        assert "not measured" in doc
        return
    quoted = f"{100 * e['tta_acc']['mean']:.2f} ± {100 * e['tta_acc']['std']:.2f}%"
    assert quoted in doc, f"{name}'s docstring should quote its --smoke expectation {quoted}"
    assert quoted in readme, f"README's records table should quote {name}'s --smoke expectation {quoted}"
