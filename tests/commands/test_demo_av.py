"""``modbalance demo --av --quick``: toy release -> prep -> ResNet-18 runs -> report, through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("omegaconf", reason='the trainer needs the train extra: pip install "modbalance[train]"')
pytest.importorskip("av", reason='the toy release needs PyAV: pip install "modbalance[data]"')

from modbalance.cli import main
from modbalance.data import layout
from modbalance.demo import AV_DEMO_METHODS, AVDemoSize

pytestmark = pytest.mark.slow


def _table_rows(table: str) -> dict[str, list[str]]:
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return {
        cells[0]: cells
        for cells in ([cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:])
        if len(cells) == len(header)
    } | {"__header__": header}


def test_quick_av_demo_runs_the_file_pipeline_and_reports_every_method(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--av", "--quick", "--threads", "1", "--workers", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()

    # The raw toy release went through prep: every clip of the CREMA-D-layout lists is prepared.
    size = AVDemoSize.quick()
    manifest = layout.read_manifest(out / "data" / "prepared")
    assert manifest["counts"]["prepared"] == 6 * size.per_class and manifest["skipped"] == []
    assert (out / "data" / "raw" / "VideoFlash").is_dir() and (out / "data" / "prepared" / "audio_a1").is_dir()

    # One run per method, each with ResNet-18 encoders on the prepared files, one epoch.
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == sorted(f"cremad-{m}-seed0" for m in AV_DEMO_METHODS)
    for method in AV_DEMO_METHODS:
        folder = out / "runs" / f"cremad-{method}-seed0"
        config = (folder / "config.yaml").read_text()
        assert "name: resnet18_audio" in config and "name: resnet18_visual" in config
        assert f"root: {out / 'data' / 'prepared'}" in config
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["method"] == method and summary["epochs_run"] == size.epochs
        assert summary["bayes"] is None and set(summary["probe"]) == {"audio", "visual"}

    # The printed table and the report list every method, without a Bayes column, and say why.
    printed = _table_rows(captured.out)
    assert set(printed) - {"__header__"} == set(AV_DEMO_METHODS)
    assert "Bayes gap" not in printed["__header__"] and printed["__header__"][:3] == ["method", "seeds", "fused acc"]
    report = (out / "report.md").read_text()
    assert set(_table_rows(report)) == set(printed)
    assert "no Bayes column" in report and "Bayes-optimal accuracy is not known" in report
    assert "modbalance prep cremad" in report
    for method in AV_DEMO_METHODS:
        assert f"[{AV_DEMO_METHODS.index(method) + 1}/3] {method} seed 0" in captured.err

    # Again into the same folder: the runs exist, so it is refused (exit 2), and nothing is overwritten.
    before = (out / "report.md").read_text()
    assert main(["demo", "--av", "--quick", "--threads", "1", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "report.md").read_text() == before


def test_av_demo_refuses_a_lab_preset(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--av", "--preset", "tiny", "--out", str(tmp_path)]) == 2
    assert "--preset chooses a lab preset" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
