"""The plug-in protocol of modbalance.methods.base: window, checks, per-modality logits, state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat, FiLM, Sum
from modbalance.methods import BalancingMethod, MethodRequirementError, Requirements, unimodal_logits_with_grad


def _model(fusion: str = "concat", modalities: str = "av") -> MultimodalClassifier:
    dims = {m: 3 for m in modalities}
    encoders = {m: nn.Linear(4, 3) for m in modalities}
    heads = {"concat": Concat, "sum": Sum, "film": FiLM}
    return MultimodalClassifier(encoders, heads[fusion](dims, 5))


class Doubling(BalancingMethod):
    name = "doubling"

    def __init__(self, **window: int | None) -> None:
        super().__init__(**window)  # type: ignore[arg-type]
        self.calls = 0

    def compute_loss(self, model, out, target, *, epoch=None, inputs=None):  # type: ignore[no-untyped-def]
        return 2 * F.cross_entropy(out.logits.float(), target)

    def modify_gradients(self, model, optimizer, *, epoch=None):  # type: ignore[no-untyped-def]
        self.calls += 1

    def get_extra_state(self) -> dict[str, int]:
        return {"calls": self.calls}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.calls = state["calls"]


def test_window_switches_loss_and_gradient_hook() -> None:
    model, method = _model(), Doubling(start_epoch=1, end_epoch=2)
    x, y = {"a": torch.randn(6, 4), "v": torch.randn(6, 4)}, torch.randint(0, 5, (6,))
    out = model(x)
    plain = F.cross_entropy(out.logits, y)
    losses = [method.loss(model, out, y, epoch=e) for e in range(4)]
    torch.testing.assert_close(torch.stack(losses), torch.stack([plain, 2 * plain, 2 * plain, plain]))
    optimizer = torch.optim.SGD(method.param_groups(model, 0.1), lr=0.1)
    for epoch in range(4):
        method.before_step(model, optimizer, epoch=epoch)
    assert method.calls == 2
    assert method.active(None)


def test_extra_state_round_trip() -> None:
    method = Doubling()
    method.calls = 7
    restored = Doubling()
    restored.load_state_dict(method.state_dict())
    assert restored.calls == 7


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_unimodal_logits_with_grad_add_up_and_train(fusion: str) -> None:
    model = _model(fusion)
    out = model({"a": torch.randn(6, 4), "v": torch.randn(6, 4)})
    parts = unimodal_logits_with_grad(model, out.features)
    torch.testing.assert_close(parts["a"] + parts["v"], out.logits)
    for m in "av":  # the same values as the detached decomposition OGM/OPM use
        torch.testing.assert_close(parts[m].detach(), out.unimodal_logits[m])
    parts["a"].sum().backward()
    assert model.encoders["a"].weight.grad is not None and model.encoders["v"].weight.grad is None


def test_unimodal_logits_with_grad_refuses_nonlinear_fusion() -> None:
    model = _model("film")
    with pytest.raises(MethodRequirementError, match=r"FiLM.*model.fusion=concat"):
        unimodal_logits_with_grad(model, model.encode({"a": torch.randn(2, 4), "v": torch.randn(2, 4)}))


class Picky(BalancingMethod):
    name = "picky"
    requires = Requirements(
        max_modalities=2, fusions=("Concat",), held_out=True, ddp=False, amp=False, grad_accum=False
    )


def test_check_names_method_missing_piece_and_fix() -> None:
    method = Picky()
    with pytest.raises(MethodRequirementError, match=r"'picky' needs a modbalance.MultimodalClassifier"):
        method.check(nn.Linear(2, 2))
    with pytest.raises(MethodRequirementError, match=r"at least 2 modalities.*method.name=joint"):
        method.check(_model(modalities="a"), held_out=True)
    with pytest.raises(MethodRequirementError, match=r"at most 2 modalities"):
        method.check(_model(modalities="avt"), held_out=True)
    with pytest.raises(MethodRequirementError, match=r"fusion is Sum.*model.fusion= one of: concat"):
        method.check(_model("sum"), held_out=True)
    with pytest.raises(MethodRequirementError, match=r"held-out split.*data.val_fraction"):
        method.check(_model())
    method.check(_model(), held_out=True)


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"distributed": True}, "distributed training"),
        ({"precision": "bf16"}, "train.precision='bf16'"),
        ({"grad_accum_steps": 2}, "train.grad_accum_steps=2"),
    ],
)
def test_check_settings_refuses_unsupported(setting: dict[str, object], match: str) -> None:
    with pytest.raises(MethodRequirementError, match=rf"'picky'.*{match}"):
        Picky().check_settings(**setting)  # type: ignore[arg-type]
    Doubling().check_settings(**setting)  # type: ignore[arg-type]


def test_bad_window_is_refused() -> None:
    with pytest.raises(ValueError, match=r"start_epoch must be an int >= 0"):
        Doubling(start_epoch=-1)
    with pytest.raises(ValueError, match=r"end_epoch=0 must be None or >= start_epoch=1"):
        Doubling(start_epoch=1, end_epoch=0)
