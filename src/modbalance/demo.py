"""``modbalance demo``: every method on the imbalance lab (or, with ``--av``, on real files), with a report.

The demo trains, on a lab preset (``"default"``: a dominant ``audio`` and a weak ``visual``),
plain joint training, OGM, OGM-GE, OPM and one uni-modal reference per modality, with the
training recipe the preset was tuned with (``lab_preset(name).recipe``), for several seeds;
then it prints the table of :func:`modbalance.report.format_table` and writes ``report.md`` with
plots. Every run is an ordinary run folder under ``<out>/runs/``, so ``modbalance eval`` and
``modbalance report`` work on them too.

:func:`run_av_demo` (``modbalance demo --av``) runs the whole file-based pipeline instead: it
writes a toy audio-visual release in the raw CREMA-D layout (a tone whose pitch depends on the
class, a drawn shape that depends on the class: :func:`~modbalance.data.av_toy.make_av_toy_release`),
prepares it with :func:`modbalance.prep.prepare` (video decoding, A1 spectrograms, JPEG frames),
and trains ResNet-18 audio and visual encoders from scratch with the shipped ``cremad/tpami_*``
configs on small frames, then writes the same table and report (without the Bayes column: the
toy's Bayes-optimal accuracy is not known).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modbalance.train.config import ExperimentConfig, load_config

__all__ = [
    "AV_DEMO_METHODS",
    "AV_DEMO_OVERRIDES",
    "DEMO_METHODS",
    "DEMO_METHOD_OPTIONS",
    "AVDemoSize",
    "DemoResult",
    "av_demo_configs",
    "demo_configs",
    "lab_config",
    "run_av_demo",
    "run_demo",
]

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
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage (``--av``: raw, prep, train)


def train_and_report(
    configs: list[ExperimentConfig],
    out_dir: str | Path,
    title: str,
    on_run: Callable[[int, int, ExperimentConfig, float], None] | None = None,
) -> tuple[list[Path], Path, str]:
    """Train ``configs`` one after the other, then write ``<out_dir>/report.md`` over their runs.

    The one loop behind ``modbalance demo``, ``demo --av`` and ``demo --real``.

    Args:
        configs: the runs, in order.
        out_dir: where the report goes.
        title: the report's title.
        on_run: called after each run with (index, total, config, seconds).

    Returns:
        ``(run_dirs, report, table)``: the run folders, the report's path and the summary table
        as Markdown.
    """
    from modbalance.report import find_runs, format_table, summarize, write_report
    from modbalance.train.trainer import run

    run_dirs = []
    for index, config in enumerate(configs):
        begin = time.perf_counter()
        run_dirs.append(run(config))
        if on_run is not None:
            on_run(index, len(configs), config, time.perf_counter() - begin)
    records = find_runs(run_dirs)
    report = write_report(records, out_dir, title=title)
    return run_dirs, report, format_table(summarize(records))


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
    started = time.perf_counter()
    configs = demo_configs(out_dir, preset=preset, seeds=seeds, quick=quick)
    title = f"modbalance demo: imbalance lab, preset {preset!r}"
    run_dirs, report, table = train_and_report(configs, out_dir, title, on_run)
    return DemoResult(report, table, run_dirs, time.perf_counter() - started)


# ------------------------------------------------------------------------------------------------ --av
#: The methods of ``demo --av``: each has a shipped ``cremad/tpami_<method>`` config.
AV_DEMO_METHODS: tuple[str, ...] = ("joint", "ogm_ge", "opm")


@dataclass(frozen=True)
class AVDemoSize:
    """The size of ``demo --av``: toy clips per class (6 classes), epochs, and whether uni-modal references run.

    Example:
        >>> AVDemoSize.quick().per_class, AVDemoSize.default().epochs
        (4, 5)
    """

    per_class: int
    epochs: int
    unimodal: bool
    test_fraction: float = 0.2

    @classmethod
    def default(cls) -> AVDemoSize:
        """120 clips (96 train, of which 20% validate, 24 test), 5 epochs, uni-modal references: minutes on CPU."""
        return cls(per_class=20, epochs=5, unimodal=True)

    @classmethod
    def quick(cls) -> AVDemoSize:
        """24 clips, one epoch, no uni-modal references: seconds (a smoke test)."""
        return cls(per_class=4, epochs=1, unimodal=False, test_fraction=0.25)


#: What ``demo --av`` changes in the shipped ``cremad/tpami_*`` configs, and why (dotted overrides).
AV_DEMO_OVERRIDES: tuple[str, ...] = (
    "data.options.image_size=64",  # small frames: the toy video is 64 x 48, and CPU time
    "data.options.crop_scale_min=0.6",  # a crop of 8% of the frame would often miss the drawn shape
    "data.val_fraction=0.2",  # the toy lists have train and test only
    "method.start_epoch=0",  # the TPAMI warm-up (epochs 0-5) would leave a 5-epoch demo unmodulated
    "method.end_epoch=null",
    "train.batch_size=16",
    "train.eval_batch_size=64",
    "train.num_workers=0",
    "train.probe=true",
    "train.progress=false",
    "train.threads=0",  # keep the thread count that `demo --threads` set (up to 4 for the ResNets)
)


def av_demo_configs(
    prepared: str | Path, out_dir: str | Path, *, size: AVDemoSize, seeds: int = 1
) -> list[ExperimentConfig]:
    """The runs of ``demo --av`` on the prepared toy data: each method (and uni-modal reference) per seed.

    Each is the shipped ``cremad/tpami_<method>`` config (the TPAMI 2024 CREMA-D settings: ResNet-18
    encoders from scratch, AdamW 1e-3) with :data:`AV_DEMO_OVERRIDES`.

    Example:
        >>> configs = av_demo_configs("prepared", "out", size=AVDemoSize.default())
        >>> [c.method.name for c in configs]
        ['joint', 'ogm_ge', 'opm', 'unimodal:audio', 'unimodal:visual']
        >>> configs[0].model.encoders["audio"].name, configs[0].data.options["image_size"]
        ('resnet18_audio', 64)
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    runs = Path(out_dir) / "runs"
    plan = [(f"cremad/tpami_{m}", m) for m in AV_DEMO_METHODS]
    if size.unimodal:
        plan += [("cremad/tpami_joint", f"unimodal:{m}") for m in ("audio", "visual")]
    return [
        load_config(
            name,
            [
                f"data.root={prepared}",
                *AV_DEMO_OVERRIDES,
                f"method.name={method}",
                f"train.epochs={size.epochs}",
                f"seed={seed}",
                f"output_dir={runs}",
            ],
        )
        for seed in range(seeds)
        for name, method in plan
    ]


