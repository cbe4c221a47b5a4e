"""MMPareto, InfoReg, Re-learning, MLA and AGM in the trainer: a run cut mid-epoch and resumed equals an uncut one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.methods.resume import assert_cut_and_resume_exact


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
    assert_cut_and_resume_exact(tmp_path, monkeypatch, base)
