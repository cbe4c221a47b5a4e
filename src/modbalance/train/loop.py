"""The training step, the non-finite guard, evaluation and feature extraction.

The step is the recipe a user would write with the public API (and may copy)::

    out = model(inputs, opm=opm, scores=lambda z: unimodal_scores(z, y), epoch=epoch)
    loss = kept_cross_entropy(out.logits, y, out.keep)          # F.cross_entropy without OPM
    scaler.scale(loss).backward()                                # plain backward without fp16
    ogm.modulate(out.unimodal_logits, y, epoch=epoch, scaler=scaler, optimizer=optimizer)
    scaler.step(optimizer); scaler.update()

With gradient accumulation the batch is split into micro-batches; OGM receives every
micro-batch but the last through ``accumulate`` and modulates once, on the last, so ``k`` comes
from the whole batch's scores. Nothing here synchronises with the host, except what the methods
themselves cost: one synchronisation in ``OGM.modulate`` and, with OPM, one in
``unimodal_scores``' input checks (a constant two per step at most).

A method of :mod:`modbalance.methods` runs through its hooks instead (:func:`method_step`)::

    out = method.train_forward(model, x, epoch=epoch)             # model(x)
    loss = method.loss(core, out, y, epoch=epoch, inputs=x)       # cross-entropy outside its window
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)                                     # fp16 only: edits see true gradients
    method.before_step(core, optimizer, epoch=epoch)
    scaler.step(optimizer); scaler.update()
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modbalance.imbalance import discrepancy_ratios, unimodal_scores
from modbalance.methods import BalancingMethod, SplitOutputs
from modbalance.metrics import EpochSums, classification_metrics, true_class_confidence
from modbalance.model import ModelOutput, MultimodalClassifier
from modbalance.opm import kept_cross_entropy
from modbalance.train.build import Methods
from modbalance.train.data import DataBundle, iterate_batches
from modbalance.train.distributed import DistributedContext, ShardedBatchSampler, gather_objects

__all__ = [
    "NonFiniteLossError",
    "NonFiniteWatch",
    "StepParts",
    "evaluate",
    "extract_features",
    "forward_split",
    "method_step",
    "train_step",
]

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """Training produced a non-finite loss; the message names the step, the epoch and the last finite metrics.

    Example:
        >>> import tempfile
        >>> from modbalance.train import load_config, run
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     try:
        ...         run(load_config("lab/tiny", ["optim.lr=1e30", f"output_dir={tmp}"]))
        ...     except RuntimeError as error:
        ...         print(type(error).__name__, str(error)[:40])
        NonFiniteLossError non-finite loss at step 2 (epoch 0); tra
    """


@dataclass
class StepParts:
    """Everything one optimizer step touches.

    Attributes:
        model: the model the step calls (a ``DistributedDataParallel`` wrapper under torchrun).
        core: the :class:`~modbalance.MultimodalClassifier` itself.
        optimizer: the optimizer.
        scaler: a ``torch.amp.GradScaler`` for fp16, else ``None``.
        methods: OGM and OPM (either may be ``None``), or a registered method.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        grad_accum_steps: micro-batches per optimizer step.
    """

    model: nn.Module
    core: MultimodalClassifier
    optimizer: torch.optim.Optimizer
    scaler: Any
    methods: Methods
    precision: str
    grad_accum_steps: int

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """Autocast for bf16/fp16, nothing for fp32."""
        return autocast(self.precision, device)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for ``"bf16"``/``"fp16"`` on ``device``, a no-op context for ``"fp32"``."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class NonFiniteWatch:
    """Remembers, on the device, the first step whose loss was not finite; checked periodically.

    Args:
        device: the training device.
        last_record: the last finished epoch's record (named in the error), or None.
    """

    def __init__(self, device: torch.device, last_record: Mapping[str, Any] | None = None) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.last_record = last_record

    def update(self, loss: Tensor, step: int) -> None:
        """Record ``step`` if ``loss`` is not finite and nothing was recorded yet (no sync)."""
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)

    def check(self, epoch: int) -> None:
        """Raise :class:`NonFiniteLossError` if a non-finite loss was seen (one sync)."""
        step = int(self.first_bad)
        if step >= 0:
            raise non_finite_error(step, epoch, self.last_record)


def non_finite_error(
    step: int, epoch: int, last_record: Mapping[str, Any] | None, *, subject: str = "loss"
) -> NonFiniteLossError:
    """The error for a non-finite ``subject`` (loss, weights) at global ``step`` of ``epoch``."""
    if last_record:
        shown = {k: round(v, 6) if isinstance(v, float) else v for k, v in last_record.items()}
        last = f"last finite metrics (epoch {last_record.get('epoch')}): {shown}"
    else:
        last = "no epoch had finished yet, so there are no finite metrics to show"
    return NonFiniteLossError(
        f"non-finite {subject} at step {step} (epoch {epoch}); training stopped. "
        f"{last}. Lower optim.lr, or check the data for NaN/inf."
    )


def _micro_batches(
    inputs: Mapping[str, Tensor], target: Tensor, parts: int
) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
    chunks = min(parts, target.shape[0])
    split_inputs = {m: torch.tensor_split(x, chunks) for m, x in inputs.items()}
    for i, y in enumerate(torch.tensor_split(target, chunks)):
        yield {m: pieces[i] for m, pieces in split_inputs.items()}, y


def _guarded(
    call: Callable[[], Any], logits: Mapping[str, Tensor], step: int, epoch: int, watch: NonFiniteWatch
) -> Any:
    """Run a method call; a ValueError caused by non-finite logits becomes NonFiniteLossError."""
    try:
        return call()
    except ValueError:
        if not all(bool(torch.isfinite(z).all()) for z in logits.values()):
            raise non_finite_error(step, epoch, watch.last_record) from None
        raise


def _backward_micro_batches(
    parts: StepParts,
    inputs: Mapping[str, Tensor],
    target: Tensor,
    forward: Callable[[dict[str, Tensor], Tensor, int], tuple[ModelOutput, Tensor]],
    after: Callable[[ModelOutput, Tensor, Tensor, bool], None],
    *,
    step: int,
    watch: NonFiniteWatch,
) -> None:
    """Forward and backward every micro-batch of ``(inputs, target)``; the optimizer step is the caller's.

    ``forward(x, y, i)`` returns micro-batch ``i``'s output and loss (under autocast); its loss is
    weighted by the micro-batch's share of the batch, scaled for fp16, and back-propagated with
    DDP's gradient all-reduce held back until the last micro-batch. ``after(out, loss, y, last)``
    then records what the step needs (metrics, OGM's accumulated scores).
    """
    device = target.device
    micro = list(_micro_batches(inputs, target, parts.grad_accum_steps))
    no_sync = getattr(parts.model, "no_sync", None)
    for i, (x, y) in enumerate(micro):
        last = i == len(micro) - 1
        with no_sync() if (no_sync is not None and not last) else contextlib.nullcontext():
            with parts.autocast(device):
                out, loss = forward(x, y, i)
            scaled = loss * (y.shape[0] / target.shape[0])
            (parts.scaler.scale(scaled) if parts.scaler is not None else scaled).backward()
        watch.update(loss, step)
        after(out, loss, y, last)


def _optimizer_step(parts: StepParts) -> None:
    """``optimizer.step()`` (through the fp16 scaler when there is one), then clear the gradients."""
    if parts.scaler is not None:
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        parts.optimizer.step()
    parts.optimizer.zero_grad(set_to_none=True)


def train_step(
    parts: StepParts,
    inputs: Mapping[str, Tensor],
    target: Tensor,
    *,
    epoch: int,
    step: int,
    sums: EpochSums,
    watch: NonFiniteWatch,
    drop: Mapping[str, Tensor] | None = None,
) -> None:
    """One optimizer step over the batch ``(inputs, target)`` (split into micro-batches).

    ``drop``: modality name -> ``(B,)`` bool rows whose features are zeroed (a method's
    :class:`~modbalance.methods.ExtraSamples`), passed to the method's ``train_forward``.
    """
    if parts.methods.method is not None:
        method_step(
            parts, parts.methods.method, inputs, target, epoch=epoch, step=step, sums=sums, watch=watch, drop=drop
        )
        return
    if drop is not None:
        raise ValueError("train_step(drop=...) needs a balancing method (its epoch_samples plan)")
    ogm, opm = parts.methods.ogm, parts.methods.opm
    last_batch: list[tuple[ModelOutput, Tensor]] = []

    def forward(x: dict[str, Tensor], y: Tensor, i: int) -> tuple[ModelOutput, Tensor]:
        if opm is None:
            out = parts.model(x)
            return out, F.cross_entropy(out.logits.float(), y)
        scores = lambda z: _guarded(lambda: unimodal_scores(z, y), z, step, epoch, watch)  # noqa: E731
        out = parts.model(x, opm=opm, scores=scores, epoch=epoch)
        return out, kept_cross_entropy(out.logits.float(), y, out.keep)

    def after(out: ModelOutput, loss: Tensor, y: Tensor, last: bool) -> None:
        sums.add_batch(loss, out.logits, out.unimodal_logits, y)
        if opm is not None:
            sums.add_drop_probs(out.drop_probs)  # zeros outside OPM's window
        if ogm is not None and not last:
            ogm.accumulate(out.unimodal_logits, y)
        if last:
            last_batch.append((out, y))

    _backward_micro_batches(parts, inputs, target, forward, after, step=step, watch=watch)
    if ogm is not None:
        out, y = last_batch[0]
        coefficients = _guarded(
            lambda: ogm.modulate(out.unimodal_logits, y, epoch=epoch, scaler=parts.scaler, optimizer=parts.optimizer),
            out.unimodal_logits,
            step,
            epoch,
            watch,
        )
        sums.add_coefficients(coefficients)
    _optimizer_step(parts)


def method_step(
    parts: StepParts,
    method: BalancingMethod,
    inputs: Mapping[str, Tensor],
    target: Tensor,
    *,
    epoch: int,
    step: int,
    sums: EpochSums,
    watch: NonFiniteWatch,
    drop: Mapping[str, Tensor] | None = None,
) -> None:
    """One optimizer step of a :class:`~modbalance.methods.BalancingMethod` through its hooks.

    ``drop`` (modality name -> ``(B,)`` bool) is split into the same micro-batches as the batch
    and given to ``method.train_forward``.

    The loss of each micro-batch is weighted by its share of the batch; the gradient hook runs
    once, after the last micro-batch (methods that need the whole batch in one piece refuse
    gradient accumulation in their ``requires``). Under fp16 the gradients are unscaled before
    the hook, so that gradient edits see true values.
    """

    drops: list[dict[str, Tensor]] | None = None
    if drop is not None:
        chunks = min(parts.grad_accum_steps, target.shape[0])  # the split of _micro_batches
        pieces = {m: torch.tensor_split(d, chunks) for m, d in drop.items()}
        drops = [{m: p[i] for m, p in pieces.items()} for i in range(chunks)]

    def forward(x: dict[str, Tensor], y: Tensor, i: int) -> tuple[ModelOutput, Tensor]:
        if drops is None:
            out = method.train_forward(parts.model, x, epoch=epoch)
        else:
            out = method.train_forward(parts.model, x, epoch=epoch, drop=drops[i])
        return out, method.loss(parts.core, out, y, epoch=epoch, inputs=x)

    def after(out: ModelOutput, loss: Tensor, y: Tensor, last: bool) -> None:
        with torch.no_grad():
            logits = method.predict(parts.core, out)
        sums.add_batch(loss.detach(), logits, out.unimodal_logits, y)

    _backward_micro_batches(parts, inputs, target, forward, after, step=step, watch=watch)
    if parts.scaler is not None:
        parts.scaler.unscale_(parts.optimizer)
    method.before_step(parts.core, parts.optimizer, epoch=epoch)
    _optimizer_step(parts)


def _gather_cat(tensor: Tensor, ctx: DistributedContext, order: Tensor | None = None) -> Tensor:
    """Every rank's rows in split order: row ``k`` of the concatenation (rank order) goes to ``order[k]``.

    ``order``: ``(N,)`` the split index of each gathered row (identity for one process).
    """
    if not ctx.distributed:
        return tensor
    rows = torch.cat(gather_objects(tensor.cpu(), ctx))
    if order is None:
        return rows
    placed = torch.empty_like(rows)
    placed[order] = rows
    return placed


@torch.no_grad()
def _forward_split(
    core: MultimodalClassifier,
    bundle: DataBundle,
    split: str,
    ctx: DistributedContext,
    batch_size: int,
    precision: str,
    *,
    with_features: bool = False,
    method: BalancingMethod | None = None,
) -> tuple[Tensor, dict[str, Tensor], Tensor, dict[str, Tensor]]:
    """Fused logits, uni-modal logits, targets (and features) of a whole split, all ranks' rows.

    With ``method``, the fused logits are its :meth:`~modbalance.methods.BalancingMethod.predict`.
    """
    size = len(bundle.splits[split])
    sampler = ShardedBatchSampler(size, batch_size, seed=0, shuffle=False, rank=ctx.rank, world_size=ctx.world_size)
    # Each rank holds slices of every global batch: gather where each row belongs, to return split order.
    order = _gather_cat(torch.cat(sampler.positions()), ctx) if ctx.distributed else None
    fused, targets = [], []
    unimodal: dict[str, list[Tensor]] = {m: [] for m in core.modalities}
    features: dict[str, list[Tensor]] = {m: [] for m in core.modalities}
    for inputs, target in iterate_batches(bundle, split, sampler, device=ctx.device, modalities=core.modalities):
        with autocast(precision, ctx.device):
            out = core(inputs)
            logits = out.logits if method is None else method.predict(core, out)
        fused.append(logits.float().cpu())
        targets.append(target.cpu())
        for m in core.modalities:
            unimodal[m].append(out.unimodal_logits[m].float().cpu())
            if with_features:
                features[m].append(out.features[m].float().cpu())

    def cat(rows: list[Tensor]) -> Tensor:
        return _gather_cat(torch.cat(rows), ctx, order) if rows else torch.empty(0)

    return (
        cat(fused),
        {m: cat(v) for m, v in unimodal.items()},
        cat(targets),
        {m: cat(v) for m, v in features.items()},
    )


def evaluate(
    core: MultimodalClassifier,
    bundle: DataBundle,
    split: str,
    ctx: DistributedContext,
    *,
    batch_size: int,
    precision: str = "fp32",
    rule: str = "mean_pairwise",
    method: BalancingMethod | None = None,
) -> dict[str, float]:
    """Loss, accuracy, macro-F1, mAP, per-modality accuracy and ``rho`` of ``split`` (eval mode).

    Every rank scores its share of the split (no sample twice); the logits are gathered, so all
    ranks return the metrics of the whole split. With ``method``, the fused logits are its
    :meth:`~modbalance.methods.BalancingMethod.predict` (e.g. MMCosine's cosine logits).
    """
    was_training = core.training
    core.eval()
    try:
        fused, unimodal, target, _ = _forward_split(core, bundle, split, ctx, batch_size, precision, method=method)
    finally:
        core.train(was_training)
    record = {"loss": float(F.cross_entropy(fused, target))}
    record.update(classification_metrics(fused, target, bundle.num_classes))
    for m, logits in unimodal.items():
        record[f"accuracy/{m}"] = float((logits.argmax(dim=1) == target).double().mean())
    if len(unimodal) >= 2:
        scores = {m: true_class_confidence(logits, target) for m, logits in unimodal.items()}
        record.update({f"rho/{m}": float(r) for m, r in discrepancy_ratios(scores, rule).items()})  # type: ignore[arg-type]
    return record


def forward_split(
    core: MultimodalClassifier,
    bundle: DataBundle,
    split: str,
    ctx: DistributedContext,
    *,
    batch_size: int,
    precision: str = "fp32",
) -> SplitOutputs:
    """A whole split through the model in eval mode, no gradients, all ranks' rows, on the CPU.

    What :class:`~modbalance.methods.EpochContext` ``.forward(split)`` gives a method.
    """
    was_training = core.training
    core.eval()
    try:
        fused, unimodal, target, features = _forward_split(
            core, bundle, split, ctx, batch_size, precision, with_features=True
        )
    finally:
        core.train(was_training)
    return SplitOutputs(fused, unimodal, features, target)


def extract_features(
    core: MultimodalClassifier, bundle: DataBundle, split: str, device: torch.device, *, batch_size: int
) -> tuple[dict[str, Tensor], Tensor]:
    """Frozen encoder features of a whole split on this process (for the linear probe), on the CPU."""
    single = DistributedContext(0, 1, 0, device, True, False)
    was_training = core.training
    core.eval()
    try:
        _, _, target, features = _forward_split(core, bundle, split, single, batch_size, "fp32", with_features=True)
    finally:
        core.train(was_training)
    return features, target
