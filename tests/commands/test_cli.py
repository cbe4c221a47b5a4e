"""The command line: train, eval, report and demo, their outputs and their errors (exit codes, messages)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("omegaconf", reason='the trainer needs the train extra: pip install "modbalance[train]"')
pytest.importorskip("tensorboard", reason='the trainer needs the train extra: pip install "modbalance[train]"')

from modbalance.cli import main


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    assert main(["train", "--config", "lab/tiny", f"output_dir={out}", "run_name=r", "train.epochs=2"]) == 0
    return out / "r"


def test_train_prints_the_run_folder(tmp_path, capsys):
    assert main(["train", "--config", "lab/tiny", f"output_dir={tmp_path}", "run_name=r", "train.max_steps=2"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r")
    assert (tmp_path / "r" / "summary.json").is_file()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["method.alpah=0.8"], "method.alpah: unknown key. Allowed keys: alpha,"),
        (["train.epochs=two"], "train.epochs: Value 'two' of type 'str' could not be converted to Integer"),
        (["method.alpha=-1"], "method.alpha=-1.0 is out of range"),
        (["method.q_base=2"], "method.q_base=2.0 is out of range: must be in [0, 1]"),
        (
            ["method.name=unimodal:text"],
            "modality 'text', absent from the data. Allowed values: unimodal:audio, unimodal:visual",
        ),
        (["method.name=magic"], "method.name='magic' is not allowed. Allowed values: joint, ogm"),
    ],
)
def test_train_refuses_bad_configs_with_exit_2_naming_the_key(tmp_path, capsys, args, fragment):
    assert main(["train", "--config", "lab/tiny", f"output_dir={tmp_path}", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modbalance train: error: ")
    assert fragment in err
    assert list(tmp_path.iterdir()) == []


def test_train_usage_errors(tmp_path, capsys):
    assert main(["train"]) == 2
    assert "give --config FILE (or --resume RUN_DIR)" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml' not found" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "train.epochs=3"]) == 2
    assert "overrides are not allowed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", "lab/tiny", "--epochs", "3"])
    assert info.value.code == 2
    assert "unrecognized arguments: --epochs" in capsys.readouterr().err


def test_train_exits_1_on_a_non_finite_loss(tmp_path, capsys):
    assert main(["train", "--config", "lab/tiny", f"output_dir={tmp_path}", "optim.lr=1e30"]) == 1
    assert "non-finite loss at step" in capsys.readouterr().err


def test_resume_of_a_finished_run_changes_nothing(finished, capsys):
    before = (finished / "metrics.jsonl").read_text()
    assert main(["train", "--resume", str(finished)]) == 0
    assert (finished / "metrics.jsonl").read_text() == before


def test_eval_matches_the_summary(finished, capsys):
    assert main(["eval", "--run", str(finished), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"matches {finished / 'summary.json'}" in out
    printed = json.loads(out[: out.rindex("}") + 1])
    assert printed["accuracy"] == pytest.approx(json.loads((finished / "summary.json").read_text())["test"]["accuracy"])


def test_eval_reports_a_summary_that_no_longer_matches(finished, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        (copy / name).write_text((finished / name).read_text())
    (copy / "checkpoints").mkdir()
    (copy / "checkpoints" / "best.pt").write_bytes((finished / "checkpoints" / "best.pt").read_bytes())
    summary = json.loads((finished / "summary.json").read_text())
    summary["test"]["accuracy"] += 0.25
    (copy / "summary.json").write_text(json.dumps(summary))
    assert main(["eval", "--run", str(copy), "--device", "cpu"]) == 1
    assert "test metrics differ from" in capsys.readouterr().err


def test_eval_and_report_refuse_folders_without_runs(tmp_path, capsys):
    assert main(["eval", "--run", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 2
    assert "holds no finished run" in capsys.readouterr().err


def test_report_on_a_finished_run(finished, tmp_path, capsys):
    assert main(["report", str(finished), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "| joint | 1 |" in out
    assert (tmp_path / "rep" / "report.md").is_file()


def test_quick_demo_end_to_end(tmp_path, capsys):
    assert main(["demo", "--quick", "--preset", "tiny", "--out", str(tmp_path / "demo")]) == 0
    captured = capsys.readouterr()
    for method in ("joint", "ogm", "ogm_ge", "opm", "unimodal:audio", "unimodal:visual"):
        assert f"| {method} | 1 |" in captured.out
    assert "[6/6] unimodal:visual seed 0" in captured.err
    demo = Path(tmp_path / "demo")
    assert {"report.md", "accuracy.png", "traces.png", "runs"} <= {p.name for p in demo.iterdir()}
    assert len(list((demo / "runs").iterdir())) == 6
    assert main(["demo", "--quick", "--preset", "tiny", "--out", str(demo)]) == 2  # runs exist: refused
    assert "already holds a run" in capsys.readouterr().err


def test_demo_refuses_an_unknown_preset(tmp_path, capsys):
    assert main(["demo", "--preset", "huge", "--out", str(tmp_path)]) == 2
    assert "Unknown lab preset 'huge'. Available: default, three, tiny" in capsys.readouterr().err


def test_help_and_argument_errors_do_not_import_torch():
    # `modbalance --help` must answer without the ~3 s torch import (issue 13 item 20, issue 14).
    import json
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "from modbalance.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['prep', 'nope'], ['report']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert "usage: modbalance" in done.stdout and "invalid choice: 'nope'" in done.stderr
