"""``modbalance compare``: methods x seeds on one config, one report; reuse of finished runs; bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("omegaconf", reason='the trainer needs the train extra: pip install "modbalance[train]"')

from modbalance.cli import main
from modbalance.train import load_config

FAST = ["train.epochs=1", "train.probe=false", "train.device=cpu"]


def test_compare_trains_each_method_and_seed_then_reuses_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "compare",
        "--config",
        "lab/tiny",
        "--methods",
        "joint,mslr",
        "--seeds",
        "2",
        "--out",
        str(tmp_path),
        "--set",
        "mslr:method.options.lrs.visual=0.5",
        *FAST,
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["joint-seed0", "joint-seed1", "mslr-seed0", "mslr-seed1"]
    assert captured.err.count(": trained,") == 4
    table = captured.out.split("\n\nreport:")[0]
    assert "| joint |" in table and "| mslr |" in table
    assert (tmp_path / "report.md").read_text().startswith("# modbalance compare: lab/tiny, 2 seed(s)")
    saved = load_config(tmp_path / "runs" / "mslr-seed1" / "config.yaml")
    assert (saved.method.name, saved.method.options, saved.seed) == ("mslr", {"lrs": {"visual": 0.5}}, 1)

    assert main(args) == 0  # everything is already there: nothing is trained again
    again = capsys.readouterr()
    assert again.err.count(": reused,") == 4 and ": trained," not in again.err
    assert again.out.split("\n\nreport:")[0] == table


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--methods", "joint,mlsr"], "method.name='mlsr' is not allowed"),
        (["--methods", "joint,joint"], "--methods must name distinct methods"),
        (["--methods", "joint", "--seeds", "0"], "--seeds must be >= 1"),
        (["--methods", "joint", "--set", "ogm:method.alpha=1"], "names method 'ogm', which is not in --methods"),
        (["--methods", "joint,mslr", "--set", "mslr=1"], "must look like METHOD:key=value"),
        (["--methods", "mslr"], "method.options (method.name='mslr')"),  # MSLR needs its rates
        # a method the model cannot take (InfoReg needs linear per-modality heads): refused before the joint run
        (["--methods", "joint,inforeg", "model.fusion=film"], "inforeg-seed0: method.name='inforeg'"),
    ],
)
def test_compare_refuses_bad_input_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    assert main(["compare", "--config", "lab/tiny", "--out", str(tmp_path), *extra, *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modbalance compare: error: ") and fragment in err
    assert list(tmp_path.iterdir()) == []
