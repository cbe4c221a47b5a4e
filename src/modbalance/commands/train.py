"""``modbalance train --config FILE [key=value ...]``: train one run (also under ``torchrun``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

#: Exit codes (the table of every command: docs/run-folder.md): 0 done, 1 training diverged (non-finite
#: loss or weights), 2 bad config, input or run folder, 3 a file of the run folder could not be written
#: (full disk, permissions), 4 the run folder is in use by another process.
EXIT_DIVERGED, EXIT_USAGE, EXIT_WRITE_FAILED, EXIT_BUSY = 1, 2, 3, 4


def register(subparsers: Any) -> None:
    """Add the ``train`` sub-command to the top-level parser."""
    parser = subparsers.add_parser(
        "train",
        help="train one run from a YAML config",
        description=(
            "Train one run: the YAML config (a path, or a shipped name such as lab/ogm) is merged over typed "
            "defaults, then key=value overrides are applied (e.g. method.alpha=0.8 train.epochs=5). Unknown keys, "
            "wrong types and impossible values are refused before training. The run folder "
            "<output_dir>/<run_name>/ gets config.yaml, metrics.jsonl, summary.json, checkpoints/ and tb/. "
            "Works unchanged under torchrun --nproc_per_node N -m modbalance train ..."
        ),
    )
    parser.add_argument("--config", help="YAML config file or shipped config name (lab/joint, lab/ogm, lab/tiny, ...)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, values parsed as YAML")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.set_defaults(func=run)


def setup_logging() -> None:
    """INFO messages of the library on stderr (rank 0 only under torchrun)."""
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)


def fail(command: str, message: object, code: int = EXIT_USAGE) -> int:
    """Print ``modbalance <command>: error: <message>`` on stderr and return ``code``."""
    print(f"modbalance {command}: error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    """Run ``train``; returns 0, 1 (diverged), 2 (bad config, input or folder), 3 (write failed) or 4 (busy)."""
    from modbalance.runfolder import RunFolderBusyError, RunWriteError
    from modbalance.train import NonFiniteLossError, load_config
    from modbalance.train import run as train_run
    from modbalance.train.checkpoint import CheckpointError

    if args.config is None and args.resume is None:
        return fail("train", "give --config FILE (or --resume RUN_DIR)")
    if args.resume is not None and args.overrides:
        return fail("train", "--resume continues a run with its saved config.yaml; overrides are not allowed")
    setup_logging()
    try:
        config = load_config(args.config, args.overrides) if args.config is not None else None
        folder = train_run(config, resume=args.resume)
    except NonFiniteLossError as error:
        return fail("train", error, EXIT_DIVERGED)
    except RunWriteError as error:
        return fail("train", f"{error}; the checkpoints already written are intact", EXIT_WRITE_FAILED)
    except RunFolderBusyError as error:
        return fail("train", error, EXIT_BUSY)
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError) as error:
        return fail("train", error)
    if os.environ.get("RANK", "0") == "0":
        print(folder)
    return 0
