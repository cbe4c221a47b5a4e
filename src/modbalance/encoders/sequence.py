"""Transformer encoder for sequences of pre-extracted features (CMU-MOSEI text, audio and vision).

Pipeline: ``(B, L, in_dim)`` → ``Conv1d(in_dim, d_model, kernel_size=1)`` (a per-step linear projection) →
``nn.TransformerEncoder`` (post-norm layers, ReLU, batch-first) → one step (or the mean) → ``(B, d_model)``.

Reference sizes for MOSEI (BalanceBench ``encoders/transformer_encoder.py``):
``d_model=1024, num_heads=4, num_layers=2, dim_feedforward=512, dropout=0.1``, inputs of 300 (GloVe text),
74 (COVAREP audio) and 35 (Facet vision) dims. Our defaults are much smaller so that CPU tests are fast; pass
the reference sizes explicitly to reproduce the benchmark. Known deviations from that reference:

* BalanceBench projects with ``Linear(in_dim, 512)`` then a bias-free ``Conv1d(512, 1024, 1)``; with no
  non-linearity in between this is one affine map of rank ≤ 512, which for ``in_dim ≤ 512`` (all MOSEI
  streams) spans exactly the maps of our single ``Conv1d`` with bias.
* BalanceBench reads ``transformer(x)[0]`` on a sequence-first tensor, i.e. the **first** time step, although
  MulT-style encoders take "the last time step" (MulT's choice). We default to ``pool="last"`` and offer
  ``pool="first"`` for BalanceBench parity and ``pool="mean"``.
* Neither reference adds positional encodings, and neither do we: order enters only through the pooled step.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["SequenceTransformerEncoder"]

Pooling = Literal["last", "first", "mean"]
_POOLS = ("last", "first", "mean")


class SequenceTransformerEncoder(nn.Module):
    """Encode a feature sequence ``(B, L, in_dim)`` to ``(B, d_model)``.

    Args:
        in_dim: Features per time step (300 text, 74 audio, 35 vision for MOSEI).
        d_model: Width of the Transformer (reference 1024).
        num_heads: Attention heads; must divide ``d_model`` (reference 4).
        num_layers: Encoder layers (reference 2).
        dim_feedforward: Hidden width of each layer's MLP; ``None`` means ``2 * d_model`` (reference 512).
        dropout: Dropout inside the layers (reference 0.1).
        pool: Which step becomes the feature: ``"last"`` (last valid step), ``"first"`` (first valid step) or
            ``"mean"`` (mean over valid steps).

    Attributes:
        out_dim: ``d_model``.

    Shapes:
        * ``x``: ``(B, L, in_dim)``.
        * ``padding_mask`` (optional): ``(B, L)`` bool, **True at padded steps** (PyTorch's
          ``src_key_padding_mask`` convention). Padding may sit on either side; every row needs at least one
          valid step.
        * output: ``(B, d_model)``.

    Raises:
        ValueError: Bad sizes at construction; from :meth:`forward`, a wrong input shape, a mask of the
            wrong shape, or a row that is all padding (it would give NaN features).
        TypeError: From :meth:`forward`, a mask that is not bool.

    Example:
        >>> enc = SequenceTransformerEncoder(35, d_model=16, num_heads=2)
        >>> x = torch.randn(3, 7, 35)
        >>> enc(x).shape
        torch.Size([3, 16])
        >>> mask = torch.tensor([[False] * 7, [False] * 5 + [True] * 2, [True] + [False] * 6])
        >>> enc(x, padding_mask=mask).shape
        torch.Size([3, 16])
    """

    def __init__(
        self,
        in_dim: int,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        pool: Pooling = "last",
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_dim", in_dim),
            ("d_model", d_model),
            ("num_heads", num_heads),
            ("num_layers", num_layers),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if d_model % num_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must divide d_model ({d_model})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {', '.join(_POOLS)}; got {pool!r}")
        feedforward = 2 * d_model if dim_feedforward is None else dim_feedforward
        if not isinstance(feedforward, int) or feedforward < 1:
            raise ValueError(f"dim_feedforward must be a positive int or None, got {dim_feedforward!r}")
        self.in_dim = in_dim
        self.out_dim = d_model
        self.pool = pool
        self.proj = nn.Conv1d(in_dim, d_model, kernel_size=1)
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, dim_feedforward=feedforward, dropout=dropout, batch_first=True
        )
        # No nested-tensor conversion: in eval it would zero the padded steps (which we never read) and warn
        # for some head counts; without it train and eval treat the padded steps alike.
        self.transformer = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)

    def _check(self, x: Tensor, padding_mask: Tensor | None) -> None:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[2] != self.in_dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"expected x of shape (B, L, {self.in_dim}), got {shape}")
        if padding_mask is None:
            return
        if not isinstance(padding_mask, Tensor) or padding_mask.dtype != torch.bool:
            got = padding_mask.dtype if isinstance(padding_mask, Tensor) else type(padding_mask).__name__
            raise TypeError(f"padding_mask must be a bool tensor (True = padding), got {got}")
        if padding_mask.shape != x.shape[:2]:
            raise ValueError(
                f"padding_mask must have shape (B, L) = {tuple(x.shape[:2])}, got {tuple(padding_mask.shape)}"
            )
        # One host sync per call, kept on purpose: an all-padding row makes attention softmax over nothing and
        # silently yields NaN features.
        if bool(padding_mask.all(dim=1).any()):
            rows = padding_mask.all(dim=1).nonzero().flatten().tolist()
            raise ValueError(f"padding_mask rows {rows} are all padding; each sequence needs a valid step")

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """Encode ``x`` ``(B, L, in_dim)`` (with optional ``padding_mask`` ``(B, L)``) to ``(B, d_model)``."""
        self._check(x, padding_mask)
        h = self.proj(x.transpose(1, 2)).transpose(1, 2)  # (B, L, d_model)
        h = self.transformer(h, src_key_padding_mask=padding_mask)
        if padding_mask is None:
            if self.pool == "mean":
                return h.mean(dim=1)
            return h[:, -1] if self.pool == "last" else h[:, 0]
        valid = ~padding_mask  # (B, L)
        if self.pool == "mean":
            weights = valid.to(h.dtype).unsqueeze(2)
            return (h * weights).sum(dim=1) / weights.sum(dim=1)
        steps = torch.arange(x.shape[1], device=x.device).expand_as(valid)
        if self.pool == "last":
            index = torch.where(valid, steps, -1).amax(dim=1)
        else:
            index = torch.where(valid, steps, x.shape[1]).amin(dim=1)
        return h[torch.arange(h.shape[0], device=h.device), index]
