"""Uni-modal logits: head slices, zero-out and auxiliary heads."""

import pytest
import torch
from torch import nn

from modbalance.scores import AuxiliaryHeads, head_slice, zero_out


def test_head_slice_bias_share_and_detachment():
    head = nn.Linear(4, 2)
    feats = {"a": torch.randn(3, 1, requires_grad=True), "b": torch.randn(3, 3)}
    parts = head_slice(head, feats, bias_share=0.25)
    expected_a = feats["a"] @ head.weight[:, :1].T + 0.25 * head.bias
    assert torch.allclose(parts["a"], expected_a) and not parts["a"].requires_grad
    with pytest.raises(ValueError, match="add up to 5"):
        head_slice(head, {"a": torch.ones(1, 2), "b": torch.ones(1, 3)})


def test_zero_out_runs_head_once_per_modality_without_grad():
    calls = []

    def head(f):
        calls.append({k: v.abs().sum().item() for k, v in f.items()})
        return f["a"] + 2 * f["b"]

    feats = {"a": torch.ones(2, 2, requires_grad=True), "b": torch.ones(2, 2)}
    out = zero_out(head, feats)
    assert calls == [{"a": 4.0, "b": 0.0}, {"a": 0.0, "b": 4.0}]
    assert out["b"].tolist() == [[2.0, 2.0], [2.0, 2.0]] and not out["a"].requires_grad


def test_auxiliary_heads_learn_without_touching_encoders():
    torch.manual_seed(0)
    encoder = nn.Linear(2, 4)
    heads = AuxiliaryHeads({"a": 4}, num_classes=2)
    x = torch.randn(256, 2)
    y = (x[:, 0] > 0).long()
    opt = torch.optim.SGD(heads.parameters(), lr=0.5)
    before = encoder.weight.clone()
    for _ in range(100):
        opt.zero_grad()
        heads.loss({"a": encoder(x)}, y).backward()
        opt.step()
    assert encoder.weight.grad is None and torch.equal(encoder.weight, before)
    accuracy = (heads({"a": encoder(x)})["a"].argmax(1) == y).float().mean().item()
    assert accuracy > 0.9
    with pytest.raises(ValueError, match="missing"):
        heads({"b": torch.ones(1, 4)})
