"""PMR against a test-local transcription of the official code.

Official code: fanyunfeng-bit/Modal-Imbalance-PMR, main_Prototype_grad.py (commit 3615e48):
  lines 69-75    EU_dist: pairwise Euclidean distances, sqrt(dot(x1[i] - x2[j], x1[i] - x2[j]))
  lines 152-178  audio_sim = -EU_dist(a, audio_proto); score_*_p = sum of true-class softmax; ratio_a_p;
                 beta/lam = (0, alpha) if ratio > 1, (alpha, 0) if < 1, (0, 0) if equal;
                 loss = CE(out) + beta * CE(audio_sim) + lam * CE(visual_sim)
  lines 417-440  prototypes: per-class sums / counts; after epoch e >= 1: (1 - mu) * new + mu * old
  lines 532-557  computed before epoch 0 (epoch=0) and after every epoch (with that epoch's index)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat
from modbalance.methods import PMR, MethodRequirementError
from modbalance.train import load_config, run


def eu_dist(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:  # lines 69-75
    d_matrix = torch.zeros(x1.shape[0], x2.shape[0])
    for i in range(x1.shape[0]):
        for j in range(x2.shape[0]):
            d_matrix[i, j] = torch.sqrt(torch.dot((x1[i] - x2[j]), (x1[i] - x2[j])))
    return d_matrix


def official_loss(a, v, out, label, audio_proto, visual_proto, alpha):  # lines 152-178
    criterion, softmax = nn.CrossEntropyLoss(), nn.Softmax(dim=1)
    audio_sim = -eu_dist(a, audio_proto)
    visual_sim = -eu_dist(v, visual_proto)
    score_a_p = sum([softmax(audio_sim)[i][label[i]] for i in range(audio_sim.size(0))])
    score_v_p = sum([softmax(visual_sim)[i][label[i]] for i in range(visual_sim.size(0))])
    ratio_a_p = score_a_p / score_v_p
    loss_proto_a = criterion(audio_sim, label)
    loss_proto_v = criterion(visual_sim, label)
    if ratio_a_p > 1:
        beta, lam = 0, 1 * alpha
    elif ratio_a_p < 1:
        beta, lam = 1 * alpha, 0
    else:
        beta, lam = 0, 0
    return criterion(out, label) + beta * loss_proto_a + lam * loss_proto_v, ratio_a_p


def official_prototypes(a, v, label, n_classes, epoch, momentum, a_proto=None, v_proto=None):  # lines 397-441
    audio_prototypes = torch.zeros(n_classes, a.shape[1])
    visual_prototypes = torch.zeros(n_classes, v.shape[1])
    count_class = [0 for _ in range(n_classes)]
    for c, l in enumerate(label):  # noqa: E741 (the official names)
        count_class[l] += 1
        audio_prototypes[l, :] += a[c, :]
        visual_prototypes[l, :] += v[c, :]
    for c in range(audio_prototypes.shape[0]):
        audio_prototypes[c, :] /= count_class[c]
        visual_prototypes[c, :] /= count_class[c]
    if epoch <= 0:
        return audio_prototypes, visual_prototypes
    return (
        (1 - momentum) * audio_prototypes + momentum * a_proto,
        (1 - momentum) * visual_prototypes + momentum * v_proto,
    )


def _model() -> MultimodalClassifier:
    encoders = {"audio": nn.Sequential(nn.Linear(7, 6), nn.ReLU()), "visual": nn.Linear(5, 4)}
    return MultimodalClassifier(encoders, Concat({"audio": 6, "visual": 4}, 3))


def test_prototype_schedule_matches_the_official_calls() -> None:
    # official: P0 = calc(epoch=0) before training; after epoch e: calc(epoch=e, old) -> used in epoch e + 1
    pmr, official = PMR(momentum=0.2), None
    label = torch.arange(30) % 3
    for epoch in range(4):  # the prototypes used in ``epoch``
        a, v = torch.randn(30, 6), torch.randn(30, 4)
        pmr.update_prototypes({"audio": a, "visual": v}, label, num_classes=3, epoch=epoch)
        computed_after = max(epoch - 1, 0)  # the official epoch index of this computation
        official = official_prototypes(a, v, label, 3, computed_after, 0.2, *(official or (None, None)))
        assert pmr.prototypes is not None
        torch.testing.assert_close(pmr.prototypes["audio"], official[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(pmr.prototypes["visual"], official[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 2.5])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_loss_and_gradients_match_the_official_step(alpha: float, seed: int) -> None:
    torch.manual_seed(seed)
    ours, theirs = _model(), _model()
    theirs.load_state_dict(ours.state_dict())
    inputs = {"audio": torch.randn(12, 7), "visual": torch.randn(12, 5)}
    label = torch.randint(0, 3, (12,))
    protos = {"audio": torch.randn(3, 6), "visual": torch.randn(3, 4)}
    method = PMR(alpha=alpha)
    method.prototypes = {m: p.clone() for m, p in protos.items()}

    loss = method.loss(ours, ours(inputs), label, epoch=0)
    loss.backward()
    a, v = theirs.encoders["audio"](inputs["audio"]), theirs.encoders["visual"](inputs["visual"])
    out = theirs.fusion({"audio": a, "visual": v})
    reference, _ = official_loss(a, v, out, label, protos["audio"], protos["visual"], alpha)
    reference.backward()

    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-6)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-6, msg=name)


def test_both_branches_of_the_ratio_are_exercised() -> None:
    label = torch.tensor([0, 1, 2, 0])
    near = 5.0 * torch.eye(3)  # distinct prototypes, the features sit on them: confident
    far = torch.zeros(3, 3)  # identical prototypes: uniform softmax, the lower score
    features = near[label]
    for audio_protos, visual_protos, boosted in ((near, far, "visual"), (far, near, "audio")):
        pmr = PMR(alpha=1.0)
        pmr.prototypes = {"audio": audio_protos, "visual": visual_protos}
        out = ModelLike(torch.zeros(4, 3), {"audio": features, "visual": features})
        sims = pmr.prototype_logits(out.features)
        loss = pmr.compute_loss(TwoModalities(), out, label)  # type: ignore[arg-type]
        expected = F.cross_entropy(out.logits, label) + F.cross_entropy(sims[boosted], label)
        torch.testing.assert_close(loss, expected)


class ModelLike:
    def __init__(self, logits: torch.Tensor, features: dict[str, torch.Tensor]) -> None:
        self.logits, self.features = logits, features


class TwoModalities:
    modalities: ClassVar[list[str]] = ["audio", "visual"]


def test_errors() -> None:
    for bad in (-1.0, float("nan"), True):
        with pytest.raises(ValueError, match=r"method 'pmr': alpha=.* must be a finite number >= 0"):
            PMR(alpha=bad)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"momentum=.* must be in \[0, 1\)"):
            PMR(momentum=bad)
    model = _model()
    out = model({"audio": torch.randn(2, 7), "visual": torch.randn(2, 5)})
    with pytest.raises(RuntimeError, match="has no prototypes yet: call on_epoch_start"):
        PMR().loss(model, out, torch.tensor([0, 1]), epoch=0)
    three = MultimodalClassifier({m: nn.Linear(3, 2) for m in "abc"}, Concat({m: 2 for m in "abc"}, 2))
    with pytest.raises(MethodRequirementError, match=r"'pmr' is defined for at most 2 modalities"):
        PMR().check(three)


def test_trainer_runs_epochs_and_resumes_prototypes(tmp_path: Path) -> None:
    config = load_config(
        "lab/tiny",
        [f"output_dir={tmp_path}", "train.device=cpu", "train.epochs=2", "train.probe=false", "method.name=pmr"],
    )
    folder = run(config)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["method"] == "pmr" and summary["epochs_run"] == 2
    from modbalance.train.checkpoint import load_checkpoint

    saved = load_checkpoint(folder / "checkpoints" / "last.pt")["ranks"][0]["method"]["_extra_state"]["prototypes"]
    assert saved["audio"].shape == (3, 8) and bool(torch.isfinite(saved["visual"]).all())
