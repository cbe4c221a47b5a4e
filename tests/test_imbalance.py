"""Scores, ratios, coefficients and drop probabilities against hand-computed worked examples (docs/methods.md)."""

import math

import pytest
import torch
from torch import nn

from modbalance import discrepancy_ratios, ogm_coefficients, opm_drop_probs, unimodal_scores


def reference_scores(logits: dict, target: torch.Tensor) -> dict:
    """Test-local transcription of the official per-sample loop (softmax recomputed per sample)."""
    softmax = nn.Softmax(dim=1)
    out = {}
    for name, z in logits.items():
        total = 0.0
        for i in range(target.shape[0]):
            total += softmax(z)[i][target[i]].item()
        out[name] = total
    return out


def e1_logits() -> tuple[dict, torch.Tensor]:
    # Worked example E1 (hand-computed): audio p(true) = 0.6, 0.5; visual p(true) = 0.2, 0.3; labels (0, 1).
    audio = torch.tensor([[0.6, 0.4], [0.5, 0.5]]).log()
    visual = torch.tensor([[0.2, 0.8], [0.7, 0.3]]).log()
    return {"audio": audio, "visual": visual}, torch.tensor([0, 1])


def test_scores_worked_example_e1():
    logits, y = e1_logits()
    s = unimodal_scores(logits, y)
    assert s["audio"].item() == pytest.approx(1.10, abs=1e-6)
    assert s["visual"].item() == pytest.approx(0.50, abs=1e-6)
    r = discrepancy_ratios(s)
    assert r["audio"].item() == pytest.approx(2.2, abs=1e-5)
    assert r["visual"].item() == pytest.approx(0.4545, abs=1e-4)


@pytest.mark.parametrize("num_modalities", [2, 3, 4])
def test_scores_equal_reference_loop_on_random_inputs(num_modalities):
    g = torch.Generator().manual_seed(num_modalities)
    y = torch.randint(0, 31, (64,), generator=g)
    logits = {f"m{i}": torch.randn(64, 31, generator=g) * 3 for i in range(num_modalities)}
    ours = unimodal_scores(logits, y)
    ref = reference_scores(logits, y)
    for name in logits:
        assert ours[name].item() == pytest.approx(ref[name], rel=1e-5)


def test_scores_are_detached_float32_and_half_inputs_work():
    z = torch.randn(4, 3, requires_grad=True)
    s = unimodal_scores({"a": z, "b": z.detach().half()}, torch.tensor([0, 1, 2, 0]))
    assert not s["a"].requires_grad and s["a"].dtype == torch.float32
    assert s["b"].item() == pytest.approx(s["a"].item(), rel=1e-3)


# Worked example E2 (hand-computed): rho = 2.2 for audio; visual k = 1 always.
E2 = [
    (0.1, 0.7835, 0.8806, 0.9166),
    (0.5, 0.1995, 0.4630, 0.5832),
    (0.8, 0.0575, 0.2557, 0.3331),
    (2.6, 2.15e-5, 0.0039, 0.0),
]


@pytest.mark.parametrize(("alpha", "k1", "k2", "k3"), E2)
def test_coefficients_worked_example_e2(alpha, k1, k2, k3):
    ratios = {"audio": torch.tensor(2.2), "visual": torch.tensor(1 / 2.2)}
    for coefficient, expected in (("reference", k1), ("shifted", k2), ("paper", k3)):
        k = ogm_coefficients(ratios, alpha, coefficient)
        assert k["audio"].item() == pytest.approx(expected, abs=1e-4 if expected > 1e-3 else 1e-6), coefficient
        assert k["visual"].item() == 1.0


@pytest.mark.parametrize(
    ("alpha", "expected"), [(0.1, 0.9003), (0.3, 0.7087), (0.5, 0.5379), (0.8, 0.3360), (2.6, 0.0110)]
)
def test_reference_coefficient_jumps_just_above_one_e3(alpha, expected):
    ratios = {"a": torch.tensor(1.0 + 1e-6), "b": torch.tensor(1 / (1.0 + 1e-6))}
    assert ogm_coefficients(ratios, alpha, "reference")["a"].item() == pytest.approx(expected, abs=1e-4)
    assert ogm_coefficients(ratios, alpha, "shifted")["a"].item() == pytest.approx(1.0, abs=1e-5)
    assert ogm_coefficients(ratios, alpha, "paper")["a"].item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("coefficient", ["reference", "shifted", "paper"])
def test_exact_tie_modulates_nothing_e4(coefficient):
    s = {"audio": torch.tensor(3.0), "visual": torch.tensor(3.0)}
    k = ogm_coefficients(discrepancy_ratios(s), 0.8, coefficient)
    assert k["audio"].item() == 1.0 and k["visual"].item() == 1.0


