"""Helpers the dataset preparers share: indexing raw files, checking rows, recording skips."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from modbalance.prep.core import skip_entry

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".flv", ".avi", ".mkv", ".webm", ".mov")
AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac")


def index_files(root: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """Map each file stem under ``root`` (recursively, in sorted order) to its path; the first one wins.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp()); (root / "b").mkdir()
        >>> _ = (root / "b" / "clip.mp4").write_bytes(b"")
        >>> {k: v.name for k, v in index_files(root, (".mp4",)).items()}
        {'clip': 'clip.mp4'}
    """
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if path.suffix.lower() in suffixes and not name.startswith("."):
                found.setdefault(path.stem, path)
    return found


def check_rows(
    split: str,
    rows: Iterable[tuple[str, str]],
    classes: Sequence[str],
    sources: dict[str, dict[str, Path | None]],
    list_file: Path,
    skipped: list[dict[str, Any]],
) -> list[tuple[str, str]]:
    """Keep rows with a known label and all their source files; record the others in ``skipped``.

    Args:
        split: the split name.
        rows: ``(clip name, class name)``.
        classes: valid class names.
        sources: clip name -> {"video": path or None, "audio": path or None, ...}; a clip absent from
            this map, or with a ``None`` entry, is missing.
        list_file: the list the rows came from (for messages).
        skipped: receives one entry per dropped row.
    """
    valid = set(classes)
    kept = []
    for name, label in rows:
        if label not in valid:
            skipped.append(
                skip_entry(
                    name,
                    "unknown_label",
                    f"{list_file}: unknown label {label!r} for {name!r}",
                    split=split,
                    file=str(list_file),
                )
            )
            continue
        found = sources.get(name)
        missing = [kind for kind, path in (found or {"file": None}).items() if path is None]
        if missing:
            skipped.append(
                skip_entry(
                    name,
                    "missing",
                    f"{name}: no {' or '.join(missing)} file found (listed in {list_file.name})",
                    split=split,
                    file=str(list_file),
                )
            )
            continue
        kept.append((name, label))
    if not kept:
        skipped.append(
            skip_entry(
                None, "empty", f"split {split!r} from {list_file} has no usable rows", split=split, file=str(list_file)
            )
        )
    return kept
