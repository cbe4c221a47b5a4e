"""CMU-MOSEI sentiment with three feature modalities (audio COVAREP 74-d, visual Facet 35-d, text GloVe 300-d).

Per sample: ``({"audio": (L_a, 74), "visual": (L_v, 35), "text": (L_t, 300)}, label)`` float32; unaligned
lengths are 500 / 500 / 50, word-aligned 50 / 50 / 50 (read from the arrays).

Layouts (option ``layout``):

* ``"modbalance"``: ``<root>/{train,val,test}.npz`` with arrays ``audio``, ``visual``, ``text``, ``scores``
  (written by ``modbalance prep mosei``; non-finite features already set to 0).
* ``"mult"``: MulT's pickle ``mosei_senti_data_noalign.pkl`` (``aligned=False``, BalanceBench's default)
  or ``mosei_senti_data.pkl``: ``{"train"|"valid"|"test": {"text", "audio", "vision", "labels"}}``.
  It is unpickled, so only read a file you trust. Non-finite features (the audio holds −inf) are set
  to 0, as MulT does, and the count is logged.

Labels (option ``label_rule``), from the sentiment score s in [−3, 3]:

* ``"binary"`` (BalanceBench): 0 if s < 0 else 1 — zero counts as positive.
* ``"binary_nonzero"`` (MulT's evaluation): as binary, but samples with s = 0 are excluded
  (``dataset.excluded`` counts them; they are logged, not silently dropped).
* ``"seven"``: round(clip(s, −3, 3)) + 3, classes 0..6 (−3 … +3).
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from modbalance.data._deps import require
from modbalance.data.base import ON_ERROR, SkippedSample, check_choice
from modbalance.data.errors import DataFileError, MissingFileError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

MOSEI_LAYOUTS: tuple[str, ...] = ("modbalance", "mult")
MOSEI_SPLITS: tuple[str, ...] = ("train", "val", "test")
MOSEI_LABEL_RULES: tuple[str, ...] = ("binary", "binary_nonzero", "seven")
#: Feature width per modality (MulT names the visual features "vision").
MOSEI_DIMS: dict[str, int] = {"audio": 74, "visual": 35, "text": 300}
MOSEI_PICKLE_KEYS: dict[str, str] = {"audio": "audio", "visual": "vision", "text": "text"}
MULT_SPLITS: dict[str, str] = {"train": "train", "val": "valid", "test": "test"}


def mosei_classes(label_rule: str = "binary") -> list[str]:
    """Class names under a label rule.

    Example:
        >>> mosei_classes(), mosei_classes("seven")[0]
        (['negative', 'positive'], '-3')
    """
    check_choice("label_rule", label_rule, MOSEI_LABEL_RULES)
    if label_rule == "seven":
        return [str(v) for v in range(-3, 4)]
    return ["negative", "positive"]


def score_labels(scores: Tensor, label_rule: str) -> tuple[Tensor, Tensor]:
    """Turn sentiment scores into ``(labels, keep)`` under ``label_rule``.

    Example:
        >>> labels, keep = score_labels(torch.tensor([-1.2, 0.0, 2.6]), "binary")
        >>> labels.tolist(), keep.tolist()
        ([0, 1, 1], [True, True, True])
        >>> score_labels(torch.tensor([-1.2, 0.0, 2.6]), "seven")[0].tolist()
        [2, 3, 6]
        >>> score_labels(torch.tensor([-1.2, 0.0, 2.6]), "binary_nonzero")[1].tolist()
        [True, False, True]
    """
    check_choice("label_rule", label_rule, MOSEI_LABEL_RULES)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if label_rule == "seven":
        return (torch.round(scores.clamp(-3, 3)) + 3).long(), keep
    if label_rule == "binary_nonzero":
        keep = scores != 0
    return (scores >= 0).long(), keep


def load_mult_pickle(path: PathLike) -> dict[str, dict[str, Any]]:
    """Unpickle MulT's MOSEI data (trusted files only) and check its structure.

    Raises:
        MissingFileError: the file does not exist.
        DataFileError: it cannot be unpickled or lacks the splits/arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "MulT MOSEI pickle")
    try:
        with open(path, "rb") as handle:
            data = pickle.load(handle)
    except Exception as error:  # pickle raises many types on mangled files
        raise DataFileError(path, f"cannot unpickle ({type(error).__name__}: {error})") from error
    if not isinstance(data, dict):
        raise DataFileError(path, f"expected a dict of splits, got {type(data).__name__}")
    for split in data.values() if isinstance(data, dict) else []:
        if not isinstance(split, dict):
            raise DataFileError(path, "each split must be a dict of arrays")
    return data


