"""Tests for speedrun.measure: stats, mfu, bench and report.

References: statistics computed by hand (t quantile from a printed t-table: t(0.975, 3) = 3.182446,
t(0.975, 2) = 4.302653), datasheet numbers typed from NVIDIA's datasheets, and the hand FLOP count
of the tiny ResNet-9 below. The end-to-end part compiles one tiny record (ResNet-9 at width 1/16,
batch 64, 1 step per epoch, 2 epochs, on 64 real training images) once and trains three seeds,
counting XLA compilations with jax.monitoring: the second and third seeds must compile nothing.
"""

import json
import math
from pathlib import Path

import pytest

from speedrun import config
from speedrun.measure import bench, mfu, report, stats


# ------------------------------------------------------------------ statistics (hand-computed)

def test_mean_ci_hand_values():
    s = stats.mean_ci([0.93, 0.94, 0.95, 0.96])
    std = math.sqrt((0.015**2 + 0.005**2 + 0.005**2 + 0.015**2) / 3)  # 0.0129099
    half = 3.182446 * std / 2  # t(0.975, 3) · s / √4 = 0.0205425
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(0.945)
    assert s["std"] == pytest.approx(0.0129099, abs=1e-7) and s["std"] == pytest.approx(std)
    assert s["ci_half_width"] == pytest.approx(half, rel=1e-6)
    assert (s["ci_low"], s["ci_high"]) == (pytest.approx(0.945 - half, rel=1e-6), pytest.approx(0.945 + half, rel=1e-6))
    s3 = stats.mean_ci([1.0, 2.0, 6.0])  # mean 3, std sqrt((4+1+9)/2) = sqrt(7)
    assert s3["ci_half_width"] == pytest.approx(4.302653 * math.sqrt(7) / math.sqrt(3), rel=1e-6)
    one = stats.mean_ci([0.94])
    assert one["mean"] == 0.94 and one["std"] == 0.0 and one["ci_low"] is None


def test_mean_ci_of_accuracies_is_clipped_to_0_1():
    # [0.0, 0.0, 0.1]: mean 1/30, s = sqrt(((1/30)² + (1/30)² + (2/30)²) / 2) = sqrt(1/300) = 0.0577350,
    # half width t(0.975, 2) · s / √3 = 4.302653 · 0.0333333 = 0.1434218: the t-interval is
    # [-0.1100884, 0.1767551]; an accuracy cannot be below 0, so the lower bound is 0.
    low = stats.mean_ci([0.0, 0.0, 0.1], bounds=stats.ACCURACY_BOUNDS)
    assert low["ci_half_width"] == pytest.approx(0.1434218, rel=1e-6)  # the t-interval's, unclipped
    assert low["ci_low"] == 0.0 and low["ci_high"] == pytest.approx(1 / 30 + 0.1434218, rel=1e-6)
    # mirrored near 100%: [1.0, 1.0, 0.9] → [0.8232449, 1.1100884], clipped above to 1
    high = stats.mean_ci([1.0, 1.0, 0.9], bounds=stats.ACCURACY_BOUNDS)
    assert high["ci_high"] == 1.0 and high["ci_low"] == pytest.approx(29 / 30 - 0.1434218, rel=1e-6)
    assert stats.mean_ci([0.0, 0.0, 0.1])["ci_low"] == pytest.approx(-0.1100884, rel=1e-6)  # no bounds: none
    with pytest.raises(ValueError, match="bounds"):
        stats.mean_ci([0.5, 1.5], bounds=stats.ACCURACY_BOUNDS)  # a percentage passed as a fraction
    # the bench summary clips both accuracy intervals
    runs = [{"record": "r", "dataset": "d", "train_images": 1, "epochs": 1, "batch_size": 1, "precision": "float32",
             "width_mult": 1.0, "seed": i, "tta_acc": a, "acc": a, "train_time_s": 1.0, "time_to_target_s": None,
             "steps": 1, "train_flops": 1.0, "flops_per_image_forward": 1, "compiles": 0, "compile_time_s": 0.0}
            for i, a in enumerate([0.0, 0.0, 0.1])]
    summary = bench.summarize(runs, 0.94, 0.0)
    assert summary["tta_acc"]["ci_low"] == 0.0 and summary["acc"]["ci_low"] == 0.0


