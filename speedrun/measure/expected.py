"""What a run should reach: the measured expectations of ``records/expected.json`` and the
result-vs-expected table printed at the end of ``./run.sh train`` (on stderr: stdout ends in the
run's JSON line).

``records/expected.json`` maps each record to its settings: ``"smoke"`` (``--smoke`` on the bundled
sample), ``"full"`` (the record as pinned, full width, on the bundled sample) and ``"cifar10"`` (the
source's published figure on full CIFAR-10, not measured here). Each entry names its ``dataset``,
its ``setting`` (the result fields a run must match: train/test images, epochs, batch size, width),
``tta_acc`` / ``acc`` as ``{"mean", "std"}`` fractions (``std`` ``null`` where there is no spread:
one seed, or a published figure without one), ``n`` (seeds), ``train_time_s`` (median, seconds,
on ``device``), and where it comes from: ``command``, ``commit``, ``date``, ``device`` (or
``source`` for a published figure). An entry ``{"status": "not measured", ...}`` says so; nothing
is filled in that was not measured. ``./run.sh bench records/X.py --smoke --runs 5
--config.data.path=sample`` writes what :func:`entry_from_summary` turns into a ``"smoke"`` entry.

The verdict (:func:`verdict`) is airbench's way of reading one seed against many (Jordan 2024,
arXiv:2404.00498: single runs vary, so a result is judged against the distribution over seeds):
a run's tta_acc within ``mean ± 3·std`` of the expected seeds is ``within``; below ``mean − 3·std``
is ``below`` (something is likely wrong); above ``mean + 3·std`` is ``above``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from speedrun.config import RECORDS_DIR

#: The data file (one per checkout, next to the records).
EXPECTED_FILE = RECORDS_DIR / "expected.json"

#: Result fields that make two runs the same setting (besides ``record`` and ``dataset``).
SETTING_KEYS = ("train_images", "test_images", "epochs", "batch_size", "width_mult")

#: Width of the expected range, in standard deviations of the expected seeds.
K_STD = 3.0


def load(path: str | Path | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """The expectations ``{record: {setting name: entry}}`` of ``path`` (default
    :data:`EXPECTED_FILE`; a missing file: ``{}``).

    Raises:
      ValueError: the file is not a JSON object.
    """
    p = Path(path) if path is not None else EXPECTED_FILE
    if not p.is_file():
        return {}
    data = json.loads(p.read_text())
    if not isinstance(data, dict):  # a damaged file, not a wrong argument type
        raise ValueError(f"{p}: expected a JSON object of records, got {type(data).__name__}")  # noqa: TRY004
    return {k: v for k, v in data.items() if not k.startswith("_")}  # "_about": the file's own note


def matches(result: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    """Whether ``result`` (a run's result dict) is of ``entry``'s dataset and setting
    (:data:`SETTING_KEYS`; floats compared to 1e-9)."""
    if result.get("dataset") != entry.get("dataset"):
        return False
    setting = entry.get("setting") or {}
    for key, want in setting.items():
        got = result.get(key)
        if got is None or abs(float(got) - float(want)) > 1e-9:
            return False
    return bool(setting) or entry.get("dataset") == "cifar10"


def lookup(result: Mapping[str, Any], expectations: Mapping[str, Any] | None = None
           ) -> tuple[str, dict[str, Any]] | None:
    """``(setting name, entry)`` of ``result``'s record whose dataset and setting it matches
    (:func:`matches`), measured entries first; ``None`` when no entry matches.

    Args:
      result: a run's result dict (``record``, ``dataset``, the :data:`SETTING_KEYS`).
      expectations: :func:`load`'s value (default: the checkout's file).
    """
    table = load() if expectations is None else expectations
    entries = table.get(result.get("record"), {})
    found = [(name, e) for name, e in entries.items() if matches(result, e)]
    found.sort(key=lambda item: item[1].get("status") == "not measured")
    return found[0] if found else None


def expected_range(entry: Mapping[str, Any], metric: str = "tta_acc", k: float = K_STD
                   ) -> tuple[float, float] | None:
    """``(mean − k·std, mean + k·std)`` of ``entry[metric]`` (fractions), or ``None`` without a
    spread (``std`` null, fewer than 2 seeds, or not measured)."""
    m = entry.get(metric) or {}
    if m.get("mean") is None or m.get("std") is None or (entry.get("n") or 0) < 2:
        return None
    return m["mean"] - k * m["std"], m["mean"] + k * m["std"]


def verdict(value: float, entry: Mapping[str, Any] | None, metric: str = "tta_acc", k: float = K_STD) -> str:
    """``"within"``, ``"below"`` or ``"above"`` the expected range (:func:`expected_range`) of
    ``value`` (a fraction), ``"no range"`` when the entry has no spread, ``"not measured"`` without
    an entry or figure."""
    if entry is None or entry.get("status") == "not measured" or (entry.get(metric) or {}).get("mean") is None:
        return "not measured"
    r = expected_range(entry, metric, k)
    if r is None:
        return "no range"
    return "below" if value < r[0] else "above" if value > r[1] else "within"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def format_comparison(result: Mapping[str, Any], found: tuple[str, Mapping[str, Any]] | None,
                      k: float = K_STD) -> str:
    """The result-vs-expected table of one run (text, several lines) and its verdict line.

    Args:
      result: the run's result dict (``acc``, ``tta_acc``, ``train_time_s``, the setting fields).
      found: :func:`lookup`'s value for it.
      k: range width in standard deviations.
    """
    name, e = found if found is not None else (None, None)
    what = f"{result.get('record')}, width {result.get('width_mult')}, {result.get('epochs')} epochs, batch " \
           f"{result.get('batch_size')}, on {result.get('dataset')} ({result.get('train_images')} train / " \
           f"{result.get('test_images')} test)"
    lines = [f"# result vs expected — {what}"]
    if e is None or e.get("status") == "not measured":
        why = (e or {}).get("note") or "no measured expectation for this setting in records/expected.json"
        lines += [(f"  acc {_pct(result['acc'])}%   tta_acc {_pct(result['tta_acc'])}%   "
                   f"train {result['train_time_s']:.1f} s"),
                  f"  verdict: not measured — {why}"]
        return "\n".join(lines)
    n, label = e.get("n"), {"smoke": "--smoke on the sample", "full": "full width on the sample",
                            "cifar10": "published, full CIFAR-10"}.get(name, name)
    head = f"expected ({label}: mean ± std, n={n if n is not None else '?'})"
    rows = [("", "this run", head)]
    for metric in ("acc", "tta_acc"):
        m = e.get(metric) or {}
        exp_text = "-" if m.get("mean") is None else (
            f"{_pct(m['mean'])}" + ("" if m.get("std") is None else f" ± {_pct(m['std'])}"))
        rows.append((f"{metric} (%)", _pct(result[metric]), exp_text))
    t = e.get("train_time_s")
    rows.append(("train time (s)", f"{result['train_time_s']:.1f}",
                 "-" if t is None else f"{t:.1f} (median, {e.get('device', '?')})"))
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    lines += [f"  {a.ljust(w0)}  {b.rjust(w1)}  {c}" for a, b, c in rows]
    v = verdict(result["tta_acc"], e, "tta_acc", k)
    src = e.get("source") or f"{e.get('command', '?')} at commit {e.get('commit', '?')}, {e.get('date', '?')}"
    if v in ("within", "below", "above"):
        lo, hi = expected_range(e, "tta_acc", k)
        word = {"within": "within", "below": "BELOW", "above": "above"}[v]
        hint = " — something may be wrong (data, config, versions)" if v == "below" else ""
        lines.append(f"  verdict: tta_acc {_pct(result['tta_acc'])}% is {word} the expected range "
                     f"[{_pct(lo)}, {_pct(hi)}]% (mean ± {k:g} std of {n} seeds){hint}")
    else:
        lines.append(f"  verdict: no range — the expectation has no spread ({'one seed' if n == 1 else 'no std'}); "
                     "compare by eye")
    lines.append(f"  expected from: {src}")
    if e.get("note"):
        lines.append(f"  note: {e['note']}")
    return "\n".join(lines)


def entry_from_summary(summary: Mapping[str, Any], command: str, commit: str) -> dict[str, Any]:
    """A ``records/expected.json`` entry from a bench summary (:func:`speedrun.measure.bench.summarize`,
    the ``kind="summary"`` line of a bench result file)."""
    def spread(m: Mapping[str, Any]) -> dict[str, float | None]:  # one seed: no spread (std null)
        return {"mean": round(m["mean"], 5), "std": round(m["std"], 5) if summary["runs"] > 1 else None}

    return {
        "dataset": summary["dataset"],
        "setting": {k: summary[k] for k in SETTING_KEYS},
        "tta_acc": spread(summary["tta_acc"]), "acc": spread(summary["acc"]),
        "n": summary["runs"], "seeds": list(summary["seeds"]),
        "train_time_s": round(summary["train_time_s"]["median"], 2),
        "command": command, "commit": commit, "date": summary.get("time"), "device": summary["device"],
    }
