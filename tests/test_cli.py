"""Tests for the command line (speedrun.cli) and the config module behind it: the ml_collections
override convention, clear one-line errors for an unknown key or record, flags per command, and the
environment set before JAX starts, and that JAX's libtpu probe is not shown — without training
anything. (``./run.sh`` itself needs its .venv and is exercised by .ci/run, except ``--help``, which
needs nothing installed: tests/test_bad_input.py runs it from a copy without a venv.)"""

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from speedrun import cli, config

ROOT = Path(__file__).resolve().parents[1]
RECORD = "records/94pct_26s.py"


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "speedrun.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)


def test_unknown_key_exits_2_with_one_line_suggesting_the_right_one():
    proc = _run("train", RECORD, "--config.epoch=1")
    assert proc.returncode == 2
    assert "'epoch'" in proc.stderr and "did you mean --config.epochs?" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("speedrun: error: ")


def test_unknown_record_file_exits_nonzero_naming_it():
    proc = _run("train", "records/no_such_record.py")
    assert proc.returncode == 2
    assert "records/no_such_record.py" in proc.stderr and "94pct_26s" in proc.stderr  # the known ones


def test_debug_shows_the_traceback():
    proc = _run("train", RECORD, "--config.epoch=1", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_flags_of_another_command_are_refused():
    with pytest.raises(SystemExit) as exc:
        cli.parse(["train", RECORD, "--runs", "3"])  # a bench flag
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        cli.parse(["bench", RECORD, "--coordinator_address=h:1"])  # a train flag
    args, overrides = cli.parse(["bench", RECORD, "--runs", "3", "--config.epochs=2"])
    assert (args.command, args.runs, overrides) == ("bench", 3, ["epochs=2"])


def test_help_needs_nothing_installed():
    # the parser is stdlib only: a bare interpreter with the checkout on the path prints usage
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-S", "-m", "speedrun.cli", "bench", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and "--runs" in proc.stdout


def test_list_keys_prints_every_key_and_value():
    proc = _run("train", RECORD, "--list_keys", "--config.epochs=3")
    assert proc.returncode == 0
    assert "epochs = 3" in proc.stdout.splitlines() and "model.width_mult = 1.0" in proc.stdout.splitlines()


@pytest.mark.parametrize("key,suggestion", [("epoch", "epochs"), ("model.widthmult", "model.width_mult"),
                                            ("data.pth", "data.path")])
def test_override_rejects_unknown_keys(key, suggestion):
    with pytest.raises(config.ConfigError) as exc:
        config.load_record(RECORD, [f"{key}=1"])
    assert f"unknown config key {key!r}" in str(exc.value) and suggestion in str(exc.value)


def test_ml_collections_override_convention_on_the_record():
    cfg = config.load_record(ROOT / RECORD, ["epochs=3", "seed=1", "data.path=sample", "model.width_mult=0.25",
                                             "optimizer.lr_values=0,0.4,0", "augment.flip=false"])
    assert (cfg.epochs, cfg.seed, cfg.data.path, cfg.model.width_mult) == (3, 1, "sample", 0.25)
    assert list(cfg.optimizer.lr_values) == [0.0, 0.4, 0.0] and cfg.augment.flip is False
    assert cfg.batch_size == 512  # untouched fields keep the pinned values
    for bad in ("epochs=three", "augment.flip=maybe", "optimizer.lr_values=a,b", "model.width_mult=x"):
        with pytest.raises(config.ConfigError, match=bad.split("=")[0]):
            config.load_record(RECORD, [bad])


def test_import_sets_no_environment_and_the_cli_entry_sets_the_xla_flags():
    clean = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = ("import os, speedrun, speedrun.config, speedrun.train, speedrun.measure.bench; "
            "assert 'XLA_FLAGS' not in os.environ, os.environ['XLA_FLAGS']")
    assert subprocess.run([sys.executable, "-c", code], env=clean, timeout=120).returncode == 0
    # the entry sets them before JAX starts: 3 simulated CPU devices are what JAX then sees
    code = ("import sys, speedrun.cli as c; args, _ = c.parse(['train', 'x', '--cpu_devices', '3']); "
            "c.env.configure(args.cpu_devices); import jax; print(jax.device_count())")
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "3", out.stderr


def test_env_configure_adds_flags_once():
    from speedrun.system import env

    environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    flags = env.configure(4, environ)
    assert flags == ("--xla_dump_to=/tmp/x --xla_cpu_enable_concurrency_optimized_scheduler=false "
                     "--xla_cpu_experimental_ynn_fusion_type= --xla_force_host_platform_device_count=4")
    assert env.configure(4, environ) == flags  # idempotent
    with pytest.raises(ValueError, match="cpu_devices"):
        env.configure(0, {})


def test_the_libtpu_probe_message_is_dropped_and_other_jax_logs_are_kept():
    # JAX probes for a TPU when its backend starts; without libtpu it logs "Unable to initialize
    # backend 'tpu': ... libtpu.so ..." (INFO in jax 0.10, a warning in older versions), seen on CPU
    # and GPU machines whenever logging shows that level. The CLI drops that one record.
    clean = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    probe = "import logging; logging.basicConfig(level=logging.INFO); import jax; jax.devices(); "
    control = subprocess.run([sys.executable, "-c", probe], env=clean, capture_output=True, text=True, timeout=120)
    if "libtpu" not in control.stderr:
        pytest.skip("this JAX does not log the libtpu probe here (libtpu installed, or another JAX version)")
    code = ("import logging; logging.basicConfig(level=logging.INFO); from speedrun import cli; "
            "import sys; sys.exit(cli.main(['train', 'records/94pct_26s.py', '--cpu_devices', '3', "
            "'--workdir', sys.argv[1]]))")  # JAX starts (device count), then the batch check fails
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", code, tmp], cwd=ROOT, env=clean, capture_output=True,
                              text=True, timeout=120)
    assert proc.returncode == 2 and "3 devices" in proc.stderr, proc.stderr
    assert "libtpu" not in proc.stderr and "Unable to initialize backend 'tpu'" not in proc.stderr
    # the filter drops only that record: another xla_bridge message at the same level passes
    from speedrun.cli import _NoLibtpuProbe

    keep = logging.LogRecord("jax._src.xla_bridge", logging.INFO, "", 0, "Unable to initialize backend 'cuda': x",
                             None, None)
    drop = logging.LogRecord("jax._src.xla_bridge", logging.INFO, "", 0, "Unable to initialize backend 'tpu': %s",
                             ("INTERNAL: Failed to open libtpu.so",), None)
    assert _NoLibtpuProbe().filter(keep) and not _NoLibtpuProbe().filter(drop)


