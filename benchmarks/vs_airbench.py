"""Side by side with the reference: airbench94 (PyPI ``airbench`` 0.1.8) vs ``records/airbench94.py``.

    pip install -e '.[vs-airbench]'   # airbench 0.1.8, torch, torchvision (a CUDA machine has torch)
    python benchmarks/vs_airbench.py [--pairs 5] [--data PATH] [--out FILE.jsonl]

On one machine with a CUDA GPU, in one process, this times Keller Jordan's own airbench94 (the
package, imported and called as it is: ``airbench.train94``; nothing of it is copied here) and this
project's ``records/airbench94.py`` (:class:`speedrun.train.experiment.Experiment`), alternating A B A B so
that drifts in clock speed or temperature hit both alike, and prints every pair's time ratio and
their median.

Same work on both sides: the same training images (the full 50000 × 32 × 32 × 3 CIFAR-10 training
set; where only the bundled real subset is present its rows are tiled to 50000 — and the test rows to
10000 — for timing, which is said in the output, and the accuracies are then not CIFAR-10 results),
the same recipe (airbench94: 9.9 epochs at batch 1024, TTA level 2). Same clock on both sides:
airbench's own timer (CUDA events around the whitening init, each training epoch and the final TTA
evaluation; its per-epoch evaluation excluded), read from the table it prints, and this project's
``train_time_s`` (whitening, epochs and final TTA evaluation; per-epoch evaluation and compilation
excluded). Compilation and warm-up are excluded on both sides: one untimed run of each first
(cuDNN autotuning for airbench, which sets ``cudnn.benchmark``; XLA compilation for this project).

Without a CUDA GPU (or without torch, torchvision or airbench) it says what is missing and exits 0.
On a CPU-only machine there is nothing to compare with: airbench 0.1.8 is CUDA-only (it moves its
data and network to the GPU and times with CUDA events), no PyTorch CPU version of it exists, and
this project does not port anyone's code.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

# JAX would otherwise reserve 75% of the GPU memory at start-up and leave PyTorch too little.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

AIRBENCH_VERSION = "0.1.8"
FULL_TRAIN, FULL_TEST = 50000, 10000
CPU_MESSAGE = ("vs_airbench: no CUDA GPU here. On a CPU-only machine there is no reference to time: airbench "
               f"{AIRBENCH_VERSION} is CUDA-only (data and network on the GPU, CUDA-event timing), no PyTorch "
               "CPU version of it exists, and this project does not port anyone's code. Run this script on "
               "a CUDA machine (benchmarks/README.md).")


def environment() -> tuple[bool, list[str]]:
    """Whether the comparison can run here, and the reasons it cannot (missing packages, no CUDA
    device for torch, JAX without a GPU backend, an airbench version other than 0.1.8)."""
    missing = []
    for mod in ("torch", "torchvision", "airbench"):
        try:
            importlib.import_module(mod)
        except Exception as err:  # noqa: BLE001 - airbench imports torchvision at import time
            missing.append(f"{mod} not importable ({type(err).__name__}: {err})")
    if missing:
        return False, missing + ["install them with: pip install -e '.[vs-airbench]' (on a CUDA machine)"]
    import torch
    from importlib import metadata

    reasons = []
    if not torch.cuda.is_available():
        reasons.append(f"torch {torch.__version__} sees no CUDA device")
    version = metadata.version("airbench")
    if version != AIRBENCH_VERSION:
        reasons.append(f"airbench {version} installed; this comparison is pinned to {AIRBENCH_VERSION}")
    import jax

    if jax.default_backend() != "gpu":
        reasons.append(f"JAX runs on {jax.default_backend()!r}, not a GPU (install jax[cuda12])")
    return not reasons, reasons


def parse_airbench_eval(output: str) -> dict[str, float]:
    """Read the final row of the table airbench's ``train94(verbose=True)`` prints: the row whose
    ``epoch`` cell is ``eval``, with cells ``run | epoch | train_loss | train_acc | val_acc |
    tta_val_acc | total_time_seconds`` separated by ``|``.

    Returns:
      ``{"tta_acc": fraction, "time_s": seconds}`` (airbench's own timer).

    Raises:
      ValueError: no such row (the message shows the output's last lines).
    """
    for line in reversed(output.splitlines()):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[1] == "eval":
            return {"tta_acc": float(cells[5]), "time_s": float(cells[6])}
    tail = "\n".join(output.splitlines()[-5:])
    raise ValueError(f"no 'eval' row in airbench's output; its last lines:\n{tail}")


def full_shape_arrays(arrays: tuple) -> tuple[tuple, str | None]:
    """``arrays`` tiled to 50000 training and 10000 test rows if smaller; returns them and a note
    saying what was tiled (``None`` when nothing was)."""
    from speedrun.measure.bench import tile_rows

    x_train, y_train, x_test, y_test = arrays
    note = None
    if len(x_train) < FULL_TRAIN or len(x_test) < FULL_TEST:
        note = (f"only {len(x_train)} training / {len(x_test)} test images present: rows tiled to "
                f"{FULL_TRAIN} / {FULL_TEST} for timing; accuracies are not CIFAR-10 results")
        if len(x_train) < FULL_TRAIN:
            x_train, y_train = tile_rows(x_train, y_train, FULL_TRAIN)
        if len(x_test) < FULL_TEST:
            x_test, y_test = tile_rows(x_test, y_test, FULL_TEST)
    return (x_train, y_train, x_test, y_test), note


def write_cifar_pt(arrays: tuple, folder: Path) -> None:
    """Write ``(x_train, y_train, x_test, y_test)`` (``(N, 32, 32, 3) uint8`` images, integer labels)
    as ``folder/train.pt`` and ``folder/test.pt``: ``{"images", "labels" (int64), "classes"}``, the
    files airbench's ``CifarLoader`` (and the loaders of the scripts derived from it) cache CIFAR-10 to
    and read back. Needs torch."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for name, (x, y) in (("train.pt", arrays[:2]), ("test.pt", arrays[2:])):
        torch.save({"images": torch.from_numpy(x), "labels": torch.from_numpy(y.astype("int64")),
                    "classes": classes}, folder / name)


#: the package's trainers that run the recipe of a record here: ``--airbench N`` -> (trainer, record).
#: Its ``train95`` is ``legacy/airbench95.py``'s recipe; its ``train96`` is not ``legacy/airbench96.py``'s
#: (40 epochs, widths 128/512/512, wd 0.0153, BN momentum 0.6, the 0.23/0.07 triangle), so it has no pair.
REFERENCES = {94: ("train94", "airbench94.py"), 95: ("train95", "airbench95.py")}


class Airbench:
    """airbench94 (or ``train{n}``, :data:`REFERENCES`) from the PyPI package, on data written
    where its loader looks for it (``{dir}/cifar10/{train,test}.pt``, the layout
    ``airbench.CifarLoader`` caches to)."""

    def __init__(self, arrays: tuple, workdir: str, n: int = 94):
        import airbench

        lib = importlib.import_module(f"airbench.lib_airbench{n}")  # that trainer's hyp
        self.airbench, self.workdir, self.train = airbench, workdir, getattr(airbench, REFERENCES[n][0])
        write_cifar_pt(arrays, Path(workdir) / "cifar10")
        hyp = lib.hyp
        with contextlib.chdir(workdir):
            self.loader = airbench.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"],
                                               aug=hyp["aug"], altflip=True)

    def run(self, run_index: int) -> dict[str, float]:
        """One training by the package's trainer (``train94`` or ``train95``, its defaults) on this
        loader; returns airbench's own
        ``{"tta_acc", "time_s"}`` (:func:`parse_airbench_eval`)."""
        out = io.StringIO()
        with contextlib.chdir(self.workdir), contextlib.redirect_stdout(out):
            self.train(self.loader, run=run_index, verbose=True)
        return parse_airbench_eval(out.getvalue())


def compare(pairs: int, data_path: str | None, record: str, n: int = 94) -> dict[str, Any]:
    """Alternate airbench (A) and this project's record (B) ``pairs`` times after one untimed run of
    each; returns per-pair times, accuracies and ratios (B / A) and the median ratio."""
    import jax

    from speedrun import config as config_lib, data
    from speedrun.measure import runlog
    from speedrun.train import Experiment

    arrays, note = full_shape_arrays(data.load_cifar10(data_path))
    if note:
        print(f"# {note}")
    cfg = config_lib.load_record(record)
    exp = Experiment(cfg, arrays)
    print(f"# {cfg.name}: compiled in {exp.compile_time_s:.1f} s (excluded)")
    with tempfile.TemporaryDirectory() as tmp:
        ab = Airbench(arrays, tmp, n)
        ab.run(0)  # warm-up: cuDNN autotuning
        exp.run(0, per_epoch_eval=False)  # warm-up: first-call costs
        rows = []
        for i in range(pairs):
            a = ab.run(i + 1)
            b = exp.run(i + 1, per_epoch_eval=False)
            row = {"pair": i + 1, "airbench_s": a["time_s"], "speedrun_s": b["train_time_s"],
                   "ratio": b["train_time_s"] / a["time_s"], "airbench_tta_acc": a["tta_acc"],
                   "speedrun_tta_acc": b["tta_acc"]}
            rows.append(row)
            print(f"pair {i + 1}: airbench {a['time_s']:.3f} s ({a['tta_acc']:.4f})  speedrun "
                  f"{b['train_time_s']:.3f} s ({b['tta_acc']:.4f})  ratio speedrun/airbench {row['ratio']:.3f}")
    import torch

    return {"kind": "vs_airbench", "record": cfg.name, "trainer": REFERENCES[n][0], "pairs": rows,
            "median_ratio": statistics.median(r["ratio"] for r in rows),
            "data_note": note, "device": runlog.device_description(),
            "torch_device": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "airbench": AIRBENCH_VERSION, "jax": jax.__version__,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring); returns the exit status (0 also when the machine
    cannot run the comparison)."""
    from speedrun.system import env

    env.configure()  # XLA flags before JAX starts (speedrun.system.env)
    p = argparse.ArgumentParser(description="Time airbench94 (PyPI airbench 0.1.8) against records/airbench94.py.")
    p.add_argument("--pairs", type=int, default=5, help="A B pairs after the warm-up (default 5)")
    p.add_argument("--data", default=None, help="CIFAR-10 location (speedrun.data.load_cifar10; default the cache)")
    p.add_argument("--airbench", type=int, choices=sorted(REFERENCES), default=94,
                   help="the package's trainer: 94 (train94) or 95 (train95, with records/airbench95.py)")
    p.add_argument("--record", default=None, help="default: the record of --airbench's recipe")
    p.add_argument("--out", help="append the result as one JSON line to this file")
    args = p.parse_args(argv)
    if args.pairs < 1:
        p.error("--pairs must be >= 1")
    ok, reasons = environment()
    if not ok:
        print(CPU_MESSAGE)
        for r in reasons:
            print(f"  - {r}")
        return 0
    result = compare(args.pairs, args.data, args.record or str(ROOT / "records" / REFERENCES[args.airbench][1]),
                     args.airbench)
    print(f"median ratio speedrun/airbench over {args.pairs} pairs: {result['median_ratio']:.3f} "
          f"(below 1: this project is faster) on {result['torch_device']}")
    print(json.dumps(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
