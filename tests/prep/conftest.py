"""Fixture helpers for the prep tests: small real videos (with AAC audio) and list files."""

from pathlib import Path

import numpy as np
import pytest

from modbalance.data import media


def write_clip(
    path: Path,
    seconds: float = 3.0,
    *,
    fps: int = 10,
    audio: bool = True,
    hz: float = 440.0,
    motion: int = 0,
    seed: int = 0,
) -> None:
    """A 64 × 48 video of a textured background with a bright square moving ``motion`` px/frame to the right."""
    rng = np.random.default_rng(seed)
    count = int(seconds * fps)
    background = rng.integers(0, 90, (48, 64, 3)).astype(np.uint8)
    frames = np.repeat(background[None], count, axis=0)
    for k in range(count):
        left = (4 + motion * k) % 44
        frames[k, 14:34, left : left + 16] = 230
    wave = None
    if audio:
        t = np.arange(int(seconds * 16000)) / 16000
        wave = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    media.write_video(path, frames, fps, audio=wave, sample_rate=16000)


def write_text(path: Path, lines: list[str], *, crlf: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + ("\r\n" if crlf else "\n") for line in lines).encode("utf-8"))


@pytest.fixture()
def clip_writer():
    return write_clip


@pytest.fixture()
def text_writer():
    return write_text
