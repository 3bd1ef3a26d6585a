#!/usr/bin/env bash
# CPU A/B of airbench94 images/s: f12c58e (before the hot-path work) against HEAD, same process env,
# alternating, full width on the bundled sample, 2 epochs, 1 seed, no per-epoch eval.
# BASE: `git archive f12c58e | tar -x -C BASE`; HEAD: this checkout; OUT: a folder for the bench files.
BASE=${BASE:?}; HEAD=${HEAD:-$(git rev-parse --show-toplevel)}; OUT=${OUT:-/tmp/ab/out}
PY="$HEAD"/.venv/bin/python
run() {  # label dir batch fraction
  local label=$1 dir=$2 b=$3 f=$4
  out=$(cd "$dir" && PYTHONPATH="$dir" SPEEDRUN_PROGRESS=0 timeout 900 $PY -m speedrun.cli bench records/airbench94.py --runs 1 \
     --no_epoch_eval --cache_dir off --outdir "$OUT"/$label --config.data.path=sample \
     --config.epochs=2 --config.batch_size=$b --config.last_epoch_fraction=$f 2>&1 | tail -40)
  echo "== $label rc=$?"; echo "$out" | grep -iE "images/s|train_time|compile" | tail -6
}
for b in 1024 256; do
  run base_b${b}_f1 "$BASE" $b 1.0
  run head_b${b}_f1 "$HEAD" $b 1.0
done
run head_b256_f0.9 "$HEAD" 256 0.9
