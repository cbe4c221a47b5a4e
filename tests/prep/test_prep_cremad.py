"""``modbalance prep cremad`` on a small raw release with bad clips mixed in; then the loader on its output."""

import json

import numpy as np
import pytest
import torch

from modbalance.cli import main
from modbalance.data import layout, media
from modbalance.data.av_toy import make_av_toy_release
from modbalance.data.cremad import CREMAD_CLASSES, CremaD
from modbalance.data.spectrogram import a1_spectrogram
from modbalance.data.splits import read_rows
from modbalance.prep import prepare


@pytest.fixture()
def raw(tmp_path):
    root = make_av_toy_release(tmp_path / "raw", per_class=3, test_fraction=0.34, seed=1)
    return root


def _train_names(raw):
    return [row[0] for row in read_rows(raw / "train.csv")]


def _break_some_clips(raw):
    """Truncate one wav, corrupt one video, delete one wav, add a row with an unknown label."""
    names = _train_names(raw)
    wav = raw / "AudioWAV" / f"{names[0]}.wav"
    wav.write_bytes(wav.read_bytes()[:30])
    (raw / "VideoFlash" / f"{names[1]}.flv").write_bytes(b"FLV\x01\x05garbage" * 4)
    (raw / "AudioWAV" / f"{names[2]}.wav").unlink()
    text = (raw / "train.csv").read_bytes() + b"1091_WSI_BOR_XX,BOR\r\n"
    (raw / "train.csv").write_bytes(text)
    return names[:3]


def test_prep_writes_spectrograms_frames_splits_and_manifest(raw, tmp_path) -> None:
    out = tmp_path / "out"
    manifest = prepare("cremad", raw, out)
    assert manifest["counts"]["clips"] == manifest["counts"]["prepared"] == 18
    assert manifest["skipped"] == [] and manifest["classes"] == list(CREMAD_CLASSES)
    assert (out / "classes.txt").read_text().split() == list(CREMAD_CLASSES)
    train = read_rows(out / "splits" / "train.csv", header="name")
    assert len(train) == 12 and len(read_rows(out / "splits" / "test.csv", header="name")) == 6
    name = train[0][0]
    spec = np.load(layout.audio_file(out, "a1", name))
    wave, _ = media.read_wav(raw / "AudioWAV" / f"{name}.wav", 22050)
    np.testing.assert_allclose(spec, a1_spectrogram(torch.from_numpy(wave)).numpy(), atol=1e-5)
    seconds = len(media.read_wav(raw / "AudioWAV" / f"{name}.wav")[0]) / 16000
    video_frames = int(seconds * 10)  # the toy video has int(10 fps * duration) frames at t = 0, 0.1, ...
    expected = (video_frames - 1) // 10 + 1  # one per started second: t = 0, 1, 2, ...
    frames = sorted(p.name for p in layout.frames_dir(out, name).iterdir())
    assert frames == [f"frame_{k:05d}.jpg" for k in range(1, expected + 1)]
    assert media.read_image(layout.frames_dir(out, name) / frames[0]).size == (64, 48)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["counts"]["splits"]["train"] == {"listed": 12, "ready": 12, "failed": 0}


def test_bad_clips_are_skipped_and_recorded_with_reasons(raw, tmp_path) -> None:
    truncated, corrupt_video, missing = _break_some_clips(raw)
    manifest = prepare("cremad", raw, tmp_path / "out")
    reasons = {entry["name"]: entry["reason"] for entry in manifest["skipped"]}
    assert reasons == {
        truncated: "corrupt",
        corrupt_video: "corrupt",
        missing: "missing",
        "1091_WSI_BOR_XX": "unknown_label",
    }
    messages = {entry["name"]: entry["message"] for entry in manifest["skipped"]}
    assert f"{truncated}.wav" in messages[truncated] and f"{corrupt_video}.flv" in messages[corrupt_video]
    assert manifest["counts"]["prepared"] == 15 and manifest["counts"]["failed"] == 2
    assert manifest["counts"]["skipped_by_reason"] == {"corrupt": 2, "missing": 1, "unknown_label": 1}
    ready = [row[0] for row in read_rows(tmp_path / "out" / "splits" / "train.csv", header="name")]
    assert len(ready) == 9 and not {truncated, corrupt_video, missing} & set(ready)
    assert not any(p.name.startswith(".") for p in (tmp_path / "out" / "frames").iterdir())  # no partial folders


def test_prep_is_resumable_and_redoes_incomplete_clips(raw, tmp_path) -> None:
    out = tmp_path / "out"
    prepare("cremad", raw, out)
    name = _train_names(raw)[4]
    before = layout.audio_file(out, "a1", name).stat().st_mtime_ns
    for frame in layout.frames_dir(out, name).iterdir():
        frame.unlink()
    layout.frames_dir(out, name).rmdir()
    again = prepare("cremad", raw, out)
    assert again["counts"]["already_done"] == 17 and again["counts"]["newly_prepared"] == 1
    assert layout.frames_dir(out, name).is_dir()
    assert layout.audio_file(out, "a1", name).stat().st_mtime_ns == before  # not recomputed


