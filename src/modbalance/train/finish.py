"""The end of a run: reload the best checkpoint, score the test split, probe, write ``summary.json``.

Also :func:`evaluate_run`, which rebuilds a finished run from its folder and scores its best
checkpoint again (``modbalance eval --run DIR``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from modbalance.methods import METHODS, BalancingMethod
from modbalance.model import MultimodalClassifier
from modbalance.probe import linear_probe_accuracy
from modbalance.runfolder import RunFiles, write_json
from modbalance.train.checkpoint import load_checkpoint
from modbalance.train.config import ExperimentConfig, load_config
from modbalance.train.data import DataBundle, build_data
from modbalance.train.distributed import DistributedContext, barrier
from modbalance.train.loop import evaluate, extract_features

__all__ = ["evaluate_run", "finish_run", "probe_modalities"]

logger = logging.getLogger(__name__)


def probe_modalities(
    core: MultimodalClassifier, bundle: DataBundle, device: torch.device, *, batch_size: int, steps: int
) -> dict[str, float]:
    """Linear-probe test accuracy of each modality's frozen encoder (fitted on the train split)."""
    train_features, train_target = extract_features(core, bundle, "train", device, batch_size=batch_size)
    test_features, test_target = extract_features(core, bundle, "test", device, batch_size=batch_size)
    return {
        m: linear_probe_accuracy(
            train_features[m], train_target, test_features[m], test_target, bundle.num_classes, steps=steps
        )
        for m in core.modalities
    }


def _load_best(core: MultimodalClassifier, files: RunFiles, method: BalancingMethod | None = None) -> dict[str, Any]:
    state = load_checkpoint(files.best, map_location="cpu")
    core.load_state_dict(state["model"])
    if method is not None:  # its predict() may depend on its state
        method.load_state_dict(state["method"])
    return state


def finish_run(
    config: ExperimentConfig,
    ctx: DistributedContext,
    files: RunFiles,
    core: MultimodalClassifier,
    bundle: DataBundle,
    *,
    method: BalancingMethod | None = None,
    history: Sequence[Mapping[str, Any]],
    global_step: int,
    wall_time_s: float,
) -> None:
    """Score the best checkpoint on the test split and write ``summary.json`` (main rank).

    Args:
        config: the run's config.
        ctx: the distributed context (every rank calls this; only the main rank writes).
        files: the run folder; its best checkpoint is loaded into ``core``.
        core: the (unwrapped) model.
        bundle: the run's data.
        method: the run's registered balancing method (:mod:`modbalance.methods`), if any; its
            state is restored from the best checkpoint and its ``predict`` scores the test split.
        history: the per-epoch records so far (``metrics.jsonl``).
        global_step: optimizer steps taken.
        wall_time_s: training time so far, resumed segments included.
    """
    barrier(ctx)
    best = _load_best(core, files, method)
    test = evaluate(
        core,
        bundle,
        "test",
        ctx,
        batch_size=config.train.eval_batch_size,
        precision=config.train.precision,
        rule=config.method.rule,
        method=method,
    )
    probe = None
    if config.train.probe and ctx.is_main:
        probe = probe_modalities(
            core, bundle, ctx.device, batch_size=config.train.eval_batch_size, steps=config.train.probe_steps
        )
    best_record: Mapping[str, Any] = next((r for r in history if r["epoch"] == best["epoch"]), {})
    summary = {
        "run_name": files.root.name,
        "method": config.method.name,
        "data": config.data.preset if config.data.name == "synthetic" else config.data.name,
        "seed": config.seed,
        "modalities": list(core.modalities),
        "best_epoch": best["epoch"],
        "select_metric": f"val/{best['select_metric']}",
        "val": {k[4:]: v for k, v in best_record.items() if k.startswith("val/")},
        "test": test,
        "probe": probe,
        "bayes": bundle.extras.get("bayes"),
        "epochs_run": len(history),
        "global_step": global_step,
        "wall_time_s": wall_time_s,
        "world_size": ctx.world_size,
        "device": str(ctx.device),
        "precision": config.train.precision,
    }
    if ctx.is_main:
        write_json(files.summary, summary)
    logger.info("run %s: best epoch %s, test accuracy %.4f", files.root, best["epoch"], test["accuracy"])
    barrier(ctx)


def _eval_device(device: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a device; ValueError if CUDA is asked for and absent."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N ({error})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available in this PyTorch build or machine; use --device cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return resolved


def evaluate_run(run_dir: str | Path, *, split: str = "test", device: str = "auto") -> dict[str, float]:
    """Rebuild a finished run from its folder and score its best checkpoint on ``split``.

    Args:
        run_dir: a run folder with ``config.yaml`` and ``checkpoints/best.pt``.
        split: ``"test"`` (default) or ``"val"``.
        device: where to compute.

    Returns:
        The same metrics as ``summary.json``'s ``"test"`` entry.

    Raises:
        FileNotFoundError: the folder has no ``config.yaml`` or no best checkpoint.
        ValueError: an unknown device, or CUDA asked for where it is not available.

    Example:
        >>> import json, tempfile
        >>> from modbalance.train import load_config, run
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     run_dir = run(load_config("lab/tiny", [f"output_dir={tmp}"]))  # about a second
        ...     again = evaluate_run(run_dir)
        ...     saved = json.loads((run_dir / "summary.json").read_text())["test"]
        >>> sorted(again)
        ['accuracy', 'accuracy/audio', 'accuracy/visual', 'loss', 'macro_f1', 'map', 'rho/audio', 'rho/visual']
        >>> abs(again["accuracy"] - saved["accuracy"]) < 1e-6
        True
    """
    from modbalance.train.build import build_methods, build_model

    files = RunFiles(Path(run_dir), enabled=False)
    if not files.config.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: {files.config} is missing")
    if not files.best.is_file():
        raise FileNotFoundError(f"{run_dir} has no best checkpoint ({files.best}); did the run finish an epoch?")
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    config = load_config(files.config)
    torch.manual_seed(config.seed)
    bundle = build_data(config)
    resolved = _eval_device(device)
    core = build_model(config, bundle).to(resolved)
    method = build_methods(config, core, resolved).method if config.method.name in METHODS else None
    _load_best(core, files, method)
    single = DistributedContext(0, 1, 0, resolved, True, False)
    return evaluate(
        core,
        bundle,
        split,
        single,
        batch_size=config.train.eval_batch_size,
        precision=config.train.precision,
        rule=config.method.rule,
        method=method,
    )
