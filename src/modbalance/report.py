"""Tables and plots from finished runs: what ``modbalance report`` and ``modbalance demo`` print and write.

A run folder (see :mod:`modbalance.train.outputs`) holds ``config.yaml``, ``metrics.jsonl`` and
``summary.json``. :func:`summarize` groups runs by method and averages over seeds;
:func:`format_table` renders a Markdown table (fused test accuracy mean ± std, per-modality
accuracy, linear-probe accuracy per modality, and the gap to the Bayes-optimal limit when the data
is the imbalance lab); :func:`write_report` writes ``report.md`` with PNG plots (per-epoch
validation accuracy of each modality for each method, and the traces of ``rho``, ``k`` and ``q``).
Plots use matplotlib's object API (no pyplot, no global backend change).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MethodRow", "RunRecord", "find_runs", "format_table", "load_run", "summarize", "write_report"]

#: Display order of methods; others follow alphabetically.
METHOD_ORDER: tuple[str, ...] = ("joint", "ogm", "ogm_ge", "opm", "opm+ogm")


@dataclass
class RunRecord:
    """One finished run: its folder, per-epoch records and summary.

    Attributes:
        path: the run folder.
        history: the records of ``metrics.jsonl``, one dict per epoch (``"epoch"``, ``"val/accuracy"``,
            ``"train/rho/<m>"``, ...).
        summary: the parsed ``summary.json`` (``"method"``, ``"seed"``, ``"test"``, ``"probe"``, ``"bayes"``, ...).

    Example:
        >>> record = RunRecord(Path("runs/x"), [{"epoch": 0, "val/accuracy": 0.5}], {"method": "ogm", "seed": 0})
        >>> record.method, record.history[-1]["val/accuracy"]
        ('ogm', 0.5)
    """

    path: Path
    history: list[dict[str, Any]]
    summary: dict[str, Any]

    @property
    def method(self) -> str:
        """The method name (``summary["method"]``)."""
        return str(self.summary["method"])


def load_run(path: str | Path) -> RunRecord:
    """Read a finished run folder.

    Raises:
        FileNotFoundError: ``summary.json`` or ``metrics.jsonl`` is missing (the run did not finish).

    Example:
        >>> import json, tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for seed, acc in [(0, 0.80), (1, 0.90)]:
        ...     run = Path(tmp.name) / f"joint-seed{seed}"
        ...     run.mkdir()
        ...     _ = (run / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "val/accuracy": acc}) + "\\n")
        ...     summary = {"method": "joint", "seed": seed, "modalities": ["audio"], "bayes": {"fused": 0.95},
        ...                "test": {"accuracy": acc, "accuracy/audio": 0.7}, "probe": {"audio": 0.75}}
        ...     _ = (run / "summary.json").write_text(json.dumps(summary))
        >>> record = load_run(Path(tmp.name) / "joint-seed1")
        >>> record.method, record.summary["test"]["accuracy"], len(record.history)
        ('joint', 0.9, 1)
        >>> tmp.cleanup()
    """
    from modbalance.train.outputs import read_metrics

    folder = Path(path)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{folder} is not a finished run: {summary_path} is missing")
    summary = json.loads(summary_path.read_text())
    return RunRecord(folder, read_metrics(folder / "metrics.jsonl"), summary)


def find_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    """Finished runs at or below each path (a run folder, or a folder of run folders), sorted by path.

    Raises:
        FileNotFoundError: a path does not exist, or holds no finished run.

    Example:
        >>> import json, tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for seed, acc in [(0, 0.80), (1, 0.90)]:
        ...     run = Path(tmp.name) / f"joint-seed{seed}"
        ...     run.mkdir()
        ...     _ = (run / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "val/accuracy": acc}) + "\\n")
        ...     summary = {"method": "joint", "seed": seed, "modalities": ["audio"], "bayes": {"fused": 0.95},
        ...                "test": {"accuracy": acc, "accuracy/audio": 0.7}, "probe": {"audio": 0.75}}
        ...     _ = (run / "summary.json").write_text(json.dumps(summary))
        >>> [record.path.name for record in find_runs([tmp.name])]
        ['joint-seed0', 'joint-seed1']
        >>> tmp.cleanup()
    """
    runs: dict[Path, RunRecord] = {}
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        found = [p.parent for p in sorted(path.rglob("summary.json"))]
        if not found:
            raise FileNotFoundError(f"{path} holds no finished run (no summary.json at or below it)")
        for folder in found:
            runs.setdefault(folder.resolve(), load_run(folder))
    return [runs[key] for key in sorted(runs)]


def _method_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


@dataclass
class MethodRow:
    """Seed statistics of one method: each metric as a list over seeds.

    Attributes:
        method: the method name (``"joint"``, ``"ogm"``, ..., ``"unimodal:<m>"``).
        seeds: the seeds, one per run.
        fused: fused test accuracy per run.
        modality: modality name -> its uni-modal test accuracy per run.
        probe: modality name -> its linear-probe test accuracy per run.
        bayes: the Bayes-optimal accuracy of the row (imbalance lab only), else None.

    Example:
        >>> row = MethodRow("opm", seeds=[0, 1], fused=[0.96, 0.98], bayes=0.996)
        >>> round(row.gap, 3)
        0.026
    """

    method: str
    seeds: list[int] = field(default_factory=list)
    fused: list[float] = field(default_factory=list)
    modality: dict[str, list[float]] = field(default_factory=dict)
    probe: dict[str, list[float]] = field(default_factory=dict)
    bayes: float | None = None

    @property
    def gap(self) -> float | None:
        """Bayes-optimal accuracy minus the mean fused test accuracy (None without a limit)."""
        if self.bayes is None or not self.fused:
            return None
        return self.bayes - statistics.fmean(self.fused)


def summarize(runs: Sequence[RunRecord]) -> list[MethodRow]:
    """Group runs by method; the Bayes limit of a ``unimodal:<m>`` row is modality m's own.

    Example:
        >>> import json, tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for seed, acc in [(0, 0.80), (1, 0.90)]:
        ...     run = Path(tmp.name) / f"joint-seed{seed}"
        ...     run.mkdir()
        ...     _ = (run / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "val/accuracy": acc}) + "\\n")
        ...     summary = {"method": "joint", "seed": seed, "modalities": ["audio"], "bayes": {"fused": 0.95},
        ...                "test": {"accuracy": acc, "accuracy/audio": 0.7}, "probe": {"audio": 0.75}}
        ...     _ = (run / "summary.json").write_text(json.dumps(summary))
        >>> [row] = summarize(find_runs([tmp.name]))
        >>> row.method, row.seeds, row.fused, row.probe, row.bayes
        ('joint', [0, 1], [0.8, 0.9], {'audio': [0.75, 0.75]}, 0.95)
        >>> tmp.cleanup()
    """
    rows: dict[str, MethodRow] = {}
    for record in runs:
        summary = record.summary
        row = rows.setdefault(record.method, MethodRow(record.method))
        row.seeds.append(int(summary.get("seed", 0)))
        row.fused.append(float(summary["test"]["accuracy"]))
        for key, value in summary["test"].items():
            if key.startswith("accuracy/") and value is not None:
                row.modality.setdefault(key.split("/", 1)[1], []).append(float(value))
        for modality, value in (summary.get("probe") or {}).items():
            row.probe.setdefault(modality, []).append(float(value))
        bayes = summary.get("bayes") or {}
        limit_key = record.method.split(":", 1)[1] if record.method.startswith("unimodal:") else "fused"
        row.bayes = bayes.get(limit_key, row.bayes)
    return [rows[name] for name in sorted(rows, key=_method_key)]


def _pct(values: Sequence[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def format_table(rows: Sequence[MethodRow]) -> str:
    """A Markdown table of :func:`summarize`'s rows; accuracies in %, mean ± std over seeds.

    The "Bayes gap" column appears only when some row has a known Bayes-optimal limit (the lab).

    Example:
        >>> row = MethodRow("joint", [0, 1], [0.80, 0.84], {"audio": [0.7, 0.7]}, {"audio": [0.9, 0.9]}, 0.95)
        >>> print(format_table([row]))
        | method | seeds | fused acc | audio acc | audio probe | Bayes gap |
        |---|---|---|---|---|---|
        | joint | 2 | 82.0 ± 2.8 | 70.0 ± 0.0 | 90.0 ± 0.0 | 13.0 |
        >>> row.bayes = None  # real data: no known limit, no column
        >>> print(format_table([row]))
        | method | seeds | fused acc | audio acc | audio probe |
        |---|---|---|---|---|
        | joint | 2 | 82.0 ± 2.8 | 70.0 ± 0.0 | 90.0 ± 0.0 |
    """
    modalities = sorted({m for row in rows for m in (*row.modality, *row.probe)})
    with_limits = any(row.gap is not None for row in rows)
    header = ["method", "seeds", "fused acc"]
    header += [f"{m} acc" for m in modalities] + [f"{m} probe" for m in modalities]
    header += ["Bayes gap"] if with_limits else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.method, str(len(row.seeds)), _pct(row.fused)]
        cells += [_pct(row.modality.get(m, [])) for m in modalities]
        cells += [_pct(row.probe.get(m, [])) for m in modalities]
        if with_limits:
            cells.append("–" if row.gap is None else f"{100 * row.gap:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_curves(runs: Sequence[RunRecord], key: str) -> dict[str, tuple[list[int], list[float]]]:
    """Method -> (epochs, mean over seeds of ``key``) for the runs whose records have ``key``."""
    curves: dict[str, dict[int, list[float]]] = {}
    for record in runs:
        for entry in record.history:
            value = entry.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                curves.setdefault(record.method, {}).setdefault(int(entry["epoch"]), []).append(float(value))
    return {
        method: (sorted(points), [statistics.fmean(points[e]) for e in sorted(points)])
        for method, points in sorted(curves.items(), key=lambda item: _method_key(item[0]))
    }


def _plot_grid(grid: Sequence[Sequence[tuple[str, str]]], runs: Sequence[RunRecord], path: Path, ylabel: str) -> bool:
    """A grid of panels (title, metric key), one line per method; rows without data are left out.

    Returns False (and writes nothing) when no panel has data.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    methods = sorted({record.method for record in runs}, key=_method_key)
    colors = {method: f"C{i % 10}" for i, method in enumerate(methods)}
    rows = [[(title, _mean_curves(runs, key)) for title, key in row] for row in grid]
    rows = [row for row in rows if any(curves for _, curves in row)]
    if not rows:
        return False
    width = max(len(row) for row in rows)
    figure = Figure(figsize=(4.2 * width, 3.2 * len(rows)), layout="constrained")
    axes = figure.subplots(len(rows), width, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(width):
            ax = axes[r][c]
            if c >= len(row) or not row[c][1]:
                ax.set_visible(False)
                continue
            title, curves = row[c]
            for method, (epochs, values) in curves.items():
                ax.plot(epochs, values, marker=".", label=method, color=colors[method])
            ax.set_title(title)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="x-small")
    figure.savefig(path, dpi=100)
    return True


