"""AVE raw release -> prepared format.

Raw layout (``YapengTian/AVE-ECCV18`` archive)::

    <raw>/Annotations.txt                 "Category&VideoID&Quality&StartTime&EndTime" (all 4,143 events)
    <raw>/trainSet.txt, valSet.txt, testSet.txt   the same format (or in --splits)
    <raw>/**/<VideoID>.mp4                the videos (the archive's AVE/ folder), found recursively

The class order is the sorted set of categories of ``Annotations.txt`` (of the split lists if it is
absent). Videos listed with two different events are dropped and recorded (reason ``"duplicate"``).
Outputs ``audio_a2/`` (257 × 1004: 16 kHz, 10 s, scipy-style log-PSD, z-normalised), ``frames/``, splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modbalance.data.ave import drop_duplicates, read_ave_list
from modbalance.prep._listing import VIDEO_SUFFIXES, check_rows, index_files
from modbalance.prep.core import Job, Listing, skip_entry

_LISTS = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}


def list_ave(raw: Path, splits_dir: Path | str | None = None) -> Listing:
    """Find the AVE videos and check them against trainSet/valSet/testSet.

    Raises:
        FileNotFoundError: none of the split lists exists.
    """
    lists = Path(splits_dir or raw)
    present = {split: lists / name for split, name in _LISTS.items() if (lists / name).is_file()}
    if not present:
        raise FileNotFoundError(f"{lists}: no AVE split lists (trainSet.txt, valSet.txt, testSet.txt)")
    annotations = lists / "Annotations.txt"
    all_rows = (
        read_ave_list(annotations)
        if annotations.is_file()
        else [row for path in present.values() for row in read_ave_list(path)]
    )
    classes = sorted({label for _, label in all_rows})
    videos = index_files(raw, VIDEO_SUFFIXES)
    skipped: list[dict[str, Any]] = []
    splits = {}
    for split, path in present.items():
        rows, duplicates = drop_duplicates(read_ave_list(path), path)
        skipped.extend(skip_entry(d.name, d.reason, d.message, split=split, file=str(path)) for d in duplicates)
        sources = {name: {"video": videos.get(name)} for name, _ in rows}
        splits[split] = check_rows(split, rows, classes, sources, path, skipped)
    ready = sorted({name for rows in splits.values() for name, _ in rows})
    return Listing([Job(n, video=str(videos[n])) for n in ready], splits, classes, skipped)
