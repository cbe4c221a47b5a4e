"""The shared machinery of the benchmark loaders: records, per-sample seeding, bad-input policy.

A :class:`ClipDataset` holds one :class:`ClipRecord` per clip (paths + integer label) and reads the
modalities it was asked for:

* ``"audio"``: a stored spectrogram (``.npy``/``.pt``/``.pkl``, checked against the expected shape) or a
  waveform (``.wav``) turned into one by a recipe of :mod:`modbalance.data.spectrogram`; (1, F, T).
* ``"visual"``: frames from a folder of JPEGs (sorted by name) or an HDF5 clip; (3, T, H, W).
* ``"flow"``: u/v grayscale JPEG folders; (2, T, H, W) (or 3 channels as [u, v, u]).

Bad input: with ``on_error="raise"`` (default) a bad sample raises an error naming its file. With
``on_error="skip"`` the sample is replaced by the next readable one, and the failure is recorded in a
shared-memory table that DataLoader workers write to, so :meth:`ClipDataset.report_skipped` in the main
process sees skips from every worker. Files missing at construction time (and unknown labels) are
handled the same way: raised, or dropped and reported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from modbalance.data import media
from modbalance.data.errors import SKIP_REASONS, DataFileError, MissingFileError, skip_reason
from modbalance.data.sampling import frame_indices, sample_generator
from modbalance.data.spectrogram import a1p_spectrogram, get_recipe
from modbalance.data.transforms import ClipTransform, FlowTransform

logger = logging.getLogger(__name__)

#: Values of the ``on_error`` option.
ON_ERROR: tuple[str, ...] = ("raise", "skip")
#: How many following samples are tried in place of a bad one before giving up.
MAX_SUBSTITUTES = 16


@dataclass(frozen=True)
class ClipRecord:
    """One clip: its name, integer label and the files of each modality (``None`` if not used).

    Attributes:
        name: the clip id (e.g. ``1001_DFA_ANG_XX``).
        label: the class index under the dataset's class order.
        audio: a spectrogram array file or a WAV file.
        visual: a folder of frame images or an HDF5 clip.
        flow_u: the folder of horizontal-flow images.
        flow_v: the folder of vertical-flow images.
    """

    name: str
    label: int
    audio: str | None = None
    visual: str | None = None
    flow_u: str | None = None
    flow_v: str | None = None


class SkippedSample(NamedTuple):
    """A sample that was skipped: its index (−1 if dropped while reading the split), name, reason, message."""

    sample: int
    name: str
    reason: str
    message: str


@dataclass(frozen=True)
class AudioSpec:
    """How the audio modality is read.

    Attributes:
        recipe: the recipe id; for WAV input it is computed on the fly, for arrays it names the shape.
        shape: the expected (F, T) / (T, F) of the stored array; ``None`` skips the check.
        crop: if set, crop this many columns of the last axis (train: random, eval: centred) — the
            a1p 5-s window, taken from a stored 10-s spectrogram.
    """

    recipe: str
    shape: tuple[int, int] | None = None
    crop: int | None = None


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise a ValueError naming the option and the valid values if ``value`` is not one of ``choices``.

    Example:
        >>> check_choice("on_error", "skip", ON_ERROR)
        >>> check_choice("on_error", "ignore", ON_ERROR)
        Traceback (most recent call last):
        ...
        ValueError: on_error must be one of 'raise', 'skip'; got 'ignore'
    """
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {valid}; got {value!r}")


