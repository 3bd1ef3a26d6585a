#!/usr/bin/env bash
# speedrun: one command to set up and run.
#   ./run.sh records/NAME.py [--config.KEY=VALUE ...] [--workdir=DIR]   train a record (= ./run.sh train ...)
#   ./run.sh test [pytest args]                                         run the test suite (a worker a core)
#   ./run.sh bench records/NAME.py [--runs N] [--config.KEY=VALUE ...]  N seeds, compiled once: stats
#   ./run.sh report [FOLDER]                                            bench results -> table + plot
#   ./run.sh eval DIR [--tta_level N]                                   test accuracy of a checkpoint
#   ./run.sh sweep records/NAME.py --space SPACE [--sampler grid|genetic|tpe] [--trials N]   Optuna study
#   ./run.sh profile records/NAME.py [--steps N]                        device time by kernel category
#   ./run.sh list                                                       the records: source, its figure, ours
#   ./run.sh COMMAND --help                                             a command's flags
# A failure prints one line, speedrun: error: <what> — <fix>; --debug (or SPEEDRUN_DEBUG=1) adds the traceback.
# Creates (or reuses) a virtual environment in .venv with the package and its test and report extras
# (pip's output goes to .venv/install.log; one line says where and how long).
# SPEEDRUN_PYTHON_BIN=python3.12 makes the venv with that interpreter (default python3).
# SPEEDRUN_PYTHON=/path/to/python uses that interpreter as it is instead (e.g. a GPU image that
# already has jax with CUDA): nothing is installed, the checkout is put on PYTHONPATH.
set -euo pipefail
export SPEEDRUN_PROG="${SPEEDRUN_PROG:-$0}"  # how the user called this script: the CLI's hints name it
cd "$(dirname "$0")"

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
if [[ $# -lt 1 ]]; then usage; exit 2; fi
case "$1" in -h|--help|help) usage; exit 0 ;; esac
for a in "$@"; do  # a command's --help needs nothing installed (the CLI's parser is stdlib only)
  if [[ "$a" == "-h" || "$a" == "--help" ]] && [[ "$1" != "test" ]]; then
    case "$1" in train|bench|report|eval|sweep|profile|list) ;; *) set -- train "$@" ;; esac
    PYTHONPATH="$PWD" exec "${SPEEDRUN_PYTHON:-python3}" -m speedrun.cli "$@"
  fi
done

if [[ -n "${SPEEDRUN_PYTHON:-}" ]]; then
  PY="$SPEEDRUN_PYTHON"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  VENV="${SPEEDRUN_VENV:-.venv}"
  PY="$VENV/bin/python"
  stamp="$VENV/.speedrun-installed"
  want="$(sha256sum pyproject.toml | cut -c1-16)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    # pip's and setuptools' output (warnings included) goes to the log; one line says where and how long
    t0=$SECONDS
    if [[ ! -x "$PY" ]]; then "${SPEEDRUN_PYTHON_BIN:-python3}" -m venv "$VENV"; fi
    log="$VENV/install.log"
    if ! { "$PY" -m pip install --upgrade pip && "$PY" -m pip install -e ".[test,report]"; } >"$log" 2>&1; then
      echo "[run.sh] installing speedrun into $VENV failed — the end of $log:" >&2
      tail -n 25 "$log" >&2
      exit 1
    fi
    echo "$want" > "$stamp"
    echo "[run.sh] speedrun and its dependencies installed in $VENV ($("$PY" --version)) in $((SECONDS - t0)) s; pip's log: $log" >&2
  fi
fi

case "$1" in
  test)
    shift
    unset SPEEDRUN_PROG  # the suite runs the CLI itself: its hints must not name ./run.sh
    # one pytest-xdist worker per core, a module's tests on one worker (its module fixtures once);
    # -n N or -p no:xdist in the arguments takes precedence
    xdist=(-n auto --dist loadscope)
    for a in "$@"; do case "$a" in -n|-n*|--numprocesses*|no:xdist|-pno:xdist) xdist=() ;; esac; done
    exec "$PY" -m pytest "${xdist[@]}" "$@"
    ;;
  train|bench|report|eval|sweep|profile|list)
    exec "$PY" -m speedrun.cli "$@"
    ;;
  *)
    exec "$PY" -m speedrun.cli train "$@"
    ;;
esac
