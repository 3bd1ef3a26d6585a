"""The progress bar (speedrun.measure.progress) and where its output goes.

References: the step counts and images/s are hand-computed (airbench94's 9.9 epochs of 10 steps
are 99 steps; images/s = steps · batch / timed seconds); tqdm's rule ``disable=None`` (no bar
when the stream is not a terminal) is tqdm's documented behaviour.
"""

import io
import json
from pathlib import Path

import pytest

from speedrun import cli
from speedrun.errors import ConfigError
from speedrun.measure import progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _row(epoch, loss, elapsed):
    return {"epoch": epoch, "train_loss": loss, "elapsed_s": elapsed}


def test_bar_moves_by_the_epochs_steps_and_stops_at_the_total():
    out = _Tty()
    with progress.EpochBar(99, 10, 1024, 10, "a94", show=None, file=out) as bar:  # 9.9 epochs of 10 steps
        assert not bar.bar.disable  # a terminal: shown
        bar(_row(1, 2.25, 4.0))
        assert bar.bar.n == 10
        assert "epoch 1/10" in str(bar.bar) and "loss 2.2500" in str(bar.bar)
        assert "2560.0 img/s" in str(bar.bar)  # 10 steps · 1024 / 4 s
        for e in range(2, 11):
            bar(_row(e, 1.5, 4.0 * e))
        assert bar.bar.n == 99  # the last epoch ran 9 of its 10 steps
        assert "2534.4 img/s" in str(bar.bar)  # 99 · 1024 / 40 s
    assert "99/99" in out.getvalue()


def test_resumed_bar_starts_after_the_done_epochs():
    with progress.EpochBar(100, 10, 512, 10, show=True, file=_Tty(), start_epoch=4) as bar:
        assert bar.bar.n == 40
        bar(_row(5, 1.0, 2.0))
        assert bar.bar.n == 50 and "2560.0 img/s" in str(bar.bar)  # this call's 10 steps · 512 / 2 s


def test_no_bar_when_the_stream_is_not_a_terminal_or_when_turned_off():
    not_a_tty = io.StringIO()
    with progress.EpochBar(20, 10, 256, 2, show=None, file=not_a_tty) as bar:
        bar(_row(1, 2.0, 1.0))
        assert bar.bar.disable
    assert not_a_tty.getvalue() == ""
    with progress.EpochBar(20, 10, 256, 2, show=False, file=_Tty()) as bar:
        assert bar.bar.disable


def test_enabled_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    assert progress.enabled() is None
    assert progress.enabled(False) is False
    monkeypatch.setenv(progress.ENV, "0")
    assert progress.enabled() is False and progress.enabled(True) is True
    monkeypatch.setenv(progress.ENV, "1")
    assert progress.enabled() is True
    monkeypatch.setenv(progress.ENV, "yes")
    with pytest.raises(ConfigError, match="SPEEDRUN_PROGRESS='yes' is not 0 or 1"):
        progress.enabled()


def test_bad_env_fails_before_anything_compiles(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV, "2")
    assert cli.main(["train", "airbench94", "--smoke", "--config.data.path=sample", "--workdir="]) == 2
    assert "speedrun: error: SPEEDRUN_PROGRESS='2' is not 0 or 1" in capsys.readouterr().err


class _FakeExperiment:
    """Stands in for the compiled Experiment (compiling a record takes minutes on a loaded 2-core
    CPU): two epochs of 10 steps of 256, written through the real run log and epoch table."""

    def __init__(self, config, arrays=None, mesh=None, model=None):
        from speedrun.config import Derived
        from speedrun.system import precision

        self.config, self.dataset, self.n_train, self.n_test, self.num_devices = config, "cifar10-subset", 5170, 1017, 1
        self.derived = Derived(5170, 256, 1, 256, 10, 20)
        self.policy = precision.resolve("float32")
        self.compile_times, self.compile_time_s = {"epoch": 1.0}, 1.0

    def run(self, seed, log=None, per_epoch_eval=True, start=None, on_epoch_end=None, on_row=None):
        from speedrun.measure import runlog
        from speedrun.train.experiment import TABLE_COLUMNS

        table = runlog.EpochTable(log, TABLE_COLUMNS)
        history = []
        for e in (1, 2):
            row = {"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.2, "elapsed_s": 1.0 * e}
            table.row(**row)
            on_row(row)
            history.append(row)
        return {"record": self.config.name, "dataset": self.dataset, "train_images": 5170, "test_images": 1017,
                "epochs": 2, "batch_size": 256, "width_mult": 0.0625, "seed": seed, "acc": 0.25, "tta_acc": 0.26,
                "train_time_s": 2.0, "fulcrum_time_s": 1.5, "history": history}


def test_train_bar_and_table_on_stderr_log_and_stdout_unchanged(monkeypatch, capsys, tmp_path):
    """A forced bar (SPEEDRUN_PROGRESS=1) goes to stderr with the result-vs-expected table; stdout
    still ends with the JSON line and the log file holds no bar frames (the CLI's real path, with
    the compiled experiment replaced by :class:`_FakeExperiment`)."""
    from speedrun.train import experiment

    monkeypatch.setattr(experiment, "Experiment", _FakeExperiment)
    monkeypatch.setenv(progress.ENV, "1")
    argv = ["train", "airbench94_muon", "--smoke", "--config.data.path=sample", f"--workdir={tmp_path}",
            "--config.model.width_mult=0.0625"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert "20/20" in err and "epoch 2/2" in err and "loss 1.0000" in err  # the bar: steps, epochs, loss
    assert "2560.0 img/s" in err  # 20 steps · 256 / 2 s
    assert "# result vs expected" in err and "verdict: not measured" in err  # width 1/16: not a measured setting
    assert "img/s" not in out and "result vs expected" not in out
    log = Path(result["log"]).read_text()
    assert "\r" not in log and "img/s" not in log and "result vs expected" not in log
    assert json.loads(log.strip().splitlines()[-1]) == result
    monkeypatch.setenv(progress.ENV, "0")
    assert cli.main([*argv, "--no_progress"]) == 0
    assert "img/s" not in capsys.readouterr().err
