"""Training throughput of one record under the float32, bfloat16 and float16 policies, one table.

    # on a GPU (the README's precision table): full-size epochs, the real subset tiled to 50000 rows
    python benchmarks/precision_throughput.py --record=records/94pct_26s.py --data=sample --tile_to=50000

    # CPU smoke run at small scale (a few minutes on 2 cores)
    python benchmarks/precision_throughput.py --data=sample --train_images=1024 --runs=1 \
        --set model.width_mult=0.0625 --set epochs=1 --set batch_size=256 --set whitening.num_images=1024

For each policy the record is compiled once and trained ``--runs`` seeds by
:func:`speedrun.bench.bench` (per-epoch evaluation off), which also times a dense matmul in the
policy's compute dtype in the same process. Printed per policy: median train images/s (training
images over the timed seconds: whitening + epochs + final TTA evaluation, compilation excluded),
median train time (s), compile time (s), the matmul's TFLOP/s and its size, mean TTA accuracy, the
device and device count. ``--tile_to`` repeats the training rows (timing only: the accuracy is then
not a CIFAR-10 figure and is labelled so). Exit status 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

POLICIES = ("float32", "bfloat16", "float16")


def main(argv: list[str] | None = None) -> list[dict]:
    """Parse the command line, run the three policies, print the table and one JSON line each."""
    from speedrun.system import env

    env.configure()  # XLA flags before JAX starts (speedrun.system.env)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", default=str(ROOT / "records" / "94pct_26s.py"))
    ap.add_argument("--data", default=None, help="config.data.path (e.g. 'sample'); default the record's")
    ap.add_argument("--tile_to", type=int, default=None, help="tile the training rows to this count")
    ap.add_argument("--train_images", type=int, default=None, help="use only the first N training images")
    ap.add_argument("--runs", type=int, default=2, help="seeds per policy (default 2)")
    ap.add_argument("--precisions", default=",".join(POLICIES))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = ap.parse_args(argv)

    from speedrun import config as config_lib, data
    from speedrun.measure import bench

    rows = []
    for name in args.precisions.split(","):
        config = config_lib.load_record(args.record, args.set)
        if args.data is not None:
            config.data.path = args.data
        config.precision = name
        arrays = data.load_cifar10(config.data.path)
        if args.train_images:
            arrays = (arrays[0][: args.train_images], arrays[1][: args.train_images]) + tuple(arrays[2:])
        _, s = bench.run(config, args.runs, per_epoch_eval=False, tile_to=args.tile_to, arrays=arrays,
                           log=None)
        mm = s["matmul"]
        rows.append({"precision": name, "images_per_s": s["images_per_s"],
                     "train_time_s": s["train_time_s"]["median"], "compile_time_s": s["compile_time_s"],
                     "matmul_tflops": mm["flops_per_s"] / 1e12, "matmul_n": mm["n"],
                     "tta_acc": s["tta_acc"]["mean"], "train_images": s["train_images"],
                     "tiled_from": s.get("tiled_from"), "devices": s["devices"], "device": s["device"]})
    print("| precision | train images/s | train time (s) | compile (s) | matmul TFLOP/s (n) | tta_acc |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['precision']} | {r['images_per_s']:.0f} | {r['train_time_s']:.2f} | "
              f"{r['compile_time_s']:.1f} | {r['matmul_tflops']:.2f} ({r['matmul_n']}) | {r['tta_acc']:.4f} |")
    first = rows[0]
    tiled = f", tiled from {first['tiled_from']}" if first["tiled_from"] else ""
    print(f"# {first['device']}; {first['train_images']} training images{tiled}; "
          f"{args.runs} run(s) per policy; accuracy on tiled data is not a CIFAR-10 figure")
    for r in rows:
        print(json.dumps(r))
    return rows


if __name__ == "__main__":
    main()
