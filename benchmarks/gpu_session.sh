#!/usr/bin/env bash
# One command for a GPU session: every measurement the README's GPU figures need, by priority,
# each step under a timeout, within a total time budget, continuing after a failed step.
#
#   benchmarks/gpu_session.sh [--smoke] [--budget SECONDS] [--runs N] [--dir DIR]
#
#   --smoke     tiny scale (speedrun.config.smoke, 1 epoch, width 1/16, 1 seed, the bundled subset
#               untiled): the whole script end to end on a CPU in minutes, to check it before a GPU
#   --budget S  total seconds for all steps (default 540, so that the session fits one 10-minute
#               device command; --smoke: 1500). A step gets at most what is left (less a reserve
#               for the report); a step that no longer fits is skipped
#   --runs N    seeds per airbench / 94pct_26s bench (default 5)
#   --dir DIR   output folder (default benchmarks/results/gpu_session_<UTC time>)
#
# DIR receives session.log (one line per step: status, exit code, seconds), STEP.log (each step's
# output), results/*.jsonl (bench result files, named after the GPU), profile/ (the jax.profiler
# trace), records_table.md and accuracy_vs_time.png. When $OUT is set (the device tool's folder
# that comes back: at most 8 files, 2 folders deep), the end packs DIR into $OUT as session.log,
# records_table.md, session.tar.gz (all of DIR but the cache) and jax_cache.tar.gz (if <= 15 MiB).
#
# Compilation cache: $SPEEDRUN_CACHE_DIR when set (a folder from an earlier session on the same
# GPU and JAX: unpack jax_cache.tar.gz, carry the folder and point this at it), else DIR/jax_cache.
# The same folder is given to the scripts that do not go through ./run.sh (JAX_COMPILATION_CACHE_DIR).
#
# Steps, in order: bench of airbench94_muon, airbench94, 94pct_26s, hiverge94, e1_curriculum94 (full
# data shape: the bundled subset tiled to 50000 training rows, --no_epoch_eval, N seeds); ./run.sh profile airbench94_muon
# (one 50000-row epoch, the bench's shapes, so its executables come from the cache);
# benchmarks/vs_airbench.py (only where torch and airbench import); bench of resnet20_stacked and
# resnet20_he2015 (2 seeds); benchmarks/precision_throughput.py; ./run.sh report of the results.
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=0; BUDGET=""; RUNS=5; DIR="benchmarks/results/gpu_session_$(date -u +%Y%m%dT%H%M%SZ)"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --budget) BUDGET="$2"; shift ;;
    --budget=*) BUDGET="${1#*=}" ;;
    --runs) RUNS="$2"; shift ;;
    --runs=*) RUNS="${1#*=}" ;;
    --dir) DIR="$2"; shift ;;
    --dir=*) DIR="${1#*=}" ;;
    -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_session.sh: error: unknown argument $1 — see benchmarks/gpu_session.sh --help" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$BUDGET" ]]; then BUDGET=$([[ $SMOKE == 1 ]] && echo 1500 || echo 540); fi

mkdir -p "$DIR/results"
DIR="$(cd "$DIR" && pwd)"
export SPEEDRUN_CACHE_DIR="${SPEEDRUN_CACHE_DIR:-$DIR/jax_cache}"
export JAX_COMPILATION_CACHE_DIR="$SPEEDRUN_CACHE_DIR" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
       JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1  # the same cache for the scripts outside ./run.sh
export SPEEDRUN_PROGRESS=0
PY="${SPEEDRUN_PYTHON:-$PWD/.venv/bin/python}"
if [[ ! -x "$PY" ]]; then  # no .venv (a GPU image): its python3 as it is, nothing installed (./run.sh)
  PY="$(command -v python3)"; export SPEEDRUN_PYTHON="$PY"
fi
LOG="$DIR/session.log"
START=$(date +%s)
RESERVE=30  # seconds kept for the report at the end

say() { echo "[gpu_session $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# step NAME LIMIT_SECONDS COMMAND...: run COMMAND under `timeout`, output to $DIR/NAME.log
step() {
  local name="$1" limit="$2"; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) - RESERVE ))
  if [[ "$name" == report ]]; then left=$(( left + RESERVE )); fi
  if (( left < 20 )); then say "SKIP $name: the budget is spent ($left s left)"; return; fi
  (( limit > left )) && limit=$left
  say "START $name (limit ${limit} s): $*"
  local t0=$(date +%s) rc
  timeout -k 15 "$limit" "$@" > "$DIR/$name.log" 2>&1
  rc=$?
  local status=ok; (( rc == 124 || rc == 137 )) && status=TIMEOUT; (( rc != 0 && rc != 124 && rc != 137 )) && status=FAILED
  say "$status $name: exit $rc after $(( $(date +%s) - t0 )) s (log $DIR/$name.log)"
}

say "output $DIR; compilation cache $SPEEDRUN_CACHE_DIR; budget $BUDGET s; smoke $SMOKE; python $PY"
command -v nvidia-smi > /dev/null && nvidia-smi -L 2>&1 | tee -a "$LOG"
git log -1 --format='commit %H %s' 2>/dev/null | tee -a "$LOG"

if [[ $SMOKE == 1 ]]; then
  SIZE=(--smoke --config.data.path=sample --config.epochs=1 --config.model.width_mult=0.0625 --config.batch_size=1024)
  BENCH=("${SIZE[@]}" --runs 1 --no_epoch_eval); SLOW=("${BENCH[@]}")
  PROFILE=("${SIZE[@]}" --steps 2)
  PRECISION=(--data=sample --train_images=1024 --runs=1 --precisions=float32 --set model.width_mult=0.0625
             --set epochs=1 --set batch_size=256 --set whitening.num_images=1024)
  LIMIT=400; VS_PAIRS=1; VMAP=(--k 2 --scale smoke)
