"""OPM: drop frequencies within binomial bounds, p_exe, rescaling modes, keep mask, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

import modbalance.opm as opm_module
from modbalance import OPM, kept_cross_entropy

SCORES_22 = {"audio": torch.tensor(2.2), "visual": torch.tensor(1.0)}  # rho_audio = 2.2 (docs/methods.md)
Q_22 = 0.5 * (1 + 0.5 * math.tanh(1.2))  # 0.7084


def binomial_bound(n: int, p: float, sigmas: float = 5.0) -> float:
    return sigmas * math.sqrt(p * (1 - p) / n)


def test_drop_frequency_within_binomial_bounds_and_weak_never_dropped():
    opm = OPM(q_base=0.5, lam=0.5, p_exe=1.0, generator=torch.Generator().manual_seed(0))
    feats = {"audio": torch.ones(500, 8), "visual": torch.ones(500, 4)}
    dropped_audio = dropped_visual = 0
    n = 0
    for _ in range(40):
        out = opm(feats, SCORES_22)
        dropped_audio += (out.features["audio"][:, 0] == 0).sum().item()
        dropped_visual += (out.features["visual"][:, 0] == 0).sum().item()
        n += 500
    assert abs(dropped_audio / n - Q_22) < binomial_bound(n, Q_22)
    assert dropped_visual == 0


def test_execution_probability_p_exe():
    opm = OPM(q_base=0.5, lam=0.5, p_exe=0.7, generator=torch.Generator().manual_seed(1))
    feats = {"audio": torch.ones(64, 8), "visual": torch.ones(64, 8)}
    fired = 0
    trials = 2000
    for _ in range(trials):
        opm(feats, SCORES_22)
        fired += int(opm.last_fired)
    assert abs(fired / trials - 0.7) < binomial_bound(trials, 0.7)
    # Unconditionally P(audio dropped) = p_exe * q = 0.4959 (E6): covered by the two bounds above.


def test_not_fired_means_unchanged_and_unscaled():
    opm = OPM(p_exe=0.0)
    feats = {"audio": torch.randn(16, 8), "visual": torch.randn(16, 4)}
    out = opm(feats, SCORES_22)
    assert torch.equal(out.features["audio"], feats["audio"]) and torch.equal(out.features["visual"], feats["visual"])
    assert out.drop_probs["audio"].item() == pytest.approx(Q_22, abs=1e-6)


def kept_and_scale(out, feats, name):
    kept = out.features[name][:, 0] != 0
    return kept, out.features[name][kept] / feats[name][kept]


def test_reference_rescale_is_one_global_factor_e6():
    opm = OPM(p_exe=1.0, rescale="reference", generator=torch.Generator().manual_seed(2))
    feats = {"audio": torch.ones(256, 512), "visual": torch.ones(256, 512)}
    out = opm(feats, SCORES_22)
    theta = 512 * Q_22 / 1024
    assert 1 / (1 - theta) == pytest.approx(1.5485, abs=1e-4)
    for name in feats:
        _, ratio = kept_and_scale(out, feats, name)
        assert torch.allclose(ratio, torch.full_like(ratio, 1 / (1 - theta)), rtol=1e-5)


def test_reference_rescale_uses_feature_widths_when_they_differ():
    opm = OPM(p_exe=1.0, rescale="reference", generator=torch.Generator().manual_seed(2))
    feats = {"audio": torch.ones(64, 6), "visual": torch.ones(64, 2)}
    out = opm(feats, SCORES_22)
    theta = 6 * Q_22 / 8
    _, ratio = kept_and_scale(out, feats, "visual")
    assert torch.allclose(ratio, torch.full_like(ratio, 1 / (1 - theta)), rtol=1e-5)


def test_per_modality_and_none_rescale():
    feats = {"audio": torch.ones(128, 4), "visual": torch.ones(128, 4)}
    out = OPM(p_exe=1.0, rescale="per_modality", generator=torch.Generator().manual_seed(3))(feats, SCORES_22)
    _, ratio_a = kept_and_scale(out, feats, "audio")
    _, ratio_v = kept_and_scale(out, feats, "visual")
    assert torch.allclose(ratio_a, torch.full_like(ratio_a, 1 / (1 - Q_22)), rtol=1e-5)
    assert torch.equal(ratio_v, torch.ones_like(ratio_v))  # q = 0: inverted dropout leaves it alone
    out = OPM(p_exe=1.0, rescale="none", generator=torch.Generator().manual_seed(3))(feats, SCORES_22)
    _, ratio_a = kept_and_scale(out, feats, "audio")
    assert torch.equal(ratio_a, torch.ones_like(ratio_a))


def test_gradient_flows_only_through_kept_features_scaled():
    feats = {"audio": torch.ones(32, 4, requires_grad=True), "visual": torch.ones(32, 4, requires_grad=True)}
    out = OPM(p_exe=1.0, generator=torch.Generator().manual_seed(4))(feats, SCORES_22)
    sum(v.sum() for v in out.features.values()).backward()
    kept = out.features["audio"][:, 0] != 0
    scale = 1 / (1 - 4 * Q_22 / 8)
    assert torch.allclose(feats["audio"].grad[kept], torch.full_like(feats["audio"].grad[kept], scale))
    assert torch.equal(feats["audio"].grad[~kept], torch.zeros_like(feats["audio"].grad[~kept]))
    assert (~kept).any()


def test_all_dropped_samples_are_reported_and_excluded_from_the_loss(monkeypatch):
    # Under the official q rule the weakest modality has q = 0, so nobody loses every modality.
    # Force q = 1 for every modality to exercise the removal path.
    monkeypatch.setattr(opm_module, "_drop_prob_vector", lambda ratios, q_base, lam: torch.ones_like(ratios))
    feats = {"audio": torch.ones(8, 4), "visual": torch.ones(8, 4)}
    out = OPM(p_exe=1.0, rescale="none")(feats, SCORES_22)
    assert not out.keep.any()
    assert all(torch.equal(v, torch.zeros_like(v)) for v in out.features.values())


def test_keep_is_true_wherever_one_modality_survives():
    opm = OPM(p_exe=1.0, generator=torch.Generator().manual_seed(5))
    out = opm({"audio": torch.ones(64, 4), "visual": torch.ones(64, 4)}, SCORES_22)
    assert out.keep.all()


def test_kept_cross_entropy_matches_removal():
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    keep = torch.tensor([True, False, True, False, True, True])
    assert torch.allclose(kept_cross_entropy(logits, y, keep), F.cross_entropy(logits[keep], y[keep]))
    none = kept_cross_entropy(logits.requires_grad_(), y, torch.zeros(6, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_eval_mode_and_window_are_identity():
    opm = OPM(p_exe=1.0, start_epoch=2, end_epoch=3)
    feats = {"audio": torch.randn(8, 4), "visual": torch.randn(8, 4)}
    for epoch in (0, 1, 4):
        out = opm(feats, SCORES_22, epoch=epoch)
        assert torch.equal(out.features["audio"], feats["audio"]) and out.drop_probs["audio"].item() == 0.0
    for epoch in (2, 3):  # the window is inclusive at both ends
        assert opm(feats, SCORES_22, epoch=epoch).drop_probs["audio"].item() > 0
    assert [opm.active(e) for e in range(5)] == [False, False, True, True, False]
    opm.eval()
    assert torch.equal(opm(feats, SCORES_22, epoch=2).features["audio"], feats["audio"])


@pytest.mark.parametrize("num_modalities", [2, 3, 4])
def test_many_modalities_and_widths(num_modalities):
    names = [f"m{i}" for i in range(num_modalities)]
    feats = {name: torch.ones(400, 3 + i, 2) for i, name in enumerate(names)}  # (B, D, extra) works too
    scores = {name: torch.tensor(float(num_modalities - i)) for i, name in enumerate(names)}
    out = OPM(p_exe=1.0, rescale="none", generator=torch.Generator().manual_seed(6))(feats, scores)
    for name in names:
        assert out.features[name].shape == feats[name].shape
    assert out.drop_probs[names[-1]].item() == 0.0
    assert torch.equal(out.features[names[-1]], feats[names[-1]])
    assert out.drop_probs[names[0]].item() > 0
    assert out.keep.all()


def test_generator_state_round_trips_through_state_dict():
    feats = {"audio": torch.ones(32, 4), "visual": torch.ones(32, 4)}
    a = OPM(p_exe=0.5, generator=torch.Generator().manual_seed(9))
    a(feats, SCORES_22)
    state = a.state_dict()
    expected = [a(feats, SCORES_22).features["audio"] for _ in range(3)]
    b = OPM(p_exe=0.5)
    b.load_state_dict(state)
    got = [b(feats, SCORES_22).features["audio"] for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(expected, got))


def test_errors():
    for kwargs, match in [
        ({"q_base": 1.5}, "q_base"),
        ({"q_base": -0.1}, "q_base"),
        ({"p_exe": 2}, "p_exe"),
        ({"lam": -1}, "lam"),
        ({"rescale": "global"}, "Unknown rescale mode 'global'"),
        ({"rule": "max"}, "Unknown ratio rule"),
        ({"start_epoch": 3, "end_epoch": 1}, "start_epoch"),
    ]:
        with pytest.raises(ValueError, match=match):
            OPM(**kwargs)
    opm = OPM()
    with pytest.raises(ValueError, match="at least two"):
        opm({"audio": torch.ones(2, 2)}, {"audio": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="do not match"):
        opm(
            {"audio": torch.ones(2, 2), "visual": torch.ones(2, 2)},
            {"audio": torch.tensor(1.0), "text": torch.tensor(1.0)},
        )
    with pytest.raises(ValueError, match="shape"):
        opm({"audio": torch.ones(2, 2), "visual": torch.ones(3, 2)}, SCORES_22)


def test_delayed_variant_applies_the_previous_steps_probabilities():
    opm = OPM(p_exe=1.0, delay=True, rescale="none", generator=torch.Generator().manual_seed(8))
    feats = {"audio": torch.ones(2000, 4), "visual": torch.ones(2000, 4)}
    first = opm(feats, SCORES_22)
    assert first.drop_probs["audio"].item() == 0.0 and torch.equal(first.features["audio"], feats["audio"])
    balanced = {"audio": torch.tensor(1.0), "visual": torch.tensor(1.0)}
    second = opm(feats, balanced)  # uses q measured at step 1
    assert second.drop_probs["audio"].item() == pytest.approx(Q_22, abs=1e-6)
    dropped = (second.features["audio"][:, 0] == 0).float().mean().item()
    assert abs(dropped - Q_22) < binomial_bound(2000, Q_22)
    state = opm.state_dict()
    resumed = OPM(p_exe=1.0, delay=True, rescale="none")
    resumed.load_state_dict(state)
    assert resumed(feats, SCORES_22).drop_probs["audio"].item() == 0.0  # the pending q of step 2 (balanced)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_non_finite_or_negative_scores_are_refused_like_discrepancy_ratios(bad):
    from modbalance import discrepancy_ratios

    scores = {"audio": torch.tensor(bad), "visual": torch.tensor(1.0)}
    with pytest.raises(ValueError) as expected:
        discrepancy_ratios(scores)
    match = "non-finite" if math.isnan(bad) or math.isinf(bad) else "non-negative"
    assert match in str(expected.value)
    with pytest.raises(ValueError, match=match):
        OPM(p_exe=1.0)({"audio": torch.ones(4, 2), "visual": torch.ones(4, 2)}, scores)


def test_per_sample_scores_get_a_clear_error_and_one_element_tensors_are_fine():
    feats = {"audio": torch.ones(8, 2), "visual": torch.ones(8, 2)}
    per_sample = {"audio": torch.rand(8), "visual": torch.rand(8)}
    with pytest.raises(ValueError, match=r"scores\['audio'\] must be one number.*shape \(8,\).*pass their sum"):
        OPM(p_exe=1.0)(feats, per_sample)
    summed = {m: s.sum().reshape(1) for m, s in per_sample.items()}  # (1,) is one number too
    assert OPM(p_exe=1.0)(feats, summed).keep.shape == (8,)
    assert OPM(p_exe=1.0)(feats, {"audio": 3.0, "visual": 1.0}).drop_probs["audio"] > 0  # plain numbers
