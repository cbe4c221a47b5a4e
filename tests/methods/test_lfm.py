"""LFM against a test-local transcription of the authors' code.

Official code: njustkmg/NeurIPS24-LFM (commit ad44fa0).
  Crema_epoch_learnable.py
    lines 37-44    Alignment(p, q): p, q = softmax; m = (p + q) / 2;
                   0.5 * (F.kl_div(p.log(), m, 'batchmean') + F.kl_div(q.log(), m, 'batchmean'))
    lines 55-97    getAlpha_Learnable: half of the probe batch; L_total = a[0] * CE(0.5 o_v + 0.5 o_a) + a[1] * Align;
                   theta_grads = grad(L_total, params, create_graph); cls_grads = grad(L_cls, params);
                   hvp = grad(theta_grads, params, grad_outputs=cls_grads); g = hvp[0].mean();
                   lr halved when epoch % 20 == 0 and epoch != 0;
                   a[1] = clip(a[1] - lr * g, 0.05, 0.95); a[0] = 1 - a[1]
    lines 113-116  loss = 2 * (cls_k[0] * CE(0.5 o_v + 0.5 o_a) + cls_k[1] * Align(o_a, o_v))
    lines 246-254  lr_alpha = 1e-4; cls_k = [0.05, 0.95]; each epoch: cls_k = getAlpha_Learnable(...) then train
  Crema_epoch.py lines 47-53, 195: cls_k = the fitted polynomials of the epoch.
  model/AudioVideo.py lines 54-67: one linear head per modality, result_b = result_v + result_a (our Sum fusion).
BalanceBenchmark (balancemm/trainer/LFM_trainer.py, newest stored commit 4c1482f) lines 339-347 average the
alignment over modality pairs for more than two modalities.
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
from modbalance.methods import LFM, MethodRequirementError, create_method
from modbalance.methods.lfm import lfm_alignment, lfm_fitted_weight
from modbalance.train import load_config, run
from modbalance.train.checkpoint import load_checkpoint


# ---------------------------------------------------------------- transcription of the official code
def official_alignment(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Crema_epoch_learnable.py lines 37-44."""
    p = F.softmax(p, dim=-1)
    q = F.softmax(q, dim=-1)
    m = 0.5 * p + 0.5 * q
    kl_p_m = F.kl_div(p.log(), m, reduction="batchmean")
    kl_q_m = F.kl_div(q.log(), m, reduction="batchmean")
    return 0.5 * (kl_p_m + kl_q_m)


def official_fitted(epoch: int) -> list[float]:
    """Crema_epoch.py lines 47-53."""
    coef_alpha1 = [2.04623704e-01, 3.35472727e-03, 1.22989557e-04, -2.92947416e-06, 2.23835486e-08, -5.39717505e-11]
    coef_alpha2 = [7.95376296e-01, -3.35472727e-03, -1.22989557e-04, 2.92947416e-06, -2.23835486e-08, 5.39717505e-11]
    alpha1 = sum(c * (epoch**i) for i, c in enumerate(coef_alpha1))
    alpha2 = sum(c * (epoch**i) for i, c in enumerate(coef_alpha2))
    return [alpha1, alpha2]


class AVClassifier(nn.Module):
    """model/AudioVideo.py lines 46-67 with small encoders: (result_b, result_a, result_v)."""

    def __init__(self, audio: nn.Module, video: nn.Module, cls_a: nn.Linear, cls_v: nn.Linear) -> None:
        super().__init__()
        self.audio_encoder, self.video_encoder, self.cls_a, self.cls_v = audio, video, cls_a, cls_v

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        result_a = self.cls_a(self.audio_encoder(audio))
        result_v = self.cls_v(self.video_encoder(video))
        return result_v + result_a, result_a, result_v


def official_loss(
    model: AVClassifier, audio: torch.Tensor, video: torch.Tensor, y: torch.Tensor, cls_k: list[float]
) -> torch.Tensor:
    """Crema_epoch_learnable.py lines 113-116."""
    _, o_a, o_v = model(audio, video)
    loss_alignment = official_alignment(o_a, o_v)
    loss_cls = nn.CrossEntropyLoss(reduction="none")(0.5 * o_v + 0.5 * o_a, y).mean()
    return 2 * (cls_k[0] * loss_cls + cls_k[1] * loss_alignment)


