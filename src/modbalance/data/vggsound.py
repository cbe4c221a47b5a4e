"""VGGSound: loader for our prepared format and the OGM-GE / BalanceBench layouts.

The class order is the **sorted** set of labels of ``vggsound.csv`` (the whole list, so it does not
depend on which clips were downloaded, unlike OGM-GE / BalanceBench); ``prep`` stores it in
``classes.txt``. Community layouts need the csv (option ``csv_file``, default ``vggsound.csv`` in root).

Layouts (option ``layout``); path options may contain ``{split}`` and are relative to ``root``:

* ``"modbalance"``: ``audio_a1p/<id>.npy`` (129 × 1251, the tiled 10 s; the loader crops 626 columns:
  random in training, centred at eval — a hop-aligned version of OGM-GE's random 5-s waveform crop),
  ``frames/<id>/``, ``splits/``.
* ``"ogm_ge"``: ``{split}-audios/{split}-set/<id>.wav`` (A1′ computed on the fly: random 5-s crop of the
  tiled wave in training, the centred crop at eval) and ``{split}-videos/{split}-set-img/Image-01-FPS/<id>.mp4/``
  (the folder name keeps ``.mp4``).
* ``"balancebench"``: ``audio_dir`` (default ``audio_{split}``) with ``<id>.npy`` (shape not published;
  checked only against ``audio_shape``) and ``visual_dir`` (default ``video_{split}``) with ``<id>/`` frames.

Clip ids are ``<ytid>_<start>``; both ``<start>`` as written in the csv and zero-padded to 6 digits are tried.
"""

from __future__ import annotations

import os
from pathlib import Path

from modbalance.data import layout as lay
from modbalance.data._common import (
    check_common,
    first_existing,
    image_transform,
    map_labels,
    parse_modalities,
    resolve_train,
)
from modbalance.data.base import AudioSpec, ClipDataset, ClipRecord, check_choice
from modbalance.data.errors import DataFileError
from modbalance.data.splits import read_prepared_split, read_rows

PathLike = str | os.PathLike[str]

VGGSOUND_LAYOUTS: tuple[str, ...] = ("modbalance", "ogm_ge", "balancebench")
VGGSOUND_SPLITS: tuple[str, ...] = ("train", "test")
#: Classes in the TPAMI / BalanceBench configs; the real count comes from the csv.
VGGSOUND_NUM_CLASSES = 309


def read_vggsound_csv(path: PathLike) -> list[tuple[str, str, str, str]]:
    """Read ``vggsound.csv``: headerless ``youtube_id,start_seconds,label,split`` (labels may be quoted).

    Returns:
        ``(youtube_id, start, label, split)`` rows.

    Raises:
        MissingFileError: the file does not exist.
        DataFileError: a row does not have 4 fields or its split is not train/test.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "vggsound.csv")
        >>> _ = open(path, "w").write('---g-f_I2yQ,1,"people marching, crowd",test\\n')
        >>> read_vggsound_csv(path)
        [('---g-f_I2yQ', '1', 'people marching, crowd', 'test')]
    """
    out = []
    for number, row in enumerate(read_rows(path, ","), start=1):
        if len(row) != 4 or row[3] not in VGGSOUND_SPLITS:
            raise DataFileError(path, f"row {number}: expected 'youtube_id,start,label,train|test', got {row}")
        out.append((row[0], row[1], row[2], row[3]))
    return out


def vggsound_classes(csv_path: PathLike) -> list[str]:
    """The sorted label names of a ``vggsound.csv``."""
    return sorted({label for _, _, label, _ in read_vggsound_csv(csv_path)})


def clip_ids(youtube_id: str, start: str) -> tuple[str, str]:
    """The two spellings of a clip id: the start as written, and zero-padded to 6 digits.

    Example:
        >>> clip_ids("glLQrEijrKg", "300")
        ('glLQrEijrKg_300', 'glLQrEijrKg_000300')
    """
    return f"{youtube_id}_{start}", f"{youtube_id}_{int(start):06d}" if start.isdigit() else f"{youtube_id}_{start}"


