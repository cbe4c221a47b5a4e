"""Where modbalance costs time on CPU: each method's own code in a training step, the OGM-GE noise, the CLI.

Run (one run prints every figure of the "Core overhead" section of docs/benchmarks.md)::

    python benchmarks/overhead.py            # full figures: several minutes on 2 cores
    python benchmarks/overhead.py --quick    # smoke run: small inputs, few rounds

Everything is measured in this one process (parts 4 and 5 start subprocesses), interleaved, and
reported as the median with the spread (min to max) over rounds, with the CPU model and the load
average before and after each part: on a shared machine a figure without its load is not a figure.

1. **Own code share.** A ResNet-18 pair at CREMA-D shapes (audio 1x257x188, one RGB frame 3x224x224,
   batch 8, concat fusion, SGD with momentum), one training step per method per round in rotating
   order: joint, OGM (alpha 0.8), OGM-GE (alpha 0.8, noise) and OPM (TPAMI defaults). Timers around the
   method's own calls (``OGM.modulate``; the scores callable and ``OPM.forward``) give its time, shown as
   a share of the joint step of the same round (targets: OGM-GE <= 3%, OGM and OPM < 1%). The whole
   step of each method against joint's is printed too, as a secondary figure: its noise is the
   machine's, not the method's.
2. **OGM-GE ``modulate()`` before and after** the noise rewrite, on the same gradients (restored
   before every call, untimed): a copy of the previous algorithm (kept here only for this comparison:
   one flat ``randn`` into a fresh buffer, per-tensor ``std``, separate scale and add passes), the
   current one with its default threads, and the current one on one thread. Target: <= 0.5x.
3. ``unimodal_scores`` against a transcription of the official per-sample scoring loop (batch 64,
   31 classes, two modalities).
4. ``modbalance --help`` wall time (target < 1 s), next to ``python -c "import torch"``.
5. ``modbalance train --config lab/ogm`` against a minimal script with the same recipe (same data,
   model, optimizer, OGM, 20 epochs, validation every epoch, test of the best epoch), each a fresh
   process, interleaved (target <= 1.2x).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modbalance import OGM, OPM, MultimodalClassifier, kept_cross_entropy, unimodal_scores
from modbalance.encoders.registry import build_encoder
from modbalance.fusion import Concat
from modbalance.imbalance import _coefficient_vector, _ratio_vector

METHODS = ("joint", "ogm", "ogm_ge", "opm")


# ---------------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - Windows
        return "load average unavailable"


def spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """``median [min-max]`` of ``values * scale``."""
    v = [x * scale for x in values]
    return f"{statistics.median(v):.{digits}f} [{min(v):.{digits}f}-{max(v):.{digits}f}]"


# ---------------------------------------------------------------------------------------------- part 1
class Timer:
    """Adds the wall time of wrapped calls to ``self.total``."""

    def __init__(self) -> None:
        self.total = 0.0

    def wrap(self, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - start

        return timed


def resnet_pair(quick: bool) -> tuple[MultimodalClassifier, dict[str, Tensor], Tensor]:
    torch.manual_seed(0)
    encoders = {"audio": build_encoder("resnet18_audio"), "visual": build_encoder("resnet18_visual")}
    model = MultimodalClassifier(encoders, Concat({"audio": 512, "visual": 512}, num_classes=6)).train()
    batch, (h, w), side = (2, (64, 48), 32) if quick else (8, (257, 188), 224)
    inputs = {"audio": torch.randn(batch, 1, h, w), "visual": torch.randn(batch, 3, 1, side, side)}
    return model, inputs, torch.randint(0, 6, (batch,))


def bench_steps(rounds: int, quick: bool) -> None:
    model, inputs, y = resnet_pair(quick)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    timers = {m: Timer() for m in METHODS}
    ogm = {
        "ogm": OGM(model.modality_parameters(), alpha=0.8),
        "ogm_ge": OGM(model.modality_parameters(), alpha=0.8, noise=True, generator=torch.Generator().manual_seed(0)),
    }
    opm = OPM(generator=torch.Generator().manual_seed(0))
    opm.forward = timers["opm"].wrap(opm.forward)  # type: ignore[method-assign]
    scores = timers["opm"].wrap(lambda z: unimodal_scores(z, y))
    modulate = {name: timers[name].wrap(o.modulate) for name, o in ogm.items()}

    def step(method: str) -> None:
        optimizer.zero_grad(set_to_none=True)
        if method == "opm":
            out = model(inputs, opm=opm, scores=scores)
            loss = kept_cross_entropy(out.logits, y, out.keep)
        else:
            out = model(inputs)
            loss = F.cross_entropy(out.logits, y)
        loss.backward()
        if method in modulate:
            modulate[method](out.unimodal_logits, y)
        optimizer.step()

    for method in METHODS:  # warm-up (and the noise buffer's first touch)
        step(method)
    steps: dict[str, list[float]] = {m: [] for m in METHODS}
    own: dict[str, list[float]] = {m: [] for m in METHODS}
    print(f"\n## 1. Own code inside the step: ResNet-18 pair, batch {inputs['audio'].shape[0]}, {rounds} rounds")
    print(f"before: {load()}")
    for r in range(rounds):
        for method in METHODS[r % len(METHODS) :] + METHODS[: r % len(METHODS)]:
            timers[method].total = 0.0
            start = time.perf_counter()
            step(method)
            steps[method].append(time.perf_counter() - start)
            own[method].append(timers[method].total)
    print(f"after: {load()}")
    joint = steps["joint"]
    print("| method | step ms | vs joint step (secondary) | own code ms | own code, % of the joint step |")
    print("|---|---|---|---|---|")
    for method in METHODS:
        ratio = [s / j for s, j in zip(steps[method], joint, strict=True)]
        share = [o / j for o, j in zip(own[method], joint, strict=True)]
        mine = "—" if method == "joint" else spread(own[method], 1e3)
        pct = "—" if method == "joint" else spread(share, 100, 2)
        print(f"| {method} | {spread(steps[method], 1e3, 0)} | {spread(ratio, 1, 3)} | {mine} | {pct} |")


# ---------------------------------------------------------------------------------------------- part 2
def legacy_modulate(ogm: OGM, logits: dict[str, Tensor], target: Tensor) -> dict[str, float]:
    """The OGM-GE ``modulate()`` before the noise rewrite (gradient space, no window, one process).

    Kept here only for the comparison: scores with a separate finiteness pass, one flat ``randn``
    into a freshly allocated buffer, a per-tensor ``std``, then scale and add passes.
    """
    with torch.no_grad():
        values = [logits[m] for m in ogm.modalities]
        c = values[0].shape[1]
        bad_target = ((target < 0) | (target >= c)).any()
        index = target.clamp(0, c - 1).view(1, -1, 1).expand(len(values), -1, 1)
        probs = torch.softmax(torch.stack([v.detach().float() for v in values]), dim=2)
        scores = probs.gather(2, index).sum(dim=(1, 2))
    ratios = _ratio_vector(scores, ogm.rule)
    coefficients = _coefficient_vector(ratios, ogm.alpha, ogm.coefficient)
    grads = {m: [p.grad for p in ogm.groups[m] if p.grad is not None] for m in ogm.modalities}
    flat = [g for m in ogm.modalities for g in grads[m]]
    stds = torch.stack([g.float().std() if g.numel() > 1 else torch.zeros(()) for g in flat])
    sizes = [g.numel() for g in flat]
    buffer = torch.randn(sum(sizes), generator=ogm.generator)
    noise = [chunk.view(g.shape) for chunk, g in zip(buffer.split(sizes), flat, strict=True)]
    torch._foreach_mul_(noise, list((stds + 1e-8).unbind()))
    m = len(ogm.modalities)
    host = torch.cat([bad_target.reshape(1).float(), torch.isfinite(scores).float(), ratios, coefficients]).tolist()
    k = dict(zip(ogm.modalities, host[1 + 2 * m :], strict=True))
    start = 0
    for name, coefficient in k.items():
        group = grads[name]
        if group and coefficient != 1.0:
            torch._foreach_mul_(group, coefficient)
        torch._foreach_add_(group, noise[start : start + len(group)])
        start += len(group)
    return k


def bench_modulate(rounds: int, quick: bool) -> None:
    model, inputs, y = resnet_pair(quick)
    out = model(inputs)
    F.cross_entropy(out.logits, y).backward()
    logits = {m: z.detach() for m, z in out.unimodal_logits.items()}
    params = [p for p in model.parameters() if p.grad is not None]
    saved = [p.grad.clone() for p in params]
    variants: dict[str, Callable[[], object]] = {}
    legacy = OGM(model.modality_parameters(), alpha=0.8, noise=True, generator=torch.Generator().manual_seed(0))
    variants["previous modulate()"] = lambda: legacy_modulate(legacy, logits, y)
    current = OGM(model.modality_parameters(), alpha=0.8, noise=True, generator=torch.Generator().manual_seed(0))
    variants[f"current, {current._threads()} threads"] = lambda: current.modulate(logits, y)
    single = OGM(model.modality_parameters(), alpha=0.8, noise=True, generator=torch.Generator().manual_seed(0))
    single.noise_threads = 1
    variants["current, 1 thread"] = lambda: single.modulate(logits, y)
    n = sum(p.numel() for p in params)
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    print(f"\n## 2. OGM-GE modulate(), {n / 1e6:.1f} M gradient values, {rounds} rounds")
    print(f"before: {load()}")
    for r in range(rounds + 1):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            for p, g in zip(params, saved, strict=True):
                p.grad.copy_(g)
            start = time.perf_counter()
            variants[name]()
            if r:  # round 0 warms up
                times[name].append(time.perf_counter() - start)
    print(f"after: {load()}")
    base = times[names[0]]
    print("| implementation | ms | vs previous (per round) |\n|---|---|---|")
    for name in names:
        ratio = [t / b for t, b in zip(times[name], base, strict=True)]
        print(f"| {name} | {spread(times[name], 1e3)} | {spread(ratio, 1, 2)} |")


# ---------------------------------------------------------------------------------------------- part 3
def official_scores(out_a: Tensor, out_v: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
    """Transcription of the official loop: softmax over the whole batch, recomputed per sample."""
    softmax = nn.Softmax(dim=1)
    score_a = sum([softmax(out_a)[i][label[i]] for i in range(out_a.size(0))])
    score_v = sum([softmax(out_v)[i][label[i]] for i in range(out_v.size(0))])
    return score_a, score_v  # type: ignore[return-value]


def bench_scores(repeats: int, rounds: int) -> None:
    g = torch.Generator().manual_seed(0)
    za, zv = torch.randn(64, 31, generator=g), torch.randn(64, 31, generator=g)
    y = torch.randint(0, 31, (64,), generator=g)
    ours = unimodal_scores({"audio": za, "visual": zv}, y)
    ref = official_scores(za, zv, y)
    assert torch.allclose(ours["audio"], ref[0]) and torch.allclose(ours["visual"], ref[1])
    fns = {
        "official per-sample loop": lambda: official_scores(za, zv, y),
        "unimodal_scores": lambda: unimodal_scores({"audio": za, "visual": zv}, y),
    }
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            times[name].append((time.perf_counter() - start) / repeats)
    print(f"\n## 3. Uni-modal scores, batch 64, 31 classes, two modalities ({load()})")
    print("| implementation | µs / call |\n|---|---|")
    for name, values in times.items():
        print(f"| {name} | {spread(values, 1e6, 0)} |")
    speedup = statistics.median(times["official per-sample loop"]) / statistics.median(times["unimodal_scores"])
    print(f"speed-up (medians): {speedup:.0f}x")


# ---------------------------------------------------------------------------------------------- parts 4, 5
def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_cli(rounds: int) -> None:
    commands = {
        "modbalance --help": [sys.executable, "-m", "modbalance", "--help"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            times[name].append(wall(command))
    print(f"\n## 4. Command line start-up, {rounds} rounds ({load()})")
    print("| command | s |\n|---|---|")
    for name, values in times.items():
        print(f"| `{name}` | {spread(values, 1, 2)} |")


def minimal_lab(epochs: int) -> None:
    """The recipe of ``lab/ogm`` in a plain loop: what a user would write without the trainer."""
    from modbalance.data import SyntheticLab, lab_preset
    from modbalance.encoders.mlp import MLPEncoder

    torch.set_num_threads(1)
    torch.manual_seed(0)
    lab = SyntheticLab(lab_preset("default"), seed=0)
    train, val, test = lab.split("train"), lab.split("val"), lab.split("test")
    names = list(train.inputs)
    k = int(train.targets.max()) + 1
    model = MultimodalClassifier(
        {m: MLPEncoder(train.inputs[m].shape[1], 64, 32, depth=2) for m in names},
        Concat(dict.fromkeys(names, 32), num_classes=k),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ogm = OGM(model.modality_parameters(), alpha=0.8)

    def accuracy(split) -> float:  # type: ignore[no-untyped-def]
        model.eval()
        with torch.no_grad():
            right = (model(split.inputs).logits.argmax(1) == split.targets).float().mean().item()
        model.train()
        return right

    best, best_state = -1.0, None
    for _ in range(epochs):
        order = torch.randperm(len(train))
        for start in range(0, len(train), 64):
            index = order[start : start + 64]
            x, y = {m: train.inputs[m][index] for m in names}, train.targets[index]
            out = model(x)
            optimizer.zero_grad()
            F.cross_entropy(out.logits, y).backward()
            ogm.modulate(out.unimodal_logits, y)
            optimizer.step()
        value = accuracy(val)
        if value > best:
            best, best_state = value, {n: t.clone() for n, t in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    print(f"test accuracy {accuracy(test):.4f}")


def bench_trainer(rounds: int, epochs: int) -> None:
    with tempfile.TemporaryDirectory() as out:
        commands = {
            "minimal script": [sys.executable, __file__, "--minimal-lab", str(epochs)],
        }
        times: dict[str, list[float]] = {"modbalance train": [], "minimal script": []}
        print(f"\n## 5. modbalance train --config lab/ogm vs a minimal script, {epochs} epochs, {rounds} rounds")
        print(f"before: {load()}")
        for r in range(rounds):
            trainer = [sys.executable, "-m", "modbalance", "train", "--config", "lab/ogm"]
            trainer += [f"train.epochs={epochs}", "train.probe=false", f"output_dir={out}", f"run_name=r{r}"]
            commands["modbalance train"] = trainer
            for name in list(times) if r % 2 == 0 else list(reversed(times)):
                times[name].append(wall(commands[name]))
        print(f"after: {load()}")
    ratio = [t / m for t, m in zip(times["modbalance train"], times["minimal script"], strict=True)]
    print("| run | s |\n|---|---|")
    for name, values in times.items():
        print(f"| {name} | {spread(values, 1, 1)} |")
    print(f"ratio (per round): {spread(ratio, 1, 2)}")


def main() -> None:
    parser = argparse.ArgumentParser(description="modbalance's own costs on CPU (see the module docstring)")
    parser.add_argument("--quick", action="store_true", help="small inputs and few rounds (a smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as train.threads)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of parts 1 and 2 (default 8; quick 2)")
    parser.add_argument("--parts", default="1,2,3,4,5", help="comma-separated parts to run (default all)")
    parser.add_argument("--minimal-lab", type=int, metavar="EPOCHS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.minimal_lab is not None:
        minimal_lab(args.minimal_lab)
        return
    parts = {p.strip() for p in args.parts.split(",")}
    rounds = args.rounds or (2 if args.quick else 8)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# benchmarks/overhead.py{' --quick' if args.quick else ''}, {when}")
    print(
        f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, {args.threads} torch thread(s)"
    )
    print(load())
    if "1" in parts:
        bench_steps(rounds, args.quick)
    if "2" in parts:
        bench_modulate(rounds * 2, args.quick)
    if "3" in parts:
        bench_scores(20 if args.quick else 200, 3 if args.quick else 7)
    if "4" in parts:
        bench_cli(2 if args.quick else 5)
    if "5" in parts:
        bench_trainer(1 if args.quick else 3, 2 if args.quick else 20)


if __name__ == "__main__":
    main()
