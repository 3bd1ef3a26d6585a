"""Tests for speedrun.flops against hand counts.

Independent references: multiply-adds counted by hand from the layer shapes (out H × out W × out
channels × kernel H × kernel W × in channels per conv; in × out per linear layer), and the
published training figures (Page: about 1.15 PFLOPs for 10 epochs of ResNet-9; airbench94: 0.36
PFLOPs, airbench README).
"""

import importlib.util

import jax
import jax.numpy as jnp
import pytest

from speedrun import config  # noqa: E402
from speedrun.measure import flops  # noqa: E402


def conv_macs(hw_out, c_out, k, c_in):
    """Hand formula: every output element of a k×k conv takes k·k·c_in multiply-adds."""
    return hw_out * hw_out * c_out * k * k * c_in


# ResNet-9 (speedrun/models/resnet9.py, width 1), layer by layer:
RESNET9_LAYERS = {
    "whiten 3x3 3->27 @32": conv_macs(32, 27, 3, 3),            # 746,496
    "prep 1x1 27->64 @32": conv_macs(32, 64, 1, 27),            # 1,769,472
    "layer1 3x3 64->128 @32 (then pool)": conv_macs(32, 128, 3, 64),  # 75,497,472
    "layer1 res1 3x3 128->128 @16": conv_macs(16, 128, 3, 128),  # 37,748,736
    "layer1 res2 3x3 128->128 @16": conv_macs(16, 128, 3, 128),  # 37,748,736
    "layer2 3x3 128->256 @16 (then pool)": conv_macs(16, 256, 3, 128),  # 75,497,472
    "layer3 3x3 256->512 @8 (then pool)": conv_macs(8, 512, 3, 256),   # 75,497,472
    "layer3 res1 3x3 512->512 @4": conv_macs(4, 512, 3, 512),    # 37,748,736
    "layer3 res2 3x3 512->512 @4": conv_macs(4, 512, 3, 512),    # 37,748,736
    "linear 512->10": 512 * 10,                                  # 5,120
}

# airbench94 (the architecture: 2x2 whitening conv without padding, conv groups of widths
# 64/256/256 with 'same' 3x3 convs, pool 2 after the first conv of each group, pool 3, linear):
AIRBENCH94_LAYERS = {
    "whiten 2x2 3->24 valid @31": conv_macs(31, 24, 2, 3),      # 276,768
    "group1 conv1 24->64 @31": conv_macs(31, 64, 3, 24),        # 13,284,864
    "group1 conv2 64->64 @15": conv_macs(15, 64, 3, 64),        # 8,294,400
    "group2 conv1 64->256 @15": conv_macs(15, 256, 3, 64),      # 33,177,600
    "group2 conv2 256->256 @7": conv_macs(7, 256, 3, 256),      # 28,901,376
    "group3 conv1 256->256 @7": conv_macs(7, 256, 3, 256),      # 28,901,376
    "group3 conv2 256->256 @3": conv_macs(3, 256, 3, 256),      # 5,308,416
    "linear 256->10": 256 * 10,                                 # 2,560
}


def test_hand_totals():
    assert sum(RESNET9_LAYERS.values()) == 380_008_448
    assert sum(AIRBENCH94_LAYERS.values()) == 118_147_360


def test_resnet9_forward_flops_equal_hand_count():
    from speedrun.models.resnet9 import ResNet9

    f = flops.forward_flops_per_image(ResNet9(width_mult=1.0))
    assert f == 2 * sum(RESNET9_LAYERS.values()) == 760_016_896  # 0.760 GFLOPs
    # half precision changes no count
    assert flops.forward_flops_per_image(ResNet9(dtype=jnp.float16)) == f


def test_page_training_flops_near_published():
    from speedrun.models.resnet9 import ResNet9

    f = flops.forward_flops_per_image(ResNet9())
    total = flops.training_flops(f, 10 * 50_000)
    assert total == 3 * 760_016_896 * 500_000  # 1.140 PFLOPs
    assert abs(total / 1.15e15 - 1) < 0.01  # Page: "about 1.15 PFLOPs"


