"""OPM: on-the-fly prediction modulation, a feature-dropping module placed between encode and fuse.

Reference: Wei, Hu, Du, Wen, "On-the-fly Modulation for Balanced Multimodal Learning", TPAMI
2024 (called ``adam_drop`` in the official code). Deviations from the official code, each
deliberate: features of different widths per modality work (the official code stacks them);
the drop probabilities are computed on the device from detached scores with a dedicated
generator (the official code builds them on the CPU and draws from NumPy's global RNG); the
rescaling can be the official global factor or per-modality inverted dropout; samples that
lose every modality are reported in ``keep`` instead of being removed with a host
synchronisation (use :func:`kept_cross_entropy`); under DDP the scores are all-reduced and
the execution draw is identical on every rank, while the per-sample masks differ per rank.
Named options reproduce the official code bases instead where they differ from these defaults
(``grad_through_theta``, ``ratio``, ``ratio_eps``, ``rescale_eps``; ``modbalance.presets``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modbalance import _distributed
from modbalance.imbalance import RATIO_RULES, RatioRule, _drop_prob_vector, _ratio_vector

__all__ = ["GRAD_THROUGH_THETA", "OPM", "RATIO_MODES", "RESCALE_MODES", "OPMOutput", "kept_cross_entropy"]

Rescale = Literal["reference", "per_modality", "none"]
#: Names accepted by ``OPM(rescale=...)``.
RESCALE_MODES: tuple[str, ...] = ("reference", "per_modality", "none")
RatioMode = Literal["exact", "in_place"]
#: Names accepted by ``OPM(ratio=...)``.
RATIO_MODES: tuple[str, ...] = ("exact", "in_place")
GradThroughTheta = Literal["none", "tpami", "true"]
#: Names accepted by ``OPM(grad_through_theta=...)``.
GRAD_THROUGH_THETA: tuple[str, ...] = ("none", "tpami", "true")


class OPMOutput(NamedTuple):
    """What :class:`OPM` returns.

    Attributes:
        features: modality name -> features of the same shape as the input, with the dropped
            samples' vectors zeroed and the survivors rescaled.
        keep: ``(B,)`` bool, True where the sample still has at least one modality.
        drop_probs: modality name -> 0-d drop probability :math:`q_m` of this step (0 when
            OPM is inactive; the value computed from the scores even when the execution draw
            did not fire).

    Example:
        >>> import torch
        >>> opm = OPM(q_base=0.5, lam=0.5, p_exe=1.0, generator=torch.Generator().manual_seed(0))
        >>> out = opm({"audio": torch.ones(6, 4), "visual": torch.ones(6, 2)},
        ...           {"audio": torch.tensor(3.0), "visual": torch.tensor(1.0)})
        >>> out.features["audio"].shape, out.keep.shape, out.keep.dtype
        (torch.Size([6, 4]), torch.Size([6]), torch.bool)
        >>> sorted(out.drop_probs), out.drop_probs["visual"].shape  # 0-d q per modality
        (['audio', 'visual'], torch.Size([]))
    """

    features: dict[str, Tensor]
    keep: Tensor
    drop_probs: dict[str, Tensor]


def kept_cross_entropy(logits: Tensor, target: Tensor, keep: Tensor) -> Tensor:
    """Cross-entropy averaged over the samples with ``keep`` True, without a host sync.

    Equals ``F.cross_entropy(logits[keep], target[keep])`` (the official code's removal of
    all-dropped samples) when at least one sample is kept, and is 0 (with zero gradients)
    when none is, where the official code skips the step.

    Example:
        >>> import torch
        >>> logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
        >>> keep = torch.tensor([True, False, True, True])
        >>> torch.allclose(kept_cross_entropy(logits, y, keep), F.cross_entropy(logits[keep], y[keep]))
        True
    """
    losses = F.cross_entropy(logits, target, reduction="none")
    weights = keep.to(losses.dtype)
    return (losses * weights).sum() / weights.sum().clamp_min(1.0)


def _score(name: str, value: Tensor | float) -> Tensor:
    """One modality's score as a 0-d tensor; a per-sample vector is refused with a clear message."""
    tensor = torch.as_tensor(value)
    if tensor.numel() != 1:
        raise ValueError(
            f"scores[{name!r}] must be one number per modality (the batch sum from unimodal_scores), "
            f"got a tensor of shape {tuple(tensor.shape)}; per-sample scores: pass their sum"
        )
    return tensor.reshape(())


