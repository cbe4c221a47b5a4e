r"""CML: calibrating multimodal learning (Ma, Zhang, Zhang, Wu, Fu, Zhou, Hu, ICML 2023).

Reference: Huan Ma, Qingyang Zhang, Changqing Zhang, Bingzhe Wu, Huazhu Fu, Joey Tianyi Zhou,
Qinghua Hu, "Calibrating Multimodal Learning", ICML 2023 (arXiv 2306.01265); official code
``QingyangZhang/CML`` at 9d2496e: ``cpm/CPM_Nets.py`` lines 98-124 (the regulariser),
``cpm/util/get_sn.py`` lines 39-60 and ``miwae/train.py`` lines 67-86 (the chain of inputs),
``miwae/train.py`` lines 274-304 (the loss).

The principle: the confidence of a prediction should not increase when a modality is removed.
Each sample gets a chain of nested modality sets, all modalities first, one more modality removed
at each link in a random order drawn per sample,
:math:`T_0 = \{1..M\} \supset T_1 \supset \dots \supset T_{M-1}` (one modality left). With a linear
fusion head, the logits of a set are the fused logits with the removed modalities' features set
to zero, :math:`z_{T} = z - \sum_{m \notin T} W_m \phi_m` (the bias stays). With
:math:`\mathrm{conf}_k, \hat y_k` the maximum softmax probability of :math:`z_{T_k}` and its class,

.. math::

    \mathcal L = \frac1M \sum_{k=0}^{M-1} \mathrm{CE}(z_{T_k}, y)
      + \lambda \sum_i \sum_{k=0}^{M-2} \operatorname{ReLU}\big((\mathrm{conf}_{k+1,i}
      - \mathrm{conf}_{k,i})\, s_{k,i} - \epsilon\big),
    \qquad s_{k,i} = 1 - [\hat y_{k+1,i} = y_i \wedge \hat y_{k,i} \ne y_i]:

the smaller set is penalised for being more confident than the larger one, except where the
larger set is wrong and the smaller one right (``cpm/CPM_Nets.py`` lines 122-123, the sum over
samples as there). Gradients flow through both confidences. Defaults: :math:`\lambda = 0.1` (the
README's ``--beta 10``, used as ``beta/100`` in ``miwae/train.py`` line 304; BalanceBenchmark's
``lam: 0.1``), :math:`\epsilon = 0` (``--epsilon``, line 137).

Deviations, each deliberate: the official scripts drop views of incomplete multi-view data (CPM
latent codes, MIWAE mean imputation); here a modality is removed by zeroing its features at the
linear fusion head, as BalanceBenchmark's ``balancemm/trainer/CML_trainer.py`` does (lines
209-252 at d7675c1), so the chain costs no extra forward pass. The order is redrawn every step
(MIWAE; CPM-Nets draws it once per sample for the whole run). ``miwae/train.py`` lines 294-302
use another mask (:math:`s = [\hat y_k = y]`, plus a detached term where both sets are wrong);
the CPM-Nets mask is the one BalanceBenchmark also computes. ``reduction="mean"`` (not the
authors') divides the penalty by the batch size, which makes gradient accumulation exact.

BalanceBenchmark (``CML_trainer.py`` at d7675c1) differs: its ``conf_loss`` (lines 19-25) clamps
the *batch sum* of confidence differences, :math:`\max(0, \sum_i (\mathrm{conf}_{k+1,i} -
\mathrm{conf}_{k,i}))`, and computes but never applies the mask :math:`s`; it draws one removal
order per epoch for every sample (lines 68-73), and supports only two or three modalities.

Cost per step: one ``(B, C)`` product per modality with the fusion head and ``M`` softmaxes; no
extra forward pass. Needs: ``concat`` or ``sum`` fusion; one process (the head's weights are used
outside the DDP-wrapped forward); with ``reduction="sum"``, no gradient accumulation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from modbalance.methods.base import (
    METHODS,
    BalancingMethod,
    EpochContext,
    MethodRequirementError,
    Requirements,
    head_weights,
)
from modbalance.model import ModelOutput, MultimodalClassifier

__all__ = ["CML", "cml_regulariser"]

_REDUCTIONS = ("sum", "mean")


def cml_regulariser(chain: Tensor, target: Tensor, *, margin: float = 0.0) -> Tensor:
    r"""Per-sample CML penalty of a chain of logits, summed over its links.

    Args:
        chain: ``(K, B, C)`` logits of nested modality sets, largest set first.
        target: ``(B,)`` class indices.
        margin: the tolerance :math:`\epsilon \ge 0`.

    Returns:
        ``(B,)``: :math:`\sum_k \operatorname{ReLU}((\mathrm{conf}_{k+1} - \mathrm{conf}_k)\,s_k - \epsilon)`
        (see the module docstring), with gradients through both confidences.

    Example:
        >>> import torch
        >>> full = torch.tensor([[2.0, 0.0], [0.0, 1.0]])      # sample 0: right; sample 1: wrong
        >>> part = torch.tensor([[3.0, 0.0], [3.0, 0.0]])      # both more confident, both right
        >>> penalty = cml_regulariser(torch.stack([full, part]), torch.tensor([0, 0]))
        >>> [round(float(p), 4) for p in penalty]    # sigmoid(3) - sigmoid(2); sample 1 exempt (wrong -> right)
        [0.0718, 0.0]
    """
    conf, pred = torch.softmax(_full(chain), dim=-1).max(dim=-1)  # (K, B) each
    exempt = (pred[1:] == target) & (pred[:-1] != target)
    gap = (conf[1:] - conf[:-1]) * (~exempt).to(conf.dtype)
    return F.relu(gap - margin).sum(dim=0)


@METHODS.register("cml")
class CML(BalancingMethod):
    r"""Cross-entropy over a random chain of modality subsets plus the CML confidence penalty.

    Args:
        lam: weight :math:`\lambda \ge 0` of the penalty (authors' setting 0.1).
        margin: tolerance :math:`\epsilon \ge 0` (official ``--epsilon`` 0.0).
        reduction: ``"sum"`` (the authors': the penalty is summed over the batch) or ``"mean"``
            (divided by the batch size; allows gradient accumulation).
        start_epoch, end_epoch: the window (outside it: cross-entropy of the fused logits).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
        ...                              Concat({"audio": 4, "visual": 3}, num_classes=2))
        >>> cml = CML(lam=0.1)
        >>> cml.check(model)
        >>> x, y = {"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)}, torch.randint(0, 2, (8,))
        >>> out = model(x)
        >>> order = torch.tensor([[0, 1]] * 8)                  # remove audio first
        >>> chain = cml.chain_logits(model, out, order)         # (M, B, C): all, then visual alone
        >>> tuple(chain.shape)
        (2, 8, 2)
        >>> cml.loss(model, out, y, epoch=0).backward()
    """

    name: ClassVar[str] = "cml"
    # DDP: the fusion head's weights are used again outside the DDP-wrapped forward; not verified
    # under DistributedDataParallel, so refused.
    requires: ClassVar[Requirements] = Requirements(fusions=("Concat", "Sum"), ddp=False)

    def __init__(
        self,
        lam: float = 0.1,
        *,
        margin: float = 0.0,
        reduction: str = "sum",
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        for key, value in (("lam", lam), ("margin", margin)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"method 'cml': {key}={value!r} must be a finite number >= 0")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"method 'cml': reduction={reduction!r} must be one of {', '.join(_REDUCTIONS)}")
        self.lam = float(lam)
        self.margin = float(margin)
        self.reduction = reduction
        self._violations: Tensor | None = None
        self._samples = 0

    def check_settings(self, *, distributed: bool = False, precision: str = "fp32", grad_accum_steps: int = 1) -> None:
        """The base rules, and no gradient accumulation with ``reduction="sum"``.

        Raises:
            MethodRequirementError: names the setting and how to change it.
        """
        super().check_settings(distributed=distributed, precision=precision, grad_accum_steps=grad_accum_steps)
        if grad_accum_steps > 1 and self.reduction == "sum":
            raise MethodRequirementError(
                f"method 'cml' with reduction='sum' (the authors' penalty, summed over the batch) does not "
                f"support gradient accumulation (train.grad_accum_steps={grad_accum_steps}): each micro-batch "
                "would sum over fewer samples. Use method.options.reduction=mean or train.grad_accum_steps=1"
            )

    @staticmethod
    def removal_order(batch: int, modalities: int, device: torch.device | str | None = None) -> Tensor:
        """``(B, M)`` int64: a uniformly random order of the modality indices per sample.

        Column ``k`` is the modality removed at link ``k + 1`` (the last one is never removed).
        Drawn from the device's global generator (saved in the trainer's checkpoints).
        """
        return torch.rand(batch, modalities, device=device).argsort(dim=1)

    def chain_logits(self, model: MultimodalClassifier, out: ModelOutput, order: Tensor) -> Tensor:
        r"""``(M, B, C)`` logits of the chain :math:`T_0 \supset \dots \supset T_{M-1}` (at least fp32).

        Args:
            model: the classifier (``concat`` or ``sum`` fusion).
            out: its output on the batch (``features`` with gradients).
            order: ``(B, M)`` modality indices (into ``model.modalities``) in removal order.
        """
        blocks = head_weights(model)
        modalities = model.modalities
        if order.shape != (out.logits.shape[0], len(modalities)):
            raise ValueError(
                f"method 'cml': order has shape {tuple(order.shape)}, expected (batch, modalities) = "
                f"{(out.logits.shape[0], len(modalities))}"
            )
        parts = torch.stack(
            [_full(F.linear(out.features[m], blocks[m][0])) for m in modalities], dim=1
        )  # (B, M, C): each modality's share of the logits, without bias
        removed = parts.gather(1, order[:, :-1, None].expand(-1, -1, parts.shape[2])).cumsum(dim=1)
        full = _full(out.logits)
        return torch.cat([full[None], (full[:, None] - removed).transpose(0, 1)])

    def cml_loss(self, model: MultimodalClassifier, out: ModelOutput, target: Tensor, order: Tensor) -> Tensor:
        """The loss for a given removal order (``compute_loss`` draws one per step)."""
        chain = self.chain_logits(model, out, order)
        classification = F.cross_entropy(chain.flatten(0, 1), target.repeat(chain.shape[0]))
        penalty = cml_regulariser(chain, target, margin=self.margin)
        if torch.is_grad_enabled():
            with torch.no_grad():
                hits = (penalty > 0).sum()
                self._violations = hits if self._violations is None else self._violations + hits
                self._samples += target.shape[0]
        penalty = penalty.sum() if self.reduction == "sum" else penalty.mean()
        return classification + self.lam * penalty

    def compute_loss(
        self,
        model: MultimodalClassifier,
        out: ModelOutput,
        target: Tensor,
        *,
        epoch: int | None = None,
        inputs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """:meth:`cml_loss` with a fresh random removal order per sample."""
        order = self.removal_order(target.shape[0], len(model.modalities), out.logits.device)
        return self.cml_loss(model, out, target, order)

    def on_epoch_end(self, model: MultimodalClassifier, context: EpochContext) -> dict[str, float]:
        """Share of the epoch's training samples whose chain was penalised at least once."""
        violations, samples = self._violations, self._samples
        self._violations, self._samples = None, 0
        if violations is None or samples == 0:
            return {}
        return {"cml_penalised_share": float(violations) / samples}

    def get_extra_state(self) -> dict[str, Any]:
        """The epoch's penalty counts so far (for an exact mid-epoch resume)."""
        return {"violations": None if self._violations is None else self._violations.clone(), "samples": self._samples}

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        violations = state["violations"]
        self._violations = None if violations is None else violations.clone()
        self._samples = int(state["samples"])

    def extra_repr(self) -> str:
        return f"lam={self.lam}, margin={self.margin}, reduction={self.reduction!r}, {super().extra_repr()}"


def _full(tensor: Tensor) -> Tensor:
    """``tensor`` in at least single precision (half precision is upcast, float64 kept)."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()
