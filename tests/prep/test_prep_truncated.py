"""``prep`` on truncated media (issue 13): a cut-short WAV or video is skipped and recorded, never tiled or kept."""

from __future__ import annotations

import pytest

from modbalance.data.av_toy import make_av_toy_release
from modbalance.data.splits import read_rows
from modbalance.prep import prepare
from modbalance.prep.core import ENOUGH


@pytest.fixture()
def raw(tmp_path):
    return make_av_toy_release(tmp_path / "raw", per_class=2, test_fraction=0.34, seed=1)


def _names(raw):
    return [row[0] for row in read_rows(raw / "train.csv")]


def test_truncated_wav_and_video_are_skipped_and_recorded(raw, tmp_path):
    names = _names(raw)
    wav = raw / "AudioWAV" / f"{names[0]}.wav"
    data = wav.read_bytes()
    wav.write_bytes(data[: 44 + 1000])  # 500 of the declared samples: 0.031 s, the header still says the full length
    flv = raw / "VideoFlash" / f"{names[1]}.flv"
    data = flv.read_bytes()
    flv.write_bytes(data[: len(data) // 6])  # the first frames only
    out = tmp_path / "out"
    manifest = prepare("cremad", raw, out)
    skipped = {entry["name"]: entry for entry in manifest["skipped"] if entry["name"] is not None}
    assert set(skipped) == {names[0], names[1]}
    assert skipped[names[0]]["reason"] == "corrupt" and "truncated: 0.031 s of audio" in skipped[names[0]]["message"]
    assert skipped[names[1]]["reason"] == "corrupt" and "truncated: 1 frame(s)" in skipped[names[1]]["message"]
    ready = {row[0] for row in read_rows(out / "splits" / "train.csv", header="name")}
    assert names[0] not in ready and names[1] not in ready and set(names[2:]) <= ready


def test_a_whole_short_clip_is_enough(raw, tmp_path):
    assert 0.5 < ENOUGH < 1.0
    manifest = prepare("cremad", raw, tmp_path / "out")  # untouched clips of 1 to 3 s are all prepared
    assert [e for e in manifest["skipped"] if e["name"] is not None] == []
    assert manifest["counts"]["prepared"] == manifest["counts"]["clips"]
