"""AGM against a test-local transcription of the official training step.

Oracle: ``lihong2303/AGM`` at commit 5a65542 (the repository the paper links; ``lihongcs/AGM``
is not stored here):

* ``model/CREMAD_net.py`` 7-72: ``Modality_Audio`` / ``Modality_Visual`` (the two-modality
  responses), ``Modality_out`` identity modules whose ``register_full_backward_hook`` multiplies
  the incoming gradient by ``scale_a`` / ``scale_v``, and ``GradMod.forward`` (the full pass in
  train mode, then the zero-padded passes in eval mode, with gradients); ``AVClassifier`` 75-115
  (zero padding of the input, encoders, ``ConcatFusion`` 210-218).
* ``run/CREMAD_main.py`` 63-69 and 126-166 (scores with the 1e-8 floor, ratios, coefficients
  clipped at 10, running means over ``iteration``, ``update_scale``, ``loss.backward()``) and
  233-244 (norm clipping when a ``fc_out`` weight gradient leaves [-1, 1]); the running means
  start at 0 (``each_epoch_score_a = 0.``, 612-613).
* ``model/URFunny_net.py`` 6-31 (three-modality responses) and ``run/URFunny_main.py`` 117-130
  (three-modality ratios, clip 7).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat, Gated
from modbalance.methods import MethodRequirementError, create_method
from modbalance.methods.agm import AGM, agm_coefficients, mono_modal_responses, response_scores
from modbalance.methods.base import EpochContext


# ---------------------------------------------------------------------------------------- oracle
class _ModalityVisual(nn.Module):  # CREMAD_net.py 7-11
    def forward(self, total_out, pad_visual_out, pad_audio_out):
        return 0.5 * (total_out - pad_visual_out + pad_audio_out)


class _ModalityAudio(nn.Module):  # CREMAD_net.py 13-17
    def forward(self, total_out, pad_visual_out, pad_audio_out):
        return 0.5 * (total_out - pad_audio_out + pad_visual_out)


class _ModalityOut(nn.Module):  # CREMAD_net.py 19-23
    def forward(self, x):
        return x


class _AVClassifier(nn.Module):
    """``CREMAD_net.py`` 96-115 with our encoders (pooling left out) and ``ConcatFusion`` 210-218."""

    def __init__(self, audio_net: nn.Module, visual_net: nn.Module, fc_out: nn.Linear) -> None:
        super().__init__()
        self.audio_net, self.visual_net, self.fc_out = audio_net, visual_net, fc_out

    def forward(self, audio, visual, pad_audio=False, pad_visual=False):
        if pad_audio:
            audio = torch.zeros_like(audio, device=audio.device)
        if pad_visual:
            visual = torch.zeros_like(visual, device=visual.device)
        a = self.audio_net(audio)
        v = self.visual_net(visual)
        return self.fc_out(torch.cat((a, v), dim=1))


class _GradMod(nn.Module):
    """``CREMAD_net.py`` 25-72 (``mode = "train"``)."""

    def __init__(self, net: _AVClassifier) -> None:
        super().__init__()
        self.mode = "train"
        self.net = net
        self.m_v = _ModalityVisual()
        self.m_a = _ModalityAudio()
        self.m_v_o = _ModalityOut()
        self.m_a_o = _ModalityOut()
        self.scale_a = 1.0
        self.scale_v = 1.0
        self.m_a_o.register_full_backward_hook(self.hooka)
        self.m_v_o.register_full_backward_hook(self.hookv)

    def hooka(self, m, ginp, gout):
        gnew = ginp[0].clone()
        return (gnew * self.scale_a,)

    def hookv(self, m, ginp, gout):
        gnew = ginp[0].clone()
        return (gnew * self.scale_v,)

    def update_scale(self, coeff_a, coeff_v):
        self.scale_a = coeff_a
        self.scale_v = coeff_v

    def forward(self, audio, visual):
        total_out = self.net(audio, visual, pad_audio=False, pad_visual=False)
        self.net.eval()
        pad_visual_out = self.net(audio, visual, pad_audio=False, pad_visual=True)
        pad_audio_out = self.net(audio, visual, pad_audio=True, pad_visual=False)
        zero_padding_out = self.net(audio, visual, pad_audio=True, pad_visual=True)
        if self.mode == "train":
            self.net.train()
        m_a = self.m_a_o(self.m_a(total_out, pad_visual_out, pad_audio_out))
        m_v = self.m_v_o(self.m_v(total_out, pad_visual_out, pad_audio_out))
        return total_out, pad_visual_out, pad_audio_out, zero_padding_out, m_a + m_v


def _official_step(model: _GradMod, spec, image, label, optimizer, state: dict, alpha: float) -> dict:
    """``CREMAD_main.py`` 48, 63-69, 108-166, 233-244 (one AGM step inside the window)."""
    softmax = nn.Softmax(dim=1)
    criterion = nn.CrossEntropyLoss()
    state["iteration"] += 1
    iteration = state["iteration"]
    train_score_a, train_score_v = state["a"], state["v"]
    total_out, pad_visual_out, pad_audio_out, _zero_padding_out, out = model(spec, image)
    out_a = 0.5 * (total_out - pad_audio_out + pad_visual_out)
    out_v = 0.5 * (total_out - pad_visual_out + pad_audio_out)
    loss = criterion(out, label)
    optimizer.zero_grad()
    score_audio = 0.0
    score_visual = 0.0
    for k in range(out_a.size(0)):
        if torch.isinf(torch.log(softmax(out_a)[k][label[k]])) or softmax(out_a)[k][label[k]] < 1e-8:
            score_audio += -torch.log(torch.tensor(1e-8, dtype=out_a.dtype, device=out_a.device))
        else:
            score_audio += -torch.log(softmax(out_a)[k][label[k]])
        if torch.isinf(torch.log(softmax(out_v)[k][label[k]])) or softmax(out_v)[k][label[k]] < 1e-8:
            score_visual += -torch.log(torch.tensor(1e-8, dtype=out_v.dtype, device=out_v.device))
        else:
            score_visual += -torch.log(softmax(out_v)[k][label[k]])
    score_audio = score_audio / out_a.size(0)
    score_visual = score_visual / out_v.size(0)
    ratio_a = math.exp(score_visual.item() - score_audio.item())
    ratio_v = math.exp(score_audio.item() - score_visual.item())
    optimal_ratio_a = math.exp(train_score_v - train_score_a)
    optimal_ratio_v = math.exp(train_score_a - train_score_v)
    coeff_a = math.exp(alpha * (min(optimal_ratio_a - ratio_a, 10)))
    coeff_v = math.exp(alpha * (min(optimal_ratio_v - ratio_v, 10)))
    state["a"] = train_score_a * (iteration - 1) / iteration + score_audio.item() / iteration
    state["v"] = train_score_v * (iteration - 1) / iteration + score_visual.item() / iteration
    model.update_scale(coeff_a, coeff_v)
    loss.backward()
    grad_max = torch.max(model.net.fc_out.weight.grad)
    grad_min = torch.min(model.net.fc_out.weight.grad)
    clipped = bool(grad_max > 1 or grad_min < -1)
    if clipped:
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    grads = {n: p.grad.clone() for n, p in model.net.named_parameters()}
    optimizer.step()
    return {"loss": loss.item(), "coeffs": (coeff_a, coeff_v), "clipped": clipped, "grads": grads}


def _official_responses_3(values: dict) -> dict:
    """``URFunny_net.py`` 6-31 (pad_x_out: x zeroed; total_out: nothing zeroed)."""
    t, a, v = "t", "a", "v"

    def present(*names: str) -> torch.Tensor:
        return values[frozenset(names)]

    total_out = present(a, v, t)
    pad_visual_out, pad_audio_out, pad_text_out = present(a, t), present(v, t), present(a, v)
    pad_visual_audio_out, pad_visual_text_out, pad_audio_text_out = present(t), present(a), present(v)
    text = (total_out - pad_text_out + pad_visual_audio_out) / 3 + (
        pad_visual_out - pad_audio_text_out + pad_audio_out - pad_visual_text_out
    ) / 6
    audio = (total_out - pad_audio_out + pad_visual_text_out) / 3 + (
        pad_visual_out - pad_audio_text_out + pad_text_out - pad_visual_audio_out
    ) / 6
    visual = (total_out - pad_visual_out + pad_audio_text_out) / 3 + (
        pad_audio_out - pad_visual_text_out + pad_text_out - pad_visual_audio_out
    ) / 6
    return {"a": audio, "v": visual, "t": text}


def _official_coeffs_3(scores: dict, running: dict, alpha: float) -> dict:
    """``URFunny_main.py`` 117-130."""
    mean_score = (scores["v"] + scores["a"] + scores["t"]) / 3
    optimal_mean_score = (running["v"] + running["a"] + running["t"]) / 3
    out = {}
    for m in ("a", "v", "t"):
        ratio = math.exp((mean_score - scores[m]) * 3 / 2)
        optimal = math.exp((optimal_mean_score - running[m]) * 3 / 2)
        out[m] = math.exp(alpha * (min(optimal - ratio, 7)))
    return out


# ---------------------------------------------------------------------------------------- ours
def _encoder(d_in: int, width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(0.2))


def _pair(seed: int = 0, gain: float = 1.0) -> tuple[MultimodalClassifier, _GradMod]:
    """Our model and the official one with the same weights; ``gain`` scales the features (BN weights)."""
    torch.manual_seed(seed)
    ours = MultimodalClassifier(
        {"audio": _encoder(6, 5), "visual": _encoder(4, 3)}, Concat({"audio": 5, "visual": 3}, num_classes=4)
    ).double()
    with torch.no_grad():
        for module in ours.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.weight.mul_(gain)
    theirs = _GradMod(
        _AVClassifier(
            copy.deepcopy(ours.encoders["audio"]),
            copy.deepcopy(ours.encoders["visual"]),
            copy.deepcopy(ours.fusion.head),
        )
    )
    return ours, theirs


_NAMES = {"audio_net": "encoders.audio", "visual_net": "encoders.visual", "fc_out": "fusion.head"}


def _ours_name(official: str) -> str:
    first, rest = official.split(".", 1)
    return f"{_NAMES[first]}.{rest}"


@pytest.mark.parametrize("gain", [1.0, 10.0], ids=["no-clip", "clip"])
def test_three_steps_match_the_official_code(gain: float) -> None:
    ours, theirs = _pair(gain=gain)
    agm = AGM(alpha=1.5)
    agm.check(ours)
    opt_ours = torch.optim.SGD(agm.param_groups(ours, lr=0.1), lr=0.1, momentum=0.9, weight_decay=1e-4)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    state = {"iteration": 0, "a": 0.0, "v": 0.0}
    generator = torch.Generator().manual_seed(1)
    clipped = []
    for step in range(3):
        audio = torch.randn(16, 6, generator=generator, dtype=torch.float64)
        visual = torch.randn(16, 4, generator=generator, dtype=torch.float64)
        label = torch.randint(0, 4, (16,), generator=generator)

        torch.manual_seed(100 + step)  # the same dropout draws in the full (training-mode) pass
        official = _official_step(theirs, audio, visual, label, opt_theirs, state, alpha=1.5)

        torch.manual_seed(100 + step)
        inputs = {"audio": audio, "visual": visual}
        out = agm.train_forward(ours, inputs, epoch=0)
        loss = agm.loss(ours, out, label, epoch=0, inputs=inputs)
        loss.backward()
        agm.before_step(ours, opt_ours, epoch=0)

        assert loss.item() == pytest.approx(official["loss"], abs=1e-10)
        assert agm.coefficients.tolist() == pytest.approx(list(official["coeffs"]), rel=1e-9)
        assert agm.running_scores.tolist() == pytest.approx([state["a"], state["v"]], rel=1e-9)
        grads = dict(ours.named_parameters())
        for name, grad in official["grads"].items():
            torch.testing.assert_close(grads[_ours_name(name)].grad, grad, atol=1e-10, rtol=1e-8, msg=name)
        opt_ours.step()
        opt_ours.zero_grad()
        clipped.append(official["clipped"])
        assert ours.training  # restored after the eval-mode passes
    assert agm.steps == 3
    assert any(clipped) == (gain > 1)  # each case exercises the branch it names
    assert any(c != 1.0 for c in official["coeffs"])


def test_three_modality_responses_and_coefficients_match_urfunny() -> None:
    torch.manual_seed(0)
    coalitions = [frozenset(s) for s in ("a", "v", "t", "av", "at", "vt", "avt")]
    values = {c: torch.randn(5, 3, dtype=torch.float64) for c in coalitions}
    ours = mono_modal_responses(values, ["a", "v", "t"])
    for m, official in _official_responses_3(values).items():
        torch.testing.assert_close(ours[m], official, atol=1e-12, rtol=0)
    torch.testing.assert_close(ours["a"] + ours["v"] + ours["t"], values[frozenset("avt")])

    scores = torch.tensor([0.4, 1.9, 1.1], dtype=torch.float64)
    running = torch.tensor([1.5, 0.2, 0.9], dtype=torch.float64)
    official = _official_coeffs_3(dict(zip("avt", scores.tolist())), dict(zip("avt", running.tolist())), 2.0)
    got = agm_coefficients(scores, running, alpha=2.0, ratio_clip=7.0)
    assert got.tolist() == pytest.approx([official[m] for m in "avt"], rel=1e-12)
    # running means far apart: optimal ratio e^9 for the first modality, ratio 1 -> gap clipped at 7
    running = torch.tensor([0.0, 9.0, 9.0], dtype=torch.float64)
    clipped = agm_coefficients(torch.ones(3, dtype=torch.float64), running, 0.5, 7.0)
    assert clipped[0].item() == pytest.approx(math.exp(0.5 * 7), rel=1e-12)
    official = _official_coeffs_3({m: 1.0 for m in "avt"}, dict(zip("avt", running.tolist())), 0.5)
    assert clipped.tolist() == pytest.approx([official[m] for m in "avt"], rel=1e-12)
    unclipped = agm_coefficients(torch.tensor([0.0, 20.0]), torch.zeros(2), 1.0, None)
    assert unclipped[1].item() == pytest.approx(math.exp(1 - math.exp(-20.0)), rel=1e-6)


def test_scores_floor_probabilities_at_1e8_like_the_official_loop() -> None:
    logits = torch.tensor([[0.0, -50.0], [3.0, 1.0]], dtype=torch.float64)
    target = torch.tensor([1, 0])
    expected = (-math.log(1e-8) - math.log(math.exp(3) / (math.exp(3) + math.exp(1)))) / 2
    assert response_scores({"a": logits}, target).item() == pytest.approx(expected, rel=1e-12)


def test_three_modalities_take_six_extra_passes() -> None:
    torch.manual_seed(0)
    dims = {"a": 4, "v": 4, "t": 4}
    model = MultimodalClassifier({m: nn.Linear(3, 4) for m in dims}, Concat(dims, num_classes=3))
    calls = []
    for m, encoder in model.encoders.items():
        encoder.register_forward_hook(lambda mod, args, out, m=m: calls.append(m))
    agm = AGM()
    agm.check(model)
    inputs = {m: torch.randn(8, 3) for m in dims}
    y = torch.randint(0, 3, (8,))
    out = model(inputs)
    calls.clear()
    loss = agm.loss(model, out, y, epoch=0, inputs=inputs)
    loss.backward()
    assert len(calls) == 3 * 6  # 2^3 - 2 coalitions, every encoder runs in each
    assert torch.isfinite(loss) and agm.coefficients.shape == (3,)


def test_any_fusion_works_and_zeroed_inputs_reach_the_model() -> None:
    torch.manual_seed(0)
    model = MultimodalClassifier({"a": nn.Linear(3, 4), "v": nn.Linear(2, 4)}, Gated({"a": 4, "v": 4}, num_classes=3))
    seen = []
    model.encoders["a"].register_forward_hook(lambda mod, args, out: seen.append(bool(args[0].eq(0).all())))
    agm = AGM()
    agm.check(model)
    inputs = {"a": torch.randn(8, 3), "v": torch.randn(8, 2)}
    agm.loss(model, model(inputs), torch.randint(0, 3, (8,)), epoch=0, inputs=inputs).backward()
    assert seen == [False, False, True]  # full pass, {a} present, {v} present (a zeroed)
    assert all(p.grad is not None for p in model.parameters())


def test_each_module_gets_its_own_mode_back() -> None:
    ours, _ = _pair()
    ours.train()
    ours.encoders["visual"][1].eval()  # a frozen batch norm stays frozen
    agm = AGM()
    agm.check(ours)
    inputs = {"audio": torch.randn(8, 6, dtype=torch.float64), "visual": torch.randn(8, 4, dtype=torch.float64)}
    agm.loss(ours, ours(inputs), torch.randint(0, 4, (8,)), epoch=0, inputs=inputs)
    assert [m.training for m in ours.modules()].count(False) == 1
    assert not ours.encoders["visual"][1].training


def test_outside_the_window_plain_cross_entropy_no_extra_pass_no_clip() -> None:
    ours, _ = _pair()
    agm = AGM(start_epoch=2, end_epoch=3)
    agm.check(ours)
    inputs = {"audio": 9 * torch.randn(8, 6, dtype=torch.float64), "visual": torch.randn(8, 4, dtype=torch.float64)}
    y = torch.randint(0, 4, (8,))
    ours.eval()
    out = ours(inputs)
    calls = []
    ours.encoders["audio"].register_forward_hook(lambda *a: calls.append(1))
    loss = agm.loss(ours, out, y, epoch=1, inputs=inputs)
    assert calls == [] and agm.steps == 0
    assert loss.item() == pytest.approx(F.cross_entropy(out.logits, y).item())
    loss.backward()
    before = {n: p.grad.clone() for n, p in ours.named_parameters()}
    agm.before_step(ours, torch.optim.SGD(ours.parameters(), lr=0.1), epoch=4)
    for n, p in ours.named_parameters():
        assert torch.equal(p.grad, before[n]), n


def test_grad_clip_acts_only_when_a_fusion_weight_gradient_leaves_the_range() -> None:
    ours, _ = _pair()
    for p in ours.parameters():
        p.grad = torch.full_like(p, 50.0)
    ours.fusion.head.weight.grad.fill_(-1.0)  # inside [-1, 1]: no clip, however large the rest
    AGM(grad_clip=1.0).before_step(ours, torch.optim.SGD(ours.parameters(), lr=0.1), epoch=0)
    assert all(bool((p.grad.abs() >= 1.0).all()) for p in ours.parameters())
    ours.fusion.head.weight.grad.fill_(1.01)
    AGM(grad_clip=None).before_step(ours, torch.optim.SGD(ours.parameters(), lr=0.1), epoch=0)
    assert bool((ours.fusion.head.weight.grad == 1.01).all())  # None: never
    AGM(grad_clip=1.0).before_step(ours, torch.optim.SGD(ours.parameters(), lr=0.1), epoch=0)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in ours.parameters()]))
    assert norm.item() == pytest.approx(1.0, rel=1e-5)


def test_state_dict_resumes_the_running_means_exactly() -> None:
    ours, _ = _pair()
    agm = AGM()
    agm.check(ours)
    agm.on_epoch_start(ours, EpochContext(0))
    inputs = {"audio": torch.randn(8, 6, dtype=torch.float64), "visual": torch.randn(8, 4, dtype=torch.float64)}
    y = torch.randint(0, 4, (8,))
    for _ in range(2):
        agm.loss(ours, ours(inputs), y, epoch=0, inputs=inputs).backward()
    fresh = AGM()
    fresh.check(ours)
    fresh.load_state_dict(agm.state_dict())
    assert fresh.steps == 2 and torch.equal(fresh.running_scores, agm.running_scores)
    assert fresh.on_epoch_end(ours, EpochContext(0)) == agm.on_epoch_end(ours, EpochContext(0))
    record = agm.on_epoch_end(ours, EpochContext(0))
    assert set(record) == {"agm_coeff_audio", "agm_coeff_visual", "agm_score_audio", "agm_score_visual"}


def test_errors_name_the_method_and_the_fix() -> None:
    ours, _ = _pair()
    agm = AGM()
    agm.check(ours)
    out = ours({"audio": torch.randn(4, 6, dtype=torch.float64), "visual": torch.randn(4, 4, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"'agm'.*inputs=inputs"):
        agm.loss(ours, out, torch.zeros(4, dtype=torch.long), epoch=0)
    for bad in ({"alpha": -1.0}, {"alpha": True}, {"alpha": float("nan")}, {"ratio_clip": "10"}, {"grad_clip": 0}):
        with pytest.raises(ValueError, match="method 'agm'"):
            AGM(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="agm"):
        create_method("agm", momentum=0.9)
    single = MultimodalClassifier({"a": nn.Linear(3, 2)}, Concat({"a": 2}, 2))
    with pytest.raises(MethodRequirementError, match=r"'agm' needs at least 2 modalities"):
        AGM().check(single)
    with pytest.raises(MethodRequirementError, match=r"'agm' does not support distributed"):
        AGM().check_settings(distributed=True)
    with pytest.raises(MethodRequirementError, match=r"'agm' does not support gradient accumulation"):
        AGM().check_settings(grad_accum_steps=2)
    AGM().check_settings(precision="fp16")  # the coefficients act through the loss: the scaler sees them


def _tiny(tmp_path, *overrides: str):
    from modbalance.train import load_config

    base = [f"output_dir={tmp_path}", "train.device=cpu", "train.probe=false", "train.epochs=1"]
    return load_config("lab/tiny", [*base, *overrides])


def test_trainer_runs_one_epoch_and_logs_the_coefficients(tmp_path) -> None:
    import json

    from modbalance.train import run
    from modbalance.train.checkpoint import load_checkpoint

    folder = run(_tiny(tmp_path, "method.name=agm", "method.options.alpha=1.0"))
    record = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    for m in ("audio", "visual"):
        assert record[f"method/agm_coeff_{m}"] > 0.0
        assert record[f"method/agm_score_{m}"] > 0.0
    state = load_checkpoint(folder / "checkpoints" / "last.pt")["ranks"][0]["method"]
    assert {"running_scores", "coefficients", "coefficient_sum"} <= set(state)


def test_trainer_refuses_gradient_accumulation_naming_the_method(tmp_path) -> None:
    from modbalance.train import run
    from modbalance.train.config import ConfigError

    with pytest.raises(ConfigError, match=r"agm.*gradient accumulation"):
        run(_tiny(tmp_path, "method.name=agm", "train.grad_accum_steps=2"))
