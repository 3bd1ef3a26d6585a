"""The persistent compilation cache (speedrun.system.cache): the folder chosen, hit and miss as JAX
reports them, ``off`` writing nothing, and ``import speedrun`` leaving JAX's settings alone.

Every process here gets its own temporary folder (the suite's environment has
``SPEEDRUN_CACHE_DIR=off``: tests/conftest.py), so nothing is written into the user's cache.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from speedrun.errors import ConfigError
from speedrun.system import cache

ROOT = Path(__file__).resolve().parents[1]
# a 2-step smoke run: 2 steps of 2048 images of the bundled subset, width 1/16, no TTA
TINY = ["--smoke", "--config.epochs=1", "--config.data.path=sample", "--config.batch_size=2048",
        "--config.model.width_mult=0.0625", "--config.whitening.num_images=512", "--config.tta_level=0",
        "--config.eval_batch_size=1024", "--config.optimizer.warmup_fraction=0.5"]


def _env(**changes):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT"))}
    env.pop(cache.ENV_VAR, None)
    env.update(JAX_PLATFORMS="cpu", **changes)
    return env


def _python(code, env, *args):
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)


def test_folder_precedence_flag_then_environment_then_user_cache(monkeypatch, tmp_path):
    assert cache.resolve("/a/b", {cache.ENV_VAR: "/c"}) == Path("/a/b")
    assert cache.resolve(None, {cache.ENV_VAR: "/c"}) == Path("/c")
    assert cache.resolve("~/x", {}) == Path.home() / "x"
    for off in ("off", "OFF", "", " off "):
        assert cache.resolve(off, {cache.ENV_VAR: "/c"}) is None
        assert cache.resolve(None, {cache.ENV_VAR: off}) is None
    assert cache.resolve("/a", {cache.ENV_VAR: "off"}) == Path("/a")  # the flag wins over the environment
    if sys.platform.startswith("linux"):  # the XDG base directory spec: $XDG_CACHE_HOME/<app>
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert cache.resolve(None, {}) == tmp_path / "speedrun" / "jax"


def test_a_folder_that_cannot_be_written_is_a_config_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="compilation cache folder .*--cache_dir"):
        cache.enable(blocker / "jax")
    proc = subprocess.run([sys.executable, "-m", "speedrun.cli", "train", "airbench94", "--cache_dir",
                           str(blocker / "jax")], cwd=ROOT, capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 2 and proc.stderr.startswith("speedrun: error: the compilation cache folder"), proc.stderr


WATCHED = """
import sys, jax, jax.numpy as jnp
from speedrun.system import cache
folder = cache.enable()
if len(sys.argv) > 1:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1e9)  # JAX then writes nothing
with cache.Watch() as w:
    jax.jit(lambda x: jnp.sin(x) @ x, ).lower(jnp.ones((8, 8))).compile()
print(folder, cache.active_dir(), [s for n, s, _ in w.compiles if n == "jit(<lambda>)"])
"""


def test_default_folder_miss_then_hit_and_off_writes_nothing(tmp_path):
    env = _env(XDG_CACHE_HOME=str(tmp_path))  # the default folder: under $XDG_CACHE_HOME on Linux
    folder = tmp_path / "speedrun" / "jax" if sys.platform.startswith("linux") else None  # the XDG spec
    first = _python(WATCHED, env)
    assert first.returncode == 0, first.stderr
    if folder is not None:
        assert first.stdout.split()[0] == str(folder)
    used = Path(first.stdout.split()[0])
    if "'not used'" in first.stdout:
        pytest.skip(f"this JAX ({first.stdout.strip()}) does not use the persistent cache on the CPU backend")
    assert first.stdout.strip().endswith("['miss']"), first.stdout
    assert any(p.name.startswith("jit__lambda") for p in used.iterdir())
    second = _python(WATCHED, env)
    assert second.stdout.strip().endswith("['hit']"), second.stdout + second.stderr
    other = tmp_path / "other"
    third = _python(WATCHED, _env(**{cache.ENV_VAR: str(other)}), "no-write")
    assert third.stdout.strip().endswith("['not written']"), third.stdout + third.stderr
    assert not [p for p in other.iterdir() if p.name.startswith("jit_")]
    off_home = tmp_path / "off_home"
    off = _python(WATCHED, _env(**{cache.ENV_VAR: "off", "XDG_CACHE_HOME": str(off_home)}))
    assert off.returncode == 0 and off.stdout.split()[:2] == ["None", "None"], off.stdout + off.stderr
    assert off.stdout.strip().endswith("['off']")
    assert not off_home.exists() or not any(off_home.rglob("*-cache"))


SWITCHED = """
import sys, jax, jax.numpy as jnp
from speedrun.system import cache
cache.enable("off")
jax.jit(lambda x: x + 1).lower(jnp.ones(3)).compile()  # JAX decides here whether the process uses a cache
cache.enable(sys.argv[1])
with cache.Watch() as w:
    jax.jit(lambda x: x * 3).lower(jnp.ones(3)).compile()
print(w.compiles[-1][1])
"""


def test_the_cache_can_be_turned_on_after_a_compile_without_it(tmp_path):
    proc = _python(SWITCHED, _env(), str(tmp_path / "later"))
    assert proc.returncode == 0 and proc.stdout.split() == ["miss"], proc.stdout + proc.stderr
    assert any(p.name.startswith("jit__lambda") for p in (tmp_path / "later").iterdir())


def test_import_speedrun_sets_no_compilation_cache():
    code = ("import jax, speedrun, speedrun.cli, speedrun.train, speedrun.measure.bench, speedrun.system.cache; "
            "assert jax.config.jax_compilation_cache_dir is None, jax.config.jax_compilation_cache_dir; "
            "assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0")  # JAX's defaults
    proc = _python(code, _env())
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow  # a real training run: CI's slow pass
def test_a_second_train_run_loads_the_epoch_executable_from_the_cache(tmp_path):
    folder = tmp_path / "cache"
    argv = [sys.executable, "-m", "speedrun.cli", "train", "airbench94", *TINY, "--workdir", str(tmp_path),
            "--cache_dir", str(folder)]
    runs = [subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, env=_env())
            for _ in range(2)]
    lines = []
    for proc in runs:
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines.append(next(line for line in proc.stdout.splitlines() if line.startswith("# compilation cache")))
    if "not used" in lines[0]:
        pytest.skip(f"this JAX does not use the persistent cache on the CPU backend: {lines[0]}")
    assert lines[0].startswith(f"# compilation cache {folder}: epoch executable miss"), lines[0]
    assert lines[1].startswith(f"# compilation cache {folder}: epoch executable hit"), lines[1]
    assert any(p.name.startswith("jit_epoch-") for p in folder.iterdir())
    log = sorted(tmp_path.glob("airbench94_*.log"))[-1].read_text()
    assert "epoch executable hit" in log  # the log file says it too
