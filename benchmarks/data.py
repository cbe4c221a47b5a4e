"""Throughput of the file-based data pipeline: ``prep`` clips/s and CREMA-D loader samples/s.

Self-contained: it writes a synthetic release in the raw CREMA-D layout
(:func:`modbalance.data.av_toy.make_av_toy_release`: WAV tones + FLV videos with drawn shapes, at the
real CREMA-D frame size 480 × 360 by default), so no data download is needed.

* ``prep``: ``prepare("cremad", ...)`` (A1 spectrogram 257 × 188 from 16 kHz WAV resampled to 22.05 kHz,
  1-fps JPEG frames decoded with PyAV) into a fresh folder, once per ``--prep-workers`` entry, after an
  untimed warm-up on one clip (library imports); prepared clips per second.
* loader: :class:`~modbalance.data.cremad.CremaD` train split under the ``cremad/ogm_ge`` preset
  (audio (1, 257, 188), one 224-px frame with random-resized crop + flip), through a ``DataLoader``
  (batch 16) with 0, 2 and all CPU workers (persistent); samples per second over ``--loader-epochs``
  epochs after one untimed warm-up epoch.

The numbers depend on the machine and its load; report them with the command and the CPU.

Usage::

    python benchmarks/data.py                       # 20 clips per class, 480 x 360 video: about a minute
    python benchmarks/data.py --per-class 5 --size 64x48 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch


def _loader_rate(root: Path, workers: int, epochs: int, batch_size: int) -> float:
    from modbalance.data.presets import preset_data_options
    from modbalance.data.registry import build_dataset

    options = preset_data_options("cremad/ogm_ge")
    dataset = build_dataset(options.pop("name"), root, "train", **options)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    for _ in loader:  # warm-up epoch, untimed: worker start-up, imports, page cache
        pass
    count, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        dataset.set_epoch(epoch)
        for inputs, _ in loader:
            count += inputs["audio"].shape[0]
    return count / (time.perf_counter() - start)


def _warm_up(raw: Path, out: Path) -> None:
    """Prepare one clip untimed, so that the first timed run does not pay the media libraries' imports."""
    from modbalance.prep import PrepOptions, process_job
    from modbalance.prep.cremad import list_cremad

    job = list_cremad(raw).jobs[0]
    process_job(job, out, PrepOptions(recipes=("a1",)))
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=20, help="toy clips per class (6 classes)")
    parser.add_argument("--size", default="480x360", help="video frame size WxH (CREMA-D: 480x360)")
    parser.add_argument("--prep-workers", default="0,2", help="comma-separated worker counts for prep")
    parser.add_argument("--loader-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="loader with 0 workers only, one timed epoch")
    parser.add_argument("--keep", default=None, help="write the release and outputs here instead of a temp folder")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from modbalance.data.av_toy import make_av_toy_release
    from modbalance.prep import prepare

    width, height = (int(v) for v in args.size.lower().split("x"))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="modbalance-bench-"))
    results: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch_threads": torch.get_num_threads(),
        "clips": args.per_class * 6,
        "video": f"{width}x{height}",
    }
    try:
        started = time.perf_counter()
        raw = make_av_toy_release(work / "raw", per_class=args.per_class, width=width, height=height)
        results["release_seconds"] = round(time.perf_counter() - started, 2)
        _warm_up(raw, work / "warm-up")
        prep_rates = {}
        for workers in (int(w) for w in args.prep_workers.split(",")):
            out = work / f"prepared_w{workers}"
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            manifest = prepare("cremad", raw, out, workers=workers, progress=False)
            seconds = time.perf_counter() - started
            prep_rates[workers] = round(manifest["counts"]["prepared"] / seconds, 1)
            print(
                f"prep cremad, {workers} workers: {prep_rates[workers]} clips/s "
                f"({manifest['counts']['prepared']} clips in {seconds:.1f} s)"
            )
        results["prep_clips_per_s"] = prep_rates
        prepared = work / f"prepared_w{int(args.prep_workers.split(',')[0])}"
        loader_workers = [0] if args.quick else sorted({0, 2, os.cpu_count() or 1})
        loader_rates = {}
        for workers in loader_workers:
            epochs = 1 if args.quick else args.loader_epochs
            rate = _loader_rate(prepared, workers, epochs, 4 if args.quick else args.batch_size)
            loader_rates[workers] = round(rate, 1)
            print(f"CremaD loader (cremad/ogm_ge), {workers} workers: {loader_rates[workers]} samples/s")
        results["loader_samples_per_s"] = loader_rates
        print(json.dumps(results))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
