"""``modbalance demo``: every method on the imbalance lab, over seeds, with one table and a report.

The demo trains, on a lab preset (``"default"``: a dominant ``audio`` and a weak ``visual``),
plain joint training, OGM, OGM-GE, OPM and one uni-modal reference per modality, with the
training recipe the preset was tuned with (``lab_preset(name).recipe``), for several seeds;
then it prints the table of :func:`modbalance.report.format_table` and writes ``report.md`` with
plots. Every run is an ordinary run folder under ``<out>/runs/``, so ``modbalance eval`` and
``modbalance report`` work on them too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modbalance.train.config import ExperimentConfig, load_config

__all__ = ["DEMO_METHODS", "DEMO_METHOD_OPTIONS", "DemoResult", "demo_configs", "lab_config", "run_demo"]

#: The balancing methods the demo compares (uni-modal references are added per modality).
DEMO_METHODS: tuple[str, ...] = ("joint", "ogm", "ogm_ge", "opm")
#: Method hyperparameters of the demo (dotted ``method.*`` overrides); the rest are the defaults.
DEMO_METHOD_OPTIONS: dict[str, dict[str, object]] = {
    "ogm": {"alpha": 0.8},
    "ogm_ge": {"alpha": 0.8},
    "opm": {"q_base": 0.5, "lam": 0.5, "p_exe": 0.7},
}
#: Epochs of ``--quick`` (one seed).
QUICK_EPOCHS = 4


def lab_config(
    preset: str, method: str, seed: int, output_dir: str | Path, *, epochs: int | None = None, probe: bool = True
) -> ExperimentConfig:
    """The config of one lab run with the preset's tuned recipe (MLP encoders, concat head, SGD).

    Example:
        >>> cfg = lab_config("tiny", "ogm", seed=1, output_dir="runs")
        >>> cfg.model.encoders["visual"].options["hidden_dim"], cfg.optim.lr, cfg.method.alpha
        (16, 0.05, 0.8)
    """
    from modbalance.data.synthetic import lab_preset

    spec = lab_preset(preset)
    recipe = spec.recipe
    overrides = [
        "data.name=synthetic",
        f"data.preset={preset}",
        f"data.options.seed={seed}",  # as in the lab's own sweep: the seed draws the data and the model
        f"method.name={method}",
        f"seed={seed}",
        f"output_dir={output_dir}",
        f"optim.lr={recipe.lr}",
        f"optim.momentum={recipe.momentum}",
        f"optim.weight_decay={recipe.weight_decay}",
        "optim.scheduler.name=none",
        f"train.batch_size={recipe.batch_size}",
        f"train.epochs={epochs or recipe.epochs}",
        f"train.probe={str(probe).lower()}",
        "train.progress=false",
    ]
    for modality in spec.modalities:
        prefix = f"model.encoders.{modality}"
        overrides += [
            f"{prefix}.name=mlp",
            f"{prefix}.options.hidden_dim={recipe.hidden_dim}",
            f"{prefix}.options.out_dim={recipe.feature_dim}",
            f"{prefix}.options.depth={recipe.encoder_depth}",
        ]
    overrides += [f"method.{key}={value}" for key, value in DEMO_METHOD_OPTIONS.get(method, {}).items()]
    return load_config(None, overrides)


def demo_configs(
    out_dir: str | Path, *, preset: str = "default", seeds: int = 3, quick: bool = False
) -> list[ExperimentConfig]:
    """Every run of the demo: each method and each uni-modal reference, for each seed.

    Example:
        >>> [c.method.name for c in demo_configs("out", preset="tiny", seeds=1)]
        ['joint', 'ogm', 'ogm_ge', 'opm', 'unimodal:audio', 'unimodal:visual']
    """
    from modbalance.data.synthetic import lab_preset

    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    seeds = 1 if quick else seeds
    epochs = min(QUICK_EPOCHS, lab_preset(preset).recipe.epochs) if quick else None
    methods = [*DEMO_METHODS, *(f"unimodal:{m}" for m in lab_preset(preset).modalities)]
    runs = Path(out_dir) / "runs"
    return [lab_config(preset, method, seed, runs, epochs=epochs) for seed in range(seeds) for method in methods]


@dataclass
class DemoResult:
    """What :func:`run_demo` produced."""

    report: Path
    table: str
    run_dirs: list[Path]
    wall_time_s: float


def run_demo(
    out_dir: str | Path,
    *,
    preset: str = "default",
    seeds: int = 3,
    quick: bool = False,
    on_run: Callable[[int, int, ExperimentConfig, float], None] | None = None,
) -> DemoResult:
    """Train every demo run into ``<out_dir>/runs/`` and write ``<out_dir>/report.md``.

    Args:
        out_dir: output folder (created).
        preset: lab preset name.
        seeds: number of seeds (``quick`` uses one).
        quick: one seed and :data:`QUICK_EPOCHS` epochs, for smoke tests.
        on_run: called after each run with (index, total, config, seconds), e.g. to print progress.
    """
    from modbalance.report import find_runs, format_table, summarize, write_report
    from modbalance.train.trainer import run

    started = time.perf_counter()
    configs = demo_configs(out_dir, preset=preset, seeds=seeds, quick=quick)
    run_dirs = []
    for index, config in enumerate(configs):
        begin = time.perf_counter()
        run_dirs.append(run(config))
        if on_run is not None:
            on_run(index, len(configs), config, time.perf_counter() - begin)
    records = find_runs(run_dirs)
    title = f"modbalance demo: imbalance lab, preset {preset!r}"
    report = write_report(records, out_dir, title=title)
    return DemoResult(report, format_table(summarize(records)), run_dirs, time.perf_counter() - started)
