"""K runs of a sweep one after another vs the same K runs as one vmapped program (``--vmap K``).

    python benchmarks/sweep_vmap.py [--record airbench94_muon] [--k 8] [--data sample]
                                    [--tile_to N] [--scale smoke|record] [--key optimizer.muon_lr]

From one process: K trials of one record that differ only in a traced hyperparameter (``--key``,
default the record's first of ``optimizer.lr``, ``optimizer.muon_lr``, ``label_smoothing``; values
from 0.5x to 1.5x the record's), seed 0 each, trained (1) sequentially by one compiled
:class:`speedrun.train.experiment.Experiment` and (2) all at once by one
:class:`speedrun.sweep.vmapped.VmappedExperiment` on one device. Both clocks are the runs' own
``train_time_s`` (whitening, epochs, final evaluation; what a record's timer covers); compilation is
done first and reported separately, never inside the timings. Printed: both times, the ratio
(sequential / vmapped: the throughput gain of ``--vmap K``), the compile times, the largest
difference of the final training losses, and a JSON line.

``--scale smoke`` (default) shrinks the record the one way (:func:`speedrun.config.smoke`); ``record``
runs it as pinned (a GPU). ``--tile_to N`` repeats the training rows to ``N`` images (e.g. 50000 to
time a full-size epoch on a GPU with only the bundled sample). The same command runs on a CPU and
on a GPU; the output says which backend it measured — a CPU figure is not a GPU figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEYS = ("optimizer.lr", "optimizer.muon_lr", "label_smoothing")


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run both arms, print the comparison; exit status 0."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--record", default="airbench94_muon")
    p.add_argument("--k", type=int, default=8, help="runs per vmapped program (and sequential runs)")
    p.add_argument("--data", default="sample", help="data path (config.data.path): 'sample' or a CIFAR-10 folder")
    p.add_argument("--tile_to", type=int, default=0, help="repeat the training rows to this many images (0: as is)")
    p.add_argument("--scale", choices=("smoke", "record"), default="smoke")
    p.add_argument("--key", default=None, help="the traced key that differs between the K runs")
    args = p.parse_args(argv)

    from speedrun.system import env

    env.configure()
    import jax
    import numpy as np

    from speedrun import config as config_lib
    from speedrun.data import load_cifar10
    from speedrun.sweep.hparams import traced_keys
    from speedrun.sweep.vmapped import VmappedExperiment
    from speedrun.train.experiment import Experiment

    x, y, xt, yt = load_cifar10(args.data)
    if args.tile_to and args.tile_to > len(x):
        reps = -(-args.tile_to // len(x))
        x, y = np.tile(x, (reps, 1, 1, 1))[: args.tile_to], np.tile(y, reps)[: args.tile_to]
    config = config_lib.load_record(args.record)
    if args.scale == "smoke":
        config = config_lib.smoke(config, n_train=len(x))
    key = args.key or next(k for k in KEYS if k in traced_keys(config))
    base = config_lib.get(config, key)
    values = [float(base * f) for f in np.linspace(0.5, 1.5, args.k)]
    arrays = (x, y, xt, yt)
    backend = jax.default_backend()
    print(f"# {args.record} ({args.scale}), {len(x)} training images, K={args.k} runs differing in {key} "
          f"({values[0]:.4g} .. {values[-1]:.4g}), backend {backend}: {jax.devices()[0].device_kind}")

    seq = Experiment(config, arrays, mesh=_one_device_mesh(), hparams=[key])
    vm = VmappedExperiment(config, arrays, args.k, hparams=[key])
    print(f"compile: sequential program {seq.compile_time_s:.1f} s, vmapped program {vm.compile_time_s:.1f} s "
          "(excluded from the timings)")
    t0 = time.perf_counter()
    seq_results = [seq.run(0, per_epoch_eval=False, hp={key: v}) for v in values]
    seq_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    vm_results = vm.run_group([0] * args.k, [{key: v} for v in values])
    vm_wall = time.perf_counter() - t0
    errors = [r["error"] for r in seq_results + vm_results if "error" in r]
    t_seq = sum(r.get("train_time_s", 0.0) for r in seq_results)
    t_vm = max(r.get("train_time_s", 0.0) for r in vm_results)
    loss_diff = max(abs(a["final_train_loss"] - b["final_train_loss"]) for a, b in zip(seq_results, vm_results)
                    if "error" not in a and "error" not in b)
    ratio = t_seq / t_vm
    where = "a CPU figure (not a GPU figure)" if backend == "cpu" else f"a {backend} figure"
    print(f"sequential: {args.k} runs in {t_seq:.2f} s ({t_seq / args.k:.2f} s each; wall {seq_wall:.2f} s)")
    print(f"vmapped:    {args.k} runs in {t_vm:.2f} s (one program; wall {vm_wall:.2f} s)")
    print(f"ratio sequential / vmapped = {ratio:.2f}x throughput with --vmap {args.k} — {where}")
    print(f"largest final-loss difference between the arms: {loss_diff:.2e}"
          + (f"; errors: {errors}" if errors else ""))
    print(json.dumps({"record": args.record, "scale": args.scale, "k": args.k, "key": key, "backend": backend,
                      "device": jax.devices()[0].device_kind, "train_images": len(x),
                      "sequential_s": round(t_seq, 3), "vmapped_s": round(t_vm, 3), "ratio": round(ratio, 3),
                      "compile_sequential_s": round(seq.compile_time_s, 2),
                      "compile_vmapped_s": round(vm.compile_time_s, 2), "max_loss_diff": loss_diff}))
    return 0


def _one_device_mesh():
    """Both arms on one device: the comparison is K runs on one chip, one after another or at once."""
    import jax

    from speedrun.system import parallel

    return parallel.make_mesh(jax.devices()[:1])


if __name__ == "__main__":
    sys.exit(main())
