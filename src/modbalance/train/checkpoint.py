"""Crash-safe checkpoints: atomic writes, an embedded checksum, a fallback copy, and RNG state.

A checkpoint file is a 52-byte header followed by the bytes of ``torch.save(state)``:

======  =====  ===============================================================
offset  bytes  field
======  =====  ===============================================================
0       8      magic ``b"MODBALCK"``
8       4      format version (little-endian uint32), currently 1
12      8      payload length in bytes (little-endian uint64)
20      32     SHA-256 of the payload
52      ...    payload: ``torch.save`` output (a zip archive)
======  =====  ===============================================================

:func:`save_checkpoint` writes to a temporary file in the target directory, flushes and fsyncs
it, then renames it over the final name (``os.replace`` is atomic on POSIX and Windows) and
fsyncs the directory, so a crash at any point leaves either the old complete file or the new
complete file under the final name, never a partial one. :func:`load_checkpoint` checks the
magic, the version, the length and the checksum before unpickling with
``torch.load(weights_only=True)``, and refuses anything else with a :class:`CheckpointError`
that names the file and the problem. With ``keep_previous=True`` the file being replaced is kept
as ``<stem>.prev<suffix>``, and :func:`latest_valid_checkpoint` falls back to it when the newest
file is damaged.

:func:`capture_rng_state` / :func:`restore_rng_state` cover Python's ``random``, NumPy's global
RNG (when NumPy is installed), torch's CPU generator and every CUDA device's generator, in
containers that ``torch.load(weights_only=True)`` accepts.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import struct
import tempfile
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "CheckpointError",
    "CheckpointNotFoundError",
    "capture_rng_state",
    "latest_valid_checkpoint",
    "load_checkpoint",
    "previous_path",
    "restore_rng_state",
    "save_checkpoint",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

#: First 8 bytes of every modbalance checkpoint.
MAGIC = b"MODBALCK"
#: Version of the header layout; bumped when the layout changes.
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQ32s")
HEADER_SIZE = _HEADER.size  # 52

# Leaf and container types that torch.load(weights_only=True) rebuilds (see torch/_weights_only_unpickler.py).
_LEAF_TYPES: tuple[type, ...] = (
    str,
    int,
    float,
    bool,
    type(None),
    bytes,
    bytearray,
    complex,
    torch.Tensor,
    torch.nn.Parameter,
    torch.Size,
    torch.device,
    torch.dtype,
)
_MAPPING_TYPES: tuple[type, ...] = (dict, OrderedDict, Counter)
_SEQUENCE_TYPES: tuple[type, ...] = (list, tuple, set)


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, or not a modbalance checkpoint.

    Attributes:
        path: the file.
        problem: what is wrong with it, in words.
    """

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"Refusing checkpoint '{self.path}': {problem}")


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (both a :class:`CheckpointError` and a ``FileNotFoundError``)."""


def previous_path(path: Path | str) -> Path:
    """Name under which ``save_checkpoint(..., keep_previous=True)`` keeps the replaced file.

    Example:
        >>> previous_path("runs/a/last.pt").as_posix()
        'runs/a/last.prev.pt'
    """
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


# ---------------------------------------------------------------------------------------------- writing
class _HashingWriter:
    """File-like object that forwards writes to ``file`` while hashing and counting them."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.sha256 = hashlib.sha256()
        self.length = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.length += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def _check_storable(value: Any, where: str = "state") -> None:
    """Raise TypeError at the first object that ``torch.load(weights_only=True)`` would refuse."""
    kind = type(value)
    if kind in _LEAF_TYPES:
        return
    if kind in _MAPPING_TYPES:
        for key, item in value.items():
            if type(key) not in (str, int, float, bool, type(None), tuple):
                raise TypeError(f"{where}: key {key!r} of type {type(key).__name__} cannot be stored in a checkpoint")
            _check_storable(item, f"{where}[{key!r}]")
        return
    if kind in _SEQUENCE_TYPES:
        for i, item in enumerate(value):
            _check_storable(item, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} has type {kind.__module__}.{kind.__qualname__}, which torch.load(weights_only=True) cannot "
        "rebuild; store plain containers (dict, list, tuple), numbers, strings and tensors "
        "(e.g. float(x) for a NumPy scalar, torch.as_tensor(a) for an array)"
    )


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    if os.name == "nt":  # pragma: no cover - Windows has no directory fsync
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_intact(path: Path) -> bool:
    """Full check (magic, version, length and SHA-256) used before keeping a file as the fallback."""
    try:
        _read_verified(path)
    except (CheckpointError, OSError) as error:
        logger.warning("%s", error)
        return False
    return True


def _keep_as_previous(path: Path) -> None:
    """Make ``previous_path(path)`` a copy of ``path`` without removing ``path`` (hard link, else rename)."""
    previous = previous_path(path)
    if not _is_intact(path):  # a bit flip keeps magic, version and length: only the checksum tells
        logger.warning("not keeping damaged checkpoint %s as %s; the existing fallback stays", path, previous.name)
        return
    link = path.with_name(f".{previous.name}.link.tmp")
    try:
        link.unlink(missing_ok=True)
        os.link(path, link)
        os.replace(link, previous)
    except OSError:  # no hard links on this file system: rename (briefly leaves only the fallback)
        link.unlink(missing_ok=True)
        os.replace(path, previous)


