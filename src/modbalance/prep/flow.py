"""Dense optical flow for UCF-101: a small coarse-to-fine Horn–Schunck in torch.

TV-L1 (the flow of the twostreamfusion release) needs OpenCV; this module is a dependency-free
stand-in. Frames are converted to grey, downscaled so the longer side is at most ``max_side`` pixels,
and the flow is estimated on a pyramid: at each level the second frame is warped by the current flow
(bilinear ``grid_sample``) and Horn–Schunck iterations estimate the increment

.. math::

    u \\leftarrow \\bar u - I_x \\frac{I_x \\bar u + I_y \\bar v + I_t}{\\alpha^2 + I_x^2 + I_y^2},\\qquad
    v \\leftarrow \\bar v - I_y \\frac{I_x \\bar u + I_y \\bar v + I_t}{\\alpha^2 + I_x^2 + I_y^2}

with :math:`\\bar u` the 8-neighbour weighted mean. The flow is then scaled back to the input resolution
(in input pixels). :func:`flow_to_uint8` clips it to ±20 px and maps it linearly to [0, 255], the
convention of the JPEG flow releases (128 ≈ no motion).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Flow is clipped to ±FLOW_BOUND pixels before the 8-bit mapping.
FLOW_BOUND = 20.0

_AVERAGE = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def to_gray(frame: Tensor) -> Tensor:
    """(H, W, 3) uint8 RGB -> (H, W) float32 luma in [0, 1] (ITU-R BT.601 weights).

    Example:
        >>> to_gray(torch.full((2, 2, 3), 255, dtype=torch.uint8))[0, 0].item()
        1.0
    """
    weights = torch.tensor([0.299, 0.587, 0.114])
    return (frame.float() / 255.0) @ weights


def _conv(image: Tensor, kernel: Tensor) -> Tensor:
    pad = kernel.shape[-1] // 2
    padded = F.pad(image[None, None], (pad, pad, pad, pad), mode="replicate")
    return F.conv2d(padded, kernel[None, None])[0, 0]


def _warp(image: Tensor, u: Tensor, v: Tensor) -> Tensor:
    height, width = image.shape
    ys, xs = torch.meshgrid(torch.arange(height, dtype=u.dtype), torch.arange(width, dtype=u.dtype), indexing="ij")
    grid_x = (xs + u) / max(width - 1, 1) * 2 - 1
    grid_y = (ys + v) / max(height - 1, 1) * 2 - 1
    grid = torch.stack([grid_x, grid_y], dim=-1)[None]
    return F.grid_sample(image[None, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0, 0]


def _horn_schunck_level(first: Tensor, second: Tensor, alpha: float, iterations: int) -> tuple[Tensor, Tensor]:
    mean = 0.5 * (first + second)
    dx = torch.tensor([[0.0, 0.0, 0.0], [-0.5, 0.0, 0.5], [0.0, 0.0, 0.0]])
    ix, iy, it = _conv(mean, dx), _conv(mean, dx.T), second - first
    u = torch.zeros_like(first)
    v = torch.zeros_like(first)
    denominator = alpha**2 + ix**2 + iy**2
    for _ in range(iterations):
        u_bar, v_bar = _conv(u, _AVERAGE), _conv(v, _AVERAGE)
        step = (ix * u_bar + iy * v_bar + it) / denominator
        u, v = u_bar - ix * step, v_bar - iy * step
    return u, v


def horn_schunck(
    first: Tensor,
    second: Tensor,
    *,
    alpha: float = 0.03,
    iterations: int = 60,
    levels: int = 3,
    max_side: int = 160,
) -> tuple[Tensor, Tensor]:
    """Estimate the flow from ``first`` to ``second`` (both (H, W) grey in [0, 1]).

    Args:
        first: the earlier frame.
        second: the later frame.
        alpha: smoothness weight (intensities in [0, 1]).
        iterations: Horn–Schunck iterations per pyramid level.
        levels: pyramid levels (each halves the resolution).
        max_side: frames are first downscaled so that their longer side is at most this.

    Returns:
        ``(u, v)``: (H, W) horizontal and vertical displacement in input pixels (u > 0: motion to the
        right, v > 0: motion down).

    Example:
        >>> a = torch.zeros(48, 64); a[16:32, 20:36] = 1.0
        >>> b = torch.roll(a, shifts=2, dims=1)              # the square moves 2 px right
        >>> u, v = horn_schunck(a, b)
        >>> bool(u[16:32, 20:38].mean() > 0.5), bool(v[16:32, 20:38].abs().mean() < 0.5)
        (True, True)
    """
    if first.shape != second.shape or first.ndim != 2:
        raise ValueError(f"need two (H, W) frames of one size, got {tuple(first.shape)} and {tuple(second.shape)}")
    height, width = first.shape
    scale = min(1.0, max_side / max(height, width))
    size = (max(8, round(height * scale)), max(8, round(width * scale)))
    blur = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0

    def prepare(frame: Tensor) -> Tensor:
        small = F.interpolate(frame[None, None].float(), size=size, mode="area")[0, 0]
        return _conv(small, blur)

    pyramid = [(prepare(first), prepare(second))]
    for _ in range(levels - 1):
        a, b = pyramid[-1]
        if min(a.shape) < 16:
            break
        pyramid.append((F.avg_pool2d(a[None, None], 2)[0, 0], F.avg_pool2d(b[None, None], 2)[0, 0]))
    u = torch.zeros_like(pyramid[-1][0])
    v = torch.zeros_like(u)
    for level, (a, b) in enumerate(reversed(pyramid)):
        if level > 0:
            u = F.interpolate(u[None, None], size=a.shape, mode="bilinear", align_corners=False)[0, 0] * 2
            v = F.interpolate(v[None, None], size=a.shape, mode="bilinear", align_corners=False)[0, 0] * 2
        du, dv = _horn_schunck_level(a, _warp(b, u, v), alpha, iterations)
        u, v = u + du, v + dv
    u = F.interpolate(u[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    v = F.interpolate(v[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    return u * (width / size[1]), v * (height / size[0])


def flow_to_uint8(component: Tensor, bound: float = FLOW_BOUND) -> Tensor:
    """Clip to ±bound and map linearly to uint8: −bound -> 0, 0 -> 128 (127.5 rounded), +bound -> 255.

    Example:
        >>> flow_to_uint8(torch.tensor([-30.0, 0.0, 20.0])).tolist()
        [0, 128, 255]
    """
    scaled = (component.clamp(-bound, bound) + bound) * (255.0 / (2 * bound))
    return scaled.round().to(torch.uint8)


def uint8_to_flow(pixels: Tensor, bound: float = FLOW_BOUND) -> Tensor:
    """Invert :func:`flow_to_uint8` (up to quantisation): pixels -> displacement in pixels.

    Example:
        >>> uint8_to_flow(torch.tensor([0, 255], dtype=torch.uint8)).tolist()
        [-20.0, 20.0]
    """
    return pixels.float() * (2 * bound / 255.0) - bound
