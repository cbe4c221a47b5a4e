"""Transformer fusion: per-modality token sequences into a shared encoder with a classification token.

Two variants, both one pass of shared pre-norm blocks built on
:func:`torch.nn.functional.scaled_dot_product_attention`, with one boolean attention mask per
batch (no loop over samples or modalities):

* ``"joint"``: self-attention over ``[CLS, tokens_1, ..., tokens_M]`` (VATT-style shared encoder);
* ``"bottleneck"``: ``[CLS, F fusion tokens, tokens_1, ..., tokens_M]`` where a modality's tokens
  attend only to their own modality and to the fusion tokens, and the fusion tokens (CLS among
  them) attend to everything: modalities exchange information only through the ``F + 1`` shared
  tokens (the attention bottleneck of MBT, Nagrani et al., NeurIPS 2021, in one masked pass).

Modality-specific (what OGM modulates): the optional tokenizer, the input projection, the
modality and position embeddings, and ``modality_depth`` per-modality blocks run before the
fusion. Shared: CLS, fusion tokens, the ``depth`` fusion blocks, the final norm and the head.

A dropped or padded token is removed from the attention keys; every query still attends to
itself, so no row of the mask is empty (no NaN), and nothing reads a removed token's output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modbalance.interaction.base import InteractionModel

__all__ = ["TRANSFORMER_VARIANTS", "Tokens", "TransformerBlock", "TransformerFusion"]

#: Values of ``TransformerFusion(variant=...)``.
TRANSFORMER_VARIANTS: tuple[str, ...] = ("joint", "bottleneck")


class Tokens(NamedTuple):
    """A padded batch of variable-length token sequences.

    Attributes:
        values: ``(B, T, D)`` tokens (padding anywhere, any value).
        valid: ``(B, T)`` bool, True for real tokens.

    Example:
        >>> import torch
        >>> batch = Tokens(torch.randn(2, 3, 4), torch.tensor([[True, True, False], [True, True, True]]))
        >>> batch.values.shape, batch.valid.sum(dim=1).tolist()
        (torch.Size([2, 3, 4]), [2, 3])
    """

    values: Tensor
    valid: Tensor


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x), mask)``, then ``x + MLP(LN(x))``.

    Args:
        dim: token width ``D`` (divisible by ``heads``).
        heads: attention heads.
        mlp_ratio: hidden width of the MLP over ``D``.
        dropout: attention and MLP dropout (training mode only).

    Shapes:
        x: ``(B, N, D)``; mask: bool, broadcastable to ``(B, heads, N, N)``, True where a query
        may attend to a key.

    Example:
        >>> import torch
        >>> block = TransformerBlock(8, heads=2)
        >>> mask = torch.ones(1, 1, 5, 5, dtype=torch.bool)
        >>> block(torch.randn(3, 5, 8), mask).shape
        torch.Size([3, 5, 8])
    """

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"d_model={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.dropout = float(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_ratio * dim, dim)
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``(B, N, D) -> (B, N, D)``."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        drop = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


def _self_mask(valid: Tensor) -> Tensor:
    """``(B, T)`` valid keys -> ``(B, 1, T, T)`` mask where every query also sees itself."""
    eye = torch.eye(valid.shape[1], dtype=torch.bool, device=valid.device)
    return (valid[:, None, :] | eye)[:, None]