def _check_scores(names: list[str], flags: list[bool]) -> None:
    """Raise on non-finite (first M flags False) or negative (last M flags False) scores."""
    m = len(names)
    bad = [name for name, ok in zip(names, flags[:m], strict=True) if not ok]
    if bad:
        raise ValueError(f"OPM got non-finite scores for {bad} (NaN or inf): check the uni-modal logits")
    negative = [name for name, ok in zip(names, flags[m:], strict=True) if not ok]
    if negative:
        raise ValueError(f"OPM scores must be non-negative, got negative scores for {negative}")


class _ThetaAsItsOwnGradient(torch.autograd.Function):
    """``1 / (1 - theta + eps)`` whose backward hands ``theta`` itself to ``theta`` (when fired).

    The TPAMI code's ``custom_autograd`` (``GeWu-Lab/BML_TPAMI2024``, ``code/models/Classifier.py``
    lines 9-21) divides the features by ``1 - theta`` with ``theta`` as a constant and returns
    ``theta`` as the gradient of ``theta``, whatever the incoming gradient; that value then flows
    back through the drop probabilities into whatever the scores depend on.
    """

    @staticmethod
    def forward(ctx: Any, theta: Tensor, fired: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(theta, fired)
        return 1.0 / (1.0 - theta.detach() + eps).clamp_min(1e-6)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None]:
        theta, fired = ctx.saved_tensors
        return theta * fired.to(theta.dtype), None, None


