"""What must be set before JAX starts its backend, set by the command-line entry
(:mod:`speedrun.cli`) and the test suite (``tests/conftest.py``), never by ``import speedrun``.

- ``--xla_cpu_enable_concurrency_optimized_scheduler=false`` in ``XLA_FLAGS``: XLA's CPU backend
  schedules an unrolled epoch for concurrency by default and keeps every step's activations alive at
  once, so the full-width ResNet-9 epoch needs several times the memory (README, "CPU notes"). The
  flag is read by the CPU backend only.
- ``--xla_cpu_experimental_ynn_fusion_type=`` (no YNNPACK fusions), for jaxlib >= 0.10 (older ones
  do not know the flag and would abort): jaxlib 0.12's CPU backend miscompiles some bfloat16
  programs with them — the jitted eval-mode ResNet-9 forward returns NaN and inf where the same
  forward run op by op does not (tests/test_precision.py). float32 programs are not slower without.
- ``--xla_force_host_platform_device_count=N``: ``N`` simulated CPU devices, for data-parallel runs
  and tests on one CPU (``--cpu_devices N``).

The persistent compilation cache is a ``jax.config`` setting, not an environment variable: the
command line turns it on with :func:`speedrun.system.cache.enable` after :func:`configure`; the
test suite leaves it off (``SPEEDRUN_CACHE_DIR=off`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from typing import MutableMapping

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"
CPU_YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def configure(cpu_devices: int | None = None, environ: MutableMapping[str, str] = os.environ) -> str:
    """Add the flags above to ``environ["XLA_FLAGS"]`` (a flag already there is left as it is) and
    return the new value. ``cpu_devices``: the number of simulated CPU devices, or ``None``.

    Raises:
      RuntimeError: ``os.environ``'s flags would change after JAX's backend started in this process
        (they would be ignored) — call this first, before any JAX computation.
      ValueError: ``cpu_devices`` < 1.
    """
    old = flags = environ.get("XLA_FLAGS", "")
    if CPU_SCHEDULER_FLAG not in flags:
        flags = f"{flags} {CPU_SCHEDULER_FLAG}=false"
    if CPU_YNN_FUSION_FLAG not in flags and _jaxlib_at_least(0, 10):
        flags = f"{flags} {CPU_YNN_FUSION_FLAG}="
    if cpu_devices is not None:
        if cpu_devices < 1:
            raise ValueError(f"cpu_devices must be >= 1, got {cpu_devices}")
        if CPU_DEVICES_FLAG not in flags:
            flags = f"{flags} {CPU_DEVICES_FLAG}={cpu_devices}"
    flags = flags.strip()
    if environ is os.environ and flags != old.strip() and "jax" in sys.modules and _backend_started():
        raise RuntimeError("speedrun.system.env.configure() must run before JAX starts its backend "
                           f"(XLA_FLAGS would become {flags!r}); call it before the first JAX computation")
    environ["XLA_FLAGS"] = flags
    return flags


def _jaxlib_at_least(major: int, minor: int) -> bool:
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return False
    found = re.match(r"(\d+)\.(\d+)", version)
    return bool(found) and (int(found[1]), int(found[2])) >= (major, minor)


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge  # noqa: PLC0415
    except ImportError:  # a JAX without this private module: assume not started
        return False
    return bool(getattr(xla_bridge, "_backends", None))
