"""Offline G-Blending: the blending weights from finished trial runs (the paper's Algorithm 1).

Wang, Tran and Feiszli (CVPR 2020, Section 3) estimate each branch's generalisation gain ΔG and
overfitting gain ΔO from a *trial run*: the uni-modal model of every modality and the plain
multimodal model, each trained on its own, their losses read at two checkpoints N and N + n. The
blended run then trains with fixed weights w_k ∝ ΔG_k / ΔO_k²
(:func:`modbalance.methods.gblending.blend_weights`).

``method.name=gblending`` takes ``method.options.trial_runs``: branch -> run folder, one
``unimodal:<modality>`` run per modality and a ``joint`` run for ``fused``; ``{seed}`` in a path is
replaced by the run's seed, so ``modbalance compare --methods unimodal:audio,unimodal:visual,joint,gblending``
gives each seed's G-Blending run the trial runs of the same seed. ``method.options.trial_epochs``
``[N, N + n]`` picks the two checkpoints (default: the first and the last epoch the runs recorded).
The losses are the runs' per-epoch records in ``metrics.jsonl``: ``train/loss`` (the epoch's mean
training loss, in train mode, as BalanceBenchmark's estimate) and ``val/loss`` (the held-out split,
eval mode). The train layer turns them into ``weights=`` with ``super_epoch=None``; the core
method never reads files. Details: ``docs/comparison-methods.md`` (G-Blending).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from modbalance.methods.gblending import FUSED, blend_weights
from modbalance.runfolder import read_config, read_metrics
from modbalance.train.errors import ConfigError
from modbalance.train.teachers import in_planned_run, seed_path

__all__ = [
    "TRIAL_EPOCHS_OPTION",
    "TRIAL_RUNS_OPTION",
    "split_trial_options",
    "trial_losses",
    "trial_method",
    "weights_from_trial_runs",
]

logger = logging.getLogger(__name__)

#: The option naming the trial runs, and the one picking their two checkpoints.
TRIAL_RUNS_OPTION = "trial_runs"
TRIAL_EPOCHS_OPTION = "trial_epochs"


def trial_method(branch: str) -> str:
    """The ``method.name`` a branch's trial run must have: ``joint`` for ``fused``, else ``unimodal:<branch>``.

    Example:
        >>> trial_method("audio"), trial_method("fused")
        ('unimodal:audio', 'joint')
    """
    return "joint" if branch == FUSED else f"unimodal:{branch}"


def trial_losses(
    folder: Path, epochs: tuple[int, int] | None, *, key: str
) -> tuple[tuple[int, int], tuple[float, float], tuple[float, float]]:
    """``(N, N + n)``, ``(train/loss, val/loss)`` at epoch N and the same at N + n of one finished run.

    Args:
        folder: the run folder (``config.yaml``, ``metrics.jsonl``, ``summary.json``).
        epochs: the two epochs, or ``None`` for the first and the last recorded epoch.
        key: the option this folder came from (for messages).

    Raises:
        ConfigError: the run is not finished, lacks one of the epochs or a finite loss there.

    Example:
        >>> import json, tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     run = Path(d)
        ...     _ = (run / "summary.json").write_text("{}")
        ...     lines = [{"epoch": e, "train/loss": 1.0 / (e + 1), "val/loss": 1.5 - 0.1 * e} for e in range(3)]
        ...     _ = (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\\n" for x in lines))
        ...     trial_losses(run, None, key="method.options.trial_runs.audio")
        ((0, 2), (1.0, 1.5), (0.3333333333333333, 1.3))
    """
    if not (folder / "summary.json").is_file():
        raise ConfigError(
            f"{key}: {folder} is not a finished run (no summary.json); let the trial run finish, or resume it "
            f"with modbalance train --resume {folder}"
        )
    try:
        records = read_metrics(folder / "metrics.jsonl")
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f"{key}: cannot read the trial run's metrics: {error}") from None
    by_epoch = {r["epoch"]: r for r in records if isinstance(r.get("epoch"), int) and "train/loss" in r}
    if not by_epoch:
        raise ConfigError(f"{key}: {folder}/metrics.jsonl has no epoch record with train/loss")
    first, last = (min(by_epoch), max(by_epoch)) if epochs is None else epochs
    losses = []
    for epoch in (first, last):
        record = by_epoch.get(epoch)
        if record is None:
            raise ConfigError(
                f"{key}: {folder}/metrics.jsonl has no record of epoch {epoch} (it has epochs "
                f"{min(by_epoch)}..{max(by_epoch)}); choose method.options.{TRIAL_EPOCHS_OPTION} within them"
            )
        pair = []
        for name in ("train/loss", "val/loss"):
            value = record.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(
                    f"{key}: epoch {epoch} of {folder}/metrics.jsonl has {name}={value!r}; the estimate needs a "
                    "finite training and held-out loss (did the run have a validation split?)"
                )
            pair.append(float(value))
        losses.append((pair[0], pair[1]))
    return (first, last), losses[0], losses[1]


def _epochs(value: object) -> tuple[int, int] | None:
    key = f"method.options.{TRIAL_EPOCHS_OPTION}"
    if value is None:
        return None
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(e, int) and not isinstance(e, bool) for e in value)
        and 0 <= value[0] < value[1]
    ):
        return int(value[0]), int(value[1])
    raise ConfigError(f"{key}={value!r} must be two epochs [N, N + n] with 0 <= N < N + n")


def split_trial_options(options: Mapping[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """``(trial_runs, trial_epochs, the other options)`` of a ``gblending`` options mapping, checked.

    Raises:
        ConfigError: ``trial_epochs`` without ``trial_runs``, epochs that are not ``[N, N + n]``
            with ``0 <= N < N + n``, or ``trial_runs`` together with ``weights`` or ``super_epoch``
            (the trial runs give fixed weights once).

    Example:
        >>> split_trial_options({"trial_runs": {"audio": "a"}, "gain": "abs"})
        ({'audio': 'a'}, None, {'gain': 'abs'})
        >>> split_trial_options({"trial_runs": {"audio": "a"}, "super_epoch": 5})
        Traceback (most recent call last):
        ...
        modbalance.train.errors.ConfigError: method.options.trial_runs estimates fixed weights once ...
    """
    rest = dict(options)
    runs = rest.pop(TRIAL_RUNS_OPTION, None)
    epochs = rest.pop(TRIAL_EPOCHS_OPTION, None)
    if runs is None:
        if epochs is not None:
            raise ConfigError(
                f"method.options.{TRIAL_EPOCHS_OPTION} is set but method.options.{TRIAL_RUNS_OPTION} is not; "
                "name the trial runs (branch -> run folder) or drop the epochs"
            )
        return None, None, rest
    _epochs(epochs)
    for clash in ("weights", "super_epoch"):
        if rest.get(clash) is not None:
            raise ConfigError(
                f"method.options.{TRIAL_RUNS_OPTION} estimates fixed weights once (offline G-Blending); it cannot "
                f"be combined with method.options.{clash}={rest[clash]!r}. Drop one of them"
            )
    return runs, epochs, rest


def weights_from_trial_runs(
    spec: object,
    modalities: Sequence[str],
    *,
    seed: int,
    epochs: object = None,
    gain: str = "clip",
    eps: float = 1e-12,
    planned: Collection[Path] = (),
) -> dict[str, float]:
    """Branch -> G-Blending weight from the trial runs ``spec`` names (branch -> run folder, ``{seed}`` filled in).

    Args:
        spec: a mapping with every modality of ``modalities`` and ``"fused"``.
        modalities: the model's modalities.
        seed: the seed of the run being built (replaces ``{seed}``).
        epochs: ``[N, N + n]`` or ``None`` (first and last recorded epoch of each run).
        gain, eps: as :func:`~modbalance.methods.gblending.blend_weights`.
        planned: resolved run folders that do not exist yet but will have finished before the run
            being built starts (``modbalance compare``). If a trial run is one of them, the
            other runs and the options are checked and uniform weights returned as a stand-in.

    Raises:
        ConfigError: a branch missing or unknown, a folder that is not a finished run of the right
            method, a missing epoch or loss, or no branch generalised (every ΔG <= 0).
        FileNotFoundError: a named folder does not exist.

    Example:
        >>> weights_from_trial_runs({"audio": "a"}, ["audio", "visual"], seed=0)
        Traceback (most recent call last):
        ...
        modbalance.train.errors.ConfigError: method.options.trial_runs must name a run folder for every branch ...
    """
    key = f"method.options.{TRIAL_RUNS_OPTION}"
    branches = [*modalities, FUSED]
    if not isinstance(spec, Mapping) or set(spec) != set(branches):
        given = sorted(spec) if isinstance(spec, Mapping) else spec
        raise ConfigError(
            f"{key} must name a run folder for every branch {branches} (a unimodal:<modality> run per modality, "
            f"a joint run for {FUSED!r}), got {given!r}"
        )
    window = _epochs(epochs)
    before_train, before_val, after_train, after_val = {}, {}, {}, {}
    pending = False
    for branch in branches:
        path = spec[branch]
        branch_key = f"{key}.{branch}"
        if not isinstance(path, str | os.PathLike):
            raise ConfigError(f"{branch_key}={path!r} must be a run folder")
        if in_planned_run(path, seed=seed, key=branch_key, planned=planned):
            pending = True  # the others are still checked now
            continue
        folder = seed_path(path, seed=seed, key=branch_key)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{branch_key}={os.fspath(path)!r}: no such run folder ({folder}); train the trial run first with "
                f"method.name={trial_method(branch)}"
            )
        try:
            config = read_config(folder)
        except ValueError as error:
            raise ConfigError(f"{branch_key}: {error}") from None
        method = ((config or {}).get("method") or {}).get("name")
        if method != trial_method(branch):
            raise ConfigError(
                f"{branch_key}: {folder} is a run of method.name={method!r}; the trial run of {branch!r} must be "
                f"a method.name={trial_method(branch)} run"
            )
        _, (train_n, val_n), (train_nn, val_nn) = trial_losses(folder, window, key=branch_key)
        before_train[branch], before_val[branch] = train_n, val_n
        after_train[branch], after_val[branch] = train_nn, val_nn
    if pending:
        return {b: 1.0 / len(branches) for b in branches}
    weights = blend_weights(before_train, before_val, after_train, after_val, gain=gain, eps=eps)
    if weights is not None:
        logger.info(
            "G-Blending weights from the trial runs (epochs %s): %s",
            "first..last" if window is None else f"{window[0]}..{window[1]}",
            ", ".join(f"{b} {w:.4f}" for b, w in weights.items()),
        )
    else:
        gains = {b: round(before_val[b] - after_val[b], 6) for b in branches}
        raise ConfigError(
            f"{key}: no trial run's held-out loss fell between the two epochs (ΔG = {gains}), so no weight can be "
            f"estimated; choose other method.options.{TRIAL_EPOCHS_OPTION}, or give method.options.weights"
        )
    return weights
