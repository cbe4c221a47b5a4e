"""CMU-MOSEI: MulT pickle fixture -> prep -> loader; label rules, -inf handling, bad arrays."""

import pickle

import numpy as np
import pytest
import torch

from modbalance.data.errors import DataFileError
from modbalance.data.mosei import CMUMOSEI
from modbalance.data.presets import DATASET_PRESETS, preset_data_options
from modbalance.data.registry import build_dataset, dataset_info
from modbalance.prep import prepare

SCORES = {"train": [-2.4, 0.0, 1.6, -0.2, 3.0], "valid": [0.4, -1.0], "test": [-0.6, 0.0, 2.2]}


def _split(rng, scores, audio_len=500, text_len=50):
    n = len(scores)
    audio = rng.normal(size=(n, audio_len, 74)).astype(np.float32)
    audio[0, :3, 0] = -np.inf  # COVAREP holds -inf
    return {
        "text": rng.normal(size=(n, text_len, 300)),
        "audio": audio,
        "vision": rng.normal(size=(n, audio_len, 35)),
        "labels": np.array(scores).reshape(n, 1, 1),
        "id": np.array([[f"clip{i}", "0"] for i in range(n)]),
    }


@pytest.fixture()
def raw(tmp_path):
    rng = np.random.default_rng(0)
    data = {key: _split(rng, scores) for key, scores in SCORES.items()}
    with open(tmp_path / "mosei_senti_data_noalign.pkl", "wb") as handle:
        pickle.dump(data, handle)
    return tmp_path


def test_mult_pickle_loader_shapes_labels_and_inf(raw) -> None:
    train = CMUMOSEI(raw, "train", layout="mult")
    inputs, _ = train[0]
    assert {k: tuple(v.shape) for k, v in inputs.items()} == DATASET_PRESETS["mosei/balancebench"]["shapes"]
    assert [train[i][1] for i in range(5)] == [0, 1, 1, 0, 1]  # zero counts as positive
    assert train.nonfinite["audio"] == 3 and float(inputs["audio"][:3, 0].abs().sum()) == 0.0
    assert torch.isfinite(inputs["audio"]).all()
    seven = CMUMOSEI(raw, "train", layout="mult", label_rule="seven")
    assert [seven[i][1] for i in range(5)] == [1, 3, 5, 3, 6]  # round(-2.4)+3, 0+3, round(1.6)+3, round(-0.2)+3, 3+3
    nonzero = CMUMOSEI(raw, "test", layout="mult", label_rule="binary_nonzero")
    assert len(nonzero) == 2 and nonzero.excluded == 1
    assert len(CMUMOSEI(raw, "val", layout="mult")) == 2
    assert dataset_info("mosei", label_rule="seven").num_classes == 7


def test_prep_mosei_then_the_prepared_layout(raw, tmp_path) -> None:
    out = tmp_path / "out"
    manifest = prepare("mosei", raw, out)
    assert manifest["counts"]["splits"]["train"]["samples"] == 5
    assert manifest["counts"]["splits"]["train"]["nonfinite_features_set_to_zero"]["audio"] == 3
    assert manifest["counts"]["splits"]["test"]["zero"] == 1
    options = preset_data_options("mosei/balancebench")
    prepared = build_dataset(options.pop("name"), out, "train", **options)
    direct = CMUMOSEI(raw, "train", layout="mult")
    for index in range(5):
        a, b = prepared[index], direct[index]
        assert a[1] == b[1] and all(torch.equal(a[0][m], b[0][m]) for m in ("audio", "visual", "text"))
    subset = CMUMOSEI(out, "test", modalities="text,audio")
    assert set(subset[0][0]) == {"text", "audio"}


def test_bad_arrays_and_scores(raw, tmp_path) -> None:
    rng = np.random.default_rng(1)
    bad = {key: _split(rng, scores) for key, scores in SCORES.items()}
    bad["test"]["vision"] = rng.normal(size=(3, 500, 20))
    bad["valid"]["labels"] = np.array([np.nan, 1.0]).reshape(2, 1, 1)
    path = tmp_path / "bad" / "mosei_senti_data_noalign.pkl"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps(bad))
    with pytest.raises(DataFileError, match=r"mosei_senti_data_noalign\.pkl\[test\]: visual has shape \(3, 500, 20\)"):
        CMUMOSEI(path.parent, "test", layout="mult")
    with pytest.raises(DataFileError, match="sample 0 has a non-finite sentiment score"):
        CMUMOSEI(path.parent, "val", layout="mult")
    skipping = CMUMOSEI(path.parent, "val", layout="mult", on_error="skip")
    assert len(skipping) == 1 and [s.reason for s in skipping.report_skipped()] == ["corrupt"]
    manifest = prepare("mosei", path.parent, tmp_path / "out")
    reasons = sorted((e["split"], e["reason"]) for e in manifest["skipped"])
    assert reasons == [("test", "bad_shape"), ("val", "corrupt")]
    path.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(DataFileError, match="cannot unpickle"):
        CMUMOSEI(path.parent, "train", layout="mult")
