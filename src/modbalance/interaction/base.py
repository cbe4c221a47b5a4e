"""The seams OGM and OPM need, for models whose modalities interact before the head.

:class:`InteractionModel` is the base of :class:`~modbalance.interaction.TransformerFusion`,
:class:`~modbalance.interaction.MMTMNet` and :class:`~modbalance.interaction.CentralNet`. It
offers exactly the interface of :class:`~modbalance.MultimodalClassifier`, so the same loop, the
same :class:`~modbalance.OGM` and the same :class:`~modbalance.OPM` drive it:

* ``forward(inputs, opm=None, scores=None, epoch=None) -> ModelOutput``;
* ``modality_parameters()``: modality name -> the parameters only that modality's input flows
  through (its tokenizer, its encoder stream or branch). Parameters shared by several modalities
  (interaction blocks, fusion tokens, the shared transformer, the head) are left out, so OGM
  leaves them unmodulated; ``ogm_shared="<modality>"`` adds them to that modality's group (they
  are then slowed down whenever that modality dominates). :meth:`shared_parameters` lists them.

A subclass splits its computation in two: ``_prepare`` (modality-specific, no interaction) and
``_interact(state, names, weight)``, which runs the interaction on the modalities ``names`` only,
each sample's modality ``j`` entering with factor ``weight[:, j]``; a factor of 0 means *absent*:
the modality's tokens are masked out of attention, or its statistics left out of a linear
combination, never a zero that would still pass through a bias or a normalisation.

Uni-modal logits (``unimodal=``):

* ``"masked"`` (default, exact): ``_interact`` on modality m alone, i.e. the model's own output
  with every other modality absent. It depends on m's input only (tested). Cost: one extra
  forward of the interaction part per modality, without gradients (the encoders' outputs are
  reused where the architecture allows: transformer and CentralNet; MMTM reruns the streams).
* ``"heads"``: :class:`~modbalance.scores.AuxiliaryHeads` on each modality's own features
  (detached), no extra pass, but the heads learn only if ``model.auxiliary_loss(out, y)`` is added
  to the training loss (an online linear probe; the trainer does not add it, so it refuses this
  option). Not the model's own prediction, so not exact.

OPM drops a modality by setting its factor to 0 for that sample (the survivors get OPM's rescale
factor). A sample OPM leaves without any modality keeps only the shared tokens/bias, is reported
``keep=False`` and is excluded from the loss by :func:`~modbalance.kept_cross_entropy`, as with
late fusion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from modbalance.model import ModelOutput, ScoresArg
from modbalance.opm import OPM
from modbalance.scores import AuxiliaryHeads

__all__ = ["UNIMODAL_STRATEGIES", "InteractionModel"]

#: Values of ``unimodal=``: ``"masked"`` (exact, default) or ``"heads"`` (auxiliary linear heads).
UNIMODAL_STRATEGIES: tuple[str, ...] = ("masked", "heads")


def batch_size_of(value: Any) -> int:
    """Leading dimension of a tensor (or of the first field of a tuple of tensors)."""
    tensor = value[0] if isinstance(value, tuple) else value
    return int(tensor.shape[0])


def shape_of(value: Any) -> tuple[int, ...]:
    """Shape of a tensor (or of the first field of a tuple of tensors), for messages."""
    tensor = value[0] if isinstance(value, tuple) else value
    return tuple(tensor.shape)


class InteractionModel(nn.Module):
    """Base class: input checks, OPM as a mask, uni-modal logits, modality parameters.

    Args:
        modalities: modality names (this order is the model's order); at least two.
        num_classes: number of classes ``C`` (>= 2).
        feature_dims: modality name -> width of ``ModelOutput.features[m]``.
        unimodal: ``"masked"`` (exact, default) or ``"heads"``.
        ogm_shared: ``None`` (shared parameters unmodulated) or a modality name that receives them.

    Example:
        >>> import torch
        >>> from modbalance.interaction import CentralNet
        >>> model = CentralNet({"a": [torch.nn.Linear(3, 4)], "b": [torch.nn.Linear(2, 4)]}, [4], num_classes=2)
        >>> isinstance(model, InteractionModel), model.modalities
        (True, ['a', 'b'])
        >>> sorted(model.modality_parameters()), len(model.shared_parameters()) > 0
        (['a', 'b'], True)
    """

    def __init__(
        self,
        modalities: Sequence[str],
        num_classes: int,
        feature_dims: Mapping[str, int],
        *,
        unimodal: str = "masked",
        ogm_shared: str | None = None,
    ) -> None:
        super().__init__()
        names = list(modalities)
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"{type(self).__name__} needs two or more distinct modalities, got {names}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if unimodal not in UNIMODAL_STRATEGIES:
            raise ValueError(f"unimodal must be one of {', '.join(UNIMODAL_STRATEGIES)}, got {unimodal!r}")
        if ogm_shared is not None and ogm_shared not in names:
            raise ValueError(f"ogm_shared must be None or one of the modalities {names}, got {ogm_shared!r}")
        self.modalities = names
        self.num_classes = num_classes
        self.unimodal = unimodal
        self.ogm_shared = ogm_shared
        self.aux_heads = AuxiliaryHeads(dict(feature_dims), num_classes) if unimodal == "heads" else None

    # -- what a subclass implements -------------------------------------------------------------
    def _check_input(self, name: str, value: Any) -> None:
        """Raise ValueError naming ``name`` and the shape when ``value`` does not fit."""

    def _prepare(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Tensor] | None]:
        """Modality-specific computation: (per-modality state, features or None)."""
        raise NotImplementedError

    def _interact(
        self, state: Mapping[str, Any], names: Sequence[str], weight: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits ``(B, C)`` of the modalities ``names`` (factors ``weight``: ``(B, len(names))``),
        and each modality's final ``(B, D_m)`` representation in that pass."""
        raise NotImplementedError

    def _own_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Modality name -> parameters only that modality's input flows through."""
        raise NotImplementedError

    # -- the seams --------------------------------------------------------------------------------
    def check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Inputs in the model's order; errors name the modality and the shapes."""
        if not isinstance(inputs, Mapping):
            raise TypeError(f"inputs must be a mapping modality -> tensor, got {type(inputs).__name__}")
        missing = [m for m in self.modalities if m not in inputs]
        extra = sorted(set(inputs) - set(self.modalities))
        if missing or extra:
            shapes = {m: shape_of(v) for m, v in inputs.items()}
            raise ValueError(
                f"{type(self).__name__} expects inputs for {self.modalities}; missing {missing}, "
                f"unexpected {extra} (got shapes {shapes})"
            )
        first = self.modalities[0]
        batch = batch_size_of(inputs[first])
        for name in self.modalities:
            if batch_size_of(inputs[name]) != batch:
                raise ValueError(
                    f"inputs[{name!r}] has batch size {batch_size_of(inputs[name])} (shape {shape_of(inputs[name])}), "
                    f"but inputs[{first!r}] has {batch} (shape {shape_of(inputs[first])})"
                )
            self._check_input(name, inputs[name])
        return {name: inputs[name] for name in self.modalities}

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters used by several modalities (left out of :meth:`modality_parameters` by default).

        The auxiliary heads (``unimodal="heads"``) are in neither: they read detached features.
        """
        owned = {id(p) for params in self._own_parameters().values() for p in params}
        aux = set() if self.aux_heads is None else {id(p) for p in self.aux_heads.parameters()}
        return [p for p in self.parameters() if id(p) not in owned and id(p) not in aux]

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Modality name -> its modality-specific parameters (what OGM modulates); disjoint.

        With ``ogm_shared=m`` the shared parameters are appended to modality m's group.
        """
        groups = {name: list(params) for name, params in self._own_parameters().items()}
        if self.ogm_shared is not None:
            groups[self.ogm_shared] = groups[self.ogm_shared] + self.shared_parameters()
        return groups

    def auxiliary_loss(self, out: ModelOutput, target: Tensor) -> Tensor:
        """Cross-entropy of the auxiliary heads (``unimodal="heads"``); add it to the training loss."""
        if self.aux_heads is None:
            raise ValueError('auxiliary_loss() needs unimodal="heads"; this model uses unimodal="masked"')
        return self.aux_heads.loss(out.features, target)

    def unimodal_pass(self, state: Mapping[str, Any], batch: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Each modality alone (the others absent), without gradients: (logits, representations)."""
        logits: dict[str, Tensor] = {}
        alone: dict[str, Tensor] = {}
        device = next(self.parameters()).device
        with torch.no_grad():
            for name in self.modalities:
                z, reps = self._interact({name: state[name]}, [name], torch.ones(batch, 1, device=device))
                logits[name] = z.detach().float()
                alone[name] = reps[name].detach()
        return logits, alone

    def forward(
        self,
        inputs: Mapping[str, Any],
        opm: OPM | None = None,
        scores: ScoresArg = None,
        *,
        epoch: int | None = None,
    ) -> ModelOutput:
        """Prepare each modality, measure uni-modal logits, let OPM choose the factors, interact.

        Args:
            inputs: modality name -> input batch (see the subclass for shapes).
            opm: an :class:`~modbalance.OPM`; acts only when the model is in training mode and
                ``epoch`` is inside OPM's window. It is asked for each
                sample's factor per modality (0: dropped, masked out of the interaction).
            scores: needed with ``opm``, as in :meth:`modbalance.MultimodalClassifier.forward`.
            epoch: passed to OPM's epoch window.
        """
        ordered = self.check_inputs(inputs)
        batch = batch_size_of(ordered[self.modalities[0]])
        state, features = self._prepare(ordered)
        unimodal: dict[str, Tensor] = {}
        if self.unimodal == "masked" or features is None:
            unimodal, alone = self.unimodal_pass(state, batch)
            features = alone if features is None else features
        assert features is not None
        if self.aux_heads is not None:
            with torch.no_grad():
                unimodal = {m: z.detach().float() for m, z in self.aux_heads(features).items()}
        device = next(iter(features.values())).device
        weight = torch.ones(batch, len(self.modalities), device=device)
        keep = torch.ones(batch, dtype=torch.bool, device=device)
        drop_probs: dict[str, Tensor] = {}
        if opm is not None:
            # As in MultimodalClassifier: OPM acts only in training mode and inside its window.
            if self.training and opm.active(epoch):
                if scores is None:
                    raise ValueError(
                        "forward(opm=...) needs scores=: a mapping of scores or a callable of the uni-modal logits"
                    )
                resolved = scores(unimodal) if callable(scores) else scores
                # OPM decides on unit "presence" vectors as wide as each modality's features, so its
                # rescale rule sees the real widths; what it returns is each sample's factor.
                probe = {m: torch.ones(batch, features[m].shape[1], device=device) for m in self.modalities}
                dropped = opm(probe, resolved, epoch=epoch)
                weight = torch.stack([dropped.features[m][:, 0] for m in self.modalities], dim=1)
                keep, drop_probs = dropped.keep, dropped.drop_probs
            else:
                drop_probs = {m: torch.zeros((), device=device) for m in self.modalities}
        logits, _ = self._interact(state, self.modalities, weight)
        return ModelOutput(logits, unimodal, features, keep, drop_probs)
