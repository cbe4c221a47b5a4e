"""The data side of a run: build the three splits, describe them, and feed batches to the loop.

Two kinds of splits:

* **batched** (the imbalance lab): tensors in memory; ``split[index_tensor]`` returns a whole
  collated batch, so a batch is one indexing operation, without a per-sample Python loop;
* **map-style** (benchmarks from :func:`modbalance.data.registry.build_dataset`): read through a
  ``DataLoader`` with ``batch_sampler=`` a :class:`~modbalance.train.distributed.ShardedBatchSampler`.

Either way the order of samples is the sampler's, which depends only on (seed, epoch): a resumed
or multi-process run sees the same global batches as an uninterrupted single process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from modbalance.train.config import ConfigError, ExperimentConfig
from modbalance.train.distributed import ShardedBatchSampler, seed_worker

__all__ = ["DataBundle", "build_data", "data_modalities", "iterate_batches"]

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


class IndexedSplit:
    """The rows ``indices`` of a split, indexable like it (one sample, or a batch by index tensor)."""

    def __init__(self, dataset: Any, indices: Tensor) -> None:
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, Tensor):
            return self.dataset[self.indices[index]]
        return self.dataset[int(self.indices[index])]


def hold_out_validation(splits: dict[str, Any], fraction: float) -> dict[str, Any]:
    """Split a fixed random ``fraction`` of the train split off as the validation split.

    The permutation has a fixed seed (not the run's), so every seed of an experiment selects on
    the same validation samples, and they never appear in training.

    Example:
        >>> out = hold_out_validation({"train": list(range(10)), "test": [0]}, 0.3)
        >>> len(out["train"]), len(out["val"]), set(out["val"].indices.tolist()) & set(out["train"].indices.tolist())
        (7, 3, set())
    """
    train = splits["train"]
    held = max(1, round(len(train) * fraction))
    if held >= len(train):
        raise ConfigError(f"data.val_fraction={fraction} leaves no training sample out of {len(train)}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(20240601))
    return {
        **splits,
        "train": IndexedSplit(train, order[held:].sort().values),
        "val": IndexedSplit(train, order[:held].sort().values),
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
        in_dims={m: spec.width for m, spec in lab.spec.modalities.items()},
        batched=True,
        extras={"bayes": lab.bayes_accuracy()},
    )


def _benchmark_bundle(config: ExperimentConfig) -> DataBundle:
    from modbalance.data.registry import build_dataset, dataset_info

    data = config.data
    if data.root is None:
        raise ConfigError(f"data.root is required for dataset {data.name!r} (the folder prepared by `modbalance prep`)")
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
    splits = {}
    for role, name in roles:
        try:
            splits[role] = build_dataset(data.name, data.root, name, **data.options)
        except TypeError as error:
            raise ConfigError(f"data.options: {error}") from error
    num_classes = dataset_info(data.name, data.root, **data.options).num_classes  # classes.txt when the data has one
    return DataBundle(splits=splits, modalities=list(info.modalities), num_classes=int(num_classes))


def build_data(config: ExperimentConfig) -> DataBundle:
    """Build the train, validation and test splits of the configured data.

    With ``data.val_fraction > 0`` the validation split is held out of the train split
    (:func:`hold_out_validation`) instead of read from ``data.val_split``.
    """
    bundle = _lab_bundle(config) if config.data.name == "synthetic" else _benchmark_bundle(config)
    if config.data.val_fraction > 0:
        bundle.splits = hold_out_validation(bundle.splits, config.data.val_fraction)
    return bundle


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
