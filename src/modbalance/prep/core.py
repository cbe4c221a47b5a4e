"""The preparation engine: per-clip jobs run in parallel, resumably, with a manifest of what happened.

A dataset-specific *preparer* (see :mod:`modbalance.prep.datasets`) turns the raw release into a
:class:`Listing`: one :class:`Job` per clip to prepare, the split lists, the class order, and the rows it
had to skip already (missing files, unknown labels, empty splits). :func:`run_prep` then

1. skips every job whose outputs all exist (outputs are written atomically, so existing means complete);
2. runs the rest in a process pool (``workers > 1``) or in this process, with a progress bar;
3. writes ``splits/<split>.csv`` (only clips that are ready), ``classes.txt`` and ``manifest.json``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from modbalance.data import layout as lay
from modbalance.data import media
from modbalance.data.errors import DataFileError, skip_reason
from modbalance.data.spectrogram import compute_spectrogram, get_recipe
from modbalance.data.splits import write_split

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: "Enough" of a clip: its decoded audio must cover this share of the duration its header declares, and
#: its decoded frames this share of the frames the declared video duration gives at ``--fps`` (capped by
#: ``--max-frames``); a clip with less is truncated, skipped and recorded in the manifest
#: (docs/datasets.md). Every recipe is held to it, since tiling (a1, a1p) would hide a cut-short clip.
ENOUGH = 0.9


@dataclass(frozen=True)
class PrepOptions:
    """What to compute for each clip.

    Attributes:
        recipes: audio recipes to store (``audio_<recipe>/<name>.npy``); empty for none.
        fps: frames kept per second of video.
        frame_position: ``"first"`` or ``"middle"`` frame of each 1/fps interval.
        frame_size: resize frames so the short side is this many pixels (0 keeps the size).
        jpeg_quality: JPEG quality of the frames.
        frames: store RGB frames.
        flow: store optical flow (u/v) for each kept frame and the frame after it.
        flow_max_side: flow is estimated with the longer side downscaled to this.
        max_frames: keep at most this many frames per clip (0: all).
    """

    recipes: tuple[str, ...] = ()
    fps: float = 1.0
    frame_position: str = "first"
    frame_size: int = 0
    jpeg_quality: int = 95
    frames: bool = True
    flow: bool = False
    flow_max_side: int = 160
    max_frames: int = 0


@dataclass(frozen=True)
class Job:
    """One clip to prepare.

    Attributes:
        name: the clip id (output file and folder name).
        video: the source video, if frames or flow are wanted or audio comes from it.
        audio: a separate audio file (WAV), else audio is decoded from ``video``.
    """

    name: str
    video: str | None = None
    audio: str | None = None


@dataclass
class Listing:
    """What a preparer found in the raw release.

    Attributes:
        jobs: one per unique clip.
        splits: split name -> ``(clip name, class name)`` rows, in list order.
        classes: the class order.
        skipped: rows skipped before processing, as manifest entries.
        extra: dataset-specific manifest fields (e.g. the UCF-101 class mapping).
    """

    jobs: list[Job]
    splits: dict[str, list[tuple[str, str]]]
    classes: list[str]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def skip_entry(
    name: str | None, reason: str, message: str, split: str | None = None, file: str | None = None
) -> dict[str, Any]:
    """A manifest record of one skipped clip or split.

    Example:
        >>> skip_entry("a", "missing", "AudioWAV/a.wav: file not found", split="train")["reason"]
        'missing'
    """
    return {"name": name, "split": split, "file": file, "reason": reason, "message": message}


def job_outputs(job: Job, out: Path, options: PrepOptions) -> list[Path]:
    """The files and folders that exist once ``job`` is done."""
    paths = [lay.audio_file(out, recipe, job.name) for recipe in options.recipes]
    if options.frames:
        paths.append(lay.frames_dir(out, job.name))
    if options.flow:
        paths.extend(lay.flow_dirs(out, job.name))
    return paths


def process_job(job: Job, out: PathLike, options: PrepOptions) -> dict[str, Any]:
    """Prepare one clip (only the outputs that do not exist yet).

    Returns:
        ``{"name", "frames"}``: the clip name and the number of frames written (0 if none).

    Raises:
        DataFileError, FileNotFoundError: the clip's media cannot be used; nothing is left half-written.
    """
    out = Path(out)
    waves: dict[int, Any] = {}
    for recipe_name in options.recipes:
        target = lay.audio_file(out, recipe_name, job.name)
        if target.exists():
            continue
        recipe = get_recipe(recipe_name)
        if recipe.sample_rate not in waves:
            if job.audio is not None:
                waves[recipe.sample_rate] = media.read_wav(job.audio, recipe.sample_rate)[0]
            elif job.video is not None:
                waves[recipe.sample_rate] = media.read_video_audio(job.video, recipe.sample_rate)
            else:
                raise ValueError(f"job {job.name!r} has no audio source")
        _check_enough_audio(job, waves[recipe.sample_rate], recipe.sample_rate, recipe_name)
        spec = compute_spectrogram(recipe_name, waves[recipe.sample_rate])
        if tuple(spec.shape) != recipe.shape:
            source = job.audio or job.video
            raise DataFileError(
                str(source),
                f"recipe {recipe_name} gave shape {tuple(spec.shape)}, expected {recipe.shape}",
                reason="bad_shape",
            )
        media.save_array(target, spec.numpy())
    written = 0
    frames_done = not options.frames or lay.frames_dir(out, job.name).exists()
    flow_done = not options.flow or all(p.exists() for p in lay.flow_dirs(out, job.name))
    if not (frames_done and flow_done):
        if job.video is None:
            raise ValueError(f"job {job.name!r} has no video")
        frames, following = media.sample_video_frames(
            job.video,
            options.fps,
            options.frame_position,
            with_next=options.flow,
            max_frames=options.max_frames or None,
        )
        _check_enough_frames(job.video, len(frames), options)
        if not frames_done:
            with media.atomic_directory(lay.frames_dir(out, job.name)) as folder:
                for index, frame in enumerate(frames):
                    media.save_jpeg(
                        folder / lay.frame_name(index), _resize(frame, options.frame_size), options.jpeg_quality
                    )
        if not flow_done:
            _write_flow(out, job.name, frames, following, options)
        written = len(frames)
    return {"name": job.name, "frames": written}


def _check_enough_audio(job: Job, wave: Any, rate: int, recipe: str) -> None:
    """Refuse audio that covers less than :data:`ENOUGH` of its declared duration (a truncated file)."""
    source = job.audio if job.audio is not None else job.video
    declared = media.declared_seconds(source, "audio") if source is not None else None
    decoded = len(wave) / rate
    if declared and decoded < ENOUGH * declared:
        raise DataFileError(
            str(source),
            f"truncated: {decoded:.3f} s of audio decoded of the {declared:.3f} s the file declares "
            f"(recipe {recipe} needs {ENOUGH:.0%}; it would tile the rest)",
        )


def _check_enough_frames(video: str, count: int, options: PrepOptions) -> None:
    """Refuse a video that decodes to fewer than :data:`ENOUGH` of the frames its declared duration gives."""
    declared = media.declared_seconds(video, "video")
    if not declared:
        return
    expected = int(ENOUGH * declared * options.fps)
    if options.max_frames:
        expected = min(expected, options.max_frames)
    if count < expected:
        raise DataFileError(
            video,
            f"truncated: {count} frame(s) decoded at {options.fps:g} fps, the declared {declared:.2f} s give "
            f"{declared * options.fps:.0f} (prep needs {ENOUGH:.0%})",
        )


def _resize(frame: Any, short_side: int) -> Any:
    if short_side <= 0:
        return frame
    from modbalance.data._deps import require

    np = require("numpy")
    pil = require("PIL.Image")
    height, width = frame.shape[:2]
    scale = short_side / min(height, width)
    image = pil.fromarray(frame).resize((round(width * scale), round(height * scale)), pil.Resampling.BILINEAR)
    return np.asarray(image)


def _write_flow(out: Path, name: str, frames: Sequence[Any], following: Sequence[Any], options: PrepOptions) -> None:
    from modbalance.prep.flow import flow_to_uint8, horn_schunck, to_gray

    u_dir, v_dir = lay.flow_dirs(out, name)
    with media.atomic_directory(u_dir) as u_tmp, media.atomic_directory(v_dir) as v_tmp:
        for index, (first, second) in enumerate(zip(frames, following, strict=True)):
            a, b = to_gray(torch.from_numpy(first)), to_gray(torch.from_numpy(second))
            u, v = horn_schunck(a, b, max_side=options.flow_max_side)
            u8, v8 = flow_to_uint8(u).numpy(), flow_to_uint8(v).numpy()
            media.save_jpeg(u_tmp / lay.flow_frame_name(index), _resize(u8, options.frame_size), options.jpeg_quality)
            media.save_jpeg(v_tmp / lay.flow_frame_name(index), _resize(v8, options.frame_size), options.jpeg_quality)


#: Worker start method: "fork" on Linux (no re-import of torch per worker; the parent has run no parallel
#: torch code while listing), "spawn" elsewhere (macOS and Windows cannot fork safely).
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


def _worker_init() -> None:
    torch.set_num_threads(1)


def _safe_process(job: Job, out: str, options: PrepOptions) -> dict[str, Any]:
    """Run one job; return its result or a manifest skip entry (never raise, so the pool keeps going)."""
    try:
        return {"ok": True, **process_job(job, out, options)}
    except (DataFileError, FileNotFoundError) as error:
        return {"ok": False, **skip_entry(job.name, skip_reason(error), str(error), file=getattr(error, "path", None))}
    except Exception as error:  # a bug or an unexpected library failure: record it loudly, keep the others
        logger.exception("unexpected failure preparing %s", job.name)
        return {
            "ok": False,
            **skip_entry(
                job.name, "corrupt", f"unexpected {type(error).__name__}: {error}", file=job.video or job.audio
            ),
        }


def run_prep(
    dataset: str,
    listing: Listing,
    out: PathLike,
    options: PrepOptions,
    *,
    workers: int = 0,
    raw: PathLike | None = None,
    parameters: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Prepare every job of ``listing`` into ``out`` and write the splits, class list and manifest.

    Args:
        dataset: the dataset name (for the manifest).
        listing: what the preparer found.
        out: the output root.
        options: what to compute per clip.
        workers: processes to use; 0 or 1 runs in this process.
        raw: the raw release folder (for the manifest).
        parameters: dataset-specific parameters to record.
        progress: show a progress bar (``None``: only when stderr is a terminal).

    Returns:
        The manifest (also written to ``<out>/manifest.json``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    done_before = [job for job in listing.jobs if all(p.exists() for p in job_outputs(job, out, options))]
    finished = {job.name for job in done_before}
    pending = [job for job in listing.jobs if job.name not in finished]
    failures: list[dict[str, Any]] = []
    prepared: set[str] = set(finished)
    total_frames = 0
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    with _progress_bar(len(pending), f"prep {dataset}", disable) as bar:
        if workers > 1 and len(pending) > 1:
            context = get_context(_START_METHOD)
            with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
                futures = [pool.submit(_safe_process, job, str(out), options) for job in pending]
                for future in as_completed(futures):
                    total_frames += _collect(future.result(), prepared, failures)
                    bar.update(1)
        else:
            for job in pending:
                total_frames += _collect(_safe_process(job, str(out), options), prepared, failures)
                bar.update(1)
    skipped = list(listing.skipped) + sorted(failures, key=lambda e: str(e["name"]))
    failed_names = {str(entry["name"]) for entry in failures}
    split_counts: dict[str, dict[str, int]] = {}
    for split, rows in listing.splits.items():
        ready = [(name, label) for name, label in rows if name in prepared]
        write_split(lay.split_file(out, split), ready)
        split_counts[split] = {
            "listed": len(rows),
            "ready": len(ready),
            "failed": sum(1 for n, _ in rows if n in failed_names),
        }
    (out / lay.CLASSES).write_text("".join(f"{name}\n" for name in listing.classes), encoding="utf-8")
    reasons: dict[str, int] = {}
    for entry in skipped:
        reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
    manifest = {
        "dataset": dataset,
        "format": "modbalance-prepared-v1",
        "raw": str(raw) if raw is not None else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - started, 3),
        "workers": workers,
        "options": {**asdict(options), "recipes": list(options.recipes)},
        "parameters": parameters or {},
        "classes": listing.classes,
        "counts": {
            "clips": len(listing.jobs),
            "prepared": len(prepared),
            "already_done": len(done_before),
            "newly_prepared": len(prepared) - len(done_before),
            "failed": len(failures),
            "skipped": len(skipped),
            "skipped_by_reason": reasons,
            "frames_written": total_frames,
            "splits": split_counts,
        },
        "skipped": skipped,
        **listing.extra,
    }
    with media._atomic_path(out / lay.MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    if skipped:
        logger.warning(
            "prep %s: %d clips or rows skipped (%s); see %s", dataset, len(skipped), reasons, out / lay.MANIFEST
        )
    return manifest


class _NoBar:
    """Stand-in for tqdm when it is not installed (tqdm ships with the ``train`` extra)."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, count: int) -> None:
        """Ignore progress."""


def _progress_bar(total: int, description: str, disable: bool) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        if not disable:
            logger.info("tqdm is not installed: no progress bar (%d clips to prepare)", total)
        return _NoBar()
    return tqdm(total=total, desc=description, unit="clip", disable=disable)


def _collect(result: dict[str, Any], prepared: set[str], failures: list[dict[str, Any]]) -> int:
    if result.pop("ok"):
        prepared.add(result["name"])
        return int(result.get("frames", 0))
    failures.append(result)
    return 0
