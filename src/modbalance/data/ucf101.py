"""UCF-101 (RGB + optical flow, 101 classes): loader for our prepared format and the twostream layout.

Per sample: ``{"visual": (3, frames, S, S) RGB normalised with ImageNet statistics,
"flow": (2, frames, S, S) u/v in [0, 1]}`` (``flow_channels=3``: [u, v, u]). A horizontal flip mirrors
u and v together and negates u (BalanceBenchmark's ``ucf101_dataset.py`` flips them independently, u unnegated).

Layouts (option ``layout``):

* ``"modbalance"``: ``frames/<v_name>/``, ``flow/u/<v_name>/``, ``flow/v/<v_name>/``, ``splits/``
  (written by ``modbalance prep ucf101``).
* ``"twostream"``: community folders (BalanceBench's ``visual_path`` / ``flow_path_u`` / ``flow_path_v``,
  the twostreamfusion release names by default: ``jpegs_256/``, ``tvl1_flow/u/``, ``tvl1_flow/v/``) and
  the official ``ucfTrainTestlist/`` (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``).

Class order (option ``label_order``): ``"sorted"`` (BalanceBench: sorted class names) or
``"classind"`` (``classInd.txt`` index − 1). ``prep`` stores both in the manifest.
"""

from __future__ import annotations

import os
from pathlib import Path

from modbalance.data import layout as lay
from modbalance.data._common import (
    check_common,
    flow_transform,
    image_transform,
    map_labels,
    parse_modalities,
    resolve_train,
)
from modbalance.data.base import ClipDataset, ClipRecord, check_choice
from modbalance.data.errors import DataFileError
from modbalance.data.splits import read_prepared_split, read_rows

PathLike = str | os.PathLike[str]

UCF_LAYOUTS: tuple[str, ...] = ("modbalance", "twostream")
UCF_SPLITS: tuple[str, ...] = ("train", "test")
UCF_NUM_CLASSES = 101


def read_class_index(path: PathLike) -> list[str]:
    """``classInd.txt`` (``1 ApplyEyeMakeup`` rows) as class names in index order.

    Raises:
        MissingFileError: the file does not exist.
        DataFileError: a row is not ``<index> <name>`` or the indices are not 1..N in order.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "classInd.txt")
        >>> _ = open(path, "w").write("1 ApplyEyeMakeup\\r\\n2 ApplyLipstick\\r\\n")
        >>> read_class_index(path)
        ['ApplyEyeMakeup', 'ApplyLipstick']
    """
    names = []
    for number, row in enumerate(read_rows(path, " "), start=1):
        if len(row) != 2 or row[0] != str(number):
            raise DataFileError(path, f"row {number}: expected '{number} ClassName', got {row}")
        names.append(row[1])
    return names


def read_ucf_list(
    list_dir: PathLike, split: str, split_id: int, classind: list[str]
) -> tuple[Path, list[tuple[str, str]]]:
    """The ``(v_name, class_name)`` rows of ``trainlist0N.txt`` / ``testlist0N.txt``.

    The class is the folder part of each path (``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi``), matched
    case-insensitively against ``classInd.txt``; a train row's label index must agree with it.

    Raises:
        ValueError: ``split_id`` is not 1, 2 or 3.
        MissingFileError: the list does not exist.
        DataFileError: a row's class is unknown or disagrees with its label index.
    """
    if split_id not in (1, 2, 3):
        raise ValueError(f"split_id must be 1, 2 or 3, got {split_id}")
    path = Path(list_dir) / f"{split}list0{split_id}.txt"
    by_lower = {name.lower(): name for name in classind}
    rows = []
    for number, row in enumerate(read_rows(path, " "), start=1):
        video = row[0].replace("\\", "/")
        folder, _, file_name = video.rpartition("/")
        name = Path(file_name).stem
        class_name = by_lower.get(folder.lower()) or by_lower.get(name.split("_")[1].lower() if "_" in name else "")
        if class_name is None:
            raise DataFileError(path, f"row {number}: class of {video!r} is not in classInd.txt")
        if len(row) > 1 and row[1] != str(classind.index(class_name) + 1):
            raise DataFileError(path, f"row {number}: label {row[1]} does not match class {class_name!r}")
        rows.append((name, class_name))
    return path, rows