def write_report(runs: Sequence[RunRecord], out_dir: str | Path, *, title: str = "modbalance report") -> Path:
    """Write ``report.md``, ``accuracy.png`` and ``traces.png`` into ``out_dir``; return the report's path.

    A plot is left out when no run has its metrics (``traces.png`` needs ``train/rho/<m>`` records).
    Needs matplotlib (``pip install "modbalance[train]"``).

    Example:
        >>> import json, tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for seed, acc in [(0, 0.80), (1, 0.90)]:
        ...     run = Path(tmp.name) / f"joint-seed{seed}"
        ...     run.mkdir()
        ...     _ = (run / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "val/accuracy": acc}) + "\\n")
        ...     summary = {"method": "joint", "seed": seed, "modalities": ["audio"], "bayes": {"fused": 0.95},
        ...                "test": {"accuracy": acc, "accuracy/audio": 0.7}, "probe": {"audio": 0.75}}
        ...     _ = (run / "summary.json").write_text(json.dumps(summary))
        >>> report = write_report(find_runs([tmp.name]), Path(tmp.name) / "report", title="two seeds")
        >>> report.read_text().splitlines()[0], sorted(p.name for p in report.parent.iterdir())
        ('# two seeds', ['accuracy.png', 'report.md'])
        >>> tmp.cleanup()
    """
    if not runs:
        raise ValueError("write_report needs at least one finished run")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    modalities = sorted({m for record in runs for m in record.summary.get("modalities", [])})
    rows = summarize(runs)
    lines = [f"# {title}", "", "Test accuracy of the best validation epoch, in %, mean ± std over seeds.", ""]
    lines += [format_table(rows), ""]
    bayes = next((r.summary["bayes"] for r in runs if r.summary.get("bayes")), None)
    if bayes:
        limits = ", ".join(f"{name} {100 * value:.1f}" for name, value in sorted(bayes.items()))
        lines += [f"Bayes-optimal accuracy (exact, from the lab's generative model): {limits}.", ""]
    accuracy_panels = [("fused", "val/accuracy")] + [(m, f"val/accuracy/{m}") for m in modalities]
    if _plot_grid([accuracy_panels], runs, out / "accuracy.png", "validation accuracy"):
        lines += ["## Per-epoch validation accuracy of each modality", "", "![accuracy](accuracy.png)", ""]
    traces = [[(f"{kind} ({m})", f"train/{kind}/{m}") for m in modalities] for kind in ("rho", "k", "q")]
    if _plot_grid(traces, runs, out / "traces.png", "epoch mean"):
        lines += [
            "## Imbalance traces",
            "",
            "rho: discrepancy ratio of the epoch's summed uni-modal scores (> 1: dominant); k: OGM's mean gradient "
            "coefficient; q: OPM's mean drop probability.",
            "",
            "![traces](traces.png)",
            "",
        ]
    lines += ["## Runs", ""] + [f"- `{r.path}` ({r.method}, seed {r.summary.get('seed')})" for r in runs]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
