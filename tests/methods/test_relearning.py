"""Diagnosing and Re-learning against a test-local transcription of the official re-initialisation.

Oracle: ``GeWu-Lab/Diagnosing_Relearning_ECCV2024`` at commit 025085e, ``code/ours.py`` 63-95
(``purity_score``), 99-135 (``reinit_score``: purity gaps, ``tanh(move_lambda * gap)``),
139-169 (``reinit``: blend every encoder parameter with its initial value), 345-349 (initial
parameters saved before training), 418-427 (when). scikit-learn's KMeans is not available here:
the features are well-separated blobs, whose only sensible partition is the blobs themselves,
so the oracle uses the blob index as the cluster assignment (the partition is all purity sees).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat
from modbalance.methods import MethodRequirementError, create_method
from modbalance.methods.base import EpochContext, SplitOutputs
from modbalance.methods.relearning import ReLearning, cluster_purity, kmeans, minmax_scale


def _official_purity_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """``ours.py`` 63-95."""
    y_voted_labels = np.zeros(y_true.shape)
    labels = np.unique(y_true)
    ordered_labels = np.arange(labels.shape[0])
    for k in range(labels.shape[0]):
        y_true[y_true == labels[k]] = ordered_labels[k]
    labels = np.unique(y_true)
    bins = np.concatenate((labels, [np.max(labels) + 1]), axis=0)
    for cluster in np.unique(y_pred):
        hist, _ = np.histogram(y_true[y_pred == cluster], bins=bins)
        winner = np.argmax(hist)
        y_voted_labels[y_pred == cluster] = winner
    return float(np.mean(y_true == y_voted_labels))  # accuracy_score


def _official_reinit(model_params: dict, checkpoint: dict, weight_audio: float, weight_visual: float) -> dict:
    """``ours.py`` 156-166 (every parameter whose name holds audio_net / visual_net)."""
    new = {}
    for name, param in model_params.items():
        w = weight_audio if "audio_net" in name else weight_visual
        new[name] = w * checkpoint[name] + (1 - w) * param
    return new


def _blobs(gen: torch.Generator, label: torch.Tensor, dim: int, classes: int, moved_share: float):
    """Features in ``classes`` far-apart blobs; a sample sits in its label's blob but for ``moved_share`` of them."""
    n = label.shape[0]
    blob = label.clone()
    moved = torch.randperm(n, generator=gen)[: int(moved_share * n)]
    blob[moved] = (blob[moved] + 1) % classes
    centres = torch.randn(classes, dim, generator=gen, dtype=torch.float64) * 50
    return centres[blob] + torch.randn(n, dim, generator=gen, dtype=torch.float64) * 0.1, blob


def _model():
    return MultimodalClassifier(
        {"audio": nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4)), "visual": nn.Linear(5, 3)},
        Concat({"audio": 4, "visual": 3}, num_classes=3),
    ).double()


