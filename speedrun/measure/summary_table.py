"""The text table of a bench summary (:func:`speedrun.measure.bench.summarize`): :func:`format_summary`."""

from __future__ import annotations

from typing import Any


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    return "-" if v is None else format(v * scale, spec)


def format_summary(s: dict[str, Any]) -> str:
    """A two-column text table of a :func:`summarize` result (what each figure is and its unit)."""
    acc, ttt, t = s["tta_acc"], s["time_to_target_s"], s["train_time_s"]
    ci = ("-" if acc["ci_low"] is None else f"[{acc['ci_low'] * 100:.2f}, {acc['ci_high'] * 100:.2f}]")
    data = f"{s['dataset']} ({s['train_images']} train" + (
        f", tiled from {s['tiled_from']}" if s.get("tiled_from") else "") + f", {s['test_images']} test)"
    rows = [
        ("record", f"{s['record']}  ({s['epochs']} epochs, batch {s['batch_size']}, {s['precision']}, "
                   f"width {s['width_mult']})"),
        ("data", data),
        ("device", f"{s['device']}"),
        ("runs (seeds)", f"{s['runs']} ({s['seeds'][0]}..{s['seeds'][-1]})"),
        ("tta_acc mean ± std (%)", f"{acc['mean'] * 100:.2f} ± {acc['std'] * 100:.2f}"),
        ("tta_acc 95% CI (%, t)", ci),
        (f"share ≥ target {s['target_acc']:.4f}", f"{s['share_at_target'] * 100:.0f}%"),
        (f"t-test tta_acc > {s['target_acc']:.4f}: p", _fmt((s.get("tta_t_test") or {}).get("p_value"), ".3g")),
        ("train time median [min, max] (s)", f"{t['median']:.3f} [{t['min']:.3f}, {t['max']:.3f}]"),
        ("fulcrum time (no eval) median (s)", _fmt((s.get("fulcrum_time_s") or {}).get("median"), ".3f")),
        ("time to target median (s)", "-" if ttt is None else
         f"{ttt['median']:.3f} [{ttt['min']:.3f}, {ttt['max']:.3f}] ({ttt['reached']}/{s['runs']} reached)"),
        ("compile time (s, once)", f"{s['compile_time_s']:.2f}"),
        ("images/s", f"{s['images_per_s']:.0f}"),
        ("forward GFLOPs per image", f"{s['flops_per_image_forward'] / 1e9:.4f}"),
        ("training PFLOPs per run", f"{s['train_flops'] / 1e15:.4f}"),
        ("achieved TFLOP/s", f"{s['achieved_flops_per_s'] / 1e12:.3f}"),
        ("dense matmul TFLOP/s (measured)", _fmt(s["matmul_flops_per_s"], ".3f", 1e-12)),
        ("MFU vs measured matmul", _fmt(s["mfu_vs_matmul"], ".1%")),
        ("MFU vs datasheet peak", "-" if s["mfu_vs_peak"] is None else
         f"{s['mfu_vs_peak']:.1%} of {s['peak_flops_per_s'] / 1e12:.1f} TFLOP/s ({s['peak_gpu']})"),
        ("compilations after run 1", f"{s['compiles_after_first']}"),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(w)}  {v}" for k, v in rows)
