"""``prep ucf101``: RGB frames and Horn–Schunck flow in the u/ v/ layout; UCF-101 loaders."""

import numpy as np
import pytest
import torch

from modbalance.data import layout, media
from modbalance.data.presets import DATASET_PRESETS, preset_data_options
from modbalance.data.registry import build_dataset, dataset_info
from modbalance.data.ucf101 import UCF101
from modbalance.prep import prepare

CLASSIND = ["1 ApplyEyeMakeup", "2 Basketball", "3 HandstandPushups", "4 apple"]


@pytest.fixture()
def raw(tmp_path, clip_writer, text_writer):
    root = tmp_path / "raw"
    clips = {
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": 2,
        "Basketball/v_Basketball_g01_c01.avi": 0,
        "HandstandPushups/v_HandStandPushups_g01_c01.avi": 2,
        "apple/v_apple_g01_c01.avi": 1,
    }
    for k, (path, motion) in enumerate(clips.items()):
        clip_writer(root / "UCF-101" / path, seconds=2.5, audio=False, motion=motion, seed=k)
    lists = root / "ucfTrainTestlist"
    text_writer(lists / "classInd.txt", CLASSIND, crlf=True)
    text_writer(
        lists / "trainlist01.txt",
        [
            "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1",
            "HandstandPushups/v_HandStandPushups_g01_c01.avi 3",
            "apple/v_apple_g01_c01.avi 4",
            "Basketball/v_Basketball_g09_c01.avi 2",
        ],
        crlf=True,
    )
    text_writer(lists / "testlist01.txt", ["Basketball/v_Basketball_g01_c01.avi"], crlf=True)
    return root


def test_prep_writes_frames_and_flow_with_the_right_sign(raw, tmp_path) -> None:
    out = tmp_path / "out"
    manifest = prepare("ucf101", raw, out)
    assert manifest["counts"]["prepared"] == 4
    assert [(e["name"], e["reason"]) for e in manifest["skipped"]] == [("v_Basketball_g09_c01", "missing")]
    assert manifest["classind_order"] == ["ApplyEyeMakeup", "Basketball", "HandstandPushups", "apple"]
    assert layout.read_classes(out) == ["ApplyEyeMakeup", "Basketball", "HandstandPushups", "apple"]  # code points
    u_dir, v_dir = layout.flow_dirs(out, "v_ApplyEyeMakeup_g01_c01")
    names = sorted(p.name for p in u_dir.iterdir())
    assert names == ["frame000001.jpg", "frame000002.jpg", "frame000003.jpg"]
    assert names == sorted(p.name for p in v_dir.iterdir())
    u = np.asarray(media.read_image(u_dir / names[0], "L"), dtype=np.float32)
    v = np.asarray(media.read_image(v_dir / names[0], "L"), dtype=np.float32)
    square = (slice(16, 32), slice(6, 18))  # the square spans x 4..20 in frame 0 and moves 2 px right
    pixels_per_px = 255 / 40
    assert u[square].mean() - 128 > 0.5 * pixels_per_px  # rightward motion: u > 0
    assert abs(v[square].mean() - 128) < 0.5 * pixels_per_px
    still = np.asarray(media.read_image(layout.flow_dirs(out, "v_Basketball_g01_c01")[0] / names[0], "L"))
    assert abs(float(still.mean()) - 128) < 2  # no motion: 128


def test_loader_shapes_orders_and_flow_flip(raw, tmp_path) -> None:
    out = tmp_path / "out"
    prepare("ucf101", raw, out)
    options = preset_data_options("ucf101/modbalance")
    train = build_dataset(options.pop("name"), out, "train", **options)
    inputs, _ = train[0]
    assert {k: tuple(v.shape) for k, v in inputs.items()} == DATASET_PRESETS["ucf101/modbalance"]["shapes"]
    assert [train.classes[r.label] for r in train.records] == ["ApplyEyeMakeup", "HandstandPushups", "apple"]
    classind = UCF101(out, "train", label_order="classind", flow_channels=3, image_size=32)
    assert classind.classes == ["ApplyEyeMakeup", "Basketball", "HandstandPushups", "apple"]
    assert classind[0][0]["flow"].shape == (3, 3, 32, 32)
    assert dataset_info("ucf101", out, label_order="classind").classes[3] == "apple"
    test = UCF101(out, "test", image_size=32)
    first, again = test[0][0], test[0][0]
    assert torch.equal(first["flow"], again["flow"]) and torch.equal(first["visual"], again["visual"])


