"""CREMA-D raw release -> prepared format.

Raw layout (``CheyneyComputerScience/CREMA-D`` plus the OGM-GE split lists)::

    <raw>/AudioWAV/<name>.wav            16 kHz mono speech
    <raw>/VideoFlash/<name>.flv          the videos (.mp4 also accepted)
    <splits>/train.csv, test.csv         OGM-GE lists: headerless "name,EMO", BOM, CRLF
    <splits>/val.csv                     optional (Diagnosing's 744-clip validation split, "name,label"
                                         header); its clips are removed from train

Outputs: ``audio_a1/`` (257 × 188 by default), ``frames/<name>/`` at 1 fps, ``splits/{train,val,test}.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modbalance.data.cremad import CREMAD_CLASSES, read_cremad_list
from modbalance.prep._listing import AUDIO_SUFFIXES, VIDEO_SUFFIXES, check_rows, index_files
from modbalance.prep.core import Job, Listing


def list_cremad(raw: Path, splits_dir: Path | str | None = None) -> Listing:
    """Find the clips of a CREMA-D release and check them against the split lists.

    Raises:
        FileNotFoundError: ``train.csv`` or ``test.csv`` is missing (the message says where to get them).
    """
    lists = Path(splits_dir or raw)
    for needed in ("train.csv", "test.csv"):
        if not (lists / needed).is_file():
            raise FileNotFoundError(
                f"{lists / needed}: CREMA-D split list not found. Copy train.csv and test.csv from "
                "GeWu-Lab/OGM-GE_CVPR2022 data/CREMAD/ into the raw folder or pass --splits DIR."
            )
    wavs = index_files(raw / "AudioWAV", AUDIO_SUFFIXES)
    videos = index_files(raw / "VideoFlash", VIDEO_SUFFIXES)
    split_rows: dict[str, list[tuple[str, str]]] = {}
    list_files: dict[str, Path] = {}
    for split in ("train", "val", "test"):
        path = lists / f"{split}.csv"
        if path.is_file():
            split_rows[split], list_files[split] = read_cremad_list(path), path
    if "val" in split_rows:
        held_out = {name for name, _ in split_rows["val"]}
        split_rows["train"] = [row for row in split_rows["train"] if row[0] not in held_out]
    names = {name for rows in split_rows.values() for name, _ in rows}
    sources = {n: {"audio": wavs.get(n), "video": videos.get(n)} for n in names}
    skipped: list[dict[str, Any]] = []
    splits = {
        split: check_rows(split, rows, CREMAD_CLASSES, sources, list_files[split], skipped)
        for split, rows in split_rows.items()
    }
    ready = sorted({name for rows in splits.values() for name, _ in rows})
    jobs = [Job(name, video=str(sources[name]["video"]), audio=str(sources[name]["audio"])) for name in ready]
    return Listing(jobs, splits, list(CREMAD_CLASSES), skipped)
