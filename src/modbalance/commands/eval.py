"""``modbalance eval --run DIR``: score a finished run's best checkpoint on its test split again."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from modbalance.commands.train import fail

#: Metrics that must match ``summary.json`` within this absolute tolerance.
TOLERANCE = 1e-6


def register(subparsers: Any) -> None:
    """Add the ``eval`` sub-command to the top-level parser."""
    parser = subparsers.add_parser(
        "eval",
        help="re-evaluate a saved run's best checkpoint",
        description=(
            "Rebuild the run from RUN_DIR/config.yaml, load checkpoints/best.pt (chosen on the validation split) "
            "and score it on the test split; compare with summary.json. Exit 1 if they differ."
        ),
    )
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="a run folder written by modbalance train")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="split to score (default test)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``eval``; returns 0, 1 (differs from summary.json) or 2 (not a run folder)."""
    from pathlib import Path

    from modbalance.train import evaluate_run
    from modbalance.train.checkpoint import CheckpointError

    try:
        metrics = evaluate_run(args.run, split=args.split, device=args.device)
    except (ValueError, FileNotFoundError, CheckpointError) as error:
        return fail("eval", error)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    summary_path = Path(args.run) / "summary.json"
    if args.split != "test" or not summary_path.is_file():
        return 0
    saved = json.loads(summary_path.read_text())["test"]
    differ = {}
    for key, value in metrics.items():
        old = saved.get(key)
        same = (old is None and not math.isfinite(value)) or (
            old is not None and math.isclose(old, value, rel_tol=0.0, abs_tol=TOLERANCE)
        )
        if not same:
            differ[key] = (old, value)
    if differ:
        return fail("eval", f"test metrics differ from {summary_path} (saved, now): {differ}", 1)
    print(f"matches {summary_path}")
    return 0
