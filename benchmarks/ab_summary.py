"""The A/B table of a GPU session (benchmarks/gpu_session.sh): per record, the images/s of the base
commit and of this tree from the bench summaries, their ratio (head ÷ base, > 1: faster), and the
compile seconds apart (ahead-of-time compilation, paid once per process, outside the timed runs);
then the precision switches of the same record (float16 dynamic, float16 static scale, bfloat16).

    python benchmarks/ab_summary.py DIR [--base COMMIT] [--out FILE.md]

DIR is the session's folder: ``DIR/ab/<label>/*.jsonl`` (``base``, ``head``; several pairs:
``base1``, ``head1``, ...) and ``DIR/precision/<policy>/*.jsonl`` (``./run.sh bench`` result
files). Each row is the median over the pairs (and the seeds' summary of each bench). Stdlib only,
so it runs under any python the session has.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path


def summaries(folder: Path) -> dict[str, dict]:
    """``{record: summary}`` of the bench result files (``*.jsonl``) in ``folder``; the last
    summary line of a record wins."""
    out = {}
    for f in sorted(folder.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("kind") == "summary":
                out[row["record"]] = row
    return out


def ab_rows(session: Path) -> list[dict]:
    """One row per record benched under both ``ab/base*`` and ``ab/head*``: ``record``,
    ``base_images_per_s``, ``head_images_per_s`` (medians over the pairs), ``ratio`` (head ÷
    base), ``pairs``, ``base_compile_s``, ``head_compile_s`` (medians)."""
    sides: dict[str, dict[str, list[dict]]] = {"base": {}, "head": {}}
    for d in sorted((session / "ab").glob("*")):
        side = re.sub(r"\d+$", "", d.name)
        if side in sides and d.is_dir():
            for record, s in summaries(d).items():
                sides[side].setdefault(record, []).append(s)
    rows = []
    for record in sorted(set(sides["base"]) & set(sides["head"])):
        b, h = sides["base"][record], sides["head"][record]
        med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
        bi, hi = med(b, "images_per_s"), med(h, "images_per_s")
        rows.append({"record": record, "base_images_per_s": bi, "head_images_per_s": hi, "ratio": hi / bi,
                     "pairs": min(len(b), len(h)), "base_compile_s": med(b, "compile_time_s"),
                     "head_compile_s": med(h, "compile_time_s"), "device": h[0].get("device", "-")})
    return rows


def precision_rows(session: Path) -> list[dict]:
    """One row per (record, policy) of ``precision/<policy>/``: images/s, compile s, mean tta_acc."""
    rows = []
    for d in sorted((session / "precision").glob("*")):
        for record, s in summaries(d).items() if d.is_dir() else ():
            rows.append({"record": record, "policy": d.name, "images_per_s": s["images_per_s"],
                         "compile_s": s["compile_time_s"], "tta_acc": (s.get("tta_acc") or {}).get("mean")})
    return rows


def table(session: Path, base: str) -> str:
    """The session's A/B and precision tables, markdown."""
    lines = [f"A/B: base {base} against this tree (images/s of the timed runs; compile apart)", "",
             "| record | device | base images/s | head images/s | head ÷ base | pairs | base compile s | head compile s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in ab_rows(session):
        lines.append(f"| {r['record']} | {r['device']} | {r['base_images_per_s']:.1f} | {r['head_images_per_s']:.1f} | "
                     f"{r['ratio']:.3f} | {r['pairs']} | {r['base_compile_s']:.1f} | {r['head_compile_s']:.1f} |")
    prec = precision_rows(session)
    if prec:
        lines += ["", "| record | precision | images/s | compile s | tta_acc |", "|---|---|---|---|---|"]
        for r in prec:
            acc = "-" if r["tta_acc"] is None else f"{100 * r['tta_acc']:.2f}%"
            lines.append(f"| {r['record']} | {r['policy']} | {r['images_per_s']:.1f} | {r['compile_s']:.1f} | {acc} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("session", type=Path, help="the session's folder (gpu_session.sh --dir)")
    p.add_argument("--base", default="(base)", help="the base commit, for the title")
    p.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    a = p.parse_args(argv)
    if not (a.session / "ab").is_dir() and not (a.session / "precision").is_dir():
        print(f"ab_summary.py: error: {a.session} has no ab/ or precision/ folder — give the folder of a "
              "gpu_session.sh run (its --dir)", file=sys.stderr)
        return 2
    text = table(a.session, a.base)
    if a.out:
        a.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