def check_split_arrays(arrays: dict[str, Any], source: str) -> tuple[dict[str, Tensor], Tensor, dict[str, int]]:
    """Validate one split's arrays and return ``(features, scores, nonfinite_counts)``.

    ``arrays`` uses our names (audio, visual, text, scores). Non-finite features are set to 0.

    Raises:
        DataFileError: a modality is missing, has the wrong rank or width, or the sample counts differ.
    """
    np = require("numpy")
    features: dict[str, Tensor] = {}
    nonfinite: dict[str, int] = {}
    for modality, width in MOSEI_DIMS.items():
        if modality not in arrays:
            raise DataFileError(source, f"missing the {modality!r} array", reason="bad_shape")
        array = np.asarray(arrays[modality], dtype=np.float32)
        if array.ndim != 3 or array.shape[2] != width:
            raise DataFileError(
                source, f"{modality} has shape {array.shape}, expected (N, L, {width})", reason="bad_shape"
            )
        bad = ~np.isfinite(array)
        nonfinite[modality] = int(bad.sum())
        array = np.where(bad, np.float32(0.0), array)
        features[modality] = torch.from_numpy(np.ascontiguousarray(array))
    scores = torch.from_numpy(np.asarray(arrays["scores"], dtype=np.float32).reshape(-1))
    counts = {m: t.shape[0] for m, t in features.items()} | {"scores": scores.shape[0]}
    if len(set(counts.values())) != 1:
        raise DataFileError(source, f"sample counts differ between arrays: {counts}", reason="bad_shape")
    if counts["scores"] == 0:
        raise DataFileError(source, "split holds no samples", reason="empty")
    return features, scores, nonfinite


