"""VGGSound raw videos -> prepared format.

Raw layout::

    <raw>/vggsound.csv          headerless "youtube_id,start_seconds,label,train|test" (or in --splits)
    <raw>/**/<ytid>_<start>.mp4 videos, found recursively; "<start>" as in the csv or zero-padded to 6 digits
    <raw>/**/<ytid>_<start>.wav optional: audio already extracted (used instead of the video's audio)

The class order is the sorted set of labels of the **whole** csv, whatever was downloaded.
Outputs ``audio_a1p/`` (129 × 1251: the tiled 10 s, 16 kHz, n_fft 256, hop 128), ``frames/``, splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modbalance.data.vggsound import clip_ids, read_vggsound_csv
from modbalance.prep._listing import AUDIO_SUFFIXES, VIDEO_SUFFIXES, check_rows, index_files
from modbalance.prep.core import Job, Listing


def list_vggsound(raw: Path, splits_dir: Path | str | None = None) -> Listing:
    """Find the downloaded VGGSound clips; clips of the csv that are not on disk are recorded as missing.

    Raises:
        FileNotFoundError: ``vggsound.csv`` is missing.
    """
    csv_path = Path(splits_dir or raw) / "vggsound.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: vggsound.csv not found (get it from hche11/VGGSound data/)")
    rows = read_vggsound_csv(csv_path)
    classes = sorted({label for _, _, label, _ in rows})
    videos = index_files(raw, VIDEO_SUFFIXES)
    wavs = index_files(raw, AUDIO_SUFFIXES)
    split_rows: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    sources: dict[str, dict[str, Path | None]] = {}
    for youtube_id, start, label, split in rows:
        ids = clip_ids(youtube_id, start)
        name = next((i for i in ids if i in videos), ids[1])
        split_rows[split].append((name, label))
        sources[name] = {"video": videos.get(name)}
    skipped: list[dict[str, Any]] = []
    splits = {s: check_rows(s, r, classes, sources, csv_path, skipped) for s, r in split_rows.items()}
    ready = sorted({name for r in splits.values() for name, _ in r})
    jobs = [Job(n, video=str(sources[n]["video"]), audio=str(wavs[n]) if n in wavs else None) for n in ready]
    return Listing(jobs, splits, classes, skipped)