def run_av_demo(
    out_dir: str | Path,
    *,
    quick: bool = False,
    seeds: int = 1,
    workers: int = 2,
    on_run: Callable[[int, int, ExperimentConfig, float], None] | None = None,
    on_stage: Callable[[str, float], None] | None = None,
) -> DemoResult:
    """Toy release -> ``prepare`` -> ResNet-18 runs -> ``<out_dir>/report.md``; the file pipeline end to end.

    Writes ``<out_dir>/data/raw`` (the toy release, CREMA-D layout), ``<out_dir>/data/prepared``
    (what ``modbalance prep cremad`` writes), ``<out_dir>/runs/`` and the report.

    Args:
        out_dir: output folder (created).
        quick: :meth:`AVDemoSize.quick` instead of :meth:`AVDemoSize.default`.
        seeds: number of seeds.
        workers: ``prepare`` worker processes.
        on_run: called after each run with (index, total, config, seconds).
        on_stage: called after the toy release and the preparation with (stage name, seconds).

    Raises:
        FileExistsError: ``<out_dir>/runs`` already holds these runs.
    """
    from modbalance.data.av_toy import make_av_toy_release
    from modbalance.prep import prepare

    started = time.perf_counter()
    size = AVDemoSize.quick() if quick else AVDemoSize.default()
    out = Path(out_dir)
    stages: dict[str, float] = {}

    def stage(name: str, begin: float) -> None:
        stages[name] = time.perf_counter() - begin
        if on_stage is not None:
            on_stage(name, stages[name])

    begin = time.perf_counter()
    raw = out / "data" / "raw"
    if not (raw / "train.csv").is_file():
        make_av_toy_release(raw, per_class=size.per_class, test_fraction=size.test_fraction)
    stage("toy release", begin)
    begin = time.perf_counter()
    prepared = out / "data" / "prepared"
    manifest = prepare("cremad", raw, prepared, workers=workers, progress=False)
    stage("prep", begin)
    configs = av_demo_configs(prepared, out, size=size, seeds=seeds)
    begin = time.perf_counter()
    title = "modbalance demo --av: a toy audio-visual release through prep and ResNet-18 encoders"
    run_dirs, report, table = train_and_report(configs, out, title, on_run)  # no Bayes column: no known limit
    stage("training", begin)
    counts = manifest["counts"]
    notes = [
        "",
        "There is no Bayes column: unlike the imbalance lab, the toy data's Bayes-optimal accuracy is not known.",
        "",
        "## Pipeline",
        "",
        f"- Toy release (raw CREMA-D layout, `make_av_toy_release(per_class={size.per_class})`): `{raw}`; "
        "audio is a tone whose pitch depends on the class, the video a drawn shape that depends on the class.",
        f"- `modbalance prep cremad --raw {raw} --out {prepared} --workers {workers}`: "
        f"{counts['prepared']} clips prepared, {counts['skipped']} skipped "
        "(A1 spectrograms 257 x 188, 1-fps JPEG frames).",
        "- Training: the shipped configs `cremad/tpami_joint`, `cremad/tpami_ogm_ge`, `cremad/tpami_opm` (ResNet-18 "
        f"audio and visual encoders from scratch, AdamW 1e-3) for {size.epochs} epoch(s), with "
        + ", ".join(f"`{o}`" for o in AV_DEMO_OVERRIDES)
        + ".",
        "- Time (s): " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in stages.items()) + ".",
        "",
    ]
    text = report.read_text()
    head, sep, tail = text.partition("\n## ")
    report.write_text(head.rstrip("\n") + "\n" + "\n".join(notes) + ("\n## " + tail if sep else ""))
    return DemoResult(report, table, run_dirs, time.perf_counter() - started, stages)
