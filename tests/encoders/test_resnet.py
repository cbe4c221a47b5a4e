"""ResNet-18 trunk and encoders: torchvision layout, init, spatial sizes, frame folding, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from modbalance.encoders.resnet import (
    BasicBlock,
    ResNet18,
    ResNet18Encoder,
    resnet18_audio,
    resnet18_flow,
    resnet18_visual,
)

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _torchvision_keys() -> list[str]:
    """The trunk keys of torchvision's resnet18, written out from its documented layout (fc excluded)."""
    keys = ["conv1.weight", *(f"bn1.{s}" for s in _BN)]
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            keys += [f"{p}.conv1.weight", *(f"{p}.bn1.{s}" for s in _BN)]
            keys += [f"{p}.conv2.weight", *(f"{p}.bn2.{s}" for s in _BN)]
            if layer > 1 and block == 0:
                keys += [f"{p}.downsample.0.weight", *(f"{p}.downsample.1.{s}" for s in _BN)]
    return keys


@pytest.fixture(scope="module")
def audio() -> ResNet18Encoder:
    return resnet18_audio().eval()


@pytest.fixture(scope="module")
def visual() -> ResNet18Encoder:
    return resnet18_visual().eval()


def test_state_dict_keys_match_torchvision_layout() -> None:
    assert sorted(ResNet18(3).state_dict()) == sorted(_torchvision_keys())
    # The encoders are the trunk itself: no wrapper prefix.
    assert sorted(resnet18_flow().state_dict()) == sorted(_torchvision_keys())


def test_shapes_and_parameter_count() -> None:
    sd = ResNet18(3).state_dict()
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)
    # torchvision's resnet18 has 11,689,512 parameters, of which fc holds 512 * 1000 + 1000 = 513,000.
    assert sum(p.numel() for p in ResNet18(3).parameters()) == 11_689_512 - 513_000
    # Stem channels only change conv1: 64 * 7 * 7 = 3136 weights per input channel.
    assert sum(p.numel() for p in ResNet18(1).parameters()) == 11_176_512 - 2 * 3136
    assert resnet18_audio().conv1.in_channels == 1
    assert resnet18_visual().conv1.in_channels == 3
    assert resnet18_flow().conv1.in_channels == 2


def test_init_follows_reference() -> None:
    model = ResNet18(3)
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1), name
            assert torch.all(module.bias == 0), name
    # kaiming_normal_(fan_out, relu): std = sqrt(2 / (out_channels * k * k)).
    for name, out_ch, k in (("conv1", 64, 7), ("layer4.0.conv1", 512, 3), ("layer3.0.downsample.0", 256, 1)):
        weight = model.get_submodule(name).weight.detach()
        expected = math.sqrt(2.0 / (out_ch * k * k))
        assert weight.std().item() == pytest.approx(expected, rel=0.05), name
        assert abs(weight.mean().item()) < 0.05 * expected, name


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (257, 188, (9, 6)),
        (129, 626, (5, 20)),
        (257, 1004, (9, 32)),
        (1024, 128, (32, 4)),
    ],
)
def test_audio_layer4_sizes(audio: ResNet18Encoder, height: int, width: int, expected: tuple[int, int]) -> None:
    with torch.no_grad():
        fmap = audio.forward_map(torch.randn(1, 1, height, width))
    assert fmap.shape == (1, 512, *expected)


@pytest.mark.parametrize(("side", "expected"), [(224, 7), (112, 4)])
def test_visual_layer4_sizes(visual: ResNet18Encoder, side: int, expected: int) -> None:
    with torch.no_grad():
        fmap = visual.forward_map(torch.randn(1, 3, 1, side, side))
        pooled = visual(torch.randn(1, 3, 1, side, side))
    assert fmap.shape == (1, 512, 1, expected, expected)
    assert pooled.shape == (1, 512)