def official_get_alpha(
    epoch: int, valbatch: tuple[torch.Tensor, ...], model: AVClassifier, alpha: list[float], lr_alpha: float
) -> tuple[list[float], float, float]:
    """Crema_epoch_learnable.py lines 55-97 (without .cuda() and the print; the parameter list made a list)."""
    params = list(model.parameters())
    criterion = nn.CrossEntropyLoss(reduction="none")
    audio, video, y = valbatch
    half_size = audio.size(0) // 2
    audio, video, y = audio[:half_size], video[:half_size], y[:half_size]
    _, o_a, o_v = model(audio, video)
    loss_alignment = official_alignment(o_a, o_v)
    loss_cls = criterion(0.5 * o_v + 0.5 * o_a, y).mean()
    L_total = alpha[0] * loss_cls + alpha[1] * loss_alignment
    theta_grads = torch.autograd.grad(L_total, params, create_graph=True)
    cls_grads = torch.autograd.grad(loss_cls, params, retain_graph=True, create_graph=True)
    hessian_vector_prod = torch.autograd.grad(
        outputs=theta_grads, inputs=params, grad_outputs=cls_grads, retain_graph=True
    )
    with torch.no_grad():
        alpha_grad = hessian_vector_prod[0].mean().item()
        if epoch % 20 == 0 and epoch != 0:
            lr_alpha = lr_alpha / 2
        alpha[1] -= lr_alpha * alpha_grad
        alpha[1] = max(0.05, min(0.95, alpha[1]))
        alpha[0] = 1.0 - alpha[1]
    return alpha, lr_alpha, alpha_grad


# ---------------------------------------------------------------- helpers
def _pair() -> tuple[MultimodalClassifier, AVClassifier]:
    """Our Sum-fusion model and the authors' architecture with the same weights (float64)."""
    encoders = {
        "audio": nn.Sequential(nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh()),
        "visual": nn.Sequential(nn.Linear(5, 4), nn.Tanh()),
    }
    ours = MultimodalClassifier(encoders, Sum({"audio": 6, "visual": 4}, 3)).double()
    theirs = AVClassifier(
        nn.Sequential(nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh()),
        nn.Sequential(nn.Linear(5, 4), nn.Tanh()),
        nn.Linear(6, 3),
        nn.Linear(4, 3),
    ).double()
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert p.shape == q.shape  # same parameter order: the hypergradient reads the first tensor
        q.data.copy_(p.data)
    return ours, theirs


def _batch(n: int = 16, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = {
        "audio": torch.randn(n, 7, generator=g, dtype=torch.float64) * 2,
        "visual": torch.randn(n, 5, generator=g, dtype=torch.float64) * 2,
    }
    return inputs, torch.randint(0, 3, (n,), generator=g)


# ---------------------------------------------------------------- tests
def test_alignment_matches_the_official_function_and_a_hand_computed_value() -> None:
    g = torch.Generator().manual_seed(1)
    a, v = torch.randn(9, 5, generator=g) * 3, torch.randn(9, 5, generator=g) * 3
    torch.testing.assert_close(lfm_alignment({"a": a, "v": v}), official_alignment(a, v), rtol=0, atol=1e-6)
    # p = (1/2, 1/2), q = (3/4, 1/4), r = (5/8, 3/8): 0.5 (KL(r||p) + KL(r||q)) -- KL from r, not to r
    p, q = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    kl_rp = 5 / 8 * math.log((5 / 8) / (1 / 2)) + 3 / 8 * math.log((3 / 8) / (1 / 2))
    kl_rq = 5 / 8 * math.log((5 / 8) / (3 / 4)) + 3 / 8 * math.log((3 / 8) / (1 / 4))
    assert abs(float(lfm_alignment({"a": p, "v": q})) - 0.5 * (kl_rp + kl_rq)) < 1e-7
    # three modalities: the mean of the three pairs (BalanceBenchmark LFM_trainer.py 339-347)
    w = torch.randn(9, 5, generator=g)
    pairs = (official_alignment(a, v) + official_alignment(a, w) + official_alignment(v, w)) / 3
    torch.testing.assert_close(lfm_alignment({"a": a, "v": v, "w": w}), pairs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("epoch", [0, 37, 150, 199])
def test_fitted_step_matches_the_official_loss_and_gradients(epoch: int) -> None:
    ours, theirs = _pair()
    inputs, y = _batch()
    method = LFM(schedule="fitted")
    loss = method.loss(ours, ours(inputs), y, epoch=epoch, inputs=inputs)
    loss.backward()
    cls_k = official_fitted(epoch)
    assert abs(method.weight(epoch) - cls_k[0]) < 1e-12 and abs((1 - method.weight(epoch)) - cls_k[1]) < 1e-9
    reference = official_loss(theirs, inputs["audio"], inputs["visual"], y, cls_k)
    reference.backward()
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-6)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-6, msg=name)


def test_fitted_horizon_stretches_the_curve_and_ends_it() -> None:
    assert lfm_fitted_weight(25, horizon=50) == pytest.approx(official_fitted(100)[0], abs=1e-12)
    method = LFM(schedule="fitted", horizon=10)
    assert method.weight(5) == pytest.approx(official_fitted(100)[0], abs=1e-12)
    with pytest.raises(ValueError, match=r"spans epochs 0..9 and epoch 10 was reached; set method.options.horizon"):
        method.weight(10)


