"""Measuring modality imbalance: uni-modal scores, discrepancy ratios, OGM and OPM factors.

Reference: Wei, Hu, Du, Wen, "On-the-fly Modulation for Balanced Multimodal Learning",
TPAMI 2024; Peng et al., "Balanced Multimodal Learning via On-the-fly Gradient Modulation",
CVPR 2022. Semantics follow the official code (see ``docs/methods.md``).

Everything here is vectorised over the batch and over modalities and never synchronises with
the host, except the input checks of the public functions, which cost one synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "COEFFICIENTS",
    "RATIO_RULES",
    "discrepancy_ratios",
    "ogm_coefficients",
    "opm_drop_probs",
    "unimodal_scores",
]

RatioRule = Literal["mean_pairwise", "min", "mean_others", "sum_others"]
Coefficient = Literal["reference", "shifted", "paper"]

#: Names accepted by ``discrepancy_ratios(rule=...)``.
RATIO_RULES: tuple[str, ...] = ("mean_pairwise", "min", "mean_others", "sum_others")
#: Names accepted by ``ogm_coefficients(coefficient=...)`` and ``OGM(coefficient=...)``.
COEFFICIENTS: tuple[str, ...] = ("reference", "shifted", "paper")

#: Scores are floored here before any division (see :func:`discrepancy_ratios`).
SCORE_FLOOR = 1e-12


def _check_logits(unimodal_logits: Mapping[str, Tensor], target: Tensor) -> int:
    """Validate shapes and keys (host metadata only, no synchronisation); return the batch size."""
    if not isinstance(unimodal_logits, Mapping) or len(unimodal_logits) == 0:
        raise ValueError("unimodal_logits must be a non-empty mapping {modality: logits of shape (B, C)}")
    if target.dim() != 1:
        raise ValueError(f"target must have shape (B,), got {tuple(target.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    batch = target.shape[0]
    for name, logits in unimodal_logits.items():
        if logits.dim() != 2 or logits.shape[0] != batch:
            raise ValueError(
                f"unimodal_logits[{name!r}] must have shape (B, C) with B={batch} (the target's length), "
                f"got {tuple(logits.shape)}"
            )
    return batch


def _score_vector(unimodal_logits: Mapping[str, Tensor], target: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(scores (M,), bad_target (0-d bool))`` without synchronising.

    Targets outside ``[0, C)`` are clamped for the gather so that no device-side assert fires;
    the caller raises on ``bad_target`` after its single synchronisation.
    """
    with torch.no_grad():
        values = list(unimodal_logits.values())
        first = values[0]
        if all(v.shape == first.shape and v.device == first.device for v in values):
            # Common case: one stacked (M, B, C) softmax and gather for all modalities.
            num_classes = first.shape[1]
            if target.device != first.device:
                target = target.to(first.device)
            index = target.clamp(0, num_classes - 1)
            bad_target = (index != target).any()
            stacked = torch.stack(values)
            if stacked.dtype != torch.float32:
                stacked = stacked.float()
            probs = torch.softmax(stacked, dim=2)
            return probs.gather(2, index.view(1, -1, 1).expand(len(values), -1, 1)).sum(dim=(1, 2)), bad_target
        rows = []
        bad_target = torch.zeros((), dtype=torch.bool, device=target.device)
        for logits in values:
            num_classes = logits.shape[1]
            index = target.clamp(0, num_classes - 1)
            bad_target = bad_target | (index != target).any()
            probs = torch.softmax(logits.detach().float(), dim=1)
            rows.append(probs.gather(1, index.unsqueeze(1).to(logits.device)).sum())
        scores = torch.stack(rows)
        return scores, bad_target.to(scores.device)


def _raise_on_flags(names: list[str], bad_target: bool, finite: list[bool], what: str) -> None:
    if bad_target:
        raise ValueError("target holds class indices outside [0, C) for the given logits")
    broken = [name for name, ok in zip(names, finite, strict=True) if not ok]
    if broken:
        raise ValueError(f"non-finite {what} for modalities {broken}: check the model for NaN/inf outputs")