class CMUMOSEI(Dataset[tuple[dict[str, Tensor], int]]):
    """CMU-MOSEI features per utterance.

    Args:
        root: folder with our ``.npz`` files or MulT's pickle.
        split: ``"train"``, ``"val"`` (MulT's ``valid``) or ``"test"``.
        layout: ``"modbalance"`` or ``"mult"``.
        aligned: use the word-aligned pickle (``"mult"`` only).
        label_rule: ``"binary"``, ``"binary_nonzero"`` or ``"seven"``.
        modalities: ``"audio,visual,text"`` or a subset.
        on_error: ``"raise"`` or ``"skip"``: samples with a non-finite score.
        pickle_file: override the pickle's file name.
        seed: unused (no randomness); accepted for a uniform config.

    Example:
        >>> import numpy as np, tempfile, os
        >>> root = tempfile.mkdtemp()
        >>> np.savez(os.path.join(root, "test.npz"), audio=np.zeros((2, 5, 74)), visual=np.zeros((2, 5, 35)),
        ...          text=np.zeros((2, 3, 300)), scores=np.array([-0.5, 1.0]))
        >>> inputs, target = CMUMOSEI(root, "test")[1]
        >>> {k: tuple(v.shape) for k, v in inputs.items()}, target
        ({'audio': (5, 74), 'visual': (5, 35), 'text': (3, 300)}, 1)
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        *,
        layout: str = "modbalance",
        aligned: bool = False,
        label_rule: str = "binary",
        modalities: str = "audio,visual,text",
        on_error: str = "raise",
        pickle_file: str | None = None,
        seed: int = 0,
    ) -> None:
        check_choice("split", split, MOSEI_SPLITS)
        check_choice("layout", layout, MOSEI_LAYOUTS)
        check_choice("on_error", on_error, ON_ERROR)
        self.classes = mosei_classes(label_rule)
        names = [m.strip() for m in modalities.split(",")] if isinstance(modalities, str) else list(modalities)
        for name in names:
            check_choice("modality", name, tuple(MOSEI_DIMS))
        self.modalities = tuple(names)
        self.on_error = on_error
        self.seed = seed
        root = Path(root)
        if layout == "modbalance":
            path = root / f"{split}.npz"
            arrays = _load_npz(path)
        else:
            path = root / (pickle_file or ("mosei_senti_data.pkl" if aligned else "mosei_senti_data_noalign.pkl"))
            data = load_mult_pickle(path)
            key = MULT_SPLITS[split]
            if key not in data:
                raise DataFileError(path, f"no split {key!r} (found {sorted(data)})")
            raw = data[key]
            arrays = {m: raw.get(MOSEI_PICKLE_KEYS[m]) for m in MOSEI_DIMS if raw.get(MOSEI_PICKLE_KEYS[m]) is not None}
            if "labels" not in raw:
                raise DataFileError(path, f"split {key!r} has no 'labels' array", reason="bad_shape")
            arrays["scores"] = raw["labels"]
        self.source = str(path)
        features, scores, nonfinite = check_split_arrays(arrays, f"{path}[{split}]")
        if any(nonfinite.values()):
            logger.info("%s: set %s non-finite feature values to 0", path, nonfinite)
        self.nonfinite = nonfinite
        finite = torch.isfinite(scores)
        self._skipped: list[SkippedSample] = []
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten().tolist()
            message = f"{path}[{split}]: sample {bad[0]} has a non-finite sentiment score ({len(bad)} such samples)"
            if on_error == "raise":
                raise DataFileError(path, message.split(": ", 1)[1])
            self._skipped = [SkippedSample(i, str(i), "corrupt", message) for i in bad]
        labels, keep = score_labels(torch.nan_to_num(scores), label_rule)
        keep &= finite
        self.excluded = int((~keep).sum()) - len(self._skipped)
        if self.excluded:
            logger.info("%s: %d samples with score 0 excluded by label_rule=%s", path, self.excluded, label_rule)
        index = torch.nonzero(keep).flatten()
        if index.numel() == 0:
            raise DataFileError(path, f"split {split!r} has no samples under label_rule={label_rule}", reason="empty")
        self.features = {m: features[m][index] for m in self.modalities}
        self.labels = labels[index]
        self.scores = scores[index]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], int]:
        return {m: self.features[m][index] for m in self.modalities}, int(self.labels[index])

    def set_epoch(self, epoch: int) -> None:
        """Accepted for a uniform interface; MOSEI samples involve no randomness."""

    @property
    def skipped(self) -> list[SkippedSample]:
        """Samples left out because their score is not finite (``on_error="skip"``)."""
        return list(self._skipped)

    def report_skipped(self) -> list[SkippedSample]:
        """Return, log and clear the skipped samples."""
        found, self._skipped = self._skipped, []
        if found:
            logger.warning("%s: skipped %d samples; first: %s", self.source, len(found), found[0].message)
        return found


def _load_npz(path: Path) -> dict[str, Any]:
    np = require("numpy")
    if not path.is_file():
        raise MissingFileError(path, "prepared MOSEI split (run 'modbalance prep mosei')")
    try:
        with np.load(path, allow_pickle=False) as handle:
            return {key: handle[key] for key in handle.files}
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise DataFileError(path, f"cannot read npz ({type(error).__name__}: {error})") from error
