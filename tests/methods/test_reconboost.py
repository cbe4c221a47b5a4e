"""ReconBoost against a test-local transcription of the official code (huacong/ReconBoost at 14ab57a).

Oracles: ``train.py`` 337-340 and 352 (boosting loss), ``train.py`` 397-398 with
``models/dynamic_net.py`` 137-170 (correction loss), ``models/dynamic_net.py`` 122-135 (the
ensemble of the other modalities: their current logits times the boost rate, without gradient),
``schedule.py`` 50-55 (fixed turn order) and ``train.py`` 296/304 and 371-372 (a fresh optimizer
for each boosting phase of ``epochs_per_stage`` epochs and each correction of ``correct_epoch``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat, Gated, Sum
from modbalance.methods import EpochContext, MethodRequirementError, ReconBoost, create_method
from modbalance.methods.reconboost import boosting_loss

DIMS = {"audio": 3, "visual": 4, "text": 2}


def official_boosting_loss(out_obj: Tensor, out_join: Tensor, lbl: Tensor, weight1: float, weight2: float) -> Tensor:
    """train.py 337-340, then ``loss.mean()`` (352): one-hot target, the ensemble detached."""
    target = torch.zeros(out_obj.shape[0], out_obj.shape[1], dtype=out_obj.dtype).scatter_(1, lbl.view(-1, 1), 1)
    boosting = -weight1 * (target * out_obj.log_softmax(1)).mean(-1) + weight2 * (
        target * out_join.detach().softmax(1) * out_obj.log_softmax(1)
    ).mean(-1)
    return boosting.mean()


def official_ensemble(logits: dict[str, Tensor], boost_rate: Tensor, mask_model: str | None) -> Tensor:
    """dynamic_net.py 122-135 (``forward``, under no_grad, skipping mask_model) and 160-170 (``forward_grad``)."""
    prediction = None
    for name, pred in logits.items():
        if name == mask_model:
            continue
        prediction = pred if prediction is None else prediction + pred
    assert prediction is not None
    return boost_rate * prediction


def slice_logits(model: MultimodalClassifier, features: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each modality's logits by hand: its columns of the Concat head plus bias / M, or its Sum head."""
    fusion = model.fusion
    if isinstance(fusion, Sum):
        return {m: fusion.heads[m](features[m]) for m in fusion.modalities}
    assert isinstance(fusion, Concat)
    out, start = {}, 0
    for m in fusion.modalities:
        width = fusion.dims[m]
        out[m] = features[m] @ fusion.head.weight[:, start : start + width].t() + fusion.head.bias / len(fusion.dims)
        start += width
    return out


def make_model(fusion: str = "concat", modalities: tuple[str, ...] = ("audio", "visual"), seed: int = 0) -> Any:
    torch.manual_seed(seed)
    encoders = {m: nn.Sequential(nn.Linear(5, DIMS[m]), nn.Tanh()) for m in modalities}
    dims = {m: DIMS[m] for m in modalities}
    head = Concat(dims, num_classes=4) if fusion == "concat" else Sum(dims, num_classes=4)
    model = MultimodalClassifier(encoders, head)
    inputs = {m: torch.randn(16, 5) for m in modalities}
    return model, inputs, torch.randint(0, 4, (16,))


