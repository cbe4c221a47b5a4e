"""Image and flow transforms for clips, written with Pillow + torch (no torchvision).

A clip is a list of PIL images (one per frame). Transforms draw their randomness from a
``torch.Generator``; ``per_frame=False`` (the default) draws one crop and one flip per clip, while
``per_frame=True`` reproduces the reference loaders, which draw them independently per frame.

Output layout: (C, T, H, W) float32, channels first then time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from modbalance.data._deps import require

if TYPE_CHECKING:
    from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Box = tuple[int, int, int, int]  # left, top, right, bottom


def to_tensor(image: Image.Image) -> Tensor:
    """A PIL image as a (C, H, W) float32 tensor in [0, 1] (C = 3 for RGB, 1 for L).

    Example:
        >>> from PIL import Image
        >>> to_tensor(Image.new("RGB", (4, 2), (255, 0, 0)))[:, 0, 0]
        tensor([1., 0., 0.])
    """
    np = require("numpy")
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def random_resized_crop_box(
    width: int,
    height: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """Draw a crop box the way ``RandomResizedCrop`` does.

    Up to 10 tries: area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``; keep the
    first box that fits. Otherwise fall back to the largest centred box with the ratio clamped to ``ratio``.

    Returns:
        ``(left, top, right, bottom)`` in pixels.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> left, top, right, bottom = random_resized_crop_box(64, 48, g)
        >>> 0 <= left < right <= 64 and 0 <= top < bottom <= 48
        True
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_lo + u[1] * (log_hi - log_lo))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = min(int(u[2] * (width - w + 1)), width - w)
            top = min(int(u[3] * (height - h + 1)), height - h)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def center_crop_box(width: int, height: int, size: int) -> Box:
    """The centred ``size`` × ``size`` box (``CenterCrop``), assuming both sides are ≥ ``size``.

    Example:
        >>> center_crop_box(149, 112, 112)
        (18, 0, 130, 112)
    """
    left = round((width - size) / 2.0)
    top = round((height - size) / 2.0)
    return left, top, left + size, top + size


@dataclass(frozen=True)
class ClipTransform:
    """Resize/crop/flip/normalise a clip of RGB frames into a (3, T, size, size) tensor.

    Train: random-resized crop to ``size`` (``scale``, ``ratio``) then a horizontal flip with
    probability 1/2. Eval: ``eval_resize="square"`` resizes to (size, size) (the 224-px reference
    pipeline); ``"short_center"`` resizes the short side to ``size`` and centre-crops (TPAMI 112-px).
    Then ImageNet normalisation (``normalize=True``).

    Attributes:
        size: output side in pixels.
        train: random crop + flip when true.
        scale: area range of the random crop.
        ratio: aspect range of the random crop.
        flip: random horizontal flip in training.
        per_frame: draw crop and flip per frame instead of once per clip.
        eval_resize: ``"square"`` or ``"short_center"``.
        normalize: subtract the ImageNet mean and divide by its std.

    Example:
        >>> from PIL import Image
        >>> frames = [Image.new("RGB", (64, 48)) for _ in range(3)]
        >>> ClipTransform(size=32, train=True)(frames, torch.Generator().manual_seed(0)).shape
        torch.Size([3, 3, 32, 32])
    """

    size: int = 224
    train: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    per_frame: bool = False
    eval_resize: str = "square"
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.eval_resize not in ("square", "short_center"):
            raise ValueError(f"eval_resize must be 'square' or 'short_center', got {self.eval_resize!r}")
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")

    def geometry(
        self, width: int, height: int, count: int, generator: torch.Generator | None
    ) -> list[tuple[Box, bool]]:
        """The crop box and flip flag for each of ``count`` frames of a ``width`` × ``height`` clip."""
        if not self.train:
            return [((0, 0, width, height), False)] * count
        if generator is None:
            raise ValueError("a train-mode ClipTransform needs a generator")
        draws = 1 if not self.per_frame else count
        out = []
        for _ in range(draws):
            box = random_resized_crop_box(width, height, generator, self.scale, self.ratio)
            flip = self.flip and torch.rand(1, generator=generator).tolist()[0] < 0.5
            out.append((box, flip))
        return out * count if not self.per_frame else out

    def apply(self, image: Image.Image, box: Box, flip: bool) -> Image.Image:
        """Crop/resize/flip one frame (no tensor conversion)."""
        pil = require("PIL.Image", "image transforms")
        if self.train:
            image = image.resize((self.size, self.size), pil.Resampling.BILINEAR, box=box)
        elif self.eval_resize == "square":
            image = image.resize((self.size, self.size), pil.Resampling.BILINEAR)
        else:
            w, h = image.size
            short = min(w, h)
            nw, nh = max(self.size, round(w * self.size / short)), max(self.size, round(h * self.size / short))
            image = image.resize((nw, nh), pil.Resampling.BILINEAR).crop(center_crop_box(nw, nh, self.size))
        if flip:
            image = image.transpose(pil.Transpose.FLIP_LEFT_RIGHT)
        return image

    def __call__(self, frames: Sequence[Image.Image], generator: torch.Generator | None = None) -> Tensor:
        """Transform a clip.

        Args:
            frames: T RGB PIL images of one size.
            generator: the per-sample generator (needed in train mode).

        Returns:
            (3, T, size, size) float32.
        """
        if not frames:
            raise ValueError("a clip needs at least one frame")
        width, height = frames[0].size
        plan = self.geometry(width, height, len(frames), generator)
        clip = torch.stack([to_tensor(self.apply(f, b, fl)) for f, (b, fl) in zip(frames, plan, strict=True)], dim=1)
        if self.normalize:
            mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
            clip = (clip - mean) / std
        return clip


