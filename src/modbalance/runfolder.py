"""The run-folder format: the one module that writes and reads the files of a run folder.

The trainer (:mod:`modbalance.train`) writes run folders through :class:`RunFiles` (main process
only); ``modbalance report`` (:mod:`modbalance.report`), ``modbalance eval`` and the demo read them
back through :func:`read_metrics`, :func:`read_summary` and :func:`read_config`. This module needs
the standard library only (PyYAML for :func:`read_config`, TensorBoard for :meth:`RunFiles.open`),
so reading a run never loads the trainer.

::

    <output_dir>/<run_name>/
        config.yaml          the resolved config
        metrics.jsonl        one JSON record per epoch (train/..., val/... keys)
        summary.json         test metrics of the best checkpoint, best epoch, probe, Bayes limits, time
        checkpoints/best.pt  model weights of the best validation epoch
        checkpoints/last.pt  everything needed to resume exactly (last.prev.pt: the one before)
        tb/                  TensorBoard event files
        train.log            the run's log
        .lock                held (``flock``) by the process training in the folder; holds its pid

What happens on a full disk, the lock and the exit codes: ``docs/run-folder.md``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "RunFiles",
    "RunFolderBusyError",
    "RunLock",
    "RunWriteError",
    "read_config",
    "read_metrics",
    "read_summary",
    "write_json",
    "writing",
]

logger = logging.getLogger(__name__)


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class RunWriteError(OSError):
    """A file of a run folder could not be written (full disk, quota, permissions, I/O error).

    The message names the file, what was being written and the system's reason; ``errno`` is the
    original error's. ``modbalance train`` exits with code 3 on it (docs/run-folder.md).

    Example:
        >>> error = RunWriteError("runs/r/metrics.jsonl", "the epoch record", OSError(28, "No space left on device"))
        >>> print(error)
        [Errno 28] could not write runs/r/metrics.jsonl (the epoch record): No space left on device
    """

    def __init__(self, path: Path | str, what: str, error: OSError) -> None:
        self.path, self.what = Path(path), what
        reason = error.strerror or str(error)
        super().__init__(error.errno, f"could not write {self.path} ({what}): {reason}")

    def __str__(self) -> str:
        return f"[Errno {self.errno}] {self.strerror}" if self.errno is not None else str(self.strerror)


@contextlib.contextmanager
def writing(path: Path | str, what: str) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into a :class:`RunWriteError` naming ``path`` and ``what``.

    Example:
        >>> try:
        ...     with writing("/no/such/dir/x.json", "the summary"):
        ...         open("/no/such/dir/x.json", "w")
        ... except RunWriteError as error:
        ...     print(error.path.name, error.what)
        x.json the summary
    """
    try:
        yield
    except RunWriteError:
        raise
    except OSError as error:
        raise RunWriteError(path, what, error) from error


class RunFolderBusyError(RuntimeError):
    """Another process holds the lock of a run folder (it is training there).

    Example:
        >>> str(RunFolderBusyError("runs/r", "4242"))
        'runs/r is in use: another process (pid 4242) is training there; wait for it to end, or choose another run_name'
    """

    def __init__(self, folder: Path | str, holder: str) -> None:
        self.folder, self.holder = Path(folder), holder
        super().__init__(
            f"{self.folder} is in use: another process (pid {holder}) is training there; wait for it to end, "
            "or choose another run_name"
        )


