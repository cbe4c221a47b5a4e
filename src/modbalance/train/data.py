"""The data side of a run: build the three splits, describe them, and feed batches to the loop.

Two kinds of splits:

* **batched** (the imbalance lab, feature tables): tensors in memory; ``split[index_tensor]`` returns a whole
  collated batch, so a batch is one indexing operation, without a per-sample Python loop;
* **map-style** (benchmarks from :func:`modbalance.data.registry.build_dataset`): read through a
  ``DataLoader`` with ``batch_sampler=`` a :class:`~modbalance.train.distributed.ShardedBatchSampler`.

Either way the order of samples is the sampler's, which depends only on (seed, epoch): a resumed
or multi-process run sees the same global batches as an uninterrupted single process.

Benchmark datasets also draw their train-time frames and crops from (seed, epoch, index), so the
trainer calls :meth:`DataBundle.set_epoch` before each epoch; and they may skip unreadable samples
(``on_error: skip``), which :meth:`DataBundle.report_skipped` collects at the end of each epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from modbalance.train.config import ConfigError, ExperimentConfig
from modbalance.train.distributed import ShardedBatchSampler, seed_worker

__all__ = [
    "DataBundle",
    "IndexedSplit",
    "build_data",
    "data_modalities",
    "describe_skipped",
    "hold_out_validation",
    "iterate_batches",
    "merge_skipped",
    "skipped_record",
]

Batch = tuple[dict[str, Tensor], Tensor]


@dataclass
class DataBundle:
    """The splits of a run and what the model builder needs to know about them.

    Attributes:
        splits: ``"train"``, ``"val"``, ``"test"`` -> dataset.
        modalities: modality names of the data.
        num_classes: number of classes.
        in_dims: modality -> last input dimension (fills an encoder's ``in_dim``); may be partial.
        batched: whether ``split[index_tensor]`` returns a collated batch (in-memory data).
        extras: facts recorded in ``summary.json`` (the lab's Bayes-optimal limits).
    """

    splits: dict[str, Any]
    modalities: list[str]
    num_classes: int
    in_dims: dict[str, int] = field(default_factory=dict)
    batched: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    def batch(self, split: str, indices: list[int]) -> Batch:
        """The collated batch of ``indices`` of ``split`` (on the CPU)."""
        dataset = self.splits[split]
        if self.batched:
            inputs, target = dataset[torch.as_tensor(indices, dtype=torch.long)]
            return dict(inputs), target
        from torch.utils.data import default_collate

        inputs, target = default_collate([dataset[i] for i in indices])
        return dict(inputs), torch.as_tensor(target)

    def sample_inputs(self) -> dict[str, Tensor]:
        """Two validation samples, to size the fusion from the encoders' outputs."""
        return self.batch("val", [0, min(1, len(self.splits["val"]) - 1)])[0]

    def set_epoch(self, epoch: int) -> None:
        """Call ``set_epoch(epoch)`` on every split that has it (the seed of train-time draws)."""
        for dataset in self.splits.values():
            method = _hook(dataset, "set_epoch")
            if method is not None:
                method(epoch)

    def report_skipped(self, splits: Sequence[str] | None = None) -> dict[str, list[Any]]:
        """Split -> the samples it skipped since the last call (``SkippedSample`` tuples); the record is cleared.

        Only splits whose dataset can skip samples (it has ``report_skipped``) appear, with an empty
        list when nothing was skipped.
        """
        found: dict[str, list[Any]] = {}
        for role in splits if splits is not None else list(self.splits):
            method = _hook(self.splits[role], "report_skipped")
            if method is not None:
                found[role] = list(method())
        return found


def _hook(dataset: Any, name: str) -> Any:
    """``dataset.<name>`` if the dataset (or the one an :class:`IndexedSplit` wraps) has it, else None."""
    if isinstance(dataset, IndexedSplit):
        return getattr(dataset, name) if callable(getattr(dataset.dataset, name, None)) else None
    method = getattr(dataset, name, None)
    return method if callable(method) else None


class IndexedSplit:
    """The rows ``indices`` of a split, indexable like it (one sample, or a batch by index tensor).

    Args:
        dataset: the dataset whose rows are taken.
        indices: the row indices, a 1-D long tensor.
        reports: whether :meth:`report_skipped` reports the wrapped dataset's skips (False when
            another split reports for the same dataset object).
        report_early: whether it includes the rows dropped while the dataset was built (their
            sample index is -1); False for a second copy of a list whose first copy reports them.
    """

    def __init__(self, dataset: Any, indices: Tensor, *, reports: bool = True, report_early: bool = True) -> None:
        self.dataset = dataset
        self.indices = indices
        self.reports = reports
        self.report_early = report_early

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, Tensor):
            return self.dataset[self.indices[index]]
        return self.dataset[int(self.indices[index])]

    def set_epoch(self, epoch: int) -> None:
        """Forward to the wrapped dataset, if it has ``set_epoch``."""
        method = getattr(self.dataset, "set_epoch", None)
        if callable(method):
            method(epoch)

    def report_skipped(self) -> list[Any]:
        """The wrapped dataset's skipped samples (see ``reports`` and ``report_early``)."""
        method = getattr(self.dataset, "report_skipped", None)
        if not self.reports or not callable(method):
            return []
        found = list(method())
        return found if self.report_early else [item for item in found if item.sample >= 0]


def hold_out_validation(splits: dict[str, Any], fraction: float, eval_train: Any = None) -> dict[str, Any]:
    """Split a fixed random ``fraction`` of the train split off as the validation split.

    The permutation has a fixed seed (not the run's), so every seed of an experiment selects on
    the same validation samples, and they never appear in training.

    Args:
        splits: ``"train"`` (and others) -> dataset.
        fraction: the share of train held out, in (0, 1).
        eval_train: the same train list read with deterministic (eval) transforms; the validation
            rows are taken from it. ``None``: from ``splits["train"]`` itself (data without
            train-time randomness).

    Example:
        >>> out = hold_out_validation({"train": list(range(10)), "test": [0]}, 0.3)
        >>> len(out["train"]), len(out["val"]), set(out["val"].indices.tolist()) & set(out["train"].indices.tolist())
        (7, 3, set())
        >>> eval_copy = [f"eval {x}" for x in range(10)]
        >>> out = hold_out_validation({"train": list(range(10))}, 0.3, eval_train=eval_copy)
        >>> out["train"][0] in range(10), out["val"][0].startswith("eval")
        (True, True)
    """
    train = splits["train"]
    if eval_train is not None and len(eval_train) != len(train):
        raise ValueError(
            f"the eval copy of the train split has {len(eval_train)} samples, the train split {len(train)}"
        )
    held = max(1, round(len(train) * fraction))
    if held >= len(train):
        raise ConfigError(f"data.val_fraction={fraction} leaves no training sample out of {len(train)}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(20240601))
    separate = eval_train is not None and eval_train is not train
    if separate and hasattr(train, "restrict_substitutes"):
        # A skipped sample's stand-in must come from its own part, or validation rows leak into training.
        train.restrict_substitutes(order[held:])
        eval_train.restrict_substitutes(order[:held])
    return {
        **splits,
        "train": IndexedSplit(train, order[held:].sort().values),
        "val": IndexedSplit(
            eval_train if separate else train, order[:held].sort().values, reports=separate, report_early=False
        ),
    }


def data_modalities(config: ExperimentConfig) -> list[str]:
    """The modality names of the configured data, read without loading it (for early validation)."""
    if config.data.name == "synthetic":
        from modbalance.data.synthetic import lab_preset

        try:
            spec = lab_preset(config.data.preset)
        except (KeyError, ValueError) as error:
            raise ConfigError(f"data.preset={config.data.preset!r}: {error}") from error
        return list(spec.modalities)
    from modbalance.data.registry import dataset_info

    try:
        info = dataset_info(config.data.name, **config.data.options)
    except (KeyError, ValueError) as error:
        raise ConfigError(
            f"data.name={config.data.name!r}, data.options={dict(config.data.options)}: {error}"
        ) from error
    return list(info.modalities)


def _lab_bundle(config: ExperimentConfig) -> DataBundle:
    """The lab: ``data.options`` holds ``seed`` (the data's seed, default 0) and LabSpec fields to replace."""
    from modbalance.data.synthetic import SyntheticLab, lab_preset

    data = config.data
    options = dict(data.options)
    seed = options.pop("seed", 0)
    try:
        spec = lab_preset(data.preset)
        lab = SyntheticLab(spec.replace(**options) if options else spec, seed=seed)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"data.options={dict(data.options)}: {error}") from error
    splits = {}
    for role, name in (("train", data.train_split), ("val", data.val_split), ("test", data.test_split)):
        try:
            splits[role] = lab.split(name)  # type: ignore[arg-type]
        except ValueError as error:
            raise ConfigError(f"data.{role}_split={name!r}: {error}") from error
        if len(splits[role]) == 0:
            raise ConfigError(f"data.{role}_split={name!r} is empty in lab preset {data.preset!r}")
    return DataBundle(
        splits=splits,
        modalities=list(lab.modalities),
        num_classes=lab.spec.num_classes,
        in_dims={m: int(splits["train"].inputs[m].shape[-1]) for m in lab.modalities},  # token width with tokens
        batched=True,
        extras={"bayes": lab.bayes_accuracy()},
    )


def _benchmark_options(config: ExperimentConfig) -> dict[str, Any]:
    """``data.options``, with the run's seed as the loader's ``seed`` (train-time draws) unless set there."""
    from modbalance.data.registry import DATASETS

    options = dict(config.data.options)
    entry = DATASETS.get(config.data.name)
    if entry is not None and "seed" in entry.options() and options.get("seed") is None:
        options["seed"] = config.seed
    return options


def _benchmark_bundle(config: ExperimentConfig) -> DataBundle:
    from modbalance.data.registry import DATASETS, build_dataset, dataset_info

    data = config.data
    if data.root is None:
        raise ConfigError(
            f"data.root is required for dataset {data.name!r}: the folder prepared by `modbalance prep {data.name}` "
            f"(e.g. modbalance train --config ... data.root=/data/{data.name}-prepared)"
        )
    options = _benchmark_options(config)
    try:
        info = dataset_info(data.name, **data.options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"data.options: {error}") from error
    roles = [("train", data.train_split), ("test", data.test_split)]
    if data.val_fraction == 0:
        roles.append(("val", data.val_split))
    for role, name in roles:
        if name not in info.splits:
            hint = " (or set data.val_fraction, e.g. 0.1, to hold out part of train)" if role == "val" else ""
            raise ConfigError(
                f"data.{role}_split={name!r}: dataset {data.name!r} has splits {', '.join(info.splits)}{hint}"
            )
    if not Path(data.root).is_dir():
        raise ConfigError(
            f"data.root={data.root!r}: no such folder; prepare it with "
            f"`modbalance prep {data.name} --raw RAW_DIR --out {data.root}` (docs/datasets.md)"
        )
    splits = {}
    eval_train = None
    try:
        for role, name in roles:
            try:
                splits[role] = build_dataset(data.name, data.root, name, **options)
            except FileNotFoundError as error:
                if role != "val":
                    raise
                raise ConfigError(
                    f"data.val_split={name!r} cannot be read: {error}. If the prepared data has no validation "
                    "split, set data.val_fraction (e.g. 0.1) to hold out part of train instead"
                ) from error
        if data.val_fraction > 0 and "train" in DATASETS[data.name].options():
            # The held-out validation rows are read like any evaluation split: deterministic frames and crops.
            eval_train = build_dataset(data.name, data.root, data.train_split, **{**options, "train": False})
    except TypeError as error:
        raise ConfigError(f"data.options: {error}") from error
    num_classes = dataset_info(data.name, data.root, **data.options).num_classes  # classes.txt when the data has one
    # In-memory tables (``features``, ``mfeat``) index a whole batch at once, like the lab.
    batched = bool(getattr(splits["train"], "batched", False))
    bundle = DataBundle(splits=splits, modalities=list(info.modalities), num_classes=int(num_classes), batched=batched)
    bundle.extras["eval_train"] = eval_train
    return bundle


def build_data(config: ExperimentConfig) -> DataBundle:
    """Build the train, validation and test splits of the configured data.

    With ``data.val_fraction > 0`` the validation split is held out of the train split
    (:func:`hold_out_validation`) instead of read from ``data.val_split``; for benchmarks its rows
    are read from a second copy of the train list built with ``train=False`` (eval transforms).
    For benchmarks, ``in_dims`` holds the feature width of each modality whose samples are
    vectors or sequences (``(D,)`` or ``(L, D)``, e.g. MOSEI), for encoders that take ``in_dim``.

    Raises:
        ConfigError: a missing ``data.root``, an unknown split or option.
    """
    bundle = _lab_bundle(config) if config.data.name == "synthetic" else _benchmark_bundle(config)
    eval_train = bundle.extras.pop("eval_train", None)
    if config.data.val_fraction > 0:
        bundle.splits = hold_out_validation(bundle.splits, config.data.val_fraction, eval_train)
    if not bundle.in_dims:
        sample = bundle.batch("val", [0])[0]
        bundle.in_dims = {m: int(x.shape[-1]) for m, x in sample.items() if x.dim() <= 3}
    return bundle


#: How many skipped samples an epoch record (and the log) names.
SKIPPED_LISTED = 5


def merge_skipped(per_rank: Sequence[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    """Merge :meth:`DataBundle.report_skipped` results of every rank (a sample reported twice counts once).

    Example:
        >>> from modbalance.data.base import SkippedSample
        >>> a = SkippedSample(3, "clip3", "corrupt", "clip3.jpg: truncated")
        >>> b = SkippedSample(-1, "clip9", "missing", "clip9.npy: file not found")
        >>> merged = merge_skipped([{"train": [a, b], "val": []}, {"train": [b], "val": []}])
        >>> {role: [s.name for s in items] for role, items in merged.items()}
        {'train': ['clip3', 'clip9'], 'val': []}
    """
    merged: dict[str, list[Any]] = {}
    seen: set[tuple[str, int, str, str]] = set()
    for found in per_rank:
        for role, items in found.items():
            kept = merged.setdefault(role, [])
            for item in items:
                key = (role, int(item.sample), str(item.name), str(item.reason))
                if key not in seen:
                    seen.add(key)
                    kept.append(item)
    return merged


def skipped_record(found: dict[str, list[Any]]) -> dict[str, Any]:
    """The keys an epoch record gets from :func:`merge_skipped`'s result.

    ``skipped/<split>``: how many samples of the split were skipped; ``skipped_samples``: the first
    :data:`SKIPPED_LISTED` of them (split, name, reason, message), present only if any was skipped.

    Example:
        >>> from modbalance.data.base import SkippedSample
        >>> record = skipped_record({"train": [SkippedSample(3, "clip3", "corrupt", "a.jpg: bad")], "val": []})
        >>> record["skipped/train"], record["skipped/val"], record["skipped_samples"][0]["name"]
        (1, 0, 'clip3')
    """
    record: dict[str, Any] = {f"skipped/{role}": len(items) for role, items in found.items()}
    listed = [
        {"split": role, "name": item.name, "reason": item.reason, "message": item.message}
        for role, items in found.items()
        for item in items
    ][:SKIPPED_LISTED]
    if listed:
        record["skipped_samples"] = listed
    return record


def describe_skipped(found: dict[str, list[Any]]) -> str:
    """One line naming the skipped samples (the first :data:`SKIPPED_LISTED`), for a warning; "" if none."""
    total = sum(len(items) for items in found.values())
    if total == 0:
        return ""
    counts = ", ".join(f"{role} {len(items)}" for role, items in found.items() if items)
    shown = [f"{item.name} ({item.reason}: {item.message})" for items in found.values() for item in items]
    more = f"; and {total - SKIPPED_LISTED} more" if total > SKIPPED_LISTED else ""
    shown = shown[:SKIPPED_LISTED]
    return f"skipped {total} unreadable sample(s) ({counts}): {'; '.join(shown)}{more}"


def _to_device(batch: Batch, device: torch.device, modalities: list[str]) -> Batch:
    inputs, target = batch
    moved = {m: inputs[m].to(device, non_blocking=True) for m in modalities}
    return moved, target.to(device, non_blocking=True)


def iterate_batches(
    bundle: DataBundle,
    split: str,
    sampler: ShardedBatchSampler,
    *,
    device: torch.device,
    modalities: list[str],
    num_workers: int = 0,
    seed: int = 0,
) -> Iterator[Batch]:
    """Batches of ``split`` in the sampler's order, moved to ``device``, keeping only ``modalities``.

    For map-style data the ``DataLoader`` workers are seeded with :func:`seed_worker` and a
    generator derived from ``(seed, sampler.epoch)``, so random augmentations repeat exactly.
    """
    if bundle.batched:
        for indices in sampler:
            yield _to_device(bundle.batch(split, indices), device, modalities)
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(
        bundle.splits[split],
        batch_sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed * 100_003 + sampler.epoch),
        pin_memory=device.type == "cuda",
    )
    for inputs, target in loader:
        yield _to_device((dict(inputs), torch.as_tensor(target)), device, modalities)
