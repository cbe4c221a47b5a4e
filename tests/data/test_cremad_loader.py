"""CREMA-D loader on the community layouts (OGM-GE wav + Image-01-FPS, BalanceBench .pt + frames)."""

import pytest
import torch

from modbalance.data import media
from modbalance.data.cremad import CREMAD_CLASSES, CREMAD_CLASSES_OGM_GE, CremaD
from modbalance.data.errors import DataFileError, MissingFileError

NAMES = ["1001_DFA_ANG_XX", "1002_IEO_HAP_LO", "1003_ITS_NEU_MD", "1004_TAI_SAD_HI"]


@pytest.fixture()
def ogm_ge_root(tmp_path, helpers):
    for k, name in enumerate(NAMES):
        media.write_wav(tmp_path / "AudioWAV" / f"{name}.wav", helpers.tone(1.2 + 0.3 * k), 16000)
        helpers.write_frames(tmp_path / "Image-01-FPS" / name, 4, pattern="{:05d}.jpg", start=0)
    rows = [f"{n},{n.split('_')[2]}" for n in NAMES]
    helpers.write_list(tmp_path / "train.csv", rows[:3])
    helpers.write_list(tmp_path / "test.csv", rows[3:])
    return tmp_path


def test_ogm_ge_layout_shapes_and_labels(ogm_ge_root) -> None:
    train = CremaD(ogm_ge_root, "train", layout="ogm_ge")
    assert len(train) == 3 and train.classes == list(CREMAD_CLASSES)
    inputs, target = train[1]
    assert set(inputs) == {"audio", "visual"}
    assert inputs["audio"].shape == (1, 257, 188) and inputs["audio"].dtype == torch.float32
    assert inputs["visual"].shape == (3, 1, 224, 224)
    assert target == CREMAD_CLASSES.index("HAP") == 3
    legacy = CremaD(ogm_ge_root, "train", layout="ogm_ge", label_order="ogm_ge")
    assert legacy[1][1] == CREMAD_CLASSES_OGM_GE.index("HAP") == 1
    assert [legacy[i][1] for i in range(3)] == [5, 1, 0]  # ANG, HAP, NEU in the OGM-GE order


def test_ogm_ge_audio_is_recipe_a1_of_the_resampled_wav(ogm_ge_root) -> None:
    from modbalance.data.spectrogram import a1_spectrogram

    wave, _ = media.read_wav(ogm_ge_root / "AudioWAV" / f"{NAMES[0]}.wav", 22050)
    inputs, _ = CremaD(ogm_ge_root, "train", layout="ogm_ge", modalities="audio")[0]
    assert set(inputs) == {"audio"}
    torch.testing.assert_close(inputs["audio"][0], a1_spectrogram(torch.from_numpy(wave)))


def test_other_recipes_from_wav_give_their_shapes(ogm_ge_root) -> None:
    a2 = CremaD(ogm_ge_root, "test", layout="ogm_ge", audio_recipe="a2_3s", modalities="audio")
    assert a2[0][0]["audio"].shape == (1, 257, 299)
    a3 = CremaD(ogm_ge_root, "test", layout="ogm_ge", audio_recipe="a3", modalities="audio")
    assert a3[0][0]["audio"].shape == (1, 1024, 128)


def test_eval_frames_are_deterministic_segment_centres(ogm_ge_root, helpers) -> None:
    test = CremaD(ogm_ge_root, "test", layout="ogm_ge", frames=2, modalities="visual")
    first = test[0][0]["visual"]
    assert helpers.frame_ids(first) == [1, 3]  # 4 frames, 2 segments: centres floor(1), floor(3)
    assert torch.equal(first, test[0][0]["visual"])
    assert helpers.frame_ids(
        CremaD(ogm_ge_root, "test", layout="ogm_ge", frames=3, frame_sampling="first", modalities="visual")[0][0][
            "visual"
        ]
    ) == [0, 1, 2]


def test_train_frames_are_seeded_per_epoch_and_worker_independent(ogm_ge_root, helpers) -> None:
    def frames_of(seed, epoch, index=0):
        dataset = CremaD(ogm_ge_root, "train", layout="ogm_ge", frames=2, seed=seed, modalities="visual", image_size=32)
        dataset.set_epoch(epoch)
        return dataset[index][0]["visual"]

    assert torch.equal(frames_of(0, 0), frames_of(0, 0))
    draws = {tuple(helpers.frame_ids(frames_of(0, epoch))) for epoch in range(12)}
    assert len(draws) > 1 and all(a in (0, 1) and b in (2, 3) for a, b in draws)

    dataset = CremaD(ogm_ge_root, "train", layout="ogm_ge", frames=2, seed=5, image_size=32)
    dataset.set_epoch(3)
    direct = [dataset[i][0]["visual"] for i in range(len(dataset))]
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2)
    via_workers = [batch[0]["visual"][0] for batch in loader]
    assert all(torch.equal(a, b) for a, b in zip(direct, via_workers))


