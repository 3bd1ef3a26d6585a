"""``speedrun list`` (``./run.sh list``): the pinned records, each with its source, the source's
published figure and ours.

For each record of :func:`speedrun.record_files.names`: the first line of its docstring, the
file, then from ``records/expected.json`` (:mod:`speedrun.measure.expected`) the ``"cifar10"``
entry (the source's figure on full CIFAR-10: who published it, tta_acc, train time and device) and
the measured ``"full"`` and ``"smoke"`` entries (ours on the bundled sample: mean ± std over the
seeds, median train time, device, commit). Nothing is computed or filled in: an entry that is not
measured says so. The parser is stdlib only, like :mod:`speedrun.cli`'s.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from typing import Any, Callable, Mapping

#: The settings of ``records/expected.json`` printed as ours, with their labels.
OURS = (("full", "the record as pinned, on the bundled sample"), ("smoke", "--smoke, on the bundled sample"))


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The ``list`` subcommand: no arguments but ``--json``."""
    p = sub.add_parser("list", parents=[common], help="the records: source, the source's figure, ours")
    p.add_argument("--json", action="store_true", help="one JSON object per record instead of text")


def summary_line(name: str) -> str:
    """The first line of record ``name``'s docstring (read, not imported), ``""`` without one."""
    from speedrun.record_files import record_path  # noqa: PLC0415

    doc = ast.get_docstring(ast.parse(record_path(name).read_text())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _metric(entry: Mapping[str, Any]) -> str:
    """``"tta_acc"``, or ``"acc"`` for an entry without it or whose two accuracies are the same
    figure (a record without TTA, e.g. ResNet-20's single-view test)."""
    tta, acc = entry.get("tta_acc"), entry.get("acc")
    return "acc" if not tta or (acc and acc.get("mean") == tta.get("mean") and acc.get("std") == tta.get("std")) \
        else "tta_acc"


def _pct(m: Mapping[str, Any] | None) -> str:
    """``{"mean": 0.7111, "std": 0.0115}`` -> ``"71.11 ± 1.15%"`` (no std: ``"71.11%"``)."""
    mean, std = (m or {}).get("mean"), (m or {}).get("std")
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}%" if std is not None else "%")


def source_text(entry: Mapping[str, Any] | None) -> str:
    """The source's figure of a ``"cifar10"`` entry, one line."""
    if not entry:
        return "no published figure in records/expected.json"
    metric = _metric(entry)
    n = entry.get("n")
    time = entry.get("train_time_s")
    source = entry.get("source", "?")
    figure = f"{metric} {_pct(entry.get(metric))}" + (f" (mean of {n} runs)" if n and n > 1 and "mean of" not in source
                                                      else "")
    figure += f", {time:g} s on" if time is not None else ", time not published;"
    return f"{source} — {figure} {entry.get('device', '?')}, full CIFAR-10"


def ours_text(entry: Mapping[str, Any] | None) -> str:
    """Our measured figure of a ``"full"`` or ``"smoke"`` entry, one line (or why there is none)."""
    if not entry or entry.get("status") == "not measured" or not (entry.get("tta_acc") or entry.get("acc")):
        return "not measured" + (f": {entry['note']}" if entry and entry.get("note") else "")
    s = entry.get("setting", {})
    seeds = f"{entry.get('n')} seed{'s' if entry.get('n') != 1 else ''}"
    where = f"{entry.get('train_time_s'):g} s on {entry.get('device', '?')}" if entry.get("train_time_s") else \
        f"on {entry.get('device', '?')}"
    metric = _metric(entry)
    return (f"{metric} {_pct(entry[metric])} ({seeds}; width {s.get('width_mult')}, {s.get('epochs')} epochs; "
            f"{where}; commit {entry.get('commit', '?')})")


def records(load: Callable[[], Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One dict per record: ``name``, ``summary``, ``file``, ``source`` (the ``"cifar10"`` entry or
    ``None``) and ``ours`` (``{"full": entry, "smoke": entry}``, ``None`` where missing).
    ``load``: the expectations (default :func:`speedrun.measure.expected.load`)."""
    from speedrun.record_files import names, record_path  # noqa: PLC0415

    if load is None:
        from speedrun.measure import expected  # noqa: PLC0415

        load = expected.load
    table = load()
    return [{"name": n, "summary": summary_line(n), "file": str(record_path(n)),
             "source": table.get(n, {}).get("cifar10"),
             "ours": {k: table.get(n, {}).get(k) for k, _ in OURS}} for n in names()]


def format_records(rows: list[dict[str, Any]]) -> str:
    """The text of ``speedrun list`` for :func:`records`' rows."""
    out = []
    for r in rows:
        out += [f"{r['name']} — {r['summary']}", f"  file:   {r['file']}", f"  source: {source_text(r['source'])}"]
        for i, (key, label) in enumerate(OURS):
            out.append(f"  {'ours:' if i == 0 else '':7} {label}: {ours_text(r['ours'][key])}")
        out.append("")
    from speedrun.cli_parser import _invocation  # noqa: PLC0415 (how the user started it: speedrun, ./run.sh)

    prog = _invocation()
    out.append(f"Train one: {prog} train NAME --config.data.path=sample [--smoke]; "
               f"its settings: {prog} train NAME --list_keys")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    """Print the records (text, or one JSON line per record with ``--json``); exit status 0."""
    rows = records()
    try:
        print("\n".join(json.dumps(r) for r in rows) if args.json else format_records(rows))
        sys.stdout.flush()
    except BrokenPipeError:  # `speedrun list | head`: the reader left; Python's documented recipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
