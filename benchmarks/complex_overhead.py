"""Step overhead of OGM-GE and OPM on the transformer fusion, and the cost of each uni-modal-logit strategy (CPU).

Run::

    python benchmarks/complex_overhead.py            # full figures
    python benchmarks/complex_overhead.py --quick    # smoke run

A two-modality :class:`~modbalance.interaction.TransformerFusion` (joint self-attention,
d_model 64, 2 fusion blocks and 1 block per modality, 4 heads; audio 32 tokens of width 40,
visual 49 tokens of width 64; batch 32; SGD) is trained one step at a time with the trainer's
recipe (``model(x, opm=, scores=)``, ``kept_cross_entropy``, ``OGM.modulate``). Rows:

* ``joint (no uni-modal logits)``: what a plain loop without balancing needs;
* ``joint`` (masked uni-modal logits, as the trainer computes them for its per-modality metrics);
* ``ogm_ge`` and ``opm`` (masked uni-modal logits, the default);
* ``joint (heads)``: uni-modal logits from auxiliary heads (their loss added), no extra pass.

Methods are interleaved over several rounds; each row's figure is its fastest round (other
processes can only add time), the median round beside it. By default the clock is the process's
CPU time with one thread, which other jobs on a shared machine inflate much less than wall time.
Target: OGM-GE and OPM at most 5% over ``joint`` with the same uni-modal-logit strategy.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from modbalance import OGM, OPM, kept_cross_entropy, unimodal_scores
from modbalance.interaction import TransformerFusion


class _NoUnimodal(TransformerFusion):
    """The same model without any uni-modal logits (a plain joint loop)."""

    def unimodal_pass(self, state, batch):  # type: ignore[no-untyped-def, override]
        return {}, {}


ROWS = ("joint (no uni-modal logits)", "joint", "ogm_ge", "opm", "joint (heads)")


def make_step(row: str, batch: int, tokens: dict[str, tuple[int, int]]) -> Callable[[], None]:
    torch.manual_seed(0)
    cls = _NoUnimodal if row.startswith("joint (no") else TransformerFusion
    unimodal = "heads" if row == "joint (heads)" else "masked"
    model = cls(
        {m: width for m, (_, width) in tokens.items()},
        num_classes=6,
        d_model=64,
        depth=2,
        heads=4,
        modality_depth=1,
        unimodal=unimodal,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    ogm = OGM(model.modality_parameters(), alpha=0.8, noise=True) if row == "ogm_ge" else None
    opm = OPM() if row == "opm" else None
    inputs = {m: torch.randn(batch, t, width) for m, (t, width) in tokens.items()}
    y = torch.randint(0, 6, (batch,))

    def step() -> None:
        if opm is not None:
            out = model(inputs, opm=opm, scores=lambda z: unimodal_scores(z, y))
            loss = kept_cross_entropy(out.logits, y, out.keep)
        else:
            out = model(inputs)
            loss = F.cross_entropy(out.logits, y)
        if unimodal == "heads":
            loss = loss + model.auxiliary_loss(out, y)
        loss.backward()
        if ogm is not None:
            ogm.modulate(out.unimodal_logits, y)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_steps(step: Callable[[], None], steps: int, clock: Callable[[], float]) -> float:
    step()  # warm-up
    start = clock()
    for _ in range(steps):
        step()
    return (clock() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description="OGM-GE / OPM overhead on the transformer fusion (CPU)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: the process's CPU time (default; on a shared machine other jobs do not inflate it "
        "as much, with one thread); wall: elapsed time",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        batch, steps, rounds, tokens = 4, 2, 2, {"audio": (4, 8), "visual": (5, 8)}
    else:
        batch, steps, rounds, tokens = 32, args.steps, args.rounds, {"audio": (32, 40), "visual": (49, 64)}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    steppers = {row: make_step(row, batch, tokens) for row in ROWS}
    times: dict[str, list[float]] = {row: [] for row in ROWS}
    for _ in range(rounds):
        for row in ROWS:
            times[row].append(time_steps(steppers[row], steps, clock))
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s)")
    print(f"batch {batch}, tokens {tokens}, {steps} steps x {rounds} rounds, {args.clock} clock\n")
    print("| step | fastest (ms) | median (ms) | vs joint | vs joint without uni-modal logits |")
    print("|---|---|---|---|---|")
    best = {row: min(t) for row, t in times.items()}
    for row in ROWS:
        versus = "" if row.startswith("joint (no") else f"{100 * (best[row] / best['joint'] - 1):+.1f}%"
        if row == "joint (heads)":
            versus = ""
        base = f"{100 * (best[row] / best[ROWS[0]] - 1):+.1f}%"
        print(f"| {row} | {1000 * best[row]:.1f} | {1000 * statistics.median(times[row]):.1f} | {versus} | {base} |")


if __name__ == "__main__":
    main()
