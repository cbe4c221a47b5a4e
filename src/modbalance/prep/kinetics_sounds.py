"""Kinetics-Sounds raw videos -> prepared format.

Raw layout::

    <raw>/**/<name>.mp4                  Kinetics-400 clips, found recursively by file stem
                                         (CVDF names "<ytid>_<start:06d>_<end:06d>" match the train lists)
    <splits>/my_train.txt, my_test.txt   OGM-GE lists "name,10,label_index" (or MMAction "dir n label")
    or <splits>/KS_train_val.json        TPAMI JSON (training / validation / testing)

Audio is decoded from each video with PyAV. Outputs ``audio_a3/`` (1024 × 128) by default
(``--audio-recipe a3,a4`` adds TPAMI's 257 × 1003), ``frames/`` at 1 fps, ``splits/{train,[val,]test}.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modbalance.data.kinetics_sounds import KS_CLASSES, TPAMI_SUBSETS, read_ks_json, read_ks_list
from modbalance.prep._listing import VIDEO_SUFFIXES, check_rows, index_files
from modbalance.prep.core import Job, Listing, skip_entry


def list_ks(raw: Path, splits_dir: Path | str | None = None) -> Listing:
    """Find the KS clips and check them against the split lists (OGM-GE txt lists, else the TPAMI JSON).

    Raises:
        FileNotFoundError: neither list format is present.
    """
    lists = Path(splits_dir or raw)
    split_rows: dict[str, list[tuple[str, str]]] = {}
    list_files: dict[str, Path] = {}
    skipped: list[dict[str, Any]] = []
    if (lists / "my_train.txt").is_file():
        for split in ("train", "test"):
            path = lists / f"my_{split}.txt"
            if not path.is_file():
                continue
            rows = []
            for name, label in read_ks_list(path):
                if label.isdigit() and int(label) < len(KS_CLASSES):
                    rows.append((name, KS_CLASSES[int(label)]))
                else:
                    skipped.append(
                        skip_entry(
                            name,
                            "unknown_label",
                            f"{path}: label {label!r} is not in 0..30",
                            split=split,
                            file=str(path),
                        )
                    )
            split_rows[split], list_files[split] = rows, path
    elif (lists / "KS_train_val.json").is_file() or (lists / "KS.json").is_file():
        path = lists / "KS_train_val.json" if (lists / "KS_train_val.json").is_file() else lists / "KS.json"
        for split, subset in TPAMI_SUBSETS.items():
            _, rows = read_ks_json(path, subset)
            if rows:
                split_rows[split], list_files[split] = rows, path
    else:
        raise FileNotFoundError(
            f"{lists}: no Kinetics-Sounds lists (my_train.txt / my_test.txt from GeWu-Lab/OGM-GE_CVPR2022 "
            "data/KineticSound/, or KS_train_val.json from GeWu-Lab/BML_TPAMI2024 code/dataset/)"
        )
    videos = index_files(raw, VIDEO_SUFFIXES)
    names = {name for rows in split_rows.values() for name, _ in rows}
    sources = {n: {"video": videos.get(n)} for n in names}
    splits = {s: check_rows(s, rows, KS_CLASSES, sources, list_files[s], skipped) for s, rows in split_rows.items()}
    ready = sorted({name for rows in splits.values() for name, _ in rows})
    return Listing([Job(n, video=str(sources[n]["video"])) for n in ready], splits, list(KS_CLASSES), skipped)
