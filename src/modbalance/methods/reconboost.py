r"""ReconBoost: modalities trained alone in turn on a boosting loss, each stage followed by a correction.

Reference: Hua, Xu, Bao, Yang and Huang, "ReconBoost: Boosting Can Achieve Modality
Reconcilement", ICML 2024 (arXiv 2405.09321); official code ``huacong/ReconBoost`` at 14ab57a,
``train.py`` and ``models/dynamic_net.py`` (lines cited below). Formulas and provenance:
``docs/comparison-methods.md``.

Training runs in *stages*. Stage :math:`s` picks modality :math:`m = \text{order}[s \bmod M]`
(``schedule.py`` 50-55: audio, visual, audio, ...) and trains its network alone for
``epochs_per_stage`` epochs with a fresh optimizer (``train.py`` 296, 304) on the boosting loss
(``train.py`` 339-340)

.. math:: \ell = \frac{1}{C}\Big(-w_1\, t^\top \log \sigma(z_m) + w_2\, (t \odot \sigma(z_{\text{ens}}))^\top
          \log \sigma(z_m)\Big), \qquad z_{\text{ens}} = \beta \sum_{k \ne m} z_k \ \text{(no gradient)},

averaged over the batch, with :math:`t` the one-hot target, :math:`\sigma` the softmax, :math:`C`
the classes (the official ``.mean(-1)``) and :math:`z_{\text{ens}}` the other modalities' current
logits scaled by the learnable boost rate :math:`\beta` (``dynamic_net.py`` 122-135, computed
under ``torch.no_grad``). Then ``correct_epochs`` epochs of *global correction* train every
modality, the head and :math:`\beta` on :math:`\mathrm{CE}(\beta \sum_k z_k, y)` with another fresh
optimizer (``train.py`` 371-402, ``dynamic_net.py`` 137-170). The prediction is
:math:`\beta \sum_k z_k` (``train.py`` 131).

In the trainer a stage is ``epochs_per_stage + correct_epochs`` epochs; the method derives the
stage from the epoch number, asks the loop to reset the optimizer's state at the start of each
boosting and each correction phase (:attr:`~modbalance.methods.EpochContext.reset_optimizer`),
and keeps the other modalities still during a boosting phase: their gradients are set to ``None``
(optimizers skip such parameters: no weight decay, no momentum), and for
:class:`~modbalance.fusion.Concat`, whose head is one tensor, the other modalities' weight columns
are put back right after the optimizer step.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from modbalance.fusion import Concat, Sum
from modbalance.methods.base import (
    METHODS,
    BalancingMethod,
    EpochContext,
    MethodRequirementError,
    Requirements,
    unimodal_logits_with_grad,
)
from modbalance.model import ModelOutput, MultimodalClassifier

__all__ = ["ReconBoost", "ReconBoostStage", "boosting_loss"]


def boosting_loss(logits: Tensor, ensemble_logits: Tensor, target: Tensor, weight1: float, weight2: float) -> Tensor:
    r"""ReconBoost's boosting loss of one modality against the ensemble of the others (a scalar).

    :math:`\frac{1}{BC}\sum_i (w_2\, \sigma(z_{\text{ens},i})_{y_i} - w_1) \log \sigma(z_{m,i})_{y_i}`,
    the official ``-w1 * (t * log_softmax(z)).mean(-1) + w2 * (t * softmax(z_ens) * log_softmax(z)).mean(-1)``
    averaged over the batch (``train.py`` 339-340, 352), with :math:`C` the number of classes. The
    ensemble logits get no gradient; the loss is computed in fp32 (float64 kept).

    Args:
        logits: ``(B, C)`` logits :math:`z_m` of the modality being trained.
        ensemble_logits: ``(B, C)`` logits :math:`z_{\text{ens}}` of the ensemble of the others.
        target: ``(B,)`` class indices.
        weight1: :math:`w_1` (official 5 on CREMA-D, 4 on AVE and ModelNet40).
        weight2: :math:`w_2` (official 1).

    Example:
        >>> import torch
        >>> z, y = torch.zeros(2, 4), torch.tensor([0, 3])     # uniform: log p_y = log(1/4)
        >>> ens = torch.tensor([[9.0, 0, 0, 0], [0, 0, 0, 0]])  # sure of sample 0, uniform on sample 1
        >>> loss = boosting_loss(z, ens, y, weight1=5.0, weight2=1.0)
        >>> q0 = torch.softmax(ens[0], 0)[0]                     # e^9 / (e^9 + 3)
        >>> expected = ((1.0 * q0 - 5) + (1.0 * 0.25 - 5)) * torch.log(torch.tensor(0.25)) / (2 * 4)
        >>> bool(torch.isclose(loss, expected)), round(float(loss), 4)
        (True, 1.5163)
    """
    z = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    log_p = F.log_softmax(z, dim=1).gather(1, target[:, None]).squeeze(1)
    q = F.softmax(ensemble_logits.detach().to(z.dtype), dim=1).gather(1, target[:, None]).squeeze(1)
    return ((weight2 * q - weight1) * log_p).mean() / z.shape[1]


class ReconBoostStage(NamedTuple):
    """Where an epoch falls in ReconBoost's schedule.

    Attributes:
        number: the stage (0-based), counted from the method's ``start_epoch``.
        modality: the modality trained alone in this epoch; ``None`` in a correction epoch.
        first_epoch: the epoch starts a boosting or a correction phase (a fresh optimizer).

    Example:
        >>> ReconBoostStage(0, "audio", True).modality
        'audio'
    """

    number: int
    modality: str | None
    first_epoch: bool


def _int_option(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"method 'reconboost': {name} must be an int >= {minimum}, got {value!r}")
    return value


def _float_option(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"method 'reconboost': {name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"method 'reconboost': {name} must be > 0, got {value!r}")
    return float(value)


@METHODS.register("reconboost")
class ReconBoost(BalancingMethod):
    r"""ReconBoost (Hua et al., ICML 2024): one modality at a time on a boosting loss, then a global correction.

    Within its window, epoch :math:`e` is epoch :math:`k = e - \text{start\_epoch}` of the schedule;
    stage :math:`s = \lfloor k / (E + E_c) \rfloor` trains ``order[s % M]`` alone in its first
    :math:`E` = ``epochs_per_stage`` epochs and corrects the whole model in the next
    :math:`E_c` = ``correct_epochs``. :meth:`on_epoch_start` resets the optimizer's state at the
    start of each phase, as the official code builds a new optimizer there. The learning rate,
    momentum and weight decay are the run's (``optim.*``; the authors': SGD, lr 0.01, momentum 0.9,
    weight decay 5e-4, ``train.py`` 64-65, 296, 371). Outside the window: the fused cross-entropy,
    every parameter trains.

    Needs: >= 2 modalities, a :class:`~modbalance.fusion.Concat` or :class:`~modbalance.fusion.Sum`
    fusion (exact per-modality logits :math:`z_m`), a loop that offers
    ``EpochContext.reset_optimizer``. Cost per step: the model's forward and backward (a boosting
    step backpropagates through one encoder only), ``M`` small head products. DDP is refused (a
    boosting step leaves the other modalities without gradients); AMP and gradient accumulation
    are supported (the loss is a per-sample mean).

    Args:
        weight1: :math:`w_1` of :func:`boosting_loss` (official ``--weight1 5.0`` on CREMA-D).
        weight2: :math:`w_2` (official ``--weight2 1.0``).
        epochs_per_stage: epochs a modality trains alone per stage (official ``epochs_per_stage=4``).
        correct_epochs: correction epochs after each (official ``correct_epoch=4``); 0 = none.
        boost_rate: initial value of the learnable :math:`\beta` (official ``--boost_rate 1.0``),
            trained in the correction epochs only.
        order: the modalities' turn order (a permutation of the model's modalities); ``None``
            means the model's order (the official order is audio, then visual).
        start_epoch: first epoch (inclusive) of the schedule.
        end_epoch: last epoch (inclusive); ``None`` means no end.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Sum
        >>> from modbalance.methods import EpochContext
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 4)},
        ...                              Sum({"audio": 4, "visual": 4}, num_classes=3))
        >>> method = ReconBoost(epochs_per_stage=1, correct_epochs=1)
        >>> method.check(model)
        >>> [method.stage(e).modality for e in range(4)]         # audio, correct, visual, correct
        ['audio', None, 'visual', None]
        >>> opt = torch.optim.SGD(method.param_groups(model, lr=0.1), lr=0.1, momentum=0.9)
        >>> method.on_epoch_start(model, EpochContext(0, reset_optimizer=opt.state.clear))
        >>> x, y = {"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)}, torch.randint(0, 3, (8,))
        >>> visual_before = model.encoders["visual"].weight.clone()
        >>> method.loss(model, model(x), y, epoch=0).backward()
        >>> method.before_step(model, opt, epoch=0); opt.step()
        >>> torch.equal(model.encoders["visual"].weight, visual_before)   # audio's stage: visual stays
        True
    """

    name = "reconboost"
    requires = Requirements(min_modalities=2, fusions=("Concat", "Sum"), ddp=False)

    def __init__(
        self,
        *,
        weight1: float = 5.0,
        weight2: float = 1.0,
        epochs_per_stage: int = 4,
        correct_epochs: int = 4,
        boost_rate: float = 1.0,
        order: Sequence[str] | None = None,
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        self.weight1 = _float_option("weight1", weight1)
        self.weight2 = _float_option("weight2", weight2)
        self.epochs_per_stage = _int_option("epochs_per_stage", epochs_per_stage, 1)
        self.correct_epochs = _int_option("correct_epochs", correct_epochs, 0)
        self.boost_rate = nn.Parameter(torch.tensor(_float_option("boost_rate", boost_rate, positive=True)))
        if order is not None and (
            isinstance(order, str) or not isinstance(order, Sequence) or not all(isinstance(m, str) for m in order)
        ):
            raise ValueError(f"method 'reconboost': order must be a list of modality names, got {order!r}")
        self.order: list[str] | None = None if order is None else list(order)
        self._order: list[str] = []
        self._other_columns: dict[str, Tensor] = {}
        self._pending_restore: tuple[Tensor, Tensor, Tensor] | None = None
        self._hooked: tuple[weakref.ReferenceType[torch.optim.Optimizer], RemovableHandle] | None = None

    # ------------------------------------------------------------------ set-up
    def check(self, model: nn.Module, *, held_out: bool = False) -> None:
        """Base checks (modalities, fusion) and the turn order against the model's modalities."""
        super().check(model, held_out=held_out)
        assert isinstance(model, MultimodalClassifier)
        self._bind(model)

    def _bind(self, model: MultimodalClassifier) -> None:
        if self._order:
            return
        modalities = list(model.modalities)
        if self.order is not None and sorted(self.order) != sorted(modalities):
            raise MethodRequirementError(
                f"method 'reconboost': order={self.order} must name each of the model's modalities {modalities} "
                "exactly once (method.options.order)"
            )
        self._order = list(self.order) if self.order is not None else modalities

    def stage(self, epoch: int) -> ReconBoostStage:
        """Where ``epoch`` falls in the schedule (call :meth:`check` first).

        Raises:
            ValueError: ``epoch`` is outside the window, or :meth:`check` was not called.
        """
        if not self._order:
            raise ValueError("method 'reconboost': call check(model) before asking for a stage")
        if not self.active(epoch):
            raise ValueError(
                f"method 'reconboost': epoch {epoch} is outside its window "
                f"(start_epoch={self.start_epoch}, end_epoch={self.end_epoch})"
            )
        period = self.epochs_per_stage + self.correct_epochs
        index, position = divmod(epoch - self.start_epoch, period)
        if position < self.epochs_per_stage:
            return ReconBoostStage(index, self._order[index % len(self._order)], position == 0)
        return ReconBoostStage(index, None, position == self.epochs_per_stage)

    def _stage_of(self, model: MultimodalClassifier, epoch: int | None) -> ReconBoostStage:
        if epoch is None:
            raise ValueError("method 'reconboost' trains in stages counted in epochs: pass epoch= to its hooks")
        self._bind(model)
        return self.stage(epoch)

    # ------------------------------------------------------------------ epochs
    def on_epoch_start(self, model: MultimodalClassifier, context: EpochContext) -> None:
        """At the start of a boosting or a correction phase, forget the optimizer's state."""
        if not self.active(context.epoch) or not self._stage_of(model, context.epoch).first_epoch:
            return
        if context.reset_optimizer is None:
            raise MethodRequirementError(
                "method 'reconboost' starts each stage with a fresh optimizer and the loop offers no "
                "EpochContext.reset_optimizer; pass reset_optimizer=optimizer.state.clear"
            )
        context.reset_optimizer()

    def on_epoch_end(self, model: MultimodalClassifier, context: EpochContext) -> dict[str, float]:
        """Log the stage, the modality trained (its position in ``order``; -1: correction) and the boost rate."""
        if not self.active(context.epoch):
            return {}
        stage = self._stage_of(model, context.epoch)
        trained = -1.0 if stage.modality is None else float(self._order.index(stage.modality))
        return {"stage": float(stage.number), "modality": trained, "boost_rate": float(self.boost_rate.detach())}

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
        """Boosting epoch: :func:`boosting_loss` of the stage's modality; correction: CE of ``beta * logits``."""
        stage = self._stage_of(model, epoch)
        if stage.modality is None:
            return F.cross_entropy(self.boost_rate * out.logits.float(), target)
        parts = unimodal_logits_with_grad(model, out.features)
        others = torch.stack([parts[m].detach() for m in self._order if m != stage.modality]).sum(dim=0)
        return boosting_loss(
            parts[stage.modality], self.boost_rate.detach() * others.float(), target, self.weight1, self.weight2
        )

    def modify_gradients(
        self, model: MultimodalClassifier, optimizer: torch.optim.Optimizer, *, epoch: int | None = None
    ) -> None:
        """Boosting epoch: free every gradient but the stage modality's (encoder and head block)."""
        stage = self._stage_of(model, epoch)
        if stage.modality is None:
            return
        m = stage.modality
        keep = {id(p) for p in model.encoders[m].parameters()}
        fusion = model.fusion
        if isinstance(fusion, Sum):
            keep |= {id(p) for p in fusion.heads[m].parameters()}
        elif isinstance(fusion, Concat):
            keep |= {id(p) for p in fusion.head.parameters()}
            self._hold_other_columns(fusion, m, optimizer)
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in keep:
                    p.grad = None

    def _hold_other_columns(self, fusion: Concat, modality: str, optimizer: torch.optim.Optimizer) -> None:
        """Zero the other modalities' weight-column gradients; put the columns back after the step."""
        weight = fusion.head.weight
        columns = self._other_columns.get(modality)
        if columns is None or columns.device != weight.device:
            index: list[int] = []
            start = 0
            for name in fusion.modalities:
                width = fusion.dims[name]
                if name != modality:
                    index.extend(range(start, start + width))
                start += width
            columns = torch.tensor(index, dtype=torch.long, device=weight.device)
            self._other_columns[modality] = columns
        if weight.grad is not None:
            weight.grad.index_fill_(1, columns, 0.0)
        self._pending_restore = (weight, columns, weight.detach().index_select(1, columns))
        hooked = self._hooked
        if hooked is None or hooked[0]() is not optimizer:
            if hooked is not None:
                hooked[1].remove()
            handle = optimizer.register_step_post_hook(self._restore_columns)
            self._hooked = (weakref.ref(optimizer), handle)

    def _restore_columns(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Optimizer step post-hook: undo the step (weight decay, momentum) on the held columns."""
        pending, self._pending_restore = self._pending_restore, None
        if pending is not None:
            weight, columns, values = pending
            with torch.no_grad():
                weight.index_copy_(1, columns, values)

    def predict(self, model: MultimodalClassifier, out: ModelOutput) -> Tensor:
        """The ensemble's logits :math:`\\beta \\sum_k z_k` (``train.py`` 131)."""
        return self.boost_rate.detach().to(out.logits.dtype) * out.logits

    def extra_repr(self) -> str:
        return (
            f"weight1={self.weight1}, weight2={self.weight2}, epochs_per_stage={self.epochs_per_stage}, "
            f"correct_epochs={self.correct_epochs}, order={self.order}, " + super().extra_repr()
        )
