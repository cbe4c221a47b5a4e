"""A plain multi-layer perceptron encoder for vector inputs (used on the imbalance lab)."""

from __future__ import annotations

import itertools

from torch import Tensor, nn

__all__ = ["MLPEncoder"]


def _positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class MLPEncoder(nn.Module):
    """``depth`` linear layers, each followed by ReLU: ``(B, in_dim) -> (B, out_dim)``.

    Layer widths are ``in_dim -> hidden_dim -> ... -> hidden_dim -> out_dim``; with ``depth=1``
    it is a single ``Linear(in_dim, out_dim)`` + ReLU and ``hidden_dim`` is unused. The output is
    taken after the last ReLU, like the pooled features of a ResNet, so features are
    non-negative. Dropout (if any) is applied after every hidden ReLU, not to the output.

    Args:
        in_dim: Input feature size.
        hidden_dim: Width of the hidden layers.
        out_dim: Output feature size.
        depth: Number of linear layers (>= 1).
        dropout: Dropout probability in ``[0, 1)`` after each hidden layer.

    Shape:
        - Input: ``(B, in_dim)``.
        - Output: ``(B, out_dim)``.

    Example:
        >>> import torch
        >>> encoder = MLPEncoder(in_dim=16, hidden_dim=32, out_dim=8, depth=3)
        >>> encoder(torch.randn(4, 16)).shape
        torch.Size([4, 8])
        >>> len(encoder.layers)
        3
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, depth: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dim = _positive_int(in_dim, "in_dim")
        self.hidden_dim = _positive_int(hidden_dim, "hidden_dim")
        self.out_dim = _positive_int(out_dim, "out_dim")
        self.depth = _positive_int(depth, "depth")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"dropout must be a float, got {type(dropout).__name__} {dropout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        widths = [in_dim] + [hidden_dim] * (depth - 1) + [out_dim]
        #: The linear layers, in order.
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.activation = nn.ReLU()
        self.drop = nn.Dropout(self.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Encode ``x`` of shape ``(B, in_dim)`` into features of shape ``(B, out_dim)``."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"MLPEncoder expects input of shape (B, {self.in_dim}), got {tuple(x.shape)}")
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = self.activation(layer(x))
            if i < last:
                x = self.drop(x)
        return x

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, hidden_dim={self.hidden_dim}, out_dim={self.out_dim}, depth={self.depth}"