def test_empty_split_is_recorded(raw, tmp_path) -> None:
    (raw / "test.csv").write_bytes("\ufeff".encode())
    manifest = prepare("cremad", raw, tmp_path / "out")
    empty = [e for e in manifest["skipped"] if e["reason"] == "empty"]
    assert len(empty) == 1 and empty[0]["split"] == "test" and "test.csv" in empty[0]["message"]
    assert read_rows(tmp_path / "out" / "splits" / "test.csv", header="name") == []


def test_val_split_is_taken_out_of_train(raw, tmp_path) -> None:
    names = _train_names(raw)
    (raw / "val.csv").write_text("name,label\n" + "".join(f"{n},{n.split('_')[2]}\n" for n in names[:3]))
    prepare("cremad", raw, tmp_path / "out")
    train = {row[0] for row in read_rows(tmp_path / "out" / "splits" / "train.csv", header="name")}
    val = {row[0] for row in read_rows(tmp_path / "out" / "splits" / "val.csv", header="name")}
    assert val == set(names[:3]) and not train & val and len(train) == 9


def test_parallel_workers_give_the_same_outputs(raw, tmp_path) -> None:
    _break_some_clips(raw)
    serial = prepare("cremad", raw, tmp_path / "serial")
    parallel = prepare("cremad", raw, tmp_path / "parallel", workers=2)
    assert parallel["counts"]["prepared"] == serial["counts"]["prepared"] == 15
    assert sorted(e["name"] for e in parallel["skipped"]) == sorted(e["name"] for e in serial["skipped"])
    for path in sorted((tmp_path / "serial" / "audio_a1").iterdir()):
        np.testing.assert_array_equal(np.load(path), np.load(tmp_path / "parallel" / "audio_a1" / path.name))


def test_cli_prep_and_several_recipes(raw, tmp_path, capsys) -> None:
    code = main(
        [
            "prep",
            "cremad",
            "--raw",
            str(raw),
            "--out",
            str(tmp_path / "o"),
            "--audio-recipe",
            "a1,a2_3s,a3",
            "--fps",
            "2",
            "--frame-size",
            "32",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert '"prepared": 18' in printed and "manifest.json" in printed
    name = _train_names(raw)[0]
    assert np.load(layout.audio_file(tmp_path / "o", "a2_3s", name)).shape == (257, 299)
    assert np.load(layout.audio_file(tmp_path / "o", "a3", name)).shape == (1024, 128)
    frame = sorted(layout.frames_dir(tmp_path / "o", name).iterdir())[0]
    assert media.read_image(frame).size == (43, 32)  # short side 32, aspect 4:3 kept
    assert main(["prep", "cremad", "--raw", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "raw data folder not found" in capsys.readouterr().err


def test_unknown_prep_options_are_errors(raw, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['fsp'\] for cremad; valid: .*fps"):
        prepare("cremad", raw, tmp_path / "o", fsp=2)
    with pytest.raises(ValueError, match="unknown dataset 'crema'; valid: cremad, ks"):
        prepare("crema", raw, tmp_path / "o")


def test_loader_reads_the_prepared_output(
    raw,
    tmp_path,
) -> None:
    out = tmp_path / "out"
    prepare("cremad", raw, out, recipes=("a1", "a3"))
    train = CremaD(out, "train")
    inputs, target = train[0]
    assert inputs["audio"].shape == (1, 257, 188) and inputs["visual"].shape == (3, 1, 224, 224)
    assert CREMAD_CLASSES[target] == train.records[0].name.split("_")[2]
    fbank = CremaD(out, "test", audio_recipe="a3", frames=2, image_size=112)
    assert fbank[0][0]["audio"].shape == (1, 1024, 128) and fbank[0][0]["visual"].shape == (3, 2, 112, 112)
    np.save(layout.audio_file(out, "a1", train.records[1].name), np.zeros((257, 187), dtype=np.float32))
    with pytest.raises(Exception, match=r"audio_a1/.*\.npy: spectrogram shape \(257, 187\), expected \(257, 188\)"):
        train[1]


@pytest.mark.parametrize("preset", ["cremad/ogm_ge", "cremad/tpami", "cremad/balancebench"])
def test_shapes_reaching_the_encoders_under_each_preset(raw, tmp_path, preset) -> None:
    from modbalance.data.presets import DATASET_PRESETS, preset_data_options
    from modbalance.data.registry import build_dataset

    out = tmp_path / "out"
    prepare("cremad", raw, out, recipes=("a1", "a3"))
    options = preset_data_options(preset)
    for split in ("train", "test"):
        dataset = build_dataset(options.pop("name", "cremad"), out, split, **options)
        inputs, target = dataset[0]
        assert {k: tuple(v.shape) for k, v in inputs.items()} == DATASET_PRESETS[preset]["shapes"]
        assert dataset.classes[target] == dataset.records[0].name.split("_")[2]