class TransformerFusion(InteractionModel):
    """Token-level fusion of M >= 2 modalities with a shared transformer and a classification token.

    Args:
        token_dims: modality name -> width of its tokens (after the tokenizer, if any).
        num_classes: number of classes.
        d_model: width inside the transformer.
        depth: shared fusion blocks.
        heads: attention heads.
        variant: ``"joint"`` or ``"bottleneck"`` (module docstring).
        fusion_tokens: number ``F`` of shared fusion tokens (bottleneck only).
        modality_depth: per-modality blocks before the fusion (modality-specific).
        max_tokens: longest sequence per modality (size of the learned position embedding).
        mlp_ratio: MLP width over ``d_model``.
        dropout: dropout in the blocks.
        tokenizers: optional modality name -> module mapping that modality's raw input to
            ``(B, T, token_dims[m])`` tokens (e.g. a CNN trunk and a flatten); without one the
            input must already be tokens.
        unimodal: ``"masked"`` (exact: CLS over m's tokens alone; one extra no-grad pass of the
            fusion blocks over each modality's own tokens, about one pass over all tokens in all)
            or ``"heads"`` (see :mod:`modbalance.interaction.base`).
        ogm_shared: ``None`` or a modality that receives the shared parameters in OGM's map.

    Inputs:
        modality name -> ``(B, T_m, token_dims[m])`` tensor, or :class:`Tokens` with a validity
        mask for variable lengths (a sample whose modality has no valid token counts as lacking
        that modality). ``ModelOutput.features[m]``: ``(B, d_model)``, the mean of m's valid tokens
        after its own blocks, before any interaction.

    Example:
        >>> import torch
        >>> from modbalance import OPM, unimodal_scores
        >>> model = TransformerFusion({"audio": 6, "visual": 4}, num_classes=3, d_model=16, depth=1, heads=2,
        ...                           variant="bottleneck", fusion_tokens=2)
        >>> x = {"audio": torch.randn(5, 7, 6), "visual": torch.randn(5, 3, 4)}
        >>> y = torch.randint(0, 3, (5,))
        >>> out = model(x, opm=OPM(p_exe=1.0), scores=lambda z: unimodal_scores(z, y))
        >>> out.logits.shape, out.unimodal_logits["visual"].shape, out.features["audio"].shape
        (torch.Size([5, 3]), torch.Size([5, 3]), torch.Size([5, 16]))
    """

    def __init__(
        self,
        token_dims: Mapping[str, int],
        num_classes: int,
        *,
        d_model: int = 64,
        depth: int = 2,
        heads: int = 4,
        variant: str = "joint",
        fusion_tokens: int = 4,
        modality_depth: int = 0,
        max_tokens: int = 256,
        mlp_ratio: int = 2,
        dropout: float = 0.0,
        tokenizers: Mapping[str, nn.Module] | None = None,
        unimodal: str = "masked",
        ogm_shared: str | None = None,
    ) -> None:
        names = list(token_dims)
        super().__init__(names, num_classes, dict.fromkeys(names, d_model), unimodal=unimodal, ogm_shared=ogm_shared)
        if variant not in TRANSFORMER_VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(TRANSFORMER_VARIANTS)}, got {variant!r}")
        for key, value, low in (
            ("d_model", d_model, 1),
            ("depth", depth, 1),
            ("heads", heads, 1),
            ("fusion_tokens", fusion_tokens, 0),
            ("modality_depth", modality_depth, 0),
            ("max_tokens", max_tokens, 1),
            ("mlp_ratio", mlp_ratio, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{key} must be an int >= {low}, got {value!r}")
        for name, dim in token_dims.items():
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                raise ValueError(f"token width of {name!r} must be a positive int, got {dim!r}")
        tokenizers = dict(tokenizers or {})
        unknown = sorted(set(tokenizers) - set(names))
        if unknown:
            raise ValueError(f"tokenizers for {unknown} are not among the modalities {names}")
        self.token_dims = dict(token_dims)
        self.variant = variant
        self.max_tokens = max_tokens
        self.num_fusion = fusion_tokens if variant == "bottleneck" else 0
        self.tokenizers = nn.ModuleDict(tokenizers)
        self.proj = nn.ModuleDict({m: nn.Linear(d, d_model) for m, d in token_dims.items()})
        self.modality_embed = nn.ParameterDict({m: nn.Parameter(torch.zeros(d_model)) for m in names})
        self.pos_embed = nn.ParameterDict({m: nn.Parameter(torch.zeros(max_tokens, d_model)) for m in names})
        self.modality_blocks = nn.ModuleDict(
            {
                m: nn.ModuleList(TransformerBlock(d_model, heads, mlp_ratio, dropout) for _ in range(modality_depth))
                for m in names
            }
        )
        self.cls = nn.Parameter(torch.zeros(1, 1 + self.num_fusion, d_model))
        self.blocks = nn.ModuleList(TransformerBlock(d_model, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)
        for parameter in (self.cls, *self.modality_embed.values(), *self.pos_embed.values()):
            nn.init.trunc_normal_(parameter, std=0.02)

    def _own_parameters(self) -> dict[str, list[nn.Parameter]]:
        groups: dict[str, list[nn.Parameter]] = {}
        for m in self.modalities:
            params = [*self.proj[m].parameters(), self.modality_embed[m], self.pos_embed[m]]
            params += list(self.modality_blocks[m].parameters())
            if m in self.tokenizers:
                params += list(self.tokenizers[m].parameters())
            groups[m] = params
        return groups

    def _check_input(self, name: str, value: Any) -> None:
        if isinstance(value, Tokens):
            values, valid = value
            if valid.dtype != torch.bool or tuple(valid.shape) != tuple(values.shape[:2]):
                raise ValueError(
                    f"inputs[{name!r}].valid must be a bool (B, T) mask matching values {tuple(values.shape)}, "
                    f"got {valid.dtype} {tuple(valid.shape)}"
                )
            value = values
        if not isinstance(value, Tensor):
            raise TypeError(f"inputs[{name!r}] must be a Tensor or Tokens, got {type(value).__name__}")
        if name in self.tokenizers:
            return
        if value.dim() != 3 or value.shape[2] != self.token_dims[name]:
            raise ValueError(
                f"inputs[{name!r}] must be tokens of shape (B, T, {self.token_dims[name]}), got {tuple(value.shape)}"
            )
        if value.shape[1] > self.max_tokens:
            raise ValueError(
                f"inputs[{name!r}] has {value.shape[1]} tokens (shape {tuple(value.shape)}), more than "
                f"max_tokens={self.max_tokens}"
            )

    def _tokens(self, name: str, value: Any) -> tuple[Tensor, Tensor]:
        values, valid = value if isinstance(value, Tokens) else (value, None)
        if name in self.tokenizers:
            values = self.tokenizers[name](values)
            if values.dim() != 3 or values.shape[2] != self.token_dims[name] or values.shape[1] > self.max_tokens:
                raise ValueError(
                    f"tokenizers[{name!r}] returned shape {tuple(values.shape)}; expected "
                    f"(B, T <= {self.max_tokens}, {self.token_dims[name]})"
                )
        if valid is None:
            valid = torch.ones(values.shape[:2], dtype=torch.bool, device=values.device)
        elif valid.shape[1] != values.shape[1]:
            raise ValueError(f"inputs[{name!r}].valid has {valid.shape[1]} tokens, the tokens have {values.shape[1]}")
        return values, valid

    def _prepare(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Tensor]]:
        state: dict[str, Any] = {}
        features: dict[str, Tensor] = {}
        for m in self.modalities:
            values, valid = self._tokens(m, inputs[m])
            t = values.shape[1]
            x = self.proj[m](values) + self.modality_embed[m] + self.pos_embed[m][:t]
            blocks = cast(nn.ModuleList, self.modality_blocks[m])
            if len(blocks):
                mask = _self_mask(valid)
                for block in blocks:
                    x = block(x, mask)
            weights = valid.to(x.dtype).unsqueeze(-1)
            features[m] = (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)
            state[m] = (x, valid)
        return state, features

    def _interact(
        self, state: Mapping[str, Any], names: Sequence[str], weight: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        first = state[names[0]][0]
        b, device = first.shape[0], first.device
        shared = self.cls.expand(b, -1, -1).to(first.dtype)
        pieces, keys, segments = [shared], [torch.ones(b, shared.shape[1], dtype=torch.bool, device=device)], [0]
        sizes = [shared.shape[1]]
        for j, m in enumerate(names):
            x, valid = state[m]
            present = weight[:, j] > 0
            # Survivors carry OPM's rescale; a dropped modality is removed from the keys instead.
            factor = torch.where(present, weight[:, j], torch.ones_like(weight[:, j])).to(x.dtype)
            pieces.append(x * factor[:, None, None])
            keys.append(valid & present[:, None])
            segments.append(j + 1)
            sizes.append(x.shape[1])
        h = torch.cat(pieces, dim=1)
        key_ok = torch.cat(keys, dim=1)  # (B, N)
        n = h.shape[1]
        segment = torch.repeat_interleave(
            torch.tensor(segments, device=device), torch.tensor(sizes, device=device), output_size=n
        )
        allowed = key_ok[:, None, :].expand(b, n, n)
        if self.variant == "bottleneck":
            pattern = (segment[:, None] == 0) | (segment[None, :] == 0) | (segment[:, None] == segment[None, :])
            allowed = allowed & pattern
        allowed = allowed | torch.eye(n, dtype=torch.bool, device=device)
        mask = allowed[:, None]
        for block in self.blocks:
            h = block(h, mask)
        logits = self.head(self.norm(h[:, 0]))
        reps: dict[str, Tensor] = {}
        start = sizes[0]
        for m, size in zip(names, sizes[1:], strict=True):
            valid = state[m][1].to(h.dtype).unsqueeze(-1)
            reps[m] = (h[:, start : start + size] * valid).sum(1) / valid.sum(1).clamp_min(1.0)
            start += size
        return logits, reps
