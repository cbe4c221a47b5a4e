r"""AGM: adaptive gradient modulation of Shapley mono-modal responses.

Reference: Li, Li, Hu, Lei, Li and Zhou, "Boosting Multi-modal Model Performance with Adaptive
Gradient Modulation", ICCV 2023 (arXiv 2308.07686); official code ``lihong2303/AGM`` at 5a65542
(``model/CREMAD_net.py``, ``model/URFunny_net.py``, ``run/CREMAD_main.py``,
``run/URFunny_main.py``; lines cited below). Formulas and provenance: ``docs/comparison-methods.md``.

Each step runs the model on the batch once more for every proper, non-empty coalition
:math:`S` of modalities, with the other modalities' inputs replaced by zeros and the model in
eval mode (``CREMAD_net.py`` 57-68), keeping the gradients. The mono-modal response of modality
:math:`m` is its Shapley value with :math:`v(\emptyset) = 0`, :math:`v(S)` the logits with only
:math:`S` present and :math:`v(N)` the ordinary training-mode logits:

.. math:: \phi_m = \sum_{S \subseteq N \setminus m} \frac{|S|!\,(M-|S|-1)!}{M!}\,
          \bigl(v(S \cup m) - v(S)\bigr),\qquad \textstyle\sum_m \phi_m = v(N)

(two modalities: :math:`\phi_a = \tfrac12 (v(N) - v(\{v\}) + v(\{a\}))`, ``CREMAD_net.py`` 10-17;
three: ``URFunny_net.py`` 7-31). With :math:`s_m` the batch's mean cross-entropy of
:math:`\phi_m` (probabilities floored at 1e-8), :math:`\bar s` their mean, :math:`r_m` the
running mean of :math:`s_m` over all previous steps and :math:`\bar r` its mean over modalities
(``URFunny_main.py`` 117-134, ``CREMAD_main.py`` 130-157):

.. math:: \rho_m = e^{\frac{M}{M-1}(\bar s - s_m)},\quad
          \rho^*_m = e^{\frac{M}{M-1}(\bar r - r_m)},\quad
          c_m = e^{\alpha \min(\rho^*_m - \rho_m,\ \kappa)}

and the loss is the cross-entropy of :math:`\sum_m \phi_m` (equal to the ordinary logits) with
the gradient reaching each :math:`\phi_m` multiplied by :math:`c_m` (the official backward hooks,
``CREMAD_net.py`` 42-55). After backward, if a weight gradient of the fusion module exceeds
``grad_clip`` in absolute value, the whole gradient is clipped to that norm (``CREMAD_main.py``
233-243).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modbalance.methods.base import METHODS, BalancingMethod, EpochContext, Requirements
from modbalance.model import ModelOutput, MultimodalClassifier

__all__ = ["AGM", "agm_coefficients", "mono_modal_responses", "response_scores"]


def mono_modal_responses(values: Mapping[frozenset[str], Tensor], modalities: Sequence[str]) -> dict[str, Tensor]:
    r"""Shapley mono-modal responses :math:`\phi_m` from the logits of every non-empty coalition.

    Args:
        values: coalition (frozenset of modality names) -> ``(B, C)`` logits with only those
            modalities present; every non-empty subset of ``modalities`` must be there. The empty
            coalition counts as 0 (the official code, ``CREMAD_net.py`` 10-17).
        modalities: the modality names.

    Returns:
        modality name -> ``(B, C)`` response; the responses add up to the full coalition's logits.

    Example:
        >>> import torch
        >>> v = {frozenset("a"): torch.tensor([[1.0]]), frozenset("v"): torch.tensor([[4.0]]),
        ...      frozenset("av"): torch.tensor([[7.0]])}
        >>> phi = mono_modal_responses(v, ["a", "v"])   # a: (7 - 4 + 1) / 2, v: (7 - 1 + 4) / 2
        >>> float(phi["a"]), float(phi["v"])
        (2.0, 5.0)
    """
    count = len(modalities)
    responses: dict[str, Tensor] = {}
    for m in modalities:
        others = [o for o in modalities if o != m]
        total: Tensor | None = None
        for size in range(count):
            weight = math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)
            for subset in itertools.combinations(others, size):
                coalition = frozenset(subset)
                gain = values[coalition | {m}] - values[coalition] if subset else values[coalition | {m}]
                total = weight * gain if total is None else total + weight * gain
        assert total is not None
        responses[m] = total
    return responses


def response_scores(responses: Mapping[str, Tensor], target: Tensor) -> Tensor:
    r"""``(M,)`` batch-mean cross-entropy of each response, probabilities floored at 1e-8, detached, fp32+.

    :math:`s_m = \text{mean}_b\,[-\log \max(\text{softmax}(\phi_m)_{b, y_b}, 10^{-8})]`
    (``CREMAD_main.py`` 130-143), in the order of ``responses``.

    Example:
        >>> import torch
        >>> s = response_scores({"a": torch.zeros(2, 4), "v": torch.tensor([[0.0, -99.0]] * 2)},
        ...                     torch.tensor([0, 1]))
        >>> [round(x, 4) for x in s.tolist()]   # log 4; (0 + 18.4207) / 2 with the 1e-8 floor
        [1.3863, 9.2103]
    """
    scores = []
    for phi in responses.values():
        z = _full(phi.detach())
        p = F.softmax(z, dim=1).gather(1, target.view(-1, 1)).squeeze(1)
        scores.append(-torch.log(p.clamp(min=1e-8)).mean())
    return torch.stack(scores)


def agm_coefficients(scores: Tensor, running: Tensor, alpha: float, ratio_clip: float | None) -> Tensor:
    r"""``(M,)`` modulation coefficients :math:`c_m = e^{\alpha\min(\rho^*_m - \rho_m, \kappa)}`.

    :math:`\rho_m = e^{\frac{M}{M-1}(\bar s - s_m)}` from this batch's ``scores`` and
    :math:`\rho^*_m` the same from the ``running`` means (``URFunny_main.py`` 117-130; two
    modalities: ``CREMAD_main.py`` 145-152); ``ratio_clip`` is :math:`\kappa` (``None``: no clip).

    Example:
        >>> import torch
        >>> c = agm_coefficients(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]), 1.0, None)
        >>> [round(x, 4) for x in c.tolist()]   # exp(1 - e), exp(1 - 1/e)
        [0.1794, 1.8816]
    """
    count = scores.shape[0]
    factor = count / (count - 1)
    ratio = torch.exp(factor * (scores.mean() - scores))
    optimal = torch.exp(factor * (running.mean() - running))
    gap = optimal - ratio
    if ratio_clip is not None:
        gap = gap.clamp(max=ratio_clip)
    return torch.exp(alpha * gap)


def _full(tensor: Tensor) -> Tensor:
    """``tensor`` in at least single precision (half precision is upcast, float64 kept)."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def _scaled_gradient(x: Tensor, scale: Tensor) -> Tensor:
    """``x`` unchanged in value, its gradient multiplied by ``scale`` (the official backward hook)."""
    frozen = x.detach()
    return frozen + scale.to(x.dtype) * (x - frozen)