def unimodal_scores(unimodal_logits: Mapping[str, Tensor], target: Tensor) -> dict[str, Tensor]:
    r"""Each modality's confidence in the true class, summed over the batch.

    .. math:: s_m = \sum_i \operatorname{softmax}(z_{m,i})_{y_i}

    This is the *sum* (not the mean) that the official code uses; ratios of sums equal ratios of
    means, and sums add up across micro-batches and ranks. Computed in float32 under
    ``no_grad`` with one ``gather`` (no loop over samples); the result is detached.

    Args:
        unimodal_logits: modality name -> logits of shape ``(B, C)``.
        target: class indices of shape ``(B,)``.

    Returns:
        modality name -> 0-d float32 tensor on the logits' device.

    Raises:
        ValueError: on mismatched shapes, targets outside ``[0, C)`` or non-finite logits.

    Example:
        >>> import torch
        >>> logits = {"audio": torch.tensor([[0.6, 0.4], [0.5, 0.5]]).log(),
        ...           "visual": torch.tensor([[0.2, 0.8], [0.7, 0.3]]).log()}
        >>> scores = unimodal_scores(logits, torch.tensor([0, 1]))
        >>> {name: round(float(s), 4) for name, s in scores.items()}
        {'audio': 1.1, 'visual': 0.5}
    """
    _check_logits(unimodal_logits, target)
    names = list(unimodal_logits)
    vector, bad_target = _score_vector(unimodal_logits, target)
    host = torch.cat([vector, bad_target.reshape(1)]).tolist()  # the one synchronisation
    _raise_on_flags(names, bool(host[-1]), [math.isfinite(s) for s in host[:-1]], "uni-modal logits")
    return dict(zip(names, vector.unbind(0), strict=True))


def _ratio_vector(scores: Tensor, rule: str, eps: float = 0.0) -> Tensor:
    """Discrepancy ratios for a ``(M,)`` vector of non-negative scores (no checks, no sync).

    ``eps`` is added to every denominator (BalanceBenchmark adds ``1e-5``); 0 leaves the ratios exact.
    """
    s = scores.clamp_min(SCORE_FLOOR)
    m = s.shape[0]
    eye = torch.eye(m, dtype=torch.bool, device=s.device)
    if rule == "mean_pairwise":
        inverse = 1.0 / (s + eps)
        return s * (inverse.sum() - inverse) / (m - 1)
    if rule == "min":
        others = s.unsqueeze(0).expand(m, m).masked_fill(eye, float("inf"))
        return s / (others.min(dim=1).values + eps)
    if rule == "mean_others":
        return s * (m - 1) / (s.sum() - s + eps * (m - 1))
    if rule == "sum_others":
        return s / (s.sum() - s + eps)
    raise ValueError(f"Unknown ratio rule {rule!r}. Available: {', '.join(RATIO_RULES)}")


def discrepancy_ratios(scores: Mapping[str, Tensor], rule: RatioRule = "mean_pairwise") -> dict[str, Tensor]:
    r"""The discrepancy ratio :math:`\rho_m` of every modality; :math:`\rho_m > 1` means dominant.

    For two modalities every rule gives :math:`s_m / s_{other}`. For M > 2:

    * ``"mean_pairwise"`` (default): :math:`\frac{1}{M-1}\sum_{j\ne m} s_m/s_j`, the mean of the
      pairwise ratios. It is the rule the method's authors recommend for M > 2 (OGM-GE issue #16)
      and the TPAMI paper's Eq. 7 as paraphrased; several modalities can be dominant at once.
    * ``"min"``: :math:`s_m / \min_{j\ne m} s_j`, against the weakest *other* modality (so that
      it reduces to the two-modality ratio; BalanceBenchmark takes the minimum over all j).
    * ``"mean_others"``: :math:`s_m / \operatorname{mean}_{j\ne m} s_j`.
    * ``"sum_others"``: :math:`s_m / \sum_{j\ne m} s_j` (BalanceBenchmark's three-modality OPM).

    Zero scores: scores are floored at ``1e-12`` before dividing. A batch whose scores are all
    zero therefore gives :math:`\rho = 1` everywhere (no modality dominant, nothing modulated),
    and a modality scoring zero against a positive one makes the latter maximally dominant.

    Args:
        scores: modality name -> 0-d non-negative tensor (e.g. from :func:`unimodal_scores`).
        rule: one of :data:`RATIO_RULES`.

    Returns:
        modality name -> 0-d tensor, in the order of ``scores``.

    Raises:
        ValueError: fewer than two modalities, an unknown rule, negative or non-finite scores.

    Example:
        >>> import torch
        >>> s = {"audio": torch.tensor(4.0), "visual": torch.tensor(2.0), "text": torch.tensor(1.0)}
        >>> {m: round(float(r), 4) for m, r in discrepancy_ratios(s).items()}
        {'audio': 3.0, 'visual': 1.25, 'text': 0.375}
    """
    if len(scores) < 2:
        raise ValueError(f"discrepancy ratios need at least two modalities, got {list(scores)}")
    if rule not in RATIO_RULES:
        raise ValueError(f"Unknown ratio rule {rule!r}. Available: {', '.join(RATIO_RULES)}")
    names = list(scores)
    vector = torch.stack([torch.as_tensor(scores[name]).reshape(()).float() for name in names])
    checks = torch.cat([torch.isfinite(vector), vector >= 0]).tolist()
    _raise_on_flags(names, False, checks[: len(names)], "scores")
    negative = [name for name, ok in zip(names, checks[len(names) :], strict=True) if not ok]
    if negative:
        raise ValueError(f"scores must be non-negative, got negative scores for {negative}")
    return dict(zip(names, _ratio_vector(vector, rule).unbind(0), strict=True))


