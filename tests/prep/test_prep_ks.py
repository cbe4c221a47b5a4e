"""``prep ks`` from Kinetics-style videos and the OGM-GE / TPAMI lists; KS loader shapes under each preset."""

import json

import numpy as np
import pytest

from modbalance.data import layout
from modbalance.data.kinetics_sounds import KS_CLASSES, KineticsSounds
from modbalance.data.presets import DATASET_PRESETS, preset_data_options
from modbalance.data.registry import build_dataset
from modbalance.data.splits import read_rows
from modbalance.prep import prepare

TRAIN = ["aaa_000010_000020", "bbb_000030_000040", "ccc_000000_000010"]
TEST = ["ddd_2", "eee_7"]


@pytest.fixture()
def raw(tmp_path, clip_writer, text_writer):
    root = tmp_path / "raw"
    for k, name in enumerate(TRAIN + TEST):
        clip_writer(root / ("train" if name in TRAIN else "test") / "sub" / f"{name}.mp4", seconds=3.2, seed=k)
    text_writer(
        root / "my_train.txt",
        [f"{TRAIN[0]},10,0", f"{TRAIN[1]},10,30", f"{TRAIN[2]},10,12", "zzz_000000_000010,10,5", "yyy_1,10,31"],
        crlf=True,
    )
    text_writer(root / "my_test.txt", [f"{TEST[0]},10,25", f"{TEST[1]},10,7"])
    return root


def test_prep_ks_outputs_and_skips(raw, tmp_path) -> None:
    out = tmp_path / "out"
    manifest = prepare("ks", raw, out, recipes=("a3", "a4"))
    assert manifest["counts"]["prepared"] == 5 and manifest["classes"] == list(KS_CLASSES)
    reasons = {e["name"]: e["reason"] for e in manifest["skipped"]}
    assert reasons == {"zzz_000000_000010": "missing", "yyy_1": "unknown_label"}
    train = read_rows(out / "splits" / "train.csv", header="name")
    assert train == [[TRAIN[0], "blowing_nose"], [TRAIN[1], "tickling"], [TRAIN[2], "playing_guitar"]]
    assert np.load(layout.audio_file(out, "a3", TEST[0])).shape == (1024, 128)
    assert np.load(layout.audio_file(out, "a4", TEST[0])).shape == (257, 1003)
    assert len(list(layout.frames_dir(out, TEST[0]).iterdir())) == 4  # 3.2 s: t = 0, 1, 2, 3


@pytest.mark.parametrize("preset", ["ks/tpami", "ks/ogm_ge", "ks/balancebench"])
def test_shapes_reaching_the_encoders_under_each_preset(raw, tmp_path, preset) -> None:
    out = tmp_path / "out"
    prepare("ks", raw, out, recipes=("a3", "a4"))
    options = preset_data_options(preset)
    for split in ("train", "test"):
        dataset = build_dataset(options.pop("name", "ks"), out, split, **options)
        inputs, target = dataset[0]
        assert {k: tuple(v.shape) for k, v in inputs.items()} == DATASET_PRESETS[preset]["shapes"]
        assert isinstance(target, int)


def test_tpami_json_lists_give_train_val_test(raw, tmp_path) -> None:
    for name in ("my_train.txt", "my_test.txt"):
        (raw / name).unlink()
    database = {
        TRAIN[0]: {"subset": "training", "label": "bowling"},
        TRAIN[1]: {"subset": "validation", "label": "singing"},
        TEST[0]: {"subset": "testing", "label": "tickling"},
    }
    (raw / "KS_train_val.json").write_text(json.dumps({"labels": list(KS_CLASSES), "database": database}))
    out = tmp_path / "out"
    manifest = prepare("ks", raw, out)
    assert manifest["counts"]["splits"] == {s: {"listed": 1, "ready": 1, "failed": 0} for s in ("train", "val", "test")}
    val = KineticsSounds(out, "val")
    assert val.records[0].name == TRAIN[1] and val[0][1] == KS_CLASSES.index("singing") == 25


def test_missing_ks_lists_are_an_error(tmp_path) -> None:
    (tmp_path / "raw").mkdir()
    with pytest.raises(FileNotFoundError, match="no Kinetics-Sounds lists"):
        prepare("ks", tmp_path / "raw", tmp_path / "out")


def test_corrupt_video_is_recorded_and_missing_frames_raise_or_skip(raw, tmp_path) -> None:
    video = raw / "train" / "sub" / f"{TRAIN[0]}.mp4"
    video.write_bytes(video.read_bytes()[:200])
    out = tmp_path / "out"
    manifest = prepare("ks", raw, out)
    corrupt = [e for e in manifest["skipped"] if e["reason"] == "corrupt"]
    assert [e["name"] for e in corrupt] == [TRAIN[0]] and f"{TRAIN[0]}.mp4" in corrupt[0]["message"]
    assert TRAIN[0] not in {row[0] for row in read_rows(out / "splits" / "train.csv", header="name")}
    for frame in layout.frames_dir(out, TRAIN[1]).iterdir():
        frame.unlink()
    with pytest.raises(ValueError, match=rf"frames/{TRAIN[1]}: frame folder holds no images"):
        KineticsSounds(out, "train")[0]
    skipping = KineticsSounds(out, "train", on_error="skip")
    assert skipping[0][1] == KS_CLASSES.index("playing_guitar")  # replaced by the next clip
    assert [(s.name, s.reason) for s in skipping.report_skipped()] == [(TRAIN[1], "empty")]
