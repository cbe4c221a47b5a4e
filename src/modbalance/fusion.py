"""Fusion heads: ``{modality: (B, D_m)} -> (B, C)`` logits, each with its own uni-modal logits.

Every fusion is configured from a ``{modality: feature width}`` map, combines modalities in
that fixed order whatever the order of the input dict, and offers ``unimodal_logits`` for
OGM and OPM:

* :class:`Concat` (any M): a linear head on concatenated features; exact head slices with
  ``bias/M`` (default) or zero-out.
* :class:`Sum` (any M): one linear head per modality, summed; each modality's own head with its
  own full bias is exact (the official code halved it in evaluation, OGM-GE issue #33).
* :class:`FiLM` and :class:`Gated` (two modalities, as in the OGM-GE paper): non-linear, so
  uni-modal logits use zero-out (the official code applied the concat slicing and crashed).

Example:
    >>> import torch
    >>> from modbalance.fusion import create_fusion
    >>> feats = {"audio": torch.randn(4, 8), "visual": torch.randn(4, 6)}
    >>> for name in ("concat", "sum", "film", "gated"):
    ...     fusion = create_fusion(name, {"audio": 8, "visual": 6}, num_classes=3)
    ...     parts = fusion.unimodal_logits(feats)
    ...     print(name, tuple(fusion(feats).shape), {m: tuple(z.shape) for m, z in parts.items()})
    concat (4, 3) {'audio': (4, 3), 'visual': (4, 3)}
    sum (4, 3) {'audio': (4, 3), 'visual': (4, 3)}
    film (4, 3) {'audio': (4, 3), 'visual': (4, 3)}
    gated (4, 3) {'audio': (4, 3), 'visual': (4, 3)}
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from modbalance.scores import head_slice, zero_out

__all__ = ["FUSIONS", "Concat", "FiLM", "Fusion", "Gated", "Sum", "create_fusion"]


class Fusion(nn.Module):
    """Base class: holds the modality order and checks inputs.

    A subclass implements ``forward(features) -> (B, C)`` logits; :meth:`unimodal_logits` falls
    back to :func:`~modbalance.scores.zero_out` unless the subclass has an exact decomposition.

    Args:
        dims: modality name -> feature width ``D_m`` (this order is the fusion's order).
        num_classes: number of classes ``C`` (>= 2).
        min_modalities: fewest modalities the subclass accepts.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class MaxPool(Fusion):  # a custom fusion: max over per-modality linear heads
        ...     def __init__(self, dims, num_classes):
        ...         super().__init__(dims, num_classes)
        ...         self.heads = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in dims.items()})
        ...     def forward(self, features):
        ...         ordered = self._ordered(features)
        ...         return torch.stack([self.heads[m](x) for m, x in ordered.items()]).amax(dim=0)
        >>> fusion = MaxPool({"audio": 4, "visual": 3}, num_classes=5)
        >>> feats = {"audio": torch.randn(2, 4), "visual": torch.randn(2, 3)}
        >>> fusion(feats).shape, fusion.unimodal_logits(feats)["visual"].shape
        (torch.Size([2, 5]), torch.Size([2, 5]))
    """

    def __init__(self, dims: Mapping[str, int], num_classes: int, *, min_modalities: int = 1) -> None:
        super().__init__()
        if not isinstance(dims, Mapping) or len(dims) < min_modalities:
            raise ValueError(f"{type(self).__name__} needs at least {min_modalities} modalities, got {dims!r}")
        for name, dim in dims.items():
            if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
                raise ValueError(
                    f"{type(self).__name__}: feature width of {name!r} must be a positive int, got {dim!r}"
                )
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.dims = dict(dims)
        self.modalities = list(dims)
        self.num_classes = num_classes

    def _ordered(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if set(features) != set(self.modalities):
            raise ValueError(
                f"{type(self).__name__} expects features for {sorted(self.modalities)}, got {sorted(features)}"
            )
        for name in self.modalities:
            width = features[name].shape[-1]
            if width != self.dims[name]:
                raise ValueError(f"features[{name!r}] has width {width}, expected {self.dims[name]}")
        return {name: features[name] for name in self.modalities}

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Zero-out uni-modal logits (subclasses with an exact decomposition override this)."""
        return zero_out(self, self._ordered(features))


