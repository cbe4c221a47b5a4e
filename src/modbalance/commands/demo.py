"""``modbalance demo [--quick]``: every method on the built-in imbalance lab; needs no data."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from modbalance.commands.train import fail


def register(subparsers: Any) -> None:
    """Add the ``demo`` sub-command to the top-level parser."""
    parser = subparsers.add_parser(
        "demo",
        help="joint, OGM, OGM-GE, OPM and uni-modal runs on the imbalance lab, with a report (no data needed)",
        description=(
            "Train joint training, OGM, OGM-GE, OPM and one uni-modal reference per modality on the built-in "
            "imbalance lab (synthetic data with exact Bayes-optimal limits) for several seeds, print one table and "
            "write report.md with plots. About a minute on 2 CPU cores; --quick runs one seed with fewer epochs."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="one seed, few epochs (a smoke test)")
    parser.add_argument("--out", default=None, help="output folder (default ./modbalance-demo-<date>-<time>)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--preset", default="default", help="lab preset (default, three, tiny)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: the lab's small MLPs run fastest on one)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``demo``; returns 0, or 2 on bad arguments or an existing run folder."""
    import torch

    from modbalance.train.demo import run_demo

    if args.threads < 1:
        return fail("demo", f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    out = args.out or time.strftime("modbalance-demo-%Y%m%d-%H%M%S")

    def progress(index: int, total: int, config: Any, seconds: float) -> None:
        print(
            f"[{index + 1}/{total}] {config.method.name} seed {config.seed}: {seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    try:
        result = run_demo(out, preset=args.preset, seeds=args.seeds, quick=args.quick, on_run=progress)
    except (ValueError, FileExistsError) as error:
        return fail("demo", error)
    print(result.table)
    print(f"\nreport: {result.report}\ntotal time: {result.wall_time_s:.0f} s")
    return 0