def test_airbench94_forward_flops_equal_hand_count():
    if importlib.util.find_spec("speedrun.models.airbench") is None:
        pytest.skip("speedrun/models/airbench.py not present yet")
    from speedrun.models import get_model

    cfg = config.load_record("airbench94")
    f = flops.forward_flops_per_image(get_model(cfg.model, jnp.float32))
    assert f == 2 * sum(AIRBENCH94_LAYERS.values()) == 236_294_720  # 0.236 GFLOPs
    # 9.9 epochs of 50,000: 0.351 PFLOPs; airbench's 0.36 also counts its TTA evaluation
    assert abs(flops.training_flops(f, int(9.9 * 50_000)) / 0.36e15 - 1) < 0.03


def test_count_macs_conv_dot_grouped_scan_cond():
    x = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32)
    k = jax.ShapeDtypeStruct((3, 3, 4, 6), jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC")
    conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn)  # noqa: E731
    assert flops.count_macs(jax.make_jaxpr(conv)(x, k)) == {
        "conv_general_dilated": 2 * 8 * 8 * 6 * 3 * 3 * 4, "dot_general": 0}
    # stride 2, VALID: 3x3 outputs of 8x8 with a 3x3 kernel
    conv_s2 = lambda x, k: jax.lax.conv_general_dilated(x, k, (2, 2), "VALID", dimension_numbers=dn)  # noqa: E731
    assert flops.count_macs(jax.make_jaxpr(conv_s2)(x, k))["conv_general_dilated"] == 2 * 3 * 3 * 6 * 9 * 4
    # 2 feature groups: each output channel sees 4/2 input channels
    kg = jax.ShapeDtypeStruct((3, 3, 2, 6), jnp.float32)
    grouped = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=2)
    assert flops.count_macs(jax.make_jaxpr(grouped)(x, kg))["conv_general_dilated"] == 2 * 64 * 6 * 9 * 2
    # batched matmul (5, 3, 7) @ (5, 7, 11): 5·3·11 outputs of 7 multiply-adds
    a, b = jax.ShapeDtypeStruct((5, 3, 7), jnp.float32), jax.ShapeDtypeStruct((5, 7, 11), jnp.float32)
    assert flops.count_macs(jax.make_jaxpr(jnp.matmul)(a, b))["dot_general"] == 5 * 3 * 11 * 7
    # a scan body counts length times; nested jit is walked
    m = jax.ShapeDtypeStruct((4, 4), jnp.float32)

    def scanned(m):
        return jax.lax.scan(lambda c, _: (jax.jit(jnp.dot)(c, c), None), m, None, length=6)[0]

    assert flops.count_macs(jax.make_jaxpr(scanned)(m))["dot_general"] == 6 * 4 * 4 * 4
    # cond: the costlier branch
    cond = lambda p, m: jax.lax.cond(p, lambda m: m @ m @ m, lambda m: m, m)  # noqa: E731
    assert flops.count_macs(jax.make_jaxpr(cond)(True, m))["dot_general"] == 2 * 4 * 4 * 4
    assert flops.flops_of(jnp.matmul, a, b) == 2 * 5 * 3 * 11 * 7


def test_while_loop_and_bad_input_raise():
    m = jax.ShapeDtypeStruct((4, 4), jnp.float32)
    loop = lambda m: jax.lax.fori_loop(0, jnp.int32(3) + 0 * m[0, 0].astype(jnp.int32),  # noqa: E731
                                       lambda i, c: c @ c, m)
    with pytest.raises(ValueError, match="while loop"):
        flops.count_macs(jax.make_jaxpr(loop)(m))
    with pytest.raises(ValueError, match="negative"):
        flops.training_flops(-1, 10)
