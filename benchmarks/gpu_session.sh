#!/usr/bin/env bash
# One command for a GPU session: every measurement the README's GPU figures need, by priority,
# each step under a timeout, within a total time budget, continuing after a failed step.
#
#   benchmarks/gpu_session.sh [--smoke] [--budget SECONDS] [--runs N] [--dir DIR] [--only REGEX] [--dry_run]
#
#   --smoke     tiny scale (speedrun.config.smoke, 1 epoch, width 1/16, 1 seed, the bundled subset
#               untiled): the whole script end to end on a CPU in minutes, to check it before a GPU
#   --budget S  total seconds for all steps (default 540, so that the session fits one 10-minute
#               device command; --smoke: 0, no limit: every step runs). A step gets at most what is
#               left (less a reserve for the report); a step that no longer fits is skipped
#   --runs N    seeds per airbench / 94pct_26s bench (default 5)
#   --dir DIR   output folder (default benchmarks/results/gpu_session_<UTC time>)
#   --only RE   run only the steps whose name matches the extended regex RE (e.g. '^ab_'); the
#               others are logged as SKIP
#   --dry_run   log every step's command (DRY lines in session.log) without running it
#   AB_BASE=COMMIT, AB_PAIRS=N (default 1) in the environment: the A/B's base and its pairs;
#   SESSION_BENCH_RECORDS, SESSION_FRONTIER_RECORDS, SESSION_AB_RECORDS, SESSION_PRECISION_RECORDS,
#   SESSION_SLOW_RECORDS,
#   SESSION_WARM_RECORDS
#   ("name name ..."): replace the lists of records below for one session
#
# DIR receives session.log (one line per step: status, exit code, seconds), STEP.log (each step's
# output), results/*.jsonl (bench result files, named after the GPU), ab/ and precision/ (the A/B
# and precision benches), ab_summary.md (their images/s, ratio and compile seconds apart,
# benchmarks/ab_summary.py), profile/ (the jax.profiler trace), records_table.md and
# accuracy_vs_time.png. When $OUT is set (the device tool's folder that comes back: at most 8
# files, 2 folders deep), the end packs DIR into $OUT as session.log, records_table.md,
# ab_summary.md, session.tar.gz (all of DIR but the cache) and jax_cache.tar.gz (if <= 15 MiB).
#
# Python: $SPEEDRUN_PYTHON, else .venv/bin/python, else python3 (a GPU image's, nothing installed);
# every step, the A/B base's too, runs under it with its checkout first on PYTHONPATH. Carried
# wheels: *.whl in ./.whl (the device tool's `carry`) are installed with pip --no-index into
# DIR/site, put on PYTHONPATH, before the check that every dependency imports.
#
# Compilation cache: $SPEEDRUN_CACHE_DIR when set (a folder from an earlier session on the same
# GPU and JAX: unpack jax_cache.tar.gz, carry the folder and point this at it), else DIR/jax_cache.
# The same folder is given to the scripts that do not go through ./run.sh (JAX_COMPILATION_CACHE_DIR).
#
# Steps, in order (the records of each: the lists below): bench of BENCH_RECORDS (full data shape:
# the bundled subset tiled to 50000 training rows, --no_epoch_eval, N seeds) and FRONTIER_RECORDS
# (both clocks and the p-value in their summaries); the A/B of
# AB_RECORDS: the commit $AB_BASE (default f12c58e, the hot-path work's base; extracted with git
# archive) and this tree benched in turn, AB_PAIRS times; the precision switches of
# PRECISION_RECORDS; ab_summary; ./run.sh profile airbench94_muon (one 50000-row epoch, the bench's
# shapes, so its executables come from the cache); benchmarks/vs_airbench.py (only where torch and
# airbench import: train94, then train95 against airbench95); benchmarks/vs_source.py, one step per
# PyTorch source present (SOURCE_AIRBENCH94_MUON, default .sources/airbench94_muon.py at
# KellerJordan/cifar10-airbench f1c599c; SOURCE_HIVERGE94, default .sources/cifar10_speedrun.py at
# hiverge/cifar10-speedrun 5cd49b1; SOURCE_FULCRUM, default .sources/cifar-10-speedrun, a checkout of
# fulcrumresearch/cifar-10-speedrun ddec65f: E1 under its harness); bench of SLOW_RECORDS, then of
# WARM_RECORDS with a warm-up at --smoke (2 seeds each); benchmarks/precision_throughput.py;
# benchmarks/sweep_vmap.py; ./run.sh report of the results.
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=0; DRY=0; ONLY=""; BUDGET=""; RUNS=5; DIR="benchmarks/results/gpu_session_$(date -u +%Y%m%dT%H%M%SZ)"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --budget) BUDGET="$2"; shift ;;
    --budget=*) BUDGET="${1#*=}" ;;
    --runs) RUNS="$2"; shift ;;
    --runs=*) RUNS="${1#*=}" ;;
    --dir) DIR="$2"; shift ;;
    --dir=*) DIR="${1#*=}" ;;
    --dry_run) DRY=1 ;;
    --only) ONLY="$2"; shift ;;
    --only=*) ONLY="${1#*=}" ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_session.sh: error: unknown argument $1 — see benchmarks/gpu_session.sh --help" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$BUDGET" ]]; then BUDGET=$([[ $SMOKE == 1 ]] && echo 0 || echo 540); fi