def test_share_median_and_errors():
    assert stats.share_at_least([0.93, 0.94, 0.95, 0.96], 0.94) == 0.75  # equality counts
    assert stats.median_min_max([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0}
    with pytest.raises(ValueError, match="no values"):
        stats.mean_ci([])
    with pytest.raises(ValueError, match="non-finite"):
        stats.median_min_max([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        stats.mean_ci([1.0, 2.0], confidence=1.5)


def test_time_to_target_first_epoch_at_target():
    h = [{"epoch": 1, "elapsed_s": 1.0, "test_acc": 0.80},
         {"epoch": 2, "elapsed_s": 2.0, "test_acc": 0.9405},
         {"epoch": 3, "elapsed_s": 3.5, "test_acc": 0.93, "tta_acc": 0.95}]
    assert stats.time_to_target(h, 0.94) == 2.0  # first epoch at target, not the best one
    assert stats.time_to_target(h, 0.945) == 3.5  # the last epoch counts with its TTA accuracy
    assert stats.time_to_target(h, 0.96) is None
    with pytest.raises(ValueError, match="not evaluated"):
        stats.time_to_target([{"epoch": 1, "elapsed_s": 1.0}, h[2]], 0.94)
    with pytest.raises(ValueError, match="fraction"):
        stats.time_to_target(h, 94.0)


# ------------------------------------------------------------------ bench helpers

def test_gpu_model_and_datasheet_peaks():
    assert mfu.gpu_model("NVIDIA H100 80GB HBM3") == "H100 SXM"
    assert mfu.gpu_model("NVIDIA H100 PCIe") == "H100 PCIe"
    assert mfu.gpu_model("NVIDIA H200") == "H200 SXM"
    assert mfu.gpu_model("NVIDIA A100-SXM4-40GB") == "A100"
    assert mfu.gpu_model("Tesla V100-SXM2-16GB") == "V100 SXM2"
    assert mfu.gpu_model("Tesla V100-PCIE-32GB") == "V100 PCIe"
    assert mfu.gpu_model("cpu") is None
    # NVIDIA datasheets: H100 SXM 1979 TFLOPS fp16 with sparsity -> 989.4 dense; A100 312 bf16 dense;
    # V100 SXM2 125 tensor TFLOPS fp16, no bfloat16
    assert mfu.datasheet_peak("NVIDIA H100 80GB HBM3", "float16") == pytest.approx(989.4e12)
    assert mfu.datasheet_peak("NVIDIA A100-SXM4-80GB", "bfloat16") == pytest.approx(312e12)
    assert mfu.datasheet_peak("Tesla V100-SXM2-16GB", "float16") == pytest.approx(125e12)
    assert mfu.datasheet_peak("Tesla V100-SXM2-16GB", "bfloat16") is None
    assert mfu.datasheet_peak("cpu (x) x1", "float32") is None


def test_tile_rows_and_target():
    import numpy as np

    x, y = np.arange(3 * 2).reshape(3, 2), np.array([0, 1, 2])
    tx, ty = bench.tile_rows(x, y, 7)
    assert ty.tolist() == [0, 1, 2, 0, 1, 2, 0] and tx[6].tolist() == [0, 1]
    with pytest.raises(ValueError, match="cannot tile"):
        bench.tile_rows(x, y, 2)
    import ml_collections

    cfg = ml_collections.ConfigDict({"name": "x", "target_acc": 0.94})
    assert bench.target_of(cfg) == 0.94 and bench.target_of(cfg, 0.5) == 0.5
    with pytest.raises(ValueError, match="target_acc"):
        bench.target_of(ml_collections.ConfigDict({"name": "y"}))
    assert config.load_record("94pct_26s").target_acc == 0.94


def fake_run(seed, tta, t, ttt):
    return {"record": "r", "dataset": "d", "train_images": 1000, "test_images": 100, "epochs": 2,
            "batch_size": 100, "precision": "float16", "width_mult": 1.0, "devices": 1, "device": "dev",
            "seed": seed, "tta_acc": tta, "acc": tta - 0.01, "train_time_s": t, "steps": 10,
            "compile_time_s": 5.0, "flops_per_image_forward": 1e9, "train_flops": 3e12,
            "time_to_target_s": ttt, "compiles": 0}


def test_summarize_hand_values():
    runs = [fake_run(0, 0.95, 2.0, 1.5), fake_run(1, 0.93, 4.0, None), fake_run(2, 0.94, 3.0, 2.5)]
    s = bench.summarize(runs, 0.94, 5.0, {"flops_per_s": 4e12}, "NVIDIA A100-SXM4-40GB")
    assert s["tta_acc"]["mean"] == pytest.approx(0.94)
    assert s["tta_acc"]["ci_half_width"] == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-6)
    assert s["share_at_target"] == pytest.approx(2 / 3)
    assert s["train_time_s"] == {"median": 3.0, "min": 2.0, "max": 4.0}
    assert s["time_to_target_s"] == {"median": 2.0, "min": 1.5, "max": 2.5, "reached": 2}
    assert s["images_per_s"] == pytest.approx(10 * 100 / 3.0)
    assert s["achieved_flops_per_s"] == pytest.approx(1e12)  # 3e12 FLOPs / 3 s
    assert s["mfu_vs_matmul"] == pytest.approx(0.25)
    assert s["mfu_vs_peak"] == pytest.approx(1e12 / 312e12) and s["peak_gpu"] == "A100"
    assert s["compiles_after_first"] == 0
    text = bench.format_summary({**s, "seeds": [0, 1, 2]})
    assert next(ln for ln in text.splitlines() if ln.startswith("MFU vs measured matmul")).endswith(" 25.0%")
    with pytest.raises(ValueError, match="differ"):
        bench.summarize([runs[0], {**runs[1], "epochs": 3}], 0.94, 5.0)


def test_matmul_rate_is_positive_and_checked():
    import jax.numpy as jnp

    m = mfu.matmul_flops_per_s(jnp.float32, n=128, calls=2, trials=1)
    assert m["flops_per_s"] > 0 and m["n"] == 128 and m["dtype"] == "float32"
    with pytest.raises(ValueError, match="positive"):
        mfu.matmul_flops_per_s(jnp.float32, n=128, calls=0)


# ------------------------------------------------------------------ end to end (one compile)

TINY_FORWARD_MACS = (32 * 32 * 27 * 9 * 3      # whitening 3x3 3->27 at 32x32
                     + 32 * 32 * 4 * 27        # prep 1x1 27->4
                     + 32 * 32 * 8 * 9 * 4     # layer1 4->8 at 32x32
                     + 2 * 16 * 16 * 8 * 9 * 8   # layer1 residual convs at 16x16
                     + 16 * 16 * 16 * 9 * 8    # layer2 8->16 at 16x16
                     + 8 * 8 * 32 * 9 * 16     # layer3 16->32 at 8x8
                     + 2 * 4 * 4 * 32 * 9 * 32   # layer3 residual convs at 4x4
                     + 32 * 10)                # linear


@pytest.fixture(scope="module")
def tiny_bench(record, sample):
    # widths 4/8/16/32, 1 step of 64 per epoch, 2 epochs
    cfg = record("94pct_26s", model__width_mult=0.0625, batch_size=64, epochs=2, eval_batch_size=256,
                 whitening_images=64)
    xtr, ytr, xte, yte = sample
    return bench.run(cfg, 3, target=0.12, arrays=(xtr[:64], ytr[:64], xte[:256], yte[:256]), log=None)


@pytest.mark.slow  # a real training run: CI's slow pass
def test_new_seeds_do_not_recompile(tiny_bench):
    runs, summary = tiny_bench
    assert [r["seed"] for r in runs] == [0, 1, 2]
    assert runs[1]["compiles"] == 0 and runs[2]["compiles"] == 0
    assert summary["compiles_after_first"] == 0
    assert len({r["tta_acc"] for r in runs} | {runs[0]["final_train_loss"], runs[1]["final_train_loss"]}) > 1


def test_compile_counter_sees_a_new_compilation():
    import jax
    import jax.numpy as jnp

    with mfu.CompileCounter() as c:
        jax.jit(lambda x: x * 3 + 1)(jnp.ones((7, 5)))  # a new function: one compilation
    assert c.count >= 1


@pytest.mark.slow  # a real training run: CI's slow pass
def test_bench_flops_and_summary(tiny_bench):
    runs, s = tiny_bench
    r = runs[0]
    assert r["flops_per_image_forward"] == 2 * TINY_FORWARD_MACS == 4_663_936
    assert r["train_flops"] == 3 * 2 * TINY_FORWARD_MACS * (2 * 1 * 64)  # 2 epochs x 1 step x 64
    assert s["train_flops"] == r["train_flops"]
    assert s["achieved_flops_per_s"] == pytest.approx(r["train_flops"] / s["train_time_s"]["median"])
    assert s["mfu_vs_matmul"] == pytest.approx(s["achieved_flops_per_s"] / s["matmul_flops_per_s"])
    # the datasheet peak of this backend's device in the run's policy: None on CPUs (no datasheet),
    # known on the GPUs of mfu.PEAK_TFLOPS (e.g. an H100 SXM in float16: 989.4 TFLOP/s)
    import jax

    kind = jax.devices()[0].device_kind  # what bench.run passes to summarize
    peak = mfu.datasheet_peak(kind, r["precision"])
    assert s["peak_flops_per_s"] == peak
    if peak is None:
        assert s["mfu_vs_peak"] is None and s["peak_gpu"] is None
    else:
        assert s["mfu_vs_peak"] == pytest.approx(s["achieved_flops_per_s"] / peak)
        assert s["peak_gpu"] == mfu.gpu_model(kind)
    for run in runs:  # time to target read from the history by hand
        hit = next((h["elapsed_s"] for h in run["history"]
                    if (h.get("tta_acc") if h.get("tta_acc") is not None else h["test_acc"]) >= 0.12), None)
        assert run["time_to_target_s"] == hit
    # what reproduces it: the code's git state (the commit of this checkout, from git itself) and
    # the command, which a library call does not have
    import subprocess

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(bench.__file__).parent, capture_output=True,
                          text=True).stdout.strip()
    assert s["commit"].startswith(head + " (") if head else s["commit"] == "not a git checkout"
    assert s["command"] is None
    json.dumps(s)  # JSON-ready


@pytest.mark.slow  # a real training run: CI's slow pass
def test_report_table_and_plot(tiny_bench, tmp_path):
    pytest.importorskip("matplotlib")
    runs, s = tiny_bench
    path = bench.write_jsonl(tmp_path / "res" / "a.jsonl", [{"kind": "run", **r} for r in runs] + [s])
    assert len(path.read_text().splitlines()) == 4
    out = report.run(tmp_path / "res", log=None)
    assert (out["runs"], out["summaries"]) == (3, 1)
    table = (tmp_path / "res" / "records_table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| 94pct_26s |"))
    acc = s["tta_acc"]
    assert f"{acc['mean'] * 100:.2f} ± {acc['std'] * 100:.2f}" in row
    assert "| airbench94_muon | 94.01 | 2.59 | 1× A100 |" in table  # published figures
    png = (tmp_path / "res" / "accuracy_vs_time.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    curves = (tmp_path / "res" / "training_curves.png").read_bytes()
    assert out["curves_path"].name == "training_curves.png" and curves[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_separates_full_cifar10_from_subset_results():
    full = {"dataset": "cifar10", "tiled_from": None}
    assert report.is_full_cifar10(full)
    assert not report.is_full_cifar10({"dataset": "cifar10", "tiled_from": 5170})  # tiled: not CIFAR-10
    assert not report.is_full_cifar10({"dataset": "cifar10-subset"})


def test_report_errors(tmp_path):
    with pytest.raises(ValueError, match="nothing"):
        report.run(tmp_path / "nothing", log=None)
    (tmp_path / "bad.jsonl").write_text('{"kind": "other"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        report.load_results(tmp_path)
