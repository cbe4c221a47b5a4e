r"""MLA: alternating uni-modal adaptation through a shared head, with gradient modification.

Reference: Zhang, Latham, Yao, "Multimodal Representation Learning by Alternating Unimodal
Adaptation", CVPR 2024; official code ``Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation``
``main.py`` and ``utils/utils.py`` (lines cited below). Formulas and provenance:
``docs/comparison-methods.md``.

Each batch is encoded once; then, modality after modality, the shared linear head :math:`h`
classifies that modality's features alone, :math:`L_m = \mathrm{CE}(h(\phi_m), y)`, and the
optimizer steps on :math:`L_m` alone (``main.py`` 419-466): one optimizer step per modality per
batch. Before each step but the very first of training, the head's weight gradient is projected
by an orthogonal-weight-modification matrix :math:`P` (``utils/utils.py`` 24-41):

.. math:: r = \overline{\phi_m},\quad k = P r^\top,\quad
          P \leftarrow \frac{P - (k k^\top) \oslash (\alpha + k r)}{\|\cdot\|_F},\quad
          \nabla_W \leftarrow \nabla_W P^\top,\quad \alpha = 0.1^{\,1 + b / n_b}

with :math:`b` the batch index in the epoch and :math:`n_b` the batches per epoch. Prediction
combines the shared head's uni-modal logits, with fixed weights (``av_alpha = 0.5``) or, with
``dynamic=True``, weights :math:`\propto \exp(\max_j H_j - H_m)` of the batch entropies
:math:`H_m` of the softmax *over the batch axis* (``main.py`` 65-87, 622-651).

Deviations, each deliberate: the official ``GSPlugin`` only modifies a parameter named
``"module.weight"``, which the shared ``nn.Linear`` it receives does not have (its parameters are
``weight`` and ``bias``), so the released code never projects; we apply the projection as the
paper describes (``gradient_modification=False`` reproduces the released behaviour). The
batches per epoch are an option, else learnt in the first epoch (which then uses
:math:`\alpha = 0.1`), since the loop does not announce them. Between the per-modality steps the
gradients are zeroed, not freed, as ``optimizer.zero_grad()`` did in the official torch 1.8, so
momentum and weight decay move the other encoders in every step as they did there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modbalance.methods.base import METHODS, BalancingMethod, EpochContext, MethodRequirementError, Requirements
from modbalance.model import ModelOutput, MultimodalClassifier

__all__ = ["MLA", "mla_entropy_weights", "owm_update"]


def owm_update(projector: Tensor, features: Tensor, alpha: float) -> Tensor:
    r"""One orthogonal-weight-modification update of ``(D, D)`` ``projector`` from ``(B, D)`` ``features``.

    :math:`r = \text{mean}(\phi)` ``(1, D)``, :math:`k = P r^\top` ``(D, 1)``, then
    :math:`P - (k k^\top) \oslash (\alpha + k r)`, normalised to unit Frobenius norm
    (``utils/utils.py`` 34-40). As in the code, the denominator is the ``(D, D)`` outer product
    :math:`\alpha + k r` and the division is element-wise (classic OWM divides by the scalar
    :math:`\alpha + r k`).

    Example:
        >>> import torch
        >>> P = owm_update(torch.eye(2), torch.tensor([[1.0, 0.0], [1.0, 0.0]]), alpha=1.0)
        >>> [[round(v, 4) for v in row] for row in P.tolist()]   # diag(1 - 1/2, 1) / norm
        [[0.4472, 0.0], [0.0, 0.8944]]
    """
    r = features.detach().mean(dim=0, keepdim=True).to(projector.dtype)
    k = projector @ r.t()
    updated = projector - (k @ k.t()) / (alpha + k @ r)  # (D, D) / (D, D), element-wise, as the code
    return updated / torch.linalg.matrix_norm(updated)


def mla_entropy_weights(logits: Mapping[str, Tensor]) -> dict[str, Tensor]:
    r"""MLA's dynamic fusion weights: :math:`\exp(\max_j H_j - H_m)`, normalised, per batch.

    :math:`H_m = -\sum \mathrm{softmax}(z_m, \text{dim}=0) \log \mathrm{softmax}(z_m, \text{dim}=0)`
    over the whole ``(B, C)`` batch (the official softmax runs over the batch axis, ``main.py`` 66).

    Example:
        >>> import torch
        >>> w = mla_entropy_weights({"a": torch.zeros(4, 3), "v": torch.tensor([[9.0] * 3] + [[0.0] * 3] * 3)})
        >>> round(float(w["a"] + w["v"]), 6), bool(w["v"] > w["a"])   # the peaked one weighs more
        (1.0, True)
    """
    entropies = {}
    for m, z in logits.items():
        p = F.softmax(_full(z), dim=0)
        entropies[m] = -(p * torch.log(p)).sum()
    top = torch.stack(list(entropies.values())).max()
    raw = {m: torch.exp(top - h) for m, h in entropies.items()}
    total = torch.stack(list(raw.values())).sum()
    return {m: w / total for m, w in raw.items()}


def _full(tensor: Tensor) -> Tensor:
    """``tensor`` in at least single precision (half precision is upcast, float64 kept)."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