@pytest.mark.parametrize(("start", "rate"), [(None, None), (0.5, 100.0)])
def test_learnable_weight_follows_the_official_updates(start: float | None, rate: float | None) -> None:
    """The authors' start (0.05, 1e-4: the weight barely moves) and one where it moves inside the bounds."""
    ours, theirs = _pair()
    method = LFM(alpha=start, lr_alpha=rate)
    first, y = _batch(16, seed=3)  # ours keeps rows :8 of the first batch; the authors halve a 16-row batch
    valbatch = (first["audio"], first["visual"], y)
    alpha = [0.05, 0.95] if start is None else [start, 1 - start]
    lr_alpha = 1e-4 if rate is None else rate
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.5)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.5)
    moved = []
    for step, epoch in enumerate([0, 1, 20, 21, 40]):
        inputs, target = (first, y) if step == 0 else _batch(16, seed=10 + step)
        loss = method.loss(ours, ours(inputs), target, epoch=epoch, inputs=inputs)
        alpha, lr_alpha, grad = official_get_alpha(epoch, valbatch, theirs, alpha, lr_alpha)
        assert method.lr_alpha == pytest.approx(lr_alpha, rel=1e-12)
        assert method.last_hypergrad == pytest.approx(grad, rel=1e-6, abs=1e-12)
        assert abs(method.alpha_cls - alpha[0]) < 1e-9
        reference = official_loss(theirs, inputs["audio"], inputs["visual"], target, alpha)
        torch.testing.assert_close(loss, reference, rtol=0, atol=1e-6)
        # a second batch of the same epoch does not update the weight again
        again = method.loss(ours, ours(inputs), target, epoch=epoch, inputs=inputs)
        assert abs(method.alpha_cls - alpha[0]) < 1e-9
        torch.testing.assert_close(again, reference, rtol=0, atol=1e-6)
        for opt, value in ((opt_ours, loss), (opt_theirs, reference)):
            opt.zero_grad()
            value.backward()
            opt.step()
        moved.append(method.alpha_cls)
    assert lr_alpha == pytest.approx((1e-4 if rate is None else rate) / 4)  # halved at epochs 20 and 40
    if rate is not None:
        assert max(moved) - min(moved) > 0.02 and min(moved) > 0.05 and max(moved) < 0.95  # moved, unclipped


def test_learnable_weight_moves_and_is_clipped_with_a_large_rate() -> None:
    ours, _ = _pair()
    inputs, y = _batch()
    big = LFM(lr_alpha=1e6, alpha=0.5)
    big.loss(ours, ours(inputs), y, epoch=0, inputs=inputs)
    assert big.last_hypergrad != 0.0
    assert big.alpha_cls in (pytest.approx(0.05), pytest.approx(0.95))  # the update hits a bound


def test_a_non_finite_hypergradient_keeps_the_weight() -> None:
    ours, _ = _pair()
    inputs, y = _batch()
    with torch.no_grad():
        next(ours.parameters()).fill_(float("nan"))
    method = LFM(alpha=0.5, lr_alpha=100.0)
    method.loss(ours, ours(inputs), y, epoch=0, inputs=inputs)
    assert math.isnan(method.last_hypergrad) and method.alpha_cls == 0.5


def test_concat_fusion_uses_the_mean_of_the_head_slices() -> None:
    model = MultimodalClassifier({"a": nn.Linear(3, 4), "v": nn.Linear(3, 2)}, Concat({"a": 4, "v": 2}, 5))
    x = {"a": torch.randn(6, 3), "v": torch.randn(6, 3)}
    y = torch.randint(0, 5, (6,))
    out = model(x)
    method = LFM(schedule="fitted")
    head = model.fusion.head
    assert isinstance(head, nn.Linear)
    z_a = out.features["a"] @ head.weight[:, :4].t() + head.bias / 2
    z_v = out.features["v"] @ head.weight[:, 4:].t() + head.bias / 2
    expected = 2 * (
        lfm_fitted_weight(3) * F.cross_entropy((z_a + z_v) / 2, y)
        + (1 - lfm_fitted_weight(3)) * official_alignment(z_a, z_v)
    )
    torch.testing.assert_close(method.loss(model, out, y, epoch=3), expected, rtol=0, atol=1e-6)


