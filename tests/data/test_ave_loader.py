"""AVE loader on the OGM-GE layout: stat.txt, CSV lists with quoted categories, pickled spectrograms."""

import pickle

import numpy as np
import pytest

from modbalance.data.ave import AVE


def test_ogm_ge_layout_with_pkl_spectrograms(tmp_path, helpers) -> None:
    (tmp_path / "stat.txt").write_text("Violin, fiddle\nBus\nChurch bell\n")
    helpers.write_list(
        tmp_path / "my_train.txt",
        ['"Violin, fiddle",v1,good,0,10', "Bus,b2,good,0,10", "Church bell,b2,good,0,10", "Bus,b3,good,0,10"],
        bom=False,
    )
    (tmp_path / "audio_spec").mkdir()
    for vid in ("v1", "b2", "b3"):
        with open(tmp_path / "audio_spec" / f"{vid}.pkl", "wb") as handle:
            pickle.dump(np.zeros((257, 1004), dtype=np.float32), handle)
        helpers.write_frames(tmp_path / "visual" / vid, 10)
    dataset = AVE(
        tmp_path, "train", layout="ogm_ge", frame_sampling="balancebench", audio_shape_check=True, train=False
    )
    assert dataset.classes == ["Bus", "Church bell", "Violin, fiddle"]
    assert [(r.name, r.label) for r in dataset.records] == [("v1", 2), ("b3", 0)]
    dropped = dataset.report_skipped()
    assert [(s.name, s.reason) for s in dropped] == [("b2", "duplicate")]
    inputs, _ = dataset[1]
    assert inputs["audio"].shape == (1, 257, 1004)
    assert helpers.frame_ids(inputs["visual"]) == [0, 3, 6]  # OGM-GE frames 1, 4, 7
    with open(tmp_path / "audio_spec" / "b3.pkl", "wb") as handle:
        pickle.dump(np.zeros((257, 500), dtype=np.float32), handle)
    with pytest.raises(Exception, match=r"b3\.pkl: spectrogram shape \(257, 500\), expected \(257, 1004\)"):
        dataset[1]
    with pytest.raises(FileNotFoundError, match=r"my_test\.txt: file not found \(AVE list\)"):
        AVE(tmp_path, "test", layout="ogm_ge")