class UCF101(ClipDataset):
    """UCF-101 clips as ``({"visual": (3, T, S, S), "flow": (2, T, S, S)}, label)``.

    Args:
        root: the dataset folder.
        split: ``"train"`` or ``"test"``.
        layout: ``"modbalance"`` or ``"twostream"``.
        split_id: the official split (1, 2 or 3) for ``"twostream"``.
        frames: frames per clip (3).
        frame_sampling: ``"segment"``, ``"first"``, ``"balancebench"`` or ``"ends"``.
        image_size: side of the frames (224).
        crop: ``"per_clip"`` or ``"per_frame"``.
        crop_scale_min: lower area bound of the RGB random crop.
        eval_resize: ``"square"`` or ``"short_center"``.
        flow_channels: 2 ([u, v], BalanceBench) or 3 ([u, v, u], TPAMI maintainer).
        label_order: ``"sorted"`` or ``"classind"``.
        modalities: ``"visual,flow"`` or a subset.
        train: force train/eval behaviour.
        seed: base seed of the per-sample generators.
        on_error: ``"raise"`` or ``"skip"``.
        list_dir: ``ucfTrainTestlist`` folder for ``"twostream"``.
        visual_dir: RGB frame folder for ``"twostream"``.
        flow_u_dir: horizontal-flow folder for ``"twostream"``.
        flow_v_dir: vertical-flow folder for ``"twostream"``.
        check_files: check that every listed folder exists at construction.

    Example:
        >>> UCF101("/nonexistent", "train")  # run `modbalance prep` first; the error names the missing file
        Traceback (most recent call last):
        ...
        modbalance.data.errors.MissingFileError: /nonexistent/classes.txt: file not found (class list ...
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        *,
        layout: str = "modbalance",
        split_id: int = 1,
        frames: int = 3,
        frame_sampling: str = "segment",
        image_size: int = 224,
        crop: str = "per_clip",
        crop_scale_min: float = 0.08,
        eval_resize: str = "square",
        flow_channels: int = 2,
        label_order: str = "sorted",
        modalities: str = "visual,flow",
        train: bool | None = None,
        seed: int = 0,
        on_error: str = "raise",
        list_dir: str = "ucfTrainTestlist",
        visual_dir: str = "jpegs_256",
        flow_u_dir: str = "tvl1_flow/u",
        flow_v_dir: str = "tvl1_flow/v",
        check_files: bool = True,
    ) -> None:
        check_common(split, UCF_SPLITS, on_error, frame_sampling, crop)
        check_choice("layout", layout, UCF_LAYOUTS)
        check_choice("label_order", label_order, ("sorted", "classind"))
        check_choice("flow_channels", flow_channels, (2, 3))
        root = Path(root)
        is_train = resolve_train(split, train)
        if layout == "modbalance":
            manifest_order = lay.read_manifest(root).get("classind_order") if label_order == "classind" else None
            classes = list(manifest_order) if manifest_order else lay.read_classes(root)  # type: ignore[call-overload]
            list_path = lay.split_file(root, split)
            rows = read_prepared_split(list_path)
            visual_root, u_root, v_root = root / "frames", root / "flow" / "u", root / "flow" / "v"
        else:
            classind = read_class_index(root / list_dir / "classInd.txt")
            classes = classind if label_order == "classind" else sorted(classind)
            list_path, rows = read_ucf_list(root / list_dir, split, split_id, classind)
            visual_root, u_root, v_root = root / visual_dir, root / flow_u_dir, root / flow_v_dir
        labelled, skipped = map_labels(rows, classes, list_path, on_error)
        records = [
            ClipRecord(n, y, visual=str(visual_root / n), flow_u=str(u_root / n), flow_v=str(v_root / n))
            for n, y in labelled
        ]
        super().__init__(
            records,
            classes,
            modalities=parse_modalities(modalities, ("visual", "flow")),
            train=is_train,
            seed=seed,
            on_error=on_error,
            frames=frames,
            frame_sampling=frame_sampling,
            image=image_transform(is_train, image_size, crop, crop_scale_min, eval_resize),
            flow=flow_transform(is_train, image_size, crop, flow_channels),
            check_files=check_files,
            skipped=skipped,
            source=str(list_path),
        )