# ---------------------------------------------------------------------- the losses
@pytest.mark.parametrize(("classes", "weight1", "weight2"), [(4, 5.0, 1.0), (28, 4.0, 1.0), (2, 0.3, 2.5)])
def test_boosting_loss_matches_the_official_formula_and_gradient(classes: int, weight1: float, weight2: float) -> None:
    torch.manual_seed(classes)
    z = (3 * torch.randn(32, classes, dtype=torch.float64)).requires_grad_()
    ens = (3 * torch.randn(32, classes, dtype=torch.float64)).requires_grad_()
    y = torch.randint(0, classes, (32,))
    ours = boosting_loss(z, ens, y, weight1, weight2)
    g_ours, g_ens = torch.autograd.grad(ours, [z, ens], allow_unused=True)
    z2 = z.detach().clone().requires_grad_()
    oracle = official_boosting_loss(z2, ens, y, weight1, weight2)
    (g_oracle,) = torch.autograd.grad(oracle, z2)
    assert ours.item() == pytest.approx(oracle.item(), abs=1e-6)
    assert torch.allclose(g_ours, g_oracle, atol=1e-6)
    assert g_ens is None  # the ensemble is a fixed target (train.py 340: out_join.detach())


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_method_losses_match_the_official_boosting_and_correction(fusion: str) -> None:
    modalities = ("audio", "visual", "text")
    model, x, y = make_model(fusion, modalities)
    method = ReconBoost(epochs_per_stage=1, correct_epochs=1, boost_rate=1.3)
    method.check(model)
    # epoch 2: stage 1, visual alone (order = the model's); the ensemble is audio + text, times beta
    out = model(x)
    ours = method.loss(model, out, y, epoch=2)
    ours_grads = torch.autograd.grad(ours, [*model.parameters(), method.boost_rate], allow_unused=True)
    logits = slice_logits(model, model.encode(x))
    join = official_ensemble({m: z.detach() for m, z in logits.items()}, method.boost_rate.detach(), "visual")
    oracle = official_boosting_loss(logits["visual"], join, y, 5.0, 1.0)
    oracle_grads = torch.autograd.grad(oracle, [*model.parameters(), method.boost_rate], allow_unused=True)
    assert ours.item() == pytest.approx(oracle.item(), abs=1e-6)
    for a, b in zip(ours_grads, oracle_grads, strict=True):
        assert (a is None and b is None) or (a is not None and b is not None and torch.allclose(a, b, atol=1e-6))
    assert ours_grads[-1] is None  # no gradient reaches beta in a boosting epoch
    # epoch 3: correction, CE of beta * sum of every modality's logits (train.py 397-398)
    out = model(x)
    ours = method.loss(model, out, y, epoch=3)
    ours_grads = torch.autograd.grad(ours, [*model.parameters(), method.boost_rate])
    logits = slice_logits(model, model.encode(x))
    oracle = F.cross_entropy(official_ensemble(logits, method.boost_rate, None), y)
    oracle_grads = torch.autograd.grad(oracle, [*model.parameters(), method.boost_rate])
    assert ours.item() == pytest.approx(oracle.item(), abs=1e-6)
    for a, b in zip(ours_grads, oracle_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # prediction: beta * fused logits (train.py 131)
    with torch.no_grad():
        assert torch.allclose(method.predict(model, out), 1.3 * out.logits)


# ---------------------------------------------------------------------- the schedule
def test_stage_schedule_and_optimizer_resets_by_hand() -> None:
    model, _, _ = make_model("sum", ("audio", "visual", "text"))
    method = ReconBoost(epochs_per_stage=2, correct_epochs=1, order=["visual", "audio", "text"], start_epoch=1)
    method.check(model)
    # epoch: 0 outside the window; then [visual visual correct] [audio audio correct] [text text correct] [visual]
    expected = [
        (1, 0, "visual", True),
        (2, 0, "visual", False),
        (3, 0, None, True),
        (4, 1, "audio", True),
        (5, 1, "audio", False),
        (6, 1, None, True),
        (7, 2, "text", True),
        (8, 2, "text", False),
        (9, 2, None, True),
        (10, 3, "visual", True),
    ]
    assert [(e, *method.stage(e)) for e in range(1, 11)] == expected
    resets: list[int] = []
    for epoch in range(11):
        method.on_epoch_start(model, EpochContext(epoch, reset_optimizer=functools.partial(resets.append, epoch)))
    assert resets == [1, 3, 4, 6, 7, 9, 10]
    logged = [method.on_epoch_end(model, EpochContext(e)) for e in (0, 2, 3, 4)]
    assert logged[0] == {}
    assert [(r["stage"], r["modality"]) for r in logged[1:]] == [(0.0, 0.0), (0.0, -1.0), (1.0, 1.0)]


def test_no_correction_and_end_of_window() -> None:
    model, _, _ = make_model()
    method = ReconBoost(epochs_per_stage=1, correct_epochs=0, end_epoch=2)
    method.check(model)
    assert [method.stage(e).modality for e in range(3)] == ["audio", "visual", "audio"]
    assert all(method.stage(e).first_epoch for e in range(3))
    resets: list[int] = []
    method.on_epoch_start(model, EpochContext(3, reset_optimizer=lambda: resets.append(3)))
    assert resets == []  # after end_epoch: plain joint training, no reset


# ---------------------------------------------------------------------- frozen modalities
@pytest.mark.parametrize(
    ("fusion", "modalities", "trained"),
    [("concat", ("audio", "visual"), "audio"), ("sum", ("audio", "visual"), "visual"), ("concat", DIMS, "visual")],
    ids=["concat-first", "sum-second", "concat-middle-of-three"],
)
def test_other_modalities_do_not_move_under_sgd_momentum_weight_decay(
    fusion: str, modalities: Any, trained: str
) -> None:
    modalities = tuple(modalities)
    model, x, y = make_model(fusion, modalities)
    method = ReconBoost(epochs_per_stage=1, correct_epochs=1, order=[trained, *[m for m in modalities if m != trained]])
    method.check(model)
    optimizer = torch.optim.SGD(method.param_groups(model, 0.1), lr=0.1, momentum=0.9, weight_decay=5e-4)
    # a correction epoch first, so that every parameter has momentum when the stage begins
    for epoch in (1, 0):
        if epoch == 0:
            method.on_epoch_start(model, EpochContext(0, reset_optimizer=optimizer.state.clear))
            before = {k: v.detach().clone() for k, v in [*model.named_parameters(), ("beta", method.boost_rate)]}
        for _ in range(3):
            method.loss(model, model(x), y, epoch=epoch).backward()
            method.before_step(model, optimizer, epoch=epoch)
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)  # zeroed, not freed: weight decay would move them
    after = dict([*model.named_parameters(), ("beta", method.boost_rate)])
    for name, value in before.items():
        moved = not torch.equal(after[name], value)
        own = name.startswith(f"encoders.{trained}.") or name.startswith(f"fusion.heads.{trained}.")
        shared_head = name.startswith("fusion.head.")
        assert moved == (own or shared_head), name
    if fusion == "concat":
        start = 0
        for m in modalities:
            width = DIMS[m]
            block_moved = not torch.equal(
                after["fusion.head.weight"][:, start : start + width],
                before["fusion.head.weight"][:, start : start + width],
            )
            assert block_moved == (m == trained), m
            start += width


