"""ENCODERS registry: names, errors, signature checks, and a contract test over every registered encoder."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from modbalance.encoders.registry import ENCODERS, Registry, build_encoder
from modbalance.encoders.resnet import ResNet18Encoder
from modbalance.encoders.sequence import SequenceTransformerEncoder

EXPECTED_NAMES = ["mlp", "resnet18", "resnet18_audio", "resnet18_flow", "resnet18_visual", "transformer"]
HAS_MLP = importlib.util.find_spec("modbalance.encoders.mlp") is not None

# name -> (tiny kwargs, input factory, expected feature size)
CASES: dict[str, tuple[dict[str, object], Callable[[], Tensor], int]] = {
    "resnet18_audio": ({}, lambda: torch.randn(2, 1, 40, 36), 512),
    "resnet18_visual": ({}, lambda: torch.randn(2, 3, 2, 32, 32), 512),
    "resnet18_flow": ({}, lambda: torch.randn(2, 2, 2, 32, 32), 512),
    "resnet18": ({"in_channels": 3, "temporal": False}, lambda: torch.randn(2, 3, 40, 36), 512),
    "transformer": ({"in_dim": 7, "d_model": 16, "num_heads": 2}, lambda: torch.randn(2, 5, 7), 16),
    "mlp": ({"in_dim": 7, "hidden_dim": 12, "out_dim": 9}, lambda: torch.randn(2, 7), 9),
}


def test_registered_names() -> None:
    assert ENCODERS.names() == EXPECTED_NAMES
    assert sorted(CASES) == EXPECTED_NAMES  # every registered encoder has a contract case below
    assert "transformer" in ENCODERS
    assert len(ENCODERS) == len(EXPECTED_NAMES)


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_encoder_contract(name: str) -> None:
    """Shape, finiteness, and a gradient for every parameter, for each registered encoder."""
    if name == "mlp" and not HAS_MLP:
        pytest.skip("modbalance.encoders.mlp is not written yet")
    kwargs, make_input, out_dim = CASES[name]
    encoder = build_encoder(name, **kwargs).train()
    assert isinstance(encoder, nn.Module)
    out = encoder(make_input())
    assert out.shape == (2, out_dim)
    assert torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    for pname, param in encoder.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname


def test_builders_configure_what_their_names_say() -> None:
    audio = build_encoder("resnet18_audio")
    flow = build_encoder("resnet18_flow", return_map=True)
    assert isinstance(audio, ResNet18Encoder)
    assert (audio.in_channels, audio.temporal, audio.return_map) == (1, False, False)
    assert (flow.in_channels, flow.temporal, flow.return_map) == (2, True, True)
    seq = build_encoder("transformer", in_dim=35, d_model=8, num_heads=2, pool="first")
    assert isinstance(seq, SequenceTransformerEncoder)
    assert (seq.in_dim, seq.out_dim, seq.pool) == (35, 8, "first")


def test_unknown_name_lists_available() -> None:
    expected = f"Unknown encoder 'resnet18_audo'. Available: {', '.join(EXPECTED_NAMES)}"
    with pytest.raises(ValueError) as info:
        build_encoder("resnet18_audo")
    assert str(info.value) == expected


def test_unexpected_kwarg_names_bad_and_accepted_keys() -> None:
    with pytest.raises(TypeError) as info:
        build_encoder("transformer", in_dim=3, dmodel=8)
    message = str(info.value)
    assert "Encoder 'transformer' got unexpected argument(s) 'dmodel'" in message
    assert "Accepted: in_dim, d_model, num_heads, num_layers, dim_feedforward, dropout, pool" in message
    with pytest.raises(TypeError, match=r"'in_channels'\. Accepted: return_map"):
        build_encoder("resnet18_audio", in_channels=3)


def test_missing_required_kwarg() -> None:
    with pytest.raises(TypeError, match=r"Encoder 'mlp' is missing required argument\(s\) 'hidden_dim', 'out_dim'"):
        build_encoder("mlp", in_dim=3)
    with pytest.raises(TypeError, match="'temporal'"):
        build_encoder("resnet18", in_channels=3)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="Encoder 'transformer' is already registered"):
        ENCODERS.register("transformer")
    registry: Registry[int] = Registry("widget")
    registry.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="Widget 'a' is already registered"):
        registry.register("a")(lambda: 2)
    assert registry.create("a") == 1
    with pytest.raises(ValueError, match="non-empty string"):
        registry.register("")
    with pytest.raises(TypeError, match="class or function"):
        registry.register("b")(3)  # type: ignore[type-var]
    assert registry.names() == ["a"]


def test_var_keyword_builders_accept_any_kwarg() -> None:
    registry: Registry[dict[str, object]] = Registry("thing")

    @registry.register("loose")
    def loose(**kwargs: object) -> dict[str, object]:
        return kwargs

    assert registry.create("loose", anything=1) == {"anything": 1}
    assert registry.get("loose") is loose
