"""The toy audio-visual release: CREMA-D layout, class-dependent pitch and shape, readable by prep."""

import numpy as np

from modbalance.data import media
from modbalance.data.av_toy import TONE_HZ, make_av_toy_release
from modbalance.data.cremad import CREMAD_CLASSES
from modbalance.data.splits import read_rows


def test_layout_and_list_format(tmp_path) -> None:
    root = make_av_toy_release(tmp_path, per_class=5, seed=3)
    raw = (root / "train.csv").read_bytes()
    assert raw.startswith("\ufeff".encode()) and b"\r\n" in raw and not raw.startswith(b"name")
    train, test = read_rows(root / "train.csv"), read_rows(root / "test.csv")
    assert len(train) == 24 and len(test) == 6  # round(5 * 0.2) = 1 test clip per class
    for name, emotion in train + test:
        actor, _, label, _ = name.split("_")
        assert label == emotion and emotion in CREMAD_CLASSES and 1001 <= int(actor) <= 1091
        assert (root / "AudioWAV" / f"{name}.wav").is_file() and (root / "VideoFlash" / f"{name}.flv").is_file()
    again = make_av_toy_release(tmp_path / "again", per_class=5, seed=3)
    assert read_rows(again / "train.csv") == train  # seeded


def test_pitch_and_shape_depend_on_the_class(tmp_path) -> None:
    root = make_av_toy_release(tmp_path, per_class=2, seed=0, audio_noise=0.05, visual_noise=0.0)
    rows = read_rows(root / "train.csv") + read_rows(root / "test.csv")
    shapes = {}
    for name, emotion in rows:
        wave, rate = media.read_wav(root / "AudioWAV" / f"{name}.wav")
        peak_hz = np.argmax(np.abs(np.fft.rfft(wave))) * rate / len(wave)
        assert abs(peak_hz - TONE_HZ[CREMAD_CLASSES.index(emotion)]) < 3
        frames, _ = media.sample_video_frames(root / "VideoFlash" / f"{name}.flv")
        lit = frames[0].max(axis=2) > 60
        ys, xs = np.nonzero(lit)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        shapes.setdefault(emotion, []).append(lit.sum() / box)  # fill ratio of the bounding box
    fill = {e: float(np.mean(v)) for e, v in shapes.items()}
    assert fill["DIS"] > 0.9  # square
    assert 0.65 < fill["ANG"] < 0.9  # disc: pi/4
    assert fill["FEA"] < 0.65  # triangle: 1/2
