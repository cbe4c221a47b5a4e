"""Draw the figures of docs/diagnose.md from a real ``modbalance demo`` run.

Usage::

    modbalance demo --out /tmp/demo                       # about 30 s on 2 CPU cores
    python docs/make_figures.py --demo /tmp/demo           # writes docs/figures/*.png
    python docs/make_figures.py                            # runs the demo itself first

Figures (matplotlib's object API, no pyplot, no display needed):

* ``diagnose_weak_modality.png``: the weak modality (visual) after each method: its accuracy
  inside the joint model and its linear-probe accuracy, against the same encoder trained alone
  and the exact Bayes limit; mean and standard deviation over the demo's seeds.
* ``diagnose_curves.png``: per-epoch curves: the dominant modality's discrepancy ratio ρ on the
  training batches, and the weak modality's validation accuracy inside the model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from modbalance.report import RunRecord, find_runs

OUT = Path(__file__).resolve().parent / "figures"
METHODS = ("joint", "ogm", "ogm_ge", "opm")
COLORS = {"joint": "C0", "ogm": "C1", "ogm_ge": "C2", "opm": "C3", "alone": "C5"}


def _by_method(runs: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    grouped: dict[str, list[RunRecord]] = {}
    for record in runs:
        grouped.setdefault(record.method, []).append(record)
    return grouped


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def weak_modality_figure(runs: Sequence[RunRecord], weak: str, path: Path) -> None:
    """Bars: the weak modality inside each model and its probe; lines: alone and Bayes."""
    from matplotlib.figure import Figure

    grouped = _by_method(runs)
    methods = [m for m in METHODS if m in grouped]
    inside = [_mean_std([100 * r.summary["test"][f"accuracy/{weak}"] for r in grouped[m]]) for m in methods]
    probe = [_mean_std([100 * r.summary["probe"][weak] for r in grouped[m]]) for m in methods]
    alone_runs = grouped.get(f"unimodal:{weak}", [])
    alone = _mean_std([100 * r.summary["test"]["accuracy"] for r in alone_runs]) if alone_runs else None
    bayes = 100 * runs[0].summary["bayes"][weak]
    seeds = len(grouped[methods[0]])

    figure = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = figure.subplots()
    positions = range(len(methods))
    width = 0.38
    ax.bar(
        [p - width / 2 for p in positions],
        [m for m, _ in inside],
        width,
        yerr=[s for _, s in inside],
        capsize=3,
        color="0.65",
        label=f"{weak} accuracy inside the model (its own logits)",
    )
    ax.bar(
        [p + width / 2 for p in positions],
        [m for m, _ in probe],
        width,
        yerr=[s for _, s in probe],
        capsize=3,
        color="C0",
        label=f"linear probe on the frozen {weak} encoder",
    )
    for p, (m_inside, s_inside), (m_probe, s_probe) in zip(positions, inside, probe, strict=True):
        ax.text(p - width / 2, m_inside + s_inside + 1.5, f"{m_inside:.0f}", ha="center", fontsize=9)
        ax.text(p + width / 2, m_probe + s_probe + 1.5, f"{m_probe:.0f}", ha="center", fontsize=9)
    if alone is not None:
        ax.axhline(
            alone[0], color=COLORS["alone"], linestyle="--", label=f"same encoder trained alone ({alone[0]:.1f})"
        )
    ax.axhline(bayes, color="k", linestyle=":", label=f"Bayes limit of {weak} ({bayes:.1f})")
    ax.axhline(25, color="0.8", linewidth=0.8)
    ax.text(-0.45, 26, "chance", ha="left", fontsize=8, color="0.5")
    ax.set_xticks(list(positions), methods)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 110)
    ax.set_title(f"The weak modality ({weak}) after each method, lab preset 'default', {seeds} seeds")
    ax.legend(fontsize=8, loc="upper left", ncols=2)
    ax.grid(axis="y", alpha=0.3)
    figure.savefig(path, dpi=110)


def _curve(records: Sequence[RunRecord], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Epochs, mean, min and max over seeds of ``key``."""
    points: dict[int, list[float]] = {}
    for record in records:
        for entry in record.history:
            if isinstance(entry.get(key), (int, float)):
                points.setdefault(int(entry["epoch"]), []).append(
                    100 * float(entry[key]) if "accuracy" in key else float(entry[key])
                )
    epochs = sorted(points)
    return (
        epochs,
        [statistics.fmean(points[e]) for e in epochs],
        [min(points[e]) for e in epochs],
        [max(points[e]) for e in epochs],
    )


def curves_figure(runs: Sequence[RunRecord], dominant: str, weak: str, path: Path) -> None:
    """Left: ρ of the dominant modality per epoch. Right: the weak modality's validation accuracy."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    grouped = _by_method(runs)
    figure = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    for method in METHODS:
        if method not in grouped:
            continue
        epochs, mean, low, high = _curve(grouped[method], f"train/rho/{dominant}")
        left.plot(epochs, mean, marker=".", color=COLORS[method], label=method)
        left.fill_between(epochs, low, high, color=COLORS[method], alpha=0.15)
        epochs, mean, low, high = _curve(grouped[method], f"val/accuracy/{weak}")
        right.plot(epochs, mean, marker=".", color=COLORS[method], label=method)
        right.fill_between(epochs, low, high, color=COLORS[method], alpha=0.15)
    alone = grouped.get(f"unimodal:{weak}")
    if alone:
        epochs, mean, low, high = _curve(alone, "val/accuracy")
        right.plot(epochs, mean, marker=".", color=COLORS["alone"], linestyle="--", label=f"{weak} alone")
        right.fill_between(epochs, low, high, color=COLORS["alone"], alpha=0.15)
    left.axhline(1.0, color="k", linewidth=0.8, linestyle=":")
    left.set_title(f"ρ({dominant}) on the training batches (1 = balanced)")
    left.set_ylabel("epoch mean of ρ")
    right.set_title(f"{weak} accuracy inside the model (validation)")
    right.set_ylabel("accuracy (%)")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, help="a finished `modbalance demo --out DIR` folder (default: run it)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the PNGs (default {OUT})")
    args = parser.parse_args(argv)
    demo = args.demo
    if demo is None:
        import torch

        from modbalance.demo import run_demo

        torch.set_num_threads(1)
        demo = Path(tempfile.mkdtemp(prefix="modbalance-demo-"))
        run_demo(demo / "demo")
        demo = demo / "demo"
    runs = find_runs([demo])
    modalities = runs[0].summary["modalities"]
    dominant, weak = modalities[0], modalities[1]  # the lab's "default": audio dominates, visual is weak
    args.out.mkdir(parents=True, exist_ok=True)
    weak_modality_figure(runs, weak, args.out / "diagnose_weak_modality.png")
    curves_figure(runs, dominant, weak, args.out / "diagnose_curves.png")
    print(f"wrote {args.out}/diagnose_weak_modality.png and diagnose_curves.png from {demo}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
