"""The lab's token sequences (``LabSpec.tokens``): an invertible reshape, Bayes limits unchanged."""

from __future__ import annotations

import pytest
import torch

from modbalance.data.synthetic import SyntheticLab, lab_preset


def test_tokens_are_the_vectors_cut_into_chunks() -> None:
    vectors = SyntheticLab(lab_preset("tiny"), seed=0)
    tokens = SyntheticLab(lab_preset("tiny").replace(tokens=4), seed=0)
    x, t = vectors.split("val").inputs["visual"], tokens.split("val").inputs["visual"]
    assert x.shape == (60, 8) and t.shape == (60, 4, 2)
    assert torch.equal(t[:, 1], x[:, 2:4])  # token 1 holds features 2 and 3
    assert torch.equal(t.flatten(1), x)
    assert tokens.bayes_accuracy() == vectors.bayes_accuracy()
    z = tokens.decode_latents("visual", t)
    assert (z - tokens.split("val").latents["visual"]).abs().max() < 1e-4


def test_tokens_must_divide_every_width() -> None:
    with pytest.raises(
        ValueError, match=r"tokens=3 must divide every modality's width; it does not divide \{'audio': 8"
    ):
        lab_preset("tiny").replace(tokens=3)
    with pytest.raises(ValueError, match="tokens must be >= 0"):
        lab_preset("tiny").replace(tokens=-1)
