"""Linear probe: separable features are read perfectly, noise is read at chance, fits repeat exactly."""

from __future__ import annotations

import pytest
import torch

from modbalance.probe import fit_linear_probe, linear_probe_accuracy


def test_separable_classes_are_read_perfectly():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 4, (400,), generator=g)
    x = torch.nn.functional.one_hot(y, 4).float() * 3 + torch.randn(400, 4, generator=g) * 0.2
    x = torch.cat([x, torch.randn(400, 6, generator=g)], dim=1)  # plus uninformative columns
    assert linear_probe_accuracy(x[:300], y[:300], x[300:], y[300:], num_classes=4) == 1.0


def test_uninformative_features_stay_near_chance():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2000, 8, generator=g), torch.randint(0, 2, (2000,), generator=g)
    accuracy = linear_probe_accuracy(x[:1000], y[:1000], x[1000:], y[1000:], num_classes=2)
    # chance is 1/2; with 1000 test samples the binomial std is 0.016, so 4 std is 0.063
    assert abs(accuracy - 0.5) < 0.063


def test_fit_is_deterministic_and_standardises_with_train_statistics():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(100, 3, generator=g) * torch.tensor([1.0, 10.0, 100.0]) + 5
    y = (x[:, 0] > 5).long()
    a, b = fit_linear_probe(x, y, 2, steps=30), fit_linear_probe(x, y, 2, steps=30)
    assert torch.equal(a.linear.weight, b.linear.weight)
    assert torch.allclose(a.mean, x.mean(0)) and torch.allclose(a.std, x.std(0, unbiased=False))
    assert not a.training


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"expected features \(N, D\) and target \(N,\)"):
        fit_linear_probe(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="no samples"):
        fit_linear_probe(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        fit_linear_probe(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 1)
