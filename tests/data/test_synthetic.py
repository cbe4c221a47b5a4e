"""Tests for the imbalance lab: generation, indexing, invertibility and the exact Bayes limits."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from modbalance.data.synthetic import (
    LAB_PRESETS,
    InvertibleMixing,
    LabRecipe,
    LabSpec,
    ModalitySpec,
    SyntheticLab,
    fused_snr,
    isotropic_bayes_accuracy,
    lab_preset,
)


def _spec(**changes: object) -> LabSpec:
    base = LabSpec(
        modalities={"audio": ModalitySpec(2.0, 6, 0), "visual": ModalitySpec(1.5, 8, 2, twist=2.0)},
        num_classes=3,
        latent_dim=4,
        n_train=300,
        n_val=30,
        n_test=150,
    )
    return base.replace(**changes)


# ---------------------------------------------------------------- Bayes limit


def _phi_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _reference_integral(s: float, k: int, intervals: int = 6000) -> float:
    """Composite Simpson rule for integral phi(t) Phi(t + s)^(k - 1) dt over [-12, 12], pure Python."""
    a, b = -12.0, 12.0
    h = (b - a) / intervals
    total = 0.0
    for i in range(intervals + 1):
        t = a + i * h
        value = math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi) * _phi_cdf(t + s) ** (k - 1)
        weight = 1 if i in (0, intervals) else (4 if i % 2 else 2)
        total += weight * value
    return total * h / 3.0


@pytest.mark.parametrize(("s", "k"), [(0.5, 2), (1.0, 3), (2.5, 4), (3.0, 10), (4.0, 31)])
def test_bayes_formula_matches_reference_integral(s: float, k: int) -> None:
    assert isotropic_bayes_accuracy(s, k) == pytest.approx(_reference_integral(s, k), abs=1e-8)


@pytest.mark.parametrize("s", [0.3, 1.0, 2.0, 3.7])
def test_bayes_two_classes_closed_form(s: float) -> None:
    # K = 2: right iff n_other - n_true < s, and n_other - n_true ~ N(0, 2).
    assert isotropic_bayes_accuracy(s, 2) == pytest.approx(_phi_cdf(s / math.sqrt(2.0)), abs=1e-10)


@pytest.mark.parametrize("k", [2, 5, 17])
def test_bayes_zero_strength_is_chance(k: int) -> None:
    assert isotropic_bayes_accuracy(0.0, k) == pytest.approx(1.0 / k, abs=1e-10)


def test_bayes_monotone_in_strength_and_classes() -> None:
    values = [isotropic_bayes_accuracy(s, 6) for s in (0.5, 1.0, 2.0, 4.0)]
    assert values == sorted(values) and values[-1] < 1.0
    assert isotropic_bayes_accuracy(2.0, 4) > isotropic_bayes_accuracy(2.0, 8)


def test_fused_snr_and_lab_limits_by_hand() -> None:
    assert fused_snr([3.0, 4.0]) == pytest.approx(5.0)
    lab = SyntheticLab(_spec(), seed=0)
    limits = lab.bayes_accuracy()
    assert set(limits) == {"audio", "visual", "fused"}
    assert limits["audio"] == pytest.approx(_reference_integral(2.0, 3), abs=1e-8)
    assert limits["visual"] == pytest.approx(_reference_integral(1.5, 3), abs=1e-8)
    assert limits["fused"] == pytest.approx(_reference_integral(2.5, 3), abs=1e-8)  # sqrt(4 + 2.25)
    assert limits["fused"] > limits["audio"] > limits["visual"]


def test_bayes_formula_against_independent_monte_carlo() -> None:
    """Sample the latent model here (not via the lab) and apply the true posterior's argmax."""
    g = torch.Generator().manual_seed(123)
    k, latent, n = 5, 7, 60_000
    strengths = (1.2, 2.0)
    y = torch.randint(0, k, (n,), generator=g)
    total = torch.zeros(n, k, dtype=torch.float64)
    for s in strengths:
        q, _ = torch.linalg.qr(torch.randn(latent, latent, generator=g, dtype=torch.float64))
        means = s * q[:, :k].T
        z = means[y] + torch.randn(n, latent, generator=g, dtype=torch.float64)
        log_lik = -0.5 * torch.cdist(z, means) ** 2  # Gaussian, identity covariance
        total += log_lik
        _check_binomial((log_lik.argmax(1) == y).double().mean().item(), isotropic_bayes_accuracy(s, k), n)
    _check_binomial((total.argmax(1) == y).double().mean().item(), isotropic_bayes_accuracy(fused_snr(strengths), k), n)


def _check_binomial(observed: float, p: float, n: int) -> None:
    bound = 5.0 * math.sqrt(p * (1.0 - p) / n)  # five standard errors
    assert abs(observed - p) <= bound, f"observed {observed:.4f}, exact {p:.4f}, bound {bound:.4f}"