def test_three_modality_rules_e7():
    s = {"a": torch.tensor(4.0), "v": torch.tensor(2.0), "t": torch.tensor(1.0)}
    expected = {
        "mean_pairwise": (3.0, 1.25, 0.375),
        "min": (4.0, 2.0, 0.5),  # against the weakest *other* modality
        "mean_others": (4 / 1.5, 2 / 2.5, 1 / 3.0),
        "sum_others": (4 / 3, 0.4, 1 / 6),
    }
    for rule, values in expected.items():
        r = discrepancy_ratios(s, rule)
        assert [r[m].item() for m in "avt"] == pytest.approx(list(values), abs=1e-5), rule
    k = ogm_coefficients(discrepancy_ratios(s), 0.5)
    assert [k[m].item() for m in "avt"] == pytest.approx([0.0949, 0.4454, 1.0], abs=1e-4)
    k_sum = ogm_coefficients(discrepancy_ratios(s, "sum_others"), 0.5)
    assert [k_sum[m].item() for m in "avt"] == pytest.approx([0.4172, 1.0, 1.0], abs=1e-4)
    q = opm_drop_probs(discrepancy_ratios(s), 0.5, 0.5)
    assert [q[m].item() for m in "avt"] == pytest.approx([0.7410, 0.5612, 0.0], abs=1e-4)
    q_sum = opm_drop_probs(discrepancy_ratios(s, "sum_others"), 0.5, 0.5)
    assert q_sum["a"].item() == pytest.approx(0.5804, abs=1e-4)


@pytest.mark.parametrize("rule", ["mean_pairwise", "min", "mean_others", "sum_others"])
def test_every_rule_reduces_to_the_two_modality_ratio(rule):
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        a, b = (torch.rand(2, generator=g) * 10 + 0.1).unbind()
        r = discrepancy_ratios({"a": a, "b": b}, rule)
        assert r["a"].item() == pytest.approx((a / b).item(), rel=1e-6)
        assert r["b"].item() == pytest.approx((b / a).item(), rel=1e-6)


def test_opm_drop_probability_e6():
    q = opm_drop_probs({"audio": torch.tensor(2.2), "visual": torch.tensor(1 / 2.2)}, 0.5, 0.5)
    assert q["audio"].item() == pytest.approx(0.5 * (1 + 0.5 * math.tanh(1.2)), abs=1e-6)
    assert q["audio"].item() == pytest.approx(0.7084, abs=1e-4)
    assert q["visual"].item() == 0.0
    q_bb = opm_drop_probs({"audio": torch.tensor(2.2), "visual": torch.tensor(1 / 2.2)}, 0.4, 0.5)
    assert q_bb["audio"].item() == pytest.approx(0.5667, abs=1e-4)


def test_zero_scores_rule():
    all_zero = discrepancy_ratios({"a": torch.tensor(0.0), "b": torch.tensor(0.0)})
    assert all_zero["a"].item() == 1.0 and all_zero["b"].item() == 1.0
    one_zero = discrepancy_ratios({"a": torch.tensor(2.0), "b": torch.tensor(0.0)})
    k = ogm_coefficients(one_zero, 0.5)
    assert k["a"].item() == pytest.approx(0.0, abs=1e-6) and k["b"].item() == 1.0


def test_errors_name_the_problem():
    logits, y = e1_logits()
    with pytest.raises(ValueError, match="outside"):
        unimodal_scores(logits, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="outside"):
        unimodal_scores(logits, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match=r"non-finite .*\['visual'\]"):
        unimodal_scores({"audio": logits["audio"], "visual": torch.full((2, 2), float("nan"))}, y)
    with pytest.raises(ValueError, match="shape"):
        unimodal_scores({"audio": logits["audio"][:1]}, y)
    with pytest.raises(ValueError, match="integer"):
        unimodal_scores(logits, y.float())
    with pytest.raises(ValueError, match="at least two"):
        discrepancy_ratios({"audio": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="Unknown ratio rule 'median'"):
        discrepancy_ratios({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}, "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-finite"):
        discrepancy_ratios({"a": torch.tensor(float("inf")), "b": torch.tensor(2.0)})
    with pytest.raises(ValueError, match="negative"):
        discrepancy_ratios({"a": torch.tensor(-1.0), "b": torch.tensor(2.0)})
    with pytest.raises(ValueError, match="alpha"):
        ogm_coefficients({"a": torch.tensor(2.0), "b": torch.tensor(0.5)}, -0.1)
    with pytest.raises(ValueError, match="Unknown OGM coefficient"):
        ogm_coefficients({"a": torch.tensor(2.0), "b": torch.tensor(0.5)}, 0.1, "cvpr")  # type: ignore[arg-type]