def _coefficient_vector(ratios: Tensor, alpha: float, coefficient: str) -> Tensor:
    """OGM coefficients for a ``(M,)`` ratio vector (no checks, no sync)."""
    if coefficient == "reference":
        raw = 1.0 - torch.tanh(alpha * ratios)
    elif coefficient == "shifted":
        raw = 1.0 - torch.tanh(alpha * (ratios - 1.0))
    elif coefficient == "paper":
        raw = (1.0 - alpha * torch.tanh(ratios - 1.0)).clamp_min(0.0)
    else:
        raise ValueError(f"Unknown OGM coefficient {coefficient!r}. Available: {', '.join(COEFFICIENTS)}")
    return torch.where(ratios > 1.0, raw, torch.ones_like(raw))


def ogm_coefficients(
    ratios: Mapping[str, Tensor], alpha: float, coefficient: Coefficient = "reference"
) -> dict[str, Tensor]:
    r"""OGM's gradient coefficient :math:`k_m` for every modality; 1 unless :math:`\rho_m > 1`.

    * ``"reference"``: :math:`1 - \tanh(\alpha\rho)` (the current official OGM-GE and TPAMI code;
      jumps from 1 to :math:`1-\tanh\alpha` as :math:`\rho` crosses 1);
    * ``"shifted"``: :math:`1 - \tanh(\alpha(\rho - 1))` (OGM-GE's first public commit; continuous);
    * ``"paper"``: :math:`\max(0, 1 - \alpha\tanh(\rho - 1))` (the TPAMI paper as paraphrased).

    A tie (:math:`\rho = 1` exactly) modulates nothing, whatever the modality order (the official
    codes break ties by position, differently from each other).

    Args:
        ratios: modality name -> 0-d ratio (from :func:`discrepancy_ratios`).
        alpha: modulation strength, ``alpha >= 0``.
        coefficient: one of :data:`COEFFICIENTS`.

    Returns:
        modality name -> 0-d coefficient tensor.

    Example:
        >>> import torch
        >>> r = {"audio": torch.tensor(2.2), "visual": torch.tensor(1 / 2.2)}
        >>> k = ogm_coefficients(r, alpha=0.8, coefficient="shifted")
        >>> round(float(k["audio"]), 4), float(k["visual"])
        (0.2557, 1.0)
    """
    if not alpha >= 0:
        raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
    names = list(ratios)
    vector = torch.stack([torch.as_tensor(ratios[name]).reshape(()).float() for name in names])
    return dict(zip(names, _coefficient_vector(vector, float(alpha), coefficient).unbind(0), strict=True))


def _drop_prob_vector(ratios: Tensor, q_base: float, lam: float) -> Tensor:
    """OPM drop probabilities for a ``(M,)`` ratio vector (no checks, no sync)."""
    excess = torch.tanh(torch.relu(ratios - 1.0))
    q = torch.where(excess > 0, q_base * (1.0 + lam * excess), torch.zeros_like(excess))
    return q.clamp(0.0, 1.0)


def opm_drop_probs(ratios: Mapping[str, Tensor], q_base: float = 0.5, lam: float = 0.5) -> dict[str, Tensor]:
    r"""OPM's per-modality drop probability, as in the official TPAMI code.

    .. math:: q_m = \operatorname{clip}\big(q_{base}\,(1 + \lambda\tanh(\operatorname{relu}(\rho_m - 1))), 0, 1\big)
              \text{ if } \rho_m > 1 \text{ else } 0

    so a modality that is not dominant is never dropped.

    Example:
        >>> import torch
        >>> q = opm_drop_probs({"audio": torch.tensor(2.2), "visual": torch.tensor(1 / 2.2)})
        >>> round(float(q["audio"]), 4), float(q["visual"])
        (0.7084, 0.0)
    """
    names = list(ratios)
    vector = torch.stack([torch.as_tensor(ratios[name]).reshape(()).float() for name in names])
    return dict(zip(names, _drop_prob_vector(vector, float(q_base), float(lam)).unbind(0), strict=True))
