"""Model FLOP utilisation: the measured dense-matmul rate of this device, NVIDIA's datasheet peaks,
and a counter of XLA compilations (to show that a new seed does not recompile)."""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp

#: jax.monitoring event recorded once per XLA backend compilation (jax/_src/dispatch.py).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

# Dense (no structured sparsity) peak throughput in TFLOP/s by GPU model and dtype. Sources: NVIDIA
# datasheets — "NVIDIA H100 Tensor Core GPU" (SXM5 / PCIe / NVL), "NVIDIA H200 Tensor Core GPU"
# (SXM / NVL), "NVIDIA A100 Tensor Core GPU" (SXM4 and PCIe, 40 and 80 GB alike), "NVIDIA Tesla
# V100" (SXM2 / PCIe) and "NVIDIA V100S". The datasheets print the tensor-core figures of Hopper
# and Ampere "with sparsity": the dense figure is half of that. "float32" is the plain FP32 (CUDA
# core) rate and "tf32" the TF32 tensor-core rate; V100 has no bfloat16 or TF32 (absent = unknown).
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
    "H100 PCIe": {"float32": 51.0, "tf32": 378.0, "bfloat16": 756.0, "float16": 756.0},
    "H100 NVL": {"float32": 60.0, "tf32": 417.5, "bfloat16": 835.5, "float16": 835.5},
    "H200 SXM": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
    "H200 NVL": {"float32": 60.0, "tf32": 417.5, "bfloat16": 835.5, "float16": 835.5},
    "A100": {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0, "float16": 312.0},
    "V100 SXM2": {"float32": 15.7, "float16": 125.0},
    "V100 PCIe": {"float32": 14.0, "float16": 112.0},
    "V100S PCIe": {"float32": 16.4, "float16": 130.0},
}
PEAK_SOURCE = "NVIDIA datasheet, dense (sparsity figures halved)"


def gpu_model(device_kind: str) -> str | None:
    """The :data:`PEAK_TFLOPS` key for a JAX ``device_kind`` (e.g. ``"NVIDIA H100 80GB HBM3"`` ->
    ``"H100 SXM"``, ``"Tesla V100-SXM2-16GB"`` -> ``"V100 SXM2"``, ``"NVIDIA A100-SXM4-40GB"`` ->
    ``"A100"``), or ``None`` for any other device (CPUs included)."""
    k = device_kind.upper()
    if "H100" in k or "H200" in k:
        gen = "H100" if "H100" in k else "H200"
        if "NVL" in k:
            return f"{gen} NVL"
        if "PCIE" in k and gen == "H100":
            return "H100 PCIe"
        return f"{gen} SXM"
    if "A100" in k:
        return "A100"
    if "V100S" in k:
        return "V100S PCIe"
    if "V100" in k:
        return "V100 PCIe" if "PCIE" in k else "V100 SXM2"
    return None


def datasheet_peak(device_kind: str, dtype_name: str) -> float | None:
    """Datasheet dense peak in FLOP/s for ``device_kind`` (see :func:`gpu_model`) and a dtype name
    (``"float32"``, ``"tf32"``, ``"bfloat16"``, ``"float16"``); ``None`` when unknown."""
    model = gpu_model(device_kind)
    if model is None:
        return None
    tflops = PEAK_TFLOPS[model].get(dtype_name)
    return None if tflops is None else tflops * 1e12


def matmul_flops_per_s(dtype: Any, n: int | None = None, calls: int = 10, trials: int = 3) -> dict[str, Any]:
    """Measured dense matmul throughput: ``(n, n) @ (n, n)`` in ``dtype``, jitted, on the default
    device — the practical ceiling MFU is quoted against.

    ``calls`` back-to-back products are dispatched and waited for once (so host dispatch overlaps
    the device work); the best of ``trials`` counts. FLOPs per product: ``2 n³``.

    Args:
      dtype: compute dtype (``jnp.float32``, ``jnp.bfloat16``, ``jnp.float16``).
      n: matrix size; default 8192 on accelerators, 1024 on CPU.
      calls, trials: positive ints.

    Returns:
      ``{"flops_per_s": float, "n": int, "dtype": str, "seconds_per_matmul": float}``.

    Raises:
      ValueError: non-positive ``n``, ``calls`` or ``trials``.
    """
    n = n or (1024 if jax.default_backend() == "cpu" else 8192)
    if n <= 0 or calls <= 0 or trials <= 0:
        raise ValueError(f"matmul_flops_per_s: n, calls, trials must be positive ({n}, {calls}, {trials})")
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()  # compile and warm up
    best = float("inf")
    for _ in range(trials):
        t0 = time.perf_counter()
        outs = [f(a, b) for _ in range(calls)]
        jax.block_until_ready(outs)
        best = min(best, (time.perf_counter() - t0) / calls)
        del outs
    return {"flops_per_s": 2.0 * n**3 / best, "n": n, "dtype": jnp.dtype(dtype).name,
            "seconds_per_matmul": best}


class CompileCounter:
    """Counts XLA backend compilations while active (a context manager).

    Listens to the ``jax.monitoring`` duration event ``/jax/core/compile/backend_compile_duration``
    that JAX records once per compiled computation (jit, AOT ``.compile()`` and eager ops alike).

    Attributes:
      count: compilations seen so far.
      names: the compiled functions' names, in order.
    """

    def __init__(self) -> None:
        self.count = 0
        self.names: list[str] = []

    def _listener(self, event: str, duration: float, **kwargs: Any) -> None:  # noqa: ARG002
        if event == COMPILE_EVENT:
            self.count += 1
            self.names.append(str(kwargs.get("fun_name", "?")))

    def __enter__(self) -> "CompileCounter":
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc: Any) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listener)
