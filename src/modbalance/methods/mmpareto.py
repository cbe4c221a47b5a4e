r"""MMPareto: Pareto integration of the multimodal and uni-modal gradients on each encoder.

Reference: Wei and Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal
Assistance", ICML 2024; official code ``GeWu-Lab/MMPareto_ICML2024`` ``code/MMPareto.py``
(lines cited below) and ``code/min_norm_solvers.py``. The formulas and their provenance are in
``docs/comparison-methods.md``.

The training loss is the uniform multitask loss
:math:`L = L_{mm} + \sum_m L_m` with one linear uni-modal head per modality on the encoder's
features (``MMPareto.py`` 99-103, 180; ``models/models.py`` 154-156). For each modality's
encoder, with :math:`g_{mm}` the gradient of :math:`L_{mm}` and :math:`g_m` that of
:math:`L_m` (flattened over the whole encoder):

* if :math:`\cos(g_{mm}, g_m) > 0`: :math:`\omega = (1/2, 1/2)`; otherwise the two-vector
  min-norm solution :math:`\omega = (c, 1 - c)`,
  :math:`c = (g_m\cdot g_m - g_{mm}\cdot g_m) / \|g_{mm} - g_m\|^2`, clipped to
  0.999 / 0.001 at the ends as the official solver does (``MMPareto.py`` 149-174,
  ``min_norm_solvers.py`` 9-30);
* per parameter tensor :math:`p`: :math:`\hat g_p = 2\omega_1 g_{mm,p} + 2\omega_2 g_{m,p}`,
  and the final gradient is :math:`\gamma\,\max(1, \|\nabla_p L\| / \|\hat g_p\|)\,\hat g_p`
  with :math:`\gamma = 1.5` (``MMPareto.py`` 178, 184-207).

Heads (the fusion head and the uni-modal heads) keep the plain gradient of :math:`L`.

Deviations, each deliberate: parameters are grouped explicitly per modality (the official code
matches ``'audio'``/``'visual'`` in parameter names); where :math:`\hat g_p = 0` the gradient is
set to zero instead of the official ``inf * 0 = NaN``; the per-loss gradients are taken with
``torch.autograd.grad`` (one backward per loss on the encoders instead of three full backward
passes); everything stays on the device (no host synchronisation). Outside the epoch window the
loss is plain cross-entropy (the base protocol's rule), not the uniform sum.
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

__all__ = ["MMPareto", "mmpareto_weights"]


def mmpareto_weights(g_mm: Tensor, g_uni: Tensor) -> Tensor:
    r"""MMPareto's weights :math:`(\omega_{mm}, \omega_m)` for two flattened gradients.

    ``(1/2, 1/2)`` when the cosine similarity is positive, else the min-norm point of the segment
    between them (the official solver for two vectors, ends clipped to 0.999 / 0.001). Runs on
    the device, without synchronising.

    Args:
        g_mm: ``(P,)`` gradient of the multimodal loss on one encoder.
        g_uni: ``(P,)`` gradient of that modality's uni-modal loss on the same encoder.

    Returns:
        ``(2,)`` weights summing to 1.

    Example:
        >>> import torch
        >>> mmpareto_weights(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])).tolist()
        [0.5, 0.5]
        >>> [round(w, 6) for w in mmpareto_weights(torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])).tolist()]
        [0.4, 0.6]
    """
    g_mm, g_uni = _full(g_mm), _full(g_uni)
    v11, v12, v22 = g_mm @ g_mm, g_mm @ g_uni, g_uni @ g_uni
    cos = F.cosine_similarity(g_mm, g_uni, dim=0)
    denominator = v11 + v22 - 2 * v12
    interior = (v22 - v12) / torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    c = torch.where(v12 >= v22, torch.full_like(v11, 0.001), interior)
    c = torch.where(v12 >= v11, torch.full_like(v11, 0.999), c)
    c = torch.where(cos > 0, torch.full_like(c, 0.5), c)
    return torch.stack([c, 1 - c])


def _encoder_groups(model: MultimodalClassifier) -> dict[str, list[nn.Parameter]]:
    groups = {m: [p for p in params if p.requires_grad] for m, params in model.modality_parameters().items()}
    for m, params in groups.items():
        if not params:
            raise MethodRequirementError(
                f"method 'mmpareto' integrates each encoder's gradients, but the {m!r} encoder has no trainable "
                "parameter; unfreeze it (encoder freeze options) or choose another method"
            )
    return groups


@METHODS.register("mmpareto")
class MMPareto(BalancingMethod):
    r"""MMPareto (Wei and Hu, ICML 2024): uni-modal heads, uniform loss, Pareto-integrated encoder gradients.

    It owns one linear uni-modal head per modality on the encoder's features (created by
    :meth:`check` from the model's feature widths; :meth:`param_groups` puts them in the
    optimizer). Inside the window, :meth:`~BalancingMethod.loss` returns
    :math:`L_{mm} + \sum_m L_m` and stores each encoder's gradients of :math:`L_{mm}` and of
    :math:`L_m` (``1 + M`` extra backward passes through the encoders); after ``backward()``,
    :meth:`~BalancingMethod.before_step` replaces every encoder gradient by the integrated one.
    Outside the window it is plain cross-entropy, as every method of the base protocol.

    Needs: two or more modalities with trainable encoders, any fusion. Cost per step: one
    forward, ``M + 1`` extra partial backward passes, ``O(P)`` memory for two gradient copies.
    Gradient accumulation is exact (stored gradients are weighted by micro-batch size);
    DDP and fp16 (a gradient scaler) are refused; bf16 works.

    Args:
        gamma: magnitude factor :math:`\gamma` (official 1.5, ``MMPareto.py`` 178).
        start_epoch: first epoch (inclusive) of the window.
        end_epoch: last epoch (inclusive); ``None`` means no end.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
        ...                              Concat({"audio": 4, "visual": 3}, num_classes=2))
        >>> pareto = MMPareto()
        >>> pareto.check(model)               # creates the uni-modal heads
        >>> opt = torch.optim.SGD(pareto.param_groups(model, lr=0.1), lr=0.1)
        >>> x, y = {"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)}, torch.randint(0, 2, (8,))
        >>> loss = pareto.loss(model, model(x), y, epoch=0)
        >>> loss.backward()
        >>> pareto.before_step(model, opt, epoch=0)   # encoder gradients integrated in place
        >>> opt.step()
        >>> sorted(pareto.last_weights), float(pareto.last_weights["audio"].sum())
        (['audio', 'visual'], 1.0)
    """

    name = "mmpareto"
    requires = Requirements(
        min_modalities=2,
        ddp=False,
        fp16=False,
        fp16_unsupported="its per-loss gradients are taken without the gradient scaler and can underflow",
    )

    def __init__(self, *, gamma: float = 1.5, start_epoch: int = 0, end_epoch: int | None = None) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"method 'mmpareto': gamma must be a finite number > 0, got {gamma!r}")
        self.gamma = float(gamma)
        self.heads = nn.ModuleDict()
        self._stash: dict[str, tuple[list[Tensor], list[Tensor]]] = {}
        self._count = 0
        self._conflicts: dict[str, Tensor] = {}
        self._steps = 0
        #: modality -> ``(2,)`` weights and ``()`` cosine of the last integration, on the device.
        self.last_weights: dict[str, Tensor] = {}
        self.last_cosines: dict[str, Tensor] = {}

    def check(self, model: nn.Module, *, held_out: bool = False) -> None:
        """Check the model (base rules, trainable encoders) and create the uni-modal heads."""
        super().check(model, held_out=held_out)
        assert isinstance(model, MultimodalClassifier)
        _encoder_groups(model)
        self._bind(model)

    def _bind(self, model: MultimodalClassifier) -> None:
        fusion = model.fusion
        if set(self.heads) == set(model.modalities):
            return
        if len(self.heads):
            raise MethodRequirementError(
                f"method 'mmpareto' was set up for modalities {sorted(self.heads)}, the model has {model.modalities}; "
                "use one MMPareto object per model"
            )
        reference = next(iter(fusion.parameters()), None)
        factory: dict[str, Any] = {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
        for m in model.modalities:
            self.heads[m] = nn.Linear(fusion.dims[m], fusion.num_classes, **factory)

    def param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """One group: the model's and the uni-modal heads' trainable parameters."""
        assert isinstance(model, MultimodalClassifier)
        self._bind(model)
        return super().param_groups(model, lr)

    def unimodal_losses(self, features: Mapping[str, Tensor], target: Tensor) -> dict[str, Tensor]:
        """Modality -> cross-entropy of its uni-modal head on the (not detached) features."""
        return {m: F.cross_entropy(_full(self.heads[m](features[m])), target) for m in self.heads}

    def compute_loss(
        self,
        model: MultimodalClassifier,
        out: ModelOutput,
        target: Tensor,
        *,
        epoch: int | None = None,
        inputs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        r""":math:`L_{mm} + \sum_m L_m`; stores the per-loss encoder gradients (when grad is enabled)."""
        self._bind(model)
        multimodal = F.cross_entropy(_full(out.logits), target)
        unimodal = self.unimodal_losses(out.features, target)
        if torch.is_grad_enabled():
            groups = _encoder_groups(model)
            batch = target.shape[0]
            every = [p for m in groups for p in groups[m]]
            g_all = torch.autograd.grad(multimodal, every, retain_graph=True, allow_unused=True)
            start = 0
            for m, params in groups.items():
                g_mm = [_dense(g, p) * batch for g, p in zip(g_all[start : start + len(params)], params, strict=True)]
                start += len(params)
                g_uni = torch.autograd.grad(unimodal[m], params, retain_graph=True, allow_unused=True)
                g_m = [_dense(g, p) * batch for g, p in zip(g_uni, params, strict=True)]
                if m in self._stash:
                    old_mm, old_m = self._stash[m]
                    g_mm = [a + b for a, b in zip(old_mm, g_mm, strict=True)]
                    g_m = [a + b for a, b in zip(old_m, g_m, strict=True)]
                self._stash[m] = (g_mm, g_m)
            self._count += batch
        return multimodal + torch.stack(list(unimodal.values())).sum()

    @torch.no_grad()
    def modify_gradients(
        self, model: MultimodalClassifier, optimizer: torch.optim.Optimizer, *, epoch: int | None = None
    ) -> None:
        """Replace every encoder gradient by MMPareto's (after the backward of every micro-batch)."""
        stash, count = self._stash, self._count
        self._stash, self._count = {}, 0
        if not stash:
            return
        groups = _encoder_groups(model)
        weights: dict[str, Tensor] = {}
        for m, (g_mm, g_m) in stash.items():
            for g in g_mm + g_m:
                g.div_(count)
            flat_mm = torch.cat([g.flatten() for g in g_mm])
            flat_m = torch.cat([g.flatten() for g in g_m])
            w = mmpareto_weights(flat_mm, flat_m)
            self.last_cosines[m] = F.cosine_similarity(_full(flat_mm), _full(flat_m), dim=0)
            for p, part_mm, part_m in zip(groups[m], g_mm, g_m, strict=True):
                combined = 2 * w[0] * part_mm + 2 * w[1] * part_m
                total = p.grad if p.grad is not None else torch.zeros_like(p)
                new_norm = torch.linalg.vector_norm(combined)
                ratio = torch.linalg.vector_norm(total) / torch.where(new_norm > 0, new_norm, torch.ones_like(new_norm))
                scale = self.gamma * torch.clamp(ratio, min=1.0)
                p.grad = (combined * torch.where(new_norm > 0, scale, torch.zeros_like(scale))).to(p.dtype)
            weights[m] = w
            conflict = (self.last_cosines[m] <= 0).to(torch.float32)
            self._conflicts[m] = self._conflicts[m] + conflict if m in self._conflicts else conflict
        self._steps += 1
        self.last_weights = weights

    def on_epoch_end(self, model: MultimodalClassifier, context: EpochContext) -> dict[str, float]:
        """Share of the epoch's steps in which each encoder's two gradients conflicted (cosine <= 0)."""
        conflicts, steps = self._conflicts, self._steps
        self._conflicts, self._steps = {}, 0
        return {f"mmpareto_conflict_share_{m}": float(c) / steps for m, c in conflicts.items()} if steps else {}

    def get_extra_state(self) -> dict[str, Any]:
        """The epoch's conflict counts so far (the per-loss gradients never outlive a step)."""
        return {"conflicts": {m: c.clone() for m, c in self._conflicts.items()}, "steps": self._steps}

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self._conflicts = {m: c.clone() for m, c in state["conflicts"].items()}
        self._steps = int(state["steps"])

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, " + super().extra_repr()


def _dense(grad: Tensor | None, param: Tensor) -> Tensor:
    return torch.zeros_like(param) if grad is None else grad.detach()


def _full(tensor: Tensor) -> Tensor:
    """``tensor`` in at least single precision (half precision is upcast, float64 kept)."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()
