"""The lab table of docs/complex-models.md: each interaction model, joint vs OGM-GE vs OPM, and each modality alone.

For every architecture config (lab/transformer, lab/bottleneck, lab/mmtm, lab/centralnet) and every
method (joint, ogm_ge, opm), and for each modality alone (lab/unimodal, late fusion MLP), trains
``--seeds`` runs of ``--epochs`` epochs on the lab's default preset (the data seed stays 0; the
run seed changes) and reports the mean and spread of the fused test accuracy, the weak
modality's (visual) linear probe, and the lab's exact Bayes limits. On the Adam-trained
transformer configs OGM-GE scales the update (``method.space=update``), since Adam cancels a
gradient scale.

Run: ``python benchmarks/complex_table.py --epochs 10 --workers 2 --out table.json``
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ARCHS = ("centralnet", "mmtm", "transformer", "bottleneck")
METHODS = ("joint", "ogm_ge", "opm")
ADAM_CONFIGS = ("transformer", "bottleneck")


def _one(job: tuple[str, str, int, int, str]) -> dict[str, Any]:
    config_name, method, seed, epochs, out_dir = job
    import torch

    from modbalance.train import load_config, run

    torch.set_num_threads(1)
    overrides = [
        f"method.name={method}",
        f"seed={seed}",
        f"train.epochs={epochs}",
        "train.progress=false",
        f"output_dir={out_dir}",
        f"run_name={config_name.replace('/', '_')}-{method.replace(':', '_')}-{seed}",
    ]
    if method == "ogm_ge" and config_name.split("/")[1] in ADAM_CONFIGS:
        overrides.append("method.space=update")
    folder = run(load_config(config_name, overrides))
    summary = json.loads((Path(folder) / "summary.json").read_text())
    return {
        "config": config_name,
        "method": method,
        "seed": seed,
        "accuracy": summary["test"]["accuracy"],
        "probe": summary.get("probe", {}),
        "bayes": summary.get("bayes", {}),
        "wall_time_s": summary.get("wall_time_s"),
    }


def _cell(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    spread = 100 * (statistics.stdev(values) if len(values) > 1 else 0.0)
    return f"{mean:.1f} ± {spread:.1f}"


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table: rows (architecture, method), fused accuracy and visual probe, mean ± std over seeds."""
    lines = [
        "| model | method | fused test accuracy (%) | visual linear probe (%) | audio linear probe (%) |",
        "|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["config"], r["method"]), []).append(r)
    for (config, method), rows in groups.items():
        fused = _cell([r["accuracy"] for r in rows]) if not method.startswith("unimodal:") else "—"
        probes = [
            _cell([r["probe"][m] for r in rows]) if rows[0]["probe"].get(m) is not None else "—"
            for m in ("visual", "audio")
        ]
        if method.startswith("unimodal:"):
            # the alone run's test accuracy is that modality's accuracy
            m = method.split(":", 1)[1]
            probes[0 if m == "visual" else 1] = _cell([r["accuracy"] for r in rows]) + " (alone, test acc.)"
        lines.append(f"| {config.split('/')[1]} | {method} | {fused} | {probes[0]} | {probes[1]} |")
    bayes = next((r["bayes"] for r in results if r["bayes"]), {})
    if bayes:
        limits = " | ".join(f"{100 * bayes[k]:.1f}" for k in ("fused", "visual", "audio"))
        lines.append(f"| Bayes limit | — | {limits} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--out", type=Path, default=None, help="write the raw results as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # cheapest first, so that a run cut short still has complete rows
        jobs = [("lab/unimodal", f"unimodal:{m}", s, args.epochs, tmp) for m in ("visual", "audio") for s in args.seeds]
        jobs += [(f"lab/{a}", m, s, args.epochs, tmp) for a in args.archs for m in METHODS for s in args.seeds]
        results: list[dict[str, Any]] = []
        with ProcessPoolExecutor(args.workers) as pool:
            for result in pool.map(_one, jobs):
                results.append(result)
                if args.out is not None:  # written as it goes, so a partial table survives
                    args.out.write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
