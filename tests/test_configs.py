"""Every shipped YAML config loads and validates; each dataset config is generated from its setting.

The dataset settings are defined once, in ``modbalance.data.presets`` (``DATASET_PRESETS`` and
``CONFIG_NOTES``); ``docs/make_configs.py`` writes the YAML files, and the shipped files must equal its
output. The checks below then compare the loaded configs with the settings, so that the generator's
mapping is itself tested. The ``lab/`` configs are hand-written examples. No data is read: configs are
loaded with a dummy ``data.root``, and the encoders are checked on zero tensors of the per-sample shapes
the setting documents.
"""

import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("omegaconf", reason='the trainer needs the train extra: pip install "modbalance[train]"')

from modbalance.data.presets import CONFIG_NOTES, DATASET_PRESETS, config_names, render_config
from modbalance.data.registry import dataset_info
from modbalance.encoders.registry import build_encoder
from modbalance.train import ConfigError, load_config, run
from modbalance.train.config import CONFIG_DIR, resolve_config_path

ALL = sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml"))
DATASET_CONFIGS = [name for name in ALL if not name.startswith("lab/")]
DUMMY_ROOT = "data.root=/nonexistent/prepared"


def preset_of(name: str) -> str:
    """``cremad/tpami_opm`` -> ``cremad/tpami``: the longest preset name the config name starts with."""
    matches = [p for p in DATASET_PRESETS if name == p or name.startswith(p + "_")]
    assert matches, f"config {name} names no preset of DATASET_PRESETS"
    return max(matches, key=len)


def test_configs_were_found() -> None:
    assert {"lab/tiny", "cremad/ogm_ge_ogm_ge", "cremad/tpami_opm", "mosei/balancebench_opm"} <= set(ALL)


def test_shipped_dataset_configs_are_exactly_the_generated_ones() -> None:
    assert set(DATASET_CONFIGS) == set(config_names())
    assert set(CONFIG_NOTES) == set(DATASET_PRESETS)


@pytest.mark.parametrize("name", DATASET_CONFIGS)
def test_shipped_dataset_config_equals_the_generator_output(name: str) -> None:
    assert (CONFIG_DIR / f"{name}.yaml").read_text() == render_config(name), (
        f"{name}.yaml is stale: run python docs/make_configs.py"
    )


@pytest.mark.parametrize("setting", sorted(DATASET_PRESETS))
def test_a_setting_name_alone_names_its_ogm_ge_config(setting: str) -> None:
    assert resolve_config_path(setting) == CONFIG_DIR / f"{setting}_ogm_ge.yaml"
    assert load_config(setting, [DUMMY_ROOT]) == load_config(f"{setting}_ogm_ge", [DUMMY_ROOT])


