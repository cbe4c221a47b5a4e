"""MultimodalClassifier: encode/fuse/unimodal seams, OPM integration, parameter groups."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import modbalance.opm as opm_module
from modbalance import OGM, OPM, MultimodalClassifier, kept_cross_entropy, unimodal_scores
from modbalance.fusion import Concat, Sum


def make_model():
    torch.manual_seed(0)
    encoders = {"audio": nn.Linear(6, 4), "visual": nn.Sequential(nn.Linear(5, 3), nn.ReLU())}
    return MultimodalClassifier(encoders, Concat({"audio": 4, "visual": 3}, num_classes=2))


def batch():
    g = torch.Generator().manual_seed(1)
    return {
        "audio": torch.randn(16, 6, generator=g),
        "visual": torch.randn(16, 5, generator=g),
    }, torch.randint(0, 2, (16,), generator=g)


def test_forward_without_opm_is_encode_then_fuse():
    model = make_model()
    inputs, _ = batch()
    out = model(inputs)
    feats = model.encode(inputs)
    assert torch.allclose(out.logits, model.fuse(feats))
    assert out.keep.all() and out.keep.shape == (16,)
    assert torch.allclose(sum(out.unimodal_logits.values()), out.logits, atol=1e-5)
    assert {m: len(p) for m, p in model.modality_parameters().items()} == {"audio": 2, "visual": 2}


DOMINANT_AUDIO = {"audio": torch.tensor(5.0), "visual": torch.tensor(1.0)}  # rho_audio = 5, rho_visual = 0.2


def test_opm_inside_the_model_drops_the_dominant_modality_by_hand():
    # q_base = 1, lam = 0: q_audio = 1 (every audio row dropped), q_visual = 0; no rescaling.
    # By hand, the fused logits are then the head applied to (0, visual features).
    model = make_model()
    inputs, _ = batch()
    opm = OPM(q_base=1.0, lam=0.0, p_exe=1.0, rescale="none", generator=torch.Generator().manual_seed(0))
    out = model(inputs, opm=opm, scores=DOMINANT_AUDIO)
    feats = model.encode(inputs)
    expected = model.fuse({"audio": torch.zeros_like(feats["audio"]), "visual": feats["visual"]})
    assert torch.allclose(out.logits, expected, atol=1e-6)
    assert not torch.allclose(out.logits, model.fuse(feats), atol=1e-3)  # the drop is visible
    assert out.keep.all()  # visual survives everywhere
    assert {m: float(q) for m, q in out.drop_probs.items()} == {"audio": 1.0, "visual": 0.0}
    # No gradient reaches the dropped audio encoder; the visual one learns.
    out.logits.sum().backward()
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.encoders["audio"].parameters())
    assert all(torch.count_nonzero(p.grad) > 0 for p in model.encoders["visual"].parameters())


def test_opm_inside_the_model_fuses_exactly_what_opm_returns():
    # With a partial q and the reference rescale, an identically seeded OPM applied to the same
    # features gives the masks; the model must fuse exactly those features.
    model = make_model()
    inputs, _ = batch()
    opm = OPM(q_base=0.5, lam=0.5, p_exe=1.0, generator=torch.Generator().manual_seed(3))
    twin = OPM(q_base=0.5, lam=0.5, p_exe=1.0, generator=torch.Generator().manual_seed(3))
    out = model(inputs, opm=opm, scores=DOMINANT_AUDIO)
    dropped = twin(model.encode(inputs), DOMINANT_AUDIO)
    assert 0 < int((dropped.features["audio"].abs().sum(1) == 0).sum()) < 16  # some rows dropped, not all
    assert torch.allclose(out.logits, model.fuse(dropped.features), atol=1e-6)
    assert torch.equal(out.keep, dropped.keep)
    assert all(torch.equal(out.drop_probs[m], dropped.drop_probs[m]) for m in ("audio", "visual"))


def test_keep_mask_propagates_through_the_model(monkeypatch):
    # Under the official q rule the weakest modality is never dropped, so keep is all True. Force
    # q = (1, 0.5): every audio row and about half the visual rows go; keep is then visual's mask.
    monkeypatch.setattr(opm_module, "_drop_prob_vector", lambda ratios, q_base, lam: torch.tensor([1.0, 0.5]))
    model = make_model()
    inputs, y = batch()
    opm = OPM(p_exe=1.0, rescale="none", generator=torch.Generator().manual_seed(1))
    out = model(inputs, opm=opm, scores=DOMINANT_AUDIO)
    survivors = out.keep
    assert 0 < int(survivors.sum()) < 16
    # dropped rows were fused from all-zero features: their logits are the head's bias
    bias = model.fuse({m: torch.zeros(1, f.shape[1]) for m, f in out.features.items()})
    assert torch.allclose(out.logits[~survivors], bias.expand(int((~survivors).sum()), -1), atol=1e-6)
    assert not torch.allclose(out.logits[survivors], bias.expand(int(survivors.sum()), -1), atol=1e-3)
    loss = kept_cross_entropy(out.logits, y, out.keep)
    assert torch.allclose(loss, F.cross_entropy(out.logits[survivors], y[survivors]))


def test_opm_window_is_inclusive_through_the_model():
    model = make_model()
    inputs, _ = batch()
    plain = model(inputs).logits
    opm = OPM(q_base=1.0, lam=0.0, p_exe=1.0, rescale="none", start_epoch=2, end_epoch=3)
    acted = {
        epoch: not torch.allclose(model(inputs, opm=opm, scores=DOMINANT_AUDIO, epoch=epoch).logits, plain)
        for epoch in range(6)
    }
    assert acted == {0: False, 1: False, 2: True, 3: True, 4: False, 5: False}


def test_model_eval_switches_opm_off_and_reports_zero_drop_probs():
    model = make_model()
    inputs, _ = batch()
    opm = OPM(q_base=1.0, lam=0.0, p_exe=1.0)  # left in training mode on purpose
    model.eval()
    out = model(inputs, opm=opm, scores=DOMINANT_AUDIO)
    assert torch.equal(out.logits, model(inputs).logits) and out.keep.all()
    assert {m: float(q) for m, q in out.drop_probs.items()} == {"audio": 0.0, "visual": 0.0}
    assert model(inputs, opm=opm).keep.all()  # inactive: no scores needed


def test_opm_training_step_with_ogm_end_to_end():
    model = make_model()
    inputs, y = batch()
    opm = OPM(p_exe=1.0, generator=torch.Generator().manual_seed(0))
    ogm = OGM(model.modality_parameters(), alpha=0.5, noise=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(inputs, opm=opm, scores=lambda z: unimodal_scores(z, y))
    loss = kept_cross_entropy(out.logits, y, out.keep)
    loss.backward()
    k = ogm.modulate(out.unimodal_logits, y)
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert set(k) == {"audio", "visual"} and torch.isfinite(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # the drop probabilities reach the output
    assert torch.equal(out.drop_probs["audio"], opm.last_drop_probs["audio"])


def test_opm_in_eval_mode_changes_nothing_and_scores_mapping_accepted():
    model = make_model()
    inputs, y = batch()
    opm = OPM(p_exe=1.0).eval()
    plain = model(inputs)
    scores = unimodal_scores(plain.unimodal_logits, y)
    assert torch.allclose(model(inputs, opm=opm, scores=scores).logits, plain.logits)


def test_three_modalities_with_sum_fusion():
    encoders = {m: nn.Linear(3, 2) for m in ("audio", "visual", "text")}
    model = MultimodalClassifier(encoders, Sum({m: 2 for m in encoders}, num_classes=3))
    inputs = {m: torch.randn(5, 3) for m in encoders}
    out = model(inputs, opm=OPM(p_exe=1.0), scores=lambda z: unimodal_scores(z, torch.zeros(5, dtype=torch.long)))
    assert out.logits.shape == (5, 3) and sorted(out.unimodal_logits) == ["audio", "text", "visual"]


def test_errors():
    with pytest.raises(ValueError, match="do not match the fusion"):
        MultimodalClassifier({"audio": nn.Linear(2, 2)}, Concat({"audio": 2, "visual": 2}, 2))
    model = make_model()
    inputs, _ = batch()
    with pytest.raises(ValueError, match="expects exactly"):
        model({"audio": inputs["audio"]})
    with pytest.raises(ValueError, match="needs scores"):
        model(inputs, opm=OPM())


def test_ogm_accepts_the_models_encoders_module_dict():
    model = make_model()
    ogm = OGM(model.encoders, alpha=0.5)  # nn.ModuleDict is not a collections.abc.Mapping
    assert ogm.modalities == ["audio", "visual"]
    assert [id(p) for p in ogm.groups["audio"]] == [id(p) for p in model.encoders["audio"].parameters()]
    with pytest.raises(ValueError, match="at least two modalities"):
        OGM(nn.ModuleDict({"audio": nn.Linear(2, 2)}), alpha=0.5)
    with pytest.raises(TypeError, match="needs a mapping"):
        OGM([nn.Linear(2, 2), nn.Linear(2, 2)], alpha=0.5)
    with pytest.raises(ValueError, match="space must be one of gradient, update"):
        OGM(model.encoders, alpha=0.5, space="updates")


def _resumable_parts():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ogm = OGM(model.encoders, alpha=0.8, noise=True, generator=torch.Generator().manual_seed(1))
    opm = OPM(p_exe=0.7, generator=torch.Generator().manual_seed(2))
    return model, optimizer, ogm, opm


def _steps(parts, count):
    model, optimizer, ogm, opm = parts
    inputs, y = batch()
    for _ in range(count):
        out = model(inputs, opm=opm, scores=lambda z: unimodal_scores(z, y))
        optimizer.zero_grad()
        kept_cross_entropy(out.logits, y, out.keep).backward()
        ogm.modulate(out.unimodal_logits, y)
        optimizer.step()


@pytest.mark.parametrize("skip", [None, "ogm", "opm"])
def test_ogm_and_opm_state_is_what_a_resume_needs(skip):
    # One state model: both expose state_dict/load_state_dict, and a resume is exact only with both.
    straight = _resumable_parts()
    _steps(straight, 2)
    saved = [copy.deepcopy(part.state_dict()) for part in straight]
    _steps(straight, 3)
    resumed = _resumable_parts()
    for name, part, state in zip(("model", "optimizer", "ogm", "opm"), resumed, saved):
        if name != skip:
            part.load_state_dict(state)
    _steps(resumed, 3)
    same = all(torch.equal(a, b) for a, b in zip(straight[0].state_dict().values(), resumed[0].state_dict().values()))
    assert same == (skip is None)
