"""Fixture helpers for the loader tests: tiny frame folders, spectrogram files and split lists."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modbalance.data import media
from modbalance.data.transforms import IMAGENET_MEAN, IMAGENET_STD

FRAME_STEP = 20  # frame k of a fixture clip is a flat grey of value FRAME_STEP * k


def write_frames(folder: Path, count: int, pattern: str = "frame_{:05d}.jpg", start: int = 1) -> None:
    """Write ``count`` flat grey 64 × 48 JPEGs; frame k (0-based) has value FRAME_STEP * k."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        media.save_jpeg(folder / pattern.format(k + start), np.full((48, 64, 3), FRAME_STEP * k, dtype=np.uint8))


def frame_ids(visual) -> list[int]:
    """Invert write_frames through the ImageNet normalisation: which frames a (3, T, H, W) tensor shows."""
    red = visual[0].mean(dim=(1, 2)) * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    return [round(float(v) * 255 / FRAME_STEP) for v in red]


def write_list(path: Path, rows: list[str], *, bom: bool = True, crlf: bool = True) -> None:
    """Write a community list file (BOM + CRLF by default, like the OGM-GE CREMA-D csv)."""
    end = "\r\n" if crlf else "\n"
    text = ("\ufeff" if bom else "") + "".join(row + end for row in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def tone(seconds: float, rate: int = 16000, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture()
def helpers() -> Callable:
    class Helpers:
        write_frames = staticmethod(write_frames)
        frame_ids = staticmethod(frame_ids)
        write_list = staticmethod(write_list)
        tone = staticmethod(tone)

    return Helpers
