"""``modbalance report DIR... [--out DIR]``: one table and plots from finished runs."""

from __future__ import annotations

import argparse
from typing import Any

from modbalance.commands.train import fail


def register(subparsers: Any) -> None:
    """Add the ``report`` sub-command to the top-level parser."""
    parser = subparsers.add_parser(
        "report",
        help="table and plots from finished runs",
        description=(
            "Collect the finished runs at or below each DIR (folders with summary.json), group them by their full "
            "resolved config (config.yaml) minus the seed, the output folder and the run name (one row per group; "
            "when a method has several rows, each row names the keys that differ, e.g. 'ogm (method.alpha=0.1)'), "
            "print the table (test accuracy mean ± std over seeds, per-modality and linear-probe accuracy, gap "
            "to the Bayes limit on the lab) and write report.md with PNG plots into --out."
        ),
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run folders, or folders holding run folders")
    parser.add_argument("--out", default="report", help="output folder for report.md and plots (default ./report)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``report``; returns 0, or 2 when a folder holds no finished run."""
    from modbalance.report import find_runs, format_table, summarize, write_report

    try:
        runs = find_runs(args.dirs)
        report = write_report(runs, args.out)
    except (ValueError, FileNotFoundError) as error:
        return fail("report", error)
    print(format_table(summarize(runs)))
    print(f"\nreport: {report}")
    return 0