def test_window_options_and_errors() -> None:
    model, _ = _pair()
    inputs, y = _batch()
    out = model(inputs)
    outside = LFM(start_epoch=2).loss(model, out, y, epoch=1, inputs=inputs)
    torch.testing.assert_close(outside, F.cross_entropy(out.logits.float(), y))
    with pytest.raises(ValueError, match=r"schedule='heuristic' must be one of \['learnable', 'fitted'\]"):
        LFM(schedule="heuristic")
    with pytest.raises(ValueError, match=r"option\(s\) horizon do not apply to schedule='learnable'"):
        LFM(horizon=100)
    with pytest.raises(ValueError, match=r"option\(s\) alpha, probe_size do not apply to schedule='fitted'"):
        LFM(schedule="fitted", alpha=0.1, probe_size=4)
    for bad in (0.01, 0.99, float("nan"), True):
        with pytest.raises(ValueError, match=r"alpha=.* must be a number in \[0.05, 0.95\]"):
            LFM(alpha=bad)
    with pytest.raises(ValueError, match=r"lr_alpha=-1.0 must be a finite number >= 0"):
        LFM(lr_alpha=-1.0)
    with pytest.raises(ValueError, match=r"probe_size=0 must be an int >= 1"):
        LFM(probe_size=0)
    with pytest.raises(ValueError, match=r"horizon=2.5 must be an int >= 1"):
        LFM(schedule="fitted", horizon=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"learns its weight on a probe batch .* pass inputs= to loss\(\)"):
        LFM().loss(model, out, y, epoch=0)
    with pytest.raises(MethodRequirementError, match=r"'lfm' does not support distributed training"):
        LFM().check_settings(distributed=True)
    film = MultimodalClassifier({"a": nn.Linear(3, 4), "v": nn.Linear(3, 2)}, FiLM({"a": 4, "v": 2}, 5))
    with pytest.raises(MethodRequirementError, match=r"'lfm' needs a fusion with exact per-modality heads"):
        LFM().check(film)
    frozen = MultimodalClassifier({"a": nn.Linear(3, 4), "v": nn.Linear(3, 2)}, Sum({"a": 4, "v": 2}, 5))
    frozen.requires_grad_(False)
    with pytest.raises(MethodRequirementError, match=r"none is trainable; .* method.options.schedule=fitted"):
        LFM().check(frozen)
    LFM(schedule="fitted").check(frozen)
    assert isinstance(create_method("lfm", schedule="fitted"), LFM)


def test_extra_state_resumes_the_learnt_weight_exactly() -> None:
    ours, _ = _pair()
    first, y = _batch(16, seed=5)
    a = LFM()
    a.loss(ours, ours(first), y, epoch=0, inputs=first)
    saved = a.state_dict()
    b = LFM()
    b.load_state_dict(saved)
    later, target = _batch(16, seed=6)
    for method in (a, b):
        method.loss(ours, ours(later), target, epoch=20, inputs=later)
    assert (a.alpha_cls, a.lr_alpha, a.last_hypergrad) == (b.alpha_cls, b.lr_alpha, b.last_hypergrad)
    assert b._probe is not None and torch.equal(b._probe["audio"], first["audio"][:8])


def _tiny(tmp_path: Path, *overrides: str) -> Any:
    return load_config(
        "lab/tiny",
        [f"output_dir={tmp_path}", "train.device=cpu", "train.probe=false", "method.name=lfm", *overrides],
    )


@pytest.mark.parametrize(
    ("schedule", "setting"),
    [
        ("learnable", "seed=0"),
        ("fitted", "seed=0"),
        ("learnable", "train.precision=bf16"),
        ("learnable", "train.grad_accum_steps=2"),
    ],
)
def test_trainer_runs_an_epoch(tmp_path: Path, schedule: str, setting: str) -> None:
    folder = run(_tiny(tmp_path, "train.epochs=1", f"method.options={{schedule: {schedule}}}", setting))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["method"] == "lfm" and 0.0 <= summary["test"]["accuracy"] <= 1.0
    record = json.loads((folder / "metrics.jsonl").read_text().splitlines()[0])
    weight = record.get("method/lfm_alpha_cls")
    expected = 0.204623704 if schedule == "fitted" else None
    assert weight is not None and (expected is None or abs(weight - expected) < 1e-9), record


def test_trainer_resume_mid_epoch_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = ["train.epochs=2", "train.checkpoint_every_steps=3"]
    reference = run(_tiny(tmp_path, "run_name=ref", *overrides))

    import modbalance.train.trainer as trainer_module

    real_step = trainer_module.train_step

    def crashing(parts: Any, inputs: Any, target: Any, *, step: int, **kwargs: Any) -> None:
        if step == 13:  # after the checkpoint of step 12 (epoch 1, batch 4)
            raise KeyboardInterrupt
        real_step(parts, inputs, target, step=step, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(_tiny(tmp_path, "run_name=cut", *overrides))
    monkeypatch.setattr(trainer_module, "train_step", real_step)
    cut = tmp_path / "cut"
    assert load_checkpoint(cut / "checkpoints" / "last.pt")["ranks"][0]["method"]["_extra_state"]["updated_epoch"] == 1
    run(resume=cut)
    assert (cut / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
