"""Split metrics against hand-computed values, and the device-side epoch sums."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("torchmetrics", reason='metrics need the train extra: pip install "modbalance[train]"')

from modbalance.metrics import EpochSums, classification_metrics, true_class_confidence


def test_accuracy_macro_f1_and_map_by_hand():
    # 3 classes; class 2 never occurs in the targets but is predicted once.
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.3, 0.6, 0.1]]).log()
    target = torch.tensor([0, 1, 1, 1, 0])
    m = classification_metrics(logits, target, num_classes=3)
    # predictions 0, 1, 0, 2, 1 -> right at 0 and 1
    assert m["accuracy"] == pytest.approx(2 / 5)
    # class 0: TP 1, FP 1, FN 1 -> F1 1/2; class 1: TP 1, FP 1, FN 2 -> 2/5; class 2: TP 0, FP 1 -> 0
    assert m["macro_f1"] == pytest.approx((1 / 2 + 2 / 5 + 0) / 3)
    # AP of class 0, scores 0.9, 0.2, 0.6, 0.1, 0.3 with positives {0.9, 0.3}: ranks 1 and 3 -> (1 + 2/3) / 2
    # AP of class 1, scores 0.1, 0.7, 0.3, 0.2, 0.6 with positives {0.7, 0.3, 0.2}: ranks 1, 3, 4 -> (1 + 2/3 + 3/4) / 3
    # class 2 has no positive: left out of the mean
    ap0, ap1 = (1 + 2 / 3) / 2, (1 + 2 / 3 + 3 / 4) / 3
    assert m["map"] == pytest.approx((ap0 + ap1) / 2, abs=1e-6)


def test_empty_split_and_bad_shapes():
    m = classification_metrics(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), num_classes=3)
    assert all(math.isnan(v) for v in m.values())
    with pytest.raises(ValueError, match=r"expected logits \(N, 4\) and target \(N,\)"):
        classification_metrics(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), num_classes=4)


def test_true_class_confidence_is_the_score_sum():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(4.0), 0.0]])
    assert float(true_class_confidence(logits, torch.tensor([1, 1]))) == pytest.approx(3 / 4 + 1 / 5)


def test_epoch_sums_weight_batches_by_size_and_average_k_and_q_over_steps():
    sums = EpochSums(["audio", "visual"], torch.device("cpu"))
    y1, y2 = torch.tensor([0, 1, 1]), torch.tensor([0])
    strong = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    sums.add_batch(torch.tensor(0.3), strong, {"audio": strong, "visual": -strong}, y1)
    sums.add_batch(
        torch.tensor(0.9), torch.tensor([[0.0, 1.0]]), {"audio": torch.zeros(1, 2), "visual": torch.zeros(1, 2)}, y2
    )
    sums.add_coefficients({"audio": 0.2, "visual": 1.0})
    sums.add_coefficients({"audio": 0.6, "visual": 1.0})
    sums.add_drop_probs({"audio": torch.tensor(0.5), "visual": torch.tensor(0.0)})
    record = sums.compute()
    assert record["loss"] == pytest.approx((0.3 * 3 + 0.9 * 1) / 4)
    assert record["accuracy"] == pytest.approx(3 / 4)
    # audio right on 3 of 3, and on the tie (argmax 0 == target 0) of the last; visual wrong on the first 3
    assert record["accuracy/audio"] == pytest.approx(4 / 4)
    assert record["accuracy/visual"] == pytest.approx(1 / 4)
    p = 1 / (1 + math.exp(-2.0))
    s_audio, s_visual = 3 * p + 0.5, 3 * (1 - p) + 0.5
    assert record["rho/audio"] == pytest.approx(s_audio / s_visual, rel=1e-6)
    assert record["k/audio"] == pytest.approx(0.4) and record["k/visual"] == pytest.approx(1.0)
    assert record["q/audio"] == pytest.approx(0.5) and record["q/visual"] == 0.0


def test_epoch_sums_reduce_hook_and_state_round_trip():
    sums = EpochSums(["audio", "visual"], torch.device("cpu"))
    sums.add_batch(
        torch.tensor(1.0),
        torch.zeros(2, 2),
        {"audio": torch.zeros(2, 2), "visual": torch.zeros(2, 2)},
        torch.tensor([0, 1]),
    )
    doubled = sums.compute(lambda state: {k: v * 2 for k, v in state.items()})  # as if two identical ranks
    assert doubled["loss"] == pytest.approx(1.0) and doubled["accuracy"] == pytest.approx(0.5)
    restored = EpochSums(["audio", "visual"], torch.device("cpu"))
    restored.load_state_dict(sums.state_dict())
    assert restored.compute() == sums.compute()
    with pytest.raises(ValueError, match="missing keys"):
        restored.load_state_dict({"loss": torch.zeros(())})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_f1_and_map_equal_torchmetrics(seed):
    # Oracle: torchmetrics' functional API, which classification_metrics followed until it was
    # re-implemented (importing torchmetrics cost seconds per process). Integer logits make ties.
    from torchmetrics.functional import classification as tm

    g = torch.Generator().manual_seed(seed)
    n, c = 300, 7
    logits = torch.randint(-3, 4, (n, c), generator=g).float()
    logits[:, -1] = -10.0  # class 6 is never predicted ...
    target = torch.randint(0, c - 1, (n,), generator=g)  # ... nor a target: out of the macro mean
    m = classification_metrics(logits, target, num_classes=c)
    preds = logits.argmax(1)
    # torchmetrics' macro average counts every class; ours (documented) only those seen: compare per class
    f1 = tm.multiclass_f1_score(preds, target, num_classes=c, average="none")
    seen = (torch.bincount(target, minlength=c) + torch.bincount(preds, minlength=c)) > 0
    assert m["macro_f1"] == pytest.approx(f1[seen].mean().item(), abs=1e-6)
    ap = tm.multiclass_average_precision(logits.softmax(1), target, num_classes=c, average=None)
    assert m["map"] == pytest.approx(ap[:-1].mean().item(), abs=1e-6)
