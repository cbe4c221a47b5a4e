"""AVE (Audio-Visual Event, 28 classes): loader for our prepared format and the OGM-GE layout.

Class order: sorted class names — from ``classes.txt`` (written by ``prep`` from ``Annotations.txt``)
or, for the OGM-GE layout, the sorted lines of ``stat.txt``.

Layouts (option ``layout``):

* ``"modbalance"``: ``audio_a2/<id>.npy`` (257 × 1004), ``frames/<id>/``, ``splits/``.
* ``"ogm_ge"``: ``visual/<id>/frame_0000k.jpg``, ``audio_spec/<id>.pkl`` (a pickled spectrogram; A2
  257 × 1004 most likely, checked only if ``audio_shape_check``), ``stat.txt`` and ``my_{split}.txt``
  rows ``Category,VideoID,...`` (or the official ``Category&VideoID&Quality&Start&End``).

Videos listed twice with different events (46 in the official annotations) are ambiguous for
classification: they are dropped and reported (reason ``"duplicate"``), as in the 2022 OGM-GE loader.
"""

from __future__ import annotations

import os
from pathlib import Path

from modbalance.data import layout as lay
from modbalance.data._common import check_common, image_transform, map_labels, parse_modalities, resolve_train
from modbalance.data.base import AudioSpec, ClipDataset, ClipRecord, SkippedSample, check_choice
from modbalance.data.errors import DataFileError, MissingFileError
from modbalance.data.splits import read_prepared_split, read_rows

PathLike = str | os.PathLike[str]

AVE_LAYOUTS: tuple[str, ...] = ("modbalance", "ogm_ge")
AVE_SPLITS: tuple[str, ...] = ("train", "val", "test")
AVE_NUM_CLASSES = 28


def read_ave_list(path: PathLike) -> list[tuple[str, str]]:
    """Read an AVE list as ``(video_id, category)``: ``&``-separated (official) or CSV (quoted categories).

    Raises:
        MissingFileError: the list does not exist.
        DataFileError: a row has fewer than two fields.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "trainSet.txt")
        >>> _ = open(path, "w").write("Church bell&RUhOCu3LNXM&good&0&10\\nViolin, fiddle&abc&good&0&10\\n")
        >>> read_ave_list(path)
        [('RUhOCu3LNXM', 'Church bell'), ('abc', 'Violin, fiddle')]
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "AVE list")
    ampersand = "&" in path.read_bytes().decode("utf-8-sig", errors="replace")
    out = []
    for number, row in enumerate(read_rows(path, "&" if ampersand else ","), start=1):
        if len(row) < 2:
            raise DataFileError(path, f"row {number}: expected 'Category&VideoID&...', got {row}")
        out.append((row[1], row[0]))
    return out


def drop_duplicates(rows: list[tuple[str, str]], source: PathLike) -> tuple[list[tuple[str, str]], list[SkippedSample]]:
    """Remove every video listed with more than one category; identical repeats are kept once.

    Example:
        >>> rows, dropped = drop_duplicates([("a", "Bus"), ("b", "Cat"), ("a", "Truck"), ("b", "Cat")], "x.txt")
        >>> rows, [d.name for d in dropped]
        ([('b', 'Cat')], ['a'])
    """
    labels: dict[str, set[str]] = {}
    for name, label in rows:
        labels.setdefault(name, set()).add(label)
    kept, seen, dropped = [], set(), []
    for name, label in rows:
        if name in seen:
            continue
        seen.add(name)
        if len(labels[name]) > 1:
            message = f"{source}: video {name!r} is listed with {len(labels[name])} categories {sorted(labels[name])}"
            dropped.append(SkippedSample(-1, name, "duplicate", message))
        else:
            kept.append((name, label))
    return kept, dropped


class AVE(ClipDataset):
    """AVE clips as ``({"audio": (1, 257, 1004), "visual": (3, frames, S, S)}, label)``.

    Args:
        root: the dataset folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        layout: ``"modbalance"`` or ``"ogm_ge"``.
        frames: frames per clip (3).
        frame_sampling: ``"segment"``, ``"first"``, ``"balancebench"`` (OGM-GE's frames 1, 4, 7) or ``"ends"``.
        image_size: side of the frames (224).
        crop: ``"per_clip"`` or ``"per_frame"``.
        crop_scale_min: lower area bound of the random crop.
        eval_resize: ``"square"`` or ``"short_center"``.
        modalities: ``"audio,visual"`` or a subset.
        train: force train/eval behaviour.
        seed: base seed of the per-sample generators.
        on_error: ``"raise"`` or ``"skip"``.
        split_file: the OGM-GE list (``{split}`` replaced; default ``my_{split}.txt``).
        audio_shape_check: check the OGM-GE ``.pkl`` spectrograms are 257 × 1004.
        check_files: check that every listed file exists at construction.

    Example:
        >>> AVE("/nonexistent", "train")  # run `modbalance prep` first; the error names the missing file
        Traceback (most recent call last):
        ...
        modbalance.data.errors.MissingFileError: /nonexistent/classes.txt: file not found (class list ...
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        *,
        layout: str = "modbalance",
        frames: int = 3,
        frame_sampling: str = "segment",
        image_size: int = 224,
        crop: str = "per_clip",
        crop_scale_min: float = 0.08,
        eval_resize: str = "square",
        modalities: str = "audio,visual",
        train: bool | None = None,
        seed: int = 0,
        on_error: str = "raise",
        split_file: str | None = None,
        audio_shape_check: bool = False,
        check_files: bool = True,
    ) -> None:
        check_common(split, AVE_SPLITS, on_error, frame_sampling, crop)
        check_choice("layout", layout, AVE_LAYOUTS)
        root = Path(root)
        is_train = resolve_train(split, train)
        if layout == "modbalance":
            classes = lay.read_classes(root)
            list_path = lay.split_file(root, split)
            labelled, skipped = map_labels(read_prepared_split(list_path), classes, list_path, on_error)
            audio_dir, visual_dir, suffix = root / "audio_a2", root / "frames", ".npy"
            shape: tuple[int, int] | None = (257, 1004)
            duplicates: list[SkippedSample] = []
        else:
            stat = root / "stat.txt"
            if not stat.is_file():
                raise MissingFileError(stat, "AVE class list of the OGM-GE layout")
            classes = sorted(row[0] for row in read_rows(stat, "\t"))
            list_path = root / (split_file or "my_{split}.txt").format(split=split)
            rows, duplicates = drop_duplicates(read_ave_list(list_path), list_path)
            labelled, skipped = map_labels(rows, classes, list_path, on_error)
            audio_dir, visual_dir, suffix = root / "audio_spec", root / "visual", ".pkl"
            shape = (257, 1004) if audio_shape_check else None
        records = [
            ClipRecord(n, y, audio=str(audio_dir / f"{n}{suffix}"), visual=str(visual_dir / n)) for n, y in labelled
        ]
        super().__init__(
            records,
            classes,
            modalities=parse_modalities(modalities, ("audio", "visual")),
            train=is_train,
            seed=seed,
            on_error=on_error,
            audio=AudioSpec("a2", shape),
            frames=frames,
            frame_sampling=frame_sampling,
            image=image_transform(is_train, image_size, crop, crop_scale_min, eval_resize),
            check_files=check_files,
            skipped=skipped,
            dropped=duplicates,
            source=str(list_path),
        )
