"""SequenceTransformerEncoder: projection, pooling, padding masks, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from modbalance.encoders.sequence import SequenceTransformerEncoder


def _encoder(pool: str = "last", **kwargs: object) -> SequenceTransformerEncoder:
    options = {"d_model": 16, "num_heads": 2, "num_layers": 2, "dropout": 0.0, **kwargs}
    return SequenceTransformerEncoder(5, pool=pool, **options).eval()  # type: ignore[arg-type]


def test_output_shape_and_out_dim() -> None:
    enc = SequenceTransformerEncoder(74, d_model=32, num_heads=4)
    out = enc(torch.randn(3, 11, 74))
    assert out.shape == (3, 32)
    assert enc.out_dim == 32
    assert torch.isfinite(out).all()


def test_projection_is_a_per_step_affine_map() -> None:
    enc = _encoder()
    x = torch.randn(2, 4, 5)
    weight = enc.proj.weight.squeeze(-1)  # (d_model, in_dim)
    with torch.no_grad():
        expected = x @ weight.T + enc.proj.bias
        torch.testing.assert_close(enc.proj(x.transpose(1, 2)).transpose(1, 2), expected)


@pytest.mark.parametrize(
    ("pool", "pick"),
    [("last", lambda h: h[:, -1]), ("first", lambda h: h[:, 0]), ("mean", lambda h: h.mean(dim=1))],
)
def test_pooling_without_mask(pool: str, pick) -> None:
    enc = _encoder(pool)
    x = torch.randn(3, 6, 5)
    with torch.no_grad():
        h = enc.transformer(enc.proj(x.transpose(1, 2)).transpose(1, 2))
        torch.testing.assert_close(enc(x), pick(h))


@pytest.mark.parametrize("pool", ["last", "first", "mean"])
def test_padded_rows_equal_unpadded_runs(pool: str) -> None:
    """With a mask, each row must encode exactly as its valid steps would alone (padding on either side)."""
    enc = _encoder(pool)
    seq_len = 7
    lengths = [7, 4, 1, 5]
    left = [False, False, False, True]  # the last row is padded at the front
    x = torch.randn(len(lengths), seq_len, 5)
    mask = torch.ones(len(lengths), seq_len, dtype=torch.bool)
    for row, (n, on_left) in enumerate(zip(lengths, left, strict=True)):
        if on_left:
            mask[row, seq_len - n :] = False
        else:
            mask[row, :n] = False
    x = x.masked_fill(mask.unsqueeze(-1), 1e3)  # loud garbage at padded steps must not leak
    with torch.no_grad():
        out = enc(x, padding_mask=mask)
        for row in range(len(lengths)):
            alone = enc(x[row : row + 1, ~mask[row]])
            torch.testing.assert_close(out[row : row + 1], alone, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(out).all()


def test_all_valid_mask_equals_no_mask() -> None:
    enc = _encoder()
    x = torch.randn(2, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(enc(x, torch.zeros(2, 5, dtype=torch.bool)), enc(x))


def test_every_parameter_gets_a_gradient() -> None:
    enc = SequenceTransformerEncoder(5, d_model=16, num_heads=2, dropout=0.1).train()
    mask = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    out = enc(torch.randn(2, 6, 5), padding_mask=mask)
    (out * torch.randn_like(out)).sum().backward()
    for name, param in enc.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_reference_sizes_build() -> None:
    """The MOSEI reference configuration: d_model 1024, 4 heads, 2 layers, feed-forward 512."""
    d, ff, in_dim = 1024, 512, 300
    enc = SequenceTransformerEncoder(in_dim, d_model=d, num_heads=4, num_layers=2, dim_feedforward=ff)
    per_layer = (3 * d * d + 3 * d) + (d * d + d) + (d * ff + ff) + (ff * d + d) + 2 * 2 * d
    assert sum(p.numel() for p in enc.parameters()) == (in_dim * d + d) + 2 * per_layer
    assert enc.transformer.layers[0].self_attn.num_heads == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_dim": 0}, "in_dim"),
        ({"in_dim": 5, "d_model": 10, "num_heads": 4}, "must divide"),
        ({"in_dim": 5, "num_layers": 0}, "num_layers"),
        ({"in_dim": 5, "dropout": 1.0}, "dropout"),
        ({"in_dim": 5, "pool": "max"}, "pool must be one of last, first, mean"),
        ({"in_dim": 5, "dim_feedforward": 0}, "dim_feedforward"),
    ],
)
def test_bad_construction(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SequenceTransformerEncoder(**kwargs)  # type: ignore[arg-type]


def test_bad_inputs() -> None:
    enc = _encoder()
    x = torch.randn(2, 4, 5)
    with pytest.raises(ValueError, match=r"\(B, L, 5\), got \(2, 4, 6\)"):
        enc(torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match=r"\(B, L, 5\)"):
        enc(torch.randn(4, 5))
    with pytest.raises(TypeError, match="bool"):
        enc(x, padding_mask=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(B, L\) = \(2, 4\), got \(2, 3\)"):
        enc(x, padding_mask=torch.zeros(2, 3, dtype=torch.bool))
    all_padded = torch.tensor([[False] * 4, [True] * 4])
    with pytest.raises(ValueError, match=r"rows \[1\] are all padding"):
        enc(x, padding_mask=all_padded)
