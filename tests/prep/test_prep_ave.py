"""``prep ave`` from the official &-separated lists (duplicates, commas in class names); AVE loaders."""

import numpy as np
import pytest

from modbalance.data import layout
from modbalance.data.ave import AVE
from modbalance.data.presets import DATASET_PRESETS, preset_data_options
from modbalance.data.registry import build_dataset
from modbalance.data.splits import read_rows
from modbalance.prep import prepare

ANNOTATIONS = [
    "Church bell&RUhOCu3LNXM&good&0&10",
    "Violin, fiddle&v1&good&0&10",
    "Baby cry, infant cry&b1&good&2&8",
    "Bus&twice&good&0&4",
    "Truck&twice&good&4&10",
    "Violin, fiddle&gone&good&0&10",
]


@pytest.fixture()
def raw(tmp_path, clip_writer, text_writer):
    root = tmp_path / "raw"
    text_writer(root / "Annotations.txt", ANNOTATIONS)
    text_writer(root / "trainSet.txt", ANNOTATIONS[:2] + ANNOTATIONS[3:6])
    text_writer(root / "testSet.txt", ANNOTATIONS[2:3])
    for k, vid in enumerate(["RUhOCu3LNXM", "v1", "b1", "twice"]):
        clip_writer(root / "AVE" / f"{vid}.mp4", seconds=3.0, seed=k)
    return root


def test_prep_ave_classes_duplicates_and_missing(raw, tmp_path) -> None:
    out = tmp_path / "out"
    manifest = prepare("ave", raw, out)
    assert manifest["classes"] == ["Baby cry, infant cry", "Bus", "Church bell", "Truck", "Violin, fiddle"]
    assert sorted((e["name"], e["reason"]) for e in manifest["skipped"]) == [
        ("gone", "missing"),
        ("twice", "duplicate"),
    ]
    assert read_rows(out / "splits" / "train.csv", header="name") == [
        ["RUhOCu3LNXM", "Church bell"],
        ["v1", "Violin, fiddle"],
    ]
    assert np.load(layout.audio_file(out, "a2", "b1")).shape == (257, 1004)
    test = AVE(out, "test")
    inputs, target = test[0]
    assert test.classes[target] == "Baby cry, infant cry"
    assert {k: tuple(v.shape) for k, v in inputs.items()} == DATASET_PRESETS["ave/modbalance"]["shapes"]
    options = preset_data_options("ave/modbalance")
    train = build_dataset(options.pop("name"), out, "train", **options)
    assert tuple(train[0][0]["visual"].shape) == (3, 3, 224, 224)


def test_corrupt_video_and_missing_frames(raw, tmp_path) -> None:
    (raw / "AVE" / "v1.mp4").write_bytes(b"RIFF" + bytes(range(256)))
    out = tmp_path / "out"
    manifest = prepare("ave", raw, out)
    assert ("v1", "corrupt") in {(e["name"], e["reason"]) for e in manifest["skipped"]}
    assert read_rows(out / "splits" / "train.csv", header="name") == [["RUhOCu3LNXM", "Church bell"]]
    (layout.audio_file(out, "a2", "b1")).write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"audio_a2/b1\.npy: cannot load array"):
        AVE(out, "test")[0]