else
  BENCH=(--config.data.path=sample --tile_to 50000 --no_epoch_eval --runs "$RUNS")
  SLOW=(--config.data.path=sample --tile_to 50000 --no_epoch_eval --runs 2)
  PROFILE=(--config.data.path=sample --tile_to 50000)
  PRECISION=(--record=records/airbench94_muon.py --data=sample --tile_to=50000 --runs=2)
  LIMIT=240; VS_PAIRS=3; VMAP=(--k 8 --scale record --tile_to 50000)
fi

for r in airbench94_muon airbench94 94pct_26s; do
  step "bench_$r" "$LIMIT" ./run.sh bench "records/$r.py" "${BENCH[@]}" --outdir "$DIR/results"
done
# the frontier records (hiverge94, e1_curriculum94): both clocks and the p-value are in their summaries;
# at --smoke's one epoch E1's curriculum is cut to one size
for r in hiverge94 e1_curriculum94; do
  ONE=(); [[ $SMOKE == 1 && $r == e1_curriculum94 ]] && ONE=("--config.resolution=(24,)")
  step "bench_$r" "$LIMIT" ./run.sh bench "records/$r.py" "${BENCH[@]}" ${ONE[@]+"${ONE[@]}"} --outdir "$DIR/results"
done
# the hot-path A/B: the epoch-plan work's base commit against this tree, same GPU, alternating, and
# the precision switches (float16 dynamic / static scale, bfloat16) of airbench94_muon
AB_BASE="${AB_BASE:-f12c58e}"
if git rev-parse -q --verify "$AB_BASE^{commit}" > /dev/null 2>&1; then
  rm -rf "$DIR/ab_base" && mkdir -p "$DIR/ab_base" && git archive "$AB_BASE" | tar -x -C "$DIR/ab_base"
  for r in airbench94_muon airbench94; do
    step "ab_base_$r" "$LIMIT" bash -c "cd '$DIR/ab_base' && ./run.sh bench records/$r.py ${BENCH[*]} --outdir '$DIR/ab/base'"
    step "ab_head_$r" "$LIMIT" ./run.sh bench "records/$r.py" "${BENCH[@]}" --outdir "$DIR/ab/head"
  done
else
  say "SKIP ab: commit $AB_BASE is not in this checkout (AB_BASE=COMMIT to choose)"
fi
for p in float16 float16_static bfloat16; do
  step "precision_$p" "$LIMIT" ./run.sh bench records/airbench94_muon.py "${BENCH[@]}" "--config.precision=$p" \
    --outdir "$DIR/precision/$p"
done
step profile_airbench94_muon "$LIMIT" ./run.sh profile records/airbench94_muon.py "${PROFILE[@]}" --outdir "$DIR/profile"
if "$PY" -c "import torch, airbench" > /dev/null 2>&1; then
  step vs_airbench "$LIMIT" "$PY" benchmarks/vs_airbench.py --pairs "$VS_PAIRS" --data sample \
    --out "$DIR/results/vs_airbench.jsonl"
else
  say "SKIP vs_airbench: torch or airbench does not import here (pip install -e '.[vs-airbench]')"
fi
for r in resnet20_stacked resnet20_he2015; do
  step "bench_$r" "$LIMIT" ./run.sh bench "records/$r.py" "${SLOW[@]}" --outdir "$DIR/results"
done
step precision_throughput "$LIMIT" "$PY" benchmarks/precision_throughput.py "${PRECISION[@]}"
step sweep_vmap "$LIMIT" "$PY" benchmarks/sweep_vmap.py "${VMAP[@]}"  # K trials as one program vs K in a row
step report 60 ./run.sh report "$DIR/results" --table "$DIR/records_table.md" --plot "$DIR/accuracy_vs_time.png"
say "done in $(( $(date +%s) - START )) s; steps: $(grep -cE '\] (ok|FAILED|TIMEOUT) ' "$LOG") run, \
$(grep -cE '\] (FAILED|TIMEOUT) ' "$LOG") failed or timed out, $(grep -c '\] SKIP ' "$LOG") skipped"
[[ -f "$DIR/records_table.md" ]] && cat "$DIR/records_table.md"
if [[ -n "${OUT:-}" && "$OUT" != "$DIR" ]]; then  # the device tool's return folder: few files, shallow
  mkdir -p "$OUT"
  cp "$LOG" "$OUT/session.log"; [[ -f "$DIR/records_table.md" ]] && cp "$DIR/records_table.md" "$OUT/"
  tar -czf "$OUT/session.tar.gz" -C "$(dirname "$DIR")" --exclude=jax_cache "$(basename "$DIR")"
  if (( $(stat -c %s "$OUT/session.tar.gz") > 15 * 1024 * 1024 )); then  # the trace files are the big ones
    tar -czf "$OUT/session.tar.gz" -C "$(dirname "$DIR")" --exclude=jax_cache --exclude=plugins "$(basename "$DIR")"
    echo "[gpu_session] session.tar.gz without the trace files (over 15 MiB with them)"
  fi
  if [[ -d "$SPEEDRUN_CACHE_DIR" ]]; then
    tar -czf "$OUT/jax_cache.tar.gz" -C "$SPEEDRUN_CACHE_DIR" .
    if (( $(stat -c %s "$OUT/jax_cache.tar.gz") > 15 * 1024 * 1024 )); then
      rm "$OUT/jax_cache.tar.gz"; echo "[gpu_session] the cache is over 15 MiB packed: not returned"
    fi
  fi
  echo "[gpu_session] packed into $OUT: $(ls "$OUT" | tr '\n' ' ')"
fi
exit 0
