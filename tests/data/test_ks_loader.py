"""Kinetics-Sounds loader on the BalanceBench (npy + frames) and TPAMI (HDF5 + pkl + JSON) layouts."""

import io
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from modbalance.data import media
from modbalance.data.errors import DataFileError
from modbalance.data.kinetics_sounds import KS_CLASSES, KineticsSounds


@pytest.fixture()
def bb_root(tmp_path, helpers):
    for split, names in (("train", ["a_000000_000010", "b_000000_000010"]), ("test", ["c_1"])):
        for name in names:
            media.save_array(tmp_path / f"audio_{split}" / f"{name}.npy", np.zeros((1024, 128), dtype=np.float32))
            helpers.write_frames(tmp_path / f"visual_{split}" / name, 10)
    helpers.write_list(tmp_path / "my_train.txt", ["a_000000_000010,10,3", "rawframes/b_000000_000010 10 30"])
    helpers.write_list(tmp_path / "my_test.txt", ["c_1 10 12"], bom=False, crlf=False)
    return tmp_path


def test_balancebench_layout_shapes_labels_and_frames(bb_root, helpers) -> None:
    train = KineticsSounds(bb_root, "train", layout="balancebench")
    assert [r.label for r in train.records] == [3, 30] and train.classes[30] == "tickling"
    test = KineticsSounds(bb_root, "test", layout="balancebench", frame_sampling="balancebench")
    inputs, target = test[0]
    assert inputs["audio"].shape == (1, 1024, 128) and inputs["visual"].shape == (3, 3, 224, 224)
    assert target == 12 and KS_CLASSES[target] == "playing_guitar"
    assert helpers.frame_ids(inputs["visual"]) == [0, 3, 6]  # 1-based frames 1, 4, 7
    assert helpers.frame_ids(KineticsSounds(bb_root, "test", layout="balancebench")[0][0]["visual"]) == [1, 5, 8]


def test_balancebench_bad_labels_and_shapes(bb_root, helpers) -> None:
    helpers.write_list(bb_root / "my_test.txt", ["c_1 10 31"])
    with pytest.raises(
        ValueError, match=r"my_test\.txt: row 1 \('c_1'\) has label '31', expected an integer in \[0, 31\)"
    ):
        KineticsSounds(bb_root, "test", layout="balancebench")
    helpers.write_list(bb_root / "my_test.txt", ["c_1 10 2"])
    media.save_array(bb_root / "audio_test" / "c_1.npy", np.zeros((998, 128), dtype=np.float32))
    with pytest.raises(DataFileError, match=r"c_1\.npy: spectrogram shape \(998, 128\), expected \(1024, 128\)"):
        KineticsSounds(bb_root, "test", layout="balancebench")[0]
    relaxed = KineticsSounds(bb_root, "test", layout="balancebench", audio_shape_check=False)
    assert relaxed[0][0]["audio"].shape == (1, 998, 128)


def _jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (value,) * 3).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture()
def tpami_root(tmp_path):
    database = {
        "k_000001_000011": {"subset": "training", "label": "bowling"},
        "k_2": {"subset": "testing", "label": "singing"},
        "k_3": {"subset": "validation", "label": "tickling"},
    }
    (tmp_path / "KS_train_val.json").write_text(json.dumps({"labels": list(KS_CLASSES), "database": database}))
    for name in database:
        media.write_hdf5_frames(tmp_path / "hdf5" / f"{name}.hdf5", [_jpeg(20 * k) for k in range(10)])
        (tmp_path / "pkl").mkdir(exist_ok=True)
        with open(tmp_path / "pkl" / f"{name}.pkl", "wb") as handle:
            pickle.dump(np.ones((257, 1003)), handle)
    return tmp_path


def test_tpami_layout_reads_hdf5_and_pkl(tpami_root, helpers) -> None:
    test = KineticsSounds(
        tpami_root, "test", layout="tpami", frame_sampling="ends", image_size=112, eval_resize="short_center"
    )
    inputs, target = test[0]
    assert inputs["audio"].shape == (1, 257, 1003) and inputs["visual"].shape == (3, 3, 112, 112)
    assert target == KS_CLASSES.index("singing")
    assert helpers.frame_ids(inputs["visual"]) == [0, 4, 9]  # first, middle, last (no off-by-one rotation)
    assert len(KineticsSounds(tpami_root, "val", layout="tpami")) == 1


def test_tpami_json_with_other_labels_and_corrupt_hdf5(tpami_root) -> None:
    (tpami_root / "hdf5" / "k_2.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n broken")
    with pytest.raises(DataFileError, match=r"k_2\.hdf5: cannot read HDF5"):
        KineticsSounds(tpami_root, "test", layout="tpami")[0]
    data = json.loads((tpami_root / "KS_train_val.json").read_text())
    data["labels"] = data["labels"][::-1]
    (tpami_root / "KS_train_val.json").write_text(json.dumps(data))
    with pytest.raises(DataFileError, match="differ from the 31 KS classes"):
        KineticsSounds(tpami_root, "test", layout="tpami")
