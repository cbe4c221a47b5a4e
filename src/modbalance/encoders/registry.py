"""Name-addressable encoders: the ``ENCODERS`` registry and :func:`build_encoder`.

Registered builders stay ordinary classes and functions, so users may call them directly. ``create`` checks
the keyword arguments against the builder's signature before calling it, so a typo in a config names the bad
key and the accepted ones instead of failing deep inside a constructor.

Registered names:

* ``resnet18_audio``, ``resnet18_visual``, ``resnet18_flow``: the builders in
  :mod:`modbalance.encoders.resnet`;
* ``resnet18``: the generic :class:`~modbalance.encoders.resnet.ResNet18Encoder` (``in_channels``,
  ``temporal``);
* ``transformer``: :class:`~modbalance.encoders.sequence.SequenceTransformerEncoder`;
* ``mlp``: ``modbalance.encoders.mlp.MLPEncoder`` (imported when built).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from modbalance.encoders.resnet import ResNet18Encoder, resnet18_audio, resnet18_flow, resnet18_visual
from modbalance.encoders.sequence import SequenceTransformerEncoder
from modbalance.registry import Registry

__all__ = ["ENCODERS", "Registry", "build_encoder"]


#: All encoders, by name. Each builds an ``nn.Module`` mapping one modality's input to ``(B, D)`` features.
ENCODERS: Registry[nn.Module] = Registry("encoder")

ENCODERS.register("resnet18_audio")(resnet18_audio)
ENCODERS.register("resnet18_visual")(resnet18_visual)
ENCODERS.register("resnet18_flow")(resnet18_flow)
ENCODERS.register("resnet18")(ResNet18Encoder)
ENCODERS.register("transformer")(SequenceTransformerEncoder)


@ENCODERS.register("mlp")
def mlp(in_dim: int, hidden_dim: int, out_dim: int, depth: int = 2, dropout: float = 0.0) -> nn.Module:
    """Build ``modbalance.encoders.mlp.MLPEncoder`` (imported here, on first use)."""
    from modbalance.encoders.mlp import MLPEncoder

    return MLPEncoder(in_dim, hidden_dim, out_dim, depth=depth, dropout=dropout)


def build_encoder(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered encoder ``name``; shorthand for ``ENCODERS.create(name, **kwargs)``.

    Raises:
        ValueError: Unknown name (the message lists the available ones).
        TypeError: A keyword the builder does not accept, or a missing required one.

    Example:
        >>> import torch
        >>> enc = build_encoder("transformer", in_dim=74, d_model=16, num_heads=2)
        >>> enc(torch.zeros(2, 5, 74)).shape
        torch.Size([2, 16])
        >>> build_encoder("resnet18_audo")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Unknown encoder 'resnet18_audo'. Available: mlp, resnet18, resnet18_audio, ...
    """
    return ENCODERS.create(name, **kwargs)
