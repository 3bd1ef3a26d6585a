"""Shared fixtures: the bundled real CIFAR-10 sample and the records, loaded and shrunk the one way
(:func:`speedrun.config.load_record`, :func:`speedrun.config.smoke`).

Before JAX starts, the suite sets the XLA flags that the command line sets
(:func:`speedrun.system.env.configure`): ``import speedrun`` sets none.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("speedrun") is None:  # not installed: use the checkout
    sys.path.insert(0, str(ROOT))

from speedrun.system import env  # noqa: E402

env.configure()

from speedrun import config  # noqa: E402


def jaxpr_eqns(jaxpr):
    """Every equation of a jaxpr, recursing into sub-jaxprs (pjit, custom_jvp/vjp, scan, cond, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for v in eqn.params.values():
            for sub in (v if isinstance(v, (tuple, list)) else (v,)):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from jaxpr_eqns(inner)


@pytest.fixture(scope="session")
def sample():
    """``(x_train, y_train, x_test, y_test)`` of the bundled real subset: ``(5170, 32, 32, 3)``,
    ``(5170,)``, ``(1017, 32, 32, 3)`` uint8 images, ``(1017,)`` int32 labels."""
    from speedrun.data import load_cifar10

    return load_cifar10("sample")


@pytest.fixture(scope="session")
def record():
    """``record(name, **smoke_changes)``: the record's config, shrunk by :func:`speedrun.config.smoke`
    when changes are given (``record("94pct_26s")`` is the pinned record as it is)."""

    def load(name, **changes):
        c = config.load_record(name)
        return config.smoke(c, **changes) if changes else c

    return load


# ------------------------------------------------------------------ matmul precision
#
# JAX's DEFAULT matmul/convolution precision is backend-dependent: float32 on CPUs, TF32 (10-bit
# mantissa operands, float32 accumulation) on NVIDIA GPUs since Ampere, one bfloat16 pass on TPUs.
# A test that compares a float32 JAX matmul or convolution with a float64 numpy reference at
# float32 tolerances runs under ``float32_matmuls`` (below), which pins HIGHEST precision (true
# float32) on every backend. Tests of training itself (learning runs) keep the default: they check
# what a record does on its backend.
#
# XLA's CPU backend ignores the precision setting (jax 0.10.2, measured: ``JAX_DEFAULT_MATMUL_PRECISION
# =bfloat16`` or ``=BF16_BF16_F32`` leaves dots and convolutions exact to float32), so that variable
# alone does not mimic a GPU on CPU. ``SPEEDRUN_EMULATE_MATMUL=tf32`` (or ``bf16``) does: every
# float32 dot_general and convolution below HIGHEST precision rounds its operands to TF32 (bfloat16)
# with ``lax.reduce_precision`` before it runs, forward and backward, keeping float32 accumulation —
# what a GPU's tensor cores do by default. For checking tolerances on a CPU, e.g.
#   SPEEDRUN_EMULATE_MATMUL=tf32 .venv/bin/python -m pytest -q -p no:xdist tests/test_resnet20.py


MATMUL_EMULATION = {"tf32": 10, "bf16": 7}  # name -> mantissa bits of the rounded operands


def _emulate_reduced_matmuls(mantissa_bits: int) -> None:
    import jax
    import jax.numpy as jnp
    from jax._src.lax import convolution as _conv, lax as _lax

    def below_highest(p):
        if p is None:  # no precision given and no jax_default_matmul_precision: DEFAULT
            return True
        ps = p if isinstance(p, tuple) else (p,)
        return all(isinstance(q, jax.lax.Precision) and q != jax.lax.Precision.HIGHEST for q in ps)

    def wrap(prim):
        bind = prim.bind

        def rounded_bind(lhs, rhs, **params):
            if below_highest(params.get("precision")):
                lhs, rhs = (jax.lax.reduce_precision(a, 8, mantissa_bits)
                            if jnp.result_type(a) == jnp.float32 else a for a in (lhs, rhs))
            return bind(lhs, rhs, **params)

        prim.bind = rounded_bind

    wrap(_lax.dot_general_p)
    wrap(_conv.conv_general_dilated_p)


if os.environ.get("SPEEDRUN_EMULATE_MATMUL"):
    _emulate_reduced_matmuls(MATMUL_EMULATION[os.environ["SPEEDRUN_EMULATE_MATMUL"]])


@pytest.fixture
def float32_matmuls():
    """Run the test at ``jax.default_matmul_precision("highest")``: float32 matmuls and convolutions
    on every backend (not TF32 on GPUs), for comparisons with float64 numpy references."""
    import jax

    with jax.default_matmul_precision("highest"):
        yield


# ------------------------------------------------------------------ compilation cache
#
# The command line turns JAX's persistent compilation cache on (speedrun.system.cache), in the
# user's cache folder by default. The suite runs the CLI in-process and in subprocesses (which
# inherit this environment): off, so no test writes into that folder; tests/test_cache.py sets a
# temporary folder of its own.
os.environ["SPEEDRUN_CACHE_DIR"] = "off"


# ------------------------------------------------------------------ a PostgreSQL server


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server started for the session from the machine's packages (tests/pgserver.py):
    ``.url`` is ``postgresql://USER:PASSWORD@127.0.0.1:PORT/DB``. Where none can start (or the driver
    is missing) the test skips with the reason — fails instead when ``CI=true``: CI must run it."""
    import pgserver

    try:
        if importlib.util.find_spec("psycopg") is None:
            raise pgserver.Unavailable("the driver psycopg is not installed — pip install -e '.[postgres]'")
        server = pgserver.start()
    except pgserver.Unavailable as err:
        (pytest.fail if os.environ.get("CI", "").lower() == "true" else pytest.skip)(f"no PostgreSQL server: {err}")
    yield server
    server.stop()


# ------------------------------------------------------------------ the notebooks: slow
#
# nbmake runs every notebooks/*.ipynb as one test (a smoke-scale training run each, 1-5 min on 2
# cores): marked slow, they run in .ci/run's slow pass, not in the default `./run.sh test`.

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark the nbmake notebook items ``slow`` (the ``-m`` selection is applied after this hook)."""
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)
