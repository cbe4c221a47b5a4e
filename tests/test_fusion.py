"""Fusion heads: forward/backward, order invariance, exact uni-modal decompositions, errors."""

import pytest
import torch

from modbalance.fusion import FUSIONS, Concat, FiLM, Gated, Sum, create_fusion

TWO = {"audio": 5, "visual": 3}


def features(dims, batch=4, requires_grad=False):
    return {name: torch.randn(batch, dim, requires_grad=requires_grad) for name, dim in dims.items()}


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_every_fusion_forward_backward_and_unimodal(name):
    fusion = create_fusion(name, TWO, num_classes=6)
    feats = features(TWO, requires_grad=True)
    logits = fusion(feats)
    assert logits.shape == (4, 6) and torch.isfinite(logits).all()
    logits.sum().backward()
    for pname, p in fusion.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert all(f.grad is not None for f in feats.values())
    uni = fusion.unimodal_logits(feats)
    assert sorted(uni) == sorted(TWO) and all(z.shape == (4, 6) and not z.requires_grad for z in uni.values())
    # Input dict order does not matter.
    reordered = dict(reversed(list(feats.items())))
    assert torch.allclose(fusion(reordered), logits)


@pytest.mark.parametrize("num_modalities", [2, 3, 4])
def test_concat_slices_are_exact_and_match_hand_computation(num_modalities):
    dims = {f"m{i}": i + 2 for i in range(num_modalities)}
    fusion = Concat(dims, num_classes=3)
    feats = features(dims)
    uni = fusion.unimodal_logits(feats)
    assert torch.allclose(sum(uni.values()), fusion(feats), atol=1e-5)
    start = 0
    for name, dim in dims.items():
        w = fusion.head.weight[:, start : start + dim]
        expected = feats[name] @ w.T + fusion.head.bias / num_modalities
        assert torch.allclose(uni[name], expected, atol=1e-6)
        start += dim


def test_concat_with_identity_features_gives_hand_written_logits():
    fusion = Concat({"a": 2, "b": 1}, num_classes=2)
    with torch.no_grad():
        fusion.head.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]]))
        fusion.head.bias.copy_(torch.tensor([0.5, -0.5]))
    feats = {"a": torch.tensor([[1.0, 1.0]]), "b": torch.tensor([[2.0]])}
    assert fusion(feats).tolist() == [[9.5, 0.5]]
    uni = fusion.unimodal_logits(feats)
    assert uni["a"].tolist() == [[3.25, -1.25]] and uni["b"].tolist() == [[6.25, 1.75]]
    zero = Concat({"a": 2, "b": 1}, num_classes=2, unimodal="zero_out")
    zero.load_state_dict(fusion.state_dict())
    assert zero.unimodal_logits(feats)["b"].tolist() == [[6.5, 1.5]]  # full bias with zero-out


@pytest.mark.parametrize("num_modalities", [2, 3, 4])
def test_sum_uses_each_modality_head_with_full_bias(num_modalities):
    dims = {f"m{i}": 3 for i in range(num_modalities)}
    fusion = Sum(dims, num_classes=4)
    feats = features(dims)
    uni = fusion.unimodal_logits(feats)
    for name in dims:
        assert torch.allclose(uni[name], fusion.heads[name](feats[name]))
    assert torch.allclose(sum(uni.values()), fusion(feats), atol=1e-5)


def test_film_and_gated_formulas_and_zero_out():
    feats = features(TWO, batch=3)
    film = FiLM(TWO, 4, condition="audio")
    gamma, beta = film.film(feats["audio"]).chunk(2, dim=-1)
    assert torch.allclose(film(feats), film.out(gamma * feats["visual"] + beta))
    uni = film.unimodal_logits(feats)
    _, beta_only = film.film(feats["audio"]).chunk(2, dim=-1)
    assert torch.allclose(uni["audio"], film.out(beta_only))  # visual zeroed: gamma * 0 + beta
    gated = Gated(TWO, 4, gate="visual", hidden=7)
    expected = gated.out(torch.sigmoid(gated.gate_proj(feats["visual"])) * gated.value_proj(feats["audio"]))
    assert torch.allclose(gated(feats), expected)
    zeros = {"audio": feats["audio"], "visual": torch.zeros_like(feats["visual"])}
    assert torch.allclose(gated.unimodal_logits(feats)["audio"], gated(zeros))


def test_errors():
    with pytest.raises(ValueError, match="Unknown fusion 'late'"):
        create_fusion("late", TWO, 3)
    with pytest.raises(ValueError, match="exactly two"):
        FiLM({"a": 2, "b": 2, "c": 2}, 3)
    with pytest.raises(ValueError, match="'text' is not one of"):
        Gated(TWO, 3, gate="text")
    with pytest.raises(ValueError, match="num_classes"):
        Concat(TWO, 1)
    with pytest.raises(ValueError, match="positive int"):
        Concat({"a": 0, "b": 2}, 3)
    with pytest.raises(ValueError, match="bad options"):
        create_fusion("concat", TWO, 3, gate="audio")
    fusion = Concat(TWO, 3)
    with pytest.raises(ValueError, match="expects features for"):
        fusion({"audio": torch.ones(1, 5)})
    with pytest.raises(ValueError, match="width 4, expected 3"):
        fusion({"audio": torch.ones(1, 5), "visual": torch.ones(1, 4)})
