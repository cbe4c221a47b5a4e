"""Models whose modalities interact before the head, with the seams OGM and OPM need.

Each model has the interface of :class:`~modbalance.MultimodalClassifier` (``forward(inputs,
opm=, scores=, epoch=) -> ModelOutput`` and ``modality_parameters()``), so OGM and OPM plug in
unchanged (docs/complex-models.md):

* :class:`TransformerFusion`: token sequences into a shared transformer, ``variant="joint"``
  (self-attention over all tokens) or ``"bottleneck"`` (MBT-style fusion tokens);
* :class:`MMTMNet`: streams exchanging channel statistics after chosen stages;
* :class:`CentralNet`: a central branch over the modality branches' hidden layers.

Example:
    >>> import torch
    >>> from modbalance.interaction import create_interaction
    >>> model = create_interaction("transformer", {"audio": 4, "visual": 6}, num_classes=3, d_model=8, heads=2)
    >>> out = model({"audio": torch.randn(2, 5, 4), "visual": torch.randn(2, 3, 6)})
    >>> out.logits.shape, sorted(out.unimodal_logits)
    (torch.Size([2, 3]), ['audio', 'visual'])
"""

from __future__ import annotations

from typing import Any

from modbalance.interaction.base import UNIMODAL_STRATEGIES, InteractionModel
from modbalance.interaction.midlevel import CentralNet, MMTMBlock, MMTMNet, pool
from modbalance.interaction.transformer import TRANSFORMER_VARIANTS, Tokens, TransformerBlock, TransformerFusion

__all__ = [
    "INTERACTIONS",
    "TRANSFORMER_VARIANTS",
    "UNIMODAL_STRATEGIES",
    "CentralNet",
    "InteractionModel",
    "MMTMBlock",
    "MMTMNet",
    "Tokens",
    "TransformerBlock",
    "TransformerFusion",
    "create_interaction",
    "pool",
]

#: ``model.kind`` name -> class (the trainer builds them in :func:`modbalance.train.build.build_model`).
INTERACTIONS: dict[str, type[InteractionModel]] = {
    "transformer": TransformerFusion,
    "mmtm": MMTMNet,
    "centralnet": CentralNet,
}


def create_interaction(name: str, *args: Any, **options: Any) -> InteractionModel:
    """Build an interaction model by name; unknown names and options raise ValueError.

    Example:
        >>> create_interaction("mtmm", {})
        Traceback (most recent call last):
        ...
        ValueError: Unknown interaction model 'mtmm'. Available: centralnet, mmtm, transformer
    """
    if name not in INTERACTIONS:
        raise ValueError(f"Unknown interaction model {name!r}. Available: {', '.join(sorted(INTERACTIONS))}")
    try:
        return INTERACTIONS[name](*args, **options)
    except TypeError as error:
        raise ValueError(f"interaction model {name!r}: bad options {sorted(options)}: {error}") from error
