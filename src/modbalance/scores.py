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

import warnings
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


def _module_of(head: Callable[..., Tensor]) -> nn.Module | None:
    """The module behind ``head``: itself, or the owner of a bound method such as ``model.fuse``."""
    if isinstance(head, nn.Module):
        return head
    owner = getattr(head, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def zero_out(
    head: Callable[[dict[str, Tensor]], Tensor], features: Mapping[str, Tensor], *, module: nn.Module | None = None
) -> dict[str, Tensor]:
    """Uni-modal logits of any head: run it with one modality kept and the others zeroed.

    Runs the head once per modality, under ``no_grad`` and in eval mode: a measurement must not
    update BatchNorm running statistics with zeroed inputs, nor draw dropout masks. The modes of
    the module and all its submodules are restored afterwards, each as it was.

    Args:
        head: maps ``{modality: (B, D_m)}`` to ``(B, C)`` logits (e.g. a fusion module).
        features: modality name -> ``(B, D_m)``.
        module: the module switched to eval mode while measuring. Default: ``head`` itself when
            it is an ``nn.Module``, or the owner of a bound method (``model.fuse``); a plain
            function (a lambda) runs in whatever mode its modules are in unless ``module`` is given.

    Returns:
        modality name -> ``(B, C)`` logits.

    Example:
        >>> import torch
        >>> head = lambda f: f["audio"] * 2 + f["visual"]
        >>> out = zero_out(head, {"audio": torch.ones(1, 2), "visual": torch.ones(1, 2)})
        >>> out["audio"].tolist(), out["visual"].tolist()
        ([[2.0, 2.0]], [[1.0, 1.0]])
        >>> dropout_head = nn.Sequential(nn.Dropout(0.5), nn.Linear(2, 2))  # in training mode
        >>> fuse = lambda f: dropout_head(f["audio"] + f["visual"])
        >>> x = {"audio": torch.ones(4, 2), "visual": torch.ones(4, 2)}
        >>> a, b = zero_out(fuse, x, module=dropout_head), zero_out(fuse, x, module=dropout_head)
        >>> torch.equal(a["audio"], b["audio"]), dropout_head.training  # no dropout; mode restored
        (True, True)
    """
    target = module if module is not None else _module_of(head)
    modes = [(child, child.training) for child in target.modules()] if target is not None else []
    logits = {}
    try:
        if target is not None:
            target.eval()
        with torch.no_grad():
            for name in features:
                kept = {other: value if other == name else torch.zeros_like(value) for other, value in features.items()}
                logits[name] = head(kept)
    finally:
        for child, training in modes:
            child.training = training
    return logits


class AuxiliaryHeads(nn.Module):
    """One linear classifier per modality on detached features: uni-modal logits for any model.

    Train them with :meth:`loss` added to the main loss, and add their parameters to the
    optimizer (``torch.optim.SGD([*model.parameters(), *heads.parameters()], ...)``); because the
    features are detached, they learn to read each encoder without changing it (an online linear
    probe). Untrained heads give near-uniform logits, and OGM or OPM then misjudge which modality
    dominates. To catch that mistake, the heads check themselves once, at their
    :data:`CHECK_AFTER`-th call in training mode (one host synchronisation, once), and warn when
    their parameters never received a gradient (the loss is missing) or never changed (they are
    not in the optimizer).

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

    #: The training-mode call at which the heads check that they are being trained.
    CHECK_AFTER = 20

    def __init__(self, dims: Mapping[str, int], num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.heads = nn.ModuleDict({name: nn.Linear(dim, num_classes) for name, dim in dims.items()})
        self._calls = 0
        self._initial: list[Tensor] | None = None
        self._got_grad = False
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Modality name -> ``(B, C)`` logits from detached features."""
        missing = set(self.heads) - set(features)
        if missing:
            raise ValueError(f"AuxiliaryHeads got features for {sorted(features)}, missing {sorted(missing)}")
        if self.training and self._calls <= self.CHECK_AFTER:
            self._check_training()
        return {name: head(features[name].detach()) for name, head in self.heads.items()}

    def _saw_grad(self, grad: Tensor) -> None:
        self._got_grad = True

    def _check_training(self) -> None:
        """Snapshot the weights at the first training call; compare at the CHECK_AFTER-th (once).

        Whether a gradient ever arrived is recorded by tensor hooks (removed after the check):
        reading ``p.grad`` would not do, since ``zero_grad()`` sets it to None before each step.
        """
        self._calls += 1
        params = list(self.heads.parameters())
        if self._calls == 1:
            self._initial = [p.detach().clone() for p in params]
            self._got_grad = False
            self._hooks = [p.register_hook(self._saw_grad) for p in params]
            return
        if self._calls <= self.CHECK_AFTER or self._initial is None:
            return
        initial, self._initial = self._initial, None
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if not self._got_grad:
            problem = "never received a gradient: add heads.loss(features, target) to the training loss"
        elif all(torch.equal(p.detach(), q) for p, q in zip(params, initial, strict=True)):
            problem = (
                "received gradients but never changed: add heads.parameters() to the optimizer "
                "(e.g. torch.optim.SGD([*model.parameters(), *heads.parameters()], lr=...))"
            )
        else:
            return
        warnings.warn(
            f"AuxiliaryHeads: after {self.CHECK_AFTER} calls in training mode the heads {problem}. "
            "Untrained heads give near-uniform uni-modal logits, so OGM and OPM cannot tell which modality dominates.",
            UserWarning,
            stacklevel=3,
        )

    def loss(self, features: Mapping[str, Tensor], target: Tensor) -> Tensor:
        """Sum over modalities of each head's cross-entropy."""
        return torch.stack([F.cross_entropy(z, target) for z in self(features).values()]).sum()