def test_validate_accepts_every_record_and_names_the_bad_key():
    for path in sorted((ROOT / "records").glob("*.py")):
        cfg = config.load_record(path)
        config.validate(cfg)  # static
        config.validate(cfg, num_devices=1)  # with the devices and the backend
    cfg = config.load_record(RECORD)
    config.validate(config.smoke(cfg), num_devices=4)  # smoke: batch 256, ghost 32 → 64 per device
    for overrides, devices, key in [(["epochs=0"], None, "'epochs'"), (["batch_size=500"], None, "ghost_batch_size=32"),
                                    (["optimizer.lr_values=0,1"], None, "'optimizer.lr_values'"),
                                    (["precision=half"], None, "unknown precision 'half'"),
                                    ([], 3, "batch_size=512 is not divisible by the 3 devices"),
                                    (["batch_size=96"], 6, "16 examples per device")]:
        with pytest.raises(config.ConfigError, match=key):
            config.validate(config.load_record(RECORD, overrides), devices)
    # derived() validates first, with its device count
    with pytest.raises(config.ConfigError, match="3 devices"):
        config.derived(cfg, 5170, 3)


def test_list_overrides_check_the_element_type():
    cfg = config.load_record("records/airbench94.py", ["model.widths=32,128,128", "data.mean=[125, 123.0, 114]"])
    assert cfg.model.widths == (32, 128, 128) and cfg.data.mean == (125.0, 123.0, 114.0)  # ints read as floats
    for bad in ("model.widths=64,256.5,256", "model.widths=64,'x',256", "data.mean=1,2,three"):
        with pytest.raises(config.ConfigError, match=bad.split("=")[0]):
            config.load_record("records/airbench94.py", [bad])


def test_bench_writes_where_report_reads_by_default(tmp_path):
    from speedrun.measure import bench, report

    bench_args, _ = cli.parse(["bench", RECORD])
    report_args, _ = cli.parse(["report"])
    assert bench_args.outdir == report_args.folder == "logs/bench"
    # a file where bench.run puts its results (result_path under --outdir) is one report finds
    path = bench.write_jsonl(bench.result_path(tmp_path / "logs/bench", "r", "cpu x1"), [{"kind": "run", "record": "r"}])
    runs, summaries = report.load_results(tmp_path / "logs/bench")
    assert path.parent == tmp_path / "logs/bench" and [r["record"] for r in runs] == ["r"] and summaries == []