@METHODS.register("mla")
class MLA(BalancingMethod):
    r"""MLA (Zhang, Latham and Yao, CVPR 2024): alternating uni-modal steps through one shared head.

    Owns the shared head (created by :meth:`check`; every encoder must output the same width).
    The model's own fusion head is not used. Needs: >= 2 modalities of equal feature width. Cost
    per batch: one forward, ``M`` backward passes and ``M`` optimizer steps (the extra ``M - 1``
    run inside :meth:`~BalancingMethod.before_step`), a ``(D, D)`` projector update per step.
    DDP, fp16 and gradient accumulation are refused (the inner steps see neither the scaler nor
    the other micro-batches).

    Args:
        dynamic: entropy-weighted prediction (the authors' "dynamic fusion"); else fixed weights.
        weights: fixed prediction weights per modality in the model's order (official
            ``av_alpha = 0.5`` for two); ``None`` means equal weights.
        gradient_modification: project the shared head's weight gradient (the paper); ``False``
            reproduces the released code, whose projection never fires.
        batches_per_epoch: the loader's length, for the projection's alpha schedule; ``None``
            learns it from the first epoch (which then uses alpha = 0.1).
        start_epoch: first epoch (inclusive) of alternating training; outside the window the
            model trains jointly with its own head (prediction still uses the shared head).
        end_epoch: last epoch (inclusive); ``None`` means no end.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 4)},
        ...                              Concat({"audio": 4, "visual": 4}, num_classes=3))
        >>> mla = MLA()
        >>> mla.check(model)                        # creates the shared (4 -> 3) head
        >>> opt = torch.optim.SGD(mla.param_groups(model, lr=0.1), lr=0.1)
        >>> x, y = {"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)}, torch.randint(0, 3, (8,))
        >>> out = model(x)
        >>> mla.loss(model, out, y, epoch=0).backward()   # the audio step's loss
        >>> mla.before_step(model, opt, epoch=0)          # audio step, then the visual backward
        >>> opt.step(); opt.zero_grad()                   # the visual step
        >>> mla.predict(model, model(x)).shape
        torch.Size([8, 3])
    """

    name = "mla"
    requires = Requirements(
        min_modalities=2,
        ddp=False,
        grad_accum=False,
        fp16=False,
        fp16_unsupported="its extra per-modality optimizer steps bypass the gradient scaler",
    )

    def __init__(
        self,
        *,
        dynamic: bool = False,
        weights: list[float] | tuple[float, ...] | None = None,
        gradient_modification: bool = True,
        batches_per_epoch: int | None = None,
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        if weights is not None and (
            not isinstance(weights, (list, tuple))
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights)
        ):
            raise ValueError(f"method 'mla': weights must be a list of finite numbers, got {weights!r}")
        self.dynamic = bool(dynamic)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.gradient_modification = bool(gradient_modification)
        self.head: nn.Linear | None = None
        self.register_buffer("projector", torch.empty(0))
        self.updates = 0  # the official exp_count: OWM updates done (none before the first)
        self._batch = 0
        if batches_per_epoch is not None and (
            isinstance(batches_per_epoch, bool) or not isinstance(batches_per_epoch, int) or batches_per_epoch < 1
        ):
            raise ValueError(f"method 'mla': batches_per_epoch must be None or an int >= 1, got {batches_per_epoch!r}")
        self._batches_per_epoch: int | None = batches_per_epoch
        self._pending: tuple[dict[str, Tensor], Tensor] | None = None
        self._modalities: list[str] = []

    # ------------------------------------------------------------------ set-up
    def check(self, model: nn.Module, *, held_out: bool = False) -> None:
        """Base checks, equal feature widths; creates the shared head and the projector."""
        super().check(model, held_out=held_out)
        assert isinstance(model, MultimodalClassifier)
        self._bind(model)

    def _bind(self, model: MultimodalClassifier) -> None:
        dims = model.fusion.dims
        if len(set(dims.values())) != 1:
            raise MethodRequirementError(
                f"method 'mla' shares one head across modalities, so every encoder must output the same width; "
                f"the feature widths are {dims}. Give the encoders the same output width (e.g. out_dim)"
            )
        self._modalities = list(model.modalities)
        if self.weights is not None and len(self.weights) != len(self._modalities):
            raise MethodRequirementError(
                f"method 'mla': weights has {len(self.weights)} entries for {len(self._modalities)} modalities "
                f"{self._modalities}; give one per modality (method.options.weights)"
            )
        if self.head is None:
            width = next(iter(dims.values()))
            reference = next(iter(model.fusion.parameters()), None)
            factory: dict[str, Any] = (
                {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
            )
            self.head = nn.Linear(width, model.fusion.num_classes, **factory)
            self.projector = torch.eye(width, **factory)

    def param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """One group: the model's and the shared head's trainable parameters."""
        assert isinstance(model, MultimodalClassifier)
        self._bind(model)
        return super().param_groups(model, lr)

    # ------------------------------------------------------------------ epochs
    def on_epoch_start(self, model: MultimodalClassifier, context: EpochContext) -> None:
        """Reset the batch index (the OWM alpha's schedule)."""
        self._batch = 0

    def on_epoch_end(self, model: MultimodalClassifier, context: EpochContext) -> dict[str, float]:
        """Remember the batches per epoch for the next epoch's alpha schedule."""
        if self._batch and self._batches_per_epoch is None:
            self._batches_per_epoch = self._batch
        return {}

    # ------------------------------------------------------------------ steps
    def _alpha(self) -> float:
        fraction = self._batch / self._batches_per_epoch if self._batches_per_epoch else 0.0
        return 1.0 * 0.1 ** (fraction + 1)

    def _head_logits(self, features: Tensor) -> Tensor:
        assert self.head is not None, "call check(model) first"
        return self.head(features)

    def _modify(self, features: Tensor) -> None:
        """The official ``before_update``: update P, project the head's weight gradient."""
        assert self.head is not None
        if self.updates != 0 and self.gradient_modification and self.head.weight.grad is not None:
            with torch.no_grad():
                self.projector = owm_update(self.projector, features, self._alpha())
                grad = self.head.weight.grad
                grad.copy_(grad @ self.projector.t().to(grad.dtype))
        self.updates += 1

    def compute_loss(
        self,
        model: MultimodalClassifier,
        out: ModelOutput,
        target: Tensor,
        *,
        epoch: int | None = None,
        inputs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """The first modality's loss through the shared head; keeps the batch's features for the others."""
        self._bind(model)
        self._pending = (dict(out.features), target)
        first = self._modalities[0]
        return F.cross_entropy(_full(self._head_logits(out.features[first])), target)

    def modify_gradients(
        self, model: MultimodalClassifier, optimizer: torch.optim.Optimizer, *, epoch: int | None = None
    ) -> None:
        """Step on each modality but the last in turn; leave the last one's gradients to the loop's step."""
        if self._pending is None:
            return
        features, target = self._pending
        self._pending = None
        for i, m in enumerate(self._modalities):
            if i > 0:
                optimizer.step()
                optimizer.zero_grad(set_to_none=False)  # torch 1.8's zero_grad, as in the official runs
                F.cross_entropy(_full(self._head_logits(features[m])), target).backward()
            self._modify(features[m])
        self._batch += 1

    def predict(self, model: MultimodalClassifier, out: ModelOutput) -> Tensor:
        """Shared-head logits of every modality, combined with fixed or entropy weights."""
        self._bind(model)
        logits = {m: self._head_logits(out.features[m]) for m in self._modalities}
        if self.dynamic:
            weights = mla_entropy_weights(logits)
            return torch.stack([logits[m] * weights[m] for m in self._modalities]).sum(dim=0)
        fixed = self.weights if self.weights is not None else [1.0 / len(self._modalities)] * len(self._modalities)
        return torch.stack([logits[m] * w for m, w in zip(self._modalities, fixed, strict=True)]).sum(dim=0)

    # ------------------------------------------------------------------ resume
    def get_extra_state(self) -> dict[str, Any]:
        """OWM update count, batch index and batches per epoch (the projector is a buffer)."""
        return {"updates": self.updates, "batch": self._batch, "batches_per_epoch": self._batches_per_epoch}

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self.updates = int(state["updates"])
        self._batch = int(state["batch"])
        self._batches_per_epoch = state["batches_per_epoch"]

    def extra_repr(self) -> str:
        return (
            f"dynamic={self.dynamic}, weights={self.weights}, gradient_modification={self.gradient_modification}, "
            + super().extra_repr()
        )
