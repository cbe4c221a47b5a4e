"""Uni-modal logits: what each modality alone predicts inside a multimodal model.

OGM and OPM measure imbalance from uni-modal logits. Three ways to get them:

* :func:`head_slice` for a linear head on concatenated features (exact: the slices add up to
  the fused logits), the official code's choice;
* :func:`zero_out` for any head: keep one modality, zero the others, run the head (the method
  authors' advice for non-linear fusion, OGM-GE issue #21);
* :class:`AuxiliaryHeads`: one linear classifier per modality, trained on detached features
  next to the model (an online linear probe).

Each returns ``{modality: (B, C) logits}``, detached, ready for
:func:`~modbalance.unimodal_scores`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from modbalance.scores import AuxiliaryHeads, head_slice, zero_out
    >>> head = nn.Linear(7, 3)
    >>> feats = {"audio": torch.randn(4, 4), "visual": torch.randn(4, 3)}
    >>> fuse = lambda f: head(torch.cat([f["audio"], f["visual"]], dim=1))
    >>> sliced, zeroed = head_slice(head, feats), zero_out(fuse, feats)
    >>> aux = AuxiliaryHeads({"audio": 4, "visual": 3}, num_classes=3)(feats)
    >>> [tuple(logits["visual"].shape) for logits in (sliced, zeroed, aux)]
    [(4, 3), (4, 3), (4, 3)]
    >>> # for a linear head, zero-out differs from the slice only by the bias share
    >>> torch.allclose(zeroed["audio"] - sliced["audio"], head.bias.detach() / 2, atol=1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AuxiliaryHeads", "head_slice", "zero_out"]


def head_slice(linear: nn.Linear, features: Mapping[str, Tensor], bias_share: float | None = None) -> dict[str, Tensor]:
    r"""Uni-modal logits of a linear head over concatenated features: :math:`z_m = W^m\phi_m + s\,b`.

    The head's input columns are split in the order of ``features``, each modality taking as many
    columns as its feature width. ``bias_share`` is the share :math:`s` of the bias each modality
    gets, ``1/M`` by default, so that :math:`\sum_m z_m` equals the fused logits exactly. Computed
    on detached tensors: uni-modal logits measure, they do not train.

    Args:
        linear: the fusion head, ``in_features = sum of the feature widths``.
        features: modality name -> ``(B, D_m)``, in the order they were concatenated.
        bias_share: share of the bias per modality; ``None`` means ``1/M``.

    Returns:
        modality name -> ``(B, C)`` logits.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> head = nn.Linear(5, 3)
        >>> feats = {"audio": torch.randn(2, 3), "visual": torch.randn(2, 2)}
        >>> parts = head_slice(head, feats)
        >>> fused = head(torch.cat([feats["audio"], feats["visual"]], dim=1))
        >>> torch.allclose(parts["audio"] + parts["visual"], fused, atol=1e-6)
        True
    """
    widths = {name: value.shape[-1] for name, value in features.items()}
    if sum(widths.values()) != linear.in_features:
        raise ValueError(
            f"feature widths {widths} add up to {sum(widths.values())}, but the head takes "
            f"in_features={linear.in_features}"
        )
    share = 1.0 / len(features) if bias_share is None else float(bias_share)
    # Measured in float32, so features from an autocast region work outside it too.
    weight = linear.weight.detach().float()
    bias = None if linear.bias is None else linear.bias.detach().float() * share
    logits: dict[str, Tensor] = {}
    start = 0
    for name, value in features.items():
        stop = start + widths[name]
        logits[name] = F.linear(value.detach().float(), weight[:, start:stop], bias)
        start = stop
    return logits


def zero_out(head: Callable[[dict[str, Tensor]], Tensor], features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Uni-modal logits of any head: run it with one modality kept and the others zeroed.

    Runs the head once per modality, under ``no_grad``.

    Args:
        head: maps ``{modality: (B, D_m)}`` to ``(B, C)`` logits (e.g. a fusion module).
        features: modality name -> ``(B, D_m)``.

    Returns:
        modality name -> ``(B, C)`` logits.

    Example:
        >>> import torch
        >>> head = lambda f: f["audio"] * 2 + f["visual"]
        >>> out = zero_out(head, {"audio": torch.ones(1, 2), "visual": torch.ones(1, 2)})
        >>> out["audio"].tolist(), out["visual"].tolist()
        ([[2.0, 2.0]], [[1.0, 1.0]])
    """
    logits = {}
    with torch.no_grad():
        for name in features:
            kept = {other: value if other == name else torch.zeros_like(value) for other, value in features.items()}
            logits[name] = head(kept)
    return logits


class AuxiliaryHeads(nn.Module):
    """One linear classifier per modality on detached features: uni-modal logits for any model.

    Train them with :meth:`loss` added to the main loss; because the features are detached,
    they learn to read each encoder without changing it (an online linear probe).

    Args:
        dims: modality name -> feature width.
        num_classes: number of classes.

    Example:
        >>> import torch
        >>> heads = AuxiliaryHeads({"audio": 4, "visual": 3}, num_classes=5)
        >>> feats = {"audio": torch.randn(2, 4), "visual": torch.randn(2, 3)}
        >>> {m: tuple(z.shape) for m, z in heads(feats).items()}
        {'audio': (2, 5), 'visual': (2, 5)}
        >>> heads.loss(feats, torch.tensor([0, 4])).shape
        torch.Size([])
    """

    def __init__(self, dims: Mapping[str, int], num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.heads = nn.ModuleDict({name: nn.Linear(dim, num_classes) for name, dim in dims.items()})

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Modality name -> ``(B, C)`` logits from detached features."""
        missing = set(self.heads) - set(features)
        if missing:
            raise ValueError(f"AuxiliaryHeads got features for {sorted(features)}, missing {sorted(missing)}")
        return {name: head(features[name].detach()) for name, head in self.heads.items()}

    def loss(self, features: Mapping[str, Tensor], target: Tensor) -> Tensor:
        """Sum over modalities of each head's cross-entropy."""
        return torch.stack([F.cross_entropy(z, target) for z in self(features).values()]).sum()
