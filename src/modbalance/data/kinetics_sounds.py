"""Kinetics-Sounds (GeWu-Lab's 31-class subset of Kinetics-400): loader for our format and two community ones.

Layouts (option ``layout``); every path option may contain ``{split}`` and is relative to ``root``:

* ``"modbalance"``: the output of ``modbalance prep ks`` (``audio_<audio_recipe>/``, ``frames/``, ``splits/``).
* ``"balancebench"``: BalanceBench / InfoReg / Valuate: ``audio_dir`` (default ``audio_{split}``) with
  ``<name>.npy`` A3 fbanks (1024 × 128), ``visual_dir`` (default ``visual_{split}``) with
  ``<name>/frame_0000k.jpg``, and ``split_file`` (default ``my_{split}.txt``) in either list format:
  OGM-GE ``name,10,label`` or MMAction ``frame_dir total_frames label``.
* ``"tpami"``: the TPAMI code: ``split_file`` (default ``KS_train_val.json``: ``{"labels": [...],
  "database": {name: {"subset": "training|validation|testing", "label": name}}}``), ``visual_dir``
  (default ``hdf5``) with ``<name>.hdf5`` F3 clips and ``audio_dir`` (default ``pkl``) with ``<name>.pkl``
  spectrograms (A4, 257 × 1003, checked only if ``audio_shape_check``).

Class order: :data:`KS_CLASSES`, alphabetical — the index order of TPAMI ``KS.json["labels"]`` and the
third column of the OGM-GE lists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from modbalance.data import layout as lay
from modbalance.data._common import (
    check_common,
    image_transform,
    index_labels,
    map_labels,
    parse_modalities,
    resolve_train,
)
from modbalance.data.base import AudioSpec, ClipDataset, ClipRecord, check_choice
from modbalance.data.errors import DataFileError, MissingFileError
from modbalance.data.spectrogram import get_recipe
from modbalance.data.splits import read_prepared_split, read_rows

PathLike = str | os.PathLike[str]

#: The 31 classes, alphabetical (TPAMI ``code/dataset/KS.json["labels"]``).
KS_CLASSES: tuple[str, ...] = (
    "blowing_nose", "blowing_out_candles", "bowling", "chopping_wood", "dribbling_basketball", "laughing",
    "mowing_lawn", "playing_accordion", "playing_bagpipes", "playing_bass_guitar", "playing_clarinet",
    "playing_drums", "playing_guitar", "playing_harmonica", "playing_keyboard", "playing_organ", "playing_piano",
    "playing_saxophone", "playing_trombone", "playing_trumpet", "playing_violin", "playing_xylophone",
    "ripping_paper", "shoveling_snow", "shuffling_cards", "singing", "stomping_grapes", "tap_dancing",
    "tapping_guitar", "tapping_pen", "tickling",
)  # fmt: skip
KS_LAYOUTS: tuple[str, ...] = ("modbalance", "balancebench", "tpami")
KS_SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Our split names -> the TPAMI JSON subsets.
TPAMI_SUBSETS: dict[str, str] = {"train": "training", "val": "validation", "test": "testing"}


def read_ks_list(path: PathLike) -> list[tuple[str, str]]:
    """Read a KS list as ``(name, label_index_string)``: OGM-GE ``name,10,label`` or ``frame_dir n label``.

    A path in the first field is reduced to its last component (MMAction lists give frame folders).

    Raises:
        MissingFileError: the list does not exist.
        DataFileError: a row has fewer than two fields.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "my_test.txt")
        >>> _ = open(path, "w").write("abc_000010_000020,10,3\\nrawframes/xyz_2 10 30\\n")
        >>> read_ks_list(path)
        [('abc_000010_000020', '3'), ('xyz_2', '30')]
    """
    rows_comma = read_rows(path, ",")
    out = []
    for number, row in enumerate(rows_comma, start=1):
        fields = row if len(row) >= 2 else row[0].split() if row else []
        if len(fields) < 2:
            raise DataFileError(path, f"row {number}: expected 'name,frames,label' or 'dir frames label', got {row}")
        out.append((Path(fields[0].rstrip("/")).name, fields[-1]))
    return out


def read_ks_json(path: PathLike, subset: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Read a TPAMI KS JSON: its ``labels`` and the ``(name, label_name)`` rows of one subset.

    Raises:
        MissingFileError: the file does not exist.
        DataFileError: it is not the expected JSON structure.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "TPAMI KS JSON")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        labels = [str(name) for name in data["labels"]]
        rows = [(name, str(entry["label"])) for name, entry in data["database"].items() if entry["subset"] == subset]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataFileError(
            path, f"not a KS JSON with 'labels' and 'database' ({type(error).__name__}: {error})"
        ) from error
    return labels, rows


class KineticsSounds(ClipDataset):
    """Kinetics-Sounds clips as ``({"audio": (1, F, T), "visual": (3, frames, S, S)}, label)``.

    Args:
        root: the dataset folder.
        split: ``"train"``, ``"val"`` (TPAMI JSON / prepared) or ``"test"``.
        layout: ``"modbalance"``, ``"balancebench"`` or ``"tpami"``.
        audio_recipe: for ``"modbalance"``: ``"a3"`` (1024 × 128, BalanceBench) or ``"a4"`` (257 × 1003, TPAMI).
        frames: frames per clip (3).
        frame_sampling: ``"segment"``, ``"first"``, ``"balancebench"`` or ``"ends"`` (TPAMI).
        image_size: side of the frames (224; TPAMI 112).
        crop: ``"per_clip"`` or ``"per_frame"``.
        crop_scale_min: lower area bound of the random crop (0.08; TPAMI 0.25).
        eval_resize: ``"square"`` (224 pipeline) or ``"short_center"`` (TPAMI 112 pipeline).
        modalities: ``"audio,visual"`` or a subset.
        train: force train/eval behaviour.
        seed: base seed of the per-sample generators.
        on_error: ``"raise"`` or ``"skip"``.
        split_file: the list (``{split}`` is replaced); default per layout.
        audio_dir: audio folder for community layouts (default per layout).
        visual_dir: frame folder for community layouts (default per layout).
        audio_shape_check: check community audio arrays against the recipe shape.
        check_files: check that every listed file exists at construction.

    Example:
        >>> KineticsSounds("/nonexistent", "train")  # run `modbalance prep` first; the error names the missing file
        Traceback (most recent call last):
        ...
        modbalance.data.errors.MissingFileError: /nonexistent/splits/train.csv: file not found (split list)
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        *,
        layout: str = "modbalance",
        audio_recipe: str = "a3",
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
        audio_dir: str | None = None,
        visual_dir: str | None = None,
        audio_shape_check: bool = True,
        check_files: bool = True,
    ) -> None:
        check_common(split, KS_SPLITS, on_error, frame_sampling, crop)
        check_choice("layout", layout, KS_LAYOUTS)
        check_choice("audio_recipe", audio_recipe, ("a3", "a4"))
        root = Path(root)
        is_train = resolve_train(split, train)
        classes = list(KS_CLASSES)
        if layout == "modbalance":
            list_path = root / (split_file or str(lay.split_file("", split))).format(split=split)
            labelled, skipped = map_labels(read_prepared_split(list_path), classes, list_path, on_error)
            audio_folder, visual_folder, suffix = root / f"audio_{audio_recipe}", root / "frames", ".npy"
        elif layout == "balancebench":
            list_path = root / (split_file or "my_{split}.txt").format(split=split)
            labelled, skipped = index_labels(read_ks_list(list_path), len(classes), list_path, on_error)
            audio_folder = root / (audio_dir or "audio_{split}").format(split=split)
            visual_folder, suffix = root / (visual_dir or "visual_{split}").format(split=split), ".npy"
        else:
            list_path = root / (split_file or "KS_train_val.json").format(split=split)
            labels, rows = read_ks_json(list_path, TPAMI_SUBSETS[split])
            if labels != classes:
                raise DataFileError(list_path, f"its 'labels' differ from the 31 KS classes (first: {labels[:3]})")
            labelled, skipped = map_labels(rows, classes, list_path, on_error)
            audio_folder, suffix = root / (audio_dir or "pkl").format(split=split), ".pkl"
            visual_folder = root / (visual_dir or "hdf5").format(split=split)
        recipe = "a4" if layout == "tpami" else audio_recipe
        shape = get_recipe(recipe).shape if (layout == "modbalance" or audio_shape_check) else None
        records = []
        for name, label in labelled:
            visual = visual_folder / (f"{name}.hdf5" if layout == "tpami" else name)
            records.append(ClipRecord(name, label, audio=str(audio_folder / f"{name}{suffix}"), visual=str(visual)))
        super().__init__(
            records,
            classes,
            modalities=parse_modalities(modalities, ("audio", "visual")),
            train=is_train,
            seed=seed,
            on_error=on_error,
            audio=AudioSpec(recipe, shape),
            frames=frames,
            frame_sampling=frame_sampling,
            image=image_transform(is_train, image_size, crop, crop_scale_min, eval_resize),
            check_files=check_files,
            skipped=skipped,
            source=str(list_path),
        )
