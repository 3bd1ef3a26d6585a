"""The package as it is installed: pyproject's package list against the folders, the records found
by name from any folder (speedrun.record_files), ``speedrun list`` against records/expected.json
read here, run.sh's quiet install, the notebooks' Colab cell (pip from git, no clone), and (slow)
the wheel built, installed in a fresh venv and run from a temporary folder (.ci/wheel_check.sh)."""

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from speedrun import config, record_files

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
EXPECTED = json.loads((ROOT / "records" / "expected.json").read_text())
NAMES = sorted(p.stem for p in (ROOT / "records").glob("*.py"))


def test_pyproject_lists_every_package_and_maps_records():
    # every folder of speedrun/ with Python or data files is a package of the wheel, records/ is speedrun_records
    folders = {".".join(p.relative_to(ROOT).parts) for p in (ROOT / "speedrun").rglob("*")
               if p.is_dir() and p.name != "__pycache__" and any(f.is_file() for f in p.iterdir())}
    assert set(PYPROJECT["packages"]) == folders | {"speedrun", "speedrun_records", "speedrun_records.logs"}
    assert PYPROJECT["package-dir"] == {"speedrun_records": "records"}
    assert not (ROOT / "records" / "__init__.py").exists()  # a namespace package: records/*.py are the records


def test_records_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of the checkout here
    assert record_files.names() == NAMES
    for spelling in ("airbench94", "airbench94.py", "records/airbench94.py"):
        assert record_files.record_path(spelling).resolve() == (ROOT / "records" / "airbench94.py").resolve()
    assert config.load_record("airbench94_muon").name == "airbench94_muon"  # it loads airbench94 beside it


def test_own_record_file_wins_and_unknown_names_list_the_records(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "records").mkdir()
    own = tmp_path / "records" / "airbench94.py"  # the user's own file of the same name: that file
    own.write_text((ROOT / "records" / "airbench94.py").read_text().replace('c.name = "airbench94"', 'c.name = "mine"'))
    assert record_files.record_path("records/airbench94.py") == Path("records/airbench94.py")
    assert config.load_record("records/airbench94.py").name == "mine"
    assert config.load_record(own).name == "mine"
    with pytest.raises(config.ConfigError, match="no record file 'airbench9' — known records: " + " ".join(NAMES)):
        record_files.record_path("airbench9")


def _cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "speedrun.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def _pct(m):
    return f"{100 * m['mean']:.2f}" + (f" ± {100 * m['std']:.2f}%" if m.get("std") is not None else "%")


def test_list_prints_each_record_with_the_source_figure_and_ours(tmp_path):
    proc = _cli("list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    blocks = {b.split(" — ", 1)[0]: b for b in proc.stdout.split("\n\n")}
    assert NAMES == sorted(n for n in blocks if not n.startswith("Train one"))
    for name in NAMES:
        e, text = EXPECTED[name], blocks[name]
        assert e["cifar10"]["source"] in text and _pct(e["cifar10"]["tta_acc"]) in text  # the source's figure
        assert f"{e['cifar10']['train_time_s']:g} s" in text if e["cifar10"]["train_time_s"] else "not published" in text
        for setting in ("full", "smoke"):
            ours = e[setting]
            assert (_pct(ours["tta_acc"]) in text and ours["commit"] in text) if "tta_acc" in ours else \
                "not measured" in text
    assert _pct({"mean": 0.72173, "std": 0.00973}) == "72.17 ± 0.97%" and "72.17 ± 0.97%" in blocks["airbench94"]
    rows = [json.loads(line) for line in _cli("list", "--json", cwd=tmp_path).stdout.splitlines()]
    assert [r["name"] for r in rows] == NAMES
    assert all(r["source"] == EXPECTED[r["name"]]["cifar10"] for r in rows)


def test_run_sh_list_names_run_sh_in_its_hint():
    env = {**os.environ, "SPEEDRUN_PYTHON": sys.executable}  # the interpreter as it is: nothing installed
    proc = subprocess.run(["bash", str(ROOT / "run.sh"), "list"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(NAMES[0] + " — ") and "run.sh train NAME" in proc.stdout.splitlines()[-1]


def test_run_sh_install_failure_shows_the_log_tail_and_exits_nonzero(tmp_path):
    # a copy of the entry with a pyproject pip cannot read: one message, the log's end, exit 1
    shutil.copy(ROOT / "run.sh", tmp_path / "run.sh")
    (tmp_path / "pyproject.toml").write_text("[project\nname = 'broken'\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SPEEDRUN_PYTHON", "PYTHONPATH")}
    venv = tmp_path / "venv"
    proc = subprocess.run(["bash", str(tmp_path / "run.sh"), "list"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**env, "SPEEDRUN_VENV": str(venv), "SPEEDRUN_PYTHON_BIN": sys.executable})
    assert proc.returncode == 1
    first, *tail = proc.stderr.splitlines()
    assert first == f"[run.sh] installing speedrun into {venv} failed — the end of {venv}/install.log:", proc.stderr
    log = (venv / "install.log").read_text().splitlines()
    assert tail and tail == log[-len(tail):]  # the log's own last lines
    assert not (venv / ".speedrun-installed").exists()  # the next call tries again


@pytest.mark.parametrize("name", ["quickstart", "bag_of_tricks", "library_api"])
def test_the_colab_cell_installs_the_package_not_a_clone(name):
    jupytext = pytest.importorskip("jupytext")
    cell = next(c.source for c in jupytext.read(ROOT / "notebooks" / f"{name}.py").cells if "REPO_URL = " in c.source)
    assert 'f"speedrun[report] @ git+{REPO_URL}"' in cell and '"pip", "install"' in cell
    assert "clone" not in cell.split("\n", 2)[-1] and "sys.path" not in cell.split("\n", 2)[-1]


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_checkout():
    # .ci/run calls the script on python 3.11; this test runs it wherever the slow tests run (3.11 in .ci/run)
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "wheel_check.sh"), sys.executable], capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("[wheel] all passed: speedrun-")
