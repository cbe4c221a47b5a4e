"""A tiny synthetic audio-visual release in the raw CREMA-D layout, to watch the file pipeline end to end.

Each clip's audio is a tone whose pitch depends on the class (plus noise), and its video shows a shape
that depends on the class (plus noise) at a random place. The release looks like the real one to
``modbalance prep cremad``::

    <root>/AudioWAV/<name>.wav      16 kHz mono, 1.3–2.5 s
    <root>/VideoFlash/<name>.flv    64 × 48, 10 fps (or .mp4)
    <root>/train.csv, test.csv      headerless "name,EMO", UTF-8 BOM, CRLF (the OGM-GE lists)

Names follow ``ActorId_Sentence_Emotion_Level`` (e.g. ``1003_IEO_HAP_LO``).
"""

from __future__ import annotations

import os
from pathlib import Path

from modbalance.data import media
from modbalance.data._deps import require
from modbalance.data.cremad import CREMAD_CLASSES

PathLike = str | os.PathLike[str]

_SENTENCES = ("DFA", "IEO", "IOM", "ITH", "ITS", "IWL", "IWW", "MTI", "TAI", "TIE", "TSI", "WSI")
_LEVELS = ("XX", "LO", "MD", "HI")
#: Tone frequency (Hz) per class, in CREMAD_CLASSES order: half-octave steps from 220 Hz.
TONE_HZ: tuple[float, ...] = tuple(220.0 * 2 ** (k / 2) for k in range(len(CREMAD_CLASSES)))
#: Shape drawn per class, in CREMAD_CLASSES order.
SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "cross", "hbar", "vbar")


def _draw(shape: str, width: int, height: int, rng: object, noise: float) -> object:
    np = require("numpy")
    pil = require("PIL.Image")
    draw_mod = require("PIL.ImageDraw")
    image = pil.new("RGB", (width, height), (0, 0, 0))
    draw = draw_mod.Draw(image)
    size = int(rng.integers(14, 22))  # type: ignore[attr-defined]
    x0 = int(rng.integers(0, width - size))  # type: ignore[attr-defined]
    y0 = int(rng.integers(0, height - size))  # type: ignore[attr-defined]
    x1, y1 = x0 + size, y0 + size
    colour = tuple(int(c) for c in rng.integers(120, 256, 3))  # type: ignore[attr-defined]
    mid_x, mid_y, third = (x0 + x1) // 2, (y0 + y1) // 2, max(size // 3, 2)
    if shape == "disc":
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=colour)
    elif shape == "triangle":
        draw.polygon([(mid_x, y0), (x0, y1), (x1, y1)], fill=colour)
    elif shape == "cross":
        draw.rectangle((mid_x - third // 2, y0, mid_x + third // 2, y1), fill=colour)
        draw.rectangle((x0, mid_y - third // 2, x1, mid_y + third // 2), fill=colour)
    elif shape == "hbar":
        draw.rectangle((x0, mid_y - third // 2, x1, mid_y + third // 2), fill=colour)
    else:
        draw.rectangle((mid_x - third // 2, y0, mid_x + third // 2, y1), fill=colour)
    array = np.asarray(image, dtype=np.float32)
    array += rng.normal(0.0, 255.0 * noise, array.shape)  # type: ignore[attr-defined]
    return np.clip(array, 0, 255).astype(np.uint8)


def make_av_toy_release(
    root: PathLike,
    *,
    per_class: int = 20,
    seed: int = 0,
    test_fraction: float = 0.2,
    audio_noise: float = 0.3,
    visual_noise: float = 0.15,
    video_suffix: str = ".flv",
    fps: int = 10,
    width: int = 64,
    height: int = 48,
) -> Path:
    """Write a toy release in the CREMA-D raw layout and return its root.

    Args:
        root: folder to write (created).
        per_class: clips per class (6 classes).
        seed: seed of every random choice (names, durations, noise, positions).
        test_fraction: share of each class listed in ``test.csv``.
        audio_noise: std of the white noise added to the tone (tone amplitude 0.5).
        visual_noise: std of the pixel noise, as a fraction of 255.
        video_suffix: ``".flv"`` (as CREMA-D) or ``".mp4"``.
        fps: video frame rate.
        width: frame width (even).
        height: frame height (even).

    Returns:
        ``Path(root)``.

    Example:
        >>> import tempfile, os
        >>> root = make_av_toy_release(tempfile.mkdtemp(), per_class=1)
        >>> sorted(os.listdir(root))
        ['AudioWAV', 'VideoFlash', 'test.csv', 'train.csv']
        >>> len(os.listdir(root / "AudioWAV"))
        6
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    np = require("numpy")
    root = Path(root)
    rng = np.random.default_rng(seed)
    rate = 16000
    train_rows: list[str] = []
    test_rows: list[str] = []
    used: set[str] = set()
    for emotion, tone, shape in zip(CREMAD_CLASSES, TONE_HZ, SHAPES, strict=True):
        n_test = round(per_class * test_fraction)
        for k in range(per_class):
            while True:
                name = (
                    f"{1001 + int(rng.integers(0, 91))}_{_SENTENCES[int(rng.integers(0, 12))]}_"
                    f"{emotion}_{_LEVELS[int(rng.integers(0, 4))]}"
                )
                if name not in used:
                    used.add(name)
                    break
            seconds = float(rng.uniform(1.3, 2.5))
            t = np.arange(int(seconds * rate)) / rate
            envelope = np.minimum(1.0, np.minimum(t, seconds - t) / 0.05)
            wave = 0.5 * envelope * np.sin(2 * np.pi * tone * t + rng.uniform(0, 2 * np.pi))
            wave = np.clip(wave + rng.normal(0.0, audio_noise, t.shape), -1.0, 1.0).astype(np.float32)
            media.write_wav(root / "AudioWAV" / f"{name}.wav", wave, rate)
            n_frames = max(1, int(seconds * fps))
            frames = np.stack([_draw(shape, width, height, rng, visual_noise) for _ in range(n_frames)])
            media.write_video(root / "VideoFlash" / f"{name}{video_suffix}", frames, fps)
            (test_rows if k < n_test else train_rows).append(f"{name},{emotion}")
    for file_name, rows in (("train.csv", train_rows), ("test.csv", test_rows)):
        text = "\ufeff" + "".join(f"{row}\r\n" for row in rows)
        (root / file_name).write_bytes(text.encode("utf-8"))
    return root
