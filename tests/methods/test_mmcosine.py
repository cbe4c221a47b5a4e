"""MMCosine against a test-local transcription of the official training step.

Official code: GeWu-Lab/MMCosine_ICASSP23, main_CD.py (commit 00ba0a9):
  lines 114-118  out_a = torch.mm(F.normalize(a, dim=1), F.normalize(W[:, :512].T, dim=0)) * scaling
                 out_v = torch.mm(F.normalize(v, dim=1), F.normalize(W[:, 512:].T, dim=0)) * scaling
                 out = out_a + out_v
  line 138       loss = criterion(out, label) + lam * nce_loss      (lam defaults to 0, line 78)
  lines 185-204  evaluation: uni-modal accuracies from the cosine logits, the fused one from the
                 model's own ``out`` (the ordinary concat head).
BalanceBenchmark (balancemm/trainer/MMCosine_trainer.py, training_step) computes the same logits for
2 or 3 modalities inside its modulation window, else the plain loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat, FiLM, Sum
from modbalance.methods import MethodRequirementError, MMCosine
from modbalance.train import evaluate_run, load_config, run


def official_loss(a: torch.Tensor, v: torch.Tensor, weight: torch.Tensor, label: torch.Tensor, scaling: float):
    """main_CD.py lines 114-118 and 138 (lam = 0), with the 512 split replaced by audio's width."""
    d = a.shape[1]
    out_a = torch.mm(F.normalize(a, dim=1), F.normalize(torch.transpose(weight[:, :d], 0, 1), dim=0))
    out_v = torch.mm(F.normalize(v, dim=1), F.normalize(torch.transpose(weight[:, d:], 0, 1), dim=0))
    out_a = out_a * scaling
    out_v = out_v * scaling
    out = out_a + out_v
    return nn.CrossEntropyLoss()(out, label), out_a, out_v, out


def _model() -> MultimodalClassifier:
    encoders = {"audio": nn.Sequential(nn.Linear(7, 6), nn.ReLU()), "visual": nn.Linear(5, 4)}
    return MultimodalClassifier(encoders, Concat({"audio": 6, "visual": 4}, 3))


@pytest.mark.parametrize("scaling", [10.0, 2.5])
def test_loss_and_gradients_match_the_official_step(scaling: float) -> None:
    ours, theirs = _model(), _model()
    theirs.load_state_dict(ours.state_dict())
    inputs = {"audio": torch.randn(16, 7), "visual": torch.randn(16, 5)}
    label = torch.randint(0, 3, (16,))
    method = MMCosine(scaling=scaling)

    out = ours(inputs)
    loss = method.loss(ours, out, label, epoch=0)
    loss.backward()
    parts = method.cosine_logits(ours, out.features)

    a, v = theirs.encoders["audio"](inputs["audio"]), theirs.encoders["visual"](inputs["visual"])
    reference, out_a, out_v, fused = official_loss(a, v, theirs.fusion.head.weight, label, scaling)
    reference.backward()

    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(parts["audio"], out_a, rtol=0, atol=1e-6)
    torch.testing.assert_close(parts["visual"], out_v, rtol=0, atol=1e-6)
    torch.testing.assert_close(method.predict(ours, out), fused, rtol=0, atol=1e-6)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        if q.grad is None:  # the head's bias takes no part in the cosine logits, in either
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-6, msg=name)


def test_head_prediction_is_the_official_fused_evaluation() -> None:
    model = _model()
    out = model({"audio": torch.randn(4, 7), "visual": torch.randn(4, 5)})
    assert torch.equal(MMCosine(prediction="head").predict(model, out), out.logits)


def test_sum_fusion_uses_each_modality_head() -> None:
    model = MultimodalClassifier({"a": nn.Linear(3, 4), "v": nn.Linear(3, 2)}, Sum({"a": 4, "v": 2}, 5))
    out = model({"a": torch.randn(6, 3), "v": torch.randn(6, 3)})
    parts = MMCosine(scaling=3.0).cosine_logits(model, out.features)
    expected = 3.0 * F.cosine_similarity(out.features["a"][:, None, :], model.fusion.heads["a"].weight[None], dim=2)
    torch.testing.assert_close(parts["a"], expected, rtol=0, atol=1e-6)


def test_window_and_errors() -> None:
    model = _model()
    out = model({"audio": torch.randn(4, 7), "visual": torch.randn(4, 5)})
    label = torch.tensor([0, 1, 2, 0])
    outside = MMCosine(start_epoch=3).loss(model, out, label, epoch=2)
    torch.testing.assert_close(outside, F.cross_entropy(out.logits, label))
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match=r"method 'mmcosine': scaling=.* must be a finite number > 0"):
            MMCosine(scaling=bad)
    with pytest.raises(ValueError, match="prediction='fused' must be 'cosine' or 'head'"):
        MMCosine(prediction="fused")
    with pytest.raises(MethodRequirementError, match=r"'mmcosine' does not support distributed training"):
        MMCosine().check_settings(distributed=True)
    film = MultimodalClassifier({"a": nn.Linear(3, 4), "v": nn.Linear(3, 2)}, FiLM({"a": 4, "v": 2}, 5))
    with pytest.raises(MethodRequirementError, match=r"'mmcosine' needs a fusion with exact per-modality heads"):
        MMCosine().check(film)


def test_trainer_runs_an_epoch(tmp_path: Path) -> None:
    config = load_config(
        "lab/tiny",
        [f"output_dir={tmp_path}", "train.device=cpu", "train.epochs=1", "train.probe=false", "method.name=mmcosine"],
    )
    folder = run(config)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["method"] == "mmcosine" and 0.0 <= summary["test"]["accuracy"] <= 1.0
    # a rebuilt run scores with the method's prediction too (the cosine logits, not the head's)
    assert abs(evaluate_run(folder)["accuracy"] - summary["test"]["accuracy"]) < 1e-9
    bad = load_config("lab/tiny", [f"output_dir={tmp_path / 'bad'}", "method.name=mmcosine", "model.fusion=film"])
    with pytest.raises(ValueError, match=r"method.name='mmcosine'.*model.fusion= one of: concat, sum"):
        run(bad)