class RunLock:
    """An exclusive OS lock (``flock``) on ``<folder>/.lock``, held for a run's lifetime.

    The lock file holds the holder's pid (for the message of a refused second process). The
    operating system releases the lock when the holder exits, however it ends (even SIGKILL), so
    a crashed run never leaves a stale lock. Where ``fcntl`` does not exist (Windows) it is a no-op.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with RunLock(folder):
        ...     try:
        ...         RunLock(folder).acquire()
        ...     except RunFolderBusyError as error:
        ...         print("busy:", "pid" in str(error))
        busy: True
        >>> with RunLock(folder):  # released when the first one ended
        ...     pass
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / ".lock"
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> None:
        """Take the lock, creating the folder; raise :class:`RunFolderBusyError` if another process has it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        with writing(self.path, "the run folder's lock file"):
            self._created = not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise RunWriteError(self.path, "the run folder's lock file", error) from error
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderBusyError(self.folder, holder) from None
        with contextlib.suppress(OSError):  # the pid is a courtesy for the message; the lock is what counts
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Release the lock (the file stays; a lock, not the file's existence, marks a live run).

        A folder that this lock created and that holds nothing but the lock file (a run refused
        before it wrote anything) is removed again, so a refused config leaves no trace.
        """
        if self._fd is not None:
            if self._created and [p.name for p in self.folder.iterdir()] == [self.path.name]:
                with contextlib.suppress(OSError):  # removed while still held: no other run can be inside
                    self.path.unlink()
                    self.folder.rmdir()
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as indented JSON, atomically (temporary file, then rename).

    Raises:
        RunWriteError: the file could not be written (the old file, if any, is left as it was).
    """
    temporary = path.with_name(f".{path.name}.tmp")
    with writing(path, f"{path.name}"):
        try:
            temporary.write_text(json.dumps(_clean(payload), indent=2, sort_keys=True) + "\n")
            os.replace(temporary, path)
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file.

    A last line without its newline that is not valid JSON is a record torn by an interrupted
    write (a killed process, a full disk); it is ignored with a ``UserWarning`` naming the file
    and line. Damage anywhere else is an error.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not a JSON object (the message names the file and line).
    """
    text = Path(path).read_text()
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines) and not text.endswith("\n"):
                warnings.warn(
                    f"{path}:{number}: ignoring a torn last line (an interrupted write): {line[:60]!r}",
                    stacklevel=2,
                )
                break
            raise ValueError(f"{path}:{number}: not a JSON record ({error})") from error
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def _append_line(path: Path, line: bytes) -> None:
    """Append ``line`` with one ``os.write``; on failure cut the file back, raise :class:`RunWriteError`."""
    with writing(path, "the epoch record"):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(errno.ENOSPC, f"short write: {written} of {len(line)} bytes (disk full?)")
            except OSError:
                with contextlib.suppress(OSError):  # if even this fails, read_metrics ignores the torn line
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)


class RunFiles:
    """Paths of a run folder and its writers (metrics, TensorBoard, log file).

    Args:
        root: the run folder.
        enabled: ``False`` on non-main ranks: every write is skipped.
    """

    def __init__(self, root: Path, *, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.config = self.root / "config.yaml"
        self.metrics = self.root / "metrics.jsonl"
        self.summary = self.root / "summary.json"
        self.checkpoints = self.root / "checkpoints"
        self.best = self.checkpoints / "best.pt"
        self.last = self.checkpoints / "last.pt"
        self.tensorboard = self.root / "tb"
        self.log = self.root / "train.log"
        self._writer: Any = None
        self._handler: logging.Handler | None = None
        self._previous_level = logging.NOTSET

    def open(self, *, purge_epoch: int | None = None) -> None:
        """Create the folder, attach the log file and start the TensorBoard writer (once per run).

        ``purge_epoch`` (when resuming) drops TensorBoard events at or after that epoch, which
        an interrupted run may have written before its last checkpoint.
        """
        if not self.enabled:
            return
        with writing(self.checkpoints, "the run folder"):
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            self._handler = logging.FileHandler(self.log)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        package_logger = logging.getLogger("modbalance")
        package_logger.addHandler(self._handler)
        self._previous_level = package_logger.level
        if package_logger.getEffectiveLevel() > logging.INFO:
            package_logger.setLevel(logging.INFO)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # pragma: no cover - exercised only without the extra
            raise ImportError('TensorBoard logs need tensorboard: pip install "modbalance[train]"') from error
        with writing(self.tensorboard, "TensorBoard events"):
            self._writer = SummaryWriter(log_dir=str(self.tensorboard), purge_step=purge_epoch)

    def rewrite_metrics(self, history: Iterable[Mapping[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` with ``history`` (on resume: drops records after the checkpoint).

        An empty history removes the file: a folder holds a run once it has a checkpoint, and no
        empty ``metrics.jsonl`` is left behind by a run that stops before its first one.
        """
        if not self.enabled:
            return
        records = list(history)
        with writing(self.metrics, "the metrics history"):
            if not records:
                self.metrics.unlink(missing_ok=True)
                return
            temporary = self.metrics.with_name(".metrics.jsonl.tmp")
            temporary.write_text("".join(json.dumps(_clean(r), sort_keys=True) + "\n" for r in records))
            os.replace(temporary, self.metrics)

    def append_record(self, record: Mapping[str, Any]) -> None:
        """Append one epoch's record to ``metrics.jsonl`` and to TensorBoard (step = epoch).

        The line goes out in one ``os.write``; if that fails or is short (a full disk) the file is
        cut back to its previous length, so no torn record stays, and :class:`RunWriteError` is raised.
        """
        if not self.enabled:
            return
        _append_line(self.metrics, (json.dumps(_clean(record), sort_keys=True) + "\n").encode())
        if self._writer is not None:
            with writing(self.tensorboard, "TensorBoard events"):
                for key, value in record.items():
                    if key not in ("epoch", "step") and isinstance(value, (int, float)):
                        self._writer.add_scalar(key, value, global_step=int(record["epoch"]))
                self._writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer and detach the log file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._handler is not None:
            package_logger = logging.getLogger("modbalance")
            package_logger.removeHandler(self._handler)
            package_logger.setLevel(self._previous_level)
            self._handler.close()
            self._handler = None


def read_summary(path: Path) -> dict[str, Any]:
    """The parsed ``summary.json`` of a run folder ``path`` (written when the run finished).

    Raises:
        FileNotFoundError: the folder has no ``summary.json`` (the run did not finish).
        ValueError: the file is not a JSON object (the message names the file).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     write_json(Path(tmp) / "summary.json", {"method": "ogm", "seed": 0})
        ...     read_summary(Path(tmp))["method"]
        'ogm'
    """
    file = Path(path) / "summary.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a finished run: {file} is missing")
    try:
        summary = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from error
    if not isinstance(summary, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(summary).__name__}")
    return summary


def read_config(path: Path) -> dict[str, Any] | None:
    """The resolved config a run saved (``config.yaml`` of the run folder ``path``) as plain data.

    Returns ``None`` when the folder has no ``config.yaml``. Read with ``yaml.safe_load`` (plain
    data only, no Python objects), without the trainer's schema: a report groups runs by it.

    Raises:
        ValueError: the file is not a YAML mapping (the message names the file).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = (Path(tmp) / "config.yaml").write_text("seed: 1\\nmethod:\\n  name: ogm\\n  alpha: 0.5\\n")
        ...     read_config(Path(tmp))
        {'seed': 1, 'method': {'name': 'ogm', 'alpha': 0.5}}
    """
    file = Path(path) / "config.yaml"
    if not file.is_file():
        return None
    try:
        import yaml
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError('reading config.yaml needs PyYAML: pip install "modbalance[train]"') from error
    try:
        config = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{file}: not valid YAML ({str(error).splitlines()[0]})") from error
    if not isinstance(config, dict):
        raise ValueError(f"{file}: expected a mapping of config sections, got {type(config).__name__}")
    return config
