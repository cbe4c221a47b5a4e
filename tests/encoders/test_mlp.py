"""Tests for the MLP encoder."""

from __future__ import annotations

import pytest
import torch

from modbalance.encoders.mlp import MLPEncoder


def test_layer_widths_and_output_shape() -> None:
    encoder = MLPEncoder(in_dim=10, hidden_dim=7, out_dim=3, depth=3)
    shapes = [tuple(layer.weight.shape) for layer in encoder.layers]
    assert shapes == [(7, 10), (7, 7), (3, 7)]
    assert encoder(torch.randn(5, 10)).shape == (5, 3)


def test_depth_one_is_linear_then_relu_by_hand() -> None:
    encoder = MLPEncoder(in_dim=2, hidden_dim=99, out_dim=2, depth=1)
    with torch.no_grad():
        encoder.layers[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.5]]))
        encoder.layers[0].bias.copy_(torch.tensor([0.0, -1.0]))
    x = torch.tensor([[1.0, 1.0], [3.0, 1.0]])
    # row 1: (1 - 2, 0.5 + 0.5 - 1) = (-1, 0) -> (0, 0); row 2: (3 - 2, 1.5 + 0.5 - 1) = (1, 1)
    assert torch.equal(encoder(x), torch.tensor([[0.0, 0.0], [1.0, 1.0]]))


def test_features_are_non_negative_and_every_parameter_gets_a_gradient() -> None:
    encoder = MLPEncoder(6, 16, 4, depth=2)
    out = encoder(torch.randn(64, 6))
    assert (out >= 0).all()
    out.sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_dropout_only_in_training_mode() -> None:
    encoder = MLPEncoder(8, 256, 4, depth=2, dropout=0.5)
    x = torch.randn(32, 8)
    encoder.eval()
    assert torch.equal(encoder(x), encoder(x))
    encoder.train()
    assert not torch.equal(encoder(x), encoder(x))


@pytest.mark.parametrize(
    ("kwargs", "error", "word"),
    [
        ({"in_dim": 0}, ValueError, "in_dim"),
        ({"hidden_dim": -3}, ValueError, "hidden_dim"),
        ({"out_dim": 2.5}, TypeError, "out_dim"),
        ({"depth": 0}, ValueError, "depth"),
        ({"depth": True}, TypeError, "depth"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"dropout": -0.1}, ValueError, "dropout"),
    ],
)
def test_validation(kwargs: dict[str, object], error: type[Exception], word: str) -> None:
    arguments = {"in_dim": 4, "hidden_dim": 8, "out_dim": 2, **kwargs}
    with pytest.raises(error, match=word):
        MLPEncoder(**arguments)  # type: ignore[arg-type]


def test_wrong_input_shape_names_expected_shape() -> None:
    encoder = MLPEncoder(4, 8, 2)
    with pytest.raises(ValueError, match=r"\(B, 4\).*\(3, 5\)"):
        encoder(torch.randn(3, 5))
