"""Greedy against a test-local transcription of the official re-balancing steps.

Oracle: ``nyukat/greedy_multimodal_learning`` at commit a190e03:

* ``src/callbacks.py`` 190-197 (``on_train_begin``), 199-233 (``compute_BDR``: per-parameter
  squared norms by name, ``mmtm`` parameters with a modality's name to that modality, other
  ``mmtm`` parameters to both, branch parameters by branch name), 240-263 (``on_backward_end``:
  the choice and the window of re-balancing steps), 265-267 (``on_epoch_begin``);
* ``src/balanced_mmtm.py`` 94-116 (squeeze, excitation, running averages, including the
  second modality's average fed with the first modality's scales at line 114) and 128-152 (the
  re-balanced modality's excitation replaced by its running average);
* ``src/framework.py`` 306-315 (one step: ``zero_grad``, forward with the current mode,
  ``backward``, ``on_backward_end``, ``optimizer.step``); ``configs/training_guided.gin``
  (lr 0.1, momentum 0, epsilon 0.01, window 5, starting epoch 2 of 1-based epochs).

Parameter names map as follows: the official ``mmtm`` prefix is our ``blocks.``; the branch
names ``net_view_0``/``net_view_1`` are our ``stages.audio``/``stages.visual``. The official
excitation is ``sigmoid``; ``MMTMNet``'s is ``2 sigmoid`` (the MMTM paper), so the oracle uses
that. The oracle's running average counts training forwards only (as ours; the official forward
also counts evaluation passes).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat
from modbalance.interaction import MMTMNet
from modbalance.methods import MethodRequirementError, create_method
from modbalance.methods.base import EpochContext
from modbalance.methods.greedy import Greedy, greedy_parameter_groups
from tests.methods.resume import assert_cut_and_resume_exact

MODALITIES = ("audio", "visual")


def _model(seed: int = 0, dims: tuple[int, int] = (5, 3), width: int = 6) -> MMTMNet:
    torch.manual_seed(seed)
    stages = {
        m: [nn.Sequential(nn.Linear(d, width), nn.ReLU()), nn.Linear(width, 4)]
        for m, d in zip(MODALITIES, dims, strict=True)
    }
    return MMTMNet(stages, {m: [width, 4] for m in MODALITIES}, num_classes=3, fuse_after=[0], ratio=2)


# ----------------------------------------------------------------------------- the transcription
def _official_compute_bdr(model: nn.Module, cb: dict) -> float:
    """``callbacks.py`` 199-233 (``'mmtm'`` -> ``'blocks.'``, branch names -> ``stages.<m>``)."""
    branchnames, mmtmnames = ["stages.audio", "stages.visual"], ["audio", "visual"]
    wn_main, wn_bypass = [0] * len(branchnames), [0] * len(branchnames)
    gn_main, gn_bypass = [0] * len(branchnames), [0] * len(branchnames)
    for name, parameter in model.named_parameters():
        wn = (parameter**2).sum().item()
        gn = (parameter.grad.data**2).sum().item()
        if "blocks." in name:
            shared = True
            for ind, modal in enumerate(mmtmnames):
                if modal in name:
                    wn_bypass[ind] += wn
                    gn_bypass[ind] += gn
                    shared = False
            if shared:
                for ind, _modal in enumerate(mmtmnames):
                    wn_bypass[ind] += wn
                    gn_bypass[ind] += gn
        else:
            for ind, modal in enumerate(branchnames):
                if modal in name:
                    wn_main[ind] += wn
                    gn_main[ind] += gn
    cb["M_bypass_modal_0"] += gn_bypass[0] / wn_bypass[0]
    cb["M_bypass_modal_1"] += gn_bypass[1] / wn_bypass[1]
    cb["M_main_modal_0"] += gn_main[0] / wn_main[0]
    cb["M_main_modal_1"] += gn_main[1] / wn_main[1]
    bdr_0 = np.log10(cb["M_bypass_modal_0"] / cb["M_main_modal_0"])
    bdr_1 = np.log10(cb["M_bypass_modal_1"] / cb["M_main_modal_1"])
    return float(bdr_0 - bdr_1)


def _official_on_backward_end(model: nn.Module, cb: dict, epsilon: float, windowsize: int) -> None:
    """``callbacks.py`` 240-263 (``model_pytoune`` fields kept in ``cb``)."""
    if cb["unlock"]:
        if not cb["curation_mode"]:
            cb["d_BDR"] = _official_compute_bdr(model, cb)
            if abs(cb["d_BDR"]) > epsilon:
                biased_direction = np.sign(cb["d_BDR"])
                cb["curation_mode"] = True
                cb["curation_step"] = 0
                if biased_direction == -1:
                    cb["caring_modality"] = 1
                elif biased_direction == 1:
                    cb["caring_modality"] = 0
            else:
                cb["curation_mode"] = False
                cb["caring_modality"] = 0
        else:
            cb["curation_step"] += 1
            if cb["curation_step"] == windowsize:
                cb["curation_mode"] = False
    else:
        cb["d_BDR"] = _official_compute_bdr(model, cb)
        cb["curation_mode"] = False
        cb["caring_modality"] = 0


def _official_forward(model: MMTMNet, x: dict, mmtm: dict, curation_mode: bool, caring: int, quirk: bool):
    """``balanced_mmtm.py`` 94-116, 128-152 inside the stream/stage order of ``MMTMNet`` (fuse after stage 0)."""
    block = model.blocks["0"]
    visual = model.stages["audio"][0](x["audio"])  # the official "visual" is modality 0
    skeleton = model.stages["visual"][0](x["visual"])
    squeeze = torch.cat([visual, skeleton], 1)
    excitation = F.relu(block.squeeze(squeeze))
    vis_out = 2.0 * torch.sigmoid(block.excite["audio"](excitation))
    sk_out = 2.0 * torch.sigmoid(block.excite["visual"](excitation))
    step = mmtm["step"]
    mmtm["avg_visual"] = (vis_out.mean(0) + mmtm["avg_visual"] * step).detach() / (step + 1)
    source = vis_out if quirk else sk_out  # line 114 averages vis_out
    mmtm["avg_skeleton"] = (source.mean(0) + mmtm["avg_skeleton"] * step).detach() / (step + 1)
    mmtm["step"] += 1
    if curation_mode:
        if caring == 0:
            vis_out = torch.stack(vis_out.shape[0] * [mmtm["avg_visual"]])
        elif caring == 1:
            sk_out = torch.stack(sk_out.shape[0] * [mmtm["avg_skeleton"]])
    a = model.stages["audio"][1](visual * vis_out)
    v = model.stages["visual"][1](skeleton * sk_out)
    return model.head(torch.cat([a, v], 1))


def _batches(seed: int, steps: int, batch: int = 8) -> list:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        y = torch.randint(0, 3, (batch,), generator=g)
        audio = torch.randn(batch, 5, generator=g) + y[:, None].float()  # audio is the informative one
        visual = torch.randn(batch, 3, generator=g) + 0.2 * y[:, None].float()
        out.append(({"audio": audio, "visual": visual}, y))
    return out


@pytest.mark.parametrize("quirk", [False, True])
def test_three_epochs_match_the_official_rebalancing(quirk: bool) -> None:
    epochs, per_epoch, window, epsilon = 3, 5, 2, 0.01
    ours = _model(seed=1, dims=(5, 3))
    theirs = copy.deepcopy(ours)
    greedy = Greedy(epsilon=epsilon, window=window, official_second_average=quirk, start_epoch=1)
    greedy.check(ours)
    opt_ours = torch.optim.SGD(greedy.param_groups(ours, 0.1), lr=0.1, momentum=0.0)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.0)
    cb = dict.fromkeys(["M_bypass_modal_0", "M_bypass_modal_1", "M_main_modal_0", "M_main_modal_1"], 0)
    cb.update(curation_mode=False, caring_modality=None, unlock=False, curation_step=0, d_BDR=None)
    mmtm = {"avg_visual": torch.zeros(6), "avg_skeleton": torch.zeros(6), "step": 0}
    batches = _batches(seed=4, steps=epochs * per_epoch)
    modes_ours, modes_theirs = [], []
    for epoch in range(epochs):
        if epoch + 1 >= 2:  # callbacks.py 265-267, 1-based epochs, starting_epoch=2
            cb["unlock"] = True
        for x, y in batches[epoch * per_epoch : (epoch + 1) * per_epoch]:
            # ours, the trainer's method_step
            modes_ours.append(greedy.rebalancing if greedy.active(epoch) else None)
            out = greedy.train_forward(ours, x, epoch=epoch)
            greedy.loss(ours, out, y, epoch=epoch).backward()
            greedy.before_step(ours, opt_ours, epoch=epoch)
            opt_ours.step()
            opt_ours.zero_grad(set_to_none=True)
            # theirs, framework.py 306-315
            modes_theirs.append(MODALITIES[cb["caring_modality"]] if cb["curation_mode"] else None)
            opt_theirs.zero_grad()
            logits = _official_forward(theirs, x, mmtm, cb["curation_mode"], cb["caring_modality"], quirk)
            F.cross_entropy(logits, y).backward()
            _official_on_backward_end(theirs, cb, epsilon, window)
            opt_theirs.step()
            assert greedy.d_bdr == pytest.approx(cb["d_BDR"], rel=1e-6, abs=1e-6)
            for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
                torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6, msg=lambda s, n=name: f"{n}: {s}")
    assert modes_ours == modes_theirs
    assert set(modes_ours) == {None, "audio", "visual"}, modes_ours  # both directions and plain steps occur
    assert modes_ours[:per_epoch] == [None] * per_epoch  # nothing before the starting epoch


def test_parameter_groups_are_the_official_name_rule() -> None:
    model = _model()
    bypass, main = greedy_parameter_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in bypass["audio"]) == [
        "blocks.0.excite.audio.bias",
        "blocks.0.excite.audio.weight",
        "blocks.0.squeeze.bias",
        "blocks.0.squeeze.weight",
    ]
    assert all(names[id(p)].startswith("stages.visual.") for p in main["visual"])
    assert len(main["visual"]) == len(list(model.stages["visual"].parameters()))
    # ogm_shared=audio adds the shared parameters to audio's modality group; the stream stays its own
    shared = MMTMNet(
        {m: [nn.Linear(3, 4), nn.Linear(4, 2)] for m in MODALITIES},
        {m: [4, 2] for m in MODALITIES},
        num_classes=2,
        ogm_shared="audio",
    )
    assert len(greedy_parameter_groups(shared)[1]["audio"]) == 4


def _identity_model() -> MMTMNet:
    """One identity stage per modality (1 channel), an MMTM block after it, head = identity on [a, v]."""
    model = MMTMNet({m: [nn.Identity()] for m in MODALITIES}, {m: [1] for m in MODALITIES}, 2, fuse_after=[0])
    block = model.blocks["0"]  # hidden = max(1, 2 // 4) = 1
    with torch.no_grad():
        block.squeeze.weight.copy_(torch.tensor([[1.0, 0.0]]))  # z = relu(a)
        block.squeeze.bias.zero_()
        for m in MODALITIES:
            block.excite[m].weight.fill_(1.0)  # gate = 2 sigmoid(z)
            block.excite[m].bias.zero_()
        model.head.weight.copy_(torch.eye(2))
        model.head.bias.zero_()
    return model


@pytest.mark.parametrize("quirk", [False, True])
def test_rebalancing_step_uses_the_running_average_hand_checked(quirk: bool) -> None:
    model = _identity_model()
    greedy = Greedy(start_epoch=0, official_second_average=quirk)
    greedy.check(model)
    ln3 = math.log(3.0)  # 2 sigmoid(ln 3) = 1.5; 2 sigmoid(0) = 1
    first = {"audio": torch.tensor([[0.0], [0.0]]), "visual": torch.tensor([[2.0], [4.0]])}
    out = greedy.train_forward(model, first, epoch=0)  # gates: audio (1, 1), visual (1, 1); averages 1
    assert out.logits.tolist() == [[0.0, 2.0], [0.0, 4.0]]
    second = {"audio": torch.tensor([[0.0], [ln3]]), "visual": torch.tensor([[2.0], [4.0]])}
    # the batch's own gates: audio (1, 1.5), visual (1, 1.5); running averages (1.25 + 1) / 2 = 1.125
    greedy.rebalancing = "audio"
    out = greedy.train_forward(model, second, epoch=0)
    torch.testing.assert_close(out.logits[:, 0], torch.tensor([0.0, ln3 * 1.125]))
    torch.testing.assert_close(out.logits[:, 1], torch.tensor([2.0, 4.0 * 1.5]))  # visual untouched
    # third batch, visual re-balanced: z = relu(audio) drives both gates, (1.5, 1.5) for each, so both
    # running averages become (1.5 + 1.125 * 2) / 3 = 1.25; audio keeps its own gates
    greedy.rebalancing = "visual"
    third = {"audio": torch.tensor([[ln3], [ln3]]), "visual": torch.tensor([[1.0], [3.0]])}
    out = greedy.train_forward(model, third, epoch=0)
    torch.testing.assert_close(out.logits[:, 0], torch.tensor([ln3 * 1.5, ln3 * 1.5]))
    torch.testing.assert_close(out.logits[:, 1], torch.tensor([1.25, 3.75]))
    # the two averages differ when excite["visual"] has weight 0 (visual gates exactly 1): the quirk shows
    model2 = _identity_model()
    with torch.no_grad():
        model2.blocks["0"].excite["visual"].weight.zero_()
    greedy2 = Greedy(start_epoch=0, official_second_average=quirk)
    greedy2.check(model2)
    greedy2.train_forward(model2, second, epoch=0)  # audio gates (1, 1.5) -> 1.25; visual (1, 1) -> 1
    greedy2.rebalancing = "visual"
    out = greedy2.train_forward(model2, first, epoch=0)  # audio (1, 1): audio average 1.125; visual 1
    expected = 1.125 if quirk else 1.0  # the official line 114 gives visual the audio average
    torch.testing.assert_close(out.logits[:, 1], torch.tensor([2.0, 4.0]) * expected)
    assert all(b.excitation_hook is None for b in model2.blocks.values())  # the seam is released


def test_evaluation_and_unimodal_passes_are_untouched() -> None:
    model = _model()
    x = _batches(0, 1)[0][0]
    model.eval()
    before = model(x)
    greedy = Greedy(start_epoch=0)
    greedy.check(model)
    greedy.rebalancing = "audio"
    out = greedy.train_forward(model, x, epoch=0)
    assert not torch.allclose(out.logits, before.logits)  # the training pass was re-balanced
    torch.testing.assert_close(out.unimodal_logits["audio"], before.unimodal_logits["audio"])
    after = model(x)  # no hook left: evaluation is the plain model
    assert torch.equal(after.logits, before.logits)
    # outside the window nothing is replaced, the averages still accumulate
    late = Greedy(start_epoch=5)
    late.check(model)
    late.rebalancing = "audio"
    assert torch.equal(late.train_forward(model, x, epoch=0).logits, before.logits)


def test_state_round_trip_resumes_exactly(tmp_path: Path) -> None:
    model = _model()
    greedy = Greedy(epsilon=0.0, start_epoch=0)
    greedy.check(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = _batches(1, 4)
    for x, y in batches[:2]:
        greedy.loss(model, greedy.train_forward(model, x, epoch=0), y, epoch=0).backward()
        greedy.before_step(model, opt, epoch=0)
        opt.step()
        opt.zero_grad()
    torch.save({"model": model.state_dict(), "method": greedy.state_dict()}, tmp_path / "ck.pt")
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    model2 = _model(seed=5)
    model2.load_state_dict(state["model"])
    greedy2 = Greedy(epsilon=0.0, start_epoch=0)
    greedy2.check(model2)
    greedy2.load_state_dict(state["method"])
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1)
    for x, y in batches[2:]:
        for g, m, o in ((greedy, model, opt), (greedy2, model2, opt2)):
            g.loss(m, g.train_forward(m, x, epoch=0), y, epoch=0).backward()
            g.before_step(m, o, epoch=0)
            o.step()
            o.zero_grad()
        assert greedy.d_bdr == greedy2.d_bdr and greedy.rebalancing == greedy2.rebalancing
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_requirements_name_the_method_and_the_fix() -> None:
    late = MultimodalClassifier({m: nn.Linear(3, 2) for m in MODALITIES}, Concat(dict.fromkeys(MODALITIES, 2), 2))
    with pytest.raises(MethodRequirementError, match=r"'greedy'.*MMTM blocks.*has none.*model.kind=mmtm"):
        Greedy().check(late)
    three = MMTMNet({m: [nn.Linear(2, 2)] * 1 for m in "abc"}, {m: [2] for m in "abc"}, 2, fuse_after=[0])
    with pytest.raises(MethodRequirementError, match=r"'greedy' is defined for at most 2 modalities"):
        Greedy().check(three)
    unequal = MMTMNet({"a": [nn.Linear(2, 3)], "b": [nn.Linear(2, 2)]}, {"a": [3], "b": [2]}, 2, fuse_after=[0])
    with pytest.raises(MethodRequirementError, match=r"official_second_average=True.*equal channel counts"):
        Greedy(official_second_average=True).check(unequal)
    Greedy().check(unequal)  # own averages: any widths
    with pytest.raises(RuntimeError, match=r"'greedy': call check\(model\)"):
        Greedy().train_forward(_model(), _batches(0, 1)[0][0])
    checked = Greedy()
    checked.check(_model())
    with pytest.raises(RuntimeError, match=r"'greedy' was checked on another model.*check\(model\) with the model"):
        checked.train_forward(_model(), _batches(0, 1)[0][0])  # hooks would land on the other model's blocks
    with pytest.raises(ValueError, match=r"window must be an int >= 1"):
        Greedy(window=0)
    with pytest.raises(ValueError, match=r"epsilon must be a finite number >= 0"):
        Greedy(epsilon=-1.0)
    with pytest.raises(MethodRequirementError, match=r"'greedy' does not support fp16"):
        Greedy().check_settings(precision="fp16")
    with pytest.raises(MethodRequirementError, match=r"'greedy' does not support distributed"):
        Greedy().check_settings(distributed=True)
    Greedy().check_settings(precision="bf16", grad_accum_steps=2)
    zero = _model()
    with torch.no_grad():
        for p in zero.stages["visual"].parameters():
            p.zero_()
    greedy = Greedy()
    greedy.check(zero)
    x, y = _batches(0, 1)[0]
    greedy.loss(zero, greedy.train_forward(zero, x, epoch=0), y, epoch=0).backward()
    with pytest.raises(MethodRequirementError, match=r"'greedy'.*stream of visual.*weights are all zero"):
        greedy.before_step(zero, torch.optim.SGD(zero.parameters(), lr=0.1), epoch=0)


@pytest.mark.parametrize("micro", [1, 2])
def test_epoch_record_counts_rebalancing_steps(micro: int) -> None:
    model = _model()
    greedy = create_method("greedy", epsilon=0.0, window=2, start_epoch=0)
    assert isinstance(greedy, Greedy)
    greedy.check(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    greedy.on_epoch_start(model, EpochContext(0))
    for x, y in _batches(2, 6):
        for part in range(micro):  # gradient accumulation: several forwards per optimizer step
            rows = slice(part * 8 // micro, (part + 1) * 8 // micro)
            xs = {m: v[rows] for m, v in x.items()}
            greedy.loss(model, greedy.train_forward(model, xs, epoch=0), y[rows], epoch=0).backward()
        greedy.before_step(model, opt, epoch=0)
        opt.step()
        opt.zero_grad()
    record = greedy.on_epoch_end(model, EpochContext(0))
    # epsilon 0: every measured step triggers 2 re-balancing steps: plain, 2 re-balanced, plain, 2 re-balanced
    assert sum(v for k, v in record.items() if k.startswith("greedy_rebalance_share_")) == pytest.approx(4 / 6)
    assert math.isfinite(record["greedy_d_bdr"])


def test_trainer_runs_one_epoch_on_lab_mmtm(tmp_path: Path) -> None:
    from modbalance.train import ConfigError, load_config, run

    small = ["data.options.n_train=192", "data.options.n_val=32", "data.options.n_test=32", "train.probe=false"]
    with pytest.raises(ConfigError, match=r"method.name='greedy'.*MMTM blocks.*model.kind=mmtm"):
        run(load_config("lab/tiny", ["method.name=greedy", f"output_dir={tmp_path}"]))
    config = load_config(
        "lab/mmtm",
        [*small, "train.epochs=1", "method.name=greedy", "method.start_epoch=0", f"output_dir={tmp_path}"],
    )
    records = [json.loads(line) for line in (run(config) / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["epoch"] == 0 and math.isfinite(records[-1]["train/loss"])
    assert math.isfinite(records[-1]["method/greedy_d_bdr"])
    shares = [records[-1][f"method/greedy_rebalance_share_{m}"] for m in MODALITIES]
    assert 0 < sum(shares) <= 1  # re-balancing steps happened in the epoch


@pytest.mark.slow
def test_trainer_resume_mid_epoch_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    base = [f"output_dir={tmp_path}", "train.device=cpu", "train.probe=false", "train.epochs=2", "model.kind=mmtm"]
    base += ["train.checkpoint_every_steps=3", "method.name=greedy", "method.start_epoch=0"]
    base += ["method.options.window=4"]  # a re-balancing window that spans the cut
    assert_cut_and_resume_exact(tmp_path, monkeypatch, base, crash_step=10)


def test_requirements_models_names_the_accepted_model_classes() -> None:
    from modbalance.methods import BalancingMethod, Requirements

    class OnInteraction(BalancingMethod):
        name = "on_interaction"
        requires = Requirements(models=("InteractionModel",))

    OnInteraction().check(_model())  # MMTMNet is an InteractionModel (a base class counts)
    late = MultimodalClassifier({m: nn.Linear(3, 2) for m in MODALITIES}, Concat(dict.fromkeys(MODALITIES, 2), 2))
    with pytest.raises(MethodRequirementError, match=r"'on_interaction' needs a model of class InteractionModel"):
        OnInteraction().check(late)
    with pytest.raises(MethodRequirementError, match=r"'base' needs a modbalance.MultimodalClassifier"):
        BalancingMethod().check(_model())  # the default still refuses interaction models


def test_runs_under_bf16_autocast() -> None:
    model = _model()
    greedy = Greedy(epsilon=0.0, start_epoch=0)
    greedy.check(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in _batches(0, 3):  # plain, re-balanced, re-balanced
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = greedy.train_forward(model, x, epoch=0)
            loss = greedy.loss(model, out, y, epoch=0)
        loss.backward()
        greedy.before_step(model, opt, epoch=0)
        opt.step()
        opt.zero_grad()
    assert greedy.rebalancing is not None and math.isfinite(greedy.d_bdr)
    averages = greedy.get_extra_state()["averages"]
    assert all(a.dtype == torch.float32 for avg in averages.values() for a in avg.values())
