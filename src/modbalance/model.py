"""A ready late-fusion classifier with the seams OGM and OPM need: encode, fuse, unimodal_logits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from torch import Tensor, nn

from modbalance.fusion import Fusion
from modbalance.opm import OPM

__all__ = ["ModelOutput", "MultimodalClassifier"]

#: What ``forward(scores=...)`` accepts: precomputed scores, or a function of the uni-modal logits.
ScoresArg = Mapping[str, Tensor] | Callable[[dict[str, Tensor]], Mapping[str, Tensor]] | None


class ModelOutput(NamedTuple):
    """What :class:`MultimodalClassifier` returns.

    Attributes:
        logits: ``(B, C)`` fused logits (of the OPM-modulated features when OPM acted).
        unimodal_logits: modality name -> ``(B, C)``, detached, from the *un-dropped* features.
        features: modality name -> ``(B, D_m)`` encoder outputs, un-dropped.
        keep: ``(B,)`` bool, False for samples that OPM left without any modality.
        drop_probs: modality name -> 0-d drop probability :math:`q_m` OPM used on this step (zeros
            when OPM was given but inactive: eval mode or outside its epoch window; empty
            without OPM).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance.fusion import Concat
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
        ...                              Concat({"audio": 4, "visual": 3}, num_classes=2))
        >>> out = model({"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)})
        >>> out.logits.shape, out.unimodal_logits["visual"].shape, out.features["audio"].shape
        (torch.Size([8, 2]), torch.Size([8, 2]), torch.Size([8, 4]))
        >>> bool(out.keep.all()), out.drop_probs  # without OPM every sample keeps its modalities
        (True, {})
    """

    logits: Tensor
    unimodal_logits: dict[str, Tensor]
    features: dict[str, Tensor]
    keep: Tensor
    drop_probs: dict[str, Tensor]


class MultimodalClassifier(nn.Module):
    """Late fusion: one encoder per modality, then a fusion head.

    OPM is passed to :meth:`forward` rather than owned: like the optimizer and :class:`~modbalance.OGM`,
    it is training-time state (random streams, and under DDP a mask stream per rank), kept out of
    the model's weights. It acts only while the model is in training mode (``model.eval()``
    switches it off, whatever the OPM module's own mode) and inside OPM's epoch window.
    ``model.state_dict()`` does not hold its state: checkpoint ``opm.state_dict()`` (and
    ``ogm.state_dict()``) next to the optimizer's, as ``docs/plug-in.md`` shows.

    Args:
        encoders: modality name -> encoder mapping that modality's input to ``(B, D_m)``.
        fusion: a :class:`~modbalance.fusion.Fusion` over the same modality names.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import OPM, unimodal_scores
        >>> from modbalance.fusion import Concat
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
        ...                              Concat({"audio": 4, "visual": 3}, num_classes=2))
        >>> inputs, y = {"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)}, torch.randint(0, 2, (8,))
        >>> out = model(inputs, opm=OPM(), scores=lambda logits: unimodal_scores(logits, y))
        >>> out.logits.shape, out.keep.shape, sorted(model.modality_parameters())
        (torch.Size([8, 2]), torch.Size([8]), ['audio', 'visual'])
    """

    def __init__(self, encoders: Mapping[str, nn.Module], fusion: Fusion) -> None:
        super().__init__()
        if not encoders:
            raise ValueError("MultimodalClassifier needs at least one encoder")
        if set(encoders) != set(fusion.modalities):
            raise ValueError(
                f"encoder modalities {sorted(encoders)} do not match "
                f"the fusion's modalities {sorted(fusion.modalities)}"
            )
        self.encoders = nn.ModuleDict(dict(encoders))
        self.fusion = fusion

    @property
    def modalities(self) -> list[str]:
        """Modality names, in the fusion's order."""
        return list(self.fusion.modalities)

    def encode(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Modality name -> ``(B, D_m)`` features."""
        if set(inputs) != set(self.encoders):
            raise ValueError(
                f"inputs have modalities {sorted(inputs)}, the model expects exactly {sorted(self.encoders)}"
            )
        return {name: self.encoders[name](inputs[name]) for name in self.modalities}

    def fuse(self, features: Mapping[str, Tensor]) -> Tensor:
        """``(B, C)`` fused logits."""
        return self.fusion(features)

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Modality name -> ``(B, C)`` detached uni-modal logits (the fusion's own definition)."""
        return self.fusion.unimodal_logits(features)

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Modality name -> its encoder's parameters (what OGM modulates)."""
        return {name: list(self.encoders[name].parameters()) for name in self.modalities}

    def forward(
        self,
        inputs: Mapping[str, Tensor],
        opm: OPM | None = None,
        scores: ScoresArg = None,
        *,
        epoch: int | None = None,
        drop: Mapping[str, Tensor] | None = None,
    ) -> ModelOutput:
        """Encode, optionally zero some samples' features and apply OPM, fuse.

        Args:
            inputs: modality name -> input batch.
            opm: an :class:`~modbalance.OPM` module; acts only when both the model and OPM are
                in training mode and ``epoch`` is inside OPM's window.
            scores: needed with ``opm``: the uni-modal scores of this batch, or a callable that
                receives the un-dropped uni-modal logits and returns them (typically
                ``lambda logits: unimodal_scores(logits, target)``).
            epoch: passed to OPM's epoch window.
            drop: modality name -> ``(B,)`` bool: the rows whose features of that modality are
                set to zero before the fusion (their encoder gets no gradient from those rows),
                as a balancing method's extra samples with a modality dropped ask
                (:class:`~modbalance.methods.ExtraSamples`). ``features`` and
                ``unimodal_logits`` stay those of the un-dropped features.
        """
        features = self.encode(inputs)
        unimodal = self.unimodal_logits(features)
        batch = next(iter(features.values())).shape[0]
        keep = torch.ones(batch, dtype=torch.bool, device=next(iter(features.values())).device)
        fused_features = features
        if drop:
            if not set(drop) <= set(features):
                raise ValueError(f"drop names modalities {sorted(drop)}, the model has {self.modalities}")
            fused_features = {
                name: f.masked_fill(drop[name].view(-1, *[1] * (f.dim() - 1)), 0) if name in drop else f
                for name, f in features.items()
            }
        drop_probs: dict[str, Tensor] = {}
        if opm is not None:
            if self.training and opm.active(epoch):
                if scores is None:
                    raise ValueError(
                        "forward(opm=...) needs scores=: a mapping of scores or a callable of the uni-modal logits"
                    )
                resolved = scores(unimodal) if callable(scores) else scores
                dropped = opm(fused_features, resolved, epoch=epoch)
                fused_features, keep, drop_probs = dropped.features, dropped.keep, dropped.drop_probs
            else:
                drop_probs = {name: torch.zeros((), device=keep.device) for name in features}
        return ModelOutput(self.fuse(fused_features), unimodal, features, keep, drop_probs)
