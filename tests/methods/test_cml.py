"""CML against a test-local transcription of the authors' code (and of BalanceBenchmark's chain).

Official code: QingyangZhang/CML at 9d2496e.
  miwae/train.py lines 67-86     get_multi_mask: input 0 has every view; input num + 1 removes one more
                                 view, in a per-sample random order (miss_order[i] = shuffled views)
  cpm/util/get_sn.py lines 39-60 get_sn_for_multi_input: the same nested chain (sn[num, i, order[i][0:num]] = 0)
  miwae/train.py lines 280-292   per input: cls_loss += CE(logits, target); probability = softmax(logits);
                                 confidence, predict = max(probability); cls_loss /= input_num
  cpm/CPM_Nets.py lines 117-124  rank_loss: for num in range(input_num - 1):
                                   sign = (~((predict[num + 1] == target) & (predict[num] != target))).long()
                                   loss += ReLU((confidence[num + 1] - confidence[num]) * sign - 0.00).sum()
  miwae/train.py line 304        loss = rec_loss + cls_loss * alpha + rank_loss * beta / 100 (README: --beta 10)
Removing a view here = zeroing that modality's features at the fusion head (no reconstruction term).

BalanceBenchmark: GeWu-Lab/BalanceBenchmark at d7675c1, balancemm/trainer/CML_trainer.py lines 209-252 (two
modalities; 126-192 for three): out_p = out_s - Uni_res[removed] + fc_out.bias / M, with Uni_res[m] =
W_m phi_m + bias / M (balancemm/models/avclassify_model.py lines 107-123); removed = random_dict.pop().
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat, FiLM, Sum
from modbalance.methods import CML, MethodRequirementError, create_method
from modbalance.methods.cml import cml_regulariser
from modbalance.train import ConfigError, load_config, run
from modbalance.train.checkpoint import load_checkpoint
from tests.methods.resume import assert_cut_and_resume_exact


def official_masks(miss_order: list[list[int]], view_num: int) -> list[torch.Tensor]:  # miwae/train.py 67-86
    n = len(miss_order)
    mask = torch.ones(n, view_num)
    mask_list = [mask.clone()]
    for num in range(view_num - 1):
        for i in range(n):
            mask[i, miss_order[i][num]] = 0
        mask_list.append(mask.clone())
    return mask_list


def official_loss(model, features, target, miss_order, beta_over_100, epsilon=0.0):
    names = model.modalities
    criterion = nn.CrossEntropyLoss()
    cls_loss, confidence_list, predict_list = 0, [], []
    for mask in official_masks(miss_order, len(names)):  # miwae/train.py 280-292
        logits = model.fusion({m: features[m] * mask[:, j, None] for j, m in enumerate(names)})
        cls_loss = cls_loss + criterion(logits, target)
        probability = F.softmax(logits, dim=1)
        confidence, predict = torch.max(probability, dim=1)
        confidence_list.append(confidence)
        predict_list.append(predict)
    cls_loss = cls_loss / len(names)
    rank_loss = 0
    for num in range(len(names) - 1):  # cpm/CPM_Nets.py 117-124
        sign = (~((predict_list[num + 1] == target) & (predict_list[num] != target))).long()
        gap = torch.sub(confidence_list[num + 1], confidence_list[num])
        rank_loss = rank_loss + torch.nn.ReLU()(gap * sign - epsilon).sum()
    return cls_loss + rank_loss * beta_over_100  # miwae/train.py 304 (alpha = 1, no reconstruction)


def _model(fusion: str, modalities: int) -> MultimodalClassifier:
    names = ["audio", "visual", "text"][:modalities]
    widths = dict(zip(names, [6, 4, 5], strict=False))
    encoders = {m: nn.Sequential(nn.Linear(7, widths[m]), nn.Tanh()) for m in names}
    head = Concat(widths, 5) if fusion == "concat" else Sum(widths, 5)
    return MultimodalClassifier(encoders, head)


def _batch(modalities: int, batch: int = 64) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    names = ["audio", "visual", "text"][:modalities]
    return {m: 2 * torch.randn(batch, 7) for m in names}, torch.randint(0, 5, (batch,))


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("fusion", ["concat", "sum"])
@pytest.mark.parametrize("modalities", [2, 3])
@pytest.mark.parametrize(("lam", "margin", "seed"), [(0.1, 0.0, 0), (2.0, 0.05, 1)])
def test_loss_and_gradients_match_the_authors_step(fusion, modalities, lam, margin, seed) -> None:
    torch.manual_seed(seed)
    model = _model(fusion, modalities).double()
    for p in model.fusion.parameters():  # larger head: confident, varied predictions along the chain
        nn.init.normal_(p, std=1.5)
    inputs, target = _batch(modalities)
    inputs = {m: x.double() for m, x in inputs.items()}
    random.seed(seed)
    miss_order = []
    for _ in range(target.shape[0]):
        views = list(range(modalities))
        random.shuffle(views)
        miss_order.append(views)
    method = CML(lam=lam, margin=margin)
    method.check(model)

    out = model(inputs)
    ours = method.cml_loss(model, out, target, torch.tensor(miss_order))
    ours.backward()
    ours_grads = _grads(model)
    model.zero_grad()
    reference = official_loss(model, model.encode(inputs), target, miss_order, lam, margin)
    reference.backward()
    assert float(reference.detach()) > 0
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)
    for name, grad in _grads(model).items():
        torch.testing.assert_close(ours_grads[name], grad, rtol=1e-6, atol=1e-6, msg=name)

    # the penalty is active on this batch (the test checks the mask and the sum, not only the CE)
    chain = method.chain_logits(model, out, torch.tensor(miss_order))
    assert float(cml_regulariser(chain, target, margin=margin).sum().detach()) > 0.1
    mean = CML(lam=lam, margin=margin, reduction="mean").cml_loss(model, out, target, torch.tensor(miss_order))
    ce = F.cross_entropy(chain.flatten(0, 1), target.repeat(modalities))
    torch.testing.assert_close(mean - ce, (ours - ce) / target.shape[0], rtol=1e-6, atol=1e-6)


def test_compute_loss_draws_its_order_from_removal_order() -> None:
    model = _model("concat", 3)
    inputs, target = _batch(3)
    out = model(inputs)
    method = CML()
    torch.manual_seed(5)
    drawn = method.compute_loss(model, out, target, epoch=0)
    torch.manual_seed(5)
    order = CML.removal_order(target.shape[0], 3)
    torch.testing.assert_close(drawn, method.cml_loss(model, out, target, order), rtol=0, atol=0)
    # outside the window: plain cross-entropy of the fused logits
    late = CML(start_epoch=2)
    torch.testing.assert_close(late.loss(model, out, target, epoch=1), F.cross_entropy(out.logits, target))


def test_removal_order_is_a_uniform_random_permutation_per_sample() -> None:
    torch.manual_seed(0)
    n = 60_000
    order = CML.removal_order(n, 3)
    assert torch.equal(order.sort(dim=1).values, torch.arange(3).expand(n, 3))
    codes = order[:, 0] * 3 + order[:, 1]
    counts = torch.bincount(codes, minlength=9)[[1, 2, 3, 5, 6, 7]].double()
    p = 1 / 6
    sigma = (n * p * (1 - p)) ** 0.5
    assert bool(((counts - n * p).abs() < 5 * sigma).all()), counts.tolist()


def test_chain_equals_balancebenchmark_head_arithmetic() -> None:
    # BalanceBenchmark CML_trainer.py 209-252 (M = 2) and 126-192 (M = 3): one order per epoch for every sample
    for modalities in (2, 3):
        torch.manual_seed(modalities)
        model = _model("concat", modalities)
        inputs, _ = _batch(modalities, batch=16)
        out = model(inputs)
        names = model.modalities
        head = model.fusion.head
        uni, start = {}, 0  # avclassify_model.py 107-123
        for m in names:
            width = model.fusion.dims[m]
            uni[m] = out.features[m] @ head.weight[:, start : start + width].T + head.bias / modalities
            start += width
        random_dict = list(names)
        random.Random(modalities).shuffle(random_dict)
        out_s, chain = out.logits, [out.logits]
        removed = []
        for _ in range(modalities - 1):
            removed_mm = random_dict.pop()
            removed.append(names.index(removed_mm))
            out_p = out_s - uni[removed_mm] + head.bias / modalities
            chain.append(out_p)
            out_s = out_p
        order = torch.tensor(removed + [i for i in range(modalities) if i not in removed]).expand(16, -1)
        torch.testing.assert_close(CML().chain_logits(model, out, order), torch.stack(chain), rtol=1e-6, atol=1e-6)


def test_regulariser_by_hand() -> None:
    s = torch.sigmoid
    full = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    part = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([0, 0, 0])
    penalty = cml_regulariser(torch.stack([full, part]), target)
    # row 0: more confident with less (right -> right): penalised; row 1: wrong -> right: exempt;
    # row 2: less confident with less: nothing
    torch.testing.assert_close(penalty, torch.stack([s(torch.tensor(3.0)) - s(torch.tensor(2.0)), *torch.zeros(2)]))
    with_margin = cml_regulariser(torch.stack([full, part]), target, margin=0.05)
    torch.testing.assert_close(with_margin[0], penalty[0] - 0.05)
    assert float(cml_regulariser(torch.stack([full, part]), target, margin=0.1)[0]) == 0.0


def test_errors_and_requirements() -> None:
    for key, bad in (("lam", -0.1), ("lam", float("nan")), ("lam", True), ("margin", -1.0), ("margin", "0")):
        with pytest.raises(ValueError, match=rf"method 'cml': {key}=.* must be a finite number >= 0"):
            CML(**{key: bad})
    with pytest.raises(ValueError, match=r"reduction='max' must be one of sum, mean"):
        CML(reduction="max")
    film = MultimodalClassifier({"a": nn.Linear(3, 4), "v": nn.Linear(3, 4)}, FiLM({"a": 4, "v": 4}, 2))
    with pytest.raises(MethodRequirementError, match=r"'cml' needs a fusion with exact per-modality heads"):
        CML().check(film)
    one = MultimodalClassifier({"a": nn.Linear(3, 4)}, Concat({"a": 4}, 2))
    with pytest.raises(MethodRequirementError, match=r"'cml' needs at least 2 modalities"):
        CML().check(one)
    with pytest.raises(MethodRequirementError, match=r"reduction='sum'.*gradient accumulation.*reduction=mean"):
        CML().check_settings(grad_accum_steps=2)
    CML(reduction="mean").check_settings(grad_accum_steps=2, precision="bf16")
    with pytest.raises(MethodRequirementError, match=r"'cml' does not support distributed training"):
        CML(reduction="mean").check_settings(distributed=True)
    model = _model("concat", 2)
    inputs, _ = _batch(2, batch=4)
    with pytest.raises(ValueError, match=r"order has shape \(4, 3\), expected .* \(4, 2\)"):
        CML().chain_logits(model, model(inputs), torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="unexpected argument"):
        create_method("cml", beta=10)


def test_trainer_runs_an_epoch_and_logs_the_penalised_share(tmp_path: Path) -> None:
    overrides = [f"output_dir={tmp_path}", "train.device=cpu", "train.epochs=1", "train.probe=false"]
    folder = run(load_config("lab/tiny", [*overrides, "method.name=cml", "method.options.lam=0.5"]))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["method"] == "cml" and summary["epochs_run"] == 1
    text = (folder / "metrics.jsonl").read_text()
    share = [json.loads(line)["method/cml_penalised_share"] for line in text.splitlines() if "cml_penalised" in line]
    assert len(share) == 1 and 0.0 <= share[0] <= 1.0
    state = load_checkpoint(folder / "checkpoints" / "last.pt")["ranks"][0]["method"]["_extra_state"]
    assert state == {"violations": None, "samples": 0}  # reset at the epoch's end
    with pytest.raises(ConfigError, match=r"method.name='cml': .*does not support gradient accumulation"):
        run(load_config("lab/tiny", [*overrides, "method.name=cml", "train.grad_accum_steps=2", "run_name=acc"]))


@pytest.mark.slow
def test_resume_mid_epoch_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = [f"output_dir={tmp_path}", "train.device=cpu", "train.probe=false", "train.epochs=2"]
    base += ["train.checkpoint_every_steps=3", "method.name=cml"]
    assert_cut_and_resume_exact(tmp_path, monkeypatch, base)
