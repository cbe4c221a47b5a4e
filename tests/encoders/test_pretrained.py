"""load_pretrained: real checkpoint files written here, the conv1 policies, and each failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from modbalance.encoders.pretrained import load_pretrained
from modbalance.encoders.resnet import ResNet18, resnet18_audio, resnet18_flow, resnet18_visual


class NotATensor:
    """A picklable object that ``torch.load(weights_only=True)`` must refuse."""


def _imagenet_like_state() -> dict[str, Tensor]:
    """A torchvision-layout RGB ResNet-18 state dict with every tensor freshly drawn, plus the fc head.

    Scales stay moderate (kaiming-sized convs, BN near identity) so that activations stay finite.
    """
    generator = torch.Generator().manual_seed(1)
    state = {}
    for key, value in ResNet18(3).state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.full_like(value, 7)
        elif value.dim() == 4:  # conv: std sqrt(2 / fan_out)
            fan_out = value.shape[0] * value.shape[2] * value.shape[3]
            state[key] = torch.randn(value.shape, generator=generator) * (2.0 / fan_out) ** 0.5
        elif key.endswith(("weight", "running_var")):
            state[key] = 0.5 + torch.rand(value.shape, generator=generator)
        else:  # bias, running_mean
            state[key] = 0.1 * torch.randn(value.shape, generator=generator)
    state["fc.weight"] = torch.randn(1000, 512, generator=generator)
    state["fc.bias"] = torch.randn(1000, generator=generator)
    return state


@pytest.fixture(scope="module")
def state() -> dict[str, Tensor]:
    return _imagenet_like_state()


@pytest.fixture(scope="module")
def checkpoint(state: dict[str, Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "resnet18-imagenet.pth"
    torch.save(state, path)
    return path


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _assert_loaded(encoder: nn.Module, state: dict[str, Tensor], skip: tuple[str, ...] = ()) -> None:
    loaded = encoder.state_dict()
    for key, value in state.items():
        if key.startswith("fc.") or key in skip:
            continue
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)


def test_rgb_encoder_loads_everything(checkpoint: Path, state: dict[str, Tensor]) -> None:
    enc = resnet18_visual()
    report = load_pretrained(enc, checkpoint)
    _assert_loaded(enc, state)
    assert report.conv1 == "copied"
    assert report.dropped == ("fc.bias", "fc.weight")
    assert report.path == checkpoint
    assert "conv1.weight" in report.loaded
    assert "fc.weight" not in report.loaded


def test_audio_stem_is_summed_over_rgb(checkpoint: Path, state: dict[str, Tensor]) -> None:
    enc = resnet18_audio()
    report = load_pretrained(enc, checkpoint)
    assert report.conv1 == "adapted"
    _assert_loaded(enc, state, skip=("conv1.weight",))
    torch.testing.assert_close(enc.conv1.weight.detach(), state["conv1.weight"].sum(dim=1, keepdim=True))

    # Why the sum: the adapted audio trunk on x equals the RGB trunk on the gray image [x, x, x].
    rgb = resnet18_visual()
    load_pretrained(rgb, checkpoint)
    x = torch.randn(2, 1, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(enc.eval()(x), rgb.eval()(x.expand(-1, 3, -1, -1).unsqueeze(2)))


def test_flow_stem_keeps_random_init_by_default(checkpoint: Path, state: dict[str, Tensor]) -> None:
    enc = resnet18_flow()
    before = enc.conv1.weight.detach().clone()
    report = load_pretrained(enc, checkpoint)
    assert report.conv1 == "kept_init"
    assert report.dropped == ("conv1.weight", "fc.bias", "fc.weight")
    assert "conv1.weight" not in report.loaded
    torch.testing.assert_close(enc.conv1.weight.detach(), before, rtol=0, atol=0)
    _assert_loaded(enc, state, skip=("conv1.weight",))


def test_flow_stem_adapt_option(checkpoint: Path, state: dict[str, Tensor]) -> None:
    enc = resnet18_flow()
    report = load_pretrained(enc, checkpoint, conv1="adapt")
    assert report.conv1 == "adapted"
    expected = (state["conv1.weight"].sum(dim=1, keepdim=True) / 2).expand(-1, 2, -1, -1)
    torch.testing.assert_close(enc.conv1.weight.detach(), expected)
    rgb = resnet18_visual()
    load_pretrained(rgb, checkpoint)
    x = torch.randn(1, 1, 2, 40, 40)
    with torch.no_grad():  # the same gray frames through both stems
        torch.testing.assert_close(enc.eval()(x.expand(-1, 2, -1, -1, -1)), rgb.eval()(x.expand(-1, 3, -1, -1, -1)))


def test_reinit_keeps_rgb_stem(checkpoint: Path, state: dict[str, Tensor]) -> None:
    enc = resnet18_visual()
    before = enc.conv1.weight.detach().clone()
    report = load_pretrained(enc, checkpoint, conv1="reinit")
    assert report.conv1 == "kept_init"
    torch.testing.assert_close(enc.conv1.weight.detach(), before, rtol=0, atol=0)
    _assert_loaded(enc, state, skip=("conv1.weight",))


@pytest.mark.parametrize("layout", ["state_dict", "model", "module_prefix", "no_num_batches_tracked"])
def test_accepted_file_layouts(layout: str, state: dict[str, Tensor], tmp_path: Path) -> None:
    if layout == "module_prefix":
        obj: object = {f"module.{k}": v for k, v in state.items()}
    elif layout == "no_num_batches_tracked":  # older torchvision files lack these buffers
        obj = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    else:
        obj = {layout: state, "epoch": 90}
    enc = resnet18_visual()
    load_pretrained(enc, _save(obj, tmp_path / "ckpt.pt"))
    _assert_loaded(enc, state, skip=tuple(k for k in state if k.endswith("num_batches_tracked")))


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_pretrained(resnet18_visual(), missing)


def test_truncated_file(checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "truncated.pth"
    broken.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"could not read pretrained checkpoint .*truncated\.pth"):
        load_pretrained(resnet18_visual(), broken)


def test_text_file_is_unreadable(tmp_path: Path) -> None:
    text = tmp_path / "weights.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=r"weights\.txt"):
        load_pretrained(resnet18_visual(), text)


def test_arbitrary_objects_are_refused(state: dict[str, Tensor], tmp_path: Path) -> None:
    path = _save({"state_dict": state, "extra": NotATensor()}, tmp_path / "pickle.pth")
    with pytest.raises(ValueError, match=r"pickle\.pth"):
        load_pretrained(resnet18_visual(), path)


def test_not_a_state_dict(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"tensor\.pth.*holds a Tensor"):
        load_pretrained(resnet18_visual(), _save(torch.zeros(3), tmp_path / "tensor.pth"))
    with pytest.raises(TypeError, match="'epoch' \\(int\\)"):
        load_pretrained(resnet18_visual(), _save({"conv1.weight": torch.zeros(1), "epoch": 3}, tmp_path / "m.pth"))


def test_mismatches_are_all_named(state: dict[str, Tensor], tmp_path: Path) -> None:
    bad = dict(state)
    del bad["layer3.1.bn2.running_var"]
    bad["layer5.0.conv1.weight"] = torch.zeros(3)
    bad["layer4.0.conv1.weight"] = torch.zeros(512, 128, 3, 3)
    path = _save(bad, tmp_path / "resnet34ish.pth")
    enc = resnet18_visual()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load_pretrained(enc, path)
    message = str(info.value)
    assert "resnet34ish.pth" in message
    assert "missing keys [layer3.1.bn2.running_var]" in message
    assert "unexpected keys [layer5.0.conv1.weight]" in message
    assert "layer4.0.conv1.weight: checkpoint (512, 128, 3, 3) vs encoder (512, 256, 3, 3)" in message
    for key, value in enc.state_dict().items():  # nothing was loaded
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)


def test_stem_kernel_mismatch_is_not_adapted(state: dict[str, Tensor], tmp_path: Path) -> None:
    bad = dict(state, **{"conv1.weight": torch.zeros(64, 3, 5, 5)})
    path = _save(bad, tmp_path / "k5.pth")
    with pytest.raises(ValueError, match=r"conv1\.weight: checkpoint \(64, 3, 5, 5\) vs encoder \(64, 1, 7, 7\)"):
        load_pretrained(resnet18_audio(), path)


def test_bad_arguments(checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="conv1 must be one of auto, adapt, reinit"):
        load_pretrained(resnet18_visual(), checkpoint, conv1="mean")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Linear has no 'conv1'"):
        load_pretrained(nn.Linear(2, 2), checkpoint)
