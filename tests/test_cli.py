"""Tests for the command line (speedrun.main): the ml_collections override convention with the four
public field names, and clear errors for an unknown key or record, without training anything.
(``./run.sh`` itself needs its .venv and is exercised by .ci/run, not here.)"""

import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags
from ml_collections import config_flags

from speedrun import main

ROOT = Path(__file__).resolve().parents[1]
RECORD = "records/94pct_26s.py"


def _run(*args):
    return subprocess.run([sys.executable, "-m", "speedrun.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_unknown_key_exits_nonzero_and_suggests_the_right_one():
    proc = _run(f"--config={RECORD}", "--config.epoch=1")
    assert proc.returncode != 0
    assert "'epoch'" in proc.stderr and "did you mean epochs" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_record_file_exits_nonzero_naming_it():
    proc = _run("--config=records/no_such_record.py")
    assert proc.returncode != 0
    assert "records/no_such_record.py" in proc.stderr


def test_check_overrides_accepts_known_keys():
    # the four public override names of issue 2, plus an ordinary flag and no --config at all
    main.check_overrides(["prog", f"--config={ROOT / RECORD}", "--config.epochs=3", "--config.seed=1",
                          "--config.data.path=sample", "--config.model.width_mult=0.25", "--workdir=x"])
    main.check_overrides(["prog", "--config.epoch=1"])  # no record: nothing to check against


@pytest.mark.parametrize("key,suggestion", [("epoch", "epochs"), ("model.widthmult", "model.width_mult"),
                                            ("data.pth", "data.path")])
def test_check_overrides_rejects_unknown_keys(key, suggestion, capsys):
    with pytest.raises(SystemExit) as exc:
        main.check_overrides(["prog", f"--config={ROOT / RECORD}", f"--config.{key}=1"])
    msg = str(exc.value.code)
    assert f"unknown config key {key!r}" in msg and suggestion in msg


def test_check_overrides_leaves_unloadable_record_to_absl():
    # returns quietly; absl's config_flags then reports the missing file (see the subprocess test)
    assert main.check_overrides(["prog", "--config=records/no_such_record.py", "--config.epochs=1"]) is None


def test_ml_collections_override_convention_on_the_record():
    argv = ["prog", f"--config={ROOT / RECORD}", "--config.epochs=3", "--config.seed=1",
            "--config.data.path=sample", "--config.model.width_mult=0.25"]
    fv = flags.FlagValues()
    # sys_argv: the override flags are defined from the argv (main.py gets them from sys.argv)
    config_flags.DEFINE_config_file("config", None, "record", flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    cfg = fv.config
    assert (cfg.epochs, cfg.seed, cfg.data.path, cfg.model.width_mult) == (3, 1, "sample", 0.25)
    assert cfg.batch_size == 512  # untouched fields keep the pinned values
