"""``modbalance compare --config CFG --methods joint,ogm_ge,opm,mslr --seeds 3 --out DIR``.

Trains every listed method with every seed on one configuration (the config's method section is
replaced by ``method.name=<method>``), then writes ``DIR/report.md`` with the table and plots of
:func:`modbalance.report.write_report` and prints the table. Runs go to
``DIR/runs/<method>-seed<seed>``; a run that already finished there is reused, one that was
interrupted is resumed from its last checkpoint, so an interrupted comparison continues where it
stopped. Overrides apply to every run (``key=value``) or to one method
(``--set mslr:method.options.lrs={audio: 0.05, visual: 0.5}``).

Every method is built on its model before the first run, so a method the model cannot take fails
at once. Options that name other runs' folders (UMT's ``teachers``, G-Blending's ``trial_runs``)
may name runs of this same comparison that come earlier in ``--methods`` (within each seed the
methods run in the order given); any other named folder must already exist.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from modbalance.commands.train import fail, setup_logging


def register(subparsers: Any) -> None:
    """Add the ``compare`` sub-command to the top-level parser."""
    parser = subparsers.add_parser(
        "compare",
        help="train several methods x seeds on one config and write a comparison report",
        description=(
            "Train each method of --methods (joint, ogm, ogm_ge, opm, opm+ogm, unimodal:<modality> or a method "
            "of modbalance.methods such as mslr) with each of --seeds seeds on the config, then write DIR/report.md "
            "(table: fused test accuracy mean ± std, each modality's accuracy and linear probe, the Bayes gap on "
            "the lab; plots) and print the table. Finished runs in DIR/runs are reused and interrupted ones resumed."
        ),
    )
    parser.add_argument("--config", required=True, help="YAML config file or shipped config name (lab/joint, ...)")
    parser.add_argument("--methods", required=True, help="comma-separated method names, e.g. joint,ogm_ge,opm,mslr")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default 3)")
    parser.add_argument("--out", required=True, help="output folder (runs/ and report.md go there)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD:key=value",
        help="an override for one method only, e.g. mslr:method.options.lrs.visual=0.5 (repeatable)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for every run")
    parser.set_defaults(func=run)


def _per_method(items: list[str], methods: list[str]) -> dict[str, list[str]]:
    """``["mslr:a=1", ...]`` -> ``{"mslr": ["a=1"]}``; every method named must be compared."""
    found: dict[str, list[str]] = {m: [] for m in methods}
    for item in items:
        method, sep, override = item.partition(":")
        if method.startswith("unimodal") and sep:  # unimodal:audio:key=value
            modality, sep, override = override.partition(":")
            method = f"{method}:{modality}"
        if not sep or "=" not in override:
            raise ValueError(f"--set {item!r} must look like METHOD:key=value (e.g. mslr:method.options.lrs.audio=0.1)")
        if method not in found:
            raise ValueError(
                f"--set {item!r} names method {method!r}, which is not in --methods ({', '.join(methods)})"
            )
        found[method].append(override)
    return found


def _check_methods(configs: list[Any]) -> None:
    """Build each method on its model (CPU, no training) so that a method the model or the run
    cannot take (e.g. a two-modality method on six views) fails before the first run, not hours in.

    Raises:
        ValueError: the run's name and the method's message (what is missing, how to provide it).
    """
    import torch

    from modbalance.train.build import build_methods, build_model
    from modbalance.train.data import build_data

    bundles: dict[str, Any] = {}
    for index, config in enumerate(configs):
        key = repr(config.data)
        if key not in bundles:
            bundles[key] = build_data(config)
        # runs earlier in the list will have finished when this one starts (UMT's teachers, G-Blending's trial runs)
        earlier = [Path(c.output_dir) / str(c.run_name) for c in configs[:index]]
        try:
            model = build_model(config, bundles[key])
            build_methods(config, model, torch.device("cpu"), distributed=False, planned_runs=earlier)
        except ValueError as error:
            raise ValueError(f"{config.run_name}: {error}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``compare``; returns 0, or 2 on a bad argument or config (before any training)."""
    from modbalance.report import find_runs, format_table, summarize, write_report
    from modbalance.train import load_config
    from modbalance.train import run as train_run

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or len(set(methods)) != len(methods):
        return fail("compare", f"--methods must name distinct methods, got {args.methods!r}")
    if args.seeds < 1:
        return fail("compare", f"--seeds must be >= 1, got {args.seeds}")
    out = Path(args.out)
    runs_dir = out / "runs"
    try:
        extra = _per_method(args.set, methods)
        configs = []
        for seed in range(args.seeds):  # every config is checked before the first run starts
            for method in methods:
                name = f"{method.replace(':', '-')}-seed{seed}"
                overrides = [
                    *args.overrides,
                    f"method.name={method}",
                    *extra[method],
                    f"seed={seed}",
                    f"output_dir={runs_dir}",
                    f"run_name={name}",
                ]
                configs.append(load_config(args.config, overrides))
        _check_methods(configs[: len(methods)])
    except (ValueError, FileNotFoundError) as error:
        return fail("compare", error)
    setup_logging()
    started = time.perf_counter()
    folders = []
    for index, config in enumerate(configs):
        folder = runs_dir / str(config.run_name)
        begin = time.perf_counter()
        try:
            if (folder / "summary.json").exists():
                status = "reused"
            elif (folder / "checkpoints" / "last.pt").exists():
                train_run(config, resume=folder)
                status = "resumed"
            else:
                train_run(config)
                status = "trained"
        except (ValueError, FileExistsError, FileNotFoundError) as error:
            return fail("compare", f"{config.run_name}: {error}")
        folders.append(folder)
        seconds = time.perf_counter() - begin
        print(f"[{index + 1}/{len(configs)}] {config.run_name}: {status}, {seconds:.1f} s", file=sys.stderr, flush=True)
    records = find_runs(folders)
    title = f"modbalance compare: {args.config}, {args.seeds} seed(s)"
    report = write_report(records, out, title=title)
    print(format_table(summarize(records)))
    print(f"\nreport: {report}\ntotal time: {time.perf_counter() - started:.0f} s")
    return 0
