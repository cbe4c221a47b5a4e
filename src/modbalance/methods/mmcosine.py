r"""MMCosine: modality-wise normalised, scaled cosine logits (Xu, Wei, Hu, ICASSP 2023).

Reference: Ruize Xu, Ruoxuan Feng, Shi-Xiong Zhang, Di Hu, "MMCosine: Multi-Modal Cosine Loss
Towards Balanced Audio-Visual Fine-Grained Learning", ICASSP 2023; official code
``GeWu-Lab/MMCosine_ICASSP23``, ``main_CD.py`` lines 113-118 (training) and 185-189 (evaluation).

Each modality's logit for class :math:`c` is the cosine between its feature and its block of the
fusion head's class-:math:`c` weights, scaled by :math:`s`; the fused logit is their sum, without
bias:

.. math:: z_c = s \sum_m \frac{\phi_m^\top W_{m,c}}{\lVert\phi_m\rVert\,\lVert W_{m,c}\rVert},
   \qquad \mathcal L = \mathrm{CE}(z, y).

Normalising removes the norm advantage the dominant modality's features and weights gain, so
each modality's logit is bounded by :math:`s`. The official evaluation scores the *fused*
prediction with the ordinary head (weights and bias, un-normalised, ``main_CD.py`` line 204
uses the model's own ``out``) and only the uni-modal accuracies with cosine logits;
``prediction="head"`` reproduces that, the default ``"cosine"`` predicts with the logits it
trains (the paper's formulation). The official code's optional NCE term (``--lam``, default 0)
is not implemented.

Cost per step: one normalisation of features and head weights (negligible). Needs: a linear
fusion head with a block per modality (``concat`` or ``sum``); one process (DDP is refused: the
loss leaves the head's bias unused, which ``DistributedDataParallel`` does not allow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from modbalance.methods.base import METHODS, BalancingMethod, Requirements, head_weights
from modbalance.model import ModelOutput, MultimodalClassifier

__all__ = ["MMCosine"]


@METHODS.register("mmcosine")
class MMCosine(BalancingMethod):
    r"""Train (and by default predict) with :math:`s\sum_m\cos(\phi_m, W_{m,c})` logits.

    Args:
        scaling: the scale :math:`s > 0` (official default 10, ``main_CD.py`` ``--scaling``).
        prediction: ``"cosine"`` (predict with the trained cosine logits) or ``"head"`` (the
            ordinary fusion head, as the official evaluation does for the fused accuracy).
        start_epoch, end_epoch: the window (outside it: cross-entropy of the ordinary head).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
        ...                              Concat({"audio": 4, "visual": 3}, num_classes=2))
        >>> method = MMCosine(scaling=10.0)
        >>> method.check(model)
        >>> out = model({"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)})
        >>> parts = method.cosine_logits(model, out.features)
        >>> bool(all(z.abs().max() <= 10.0 + 1e-5 for z in parts.values()))  # each bounded by s
        True
        >>> method.loss(model, out, torch.randint(0, 2, (8,)), epoch=0).backward()
    """

    name: ClassVar[str] = "mmcosine"
    # DDP: the loss leaves the head's bias out of the graph and uses the head's weights outside the
    # wrapped forward, which DistributedDataParallel's reducer (find_unused_parameters=False) refuses.
    requires: ClassVar[Requirements] = Requirements(fusions=("Concat", "Sum"), ddp=False)

    def __init__(
        self, scaling: float = 10.0, *, prediction: str = "cosine", start_epoch: int = 0, end_epoch: int | None = None
    ) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        if (
            isinstance(scaling, bool)
            or not isinstance(scaling, int | float)
            or not math.isfinite(scaling)
            or scaling <= 0
        ):
            raise ValueError(f"method 'mmcosine': scaling={scaling!r} must be a finite number > 0")
        if prediction not in ("cosine", "head"):
            raise ValueError(f"method 'mmcosine': prediction={prediction!r} must be 'cosine' or 'head'")
        self.scaling = float(scaling)
        self.prediction = prediction

    def cosine_logits(self, model: MultimodalClassifier, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Modality name -> ``(B, C)`` scaled cosine logits (with gradients)."""
        logits = {}
        for m, (weight, _) in head_weights(model).items():
            feature = F.normalize(features[m].float(), dim=1)
            logits[m] = self.scaling * feature @ F.normalize(weight.float(), dim=1).t()
        return logits

    def compute_loss(
        self,
        model: MultimodalClassifier,
        out: ModelOutput,
        target: Tensor,
        *,
        epoch: int | None = None,
        inputs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Cross-entropy of the summed cosine logits."""
        return F.cross_entropy(sum(self.cosine_logits(model, out.features).values()), target)  # type: ignore[arg-type]

    def predict(self, model: MultimodalClassifier, out: ModelOutput) -> Tensor:
        """The summed cosine logits (``prediction="cosine"``) or the head's logits (``"head"``)."""
        if self.prediction == "head":
            return out.logits
        return sum(self.cosine_logits(model, out.features).values())  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"scaling={self.scaling}, prediction={self.prediction!r}, {super().extra_repr()}"