(( BUDGET == 0 )) && BUDGET=1000000000  # no limit

# The records of each step: add a record to these lists (records/NAME.py), in priority order.
read -ra BENCH_RECORDS <<< "${SESSION_BENCH_RECORDS-airbench94_muon airbench94 94pct_26s}"  # --runs seeds
read -ra FRONTIER_RECORDS <<< "${SESSION_FRONTIER_RECORDS-hiverge94 e1_curriculum94}"  # --runs seeds
read -ra AB_RECORDS <<< "${SESSION_AB_RECORDS-airbench94_muon airbench94}"  # the A/B against $AB_BASE
read -ra PRECISION_RECORDS <<< "${SESSION_PRECISION_RECORDS-airbench94_muon}"  # the precision switches
read -ra SLOW_RECORDS <<< "${SESSION_SLOW_RECORDS-resnet20_stacked resnet20_he2015}"  # 2 seeds, late
read -ra WARM_RECORDS <<< "${SESSION_WARM_RECORDS-airbench95 airbench96 airbench96_faster}"  # 2 seeds, last
PRECISIONS=(float16 float16_static bfloat16)

mkdir -p "$DIR/results"
DIR="$(cd "$DIR" && pwd)"
export SPEEDRUN_CACHE_DIR="${SPEEDRUN_CACHE_DIR:-$DIR/jax_cache}"
export JAX_COMPILATION_CACHE_DIR="$SPEEDRUN_CACHE_DIR" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
       JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1  # the same cache for the scripts outside ./run.sh
export SPEEDRUN_PROGRESS=0
PY="${SPEEDRUN_PYTHON:-$PWD/.venv/bin/python}"
if [[ ! -x "$PY" ]]; then  # no .venv (a GPU image): its python3 as it is, nothing installed (./run.sh)
  PY="$(command -v python3)"
fi
export SPEEDRUN_PYTHON="$PY"  # every ./run.sh, the A/B base's too: this python, its checkout on PYTHONPATH
LOG="$DIR/session.log"
START=$(date +%s)
RESERVE=30  # seconds kept for the report at the end

say() { echo "[gpu_session $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# step NAME LIMIT_SECONDS COMMAND...: run COMMAND under `timeout`, output to $DIR/NAME.log
step() {
  local name="$1" limit="$2"; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) - RESERVE ))
  if [[ "$name" == report ]]; then left=$(( left + RESERVE )); fi
  if [[ -n "$ONLY" && ! "$name" =~ $ONLY ]]; then say "SKIP $name: not matched by --only $ONLY"; return; fi
  if (( left < 20 )); then say "SKIP $name: the budget is spent ($left s left)"; return; fi
  (( limit > left )) && limit=$left
  if [[ $DRY == 1 ]]; then say "DRY $name (limit ${limit} s): $*"; return; fi
  say "START $name (limit ${limit} s): $*"
  local t0=$(date +%s) rc
  timeout -k 15 "$limit" "$@" > "$DIR/$name.log" 2>&1
  rc=$?
  local status=ok; (( rc == 124 || rc == 137 )) && status=TIMEOUT; (( rc != 0 && rc != 124 && rc != 137 )) && status=FAILED
  say "$status $name: exit $rc after $(( $(date +%s) - t0 )) s (log $DIR/$name.log)"
}

