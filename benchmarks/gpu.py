"""Throughput and memory of joint training, OGM-GE and OPM on a CREMA-D-shaped ResNet-18 model.

Self-contained (imports only ``modbalance`` and ``torch``), random data, no files needed:

* model: ``resnet18_audio`` + ``resnet18_visual`` encoders, :class:`~modbalance.fusion.Concat`, 6 classes;
* inputs: audio ``(B, 1, 257, 188)``, visual ``(B, 3, 1, 224, 224)`` (CREMA-D spectrogram and one frame);
* methods: ``joint`` (plain cross-entropy), ``ogm_ge`` (OGM-GE, alpha 0.8, noise) and ``opm`` (TPAMI
  defaults q_base 0.5, lambda 0.5, p_exe 0.7), each a full SGD (momentum 0.9) training step;
* configurations: every ``--precisions`` entry in eager mode, then ``torch.compile`` of both encoders for
  every ``--compile-precisions`` entry (failures are caught and reported).

For each configuration the three methods share one model and optimizer; each is warmed up, then timed in
``--rounds`` rounds of ``--steps`` steps in rotating order (``torch.cuda.synchronize`` around every round on
GPU), and the median round gives samples/s. Peak memory is ``torch.cuda.max_memory_allocated`` per method on
GPU; on CPU only the process's peak resident set size is available (cumulative over the run, not per method).
Separately, ``OGM.modulate`` alone is timed over ``--steps`` extra steps with a synchronisation before and after
it (``modulate_ms``), next to joint's time per step (``step_ms``), to show where an overhead comes from.

On CUDA, PyTorch runs fp32 convolutions in TF32 by default (``torch.backends.cudnn.allow_tf32``); the JSON
records the flags, and ``--no-tf32`` gives a strict-fp32 baseline.

Targets: OGM-GE and OPM within 3% of joint's throughput (ratio >= 0.97); bf16 at least 1.8x fp32.

Usage::

    python benchmarks/gpu.py --device cuda --out gpu.json    # the full run (its GPU time is not measured yet)
    python benchmarks/gpu.py --device cpu --quick            # smoke run on a laptop, tiny inputs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from modbalance import OGM, OPM, MultimodalClassifier, kept_cross_entropy, unimodal_scores
from modbalance.encoders.registry import build_encoder
from modbalance.fusion import Concat

METHODS = ("joint", "ogm_ge", "opm")
NUM_CLASSES = 6
FULL_SHAPES = {"audio": (1, 257, 188), "visual": (3, 1, 224, 224)}
QUICK_SHAPES = {"audio": (1, 64, 48), "visual": (3, 1, 32, 32)}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per step (default 64; quick: 4)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round (default 20; quick: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per method (default 5; quick: 1)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per method (default 3; quick: 1)")
    parser.add_argument("--precisions", default="fp32,bf16", help="eager precisions: fp32, bf16, fp16")
    parser.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="torch.compile the encoders: auto = on for CUDA, off for CPU",
    )
    parser.add_argument("--compile-precisions", default="bf16", help="precisions to run compiled (default bf16)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format for the inputs")
    parser.add_argument("--no-tf32", action="store_true", help="CUDA: disable TF32 for fp32 convs and matmuls")
    parser.add_argument("--quick", action="store_true", help="tiny inputs and few steps: a CPU smoke run")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON (after every config)")
    args = parser.parse_args(argv)
    defaults = {"batch_size": (64, 4), "steps": (20, 2), "warmup": (5, 1), "rounds": (3, 1)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("precisions", "compile_precisions"):
        values = [p.strip() for p in getattr(args, name).split(",") if p.strip()]
        bad = [p for p in values if p not in ("fp32", "bf16", "fp16")]
        if bad:
            parser.error(f"--{name.replace('_', '-')}: unknown precision(s) {bad}; use fp32, bf16, fp16")
        setattr(args, name, values)
    return args


def resolve_device(name: str) -> torch.device:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available")
    if device.type == "cuda" and device.index is None:  # torch.cuda.set_device needs an index
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def process_peak_rss_mib() -> float | None:
    """Peak resident set size of this process so far (Linux/macOS), in MiB."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class Bench:
    """One configuration: a model, an optimizer, a batch, and a step function per method."""

    def __init__(self, args: argparse.Namespace, device: torch.device, precision: str, compiled: bool) -> None:
        torch.manual_seed(0)
        self.device = device
        self.precision = precision
        shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
        encoders = {"audio": build_encoder("resnet18_audio"), "visual": build_encoder("resnet18_visual")}
        model = MultimodalClassifier(encoders, Concat({"audio": 512, "visual": 512}, num_classes=NUM_CLASSES))
        self.model = model.to(device).train()
        if args.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if compiled:
            for name in list(self.model.encoders):
                self.model.encoders[name] = torch.compile(self.model.encoders[name])  # type: ignore[assignment]
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
        self.ogm = OGM(
            self.model.modality_parameters(),
            alpha=0.8,
            noise=True,
            generator=torch.Generator(device=device).manual_seed(1),
        )
        self.opm = OPM(q_base=0.5, lam=0.5, p_exe=0.7, generator=torch.Generator(device=device).manual_seed(2))
        b = args.batch_size
        g = torch.Generator().manual_seed(3)
        self.inputs = {name: torch.randn(b, *shape, generator=g).to(device) for name, shape in shapes.items()}
        if args.channels_last:
            self.inputs["audio"] = self.inputs["audio"].contiguous(memory_format=torch.channels_last)
        self.target = torch.randint(0, NUM_CLASSES, (b,), generator=g).to(device)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.precision])

    def step(self, method: str, *, time_modulation: bool = False) -> float:
        """One full training step: forward, loss, backward, (modulation), optimizer step.

        Returns the seconds spent in ``OGM.modulate`` alone when ``time_modulation`` (synchronised
        before and after it, so the step itself is slowed down), else 0.
        """
        y = self.target
        spent = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            if method == "opm":
                out = self.model(self.inputs, opm=self.opm, scores=lambda logits: unimodal_scores(logits, y))
                loss = kept_cross_entropy(out.logits.float(), y, out.keep)
            else:
                out = self.model(self.inputs)
                loss = F.cross_entropy(out.logits.float(), y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if method == "ogm_ge":  # unscale_, then modulate the unscaled gradients
                start = self._mark(time_modulation)
                self.ogm.modulate(out.unimodal_logits, y, scaler=self.scaler, optimizer=self.optimizer)
                spent = self._mark(time_modulation) - start
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if method == "ogm_ge":
                start = self._mark(time_modulation)
                self.ogm.modulate(out.unimodal_logits, y)
                spent = self._mark(time_modulation) - start
            self.optimizer.step()
        return spent

    def _mark(self, active: bool) -> float:
        if not active:
            return 0.0
        synchronize(self.device)
        return time.perf_counter()

    def run(self, method: str, steps: int) -> float:
        """Seconds for ``steps`` steps, synchronised at both ends."""
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step(method)
        synchronize(self.device)
        return time.perf_counter() - start


def rotations(items: tuple[str, ...], rounds: int) -> Iterator[list[str]]:
    for r in range(rounds):
        k = r % len(items)
        yield list(items[k:] + items[:k])


def measure(args: argparse.Namespace, device: torch.device, precision: str, compiled: bool) -> list[dict[str, Any]]:
    """Rows for one configuration (one per method), errors recorded instead of raised."""
    label = f"{precision}{'+compile' if compiled else ''}"
    rows = {m: {"config": label, "precision": precision, "compile": compiled, "method": m} for m in METHODS}
    try:
        bench = Bench(args, device, precision, compiled)
        started = time.perf_counter()
        for method in METHODS:  # warm-up: cudnn autotuning, compilation, lazy generators
            bench.run(method, args.warmup)
        warmup_s = time.perf_counter() - started
        times: dict[str, list[float]] = {m: [] for m in METHODS}
        peaks: dict[str, float | None] = {}
        # OGM-GE's modulate call alone, synchronised on both sides (separate steps, not in the rates)
        modulate_ms = 1e3 * statistics.median(bench.step("ogm_ge", time_modulation=True) for _ in range(args.steps))
        for order in rotations(METHODS, args.rounds):
            for method in order:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                times[method].append(bench.run(method, args.steps))
                peak = peak_memory_mib(device)
                peaks[method] = max(peaks.get(method) or 0.0, peak) if peak is not None else None
    except Exception as error:  # torch.compile or bf16 may be unsupported here: report, don't die
        message = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        print(f"[{label}] failed: {message}", file=sys.stderr)
        traceback.print_exc(limit=3, file=sys.stderr)
        for row in rows.values():
            row["error"] = message
        return list(rows.values())
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    joint = args.batch_size * args.steps / statistics.median(times["joint"])
    for method in METHODS:
        rate = [args.batch_size * args.steps / t for t in times[method]]
        median = statistics.median(rate)
        rows[method].update(
            samples_per_s=median,
            rounds_samples_per_s=rate,
            ratio_vs_joint=median / joint,
            peak_mem_mib=peaks[method],
            warmup_s=warmup_s,
            error=None,
        )
    rows["ogm_ge"]["modulate_ms"] = modulate_ms
    rows["joint"]["step_ms"] = 1e3 * statistics.median(times["joint"]) / args.steps
    return list(rows.values())


def environment(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "shapes": {k: [args.batch_size, *v] for k, v in (QUICK_SHAPES if args.quick else FULL_SHAPES).items()},
        "channels_last": args.channels_last,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env.update(
            gpu=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = {(r["config"], r["method"]): r for r in rows if r.get("error") is None}
    summary: dict[str, Any] = {"modulation_ratio_vs_joint": {}, "speedup_vs_fp32": {}}
    for (config, method), row in ok.items():
        if method != "joint":
            summary["modulation_ratio_vs_joint"][f"{config}/{method}"] = row["ratio_vs_joint"]
        base = ok.get(("fp32", method))
        if base is not None and config != "fp32":
            summary["speedup_vs_fp32"][f"{config}/{method}"] = row["samples_per_s"] / base["samples_per_s"]
    ratios = summary["modulation_ratio_vs_joint"].values()
    # None: not measured (no successful configuration / no bf16 run)
    summary["target_modulation_within_3pct"] = all(r >= 0.97 for r in ratios) if ratios else None
    bf16 = [v for k, v in summary["speedup_vs_fp32"].items() if k.startswith("bf16/")]
    summary["target_bf16_1p8x"] = all(v >= 1.8 for v in bf16) if bf16 else None
    return summary


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any], env: dict[str, Any]) -> str:
    mem_title = "peak mem (MiB)" if env["device"].startswith("cuda") else "peak RSS so far (MiB)"
    lines = [
        f"| config | method | samples/s | vs joint | {mem_title} |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['config']} | {r['method']} | failed: {r['error'][:80]} | | |")
        else:
            lines.append(
                f"| {r['config']} | {r['method']} | {r['samples_per_s']:.1f} | {r['ratio_vs_joint']:.3f} "
                f"| {fmt(r.get('peak_mem_mib'), '.0f')} |"
            )
    lines.append("")
    for r in rows:
        if r.get("error") is None and r["method"] == "ogm_ge":
            joint_ms = next(j["step_ms"] for j in rows if j["config"] == r["config"] and j["method"] == "joint")
            lines.append(
                f"- {r['config']}: OGM-GE modulate() alone {r['modulate_ms']:.2f} ms per step "
                f"(joint step {joint_ms:.2f} ms)"
            )
    for key, value in summary["speedup_vs_fp32"].items():
        lines.append(f"- speed-up vs fp32, {key}: {value:.2f}x")
    verdict = {True: "met", False: "NOT met", None: "not measured"}
    lines.append(f"- target OGM-GE/OPM >= 0.97 x joint: {verdict[summary['target_modulation_within_3pct']]}")
    lines.append(f"- target bf16 >= 1.8 x fp32: {verdict[summary['target_bf16_1p8x']]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        if args.no_tf32:
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
    compile_on = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    configs: list[tuple[str, bool]] = [(p, False) for p in args.precisions]
    if compile_on:
        configs += [(p, True) for p in args.compile_precisions]
    env = environment(args, device)
    print(f"# modbalance GPU benchmark on {env.get('gpu', env['device'])}, torch {env['torch']}", flush=True)
    print(json.dumps(env), flush=True)
    rows: list[dict[str, Any]] = []
    clock = time.perf_counter()
    for precision, compiled in configs:
        print(
            f"[{time.perf_counter() - clock:7.1f}s] {precision}{' +compile' if compiled else ''} ...",
            flush=True,
        )
        new = measure(args, device, precision, compiled)
        if device.type == "cpu":
            for row in new:
                row["peak_mem_mib"] = process_peak_rss_mib()
        rows += new
        for r in new:
            if r.get("error") is None:
                print(
                    f"    {r['method']:7s} {r['samples_per_s']:9.1f} samples/s  x{r['ratio_vs_joint']:.3f}",
                    flush=True,
                )
        if args.out is not None:
            write(args.out, env, rows)
    summary = summarise(rows)
    print(f"[{time.perf_counter() - clock:7.1f}s] done\n")
    print(markdown(rows, summary, env))
    if args.out is not None:
        write(args.out, env, rows, summary)
    return 0


def write(path: Path, env: dict[str, Any], rows: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"env": env, "results": rows, "summary": summary}, indent=2))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
