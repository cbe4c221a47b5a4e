"""MMPareto, InfoReg, Re-learning, MLA and AGM in the trainer: a run cut mid-epoch and resumed equals an uncut one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from modbalance.train import load_config, run
from modbalance.train.checkpoint import load_checkpoint


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["method.name=mmpareto"],
        ["method.name=inforeg"],
        ["method.name=relearning", "method.options.reinit_epoch=1"],
        ["method.name=mla", "method.options.dynamic=true"],
        ["method.name=agm"],
    ],
    ids=["mmpareto", "inforeg", "relearning", "mla", "agm"],
)
def test_resume_mid_epoch_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> None:
    base = [f"output_dir={tmp_path}", "train.device=cpu", "train.probe=false", "train.epochs=3"]
    base += ["train.checkpoint_every_steps=3", *overrides]
    reference = run(load_config("lab/tiny", [*base, "run_name=ref"]))

    import modbalance.train.trainer as trainer_module

    real_step = trainer_module.train_step

    def crashing(parts: Any, inputs: Any, target: Any, *, step: int, **kwargs: Any) -> None:
        if step == 13:  # after the checkpoint of step 12: epoch 1, mid-epoch (8 steps per epoch)
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