def test_correction_trains_everything_and_beta() -> None:
    model, x, y = make_model("sum")
    method = ReconBoost(epochs_per_stage=1, correct_epochs=1)
    method.check(model)
    optimizer = torch.optim.SGD(method.param_groups(model, 0.1), lr=0.1, momentum=0.9, weight_decay=5e-4)
    before = [p.detach().clone() for p in [*model.parameters(), method.boost_rate]]
    method.loss(model, model(x), y, epoch=1).backward()
    method.before_step(model, optimizer, epoch=1)
    optimizer.step()
    assert all(not torch.equal(p, b) for p, b in zip([*model.parameters(), method.boost_rate], before, strict=True))


# ---------------------------------------------------------------------- errors
def test_bad_options_and_requirements_name_the_method() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"weight1": float("nan")}, "weight1 must be a finite number"),
        ({"epochs_per_stage": 0}, "epochs_per_stage must be an int >= 1"),
        ({"epochs_per_stage": True}, "epochs_per_stage must be an int >= 1"),
        ({"correct_epochs": -1}, "correct_epochs must be an int >= 0"),
        ({"boost_rate": 0.0}, "boost_rate must be > 0"),
        ({"order": "audio"}, "order must be a list of modality names"),
    ]
    for options, match in cases:
        with pytest.raises(ValueError, match=f"method 'reconboost': {match}"):
            ReconBoost(**options)
    model, x, y = make_model()
    with pytest.raises(MethodRequirementError, match=r"order=\['audio', 'audio'\] must name each"):
        ReconBoost(order=["audio", "audio"]).check(model)
    gated = MultimodalClassifier({"a": nn.Linear(3, 2), "b": nn.Linear(3, 2)}, Gated({"a": 2, "b": 2}, 2))
    with pytest.raises(MethodRequirementError, match="method 'reconboost' needs a fusion with exact per-modality"):
        ReconBoost().check(gated)
    with pytest.raises(MethodRequirementError, match="method 'reconboost' does not support distributed"):
        ReconBoost().check_settings(distributed=True)
    ReconBoost().check_settings(precision="fp16", grad_accum_steps=2)  # both supported
    with pytest.raises(ValueError, match="call check"):
        ReconBoost().stage(0)
    method = ReconBoost(start_epoch=2)
    method.check(model)
    with pytest.raises(ValueError, match="epoch 1 is outside its window"):
        method.stage(1)
    with pytest.raises(ValueError, match="pass epoch="):
        method.loss(model, model(x), y)
    with pytest.raises(MethodRequirementError, match=r"offers no EpochContext\.reset_optimizer"):
        method.on_epoch_start(model, EpochContext(2))
    assert isinstance(create_method("reconboost", order=["visual", "audio"]), ReconBoost)


def test_trainer_rejects_a_bad_option(tmp_path: Path) -> None:
    from modbalance.train import load_config, run
    from modbalance.train.config import ConfigError

    overrides = [f"output_dir={tmp_path}", "train.device=cpu", "method.name=reconboost"]
    with pytest.raises(ConfigError, match=r"order=.*must name each of the model's modalities"):
        run(load_config("lab/tiny", [*overrides, "method.options.order=[audio]"]))


