r"""LFM: learning the modality gap by weighting classification against uni-modal alignment.

Reference: Yang Yang, Fengqiang Wan, Qing-Yuan Jiang, Yi Xu, "Facilitating Multimodal
Classification via Dynamically Learning Modality Gap", NeurIPS 2024; official code
``njustkmg/NeurIPS24-LFM`` (commit ad44fa0): ``Crema_epoch.py`` (the README's run, a fitted
weight schedule) and ``Crema_epoch_learnable.py`` (the learnt weight), lines cited below. The
formulas, their provenance and the differences from the paper and from BalanceBenchmark are in
``docs/comparison-methods.md``.

With :math:`z_m` modality :math:`m`'s logits (its own linear head: exact for ``sum`` and
``concat`` fusions, :func:`~modbalance.methods.base.unimodal_logits_with_grad`) and
:math:`p_m = \mathrm{softmax}(z_m)`, each step minimises

.. math:: \mathcal L = 2\,\bigl(\alpha_{cls}\,\mathrm{CE}(\bar z, y) + \alpha_{mm}\,\mathcal L_{mm}\bigr),
   \qquad \bar z = \tfrac1M\textstyle\sum_m z_m,\quad \alpha_{mm} = 1 - \alpha_{cls},

(``Crema_epoch_learnable.py`` 113-116; :math:`\bar z = \tfrac12 o_v + \tfrac12 o_a`), with the
matching term of the official ``Alignment`` (lines 37-44), averaged over modality pairs for
:math:`M > 2` (BalanceBenchmark's extension; the authors define it for two):

.. math:: \mathcal L_{mm}(p, q) = \tfrac12\bigl(\mathrm{KL}(r\,\Vert\,p) + \mathrm{KL}(r\,\Vert\,q)\bigr),
   \qquad r = \tfrac12 (p + q),

batch-averaged. (``F.kl_div(p.log(), r)`` is :math:`\mathrm{KL}(r\Vert p)`, so this is not the
Jensen-Shannon divergence :math:`\tfrac12(\mathrm{KL}(p\Vert r) + \mathrm{KL}(q\Vert r))`; the paper's
Section 3.2 describes a contrastive loss on representations instead. We follow the code.)

The classification weight :math:`\alpha_{cls}` follows one of the authors' two schedules:

* ``"learnable"`` (default, ``Crema_epoch_learnable.py`` 55-97, 246-254): before each epoch, on a
  fixed probe batch, :math:`g` = the mean over the *first* trainable parameter tensor
  :math:`\theta_0` of the Hessian-vector product
  :math:`\nabla_{\theta_0}\bigl(\nabla_\theta L_{tot}\cdot \nabla_\theta L_{cls}\bigr)`,
  :math:`L_{tot} = \alpha_{cls}L_{cls} + \alpha_{mm}L_{mm}`; the learning rate
  :math:`\eta` (``1e-4``) is halved at every epoch that is a positive multiple of 20; then
  :math:`\alpha_{mm} \leftarrow \operatorname{clip}(\alpha_{mm} - \eta g, 0.05, 0.95)`,
  :math:`\alpha_{cls} = 1 - \alpha_{mm}`, starting from :math:`\alpha_{cls} = 0.05`.
* ``"fitted"`` (``Crema_epoch.py`` 47-53, 195): the authors' degree-5 polynomial fit of the learnt
  weight on CREMA-D over 200 epochs, :math:`\alpha_{cls}(e) = \sum_i c_i e^i`; ``horizon``
  stretches it to another number of epochs (:math:`e \to 200\,e/\mathrm{horizon}`).

Deviations, each deliberate: the probe batch is the first ``probe_size`` rows of the first
training batch the method sees (the authors hold 16 training samples out of training and use the
first 8), and its forward runs in the model's current mode with autocast disabled (the authors'
runs in train mode at epoch 0 and eval mode after, their validation having set it); a
non-finite hypergradient leaves the weight unchanged (the official clip would set the matching
weight to 0.95); the hypergradient reads back one number per epoch, nothing per step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import combinations
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
    unimodal_logits_with_grad,
)
from modbalance.model import ModelOutput, MultimodalClassifier

__all__ = ["LFM", "lfm_alignment", "lfm_fitted_weight"]

#: ``Crema_epoch.py`` line 49: :math:`\alpha_{cls}(e) = \sum_i c_i e^i` (the matching weight's
#: coefficients, line 50, are the complement: :math:`1 - \alpha_{cls}`).
FITTED_COEFFICIENTS = (2.04623704e-01, 3.35472727e-03, 1.22989557e-04, -2.92947416e-06, 2.23835486e-08, -5.39717505e-11)
#: Number of epochs the fitted polynomial was fitted over (``data/crema.json`` ``epoch_dict``).
FITTED_EPOCHS = 200
#: Bounds of the learnt matching weight (``Crema_epoch_learnable.py`` line 93).
ALPHA_BOUNDS = (0.05, 0.95)
#: The hypergradient's learning rate is halved every this many epochs (line 90).
HALVE_EVERY = 20

_SCHEDULES = ("learnable", "fitted")


def lfm_fitted_weight(epoch: float, horizon: int = FITTED_EPOCHS) -> float:
    r"""The authors' fitted classification weight :math:`\alpha_{cls}` at ``epoch`` (0-based).

    Args:
        epoch: the epoch, ``0 <= epoch < horizon``.
        horizon: epochs the curve spans (the authors' 200; other values stretch it).

    Example:
        >>> round(lfm_fitted_weight(0), 6), round(lfm_fitted_weight(100), 6), round(lfm_fitted_weight(50, 100), 6)
        (0.204624, 0.539155, 0.539155)
    """
    x = epoch * FITTED_EPOCHS / horizon
    return sum(c * x**i for i, c in enumerate(FITTED_COEFFICIENTS))


def lfm_alignment(logits: Mapping[str, Tensor]) -> Tensor:
    r"""The official matching term, averaged over modality pairs: ``()``.

    For each pair, :math:`\tfrac12(\mathrm{KL}(r\Vert p) + \mathrm{KL}(r\Vert q))` with
    :math:`p, q` the two softmax distributions and :math:`r` their mean, summed over classes and
    averaged over the batch (``F.kl_div(..., reduction="batchmean")``).

    Args:
        logits: modality -> ``(B, C)`` logits (two or more modalities).

    Example:
        >>> import torch
        >>> z = torch.randn(5, 3)
        >>> abs(float(lfm_alignment({"a": z, "v": z}))) < 1e-6   # identical predictions: no gap
        True
        >>> bool(lfm_alignment({"a": z, "v": -z}) > 0)
        True
    """
    if len(logits) < 2:
        raise ValueError(f"lfm_alignment needs logits of at least 2 modalities, got {sorted(logits)}")
    log_p = {m: F.log_softmax(_full(z), dim=-1) for m, z in logits.items()}
    terms = []
    for a, b in combinations(log_p, 2):
        log_r = torch.logaddexp(log_p[a], log_p[b]) - math.log(2.0)  # log of (p + q) / 2
        r = log_r.exp()
        batch = r.shape[0]
        kl_rp = (r * (log_r - log_p[a])).sum() / batch
        kl_rq = (r * (log_r - log_p[b])).sum() / batch
        terms.append(0.5 * (kl_rp + kl_rq))
    return torch.stack(terms).mean()


@METHODS.register("lfm")
class LFM(BalancingMethod):
    r"""LFM (Yang et al., NeurIPS 2024): classification loss weighted against uni-modal prediction alignment.

    Needs: two or more modalities and a linear fusion head with per-modality blocks (``concat``
    or ``sum``; ``sum`` is the authors' architecture, a linear head per modality whose logits
    add up). Cost per step: the per-modality logits and two softmaxes per modality pair. With
    ``schedule="learnable"``, once per epoch: one forward of ``probe_size`` samples and a double
    backward (a Hessian-vector product) through the whole model. One process (DDP is refused:
    the learnt weight would come from each rank's own probe batch, and the fitted schedule has not
    been checked under DDP); AMP, gradient accumulation and
    exact resume (the weight, its learning rate and the probe batch are saved) work. A non-finite
    hypergradient (a diverged model) leaves the weight unchanged; ``lfm_hypergrad`` logs it.

    Args:
        schedule: ``"learnable"`` (the learnt weight, ``Crema_epoch_learnable.py``) or
            ``"fitted"`` (the polynomial fit of it, ``Crema_epoch.py``).
        alpha: learnable only: the initial classification weight (authors 0.05, line 250).
        lr_alpha: learnable only: the weight's learning rate :math:`\eta` (authors 1e-4, line 246).
        probe_size: learnable only: rows of the probe batch (authors 8, half of 16, lines 59, 217).
        horizon: fitted only: epochs the fitted curve spans (authors 200); training past it is
            refused.
        start_epoch, end_epoch: the window (outside it: cross-entropy of the fused logits).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Sum
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
        ...                              Sum({"audio": 4, "visual": 3}, num_classes=2))
        >>> method = LFM()
        >>> method.check(model)
        >>> x, y = {"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)}, torch.randint(0, 2, (8,))
        >>> method.loss(model, model(x), y, epoch=0, inputs=x).backward()  # learns alpha, then the loss
        >>> 0.05 <= method.alpha_cls <= 0.95
        True
        >>> LFM(schedule="fitted").weight(0)
        0.204623704
    """

    name: ClassVar[str] = "lfm"
    requires: ClassVar[Requirements] = Requirements(fusions=("Concat", "Sum"), ddp=False)

    def __init__(
        self,
        *,
        schedule: str = "learnable",
        alpha: float | None = None,
        lr_alpha: float | None = None,
        probe_size: int | None = None,
        horizon: int | None = None,
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        if schedule not in _SCHEDULES:
            raise ValueError(f"method 'lfm': schedule={schedule!r} must be one of {list(_SCHEDULES)}")
        wrong = (
            [k for k, v in {"horizon": horizon}.items() if v is not None]
            if schedule == "learnable"
            else [
                k for k, v in {"alpha": alpha, "lr_alpha": lr_alpha, "probe_size": probe_size}.items() if v is not None
            ]
        )
        if wrong:
            raise ValueError(
                f"method 'lfm': option(s) {', '.join(wrong)} do not apply to schedule={schedule!r}; remove them"
            )
        alpha = 0.05 if alpha is None else alpha
        lr_alpha = 1e-4 if lr_alpha is None else lr_alpha
        probe_size = 8 if probe_size is None else probe_size
        horizon = FITTED_EPOCHS if horizon is None else horizon
        low, high = 1.0 - ALPHA_BOUNDS[1], 1.0 - ALPHA_BOUNDS[0]
        if not _number(alpha) or not low - 1e-12 <= alpha <= high + 1e-12:
            raise ValueError(f"method 'lfm': alpha={alpha!r} must be a number in [{low:g}, {high:g}]")
        if not _number(lr_alpha) or lr_alpha < 0:
            raise ValueError(f"method 'lfm': lr_alpha={lr_alpha!r} must be a finite number >= 0")
        for key, value in (("probe_size", probe_size), ("horizon", horizon)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"method 'lfm': {key}={value!r} must be an int >= 1")
        self.schedule = schedule
        self.horizon = horizon
        self.probe_size = probe_size
        #: Current classification weight :math:`\alpha_{cls}` (learnable schedule).
        self.alpha_cls = float(alpha)
        #: Current learning rate of the learnt weight.
        self.lr_alpha = float(lr_alpha)
        #: The last hypergradient :math:`g` (``nan`` before the first update).
        self.last_hypergrad = math.nan
        self._updated_epoch: int | None = None
        self._probe: dict[str, Tensor] | None = None
        self._probe_target: Tensor | None = None

    # ------------------------------------------------------------------ weights
    def weight(self, epoch: int | None) -> float:
        r"""The classification weight :math:`\alpha_{cls}` used in ``epoch`` (matching: ``1 -`` it)."""
        if self.schedule == "learnable":
            return self.alpha_cls
        epoch = 0 if epoch is None else epoch
        if epoch >= self.horizon:
            raise ValueError(
                f"method 'lfm': the fitted schedule spans epochs 0..{self.horizon - 1} and epoch {epoch} was reached; "
                "set method.options.horizon to the number of training epochs (train.epochs)"
            )
        return lfm_fitted_weight(epoch, self.horizon)

    def losses(
        self, model: MultimodalClassifier, features: Mapping[str, Tensor], target: Tensor
    ) -> tuple[Tensor, Tensor]:
        r"""``(L_cls, L_mm)``: cross-entropy of the mean uni-modal logits and the matching term."""
        parts = {m: _full(z) for m, z in unimodal_logits_with_grad(model, features).items()}
        mean = torch.stack(list(parts.values())).mean(dim=0)
        return F.cross_entropy(mean, target), lfm_alignment(parts)

    def compute_loss(
        self,
        model: MultimodalClassifier,
        out: ModelOutput,
        target: Tensor,
        *,
        epoch: int | None = None,
        inputs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        r""":math:`2(\alpha_{cls}L_{cls} + (1-\alpha_{cls})L_{mm})`; first learns the weight once per epoch."""
        current = 0 if epoch is None else epoch
        if self.schedule == "learnable" and torch.is_grad_enabled() and current != self._updated_epoch:
            if self._probe is None:
                if inputs is None:
                    raise ValueError(
                        "method 'lfm' (schedule='learnable') learns its weight on a probe batch taken from the "
                        "training inputs; pass inputs= to loss()"
                    )
                self._probe = {m: x[: self.probe_size].detach().clone() for m, x in inputs.items()}
                self._probe_target = target[: self.probe_size].detach().clone()
            self.update_weight(model, current)
        alpha = self.weight(epoch)
        cls, align = self.losses(model, out.features, target)
        return 2 * (alpha * cls + (1.0 - alpha) * align)

    def update_weight(self, model: MultimodalClassifier, epoch: int) -> None:
        """One step of the learnt weight on the probe batch (``Crema_epoch_learnable.py`` 55-97)."""
        if self._probe is None or self._probe_target is None:
            raise ValueError("method 'lfm': no probe batch yet; call loss(..., inputs=...) first")
        params = [p for p in model.parameters() if p.requires_grad]
        device = self._probe_target.device
        with torch.autocast(device.type, enabled=False):
            out = model(self._probe)
            cls, align = self.losses(model, out.features, self._probe_target)
            total = self.alpha_cls * cls + (1.0 - self.alpha_cls) * align
            grads = torch.autograd.grad(total, params, create_graph=True, allow_unused=True)
            cls_grads = torch.autograd.grad(cls, params, retain_graph=True, allow_unused=True)
            pairs = [(g, c) for g, c in zip(grads, cls_grads, strict=True) if g is not None and g.requires_grad]
            hvp = (
                torch.autograd.grad(
                    [g for g, _ in pairs],
                    params[0],
                    grad_outputs=[torch.zeros_like(g) if c is None else c for g, c in pairs],
                    allow_unused=True,
                )[0]
                if pairs
                else None
            )
        hypergrad = 0.0 if hvp is None else float(hvp.mean())
        if epoch % HALVE_EVERY == 0 and epoch != 0:
            self.lr_alpha /= 2
        if math.isfinite(hypergrad):  # a diverged model keeps the weight (and logs the nan)
            align_weight = 1.0 - self.alpha_cls - self.lr_alpha * hypergrad
            align_weight = max(ALPHA_BOUNDS[0], min(ALPHA_BOUNDS[1], align_weight))
            self.alpha_cls = 1.0 - align_weight
        self.last_hypergrad = hypergrad
        self._updated_epoch = epoch

    def check(self, model: torch.nn.Module, *, held_out: bool = False) -> None:
        """Base checks plus: the learnable schedule needs a trainable parameter."""
        super().check(model, held_out=held_out)
        if self.schedule == "learnable" and not any(p.requires_grad for p in model.parameters()):
            raise MethodRequirementError(
                "method 'lfm' (schedule='learnable') differentiates through the model's parameters and none is "
                "trainable; unfreeze the encoders or use method.options.schedule=fitted"
            )

    def on_epoch_end(self, model: MultimodalClassifier, context: EpochContext) -> dict[str, float]:
        """The classification weight of the epoch (and the hypergradient, learnable)."""
        if not self.active(context.epoch):
            return {}
        record = {"lfm_alpha_cls": self.weight(context.epoch)}
        if self.schedule == "learnable":
            record["lfm_hypergrad"] = self.last_hypergrad
        return record

    def get_extra_state(self) -> dict[str, Any]:
        """The learnt weight, its learning rate, the last updated epoch and the probe batch."""
        return {
            "alpha_cls": self.alpha_cls,
            "lr_alpha": self.lr_alpha,
            "last_hypergrad": self.last_hypergrad,
            "updated_epoch": self._updated_epoch,
            "probe": None if self._probe is None else dict(self._probe),
            "probe_target": self._probe_target,
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self.alpha_cls = float(state["alpha_cls"])
        self.lr_alpha = float(state["lr_alpha"])
        self.last_hypergrad = float(state["last_hypergrad"])
        self._updated_epoch = state["updated_epoch"]
        self._probe = None if state["probe"] is None else dict(state["probe"])
        self._probe_target = state["probe_target"]

    def extra_repr(self) -> str:
        if self.schedule == "fitted":
            return f"schedule='fitted', horizon={self.horizon}, {super().extra_repr()}"
        return (
            f"schedule='learnable', alpha_cls={self.alpha_cls:.4g}, lr_alpha={self.lr_alpha:g}, "
            f"probe_size={self.probe_size}, {super().extra_repr()}"
        )


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _full(tensor: Tensor) -> Tensor:
    """``tensor`` in at least single precision (half precision is upcast, float64 kept)."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()
