"""G-Blending against hand-computed weights and test-local transcriptions of two re-implementations.

The authors' release (``facebookresearch/VMZ`` at 4cc542d) has the blended loss with given
weights (``c2/lib/models/loss/loss_creator.py`` 123-199) but not the weight estimate. Oracles:

* the paper's rule (Wang, Tran and Feiszli, CVPR 2020, Section 3): :math:`w_k \\propto \\Delta G_k /
  \\Delta O_k^2`, normalised to sum to 1, on numbers worked out by hand below;
* ``GeWu-Lab/BalanceBenchmark`` at 4c1482f, ``balancemm/trainer/GBlending_trainer.py`` 361-373
  (``g``, ``o_pre``, ``o_now``, ``o``, ``abs(g / o**2)``, division by the sum);
* ``pliang279/MultiBench`` at 49f9be2, ``training_structures/gradient_blend.py`` 83-94 with
  ``delta = True`` (``g = lvNn - lvN``, ``oi = oNn - oN``, ``abs(g / (oi * oi))``) and 246-247
  (division by the sum).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat, FiLM, Sum
from modbalance.methods import GBlending, MethodRequirementError, create_method
from modbalance.methods.base import EpochContext, SplitOutputs
from modbalance.methods.gblending import blend_weights
from tests.methods.resume import assert_cut_and_resume_exact


def _balancebenchmark_weights(pre_train: dict, pre_val: dict, now_train: dict, now_val: dict) -> dict:
    """``GBlending_trainer.py`` 361-373 (per branch, then normalised)."""
    weights = {}
    for modality in pre_train:
        g = now_val[modality] - pre_val[modality]
        o_pre = pre_val[modality] - pre_train[modality]
        o_now = now_val[modality] - now_train[modality]
        o = o_now - o_pre
        weights[modality] = abs(g / (o**2))
    sums = sum(weights.values())
    return {k: v / sums for k, v in weights.items()}


def _multibench_weights(ltN: dict, lvN: dict, ltNn: dict, lvNn: dict) -> dict:
    """``gradient_blend.py`` 83-94 (``delta = True``) and 246-247."""
    weights = {}
    for k in ltN:
        oNn = lvNn[k] - ltNn[k]
        oN = lvN[k] - ltN[k]
        oi = oNn - oN
        g = lvNn[k] - lvN[k]
        weights[k] = abs(g / (oi * oi))
    z = sum(weights.values())
    return {k: w / z for k, w in weights.items()}


def _random_losses(gen: torch.Generator, branches: list[str]) -> list[dict[str, float]]:
    return [
        {k: float(torch.rand((), generator=gen, dtype=torch.float64)) * 2 + 0.1 for k in branches} for _ in range(4)
    ]


def test_hand_computed_weights_follow_the_paper() -> None:
    # audio:  dG = 1.2 - 1.0 = 0.2, dO = (1.0 - 0.5) - (1.2 - 1.0) = 0.3, 0.2 / 0.09 = 20/9
    # visual: dG = 1.1 - 1.0 = 0.1, dO = (1.0 - 0.8) - (1.1 - 1.0) = 0.1, 0.1 / 0.01 = 10
    # fused:  dG = 1.2 - 0.9 = 0.3, dO = (0.9 - 0.4) - (1.2 - 1.0) = 0.3, 0.3 / 0.09 = 30/9
    # sum 140/9: weights 2/14, 9/14, 3/14
    train_before = {"audio": 1.0, "visual": 1.0, "fused": 1.0}
    val_before = {"audio": 1.2, "visual": 1.1, "fused": 1.2}
    train_after = {"audio": 0.5, "visual": 0.8, "fused": 0.4}
    val_after = {"audio": 1.0, "visual": 1.0, "fused": 0.9}
    weights = blend_weights(train_before, val_before, train_after, val_after)
    assert weights == pytest.approx({"audio": 2 / 14, "visual": 9 / 14, "fused": 3 / 14}, abs=1e-9)
    assert list(weights) == ["audio", "visual", "fused"]
    # a branch whose held-out loss rose gets 0 with the default gain="clip", |dG| with "abs"
    val_after["visual"] = 1.3  # dG = -0.2, dO = (1.3 - 0.8) - 0.1 = 0.4: |dG| / dO^2 = 1.25
    assert blend_weights(train_before, val_before, train_after, val_after) == pytest.approx(
        {"audio": 0.4, "visual": 0.0, "fused": 0.6}, abs=1e-9
    )
    clipped = blend_weights(train_before, val_before, train_after, val_after, gain="abs")
    total = 20 / 9 + 1.25 + 30 / 9
    assert clipped == pytest.approx({"audio": 20 / 9 / total, "visual": 1.25 / total, "fused": 30 / 9 / total})
    # no branch generalised: None (the method keeps its weights)
    assert blend_weights(train_before, val_before, train_before, val_before) is None


@pytest.mark.parametrize("seed", range(5))
def test_abs_gain_matches_balancebenchmark_and_multibench(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    branches = ["audio", "visual", "text", "fused"][: 2 + seed % 3]
    train_before, val_before, train_after, val_after = _random_losses(gen, branches)
    ours = blend_weights(train_before, val_before, train_after, val_after, gain="abs")
    assert ours is not None
    bb = _balancebenchmark_weights(train_before, val_before, train_after, val_after)
    mb = _multibench_weights(train_before, val_before, train_after, val_after)
    for k in branches:
        assert ours[k] == pytest.approx(bb[k], abs=1e-6)
        assert ours[k] == pytest.approx(mb[k], abs=1e-6)
    assert sum(ours.values()) == pytest.approx(1.0, abs=1e-12)


def _model(fusion: str = "concat") -> MultimodalClassifier:
    dims = {"audio": 4, "visual": 3}
    head = Concat(dims, num_classes=3) if fusion == "concat" else Sum(dims, num_classes=3)
    return MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)}, head).double()


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_loss_is_the_weighted_sum_of_branch_cross_entropies(fusion: str) -> None:
    gen = torch.Generator().manual_seed(0)
    model = _model(fusion)
    method = GBlending(weights={"audio": 0.2, "visual": 0.5, "fused": 0.3})
    method.check(model, held_out=True)
    x = {"audio": torch.randn(7, 6, generator=gen).double(), "visual": torch.randn(7, 5, generator=gen).double()}
    y = torch.randint(0, 3, (7,), generator=gen)
    out = model(x)
    loss = method.loss(model, out, y, epoch=0)

    def ce(z: torch.Tensor) -> torch.Tensor:  # by hand: mean of logsumexp(z) - z_y
        return (torch.logsumexp(z, dim=1) - z[torch.arange(7), y]).mean()

    feats = {m: model.encoders[m](x[m]) for m in ("audio", "visual")}
    if fusion == "concat":
        w, b = model.fusion.head.weight, model.fusion.head.bias
        z_audio = feats["audio"] @ w[:, :4].T + b / 2
        z_visual = feats["visual"] @ w[:, 4:].T + b / 2
    else:
        z_audio = model.fusion.heads["audio"](feats["audio"])
        z_visual = model.fusion.heads["visual"](feats["visual"])
    expected = 0.2 * ce(z_audio) + 0.5 * ce(z_visual) + 0.3 * ce(z_audio + z_visual)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    # the uni-modal terms carry gradients into the encoders through their own blocks
    grads = torch.autograd.grad(loss, list(model.encoders["audio"].parameters()))
    hand = torch.autograd.grad(expected, list(model.encoders["audio"].parameters()))
    for g, h in zip(grads, hand, strict=True):
        assert torch.allclose(g, h, rtol=1e-6, atol=1e-12)
    # outside the window: plain cross-entropy of the fused logits
    late = GBlending(start_epoch=3)
    late.check(model, held_out=True)
    assert float(late.loss(model, out, y, epoch=0)) == pytest.approx(float(ce(z_audio + z_visual)), rel=1e-6)


def test_own_heads_loss_gradients_and_branch_losses() -> None:
    gen = torch.Generator().manual_seed(1)
    dims = {"audio": 4, "visual": 4}
    model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 4)}, FiLM(dims, 3)).double()
    method = GBlending(heads="own", weights={"audio": 0.25, "visual": 0.25, "fused": 0.5})
    method.check(model, held_out=True)
    heads = {m: method.heads[m] for m in ("audio", "visual")}
    assert [tuple(h.weight.shape) for h in heads.values()] == [(3, 4), (3, 4)]
    assert heads["audio"].weight.dtype == torch.float64
    group = method.param_groups(model, lr=0.1)[0]["params"]
    assert any(p is heads["visual"].weight for p in group)  # the optimizer trains them
    x = {"audio": torch.randn(9, 6, generator=gen).double(), "visual": torch.randn(9, 5, generator=gen).double()}
    y = torch.randint(0, 3, (9,), generator=gen)
    out = model(x)
    loss = method.loss(model, out, y, epoch=0)
    feats = {m: model.encoders[m](x[m]) for m in ("audio", "visual")}
    expected = (
        0.25 * F.cross_entropy(heads["audio"](feats["audio"]), y)
        + 0.25 * F.cross_entropy(heads["visual"](feats["visual"]), y)
        + 0.5 * F.cross_entropy(out.logits, y)
    )
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)  # fp32 loss
    loss.backward()
    assert heads["audio"].weight.grad is not None and float(heads["audio"].weight.grad.abs().sum()) > 0
    # the split losses use the same heads
    with torch.no_grad():
        split = SplitOutputs(out.logits.detach(), {}, {m: f.detach() for m, f in feats.items()}, y)
        measured = method.branch_losses(model, split)
        assert measured["visual"] == pytest.approx(float(F.cross_entropy(heads["visual"](feats["visual"]), y)))
        assert measured["fused"] == pytest.approx(float(F.cross_entropy(out.logits, y)))


def _controlled_forward(model: MultimodalClassifier, logits: dict[str, dict[str, torch.Tensor]], calls: list[str]):
    """A split pass whose branch logits are given: features that the head maps to exactly those logits."""
    head = model.fusion.head
    with torch.no_grad():  # identity-like head: audio features -> classes 0..2, visual -> the same classes
        head.weight.zero_()
        head.bias.zero_()
        head.weight[:, :3] = torch.eye(3, dtype=head.weight.dtype)
        head.weight[:, 4:7] = torch.eye(3, dtype=head.weight.dtype)

    def forward(split: str) -> SplitOutputs:
        calls.append(split)
        z = logits[split]
        n = z["audio"].shape[0]
        feats = {
            "audio": torch.cat([z["audio"], torch.zeros(n, 1, dtype=z["audio"].dtype)], dim=1),
            "visual": z["visual"],
        }
        return SplitOutputs(z["audio"] + z["visual"], {}, feats, torch.arange(n) % 3)

    return forward


def _model3() -> MultimodalClassifier:
    return MultimodalClassifier(
        {"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)}, Concat({"audio": 4, "visual": 3}, 3)
    ).double()


def test_super_epoch_schedule_and_estimate_from_the_split_losses() -> None:
    gen = torch.Generator().manual_seed(3)
    model = _model3()
    method = GBlending(super_epoch=2, start_epoch=1)
    method.check(model, held_out=True)
    calls: list[str] = []
    state: dict[str, dict[str, torch.Tensor]] = {}
    forward = _controlled_forward(model, state, calls)

    def draw(scale: float) -> None:
        for split in ("train", "val"):
            state[split] = {
                m: torch.randn(30, 3, generator=gen, dtype=torch.float64) * scale for m in ("audio", "visual")
            }

    def losses() -> dict[str, dict[str, float]]:  # the oracle: cross-entropy of the given logits
        y = torch.arange(30) % 3
        out = {}
        for split in ("train", "val"):
            z = state[split]
            out[split] = {m: float(F.cross_entropy(z[m], y)) for m in ("audio", "visual")}
            out[split]["fused"] = float(F.cross_entropy(z["audio"] + z["visual"], y))
        return out

    seen = {}
    for epoch in range(6):
        draw(3.0 / (epoch + 1))  # the training moves the logits between epochs
        seen[epoch] = losses()
        method.on_epoch_start(model, EpochContext(epoch, forward))
        method.on_epoch_start(model, EpochContext(epoch, forward))  # twice: measured once
        if epoch == 2:
            assert method.weights == pytest.approx({"audio": 1 / 3, "visual": 1 / 3, "fused": 1 / 3})
        if epoch == 3:
            before, after = seen[1], seen[3]
            expected = blend_weights(before["train"], before["val"], after["train"], after["val"])
            assert expected is not None
            assert method.weights == pytest.approx(expected, abs=1e-9)
            stats = method.on_epoch_end(model, EpochContext(epoch, forward))
            assert stats["gblending_gain_audio"] == pytest.approx(before["val"]["audio"] - after["val"]["audio"])
            overfit = (after["val"]["fused"] - after["train"]["fused"]) - (
                before["val"]["fused"] - before["train"]["fused"]
            )
            assert stats["gblending_overfit_fused"] == pytest.approx(overfit)
            assert "gblending_gain_audio" not in method.on_epoch_end(model, EpochContext(epoch, forward))
    assert calls == ["train", "val"] * 3  # epochs 1, 3, 5 (start_epoch=1, every 2 epochs)


def test_weights_stay_when_no_branch_generalised() -> None:
    model = _model3()
    method = GBlending(super_epoch=1, weights={"audio": 0.1, "visual": 0.2, "fused": 0.7})
    method.check(model, held_out=True)
    z = {m: torch.randn(12, 3, dtype=torch.float64) for m in ("audio", "visual")}
    forward = _controlled_forward(model, {"train": z, "val": z}, [])
    for epoch in range(3):  # the same losses every time: dG = 0 for every branch
        method.on_epoch_start(model, EpochContext(epoch, forward))
    assert method.weights == {"audio": 0.1, "visual": 0.2, "fused": 0.7}
    assert GBlending(super_epoch=None).due(0) is False  # fixed weights: never measured


def test_state_round_trip_for_resume() -> None:
    model = _model3()
    method = GBlending(super_epoch=1)
    method.check(model, held_out=True)
    z = {m: torch.randn(12, 3, dtype=torch.float64) for m in ("audio", "visual")}
    z2 = {m: v * 0.5 for m, v in z.items()}
    method.on_epoch_start(model, EpochContext(0, _controlled_forward(model, {"train": z, "val": z}, [])))
    method.on_epoch_start(model, EpochContext(1, _controlled_forward(model, {"train": z2, "val": z}, [])))
    restored = GBlending(super_epoch=1)
    restored.load_state_dict(method.state_dict())
    restored.check(model, held_out=True)
    assert restored.weights == method.weights
    assert restored.start_losses == method.start_losses
    assert restored.get_extra_state() == method.get_extra_state()


def test_errors_name_the_method_and_the_fix() -> None:
    with pytest.raises(MethodRequirementError, match="method 'gblending' needs a held-out split"):
        GBlending().check(_model3())
    GBlending(super_epoch=None).check(_model3())  # fixed weights: nothing to estimate, no split needed
    film = MultimodalClassifier(
        {"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 4)}, FiLM({"audio": 4, "visual": 4}, 3)
    )
    with pytest.raises(MethodRequirementError, match=r"method 'gblending' with heads='fusion' needs .*FiLM.*heads=own"):
        GBlending().check(film, held_out=True)
    GBlending(heads="own").check(film, held_out=True)  # own heads: any fusion
    with pytest.raises(MethodRequirementError, match=r"heads='own' does not support distributed training"):
        GBlending(heads="own").check_settings(distributed=True)
    GBlending().check_settings(distributed=True, precision="fp16", grad_accum_steps=2)
    with pytest.raises(MethodRequirementError, match=r"EpochContext\.forward"):
        method = GBlending()
        method.check(_model3(), held_out=True)
        method.on_epoch_start(_model3(), EpochContext(0))
    for bad, message in [
        ({"super_epoch": 0}, "super_epoch must be None or an int >= 1, got 0"),
        ({"super_epoch": 1.5}, "super_epoch must be None or an int >= 1"),
        ({"gain": "square"}, r"gain must be one of \['clip', 'abs'\], got 'square'"),
        ({"eps": 0.0}, "eps must be a finite number > 0"),
        ({"weights": {"audio": -1.0}}, r"weights\['audio'\] must be a finite number >= 0"),
        ({"weights": []}, "weights must be a mapping branch -> weight"),
        ({"heads": "separate"}, r"heads must be one of \['fusion', 'own'\], got 'separate'"),
    ]:
        with pytest.raises(ValueError, match=f"method 'gblending': {message}"):
            GBlending(**bad)
    with pytest.raises(ValueError, match=r"weights must name exactly the branches \['audio', 'visual', 'fused'\]"):
        GBlending(weights={"audio": 0.5, "visual": 0.5}).check(_model3(), held_out=True)
    with pytest.raises(TypeError, match="unexpected argument"):
        create_method("gblending", super_epochs=3)
    assert isinstance(create_method("gblending", super_epoch=3), GBlending)


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_trainer_epochs_log_weights_from_the_recorded_gain_and_overfitting(tmp_path: Path) -> None:
    from modbalance.train import load_config, run

    overrides = ["train.device=cpu", "train.probe=false", "train.epochs=2", "method.name=gblending"]
    config = load_config("lab/tiny", [f"output_dir={tmp_path}", *overrides, "method.options.super_epoch=1"])
    records = _records(run(config))
    branches = ("audio", "visual", "fused")
    assert [records[0][f"method/gblending_weight_{k}"] for k in branches] == pytest.approx([1 / 3] * 3)
    assert "method/gblending_gain_audio" not in records[0]
    raw = {
        k: max(records[1][f"method/gblending_gain_{k}"], 0.0) / records[1][f"method/gblending_overfit_{k}"] ** 2
        for k in branches
    }
    total = sum(raw.values())
    for k in branches:
        assert records[1][f"method/gblending_weight_{k}"] == pytest.approx(raw[k] / total, rel=1e-4)
    assert math.isfinite(records[1]["train/loss"])


@pytest.mark.slow
@pytest.mark.parametrize("heads", ["fusion", "own"])
def test_resume_mid_epoch_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, heads: str) -> None:
    from modbalance.train.checkpoint import load_checkpoint

    base = [f"output_dir={tmp_path}", "train.device=cpu", "train.probe=false", "train.epochs=3"]
    base += ["train.checkpoint_every_steps=3", "method.name=gblending", "method.options.super_epoch=1"]
    base += [f"method.options.heads={heads}"]
    reference, cut = assert_cut_and_resume_exact(tmp_path, monkeypatch, base)
    if heads == "own":  # the method's own heads are in its state and end equal too
        own_cut = load_checkpoint(cut / "checkpoints" / "last.pt")["ranks"][0]["method"]
        own_ref = load_checkpoint(reference / "checkpoints" / "last.pt")["ranks"][0]["method"]
        keys = [key for key in own_ref if key.startswith("heads.")]
        assert sorted(keys) == ["heads.audio.bias", "heads.audio.weight", "heads.visual.bias", "heads.visual.weight"]
        for key in keys:
            assert torch.equal(own_cut[key], own_ref[key]), key
