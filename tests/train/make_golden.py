"""Regenerate ``golden_losses.json``: per-epoch training losses of the tiny lab recipe, one thread, CPU.

Run from the repository root after an intended change of the training numerics::

    python tests/train/make_golden.py

and review the diff: the golden values are a record of what the trainer did, not a target.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

GOLDEN = Path(__file__).with_name("golden_losses.json")
METHODS = ("joint", "ogm", "ogm_ge", "opm")


def losses(method: str, output_dir: str) -> list[float]:
    """Per-epoch ``train/loss`` of ``lab/tiny`` with ``method``, seed 0."""
    from modbalance.runfolder import read_metrics
    from modbalance.train import load_config, run

    folder = run(load_config("lab/tiny", [f"method.name={method}", f"output_dir={output_dir}", f"run_name={method}"]))
    return [record["train/loss"] for record in read_metrics(folder / "metrics.jsonl")]


def main() -> int:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        golden = {method: losses(method, out) for method in METHODS}
    GOLDEN.write_text(json.dumps(golden, indent=2) + "\n")
    print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
