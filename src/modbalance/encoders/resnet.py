"""ResNet-18 trunk and the audio / frame encoders built on it.

The trunk follows the ResNet-18 architecture of He et al., "Deep Residual Learning for Image Recognition"
(CVPR 2016): a 7×7/2 stem convolution, BatchNorm, ReLU and a 3×3/2 max-pool, then four stages of two
``BasicBlock`` each (64, 128, 256, 512 channels; stages 2-4 halve the resolution). As in the reference code
of OGM-GE (CVPR 2022), the TPAMI 2024 code and BalanceBench, the trunk has **no** average pool and **no**
classifier: it returns the layer4 map of shape ``(N, 512, h, w)``.

Submodule names match torchvision's ``resnet18`` (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0`` ...), so a torchvision-layout state dict (minus ``fc.*``) loads by key; see
:func:`modbalance.encoders.pretrained.load_pretrained`. This file is written from the architecture
description; torchvision is not a dependency.

Initialisation follows the reference whole-model init: every convolution ``kaiming_normal_(mode="fan_out",
nonlinearity="relu")``, every BatchNorm weight 1 and bias 0. (BalanceBench draws BN weights from N(1, 0.02)
instead; we follow OGM-GE / TPAMI.)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BasicBlock",
    "ResNet18",
    "ResNet18Encoder",
    "resnet18_audio",
    "resnet18_flow",
    "resnet18_visual",
]

#: Channels of the layer4 map and of the pooled features.
RESNET18_OUT_DIM = 512


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (the ResNet-18/34 block).

    ``out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` where the shortcut is the identity, or a
    strided 1×1 convolution + BatchNorm (``downsample.0`` / ``downsample.1``) when the stride or the channel
    count changes.

    Args:
        in_channels: Channels of the input map.
        out_channels: Channels of the output map.
        stride: Stride of the first convolution (and of the shortcut).

    Shapes:
        ``(N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride))``.

    Example:
        >>> import torch
        >>> block = BasicBlock(64, 128, stride=2)
        >>> block(torch.zeros(1, 64, 9, 8)).shape
        torch.Size([1, 128, 5, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to ``x`` of shape ``(N, C_in, H, W)``."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    first = BasicBlock(in_channels, out_channels, stride)
    return nn.Sequential(first, BasicBlock(out_channels, out_channels))


class ResNet18(nn.Module):
    """ResNet-18 trunk without average pool and classifier: images to the layer4 map.

    Args:
        in_channels: Channels of the stem convolution: 1 spectrograms, 3 RGB, 2 (u, v) optical flow.

    Shapes:
        ``(N, in_channels, H, W) -> (N, 512, h, w)`` with ``h = ceil(H / 32)`` and ``w = ceil(W / 32)``
        (each of the five stride-2 steps maps n to ceil(n / 2)), e.g. 257×188 → 9×6, 224×224 → 7×7,
        112×112 → 4×4.

    Example:
        >>> import torch
        >>> trunk = ResNet18(in_channels=3)
        >>> trunk(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 512, 2, 2])
        >>> "layer2.0.downsample.0.weight" in trunk.state_dict()
        True
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _stage(64, 64, stride=1)
        self.layer2 = _stage(64, 128, stride=2)
        self.layer3 = _stage(128, 256, stride=2)
        self.layer4 = _stage(256, RESNET18_OUT_DIM, stride=2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw all weights with the reference init (kaiming fan-out convs, BN weight 1 and bias 0)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
                module.reset_running_stats()

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` of shape ``(N, in_channels, H, W)`` to the layer4 map ``(N, 512, h, w)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


class ResNet18Encoder(ResNet18):
    """ResNet-18 encoder for one modality, returning pooled ``(B, 512)`` features.

    Two input layouts:

    * ``temporal=False`` (spectrograms, single images): ``(B, C, H, W)``; with ``in_channels == 1`` a
      channel-less ``(B, H, W)`` is accepted too. The layer4 map is average-pooled over ``(h, w)``.
    * ``temporal=True`` (frames): ``(B, C, T, H, W)``, the project's layout for every frame modality (a loader
      yields ``(C, T, H, W)`` per sample). The clip is folded to ``(B·T, C, H, W)``, run through the trunk,
      unfolded to ``(B, 512, T, h, w)`` and average-pooled over ``(T, h, w)``, as the reference's
      ``adaptive_avg_pool3d``. Loaders that yield time-first ``(T, C, H, W)`` must be permuted first; when
      ``C == T`` the swap cannot be detected here.

    Because the module *is* the trunk (no wrapper attribute), its state dict has torchvision's key names.

    Args:
        in_channels: Channels of the stem: 1 audio, 3 RGB, 2 flow (3 for flow stacked as [u, v, u]).
        temporal: Whether inputs carry a time axis, ``(B, C, T, H, W)``.
        return_map: If true, :meth:`forward` returns the layer4 map instead of pooled features
            (``(B, 512, h, w)``, or ``(B, 512, T, h, w)`` when temporal).

    Attributes:
        out_dim: Feature size of the pooled output (512).

    Raises:
        ValueError: From :meth:`forward`, when the input's rank or channel count does not fit.

    Example:
        >>> import torch
        >>> enc = ResNet18Encoder(3, temporal=True)
        >>> enc(torch.zeros(2, 3, 2, 32, 32)).shape
        torch.Size([2, 512])
        >>> enc.forward_map(torch.zeros(2, 3, 2, 32, 32)).shape
        torch.Size([2, 512, 2, 1, 1])
    """

    def __init__(self, in_channels: int, *, temporal: bool, return_map: bool = False) -> None:
        super().__init__(in_channels)
        self.temporal = bool(temporal)
        self.return_map = bool(return_map)
        self.out_dim = RESNET18_OUT_DIM

    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"expected a Tensor, got {type(x).__name__}")
        c = self.in_channels
        if self.temporal:
            if x.dim() != 5 or x.shape[1] != c:
                raise ValueError(
                    f"frame encoder expects (B, C={c}, T, H, W), got shape {tuple(x.shape)}; "
                    "a single image needs a time axis of 1: x.unsqueeze(2)"
                )
            return x
        if x.dim() == 3 and c == 1:
            return x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != c:
            accepted = f"(B, {c}, H, W)" + (" or (B, H, W)" if c == 1 else "")
            raise ValueError(f"encoder expects {accepted}, got shape {tuple(x.shape)}")
        return x

    def forward_map(self, x: Tensor) -> Tensor:
        """Return the layer4 map without pooling.

        Args:
            x: ``(B, C, H, W)`` (or ``(B, H, W)`` for one channel), or ``(B, C, T, H, W)`` when temporal.

        Returns:
            ``(B, 512, h, w)``, or ``(B, 512, T, h, w)`` when temporal.
        """
        x = self._check_input(x)
        if not self.temporal:
            return super().forward(x)
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        fmap = super().forward(frames)
        return fmap.reshape(b, t, *fmap.shape[1:]).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """Encode ``x`` to pooled features ``(B, 512)`` (or the layer4 map if ``return_map``)."""
        fmap = self.forward_map(x)
        if self.return_map:
            return fmap
        if self.temporal:
            return F.adaptive_avg_pool3d(fmap, 1).flatten(1)
        return F.adaptive_avg_pool2d(fmap, 1).flatten(1)

    def extra_repr(self) -> str:
        """Show the stem channels and the input layout in ``repr``."""
        return f"in_channels={self.in_channels}, temporal={self.temporal}, return_map={self.return_map}"


def resnet18_audio(*, return_map: bool = False) -> ResNet18Encoder:
    """Spectrogram encoder: 1-channel stem, input ``(B, 1, F, T)`` or ``(B, F, T)``, output ``(B, 512)``.

    Args:
        return_map: Return the layer4 map ``(B, 512, h, w)`` instead of pooled features.

    Example:
        >>> import torch
        >>> resnet18_audio()(torch.zeros(2, 64, 48)).shape
        torch.Size([2, 512])
    """
    return ResNet18Encoder(1, temporal=False, return_map=return_map)


def resnet18_visual(*, return_map: bool = False) -> ResNet18Encoder:
    """RGB frame encoder: 3-channel stem, input ``(B, 3, T, H, W)``, output ``(B, 512)``.

    Args:
        return_map: Return the layer4 map ``(B, 512, T, h, w)`` instead of pooled features.

    Example:
        >>> import torch
        >>> resnet18_visual()(torch.zeros(1, 3, 2, 32, 32)).shape
        torch.Size([1, 512])
    """
    return ResNet18Encoder(3, temporal=True, return_map=return_map)


def resnet18_flow(*, return_map: bool = False) -> ResNet18Encoder:
    """Optical-flow encoder: 2-channel (u, v) stem, input ``(B, 2, T, H, W)``, output ``(B, 512)``.

    This is BalanceBench's UCF-101 flow stem. For flow stacked as [u, v, u] (the TPAMI maintainer's
    description), use ``ResNet18Encoder(3, temporal=True)`` instead.

    Args:
        return_map: Return the layer4 map ``(B, 512, T, h, w)`` instead of pooled features.

    Example:
        >>> import torch
        >>> resnet18_flow()(torch.zeros(1, 2, 3, 32, 32)).shape
        torch.Size([1, 512])
    """
    return ResNet18Encoder(2, temporal=True, return_map=return_map)