def test_one_reinitialisation_matches_the_official_code() -> None:
    gen = torch.Generator().manual_seed(0)
    model = _model()
    method = ReLearning()
    method.check(model, held_out=True)
    initial = {
        f"{m}_net.{i}": p.detach().clone()
        for m in ("audio", "visual")
        for i, p in enumerate(model.encoders[m].parameters())
    }
    with torch.no_grad():  # training moved the encoders away from their initial values
        for p in model.encoders.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    before = {
        f"{m}_net.{i}": p.detach().clone()
        for m in ("audio", "visual")
        for i, p in enumerate(model.encoders[m].parameters())
    }
    # audio: purity 1 on train (memorised), about 0.7 on val; visual: about 0.8 on both
    targets = {"train": torch.arange(60) % 3, "val": torch.arange(30) % 3}
    data = {
        ("train", "audio"): _blobs(gen, targets["train"], 4, 3, 0.0),
        ("val", "audio"): _blobs(gen, targets["val"], 4, 3, 0.3),
        ("train", "visual"): _blobs(gen, targets["train"], 3, 3, 0.2),
        ("val", "visual"): _blobs(gen, targets["val"], 3, 3, 0.2),
    }

    def forward(split: str) -> SplitOutputs:
        feats = {m: data[(split, m)][0] for m in ("audio", "visual")}
        n = targets[split].shape[0]
        return SplitOutputs(torch.zeros(n, 3), {}, feats, targets[split])

    stats = method.on_epoch_end(model, EpochContext(20, forward))

    purity = {
        (split, m): _official_purity_score(targets[split].numpy().copy(), data[(split, m)][1].numpy())
        for split in ("train", "val")
        for m in ("audio", "visual")
    }
    weight = {m: math.tanh(3 * abs(purity[("train", m)] - purity[("val", m)])) for m in ("audio", "visual")}
    assert weight["audio"] > 0.5  # the case under test: a clear gap for audio
    assert stats == pytest.approx({f"relearning_weight_{m}": w for m, w in weight.items()}, abs=1e-12)
    expected = _official_reinit(before, initial, weight["audio"], weight["visual"])
    for m in ("audio", "visual"):
        for i, p in enumerate(model.encoders[m].parameters()):
            assert torch.allclose(p, expected[f"{m}_net.{i}"], rtol=1e-6, atol=1e-12)
    assert method.done == 1


def test_schedule_every_reinit_epoch_at_most_reinit_num() -> None:
    method = ReLearning(reinit_epoch=20, reinit_num=3)
    due = []
    for epoch in range(100):
        if method.due(epoch):
            due.append(epoch)
            method.done += 1
    assert due == [20, 40, 60]  # ours.py 418-420: epoch % 20 == 0, epoch > 0, flag <= 3


def test_kmeans_purity_and_scaling() -> None:
    gen = torch.Generator().manual_seed(1)
    feats, blob = _blobs(gen, torch.arange(90) % 4, 5, 4, 0.0)
    clusters = kmeans(minmax_scale(feats), 4, generator=torch.Generator().manual_seed(0))
    assert cluster_purity(blob, clusters) == 1.0  # the blobs are recovered exactly
    assert cluster_purity(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 0])) == 0.5
    scaled = minmax_scale(torch.tensor([[1.0, -2.0], [3.0, 2.0]]))
    assert scaled.tolist() == [[-1.0, -1.0], [1.0, 1.0]]


def test_state_round_trip_for_resume() -> None:
    model = _model()
    method = ReLearning()
    method.check(model, held_out=True)
    method.done = 2
    restored = ReLearning()
    restored.load_state_dict(method.state_dict())
    assert restored.done == 2
    assert torch.equal(restored._initial["audio"][0], method._initial["audio"][0])


def test_requirements_name_the_method_and_the_fix() -> None:
    with pytest.raises(MethodRequirementError, match="method 'relearning' needs a held-out split"):
        ReLearning().check(_model())
    with pytest.raises(MethodRequirementError, match=r"EpochContext\.forward"):
        method = ReLearning(reinit_epoch=1)
        method.check(_model(), held_out=True)
        method.on_epoch_end(_model(), EpochContext(1))
    with pytest.raises(ValueError, match="method 'relearning': reinit_epoch must be an int >= 1"):
        ReLearning(reinit_epoch=0)
    assert isinstance(create_method("relearning", move_lambda=2.0), ReLearning)
    assert copy.deepcopy(ReLearning()).reinit_num == 3


def test_trainer_re_initialises_after_epoch_one(tmp_path) -> None:
    import json

    from modbalance.train import load_config, run

    overrides = ["train.device=cpu", "train.probe=false", "train.epochs=2", "method.name=relearning"]
    config = load_config("lab/tiny", [f"output_dir={tmp_path}", *overrides, "method.options.reinit_epoch=1"])
    records = [json.loads(line) for line in (run(config) / "metrics.jsonl").read_text().splitlines()]
    assert "method/relearning_weight_audio" not in records[0]  # epoch 0: never (ours.py 418)
    for m in ("audio", "visual"):
        assert 0.0 <= records[1][f"method/relearning_weight_{m}"] < 1.0