def _number(value: object, name: str, *, minimum: float, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        expected = f"a finite number >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"method 'agm': {name} must be {expected}, got {value!r}")
    return float(value)


@METHODS.register("agm")
class AGM(BalancingMethod):
    r"""AGM (Li et al., ICCV 2023): Shapley mono-modal responses, their gradients scaled adaptively.

    Works with any fusion (it needs only the model's logits with modalities zeroed). Cost per
    step: :math:`2^M - 2` extra forward passes in eval mode (2 for two modalities), each kept for
    backward, so the backward pass is about :math:`2^M - 1` times the plain one. State: the
    running mean of each modality's response score and the step count (exact resume). DDP (the
    extra passes run outside the wrapper) and gradient accumulation (the coefficients and running
    means are per batch) are refused; bf16 and fp16 run.

    Args:
        alpha: modulation strength :math:`\alpha` (official default 1.0, ``utils/config.py`` 76).
        ratio_clip: upper clip :math:`\kappa` of :math:`\rho^*_m - \rho_m` (10 for CREMA-D,
            ``CREMAD_main.py`` 151; ``None``: no clip, as for AVE and AV-MNIST).
        grad_clip: after backward, if a weight gradient entry of the fusion module exceeds this
            in absolute value, clip the whole gradient's norm to it (1.0 for CREMA-D,
            ``CREMAD_main.py`` 233-243; ``None``: never).
        start_epoch: first epoch (0-based) of modulation.
        end_epoch: last epoch (inclusive); ``None`` means no end. Outside the window the loss is
            plain cross-entropy, with no extra passes.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
        ...                              Concat({"audio": 4, "visual": 3}, num_classes=2))
        >>> agm = AGM(alpha=1.0)
        >>> agm.check(model)
        >>> opt = torch.optim.SGD(agm.param_groups(model, lr=0.1), lr=0.1)
        >>> x, y = {"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)}, torch.randint(0, 2, (8,))
        >>> out = agm.train_forward(model, x, epoch=0)
        >>> agm.loss(model, out, y, epoch=0, inputs=x).backward()   # two extra passes inside
        >>> agm.before_step(model, opt, epoch=0); opt.step(); opt.zero_grad()
        >>> agm.steps, agm.coefficients.shape   # first step: running means were 0
        (1, torch.Size([2]))
    """

    name = "agm"
    requires = Requirements(min_modalities=2, extra_forwards=2, ddp=False, grad_accum=False)
    running_scores: Tensor
    coefficients: Tensor
    coefficient_sum: Tensor

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        ratio_clip: float | None = 10.0,
        grad_clip: float | None = 1.0,
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        self.alpha: float = _number(alpha, "alpha", minimum=0.0) or 0.0
        self.ratio_clip = _number(ratio_clip, "ratio_clip", minimum=-math.inf, allow_none=True)
        self.grad_clip = _number(grad_clip, "grad_clip", minimum=0.0, allow_none=True)
        if self.grad_clip == 0.0:
            raise ValueError("method 'agm': grad_clip must be > 0 or None, got 0.0")
        self.register_buffer("running_scores", torch.empty(0, dtype=torch.float64))
        self.register_buffer("coefficients", torch.empty(0, dtype=torch.float64))
        self.register_buffer("coefficient_sum", torch.empty(0, dtype=torch.float64))
        self.steps = 0
        self._epoch_steps = 0
        self._modalities: list[str] = []

    # ------------------------------------------------------------------ set-up
    def check(self, model: nn.Module, *, held_out: bool = False) -> None:
        """Base checks; creates the running means (one per modality, in the model's order)."""
        super().check(model, held_out=held_out)
        assert isinstance(model, MultimodalClassifier)
        self._bind(model)

    def _bind(self, model: MultimodalClassifier) -> None:
        if self._modalities:
            return
        self._modalities = list(model.modalities)
        reference = next(iter(model.parameters()), None)
        device = reference.device if reference is not None else None
        count = len(self._modalities)
        if self.running_scores.numel() != count:
            self.running_scores = torch.zeros(count, dtype=torch.float64, device=device)
            self.coefficients = torch.ones(count, dtype=torch.float64, device=device)
            self.coefficient_sum = torch.zeros(count, dtype=torch.float64, device=device)

    # ------------------------------------------------------------------ epochs
    def on_epoch_start(self, model: MultimodalClassifier, context: EpochContext) -> None:
        """Reset the epoch's coefficient sums (for logging)."""
        self._bind(model)
        self.coefficient_sum.zero_()
        self._epoch_steps = 0

    def on_epoch_end(self, model: MultimodalClassifier, context: EpochContext) -> dict[str, float]:
        """The epoch's mean coefficient and the running score of each modality (one host sync)."""
        if not self._epoch_steps:
            return {}
        means = (self.coefficient_sum / self._epoch_steps).tolist()
        running = self.running_scores.tolist()
        record = {f"agm_coeff_{m}": c for m, c in zip(self._modalities, means, strict=True)}
        record.update({f"agm_score_{m}": r for m, r in zip(self._modalities, running, strict=True)})
        return record

    # ------------------------------------------------------------------ steps
    def _coalition_logits(
        self, model: MultimodalClassifier, inputs: Mapping[str, Tensor], full: Tensor
    ) -> dict[frozenset[str], Tensor]:
        """Logits of every non-empty coalition: the full one given, the others in eval mode, with grad."""
        values = {frozenset(self._modalities): full}
        modes = [(module, module.training) for module in model.modules()]  # restored one by one (frozen BN)
        model.eval()
        try:
            for size in range(1, len(self._modalities)):
                for subset in itertools.combinations(self._modalities, size):
                    masked = {m: x if m in subset else torch.zeros_like(x) for m, x in inputs.items()}
                    values[frozenset(subset)] = model(masked).logits
        finally:
            for module, mode in modes:
                module.training = mode
        return values

    def compute_loss(
        self,
        model: MultimodalClassifier,
        out: ModelOutput,
        target: Tensor,
        *,
        epoch: int | None = None,
        inputs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Cross-entropy of the summed responses, each response's gradient scaled by its coefficient."""
        if inputs is None:
            raise ValueError(
                "method 'agm' runs the model again with modalities zeroed and needs the batch: "
                "call method.loss(model, out, target, epoch=..., inputs=inputs)"
            )
        self._bind(model)
        responses = mono_modal_responses(self._coalition_logits(model, inputs, out.logits), self._modalities)
        scores = response_scores(responses, target).to(self.running_scores.dtype)
        coefficients = agm_coefficients(scores, self.running_scores, self.alpha, self.ratio_clip)
        self.steps += 1
        self.running_scores.mul_((self.steps - 1) / self.steps).add_(scores / self.steps)
        self.coefficients = coefficients
        self.coefficient_sum += self.coefficients
        self._epoch_steps += 1
        fused = torch.stack(
            [_scaled_gradient(responses[m], self.coefficients[i]) for i, m in enumerate(self._modalities)]
        ).sum(dim=0)
        return F.cross_entropy(_full(fused), target)

    def modify_gradients(
        self, model: MultimodalClassifier, optimizer: torch.optim.Optimizer, *, epoch: int | None = None
    ) -> None:
        """If a fusion weight gradient exceeds ``grad_clip``, clip the total gradient norm to it (no sync)."""
        if self.grad_clip is None:
            return
        watched = [p.grad for p in model.fusion.parameters() if p.grad is not None and p.dim() >= 2]
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not watched or not grads:
            return
        largest = torch.stack([_full(g.detach().abs().amax()) for g in watched]).amax()
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(_full(g.detach())) for g in grads]))
        clip = (self.grad_clip / (norm + 1e-6)).clamp(max=1.0)
        factor = torch.where(largest > self.grad_clip, clip, torch.ones_like(clip))
        torch._foreach_mul_(grads, factor)

    # ------------------------------------------------------------------ resume
    def get_extra_state(self) -> dict[str, Any]:
        """The step counts (the running means and the epoch's coefficient sums are buffers)."""
        return {"steps": self.steps, "epoch_steps": self._epoch_steps}

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self.steps = int(state["steps"])
        self._epoch_steps = int(state["epoch_steps"])

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, ratio_clip={self.ratio_clip}, grad_clip={self.grad_clip}, " + super().extra_repr()
