"""The error types raised for bad benchmark data, and the reasons recorded when skipping it."""

from __future__ import annotations

from os import PathLike
from typing import Any

#: Reasons a clip can be skipped, as written in manifests and skip reports.
SKIP_REASONS: tuple[str, ...] = (
    "missing",  # a file listed in a split does not exist
    "corrupt",  # a media file cannot be decoded (truncated, wrong format, no stream)
    "bad_shape",  # an array has a shape other than the one the preset expects
    "unknown_label",  # the label is not one of the dataset's classes
    "empty",  # a file or split holds no data (no frames, no samples, no rows)
    "duplicate",  # a clip listed twice with different labels (AVE's two-event videos)
)


class DataFileError(ValueError):
    """A data file exists but cannot be used; the message names the file and the problem.

    Args:
        path: the offending file.
        problem: what is wrong, in words.
        reason: one of :data:`SKIP_REASONS` (not ``"missing"``, which is a :class:`MissingFileError`).

    Example:
        >>> error = DataFileError("clips/a.wav", "no audio samples", reason="empty")
        >>> str(error), error.reason
        ('clips/a.wav: no audio samples', 'empty')
    """

    def __init__(self, path: str | PathLike[str], problem: str, *, reason: str = "corrupt") -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"reason must be one of {SKIP_REASONS}, got {reason!r}")
        self.path = str(path)
        self.problem = problem
        self.reason = reason
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str], dict[str, str]]:
        # Keep the keyword-only reason when the error crosses a process boundary (DataLoader workers, prep pool).
        return (type(self), (self.path, self.problem), {"reason": self.reason})

    def __setstate__(self, state: dict[str, Any] | None) -> None:
        self.reason = str((state or {}).get("reason", "corrupt"))


class MissingFileError(FileNotFoundError):
    """A file that a split or layout lists does not exist.

    Example:
        >>> str(MissingFileError("AudioWAV/1001_DFA_ANG_XX.wav", "listed in train.csv"))
        'AudioWAV/1001_DFA_ANG_XX.wav: file not found (listed in train.csv)'
    """

    reason = "missing"

    def __init__(self, path: str | PathLike[str], context: str = "") -> None:
        self.path = str(path)
        self.context = context
        suffix = f" ({context})" if context else ""
        super().__init__(f"{self.path}: file not found{suffix}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.path, self.context))


def skip_reason(error: BaseException) -> str:
    """The :data:`SKIP_REASONS` entry for an error raised while reading one sample.

    Example:
        >>> skip_reason(MissingFileError("x.jpg")), skip_reason(DataFileError("y.npy", "bad", reason="bad_shape"))
        ('missing', 'bad_shape')
    """
    if isinstance(error, DataFileError):
        return error.reason
    if isinstance(error, FileNotFoundError):
        return "missing"
    return "corrupt"
