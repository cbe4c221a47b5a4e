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
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["RunFiles", "read_config", "read_metrics", "read_summary", "write_json"]

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


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as indented JSON, atomically (temporary file, then rename)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(_clean(payload), indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not a JSON object (the message names the file and line).
    """
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not a JSON record ({error})") from error
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


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
        self._writer = SummaryWriter(log_dir=str(self.tensorboard), purge_step=purge_epoch)

    def rewrite_metrics(self, history: Iterable[Mapping[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` with ``history`` (on resume: drops records after the checkpoint)."""
        if not self.enabled:
            return
        temporary = self.metrics.with_name(".metrics.jsonl.tmp")
        temporary.write_text("".join(json.dumps(_clean(r), sort_keys=True) + "\n" for r in history))
        os.replace(temporary, self.metrics)

    def append_record(self, record: Mapping[str, Any]) -> None:
        """Append one epoch's record to ``metrics.jsonl`` and to TensorBoard (step = epoch)."""
        if not self.enabled:
            return
        with self.metrics.open("a") as handle:
            handle.write(json.dumps(_clean(record), sort_keys=True) + "\n")
            handle.flush()
        if self._writer is not None:
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
