"""One training run from a config: :func:`run` builds everything, trains, selects, tests, writes.

The same function serves one process and ``torchrun`` (the model is wrapped in
``DistributedDataParallel``, each rank reads its share of every global batch, metrics are
summed over ranks, only rank 0 writes files), and resumes from a run folder exactly: the last
checkpoint holds the model, optimizer, scheduler, scaler, OGM, OPM and method states, every rank's RNG
states, the position in the data order (epoch and batch), the partial sums of the current epoch,
the best validation value so far and the metrics history.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from modbalance.methods import EpochContext, ExtraSamples
from modbalance.metrics import EpochSums
from modbalance.runfolder import RunFiles, RunLock, write_json, writing
from modbalance.train.build import build_methods, build_model, build_optimizer
from modbalance.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    latest_valid_checkpoint,
    load_checkpoint,
    previous_path,
    restore_rng_state,
    save_checkpoint,
)
from modbalance.train.config import ConfigError, ExperimentConfig, config_to_yaml, load_config
from modbalance.train.data import (
    build_data,
    data_modalities,
    describe_skipped,
    iterate_batches,
    merge_skipped,
    skipped_record,
)
from modbalance.train.distributed import (
    DistributedContext,
    ShardedBatchSampler,
    barrier,
    gather_objects,
    init_distributed,
    reduce_sums,
    set_deterministic,
    shutdown_distributed,
)
from modbalance.train.finish import finish_run
from modbalance.train.loop import (
    NonFiniteLossError,
    NonFiniteWatch,
    StepParts,
    evaluate,
    forward_split,
    non_finite_error,
    train_step,
)
from modbalance.train.validate import check_modalities

__all__ = ["run", "run_folder"]

logger = logging.getLogger(__name__)


def run_folder(config: ExperimentConfig) -> Path:
    """``<output_dir>/<run_name>``, the name defaulting to ``<data>-<method>-seed<seed>``.

    Example:
        >>> from modbalance.train import load_config
        >>> run_folder(load_config("lab/ogm", ["output_dir=runs", "seed=3"])).as_posix()
        'runs/default-ogm-seed3'
    """
    data = config.data.preset if config.data.name == "synthetic" else config.data.name
    name = config.run_name or f"{data}-{config.method.name.replace(':', '-')}-seed{config.seed}"
    return Path(config.output_dir) / name


def run(config: ExperimentConfig | str | Path | None = None, *, resume: str | Path | None = None) -> Path:
    """Train one run and return its folder.

    Args:
        config: a validated :class:`~modbalance.train.config.ExperimentConfig`, or a YAML path
            (loaded with :func:`~modbalance.train.config.load_config`). Omit it with ``resume``.
        resume: a run folder to continue from its ``checkpoints/last.pt``; its ``config.yaml``
            is used, and a ``config`` given as well must equal it.

    Returns:
        The run folder (``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``checkpoints/``, ``tb/``).

    Example:
        >>> import tempfile
        >>> from modbalance.train import load_config
        >>> out = tempfile.mkdtemp()
        >>> config = load_config("lab/tiny", [f"output_dir={out}", "train.epochs=1", "train.probe=false"])
        >>> folder = run(config)
        >>> sorted(p.name for p in folder.iterdir() if p.suffix in (".yaml", ".jsonl", ".json"))
        ['config.yaml', 'metrics.jsonl', 'summary.json']

    Raises:
        ConfigError: an invalid config (before any training), or an encoder over ``train.max_elements``.
        NonFiniteLossError: the loss or the weights became non-finite; the last checkpoint is left as it was.
        FileExistsError: the run folder already holds a run and ``resume`` was not given.
        FileNotFoundError: ``resume`` is not a run folder.
        RunFolderBusyError: another process is training in the run folder (docs/run-folder.md).
        RunWriteError: a file of the run folder could not be written (e.g. a full disk).
        CheckpointError: the checkpoint to resume from is damaged or belongs to another run.
    """
    if resume is not None:
        saved = load_config(_run_config_path(Path(resume)))
        if config is not None and config_to_yaml(_as_config(config)) != config_to_yaml(saved):
            raise ValueError(f"--resume {resume}: the given config differs from the run's config.yaml")
        config = saved
    if config is None:
        raise ValueError("run() needs a config, or resume= a run folder")
    config = _as_config(config)
    check_modalities(config, data_modalities(config))
    owns_group = not (dist.is_available() and dist.is_initialized())
    ctx = init_distributed(config.train.device)
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    try:
        if config.train.deterministic != deterministic:  # the call imports torch._inductor: only on a change
            set_deterministic(config.train.deterministic)
        if config.train.threads > 0:
            torch.set_num_threads(config.train.threads)
        folder = Path(resume) if resume is not None else run_folder(config)
        with RunLock(folder) if ctx.is_main else contextlib.nullcontext():
            return _Trainer(config, ctx, folder, resume=resume is not None).fit()
    finally:
        if torch.are_deterministic_algorithms_enabled() != deterministic:
            set_deterministic(deterministic)
        torch.set_num_threads(threads)
        if owns_group and ctx.distributed:
            # The trainer (its DDP wrapper holds the process group) sits in reference cycles; free it
            # now, so the group is not destroyed a second time at interpreter exit, where gloo's
            # threads can abort the process. One process has no group: nothing to collect for.
            gc.collect()
        if owns_group:
            shutdown_distributed(ctx)


def _run_config_path(folder: Path) -> Path:
    """``folder/config.yaml``, or FileNotFoundError saying that ``folder`` is not a run folder."""
    path = folder / "config.yaml"
    if not folder.is_dir():
        what = "a file, not a folder" if folder.exists() else "no such folder"
        raise FileNotFoundError(f"--resume {folder}: is not a run folder ({what})")
    if not path.is_file():
        raise FileNotFoundError(
            f"--resume {folder}: is not a run folder ({path.name} is missing; `modbalance train` writes it "
            "when a run starts)"
        )
    return path


def _holds_run(files: RunFiles) -> bool:
    """A folder holds a run once it has a checkpoint (or a finished run's summary): docs/run-folder.md."""
    last = files.last
    return last.exists() or previous_path(last).exists() or files.summary.exists()


def _check_model_size(config: ExperimentConfig, bundle: Any) -> None:
    """Refuse encoders over ``train.max_elements`` before allocating them (docs/run-folder.md).

    Each encoder is built on the ``meta`` device (shapes only, no memory) and run on a meta batch of
    ``train.batch_size`` samples; its parameter count and its largest output tensor must each stay
    within the limit. A build that fails here is left to the real build, which reports the error.
    """
    from modbalance.encoders.registry import build_encoder
    from modbalance.train.build import _encoder_options
    from modbalance.train.validate import method_modalities

    limit = config.train.max_elements
    if not limit:
        return
    sample = bundle.sample_inputs()
    largest = [0]

    def measure(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel())

    for modality in method_modalities(config, bundle.modalities):
        largest[0] = 0
        try:
            with torch.device("meta"):
                encoder = build_encoder(
                    config.model.encoders[modality].name, **_encoder_options(config, modality, bundle)
                )
                count = sum(p.numel() for p in encoder.parameters())
                if count <= limit:
                    hooks = [m.register_forward_hook(measure) for m in encoder.modules()]
                    x = sample[modality]
                    encoder(torch.empty((config.train.batch_size, *x.shape[1:]), dtype=x.dtype))
                    for hook in hooks:
                        hook.remove()
        except Exception as error:  # the real build reports the real error
            logger.debug("could not size encoder %s before building it (%s)", modality, error)
            continue
        key = f"model.encoders.{modality}"
        if count > limit:
            raise ConfigError(
                f"{key}: the encoder has {count:,} parameters, over the limit train.max_elements={limit:,}; "
                "check its options (e.g. hidden_dim) or raise the limit"
            )
        if largest[0] > limit:
            raise ConfigError(
                f"{key}: a batch of train.batch_size={config.train.batch_size} makes a {largest[0]:,}-element "
                f"activation, over the limit train.max_elements={limit:,}; check its options (e.g. hidden_dim) "
                "or raise the limit"
            )


#: Keys every resumable checkpoint (``format: modbalance-run/1``) holds.
_RESUME_KEYS = (
    "config",
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "ogm",
    "ranks",
    "position",
    "global_step",
    "epoch_sums",
    "best",
    "history",
    "elapsed",
    "world_size",
)
#: Config keys that name where a run is written, not how it trains; they may differ on resume.
_PLACE_KEYS = frozenset({"output_dir", "run_name"})


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _check_same_run(path: Path, state: dict[str, Any], config: ExperimentConfig, config_file: Path) -> None:
    """Refuse a checkpoint whose stored config differs from the run's (a checkpoint of another run)."""
    import yaml

    mine = _flat(yaml.safe_load(config_to_yaml(config)))
    try:
        theirs = _flat(yaml.safe_load(str(state["config"])))
    except yaml.YAMLError as error:
        raise CheckpointError(path, f"its stored config is not readable YAML ({error})") from error
    differ = sorted(k for k in set(mine) | set(theirs) if k not in _PLACE_KEYS and mine.get(k) != theirs.get(k))
    if differ:
        shown = "; ".join(
            f"{k}: {theirs.get(k)!r} in the checkpoint, {mine.get(k)!r} in {config_file.name}" for k in differ[:8]
        )
        more = f"; and {len(differ) - 8} more" if len(differ) > 8 else ""
        raise CheckpointError(
            path,
            f"it belongs to another run: its config differs from {config_file} in {', '.join(differ)} ({shown}{more})",
        )


def _as_config(config: ExperimentConfig | str | Path) -> ExperimentConfig:
    return config if isinstance(config, ExperimentConfig) else load_config(config)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return
    np.random.seed(seed % 2**32)


def _plan_drops(plan: ExtraSamples, num_samples: int, modalities: list[str], name: str) -> dict[str, torch.Tensor]:
    """Modality name -> ``(num_samples + K,)`` bool over the epoch's positions: False for the
    originals, the plan's ``drop`` for its ``K`` extra samples (checked against the split and model)."""
    k = len(plan.indices)
    wrong = any(tuple(d.shape) != (k,) or d.dtype != torch.bool for d in plan.drop.values())
    if set(plan.drop) != set(modalities) or wrong:
        shapes = {m: (tuple(d.shape), str(d.dtype)) for m, d in plan.drop.items()}
        raise ValueError(
            f"method {name!r}: epoch_samples must give a ({k},) bool drop mask for each of the model's modalities "
            f"{modalities}, got {shapes}"
        )
    originals = torch.zeros(num_samples, dtype=torch.bool)
    return {m: torch.cat([originals, plan.drop[m].cpu()]) for m in modalities}


class _Trainer:
    """The state of one run between :func:`run`'s set-up and its end (internal)."""

    def __init__(self, config: ExperimentConfig, ctx: DistributedContext, folder: Path, *, resume: bool) -> None:
        self.config, self.ctx = config, ctx
        self.config_yaml = config_to_yaml(config)  # written into every checkpoint: render it once
        self.files = RunFiles(folder, enabled=ctx.is_main)
        if not resume and _holds_run(self.files):  # every rank sees the same folder
            raise FileExistsError(f"{folder} already holds a run; resume it with --resume {folder} or set run_name")
        _seed_everything(config.seed)
        self.bundle = build_data(config)
        if self.bundle.batched and config.train.num_workers > 0:
            logger.warning("train.num_workers=%d is not used: the lab's data is in memory", config.train.num_workers)
        _check_model_size(config, self.bundle)
        self.core = build_model(config, self.bundle).to(ctx.device)
        self.methods = build_methods(config, self.core, ctx.device, distributed=ctx.distributed)
        model: torch.nn.Module = self.core
        if ctx.distributed:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(self.core, device_ids=device_ids)
        self.optimizer, self.scheduler = build_optimizer(config, self.core, self.methods.method)
        scaler = torch.amp.GradScaler(ctx.device.type) if config.train.precision == "fp16" else None
        self.parts = StepParts(
            model,
            self.core,
            self.optimizer,
            scaler,
            self.methods,
            config.train.precision,
            config.train.grad_accum_steps,
        )
        self.sampler = ShardedBatchSampler(
            len(self.bundle.splits["train"]),
            config.train.batch_size,
            seed=config.seed,
            shuffle=True,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        self.modalities = self.core.modalities
        self.sums = EpochSums(self.modalities, ctx.device, config.method.rule)
        self.epoch, self.start_batch, self.global_step = 0, 0, 0
        self.best: dict[str, Any] = {"epoch": None, "value": None}
        self.history: list[dict[str, Any]] = []
        self.elapsed = 0.0
        if resume:
            self._load_last()

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        """The resumable state; every rank contributes its RNG, OPM and method states."""
        opm, method = self.methods.opm, self.methods.method
        rank_state = {
            "rng": capture_rng_state(),
            "opm": opm.state_dict() if opm is not None else None,
            "method": method.state_dict() if method is not None else None,
        }
        return {
            "format": "modbalance-run/1",
            "config": self.config_yaml,
            "model": self.core.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.parts.scaler.state_dict() if self.parts.scaler is not None else None,
            "ogm": self.methods.ogm.state_dict() if self.methods.ogm is not None else None,
            "ranks": gather_objects(rank_state, self.ctx),
            "position": {"epoch": self.epoch, "batch": self.start_batch},
            "global_step": self.global_step,
            "epoch_sums": self.sums.state_dict(),
            "best": dict(self.best),
            "history": list(self.history),
            "elapsed": self.elapsed + time.perf_counter() - self._started,
            "world_size": self.ctx.world_size,
        }

    def _save_last(self) -> None:
        state = self._state()  # collective: every rank takes part
        if self.ctx.is_main:
            with writing(self.files.last, "the resumable checkpoint"):
                save_checkpoint(self.files.last, state, keep_previous=True)
        barrier(self.ctx)

    def _load_last(self) -> None:
        path: Path | None = self.files.last
        if previous_path(self.files.last).exists():  # last.pt, or last.prev.pt if last.pt is damaged
            path = latest_valid_checkpoint(self.files.checkpoints)
        if path is None or not path.exists():
            if self.files.summary.exists():
                raise FileNotFoundError(
                    f"{self.files.root} has no checkpoint to resume from ({self.files.last} is missing)"
                )
            # Stopped before its first checkpoint (docs/run-folder.md): start from the beginning.
            logger.warning("%s has no checkpoint yet: the run starts from the beginning", self.files.root)
            return
        state = load_checkpoint(path, map_location="cpu", required=_RESUME_KEYS)
        _check_same_run(path, state, self.config, self.files.config)
        if state["world_size"] != self.ctx.world_size:
            raise ValueError(
                f"{self.files.last} was written by {state['world_size']} process(es); resume it with the same number "
                f"(got {self.ctx.world_size}) to continue exactly"
            )
        try:
            self.core.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(path, f"does not fit this run's model or optimizer: {error}") from error
        for target, key in ((self.scheduler, "scheduler"), (self.parts.scaler, "scaler"), (self.methods.ogm, "ogm")):
            if target is not None:
                target.load_state_dict(state[key])
        mine = state["ranks"][self.ctx.rank]
        if self.methods.opm is not None:
            self.methods.opm.load_state_dict(mine["opm"])
        if self.methods.method is not None:
            self.methods.method.load_state_dict(mine["method"])
        restore_rng_state(mine["rng"])
        self.epoch, self.start_batch = state["position"]["epoch"], state["position"]["batch"]
        self.global_step, self.best, self.history = state["global_step"], state["best"], state["history"]
        self.sums.load_state_dict(state["epoch_sums"])
        self.elapsed = float(state["elapsed"])
        logger.info(
            "resumed from %s at epoch %d, batch %d, step %d", path, self.epoch, self.start_batch, self.global_step
        )

    # ------------------------------------------------------------------ loop
    def fit(self) -> Path:
        self._started = time.perf_counter()
        train = self.config.train
        if self.ctx.is_main:
            self.files.open(purge_epoch=self.epoch)  # drop TensorBoard events of epochs not in the checkpoint
            with writing(self.files.config, "the resolved config"):
                self.files.config.write_text(self.config_yaml)
            self.files.rewrite_metrics(self.history)
        logger.info(
            "run %s: %s on %s, %d process(es)",
            self.files.root,
            self.config.method.name,
            self.ctx.device,
            self.ctx.world_size,
        )
        try:
            stopped = self.global_step >= (train.max_steps or sys.maxsize)
            while self.epoch < train.epochs and not stopped:
                stopped = self._train_epoch()
                self._end_epoch()
            finish_run(
                self.config,
                self.ctx,
                self.files,
                self.core,
                self.bundle,
                method=self.methods.method,
                history=self.history,
                global_step=self.global_step,
                wall_time_s=self.elapsed + time.perf_counter() - self._started,
            )
            self._report_final_skips()
        except NonFiniteLossError as error:
            raise NonFiniteLossError(f"{error} {self._checkpoint_note()}") from None
        finally:
            self.files.close()
        return self.files.root

    def _checkpoint_note(self) -> str:
        """What a stopped run leaves to resume from, for the divergence message."""
        if self.files.last.exists() or previous_path(self.files.last).exists():
            return f"The last checkpoint ({self.files.last}) was kept as it was."
        return "There is no checkpoint: the run stopped before its first one."

    def _check_weights(self) -> None:
        """Raise NonFiniteLossError if a weight is not finite (one host sync, once per epoch)."""
        tensors = [t for t in (*self.core.parameters(), *self.core.buffers()) if t.is_floating_point()]
        if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
            last = self.history[-1] if self.history else None
            raise non_finite_error(self.global_step, self.epoch, last, subject="weights")

    def _progress(self) -> Any:
        from tqdm.auto import tqdm

        visible = self.config.train.progress and self.ctx.is_main and sys.stderr.isatty()
        return tqdm(
            total=len(self.sampler),
            initial=self.start_batch,
            desc=f"epoch {self.epoch + 1}/{self.config.train.epochs}",
            unit="step",
            disable=not visible,
            leave=False,
        )

    def _train_epoch(self) -> bool:
        """Train from the current position to the end of the epoch (or max_steps); True if max_steps was hit."""
        train = self.config.train
        watch = NonFiniteWatch(self.ctx.device, self.history[-1] if self.history else None)
        self.core.train()
        if self.methods.opm is not None:
            self.methods.opm.train()
        method = self.methods.method
        self.sampler.set_extra(None)
        drops = None
        if method is not None:
            method.train()
            if self.start_batch == 0:  # resuming mid-epoch: the state saved after this hook is restored
                method.on_epoch_start(self.core, self._epoch_context())
            plan = method.epoch_samples(self.epoch)  # the same plan again on resume (from the method's state)
            if plan is not None and len(plan.indices):
                drops = _plan_drops(plan, self.sampler.num_samples, self.modalities, method.name)
                self.sampler.set_extra(plan.indices)
        self.sampler.set_epoch(self.epoch)
        self.sampler.set_start_batch(self.start_batch)
        positions = self.sampler.positions()[self.start_batch :] if drops is not None else []
        self.bundle.set_epoch(self.epoch)  # train-time frames/crops are drawn from (seed, epoch, index)
        batches = iterate_batches(
            self.bundle,
            "train",
            self.sampler,
            device=self.ctx.device,
            modalities=self.modalities,
            num_workers=train.num_workers,
            seed=self.config.seed,
        )
        with self._progress() as bar:
            for b, (inputs, target) in enumerate(batches):
                self.global_step += 1
                drop = None
                if drops is not None:  # this batch's rows of the plan's modality mask (originals: none dropped)
                    drop = {m: d[positions[b]].to(target.device, non_blocking=True) for m, d in drops.items()}
                train_step(
                    self.parts,
                    inputs,
                    target,
                    epoch=self.epoch,
                    step=self.global_step,
                    sums=self.sums,
                    watch=watch,
                    drop=drop,
                )
                self.start_batch += 1
                bar.update()
                if self.global_step % train.log_every_steps == 0:
                    watch.check(self.epoch)
                if train.checkpoint_every_steps and self.global_step % train.checkpoint_every_steps == 0:
                    watch.check(self.epoch)
                    self._save_last()
                if train.max_steps is not None and self.global_step >= train.max_steps:
                    watch.check(self.epoch)
                    return True
        watch.check(self.epoch)
        return False

    def _epoch_context(self) -> EpochContext:
        """What a method's epoch hooks receive: the epoch and a whole-split forward pass."""
        train = self.config.train

        def forward(split: str) -> Any:
            return forward_split(
                self.core, self.bundle, split, self.ctx, batch_size=train.eval_batch_size, precision=train.precision
            )

        def reset_optimizer() -> None:
            self.optimizer.state.clear()  # what a new optimizer of the same groups would start from

        return EpochContext(self.epoch, forward, batches=len(self.sampler), reset_optimizer=reset_optimizer)

    def _skipped(self, roles: list[str] | None, when: str) -> dict[str, Any]:
        """Every rank's skipped samples of ``roles`` since the last call, as record keys; logged by name."""
        found = merge_skipped(gather_objects(self.bundle.report_skipped(roles), self.ctx))
        message = describe_skipped(found)
        if message:
            logger.warning("%s: %s", when, message)
        return skipped_record(found)

    def _report_final_skips(self) -> None:
        """Samples skipped by the final test evaluation (and the probe) go into ``summary.json``."""
        record = self._skipped(None, "final evaluation")
        if record and self.ctx.is_main:
            summary = json.loads(self.files.summary.read_text())
            summary["skipped"] = record
            write_json(self.files.summary, summary)

    def _end_epoch(self) -> None:
        """Epoch record (train sums reduced over ranks, validation), best checkpoint, scheduler, last checkpoint."""
        train_record = self.sums.compute(lambda sums: reduce_sums(sums, self.ctx))
        self._check_weights()  # NaN weights are a divergence, not bad validation data
        method = self.methods.method
        method_record = method.on_epoch_end(self.core, self._epoch_context()) if method is not None else {}
        val_record = evaluate(
            self.core,
            self.bundle,
            "val",
            self.ctx,
            batch_size=self.config.train.eval_batch_size,
            precision=self.config.train.precision,
            rule=self.config.method.rule,
            method=method,
        )
        record: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        record.update({f"train/{k}": v for k, v in train_record.items()})
        record.update({f"val/{k}": v for k, v in val_record.items()})
        record.update({f"method/{k}": float(v) for k, v in method_record.items()})
        record.update(self._skipped(["train", "val"], f"epoch {self.epoch}"))
        self.history.append(record)
        self.files.append_record(record)
        logger.info(
            "epoch %d: train loss %.4f, val accuracy %.4f", self.epoch, record["train/loss"], record["val/accuracy"]
        )
        value = val_record[self.config.train.select_metric]
        if value == value and (self.best["value"] is None or value > self.best["value"]):
            self.best = {"epoch": self.epoch, "value": value}
            if self.ctx.is_main:
                with writing(self.files.best, "the best checkpoint"):
                    save_checkpoint(
                        self.files.best,
                        {
                            "model": self.core.state_dict(),
                            "epoch": self.epoch,
                            "config": self.config_yaml,
                            "select_metric": self.config.train.select_metric,
                            "value": value,
                            "method": method.state_dict() if method is not None else None,
                        },
                    )
        if self.scheduler is not None:
            self.scheduler.step()
        self.epoch, self.start_batch = self.epoch + 1, 0
        self.sums = EpochSums(self.modalities, self.ctx.device, self.config.method.rule)
        self._save_last()
