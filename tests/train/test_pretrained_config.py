"""``model.encoders.<m>.pretrained`` loads a local ResNet-18 checkpoint into the run's encoder."""

from pathlib import Path

import pytest
import torch

from modbalance.encoders.resnet import ResNet18
from modbalance.prep import prepare
from modbalance.train import ConfigError, load_config
from modbalance.train.build import build_model
from modbalance.train.data import build_data
from tests.train.test_datasets_training import cremad_raw


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cremad")
    out = root / "prepared"
    prepare("cremad", cremad_raw(root / "raw"), out)
    return out


def torchvision_layout_checkpoint(path: Path, *, channels: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    weights = ResNet18(channels).state_dict()
    weights["fc.weight"], weights["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    torch.save(weights, path)
    return weights


def config(prepared: Path, *extra: str):
    base = [f"data.root={prepared}", "data.val_fraction=0.34", "data.options.image_size=64"]
    return load_config("cremad/ogm_ge", [*base, *extra])


def test_pretrained_checkpoint_is_loaded_into_the_encoder(prepared, tmp_path):
    weights = torchvision_layout_checkpoint(tmp_path / "resnet18.pth")
    cfg = config(prepared, f"model.encoders.visual.pretrained={tmp_path / 'resnet18.pth'}")
    model = build_model(cfg, build_data(cfg))
    visual, audio = model.encoders["visual"].state_dict(), model.encoders["audio"].state_dict()
    assert torch.equal(visual["layer3.1.conv2.weight"], weights["layer3.1.conv2.weight"])
    assert torch.equal(visual["conv1.weight"], weights["conv1.weight"])
    assert not torch.equal(audio["layer3.1.conv2.weight"], weights["layer3.1.conv2.weight"])  # only visual


def test_missing_or_unfit_checkpoint_is_refused_naming_the_key_and_file(prepared, tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(ConfigError, match=r"model\.encoders\.visual\.pretrained: .*nowhere\.pth"):
        build_model(*_built(config(prepared, f"model.encoders.visual.pretrained={missing}")))
    unfit = tmp_path / "small.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, unfit)
    with pytest.raises(ConfigError, match=r"model\.encoders\.audio\.pretrained: .*small\.pth"):
        build_model(*_built(config(prepared, f"model.encoders.audio.pretrained={unfit}")))
    with pytest.raises(ConfigError, match=r"pretrained_conv1='copy' is not allowed"):
        config(prepared, "model.encoders.audio.pretrained_conv1=copy")


def _built(cfg):
    return cfg, build_data(cfg)
