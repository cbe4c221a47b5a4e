r"""Greedy: balanced multimodal learning through re-balancing steps on MMTM blocks.

Reference: Wu, Jastrzębski, Cho, Geras, "Characterizing and Overcoming the Greedy Nature of
Learning in Multi-modal Deep Neural Networks", ICML 2022 (Section 4, Algorithm 1); official code
``nyukat/greedy_multimodal_learning`` at commit a190e03 (``src/callbacks.py``,
``src/balanced_mmtm.py``, ``configs/training_guided.gin``; lines cited below). Formulas and
provenance: ``docs/comparison-methods.md``.

The model is a two-stream network whose streams exchange channel statistics through MMTM blocks
(:class:`~modbalance.interaction.MMTMNet`, ``model.kind=mmtm`` in the trainer). After each
backward pass the *conditional learning speed* of each modality is compared
(``callbacks.py`` 199-233): with :math:`\mu(\theta) = \|\nabla\theta\|^2 / \|\theta\|^2` (sums
over a parameter group), accumulated over all steps so far,

.. math:: M^{\mathrm{byp}}_m = \sum_t \mu_t(\text{MMTM}_m), \quad
          M^{\mathrm{main}}_m = \sum_t \mu_t(\text{branch}_m), \quad
          d = \log_{10}\frac{M^{\mathrm{byp}}_0}{M^{\mathrm{main}}_0}
            - \log_{10}\frac{M^{\mathrm{byp}}_1}{M^{\mathrm{main}}_1}

where :math:`\text{MMTM}_m` is every block's excitation layer of modality m plus the squeeze layer
shared by both (``callbacks.py`` 207-217) and :math:`\text{branch}_m` is modality m's own stream
(``modality_parameters()`` without shared parameters). From ``start_epoch`` on (``starting_epoch=2``,
1-based, in ``configs/training_guided.gin``), when :math:`|d| > \epsilon` (0.01) the next
``window`` (5) steps are *re-balancing* steps (``callbacks.py`` 240-263): modality
:math:`c = 0` if :math:`d > 0`, else :math:`c = 1`, has its MMTM excitation replaced in every
block by the running average of its excitation over all training batches so far (the current one
included; ``balanced_mmtm.py`` 113-116, 136-152), so its stream no longer receives the other
modality's information; the speeds are not measured during those steps.

The official running average of the *second* modality averages the *first* modality's
excitation (``balanced_mmtm.py`` 114: ``vis_out`` in the update of
``running_avg_weight_skeleton``), so a re-balancing step on the second modality gives it the
first modality's average scales. We average each modality's own excitation;
``official_second_average=True`` reproduces the released behaviour (equal channel counts needed).
Our running average counts training forward passes only; the official one also counts the
validation and test passes (``balanced_mmtm.py`` 113-116 run in every forward).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from modbalance.interaction.midlevel import MMTMBlock
from modbalance.methods.base import METHODS, BalancingMethod, EpochContext, MethodRequirementError, Requirements
from modbalance.model import ModelOutput

__all__ = ["Greedy", "greedy_parameter_groups"]


def _mmtm_blocks(model: nn.Module) -> dict[str, MMTMBlock]:
    return {name: module for name, module in model.named_modules() if isinstance(module, MMTMBlock)}


def greedy_parameter_groups(model: nn.Module) -> tuple[dict[str, list[Tensor]], dict[str, list[Tensor]]]:
    """The parameter groups whose learning speeds Greedy compares: ``(bypass, main)`` per modality.

    ``bypass[m]``: in every :class:`~modbalance.interaction.MMTMBlock`, modality m's excitation
    layer and the squeeze layer shared by all modalities (the official ``mmtm`` parameters whose
    name holds m's name, plus the shared ones counted for every modality, ``callbacks.py``
    207-217). ``main[m]``: modality m's own stream, i.e. ``model.modality_parameters()[m]``
    without the shared parameters (the official branch ``net_view_m``, 219-222). The shared head
    is in neither group.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance.interaction import MMTMNet
        >>> stages = {m: [nn.Linear(3, 4), nn.Linear(4, 2)] for m in ("audio", "visual")}
        >>> model = MMTMNet(stages, {"audio": [4, 2], "visual": [4, 2]}, num_classes=2)
        >>> bypass, main = greedy_parameter_groups(model)
        >>> [len(bypass[m]) for m in bypass], [len(main[m]) for m in main]   # squeeze + excite; 2 Linear
        ([4, 4], [4, 4])
    """
    blocks = _mmtm_blocks(model)
    modalities = list(cast(list[str], getattr(model, "modalities", [])))
    bypass: dict[str, list[Tensor]] = {m: [] for m in modalities}
    for block in blocks.values():
        shared = list(block.squeeze.parameters())
        for m in modalities:
            bypass[m] += list(block.excite[m].parameters()) + shared
    groups = cast(Mapping[str, list[Tensor]], model.modality_parameters())  # type: ignore[operator]
    shared_ids = {id(p) for p in model.shared_parameters()}  # type: ignore[operator]
    main = {m: [p for p in groups[m] if id(p) not in shared_ids] for m in modalities}
    return bypass, main


def _speeds(groups: Mapping[str, list[Tensor]], modalities: list[str]) -> Tensor:
    """``(2 * M,)`` float64 squared gradient norms, then squared weight norms, of each group (on device)."""
    grads, weights = [], []
    for m in modalities:
        params = groups[m]
        # Each parameter's sum in its own precision, the group's total in float64, as the official
        # per-parameter ``.item()`` summed in Python floats (callbacks.py 204-205).
        zero = params[0].new_zeros((), dtype=torch.float64)
        weights.append(sum((p.detach().float().pow(2).sum().double() for p in params), zero))
        grads.append(sum((p.grad.detach().float().pow(2).sum().double() for p in params if p.grad is not None), zero))
    return torch.stack(grads + weights)


def _log10(x: float) -> float:
    """``numpy.log10`` for non-negative floats: ``-inf`` at 0 (the official code uses numpy)."""
    return math.log10(x) if x > 0 else -math.inf


@METHODS.register("greedy")
class Greedy(BalancingMethod):
    r"""Greedy (Wu et al., ICML 2022): re-balancing steps on the MMTM blocks of an ``MMTMNet``.

    Needs a two-modality :class:`~modbalance.interaction.MMTMNet` (or any
    :class:`~modbalance.interaction.InteractionModel` with :class:`~modbalance.interaction.MMTMBlock`
    modules over both modalities); in the trainer ``model.kind=mmtm``. Cost per step: the squared
    norms of every stream and MMTM parameter and its gradient (one host sync), plus a batch mean
    of each block's excitation in the forward pass; no extra forward or backward. DDP is refused
    (each process would keep its own running averages), and fp16 too.

    Args:
        epsilon: threshold on :math:`|d|` above which re-balancing starts (official 0.01).
        window: re-balancing steps per trigger (official ``curation_windowsize=5``).
        official_second_average: reproduce the official running average of the second modality,
            which averages the first modality's excitation (``balanced_mmtm.py`` 114).
        start_epoch: first epoch (0-based) of re-balancing; the speeds are measured from the
            first step on. Default 1: the official ``starting_epoch=2`` of its 1-based epochs
            (the trainer passes ``method.start_epoch``, default 0; set it to 1 for this schedule).
        end_epoch: last epoch (inclusive) of re-balancing; ``None`` means no end.

    Attributes:
        rebalancing: the modality whose excitation the next training forward replaces by its
            running average (``None``: a normal step).
        d_bdr: the last measured :math:`d` (``nan`` before the first step).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance.interaction import MMTMNet
        >>> stages = {m: [nn.Sequential(nn.Linear(5, 8), nn.ReLU()), nn.Linear(8, 4)] for m in ("audio", "visual")}
        >>> model = MMTMNet(stages, {"audio": [8, 4], "visual": [8, 4]}, num_classes=3)
        >>> greedy = Greedy(epsilon=0.0, start_epoch=0)
        >>> greedy.check(model)
        >>> opt = torch.optim.SGD(greedy.param_groups(model, lr=0.1), lr=0.1)
        >>> x, y = {"audio": torch.randn(8, 5), "visual": torch.randn(8, 5)}, torch.randint(0, 3, (8,))
        >>> out = greedy.train_forward(model, x, epoch=0)
        >>> greedy.loss(model, out, y, epoch=0).backward()
        >>> greedy.before_step(model, opt, epoch=0)     # measures d; |d| > 0 starts re-balancing
        >>> opt.step(); opt.zero_grad()
        >>> greedy.rebalancing in ("audio", "visual")
        True
    """

    name = "greedy"
    requires = Requirements(
        min_modalities=2,
        max_modalities=2,
        ddp=False,
        fp16=False,
        fp16_unsupported="a skipped fp16 step's infinite gradients would enter the cumulative learning speeds for good",
        models=("InteractionModel",),
    )

    def __init__(
        self,
        *,
        epsilon: float = 0.01,
        window: int = 5,
        official_second_average: bool = False,
        start_epoch: int = 1,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 <= epsilon < math.inf:
            raise ValueError(f"method 'greedy': epsilon must be a finite number >= 0, got {epsilon!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"method 'greedy': window must be an int >= 1, got {window!r}")
        self.epsilon = float(epsilon)
        self.window = window
        self.official_second_average = bool(official_second_average)
        self.rebalancing: str | None = None
        self.d_bdr = math.nan
        self._window_step = 0
        self._sums = [0.0, 0.0, 0.0, 0.0]  # M_bypass_0, M_bypass_1, M_main_0, M_main_1 (callbacks.py 191-194)
        self._averages: dict[str, dict[str, Tensor]] = {}
        self._counts: dict[str, int] = {}
        self._modalities: list[str] = []
        self._blocks: dict[str, MMTMBlock] = {}
        self._groups: tuple[dict[str, list[Tensor]], dict[str, list[Tensor]]] | None = None
        self._model_id = 0
        self._epoch_counts: dict[str, int] = {}
        self._epoch_steps = 0

    # ------------------------------------------------------------------ set-up
    def check(self, model: nn.Module, *, held_out: bool = False) -> None:
        """MMTM blocks over both modalities, then the base checks; binds the blocks and groups."""
        blocks = _mmtm_blocks(model)
        if not blocks:
            raise MethodRequirementError(
                f"method 'greedy' re-balances the excitation of MMTM blocks, and the model "
                f"({type(model).__name__}) has none; train an MMTMNet: model.kind=mmtm in the trainer "
                "(e.g. --config lab/mmtm), or modbalance.interaction.MMTMNet in your own loop"
            )
        super().check(model, held_out=held_out)
        modalities = list(cast(list[str], model.modalities))
        for name, block in blocks.items():
            if list(block.channels) != modalities:
                raise MethodRequirementError(
                    f"method 'greedy': MMTM block {name!r} joins {list(block.channels)}, not the model's "
                    f"modalities {modalities}; every block must join both modalities, in the model's order"
                )
        if self.official_second_average:
            widths = {m: [b.channels[m] for b in blocks.values()] for m in modalities}
            if widths[modalities[0]] != widths[modalities[1]]:
                raise MethodRequirementError(
                    f"method 'greedy': official_second_average=True gives the second modality the first one's "
                    f"average excitation, which needs equal channel counts per block; got {widths}. "
                    "Set method.options.official_second_average=false"
                )
        self._bind(model, blocks, modalities)

    def _bind(self, model: nn.Module, blocks: dict[str, MMTMBlock], modalities: list[str]) -> None:
        self._model_id = id(model)  # not the model itself: an nn.Module attribute would register it
        self._modalities = modalities
        self._blocks = blocks
        self._groups = greedy_parameter_groups(model)
        for name, block in blocks.items():
            reference = block.squeeze.weight
            old = self._averages.get(name, {})
            self._averages[name] = {
                m: old[m].to(reference.device)
                if m in old
                else torch.zeros(block.channels[m], device=reference.device, dtype=torch.float32)
                for m in modalities
            }
            self._counts.setdefault(name, 0)
        self._epoch_counts = dict.fromkeys(modalities, 0)

    def _require_bound(self, model: nn.Module) -> None:
        if self._groups is None:
            raise RuntimeError("method 'greedy': call check(model) before training (it finds the MMTM blocks)")
        if id(model) != self._model_id:
            raise RuntimeError(
                f"method 'greedy' was checked on another model than the {type(model).__name__} it is given; "
                "call check(model) with the model you train (it binds that model's MMTM blocks)"
            )

    # ------------------------------------------------------------------ forward: running averages
    def _hook(self, name: str, replace: str | None) -> Any:
        count = self._counts[name]
        averages = self._averages[name]
        first = self._modalities[0]

        def hook(m: str, gate: Tensor) -> Tensor:
            # balanced_mmtm.py 113-114: cumulative mean of the batch-mean excitation, this batch included.
            mean = gate.detach().float().mean(dim=0)
            averages[m] = (mean + averages[m] * count) / (count + 1)
            if m != replace:
                return gate
            # balanced_mmtm.py 136-152: the re-balanced modality's excitation is its running average
            # (with official_second_average, the second modality gets the first one's, line 114).
            source = first if self.official_second_average else m
            return averages[source].to(gate.dtype).expand_as(gate)

        return hook

    def train_forward(
        self,
        model: nn.Module,
        inputs: Mapping[str, Tensor],
        *,
        epoch: int | None = None,
        drop: Mapping[str, Tensor] | None = None,
    ) -> ModelOutput:
        """``model(inputs)`` with each MMTM block's excitation averaged (and replaced in re-balancing steps).

        ``drop`` is passed on as the base class does (Greedy plans no extra samples, so the
        trainer never gives it).
        """
        self._require_bound(model)
        replace = self.rebalancing if self.active(epoch) else None
        try:
            for name, block in self._blocks.items():
                block.excitation_hook = self._hook(name, replace)
            out: ModelOutput = model(inputs) if drop is None else model(inputs, drop=drop)
        finally:
            for block in self._blocks.values():
                block.excitation_hook = None
        for name in self._blocks:
            self._counts[name] += 1
        return out

    # ------------------------------------------------------------------ after backward: the decision
    def conditional_speeds(self) -> Tensor:
        """This step's ``(4,)`` ratios ``[mu_bypass_0, mu_bypass_1, mu_main_0, mu_main_1]`` (``callbacks.py`` 225-228).

        Each is the group's squared gradient norm over its squared weight norm (call after
        ``backward``), in float64, on the parameters' device (``inf``/``nan`` where a group's
        weights are all zero; :meth:`before_step` refuses those).
        """
        if self._groups is None:
            raise RuntimeError("method 'greedy': call check(model) before training (it finds the MMTM blocks)")
        bypass, main = self._groups
        norms = torch.cat([_speeds(bypass, self._modalities), _speeds(main, self._modalities)])
        n = len(self._modalities)
        grads = torch.cat([norms[:n], norms[2 * n : 3 * n]])
        weights = torch.cat([norms[n : 2 * n], norms[3 * n :]])
        return grads / weights

    def before_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, epoch: int | None = None) -> None:
        """The official ``on_backward_end`` (``callbacks.py`` 240-263); the speeds accumulate from step one."""
        self._require_bound(model)
        unlocked = self.active(epoch)
        self._epoch_steps += 1
        if unlocked and self.rebalancing is not None:  # this step's forward re-balanced that modality
            self._epoch_counts[self.rebalancing] += 1
            self._window_step += 1
            if self._window_step == self.window:
                self.rebalancing = None
            return
        ratios = self.conditional_speeds().tolist()  # one host sync per step
        if not all(r == r for r in ratios) or any(r == math.inf for r in ratios):
            groups = [f"{kind} of {m}" for kind in ("MMTM", "stream") for m in self._modalities]
            bad = [g for g, r in zip(groups, ratios, strict=True) if not math.isfinite(r)]
            raise MethodRequirementError(
                f"method 'greedy': the learning speed |grad|^2 / |w|^2 of the {', '.join(bad)} parameters is "
                f"{[r for r in ratios if not math.isfinite(r)]}: their weights are all zero or their gradients "
                "not finite; initialise those parameters to non-zero values (and check the loss is finite)"
            )
        self._sums = [s + r for s, r in zip(self._sums, ratios, strict=True)]
        bypass_0, bypass_1, main_0, main_1 = self._sums
        # callbacks.py 230-233: log10(M_bypass_0 / M_main_0) - log10(M_bypass_1 / M_main_1)
        self.d_bdr = (_log10(bypass_0) - _log10(main_0)) - (_log10(bypass_1) - _log10(main_1))
        if unlocked and abs(self.d_bdr) > self.epsilon:
            self._window_step = 0
            self.rebalancing = self._modalities[0] if self.d_bdr > 0 else self._modalities[1]
        else:
            self.rebalancing = None

    # ------------------------------------------------------------------ epochs, logging, resume
    def on_epoch_start(self, model: nn.Module, context: EpochContext) -> None:
        """Reset the per-epoch counts of re-balancing steps."""
        self._epoch_counts = dict.fromkeys(self._modalities, 0)
        self._epoch_steps = 0

    def on_epoch_end(self, model: nn.Module, context: EpochContext) -> dict[str, float]:
        """The last ``d`` and, per modality, the share of this epoch's steps that re-balanced it."""
        record = {} if math.isnan(self.d_bdr) or math.isinf(self.d_bdr) else {"greedy_d_bdr": self.d_bdr}
        if self._epoch_steps:
            for m, c in self._epoch_counts.items():
                record[f"greedy_rebalance_share_{m}"] = c / self._epoch_steps
        return record

    def get_extra_state(self) -> dict[str, Any]:
        """Cumulative speeds, running averages and their counts, the re-balancing state."""
        return {
            "sums": list(self._sums),
            "averages": {k: {m: t.clone() for m, t in v.items()} for k, v in self._averages.items()},
            "counts": dict(self._counts),
            "rebalancing": self.rebalancing,
            "window_step": self._window_step,
            "d_bdr": self.d_bdr,
            "epoch_counts": dict(self._epoch_counts),
            "epoch_steps": self._epoch_steps,
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self._sums = [float(s) for s in state["sums"]]
        device = {k: b.squeeze.weight.device for k, b in self._blocks.items()}
        self._averages = {
            k: {m: t.to(device.get(k, t.device)) for m, t in v.items()} for k, v in state["averages"].items()
        }
        self._counts = {k: int(c) for k, c in state["counts"].items()}
        self.rebalancing = state["rebalancing"]
        self._window_step = int(state["window_step"])
        self.d_bdr = float(state["d_bdr"])
        self._epoch_counts = {m: int(c) for m, c in state["epoch_counts"].items()}
        self._epoch_steps = int(state["epoch_steps"])

    def extra_repr(self) -> str:
        return (
            f"epsilon={self.epsilon}, window={self.window}, official_second_average={self.official_second_average}, "
            + super().extra_repr()
        )
