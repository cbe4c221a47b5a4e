"""What one run writes: config, per-epoch metrics, summary, checkpoints, TensorBoard, log; and eval."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("omegaconf", reason='the trainer needs the train extra: pip install "modbalance[train]"')
pytest.importorskip("tensorboard", reason='the trainer needs the train extra: pip install "modbalance[train]"')

from modbalance.data.synthetic import SyntheticLab, lab_preset
from modbalance.runfolder import read_metrics
from modbalance.train import evaluate_run, load_config, run
from modbalance.train.checkpoint import load_checkpoint

# The tiny preset has 240 training samples: 8 batches of 32 per epoch.
STEPS_PER_EPOCH = math.ceil(lab_preset("tiny").n_train / 32)


def tiny_run(tmp_path, name, *overrides):
    config = load_config("lab/tiny", [f"output_dir={tmp_path}", f"run_name={name}", *overrides])
    return run(config)


@pytest.fixture(scope="module")
def ogm_run(tmp_path_factory):
    return tiny_run(
        tmp_path_factory.mktemp("runs"), "ogm", "method.name=ogm", "train.probe=true", "train.probe_steps=20"
    )


def test_run_folder_holds_every_output(ogm_run):
    names = {p.name for p in ogm_run.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "summary.json", "checkpoints", "tb", "train.log"} <= names
    assert {p.name for p in (ogm_run / "checkpoints").iterdir()} >= {"best.pt", "last.pt"}
    assert any(p.name.startswith("events.out.tfevents") for p in (ogm_run / "tb").iterdir())
    assert "best epoch" in (ogm_run / "train.log").read_text()


def test_saved_config_is_the_resolved_config(ogm_run, tmp_path):
    saved = load_config(ogm_run / "config.yaml")
    assert saved.method.name == "ogm" and saved.run_name == "ogm" and saved.train.probe is True
    assert saved == load_config(
        "lab/tiny",
        [f"output_dir={ogm_run.parent}", "run_name=ogm", "method.name=ogm", "train.probe=true", "train.probe_steps=20"],
    )


def test_metrics_jsonl_has_one_record_per_epoch_with_every_metric(ogm_run):
    records = read_metrics(ogm_run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert [r["step"] for r in records] == [STEPS_PER_EPOCH * (e + 1) for e in range(3)]
    keys = {"lr", "train/loss", "train/accuracy", "val/loss", "val/accuracy", "val/macro_f1", "val/map"}
    for m in ("audio", "visual"):
        keys |= {f"train/accuracy/{m}", f"val/accuracy/{m}", f"train/rho/{m}", f"val/rho/{m}", f"train/k/{m}"}
    for record in records:
        assert keys <= set(record)
        for key in keys:
            assert math.isfinite(record[key])
        assert all(0.0 <= record[k] <= 1.0 for k in keys if "accuracy" in k or k.endswith(("f1", "map")))
        assert all(0.0 < record[f"train/k/{m}"] <= 1.0 for m in ("audio", "visual"))
        # for two modalities the ratios are reciprocal (s_a / s_v and s_v / s_a)
        assert record["train/rho/audio"] * record["train/rho/visual"] == pytest.approx(1.0, rel=1e-5)
        assert not any(k.startswith("train/q/") for k in record)  # no OPM in this run


def test_summary_reports_the_best_validation_epoch_on_the_test_split(ogm_run):
    summary = json.loads((ogm_run / "summary.json").read_text())
    records = read_metrics(ogm_run / "metrics.jsonl")
    accuracies = [r["val/accuracy"] for r in records]
    assert summary["best_epoch"] == accuracies.index(max(accuracies))  # first epoch reaching the maximum
    assert summary["select_metric"] == "val/accuracy"
    assert summary["val"]["accuracy"] == max(accuracies)
    assert set(summary["test"]) >= {"accuracy", "macro_f1", "map", "loss", "accuracy/audio", "accuracy/visual"}
    assert set(summary["probe"]) == {"audio", "visual"}
    assert summary["bayes"] == pytest.approx(SyntheticLab(lab_preset("tiny"), seed=0).bayes_accuracy())
    assert summary["epochs_run"] == 3 and summary["global_step"] == 3 * STEPS_PER_EPOCH
    assert summary["wall_time_s"] > 0


def test_best_checkpoint_is_the_selected_epochs_model(ogm_run):
    summary = json.loads((ogm_run / "summary.json").read_text())
    best = load_checkpoint(ogm_run / "checkpoints" / "best.pt")
    assert best["epoch"] == summary["best_epoch"]
    assert best["select_metric"] == "accuracy" and best["value"] == summary["val"]["accuracy"]


def test_eval_reproduces_the_summary_test_metrics(ogm_run):
    summary = json.loads((ogm_run / "summary.json").read_text())
    again = evaluate_run(ogm_run, device="cpu")
    assert again == pytest.approx(summary["test"], abs=1e-6)
    val = evaluate_run(ogm_run, split="val", device="cpu")
    assert val["accuracy"] == pytest.approx(summary["val"]["accuracy"], abs=1e-6)


def test_eval_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        evaluate_run(tmp_path)


def test_a_second_run_into_the_same_folder_is_refused(ogm_run):
    with pytest.raises(FileExistsError, match="already holds a run; resume it with --resume"):
        tiny_run(ogm_run.parent, "ogm", "method.name=ogm")


@pytest.mark.parametrize(
    ("method", "has_k", "has_q"), [("joint", False, False), ("opm", False, True), ("opm+ogm", True, True)]
)
def test_traces_follow_the_method(tmp_path, method, has_k, has_q):
    records = read_metrics(tiny_run(tmp_path, "m", f"method.name={method}", "train.epochs=1") / "metrics.jsonl")
    (record,) = records
    assert ("train/k/audio" in record) == has_k
    assert ("train/q/audio" in record) == has_q
    if has_q:
        assert all(0.0 <= record[f"train/q/{m}"] <= 1.0 for m in ("audio", "visual"))
        # OPM never drops a modality whose ratio is below one, so at most one can have q > 0 per step;
        # the epoch means of both cannot both reach q_base
        assert min(record["train/q/audio"], record["train/q/visual"]) < 0.5


def test_unimodal_run_uses_one_modality(tmp_path):
    folder = tiny_run(tmp_path, "u", "method.name=unimodal:visual", "train.epochs=1")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["modalities"] == ["visual"]
    assert summary["test"]["accuracy"] == summary["test"]["accuracy/visual"]  # one-modality head: same logits
    assert "accuracy/audio" not in summary["test"]


def test_validation_held_out_of_train_never_overlaps_it(tmp_path):
    from modbalance.train.data import build_data

    config = load_config("lab/tiny", ["data.val_fraction=0.25", "data.val_split=test"])  # val_split is then unused
    splits = build_data(config).splits
    n = lab_preset("tiny").n_train
    assert (len(splits["train"]), len(splits["val"])) == (n - n // 4, n // 4)
    assert not set(splits["train"].indices.tolist()) & set(splits["val"].indices.tolist())
    folder = run(load_config("lab/tiny", [f"output_dir={tmp_path}", "data.val_fraction=0.25", "train.epochs=1"]))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["global_step"] == math.ceil((n - n // 4) / 32)


def test_opm_drop_probabilities_reach_the_epoch_records(tmp_path):
    # Epoch 0 is outside OPM's window (q = 0 for every modality); in epoch 1 the dominant modality's
    # mean q is positive and at most q_base * (1 + lam) (the tanh ratio term is below 1), which a
    # trainer that dropped OPM's q from its records (or logged zeros) would fail.
    folder = tiny_run(tmp_path, "opm", "method.name=opm", "method.start_epoch=1", "train.epochs=2")
    records = read_metrics(folder / "metrics.jsonl")
    modalities = sorted(lab_preset("tiny").modalities)
    assert [records[0][f"train/q/{m}"] for m in modalities] == [0.0] * len(modalities)
    q = [records[1][f"train/q/{m}"] for m in modalities]
    assert max(q) > 0.0
    assert all(0.0 <= value <= 0.5 * (1 + 0.5) for value in q)