def test_balancebench_layout_reads_pt_fbanks(tmp_path, helpers) -> None:
    (tmp_path / "audio").mkdir()
    for name in NAMES[:2]:
        torch.save(torch.randn(300, 128), tmp_path / "audio" / f"{name}.pt")
        helpers.write_frames(tmp_path / "visual" / name, 3)
    helpers.write_list(tmp_path / "train.csv", [f"{n},{n.split('_')[2]}" for n in NAMES[:2]])
    dataset = CremaD(tmp_path, "train", layout="balancebench", frames=2, label_order="ogm_ge")
    inputs, target = dataset[0]
    assert inputs["audio"].shape == (1, 300, 128) and inputs["visual"].shape == (3, 2, 224, 224)
    assert target == 5
    strict = CremaD(tmp_path, "train", layout="balancebench", audio_frames=1024)
    with pytest.raises(
        DataFileError, match=r"1001_DFA_ANG_XX\.pt: spectrogram shape \(300, 128\), expected \(1024, 128\)"
    ):
        strict[0]


def test_missing_listed_files_raise_or_are_skipped_and_reported(ogm_ge_root) -> None:
    (ogm_ge_root / "AudioWAV" / f"{NAMES[1]}.wav").unlink()
    with pytest.raises(MissingFileError, match=rf"AudioWAV/{NAMES[1]}\.wav: file not found"):
        CremaD(ogm_ge_root, "train", layout="ogm_ge")
    dataset = CremaD(ogm_ge_root, "train", layout="ogm_ge", on_error="skip")
    assert len(dataset) == 2
    report = dataset.report_skipped()
    assert [(s.name, s.reason) for s in report] == [(NAMES[1], "missing")]
    assert dataset.report_skipped() == []  # cleared


def test_unknown_labels_and_empty_splits(ogm_ge_root, helpers) -> None:
    helpers.write_list(ogm_ge_root / "train.csv", [f"{NAMES[0]},ANG", f"{NAMES[1]},BORED"])
    with pytest.raises(ValueError, match=r"train\.csv: row 2 \('1002_IEO_HAP_LO'\) has unknown label 'BORED'"):
        CremaD(ogm_ge_root, "train", layout="ogm_ge")
    dataset = CremaD(ogm_ge_root, "train", layout="ogm_ge", on_error="skip")
    assert len(dataset) == 1 and [s.reason for s in dataset.report_skipped()] == ["unknown_label"]
    helpers.write_list(ogm_ge_root / "test.csv", [])
    for on_error in ("raise", "skip"):
        with pytest.raises(ValueError, match=r"no samples in .*test\.csv"):
            CremaD(ogm_ge_root, "test", layout="ogm_ge", on_error=on_error)


def test_corrupt_media_raise_naming_the_file_or_skip_with_a_count(ogm_ge_root) -> None:
    (ogm_ge_root / "AudioWAV" / f"{NAMES[0]}.wav").write_bytes(b"RIFF\x00\x00garbage")
    frame = ogm_ge_root / "Image-01-FPS" / NAMES[2] / "00000.jpg"
    frame.write_bytes(frame.read_bytes()[:100])
    dataset = CremaD(ogm_ge_root, "train", layout="ogm_ge", frame_sampling="first")
    with pytest.raises(DataFileError, match=rf"{NAMES[0]}\.wav: cannot decode audio"):
        dataset[0]
    with pytest.raises(DataFileError, match=r"00000\.jpg: cannot decode image"):
        dataset[2]
    skipping = CremaD(ogm_ge_root, "train", layout="ogm_ge", frame_sampling="first", on_error="skip")
    targets = [skipping[i][1] for i in range(3)]
    assert targets == [3, 3, 3]  # samples 0 and 2 are replaced by the next readable one (sample 1, HAP)
    report = skipping.report_skipped()
    assert sorted((s.sample, s.reason) for s in report) == [(0, "corrupt"), (2, "corrupt")]


def test_skips_in_dataloader_workers_reach_the_main_process(ogm_ge_root) -> None:
    (ogm_ge_root / "AudioWAV" / f"{NAMES[0]}.wav").write_bytes(b"not a wav at all")
    dataset = CremaD(ogm_ge_root, "train", layout="ogm_ge", on_error="skip", image_size=32)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2)
    batches = list(loader)
    assert len(batches) == 3
    report = dataset.report_skipped()
    assert [(s.sample, s.reason) for s in report] == [(0, "corrupt")]
    assert "cannot decode audio" in report[0].message and NAMES[0] in report[0].message


def test_invalid_options_name_the_option_and_the_valid_values(ogm_ge_root) -> None:
    with pytest.raises(ValueError, match="layout must be one of 'modbalance', 'ogm_ge', 'balancebench'; got 'x'"):
        CremaD(ogm_ge_root, layout="x")
    with pytest.raises(ValueError, match="split must be one of 'train', 'val', 'test'"):
        CremaD(ogm_ge_root, "dev", layout="ogm_ge")
    with pytest.raises(ValueError, match="label_order must be one of"):
        CremaD(ogm_ge_root, layout="ogm_ge", label_order="random")
