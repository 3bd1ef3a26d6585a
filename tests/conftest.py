"""Shared fixtures: the bundled real CIFAR-10 sample and the records, loaded and shrunk the one way
(:func:`speedrun.config.load_record`, :func:`speedrun.config.smoke`).

Before JAX starts, the suite sets the XLA flags that the command line sets
(:func:`speedrun.system.env.configure`): ``import speedrun`` sets none.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("speedrun") is None:  # not installed: use the checkout
    sys.path.insert(0, str(ROOT))

from speedrun.system import env  # noqa: E402

env.configure()

from speedrun import config  # noqa: E402


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
