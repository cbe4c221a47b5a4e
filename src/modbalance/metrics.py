"""Evaluation metrics for multimodal classifiers: accuracy, macro-F1, mAP, and imbalance traces.

Two kinds of helpers:

* :func:`classification_metrics` scores a whole split at once from its ``(N, C)`` logits, with
  the definitions of torchmetrics' functional API, computed here in a few vectorised torch ops
  (importing torchmetrics cost seconds per process);
* :class:`EpochSums` accumulates per-step training statistics as **sums on the device**
  (loss, correct counts per head, each modality's true-class confidence, OGM's ``k`` and OPM's
  ``q``), so that the loop never synchronises with the host; :meth:`EpochSums.compute` reads
  them once, after an optional all-reduce across ranks (sums reduce exactly).

The epoch's discrepancy ratio ``rho`` is computed from the epoch's summed confidences with
:func:`modbalance.discrepancy_ratios` (a ratio of sums, like the per-step ratio of OGM);
``k`` and ``q`` are means over the optimizer steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from modbalance.imbalance import _score_vector, discrepancy_ratios

__all__ = ["EpochSums", "classification_metrics", "true_class_confidence"]


def _macro_f1(preds: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Mean per-class F1 ``2TP / (2TP + FP + FN)`` over the classes that occur in target or preds."""
    tp = torch.bincount(target[preds == target], minlength=num_classes).double()
    predicted = torch.bincount(preds, minlength=num_classes).double()
    actual = torch.bincount(target, minlength=num_classes).double()
    denominator = predicted + actual  # 2TP + FP + FN
    present = denominator > 0
    return (2 * tp[present] / denominator[present]).mean()


def _average_precision(scores: Tensor, target: Tensor) -> Tensor:
    """One-vs-rest AP per class, ``(C,)``: ``sum_k (R_k - R_{k-1}) P_k`` over the distinct thresholds.

    Tied scores form one threshold (as in torchmetrics' ``precision_recall_curve``); a class with
    no positive gets NaN.
    """
    n, num_classes = scores.shape
    ordered, order = scores.sort(dim=0, descending=True, stable=True)
    positive = (target[order] == torch.arange(num_classes, device=scores.device)).double()  # (N, C)
    precision = positive.cumsum(0) / torch.arange(1, n + 1, device=scores.device, dtype=torch.float64).unsqueeze(1)
    last = torch.ones_like(ordered, dtype=torch.bool)
    last[:-1] = ordered[:-1] != ordered[1:]  # the end of each group of tied scores
    end = torch.where(last, torch.arange(n, device=scores.device).unsqueeze(1), n)
    end = end.flip(0).cummin(0).values.flip(0)  # each row's group end
    return (positive * precision.gather(0, end)).sum(0) / positive.sum(0)


def classification_metrics(logits: Tensor, target: Tensor, num_classes: int) -> dict[str, float]:
    """Accuracy, macro-F1 and mAP of one split.

    Macro-F1 averages the per-class F1 over the classes that occur in the targets or the
    predictions; mAP averages the one-vs-rest average precision over the classes that occur in
    the targets (a class without positives has no AP).

    Args:
        logits: ``(N, C)`` scores (logits or probabilities).
        target: ``(N,)`` class indices.
        num_classes: ``C``.

    Returns:
        ``{"accuracy", "macro_f1", "map"}`` as floats (``nan`` for an empty split).

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
        >>> m = classification_metrics(logits, torch.tensor([0, 1, 1, 1]), num_classes=2)
        >>> m["accuracy"], round(m["macro_f1"], 4)
        (0.75, 0.7333)
    """
    if logits.dim() != 2 or logits.shape[1] != num_classes or target.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (N, {num_classes}) and target (N,), got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if logits.shape[0] == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "map": float("nan")}
    logits, target = logits.float(), target.long()
    preds = logits.argmax(dim=1)
    accuracy = (preds == target).double().mean()
    f1 = _macro_f1(preds, target, num_classes)
    per_class = _average_precision(logits.softmax(dim=1), target)
    present = torch.bincount(target, minlength=num_classes) > 0
    mean_ap = per_class[present].mean()
    values = [float(accuracy), float(f1), float(mean_ap)]
    return dict(zip(("accuracy", "macro_f1", "map"), values, strict=True))


def true_class_confidence(logits: Tensor, target: Tensor) -> Tensor:
    """Sum over the batch of ``softmax(logits)[y]``, without a host synchronisation.

    The same quantity as :func:`modbalance.unimodal_scores`, from the same implementation
    (``modbalance.imbalance._score_vector``) without the input checks, whose synchronisation a
    metric does not need.

    Example:
        >>> import torch
        >>> true_class_confidence(torch.tensor([[0.6, 0.4], [0.5, 0.5]]).log(), torch.tensor([0, 1]))
        tensor(1.1000)
    """
    return _score_vector({"logits": logits.detach()}, target)[0][0]


