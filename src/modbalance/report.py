"""Tables and plots from finished runs: what ``modbalance report`` and ``modbalance demo`` print and write.

A run folder (its format is owned by :mod:`modbalance.runfolder`, read here without loading the
trainer) holds ``config.yaml``, ``metrics.jsonl`` and ``summary.json``. :func:`summarize` groups
runs by their full resolved config minus the seed (:data:`IGNORED_CONFIG_KEYS`), so that two
settings of one method are two rows, labelled with what differs, and averages over seeds;
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

from modbalance.runfolder import read_config, read_metrics, read_summary

__all__ = [
    "IGNORED_CONFIG_KEYS",
    "MethodRow",
    "RunRecord",
    "find_runs",
    "format_table",
    "load_run",
    "summarize",
    "write_report",
]

#: Display order of methods; others follow alphabetically.
METHOD_ORDER: tuple[str, ...] = ("joint", "ogm", "ogm_ge", "opm", "opm+ogm")
#: Config keys (dotted) that do not separate runs into rows: the seeds (``data.options.seed`` draws
#: the lab's data from the run's seed), where the run was written, and the progress bar.
IGNORED_CONFIG_KEYS: tuple[str, ...] = ("data.options.seed", "output_dir", "run_name", "seed", "train.progress")
#: At most this many differing keys are spelled out in a row label.
_LABEL_KEYS = 3


@dataclass
class RunRecord:
    """One finished run: its folder, per-epoch records and summary.

    Attributes:
        path: the run folder.
        history: the records of ``metrics.jsonl``, one dict per epoch (``"epoch"``, ``"val/accuracy"``,
            ``"train/rho/<m>"``, ...).
        summary: the parsed ``summary.json`` (``"method"``, ``"seed"``, ``"test"``, ``"probe"``, ``"bayes"``, ...).
        config: the resolved config the run saved (``config.yaml``) as nested dicts, or None
            when the folder has none (then runs are grouped by method alone).

    Example:
        >>> record = RunRecord(Path("runs/x"), [{"epoch": 0, "val/accuracy": 0.5}], {"method": "ogm", "seed": 0})
        >>> record.method, record.history[-1]["val/accuracy"]
        ('ogm', 0.5)
    """

    path: Path
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    config: dict[str, Any] | None = None

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
    folder = Path(path)
    summary = read_summary(folder)
    return RunRecord(folder, read_metrics(folder / "metrics.jsonl"), summary, read_config(folder))


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
        differs: dotted config key -> this row's value, for the keys on which rows of the same
            method differ (empty when the method has one row).

    Example:
        >>> row = MethodRow("opm", seeds=[0, 1], fused=[0.96, 0.98], bayes=0.996)
        >>> round(row.gap, 3), row.label
        (0.026, 'opm')
        >>> MethodRow("ogm", differs={"method.alpha": 0.1}).label
        'ogm (method.alpha=0.1)'
    """

    method: str
    seeds: list[int] = field(default_factory=list)
    fused: list[float] = field(default_factory=list)
    modality: dict[str, list[float]] = field(default_factory=dict)
    probe: dict[str, list[float]] = field(default_factory=dict)
    bayes: float | None = None
    differs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The method name, followed by what differs from its other rows (at most three keys)."""
        return _label(self.method, self.differs)

    @property
    def gap(self) -> float | None:
        """Bayes-optimal accuracy minus the mean fused test accuracy (None without a limit)."""
        if self.bayes is None or not self.fused:
            return None
        return self.bayes - statistics.fmean(self.fused)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": leaf}``; an empty dict is a leaf."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, child in value.items():
            flat.update(_flatten(child, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _label(method: str, differs: dict[str, Any]) -> str:
    if not differs:
        return method
    shown = [
        f"{key}={_canonical(value) if isinstance(value, (dict, list)) else value}" for key, value in differs.items()
    ]
    more = len(shown) - _LABEL_KEYS
    return f"{method} ({', '.join(shown[:_LABEL_KEYS])}{f', +{more} more' if more > 0 else ''})"


def _groups(runs: Sequence[RunRecord]) -> list[tuple[str, dict[str, Any], list[RunRecord]]]:
    """Runs grouped by method and resolved config minus :data:`IGNORED_CONFIG_KEYS`.

    Returns (method, differing keys and values, runs) per group, in display order.
    """
    grouped: dict[tuple[str, str], tuple[dict[str, Any], list[RunRecord]]] = {}
    for record in runs:
        flat = {} if record.config is None else _flatten(record.config)
        kept = {key: value for key, value in flat.items() if key not in IGNORED_CONFIG_KEYS}
        key = (record.method, _canonical(kept))
        grouped.setdefault(key, (kept, []))[1].append(record)
    out = []
    for method in sorted({method for method, _ in grouped}, key=_method_key):
        configs = [(config, records) for (name, _), (config, records) in grouped.items() if name == method]
        keys = sorted({k for config, _ in configs for k in config})
        varying = [k for k in keys if len({_canonical(config.get(k, "<unset>")) for config, _ in configs}) > 1]
        rows = [({k: config.get(k) for k in varying}, records) for config, records in configs]
        rows.sort(key=lambda item: _canonical(item[0]))
        out += [(method, differs, records) for differs, records in rows]
    return out


def summarize(runs: Sequence[RunRecord]) -> list[MethodRow]:
    """Group runs by resolved config minus the seed; the Bayes limit of ``unimodal:<m>`` is modality m's own.

    Runs are one row when their ``config.yaml`` files agree on every key but
    :data:`IGNORED_CONFIG_KEYS` (runs without a ``config.yaml`` are grouped by method). When one
    method has several rows, each row's :attr:`MethodRow.differs` names the keys on which they
    differ, and its :attr:`MethodRow.label` shows them.

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
    rows = []
    for method, differs, records in _groups(runs):
        row = MethodRow(method, differs=differs)
        for record in records:
            summary = record.summary
            row.seeds.append(int(summary.get("seed", 0)))
            row.fused.append(float(summary["test"]["accuracy"]))
            for key, value in summary["test"].items():
                if key.startswith("accuracy/") and value is not None:
                    row.modality.setdefault(key.split("/", 1)[1], []).append(float(value))
            for modality, value in (summary.get("probe") or {}).items():
                row.probe.setdefault(modality, []).append(float(value))
            bayes = summary.get("bayes") or {}
            limit_key = method.split(":", 1)[1] if method.startswith("unimodal:") else "fused"
            row.bayes = bayes.get(limit_key, row.bayes)
        rows.append(row)
    return rows


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
        cells = [row.label, str(len(row.seeds)), _pct(row.fused)]
        cells += [_pct(row.modality.get(m, [])) for m in modalities]
        cells += [_pct(row.probe.get(m, [])) for m in modalities]
        if with_limits:
            cells.append("–" if row.gap is None else f"{100 * row.gap:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_curves(runs: Sequence[RunRecord], key: str) -> dict[str, tuple[list[int], list[float]]]:
    """Row label -> (epochs, mean over seeds of ``key``) for the runs whose records have ``key``."""
    curves: dict[str, dict[int, list[float]]] = {}
    for method, differs, records in _groups(runs):
        for record in records:
            for entry in record.history:
                value = entry.get(key)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    label = _label(method, differs)
                    curves.setdefault(label, {}).setdefault(int(entry["epoch"]), []).append(float(value))
    return {
        label: (sorted(points), [statistics.fmean(points[e]) for e in sorted(points)])
        for label, points in curves.items()
    }


def _plot_grid(grid: Sequence[Sequence[tuple[str, str]]], runs: Sequence[RunRecord], path: Path, ylabel: str) -> bool:
    """A grid of panels (title, metric key), one line per method; rows without data are left out.

    Returns False (and writes nothing) when no panel has data.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    labels = [_label(method, differs) for method, differs, _ in _groups(runs)]
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
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
    lines += ["## Runs", ""] + [
        f"- `{r.path}` ({_label(method, differs)}, seed {r.summary.get('seed')})"
        for method, differs, records in _groups(runs)
        for r in records
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
