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


class BatchNormHead(nn.Module):
    """A non-linear fusion head with BatchNorm and dropout (both mode-dependent)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(4, 3)

    def forward(self, f):
        return self.out(self.drop(self.norm(f["a"] + f["b"])))


def test_zero_out_measures_in_eval_mode_and_restores_every_mode():
    torch.manual_seed(0)
    head = BatchNormHead().train()
    head.drop.eval()  # a submodule in its own mode must get it back
    feats = {"a": torch.randn(8, 4) + 3, "b": torch.randn(8, 4)}
    mean, var, count = head.norm.running_mean.clone(), head.norm.running_var.clone(), int(head.norm.num_batches_tracked)
    first = zero_out(head, feats)
    # no BatchNorm update from the zeroed inputs
    assert torch.equal(head.norm.running_mean, mean) and torch.equal(head.norm.running_var, var)
    assert int(head.norm.num_batches_tracked) == count
    # eval mode by hand: running statistics (0, 1 at init) and no dropout
    with torch.no_grad():
        expected = head.out((feats["a"] - mean) / torch.sqrt(var + head.norm.eps) * head.norm.weight + head.norm.bias)
    assert torch.allclose(first["a"], expected, atol=1e-5)
    assert head.training and head.norm.training and not head.drop.training and head.out.training
    # a bound method finds its module; a lambda needs module=
    owner = nn.Module()
    owner.head = head
    owner.fuse = lambda f: head(f)  # a plain function: nothing to switch unless told
    zero_out(owner.fuse, feats, module=head)
    assert int(head.norm.num_batches_tracked) == count


def test_zero_out_restores_modes_when_the_head_raises():
    head = BatchNormHead().train()

    def broken(f):
        assert not head.training
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        zero_out(broken, {"a": torch.ones(2, 4), "b": torch.ones(2, 4)}, module=head)
    assert head.training and head.norm.training


def train_heads(heads, *, backward=True, in_optimizer=True, steps=AuxiliaryHeads.CHECK_AFTER + 1):
    torch.manual_seed(0)
    encoder = nn.Linear(2, 4)
    params = [*encoder.parameters(), *(heads.parameters() if in_optimizer else [])]
    opt = torch.optim.SGD(params, lr=0.1)
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))
    for _ in range(steps):
        opt.zero_grad()
        feats = {"a": encoder(x)}
        loss = nn.functional.cross_entropy(feats["a"][:, :2], y)
        if backward:
            loss = loss + heads.loss(feats, y)
        else:
            heads(feats)  # logits used for scores only, the heads' loss forgotten
        loss.backward()
        opt.step()


def test_auxiliary_heads_warn_when_they_are_not_trained():
    with pytest.warns(UserWarning, match="never received a gradient"):
        train_heads(AuxiliaryHeads({"a": 4}, num_classes=2), backward=False)
    with pytest.warns(UserWarning, match="add heads.parameters\\(\\) to the optimizer"):
        train_heads(AuxiliaryHeads({"a": 4}, num_classes=2), in_optimizer=False)


def test_auxiliary_heads_trained_properly_do_not_warn(recwarn):
    heads = AuxiliaryHeads({"a": 4}, num_classes=2)
    train_heads(heads, steps=3 * AuxiliaryHeads.CHECK_AFTER)
    heads.eval()
    heads({"a": torch.ones(1, 4)})  # eval-mode calls are not counted
    assert not [w for w in recwarn if "AuxiliaryHeads" in str(w.message)]