class EpochSums:
    """Running sums of one epoch's training statistics, kept on the device.

    Args:
        modalities: modality names, in the order the records list them.
        device: where the sums live (the training device).
        rule: ratio rule for ``rho`` (see :func:`modbalance.discrepancy_ratios`).

    Example:
        >>> import torch
        >>> sums = EpochSums(["audio", "visual"], torch.device("cpu"))
        >>> y = torch.tensor([0, 1])
        >>> logits = {"audio": torch.tensor([[3.0, 0.0], [0.0, 3.0]]), "visual": torch.zeros(2, 2)}
        >>> sums.add_batch(torch.tensor(0.5), logits["audio"], logits, y)
        >>> sums.add_coefficients({"audio": 0.25, "visual": 1.0})
        >>> record = sums.compute()
        >>> record["loss"], record["accuracy/audio"], record["k/audio"], round(record["rho/audio"], 3)
        (0.5, 1.0, 0.25, 1.905)
    """

    def __init__(self, modalities: list[str], device: torch.device, rule: str = "mean_pairwise") -> None:
        self.modalities = list(modalities)
        self.device = device
        self.rule = rule
        m = len(self.modalities)
        self.state: dict[str, Tensor] = {
            "loss": torch.zeros((), dtype=torch.float64, device=device),
            "samples": torch.zeros((), dtype=torch.float64, device=device),
            "correct": torch.zeros((), dtype=torch.float64, device=device),
            "correct_m": torch.zeros(m, dtype=torch.float64, device=device),
            "confidence_m": torch.zeros(m, dtype=torch.float64, device=device),
            "k_m": torch.zeros(m, dtype=torch.float64, device=device),
            "q_m": torch.zeros(m, dtype=torch.float64, device=device),
            "k_steps": torch.zeros((), dtype=torch.float64, device=device),
            "q_steps": torch.zeros((), dtype=torch.float64, device=device),
        }

    def add_batch(self, loss: Tensor, logits: Tensor, unimodal_logits: Mapping[str, Tensor], target: Tensor) -> None:
        """Add one (micro-)batch: its mean ``loss`` (0-d), fused and uni-modal ``(B, C)`` logits."""
        with torch.no_grad():
            batch = target.shape[0]
            s = self.state
            s["loss"] += loss.detach().double() * batch
            s["samples"] += batch
            s["correct"] += (logits.detach().argmax(dim=1) == target).sum()
            if self.modalities:
                stacked = torch.stack([unimodal_logits[m].detach() for m in self.modalities])
                s["correct_m"] += (stacked.argmax(dim=2) == target.unsqueeze(0)).sum(dim=1)
                ordered = {m: unimodal_logits[m].detach() for m in self.modalities}
                s["confidence_m"] += _score_vector(ordered, target)[0]

    def add_coefficients(self, coefficients: Mapping[str, float]) -> None:
        """Add OGM's coefficients of one optimizer step (floats, from ``OGM.modulate``)."""
        values = [float(coefficients[m]) for m in self.modalities]
        self.state["k_m"] += torch.tensor(values, dtype=torch.float64, device=self.device)
        self.state["k_steps"] += 1

    def add_drop_probs(self, drop_probs: Mapping[str, Tensor]) -> None:
        """Add OPM's drop probabilities of one step (0-d tensors, from ``OPM.last_drop_probs``)."""
        with torch.no_grad():
            q = torch.stack([torch.as_tensor(drop_probs[m]).reshape(()) for m in self.modalities])
            self.state["q_m"] += q.to(device=self.device, dtype=torch.float64)
            self.state["q_steps"] += 1

    def state_dict(self) -> dict[str, Tensor]:
        """The sums (to checkpoint mid-epoch)."""
        return {key: value.clone() for key, value in self.state.items()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore :meth:`state_dict`."""
        missing = set(self.state) - set(state)
        if missing:
            raise ValueError(f"EpochSums state is missing keys {sorted(missing)}")
        self.state = {key: state[key].to(self.device, torch.float64).clone() for key in self.state}

    def compute(self, reduce: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None) -> dict[str, float]:
        """Read the sums once (after ``reduce``, e.g. an all-reduce) and return the epoch's record."""
        state = reduce(dict(self.state)) if reduce is not None else self.state
        host = {key: value.cpu() for key, value in state.items()}
        samples = max(float(host["samples"]), 1.0)
        record = {"loss": float(host["loss"]) / samples, "accuracy": float(host["correct"]) / samples}
        for i, m in enumerate(self.modalities):
            record[f"accuracy/{m}"] = float(host["correct_m"][i]) / samples
        if len(self.modalities) >= 2:
            scores = {m: host["confidence_m"][i].float() for i, m in enumerate(self.modalities)}
            ratios = discrepancy_ratios(scores, self.rule)  # type: ignore[arg-type]
            record.update({f"rho/{m}": float(rho) for m, rho in ratios.items()})
        for kind in ("k", "q"):
            steps = float(host[f"{kind}_steps"])
            if steps > 0:
                for i, m in enumerate(self.modalities):
                    record[f"{kind}/{m}"] = float(host[f"{kind}_m"][i]) / steps
        return record