def _check_eps(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


class OPM(nn.Module):
    r"""On-the-fly prediction modulation: drop the dominant modality's features per sample.

    Per training step, from the uni-modal scores of the *un-dropped* features:

    1. ratios :math:`\rho_m` (:func:`~modbalance.discrepancy_ratios`, rule ``rule``);
    2. :math:`q_m = q_{base}(1 + \lambda \tanh(\operatorname{relu}(\rho_m - 1)))` if
       :math:`\rho_m > 1`, else 0, clipped to [0, 1]: the weak modality is never dropped;
    3. with probability ``p_exe`` the step "fires"; otherwise features pass unchanged;
    4. when it fires, each sample's whole feature vector of modality m is zeroed with
       probability :math:`q_m`, independently, and the survivors are rescaled:
       ``"reference"`` multiplies every feature by one global :math:`1/(1-\theta)`,
       :math:`\theta = \sum_m d_m q_m / \sum_m d_m` (the official code; :math:`d_m` is the
       feature width), ``"per_modality"`` by :math:`1/(1-q_m)` (inverted dropout), ``"none"``
       not at all.

    Identity in eval mode and outside the inclusive epoch window ``[start_epoch, end_epoch]``.

    Args:
        q_base: base drop probability in [0, 1].
        lam: :math:`\lambda \ge 0`, how fast q grows with the imbalance.
        p_exe: probability that OPM acts on a given step, in [0, 1].
        rescale: ``"reference"``, ``"per_modality"`` or ``"none"``.
        start_epoch: first epoch (inclusive) in which OPM acts, when ``epoch`` is given.
        end_epoch: last epoch (inclusive); ``None`` means no end.
        generator: ``torch.Generator`` on the features' device; ``None`` seeds one from the
            global RNG (rank 0's under DDP) on first use.
        rule: ratio rule for M > 2.
        sync: all-reduce scores across ranks; ``None``: whenever ``torch.distributed`` is initialised.
        delay: apply the drop probabilities computed at the previous step (none at the first),
            as a third-party reading of the paper's Algorithm 1 has it; the official code
            (default, ``False``) applies them in the step that measured them.
        ratio: ``"exact"`` (default) forms every ratio from the measured scores; ``"in_place"``
            reproduces BalanceBenchmark's OPM trainer from its commit ``d7675c1`` (2025-01-12)
            on, which writes each modality's ratio into that modality's score before the next
            modality's ratio is formed (``ratios[m] = scores[m]`` then ``/=``), so the ratios
            after the first use earlier *ratios* in place of scores (see ``docs/methods.md``).
        ratio_eps: added to every ratio's denominator (BalanceBenchmark: ``1e-5``).
        rescale_eps: the rescale becomes :math:`1/(1-\theta+\epsilon)` (BalanceBenchmark: ``1e-5``).
        grad_through_theta: how the loss gradient reaches the scores through the rescale factor.
            ``"none"`` (default): q comes from detached scores and the factor is a constant.
            ``"tpami"``: the TPAMI code's custom autograd function, whose backward returns
            :math:`\theta` itself as :math:`\theta`'s gradient. ``"true"``: the exact
            :math:`\partial L/\partial\theta` (BalanceBenchmark). Both need ``scores`` that
            carry gradient (computed from the features without ``no_grad``), the global
            ``rescale="reference"`` and ``delay=False``.

    Shapes:
        features: modality name -> ``(B, D_m, ...)`` (widths may differ per modality);
        scores: modality name -> 0-d batch sum from :func:`~modbalance.unimodal_scores` (a
        one-element tensor or a number). A per-sample ``(B,)`` tensor is refused rather than
        summed, since it is more often a mistake (logits, or confidences of one class) than a
        score; pass its sum. NaN, infinite or negative scores raise ``ValueError``, as in
        :func:`~modbalance.discrepancy_ratios`; checking costs one host synchronisation per
        active step.

    State: OPM is passed to the model's ``forward``, not owned by it, so ``model.state_dict()``
    does not hold OPM's random streams; save ``opm.state_dict()`` next to the optimizer's state
    (per rank under DDP: the mask streams differ between ranks) and restore it with
    ``load_state_dict`` to continue the same masks. :class:`~modbalance.OGM` has the same pair.

    Example:
        >>> import torch
        >>> opm = OPM(q_base=0.5, lam=0.5, p_exe=1.0, generator=torch.Generator().manual_seed(0))
        >>> feats = {"audio": torch.ones(6, 4), "visual": torch.ones(6, 2)}
        >>> out = opm(feats, {"audio": torch.tensor(4.0), "visual": torch.tensor(1.0)})
        >>> round(float(out.drop_probs["audio"]), 4), float(out.drop_probs["visual"])
        (0.7488, 0.0)
        >>> bool(out.keep.all())  # visual is never dropped, so every sample survives
        True
        >>> _ = opm.eval()  # identity outside training
        >>> same = opm(feats, {"audio": torch.tensor(4.0), "visual": torch.tensor(1.0)}).features
        >>> torch.equal(same["audio"], feats["audio"])
        True
    """

    def __init__(
        self,
        q_base: float = 0.5,
        lam: float = 0.5,
        p_exe: float = 0.7,
        *,
        rescale: Rescale = "reference",
        start_epoch: int = 0,
        end_epoch: int | None = None,
        generator: torch.Generator | None = None,
        rule: RatioRule = "mean_pairwise",
        sync: bool | None = None,
        delay: bool = False,
        ratio: RatioMode = "exact",
        ratio_eps: float = 0.0,
        rescale_eps: float = 0.0,
        grad_through_theta: GradThroughTheta = "none",
    ) -> None:
        super().__init__()
        self.q_base = _check_probability("q_base", q_base)
        self.p_exe = _check_probability("p_exe", p_exe)
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
            raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
        self.lam = float(lam)
        if rescale not in RESCALE_MODES:
            raise ValueError(f"Unknown rescale mode {rescale!r}. Available: {', '.join(RESCALE_MODES)}")
        if rule not in RATIO_RULES:
            raise ValueError(f"Unknown ratio rule {rule!r}. Available: {', '.join(RATIO_RULES)}")
        if start_epoch < 0 or (end_epoch is not None and end_epoch < start_epoch):
            raise ValueError(
                f"need 0 <= start_epoch <= end_epoch, got start_epoch={start_epoch}, end_epoch={end_epoch}"
            )
        if ratio not in RATIO_MODES:
            raise ValueError(f"Unknown ratio mode {ratio!r}. Available: {', '.join(RATIO_MODES)}")
        if grad_through_theta not in GRAD_THROUGH_THETA:
            raise ValueError(
                f"Unknown grad_through_theta {grad_through_theta!r}. Available: {', '.join(GRAD_THROUGH_THETA)}"
            )
        if grad_through_theta != "none" and (rescale != "reference" or delay):
            raise ValueError(
                f"grad_through_theta={grad_through_theta!r} needs rescale='reference' and delay=False, "
                f"got rescale={rescale!r}, delay={delay!r}"
            )
        self.ratio = ratio
        self.ratio_eps = _check_eps("ratio_eps", ratio_eps)
        self.rescale_eps = _check_eps("rescale_eps", rescale_eps)
        self.grad_through_theta = grad_through_theta
        self.rescale = rescale
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.rule = rule
        self.sync = sync
        self.delay = bool(delay)
        self._pending_q: Tensor | None = None
        self.generator = generator
        self._mask_generator: torch.Generator | None = None
        #: 0-d bool tensor: whether the execution draw fired on the last call (no sync to read lazily).
        self.last_fired: Tensor | None = None
        #: Drop probabilities of the last call (0-d tensors), for logging.
        self.last_drop_probs: dict[str, Tensor] = {}

    def active(self, epoch: int | None) -> bool:
        """Whether OPM acts: training mode and ``epoch`` inside the window (``None``: always)."""
        if not self.training:
            return False
        if epoch is None:
            return True
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch <= self.end_epoch)

    def forward(
        self, features: Mapping[str, Tensor], scores: Mapping[str, Tensor], *, epoch: int | None = None
    ) -> OPMOutput:
        """Drop and rescale features; see the class docstring."""
        names = list(features)
        if len(names) < 2:
            raise ValueError(f"OPM needs at least two modalities, got {names}")
        if set(names) != set(scores):
            raise ValueError(f"feature keys {sorted(names)} and score keys {sorted(scores)} do not match")
        batch = next(iter(features.values())).shape[0]
        for name, value in features.items():
            if value.dim() < 2 or value.shape[0] != batch:
                raise ValueError(
                    f"features[{name!r}] must have shape (B, D, ...) with B={batch}, got {tuple(value.shape)}"
                )
        device = features[names[0]].device
        if not self.active(epoch):
            zeros = {name: torch.zeros((), device=device) for name in names}
            self.last_fired = torch.zeros((), dtype=torch.bool, device=device)
            self.last_drop_probs = zeros
            return OPMOutput(dict(features), torch.ones(batch, dtype=torch.bool, device=device), zeros)

        graph = self.grad_through_theta != "none"
        values = [_score(name, scores[name]).to(device) for name in names]
        if graph and not any(value.requires_grad for value in values):
            raise ValueError(
                f"OPM(grad_through_theta={self.grad_through_theta!r}) needs scores that carry gradient "
                "(computed from the features without no_grad); these scores are detached"
            )
        vector = torch.stack([v if v.dtype == torch.float64 else v.float() for v in values])
        if not graph:
            vector = vector.detach()
        if _distributed.resolve_sync(self.sync):
            # The global sum (exact, the same on every rank); with a graph, its gradient reaches
            # this rank's own scores only.
            total = _distributed.all_reduce_sum(vector.detach())
            vector = vector + (total - vector).detach() if graph else total
        # One host synchronisation per active step: non-finite or negative scores are refused,
        # as discrepancy_ratios refuses them (they would silently give q = 0).
        _check_scores(names, torch.cat([torch.isfinite(vector.detach()), vector.detach() >= 0]).tolist())
        q_graph = _drop_prob_vector(self._ratios(vector), self.q_base, self.lam)
        with torch.no_grad():
            q = q_graph.detach()
            if self.delay:
                measured = q
                q = self._pending_q if self._pending_q is not None else torch.zeros_like(measured)
                self._pending_q = measured
            execution, masks = self._generators(device)
            fired = torch.rand((), generator=execution, device=device) < self.p_exe
            keep_masks = torch.rand(len(names), batch, generator=masks, device=device) >= q.unsqueeze(1)
            keep_masks = keep_masks | ~fired
        scale = self._scale(q_graph if graph else q, [features[name].shape[1] for name in names], fired)
        factors = keep_masks.to(scale.dtype) * torch.where(fired, scale, torch.ones_like(scale)).unsqueeze(1)
        out = {}
        for i, name in enumerate(names):
            value = features[name]
            factor = factors[i].to(value.dtype).reshape(batch, *([1] * (value.dim() - 1)))
            out[name] = value * factor
        self.last_fired = fired
        drop_probs = dict(zip(names, q.unbind(0), strict=True))
        self.last_drop_probs = drop_probs
        return OPMOutput(out, keep_masks.any(dim=0), drop_probs)

    def _ratios(self, scores: Tensor) -> Tensor:
        """``(M,)`` ratios, exact or with BalanceBenchmark's in-place overwriting of the scores."""
        if self.ratio == "exact":
            return _ratio_vector(scores, self.rule, self.ratio_eps)
        current, ratios = scores, []
        for m in range(scores.shape[0]):  # one small op per modality, in the modalities' order
            ratio = _ratio_vector(current, self.rule, self.ratio_eps)[m]
            ratios.append(ratio)
            current = torch.cat([current[:m], ratio.reshape(1), current[m + 1 :]])
        return torch.stack(ratios)

    def _scale(self, q: Tensor, widths: list[int], fired: Tensor) -> Tensor:
        """Per-modality rescale factor ``(M,)`` for the survivors of a fired step."""
        if self.rescale == "none":
            return torch.ones_like(q)
        if self.rescale == "per_modality":
            return 1.0 / (1.0 - q + self.rescale_eps).clamp_min(1e-6)
        dims = torch.tensor(widths, dtype=q.dtype, device=q.device)
        theta = (dims * q).sum() / dims.sum()
        if self.grad_through_theta == "tpami":
            return _ThetaAsItsOwnGradient.apply(theta, fired, self.rescale_eps).expand_as(q)
        return (1.0 / (1.0 - theta + self.rescale_eps).clamp_min(1e-6)).expand_as(q)

    def _generators(self, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
        """The execution-draw generator (same on every rank) and the mask generator (per rank)."""
        self.generator = _distributed.shared_generator(self.generator, device, sync=self.sync, owner="OPM")
        if self._mask_generator is None:
            # Seeded from the shared stream plus the rank, so masks differ between ranks while
            # everything stays reproducible from the one user-visible generator.
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator, device=device).item())
            self._mask_generator = torch.Generator(device=device)
            self._mask_generator.manual_seed(seed + _distributed.rank())
        return self.generator, self._mask_generator

    # nn.Module keeps tensors in state_dict; the generators' states travel as extra state.
    def get_extra_state(self) -> dict[str, Any]:
        """Random state of both generators, so that a resumed run draws the same masks."""
        return {
            "generator": None if self.generator is None else self.generator.get_state(),
            "mask_generator": None if self._mask_generator is None else self._mask_generator.get_state(),
            "device": None if self.generator is None else str(self.generator.device),
            "pending_q": None if self._pending_q is None else self._pending_q.cpu(),
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`."""
        if not isinstance(state, Mapping) or {"generator", "mask_generator"} - set(state):
            raise ValueError("OPM extra state must be a mapping with keys 'generator' and 'mask_generator'")
        device = torch.device(state.get("device") or "cpu")
        pending = state.get("pending_q")
        self._pending_q = None if pending is None else pending.to(device)
        for attribute, key in (("generator", "generator"), ("_mask_generator", "mask_generator")):
            value = state[key]
            if value is None:
                setattr(self, attribute, None)
                continue
            generator = torch.Generator(device=device)
            generator.set_state(value)
            setattr(self, attribute, generator)

    def extra_repr(self) -> str:
        return (
            f"q_base={self.q_base}, lam={self.lam}, p_exe={self.p_exe}, rescale={self.rescale!r}, "
            f"window=[{self.start_epoch}, {self.end_epoch}], rule={self.rule!r}, ratio={self.ratio!r}, "
            f"ratio_eps={self.ratio_eps}, rescale_eps={self.rescale_eps}, "
            f"grad_through_theta={self.grad_through_theta!r}"
        )
