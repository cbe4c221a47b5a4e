r"""MSLR: modality-specific learning rates (Yao and Mihalcea, Findings of ACL 2022).

Reference: Yiqun Yao and Rada Mihalcea, "Modality-specific Learning Rates for Effective
Multimodal Additive Late-fusion", Findings of ACL 2022, pages 1824-1834. Each modality's
sub-network is trained with the learning rate that suits it (in the paper, the best learning rate
of that modality's uni-modal model) instead of one global rate, which can leave a modality with
vanishing updates. This module implements the paper's fixed-rate strategy ("keep"): modality
:math:`m`'s encoder, and with :class:`~modbalance.fusion.Sum` fusion its own head, form one
parameter group with learning rate :math:`\eta_m`; every other parameter (a shared fusion head)
keeps the optimizer's base rate. No official code is public; the paper's two adaptive strategies
are not implemented (see ``docs/comparison-methods.md``).

Cost per step: none (the optimizer's per-group rates). Needs: nothing beyond two modalities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, cast

from torch import nn

from modbalance.fusion import Sum
from modbalance.methods.base import METHODS, BalancingMethod, MethodRequirementError, Requirements
from modbalance.model import MultimodalClassifier

__all__ = ["MSLR"]


@METHODS.register("mslr")
class MSLR(BalancingMethod):
    r"""Modality-specific learning rates: one optimizer parameter group per modality.

    Args:
        lrs: modality name -> learning rate :math:`\eta_m` of its encoder (and, with ``Sum``
            fusion, of its own head). Modalities left out, and the shared fusion parameters,
            use the optimizer's base rate.
        start_epoch, end_epoch: accepted for the common interface; the learning rates are the
            optimizer's and hold for the whole run, so a window other than the default is refused.

    Raises:
        ValueError: a learning rate that is not a finite number > 0, an empty ``lrs``, or a window.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Sum
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
        ...                              Sum({"audio": 4, "visual": 3}, num_classes=2))
        >>> mslr = MSLR(lrs={"audio": 1e-3, "visual": 1e-2})
        >>> mslr.check(model)
        >>> optimizer = torch.optim.SGD(mslr.param_groups(model, lr=1e-3), lr=1e-3, momentum=0.9)
        >>> [(g["name"], g["lr"], len(g["params"])) for g in optimizer.param_groups]
        [('audio', 0.001, 4), ('visual', 0.01, 4), ('shared', 0.001, 0)]
    """

    name: ClassVar[str] = "mslr"
    requires: ClassVar[Requirements] = Requirements()

    def __init__(self, lrs: Mapping[str, float], *, start_epoch: int = 0, end_epoch: int | None = None) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        if start_epoch != 0 or end_epoch is not None:
            raise ValueError(
                f"method 'mslr': learning rates hold for the whole run; start_epoch={start_epoch}, "
                f"end_epoch={end_epoch} is not supported (leave the window at 0..null)"
            )
        if not isinstance(lrs, Mapping) or not lrs:
            raise ValueError(f"method 'mslr': lrs must map modality names to learning rates, got {lrs!r}")
        checked: dict[str, float] = {}
        for modality, lr in lrs.items():
            if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
                raise ValueError(f"method 'mslr': lrs[{modality!r}]={lr!r} must be a finite number > 0")
            checked[str(modality)] = float(lr)
        self.lrs = checked

    def check(self, model: nn.Module, *, held_out: bool = False) -> None:
        """The base checks, and every modality of ``lrs`` must be one of the model's."""
        super().check(model, held_out=held_out)
        modalities = cast(MultimodalClassifier, model).modalities
        unknown = sorted(set(self.lrs) - set(modalities))
        if unknown:
            raise MethodRequirementError(
                f"method 'mslr': lrs names {unknown}, which the model does not have; "
                f"its modalities are {modalities} (method.options.lrs.<modality>)"
            )

    def param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """One group per modality of ``lrs`` (``name``, ``lr``), then ``shared`` at the base ``lr``."""
        self.check(model)
        core = cast(MultimodalClassifier, model)
        fusion = core.fusion
        groups: list[dict[str, Any]] = []
        taken: set[int] = set()
        for modality, modality_lr in self.lrs.items():
            params = list(core.encoders[modality].parameters())
            if isinstance(fusion, Sum):
                params += list(fusion.heads[modality].parameters())
            params = [p for p in params if p.requires_grad and id(p) not in taken]
            taken.update(id(p) for p in params)
            groups.append({"name": modality, "lr": modality_lr, "params": params})
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
        groups.append({"name": "shared", "lr": lr, "params": rest})
        return groups

    def extra_repr(self) -> str:
        return f"lrs={self.lrs}"
