"""The dataset registry and the presets: names, options, class counts, YAML-friendly values."""

import pytest

from modbalance.data.presets import DATASET_PRESETS, preset_data_options
from modbalance.data.registry import DATASETS, build_dataset, dataset_info


def test_unknown_names_and_options_list_the_valid_ones(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'kinetics'; valid: cremad, ks, vggsound, ave, ucf101, mosei"):
        build_dataset("kinetics", tmp_path)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['fps'\] for dataset 'ks'; valid: layout, .*frames"):
        build_dataset("ks", tmp_path, fps=3)
    with pytest.raises(ValueError, match="unknown dataset preset 'cremad/x'; valid: cremad/ogm_ge"):
        preset_data_options("cremad/x")


@pytest.mark.parametrize(
    ("name", "count", "modalities"),
    [
        ("cremad", 6, ("audio", "visual")),
        ("ks", 31, ("audio", "visual")),
        ("vggsound", 309, ("audio", "visual")),
        ("ave", 28, ("audio", "visual")),
        ("ucf101", 101, ("visual", "flow")),
        ("mosei", 2, ("audio", "visual", "text")),
    ],
)
def test_dataset_info_counts(name, count, modalities) -> None:
    info = dataset_info(name)
    assert info.num_classes == count and info.modalities == modalities
    assert dataset_info(name, modalities=modalities[0]).modalities == modalities[:1]


def test_class_orders_are_fixed() -> None:
    assert dataset_info("cremad").classes == ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
    assert dataset_info("cremad", label_order="ogm_ge").classes == ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
    ks = dataset_info("ks").classes
    assert list(ks) == sorted(ks) and ks[0] == "blowing_nose" and ks[-1] == "tickling"


@pytest.mark.parametrize("preset", sorted(DATASET_PRESETS))
def test_presets_are_valid_yaml_friendly_configs(preset) -> None:
    config = DATASET_PRESETS[preset]
    assert set(config) == {"data", "model", "optim", "method", "train", "shapes"}
    data = preset_data_options(preset)
    entry = DATASETS[data.pop("name")]
    assert preset.split("/")[0] == entry.name
    assert not set(data) - set(entry.options()), f"{preset}: options not accepted by the loader"
    assert all(isinstance(v, str | int | float | bool) for v in data.values())
    assert set(config["shapes"]) == set(entry.modalities)
    assert config["model"]["num_classes"] == entry.num_classes
    assert {"name", "lr", "scheduler"} <= set(config["optim"]) and config["train"]["epochs"] > 0
    assert all(set(m) & {"alpha", "q_base"} for m in config["method"].values())
    data["name"] = "changed"
    assert DATASET_PRESETS[preset]["data"]["name"] != "changed"  # a copy
