"""The README's records table, made from ``records/expected.json`` and
``benchmarks/results/gpu/records.json``; ``--write`` replaces the table between the README's
``<!-- records-table -->`` markers, without it the table is printed to stdout.

Every record file under ``records/`` gets a row: the source's published figure, ours on a GPU (GPU,
date, commit, linked to the file that printed it; "not measured" without one), ours on the CPU
sample (``--smoke`` and full width, mean ± std of tta_acc). Usage: ``python benchmarks/records_table.py --write``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN, END = "<!-- records-table -->", "<!-- /records-table -->"


def _pct(e: dict | None) -> str:
    if not e or e.get("status") == "not measured" or not e.get("tta_acc"):
        return "not measured"
    t = e["tta_acc"]
    if t.get("std") is not None:
        return f"{100 * t['mean']:.2f} ± {100 * t['std']:.2f}%"
    one = " (1 seed)" if e.get("n") == 1 and e.get("dataset") == "cifar10-subset" else ""  # ours, not a source's
    return f"{100 * t['mean']:.2f}%{one}"


def table(root: Path = ROOT) -> str:
    """The markdown table (str, no trailing newline)."""
    expected = json.loads((root / "records" / "expected.json").read_text(encoding="utf-8"))
    gpu = json.loads((root / "benchmarks" / "results" / "gpu" / "records.json").read_text(encoding="utf-8"))
    rows = ["| record | source's figure (CIFAR-10) | ours on a GPU: train s (tiled sample) | ours on the CPU sample: tta_acc `--smoke` · full width |",
            "|---|---|---|---|"]
    for path in sorted((root / "records").glob("*.py")):
        name = path.stem
        e = expected.get(name, {})
        src = e.get("cifar10")
        if src:
            secs = f" in {src['train_time_s']:g} s" if src.get("train_time_s") else ""
            source = f"{_pct(src)}{secs}, {src['device']} ([source](docs/records.md#{name}))"
        else:
            source = "not measured"
        g = gpu.get(name)
        if g:
            ours_gpu = (f"[{g['train_time_s']:g} s]({g['file']}) ({g['gpu']}, {g['date']}, commit {g['commit']}, "
                        f"n={g['n']})" + (f"; source's script there: {g['reference_s']:g} s" if g.get("reference_s") else ""))
        else:
            ours_gpu = "not measured"
        cpu = f"{_pct(e.get('smoke'))} · {_pct(e.get('full'))}"
        rows.append(f"| [{name}](records/{name}.py) | {source} | {ours_gpu} | {cpu} |")
    return "\n".join(rows)


def replace(readme: str, new_table: str) -> str:
    """``readme`` with the text between the markers replaced by ``new_table``.

    Raises:
      ValueError: the markers are missing.
    """
    head, sep, rest = readme.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"README has no {BEGIN} ... {END} markers — add them where the table goes")
    return f"{head}{BEGIN}\n{new_table}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite README.md's table in place")
    args = parser.parse_args()
    if args.write:
        README.write_text(replace(README.read_text(encoding="utf-8"), table()), encoding="utf-8")
        print(f"wrote the records table into {README}")
    else:
        print(table())


if __name__ == "__main__":
    main()
