"""InfoReg against a test-local transcription of the official training epochs.

Oracle: ``GeWu-Lab/InfoReg_CVPR2025`` at commit 939b2ed, ``main.py``: 237-243 (window indicator
k), 259 (epoch-start copy of the model), 361-363 (head-slice uni-modal logits, ``bias / 2``),
378-380 and 456-458 (the three losses, summed by three backward calls), 460-485 (batch-sum scores,
beta), 489-495 (proximal term on the encoders' gradients), 507-514 and 569-572 (Fisher sums of
the encoders' conv/linear weights and their trace), 595 (trace history), 693-694 (ten zeros of
padding), 714 (SGD, momentum 0.9, weight decay 1e-4).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat, FiLM
from modbalance.methods import MethodRequirementError, create_method
from modbalance.methods.base import EpochContext
from modbalance.methods.inforeg import InfoReg, inforeg_window

# ---------------------------------------------------------------- test-local transcription


class _OfficialAV(nn.Module):
    """``models/basic_model.py`` 37-81 (``usegate=False``): audio_net, visual_net, head on the concat."""

    def __init__(self, audio_net: nn.Module, visual_net: nn.Module, head: nn.Linear):
        super().__init__()
        self.audio_net, self.visual_net, self.head = audio_net, visual_net, head

    def forward(self, audio, visual):
        a, v = self.audio_net(audio), self.visual_net(visual)
        return a, v, self.head(torch.cat((a, v), 1))


def _official_epoch(model, batches, optimizer, epoch, audio_trace_list, log):
    """``main.py`` ``train_epoch`` 231-595, the parts that change parameters and traces."""
    if epoch == 0:  # 237-243
        k = 1
    else:
        tr1 = sum(audio_trace_list[-10:]) / 10
        tr2 = sum(audio_trace_list[-11:-1]) / 10
        k = (tr1 - tr2) / tr1
    global_model = copy.deepcopy(model)  # 259
    fim_audio = {}
    for name, module in model.named_modules():  # 303-310
        if isinstance(module, (nn.Conv2d, nn.Linear)) and "audio_net" in name and module.weight.requires_grad:
            fim_audio[name] = torch.zeros_like(module.weight)
    width = model.audio_net[-1].out_features
    for spec, image, label in batches:
        optimizer.zero_grad()
        a, v, out = model(spec, image)
        out_v = torch.mm(v, torch.transpose(model.head.weight[:, width:], 0, 1)) + model.head.bias / 2  # 361
        out_a = torch.mm(a, torch.transpose(model.head.weight[:, :width], 0, 1)) + model.head.bias / 2  # 363
        loss = F.cross_entropy(out, label)
        loss_out_v = F.cross_entropy(out_v, label)
        loss_out_a = F.cross_entropy(out_a, label)
        loss_out_v.backward(retain_graph=True)  # 456-458
        loss_out_a.backward(retain_graph=True)
        loss.backward()
        score_v = sum([F.softmax(out_v, dim=1)[i][label[i]] for i in range(out_v.size(0))])  # 460-461
        score_a = sum([F.softmax(out_a, dim=1)[i][label[i]] for i in range(out_a.size(0))])
        if (score_a > score_v) and k > 0.05:  # 465-485
            beta = 0.95 * torch.exp(torch.tanh(score_a - score_v))
            beta2 = 0
        elif (score_a < score_v) and k > 0.05:
            beta2 = 0.1 * torch.exp(torch.tanh(score_v - score_a))
            beta = 0
        else:
            beta = 0
            beta2 = 0
        log.append((float(torch.as_tensor(beta).detach()), float(torch.as_tensor(beta2).detach())))
        for model_param, global_model_param in zip(model.parameters(), global_model.parameters()):  # 489-495
            if model_param.requires_grad and any(model_param is p for p in model.audio_net.parameters()):
                model_param.grad += beta * (model_param - global_model_param)
            if model_param.requires_grad and any(model_param is p for p in model.visual_net.parameters()):
                model_param.grad += beta2 * (model_param - global_model_param)
        for name, module in model.named_modules():  # 507-511
            if isinstance(module, (nn.Conv2d, nn.Linear)) and "audio_net" in name and module.weight.requires_grad:
                fim_audio[name] += module.weight.grad * module.weight.grad
                fim_audio[name].detach_()
        optimizer.step()
    fim_trace_audio = 0  # 569-572
    for name in fim_audio:
        fim_trace_audio += fim_audio[name].mean().item()
    audio_trace_list.append(fim_trace_audio)  # 595
    return k


# ---------------------------------------------------------------- set-up


def _data(seed: int, steps: int):
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(12, 6, generator=gen, dtype=torch.float64),
            torch.randn(12, 5, generator=gen, dtype=torch.float64),
            torch.randint(0, 3, (12,), generator=gen),
        )
        for _ in range(steps)
    ]


def _models():
    audio = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    visual = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4))
    with torch.no_grad():
        audio[0].weight.mul_(3.0)  # a stronger audio branch, so that both regulation branches occur
    model = MultimodalClassifier({"audio": audio, "visual": visual}, Concat({"audio": 4, "visual": 4}, 3)).double()
    official = _OfficialAV(
        copy.deepcopy(audio).double(), copy.deepcopy(visual).double(), copy.deepcopy(model.fusion.head)
    )
    return model, official


def _sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)  # main.py 714 (lr for speed)


def test_three_epochs_match_the_official_parameters_k_and_traces() -> None:
    torch.manual_seed(0)
    model, official = _models()
    batches = [_data(seed, 4) for seed in range(3)]
    ref_opt, ref_traces, log = _sgd(official.parameters()), [0] * 10, []
    ref_k = [_official_epoch(official, batches[e], ref_opt, e, ref_traces, log) for e in range(3)]

    method = InfoReg()
    method.check(model)
    opt = _sgd(method.param_groups(model, 0.05))
    ks, betas = [], []
    for epoch in range(3):
        method.on_epoch_start(model, EpochContext(epoch))
        ks.append(method.k)
        for spec, image, label in batches[epoch]:
            opt.zero_grad()
            method.loss(model, model({"audio": spec, "visual": image}), label, epoch=epoch).backward()
            method.before_step(model, opt, epoch=epoch)
            betas.append(tuple(method.last_betas.tolist()))
            opt.step()
        method.on_epoch_end(model, EpochContext(epoch))

    assert ks == pytest.approx(ref_k, abs=1e-9)
    assert 0.05 < ks[2] < 1  # the window indicator is really computed from traces
    assert torch.allclose(torch.tensor(betas), torch.tensor(log), rtol=1e-9, atol=1e-12)
    assert any(b[0] > 0 for b in log) and any(b[1] > 0 for b in log)  # both branches taken
    assert method.traces["audio"] == pytest.approx(ref_traces, rel=1e-9)
    pairs = [(official.audio_net, model.encoders["audio"]), (official.visual_net, model.encoders["visual"])]
    pairs.append((official.head, model.fusion.head))
    for ref_module, module in pairs:
        for p, q in zip(ref_module.parameters(), module.parameters(), strict=True):
            assert torch.allclose(p, q, rtol=1e-6, atol=1e-9)


def test_window_indicator_hand_computed() -> None:
    assert inforeg_window([0.0] * 10 + [3.0]) == 1.0
    assert inforeg_window([0.0] * 10 + [3.0, 1.0]) == pytest.approx(0.25)  # (4 - 3) / 4
    history = [0.0] * 10 + [float(t) for t in range(1, 12)]  # last ten 2..11 vs 1..10: (65 - 55) / 65
    assert inforeg_window(history) == pytest.approx(10 / 65)
    assert inforeg_window([0.0] * 11) == 0.0  # official: ZeroDivisionError


def test_regulation_off_below_threshold_and_outside_window() -> None:
    model, _ = _models()
    method = InfoReg(threshold=2.0)  # k <= 1 always: never regulate
    method.check(model)
    method.on_epoch_start(model, EpochContext(0))
    spec, image, label = _data(0, 1)[0]
    method.loss(model, model({"audio": spec, "visual": image}), label, epoch=0).backward()
    method.before_step(model, None, epoch=0)
    assert method.last_betas.tolist() == [0.0, 0.0]


def test_state_round_trip_for_resume() -> None:
    model, _ = _models()
    method = InfoReg()
    method.check(model)
    method.on_epoch_start(model, EpochContext(0))
    method.traces["audio"].append(1.5)
    restored = InfoReg()
    restored.check(model)
    restored.load_state_dict(method.state_dict())
    assert restored.traces["audio"][-1] == 1.5 and restored.k == method.k
    assert torch.equal(restored._anchor["visual"][0], method._anchor["visual"][0])


def test_requirements_name_the_method_and_the_fix() -> None:
    three = MultimodalClassifier({m: nn.Linear(3, 2) for m in "abc"}, Concat({m: 2 for m in "abc"}, 2))
    with pytest.raises(MethodRequirementError, match="method 'inforeg' is defined for at most 2 modalities"):
        InfoReg().check(three)
    film = MultimodalClassifier({"a": nn.Linear(3, 2), "b": nn.Linear(3, 2)}, FiLM({"a": 2, "b": 2}, 2))
    with pytest.raises(MethodRequirementError, match="method 'inforeg' needs a fusion with exact per-modality heads"):
        InfoReg().check(film)
    two = MultimodalClassifier({"a": nn.Linear(3, 2), "b": nn.Linear(3, 2)}, Concat({"a": 2, "b": 2}, 2))
    with pytest.raises(MethodRequirementError, match="window_modality='audio' is not one of"):
        InfoReg(window_modality="audio").check(two)
    with pytest.raises(MethodRequirementError, match="method 'inforeg' does not support fp16"):
        InfoReg().check_settings(precision="fp16")
    with pytest.raises(ValueError, match="method 'inforeg': strengths must be two finite numbers"):
        InfoReg(strengths=(1.0,))
    assert isinstance(create_method("inforeg", strengths=[0.5, 0.5]), InfoReg)


def test_trainer_runs_one_epoch_and_logs_k_and_traces(tmp_path) -> None:
    import json

    from modbalance.train import load_config, run

    config = load_config(
        "lab/tiny",
        [f"output_dir={tmp_path}", "train.device=cpu", "train.probe=false", "train.epochs=1", "method.name=inforeg"],
    )
    record = json.loads((run(config) / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["method/inforeg_k"] == 1.0
    assert record["method/inforeg_trace_audio"] > 0 and record["method/inforeg_trace_visual"] > 0
