r"""Sample-level and modality-level valuation: re-train the low-contribution modality on extra copies.

Reference: Wei, Feng, Hu, "Enhancing Multimodal Cooperation via Sample-level Modality Valuation",
CVPR 2024; official code ``GeWu-Lab/Valuate-and-Enhance-Multimodal-Cooperation`` (read at
``7ed12b0``): ``code/sample_level.py``, ``code/modality_level.py``, ``code/models/models.py``,
``code/datasets/dataloader.py`` (lines cited below). Formulas and provenance:
``docs/comparison-methods.md``.

**Valuation** (``sample_level.py`` 75-122, the same in ``modality_level.py`` 79-126). Each
training sample is run through the model in eval mode, once with both modalities and once with
each modality's encoder features set to zero before the fusion (``models.py`` 74-86); with
:math:`v_{av} = 2\,[\hat y_{av} = y]` and :math:`v_m = [\hat y_m = y]` (prediction with only
modality :math:`m` kept),

.. math:: \phi_a = \tfrac12\,(v_a + v_{av} - v_v), \qquad \phi_v = \tfrac12\,(v_v + v_{av} - v_a),

so :math:`\phi_m \in \{-0.5, 0, 0.5, 1, 1.5\}`.

**Sample level** (``dataloader.py`` 154-186): the epoch trains on every sample plus, for each
modality :math:`m`, ``1`` copy when :math:`0.4 < \phi_m < 1`, ``2`` when :math:`-0.1 < \phi_m < 0.4`,
``3`` when :math:`\phi_m < -0.1` (none when :math:`\phi_m \ge 1`) of the sample with the *other*
modality dropped, i.e. modality :math:`m` alone (``drop=2``, the visual features zeroed, for a
low audio value; ``models.py`` 62-67).

**Modality level** (``modality_level.py`` 143-161, ``dataloader.py`` 295-316): the mean
contributions :math:`\bar\phi_m` over a random subset of ``int(N * part_ratio)`` samples (drawn
with replacement) give gaps :math:`g_m = 1 - \bar\phi_m`; ``int(d * N)`` samples, drawn with
replacement, are appended with the modality of the smaller gap dropped (the one of the larger gap
trained alone), where :math:`d = \tfrac23|g_a - g_v|\,\alpha` (``func="linear"``, the default),
:math:`\tanh(\tfrac23|g_a - g_v|\,\alpha)` (``"tanh"``) or :math:`(\tfrac23|g_a - g_v|)^{1.5}\alpha`
(``"square"``).

**When** (``sample_level.py`` 321-337): epochs ``0 .. warmup-1`` train on the plain set; after
each epoch from ``warmup - 1`` on, the valuation rebuilds the set the next epoch trains on. Here
the valuation runs in :meth:`~ValuationMethod.on_epoch_start` of every epoch ``>= warmup`` (same
model, same point) and the plan is kept in the method's state, so a resumed run trains on the same
samples. Training is cross-entropy on the fused logits (``sample_level.py`` 156-181).

Deviations, each deliberate: the random draws of the modality level come from a generator seeded
with ``(seed, epoch)`` (the official code uses NumPy's global RNG); the valuation reads the
training split as :meth:`~modbalance.methods.EpochContext.forward` gives it (eval-time
transforms; the official code re-reads it with training augmentation).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from modbalance.methods.base import (
    METHODS,
    BalancingMethod,
    EpochContext,
    ExtraSamples,
    MethodRequirementError,
    Requirements,
    SplitOutputs,
)
from modbalance.model import MultimodalClassifier

__all__ = [
    "ModalityValuation",
    "SampleValuation",
    "ValuationMethod",
    "modality_level_plan",
    "sample_contributions",
    "sample_level_copies",
    "sample_level_plan",
    "value_samples",
]

#: ``func`` choices of the modality level (``dataloader.py`` 300-306).
FUNCS = ("linear", "tanh", "square")


def sample_contributions(correct_fused: Tensor, correct_alone: dict[str, Tensor]) -> dict[str, Tensor]:
    r"""Per-sample Shapley contributions :math:`\phi_m` of two modalities (``sample_level.py`` 107-118).

    Args:
        correct_fused: ``(N,)`` bool, the prediction with both modalities is right.
        correct_alone: modality name -> ``(N,)`` bool, the prediction with only that modality
            kept (the other's features zeroed) is right; exactly two modalities.

    Returns:
        modality name -> ``(N,)`` float64 :math:`\phi_m = (v_m + 2[\hat y = y] - v_{m'})/2`.

    Example:
        >>> import torch
        >>> alone = {"a": torch.tensor([True, False, False]), "v": torch.tensor([False, False, True])}
        >>> phi = sample_contributions(torch.tensor([True, True, False]), alone)
        >>> phi["a"].tolist(), phi["v"].tolist()
        ([1.5, 1.0, -0.5], [0.5, 1.0, 0.5])
    """
    if len(correct_alone) != 2:
        raise ValueError(f"the valuation is defined for two modalities, got {sorted(correct_alone)}")
    a, v = correct_alone
    value_all = 2.0 * correct_fused.double()
    value = {m: c.double() for m, c in correct_alone.items()}
    return {a: (value[a] + value_all - value[v]) / 2.0, v: (value[v] + value_all - value[a]) / 2.0}


def sample_level_copies(contribution: Tensor) -> Tensor:
    r"""``(N,)`` int64 copies of each sample that train its modality alone (``dataloader.py`` 156-186).

    1 for :math:`0.4 < \phi < 1`, 2 for :math:`-0.1 < \phi < 0.4`, 3 for :math:`\phi < -0.1`, else 0.

    Example:
        >>> import torch
        >>> sample_level_copies(torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5])).tolist()
        [3, 2, 1, 0, 0]
    """
    c = contribution.double()  # compared as Python floats (float64), as the official code does
    copies = torch.zeros(c.shape, dtype=torch.long, device=c.device)
    copies = torch.where((c > 0.4) & (c < 1), 1, copies)
    copies = torch.where((c > -0.1) & (c < 0.4), 2, copies)
    return torch.where(c < -0.1, 3, copies)


def _plan(indices: Tensor, kept: Tensor, modalities: list[str]) -> ExtraSamples:
    """Copies of ``indices``; copy ``k`` keeps only modality ``modalities[kept[k]]``."""
    return ExtraSamples(indices, {m: kept != i for i, m in enumerate(modalities)})


def sample_level_plan(contributions: dict[str, Tensor]) -> ExtraSamples:
    """Sample level: per modality, :func:`sample_level_copies` copies keeping that modality alone.

    Args:
        contributions: modality name -> ``(N,)`` :math:`\\phi_m` (two modalities, in the model's order).

    Example:
        >>> import torch
        >>> plan = sample_level_plan({"a": torch.tensor([0.5, 1.5]), "v": torch.tensor([0.0, 1.0])})
        >>> plan.indices.tolist(), plan.drop["a"].tolist(), plan.drop["v"].tolist()
        ([0, 0, 0], [False, True, True], [True, False, False])
    """
    modalities = list(contributions)
    indices, kept = [], []
    for i, m in enumerate(modalities):
        copies = sample_level_copies(contributions[m])
        rows = torch.repeat_interleave(torch.arange(len(copies), device=copies.device), copies)
        indices.append(rows)
        kept.append(torch.full_like(rows, i))
    return _plan(torch.cat(indices).cpu(), torch.cat(kept).cpu(), modalities)


def modality_level_plan(
    contributions: dict[str, Tensor],
    *,
    part_ratio: float = 0.2,
    alpha: float = 1.0,
    func: str = "linear",
    generator: torch.Generator | None = None,
) -> tuple[ExtraSamples, dict[str, float]]:
    r"""Modality level: ``int(d * N)`` random copies keeping the lower-valued modality alone.

    ``modality_level.py`` 143-161 and ``dataloader.py`` 295-316 (see the module docstring).

    Args:
        contributions: modality name -> ``(N,)`` :math:`\phi_m` (two modalities).
        part_ratio: share of samples (drawn with replacement) whose mean estimates :math:`\bar\phi_m`.
        alpha: strength :math:`\alpha`.
        func: ``"linear"``, ``"tanh"`` or ``"square"``.
        generator: the random draws (the subset, then the copies).

    Returns:
        the plan and ``{"part/<m>": mean, "difference": d}``.

    Example:
        >>> import torch
        >>> phi = {"a": torch.full((30,), 0.5), "v": torch.full((30,), 1.0)}
        >>> plan, stats = modality_level_plan(phi, generator=torch.Generator().manual_seed(0))
        >>> len(plan.indices), round(stats["difference"], 4), bool(plan.drop["v"].all())  # int(1/3 * 30)
        (10, 0.3333, True)
    """
    if func not in FUNCS:
        raise ValueError(f"func must be one of {FUNCS}, got {func!r}")
    (a, v), n = list(contributions), len(next(iter(contributions.values())))
    num = int(n * part_ratio)
    if num < 1:
        raise ValueError(
            f"part_ratio={part_ratio} of {n} training samples selects no sample to estimate the modality values; "
            f"raise part_ratio to at least {1 / n:.3g}"
        )
    choice = torch.randint(n, (num,), generator=generator)
    part = {m: float(c.double().cpu()[choice].sum()) / num for m, c in contributions.items()}
    gap_a, gap_v = 1.0 - part[a], 1.0 - part[v]
    base = abs(gap_a - gap_v) / 3 * 2
    difference: float
    if func == "linear":
        difference = base * alpha
    elif func == "tanh":  # a float32 tensor, as torch.tensor(...) of a Python float (dataloader.py 303-304)
        difference = float(torch.tanh(torch.tensor(base * alpha)))
    else:
        difference = base**1.5 * alpha
    count = int(difference * n)
    rows = torch.randint(n, (count,), generator=generator)
    kept = torch.full_like(rows, 0 if gap_a > gap_v else 1)  # drop visual (keep a) if a's gap is larger
    stats = {f"part/{a}": part[a], f"part/{v}": part[v], "difference": difference}
    return _plan(rows, kept, [a, v]), stats


@torch.no_grad()
def value_samples(model: MultimodalClassifier, rows: SplitOutputs) -> dict[str, Tensor]:
    r""":math:`\phi_m` of every row of ``rows`` (a split's features through ``model``'s fusion).

    The fused prediction and the two single-modality predictions come from ``model.fuse`` on the
    rows' features, with the other modality's features zeroed (``models.py`` 74-86), in fp32
    and eval mode, on the model's device.

    Returns:
        modality name -> ``(N,)`` float64 on the CPU, in the model's modality order.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> model = MultimodalClassifier({"a": nn.Linear(3, 2), "v": nn.Linear(3, 2)}, Concat({"a": 2, "v": 2}, 2))
        >>> feats = {"a": torch.randn(5, 2), "v": torch.randn(5, 2)}
        >>> phi = value_samples(model, SplitOutputs(torch.zeros(5, 2), {}, feats, torch.zeros(5, dtype=torch.long)))
        >>> sorted(phi), phi["a"].shape
        (['a', 'v'], torch.Size([5]))
    """
    modalities = model.modalities
    device = next(model.parameters()).device
    features = {m: rows.features[m].to(device, torch.float32) for m in modalities}
    target = rows.target.to(device)
    was_training = model.training
    model.eval()
    try:

        def correct(kept: list[str]) -> Tensor:
            parts = {m: f if m in kept else torch.zeros_like(f) for m, f in features.items()}
            return model.fuse(parts).float().argmax(dim=1) == target

        fused = correct(modalities)
        alone = {m: correct([m]) for m in modalities}
    finally:
        model.train(was_training)
    return {m: c.cpu() for m, c in sample_contributions(fused, alone).items()}


class ValuationMethod(BalancingMethod):
    """Shared part of :class:`SampleValuation` and :class:`ModalityValuation`: value, plan, keep the plan.

    Subclasses implement :meth:`plan` (contributions -> extra samples and numbers to log).

    Args:
        warmup: epochs trained on the plain set before the first valuation (``--warmup``, 5).
        start_epoch, end_epoch: the method's window; the plan is made in epochs inside it from
            ``warmup`` on.

    Example:
        >>> SampleValuation(warmup=2).epoch_samples(0) is None  # no plan before the first valuation
        True
    """

    name: ClassVar[str] = "valuation"
    requires: ClassVar[Requirements] = Requirements(max_modalities=2)

    def __init__(self, *, warmup: int = 5, start_epoch: int = 0, end_epoch: int | None = None) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"method {self.name!r}: warmup must be an int >= 0, got {warmup!r}")
        self.warmup = warmup
        self._plan: ExtraSamples | None = None
        self._plan_epoch: int | None = None
        self._stats: dict[str, float] = {}

    def plans(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` trains on a re-valued set (``>= warmup`` and inside the window)."""
        return epoch >= self.warmup and self.active(epoch)

    def plan(self, contributions: dict[str, Tensor], epoch: int) -> tuple[ExtraSamples, dict[str, float]]:
        """Override: the extra samples of ``epoch`` from the contributions."""
        raise NotImplementedError

    def on_epoch_start(self, model: MultimodalClassifier, context: EpochContext) -> None:
        """From ``warmup`` on: value every training sample and plan this epoch's extra samples."""
        self._plan, self._plan_epoch, self._stats = None, None, {}
        if not self.plans(context.epoch):
            return
        if context.forward is None:
            raise MethodRequirementError(
                f"method {self.name!r} values the training samples and needs EpochContext.forward('train'); "
                "this loop offers none (train with modbalance.train, or pass forward= in EpochContext)"
            )
        contributions = value_samples(model, context.forward("train"))
        plan, stats = self.plan(contributions, context.epoch)
        self._plan, self._plan_epoch = plan, context.epoch
        self._stats = {f"contribution/{m}": float(c.mean()) for m, c in contributions.items()}
        self._stats.update(stats)
        self._stats["extra_samples"] = float(len(plan.indices))

    def epoch_samples(self, epoch: int) -> ExtraSamples | None:
        """The plan made at the start of ``epoch`` (``None`` in warm-up and outside the window)."""
        return self._plan if self._plan_epoch == epoch else None

    def on_epoch_end(self, model: MultimodalClassifier, context: EpochContext) -> dict[str, float]:
        """Mean contributions, the number of extra samples (and the modality level's estimates)."""
        return dict(self._stats)

    def get_extra_state(self) -> dict[str, Any]:
        """The epoch's plan and numbers (exact mid-epoch resume)."""
        plan = None if self._plan is None else {"indices": self._plan.indices, "drop": dict(self._plan.drop)}
        return {"plan": plan, "epoch": self._plan_epoch, "stats": dict(self._stats)}

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        plan = state["plan"]
        self._plan = None if plan is None else ExtraSamples(plan["indices"], dict(plan["drop"]))
        self._plan_epoch = state["epoch"]
        self._stats = dict(state["stats"])

    def extra_repr(self) -> str:
        return f"warmup={self.warmup}, " + super().extra_repr()


@METHODS.register("valuation_sample")
class SampleValuation(ValuationMethod):
    """Sample-level valuation (Wei et al., CVPR 2024): copies of each sample per its modality values.

    See the module docstring and :func:`sample_level_plan`.

    Example:
        >>> import torch
        >>> method = SampleValuation()
        >>> plan, stats = method.plan({"a": torch.tensor([-0.5, 1.0]), "v": torch.tensor([1.5, 0.5])}, epoch=5)
        >>> plan.indices.tolist(), plan.drop["v"].tolist()  # 3 copies of 0 with only a, 1 of 1 with only v
        ([0, 0, 0, 1], [True, True, True, False])
    """

    name: ClassVar[str] = "valuation_sample"

    def plan(self, contributions: dict[str, Tensor], epoch: int) -> tuple[ExtraSamples, dict[str, float]]:
        """:func:`sample_level_plan` (no random draws)."""
        return sample_level_plan(contributions), {}


@METHODS.register("valuation_modality")
class ModalityValuation(ValuationMethod):
    """Modality-level valuation (Wei et al., CVPR 2024): a share of copies keeping the weaker modality alone.

    See the module docstring and :func:`modality_level_plan`.

    Args:
        part_ratio: share of samples estimating the modality values (``--part_ratio``, 0.2).
        alpha: strength (``--alpha``, 1).
        func: ``"linear"`` (the default of ``dataloader.py`` 261), ``"tanh"`` or ``"square"``.
        seed: seed of the random draws; epoch ``e`` draws from ``(seed, e)``, the same on every rank.
        warmup, start_epoch, end_epoch: as :class:`ValuationMethod`.

    Example:
        >>> import torch
        >>> method = ModalityValuation(alpha=0.5)
        >>> plan, stats = method.plan({"a": torch.zeros(60), "v": torch.ones(60)}, epoch=5)
        >>> len(plan.indices), bool(plan.drop["v"].all())  # int(2/3 * 0.5 * 60) copies with only audio
        (20, True)
    """

    name: ClassVar[str] = "valuation_modality"

    def __init__(
        self,
        *,
        part_ratio: float = 0.2,
        alpha: float = 1.0,
        func: str = "linear",
        seed: int = 0,
        warmup: int = 5,
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__(warmup=warmup, start_epoch=start_epoch, end_epoch=end_epoch)
        if isinstance(part_ratio, bool) or not isinstance(part_ratio, (int, float)) or not 0 < part_ratio <= 1:
            raise ValueError(f"method {self.name!r}: part_ratio must be a number in (0, 1], got {part_ratio!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"method {self.name!r}: alpha must be a finite number >= 0, got {alpha!r}")
        if func not in FUNCS:
            raise ValueError(f"method {self.name!r}: func must be one of {', '.join(FUNCS)}, got {func!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"method {self.name!r}: seed must be an int, got {seed!r}")
        self.part_ratio, self.alpha, self.func, self.seed = float(part_ratio), float(alpha), func, seed

    def plan(self, contributions: dict[str, Tensor], epoch: int) -> tuple[ExtraSamples, dict[str, float]]:
        """:func:`modality_level_plan` with the draws of ``(seed, epoch)``."""
        digest = hashlib.sha256(f"modbalance-valuation:{self.seed}:{epoch}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
        return modality_level_plan(
            contributions, part_ratio=self.part_ratio, alpha=self.alpha, func=self.func, generator=generator
        )

    def extra_repr(self) -> str:
        return f"part_ratio={self.part_ratio}, alpha={self.alpha}, func={self.func!r}, seed={self.seed}, " + (
            super().extra_repr()
        )
