"""Report tables and plots from run folders (hand-written summaries) and from real finished runs."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib", reason='plots need the train extra: pip install "modbalance[train]"')

from modbalance.report import find_runs, format_table, summarize, write_report

BAYES = {"audio": 0.95, "visual": 0.90, "fused": 0.99}


def fake_run(root, name, method, seed, fused, audio, visual, probe=None):
    folder = root / name
    folder.mkdir(parents=True)
    test = {"accuracy": fused, "accuracy/audio": audio, "accuracy/visual": visual}
    if method.startswith("unimodal:"):
        kept = method.split(":")[1]
        test = {"accuracy": fused, f"accuracy/{kept}": fused}
    summary = {
        "method": method,
        "seed": seed,
        "test": test,
        "probe": probe,
        "bayes": BAYES,
        "modalities": ["audio", "visual"],
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    records = [
        {
            "epoch": e,
            "val/accuracy": fused - 0.1 * (2 - e),
            "val/accuracy/audio": audio,
            "train/rho/audio": 1.5 - 0.1 * e,
            "train/k/audio": 0.5,
        }
        for e in range(3)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture
def runs(tmp_path):
    fake_run(tmp_path, "j0", "joint", 0, 0.80, 0.70, 0.40, {"audio": 0.90, "visual": 0.60})
    fake_run(tmp_path, "j1", "joint", 1, 0.84, 0.74, 0.44, {"audio": 0.92, "visual": 0.62})
    fake_run(tmp_path, "o0", "ogm", 0, 0.86, 0.70, 0.60, {"audio": 0.90, "visual": 0.80})
    fake_run(tmp_path / "nested", "u0", "unimodal:visual", 0, 0.85, 0, 0)
    return find_runs([tmp_path])


def test_rows_group_by_method_in_display_order_with_seed_statistics(runs):
    rows = summarize(runs)
    assert [row.method for row in rows] == ["joint", "ogm", "unimodal:visual"]
    joint = rows[0]
    assert joint.seeds == [0, 1] and joint.fused == [0.80, 0.84]
    assert joint.gap == pytest.approx(0.99 - 0.82)
    assert rows[2].bayes == BAYES["visual"]  # a uni-modal row is compared with its own modality's limit


def test_table_by_hand(runs):
    lines = format_table(summarize(runs)).splitlines()
    assert (
        lines[0] == "| method | seeds | fused acc | audio acc | visual acc | audio probe | visual probe | Bayes gap |"
    )
    # joint: fused 82.0 ± stdev(80, 84) = 2.8; audio 72.0 ± 2.8; visual 42.0 ± 2.8; probes 91.0 ± 1.4, 61.0 ± 1.4
    assert lines[2] == "| joint | 2 | 82.0 ± 2.8 | 72.0 ± 2.8 | 42.0 ± 2.8 | 91.0 ± 1.4 | 61.0 ± 1.4 | 17.0 |"
    assert lines[3] == "| ogm | 1 | 86.0 | 70.0 | 60.0 | 90.0 | 80.0 | 13.0 |"
    assert lines[4] == "| unimodal:visual | 1 | 85.0 | – | 85.0 | – | – | 5.0 |"


def test_write_report_makes_markdown_and_plots(runs, tmp_path):
    report = write_report(runs, tmp_path / "out", title="t")
    text = report.read_text()
    assert text.startswith("# t\n")
    assert (
        "Bayes-optimal accuracy (exact, from the lab's generative model): audio 95.0, fused 99.0, visual 90.0." in text
    )
    assert "![accuracy](accuracy.png)" in text and "![traces](traces.png)" in text
    for name in ("accuracy.png", "traces.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_find_runs_refuses_folders_without_finished_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no finished run"):
        find_runs([tmp_path])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_runs([tmp_path / "missing"])
    with pytest.raises(ValueError, match="at least one finished run"):
        write_report([], tmp_path)


def test_report_on_real_finished_runs(tmp_path):
    pytest.importorskip("omegaconf")
    from modbalance.train import load_config, run

    for method in ("joint", "opm"):
        run(load_config("lab/tiny", [f"method.name={method}", f"output_dir={tmp_path / 'runs'}", "train.epochs=2"]))
    runs = find_runs([tmp_path / "runs"])
    assert [r.method for r in runs] == ["joint", "opm"]
    report = write_report(runs, tmp_path / "report")
    text = report.read_text()
    assert "| joint | 1 |" in text and "| opm | 1 |" in text
    assert (tmp_path / "report" / "traces.png").exists()


def write_config(folder, text):
    (folder / "config.yaml").write_text(text)


CONFIG = """\
seed: {seed}
output_dir: {out}
run_name: {name}
data:
  name: synthetic
  options:
    seed: {seed}
method:
  name: {method}
  alpha: {alpha}
  coefficient: reference
train:
  epochs: 3
  progress: false
"""


def test_rows_group_by_resolved_config_minus_the_seed_and_say_what_differs(tmp_path):
    # Two OGM settings (alpha 0.1 on two seeds, alpha 5 on one) and a joint run; the seed keys,
    # the output folder and the run name differ between every run and must not split rows.
    plan = [
        ("a", "ogm", 0, 0.1, 0.80),
        ("b", "ogm", 1, 0.1, 0.90),
        ("c", "ogm", 0, 5, 0.60),
        ("d", "joint", 0, 0.8, 0.70),
    ]
    for name, method, seed, alpha, acc in plan:
        folder = fake_run(tmp_path, name, method, seed, acc, 0.5, 0.5)
        write_config(folder, CONFIG.format(seed=seed, out=f"out{seed}", name=name, method=method, alpha=alpha))
    rows = summarize(find_runs([tmp_path]))
    assert [(row.label, row.seeds, row.fused) for row in rows] == [
        ("joint", [0], [0.70]),
        ("ogm (method.alpha=0.1)", [0, 1], [0.80, 0.90]),
        ("ogm (method.alpha=5)", [0], [0.60]),
    ]
    table = format_table(rows).splitlines()
    assert table[3].startswith("| ogm (method.alpha=0.1) | 2 | 85.0 ± 7.1 |")
    assert table[4].startswith("| ogm (method.alpha=5) | 1 | 60.0 |")
    text = write_report(find_runs([tmp_path]), tmp_path / "report").read_text()
    assert "(ogm (method.alpha=5), seed 0)" in text


def test_row_labels_name_every_differing_key_up_to_three(tmp_path):
    configs = {
        "a": "method:\n  name: opm\n  q_base: 0.2\n  lam: 0.5\ntrain:\n  epochs: 3\n",
        "b": "method:\n  name: opm\n  q_base: 0.3\n  lam: 1.0\ntrain:\n  epochs: 4\n  batch_size: 8\n",
    }
    for name, text in configs.items():
        write_config(fake_run(tmp_path, name, "opm", 0, 0.5, 0.5, 0.5), text)
    labels = [row.label for row in summarize(find_runs([tmp_path]))]
    # four keys differ (b's batch_size is absent from a): three are spelled out, sorted by key
    assert labels == [
        "opm (method.lam=0.5, method.q_base=0.2, train.batch_size=None, +1 more)",
        "opm (method.lam=1.0, method.q_base=0.3, train.batch_size=8, +1 more)",
    ]


def test_a_broken_config_yaml_is_named(tmp_path):
    folder = fake_run(tmp_path, "a", "ogm", 0, 0.5, 0.5, 0.5)
    write_config(folder, "- a list\n")
    with pytest.raises(ValueError, match=r"a[/\\]config.yaml: expected a mapping"):
        find_runs([tmp_path])
