r"""The plug-in shape every balancing method of :mod:`modbalance.methods` follows.

A method is an ``nn.Module`` (so it moves with ``.to(device)`` and its buffers, parameters and
extra state travel in ``state_dict``) that a training loop calls at fixed points. The order, in
a user's own loop or in the trainer (``modbalance.train``), is::

    method.check(model, held_out=...)                  # once, before training: what it needs
    optimizer = SGD(method.param_groups(model, lr), lr=lr)  # per-group learning rates (MSLR)
    for epoch in range(epochs):
        method.on_epoch_start(model, EpochContext(epoch, forward_split))
        for inputs, target in loader:
            out = method.train_forward(model, inputs, epoch=epoch)     # model(inputs): a ModelOutput
            loss = method.loss(model, out, target, epoch=epoch, inputs=inputs)
            loss.backward()
            method.before_step(model, optimizer, epoch=epoch)          # gradient edits
            optimizer.step(); optimizer.zero_grad()
        stats = method.on_epoch_end(model, EpochContext(epoch, forward_split))
    prediction = method.predict(model, model(test_inputs))              # evaluation logits

Every hook has a harmless default (cross-entropy on the fused logits, no gradient edit, one
parameter group, no epoch work, the fused logits as prediction), so a method overrides only what
it changes. The epoch window (``start_epoch`` to ``end_epoch``, both inclusive, ``None`` = no
end, as for :class:`~modbalance.OGM` and :class:`~modbalance.OPM`) is applied here once:
outside it :meth:`BalancingMethod.loss` is plain cross-entropy and
:meth:`BalancingMethod.before_step` does nothing; subclasses override :meth:`~BalancingMethod.compute_loss`
and :meth:`~BalancingMethod.modify_gradients`, which run only inside the window.

What a method needs from the model and the run is declared once, in its class attribute
``requires`` (:class:`Requirements`), and checked by :meth:`BalancingMethod.check` and
:meth:`BalancingMethod.check_settings` before any training, with an error
(:class:`MethodRequirementError`) that names the method, the missing piece and how to provide it.

``model`` in every hook is the :class:`~modbalance.MultimodalClassifier` itself (never a
``DistributedDataParallel`` wrapper); ``out`` is its :class:`~modbalance.ModelOutput`, whose
``features`` carry gradients and whose ``unimodal_logits`` are detached;
:func:`unimodal_logits_with_grad` gives differentiable per-modality logits for methods that
train them.

Example:
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from torch import nn
    >>> from modbalance import MultimodalClassifier
    >>> from modbalance.fusion import Concat
    >>> class UnimodalBoost(BalancingMethod):  # fused loss + 0.5 * each modality's own loss
    ...     name = "unimodal_boost"
    ...     def compute_loss(self, model, out, target, *, epoch, inputs=None):
    ...         parts = unimodal_logits_with_grad(model, out.features)
    ...         extra = sum(F.cross_entropy(z.float(), target) for z in parts.values())
    ...         return F.cross_entropy(out.logits.float(), target) + 0.5 * extra
    >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
    ...                              Concat({"audio": 4, "visual": 3}, num_classes=2))
    >>> method = UnimodalBoost(start_epoch=1)
    >>> method.check(model)
    >>> optimizer = torch.optim.SGD(method.param_groups(model, lr=0.1), lr=0.1)
    >>> inputs, y = {"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)}, torch.randint(0, 2, (8,))
    >>> out = model(inputs)
    >>> plain = method.loss(model, out, y, epoch=0)      # before the window: cross-entropy
    >>> boosted = method.loss(model, out, y, epoch=1)    # inside it: compute_loss
    >>> bool(boosted > plain)
    True
    >>> boosted.backward(); method.before_step(model, optimizer, epoch=1); optimizer.step()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modbalance.fusion import Concat, Sum
from modbalance.model import ModelOutput, MultimodalClassifier
from modbalance.registry import Registry

__all__ = [
    "METHODS",
    "BalancingMethod",
    "EpochContext",
    "ExtraSamples",
    "MethodRequirementError",
    "Requirements",
    "SplitOutputs",
    "create_method",
    "head_weights",
    "unimodal_logits_with_grad",
]


class MethodRequirementError(ValueError):
    """A method cannot run on this model or with these settings; the message says what to change.

    Example:
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> class TwoOnly(BalancingMethod):
        ...     name = "two_only"
        ...     requires = Requirements(max_modalities=2)
        >>> three = MultimodalClassifier({m: nn.Linear(3, 2) for m in "abc"}, Concat({m: 2 for m in "abc"}, 2))
        >>> try:
        ...     TwoOnly().check(three)
        ... except ValueError as error:
        ...     print(error)
        method 'two_only' is defined for at most 2 modalities; the model has 3 (['a', 'b', 'c']). Train it on ...
    """


@dataclass(frozen=True)
class Requirements:
    """What a method needs from the model, the data and the run (checked before training).

    Attributes:
        min_modalities: fewest modalities the method is defined for.
        max_modalities: most modalities (``None``: any number), e.g. 2 for pairwise rules.
        fusions: names of :data:`modbalance.fusion.FUSIONS` classes the method works with
            (``("Concat", "Sum")`` for methods that need exact linear per-modality heads);
            ``None``: any fusion.
        held_out: needs a held-out split (``EpochContext.forward("val")``), e.g. G-Blending.
        extra_forwards: extra forward passes per step (documentation of the cost; 0 = none).
        ddp: runs under ``DistributedDataParallel`` (several processes).
        amp: runs under bf16/fp16 autocast.
        fp16: with ``amp``, also runs under fp16 and its gradient scaler (``False``: bf16 only);
            the reason goes in ``fp16_unsupported``, e.g. extra gradients taken past the scaler.
        grad_accum: runs with gradient accumulation (several micro-batches per step).
        models: names of the model classes the method runs on (a model passes when one of its
            classes, base classes included, has such a name): the late-fusion
            ``MultimodalClassifier`` by default; ``("InteractionModel",)`` for methods defined on
            the models of :mod:`modbalance.interaction` (e.g. Greedy on ``MMTMNet``).

    Example:
        >>> needs = Requirements(max_modalities=2, fusions=("Concat", "Sum"), ddp=False)
        >>> needs.max_modalities, needs.fusions, needs.held_out, needs.ddp, needs.amp
        (2, ('Concat', 'Sum'), False, False, True)
    """

    min_modalities: int = 2
    max_modalities: int | None = None
    fusions: tuple[str, ...] | None = None
    held_out: bool = False
    extra_forwards: int = 0
    ddp: bool = True
    amp: bool = True
    fp16: bool = True
    fp16_unsupported: str = ""
    grad_accum: bool = True
    models: tuple[str, ...] = ("MultimodalClassifier",)


class SplitOutputs(NamedTuple):
    """A whole split through the model in eval mode, without gradients (all ranks' rows).

    Attributes:
        logits: ``(N, C)`` fused logits.
        unimodal_logits: modality name -> ``(N, C)``.
        features: modality name -> ``(N, D_m)`` encoder outputs.
        target: ``(N,)`` class indices.

    Example:
        >>> import torch
        >>> rows = SplitOutputs(torch.zeros(3, 2), {"a": torch.zeros(3, 2)}, {"a": torch.zeros(3, 4)}, torch.zeros(3))
        >>> rows.features["a"].shape
        torch.Size([3, 4])
    """

    logits: Tensor
    unimodal_logits: dict[str, Tensor]
    features: dict[str, Tensor]
    target: Tensor


@dataclass
class EpochContext:
    """What :meth:`BalancingMethod.on_epoch_start` / ``on_epoch_end`` receive.

    Attributes:
        epoch: the epoch (0-based) that starts or has just ended.
        forward: ``forward(split)`` runs a whole split (``"train"``, ``"val"``) through the model
            in eval mode without gradients and returns :class:`SplitOutputs` (rows in the split's
            order); ``None`` when the loop offers no such pass (methods that need it say so in
            ``requires``).
        batches: optimizer steps in this epoch on this process (``None``: unknown), for methods
            whose schedule is counted in steps.
        reset_optimizer: ``reset_optimizer()`` forgets the optimizer's state (momentum, Adam
            moments), as if a new optimizer with the same hyperparameters were built; for methods
            that train in stages with a fresh optimizer each (``None``: the loop offers none).

    Example:
        >>> import torch
        >>> ctx = EpochContext(3, lambda split: SplitOutputs(torch.zeros(1, 2), {}, {}, torch.zeros(1)), batches=10)
        >>> ctx.epoch, ctx.forward("val").logits.shape, ctx.batches
        (3, torch.Size([1, 2]), 10)
    """

    epoch: int
    forward: Callable[[str], SplitOutputs] | None = None
    batches: int | None = None
    reset_optimizer: Callable[[], None] | None = None


class ExtraSamples(NamedTuple):
    """Extra training samples of one epoch, each with some modalities dropped (:meth:`BalancingMethod.epoch_samples`).

    The loop appends them to the epoch's samples (they are shuffled with the others by the
    epoch's permutation) and passes each batch's rows of ``drop`` to
    :meth:`BalancingMethod.train_forward`, which zeroes those rows' features of those modalities
    before the fusion (``model(inputs, drop=...)``). The original samples keep every modality.

    Attributes:
        indices: ``(K,)`` int64 indices into the training split (repeats allowed).
        drop: modality name -> ``(K,)`` bool, True where that copy's modality is dropped.

    Example:
        >>> import torch
        >>> plan = ExtraSamples(torch.tensor([4, 4, 0]), {"a": torch.tensor([False, True, True]),
        ...                                               "v": torch.tensor([True, False, False])})
        >>> len(plan.indices), plan.drop["a"].sum().item()
        (3, 2)
    """

    indices: Tensor
    drop: dict[str, Tensor]


def head_weights(model: MultimodalClassifier) -> dict[str, tuple[Tensor, Tensor | None]]:
    r"""Each modality's ``(C, D_m)`` block of the linear fusion head and its bias share (or ``None``).

    :class:`~modbalance.fusion.Sum`: modality :math:`m`'s own head, weight :math:`W_m` and full bias
    :math:`b_m`; :class:`~modbalance.fusion.Concat`: the head's columns of modality :math:`m` and
    ``bias * bias_share`` (``1/M`` by default), as in :func:`~modbalance.scores.head_slice`. The
    tensors are views of the parameters (gradients flow into them). Other fusions have no
    per-modality block: :class:`MethodRequirementError`.

    Example:
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> model = MultimodalClassifier({"a": nn.Linear(3, 4), "v": nn.Linear(3, 2)}, Concat({"a": 4, "v": 2}, 5))
        >>> {m: tuple(w.shape) for m, (w, b) in head_weights(model).items()}
        {'a': (5, 4), 'v': (5, 2)}
    """
    fusion = model.fusion
    if isinstance(fusion, Sum):
        heads = {m: cast(nn.Linear, fusion.heads[m]) for m in fusion.modalities}
        return {m: (head.weight, head.bias) for m, head in heads.items()}
    if isinstance(fusion, Concat):
        head = fusion.head
        share = fusion.bias_share if fusion.bias_share is not None else 1.0 / len(fusion.modalities)
        blocks: dict[str, tuple[Tensor, Tensor | None]] = {}
        start = 0
        for m in fusion.modalities:
            width = fusion.dims[m]
            bias = head.bias * share if head.bias is not None else None
            blocks[m] = (head.weight[:, start : start + width], bias)
            start += width
        return blocks
    raise MethodRequirementError(
        f"per-modality logits with gradients need a linear fusion head (concat or sum); "
        f"the model's fusion is {type(fusion).__name__}. Set model.fusion=concat or model.fusion=sum"
    )


def unimodal_logits_with_grad(model: MultimodalClassifier, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    r"""Per-modality ``(B, C)`` logits that keep their gradients (to train on, unlike ``out.unimodal_logits``).

    :math:`z_m = W_m\phi_m + b_m` with the blocks of :func:`head_weights`: for
    :class:`~modbalance.fusion.Sum` each modality's own head, for :class:`~modbalance.fusion.Concat`
    the head's column slice with ``bias * bias_share``, the same decomposition as
    :func:`~modbalance.scores.head_slice`, so the parts add up to the fused logits. Other fusions
    have no exact per-modality head: a :class:`MethodRequirementError` says so (declare
    ``Requirements(fusions=("Concat", "Sum"))``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> model = MultimodalClassifier({"a": nn.Linear(3, 4), "v": nn.Linear(3, 2)}, Concat({"a": 4, "v": 2}, 5))
        >>> out = model({"a": torch.randn(6, 3), "v": torch.randn(6, 3)})
        >>> parts = unimodal_logits_with_grad(model, out.features)
        >>> parts["a"].requires_grad, torch.allclose(parts["a"] + parts["v"], out.logits, atol=1e-6)
        (True, True)
    """
    return {m: F.linear(features[m], weight, bias) for m, (weight, bias) in head_weights(model).items()}


class BalancingMethod(nn.Module):
    """Base class of the balancing methods (see the module docstring for the call order).

    Subclasses set ``name`` (the registry and trainer name, ``method.name=<name>``) and
    ``requires``, take their hyperparameters as keyword arguments (defaults: the authors'
    published settings) plus ``start_epoch``/``end_epoch``, and override the hooks they need:

    * :meth:`train_forward`: the training forward pass (default: ``model(inputs)``);
    * :meth:`compute_loss`: the training loss inside the window (default: cross-entropy);
    * :meth:`modify_gradients`: after ``backward``, before ``optimizer.step`` (default: nothing);
    * :meth:`param_groups`: the optimizer's parameter groups (default: one group of every
      trainable parameter of the model and of the method);
    * :meth:`predict`: the logits evaluation uses (default: ``out.logits``);
    * :meth:`on_epoch_start` / :meth:`on_epoch_end`: per-epoch state updates;
    * ``get_extra_state`` / ``set_extra_state`` (``nn.Module``): Python state for exact resume.

    Args:
        start_epoch: first epoch (0-based) the method acts in.
        end_epoch: last epoch it acts in (inclusive); ``None`` = until the end.

    Example:
        >>> method = BalancingMethod(start_epoch=2, end_epoch=4)
        >>> [method.active(e) for e in range(6)]
        [False, False, True, True, True, False]
        >>> BalancingMethod(start_epoch=3, end_epoch=1)
        Traceback (most recent call last):
        ...
        ValueError: method 'base': end_epoch=1 must be None or >= start_epoch=3
    """

    #: Registry and trainer name.
    name: ClassVar[str] = "base"
    #: What the method needs (checked by :meth:`check` and :meth:`check_settings`).
    requires: ClassVar[Requirements] = Requirements()

    def __init__(self, *, start_epoch: int = 0, end_epoch: int | None = None) -> None:
        super().__init__()
        if not isinstance(start_epoch, int) or isinstance(start_epoch, bool) or start_epoch < 0:
            raise ValueError(f"method {self.name!r}: start_epoch must be an int >= 0, got {start_epoch!r}")
        if end_epoch is not None and (
            not isinstance(end_epoch, int) or isinstance(end_epoch, bool) or end_epoch < start_epoch
        ):
            raise ValueError(
                f"method {self.name!r}: end_epoch={end_epoch!r} must be None or >= start_epoch={start_epoch}"
            )
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch

    # ------------------------------------------------------------------ window and checks
    def active(self, epoch: int | None) -> bool:
        """Whether ``epoch`` is inside the window (``None``: always active)."""
        if epoch is None:
            return True
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch <= self.end_epoch)

    def check(self, model: nn.Module, *, held_out: bool = False) -> None:
        """Check the model (and whether a held-out split exists) against ``requires``.

        Args:
            model: the :class:`~modbalance.MultimodalClassifier` to be trained.
            held_out: whether the loop can run a held-out split (``EpochContext.forward("val")``).

        Raises:
            MethodRequirementError: names the method, the missing piece and how to provide it.
        """
        req = self.requires
        classes = {cls.__name__ for cls in type(model).__mro__}
        if not classes & set(req.models):
            if req.models == ("MultimodalClassifier",):
                raise MethodRequirementError(
                    f"method {self.name!r} needs a modbalance.MultimodalClassifier (encoders + fusion), "
                    f"got {type(model).__name__}; build the model with MultimodalClassifier(encoders, fusion)"
                )
            raise MethodRequirementError(
                f"method {self.name!r} needs a model of class {' or '.join(req.models)}, got {type(model).__name__}"
            )
        modalities = list(cast(list[str], model.modalities))
        if len(modalities) < req.min_modalities:
            raise MethodRequirementError(
                f"method {self.name!r} needs at least {req.min_modalities} modalities; the model has "
                f"{len(modalities)} ({modalities}). Add an encoder per modality, or train method.name=joint"
            )
        if req.max_modalities is not None and len(modalities) > req.max_modalities:
            raise MethodRequirementError(
                f"method {self.name!r} is defined for at most {req.max_modalities} modalities; the model has "
                f"{len(modalities)} ({modalities}). Train it on {req.max_modalities} modalities (drop encoders) "
                "or choose a method defined for more"
            )
        fusion = type(getattr(model, "fusion", None)).__name__
        if req.fusions is not None and fusion not in req.fusions:
            names = ", ".join(name.lower() for name in req.fusions)
            raise MethodRequirementError(
                f"method {self.name!r} needs a fusion with exact per-modality heads ({', '.join(req.fusions)}); "
                f"the model's fusion is {fusion}. Use model.fusion= one of: {names}"
            )
        if req.held_out and not held_out:
            raise MethodRequirementError(
                f"method {self.name!r} needs a held-out split to estimate its weights and none is available; "
                "give the data a validation split (data.val_split) or hold out part of train (data.val_fraction>0)"
            )

    def check_settings(self, *, distributed: bool = False, precision: str = "fp32", grad_accum_steps: int = 1) -> None:
        """Refuse run settings the method does not support (DDP, AMP, gradient accumulation).

        Raises:
            MethodRequirementError: names the method and the setting.

        Example:
            >>> class SingleProcess(BalancingMethod):
            ...     name = "single"
            ...     requires = Requirements(ddp=False)
            >>> SingleProcess().check_settings(distributed=True)
            Traceback (most recent call last):
            ...
            modbalance.methods.base.MethodRequirementError: method 'single' does not support distributed training ...
        """
        req = self.requires
        if distributed and not req.ddp:
            raise MethodRequirementError(
                f"method {self.name!r} does not support distributed training (DDP, several processes); "
                "run it in one process"
            )
        if precision != "fp32" and not req.amp:
            raise MethodRequirementError(
                f"method {self.name!r} does not support mixed precision (train.precision={precision!r}); "
                "use train.precision=fp32"
            )
        if precision == "fp16" and not req.fp16:
            raise MethodRequirementError(
                f"method {self.name!r} does not support fp16 (train.precision='fp16'): {req.fp16_unsupported}; "
                "use train.precision=bf16 or fp32"
            )
        if grad_accum_steps > 1 and not req.grad_accum:
            raise MethodRequirementError(
                f"method {self.name!r} does not support gradient accumulation "
                f"(train.grad_accum_steps={grad_accum_steps}); use train.grad_accum_steps=1 "
                "with a smaller train.batch_size"
            )

    # ------------------------------------------------------------------ hooks
    def param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """The optimizer's parameter groups; ``lr`` is the base learning rate.

        Default: one group with every trainable parameter of ``model`` and of the method itself
        (methods with their own heads or prototypes train them too).
        """
        own = [p for p in self.parameters() if p.requires_grad]
        return [{"params": [p for p in model.parameters() if p.requires_grad] + own}]

    def train_forward(
        self,
        model: nn.Module,
        inputs: Mapping[str, Tensor],
        *,
        epoch: int | None = None,
        drop: Mapping[str, Tensor] | None = None,
    ) -> ModelOutput:
        """The training forward pass of one (micro-)batch; default ``model(inputs)``.

        ``model`` here is what the loop calls (a ``DistributedDataParallel`` wrapper under
        torchrun); methods that train modalities in turns override this. ``drop`` (modality name
        -> ``(B,)`` bool, given only to methods whose :meth:`epoch_samples` planned extra samples)
        marks the rows whose features of that modality are zeroed: ``model(inputs, drop=drop)``.
        """
        if drop is None:
            return model(inputs)  # type: ignore[no-any-return]
        return model(inputs, drop=drop)  # type: ignore[no-any-return]

    def loss(
        self,
        model: MultimodalClassifier,
        out: ModelOutput,
        target: Tensor,
        *,
        epoch: int | None = None,
        inputs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """The scalar training loss: :meth:`compute_loss` inside the window, cross-entropy outside.

        Args:
            model: the classifier that produced ``out``.
            out: its output on this (micro-)batch.
            target: ``(B,)`` class indices.
            epoch: the current epoch (``None``: inside the window).
            inputs: the batch's inputs, for methods that run extra forward passes.
        """
        if self.active(epoch):
            return self.compute_loss(model, out, target, epoch=epoch, inputs=inputs)
        return F.cross_entropy(out.logits.float(), target)

    def compute_loss(
        self,
        model: MultimodalClassifier,
        out: ModelOutput,
        target: Tensor,
        *,
        epoch: int | None = None,
        inputs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Override: the method's loss (default: cross-entropy of the fused logits, in fp32)."""
        return F.cross_entropy(out.logits.float(), target)

    def before_step(
        self, model: MultimodalClassifier, optimizer: torch.optim.Optimizer, *, epoch: int | None = None
    ) -> None:
        """After ``backward()``, before ``optimizer.step()``: :meth:`modify_gradients` inside the window."""
        if self.active(epoch):
            self.modify_gradients(model, optimizer, epoch=epoch)

    def modify_gradients(
        self, model: MultimodalClassifier, optimizer: torch.optim.Optimizer, *, epoch: int | None = None
    ) -> None:
        """Override: edit ``p.grad`` in place (default: nothing)."""

    def predict(self, model: MultimodalClassifier, out: ModelOutput) -> Tensor:
        """The ``(B, C)`` logits the method predicts with (evaluation); default ``out.logits``."""
        return out.logits

    def on_epoch_start(self, model: MultimodalClassifier, context: EpochContext) -> None:
        """Before the epoch's first batch (not again when a run resumes mid-epoch). Default: nothing."""

    def epoch_samples(self, epoch: int) -> ExtraSamples | None:
        """This epoch's extra training samples (:class:`ExtraSamples`), or ``None`` (the default).

        The loop calls it after :meth:`on_epoch_start`, and again when a run resumes mid-epoch
        (without calling :meth:`on_epoch_start`), on every process: it must return the same plan
        from the method's state alone (keep the plan in ``get_extra_state``), and the same plan on
        every rank. (``EpochContext.batches`` in :meth:`on_epoch_start` counts the epoch without
        the extra samples, which are planned after it.)
        """
        return None

    def on_epoch_end(self, model: MultimodalClassifier, context: EpochContext) -> dict[str, float]:
        """After the epoch's last batch, before validation; returns numbers to log. Default: none."""
        return {}

    def extra_repr(self) -> str:
        return f"start_epoch={self.start_epoch}, end_epoch={self.end_epoch}"


#: Balancing methods by trainer name; each builds a :class:`~modbalance.methods.base.BalancingMethod`.
METHODS: Registry[BalancingMethod] = Registry("balancing method")


def create_method(name: str, **options: object) -> BalancingMethod:
    """Build the registered method ``name`` with keyword ``options`` (checked against its signature).

    Raises:
        ValueError: unknown name (the message lists the registered ones).
        TypeError: an option the method does not take (the message lists those it takes).

    Example:
        >>> create_method("mslr", lrs={"audio": 1e-3, "visual": 1e-2}).lrs
        {'audio': 0.001, 'visual': 0.01}
        >>> create_method("mslr", lr={"audio": 1e-3})
        Traceback (most recent call last):
        ...
        TypeError: Balancing method 'mslr' got unexpected argument(s) 'lr'. Accepted: lrs, start_epoch, end_epoch
    """
    return METHODS.create(name, **options)
