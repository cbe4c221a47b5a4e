"""Shared check of the method tests: a run cut mid-epoch and resumed ends exactly as an uncut one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch


def assert_cut_and_resume_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base: list[str], *, crash_step: int = 13
) -> tuple[Path, Path]:
    """Train ``lab/tiny`` with ``base`` overrides uncut (``run_name=ref``) and cut by a crash before
    step ``crash_step`` then resumed (``run_name=cut``); assert both write the same ``metrics.jsonl``
    and end with bitwise equal weights. Returns the two run folders (reference, cut).

    ``base`` must checkpoint before the crash (e.g. ``train.checkpoint_every_steps=3``).
    """
    import modbalance.train.trainer as trainer_module
    from modbalance.train import load_config, run
    from modbalance.train.checkpoint import load_checkpoint

    reference = run(load_config("lab/tiny", [*base, "run_name=ref"]))
    real_step = trainer_module.train_step

    def crashing(parts: Any, inputs: Any, target: Any, *, step: int, **kwargs: Any) -> None:
        if step == crash_step:
            raise KeyboardInterrupt
        real_step(parts, inputs, target, step=step, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(load_config("lab/tiny", [*base, "run_name=cut"]))
    monkeypatch.setattr(trainer_module, "train_step", real_step)
    cut = tmp_path / "cut"
    run(resume=cut)
    assert (cut / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    final_cut = load_checkpoint(cut / "checkpoints" / "last.pt")["model"]
    for key, value in load_checkpoint(reference / "checkpoints" / "last.pt")["model"].items():
        assert torch.equal(final_cut[key], value), key
    return reference, cut
