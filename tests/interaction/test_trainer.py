"""The trainer builds each interaction model from ``model.kind`` and runs every method on it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from modbalance.data.presets import DATASET_PRESETS
from modbalance.interaction import CentralNet, MMTMNet, TransformerFusion
from modbalance.train import ConfigError, load_config, run
from modbalance.train.build import build_interaction_model, build_model
from modbalance.train.data import build_data

SMALL = ["data.options.n_train=96", "data.options.n_val=30", "data.options.n_test=30", "train.epochs=1"]
ARCHS = {
    "joint": ["model.kind=transformer", "data.options.tokens=4", "model.interaction={d_model: 8, heads: 2, depth: 1}"],
    "bottleneck": [
        "model.kind=transformer",
        "data.options.tokens=2",
        "model.interaction={variant: bottleneck, fusion_tokens: 2, d_model: 8, heads: 2, depth: 1}",
    ],
    "mmtm": ["model.kind=mmtm"],
    "centralnet": ["model.kind=centralnet"],
}
METHODS = ["joint", "ogm", "ogm_ge", "opm", "opm+ogm"]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_one_epoch_with_each_architecture_and_method(arch: str, method: str, tmp_path: Path) -> None:
    config = load_config(
        "lab/tiny", [*ARCHS[arch], *SMALL, f"method.name={method}", "method.p_exe=1.0", f"output_dir={tmp_path}"]
    )
    folder = run(config)
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert records and all(math.isfinite(r["train/loss"]) for r in records)
    assert {"val/accuracy/audio", "val/accuracy/visual"} <= set(records[-1])
    if "opm" in method:
        assert records[-1]["train/q/audio"] + records[-1]["train/q/visual"] > 0  # OPM measured an imbalance
    if "ogm" in method:
        assert {"train/k/audio", "train/k/visual"} <= set(records[-1])


@pytest.mark.parametrize(
    ("arch", "cls"),
    [("joint", TransformerFusion), ("bottleneck", TransformerFusion), ("mmtm", MMTMNet), ("centralnet", CentralNet)],
)
def test_build_model_gives_the_architecture_with_the_encoders_inside(arch: str, cls: type) -> None:
    config = load_config("lab/tiny", [*ARCHS[arch], *SMALL])
    bundle = build_data(config)
    model = build_model(config, bundle)
    assert isinstance(model, cls)
    groups = model.modality_parameters()
    assert groups["audio"] and not {id(p) for p in groups["audio"]} & {id(p) for p in model.shared_parameters()}
    inputs, _ = bundle.batch("val", [0, 1, 2])
    out = model(inputs)
    assert out.logits.shape == (3, bundle.num_classes)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"model.kind='mtmm' is not allowed. Allowed values: late, centralnet, mmtm"):
        load_config("lab/tiny", ["model.kind=mtmm"])
    with pytest.raises(ConfigError, match=r"model.interaction.dmodel: unknown option for model.kind='transformer'"):
        load_config("lab/tiny", ["model.kind=transformer", "model.interaction.dmodel=8"])
    with pytest.raises(ConfigError, match=r"model.interaction.unimodal='heads' is not allowed in the trainer"):
        load_config("lab/tiny", ["model.kind=centralnet", "model.interaction.unimodal=heads"])
    with pytest.raises(ConfigError, match=r"model.kind='late' does not use it"):
        load_config("lab/tiny", ["model.interaction.depth=2"])
    with pytest.raises(ConfigError, match=r"method.name='unimodal:audio' trains one modality, but model.kind='mmtm'"):
        load_config("lab/tiny", ["model.kind=mmtm", "method.name=unimodal:audio"])
    config = load_config(
        "lab/tiny", ["model.kind=transformer", "data.options.tokens=2", "model.interaction.variant=mbt"]
    )
    with pytest.raises(
        ConfigError, match=r"model.interaction \(transformer\): variant must be one of joint, bottleneck"
    ):
        build_model(config, build_data(config))
    config = load_config("lab/tiny", ["model.kind=transformer"])  # vectors, not tokens
    with pytest.raises(
        ConfigError, match=r"model.encoders.audio: cannot run on input of shape \(2, 8\) .*data.options.tokens"
    ):
        build_model(config, build_data(config))
    config = load_config("lab/tiny", ["model.kind=centralnet", "model.encoders.visual.options.out_dim=4"])
    with pytest.raises(ConfigError, match=r"centralnet needs the same width at every level .*'visual': \[16, 4\]"):
        build_model(config, build_data(config))


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [f"{d}/tpami_{k}" for d in ("cremad", "ks") for k in ("transformer", "mmtm", "centralnet")]
)
def test_dataset_configs_build_on_the_preset_shapes(name: str) -> None:
    config = load_config(name, ["data.root=/nonexistent"])
    preset = DATASET_PRESETS[name.rsplit("_", 1)[0]]
    sample = {m: torch.randn(2, *shape) for m, shape in preset["shapes"].items()}
    from modbalance.encoders.registry import build_encoder

    encoders = {m: build_encoder(e.name, **e.options) for m, e in config.model.encoders.items()}
    bundle = SimpleNamespace(sample_inputs=lambda: sample, num_classes=6)
    model = build_interaction_model(config, bundle, encoders)  # type: ignore[arg-type]
    with torch.no_grad():
        out = model(sample)
    assert out.logits.shape == (2, 6)
    assert set(model.modality_parameters()) == set(preset["shapes"])
