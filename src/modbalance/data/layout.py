"""Our prepared on-disk format (written by ``modbalance prep``, read by every loader's ``layout="modbalance"``).

::

    <root>/manifest.json                  counts, skipped clips and why, class order, parameters
    <root>/classes.txt                    one class name per line, in label order
    <root>/splits/<split>.csv             header "name,label"; label is the class name
    <root>/audio_<recipe>/<name>.npy      float32 spectrogram of that recipe (e.g. audio_a1/…, 257 × 188)
    <root>/frames/<name>/frame_00001.jpg  RGB frames at --fps (default 1), 1-based, 5 digits
    <root>/flow/u/<name>/frame000001.jpg  UCF-101 flow, twostreamfusion naming (6 digits), ±20 px -> [0, 255]
    <root>/flow/v/<name>/frame000001.jpg
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from modbalance.data.errors import DataFileError, MissingFileError

PathLike = str | os.PathLike[str]

MANIFEST = "manifest.json"
CLASSES = "classes.txt"


def split_file(root: PathLike, split: str) -> Path:
    """``<root>/splits/<split>.csv``.

    Example:
        >>> split_file("/data/cremad", "train").as_posix()
        '/data/cremad/splits/train.csv'
    """
    return Path(root) / "splits" / f"{split}.csv"


def audio_file(root: PathLike, recipe: str, name: str) -> Path:
    """``<root>/audio_<recipe>/<name>.npy``.

    Example:
        >>> audio_file("/d", "a1", "1001_DFA_ANG_XX").as_posix()
        '/d/audio_a1/1001_DFA_ANG_XX.npy'
    """
    return Path(root) / f"audio_{recipe}" / f"{name}.npy"


def frames_dir(root: PathLike, name: str) -> Path:
    """``<root>/frames/<name>``.

    Example:
        >>> frames_dir("/d", "clip").as_posix()
        '/d/frames/clip'
    """
    return Path(root) / "frames" / name


def frame_name(index: int) -> str:
    """The file name of 0-based frame ``index``: ``frame_00001.jpg`` for 0.

    Example:
        >>> frame_name(0), frame_name(11)
        ('frame_00001.jpg', 'frame_00012.jpg')
    """
    return f"frame_{index + 1:05d}.jpg"


def flow_dirs(root: PathLike, name: str) -> tuple[Path, Path]:
    """``(<root>/flow/u/<name>, <root>/flow/v/<name>)``.

    Example:
        >>> [p.as_posix() for p in flow_dirs("/d", "v_X_g01_c01")]
        ['/d/flow/u/v_X_g01_c01', '/d/flow/v/v_X_g01_c01']
    """
    return Path(root) / "flow" / "u" / name, Path(root) / "flow" / "v" / name


def flow_frame_name(index: int) -> str:
    """The twostreamfusion file name of 0-based flow frame ``index``: ``frame000001.jpg`` for 0.

    Example:
        >>> flow_frame_name(0)
        'frame000001.jpg'
    """
    return f"frame{index + 1:06d}.jpg"


def read_classes(root: PathLike) -> list[str]:
    """The class order stored by ``prep`` in ``<root>/classes.txt``.

    Raises:
        MissingFileError: the file does not exist (run ``modbalance prep`` first).
        DataFileError: it is empty.
    """
    path = Path(root) / CLASSES
    if not path.is_file():
        raise MissingFileError(path, "class list written by 'modbalance prep'")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DataFileError(path, "class list is empty", reason="empty")
    return names


def read_manifest(root: PathLike) -> dict[str, object]:
    """The ``manifest.json`` written by ``prep``.

    Raises:
        MissingFileError: it does not exist.
        DataFileError: it is not valid JSON.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise MissingFileError(path, "manifest written by 'modbalance prep'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise DataFileError(path, f"not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise DataFileError(path, "manifest must be a JSON object")
    return data
