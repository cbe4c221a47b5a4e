"""CREMA-D (audio-visual emotion, 6 classes): loader for our prepared format and two community layouts.

Layouts (option ``layout``):

* ``"modbalance"``: the output of ``modbalance prep cremad`` (see :mod:`modbalance.data.layout`);
  audio from ``audio_<audio_recipe>/<name>.npy``.
* ``"ogm_ge"``: the OGM-GE release layout: ``AudioWAV/<name>.wav`` (A1 computed on the fly at 22.05 kHz),
  ``Image-01-FPS/<name>/00000.jpg, 00030.jpg, …`` (F1 frames), and the split lists ``train.csv`` /
  ``test.csv`` (headerless ``name,EMO``, BOM, CRLF) in ``splits_dir`` (default: ``root``).
* ``"balancebench"``: BalanceBench / MMPareto / Diagnosing: ``audio/<name>.pt`` (A3, T × 128),
  ``visual/<name>/frame_000XX.jpg``, the same split lists (``val.csv`` with a ``name,label`` header
  for Diagnosing's validation split).

Class order (option ``label_order``): ``"sorted"`` (default) gives ANG, DIS, FEA, HAP, NEU, SAD;
``"ogm_ge"`` gives the OGM-GE / BalanceBench order NEU, HAP, SAD, FEA, DIS, ANG.
"""

from __future__ import annotations

import os
from pathlib import Path

from modbalance.data import layout as lay
from modbalance.data._common import (
    check_common,
    image_transform,
    map_labels,
    parse_modalities,
    resolve_train,
)
from modbalance.data.base import AudioSpec, ClipDataset, ClipRecord, check_choice
from modbalance.data.errors import DataFileError
from modbalance.data.spectrogram import get_recipe
from modbalance.data.splits import read_prepared_split, read_rows

PathLike = str | os.PathLike[str]

#: Sorted class names (the default label order).
CREMAD_CLASSES: tuple[str, ...] = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
#: The order of OGM-GE's ``CramedDataset.py`` and BalanceBench (``label_order="ogm_ge"``).
CREMAD_CLASSES_OGM_GE: tuple[str, ...] = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
CREMAD_LAYOUTS: tuple[str, ...] = ("modbalance", "ogm_ge", "balancebench")
CREMAD_SPLITS: tuple[str, ...] = ("train", "val", "test")


def cremad_classes(label_order: str = "sorted") -> tuple[str, ...]:
    """The class names in label order.

    Example:
        >>> cremad_classes()[0], cremad_classes("ogm_ge")[0]
        ('ANG', 'NEU')
    """
    check_choice("label_order", label_order, ("sorted", "ogm_ge"))
    return CREMAD_CLASSES if label_order == "sorted" else CREMAD_CLASSES_OGM_GE


def read_cremad_list(path: PathLike) -> list[tuple[str, str]]:
    """Read a community CREMA-D split list: headerless ``name,EMO`` (OGM-GE) or ``name,label`` with header.

    Accepts a BOM and CRLF line ends; a ``.flv``/``.wav`` suffix on the name is dropped.

    Raises:
        MissingFileError: the list does not exist.
        DataFileError: a row does not have two fields.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "val.csv")
        >>> _ = open(path, "w").write("name,label\\n1001_DFA_ANG_XX,ANG\\n")
        >>> read_cremad_list(path)
        [('1001_DFA_ANG_XX', 'ANG')]
    """
    rows = read_rows(path, header="name")
    out = []
    for number, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise DataFileError(path, f"row {number}: expected 'name,EMOTION', got {row}")
        name = row[0]
        for suffix in (".flv", ".wav", ".mp4"):
            name = name.removesuffix(suffix)
        out.append((name, row[1]))
    return out