class VGGSound(ClipDataset):
    """VGGSound clips as ``({"audio": (1, 129, 626), "visual": (3, frames, S, S)}, label)``.

    Args:
        root: the dataset folder.
        split: ``"train"`` or ``"test"``.
        layout: ``"modbalance"``, ``"ogm_ge"`` or ``"balancebench"``.
        frames: frames per clip (3).
        frame_sampling: ``"segment"``, ``"first"``, ``"balancebench"`` or ``"ends"``.
        image_size: side of the frames (224).
        crop: ``"per_clip"`` or ``"per_frame"``.
        crop_scale_min: lower area bound of the random crop.
        eval_resize: ``"square"`` or ``"short_center"``.
        modalities: ``"audio,visual"`` or a subset.
        train: force train/eval behaviour.
        seed: base seed of the per-sample generators.
        on_error: ``"raise"`` or ``"skip"`` (with a partial download, ``"skip"`` drops and reports the
            clips that are not on disk).
        csv_file: the csv for community layouts (relative to root).
        audio_dir: audio folder for ``"balancebench"``.
        visual_dir: frame folder for ``"balancebench"``.
        audio_shape: ``"F,T"`` expected for ``"balancebench"`` arrays (empty: no check).
        check_files: check that every listed file exists at construction.

    Example:
        >>> VGGSound("/nonexistent", "train")  # run `modbalance prep` first; the error names the missing file
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
        csv_file: str = "vggsound.csv",
        audio_dir: str | None = None,
        visual_dir: str | None = None,
        audio_shape: str = "",
        check_files: bool = True,
    ) -> None:
        check_common(split, VGGSOUND_SPLITS, on_error, frame_sampling, crop)
        check_choice("layout", layout, VGGSOUND_LAYOUTS)
        root = Path(root)
        is_train = resolve_train(split, train)
        records = []
        if layout == "modbalance":
            classes = lay.read_classes(root)
            list_path = lay.split_file(root, split)
            labelled, skipped = map_labels(read_prepared_split(list_path), classes, list_path, on_error)
            for name, label in labelled:
                records.append(
                    ClipRecord(
                        name,
                        label,
                        audio=str(lay.audio_file(root, "a1p", name)),
                        visual=str(lay.frames_dir(root, name)),
                    )
                )
            audio = AudioSpec("a1p", (129, 1251), crop=626)
        else:
            list_path = root / csv_file
            rows = read_vggsound_csv(list_path)
            classes = sorted({label for _, _, label, _ in rows})
            wanted = [(clip_ids(y, s), label) for y, s, label, sp in rows if sp == split]
            spellings = {ids[0]: ids for ids, _ in wanted}
            labelled, skipped = map_labels([(ids[0], label) for ids, label in wanted], classes, list_path, on_error)
            for name, label in labelled:
                ids = spellings[name]
                if layout == "ogm_ge":
                    audio_path = first_existing(root / f"{split}-audios" / f"{split}-set" / f"{i}.wav" for i in ids)
                    img = root / f"{split}-videos" / f"{split}-set-img" / "Image-01-FPS"
                    visual_path = first_existing(img / f"{i}.mp4" for i in ids)
                else:
                    audio_folder = root / (audio_dir or "audio_{split}").format(split=split)
                    visual_folder = root / (visual_dir or "video_{split}").format(split=split)
                    audio_path = first_existing(audio_folder / f"{i}.npy" for i in ids)
                    visual_path = first_existing(visual_folder / i for i in ids)
                records.append(
                    ClipRecord(
                        audio_path.stem if layout != "ogm_ge" else name,
                        label,
                        audio=str(audio_path),
                        visual=str(visual_path),
                    )
                )
            if layout == "ogm_ge":
                audio = AudioSpec("a1p", crop=626)
            else:
                shape = tuple(int(v) for v in audio_shape.split(",")) if audio_shape else None
                if shape is not None and len(shape) != 2:
                    raise ValueError(f"audio_shape must be 'F,T', got {audio_shape!r}")
                audio = AudioSpec("a1p", shape)  # type: ignore[arg-type]
        super().__init__(
            records,
            classes,
            modalities=parse_modalities(modalities, ("audio", "visual")),
            train=is_train,
            seed=seed,
            on_error=on_error,
            audio=audio,
            frames=frames,
            frame_sampling=frame_sampling,
            image=image_transform(is_train, image_size, crop, crop_scale_min, eval_resize),
            check_files=check_files,
            skipped=skipped,
            source=str(list_path),
        )
