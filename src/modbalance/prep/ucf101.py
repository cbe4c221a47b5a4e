"""UCF-101 raw videos -> RGB frames and optical flow.

Raw layout (the CRCV release)::

    <raw>/**/<Class>/v_<Class>_gXX_cYY.avi    the videos (the UCF-101/ folder), found recursively
    <raw>/ucfTrainTestlist/                   classInd.txt, trainlist0N.txt, testlist0N.txt (or --splits)

For each clip, frames at 1 fps go to ``frames/<v_name>/frame_0000k.jpg``, and the flow from each kept
frame to the next video frame to ``flow/u/<v_name>/frame00000k.jpg`` and ``flow/v/…`` (Horn–Schunck,
see :mod:`modbalance.prep.flow`; ±20 px -> [0, 255]). Classes: ``classes.txt`` is the sorted names,
``manifest.json["classind_order"]`` the ``classInd.txt`` order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modbalance.data.ucf101 import read_class_index, read_ucf_list
from modbalance.prep._listing import VIDEO_SUFFIXES, check_rows, index_files
from modbalance.prep.core import Job, Listing


def list_ucf101(raw: Path, splits_dir: Path | str | None = None, split_id: int = 1) -> Listing:
    """Find the UCF-101 videos of official split ``split_id``.

    Raises:
        FileNotFoundError: ``classInd.txt`` is missing.
    """
    lists = Path(splits_dir) if splits_dir else raw / "ucfTrainTestlist"
    if not (lists / "classInd.txt").is_file():
        raise FileNotFoundError(f"{lists / 'classInd.txt'}: UCF-101 lists not found (ucfTrainTestlist/, or --splits)")
    classind = read_class_index(lists / "classInd.txt")
    videos = {stem.lower(): path for stem, path in index_files(raw, VIDEO_SUFFIXES).items()}
    skipped: list[dict[str, Any]] = []
    splits = {}
    for split in ("train", "test"):
        path, rows = read_ucf_list(lists, split, split_id, classind)
        sources = {name: {"video": videos.get(name.lower())} for name, _ in rows}
        splits[split] = check_rows(split, rows, classind, sources, path, skipped)
    ready = sorted({name for rows in splits.values() for name, _ in rows})
    jobs = [Job(n, video=str(videos[n.lower()])) for n in ready]
    extra = {"classind_order": classind, "split_id": split_id}
    return Listing(jobs, splits, sorted(classind), skipped, extra)
