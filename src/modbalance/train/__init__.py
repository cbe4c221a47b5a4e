"""The trainer: one run from a config, with the same public API a user would call.

Public names::

    from modbalance.train import load_config, run, evaluate_run

    config = load_config("lab/ogm", ["train.epochs=5"])   # a YAML path or a shipped config name
    run_dir = run(config)                                   # -> Path of the run folder
    run(resume=run_dir)                                     # continue an interrupted run exactly
    evaluate_run(run_dir)                                   # the best checkpoint's test metrics again

:func:`run` works unchanged under ``torchrun --nproc_per_node N -m modbalance train ...``.
Needs the ``train`` extra (``pip install "modbalance[train]"``).
"""

from modbalance.train.config import (
    ConfigError,
    DataConfig,
    EncoderConfig,
    ExperimentConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    SchedulerConfig,
    TrainConfig,
    config_to_yaml,
    load_config,
)
from modbalance.train.finish import evaluate_run
from modbalance.train.loop import NonFiniteLossError
from modbalance.train.trainer import run, run_folder

__all__ = [
    "ConfigError",
    "DataConfig",
    "EncoderConfig",
    "ExperimentConfig",
    "MethodConfig",
    "ModelConfig",
    "NonFiniteLossError",
    "OptimConfig",
    "SchedulerConfig",
    "TrainConfig",
    "config_to_yaml",
    "evaluate_run",
    "load_config",
    "run",
    "run_folder",
]
