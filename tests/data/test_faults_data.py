"""Data faults (issue 13): skip mode with held-out validation, forged media headers, names escaping the root."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from modbalance.data import media
from modbalance.data._common import index_labels, map_labels
from modbalance.data.base import MAX_SUBSTITUTES, AudioSpec, ClipDataset, ClipRecord
from modbalance.data.cremad import CremaD
from modbalance.data.errors import DataFileError


# ------------------------------------------------------------------------------------------ 1. skip mode
def _array_dataset(root, count: int) -> ClipDataset:
    records = []
    for k in range(count):
        path = os.path.join(root, f"c{k}.npy")
        media.save_array(path, np.full((257, 188), float(k), np.float32))
        records.append(ClipRecord(f"c{k}", 0, audio=path))
    return ClipDataset(records, ["x"], modalities=("audio",), audio=AudioSpec("a1", (257, 188)), on_error="skip")


def test_a_bad_held_out_sample_is_stood_in_for_by_the_next_held_out_one_however_far(tmp_path):
    count = 3 * MAX_SUBSTITUTES
    dataset = _array_dataset(tmp_path, count)
    held_out = [5, 5 + 2 * MAX_SUBSTITUTES]  # 31 training rows lie between them in list order
    dataset.restrict_substitutes(held_out)
    (tmp_path / "c5.npy").write_bytes(b"garbage")
    inputs, _ = dataset[5]
    assert float(inputs["audio"].mean()) == float(held_out[1])  # the next readable held-out sample
    assert [s.name for s in dataset.skipped] == ["c5"]
    (tmp_path / f"c{held_out[1]}.npy").write_bytes(b"garbage")
    with pytest.raises(DataFileError, match=r"sample 5 and the 1 samples of its part of the list after it"):
        dataset[5]


# ------------------------------------------------------------------------------------------ 10. declared sizes
def _forge_rate(path, rate: int) -> None:
    """Rewrite a PCM WAV header's sample rate and byte rate (bytes 24..31), as a damaged header would."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"RIFF" and data[12:16] == b"fmt "
    channels, bits = struct.unpack_from("<H", data, 22)[0], struct.unpack_from("<H", data, 34)[0]
    struct.pack_into("<II", data, 24, rate, rate * channels * bits // 8)
    path.write_bytes(bytes(data))


def test_a_wav_header_declaring_1_hz_is_refused_before_resampling(tmp_path):
    path = tmp_path / "a.wav"
    media.write_wav(path, np.zeros(1600, np.float32), 16000)  # 0.1 s; at "1 Hz" that is 1600 s
    _forge_rate(path, 1)
    with pytest.raises(DataFileError, match=r"a.wav: declared sample rate 1 Hz is outside \[1000, 384000\]") as info:
        media.read_wav(path, 16000)
    assert info.value.reason == "bad_shape"
    _forge_rate(path, 8000)  # a plausible rate still reads
    wave, rate = media.read_wav(path, 16000)
    assert rate == 16000 and wave.shape == (3200,)


# ------------------------------------------------------------------------------------------ 11. names in lists
@pytest.mark.parametrize("name", ["../../outside/evil", "/etc/passwd", "a/../../b", "..", "C:\\x", "a\\..\\b"])
def test_names_that_leave_the_data_root_are_refused_naming_the_file_and_row(name):
    rows = [("1001_DFA_ANG_XX", "ANG"), (name, "ANG")]
    with pytest.raises(ValueError, match=r"train.csv: row 2: name .* outside the data root"):
        map_labels(rows, ["ANG"], "train.csv", "skip")
    with pytest.raises(ValueError, match=r"train.csv: row 2"):
        index_labels([(n, "0") for n, _ in rows], 1, "train.csv", "skip")


def test_a_loader_never_reads_a_file_outside_its_root(tmp_path, helpers):
    outside = tmp_path / "data" / "outside"  # where <root>/AudioWAV/../../outside/evil.wav lands
    media.write_wav(outside / "evil.wav", helpers.tone(1.0), 16000)
    helpers.write_frames(outside / "evil", 2, pattern="{:05d}.jpg", start=0)
    root = tmp_path / "data" / "cremad"
    media.write_wav(root / "AudioWAV" / "1001_DFA_ANG_XX.wav", helpers.tone(1.0), 16000)
    helpers.write_frames(root / "Image-01-FPS" / "1001_DFA_ANG_XX", 2, pattern="{:05d}.jpg", start=0)
    helpers.write_list(root / "train.csv", ["1001_DFA_ANG_XX,ANG", "../../outside/evil,ANG"])
    for on_error in ("raise", "skip"):
        with pytest.raises(ValueError, match=rf"{root / 'train.csv'}: row 2: name '\.\./\.\./outside/evil'"):
            CremaD(root, "train", layout="ogm_ge", on_error=on_error)


def test_an_image_header_declaring_huge_dimensions_is_refused_before_decoding(tmp_path):
    import io
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    struct.pack_into(">II", data, 16, 9000, 9000)  # 81 M pixels declared (under Pillow's own bomb limit), 1 of data
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))  # a valid header checksum
    path = tmp_path / "huge.png"
    path.write_bytes(bytes(data))
    with pytest.raises(DataFileError, match=r"huge.png: declares 9000 x 9000 pixels, over 67108864") as info:
        media.read_image(path)
    assert info.value.reason == "bad_shape"


def test_video_frame_sizes_are_checked_against_the_bound_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "clip.avi"
    media.write_video(path, np.zeros((5, 48, 64, 3), dtype=np.uint8), fps=10)
    assert len(media.sample_video_frames(path, fps=10)[0]) == 5
    monkeypatch.setattr(media, "MAX_IMAGE_PIXELS", 64 * 48 - 1)  # the same bound, scaled down to this clip
    with pytest.raises(DataFileError, match=r"clip.avi: declares 64 x 48 frames, over 3071 pixels"):
        media.sample_video_frames(path, fps=10)