@dataclass(frozen=True)
class FlowTransform:
    """Transform a clip of (u, v) grayscale flow images into a (2, T, size, size) tensor in [0, 1].

    u and v of one frame always share the same crop and flip. A horizontal flip mirrors both images and
    **negates u**: with the usual linear map of ±20 px to [0, 255], ``u' = 255 − u`` (``1 − u`` after
    scaling). (The BalanceBench loader flips u and v independently and never negates u.)
    ``channels=3`` returns [u, v, u] (the TPAMI maintainer's 3-channel stacking).

    Example:
        >>> from PIL import Image
        >>> u = [Image.new("L", (64, 48), 200)]; v = [Image.new("L", (64, 48), 128)]
        >>> t = FlowTransform(size=16, train=False)(u, v)
        >>> t.shape, round(float(t[0].mean()), 3)
        (torch.Size([2, 1, 16, 16]), 0.784)
    """

    size: int = 224
    train: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    per_frame: bool = False
    random_crop: bool = False
    channels: int = 2

    def __post_init__(self) -> None:
        if self.channels not in (2, 3):
            raise ValueError(f"flow channels must be 2 or 3, got {self.channels}")

    def __call__(
        self, u_frames: Sequence[Image.Image], v_frames: Sequence[Image.Image], generator: torch.Generator | None = None
    ) -> Tensor:
        """Transform T (u, v) pairs into (channels, T, size, size)."""
        if len(u_frames) != len(v_frames) or not u_frames:
            raise ValueError(f"need matching non-empty u and v frame lists, got {len(u_frames)} and {len(v_frames)}")
        pil = require("PIL.Image", "flow transforms")
        width, height = u_frames[0].size
        geometry = ClipTransform(
            size=self.size,
            train=self.train,
            scale=self.scale,
            ratio=self.ratio,
            flip=self.flip,
            per_frame=self.per_frame,
            normalize=False,
        )
        plan = geometry.geometry(width, height, len(u_frames), generator)
        channels_u, channels_v = [], []
        for u, v, (box, flipped) in zip(u_frames, v_frames, plan, strict=True):
            if self.train and not self.random_crop:
                box = (0, 0, width, height)  # BalanceBench resizes flow without cropping; flips only
            size = (self.size, self.size)
            u_img = u.resize(size, pil.Resampling.BILINEAR, box=box)
            v_img = v.resize(size, pil.Resampling.BILINEAR, box=box)
            u_t, v_t = to_tensor(u_img)[0], to_tensor(v_img)[0]
            if flipped:
                u_t, v_t = 1.0 - u_t.flip(-1), v_t.flip(-1)
            channels_u.append(u_t)
            channels_v.append(v_t)
        u_clip, v_clip = torch.stack(channels_u), torch.stack(channels_v)
        stacked = [u_clip, v_clip] if self.channels == 2 else [u_clip, v_clip, u_clip]
        return torch.stack(stacked, dim=0)
