r"""PMR: prototypical modal rebalance (Fan, Xu, Wang, Wang, Guo, CVPR 2023).

Reference: "PMR: Prototypical Modal Rebalance for Multimodal Learning", CVPR 2023; official code
``fanyunfeng-bit/Modal-Imbalance-PMR``, ``main_Prototype_grad.py`` (commit 3615e48): the training
step at lines 152-178, the prototypes at lines 383-441 and 532-557.

Each modality :math:`m` has one prototype per class, :math:`p_{m,c}`, the mean of its encoder
features over the class's training samples. The prototypical classifier scores a sample by the
negative Euclidean distance, :math:`s_{m,c} = -\lVert\phi_m - p_{m,c}\rVert_2`; its true-class
softmax confidences, summed over the batch, give the ratio :math:`\rho = S_1 / S_2` of the two
modalities. The loss adds the prototype cross-entropy of the *slower* modality only:

.. math:: \mathcal L = \mathrm{CE}(z, y) + \beta\,\mathrm{CE}(s_1, y) + \lambda\,\mathrm{CE}(s_2, y),

with :math:`(\beta, \lambda) = (0, \alpha)` if :math:`\rho > 1`, :math:`(\alpha, 0)` if
:math:`\rho < 1` and :math:`(0, 0)` if :math:`\rho = 1`.

Prototypes are recomputed before every epoch from the current encoders (eval mode, no
gradients): plainly for the first two epochs, then with momentum,
:math:`p \leftarrow (1-\mu)\,\bar\phi + \mu\,p` (the official code computes them once before
training and after each epoch, with the momentum skipped after epoch 0).

Deviations, each deliberate: the class means use the whole training split (the official code
uses the first tenth of the batches of a shuffled loader on CREMA-D, KS and VGGSound, a random
~10% subset); a class without any sample keeps a zero prototype (the official division gives NaN);
the coefficients are chosen on the device (no host synchronisation). The paper's prototype
entropy regulariser is not in the official script and is not implemented. BalanceBenchmark's
``balancemm/trainer/PMR_trainer.py`` differs: its coefficients are
:math:`\operatorname{clip}(\rho - 1, 0, 1)` (or :math:`\operatorname{clip}(1/\rho - 1, 0, 1)`)
instead of :math:`\alpha`, it recomputes the prototypes at every epoch start with momentum from
epoch 1, and its ``PMR_PER`` variant adds an entropy term.

Cost: per step, a ``(B, C)`` distance matrix per modality; per epoch, one extra forward pass of
the training split. Needs: exactly two modalities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from modbalance.methods.base import METHODS, BalancingMethod, EpochContext, Requirements
from modbalance.model import ModelOutput, MultimodalClassifier

__all__ = ["PMR"]


@METHODS.register("pmr")
class PMR(BalancingMethod):
    r"""Prototype cross-entropy for the slower of two modalities.

    Args:
        alpha: weight :math:`\alpha \ge 0` of the slower modality's prototype loss (official 1.0).
        momentum: prototype momentum :math:`\mu \in [0, 1)` (official ``--momentum_coef`` 0.2).
        start_epoch, end_epoch: the window (official ``--modulation_starts`` 0, ``--modulation_ends`` 100).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
        ...                              Concat({"audio": 4, "visual": 3}, num_classes=2))
        >>> inputs, y = {"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)}, torch.tensor([0, 1] * 4)
        >>> pmr = PMR(alpha=1.0)
        >>> pmr.check(model)
        >>> with torch.no_grad():
        ...     pmr.update_prototypes(model.encode(inputs), y, num_classes=2, epoch=0)
        >>> {m: tuple(p.shape) for m, p in pmr.prototypes.items()}
        {'audio': (2, 4), 'visual': (2, 3)}
        >>> pmr.loss(model, model(inputs), y, epoch=0).backward()
    """

    name: ClassVar[str] = "pmr"
    requires: ClassVar[Requirements] = Requirements(min_modalities=2, max_modalities=2)

    def __init__(
        self, alpha: float = 1.0, momentum: float = 0.2, *, start_epoch: int = 0, end_epoch: int | None = 100
    ) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"method 'pmr': alpha={alpha!r} must be a finite number >= 0")
        if isinstance(momentum, bool) or not isinstance(momentum, int | float) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"method 'pmr': momentum={momentum!r} must be in [0, 1)")
        self.alpha = float(alpha)
        self.momentum = float(momentum)
        self.prototypes: dict[str, Tensor] | None = None

    @torch.no_grad()
    def update_prototypes(
        self, features: Mapping[str, Tensor], target: Tensor, *, num_classes: int, epoch: int
    ) -> None:
        """Class means of ``features`` (modality -> ``(N, D_m)``), with momentum from epoch 2 on.

        ``epoch`` is the epoch the prototypes are for: 0 and 1 take the plain means (the official
        code's first two computations), later epochs ``(1 - momentum) * mean + momentum * old``.
        """
        counts = torch.bincount(target.long(), minlength=num_classes).clamp_min(1)
        fresh = {}
        for m, rows in features.items():
            sums = torch.zeros(num_classes, rows.shape[1], dtype=torch.float32, device=rows.device)
            sums.index_add_(0, target.long().to(rows.device), rows.float())
            fresh[m] = sums / counts.to(rows.device)[:, None]
        if epoch >= 2 and self.prototypes is not None:
            fresh = {
                m: (1 - self.momentum) * p + self.momentum * self.prototypes[m].to(p.device) for m, p in fresh.items()
            }
        self.prototypes = fresh

    def on_epoch_start(self, model: MultimodalClassifier, context: EpochContext) -> None:
        """Recompute the prototypes from the whole training split."""
        if context.forward is None:
            raise RuntimeError("method 'pmr' needs EpochContext.forward to compute its prototypes")
        rows = context.forward("train")
        device = next(model.parameters()).device
        features = {m: rows.features[m].to(device) for m in model.modalities}
        self.update_prototypes(features, rows.target.to(device), num_classes=rows.logits.shape[1], epoch=context.epoch)

    def prototype_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Modality -> ``(B, C)`` negative Euclidean distances to the prototypes (with gradients)."""
        if self.prototypes is None:
            raise RuntimeError(
                "method 'pmr' has no prototypes yet: call on_epoch_start(model, context) or update_prototypes() "
                "before the first loss"
            )
        return {
            m: -torch.cdist(features[m].float(), p.to(features[m].device), compute_mode="donot_use_mm_for_euclid_dist")
            for m, p in self.prototypes.items()
        }

    def compute_loss(
        self,
        model: MultimodalClassifier,
        out: ModelOutput,
        target: Tensor,
        *,
        epoch: int | None = None,
        inputs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Fused cross-entropy plus ``alpha`` times the slower modality's prototype cross-entropy."""
        first, second = model.modalities
        sims = self.prototype_logits(out.features)
        scores = [F.softmax(sims[m], dim=1).gather(1, target[:, None]).sum() for m in (first, second)]
        ratio = scores[0] / scores[1]
        beta = self.alpha * (ratio < 1).float()  # the first modality is slower
        lam = self.alpha * (ratio > 1).float()
        loss = F.cross_entropy(out.logits.float(), target)
        return loss + beta * F.cross_entropy(sims[first], target) + lam * F.cross_entropy(sims[second], target)

    def get_extra_state(self) -> dict[str, Any]:
        return {"prototypes": None if self.prototypes is None else {m: p.cpu() for m, p in self.prototypes.items()}}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.prototypes = state["prototypes"]

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, momentum={self.momentum}, {super().extra_repr()}"