class CremaD(ClipDataset):
    """CREMA-D clips as ``({"audio": (1, F, T), "visual": (3, frames, S, S)}, label)``.

    Args:
        root: the dataset folder (layout per ``layout``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        layout: ``"modbalance"``, ``"ogm_ge"`` or ``"balancebench"``.
        audio_recipe: ``"a1"`` (257 × 188, OGM-GE/TPAMI), ``"a2_3s"`` (257 × 299, MMCosine) or ``"a3"``
            (1024 × 128, BalanceBench); for ``"balancebench"`` the stored ``.pt`` is used as is.
        audio_frames: for ``"balancebench"``, the expected number of fbank frames (``None``: any).
        frames: frames per clip (1 in OGM-GE, 2 in BalanceBench, 3 in InfoReg).
        frame_sampling: ``"segment"``, ``"first"`` or ``"balancebench"``.
        image_size: side of the square frames (224).
        crop: ``"per_clip"`` or ``"per_frame"`` random crops in training.
        crop_scale_min: lower area bound of the random-resized crop (0.08).
        eval_resize: ``"square"`` or ``"short_center"``.
        label_order: ``"sorted"`` or ``"ogm_ge"``.
        modalities: ``"audio,visual"`` or a subset.
        train: force train/eval behaviour (default: train for the train split).
        seed: base seed of the per-sample generators.
        on_error: ``"raise"`` or ``"skip"``.
        splits_dir: where the community split lists are (default ``root``).
        split_file: an explicit split list (e.g. Diagnosing's ``my_train.csv``).
        check_files: check that every listed file exists at construction.

    Example:
        >>> import tempfile
        >>> from modbalance.data.av_toy import make_av_toy_release
        >>> from modbalance.prep import prepare
        >>> work = tempfile.mkdtemp()
        >>> raw = make_av_toy_release(f"{work}/raw", per_class=2, test_fraction=0.5)
        >>> _ = prepare("cremad", raw, f"{work}/prepared")
        >>> inputs, target = CremaD(f"{work}/prepared", "test", frames=1)[0]
        >>> tuple(inputs["audio"].shape), tuple(inputs["visual"].shape), target
        ((1, 257, 188), (3, 1, 224, 224), 0)
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        *,
        layout: str = "modbalance",
        audio_recipe: str = "a1",
        audio_frames: int | None = None,
        frames: int = 1,
        frame_sampling: str = "segment",
        image_size: int = 224,
        crop: str = "per_clip",
        crop_scale_min: float = 0.08,
        eval_resize: str = "square",
        label_order: str = "sorted",
        modalities: str = "audio,visual",
        train: bool | None = None,
        seed: int = 0,
        on_error: str = "raise",
        splits_dir: str | None = None,
        split_file: str | None = None,
        check_files: bool = True,
    ) -> None:
        check_common(split, CREMAD_SPLITS, on_error, frame_sampling, crop)
        check_choice("layout", layout, CREMAD_LAYOUTS)
        check_choice("audio_recipe", audio_recipe, ("a1", "a2_3s", "a3"))
        root = Path(root)
        classes = cremad_classes(label_order)
        is_train = resolve_train(split, train)
        if split_file is not None:
            list_path = Path(split_file)
        elif layout == "modbalance":
            list_path = lay.split_file(root, split)
        else:
            list_path = Path(splits_dir or root) / f"{split}.csv"
        rows = (
            read_prepared_split(list_path)
            if layout == "modbalance" and split_file is None
            else read_cremad_list(list_path)
        )
        labelled, skipped = map_labels(rows, classes, list_path, on_error)
        if layout == "modbalance":
            audio = AudioSpec(audio_recipe, get_recipe(audio_recipe).shape)

            def paths(name: str) -> tuple[Path, Path]:
                return lay.audio_file(root, audio_recipe, name), lay.frames_dir(root, name)

        elif layout == "ogm_ge":
            audio = AudioSpec(audio_recipe)

            def paths(name: str) -> tuple[Path, Path]:
                return root / "AudioWAV" / f"{name}.wav", root / "Image-01-FPS" / name

        else:
            audio = AudioSpec("a3", None if audio_frames is None else (audio_frames, 128))

            def paths(name: str) -> tuple[Path, Path]:
                return root / "audio" / f"{name}.pt", root / "visual" / name

        records = []
        for name, label in labelled:
            audio_path, visual_path = paths(name)
            records.append(ClipRecord(name, label, audio=str(audio_path), visual=str(visual_path)))
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