say "output $DIR; compilation cache $SPEEDRUN_CACHE_DIR; budget $BUDGET s; smoke $SMOKE; python $PY"
if compgen -G ".whl/*.whl" > /dev/null; then  # carried wheels (the device tool's carry): installed, not fetched
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$DIR/site" .whl/*.whl \
    2>&1 | tee -a "$LOG" && export PYTHONPATH="$DIR/site${PYTHONPATH:+:$PYTHONPATH}"
  say "installed $(ls .whl/*.whl | wc -l) carried wheels into $DIR/site"
fi
MISSING=$("$PY" -c "
import importlib.util as u
mods = 'jax flax optax ml_collections orbax.checkpoint optuna tqdm platformdirs pooch scipy'.split()
print(' '.join(m for m in mods if u.find_spec(m.split('.')[0]) is None))")
if [[ -n "$MISSING" ]]; then
  say "error: $PY lacks $MISSING — carry them as wheels in .whl/ (/work/.library/device/README.md, Notes) or set SPEEDRUN_PYTHON"
  exit 2
fi
command -v nvidia-smi > /dev/null && nvidia-smi -L 2>&1 | tee -a "$LOG"
git log -1 --format='commit %H %s' 2>/dev/null | tee -a "$LOG"

if [[ $SMOKE == 1 ]]; then
  SIZE=(--smoke --config.data.path=sample --config.epochs=1 --config.model.width_mult=0.0625 --config.batch_size=1024)
  BENCH=("${SIZE[@]}" --runs 1 --no_epoch_eval); SLOW=("${BENCH[@]}")
  PROFILE=("${SIZE[@]}" --steps 2)
  PRECISION=(--data=sample --train_images=1024 --runs=1 --precisions=float32 --set model.width_mult=0.0625
             --set epochs=1 --set batch_size=256 --set whitening.num_images=1024)
  LIMIT=1200; VS_PAIRS=1; VS_RUNS=1; VMAP=(--k 2 --scale smoke); AB_PAIRS=${AB_PAIRS:-1}  # a loaded CPU: no step cut short
  WARM=(--config.optimizer.warmup_fraction=0.2)  # one warm-up step of 5 (airbench96's 10% of 5 is none)
else
  BENCH=(--config.data.path=sample --tile_to 50000 --no_epoch_eval --runs "$RUNS")
  SLOW=(--config.data.path=sample --tile_to 50000 --no_epoch_eval --runs 2)
  PROFILE=(--config.data.path=sample --tile_to 50000)
  PRECISION=(--record=records/airbench94_muon.py --data=sample --tile_to=50000 --runs=2)
  LIMIT=240; VS_PAIRS=3; VS_RUNS=$RUNS; VMAP=(--k 8 --scale record --tile_to 50000); AB_PAIRS=${AB_PAIRS:-1}; WARM=()
fi

for r in "${BENCH_RECORDS[@]}"; do
  step "bench_$r" "$LIMIT" ./run.sh bench "records/$r.py" "${BENCH[@]}" --outdir "$DIR/results"
done
# the frontier records: both clocks and the p-value are in their summaries; at --smoke's one epoch
# E1's curriculum is cut to one size
for r in "${FRONTIER_RECORDS[@]}"; do
  ONE=(); [[ $SMOKE == 1 && $r == e1_curriculum94 ]] && ONE=("--config.resolution=(24,)")
  step "bench_$r" "$LIMIT" ./run.sh bench "records/$r.py" "${BENCH[@]}" ${ONE[@]+"${ONE[@]}"} --outdir "$DIR/results"
done
# the hot-path A/B: the epoch-plan work's base commit against this tree, same device, alternating
# (base, head, base, head, ...: AB_PAIRS pairs), and the precision switches (float16 dynamic /
# static scale, bfloat16); ab_summary.md has the images/s ratios, compile seconds apart
AB_BASE="${AB_BASE:-f12c58e}"
if git rev-parse -q --verify "$AB_BASE^{commit}" > /dev/null 2>&1; then
  rm -rf "$DIR/ab_base" && mkdir -p "$DIR/ab_base" && git archive "$AB_BASE" records | tar -x -C "$DIR/ab_base"
  [[ $DRY == 1 ]] || git archive "$AB_BASE" | tar -x -C "$DIR/ab_base"
  for r in "${AB_RECORDS[@]}"; do
    for i in $(seq 1 "$AB_PAIRS"); do
      if [[ -f "$DIR/ab_base/records/$r.py" ]]; then
        step "ab_base${i}_$r" "$LIMIT" bash -c "cd '$DIR/ab_base' && ./run.sh bench records/$r.py ${BENCH[*]} --outdir '$DIR/ab/base$i'"
      else
        say "SKIP ab_base${i}_$r: records/$r.py is not in $AB_BASE"
      fi
      step "ab_head${i}_$r" "$LIMIT" ./run.sh bench "records/$r.py" "${BENCH[@]}" --outdir "$DIR/ab/head$i"
    done
  done
else
  say "SKIP ab: commit $AB_BASE is not in this checkout (AB_BASE=COMMIT to choose)"
fi
for r in "${PRECISION_RECORDS[@]}"; do
  for p in "${PRECISIONS[@]}"; do
    step "precision_${p}_$r" "$LIMIT" ./run.sh bench "records/$r.py" "${BENCH[@]}" "--config.precision=$p" \
      --outdir "$DIR/precision/$p"
  done
done
step ab_summary 30 "$PY" benchmarks/ab_summary.py "$DIR" --base "$AB_BASE" --out "$DIR/ab_summary.md"
step profile_airbench94_muon "$LIMIT" ./run.sh profile records/airbench94_muon.py "${PROFILE[@]}" --outdir "$DIR/profile"
if "$PY" -c "import torch, airbench" > /dev/null 2>&1; then
  step vs_airbench "$LIMIT" "$PY" benchmarks/vs_airbench.py --pairs "$VS_PAIRS" --data sample \
    --out "$DIR/results/vs_airbench.jsonl"
  step vs_airbench95 "$LIMIT" "$PY" benchmarks/vs_airbench.py --airbench 95 --pairs "$VS_PAIRS" --data sample \
    --out "$DIR/results/vs_airbench.jsonl"  # the package's train96 is another recipe than airbench96's: no pair
else
  say "SKIP vs_airbench: torch or airbench does not import here (pip install -e '.[vs-airbench]')"
fi
# the frontier records' PyTorch sources, each under its own clock beside our bench of it
# (benchmarks/vs_source.py): files carried to the machine, never committed (.sources/ is ignored)
for pair in "airbench94_muon=${SOURCE_AIRBENCH94_MUON:-.sources/airbench94_muon.py}" \
            "hiverge94=${SOURCE_HIVERGE94:-.sources/cifar10_speedrun.py}" \
            "e1_curriculum94=${SOURCE_FULCRUM:-.sources/cifar-10-speedrun}"; do
  if [[ -e "${pair#*=}" ]]; then
    step "vs_source_${pair%%=*}" "$LIMIT" "$PY" benchmarks/vs_source.py --source "$pair" --runs "$VS_RUNS" \
      --data sample --ours "$DIR/results" --workdir "$DIR/vs_source" --out "$DIR/results/vs_source.jsonl"
  else
    say "SKIP vs_source_${pair%%=*}: its source ${pair#*=} is not here"
  fi
done
for r in "${SLOW_RECORDS[@]}"; do
  step "bench_$r" "$LIMIT" ./run.sh bench "records/$r.py" "${SLOW[@]}" --outdir "$DIR/results"
done
for r in "${WARM_RECORDS[@]}"; do
  step "bench_$r" "$LIMIT" ./run.sh bench "records/$r.py" "${SLOW[@]}" "${WARM[@]}" --outdir "$DIR/results"
done
step precision_throughput "$LIMIT" "$PY" benchmarks/precision_throughput.py "${PRECISION[@]}"
step sweep_vmap "$LIMIT" "$PY" benchmarks/sweep_vmap.py "${VMAP[@]}"  # K trials as one program vs K in a row
step report 60 ./run.sh report "$DIR/results" --table "$DIR/records_table.md" --plot "$DIR/accuracy_vs_time.png"
say "done in $(( $(date +%s) - START )) s; steps: $(grep -cE '\] (ok|FAILED|TIMEOUT) ' "$LOG") run, \
$(grep -cE '\] (FAILED|TIMEOUT) ' "$LOG") failed or timed out, $(grep -c '\] SKIP ' "$LOG") skipped"
[[ -f "$DIR/records_table.md" ]] && cat "$DIR/records_table.md"
[[ -f "$DIR/ab_summary.md" ]] && cat "$DIR/ab_summary.md"
if [[ -n "${OUT:-}" && "$OUT" != "$DIR" ]]; then  # the device tool's return folder: few files, shallow
  mkdir -p "$OUT"
  cp "$LOG" "$OUT/session.log"
  for f in records_table.md ab_summary.md; do [[ -f "$DIR/$f" ]] && cp "$DIR/$f" "$OUT/"; done
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
