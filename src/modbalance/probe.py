"""Linear probes: how much a frozen encoder's features tell about the label.

Uni-modal accuracy inside a multimodal model measures the modality's share of the fused head;
a linear probe measures what the encoder *learned*: a fresh linear classifier is fitted on the
frozen features of the training split and scored on the test split. This is the measure of
under-optimisation used by the OGM/OPM papers (a weak modality's encoder learns less under
joint training, and balancing should help it).

The fit is full-batch L-BFGS from a zero initialisation on standardised features, with a small
L2 penalty, so it is deterministic and needs no learning rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LinearProbe", "fit_linear_probe", "linear_probe_accuracy"]


class LinearProbe(nn.Module):
    """Standardise with the training split's statistics, then a linear layer.

    Args:
        mean: ``(D,)`` feature means of the training split.
        std: ``(D,)`` feature standard deviations (floored at 1e-6).
        num_classes: number of classes.

    Example:
        >>> probe = LinearProbe(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.0]), num_classes=3)
        >>> probe(torch.randn(4, 2)).shape  # zero-initialised: fit it with fit_linear_probe
        torch.Size([4, 3])
        >>> probe.std.tolist()  # floored so constant features do not divide by zero
        [0.5, 9.999999974752427e-07]
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Tensor, std: Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clamp_min(1e-6).clone())
        self.linear = nn.Linear(mean.shape[0], num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: Tensor) -> Tensor:
        """``(N, D)`` features -> ``(N, C)`` logits."""
        return self.linear((features - self.mean) / self.std)


def _check(features: Tensor, target: Tensor, what: str) -> None:
    if features.dim() != 2 or target.dim() != 1 or features.shape[0] != target.shape[0]:
        raise ValueError(
            f"{what}: expected features (N, D) and target (N,), got {tuple(features.shape)} and {tuple(target.shape)}"
        )
    if features.shape[0] == 0:
        raise ValueError(f"{what}: no samples")


def fit_linear_probe(
    features: Tensor, target: Tensor, num_classes: int, *, steps: int = 100, weight_decay: float = 1e-4
) -> LinearProbe:
    r"""Fit a :class:`LinearProbe` by full-batch L-BFGS on cross-entropy + ``weight_decay`` :math:`\|W\|^2`.

    Args:
        features: ``(N, D)`` frozen training features (detached, float32 used).
        target: ``(N,)`` class indices.
        num_classes: number of classes ``C``.
        steps: L-BFGS iterations.
        weight_decay: L2 penalty on the weights (keeps separable data well posed).

    Returns:
        The fitted probe, in eval mode.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> probe = fit_linear_probe(x, torch.tensor([0, 0, 1, 1]), num_classes=2)
        >>> probe(x).argmax(dim=1).tolist()
        [0, 0, 1, 1]
    """
    _check(features, target, "fit_linear_probe")
    if num_classes < 2 or steps < 1 or weight_decay < 0:
        raise ValueError(
            f"need num_classes >= 2, steps >= 1, weight_decay >= 0; got {num_classes}, {steps}, {weight_decay}"
        )
    x = features.detach().float()
    y = target.long().to(x.device)
    probe = LinearProbe(x.mean(dim=0), x.std(dim=0, unbiased=False), num_classes).to(x.device)
    optimizer = torch.optim.LBFGS(
        probe.parameters(),
        lr=1.0,
        max_iter=steps,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(x), y) + weight_decay * probe.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return probe.eval()


def linear_probe_accuracy(
    train_features: Tensor,
    train_target: Tensor,
    test_features: Tensor,
    test_target: Tensor,
    num_classes: int,
    *,
    steps: int = 100,
    weight_decay: float = 1e-4,
) -> float:
    """Fit a probe on the training features and return its accuracy on the test features.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> y = torch.randint(0, 3, (300,), generator=g)
        >>> x = torch.nn.functional.one_hot(y, 3).float() * 2 + torch.randn(300, 3, generator=g) * 0.1
        >>> linear_probe_accuracy(x[:200], y[:200], x[200:], y[200:], num_classes=3)
        1.0
    """
    _check(test_features, test_target, "linear_probe_accuracy (test)")
    probe = fit_linear_probe(train_features, train_target, num_classes, steps=steps, weight_decay=weight_decay)
    with torch.no_grad():
        preds = probe(test_features.detach().float().to(probe.mean.device)).argmax(dim=1)
    return float((preds.cpu() == test_target.long().cpu()).double().mean())
