"""Statistics of repeated runs: mean, standard deviation and t-interval, share at target, time to target.

Sources: the confidence interval is the textbook Student-t interval for a mean, ``mean ± t(0.975,
n-1) · s / √n`` with ``s`` the sample standard deviation (``n - 1`` in the denominator), the
quantile from ``scipy.stats.t`` (SciPy is a dependency of JAX, so it is always installed). The
airbench paper (Jordan 2024, arXiv:2404.00498) reports mean accuracy over many seeds because a
single run's accuracy varies by about ±0.15 percentage points; the time-to-accuracy metric is
DAWNBench's (Coleman et al., "DAWNBench: An End-to-End Deep Learning Benchmark and Competition",
NIPS ML Systems Workshop 2017): wall-clock time until the model first reaches the target test
accuracy.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Sequence

from scipy import stats as _scipy_stats


def _as_floats(values: Iterable[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{what}: no values (run at least one seed: --runs=1 or more)")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what}: non-finite value in {out}")
    return out


#: The range of an accuracy fraction: ``mean_ci(accs, bounds=ACCURACY_BOUNDS)``.
ACCURACY_BOUNDS = (0.0, 1.0)


def mean_ci(values: Iterable[float], confidence: float = 0.95,
            bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """Mean, sample standard deviation and Student-t confidence interval of the mean.

    Args:
      values: one number per run (e.g. tta_acc fractions), at least one, all finite.
      confidence: two-sided level in (0, 1).
      bounds: ``(low, high)`` that the quantity cannot leave, e.g. :data:`ACCURACY_BOUNDS` for
        accuracy fractions: the interval is clipped to it (a t-interval of a few runs near 100%
        would otherwise reach past 1). ``None``: no clipping.

    Returns:
      ``{"n", "mean", "std", "ci_low", "ci_high", "ci_half_width", "confidence"}``; ``ci_low`` and
      ``ci_high`` are ``mean ∓ ci_half_width`` clipped to ``bounds``, ``ci_half_width`` is the
      t-interval's (unclipped); with one value ``std`` is 0.0 and the interval fields are ``None``
      (no spread to estimate).

    Raises:
      ValueError: no values, a non-finite value, ``confidence`` outside (0, 1), ``bounds`` with
        ``low > high``, or a value outside ``bounds``.
    """
    xs = _as_floats(values, "mean_ci")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"mean_ci: confidence must be in (0, 1), got {confidence}")
    lo, hi = (-math.inf, math.inf) if bounds is None else map(float, bounds)
    if lo > hi or not all(lo <= x <= hi for x in xs):
        raise ValueError(f"mean_ci: values {xs} are not within bounds {bounds}")
    n = len(xs)
    mean = statistics.fmean(xs)
    if n == 1:
        return {"n": 1, "mean": mean, "std": 0.0, "ci_low": None, "ci_high": None,
                "ci_half_width": None, "confidence": confidence}
    std = statistics.stdev(xs)  # n - 1 denominator
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": max(lo, mean - half), "ci_high": min(hi, mean + half),
            "ci_half_width": half, "confidence": confidence}


def share_at_least(values: Iterable[float], target: float) -> float:
    """Fraction of ``values`` that are ``>= target`` (in [0, 1]).

    Raises:
      ValueError: no values or a non-finite value.
    """
    xs = _as_floats(values, "share_at_least")
    return sum(v >= target for v in xs) / len(xs)


def median_min_max(values: Iterable[float]) -> dict[str, float]:
    """``{"median", "min", "max"}`` of the values (median of an even count: mean of the middle two).

    Raises:
      ValueError: no values or a non-finite value.
    """
    xs = _as_floats(values, "median_min_max")
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def epoch_accuracy(row: dict[str, Any]) -> float | None:
    """The accuracy an epoch row of ``Experiment.run``'s ``history`` reached: its ``tta_acc`` when
    present (the final epoch), else its ``test_acc`` (per-epoch evaluation, no TTA), else ``None``
    (not evaluated)."""
    if row.get("tta_acc") is not None:
        return float(row["tta_acc"])
    if row.get("test_acc") is not None:
        return float(row["test_acc"])
    return None


def time_to_target(history: Sequence[dict[str, Any]], target: float) -> float | None:
    """DAWNBench time-to-accuracy: ``elapsed_s`` (timed seconds; per-epoch evaluation excluded, the
    final TTA evaluation included) at the first epoch whose accuracy (:func:`epoch_accuracy`) is
    ``>= target``; ``None`` when no epoch reaches it.

    Args:
      history: ``Experiment.run(...)["history"]`` rows (``epoch``, ``elapsed_s``, ``test_acc`` and on
        the last row ``tta_acc``), every epoch evaluated.
      target: accuracy fraction in (0, 1], e.g. 0.94.

    Raises:
      ValueError: ``target`` outside (0, 1], empty history, or an epoch without accuracy (run with
        per-epoch evaluation: ``Experiment.run(..., per_epoch_eval=True)``).
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"time_to_target: target must be an accuracy fraction in (0, 1], got {target}")
    if not history:
        raise ValueError("time_to_target: empty history")
    accs = [epoch_accuracy(row) for row in history]
    if any(a is None for a in accs):
        missing = [row.get("epoch") for row, a in zip(history, accs) if a is None]
        raise ValueError(f"time_to_target: epochs {missing} were not evaluated; run with per-epoch "
                         "evaluation (Experiment.run(..., per_epoch_eval=True))")
    for row, acc in zip(history, accs):
        if acc >= target:
            return float(row["elapsed_s"])
    return None


def t_test_greater(values: Iterable[float], target: float) -> dict[str, Any]:
    """One-sided one-sample Student t-test of ``mean(values) > target``, as hiverge's
    ``p-value.ipynb`` and fulcrum's ``runners/validate.py`` certify a record (p < 0.05 against 0.94):
    ``scipy.stats.ttest_1samp(values, target, alternative="greater")``.

    Returns:
      ``{"t", "p_value", "n"}``; ``t`` and ``p_value`` ``None`` for fewer than 2 values or values
      all equal (no spread: the test is undefined).

    Raises:
      ValueError: no values or a non-finite value.
    """
    xs = _as_floats(values, "t_test_greater")
    if len(xs) < 2 or max(xs) == min(xs):
        return {"t": None, "p_value": None, "n": len(xs)}
    res = _scipy_stats.ttest_1samp(xs, float(target), alternative="greater")
    return {"t": float(res.statistic), "p_value": float(res.pvalue), "n": len(xs)}
