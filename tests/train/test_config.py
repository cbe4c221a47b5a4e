"""Config loading and validation: typed defaults, YAML + dotted overrides, errors that name the key."""

from __future__ import annotations

import re

import pytest
import torch

pytest.importorskip("omegaconf", reason='the trainer needs the train extra: pip install "modbalance[train]"')

from modbalance.data.synthetic import lab_preset
from modbalance.train import ConfigError, ExperimentConfig, config_to_yaml, load_config, run
from modbalance.train.config import CONFIG_DIR
from modbalance.train.validate import check_modalities, method_names

SHIPPED = sorted((CONFIG_DIR / "lab").glob("*.yaml"))  # dataset configs: tests/test_configs.py


def test_yaml_then_overrides_take_precedence_over_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: {name: ogm, alpha: 0.3}\ntrain: {epochs: 7}\n")
    config = load_config(path, ["method.alpha=0.6", "optim.scheduler.name=step"])
    assert isinstance(config, ExperimentConfig)
    assert (config.method.name, config.method.alpha, config.train.epochs) == ("ogm", 0.6, 7)
    assert config.optim.scheduler.name == "step"
    assert config.train.batch_size == ExperimentConfig().train.batch_size  # untouched default


def test_saved_yaml_loads_back_to_the_same_config(tmp_path):
    config = load_config("lab/tiny", ["method.name=opm+ogm", "method.end_epoch=4", "data.options.seed=3"])
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(config))
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        ("method.alpah=0.5", "method.alpah", "alpha"),
        ("trian.epochs=1", "trian", "train"),
        ("model.encoders.audio.nme=mlp", "model.encoders.audio.nme", "name, options"),
        ("optim.scheduler.steps=3", "optim.scheduler.steps", "step_size"),
    ],
)
def test_unknown_keys_are_refused_naming_the_key_and_the_allowed_ones(override, key, allowed):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert f"{key}: unknown key" in str(info.value)
    assert allowed in str(info.value)


def test_unknown_key_in_a_yaml_file_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {epochs: 2, lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"train\.lr: unknown key"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.epochs=many", "train.epochs"),
        ("method.alpha=strong", "method.alpha"),
        ("train.probe=[1]", "train.probe"),
    ],
)
def test_wrong_types_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', r'[.]')}: "):
        load_config(None, [override])


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("method.alpha=-0.1", "method.alpha=-0.1 is out of range: must be a finite number >= 0"),
        ("method.q_base=1.5", "method.q_base=1.5 is out of range: must be in [0, 1]"),
        ("method.q_base=-0.2", "method.q_base=-0.2 is out of range: must be in [0, 1]"),
        ("method.p_exe=2", "method.p_exe=2.0 is out of range: must be in [0, 1]"),
        ("method.lam=-1", "method.lam=-1.0 is out of range"),
        ("method.end_epoch=-1", "method.end_epoch=-1 is out of range"),
        ("optim.lr=0", "optim.lr=0.0 is out of range"),
        ("optim.momentum=1.0", "optim.momentum=1.0 is out of range: must be in [0, 1)"),
        ("train.epochs=0", "train.epochs=0 is out of range"),
        ("train.grad_accum_steps=65", "train.grad_accum_steps=65 is out of range: must be <= train.batch_size (64)"),
    ],
)
def test_impossible_values_are_refused_with_the_allowed_range(override, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        # the built-in methods, then those of modbalance.methods.METHODS
        ("method.name=ogmge", ", ".join([*method_names(), "unimodal:<modality>"])),
        ("train.precision=fp8", "fp32, bf16, fp16"),
        ("optim.name=lion", "sgd, adam, adamw"),
        ("model.fusion=concatt", "concat, film, gated, sum"),
        ("method.coefficient=tanh", "reference, shifted, paper"),
        ("train.device=tpu", "auto, cpu, cuda, cuda:<index>"),
    ],
)
def test_unknown_names_list_the_allowed_values(override, allowed):
    assert method_names()[:5] == ["joint", "ogm", "ogm_ge", "opm", "opm+ogm"]
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert override.split("=")[0] in str(info.value)
    assert f"Allowed values: {allowed}" in str(info.value)


def test_selection_on_the_test_split_is_refused():
    with pytest.raises(ConfigError, match=re.escape("train.select_on='test' is not allowed. Allowed values: val")):
        load_config(None, ["train.select_on=test"])
    with pytest.raises(ConfigError, match=re.escape("data.val_split='test' equals data.test_split")):
        load_config(None, ["data.val_split=test"])


