"""MSLR (Yao and Mihalcea, Findings of ACL 2022): one learning rate per modality.

The paper's rule (its "keep" strategy, no official code is public): modality m's sub-network is
updated with its own learning rate eta_m, w <- w - eta_m * g for plain SGD; here checked against
that update written out by hand on random inputs, for the additive late fusion of the paper (Sum:
encoder and head of a modality share eta_m) and for a shared concat head (base rate).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat, Sum
from modbalance.methods import MSLR, MethodRequirementError, create_method
from modbalance.train import load_config, run


def _model(fusion: type) -> MultimodalClassifier:
    encoders = {"audio": nn.Linear(5, 4), "visual": nn.Sequential(nn.Linear(6, 3), nn.ReLU())}
    return MultimodalClassifier(encoders, fusion({"audio": 4, "visual": 3}, 3))


@pytest.mark.parametrize("fusion", [Sum, Concat])
def test_one_sgd_step_uses_each_modality_rate(fusion: type) -> None:
    model = _model(fusion)
    rates = {"audio": 0.3, "visual": 0.02}
    base = 0.1
    method = MSLR(lrs=rates)
    optimizer = torch.optim.SGD(method.param_groups(model, base), lr=base)
    inputs = {"audio": torch.randn(8, 5), "visual": torch.randn(8, 6)}
    target = torch.randint(0, 3, (8,))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    method.loss(model, model(inputs), target, epoch=0).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}  # type: ignore[union-attr]
    method.before_step(model, optimizer, epoch=0)
    optimizer.step()

    def rate(name: str) -> float:  # the paper's assignment, written out by parameter name
        for modality in rates:
            if name.startswith(f"encoders.{modality}.") or name.startswith(f"fusion.heads.{modality}."):
                return rates[modality]
        return base  # the shared concat head

    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name] - rate(name) * grads[name], rtol=0, atol=1e-7)
    assert {rate(name) for name, _ in model.named_parameters()} == ({0.3, 0.02} if fusion is Sum else {0.3, 0.02, base})


def test_loss_is_plain_cross_entropy() -> None:
    model = _model(Sum)
    out = model({"audio": torch.randn(4, 5), "visual": torch.randn(4, 6)})
    target = torch.tensor([0, 1, 2, 0])
    assert torch.equal(MSLR(lrs={"audio": 1.0}).loss(model, out, target), F.cross_entropy(out.logits, target))


def test_bad_rates_and_windows_are_refused() -> None:
    for bad in (0.0, -1e-3, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match=r"method 'mslr': lrs\['audio'\]=.* must be a finite number > 0"):
            MSLR(lrs={"audio": bad})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="lrs must map modality names to learning rates"):
        MSLR(lrs={})
    with pytest.raises(ValueError, match="learning rates hold for the whole run"):
        MSLR(lrs={"audio": 0.1}, start_epoch=2)
    with pytest.raises(MethodRequirementError, match=r"lrs names \['text'\].*modalities are \['audio', 'visual'\]"):
        MSLR(lrs={"text": 0.1}).check(_model(Sum))
    with pytest.raises(TypeError, match="Accepted: lrs"):
        create_method("mslr")


def test_trainer_runs_an_epoch_with_modality_rates(tmp_path: Path) -> None:
    config = load_config(
        "lab/tiny",
        [
            f"output_dir={tmp_path}",
            "train.device=cpu",
            "train.epochs=1",
            "train.probe=false",
            "method.name=mslr",
            "method.options.lrs={audio: 0.01, visual: 0.2}",
        ],
    )
    folder = run(config)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["method"] == "mslr" and summary["epochs_run"] == 1
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0