class Concat(Fusion):
    """Linear head on ``cat([phi_1, ..., phi_M])``.

    Args:
        dims: modality name -> feature width (the concatenation order).
        num_classes: number of classes.
        unimodal: ``"slice"`` (exact, the official choice) or ``"zero_out"``.
        bias_share: bias share per modality for ``"slice"``; ``None`` means ``1/M``.

    Example:
        >>> import torch
        >>> fusion = Concat({"audio": 3, "visual": 2}, num_classes=4)
        >>> feats = {"visual": torch.randn(5, 2), "audio": torch.randn(5, 3)}
        >>> fusion(feats).shape
        torch.Size([5, 4])
        >>> parts = fusion.unimodal_logits(feats)
        >>> torch.allclose(parts["audio"] + parts["visual"], fusion(feats), atol=1e-6)
        True
    """

    def __init__(
        self,
        dims: Mapping[str, int],
        num_classes: int,
        *,
        unimodal: str = "slice",
        bias_share: float | None = None,
    ) -> None:
        super().__init__(dims, num_classes)
        if unimodal not in ("slice", "zero_out"):
            raise ValueError(f"Concat unimodal must be 'slice' or 'zero_out', got {unimodal!r}")
        self.unimodal = unimodal
        self.bias_share = bias_share
        self.head = nn.Linear(sum(self.dims.values()), num_classes)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """``(B, C)`` logits."""
        return self.head(torch.cat(list(self._ordered(features).values()), dim=-1))

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Head slices (``bias * bias_share`` each) or zero-out."""
        if self.unimodal == "slice":
            return head_slice(self.head, self._ordered(features), self.bias_share)
        return super().unimodal_logits(features)


class Sum(Fusion):
    """Sum of per-modality linear heads, ``sum_m (W_m phi_m + b_m)``.

    Example:
        >>> import torch
        >>> fusion = Sum({"audio": 3, "visual": 2, "text": 4}, num_classes=2)
        >>> feats = {"audio": torch.randn(5, 3), "visual": torch.randn(5, 2), "text": torch.randn(5, 4)}
        >>> parts = fusion.unimodal_logits(feats)
        >>> torch.allclose(sum(parts.values()), fusion(feats), atol=1e-6)
        True
    """

    def __init__(self, dims: Mapping[str, int], num_classes: int) -> None:
        super().__init__(dims, num_classes)
        self.heads = nn.ModuleDict({name: nn.Linear(dim, num_classes) for name, dim in self.dims.items()})

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """``(B, C)`` logits."""
        ordered = self._ordered(features)
        return torch.stack([self.heads[name](ordered[name]) for name in self.modalities]).sum(dim=0)

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each modality's own head with its own full bias (exact)."""
        ordered = self._ordered(features)
        dtype = next(self.heads.parameters()).dtype
        with torch.no_grad():
            return {name: self.heads[name](ordered[name].detach().to(dtype)) for name in self.modalities}


def _two(dims: Mapping[str, int], role: str | None, what: str) -> tuple[str, str]:
    names = list(dims)
    if len(names) != 2:
        raise ValueError(f"{what} fuses exactly two modalities, got {names}")
    if role is None:
        return names[0], names[1]
    if role not in names:
        raise ValueError(f"{what}: {role!r} is not one of the modalities {names}")
    other = names[1] if role == names[0] else names[0]
    return role, other


class FiLM(Fusion):
    r"""Feature-wise linear modulation: :math:`h = \gamma(c) \odot x + \beta(c)`, logits = ``Linear(h)``.

    ``condition`` names the modality c that produces :math:`\gamma, \beta`; the other one, x, is
    modulated (OGM-GE's FiLM with ``x_film=True`` conditions on the first modality). Uni-modal
    logits use zero-out.

    Example:
        >>> import torch
        >>> fusion = FiLM({"audio": 3, "visual": 2}, num_classes=4, condition="audio")
        >>> feats = {"audio": torch.randn(5, 3), "visual": torch.randn(5, 2)}
        >>> fusion(feats).shape, fusion.unimodal_logits(feats)["audio"].shape
        (torch.Size([5, 4]), torch.Size([5, 4]))
    """

    def __init__(self, dims: Mapping[str, int], num_classes: int, *, condition: str | None = None) -> None:
        super().__init__(dims, num_classes, min_modalities=2)
        self.condition, self.modulated = _two(dims, condition, "FiLM")
        width = self.dims[self.modulated]
        self.film = nn.Linear(self.dims[self.condition], 2 * width)
        self.out = nn.Linear(width, num_classes)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """``(B, C)`` logits."""
        ordered = self._ordered(features)
        gamma, beta = self.film(ordered[self.condition]).chunk(2, dim=-1)
        return self.out(gamma * ordered[self.modulated] + beta)


class Gated(Fusion):
    r"""Gated fusion: :math:`\text{logits} = W_o(\sigma(W_g g) \odot W_v v)`.

    ``gate`` names the modality g whose projection gates the other (OGM-GE's gated fusion with
    ``x_gate=True`` gates with the first modality). Uni-modal logits use zero-out.

    Example:
        >>> import torch
        >>> fusion = Gated({"audio": 3, "visual": 2}, num_classes=4, gate="visual")
        >>> feats = {"audio": torch.randn(5, 3), "visual": torch.randn(5, 2)}
        >>> fusion(feats).shape, sorted(fusion.unimodal_logits(feats))
        (torch.Size([5, 4]), ['audio', 'visual'])
    """

    def __init__(
        self, dims: Mapping[str, int], num_classes: int, *, gate: str | None = None, hidden: int = 512
    ) -> None:
        super().__init__(dims, num_classes, min_modalities=2)
        self.gate, self.gated = _two(dims, gate, "Gated")
        self.gate_proj = nn.Linear(self.dims[self.gate], hidden)
        self.value_proj = nn.Linear(self.dims[self.gated], hidden)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """``(B, C)`` logits."""
        ordered = self._ordered(features)
        gate = torch.sigmoid(self.gate_proj(ordered[self.gate]))
        return self.out(gate * self.value_proj(ordered[self.gated]))


#: Fusion name -> class, for configs.
FUSIONS: dict[str, type[Fusion]] = {"concat": Concat, "sum": Sum, "film": FiLM, "gated": Gated}


def create_fusion(name: str, dims: Mapping[str, int], num_classes: int, **options: object) -> Fusion:
    """Build a fusion by name.

    Example:
        >>> create_fusion("concat", {"audio": 4, "visual": 4}, 3).head.in_features
        8
        >>> create_fusion("concatt", {"audio": 4, "visual": 4}, 3)
        Traceback (most recent call last):
        ...
        ValueError: Unknown fusion 'concatt'. Available: concat, film, gated, sum
    """
    if name not in FUSIONS:
        raise ValueError(f"Unknown fusion {name!r}. Available: {', '.join(sorted(FUSIONS))}")
    try:
        return FUSIONS[name](dims, num_classes, **options)  # type: ignore[arg-type]
    except TypeError as error:
        raise ValueError(f"fusion {name!r}: bad options {sorted(options)}: {error}") from error
