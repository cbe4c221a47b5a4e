"""MultimodalClassifier: encode/fuse/unimodal seams, OPM integration, parameter groups."""

import pytest
import torch
from torch import nn

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
    opt.step()
    assert set(k) == {"audio", "visual"} and torch.isfinite(loss)
    # With OPM active the fused logits differ from plain fusion whenever something was dropped.
    dominant = max(opm.last_drop_probs, key=lambda m: opm.last_drop_probs[m].item())
    if opm.last_drop_probs[dominant].item() > 0:
        assert not torch.allclose(out.logits, model.fuse(out.features))


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