def test_malformed_override_and_missing_file():
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(None, ["method.alpha"])
    with pytest.raises(FileNotFoundError, match=r"config file 'lab/nope' not found \(shipped configs: .*lab/tiny"):
        load_config("lab/nope")
    # a value that is not valid YAML names the override (it was a raw yaml traceback)
    with pytest.raises(ConfigError, match=r"override 'method.options.teachers=\{audio: x\{seed\}\}': .*not valid YAML"):
        load_config(None, ["seed=1", "method.options.teachers={audio: x{seed}}"])
    quoted = load_config(None, ["method.name=mslr", "method.options.lrs={audio: 0.1, visual: 0.2}"])
    assert quoted.method.options["lrs"] == {"audio": 0.1, "visual": 0.2}


def test_modalities_absent_from_the_data_are_refused_before_training(tmp_path):
    modalities = list(lab_preset("tiny").modalities)
    with pytest.raises(
        ConfigError, match=re.escape("'text', absent from the data. Allowed values: unimodal:audio, unimodal:visual")
    ):
        check_modalities(load_config("lab/tiny", ["method.name=unimodal:text"]), modalities)
    with pytest.raises(ConfigError, match=re.escape("model.encoders.text: modality 'text' is absent from the data")):
        check_modalities(load_config("lab/tiny", ["model.encoders.text.name=mlp"]), modalities)
    config = load_config("lab/tiny", ["method.name=unimodal:text", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="unimodal:text"):
        run(config)
    assert list(tmp_path.iterdir()) == []  # refused before any run folder was made


def test_a_modality_without_an_encoder_is_refused():
    config = load_config(None, ["model.encoders.audio.name=mlp"])
    with pytest.raises(
        ConfigError, match=re.escape("model.encoders.visual: no encoder configured for modality 'visual'")
    ):
        check_modalities(config, ["audio", "visual"])


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(CONFIG_DIR)) for p in SHIPPED])
def test_every_shipped_config_validates_and_starts_with_its_launch_command(path):
    config = load_config(path)
    first = path.read_text().splitlines()[0]
    name = str(path.relative_to(CONFIG_DIR).with_suffix(""))
    assert first == f"# Launch:   modbalance train --config {name}"
    check_modalities(config, list(lab_preset(config.data.preset).modalities))


# lab/transformer and lab/bottleneck train a transformer with AdamW (docs/complex-models.md)
@pytest.mark.parametrize(
    "path", [p for p in SHIPPED if p.stem not in ("tiny", "transformer", "bottleneck")], ids=lambda p: p.stem
)
def test_shipped_lab_configs_use_the_default_presets_tuned_recipe(path):
    config = load_config(path)
    recipe = lab_preset(config.data.preset).recipe
    assert (config.optim.name, config.optim.lr, config.optim.momentum) == ("sgd", recipe.lr, recipe.momentum)
    assert (config.optim.weight_decay, config.train.batch_size) == (recipe.weight_decay, recipe.batch_size)
    assert config.train.epochs == recipe.epochs
    for encoder in config.model.encoders.values():
        options = encoder.options
        assert (options["hidden_dim"], options["out_dim"], options["depth"]) == (
            recipe.hidden_dim,
            recipe.feature_dim,
            recipe.encoder_depth,
        )


def test_a_benchmark_without_a_validation_split_needs_a_held_out_fraction():
    from modbalance.train.data import build_data

    config = load_config(
        None,
        [
            "data.name=vggsound",
            "data.root=/nonexistent",
            "model.encoders.audio.name=mlp",
            "model.encoders.visual.name=mlp",
        ],
    )
    with pytest.raises(ConfigError, match=re.escape("data.val_split='val': dataset 'vggsound' has splits train, test")):
        build_data(config)
    with pytest.raises(ConfigError, match=re.escape("data.val_fraction=1.0 is out of range: must be in [0, 1)")):
        load_config(None, ["data.val_fraction=1.0"])


def test_ogm_update_space_reaches_the_method_and_bad_values_are_refused():
    from modbalance.train.build import build_methods, build_model
    from modbalance.train.data import build_data

    config = load_config("lab/tiny", ["method.name=ogm", "method.space=update"])
    model = build_model(config, build_data(config))
    assert build_methods(config, model, torch.device("cpu")).ogm.space == "update"
    with pytest.raises(ConfigError, match=r"method\.space='params' is not allowed. Allowed values: gradient, update"):
        load_config("lab/tiny", ["method.name=ogm", "method.space=params"])
