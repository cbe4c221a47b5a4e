"""Media readers on real files written by the tests: WAV, videos (mp4/flv/avi), JPEG, arrays, HDF5."""

import pickle

import numpy as np
import pytest
import torch

from modbalance.data import media
from modbalance.data.errors import DataFileError, MissingFileError


def _numbered_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frame k shows k in binary as six black/white blocks of 10 px, which survive lossy coding."""
    frames = np.zeros((count, height, width, 3), dtype=np.uint8)
    for k in range(count):
        for bit in range(6):
            if k >> bit & 1:
                frames[k, :, bit * 10 : bit * 10 + 10] = 255
    return frames


def _index_of(frame: np.ndarray) -> int:
    return sum(1 << bit for bit in range(6) if frame[8:40, bit * 10 + 3 : bit * 10 + 7].mean() > 128)


def test_wav_round_trip_mixes_channels_and_resamples(tmp_path) -> None:
    t = np.arange(16000) / 16000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1).astype(np.float32)
    media.write_wav(tmp_path / "s.wav", stereo, 16000)
    wave, rate = media.read_wav(tmp_path / "s.wav")
    assert rate == 16000 and wave.shape == (16000,)
    np.testing.assert_allclose(wave, stereo.mean(axis=1), atol=1e-4)  # 16-bit quantisation
    wave22, rate22 = media.read_wav(tmp_path / "s.wav", 22050)
    assert rate22 == 22050 and wave22.shape == (22050,)
    spectrum = np.abs(np.fft.rfft(wave22))
    assert abs(np.argmax(spectrum) * 22050 / len(wave22) - 440) < 2


@pytest.mark.parametrize(
    ("suffix", "position", "expected"),
    [
        (".avi", "first", [0, 10, 20, 30]),  # 3.5 s at 10 fps: seconds 0..3
        (".mp4", "first", [0, 10, 20, 30]),
        (".flv", "first", [0, 10, 20, 30]),
        (".mp4", "middle", [5, 15, 25]),
    ],
)
def test_video_frames_are_the_first_or_middle_of_each_second(tmp_path, suffix, position, expected) -> None:
    path = tmp_path / f"clip{suffix}"
    media.write_video(path, _numbered_frames(35), fps=10)
    frames, following = media.sample_video_frames(path, fps=1, position=position)
    assert following == []
    assert [_index_of(f) for f in frames] == expected
    assert frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8


def test_video_frames_at_two_fps_with_the_next_frame_for_flow(tmp_path) -> None:
    media.write_video(tmp_path / "c.mp4", _numbered_frames(20), fps=10)
    frames, following = media.sample_video_frames(tmp_path / "c.mp4", fps=2, with_next=True, max_frames=3)
    assert [_index_of(f) for f in frames] == [0, 5, 10]
    assert [_index_of(f) for f in following] == [1, 6, 11]


def test_audio_is_decoded_from_an_mp4(tmp_path) -> None:
    t = np.arange(32000) / 16000
    tone = (0.4 * np.sin(2 * np.pi * 880 * t)).astype(np.float32)
    media.write_video(tmp_path / "a.mp4", _numbered_frames(20), fps=10, audio=tone, sample_rate=16000)
    wave = media.read_video_audio(tmp_path / "a.mp4", 22050)
    assert abs(len(wave) - 44100) < 3000  # AAC adds priming samples
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 22050 / len(wave) - 880) < 3


def test_video_without_audio_raises_naming_the_file(tmp_path) -> None:
    media.write_video(tmp_path / "mute.avi", _numbered_frames(5), fps=10)
    with pytest.raises(DataFileError, match=r"mute\.avi: no audio stream") as info:
        media.read_video_audio(tmp_path / "mute.avi", 16000)
    assert info.value.reason == "empty"


def test_truncated_video_and_jpeg_raise_data_file_errors(tmp_path) -> None:
    media.write_video(tmp_path / "v.mp4", _numbered_frames(20), fps=10)
    data = (tmp_path / "v.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataFileError, match=r"cut\.mp4"):
        media.sample_video_frames(tmp_path / "cut.mp4")
    media.save_jpeg(tmp_path / "f.jpg", np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    blob = (tmp_path / "f.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFileError, match=r"cut\.jpg: cannot decode image"):
        media.read_image(tmp_path / "cut.jpg")


def test_missing_files_raise_missing_file_error(tmp_path) -> None:
    for reader in (media.read_wav, media.sample_video_frames, media.read_image, media.read_array):
        with pytest.raises(MissingFileError, match=r"nope\.x: file not found"):
            reader(tmp_path / "nope.x")
    with pytest.raises(MissingFileError):
        media.list_images(tmp_path / "no_folder")


def test_empty_wav_and_empty_frame_folder(tmp_path) -> None:
    media.write_wav(tmp_path / "e.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(DataFileError, match="no audio samples") as info:
        media.read_wav(tmp_path / "e.wav")
    assert info.value.reason == "empty"
    (tmp_path / "frames").mkdir()
    with pytest.raises(DataFileError, match="holds no images"):
        media.list_images(tmp_path / "frames")


def test_arrays_from_npy_pt_pkl_and_bad_ones(tmp_path) -> None:
    spec = np.arange(12, dtype=np.float32).reshape(3, 4)
    media.save_array(tmp_path / "a.npy", spec[None])
    torch.save(torch.from_numpy(spec), tmp_path / "a.pt")
    with open(tmp_path / "a.pkl", "wb") as handle:
        pickle.dump(spec.astype(np.float64), handle)
    for name in ("a.npy", "a.pt", "a.pkl"):
        np.testing.assert_array_equal(media.read_array(tmp_path / name), spec)
    media.save_array(tmp_path / "vec.npy", np.zeros(5))
    with pytest.raises(DataFileError, match=r"vec\.npy: expected a 2-D spectrogram, got shape \(5,\)"):
        media.read_array(tmp_path / "vec.npy")
    media.save_array(tmp_path / "nan.npy", np.full((2, 2), np.nan))
    with pytest.raises(DataFileError, match="NaN"):
        media.read_array(tmp_path / "nan.npy")
    with open(tmp_path / "s.pkl", "wb") as handle:
        pickle.dump("a string", handle)
    with pytest.raises(DataFileError, match=r"s\.pkl: expected a numeric array, got str"):
        media.read_array(tmp_path / "s.pkl")


def test_hdf5_frames_round_trip_and_decode(tmp_path) -> None:
    blobs = []
    for k in range(3):
        media.save_jpeg(tmp_path / f"{k}.jpg", np.full((8, 8, 3), 40 * k, dtype=np.uint8))
        blobs.append((tmp_path / f"{k}.jpg").read_bytes())
    media.write_hdf5_frames(tmp_path / "clip.hdf5", blobs)
    read = media.read_hdf5_frames(tmp_path / "clip.hdf5")
    assert read == blobs
    assert round(np.asarray(media.decode_image(read[2], "x")).mean()) == 80
    with pytest.raises(DataFileError, match=r"clip\.hdf5: no dataset 'frames'"):
        media.read_hdf5_frames(tmp_path / "clip.hdf5", key="frames")


def test_atomic_writes_leave_nothing_behind_on_failure(tmp_path) -> None:
    with pytest.raises(RuntimeError), media.atomic_directory(tmp_path / "clip") as folder:
        (folder / "frame_00001.jpg").write_bytes(b"x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"frames must be \(T, H, W, 3\)"):
        media.write_video(tmp_path / "bad.mp4", np.zeros((4, 4)))
    assert list(tmp_path.iterdir()) == []
