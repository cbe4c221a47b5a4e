"""MLA against a test-local transcription of the official alternating training and prediction.

Oracle: ``Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation`` at commit ab6c184,
``main.py`` 142-164 (batch loop, ``optimizer.zero_grad()``), 419-470 (per-modality loss through
the shared ``fc_out``, ``GSPlugin.before_update``, ``optimizer.step()``, ``zero_grad``,
``del p.grad``), 65-87 and 622-651 (entropy gating and fixed ``av_alpha`` prediction), and
``utils/utils.py`` 12-41 (``GSPlugin``). The official plug-in tests ``n == "module.weight"``,
which never matches the ``nn.Linear`` it is given; ``fires=False`` transcribes that released
behaviour, ``fires=True`` the projection the paper describes. ``zero_grad`` is torch 1.8's
(``requirements.txt``): gradients zeroed, not freed.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat
from modbalance.methods import MethodRequirementError, create_method
from modbalance.methods.base import EpochContext
from modbalance.methods.mla import MLA, mla_entropy_weights, owm_update


class _OfficialGS:
    """``utils/utils.py`` 12-41 (the parameter name it looks for is the only change, see above)."""

    def __init__(self, dim: int, fires: bool) -> None:
        self.Pl = torch.eye(dim, dtype=torch.float64)
        self.exp_count = 0
        self.name = "weight" if fires else "module.weight"

    def before_update(self, model, before_batch_input, batch_index, len_dataloader, train_exp_counter):
        lamda = batch_index / len_dataloader + 1
        alpha = 1.0 * 0.1**lamda
        if train_exp_counter != 0:
            for n, w in model.named_parameters():
                if n == self.name:
                    r = torch.mean(before_batch_input, 0, True)
                    k = torch.mm(self.Pl, torch.t(r))
                    self.Pl = torch.sub(self.Pl, torch.mm(k, torch.t(k)) / (alpha + torch.mm(k, r)))
                    pnorm2 = torch.norm(self.Pl.data, p="fro")
                    self.Pl.data = self.Pl.data / pnorm2
                    w.grad.data = torch.mm(w.grad.data, torch.t(self.Pl.data))


def _official_epoch(audio_net, visual_net, fc_out, batches, optimizer, gs) -> None:
    """``main.py`` 142-164 and 419-470 (two modalities, ``lorb=base``)."""
    params = [*audio_net.parameters(), *visual_net.parameters(), *fc_out.parameters()]
    len_dataloader = len(batches)
    for batch_step, (spec, image, label) in enumerate(batches):
        optimizer.zero_grad(set_to_none=False)
        a, v = audio_net(spec), visual_net(image)
        out_a = fc_out(a)
        loss_a = F.cross_entropy(out_a, label)
        loss_a.backward()
        gs.before_update(fc_out, a, batch_step, len_dataloader, gs.exp_count)
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        gs.exp_count += 1
        out_v = fc_out(v)
        loss_v = F.cross_entropy(out_v, label)
        loss_v.backward()
        gs.before_update(fc_out, v, batch_step, len_dataloader, gs.exp_count)
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        gs.exp_count += 1
        for p in params:
            if p.grad is not None:
                p.grad = None  # del p.grad


def _official_gating(out_a: torch.Tensor, out_v: torch.Tensor) -> torch.Tensor:
    """``main.py`` 65-87, 640-645."""

    def entropy(output):
        probabilities = F.softmax(output, dim=0)
        return -torch.sum(probabilities * torch.log(probabilities))

    e1, e2 = entropy(out_a), entropy(out_v)
    top = max(e1, e2)
    w1, w2 = torch.exp(top - e1), torch.exp(top - e2)
    total = w1 + w2
    return out_a * (w1 / total) + out_v * (w2 / total)


def _setup():
    audio = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    visual = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4))
    model = MultimodalClassifier({"audio": audio, "visual": visual}, Concat({"audio": 4, "visual": 4}, 3)).double()
    gen = torch.Generator().manual_seed(0)
    batches = [
        [
            (
                torch.randn(10, 6, generator=gen, dtype=torch.float64),
                torch.randn(10, 5, generator=gen, dtype=torch.float64),
                torch.randint(0, 3, (10,), generator=gen),
            )
            for _ in range(3)
        ]
        for _ in range(2)
    ]
    return model, batches


def _sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)  # main.py 749 (lr for speed)


@pytest.mark.parametrize("fires", [True, False], ids=["projection", "released"])
def test_two_epochs_match_the_official_alternation(fires: bool) -> None:
    torch.manual_seed(0)
    model, batches = _setup()
    mla = MLA(gradient_modification=fires, batches_per_epoch=3)
    mla.check(model)
    ref_audio, ref_visual = copy.deepcopy(model.encoders["audio"]), copy.deepcopy(model.encoders["visual"])
    ref_head = copy.deepcopy(mla.head)
    ref_opt = _sgd([*ref_audio.parameters(), *ref_visual.parameters(), *ref_head.parameters()])
    gs = _OfficialGS(4, fires)
    for epoch_batches in batches:
        _official_epoch(ref_audio, ref_visual, ref_head, epoch_batches, ref_opt, gs)

    opt = _sgd(mla.param_groups(model, 0.05))
    for epoch, epoch_batches in enumerate(batches):
        mla.on_epoch_start(model, EpochContext(epoch))
        for spec, image, label in epoch_batches:
            out = model({"audio": spec, "visual": image})
            mla.loss(model, out, label, epoch=epoch).backward()
            mla.before_step(model, opt, epoch=epoch)
            opt.step()
            opt.zero_grad(set_to_none=True)
        mla.on_epoch_end(model, EpochContext(epoch))

    assert mla.updates == gs.exp_count == 12
    if fires:
        assert torch.allclose(mla.projector, gs.Pl, rtol=1e-6, atol=1e-12)
        assert not torch.allclose(gs.Pl, torch.eye(4, dtype=torch.float64) / 2)  # the projection acted
    pairs = [(ref_audio, model.encoders["audio"]), (ref_visual, model.encoders["visual"]), (ref_head, mla.head)]
    for ref_module, module in pairs:
        for p, q in zip(ref_module.parameters(), module.parameters(), strict=True):
            assert torch.allclose(p, q, rtol=1e-6, atol=1e-10)


def test_prediction_fixed_and_dynamic() -> None:
    model, batches = _setup()
    spec, image, _ = batches[0][0]
    out = model({"audio": spec, "visual": image})
    for dynamic in (False, True):
        mla = MLA(dynamic=dynamic)
        mla.check(model)
        assert mla.head is not None
        out_a, out_v = mla.head(out.features["audio"]), mla.head(out.features["visual"])
        expected = _official_gating(out_a, out_v) if dynamic else 0.5 * out_a + 0.5 * out_v  # av_alpha 0.5
        assert torch.allclose(mla.predict(model, out), expected, rtol=1e-9, atol=1e-12)


def test_owm_and_entropy_hand_computed() -> None:
    projector = owm_update(torch.eye(2), torch.tensor([[2.0, 2.0], [0.0, 0.0]]), alpha=1.0)
    # r = (1, 1), k = (1, 1)^T: k k^T = ones, alpha + k r = 2 * ones: P - ones / 2, over its norm 1
    assert projector.flatten().tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5])
    flat = mla_entropy_weights({"a": torch.zeros(3, 2), "b": torch.zeros(3, 2)})
    assert float(flat["a"]) == pytest.approx(0.5)


def test_requirements_name_the_method_and_the_fix() -> None:
    uneven = MultimodalClassifier({"a": nn.Linear(3, 4), "b": nn.Linear(3, 2)}, Concat({"a": 4, "b": 2}, 2))
    with pytest.raises(MethodRequirementError, match=r"method 'mla' shares one head.*same width"):
        MLA().check(uneven)
    even = MultimodalClassifier({"a": nn.Linear(3, 2), "b": nn.Linear(3, 2)}, Concat({"a": 2, "b": 2}, 2))
    with pytest.raises(MethodRequirementError, match=r"method 'mla': weights has 3 entries for 2"):
        MLA(weights=[0.2, 0.3, 0.5]).check(even)
    with pytest.raises(MethodRequirementError, match="method 'mla' does not support gradient accumulation"):
        MLA().check_settings(grad_accum_steps=2)
    with pytest.raises(MethodRequirementError, match="method 'mla' does not support fp16"):
        MLA().check_settings(precision="fp16")
    assert isinstance(create_method("mla", dynamic=True), MLA)


def test_trainer_runs_one_epoch(tmp_path) -> None:
    import json

    from modbalance.train import load_config, run

    config = load_config(
        "lab/tiny",
        [f"output_dir={tmp_path}", "train.device=cpu", "train.probe=false", "train.epochs=1", "method.name=mla"],
    )
    record = json.loads((run(config) / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 0
