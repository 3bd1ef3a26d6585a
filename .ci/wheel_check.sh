#!/usr/bin/env bash
# The package as a user installs it, not cloned: build the sdist and the wheel (python -m build),
# install the wheel into a fresh venv outside the checkout, and from an empty temporary folder run
#   speedrun list                                                   (the records travel in the wheel)
#   speedrun train airbench94 --config.data.path=sample --smoke     (the console script, a smoke run)
#   the README's Python API example (its ```python block with speedrun.fit), as it is written.
# Usage: .ci/wheel_check.sh [PYTHON]   PYTHON has the `build` package (the venv of ./run.sh has it:
# the test extra); the fresh venv is made from it. Prints one line per step; on a failure, the end
# of that step's log, exit 1. The temporary folder is removed at the end (KEEP=1 keeps it).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${1:-${ROOT}/.venv/bin/python}"
# absolute, without resolving the venv's symlink: the steps below run from other folders
[[ "$PY" == */* ]] && PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/speedrun-wheel.XXXXXX")"
[[ "${KEEP:-0}" == 1 ]] || trap 'rm -rf "$WORK"' EXIT
export SPEEDRUN_CACHE_DIR="$WORK/jax-cache" PYTHONNOUSERSITE=1
unset PYTHONPATH SPEEDRUN_PYTHON SPEEDRUN_PROG SPEEDRUN_DATA

step() {  # step NAME LOG COMMAND...: run it with its output in LOG; one line, or the log's end and exit 1
  local name="$1" log="$2" t0=$SECONDS
  shift 2
  if ! "$@" >"$log" 2>&1; then
    echo "[wheel] FAILED: $name — the end of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  echo "[wheel] $name: ok ($((SECONDS - t0)) s)"
}

mkdir "$WORK/dist" "$WORK/run"
# the sdist from the checkout, then the wheel from the unpacked sdist (build's default), each in an
# isolated build environment: a file the sdist lacks is missing from the wheel too
step "python -m build (sdist, then the wheel from it)" "$WORK/build.log" "$PY" -m build --outdir "$WORK/dist" "$ROOT"
sdist=("$WORK"/dist/speedrun-*.tar.gz) wheel=("$WORK"/dist/speedrun-*.whl)
# both carry the records: the sdist as records/, the wheel as the package speedrun_records
contents() {
  "$PY" - "$sdist" "$wheel" <<'EOF'
import sys, tarfile, zipfile
sdist = [n.split("/", 1)[1] for n in tarfile.open(sys.argv[1]).getnames() if "/" in n]
wheel = zipfile.ZipFile(sys.argv[2]).namelist()
need_sdist = ["records/airbench94.py", "records/expected.json", "pyproject.toml", "speedrun/data/sample/cifar-10-python-subset.tar.gz"]
need_wheel = ["speedrun_records/airbench94.py", "speedrun_records/expected.json", "speedrun/record_files.py",
              "speedrun/data/sample/cifar-10-python-subset.tar.gz"]
missing = [n for n in need_sdist if n not in sdist] + [n for n in need_wheel if n not in wheel]
logs = [n for n in wheel if n.startswith("speedrun_records/logs/")]
print("sdist", len(sdist), "files; wheel", len(wheel), "files,", len(logs), "record logs; missing:", missing)
sys.exit(1 if missing or not logs else 0)
EOF
}
step "sdist and wheel carry the records" "$WORK/contents.log" contents

step "fresh venv + pip install the wheel" "$WORK/install.log" \
  bash -c "'$PY' -m venv '$WORK/venv' && '$WORK/venv/bin/python' -m pip install '${wheel[0]}'"
cd "$WORK/run"  # an empty folder: nothing of the checkout is on sys.path or at hand
step "speedrun list" "$WORK/list.log" "$WORK/venv/bin/speedrun" list
grep -q "^airbench94 — " "$WORK/list.log" && grep -q "speedrun_records/airbench94.py" "$WORK/list.log" \
  || { echo "[wheel] FAILED: speedrun list does not show the installed records:" >&2; cat "$WORK/list.log" >&2; exit 1; }
step "speedrun train airbench94 --smoke" "$WORK/train.log" "$WORK/venv/bin/speedrun" train airbench94 \
  --config.data.path=sample --smoke --no_progress --workdir "$WORK/run/logs"
# the run's result line, read by the installed package's own interpreter
step "train's result line" "$WORK/result.log" "$WORK/venv/bin/python" -c '
import json, sys
line = [l for l in open(sys.argv[1]) if l.startswith("{")][-1]
r = json.loads(line)
assert r["record"] == "airbench94" and 0 <= r["tta_acc"] <= 1, r
print("tta_acc", r["tta_acc"])' "$WORK/train.log"
# the README's Python API example: its python block that calls speedrun.fit, run as written
"$PY" - "$ROOT/README.md" "$WORK/run/readme_example.py" <<'EOF'
import re, sys
blocks = re.findall(r"```python\n(.*?)```", open(sys.argv[1]).read(), re.S)
fit = [b for b in blocks if "speedrun.fit(" in b]
if not fit:
    sys.exit("[wheel] FAILED: README.md has no ```python block that calls speedrun.fit(")
open(sys.argv[2], "w").write(fit[0])
EOF
step "README's Python API example" "$WORK/readme.log" "$WORK/venv/bin/python" "$WORK/run/readme_example.py"
step "the package ran from the venv" "$WORK/where.log" "$WORK/venv/bin/python" -c "
import speedrun, speedrun.record_files as f
assert str(f.records_dir()).startswith('$WORK/venv/'), f.records_dir()
assert speedrun.__file__.startswith('$WORK/venv/'), speedrun.__file__"
echo "[wheel] all passed: ${wheel[0]##*/} from a fresh venv, run in $WORK/run"