# ---------------------------------------------------------------------- the trainer
@pytest.mark.parametrize("precision", ["fp32", "fp16"])  # fp16: the step goes through the gradient scaler
def test_trainer_runs_a_stage_boundary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    from modbalance.train import load_config, run

    seen: list[tuple[int, dict[str, Tensor], int]] = []
    original = ReconBoost.on_epoch_start

    def spy(self: ReconBoost, model: MultimodalClassifier, context: EpochContext) -> None:
        calls: list[int] = []
        reset = context.reset_optimizer
        assert reset is not None

        def counting() -> None:
            calls.append(1)
            reset()

        counted = dataclasses.replace(context, reset_optimizer=counting)
        original(self, model, counted)
        seen.append((context.epoch, {k: v.detach().clone() for k, v in model.state_dict().items()}, len(calls)))

    monkeypatch.setattr(ReconBoost, "on_epoch_start", spy)
    overrides = ["train.device=cpu", "train.probe=false", "train.epochs=3", "method.name=reconboost"]
    overrides += ["method.options.epochs_per_stage=1", "method.options.correct_epochs=1", "optim.weight_decay=5e-4"]
    overrides += [f"train.precision={precision}"]
    folder = run(load_config("lab/tiny", [f"output_dir={tmp_path}", *overrides]))
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["method/modality"] for r in records] == [0.0, -1.0, 1.0]  # audio, correction, visual
    assert records[0]["method/boost_rate"] == 1.0 != records[1]["method/boost_rate"]
    (_, w0, resets0), (_, w1, resets1), (_, w2, resets2) = seen
    assert (resets0, resets1, resets2) == (1, 1, 1)  # a fresh optimizer at each phase start
    for key in w0:  # epoch 0 trained audio alone: visual's encoder did not move, audio's did
        if key.startswith("encoders.visual."):
            assert torch.equal(w0[key], w1[key]), key
        if key.startswith("encoders.audio.") and key.endswith("weight"):
            assert not torch.equal(w0[key], w1[key]), key
    head0, head1 = w0["fusion.head.weight"], w1["fusion.head.weight"]  # lab/tiny: concat of audio (8) and visual (8)
    assert torch.equal(head0[:, 8:], head1[:, 8:]) and not torch.equal(head0[:, :8], head1[:, :8])
    assert any(not torch.equal(w1[k], w2[k]) for k in w1 if k.startswith("encoders.visual."))  # correction


@pytest.mark.slow
def test_resume_mid_stage_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modbalance.train import load_config, run
    from modbalance.train.checkpoint import load_checkpoint

    base = [f"output_dir={tmp_path}", "train.device=cpu", "train.probe=false", "train.epochs=4"]
    base += ["train.checkpoint_every_steps=3", "method.name=reconboost", "optim.weight_decay=5e-4"]
    base += ["method.options.epochs_per_stage=2", "method.options.correct_epochs=1"]
    reference = run(load_config("lab/tiny", [*base, "run_name=ref"]))

    import modbalance.train.trainer as trainer_module

    real_step = trainer_module.train_step

    def crashing(parts: Any, inputs: Any, target: Any, *, step: int, **kwargs: Any) -> None:
        if step == 13:  # after the checkpoint of step 12: epoch 1 of audio's 2-epoch phase, mid-epoch
            raise KeyboardInterrupt
        real_step(parts, inputs, target, step=step, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(load_config("lab/tiny", [*base, "run_name=cut"]))
    monkeypatch.setattr(trainer_module, "train_step", real_step)
    cut = tmp_path / "cut"
    run(resume=cut)
    assert (cut / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    final_cut = load_checkpoint(cut / "checkpoints" / "last.pt")
    final_ref = load_checkpoint(reference / "checkpoints" / "last.pt")
    for key, value in final_ref["model"].items():
        assert torch.equal(final_cut["model"][key], value), key


def test_gradient_accumulation_equals_one_batch() -> None:
    """The loss is a per-sample mean: two half-batches weighted 1/2 give the whole batch's gradient."""
    model, x, y = make_model("concat")
    method = ReconBoost(epochs_per_stage=1, correct_epochs=1)
    method.check(model)
    params = list(model.parameters())
    for epoch in (0, 1):  # a boosting and a correction epoch
        whole = torch.autograd.grad(method.loss(model, model(x), y, epoch=epoch), params, allow_unused=True)
        halves = [
            torch.autograd.grad(
                0.5 * method.loss(model, model({m: v[s] for m, v in x.items()}), y[s], epoch=epoch),
                params,
                allow_unused=True,
            )
            for s in (slice(0, 8), slice(8, 16))
        ]
        for g, a, b in zip(whole, *halves, strict=True):
            assert (g is None and a is None and b is None) or torch.allclose(g, a + b, atol=1e-6)