def test_empirical_bayes_of_lab_matches_exact_limit() -> None:
    spec = _spec(
        modalities={
            "audio": ModalitySpec(1.8, 6, 0),
            "visual": ModalitySpec(1.2, 8, 2),
            "text": ModalitySpec(0.9, 5, 1),
        },
        n_test=40_000,
    )
    lab = SyntheticLab(spec, seed=7)
    observed = lab.empirical_bayes_accuracy("test")
    exact = lab.bayes_accuracy()
    assert set(observed) == set(exact) == {"audio", "visual", "text", "fused"}
    for key in exact:
        _check_binomial(observed[key], exact[key], spec.n_test)
    pair = lab.subset_bayes_accuracy(["audio", "text"])
    assert pair == pytest.approx(isotropic_bayes_accuracy(math.hypot(1.8, 0.9), 3), abs=1e-12)


# ---------------------------------------------------------------- generation


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b, c = SyntheticLab(_spec(), 3), SyntheticLab(_spec(), 3), SyntheticLab(_spec(), 4)
    for split in ("train", "val", "test"):
        sa, sb, sc = a.split(split), b.split(split), c.split(split)
        assert torch.equal(sa.targets, sb.targets)
        for m in ("audio", "visual"):
            assert torch.equal(sa.inputs[m], sb.inputs[m])
            assert not torch.equal(sa.inputs[m], sc.inputs[m])


def test_modality_stream_does_not_depend_on_other_modalities() -> None:
    two = SyntheticLab(_spec(), 5)
    three = SyntheticLab(_spec(modalities={**_spec().modalities, "text": ModalitySpec(1.0, 4, 1)}), 5)
    assert torch.equal(two.split("test").inputs["visual"], three.split("test").inputs["visual"])


def test_shapes_dtypes_balance_and_standardisation() -> None:
    spec = _spec()
    lab = SyntheticLab(spec, 0)
    for split, n in (("train", 300), ("val", 30), ("test", 150)):
        s = lab.split(split)
        assert len(s) == n
        assert s.inputs["audio"].shape == (n, 6) and s.inputs["visual"].shape == (n, 8)
        assert s.inputs["audio"].dtype == torch.float32
        assert s.targets.dtype == torch.int64
        assert s.latents["visual"].shape == (n, 4)
        assert torch.bincount(s.targets, minlength=3).tolist() == [n // 3] * 3  # balanced
    train = lab.split("train").inputs["visual"].double()
    torch.testing.assert_close(train.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(train.std(0), torch.ones(8, dtype=torch.float64), atol=1e-5, rtol=0)


def test_class_means_are_orthogonal_with_given_strength() -> None:
    lab = SyntheticLab(_spec(), 0)
    means = lab.class_means["visual"]
    torch.testing.assert_close(means @ means.T, 1.5**2 * torch.eye(3, dtype=torch.float64))


def test_depth_zero_is_affine_and_depth_one_is_not() -> None:
    lab = SyntheticLab(_spec(n_train=600), 0)
    train = lab.split("train")
    for name, expect_linear in (("audio", True), ("visual", False)):
        z = torch.cat([train.latents[name], torch.ones(600, 1, dtype=torch.float64)], 1)
        x = train.inputs[name].double()
        fit = torch.linalg.lstsq(z, x).solution
        residual = (x - z @ fit).pow(2).mean().item()  # inputs have unit variance
        assert (residual < 1e-10) if expect_linear else (residual > 0.05), (name, residual)


# ---------------------------------------------------------------- invertibility


def test_mixing_inverse_recovers_latents_exactly_in_float64() -> None:
    g = torch.Generator().manual_seed(0)
    mixing = InvertibleMixing.random(4, 9, depth=3, twist=5.0, scale=1.3, generator=g)  # odd width
    z = 2.0 * torch.randn(500, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(mixing.inverse(mixing(z)), z, atol=1e-9, rtol=0)


def test_lab_inputs_decode_to_the_true_latents() -> None:
    lab = SyntheticLab(lab_preset("default"), 1)
    test = lab.split("test")
    for name in ("audio", "visual"):
        decoded = lab.decode_latents(name, test.inputs[name])
        torch.testing.assert_close(decoded, test.latents[name], atol=1e-4, rtol=0)


# ---------------------------------------------------------------- indexing


def test_batched_indexing_equals_single_indexing() -> None:
    split = SyntheticLab(_spec(), 0).split("train")
    index = [5, 0, 299, 17, 5]
    for batch_index in (index, tuple(index), torch.tensor(index), torch.tensor(index, dtype=torch.int32)):
        inputs, targets = split[batch_index]
        assert targets.dtype == torch.int64 and targets.shape == (5,)
        for row, i in enumerate(index):
            single_inputs, single_target = split[i]
            assert isinstance(single_target, int)
            assert targets[row].item() == single_target
            for m in ("audio", "visual"):
                assert torch.equal(inputs[m][row], single_inputs[m])
    inputs, _ = split[range(3)]
    assert torch.equal(inputs["audio"], split.inputs["audio"][:3])
    assert torch.equal(split[-1][0]["visual"], split.inputs["visual"][299])
    assert split[torch.tensor(4)][1] == split[4][1]


def test_default_collate_and_batch_sampler_agree() -> None:
    split = SyntheticLab(_spec(), 0).split("val")
    collated = next(iter(DataLoader(split, batch_size=8, shuffle=False)))
    sampled = next(iter(DataLoader(split, batch_size=None, sampler=torch.utils.data.BatchSampler(range(30), 8, False))))
    assert torch.equal(collated[1], sampled[1])
    assert torch.equal(collated[0]["visual"], sampled[0]["visual"])


@pytest.mark.parametrize(
    ("index", "error"),
    [
        (300, IndexError),
        (-301, IndexError),
        (torch.tensor([0, 300]), IndexError),
        (1.0, TypeError),
        (True, TypeError),
        (torch.tensor([0.0, 1.0]), TypeError),
        (torch.tensor([True, False]), TypeError),
        ([0, 1.5], TypeError),
        ("3", TypeError),
    ],
)
def test_bad_index_raises(index: object, error: type[Exception]) -> None:
    split = SyntheticLab(_spec(), 0).split("train")
    with pytest.raises(error):
        split[index]  # type: ignore[index]


# ---------------------------------------------------------------- validation and presets


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"strength": 0.0}, ValueError, ("strength", "0")),
        ({"strength": float("nan")}, ValueError, ("strength", "nan")),
        ({"strength": True}, TypeError, ("strength",)),
        ({"width": 0}, ValueError, ("width", "0")),
        ({"width": 4.0}, TypeError, ("width",)),
        ({"depth": -1}, ValueError, ("depth", "-1")),
        ({"twist": -0.5}, ValueError, ("twist", "-0.5")),
    ],
)
def test_modality_spec_validation(kwargs: dict[str, object], error: type[Exception], words: tuple[str, ...]) -> None:
    arguments = {"strength": 1.0, "width": 4, "depth": 1, **kwargs}
    with pytest.raises(error) as info:
        ModalitySpec(**arguments)  # type: ignore[arg-type]
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"num_classes": 1}, ("num_classes", "1")),
        ({"latent_dim": 2}, ("latent_dim", "2")),
        ({"n_train": 2}, ("n_train", "2")),
        ({"n_val": -1}, ("n_val", "-1")),
        ({"n_test": 0}, ("n_test", "0")),
        ({"latent_dim": 7}, ("audio", "width", "6")),
        ({"modalities": {"audio": ModalitySpec(1.0, 8, 0)}}, ("at least 2",)),
        ({"modalities": {"Audio": ModalitySpec(1.0, 8, 0), "visual": ModalitySpec(1.0, 8, 0)}}, ("'Audio'",)),
        ({"modalities": {"fused": ModalitySpec(1.0, 8, 0), "visual": ModalitySpec(1.0, 8, 0)}}, ("'fused'",)),
    ],
)
def test_lab_spec_validation(changes: dict[str, object], words: tuple[str, ...]) -> None:
    with pytest.raises(ValueError) as info:
        _spec(**changes)
    for word in words:
        assert word in str(info.value)


