"""``prep vggsound`` from vggsound.csv + partially downloaded videos; loader crops and class order."""

import numpy as np
import pytest
import torch

from modbalance.data import layout, media
from modbalance.data.presets import DATASET_PRESETS, preset_data_options
from modbalance.data.registry import build_dataset, dataset_info
from modbalance.data.spectrogram import a1p_spectrogram
from modbalance.data.vggsound import VGGSound
from modbalance.prep import prepare

CSV = [
    "glLQrEijrKg,300,dog barking,train",
    'aaaaaaaaaaa,0,"people marching, crowd",train',
    "bbbbbbbbbbb,15,cat purring,test",
    "ccccccccccc,20,zebra braying,train",  # not downloaded: its class still counts
]


@pytest.fixture()
def raw(tmp_path, clip_writer, text_writer):
    root = tmp_path / "raw"
    text_writer(root / "vggsound.csv", CSV)
    clip_writer(root / "video" / "glLQrEijrKg_000300.mp4", seconds=2.5, seed=1)  # zero-padded name
    clip_writer(root / "video" / "aaaaaaaaaaa_0.mp4", seconds=2.5, seed=2)  # as in the csv
    clip_writer(root / "video" / "bbbbbbbbbbb_000015.mp4", seconds=2.5, seed=3, hz=660)
    return root


def test_prep_vggsound_class_order_and_missing_clips(raw, tmp_path) -> None:
    out = tmp_path / "out"
    manifest = prepare("vggsound", raw, out)
    classes = ["cat purring", "dog barking", "people marching, crowd", "zebra braying"]
    assert manifest["classes"] == classes and layout.read_classes(out) == classes
    assert [(e["name"], e["reason"]) for e in manifest["skipped"]] == [("ccccccccccc_000020", "missing")]
    spec = np.load(layout.audio_file(out, "a1p", "bbbbbbbbbbb_000015"))
    assert spec.shape == (129, 1251)
    wave = media.read_video_audio(raw / "video" / "bbbbbbbbbbb_000015.mp4", 16000)
    np.testing.assert_allclose(spec, a1p_spectrogram(torch.from_numpy(wave)).numpy(), atol=1e-4)
    assert dataset_info("vggsound", out).num_classes == 4


def test_loader_crops_626_columns_centred_at_eval_random_in_train(raw, tmp_path) -> None:
    out = tmp_path / "out"
    prepare("vggsound", raw, out)
    stored = torch.from_numpy(np.load(layout.audio_file(out, "a1p", "bbbbbbbbbbb_000015")))
    test = VGGSound(out, "test", modalities="audio")
    torch.testing.assert_close(test[0][0]["audio"][0], stored[:, 312:938])
    train = VGGSound(out, "train", modalities="audio", seed=3)
    full = torch.from_numpy(np.load(layout.audio_file(out, "a1p", train.records[0].name)))
    crops = set()
    for epoch in range(6):
        train.set_epoch(epoch)
        audio = train[0][0]["audio"][0]
        crops.add(next(s for s in range(626) if torch.equal(audio, full[:, s : s + 626])))
    assert len(crops) > 1
    assert [train.classes[r.label] for r in train.records] == ["dog barking", "people marching, crowd"]


def test_shapes_under_the_preset(raw, tmp_path) -> None:
    out = tmp_path / "out"
    prepare("vggsound", raw, out)
    options = preset_data_options("vggsound/ogm_ge")
    dataset = build_dataset(options.pop("name"), out, "train", **options)
    assert {k: tuple(v.shape) for k, v in dataset[1][0].items()} == DATASET_PRESETS["vggsound/ogm_ge"]["shapes"]


def test_ogm_ge_layout_computes_a1p_from_wav(tmp_path, text_writer, clip_writer) -> None:
    text_writer(tmp_path / "vggsound.csv", CSV[:3])
    ids = {"glLQrEijrKg_300": "train", "aaaaaaaaaaa_0": "train", "bbbbbbbbbbb_15": "test"}
    for k, (name, split) in enumerate(ids.items()):
        t = np.arange(16000 * 3) / 16000
        media.write_wav(
            tmp_path / f"{split}-audios" / f"{split}-set" / f"{name}.wav",
            (0.2 * np.sin(2 * np.pi * 300 * (k + 1) * t)).astype(np.float32),
            16000,
        )
        folder = tmp_path / f"{split}-videos" / f"{split}-set-img" / "Image-01-FPS" / f"{name}.mp4"
        folder.mkdir(parents=True)
        for i in range(4):
            media.save_jpeg(folder / f"{i * 30:05d}.jpg", np.full((48, 64, 3), 50 * i, dtype=np.uint8))
    dataset = VGGSound(tmp_path, "test", layout="ogm_ge")
    inputs, target = dataset[0]
    assert inputs["audio"].shape == (1, 129, 626) and inputs["visual"].shape == (3, 3, 224, 224)
    assert dataset.classes[target] == "cat purring"
    wave, _ = media.read_wav(tmp_path / "test-audios" / "test-set" / "bbbbbbbbbbb_15.wav")
    torch.testing.assert_close(inputs["audio"][0], a1p_spectrogram(torch.from_numpy(wave), start=40000))


def test_corrupt_video_and_missing_outputs(raw, tmp_path) -> None:
    video = raw / "video" / "aaaaaaaaaaa_0.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    out = tmp_path / "out"
    manifest = prepare("vggsound", raw, out)
    assert sorted((e["name"], e["reason"]) for e in manifest["skipped"]) == [
        ("aaaaaaaaaaa_0", "corrupt"),
        ("ccccccccccc_000020", "missing"),
    ]
    layout.audio_file(out, "a1p", "glLQrEijrKg_000300").unlink()
    with pytest.raises(FileNotFoundError, match=r"audio_a1p/glLQrEijrKg_000300\.npy: file not found"):
        VGGSound(out, "train")
    with pytest.raises(ValueError, match=r"no samples in .*train\.csv \(the split is empty; 1 rows were skipped\)"):
        VGGSound(out, "train", on_error="skip")  # its only clip is gone: an empty split is an error either way
