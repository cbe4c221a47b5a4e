"""The ``modbalance`` command line: one sub-command per module in :mod:`modbalance.commands`.

Each sub-command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to the callable that runs it and returns an exit code. Sub-commands import their
heavy dependencies lazily, so ``modbalance --help`` works on a core-only install.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Sub-command modules under ``modbalance.commands``, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("demo", "train", "compare", "eval", "report", "prep")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="modbalance",
        description="Balanced multimodal learning: OGM, OGM-GE and OPM for PyTorch.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"modbalance.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
