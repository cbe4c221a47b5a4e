"""Mid-level fusion: MMTM (streams exchanging channel statistics) and CentralNet (a central branch).

Both take each modality's network as a list of *stages* (modules applied in order; a stage's
output is ``(B, C, ...)``, pooled over its trailing axes where a vector is needed), so any
encoder cut into stages works: the MLP layers of the lab, the stem + four stages of ResNet-18.

* :class:`MMTMNet` (Joze et al., "MMTM: Multimodal Transfer Module for CNN Fusion", CVPR 2020):
  after chosen stages an :class:`MMTMBlock` squeezes each stream to its channel means, maps the
  concatenation to a joint code ``Z = ReLU(W [S_1, ..., S_M] + b)`` and re-weights each stream's
  channels by ``2 sigmoid(W_m Z + b_m)``; the head is linear on the concatenated pooled streams.
* :class:`CentralNet` (Vielzeuf et al., "CentralNet: a Multilayer Approach for Multimodal
  Fusion", ECCV-W 2018): independent modality branches; a central branch whose level ``l`` is
  ``c_l = a_C,l g_l(c_{l-1}) + sum_m a_m,l h_m,l`` with learned scalars ``a`` and
  ``g_l = ReLU(Linear)``; the central head gives the fused logits.

A modality's factor 0 (absent, or dropped by OPM) removes it from the linear maps it enters
(the squeeze of every MMTM block and the head; the central sums), where zero input is exactly no
contribution: the biases do not depend on any modality and there is no normalisation after the
mask. Batch normalisation *inside* a stream still pools statistics over the batch, as always.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modbalance.interaction.base import InteractionModel

__all__ = ["CentralNet", "MMTMBlock", "MMTMNet", "pool"]


def pool(x: Tensor) -> Tensor:
    """Mean over every axis after the channel axis: ``(B, C, ...) -> (B, C)`` (``(B, C)`` unchanged).

    Example:
        >>> import torch
        >>> pool(torch.ones(2, 3, 4, 5)).shape, pool(torch.ones(2, 3)).shape
        (torch.Size([2, 3]), torch.Size([2, 3]))
    """
    return x if x.dim() == 2 else x.flatten(2).mean(dim=2)


def _check_stages(stages: Mapping[str, Sequence[nn.Module]], what: str) -> int:
    counts = {m: len(list(s)) for m, s in stages.items()}
    if len(counts) < 2 or min(counts.values()) < 1 or len(set(counts.values())) != 1:
        raise ValueError(f"{what} needs two or more modalities with the same number (>= 1) of stages, got {counts}")
    return next(iter(counts.values()))


class MMTMBlock(nn.Module):
    """One multimodal transfer module over the streams' ``(B, C_m, ...)`` maps.

    Args:
        channels: modality name -> channels ``C_m`` of its map at this point.
        ratio: the joint code has ``max(1, sum(C_m) // ratio)`` units (4 in the MMTM paper's
            experiments).

    Example:
        >>> import torch
        >>> block = MMTMBlock({"audio": 4, "visual": 6})
        >>> maps = {"audio": torch.randn(2, 4, 5), "visual": torch.randn(2, 6, 3, 3)}
        >>> out = block(maps, ["audio", "visual"], torch.ones(2, 2))
        >>> out["audio"].shape, out["visual"].shape
        (torch.Size([2, 4, 5]), torch.Size([2, 6, 3, 3]))
    """

    def __init__(self, channels: Mapping[str, int], ratio: int = 4) -> None:
        super().__init__()
        self.channels = dict(channels)
        total = sum(self.channels.values())
        hidden = max(1, total // ratio)
        self.squeeze = nn.Linear(total, hidden)
        self.excite = nn.ModuleDict({m: nn.Linear(hidden, c) for m, c in self.channels.items()})
        offsets, start = {}, 0
        for m, c in self.channels.items():
            offsets[m] = (start, start + c)
            start += c
        self.offsets = offsets
        #: Seam for methods that read or steer the excitation (``Greedy``): when set,
        #: ``excitation_hook(m, gate)`` is called in every pass where all the block's modalities are
        #: present (not the masked uni-modal passes) with modality m's ``(B, C_m)`` excitation
        #: ``2 sigmoid(W_m Z + b_m)`` and returns the ``(B, C_m)`` excitation to apply instead.
        #: ``None`` (default): the computed excitation, nothing else runs.
        self.excitation_hook: Callable[[str, Tensor], Tensor] | None = None

    def forward(self, maps: Mapping[str, Tensor], names: Sequence[str], weight: Tensor) -> dict[str, Tensor]:
        """Re-weighted maps of ``names``; modality ``names[j]`` enters the squeeze with ``weight[:, j]``.

        Example:
            >>> import torch
            >>> block = MMTMBlock({"a": 2, "b": 3})
            >>> maps = {"a": torch.randn(4, 2), "b": torch.randn(4, 3)}
            >>> block.excitation_hook = lambda m, gate: torch.ones_like(gate) if m == "a" else gate
            >>> torch.equal(block(maps, ["a", "b"], torch.ones(4, 2))["a"], maps["a"])  # a's excitation fixed at 1
            True
        """
        z: Tensor = self.squeeze.bias
        for j, m in enumerate(names):
            stats = pool(maps[m])
            if stats.shape[1] != self.channels[m]:
                raise ValueError(
                    f"MMTM block expects {self.channels[m]} channels for {m!r}, "
                    f"got a map of shape {tuple(maps[m].shape)}"
                )
            lo, hi = self.offsets[m]
            z = z + F.linear(stats * weight[:, j : j + 1].to(stats.dtype), self.squeeze.weight[:, lo:hi])
        z = F.relu(z)
        out = {}
        hook = self.excitation_hook if len(names) == len(self.channels) else None
        for m in names:
            gate = 2.0 * torch.sigmoid(self.excite[m](z))
            if hook is not None:
                gate = hook(m, gate)
            out[m] = maps[m] * gate.reshape(*gate.shape, *([1] * (maps[m].dim() - 2)))
        return out


class MMTMNet(InteractionModel):
    """One stream per modality, cut into stages, with MMTM blocks after chosen stages.

    Args:
        stages: modality name -> its stages (same count for every modality).
        channels: modality name -> output channels of each stage.
        num_classes: number of classes.
        fuse_after: stage indices followed by an MMTM block; ``None``: every stage but the last.
        ratio: see :class:`MMTMBlock`.
        unimodal: only ``"masked"``: each stream with the others absent (exact; one extra no-grad
            pass of all streams, since every stream is changed by the others' statistics).
        ogm_shared: ``None`` or a modality that receives the shared parameters (MMTM blocks, head).

    ``ModelOutput.features[m]``: the pooled output of stream m run with the others absent.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> stages = {m: [nn.Sequential(nn.Linear(d, 8), nn.ReLU()), nn.Sequential(nn.Linear(8, 4), nn.ReLU())]
        ...           for m, d in {"audio": 5, "visual": 3}.items()}
        >>> model = MMTMNet(stages, {"audio": [8, 4], "visual": [8, 4]}, num_classes=2)
        >>> out = model({"audio": torch.randn(6, 5), "visual": torch.randn(6, 3)})
        >>> out.logits.shape, out.features["visual"].shape, len(model.blocks)
        (torch.Size([6, 2]), torch.Size([6, 4]), 1)
    """

    def __init__(
        self,
        stages: Mapping[str, Sequence[nn.Module]],
        channels: Mapping[str, Sequence[int]],
        num_classes: int,
        *,
        fuse_after: Sequence[int] | None = None,
        ratio: int = 4,
        unimodal: str = "masked",
        ogm_shared: str | None = None,
    ) -> None:
        count = _check_stages(stages, "MMTMNet")
        if set(channels) != set(stages) or any(len(list(channels[m])) != count for m in stages):
            raise ValueError(
                f"channels must give {count} widths for each of {list(stages)}, got "
                f"{ {m: list(c) for m, c in channels.items()} }"
            )
        if unimodal != "masked":
            raise ValueError(
                f"MMTMNet supports unimodal='masked' only (its features exist only after the streams interact), "
                f"got {unimodal!r}"
            )
        last = {m: int(list(channels[m])[-1]) for m in stages}
        super().__init__(list(stages), num_classes, last, unimodal=unimodal, ogm_shared=ogm_shared)
        after = list(range(count - 1)) if fuse_after is None else [int(i) for i in fuse_after]
        bad = [i for i in after if not 0 <= i < count]
        if bad or len(set(after)) != len(after):
            raise ValueError(
                f"fuse_after must hold distinct stage indices in [0, {count}), got {list(fuse_after or [])}"
            )
        self.stages = nn.ModuleDict({m: nn.ModuleList(s) for m, s in stages.items()})
        self.fuse_after = sorted(after)
        self.blocks = nn.ModuleDict(
            {str(i): MMTMBlock({m: int(list(channels[m])[i]) for m in stages}, ratio) for i in self.fuse_after}
        )
        self.head = nn.Linear(sum(last.values()), num_classes)
        offsets, start = {}, 0
        for m in self.modalities:
            offsets[m] = (start, start + last[m])
            start += last[m]
        self.offsets = offsets

    def _own_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {m: list(self.stages[m].parameters()) for m in self.modalities}

    def _prepare(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], None]:
        return dict(inputs), None

    def _interact(
        self, state: Mapping[str, Any], names: Sequence[str], weight: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x = {m: state[m] for m in names}
        streams = {m: cast(nn.ModuleList, self.stages[m]) for m in names}
        for i in range(len(streams[names[0]])):
            x = {m: streams[m][i](x[m]) for m in names}
            if str(i) in self.blocks:
                x = self.blocks[str(i)](x, names, weight)
        pooled = {m: pool(x[m]) for m in names}
        logits: Tensor = self.head.bias
        for j, m in enumerate(names):
            lo, hi = self.offsets[m]
            if pooled[m].shape[1] != hi - lo:
                raise ValueError(f"stream {m!r} ends with width {pooled[m].shape[1]}, channels said {hi - lo}")
            logits = logits + F.linear(pooled[m] * weight[:, j : j + 1].to(pooled[m].dtype), self.head.weight[:, lo:hi])
        return logits, pooled


class CentralNet(InteractionModel):
    """Independent modality branches and a central branch that mixes their hidden layers.

    Args:
        branches: modality name -> its layers (same count ``L`` for every modality).
        widths: pooled output width of level ``l`` (the same for every modality), length ``L``.
        num_classes: number of classes.
        unimodal: ``"masked"`` (exact: the central branch fed by m alone; ``M`` extra no-grad passes
            of the small central branch, the branches are not rerun) or ``"heads"``.
        ogm_shared: ``None`` or a modality that receives the shared parameters (the central branch,
            its weights ``a`` and the head).

    ``ModelOutput.features[m]``: the pooled output of branch m (it never sees other modalities).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> branches = {m: [nn.Sequential(nn.Linear(d, 8), nn.ReLU()), nn.Sequential(nn.Linear(8, 8), nn.ReLU())]
        ...             for m, d in {"audio": 5, "visual": 3, "text": 2}.items()}
        >>> model = CentralNet(branches, [8, 8], num_classes=4)
        >>> x = {"audio": torch.randn(6, 5), "visual": torch.randn(6, 3), "text": torch.randn(6, 2)}
        >>> out = model(x)
        >>> out.logits.shape, sorted(out.unimodal_logits), tuple(model.alpha.shape)
        (torch.Size([6, 4]), ['audio', 'text', 'visual'], (2, 3))
    """

    def __init__(
        self,
        branches: Mapping[str, Sequence[nn.Module]],
        widths: Sequence[int],
        num_classes: int,
        *,
        unimodal: str = "masked",
        ogm_shared: str | None = None,
    ) -> None:
        count = _check_stages(branches, "CentralNet")
        widths = [int(w) for w in widths]
        if len(widths) != count or min(widths) < 1:
            raise ValueError(f"widths must give {count} positive widths (one per level), got {widths}")
        super().__init__(
            list(branches), num_classes, dict.fromkeys(branches, widths[-1]), unimodal=unimodal, ogm_shared=ogm_shared
        )
        self.widths = widths
        self.branches = nn.ModuleDict({m: nn.ModuleList(layers) for m, layers in branches.items()})
        self.alpha = nn.Parameter(torch.ones(count, len(self.modalities)))
        self.alpha_central = nn.Parameter(torch.ones(count))
        self.central = nn.ModuleList(
            nn.Sequential(nn.Linear(widths[i - 1], widths[i]), nn.ReLU()) for i in range(1, count)
        )
        self.head = nn.Linear(widths[-1], num_classes)

    def _own_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {m: list(self.branches[m].parameters()) for m in self.modalities}

    def _prepare(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Tensor]]:
        state: dict[str, Any] = {}
        for m in self.modalities:
            h, levels = inputs[m], []
            for level, layer in enumerate(cast(nn.ModuleList, self.branches[m])):
                h = layer(h)
                pooled = pool(h)
                if pooled.shape[1] != self.widths[level]:
                    raise ValueError(
                        f"branch {m!r} level {level} gives shape {tuple(h.shape)}; CentralNet expects width "
                        f"{self.widths[level]} (input shape {tuple(inputs[m].shape)})"
                    )
                levels.append(pooled)
            state[m] = levels
        return state, {m: state[m][-1] for m in self.modalities}

    def _interact(
        self, state: Mapping[str, Any], names: Sequence[str], weight: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        columns = [self.modalities.index(m) for m in names]
        central: Tensor | None = None
        for level in range(len(self.widths)):
            mixed = sum(
                self.alpha[level, c] * state[m][level] * weight[:, j : j + 1].to(state[m][level].dtype)
                for j, (m, c) in enumerate(zip(names, columns, strict=True))
            )
            assert isinstance(mixed, Tensor)
            if central is not None:
                mixed = mixed + self.alpha_central[level] * self.central[level - 1](central)
            central = mixed
        assert central is not None
        return self.head(central), {m: state[m][-1] for m in names}
