"""``./run.sh profile`` (speedrun.measure.profile, speedrun.measure.profile_command): the kernel
categories on hand-written GPU and CPU names, the HLO opcode map, self times, and one traced smoke
epoch on the CPU whose table adds up."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from speedrun.errors import ConfigError
from speedrun.measure import profile
from speedrun.measure.profile import Event, categorize
from speedrun.measure.profile_command import training_rows

ROOT = Path(__file__).resolve().parents[1]

GPU_NAMES = [  # kernel names as CUPTI reports them on NVIDIA GPUs (cuDNN, cuBLAS, CUTLASS, XLA fusions)
    ("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "convolution"),
    ("sm80_xmma_dgrad_implicit_gemm_indexed_f16f16_f16f32_f32_nhwckrsc_nchw", "convolution"),
    ("sm80_xmma_wgrad_implicit_gemm_f16f16_f32f32_f32_nhwckrsc_nhwc", "convolution"),
    ("void cudnn::cnn::conv2d_grouped_direct_kernel<float>", "convolution"),
    ("void cudnn::engines_precompiled::convertTensor_kernel<float, __half>", "copies/transposes"),
    ("void cudnn::ops::nchwToNhwcKernel<__half, __half, float, false, true>", "copies/transposes"),
    ("ampere_sgemm_128x64_nn", "matmul"),
    ("cutlass_80_tensorop_s1688gemm_128x128_32x3_nn_align4", "matmul"),
    ("gemm_fusion_dot_12", "matmul"),
    ("input_reduce_fusion_3", "reduction"),
    ("loop_reduce_fusion_1", "reduction"),
    ("input_scatter_fusion_2", "scatter/gather"),
    ("loop_gather_fusion", "scatter/gather"),
    ("loop_select_and_scatter_fusion", "scatter/gather"),
    ("loop_add_fusion_7", "elementwise"),
    ("loop_convert_fusion_5", "elementwise"),  # convert is not a convolution
    ("loop_fusion_3", "elementwise"),
    ("loop_transpose_fusion", "copies/transposes"),
    ("copy_fusion_2", "copies/transposes"),
    ("MemcpyD2D", "copies/transposes"),
    ("Memset", "copies/transposes"),
    ("ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "other"),
]
CPU_NAMES = [  # XLA:CPU thunk names (jax 0.10.2 traces): HLO instruction names
    ("convolution.3", "convolution"),
    ("conv_general_dilated.2", "convolution"),
    ("dot.4", "matmul"),
    ("select_reduce_fusion.3", "reduction"),
    ("slice_reduce_fusion", "reduction"),
    ("wrapped_reduce-window.2", "reduction"),
    ("bitcast_gather_fusion", "scatter/gather"),
    ("select-and-scatter.1", "scatter/gather"),
    ("broadcast_add_fusion.12", "elementwise"),
    ("xor_xor_fusion", "elementwise"),
    ("convert_power_fusion", "elementwise"),
    ("transpose_copy_fusion.4", "copies/transposes"),
    ("copy.1284", "copies/transposes"),
    ("slice_bitcast_fusion.11", "copies/transposes"),
    ("wrapped_broadcast.3", "copies/transposes"),
    ("all-reduce.1", "other"),
    ("while.2", "other"),
    ("sort", "other"),
]


@pytest.mark.parametrize("name,category", GPU_NAMES + CPU_NAMES)
def test_kernel_names_are_categorised(name, category):
    assert categorize(name) == category


def test_the_opcodes_inside_decide_an_opaque_name():
    assert categorize("ynn_fusion.12", {"convolution", "parameter", "add"}) == "convolution"
    assert categorize("ynn_fusion.3", {"dot", "parameter"}) == "matmul"
    assert categorize("ynn_fusion.5", {"reduce", "add", "exponential"}) == "reduction"
    assert categorize("ynn_fusion.9") == "elementwise"  # a fusion whose content is unknown
    assert categorize("custom-call.5", {"custom-call:__cudnn$convForward"}) == "convolution"
    assert categorize("custom-call.7", {"custom-call:__cublas$lt$matmul"}) == "matmul"
    assert categorize("custom-call.8", {"custom-call:some_library_call"}) == "other"
    # a cuDNN layout kernel launched by a convolution's custom call is still a layout conversion
    assert categorize("convertTensor_kernel", {"custom-call:__cudnn$convForward"}) == "copies/transposes"
    assert categorize("reverse_select_fusion", {"reverse", "select", "gather"}) == "scatter/gather"
    assert categorize("reverse_select_fusion", {"reverse", "select"}) == "elementwise"


HLO = """HloModule jit_epoch, is_scheduled=true

%region_max (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %maximum.1 = f32[] maximum(%a, %b)
}

%fused_computation.7 (param_0: f32[8,32,32,3], param_1: f32[3,3,3,8]) -> f32[8,32,32,8] {
  %param_0 = f32[8,32,32,3]{3,2,1,0} parameter(0)
  %param_1 = f32[3,3,3,8]{3,2,1,0} parameter(1)
  ROOT %convolution.2 = f32[8,32,32,8]{3,2,1,0} convolution(%param_0, %param_1), window={size=3x3 pad=1_1x1_1}
}