def save_checkpoint(path: Path | str, state: Mapping[str, Any], *, keep_previous: bool = False) -> None:
    """Write ``state`` to ``path`` atomically, with a checksum header.

    The state is streamed by ``torch.save`` into a temporary file next to ``path`` while being
    hashed; the header is then written, the file flushed and fsynced, renamed over ``path``
    with ``os.replace``, and the directory fsynced. If anything fails (or the process dies)
    before the rename, ``path`` still holds its previous content; an in-process failure also
    removes the temporary file, and temporary files left by a killed process are removed by the
    next successful save to the same name.

    Args:
        path: final file name; its directory is created if needed.
        state: mapping of plain containers, numbers, strings and tensors (what
            ``torch.load(weights_only=True)`` accepts; checked before writing).
        keep_previous: keep the file being replaced as ``<stem>.prev<suffix>`` (only if it passes
            the full check, checksum included, so a damaged newest file never overwrites a good fallback).

    Raises:
        TypeError: ``state`` is not a mapping, or holds an object that cannot be loaded with
            ``weights_only=True`` (the message gives its location, e.g. ``state['rng']['numpy']``).

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = Path(d) / "last.pt"
        ...     save_checkpoint(path, {"step": 3, "w": torch.ones(2)})
        ...     save_checkpoint(path, {"step": 4, "w": torch.zeros(2)}, keep_previous=True)
        ...     load_checkpoint(path)["step"], load_checkpoint(Path(d) / "last.prev.pt")["step"]
        (4, 3)
    """
    path = Path(path)
    if not isinstance(state, Mapping):
        raise TypeError(f"checkpoint state must be a mapping, got {type(state).__name__}")
    _check_storable(dict(state))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(HEADER_SIZE))
            writer = _HashingWriter(f)
            torch.save(dict(state), writer)  # type: ignore[arg-type]  # any object with write() works
            f.seek(0)
            f.write(_HEADER.pack(MAGIC, FORMAT_VERSION, writer.length, writer.sha256.digest()))
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            _keep_as_previous(path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    logger.debug("wrote checkpoint %s (%d bytes)", path, HEADER_SIZE + writer.length)


# ---------------------------------------------------------------------------------------------- reading
def _read_verified(path: Path) -> memoryview:
    """Return the payload of ``path`` after checking magic, version, length and checksum."""
    if not path.exists():
        raise CheckpointNotFoundError(path, "file does not exist")
    if not path.is_file():
        raise CheckpointError(path, "not a regular file")
    data = path.read_bytes()
    if len(data) < HEADER_SIZE:
        if data and not MAGIC.startswith(data[: len(MAGIC)]):
            raise CheckpointError(path, "not a modbalance checkpoint (no MODBALCK header)")
        raise CheckpointError(path, f"truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        hint = " (it looks like a plain torch.save file)" if data[:2] == b"PK" else ""
        raise CheckpointError(path, f"not a modbalance checkpoint (no MODBALCK header){hint}")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            path, f"format version {version} is not supported (this modbalance reads {FORMAT_VERSION})"
        )
    actual = len(data) - HEADER_SIZE
    if actual < length:
        raise CheckpointError(path, f"truncated: header announces {length} payload bytes, file holds {actual}")
    if actual > length:
        raise CheckpointError(path, f"{actual - length} unexpected bytes after the {length}-byte payload")
    payload = memoryview(data)[HEADER_SIZE:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(
            path, "checksum mismatch: the payload's SHA-256 differs from the header's (file corrupted)"
        )
    return payload


def verify_checkpoint(path: Path | str) -> None:
    """Check magic, version, length and SHA-256 of ``path`` without unpickling it.

    Raises:
        CheckpointError: naming the file and the problem (:class:`CheckpointNotFoundError` if missing).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = (Path(d) / "x.pt").write_bytes(b"hello")
        ...     try:
        ...         verify_checkpoint(Path(d) / "x.pt")
        ...     except CheckpointError as error:
        ...         print(error)
        Refusing checkpoint '.../x.pt': not a modbalance checkpoint (no MODBALCK header)
    """
    _read_verified(Path(path))


def load_checkpoint(path: Path | str, map_location: Any = None, *, required: Sequence[str] = ()) -> dict[str, Any]:
    """Verify and load a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load`` (e.g. ``"cpu"`` or ``torch.device("cuda", 0)``).
        required: top-level keys that must be present.

    Returns:
        The state dict as saved.

    Raises:
        CheckpointError: missing file (:class:`CheckpointNotFoundError`), truncated file,
            checksum mismatch, wrong magic or version, a payload that does not unpickle with
            ``weights_only=True``, or missing ``required`` keys; the message names the file.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_checkpoint(Path(d) / "c.pt", {"epoch": 1})
        ...     try:
        ...         load_checkpoint(Path(d) / "c.pt", required=("epoch", "model"))
        ...     except CheckpointError as error:
        ...         print(error)
        Refusing checkpoint '.../c.pt': missing required key(s) 'model' (has 'epoch')
    """
    path = Path(path)
    payload = _read_verified(path)
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as error:  # the checksum matched, so this is a writer/reader mismatch, not damage
        raise CheckpointError(path, f"payload does not load with torch.load(weights_only=True): {error}") from error
    if not isinstance(state, dict):
        raise CheckpointError(path, f"payload is a {type(state).__name__}, expected a dict")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(
            path,
            f"missing required key(s) {', '.join(map(repr, missing))} (has {', '.join(map(repr, state))})",
        )
    return state


def latest_valid_checkpoint(directory: Path | str, names: Sequence[str] = ("last.pt", "last.prev.pt")) -> Path | None:
    """Return the first ``directory / name``, in the order of ``names``, that passes verification.

    Damaged candidates are skipped with a logged warning naming the file and the problem.

    Returns:
        The path, or ``None`` when none of the names exists.

    Raises:
        FileNotFoundError: ``directory`` is not a directory.
        CheckpointError: some candidates exist but every one is damaged (all problems listed),
            so a broken run is never mistaken for a fresh start.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_checkpoint(Path(d) / "last.pt", {"step": 1})
        ...     save_checkpoint(Path(d) / "last.pt", {"step": 2}, keep_previous=True)
        ...     _ = (Path(d) / "last.pt").write_bytes(b"MODBALCK")  # newest damaged
        ...     latest_valid_checkpoint(d).name
        'last.prev.pt'
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory '{directory}' does not exist or is not a directory")
    problems: list[str] = []
    for name in names:
        candidate = directory / name
        if not candidate.exists():
            continue
        try:
            _read_verified(candidate)
        except CheckpointError as error:
            logger.warning("%s; trying the next candidate", error)
            problems.append(f"{name}: {error.problem}")
            continue
        return candidate
    if problems:
        raise CheckpointError(directory, "no valid checkpoint; " + "; ".join(problems))
    return None


# ---------------------------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict[str, Any]:
    """Snapshot every global random generator the training loop may draw from.

    Returns:
        ``{"python": random.getstate(), "numpy": {...} or None, "torch": ByteTensor,
        "cuda": [ByteTensor per device] or None}``; every part loads with ``weights_only=True``
        (the NumPy key vector is stored as an int64 tensor).

    Example:
        >>> import random, torch
        >>> state = capture_rng_state()
        >>> a = (random.random(), torch.rand(2))
        >>> restore_rng_state(state)
        >>> b = (random.random(), torch.rand(2))
        >>> a[0] == b[0] and torch.equal(a[1], b[1])
        True
    """
    numpy_state: dict[str, Any] | None = None
    try:
        import numpy as np
    except ImportError:
        np = None  # type: ignore[assignment]
    if np is not None:
        name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
        numpy_state = {
            "bit_generator": str(name),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    return {
        "python": random.getstate(),
        "numpy": numpy_state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`capture_rng_state`; the next draws then repeat exactly.

    A part that cannot be restored here (NumPy state without NumPy installed, CUDA state
    without CUDA, a different number of CUDA devices) is restored as far as possible and a
    warning is logged.

    Raises:
        ValueError: ``state`` lacks one of the keys ``python``, ``numpy``, ``torch``, ``cuda``.
    """
    missing = {"python", "numpy", "torch", "cuda"} - set(state)
    if missing:
        raise ValueError(f"RNG state needs keys 'python', 'numpy', 'torch', 'cuda'; missing {sorted(missing)}")
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    numpy_state = state["numpy"]
    if numpy_state is not None:
        try:
            import numpy as np
        except ImportError:
            logger.warning("checkpoint holds a NumPy RNG state but NumPy is not installed; not restored")
        else:
            np.random.set_state(
                (
                    numpy_state["bit_generator"],
                    np.asarray(torch.as_tensor(numpy_state["key"]).numpy(), dtype=np.uint32),
                    int(numpy_state["pos"]),
                    int(numpy_state["has_gauss"]),
                    float(numpy_state["cached_gaussian"]),
                )
            )
    cuda_states = state["cuda"]
    if cuda_states is not None:
        if not torch.cuda.is_available():
            logger.warning("checkpoint holds CUDA RNG states but CUDA is not available; not restored")
        else:
            count = torch.cuda.device_count()
            if len(cuda_states) != count:
                logger.warning(
                    "checkpoint has RNG states of %d CUDA devices, this process sees %d; restoring %d",
                    len(cuda_states),
                    count,
                    min(count, len(cuda_states)),
                )
            for index, device_state in enumerate(cuda_states[:count]):
                torch.cuda.set_rng_state(torch.as_tensor(device_state, dtype=torch.uint8).cpu(), index)
