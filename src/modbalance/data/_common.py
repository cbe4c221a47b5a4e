"""Helpers shared by the per-dataset loaders: option checks, label mapping, transforms."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

from modbalance.data.base import ON_ERROR, SkippedSample, check_choice
from modbalance.data.sampling import FRAME_SAMPLING
from modbalance.data.transforms import ClipTransform, FlowTransform

PathLike = str | os.PathLike[str]

#: Values of the ``crop`` option: one random crop/flip per clip, or per frame (the reference loaders).
CROP_MODES: tuple[str, ...] = ("per_clip", "per_frame")


def resolve_train(split: str, train: bool | None) -> bool:
    """Train-time randomness is on for the ``train`` split unless ``train`` says otherwise."""
    return split == "train" if train is None else bool(train)


def check_common(split: str, splits: Sequence[str], on_error: str, frame_sampling: str, crop: str) -> None:
    """Validate the options every AV loader shares; errors name the option and list the valid values."""
    check_choice("split", split, splits)
    check_choice("on_error", on_error, ON_ERROR)
    check_choice("frame_sampling", frame_sampling, FRAME_SAMPLING)
    check_choice("crop", crop, CROP_MODES)


def image_transform(
    train: bool,
    image_size: int,
    crop: str,
    crop_scale_min: float,
    eval_resize: str,
    crop_ratio_min: float = 3 / 4,
) -> ClipTransform:
    """The RGB transform from the loaders' scalar options."""
    return ClipTransform(
        size=image_size,
        train=train,
        scale=(crop_scale_min, 1.0),
        ratio=(crop_ratio_min, 1.0 / crop_ratio_min),
        per_frame=crop == "per_frame",
        eval_resize=eval_resize,
    )


def flow_transform(train: bool, image_size: int, crop: str, flow_channels: int) -> FlowTransform:
    """The flow transform from the loaders' scalar options."""
    return FlowTransform(size=image_size, train=train, per_frame=crop == "per_frame", channels=flow_channels)


def check_name(name: str, source: PathLike, number: int) -> None:
    """Refuse a split-list name that could point outside the data root (names are joined to it).

    Absolute names, names with a ``..`` component, a drive, a NUL or a backslash are refused, naming
    the list file and row; the loaders then only read ``<root>/<folder>/<name>...``.

    Raises:
        ValueError: such a name.

    Example:
        >>> check_name("1001_DFA_ANG_XX", "train.csv", 1)
        >>> check_name("../../outside/evil", "train.csv", 3)
        Traceback (most recent call last):
        ...
        ValueError: train.csv: row 3: name '../../outside/evil' would point outside the data root ...
    """
    posix = PurePosixPath(name)
    if (
        not name
        or "\0" in name
        or "\\" in name
        or posix.is_absolute()
        or PureWindowsPath(name).drive
        or ".." in posix.parts
    ):
        raise ValueError(
            f"{source}: row {number}: name {name!r} would point outside the data root (a name must be relative, "
            "without '..', a drive, '\\' or NUL)"
        )


def map_labels(
    rows: Iterable[tuple[str, str]],
    classes: Sequence[str],
    source: PathLike,
    on_error: str,
) -> tuple[list[tuple[str, int]], list[SkippedSample]]:
    """Turn ``(name, label_name)`` rows into ``(name, label_index)``; unknown labels raise or are recorded.

    Raises:
        ValueError: an unknown label with ``on_error="raise"``; the message names the file, row and label.

    Example:
        >>> map_labels([("a", "SAD"), ("b", "ANG")], ["ANG", "SAD"], "train.csv", "raise")
        ([('a', 1), ('b', 0)], [])
    """
    index = {name: i for i, name in enumerate(classes)}
    kept: list[tuple[str, int]] = []
    skipped: list[SkippedSample] = []
    for number, (name, label) in enumerate(rows, start=1):
        check_name(name, source, number)
        if label in index:
            kept.append((name, index[label]))
            continue
        message = (
            f"{source}: row {number} ({name!r}) has unknown label {label!r}; "
            f"valid: {', '.join(classes[:12])}{', ...' if len(classes) > 12 else ''}"
        )
        if on_error == "raise":
            raise ValueError(message)
        skipped.append(SkippedSample(-1, name, "unknown_label", message))
    return kept, skipped


def index_labels(
    rows: Iterable[tuple[str, str]], num_classes: int, source: PathLike, on_error: str
) -> tuple[list[tuple[str, int]], list[SkippedSample]]:
    """Like :func:`map_labels` for rows whose label is already an integer index in [0, num_classes)."""
    kept: list[tuple[str, int]] = []
    skipped: list[SkippedSample] = []
    for number, (name, label) in enumerate(rows, start=1):
        check_name(name, source, number)
        try:
            value = int(label)
        except ValueError:
            value = -1
        if 0 <= value < num_classes:
            kept.append((name, value))
            continue
        message = f"{source}: row {number} ({name!r}) has label {label!r}, expected an integer in [0, {num_classes})"
        if on_error == "raise":
            raise ValueError(message)
        skipped.append(SkippedSample(-1, name, "unknown_label", message))
    return kept, skipped


def first_existing(candidates: Iterable[Path]) -> Path:
    """The first candidate path that exists, or the first candidate (so a later check reports it missing)."""
    candidates = list(candidates)
    for path in candidates:
        if path.exists():
            return path
    return candidates[0]


def parse_modalities(modalities: str | Sequence[str], valid: Sequence[str]) -> tuple[str, ...]:
    """Accept ``"audio,visual"`` or a list; check each name.

    Example:
        >>> parse_modalities("audio, visual", ("audio", "visual"))
        ('audio', 'visual')
    """
    names = [m.strip() for m in modalities.split(",")] if isinstance(modalities, str) else list(modalities)
    if not names:
        raise ValueError(f"modalities must name at least one of {', '.join(valid)}")
    for name in names:
        check_choice("modality", name, valid)
    return tuple(names)