class ClipDataset(Dataset[tuple[dict[str, Tensor], int]]):
    """A map-style dataset of clips yielding ``({modality: tensor}, label)``.

    Args:
        records: the clips.
        classes: class names; ``classes[label]`` names a record's label.
        modalities: which modalities to read, a subset of ``("audio", "visual", "flow")``.
        train: random frame choice/crops/audio crops (seeded) instead of deterministic ones.
        seed: base seed of the per-sample generators.
        on_error: ``"raise"`` or ``"skip"``.
        audio: how to read audio (required if ``"audio"`` is a modality).
        frames: frames per clip for visual and flow.
        frame_sampling: rule of :func:`~modbalance.data.sampling.frame_indices`.
        image: the RGB transform.
        flow: the flow transform.
        check_files: check at construction that every listed file exists.
        skipped: problems already found while building ``records`` (unknown labels, ...); raised at once
            with ``on_error="raise"``.
        dropped: rows left out by a documented rule whatever ``on_error`` (AVE's two-event videos);
            reported by :meth:`report_skipped` like skips.
        source: the split list, for messages.

    Example:
        >>> import numpy as np, tempfile, os
        >>> root = tempfile.mkdtemp()
        >>> media.save_array(os.path.join(root, "a.npy"), np.zeros((257, 188), dtype=np.float32))
        >>> ds = ClipDataset([ClipRecord("a", 0, audio=os.path.join(root, "a.npy"))], ["x"],
        ...                  modalities=("audio",), audio=AudioSpec("a1", (257, 188)))
        >>> inputs, target = ds[0]
        >>> inputs["audio"].shape, target
        (torch.Size([1, 257, 188]), 0)
    """

    def __init__(
        self,
        records: Sequence[ClipRecord],
        classes: Sequence[str],
        *,
        modalities: Sequence[str],
        train: bool = False,
        seed: int = 0,
        on_error: str = "raise",
        audio: AudioSpec | None = None,
        frames: int = 1,
        frame_sampling: str = "segment",
        image: ClipTransform | None = None,
        flow: FlowTransform | None = None,
        check_files: bool = True,
        skipped: Sequence[SkippedSample] = (),
        dropped: Sequence[SkippedSample] = (),
        source: str = "",
    ) -> None:
        check_choice("on_error", on_error, ON_ERROR)
        for modality in modalities:
            check_choice("modality", modality, ("audio", "visual", "flow"))
        if "audio" in modalities and audio is None:
            raise ValueError("reading audio needs an AudioSpec")
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.classes = list(classes)
        self.modalities = tuple(modalities)
        self.train = bool(train)
        self.seed = int(seed)
        self.epoch = 0
        self.on_error = on_error
        self.audio = audio
        self.frames = int(frames)
        self.frame_sampling = frame_sampling
        self.image = image or ClipTransform(train=self.train)
        self.flow = flow or FlowTransform(train=self.train)
        self.source = source
        if skipped and on_error == "raise":
            raise ValueError(skipped[0].message)
        self._early: list[SkippedSample] = list(dropped) + list(skipped)
        records = list(records)
        if check_files:
            records = self._check_files(records)
        if not records:
            raise ValueError(f"no samples in {source or 'the split'} (the split is empty{self._early_note()})")
        self.records = records
        # One reason code per sample, in shared memory so that DataLoader workers' skips reach us.
        self._codes = torch.zeros(len(records), dtype=torch.int8)
        self._codes.share_memory_()
        self._messages: dict[int, str] = {}
        self._substitutes: torch.Tensor | None = None

    def restrict_substitutes(self, indices: torch.Tensor | Sequence[int]) -> None:
        """Let only these samples stand in for a skipped one.

        When one list is split into train and held-out validation rows, each part restricts the
        substitutes to its own rows, so a skipped training sample is never replaced by a
        validation sample (or the other way round).

        Example:
            >>> import numpy as np, tempfile, os
            >>> root = tempfile.mkdtemp()
            >>> for name, value in (("a", 0.0), ("b", 1.0), ("c", 2.0)):
            ...     media.save_array(os.path.join(root, name + ".npy"), np.full((257, 188), value, np.float32))
            >>> records = [ClipRecord(n, 0, audio=os.path.join(root, n + ".npy")) for n in "abc"]
            >>> ds = ClipDataset(records, ["x"], modalities=("audio",), audio=AudioSpec("a1", (257, 188)),
            ...                  on_error="skip")
            >>> os.remove(os.path.join(root, "a.npy"))  # sample 0 becomes unreadable
            >>> ds.restrict_substitutes([0, 2])           # "b" belongs to another part of the list
            >>> float(ds[0][0]["audio"].mean())           # stood in for by "c", not "b"
            2.0
        """
        mask = torch.zeros(len(self.records), dtype=torch.bool)
        mask[torch.as_tensor(indices, dtype=torch.long)] = True
        self._substitutes = mask

    # ---------------------------------------------------------------------------------------------------------
    def _early_note(self) -> str:
        return f"; {len(self._early)} rows were skipped" if self._early else ""

    def _paths(self, record: ClipRecord) -> list[str]:
        wanted = {"audio": [record.audio], "visual": [record.visual], "flow": [record.flow_u, record.flow_v]}
        return [p for m in self.modalities for p in wanted[m] if p is not None]

    def _check_files(self, records: list[ClipRecord]) -> list[ClipRecord]:
        from pathlib import Path

        kept = []
        for record in records:
            missing = [p for p in self._paths(record) if not Path(p).exists()]
            if not missing:
                kept.append(record)
                continue
            error = MissingFileError(missing[0], f"clip {record.name!r} of {self.source or 'the split'}")
            if self.on_error == "raise":
                raise error
            self._early.append(SkippedSample(-1, record.name, "missing", str(error)))
        return kept

    # ---------------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the train-time draws (call once per epoch, before iterating)."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        """The generator of sample ``index`` in the current epoch (depends on seed, epoch and index only)."""
        return sample_generator(self.seed, self.epoch, index)

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], int]:
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} samples")
        try:
            return self.load(index)
        except (DataFileError, FileNotFoundError) as error:
            if self.on_error == "raise":
                raise
            self._record_failure(index, error)
        tried = 0
        for step in range(1, len(self.records)):
            if tried == MAX_SUBSTITUTES:
                break
            other = (index + step) % len(self.records)
            if self._substitutes is not None and not self._substitutes[other]:
                continue  # another part of the list (held-out validation): neither a stand-in nor counted
            tried += 1
            if int(self._codes[other]) != 0:
                continue
            try:
                return self.load(other)
            except (DataFileError, FileNotFoundError) as error:
                self._record_failure(other, error)
        part = " of its part of the list" if self._substitutes is not None else ""
        raise DataFileError(
            self.records[index].name,
            f"sample {index} and the {tried} samples{part} after it could not be read",
        )

    def _record_failure(self, index: int, error: BaseException) -> None:
        self._codes[index] = SKIP_REASONS.index(skip_reason(error)) + 1
        self._messages[index] = str(error)
        logger.debug("skipping sample %d: %s", index, error)

    @property
    def skipped(self) -> list[SkippedSample]:
        """Every sample skipped so far (construction-time problems and load failures from all workers)."""
        found = list(self._early)
        for index in torch.nonzero(self._codes).flatten().tolist():
            message = self._messages.get(index)
            if message is None:  # failed in a worker process: read it again here to get the message
                try:
                    self.load(index)
                    message = "failed in a worker, readable now"
                except (DataFileError, FileNotFoundError) as error:
                    message = str(error)
            reason = SKIP_REASONS[int(self._codes[index]) - 1]
            found.append(SkippedSample(index, self.records[index].name, reason, message))
        return found

    def report_skipped(self) -> list[SkippedSample]:
        """Return the skipped samples, log a one-line summary per reason, and clear the record.

        The trainer calls this at the end of each epoch; skipping is never silent.
        """
        found = self.skipped
        if found:
            counts: dict[str, int] = {}
            for item in found:
                counts[item.reason] = counts.get(item.reason, 0) + 1
            summary = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
            logger.warning(
                "%s: skipped %d samples (%s); first: %s",
                self.source or "dataset",
                len(found),
                summary,
                found[0].message,
            )
        self._early.clear()
        self._codes.zero_()
        self._messages.clear()
        return found

    # ---------------------------------------------------------------------------------------------------------
    def load(self, index: int) -> tuple[dict[str, Tensor], int]:
        """Read sample ``index`` without the skip policy (errors propagate)."""
        record = self.records[index]
        generator = self.generator(index) if self.train else None
        inputs: dict[str, Tensor] = {}
        chosen: list[int] | None = None
        for modality in self.modalities:
            if modality == "audio":
                inputs["audio"] = self._load_audio(record, generator)
            elif modality == "visual":
                inputs["visual"], chosen = self._load_visual(record, generator)
            else:
                inputs["flow"] = self._load_flow(record, generator, chosen)
        return inputs, record.label

    def _load_audio(self, record: ClipRecord, generator: torch.Generator | None) -> Tensor:
        assert self.audio is not None and record.audio is not None
        spec = self.audio
        path = record.audio
        if path.lower().endswith((".npy", ".pt", ".pkl", ".pickle")):
            array = torch.from_numpy(media.read_array(path))
            if spec.shape is not None:
                expected = spec.shape
                ok = array.shape == expected or (
                    spec.crop is not None and array.shape[0] == expected[0] and array.shape[1] >= spec.crop
                )
                if not ok:
                    raise DataFileError(
                        path,
                        f"spectrogram shape {tuple(array.shape)}, expected {expected} (recipe {spec.recipe})",
                        reason="bad_shape",
                    )
            if spec.crop is not None:
                array = self._crop_columns(array, spec.crop, generator)
        else:
            recipe = get_recipe(spec.recipe)
            if path.lower().endswith((".wav", ".flac", ".ogg")):
                wave, _ = media.read_wav(path, recipe.sample_rate)
            else:
                wave = media.read_video_audio(path, recipe.sample_rate)
            if spec.recipe == "a1p" and spec.crop is not None:
                # OGM-GE VGGSound: crop 5 s of the tiled waveform (random in train, centred at eval).
                limit = 5 * 16000
                start = int(torch.randint(0, limit + 1, (1,), generator=generator)) if generator else limit // 2
                array = a1p_spectrogram(torch.from_numpy(wave), start=start)
            else:
                array = recipe.fn(torch.from_numpy(wave))
        return array.unsqueeze(0).float()

    def _crop_columns(self, array: Tensor, width: int, generator: torch.Generator | None) -> Tensor:
        extra = array.shape[-1] - width
        random = generator is not None
        start = int(torch.randint(0, extra + 1, (1,), generator=generator)) if random else extra // 2
        return array[..., start : start + width]

    def _frame_sources(self, folder_or_file: str) -> tuple[list[Any], bool]:
        if folder_or_file.lower().endswith((".hdf5", ".h5")):
            return list(media.read_hdf5_frames(folder_or_file)), True
        return list(media.list_images(folder_or_file)), False

    def _load_visual(self, record: ClipRecord, generator: torch.Generator | None) -> tuple[Tensor, list[int]]:
        assert record.visual is not None
        sources, from_hdf5 = self._frame_sources(record.visual)
        chosen = frame_indices(
            len(sources), self.frames, train=self.train, generator=generator, rule=self.frame_sampling
        )
        if from_hdf5:
            images = [media.decode_image(sources[i], f"{record.visual}[{i}]") for i in chosen]
        else:
            images = [media.read_image(sources[i]) for i in chosen]
        sizes = {image.size for image in images}
        if len(sizes) > 1:
            raise DataFileError(record.visual, f"frames of different sizes {sorted(sizes)}", reason="bad_shape")
        return self.image(images, generator), chosen

    def _load_flow(self, record: ClipRecord, generator: torch.Generator | None, chosen: list[int] | None) -> Tensor:
        assert record.flow_u is not None and record.flow_v is not None
        u_files, v_files = media.list_images(record.flow_u), media.list_images(record.flow_v)
        if len(u_files) != len(v_files):
            raise DataFileError(
                record.flow_u,
                f"{len(u_files)} u frames but {len(v_files)} v frames in {record.flow_v}",
                reason="bad_shape",
            )
        if chosen is None or max(chosen) >= len(u_files):
            chosen = frame_indices(
                len(u_files), self.frames, train=self.train, generator=generator, rule=self.frame_sampling
            )
        u_images = [media.read_image(u_files[i], "L") for i in chosen]
        v_images = [media.read_image(v_files[i], "L") for i in chosen]
        return self.flow(u_images, v_images, generator)