def test_twostream_layout_reads_community_folders(tmp_path, text_writer) -> None:
    lists = tmp_path / "ucfTrainTestlist"
    text_writer(lists / "classInd.txt", CLASSIND[:2])
    text_writer(lists / "trainlist01.txt", ["Basketball/v_Basketball_g01_c01.avi 2"])
    text_writer(lists / "testlist01.txt", ["ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi"])
    for name in ("v_Basketball_g01_c01", "v_ApplyEyeMakeup_g02_c01"):
        for k in range(6):
            media.save_jpeg(tmp_path / "jpegs_256" / name / f"frame{k + 1:06d}.jpg", np.full((48, 64, 3), 9, np.uint8))
            for part, value in (("u", 200), ("v", 60)):
                media.save_jpeg(
                    tmp_path / "tvl1_flow" / part / name / f"frame{k + 1:06d}.jpg", np.full((48, 64), value, np.uint8)
                )
    test = UCF101(tmp_path, "test", layout="twostream", image_size=16)
    inputs, target = test[0]
    assert inputs["flow"].shape == (2, 3, 16, 16) and target == 0
    assert (
        abs(float(inputs["flow"][0].mean()) - 200 / 255) < 0.01
        and abs(float(inputs["flow"][1].mean()) - 60 / 255) < 0.01
    )
    train = UCF101(tmp_path, "train", layout="twostream", image_size=16)
    flips = [train[0][0]["flow"][0].mean().item() for epoch in range(8) if train.set_epoch(epoch) is None]
    assert any(abs(f - (255 - 200) / 255) < 0.01 for f in flips)  # a flipped clip has u negated: 255 - u
    text_writer(lists / "trainlist01.txt", ["Basketball/v_Basketball_g01_c01.avi 1"])
    with pytest.raises(ValueError, match=r"trainlist01\.txt: row 1: label 1 does not match class 'Basketball'"):
        UCF101(tmp_path, "train", layout="twostream")
    (tmp_path / "tvl1_flow" / "v" / "v_Basketball_g01_c01" / "frame000006.jpg").unlink()
    text_writer(lists / "trainlist01.txt", ["Basketball/v_Basketball_g01_c01.avi 2"])
    with pytest.raises(ValueError, match=r"6 u frames but 5 v frames"):
        UCF101(tmp_path, "train", layout="twostream")[0]


def test_corrupt_video_is_recorded_and_a_missing_flow_folder_raises(raw, tmp_path) -> None:
    video = raw / "UCF-101" / "apple" / "v_apple_g01_c01.avi"
    video.write_bytes(video.read_bytes()[:300])
    out = tmp_path / "out"
    manifest = prepare("ucf101", raw, out)
    assert ("v_apple_g01_c01", "corrupt") in {(e["name"], e["reason"]) for e in manifest["skipped"]}
    assert not layout.flow_dirs(out, "v_apple_g01_c01")[0].exists()  # nothing half-written
    u_dir = layout.flow_dirs(out, "v_ApplyEyeMakeup_g01_c01")[0]
    for frame in u_dir.iterdir():
        frame.unlink()
    u_dir.rmdir()
    with pytest.raises(FileNotFoundError, match=r"flow/u/v_ApplyEyeMakeup_g01_c01: file not found"):
        UCF101(out, "train")
    skipping = UCF101(out, "train", on_error="skip", image_size=16)
    assert [r.name for r in skipping.records] == ["v_HandStandPushups_g01_c01"]
    assert [(s.name, s.reason) for s in skipping.report_skipped()] == [("v_ApplyEyeMakeup_g01_c01", "missing")]
