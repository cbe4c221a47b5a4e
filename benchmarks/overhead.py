"""Training-step overhead of OGM-GE and OPM on CPU, and the speed of ``unimodal_scores``.

Run::

    python benchmarks/overhead.py            # full figures (about a minute on 2 cores)
    python benchmarks/overhead.py --quick    # smoke run

Part 1 times one optimizer step of a small two-encoder convolutional model (audio
spectrogram 1x128x128, one RGB frame 3x96x96, batch 32, concat fusion, SGD) for plain
joint training, OGM-GE (alpha 0.8) and OPM (TPAMI defaults). Methods are interleaved over
several rounds; the overhead is computed from each method's fastest round (as ``timeit``
does: other processes can only add time) and the median round is shown beside it. Target: at
most 3% overhead.

Part 2 compares ``unimodal_scores`` with a transcription of the official per-sample scoring
loop (softmax recomputed for every sample) at batch 64 and 31 classes, two modalities.
Target: at least 20x faster.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from modbalance import OGM, OPM, MultimodalClassifier, kept_cross_entropy, unimodal_scores
from modbalance.fusion import Concat


def conv_encoder(in_channels: int) -> nn.Module:
    """A small all-conv encoder: few parameters, many multiply-adds (like the ResNets it stands for)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 5, stride=2, padding=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip


def make_step(method: str, batch: int, size: int):
    torch.manual_seed(0)
    model = MultimodalClassifier(
        {"audio": conv_encoder(1), "visual": conv_encoder(3)},
        Concat({"audio": 128, "visual": 128}, num_classes=6),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    ogm = OGM(model.modality_parameters(), alpha=0.8, noise=True) if method == "ogm_ge" else None
    opm = OPM() if method == "opm" else None
    inputs = {
        "audio": torch.randn(batch, 1, size, size),
        "visual": torch.randn(batch, 3, size * 3 // 4, size * 3 // 4),
    }
    y = torch.randint(0, 6, (batch,))

    def step() -> None:
        out = model(inputs, opm=opm, scores=(lambda z: unimodal_scores(z, y)) if opm else None)
        loss = kept_cross_entropy(out.logits, y, out.keep) if opm else F.cross_entropy(out.logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if ogm is not None:
            ogm.modulate(out.unimodal_logits, y)
        optimizer.step()

    return step


def time_steps(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def bench_overhead(batch: int, size: int, steps: int, rounds: int) -> dict[str, list[float]]:
    methods = ("joint", "ogm_ge", "opm")
    steppers = {m: make_step(m, batch, size) for m in methods}
    for step in steppers.values():
        time_steps(step, 3)  # warm-up
    samples: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(rounds):
        for m in methods:
            samples[m].append(time_steps(steppers[m], steps))
    return samples


def official_scores(out_a: torch.Tensor, out_v: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Transcription of the official loop: softmax over the whole batch, recomputed per sample."""
    softmax = nn.Softmax(dim=1)
    score_a = sum([softmax(out_a)[i][label[i]] for i in range(out_a.size(0))])
    score_v = sum([softmax(out_v)[i][label[i]] for i in range(out_v.size(0))])
    return score_a, score_v


def bench_scores(repeats: int) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    za, zv = torch.randn(64, 31, generator=g), torch.randn(64, 31, generator=g)
    y = torch.randint(0, 31, (64,), generator=g)
    ours = unimodal_scores({"audio": za, "visual": zv}, y)
    ref = official_scores(za, zv, y)
    assert torch.allclose(ours["audio"], ref[0]) and torch.allclose(ours["visual"], ref[1])

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            best = min(best, (time.perf_counter() - start) / repeats)
        return best

    return timed(lambda: official_scores(za, zv, y)), timed(lambda: unimodal_scores({"audio": za, "visual": zv}, y))


def main() -> None:
    parser = argparse.ArgumentParser(description="OGM-GE / OPM overhead and scoring speed on CPU")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch, size, steps, rounds = (4, 32, 2, 2) if args.quick else (32, 128, 5, 12)

    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}")
    samples = bench_overhead(batch, size, steps, rounds)
    best = {m: min(v) for m, v in samples.items()}
    print(f"\nTraining step, batch {batch}, audio 1x{size}x{size}, visual 3x{size * 3 // 4}x{size * 3 // 4}, ", end="")
    print(f"{rounds} rounds of {steps} steps:")
    print("| method | best ms / step | median ms / step | overhead vs joint (best) |\n|---|---|---|---|")
    for method, values in samples.items():
        overhead = 100 * (best[method] / best["joint"] - 1)
        print(f"| {method} | {best[method] * 1e3:.1f} | {statistics.median(values) * 1e3:.1f} | {overhead:+.1f}% |")

    official, ours = bench_scores(repeats=20 if args.quick else 200)
    print("\nUni-modal scores, batch 64, 31 classes, two modalities:")
    print("| implementation | µs / call |\n|---|---|")
    print(f"| official per-sample loop | {official * 1e6:.0f} |\n| unimodal_scores | {ours * 1e6:.0f} |")
    print(f"speed-up: {official / ours:.0f}x")


if __name__ == "__main__":
    main()
