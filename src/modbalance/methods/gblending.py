r"""G-Blending: weight each modality's loss and the fused loss by its generalisation over overfitting.

Reference: Wang, Tran and Feiszli, "What Makes Training Multi-modal Classification Networks
Hard?", CVPR 2020 (arXiv 1905.12681), Section 3 and the online algorithm with super-epochs. The
authors' release (``facebookresearch/VMZ``, Caffe2, ``c2/lib/models/loss/loss_creator.py``
123-199) implements the blended loss with the weights given as flags (``--audio_weight``,
``--visual_weight``, ``--av_weight``; ``c2/tools/train_net.py`` 578-585) and publishes some
weights (``c2/tutorials/gradient_blending.md``); the weight estimate itself is not in it.
Formulas, provenance and the differences from BalanceBenchmark: ``docs/comparison-methods.md``.

The training loss blends the cross-entropies of the branches :math:`k` (every modality's
uni-modal logits and the fused logits):

.. math:: L = \sum_k w_k\, \mathrm{CE}(z_k, y), \qquad \sum_k w_k = 1.

Every ``super_epoch`` epochs, the loss of every branch is measured on the whole training split
(:math:`L^T_k`) and on the held-out split (:math:`L^V_k`) in eval mode. Between two such
measurements :math:`N` and :math:`N + n` (one super-epoch apart),

.. math:: \Delta G_k = L^V_{k,N} - L^V_{k,N+n}, \qquad
          \Delta O_k = (L^V_{k,N+n} - L^T_{k,N+n}) - (L^V_{k,N} - L^T_{k,N}),

the generalisation gained and the overfitting gained, and the next super-epoch trains with

.. math:: w_k = \frac{\Delta G_k / \Delta O_k^2}{\sum_j \Delta G_j / \Delta O_j^2}.

The first super-epoch trains with uniform weights :math:`1/(M+1)` (or ``weights``). The
uni-modal logits :math:`z_m` are the fusion head's per-modality blocks (``heads="fusion"``,
:func:`~modbalance.methods.base.unimodal_logits_with_grad`) or one linear head per modality owned
by the method (``heads="own"``, as VMZ: ``c2/lib/models/audio_visual_model.py`` 483-497).

Deviations, each deliberate: online, the losses are read off the trajectory of the blended model
itself (the paper and BalanceBenchmark train a copy of the model per branch for a super-epoch to
estimate them); offline weights from finished trial runs are the trainer's
``method.options.trial_runs`` (``modbalance.train.trial_runs``), given here as ``weights``; by
default the uni-modal logits are the fusion head's blocks, not separate heads as in VMZ
(``heads="own"`` gives those); a branch whose held-out loss did not fall (:math:`\Delta G_k \le 0`) gets weight 0 with
``gain="clip"`` (``gain="abs"``: :math:`|\Delta G_k|` as BalanceBenchmark and MultiBench);
:math:`\Delta O_k^2` is floored at ``eps``; when no branch generalised, the weights stay as
they were.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modbalance.methods.base import (
    METHODS,
    BalancingMethod,
    EpochContext,
    MethodRequirementError,
    Requirements,
    unimodal_logits_with_grad,
)
from modbalance.model import ModelOutput, MultimodalClassifier

__all__ = ["FUSED", "GBlending", "blend_weights"]

#: Branch name of the fused (multimodal) logits.
FUSED = "fused"

_GAINS = ("clip", "abs")
_HEADS = ("fusion", "own")


def blend_weights(
    train_before: Mapping[str, float],
    val_before: Mapping[str, float],
    train_after: Mapping[str, float],
    val_after: Mapping[str, float],
    *,
    gain: str = "clip",
    eps: float = 1e-12,
) -> dict[str, float] | None:
    r"""G-Blending weights :math:`w_k \propto \Delta G_k / \Delta O_k^2` from losses one super-epoch apart.

    Args:
        train_before: branch -> training-split loss :math:`L^T_{k,N}` at the super-epoch's start.
        val_before: branch -> held-out loss :math:`L^V_{k,N}` at its start.
        train_after: :math:`L^T_{k,N+n}` at its end.
        val_after: :math:`L^V_{k,N+n}` at its end.
        gain: ``"clip"``: :math:`\max(\Delta G_k, 0)`; ``"abs"``: :math:`|\Delta G_k|`.
        eps: floor of :math:`\Delta O_k^2`.

    Returns:
        branch -> weight (summing to 1, in the order of ``train_before``), or ``None`` when no
        branch generalised (every numerator is 0).

    Example:
        >>> w = blend_weights({"a": 1.0, "fused": 1.0}, {"a": 1.2, "fused": 1.2},
        ...                   {"a": 0.6, "fused": 0.4}, {"a": 1.0, "fused": 0.9})
        >>> {k: round(v, 4) for k, v in w.items()}  # a: 0.2/0.2^2 = 5, fused: 0.3/0.3^2 = 3.33
        {'a': 0.6, 'fused': 0.4}
    """
    if gain not in _GAINS:
        raise ValueError(f"gain must be one of {_GAINS}, got {gain!r}")
    raw = {}
    for k in train_before:
        generalised = val_before[k] - val_after[k]
        overfit = (val_after[k] - train_after[k]) - (val_before[k] - train_before[k])
        numerator = max(generalised, 0.0) if gain == "clip" else abs(generalised)
        raw[k] = numerator / max(overfit * overfit, eps)
    total = sum(raw.values())
    if not total > 0 or not math.isfinite(total):
        return None
    return {k: v / total for k, v in raw.items()}


@METHODS.register("gblending")
class GBlending(BalancingMethod):
    r"""Gradient-Blending (Wang, Tran and Feiszli, CVPR 2020): loss weights from an overfitting estimate.

    Inside the window, :meth:`~BalancingMethod.loss` is :math:`\sum_k w_k\,\mathrm{CE}(z_k, y)`
    over the branches ``model.modalities + ["fused"]``; :meth:`on_epoch_start` re-estimates the
    weights at the start of every super-epoch (epochs ``start_epoch``, ``start_epoch +
    super_epoch``, ...) from the branch losses on the training and held-out splits (see the
    module docstring). Prediction uses the fused logits.

    Needs: a held-out split; with ``heads="fusion"`` a linear fusion head (``concat`` or
    ``sum``: the uni-modal logits are its per-modality blocks), with ``heads="own"`` any fusion
    (the method owns a linear head per modality, created by :meth:`check`, trained through
    :meth:`~BalancingMethod.param_groups`). Cost: per step, ``M`` extra ``(B, D_m) x (D_m, C)``
    products and cross-entropies; per super-epoch, one eval pass over the training and held-out
    splits.
    DDP (every rank sees all rows of the split passes, so all compute the same weights; refused
    with ``heads="own"``, whose heads are outside the DDP wrapper), bf16, fp16 and gradient
    accumulation work.

    Args:
        super_epoch: epochs between two estimates (BalanceBenchmark's default 10); ``None``:
            never re-estimate (train with ``weights`` throughout, as VMZ's flags do).
        weights: initial weights, branch -> weight for every modality and ``"fused"``
            (default uniform :math:`1/(M+1)`); used as given.
        gain: ``"clip"`` (weight 0 for a branch whose held-out loss rose) or ``"abs"``
            (:math:`|\Delta G|`, as BalanceBenchmark and MultiBench).
        eps: floor of :math:`\Delta O^2`.
        heads: ``"fusion"`` (the fusion head's per-modality blocks) or ``"own"`` (a linear
            uni-modal head per modality on the encoder's features, as VMZ).
        start_epoch: first epoch (inclusive) of the window (and of the first super-epoch).
        end_epoch: last epoch (inclusive); ``None`` means no end.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> from modbalance.methods.base import EpochContext, SplitOutputs
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
        ...                              Concat({"audio": 4, "visual": 3}, num_classes=2))
        >>> method = GBlending(super_epoch=1)
        >>> method.check(model, held_out=True)
        >>> def forward(split):                          # what the trainer passes: a whole split, no grad
        ...     g = torch.Generator().manual_seed(0 if split == "train" else 1)
        ...     x = {"audio": torch.randn(20, 6, generator=g), "visual": torch.randn(20, 5, generator=g)}
        ...     with torch.no_grad():
        ...         out = model(x)
        ...     return SplitOutputs(out.logits, out.unimodal_logits, out.features, torch.arange(20) % 2)
        >>> method.on_epoch_start(model, EpochContext(0, forward))   # first measurement: uniform weights
        >>> [round(w, 4) for w in method.weights.values()]
        [0.3333, 0.3333, 0.3333]
        >>> x, y = {"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)}, torch.randint(0, 2, (8,))
        >>> loss = method.loss(model, model(x), y, epoch=0)
        >>> loss.backward()
        >>> sorted(method.on_epoch_end(model, EpochContext(0, forward)))
        ['gblending_weight_audio', 'gblending_weight_fused', 'gblending_weight_visual']
    """

    name = "gblending"
    #: With ``heads="fusion"`` the fusion must also be one of ``fusion_heads`` (checked by :meth:`check`).
    requires = Requirements(min_modalities=2, held_out=True)
    fusion_heads = ("Concat", "Sum")

    def __init__(
        self,
        *,
        super_epoch: int | None = 10,
        weights: Mapping[str, float] | None = None,
        gain: str = "clip",
        eps: float = 1e-12,
        heads: str = "fusion",
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        if super_epoch is not None and (
            isinstance(super_epoch, bool) or not isinstance(super_epoch, int) or super_epoch < 1
        ):
            raise ValueError(f"method 'gblending': super_epoch must be None or an int >= 1, got {super_epoch!r}")
        if gain not in _GAINS:
            raise ValueError(f"method 'gblending': gain must be one of {list(_GAINS)}, got {gain!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
            raise ValueError(f"method 'gblending': eps must be a finite number > 0, got {eps!r}")
        if heads not in _HEADS:
            raise ValueError(f"method 'gblending': heads must be one of {list(_HEADS)}, got {heads!r}")
        if weights is not None:
            if not isinstance(weights, Mapping) or not weights:
                raise ValueError(
                    f"method 'gblending': weights must be a mapping branch -> weight "
                    f"(every modality and {FUSED!r}), got {weights!r}"
                )
            for k, v in weights.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                    raise ValueError(f"method 'gblending': weights[{k!r}] must be a finite number >= 0, got {v!r}")
        self.super_epoch = super_epoch
        self.gain = gain
        self.eps = float(eps)
        self.head_mode = heads
        #: ``heads="own"``: modality -> linear uni-modal head (created by :meth:`check`).
        self.heads = nn.ModuleDict()
        self._given = {str(k): float(v) for k, v in weights.items()} if weights is not None else None
        #: branch -> current weight (modalities in the model's order, then ``"fused"``).
        self.weights: dict[str, float] = {}
        #: ``{"train": {branch: loss}, "val": {...}}`` measured at the current super-epoch's start.
        self.start_losses: dict[str, dict[str, float]] = {}
        self._measured_epoch: int | None = None
        self._estimates = 0
        self._pending: dict[str, float] = {}
        self._device_weights: Tensor | None = None

    # ------------------------------------------------------------------ set-up
    def check(self, model: nn.Module, *, held_out: bool = False) -> None:
        """Base checks (held-out split; linear fusion head with ``heads="fusion"``); sets the weights (and heads).

        With ``super_epoch=None`` (fixed weights, nothing to estimate) no held-out split is needed.
        """
        super().check(model, held_out=held_out or self.super_epoch is None)
        assert isinstance(model, MultimodalClassifier)
        fusion = type(model.fusion).__name__
        if self.head_mode == "fusion" and fusion not in self.fusion_heads:
            raise MethodRequirementError(
                f"method 'gblending' with heads='fusion' needs a fusion with exact per-modality heads "
                f"({', '.join(self.fusion_heads)}); the model's fusion is {fusion}. Use model.fusion= one of: "
                "concat, sum, or method.options.heads=own (a linear uni-modal head per modality)"
            )
        self._bind(model)

    def check_settings(self, *, distributed: bool = False, precision: str = "fp32", grad_accum_steps: int = 1) -> None:
        """Base rules; ``heads="own"`` refuses DDP (its heads' gradients would not be averaged over ranks)."""
        super().check_settings(distributed=distributed, precision=precision, grad_accum_steps=grad_accum_steps)
        if distributed and self.head_mode == "own":
            raise MethodRequirementError(
                "method 'gblending' with heads='own' does not support distributed training (DDP): its uni-modal "
                "heads live outside the DDP wrapper; run it in one process or use method.options.heads=fusion"
            )

    def param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """One group: the model's trainable parameters and, with ``heads="own"``, the uni-modal heads."""
        assert isinstance(model, MultimodalClassifier)
        self._bind(model)
        return super().param_groups(model, lr)

    def unimodal_logits(self, model: MultimodalClassifier, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Modality -> ``(B, C)`` uni-modal logits with gradients (head blocks or own heads)."""
        if self.head_mode == "own":
            return {m: self.heads[m](features[m]) for m in model.modalities}
        return unimodal_logits_with_grad(model, features)

    def _bind(self, model: MultimodalClassifier) -> None:
        branches = [*model.modalities, FUSED]
        if FUSED in model.modalities:
            raise MethodRequirementError(
                f"method 'gblending' names the fused branch {FUSED!r}, which is also a modality of the model; "
                "rename that modality"
            )
        if self.weights:
            if list(self.weights) != branches:
                raise MethodRequirementError(
                    f"method 'gblending' was set up for branches {list(self.weights)}, the model has {branches}; "
                    "use one GBlending object per model"
                )
            return
        if self._given is not None:
            if set(self._given) != set(branches):
                raise ValueError(
                    f"method 'gblending': weights must name exactly the branches {branches} "
                    f"(every modality and {FUSED!r}), got {sorted(self._given)}"
                )
            self._set_weights({k: self._given[k] for k in branches})
        else:
            self._set_weights({k: 1.0 / len(branches) for k in branches})
        if self.head_mode == "own" and not len(self.heads):
            fusion = model.fusion
            reference = next(iter(fusion.parameters()), None)
            factory: dict[str, Any] = {}
            if reference is not None:
                factory = {"device": reference.device, "dtype": reference.dtype}
            for m in model.modalities:
                self.heads[m] = nn.Linear(fusion.dims[m], fusion.num_classes, **factory)

    def _set_weights(self, weights: dict[str, float]) -> None:
        self.weights = dict(weights)
        self._device_weights = None

    # ------------------------------------------------------------------ estimate
    def due(self, epoch: int) -> bool:
        """Whether a super-epoch starts at ``epoch`` (a measurement, and an estimate after the first)."""
        if not self.active(epoch):
            return False
        if self.super_epoch is None:
            return False
        return (epoch - self.start_epoch) % self.super_epoch == 0

    @torch.no_grad()
    def branch_losses(self, model: MultimodalClassifier, split: Any) -> dict[str, float]:
        """Branch -> mean cross-entropy over a whole split (:class:`~modbalance.methods.base.SplitOutputs`).

        The uni-modal logits are recomputed from the split's features with the heads trained on
        (:meth:`unimodal_logits`), on the fusion's device; the cross-entropies in float64.
        """
        device = next(model.fusion.parameters()).device
        target = split.target.to(device).long()
        features = {m: split.features[m].to(device) for m in model.modalities}
        parts = self.unimodal_logits(model, features)
        losses = {m: float(F.cross_entropy(parts[m].double(), target)) for m in model.modalities}
        losses[FUSED] = float(F.cross_entropy(split.logits.to(device).double(), target))
        return losses

    def on_epoch_start(self, model: MultimodalClassifier, context: EpochContext) -> None:
        """At a super-epoch's start: measure the branch losses and, after the first, re-estimate the weights."""
        self._bind(model)
        if not self.due(context.epoch) or self._measured_epoch == context.epoch:
            return
        if context.forward is None:
            raise MethodRequirementError(
                "method 'gblending' needs the loop to run the training and held-out splits through the model "
                "(EpochContext.forward); use the modbalance trainer or pass forward= yourself"
            )
        now = {"train": self.branch_losses(model, context.forward("train"))}
        now["val"] = self.branch_losses(model, context.forward("val"))
        self._pending = {}
        if self.start_losses:
            before = self.start_losses
            new = blend_weights(before["train"], before["val"], now["train"], now["val"], gain=self.gain, eps=self.eps)
            for k in self.weights:
                self._pending[f"gblending_gain_{k}"] = before["val"][k] - now["val"][k]
                self._pending[f"gblending_overfit_{k}"] = (now["val"][k] - now["train"][k]) - (
                    before["val"][k] - before["train"][k]
                )
            if new is not None:
                self._set_weights(new)
                self._estimates += 1
        self.start_losses = now
        self._measured_epoch = context.epoch

    def on_epoch_end(self, model: MultimodalClassifier, context: EpochContext) -> dict[str, float]:
        """The weights this epoch trained with (and, after an estimate, each branch's gain and overfitting)."""
        if not self.active(context.epoch):
            return {}
        self._bind(model)
        stats = {f"gblending_weight_{k}": w for k, w in self.weights.items()}
        stats.update(self._pending)
        self._pending = {}
        return stats

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self,
        model: MultimodalClassifier,
        out: ModelOutput,
        target: Tensor,
        *,
        epoch: int | None = None,
        inputs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        r""":math:`\sum_k w_k\,\mathrm{CE}(z_k, y)` over the modalities' head blocks and the fused logits."""
        self._bind(model)
        weights = self._device_weights
        if weights is None or weights.device != out.logits.device:
            weights = torch.tensor(list(self.weights.values()), dtype=torch.float32, device=out.logits.device)
            self._device_weights = weights
        parts = self.unimodal_logits(model, out.features)
        loss = weights[-1] * F.cross_entropy(out.logits.float(), target)
        for i, m in enumerate(model.modalities):
            loss = loss + weights[i] * F.cross_entropy(parts[m].float(), target)
        return loss

    # ------------------------------------------------------------------ resume
    def get_extra_state(self) -> dict[str, Any]:
        """Weights, the losses at the super-epoch's start and the bookkeeping (exact resume)."""
        return {
            "weights": dict(self.weights),
            "start_losses": {s: dict(v) for s, v in self.start_losses.items()},
            "measured_epoch": self._measured_epoch,
            "estimates": self._estimates,
            "pending": dict(self._pending),
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self._set_weights({str(k): float(v) for k, v in state["weights"].items()})
        self.start_losses = {s: {str(k): float(x) for k, x in v.items()} for s, v in state["start_losses"].items()}
        self._measured_epoch = state["measured_epoch"]
        self._estimates = int(state["estimates"])
        self._pending = {str(k): float(v) for k, v in state["pending"].items()}

    def extra_repr(self) -> str:
        return (
            f"super_epoch={self.super_epoch}, gain={self.gain!r}, eps={self.eps}, heads={self.head_mode!r}, "
            + super().extra_repr()
        )