def test_opm_ogm_gets_one_window_per_component_where_the_preset_windows_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cremad/tpami ships no opm+ogm file; rendered, its OGM keeps 6-80 and its OPM runs from 6 to the end."""
    notes = dict(CONFIG_NOTES["cremad/tpami"], methods=(*CONFIG_NOTES["cremad/tpami"]["methods"], "opm+ogm"))
    monkeypatch.setitem(CONFIG_NOTES, "cremad/tpami", notes)
    path = tmp_path / "opm_ogm.yaml"
    path.write_text(render_config("cremad/tpami_opm_ogm"))
    method = load_config(path, [DUMMY_ROOT]).method
    assert method.name == "opm+ogm" and (method.alpha, method.q_base, method.param_filter) == (2.6, 0.5, "conv")
    windows = {name: (w.start_epoch, w.end_epoch) for name, w in method.windows.items()}
    assert windows == {"ogm": (6, 80), "opm": (6, None)}


def test_unknown_config_names_list_the_shipped_ones() -> None:
    with pytest.raises(FileNotFoundError, match=r"config file 'cremad/paper' not found \(shipped configs: "):
        resolve_config_path("cremad/paper")
    with pytest.raises(ValueError, match="unknown generated config 'cremad/tpami'"):
        render_config("cremad/tpami")


@pytest.mark.parametrize("name", ALL)
def test_shipped_config_loads_and_validates(name: str) -> None:
    overrides = [] if name.startswith("lab/") else [DUMMY_ROOT]
    config = load_config(name, overrides)
    text = (CONFIG_DIR / f"{name}.yaml").read_text()
    first = text.splitlines()[0]
    assert first.startswith("# Launch:") and f"--config {name}" in first
    if not name.startswith("lab/"):
        assert config.data.root == "/nonexistent/prepared"
        assert "# Provenance" in text and "# Ours" in text


@pytest.mark.parametrize("name", DATASET_CONFIGS)
def test_dataset_config_follows_its_preset(name: str) -> None:
    preset = DATASET_PRESETS[preset_of(name)]
    config = load_config(name, [DUMMY_ROOT])
    data = dict(preset["data"])
    assert config.data.name == data.pop("name")
    assert config.data.options == data
    modalities = dataset_info(config.data.name, **config.data.options).modalities
    assert set(config.model.encoders) == set(preset["shapes"]) == set(modalities)
    assert config.model.fusion == preset["model"]["fusion"]
    optim = preset["optim"]
    assert (config.optim.name, config.optim.lr, config.optim.weight_decay) == (
        optim["name"],
        optim["lr"],
        optim["weight_decay"],
    )
    if optim["name"] == "sgd":
        assert config.optim.momentum == optim.get("momentum", 0.9)
    scheduler = config.optim.scheduler
    assert (scheduler.name, scheduler.step_size, scheduler.gamma) == tuple(
        optim["scheduler"][k] for k in ("name", "step_size", "gamma")
    )
    assert (config.train.epochs, config.train.batch_size, config.seed) == (
        preset["train"]["epochs"],
        preset["train"]["batch_size"],
        preset["train"]["seed"],
    )


def _active_epochs(start: int, end: int | None, epochs: int) -> set[int]:
    return set(range(start, (epochs - 1 if end is None else end) + 1))


def _balanced(name: str) -> bool:
    method = load_config(name, [DUMMY_ROOT]).method.name
    return method != "joint" and not method.startswith("unimodal:")


@pytest.mark.parametrize("name", [n for n in DATASET_CONFIGS if _balanced(n)])
def test_method_settings_follow_the_preset_and_unpublished_values_are_marked(name: str) -> None:
    preset = DATASET_PRESETS[preset_of(name)]
    config = load_config(name, [DUMMY_ROOT])
    method, epochs = config.method, config.train.epochs
    text = (CONFIG_DIR / f"{name}.yaml").read_text()
    ours = text.split("# Ours", 1)[1].split("\ndata:", 1)[0]
    if method.name in ("ogm", "opm+ogm"):  # plain OGM (no noise) and OPM with OGM: the preset's alpha and window
        ogm = preset["method"]["ogm"]
        assert method.alpha == ogm["alpha"] and method.coefficient == "reference"
        assert _active_epochs(method.start_epoch, method.end_epoch, epochs) == _active_epochs(
            ogm["start_epoch"], ogm["end_epoch"], epochs
        )
    if method.name == "ogm":
        pass
    elif method.name == "ogm_ge":
        ogm = preset["method"]["ogm"]
        assert ogm["variant"] == "ogm_ge" and ogm["noise"] is True
        if ogm["alpha"] is None:  # not published: the file must say the value is ours
            assert "method.alpha" in ours and re.search(r"not published|never published", ours)
        else:
            assert method.alpha == ogm["alpha"]
        # The preset's window, minus the TPAMI code's hard-coded warm-up epochs 0..warmup_epochs.
        warm_up = set(range(ogm.get("warmup_epochs", -1) + 1))
        expected = _active_epochs(ogm["start_epoch"], ogm["end_epoch"], epochs) - warm_up
        assert _active_epochs(method.start_epoch, method.end_epoch, epochs) == expected
        assert method.coefficient == "reference"
    else:
        assert method.name in ("opm", "opm+ogm")
        opm = preset["method"]["opm"]
        assert (method.q_base, method.lam, method.p_exe) == (opm["q_base"], opm["lam"], opm["p_exe"])
        if "start_epoch" in opm:
            assert (method.start_epoch, method.end_epoch) == (opm["start_epoch"], opm.get("end_epoch"))
        else:
            assert "OPM from epoch" in ours
    if preset["data"]["name"] == "mosei":
        assert method.rule == "sum_others"  # BalanceBench's OPM ratio for three modalities


_SEEN: dict[tuple, tuple[int, ...]] = {}


@pytest.mark.parametrize("name", DATASET_CONFIGS)
def test_encoders_take_the_preset_shapes(name: str) -> None:
    """Each encoder maps a batch of two samples of the preset's shape to (2, D) features."""
    preset = DATASET_PRESETS[preset_of(name)]
    config = load_config(name, [DUMMY_ROOT])
    for modality, shape in preset["shapes"].items():
        encoder = config.model.encoders[modality]
        options = dict(encoder.options)
        if encoder.name in ("transformer", "mlp"):
            options.setdefault("in_dim", shape[-1])
        key = (encoder.name, tuple(sorted(options.items())), tuple(shape))
        if key not in _SEEN:
            module = build_encoder(encoder.name, **options).eval()
            with torch.no_grad():
                _SEEN[key] = tuple(module(torch.zeros(2, *shape)).shape)
        assert len(_SEEN[key]) == 2 and _SEEN[key][0] == 2, f"{name}: {modality} gives {_SEEN[key]}"


def test_a_dataset_config_without_data_root_is_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.root is required for dataset 'cremad'"):
        run(load_config("cremad/ogm_ge", [f"output_dir={tmp_path}"]))
    missing = tmp_path / "not-prepared"
    with pytest.raises(ConfigError, match=re.escape(f"data.root={str(missing)!r}: no such folder")):
        run(load_config("cremad/ogm_ge", [f"output_dir={tmp_path}", f"data.root={missing}"]))
    assert not (tmp_path / "cremad-ogm_ge-seed0" / "metrics.jsonl").exists()
