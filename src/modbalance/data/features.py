"""Pre-extracted feature tables: one array per modality, labels, optional split assignments.

The generic loader behind ``data.name: features`` (and, with fixed file names, UCI Multiple Features,
:mod:`modbalance.data.mfeat`). Each modality is one table with a row per sample, read from

* ``.npy`` (one array), ``.npz`` (``file.npz:key``; the key may be left out if the file holds one array),
* ``.csv`` / ``.tsv`` (a header row is detected: a first row with a non-numeric cell, or one whose
  feature cells are the column numbers ``0, 1, ...`` as pandas writes them), a whitespace-separated text
  file (``.txt``, ``.dat`` or no suffix: the UCI release format),
* HDF5 (``file.h5:dataset``, needs ``h5py``: the ``data`` extra) or Parquet (needs ``pyarrow``: the
  ``parquet`` extra).

Labels come from a file (``labels: labels.npy``; a table's column with ``labels: table.csv:label``) or
from the column ``label_column`` of every CSV view (it is removed from the features and must agree
between views). Split assignments (``train``/``val``/``test`` or ``0``/``1``/``2`` per row) come from
``splits``; without it a seeded stratified split is drawn (:func:`stratified_split`).

Features are standardised per column with the mean and standard deviation of the **training rows
only** (columns that are constant there are only centred), so no statistic of the validation or test
rows reaches the model. Everything is held in memory; ``dataset[index_tensor]`` returns a whole
collated batch (``batched = True``), which the trainer uses instead of a ``DataLoader``.

A YAML config:

.. code-block:: yaml

    data:
      name: features
      root: /data/my-features          # relative paths below are under it
      options:
        views: {image: clip_vit.npy, text: sbert.npz:emb, sensor: sensors.csv}
        labels: labels.csv:label        # or label_column: label (a column of the CSV views)
        splits: split.npy               # optional; else a stratified split (split_seed, val_share, test_share)
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from modbalance.data._deps import require
from modbalance.data.errors import DataFileError, MissingFileError

__all__ = [
    "FEATURE_SPLITS",
    "FeatureTables",
    "read_labels",
    "read_split_assignments",
    "read_table",
    "standardize",
    "stratified_split",
]

PathLike = str | os.PathLike[str]

#: The split names of a feature table, in the order of their integer codes 0, 1, 2.
FEATURE_SPLITS: tuple[str, ...] = ("train", "val", "test")
_TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".dat", "")
_KEYED_SUFFIXES = (".npz", ".h5", ".hdf5", ".parquet", ".csv", ".tsv", ".txt", ".dat")


def _parse_spec(spec: PathLike, root: PathLike | None) -> tuple[Path, str | None]:
    """``"file.npz:key"`` -> (root / file.npz, "key"); a path without a key -> (path, None)."""
    text = os.fspath(spec)
    key = None
    head, sep, tail = text.rpartition(":")
    if sep and Path(head).suffix.lower() in _KEYED_SUFFIXES and "/" not in tail and "\\" not in tail:
        text, key = head, tail
    path = Path(text)
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    return path, key


def _as_number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _read_text_rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataFileError(path, f"not UTF-8 text ({error})") from error
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        rows = list(csv.reader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ","))
        return [[cell.strip() for cell in row] for row in rows if any(cell.strip() for cell in row)]
    return [line.split() for line in text.splitlines() if line.strip()]


def _is_header(row: list[str], label_index: int | None) -> bool:
    """A non-numeric cell, or the pandas column numbers 0, 1, ... in the feature cells."""
    if any(_as_number(cell) is None for cell in row):
        return True
    cells = [cell for i, cell in enumerate(row) if label_index is None or i != label_index % len(row)]
    return len(cells) > 1 and cells == [str(i) for i in range(len(cells))]


def _column_index(header: list[str] | None, column: str | int, path: Path, width: int) -> int:
    if isinstance(column, int) or (isinstance(column, str) and column.lstrip("-").isdigit()):
        index = int(column)
        if not -width <= index < width:
            raise DataFileError(path, f"label column {index} is out of range for {width} columns", reason="bad_shape")
        return index % width
    if header is None or column not in header:
        found = ", ".join(header) if header else "no header row"
        raise DataFileError(path, f"no column named {column!r} (columns: {found})", reason="bad_shape")
    return header.index(column)


def _text_table(path: Path, label_column: str | int | None) -> tuple[Any, list[str] | None]:
    np = require("numpy", "reading feature tables")
    rows = _read_text_rows(path)
    if not rows:
        raise DataFileError(path, "no rows", reason="empty")
    guess = int(label_column) if isinstance(label_column, int) else None
    header = rows[0] if _is_header(rows[0], guess) else None
    body = rows[1:] if header is not None else rows
    if not body:
        raise DataFileError(path, "a header row and no data rows", reason="empty")
    width = len(header) if header is not None else len(body[0])
    for number, row in enumerate(body, start=2 if header is not None else 1):
        if len(row) != width:
            raise DataFileError(path, f"line {number} has {len(row)} cells, expected {width}", reason="bad_shape")
    labels: list[str] | None = None
    if label_column is not None:
        index = _column_index(header, label_column, path, width)
        labels = [row[index] for row in body]
        body = [row[:index] + row[index + 1 :] for row in body]
    try:
        array = np.array(body, dtype=np.float64)
    except ValueError:
        for number, row in enumerate(body, start=2 if header is not None else 1):
            for column, cell in enumerate(row):
                if _as_number(cell) is None:
                    raise DataFileError(
                        path, f"line {number}, feature column {column}: non-numeric cell {cell!r}", reason="corrupt"
                    ) from None
        raise
    return array, labels


def _keyed(path: Path, key: str | None, names: Sequence[str], what: str) -> str:
    if key is not None:
        if key not in names:
            raise DataFileError(path, f"no {what} {key!r} (it has: {', '.join(names)})", reason="bad_shape")
        return key
    if len(names) != 1:
        raise DataFileError(
            path, f"holds {len(names)} {what}s ({', '.join(names)}); name one as '{path.name}:<{what}>'"
        )
    return names[0]


def read_table(
    path: PathLike, *, key: str | None = None, label_column: str | int | None = None
) -> tuple[Any, list[str] | None]:
    """Read one feature table as a float64 array with a row per sample (and, optionally, its label column).

    Args:
        path: ``.npy``, ``.npz``, ``.csv``, ``.tsv``, whitespace-separated text, HDF5 or Parquet.
        key: the array of an ``.npz``/HDF5 file; for text and Parquet tables, a column to return as the table
            (used for label files such as ``labels.csv:label``).
        label_column: a column (name, or index, negative from the end) of a text or Parquet table to take out
            of the features and return as labels (as strings).

    Returns:
        ``(features, labels)``: a ``(N, ...)`` float64 array, and the label column as a list of N strings
        (``None`` without ``label_column``).

    Raises:
        MissingFileError: no such file.
        DataFileError: a non-numeric cell (named by line and column), rows of different lengths, an unknown
            key or column, or an empty table.
        ImportError: HDF5 without ``h5py``, Parquet without ``pyarrow`` (the message names the extra).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "view.csv")
        >>> _ = open(path, "w").write("0,1,2\\n0.5,1.5,3\\n2.5,3.5,7\\n")   # pandas-style header, label last
        >>> features, labels = read_table(path, label_column=-1)
        >>> features.tolist(), labels
        ([[0.5, 1.5], [2.5, 3.5]], ['3', '7'])
    """
    np = require("numpy", "reading feature tables")
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "feature table")
    suffix = path.suffix.lower()
    labels: list[str] | None = None
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise DataFileError(path, f"cannot be read as a .npy array ({error})") from error
    elif suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                array = archive[_keyed(path, key, list(archive.files), "array")]
        except (ValueError, OSError) as error:
            raise DataFileError(path, f"cannot be read as a .npz archive ({error})") from error
    elif suffix in (".h5", ".hdf5"):
        h5py = require("h5py", "reading HDF5 feature tables")
        with h5py.File(path, "r") as handle:
            array = np.asarray(handle[_keyed(path, key, list(handle.keys()), "dataset")])
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as error:
            raise ImportError(
                f"{path}: reading Parquet feature tables needs 'pyarrow', which is not installed. "
                'Install the parquet extra: pip install "modbalance[parquet]"'
            ) from error
        table = pq.read_table(path)
        names = list(table.column_names)
        if key is not None:
            array = np.asarray(table.column(_keyed(path, key, names, "column")).to_numpy(zero_copy_only=False))
        else:
            if label_column is not None:
                index = _column_index(names, label_column, path, len(names))
                labels = [str(v) for v in table.column(index).to_pylist()]
                names = names[:index] + names[index + 1 :]
            try:
                array = np.stack([table.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names], 1)
            except (ValueError, TypeError) as error:
                raise DataFileError(path, f"a feature column is not numeric ({error})", reason="corrupt") from error
        label_column = None
    elif suffix in _TEXT_SUFFIXES:
        if key is not None:
            column = _text_table(path, key)[1] or []
            return np.asarray(column), None
        array, labels = _text_table(path, label_column)
        label_column = None
    else:
        raise DataFileError(
            path, f"unknown table format {suffix!r}; expected .npy, .npz, .csv, .tsv, .txt, .h5, .hdf5 or .parquet"
        )
    if label_column is not None:
        raise DataFileError(path, f"label_column={label_column!r} applies to CSV and Parquet tables only")
    if array.ndim == 0:
        raise DataFileError(path, "holds a scalar, not a table with a row per sample", reason="bad_shape")
    if array.shape[0] == 0:
        raise DataFileError(path, "has no rows", reason="empty")
    return array, labels


def read_labels(
    values: Sequence[Any], classes: Sequence[str] | None, *, source: PathLike
) -> tuple[Any, tuple[str, ...]]:
    """Class indices of labels, and the class names in index order.

    Args:
        values: one label per row (numbers or names).
        classes: the class order; ``None``: the sorted distinct labels (numerically when all are numbers).
        source: the file, for errors.

    Example:
        >>> indices, names = read_labels(["7", "3", "7.0"], None, source="labels.csv")
        >>> indices.tolist(), names
        ([1, 0, 1], ('3', '7'))
        >>> read_labels(["a", "z"], ["a", "b"], source="labels.csv")
        Traceback (most recent call last):
        ...
        modbalance.data.errors.DataFileError: labels.csv: row 1: label 'z' is not a class (classes: a, b)
    """
    np = require("numpy", "reading feature tables")

    def canonical(value: Any) -> str:
        text = str(value).strip()
        number = _as_number(text)
        return str(int(number)) if number is not None and number == int(number) else text

    names = [canonical(v) for v in values]
    if classes is None:
        distinct = set(names)
        numeric = all(_as_number(n) is not None for n in distinct)
        classes = sorted(distinct, key=(lambda n: float(n)) if numeric else None)
    order = {canonical(name): index for index, name in enumerate(classes)}
    try:
        indices = np.array([order[name] for name in names], dtype=np.int64)
    except KeyError:
        row = next(i for i, name in enumerate(names) if name not in order)
        raise DataFileError(
            source, f"row {row}: label {names[row]!r} is not a class (classes: {', '.join(classes)})"
        ) from None
    return indices, tuple(str(c) for c in classes)


def read_split_assignments(values: Sequence[Any], *, source: PathLike) -> Any:
    """Split codes (0 train, 1 val, 2 test) from names or codes per row.

    Example:
        >>> read_split_assignments(["train", "test", "1"], source="split.csv").tolist()
        [0, 2, 1]
    """
    np = require("numpy", "reading feature tables")
    codes = {name: index for index, name in enumerate(FEATURE_SPLITS)}
    codes.update({str(index): index for index in range(len(FEATURE_SPLITS))})
    out = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values):
        text = str(value).strip()
        number = _as_number(text)
        text = str(int(number)) if number is not None and number == int(number) else text
        if text not in codes:
            raise DataFileError(
                source, f"row {row}: split {value!r} is not one of {', '.join(FEATURE_SPLITS)} (or 0, 1, 2)"
            )
        out[row] = codes[text]
    return out


def stratified_split(labels: Any, *, val_share: float = 0.15, test_share: float = 0.15, seed: int = 0) -> Any:
    """A seeded stratified split: per class, ``round(n * test_share)`` test and ``round(n * val_share)`` val rows.

    Within each class the rows are permuted by a NumPy generator seeded with ``seed``; the first ones go to
    test, the next to val, the rest to train. The result depends only on (labels, shares, seed).

    Returns:
        ``(N,)`` int64 codes: 0 train, 1 val, 2 test.

    Example:
        >>> codes = stratified_split([0] * 10 + [1] * 10, val_share=0.2, test_share=0.3, seed=0)
        >>> [int((codes[:10] == s).sum()) for s in (0, 1, 2)], [int((codes[10:] == s).sum()) for s in (0, 1, 2)]
        ([5, 2, 3], [5, 2, 3])
    """
    np = require("numpy", "reading feature tables")
    if not (0 <= val_share < 1 and 0 <= test_share < 1 and val_share + test_share < 1):
        raise ValueError(f"val_share={val_share} and test_share={test_share} must be >= 0 and sum to less than 1")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    codes = np.zeros(labels.shape[0], dtype=np.int64)
    for value in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == value))
        n_test, n_val = round(rows.size * test_share), round(rows.size * val_share)
        codes[rows[:n_test]] = 2
        codes[rows[n_test : n_test + n_val]] = 1
    return codes


def standardize(table: Any, train_rows: Any) -> tuple[Any, Any, Any]:
    """Standardise every column with the mean and standard deviation of the training rows only.

    Columns constant on the training rows (standard deviation 0) are only centred.

    Args:
        table: ``(N, ...)`` array.
        train_rows: ``(N,)`` boolean mask of the training rows.

    Returns:
        ``(standardised table, mean, std)``; ``mean`` and ``std`` have the shape of one row.

    Example:
        >>> import numpy as np
        >>> out, mean, std = standardize(np.array([[1.0], [3.0], [100.0]]), np.array([True, True, False]))
        >>> out.ravel().tolist(), mean.tolist(), std.tolist()
        ([-1.0, 1.0, 98.0], [2.0], [1.0])
    """
    np = require("numpy", "reading feature tables")
    train = table[train_rows]
    if train.shape[0] == 0:
        raise ValueError("standardize: no training rows")
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (table - mean) / std, mean, std


class FeatureTables:
    """One split of pre-extracted per-modality feature tables, in memory, indexable by sample or by batch.

    Args:
        root: the folder relative paths are under.
        split: ``train``, ``val`` or ``test``.
        views: modality -> table path (``file.npz:key`` and ``file.h5:dataset`` name an array).
        labels: a label file (``labels.npy``, ``labels.csv``, ``table.csv:column``); or ``None`` with
            ``label_column``.
        label_column: a column of every CSV/Parquet view holding the label (removed from the features; the
            views must agree on it row by row; array views such as ``.npy`` hold features only).
        splits: a file of per-row split names or codes; ``None``: :func:`stratified_split` of the labels.
        classes: the class order (a list, or names separated by commas); ``None``: the sorted labels.
        modalities: the views to keep (a list, or names separated by commas); ``None``: all.
        standardize: standardise each column with training-row statistics.
        split_seed, val_share, test_share: the stratified split drawn when ``splits`` is ``None``.

    Attributes:
        features: modality -> ``(n, ...)`` float32 tensor of this split's rows.
        targets: ``(n,)`` int64 class indices.
        classes: class names in index order.
        stats: modality -> ``(mean, std)`` NumPy arrays, from the training rows.
        rows: ``(n,)`` the row numbers (in the files) of this split.

    Example:
        >>> import os, tempfile, numpy as np
        >>> root = tempfile.mkdtemp()
        >>> np.save(os.path.join(root, "a.npy"), np.arange(40.0).reshape(20, 2))
        >>> np.save(os.path.join(root, "y.npy"), np.arange(20) % 2)
        >>> train = FeatureTables(root, "train", views={"a": "a.npy"}, labels="y.npy", val_share=0.2, test_share=0.2)
        >>> inputs, target = train[torch.tensor([0, 1])]
        >>> len(train), inputs["a"].shape, target.dtype, train.classes
        (12, torch.Size([2, 2]), torch.int64, ('0', '1'))
    """

    #: ``dataset[index_tensor]`` returns a collated batch (the trainer skips the DataLoader).
    batched = True

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        views: Mapping[str, str] | None = None,
        labels: str | None = None,
        label_column: str | int | None = None,
        splits: str | None = None,
        classes: Sequence[str] | str | None = None,
        modalities: Sequence[str] | str | None = None,
        standardize: bool = True,
        split_seed: int = 0,
        val_share: float = 0.15,
        test_share: float = 0.15,
    ) -> None:
        np = require("numpy", "reading feature tables")
        if split not in FEATURE_SPLITS:
            raise ValueError(f"split must be one of {', '.join(FEATURE_SPLITS)}, got {split!r}")
        if not views:
            raise ValueError("features: 'views' must map each modality to a table file, e.g. {image: image.npy}")
        if labels is None and label_column is None:
            raise ValueError("features: give 'labels' (a label file) or 'label_column' (a column of the CSV views)")
        keep = _names(modalities) or list(views)
        unknown = [m for m in keep if m not in views]
        if unknown:
            raise ValueError(f"features: modalities {unknown} are not among the views {', '.join(views)}")
        self.root = Path(root)
        self.split = split
        tables: dict[str, Any] = {}
        sources: dict[str, Path] = {}
        column_labels: dict[str, list[str]] = {}
        for modality in keep:
            path, key = _parse_spec(views[modality], root)
            try:
                # The label column lives in the text and Parquet views; array files hold features only.
                column = label_column if path.suffix.lower() in (*_TEXT_SUFFIXES, ".parquet") else None
                table, found = read_table(path, key=key, label_column=column)
            except MissingFileError as error:
                raise MissingFileError(path, f"modality {modality!r}") from error
            except DataFileError as error:
                raise DataFileError(path, f"modality {modality!r}: {error.problem}", reason=error.reason) from error
            if table.dtype.kind not in "biuf":
                raise DataFileError(path, f"modality {modality!r}: {table.dtype} values, expected numbers")
            tables[modality], sources[modality] = table, path
            if found is not None:
                column_labels[modality] = found
        first = keep[0]
        for modality in keep[1:]:
            if tables[modality].shape[0] != tables[first].shape[0]:
                raise DataFileError(
                    sources[modality],
                    f"modality {modality!r} has {tables[modality].shape[0]} rows, but modality {first!r} "
                    f"({sources[first]}) has {tables[first].shape[0]}",
                    reason="bad_shape",
                )
        count = tables[first].shape[0]
        if labels is not None:
            label_path, label_key = _parse_spec(labels, root)
            raw_labels = read_table(label_path, key=label_key)[0]
            if raw_labels.ndim == 2 and raw_labels.shape[1] == 1:
                raw_labels = raw_labels[:, 0]
            if raw_labels.ndim != 1:
                raise DataFileError(label_path, f"labels must be one column, got shape {raw_labels.shape}")
            label_values = list(raw_labels.tolist())
        else:
            label_path = sources[next(iter(column_labels))] if column_labels else sources[first]
            if not column_labels:
                raise DataFileError(label_path, f"label_column={label_column!r}: no view is a CSV or Parquet table")
            reference = next(iter(column_labels))
            for modality, found in column_labels.items():
                if found != column_labels[reference]:
                    pairs = enumerate(zip(found, column_labels[reference], strict=False))
                    row = next(i for i, (a, b) in pairs if a != b)
                    raise DataFileError(
                        sources[modality],
                        f"modality {modality!r}: label {found[row]!r} in row {row} differs from "
                        f"{column_labels[reference][row]!r} in {sources[reference]}",
                    )
            label_values = column_labels[reference]
        if len(label_values) != count:
            raise DataFileError(
                label_path, f"{len(label_values)} labels, but modality {first!r} ({sources[first]}) has {count} rows"
            )
        targets, self.classes = read_labels(label_values, _names(classes), source=label_path)
        if splits is not None:
            split_path, split_key = _parse_spec(splits, root)
            raw_splits = read_table(split_path, key=split_key)[0]
            codes = read_split_assignments(list(np.ravel(raw_splits).tolist()), source=split_path)
            if codes.shape[0] != count:
                raise DataFileError(
                    split_path,
                    f"{codes.shape[0]} split assignments, but modality {first!r} ({sources[first]}) has {count} rows",
                )
        else:
            codes = stratified_split(targets, val_share=val_share, test_share=test_share, seed=split_seed)
        train_rows = codes == 0
        chosen = codes == FEATURE_SPLITS.index(split)
        if not chosen.any():
            source = splits if splits is not None else f"the stratified split (seed {split_seed})"
            raise DataFileError(str(source), f"split {split!r} has no rows", reason="empty")
        self.rows = np.flatnonzero(chosen)
        self.stats: dict[str, tuple[Any, Any]] = {}
        self.features: dict[str, Tensor] = {}
        for modality, table in tables.items():
            if not np.isfinite(table).all():
                row = int(np.flatnonzero(~np.isfinite(table.reshape(count, -1)).all(axis=1))[0])
                raise DataFileError(sources[modality], f"modality {modality!r}: non-finite value in row {row}")
            if standardize:
                table, mean, std = _standardize(table, train_rows)
                self.stats[modality] = (mean, std)
            self.features[modality] = torch.from_numpy(np.ascontiguousarray(table[chosen], dtype=np.float32))
        self.targets = torch.from_numpy(targets[chosen])
        self.modalities = tuple(keep)
        self.sources = sources

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: Any) -> tuple[dict[str, Tensor], Any]:
        """One sample ``({m: (...)}, int)``; a 1-D index (tensor, array, list): a batch ``({m: (B, ...)}, (B,))``."""
        if not isinstance(index, Tensor) and hasattr(index, "__len__"):
            index = torch.as_tensor(index, dtype=torch.long)
        if isinstance(index, Tensor):
            return {m: x[index] for m, x in self.features.items()}, self.targets[index]
        return {m: x[index] for m, x in self.features.items()}, int(self.targets[index])


_standardize = standardize


def _names(value: Sequence[str] | str | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part) for part in value]


def features_info(root: PathLike | None, options: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(modalities, classes) of a ``features`` config without building it; classes need ``root``.

    Example:
        >>> features_info(None, {"views": {"a": "a.npy", "b": "b.npy"}, "modalities": "b"})
        (('b',), ())
    """
    views = options.get("views") or {}
    modalities = tuple(_names(options.get("modalities")) or list(views))
    classes = _names(options.get("classes"))
    if classes is None and root is not None and Path(root).is_dir():
        classes = list(FeatureTables(root, "train", **{k: v for k, v in options.items() if v is not None}).classes)
    return modalities, tuple(classes or ())
