r"""InfoReg: slow the information-sufficient modality down during the prime learning window.

Reference: Huang, Wei, Yang and Hu, "Adaptive Unimodal Regulation for Balanced Multimodal
Information Acquisition", CVPR 2025; official code ``GeWu-Lab/InfoReg_CVPR2025`` ``main.py``
(lines cited below). Formulas and provenance: ``docs/comparison-methods.md``.

Per step, with head-slice uni-modal logits :math:`z_m` (the fused linear head's columns of
modality m, ``bias / 2``; ``main.py`` 361-363), the loss is
:math:`L = L_{mm} + \sum_m \mathrm{CE}(z_m, y)` (378-380, 456-458) and the uni-modal scores are
batch sums :math:`s_m = \sum_i \mathrm{softmax}(z_m)_{i, y_i}` (460-461). With the epoch's
window indicator :math:`k` (below), the stronger modality :math:`d = \arg\max_m s_m` gets

.. math:: \beta_d = c_d \exp(\tanh(|s_1 - s_2|)) \quad\text{if } k > 0.05,

:math:`c = (0.95, 0.1)` for (first, second) modality (465-485), and its encoder's gradients
become :math:`g + \beta_d (\theta - \theta_{\text{epoch start}})` (259, 489-495), a proximal pull
towards the parameters it had when the epoch began. The window indicator is the relative growth
of the first modality's Fisher-information trace: per epoch :math:`T = \sum_\ell
\mathrm{mean}(\sum_{\text{steps}} g_\ell^2)` over the encoder's conv/linear weights (after the
proximal term; 507-514, 569-572, 595), a history padded with ten zeros (693-694),
:math:`\bar T_1, \bar T_2` the sums of the last ten and of the ten before the last, over 10, and
:math:`k = (\bar T_1 - \bar T_2) / \bar T_1`, :math:`k = 1` in epoch 0 (237-243).

Deviations, each deliberate: encoders are given explicitly (the official code matches parameter
names), conv layers of any dimension count in the trace (the official model has 2-D convs only),
:math:`\bar T_1 = 0` gives :math:`k = 0` (the official code divides by zero), and the scores and
:math:`\beta` stay on the device (no host synchronisation per step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modbalance.methods.base import (
    METHODS,
    BalancingMethod,
    EpochContext,
    MethodRequirementError,
    Requirements,
    unimodal_logits_with_grad,
)
from modbalance.model import ModelOutput, MultimodalClassifier

__all__ = ["InfoReg", "inforeg_window"]


def inforeg_window(traces: list[float], window: int = 10) -> float:
    r"""InfoReg's window indicator :math:`k` from a zero-padded history of per-epoch traces.

    :math:`\bar T_1 = \sum(\text{last } w)/w`, :math:`\bar T_2 = \sum(\text{the } w \text{ before
    the last})/w`, :math:`k = (\bar T_1 - \bar T_2)/\bar T_1` (``main.py`` 240-243); 0 when
    :math:`\bar T_1 = 0`.

    Example:
        >>> inforeg_window([0.0] * 10 + [4.0])          # first trace: k = 1
        1.0
        >>> round(inforeg_window([0.0] * 10 + [4.0, 1.0]), 6)  # growth slows: k = 1 / 5
        0.2
    """
    recent = sum(traces[-window:]) / window
    before = sum(traces[-window - 1 : -1]) / window
    if recent == 0:
        return 0.0
    return (recent - before) / recent


def _full(tensor: Tensor) -> Tensor:
    """``tensor`` in at least single precision (half precision is upcast, float64 kept)."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def _trace_layers(encoder: nn.Module) -> list[Tensor]:
    """Weights of the encoder's conv and linear layers (what the official FIM trace sums over)."""
    return [
        module.weight
        for module in encoder.modules()
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and module.weight.requires_grad
    ]


