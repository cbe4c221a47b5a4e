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
passes); everything stays on the device (no host synchronisation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modbalance import _distributed

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


def _groups(modality_params: Mapping[str, nn.Module | Iterable[nn.Parameter]]) -> dict[str, list[nn.Parameter]]:
    if not isinstance(modality_params, Mapping) or len(modality_params) < 2:
        raise ValueError(
            "MMPareto needs the encoder parameters of at least two modalities, "
            f"{{modality: encoder}}, got {modality_params!r}; pass model.modality_parameters()"
        )
    groups: dict[str, list[nn.Parameter]] = {}
    seen: dict[int, str] = {}
    for name, source in modality_params.items():
        params = [p for p in (source.parameters() if isinstance(source, nn.Module) else source) if p.requires_grad]
        if not params:
            raise ValueError(f"MMPareto: modality {name!r} has no trainable encoder parameter")
        for p in params:
            if id(p) in seen:
                raise ValueError(f"MMPareto: a parameter is mapped to both {seen[id(p)]!r} and {name!r}")
            seen[id(p)] = name
        groups[name] = params
    return groups


class MMPareto(nn.Module):
    r"""MMPareto (Wei and Hu, ICML 2024) as a plug-in: uni-modal heads, loss and gradient integration.

    It owns one linear uni-modal head per modality (train them: include ``mmpareto.parameters()``
    in the optimizer). Per step: :meth:`loss` returns :math:`L_{mm} + \sum_m L_m` and takes the
    per-loss encoder gradients it needs (``1 + M`` extra backward passes through the encoders);
    backpropagate that loss as usual; then :meth:`integrate`, between ``backward()`` and
    ``step()``, replaces each encoder's gradient by the Pareto-integrated one.

    Args:
        modality_params: modality name -> the encoder (``nn.Module``) or its parameters, e.g.
            ``model.modality_parameters()``.
        dims: modality name -> encoder feature width ``D_m`` (the uni-modal heads' inputs).
        num_classes: number of classes ``C``.
        gamma: magnitude factor :math:`\gamma` (official 1.5).
        start_epoch: first epoch (inclusive) with gradient integration when ``epoch`` is given;
            outside the window the loss is the plain uniform sum.
        end_epoch: last epoch (inclusive); ``None`` means no end.

    Mixed precision: pass ``scaler=`` and ``optimizer=`` to :meth:`integrate`; it unscales first.
    Gradient accumulation: call :meth:`loss` for every micro-batch; the stored gradients are
    weighted by micro-batch size, so the integration sees the whole batch's gradients. Under DDP
    the stored gradients are all-reduced before integration.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> from modbalance.methods.mmpareto import MMPareto
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
        ...                              Concat({"audio": 4, "visual": 3}, num_classes=2))
        >>> pareto = MMPareto(model.modality_parameters(), {"audio": 4, "visual": 3}, num_classes=2)
        >>> opt = torch.optim.SGD([*model.parameters(), *pareto.parameters()], lr=0.1)
        >>> x, y = {"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)}, torch.randint(0, 2, (8,))
        >>> loss = pareto.loss(model(x), y)
        >>> loss.backward()
        >>> weights = pareto.integrate()   # modality -> (omega_mm, omega_m), on the device
        >>> opt.step()
        >>> sorted(weights), float(weights["audio"].sum())
        (['audio', 'visual'], 1.0)
    """

    def __init__(
        self,
        modality_params: Mapping[str, nn.Module | Iterable[nn.Parameter]],
        dims: Mapping[str, int],
        num_classes: int,
        *,
        gamma: float = 1.5,
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__()
        self.groups = _groups(modality_params)
        self.modalities = list(self.groups)
        if not isinstance(dims, Mapping) or set(dims) != set(self.modalities):
            raise ValueError(
                f"MMPareto: dims must map every modality {self.modalities} to its feature width, got {dims!r}"
            )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"MMPareto: num_classes must be an int >= 2, got {num_classes!r}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"MMPareto: gamma must be a finite number > 0, got {gamma!r}")
        if start_epoch < 0 or (end_epoch is not None and end_epoch < start_epoch):
            raise ValueError(
                f"MMPareto: need 0 <= start_epoch <= end_epoch, got start_epoch={start_epoch}, end_epoch={end_epoch}"
            )
        self.heads = nn.ModuleDict({m: nn.Linear(dims[m], num_classes) for m in self.modalities})
        self.gamma = float(gamma)
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self._stash: dict[str, tuple[list[Tensor], list[Tensor]]] = {}
        self._count = 0
        #: modality -> ``(2,)`` weights and ``()`` cosine of the last :meth:`integrate`, on the device.
        self.last_weights: dict[str, Tensor] = {}
        self.last_cosines: dict[str, Tensor] = {}

    def active(self, epoch: int | None) -> bool:
        """Whether ``epoch`` lies in the inclusive window (``None``: always)."""
        if epoch is None:
            return True
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch <= self.end_epoch)

    def unimodal_losses(self, features: Mapping[str, Tensor], target: Tensor) -> dict[str, Tensor]:
        """Modality -> cross-entropy of its uni-modal head on the (not detached) features."""
        missing = set(self.modalities) - set(features)
        if missing:
            raise ValueError(f"MMPareto: features miss the modalities {sorted(missing)}")
        return {m: F.cross_entropy(_full(self.heads[m](features[m])), target) for m in self.modalities}

    def loss(self, output: Any, target: Tensor, *, epoch: int | None = None) -> Tensor:
        r"""The training loss :math:`L_{mm} + \sum_m L_m`; stores the per-loss encoder gradients.

        Args:
            output: a :class:`~modbalance.ModelOutput` (``logits`` ``(B, C)`` and ``features``
                ``{m: (B, D_m)}`` still attached to the encoders' graph).
            target: ``(B,)`` class indices.
            epoch: for the window; outside it nothing is stored and :meth:`integrate` does nothing.
        """
        multimodal = F.cross_entropy(_full(output.logits), target)
        unimodal = self.unimodal_losses(output.features, target)
        if self.active(epoch) and torch.is_grad_enabled():
            batch = target.shape[0]
            every = [p for m in self.modalities for p in self.groups[m]]
            g_all = torch.autograd.grad(multimodal, every, retain_graph=True, allow_unused=True)
            start = 0
            for m in self.modalities:
                params = self.groups[m]
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
    def integrate(
        self, *, epoch: int | None = None, scaler: Any = None, optimizer: torch.optim.Optimizer | None = None
    ) -> dict[str, Tensor]:
        """Replace every encoder gradient by MMPareto's; return modality -> ``(2,)`` weights.

        Call after ``backward()`` of :meth:`loss` (of every micro-batch) and before
        ``optimizer.step()``. Does nothing outside the epoch window or when :meth:`loss` stored
        nothing (returns ``{}``).
        """
        if scaler is not None:
            if optimizer is None:
                raise ValueError("MMPareto.integrate(scaler=...) also needs optimizer= to unscale the gradients")
            scaler.unscale_(optimizer)
        if not self.active(epoch) or not self._stash:
            self._stash, self._count = {}, 0
            return {}
        stash, count = self._stash, self._count
        self._stash, self._count = {}, 0
        if _distributed.is_distributed():
            flat = torch.cat([torch.cat([g.flatten() for g in a + b]) for a, b in stash.values()])
            reduced = _distributed.all_reduce_sum(torch.cat([flat, flat.new_tensor([count])]))
            count_t = reduced[-1]
            reduced = reduced[:-1] / count_t
            offset = 0
            for a, b in stash.values():
                for g in a + b:
                    g.copy_(reduced[offset : offset + g.numel()].view_as(g))
                    offset += g.numel()
        else:
            for a, b in stash.values():
                for g in a + b:
                    g.div_(count)
        weights: dict[str, Tensor] = {}
        for m, (g_mm, g_m) in stash.items():
            flat_mm = torch.cat([g.flatten() for g in g_mm])
            flat_m = torch.cat([g.flatten() for g in g_m])
            w = mmpareto_weights(flat_mm, flat_m)
            self.last_cosines[m] = F.cosine_similarity(_full(flat_mm), _full(flat_m), dim=0)
            for p, part_mm, part_m in zip(self.groups[m], g_mm, g_m, strict=True):
                combined = 2 * w[0] * part_mm + 2 * w[1] * part_m
                total = p.grad if p.grad is not None else torch.zeros_like(p)
                new_norm = torch.linalg.vector_norm(combined)
                ratio = torch.linalg.vector_norm(total) / torch.where(new_norm > 0, new_norm, torch.ones_like(new_norm))
                scale = self.gamma * torch.clamp(ratio, min=1.0)
                p.grad = (combined * torch.where(new_norm > 0, scale, torch.zeros_like(scale))).to(p.dtype)
            weights[m] = w
        self.last_weights = weights
        return weights


def _dense(grad: Tensor | None, param: Tensor) -> Tensor:
    return torch.zeros_like(param) if grad is None else grad.detach()


def _full(tensor: Tensor) -> Tensor:
    """``tensor`` in at least single precision (half precision is upcast, float64 kept)."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()