%fused_computation.9 (param_0.1: f32[8,32,32,8]) -> f32[8,16,16,8] {
  %param_0.1 = f32[8,32,32,8]{3,2,1,0} parameter(0)
  %constant.3 = f32[] constant(-inf)
  ROOT %reduce-window.1 = f32[8,16,16,8] reduce-window(%param_0.1, %constant.3), to_apply=%region_max
}

ENTRY %main.5 (x.1: f32[8,32,32,3], w.1: f32[3,3,3,8]) -> (f32[8,16,16,8], f32[8,8]) {
  %x.1 = f32[8,32,32,3]{3,2,1,0} parameter(0)
  %w.1 = f32[3,3,3,8]{3,2,1,0} parameter(1)
  %ynn_fusion.1 = f32[8,32,32,8] fusion(%x.1, %w.1), kind=kCustom, calls=%fused_computation.7, metadata={op_name="conv"}
  %pool_fusion = f32[8,16,16,8]{3,2,1,0} fusion(%ynn_fusion.1), kind=kLoop, calls=%fused_computation.9
  %custom-call.4 = f32[8,8]{1,0} custom-call(%w.1), custom_call_target="__cublas$gemm"
  ROOT %tuple.1 = (f32[8,16,16,8]{3,2,1,0}, f32[8,8]{1,0}) tuple(%pool_fusion, %custom-call.4)
}
"""


def test_hlo_ops_follows_the_called_computations():
    ops = profile.hlo_ops(HLO)
    assert ops["ynn_fusion.1"] == {"fusion", "parameter", "convolution"}
    assert ops["pool_fusion"] == {"fusion", "parameter", "constant", "reduce-window", "maximum"}
    assert ops["custom-call.4"] == {"custom-call:__cublas$gemm"}
    assert categorize("ynn_fusion.1", ops["ynn_fusion.1"]) == "convolution"
    assert categorize("pool_fusion", ops["pool_fusion"]) == "reduction"
    assert categorize("custom-call.4", ops["custom-call.4"]) == "matmul"


def test_self_times_busy_time_and_summary_by_hand():
    # line A: a 100 ns while holding two 30 ns ops; line B: a 50 ns copy overlapping the while
    events = sorted([Event("A", "while.1", 0, 100, "while.1", "m"), Event("A", "convolution.1", 10, 30, "c", "m"),
                     Event("A", "add_fusion", 50, 30, "a", "m"), Event("B", "copy.2", 80, 50, "p", "m")],
                    key=lambda e: (e.line, e.start_ns, -e.duration_ns))
    assert profile.self_times(events) == [40, 30, 30, 50]
    assert profile.busy_ns(events) == 130  # [0, 130)
    s = profile.summarize(events, wall_s=200e-9)
    assert s["categories"]["other"] == pytest.approx(40e-9) and s["categories"]["convolution"] == pytest.approx(30e-9)
    assert s["device_s"] == pytest.approx(150e-9) and s["host_gaps_s"] == pytest.approx(70e-9)
    assert [t["name"] for t in s["top"]][:1] == ["copy.2"] and s["top"][0]["share"] == pytest.approx(50 / 150)


def test_training_rows():
    assert training_rows(5170, 256, 2, None) == 512
    assert training_rows(5170, 256, 30, 50000) == 7680  # --steps wins
    assert training_rows(5170, 256, None, 50000) == 50000 and training_rows(5170, 256, None, None) == 5170
    for bad in ((None, 100), (0, None), (None, 0)):
        with pytest.raises(ConfigError):
            training_rows(5170, 256, *bad)


@pytest.mark.slow  # a real training run: CI's slow pass
def test_profile_command_on_a_cpu_smoke_epoch(tmp_path):
    out = tmp_path / "trace"
    cmd = [sys.executable, "-m", "speedrun.cli", "profile", "airbench94_muon", "--smoke", "--steps", "2",
           "--outdir", str(out), "--config.data.path=sample", "--config.model.width_mult=0.0625",
           "--config.whitening.num_images=512"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    rows = {m.group(1): float(m.group(2)) for line in lines
            if (m := re.match(r"^(\S+(?: \S+)?)\s{2,}(\d+\.\d{3})\s", line))}
    cats = [rows[c] for c in profile.CATEGORIES]
    assert sum(cats) == pytest.approx(rows["device time"], abs=0.001 * len(cats))  # ms, printed to 3 decimals
    result = json.loads(lines[-1])
    assert result["device_s"] == pytest.approx(sum(result["categories"].values()))
    assert result["device_s"] > 0 and result["categories"]["convolution"] > 0
    assert result["host_gaps_s"] == pytest.approx(max(0.0, result["wall_s"] - result["busy_s"]))
    assert result["steps"] == 2 and result["train_flops"] > 0 and 0 < result["mfu_vs_matmul"]
    trace = Path(result["trace_file"])
    assert trace.exists() and trace.name.endswith(".xplane.pb") and str(trace).startswith(str(out))
    assert list(trace.parent.glob("*.trace.json.gz")) and (trace.parent / "profile.json").exists()
    assert "top 15 kernels / ops by time:" in proc.stdout
    # the Chrome trace, read independently of the XSpace, holds the same op events
    from_json, _ = profile.read_trace(out, use_xspace=False)
    from_pb, _ = profile.read_trace(out)
    assert len(from_json) == len(from_pb) == result["events"]
    assert sum(e.duration_ns for e in from_json) == pytest.approx(sum(e.duration_ns for e in from_pb), rel=1e-3)