def test_audio_pooling_and_channel_free_input(audio: ResNet18Encoder) -> None:
    x = torch.randn(2, 1, 70, 40)
    with torch.no_grad():
        fmap = audio.forward_map(x)
        pooled = audio(x)
        pooled_3d = audio(x[:, 0])
    assert fmap.shape == (2, 512, 3, 2)
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3)))
    torch.testing.assert_close(pooled_3d, pooled)


def test_frames_equal_per_frame_trunk_average() -> None:
    """Folding (B, C, T, H, W) must equal running the trunk on each frame alone and averaging (eval mode)."""
    for enc, channels in ((resnet18_visual(), 3), (resnet18_flow(), 2)):
        enc.eval()
        b, t = 2, 3
        x = torch.randn(b, channels, t, 40, 72)
        with torch.no_grad():
            pooled = enc(x)
            fmap = enc.forward_map(x)
            expected = torch.zeros(b, 512)
            for i in range(b):
                for j in range(t):
                    frame_map = ResNet18.forward(enc, x[i : i + 1, :, j])  # trunk only, (1, 512, 2, 3)
                    torch.testing.assert_close(fmap[i, :, j], frame_map[0])
                    expected[i] += frame_map[0].mean(dim=(1, 2)) / t
        assert fmap.shape == (b, 512, t, 2, 3)
        torch.testing.assert_close(pooled, expected, rtol=1e-4, atol=1e-5)


def test_return_map_option() -> None:
    x = torch.randn(1, 3, 2, 32, 64)
    with torch.no_grad():
        assert resnet18_visual(return_map=True).eval()(x).shape == (1, 512, 2, 1, 2)
        assert resnet18_flow(return_map=True).eval()(x[:, :2]).shape == (1, 512, 2, 1, 2)
        assert resnet18_audio(return_map=True).eval()(torch.randn(1, 64, 96)).shape == (1, 512, 2, 3)
        assert ResNet18Encoder(3, temporal=False)(torch.randn(1, 3, 64, 64)).shape == (1, 512)


@pytest.mark.parametrize(
    ("builder", "shape"),
    [
        (resnet18_audio, (2, 1, 40, 36)),
        (resnet18_visual, (2, 3, 2, 32, 32)),
        (resnet18_flow, (2, 2, 2, 32, 32)),
    ],
)
def test_every_parameter_gets_a_gradient(builder, shape: tuple[int, ...]) -> None:
    enc = builder().train()
    out = enc(torch.randn(shape))
    assert out.shape == (shape[0], 512)
    assert torch.isfinite(out).all()
    # A random projection: a plain sum would give (near) zero gradients through the last BatchNorm.
    (out * torch.randn_like(out)).sum().backward()
    for name, param in enc.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_basic_block_shortcut() -> None:
    assert BasicBlock(64, 64).downsample is None
    block = BasicBlock(64, 128, stride=2).eval()
    assert block.downsample is not None
    x = torch.randn(1, 64, 9, 8)
    with torch.no_grad():
        main = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        expected = torch.relu(main + block.downsample(x))
        torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize(
    ("encoder", "shape", "match"),
    [
        (resnet18_audio, (2, 3, 32, 32), r"\(B, 1, H, W\) or \(B, H, W\)"),
        (resnet18_audio, (2, 1, 1, 32, 32), "got shape"),
        (resnet18_visual, (2, 3, 32, 32), "unsqueeze"),
        (resnet18_visual, (2, 2, 1, 32, 32), "C=3"),
        (resnet18_flow, (2, 3, 1, 32, 32), "C=2"),
    ],
)
def test_bad_input_shapes_raise(encoder, shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encoder()(torch.zeros(shape))


def test_bad_construction_raises() -> None:
    with pytest.raises(ValueError, match="in_channels"):
        ResNet18Encoder(0, temporal=False)
    with pytest.raises(TypeError, match="Tensor"):
        resnet18_audio()([1.0, 2.0])
