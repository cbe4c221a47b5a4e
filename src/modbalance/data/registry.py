"""The benchmark datasets by name: :func:`build_dataset` and :func:`dataset_info`.

The trainer builds a dataset from a config section such as
``data: {name: cremad, root: /data/cremad_prepared, layout: modbalance, frames: 1}`` with
``build_dataset(**section, split="train")``. Every option is a scalar (str, int, float, bool or null),
so a YAML file can hold it, except the ``views`` mapping (modality -> file) of ``features``; unknown names
and options are errors that list the valid ones.

Example:
    >>> sorted(DATASETS)
    ['ave', 'cremad', 'features', 'ks', 'mfeat', 'mosei', 'ucf101', 'vggsound']
    >>> info = dataset_info("cremad")
    >>> info.num_classes, info.modalities, info.classes[:2]
    (6, ('audio', 'visual'), ('ANG', 'DIS'))
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from torch.utils.data import Dataset

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset.

    Attributes:
        name: the registry name.
        target: ``module:Class`` of the loader (imported on first use).
        modalities: the modality keys its samples carry (all of them by default).
        num_classes: the number of classes under the default options.
        splits: the split names it accepts.
        classes: the class names if fixed in code (else read from the prepared data).
        description: one line.
    """

    name: str
    target: str
    modalities: tuple[str, ...]
    num_classes: int
    splits: tuple[str, ...]
    classes: tuple[str, ...] | None
    description: str

    def load(self) -> type:
        """Import the loader class."""
        module, attribute = self.target.split(":")
        return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]

    def options(self) -> list[str]:
        """The keyword options of the loader (besides ``root`` and ``split``)."""
        parameters = inspect.signature(self.load()).parameters
        return [p for p in parameters if p not in ("root", "split")]


class DatasetInfo(NamedTuple):
    """What a trainer needs to know before building a model."""

    name: str
    num_classes: int
    classes: tuple[str, ...]
    modalities: tuple[str, ...]
    splits: tuple[str, ...]


_CREMAD = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")

#: Dataset name -> its entry (loader class, modalities, class count and order, splits); see ``build_dataset``.
DATASETS: dict[str, DatasetEntry] = {
    entry.name: entry
    for entry in (
        DatasetEntry(
            "cremad",
            "modbalance.data.cremad:CremaD",
            ("audio", "visual"),
            6,
            ("train", "val", "test"),
            _CREMAD,
            "CREMA-D audio-visual emotion (6 classes)",
        ),
        DatasetEntry(
            "ks",
            "modbalance.data.kinetics_sounds:KineticsSounds",
            ("audio", "visual"),
            31,
            ("train", "val", "test"),
            None,
            "Kinetics-Sounds, GeWu-Lab's 31-class subset",
        ),
        DatasetEntry(
            "vggsound",
            "modbalance.data.vggsound:VGGSound",
            ("audio", "visual"),
            309,
            ("train", "test"),
            None,
            "VGGSound (classes: the sorted labels of vggsound.csv)",
        ),
        DatasetEntry(
            "ave",
            "modbalance.data.ave:AVE",
            ("audio", "visual"),
            28,
            ("train", "val", "test"),
            None,
            "AVE audio-visual events (28 classes)",
        ),
        DatasetEntry(
            "ucf101",
            "modbalance.data.ucf101:UCF101",
            ("visual", "flow"),
            101,
            ("train", "test"),
            None,
            "UCF-101 RGB + optical flow (101 classes)",
        ),
        DatasetEntry(
            "mosei",
            "modbalance.data.mosei:CMUMOSEI",
            ("audio", "visual", "text"),
            2,
            ("train", "val", "test"),
            ("negative", "positive"),
            "CMU-MOSEI binary sentiment, 3 modalities",
        ),
        DatasetEntry(
            "mfeat",
            "modbalance.data.mfeat:MultipleFeatures",
            ("fou", "fac", "kar", "pix", "zer", "mor"),
            10,
            ("train", "val", "test"),
            tuple(str(digit) for digit in range(10)),
            "UCI Multiple Features: handwritten digits 0-9, six feature views",
        ),
        DatasetEntry(
            "features",
            "modbalance.data.features:FeatureTables",
            (),
            0,
            ("train", "val", "test"),
            None,
            "your own feature tables: one file per modality (options: views, labels or label_column, splits)",
        ),
    )
}


def _entry(name: str) -> DatasetEntry:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}") from None


def build_dataset(name: str, root: PathLike, split: str = "train", **options: Any) -> Dataset[Any]:
    """Build a registered dataset.

    Args:
        name: a key of :data:`DATASETS`.
        root: the data folder.
        split: the split name.
        **options: the loader's keyword options (see each loader; all scalars). ``None`` values are
            dropped, so a YAML ``null`` keeps the default.

    Returns:
        The dataset; samples are ``(dict[str, Tensor], int)``.

    Raises:
        ValueError: unknown dataset or option (the message lists the valid ones), or a bad option value.

    Example:
        >>> build_dataset("cremad", "/nonexistent", framez=2)
        Traceback (most recent call last):
        ...
        ValueError: unknown option(s) ['framez'] for dataset 'cremad'; valid: layout, audio_recipe, ...
    """
    entry = _entry(name)
    valid = entry.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for dataset {name!r}; valid: {', '.join(valid)}")
    kwargs = {k: v for k, v in options.items() if v is not None}
    return entry.load()(Path(root), split, **kwargs)  # type: ignore[no-any-return]


def dataset_info(name: str, root: PathLike | None = None, **options: Any) -> DatasetInfo:
    """Classes and modalities of a dataset.

    For datasets whose classes come from the data (VGGSound, AVE, UCF-101), pass the prepared ``root``
    to get the names (from ``classes.txt``); without it the names are empty and ``num_classes`` is the
    documented count. ``label_order`` (CREMA-D, UCF-101), ``label_rule`` (MOSEI) and ``modalities`` are
    honoured. For ``features`` the modalities are the keys of the ``views`` option and the classes come from
    the ``classes`` option or, with ``root``, from the labels (0 classes without either).

    Example:
        >>> dataset_info("cremad", label_order="ogm_ge").classes[0]
        'NEU'
        >>> dataset_info("mosei", label_rule="seven").num_classes
        7
    """
    entry = _entry(name)
    unknown = sorted(set(options) - set(entry.options()))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for dataset {name!r}; valid: {', '.join(entry.options())}")
    classes: tuple[str, ...] = entry.classes or ()
    if name == "features":
        from modbalance.data.features import features_info

        modalities, classes = features_info(root, options)
        return DatasetInfo(name, len(classes), classes, modalities, entry.splits)
    if name == "cremad":
        from modbalance.data.cremad import cremad_classes

        classes = cremad_classes(options.get("label_order") or "sorted")
    elif name == "ks":
        from modbalance.data.kinetics_sounds import KS_CLASSES

        classes = KS_CLASSES
    elif name == "mosei":
        from modbalance.data.mosei import mosei_classes

        classes = tuple(mosei_classes(options.get("label_rule") or "binary"))
    elif root is not None and (options.get("layout") or "modbalance") == "modbalance":
        from modbalance.data import layout as lay

        classes = tuple(lay.read_classes(root))
        if name == "ucf101" and options.get("label_order") == "classind":
            order = lay.read_manifest(root).get("classind_order")
            classes = tuple(order) if isinstance(order, list) else classes
    modalities = options.get("modalities") or entry.modalities
    if isinstance(modalities, str):
        modalities = tuple(m.strip() for m in modalities.split(","))
    return DatasetInfo(name, len(classes) or entry.num_classes, classes, tuple(modalities), entry.splits)
