"""``modbalance demo`` without ``--out`` writes under ``runs/`` (ignored by git), not loose in the current folder."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import modbalance.demo
from modbalance.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_default_output_folder_is_under_runs_and_ignored(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run_demo(out, **kwargs):
        seen["out"] = out
        raise ValueError("stop here: only the folder is checked")

    monkeypatch.setattr(modbalance.demo, "run_demo", fake_run_demo)
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--quick"]) == 2
    assert re.fullmatch(r"runs/demo-\d{8}-\d{6}", seen["out"]), seen["out"]
    assert not list(tmp_path.iterdir())  # nothing was written into the current folder
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", seen["out"] + "/report.md"], check=False
    ).returncode
    assert ignored == 0, f"{seen['out']} is not ignored by .gitignore"
