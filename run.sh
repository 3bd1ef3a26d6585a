#!/usr/bin/env bash
# speedrun: one command to set up and run.
#   ./run.sh records/NAME.py [--config.key=value ...] [--workdir=DIR]   train a record
#   ./run.sh test [pytest args]                                         run the test suite
#   ./run.sh bench records/NAME.py [--runs N] [--config.key=value ...]  N seeds, compiled once: stats
#   ./run.sh report [FOLDER]                                            bench results -> table + plot
# Creates (or reuses) a virtual environment in .venv with the package and its test and report extras.
# SPEEDRUN_PYTHON_BIN=python3.12 makes the venv with that interpreter (default python3).
# SPEEDRUN_PYTHON=/path/to/python uses that interpreter as it is instead (e.g. a GPU image that
# already has jax with CUDA): nothing is installed, the checkout is put on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")"

if [[ $# -lt 1 ]]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

if [[ -n "${SPEEDRUN_PYTHON:-}" ]]; then
  PY="$SPEEDRUN_PYTHON"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  VENV="${SPEEDRUN_VENV:-.venv}"
  if [[ ! -x "$VENV/bin/python" ]]; then
    BASE_PY="${SPEEDRUN_PYTHON_BIN:-python3}"
    echo "[run.sh] creating $VENV with $("$BASE_PY" --version)" >&2
    "$BASE_PY" -m venv "$VENV"
  fi
  PY="$VENV/bin/python"
  stamp="$VENV/.speedrun-installed"
  want="$(sha256sum pyproject.toml | cut -c1-16)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "[run.sh] installing speedrun and its dependencies into $VENV" >&2
    "$PY" -m pip install --quiet --upgrade pip >&2
    "$PY" -m pip install --quiet -e ".[test,report]" >&2
    echo "$want" > "$stamp"
  fi
fi

case "$1" in
  test)
    shift
    exec "$PY" -m pytest "$@"
    ;;
  bench)
    shift
    record="${1:-}"
    if [[ ! -f "$record" ]]; then
      echo "run.sh bench: no record config file '$record'; records: $(ls records/*.py | tr '\n' ' ')" >&2
      exit 2
    fi
    shift
    exec "$PY" -m speedrun.bench --config="$record" "$@"
    ;;
  report)
    shift
    exec "$PY" -m speedrun.report "$@"
    ;;
  *)
    record="$1"
    shift
    if [[ ! -f "$record" ]]; then
      echo "run.sh: no record config file '$record'; records: $(ls records/*.py | tr '\n' ' ')" >&2
      exit 2
    fi
    exec "$PY" -m speedrun.main --config="$record" "$@"
    ;;
esac
