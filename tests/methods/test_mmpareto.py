"""MMPareto against a test-local transcription of the official training step.

Oracle: ``GeWu-Lab/MMPareto_ICML2024`` at commit a339db3, ``code/MMPareto.py`` lines 72-81
(parameter selection by name), 97-147 (one backward per loss, gradients cloned), 149-174
(cosine test, min-norm weights), 178-207 (gamma=1.5, magnitude rescaling per parameter tensor),
and ``code/min_norm_solvers.py`` lines 9-30 and 92-129 (two-vector min-norm solution).
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat
from modbalance.methods import MethodRequirementError, create_method
from modbalance.methods.mmpareto import MMPareto, mmpareto_weights

# ---------------------------------------------------------------- test-local transcription


def _official_from2(v1v1: float, v1v2: float, v2v2: float) -> float:
    """``min_norm_solvers.py`` 9-30: ``MinNormSolver._min_norm_element_from2`` (gamma only)."""
    if v1v2 >= v1v1:
        return 0.999
    if v1v2 >= v2v2:
        return 0.001
    return -1.0 * ((v1v2 - v2v2) / (v1v1 + v2v2 - 2 * v1v2))


def _official_min_norm_two(vecs: list[list[torch.Tensor]]) -> list[float]:
    """``min_norm_solvers.py`` 32-58 and 92-129 for two vectors: ``[c, 1 - c]``.

    As in the official call (``MMPareto.py`` 169), each "vector" is the list of per-parameter
    gradients *plus* their concatenation, so every dot product is doubled (c is unchanged).
    """
    dps = {}
    for i, j in ((0, 0), (0, 1), (1, 1)):
        dps[(i, j)] = sum(float(torch.mul(a, b).sum()) for a, b in zip(vecs[i], vecs[j]))
    c = _official_from2(dps[(0, 0)], dps[(0, 1)], dps[(1, 1)])
    return [c, 1 - c]


class _OfficialAV(nn.Module):
    """``models/models.py`` 151-184 naming: audio_net, visual_net, head, head_audio, head_video."""

    def __init__(self, audio_net: nn.Module, visual_net: nn.Module, head: nn.Linear, ha: nn.Linear, hv: nn.Linear):
        super().__init__()
        self.audio_net, self.visual_net = audio_net, visual_net
        self.head, self.head_audio, self.head_video = head, ha, hv

    def forward(self, audio: torch.Tensor, visual: torch.Tensor):
        a, v = self.audio_net(audio), self.visual_net(visual)
        return self.head(torch.cat((a, v), 1)), self.head_audio(a), self.head_video(v)


def _official_step(model: _OfficialAV, spec: torch.Tensor, images: torch.Tensor, label: torch.Tensor) -> dict:
    """Gradients after ``MMPareto.py`` 90-207 (the step up to, not including, optimizer.step)."""
    record_names_audio, record_names_visual = [], []
    for name, param in model.named_parameters():  # 72-81
        if "head" in name:
            continue
        if "audio" in name:
            record_names_audio.append((name, param))
            continue
        if "visual" in name:
            record_names_visual.append((name, param))
            continue
    model.zero_grad()
    out, out_a, out_v = model(spec, images)
    loss_mm, loss_a, loss_v = F.cross_entropy(out, label), F.cross_entropy(out_a, label), F.cross_entropy(out_v, label)
    grads_audio: dict = {}
    grads_visual: dict = {}
    for loss, loss_type in zip([loss_mm, loss_a, loss_v], ["both", "audio", "visual"]):  # 117-147
        loss.backward(retain_graph=True)
        if loss_type in ("both", "audio"):
            grads_audio[loss_type] = {n: p.grad.data.clone() for n, p in record_names_audio}
            grads_audio[loss_type]["concat"] = torch.cat(
                [grads_audio[loss_type][n].flatten() for n, _ in record_names_audio]
            )
        if loss_type in ("both", "visual"):
            grads_visual[loss_type] = {n: p.grad.data.clone() for n, p in record_names_visual}
            grads_visual[loss_type]["concat"] = torch.cat(
                [grads_visual[loss_type][n].flatten() for n, _ in record_names_visual]
            )
        model.zero_grad()
    cos_a = F.cosine_similarity(grads_audio["both"]["concat"], grads_audio["audio"]["concat"], dim=0)
    cos_v = F.cosine_similarity(grads_visual["both"]["concat"], grads_visual["visual"]["concat"], dim=0)
    audio_vecs = [list(grads_audio[t].values()) for t in ["both", "audio"]]
    visual_vecs = [list(grads_visual[t].values()) for t in ["both", "visual"]]
    audio_k = [0.5, 0.5] if cos_a > 0 else _official_min_norm_two(audio_vecs)
    visual_k = [0.5, 0.5] if cos_v > 0 else _official_min_norm_two(visual_vecs)
    gamma = 1.5  # 178
    (loss_mm + loss_a + loss_v).backward()  # 180-181
    for name, param in model.named_parameters():  # 184-207
        if param.grad is not None:
            layer = re.split("[_.]", str(name))
            if "head" in layer:
                continue
            for tag, k, grads in (("audio", audio_k, grads_audio), ("visual", visual_k, grads_visual)):
                if tag in layer:
                    three_norm = torch.norm(param.grad.data.clone())
                    new_grad = 2 * k[0] * grads["both"][name] + 2 * k[1] * grads[tag][name]
                    diff = three_norm / torch.norm(new_grad)
                    param.grad = diff * new_grad * gamma if diff > 1 else new_grad * gamma
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    cos = {"audio": float(cos_a), "visual": float(cos_v)}
    return {"grads": grads, "k": {"audio": audio_k, "visual": visual_k}, "cos": cos}


# ---------------------------------------------------------------- set-up


def _setup(conflict: bool, seed: int = 0):
    torch.manual_seed(seed)
    audio = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    visual = nn.Sequential(nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    model = MultimodalClassifier({"audio": audio, "visual": visual}, Concat({"audio": 4, "visual": 3}, num_classes=3))
    model.double()
    pareto = MMPareto()
    pareto.check(model)  # creates the uni-modal heads, in the model's dtype
    head = model.fusion.head  # type: ignore[union-attr]
    with torch.no_grad():  # uni-modal heads aligned with (or opposed to) the fused head's slices
        sign = -1.0 if conflict else 1.0
        pareto.heads["audio"].weight.copy_(sign * head.weight[:, :4] + 0.1 * torch.randn(3, 4, dtype=torch.float64))
        pareto.heads["visual"].weight.copy_(sign * head.weight[:, 4:] + 0.1 * torch.randn(3, 3, dtype=torch.float64))
    x = {"audio": torch.randn(16, 6, dtype=torch.float64), "visual": torch.randn(16, 7, dtype=torch.float64)}
    y = torch.randint(0, 3, (16,))
    official = _OfficialAV(
        copy.deepcopy(audio),
        copy.deepcopy(visual),
        copy.deepcopy(head),
        copy.deepcopy(pareto.heads["audio"]),
        copy.deepcopy(pareto.heads["visual"]),
    )
    return model, pareto, x, y, official


def _ours(model, pareto, x, y):
    loss = pareto.loss(model, model(x), y, epoch=0)
    loss.backward()
    pareto.before_step(model, None, epoch=0)
    return loss, pareto.last_weights


@pytest.mark.parametrize("conflict", [False, True])
def test_one_step_matches_the_official_gradients(conflict: bool) -> None:
    model, pareto, x, y, official = _setup(conflict)
    ref = _official_step(official, x["audio"], x["visual"], y)
    _, weights = _ours(model, pareto, x, y)
    # the case under test really is taken: agreement -> (1/2, 1/2), conflict -> min-norm weights
    for m in ("audio", "visual"):
        assert (ref["cos"][m] > 0) is (not conflict)
        assert weights[m].tolist() == pytest.approx(ref["k"][m], abs=1e-9)
        assert float(pareto.last_cosines[m]) == pytest.approx(ref["cos"][m], abs=1e-9)
    pairs = {
        "audio_net": model.encoders["audio"],
        "visual_net": model.encoders["visual"],
        "head": model.fusion.head,
        "head_audio": pareto.heads["audio"],
        "head_video": pareto.heads["visual"],
    }
    for prefix, module in pairs.items():
        for name, p in module.named_parameters():
            expected = ref["grads"][f"{prefix}.{name}"]
            assert torch.allclose(p.grad, expected, rtol=1e-6, atol=1e-9), (prefix, name)


def test_gradient_accumulation_equals_the_whole_batch() -> None:
    model, pareto, x, y, _ = _setup(True)
    model2 = copy.deepcopy(model)
    pareto2 = MMPareto()
    pareto2.check(model2)
    pareto2.load_state_dict(pareto.state_dict())
    _ours(model, pareto, x, y)
    for part in (slice(0, 5), slice(5, 16)):  # unequal micro-batches, loss scaled as the trainer does
        xi, yi = {m: v[part] for m, v in x.items()}, y[part]
        (pareto2.loss(model2, model2(xi), yi) * (yi.shape[0] / 16)).backward()
    pareto2.before_step(model2, None)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-6, atol=1e-10)


def test_weights_edge_cases() -> None:
    # agreeing gradients: equal weights; opposite gradients of equal norm: the midpoint
    assert mmpareto_weights(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])).tolist() == [0.5, 0.5]
    assert mmpareto_weights(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0])).tolist() == [0.5, 0.5]
    # hand-computed: g1=(2,0), g2=(-1,1): c = (2 - (-2)) / (4 + 2 + 4) = 0.4
    weights = mmpareto_weights(torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0]))
    assert weights.tolist() == pytest.approx([0.4, 0.6], abs=1e-6)
    # a zero multimodal gradient: the official solver's end clip 0.999
    weights = mmpareto_weights(torch.zeros(2), torch.tensor([1.0, 1.0]))
    assert weights.tolist() == pytest.approx([0.999, 0.001], abs=1e-6)


def test_exactly_opposite_gradients_give_zero_not_nan() -> None:
    # the min-norm point of g and -g is 0; the official code then computes inf * 0 = NaN
    model, pareto, x, y, _ = _setup(False)
    loss = pareto.loss(model, model(x), y)
    loss.backward()
    for m in ("audio", "visual"):
        g_mm, _ = pareto._stash[m]
        pareto._stash[m] = (g_mm, [-g for g in g_mm])
    pareto.before_step(model, None)
    for p in model.encoders.parameters():
        assert torch.equal(p.grad, torch.zeros_like(p.grad))


def test_outside_the_window_plain_cross_entropy_and_no_edit() -> None:
    model, _, x, y, _ = _setup(True)
    pareto = MMPareto(start_epoch=2)
    pareto.check(model)
    out = model(x)
    loss = pareto.loss(model, out, y, epoch=1)
    assert torch.equal(loss, F.cross_entropy(out.logits.float(), y))  # the base protocol's fp32 loss
    loss.backward()
    before = [p.grad.clone() for p in model.encoders.parameters()]
    pareto.before_step(model, None, epoch=1)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, model.encoders.parameters(), strict=True))


def test_state_dict_holds_the_heads_for_resume() -> None:
    model, pareto, *_ = _setup(True)
    fresh = MMPareto()
    fresh.check(model)
    fresh.load_state_dict(pareto.state_dict())
    assert torch.equal(fresh.heads["visual"].weight, pareto.heads["visual"].weight)
    assert [id(p) for p in pareto.param_groups(model, 0.1)[0]["params"]][-4:] == [
        id(p) for p in pareto.heads.parameters()
    ]


def test_requirements_name_the_method_and_the_fix() -> None:
    one = MultimodalClassifier({"audio": nn.Linear(3, 2)}, Concat({"audio": 2}, num_classes=2))
    with pytest.raises(MethodRequirementError, match="method 'mmpareto' needs at least 2 modalities"):
        MMPareto().check(one)
    frozen = MultimodalClassifier(
        {"audio": nn.Linear(3, 2), "visual": nn.Linear(3, 2).requires_grad_(False)},
        Concat({"audio": 2, "visual": 2}, num_classes=2),
    )
    with pytest.raises(MethodRequirementError, match=r"mmpareto.*'visual' encoder has no trainable parameter"):
        MMPareto().check(frozen)
    with pytest.raises(MethodRequirementError, match="method 'mmpareto' does not support distributed"):
        MMPareto().check_settings(distributed=True)
    with pytest.raises(MethodRequirementError, match=r"method 'mmpareto' does not support fp16.*bf16 or fp32"):
        MMPareto().check_settings(precision="fp16")
    MMPareto().check_settings(precision="bf16", grad_accum_steps=4)
    with pytest.raises(ValueError, match="method 'mmpareto': gamma must be a finite number > 0"):
        MMPareto(gamma=0)
    assert isinstance(create_method("mmpareto", gamma=2.0), MMPareto)


# ---------------------------------------------------------------- trainer


def _tiny(tmp_path, *overrides: str):
    from modbalance.train import load_config

    base = [f"output_dir={tmp_path}", "train.device=cpu", "train.probe=false", "train.epochs=1"]
    return load_config("lab/tiny", [*base, *overrides])


def test_trainer_runs_one_epoch_and_logs_the_conflict_share(tmp_path) -> None:
    import json

    from modbalance.train import run
    from modbalance.train.checkpoint import load_checkpoint

    folder = run(_tiny(tmp_path, "method.name=mmpareto", "train.grad_accum_steps=2"))
    record = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    for m in ("audio", "visual"):
        assert 0.0 <= record[f"method/mmpareto_conflict_share_{m}"] <= 1.0
    state = load_checkpoint(folder / "checkpoints" / "last.pt")["ranks"][0]["method"]
    assert {"heads.audio.weight", "heads.visual.bias"} <= set(state)  # the uni-modal heads are saved


def test_trainer_refuses_fp16_naming_the_method(tmp_path) -> None:
    from modbalance.train import run
    from modbalance.train.config import ConfigError

    with pytest.raises(ConfigError, match=r"mmpareto.*does not support fp16"):
        run(_tiny(tmp_path, "method.name=mmpareto", "train.precision=fp16"))