def test_other_errors_name_the_value() -> None:
    with pytest.raises(TypeError, match="visual"):
        _spec(modalities={"audio": ModalitySpec(1.0, 8, 0), "visual": (1.0, 8, 0)})
    with pytest.raises(ValueError, match=r"'nope'.*default, three, tiny"):
        lab_preset("nope")
    lab = SyntheticLab(_spec(), 0)
    with pytest.raises(ValueError, match="'dev'"):
        lab.split("dev")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'speech'"):
        lab.subset_bayes_accuracy(["audio", "speech"])
    with pytest.raises(ValueError, match="seed"):
        SyntheticLab(_spec(), -1)
    with pytest.raises(ValueError, match="momentum"):
        LabRecipe(momentum=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        isotropic_bayes_accuracy(1.0, 1)
    with pytest.raises(ValueError, match="snr"):
        isotropic_bayes_accuracy(-1.0, 3)


def test_presets() -> None:
    assert {"default", "three", "tiny"} <= set(LAB_PRESETS)
    default, three = lab_preset("default"), lab_preset("three")
    assert list(default.modalities) == ["audio", "visual"]
    assert list(three.modalities) == ["audio", "visual", "text"]
    assert isinstance(default.recipe, LabRecipe)
    assert hash(default) == hash(lab_preset("default").replace()) and default != three
    # The dominant modality is the linear one; the weak one is non-linearly mixed.
    assert default.modalities["audio"].depth == 0 and default.modalities["visual"].depth >= 1
    for spec in LAB_PRESETS.values():
        lab = SyntheticLab(spec, 0)
        assert len(lab.split("test")) == spec.n_test
        assert set(lab.bayes_accuracy()) == {*spec.modalities, "fused"}