@METHODS.register("inforeg")
class InfoReg(BalancingMethod):
    r"""InfoReg (Huang, Wei, Yang and Hu, CVPR 2025): proximal regulation of the stronger modality.

    Needs: exactly two modalities, a concat or sum fusion (head-slice uni-modal logits), trainable
    encoders. Cost per step: no extra forward or backward pass; one copy of the encoder
    parameters (the epoch-start anchor) and one of the conv/linear weights (the Fisher trace).

    Args:
        strengths: :math:`(c_1, c_2)`, the regulation factor of the first and second modality in
            the model's order (official 0.95 for audio, 0.1 for visual, ``main.py`` 468, 476).
        threshold: regulate only while :math:`k` exceeds it (official 0.05, 465).
        window: epochs averaged in the trace growth (official 10, 240-241).
        window_modality: whose trace defines :math:`k`; ``None`` is the first modality (the
            official code uses audio, its first).
        start_epoch: first epoch (inclusive) of the method's window.
        end_epoch: last epoch (inclusive); ``None`` means no end.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> from modbalance.methods.base import EpochContext
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
        ...                              Concat({"audio": 4, "visual": 3}, num_classes=2))
        >>> method = InfoReg()
        >>> method.check(model)
        >>> opt = torch.optim.SGD(method.param_groups(model, lr=0.1), lr=0.1)
        >>> method.on_epoch_start(model, EpochContext(0))
        >>> x, y = {"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)}, torch.randint(0, 2, (8,))
        >>> method.loss(model, model(x), y, epoch=0).backward()
        >>> method.before_step(model, opt, epoch=0); opt.step(); opt.zero_grad()
        >>> stats = method.on_epoch_end(model, EpochContext(0))
        >>> sorted(stats), method.k
        (['inforeg_k', 'inforeg_trace_audio', 'inforeg_trace_visual'], 1.0)
    """

    name = "inforeg"
    requires = Requirements(
        min_modalities=2,
        max_modalities=2,
        fusions=("Concat", "Sum"),
        ddp=False,
        fp16=False,
        fp16_unsupported="the gradient scaler's skipped steps carry non-finite gradients into the Fisher trace",
    )

    def __init__(
        self,
        *,
        strengths: tuple[float, float] | list[float] = (0.95, 0.1),
        threshold: float = 0.05,
        window: int = 10,
        window_modality: str | None = None,
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        values = list(strengths) if isinstance(strengths, (tuple, list)) else []
        if len(values) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values
        ):
            raise ValueError(f"method 'inforeg': strengths must be two finite numbers >= 0, got {strengths!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ValueError(f"method 'inforeg': threshold must be a finite number, got {threshold!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"method 'inforeg': window must be an int >= 1, got {window!r}")
        self.strengths = (float(values[0]), float(values[1]))
        self.threshold = float(threshold)
        self.window = window
        self.window_modality = window_modality
        #: Per-epoch Fisher traces of each modality, zero-padded as the official lists.
        self.traces: dict[str, list[float]] = {}
        #: The current epoch's window indicator k.
        self.k = 1.0
        self._anchor: dict[str, list[Tensor]] = {}
        self._fim: dict[str, list[Tensor]] = {}
        self._scores: Tensor | None = None
        self._modalities: list[str] = []
        #: ``(2,)`` regulation factors beta of the last step, on the device.
        self.last_betas: Tensor | None = None

    # ------------------------------------------------------------------ set-up
    def check(self, model: nn.Module, *, held_out: bool = False) -> None:
        """Base checks, trainable encoders, a known ``window_modality``."""
        super().check(model, held_out=held_out)
        assert isinstance(model, MultimodalClassifier)
        self._bind(model)

    def _bind(self, model: MultimodalClassifier) -> None:
        self._modalities = list(model.modalities)
        for m, params in model.modality_parameters().items():
            if not any(p.requires_grad for p in params):
                raise MethodRequirementError(
                    f"method 'inforeg' regulates the encoders' parameters, but the {m!r} encoder has no trainable "
                    "parameter; unfreeze it or choose another method"
                )
        if self.window_modality is not None and self.window_modality not in self._modalities:
            raise MethodRequirementError(
                f"method 'inforeg': window_modality={self.window_modality!r} is not one of the model's modalities "
                f"{self._modalities}; set method.options.window_modality to one of them (or leave it unset)"
            )
        for m in self._modalities:
            self.traces.setdefault(m, [0.0] * self.window)

    @property
    def _window_modality(self) -> str:
        return self.window_modality if self.window_modality is not None else self._modalities[0]

    # ------------------------------------------------------------------ epochs
    def on_epoch_start(self, model: MultimodalClassifier, context: EpochContext) -> None:
        """Compute ``k`` from the trace history; anchor the encoders; reset the Fisher sums."""
        self._bind(model)
        self.k = 1.0 if context.epoch == 0 else inforeg_window(self.traces[self._window_modality], self.window)
        encoders = model.encoders
        self._anchor = {m: [p.detach().clone() for p in encoders[m].parameters()] for m in self._modalities}
        self._fim = {m: [torch.zeros_like(w) for w in _trace_layers(encoders[m])] for m in self._modalities}

    def on_epoch_end(self, model: MultimodalClassifier, context: EpochContext) -> dict[str, float]:
        """Append each modality's Fisher trace of the epoch; return ``k`` and the traces."""
        stats = {"inforeg_k": float(self.k)}
        for m in self._modalities:
            sums = self._fim.get(m, [])
            trace = float(torch.stack([f.mean() for f in sums]).sum()) if sums else 0.0
            self.traces[m].append(trace)
            stats[f"inforeg_trace_{m}"] = trace
        return stats

    # ------------------------------------------------------------------ steps
    def compute_loss(
        self,
        model: MultimodalClassifier,
        out: ModelOutput,
        target: Tensor,
        *,
        epoch: int | None = None,
        inputs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        r""":math:`L_{mm} + \sum_m \mathrm{CE}(z_m, y)`; adds this micro-batch's score sums."""
        parts = unimodal_logits_with_grad(model, out.features)
        losses = [F.cross_entropy(_full(out.logits), target)]
        losses += [F.cross_entropy(_full(parts[m]), target) for m in self._modalities]
        with torch.no_grad():
            scores = torch.stack(
                [
                    F.softmax(_full(parts[m].detach()), dim=1).gather(1, target.view(-1, 1)).sum()
                    for m in self._modalities
                ]
            )
            self._scores = scores if self._scores is None else self._scores + scores
        return torch.stack(losses).sum()

    @torch.no_grad()
    def modify_gradients(
        self, model: MultimodalClassifier, optimizer: torch.optim.Optimizer, *, epoch: int | None = None
    ) -> None:
        """Add the proximal term to the stronger modality's encoder gradients; add to the Fisher sums."""
        if self._scores is None:
            return
        scores, self._scores = self._scores, None
        if not self._anchor:  # a loop that never called on_epoch_start: anchor now
            self.on_epoch_start(model, EpochContext(0 if epoch is None else epoch))
        gate = 1.0 if self.k > self.threshold else 0.0  # k is a Python float: no sync
        factor = torch.exp(torch.tanh((scores[0] - scores[1]).abs())) * gate
        strengths = scores.new_tensor(self.strengths)
        stronger = torch.stack([scores[0] > scores[1], scores[1] > scores[0]]).to(scores.dtype)
        betas = strengths * factor * stronger
        self.last_betas = betas
        for i, m in enumerate(self._modalities):
            for p, anchor in zip(model.encoders[m].parameters(), self._anchor[m], strict=True):
                if not p.requires_grad:
                    continue
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad.add_(betas[i].to(p.dtype) * (p.detach() - anchor))
            for fim, weight in zip(self._fim[m], _trace_layers(model.encoders[m]), strict=True):
                if weight.grad is not None:
                    fim.add_(weight.grad * weight.grad)

    # ------------------------------------------------------------------ resume
    def get_extra_state(self) -> dict[str, Any]:
        """Traces, ``k``, the epoch-start anchor and the Fisher sums (exact mid-epoch resume)."""
        return {
            "traces": {m: list(v) for m, v in self.traces.items()},
            "k": self.k,
            "anchor": {m: [t.clone() for t in v] for m, v in self._anchor.items()},
            "fim": {m: [t.clone() for t in v] for m, v in self._fim.items()},
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self.traces = {m: list(v) for m, v in state["traces"].items()}
        self.k = float(state["k"])
        self._anchor = {m: list(v) for m, v in state["anchor"].items()}
        self._fim = {m: list(v) for m, v in state["fim"].items()}

    def extra_repr(self) -> str:
        return f"strengths={self.strengths}, threshold={self.threshold}, window={self.window}, " + super().extra_repr()
