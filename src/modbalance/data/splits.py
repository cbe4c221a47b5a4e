"""Reading split lists in the community formats, and our own prepared split files.

Community lists come with byte-order marks, CRLF line ends, no header, and commas, spaces or ``&`` as
separators; :func:`read_rows` handles all of them. Our prepared splits are ``splits/<split>.csv`` with a
``name,label`` header, where ``label`` is the class **name** (so the class order is applied at load time).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path

from modbalance.data.errors import DataFileError, MissingFileError
from modbalance.data.media import _atomic_path

PathLike = str | os.PathLike[str]


def read_rows(path: PathLike, delimiter: str = ",", *, header: str | None = None) -> list[list[str]]:
    """The non-blank rows of a delimited text file (UTF-8 with or without BOM, LF or CRLF).

    Args:
        path: the list file.
        delimiter: ``","``, ``"&"``, or ``" "`` (any run of whitespace).
        header: if given and the first row's first field equals it, that row is dropped.

    Raises:
        MissingFileError: the file does not exist.
        DataFileError: it is not UTF-8 text.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
        >>> _ = open(path, "wb").write("\\ufeff1001_DFA_ANG_XX,ANG\\r\\n1002_IEO_SAD_LO,SAD\\r\\n".encode())
        >>> read_rows(path)
        [['1001_DFA_ANG_XX', 'ANG'], ['1002_IEO_SAD_LO', 'SAD']]
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "split list")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataFileError(path, f"split list is not UTF-8 text ({error})") from error
    if delimiter == " ":
        rows = [line.split() for line in text.splitlines()]
    else:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    rows = [[field.strip() for field in row] for row in rows if any(field.strip() for field in row)]
    if header is not None and rows and rows[0][0] == header:
        rows = rows[1:]
    return rows


def write_split(path: PathLike, rows: Iterable[tuple[str, str]]) -> None:
    """Write a prepared split file: header ``name,label`` then one clip per row, atomically.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "test.csv")
        >>> write_split(path, [("a", "ANG")])
        >>> read_prepared_split(path)
        [('a', 'ANG')]
    """
    with _atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["name", "label"])
        writer.writerows(rows)


def read_prepared_split(path: PathLike) -> list[tuple[str, str]]:
    """Read a split written by :func:`write_split` as ``(name, label_name)`` pairs.

    Raises:
        MissingFileError: the file does not exist.
        DataFileError: a row does not have two fields.
    """
    rows = read_rows(path, header="name")
    for number, row in enumerate(rows, start=2):
        if len(row) != 2:
            raise DataFileError(path, f"line {number}: expected 'name,label', got {row}")
    return [(row[0], row[1]) for row in rows]
