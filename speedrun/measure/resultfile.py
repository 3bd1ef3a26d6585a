"""The JSON-lines result file of a bench (:mod:`speedrun.measure.bench`), written so that nothing is lost.

``{outdir}/{record}__{device slug}__{UTC time}.jsonl`` holds one ``{"kind": "run", ...}`` line per
seed, appended and flushed to the disk (``os.fsync``) as soon as that seed ends, then one
``{"kind": "summary", ...}`` line. A bench killed at seed 7 of 10 leaves the six finished runs and
no summary; ``bench --resume`` finds the latest file of the same record, device and setting
(:func:`find_resumable`: every run line carries the :func:`setting_id` of its bench), runs only the
seeds it lacks, appends them, and writes the summary over every run of the file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence


def device_slug(description: str) -> str:
    """File-name-safe form of a device description (``"NVIDIA H100 80GB HBM3 x1"`` ->
    ``"NVIDIA-H100-80GB-HBM3-x1"``)."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", description).strip("-")[:60]


def result_path(outdir: str | Path, record: str, device: str) -> Path:
    """``{outdir}/{record}__{device slug}__{UTC time}.jsonl``, where ``./run.sh report`` reads
    (``..._2.jsonl``, ``_3``, ... when a bench of the same second has the name)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path, n = Path(outdir) / f"{record}__{device_slug(device)}__{stamp}.jsonl", 1
    while path.exists():
        n += 1
        path = path.with_name(f"{record}__{device_slug(device)}__{stamp}_{n}.jsonl")
    return path


def write_jsonl(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines (one object per line) to ``path`` (parent folders created),
    atomically: a temporary file in the same folder, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def setting_id(config: Any, **setting: Any) -> str:
    """12 hex digits of the SHA-256 of the resolved ``config`` (JSON, keys sorted; the run options
    of :data:`speedrun.config.RUN_OPTIONS` left out) and the bench's other ``setting`` values
    (device, target, tile_to, per_epoch_eval): runs with the same id may share a summary."""
    from speedrun.config import RUN_OPTIONS  # noqa: PLC0415

    resolved = {k: v for k, v in json.loads(config.to_json_best_effort(sort_keys=True)).items()
                if k not in RUN_OPTIONS}
    text = json.dumps({"config": resolved, **setting}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of the lines of ``path``; a last line cut off by a kill (not valid JSON)
    is dropped.

    Raises:
      ValueError: any other line that is not a JSON object (the message names file and line).
    """
    lines = Path(path).read_text().splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):
                break
            row = None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i}: not a JSON object — delete the line or the file")
        rows.append(row)
    return rows


def find_resumable(outdir: str | Path, record: str, device: str, setting: str) -> Path | None:
    """The last written result file in ``outdir`` of ``record`` on ``device`` with a run line of
    ``setting`` (:func:`setting_id`), or ``None``."""
    pattern = f"{record}__{device_slug(device)}__*.jsonl"
    for path in sorted(Path(outdir).glob(pattern), key=lambda q: q.stat().st_mtime_ns, reverse=True):
        if any(r.get("kind") == "run" and r.get("setting") == setting for r in read_rows(path)):
            return path
    return None


class ResultFile:
    """A result file open for appending, one flushed and fsynced line per :meth:`append`.

    Args:
      path: the file; created with its parent folders, or rewritten (atomically) to hold exactly
        ``rows`` — on resume the earlier runs, without the old summary.
      rows: the lines it starts with.
    """

    def __init__(self, path: str | Path, rows: Sequence[dict[str, Any]] = ()):
        self.path = write_jsonl(path, rows)

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` as one JSON line and force it to the disk before returning."""
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def open_results(outdir: str | Path | None, record: str, device: str, setting: str, resume: bool,
                 log: Callable[[str], None] | None = None) -> tuple[ResultFile | None, list[dict[str, Any]]]:
    """``(file, earlier runs)`` of a bench of ``record`` on ``device`` with ``setting``: a new
    :func:`result_path` file (``None`` when ``outdir`` is), or on ``resume`` the one
    :func:`find_resumable` finds, rewritten to hold only its run lines of ``setting`` (the old
    summary goes), with those runs (without ``kind``); ``log`` says which."""
    if outdir is None:
        return None, []
    path = find_resumable(outdir, record, device, setting) if resume else None
    rows = [r for r in (read_rows(path) if path else []) if r.get("kind") == "run" and r.get("setting") == setting]
    if log and resume:
        log(f"# resuming {path}: seeds {sorted(r['seed'] for r in rows)} done" if path else
            f"# --resume: no result file of {record} on {device} with this setting in {outdir}; starting a new one")
    out = ResultFile(path or result_path(outdir, record, device), rows)
    return out, [{k: v for k, v in r.items() if k != "kind"} for r in rows]
