"""Offline G-Blending: weights from finished trial runs (``method.options.trial_runs``).

Oracles: the weights are hand-computed from the losses the test writes into the trial runs'
``metrics.jsonl`` (the paper's rule, Wang et al. CVPR 2020 Section 3: w ∝ ΔG / ΔO²); the
end-to-end check recomputes them in the test from the real trial runs' records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("omegaconf", reason='the trainer needs the train extra: pip install "modbalance[train]"')

from modbalance.cli import main
from modbalance.train import load_config
from modbalance.train.errors import ConfigError
from modbalance.train.trial_runs import split_trial_options, weights_from_trial_runs

MODALITIES = ["audio", "visual"]
# branch -> [(train/loss, val/loss) at epochs 0, 1, 2]
LOSSES = {
    "audio": [(1.0, 1.2), (0.8, 1.1), (0.5, 1.0)],
    "visual": [(1.5, 1.6), (1.2, 1.4), (1.0, 1.3)],
    "fused": [(1.0, 1.1), (0.5, 1.0), (0.2, 0.9)],
}
METHOD = {"audio": "unimodal:audio", "visual": "unimodal:visual", "fused": "joint"}


def _trial_run(folder: Path, method: str, losses: list[tuple[float, float]], *, finished: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"seed: 0\nmethod:\n  name: {method}\n")
    lines = [{"epoch": e, "step": 5 * (e + 1), "train/loss": t, "val/loss": v} for e, (t, v) in enumerate(losses)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if finished:
        (folder / "summary.json").write_text("{}")
    return folder


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, str]:
    return {b: str(_trial_run(tmp_path / f"{b}-seed0", METHOD[b], LOSSES[b])) for b in LOSSES}


def test_weights_from_the_first_and_last_epoch_are_the_hand_computed_ones(runs: dict[str, str]) -> None:
    # epochs 0 -> 2: audio ΔG = 1.2 - 1.0 = 0.2, ΔO = (1.0 - 0.5) - (1.2 - 1.0) = 0.3 -> 0.2 / 0.09 = 2.2222
    #                visual ΔG = 0.3, ΔO = 0.3 - 0.1 = 0.2 -> 0.3 / 0.04 = 7.5
    #                fused ΔG = 0.2, ΔO = 0.7 - 0.1 = 0.6 -> 0.2 / 0.36 = 0.5556;   sum 10.2778
    weights = weights_from_trial_runs(runs, MODALITIES, seed=0)
    assert list(weights) == ["audio", "visual", "fused"]
    assert weights == pytest.approx({"audio": 0.216216, "visual": 0.729730, "fused": 0.054054}, abs=1e-6)


def test_trial_epochs_choose_the_two_checkpoints(runs: dict[str, str]) -> None:
    # epochs 0 -> 1: audio ΔG = 0.1, ΔO = 0.3 - 0.2 = 0.1 -> 10;  visual ΔG = 0.2, ΔO = 0.2 - 0.1 = 0.1 -> 20
    #                fused ΔG = 0.1, ΔO = 0.5 - 0.1 = 0.4 -> 0.625;   sum 30.625
    weights = weights_from_trial_runs(runs, MODALITIES, seed=0, epochs=[0, 1])
    assert weights == pytest.approx({"audio": 0.326531, "visual": 0.653061, "fused": 0.020408}, abs=1e-6)


def test_seed_placeholder_picks_each_seeds_trial_runs(tmp_path: Path) -> None:
    for seed, scale in ((0, 1.0), (1, 2.0)):  # seed 1: every fused loss doubled -> ΔG x2, ΔO x2 -> weight / 2
        for b in LOSSES:
            losses = [(t * scale, v * scale) if b == "fused" else (t, v) for t, v in LOSSES[b]]
            _trial_run(tmp_path / f"{b}-seed{seed}", METHOD[b], losses)
    spec = {b: str(tmp_path / f"{b}-seed{{seed}}") for b in LOSSES}
    raw = {"audio": 0.2 / 0.09, "visual": 0.3 / 0.04}
    for seed, fused in ((0, 0.2 / 0.36), (1, 0.4 / 1.44)):
        total = sum(raw.values()) + fused
        weights = weights_from_trial_runs(spec, MODALITIES, seed=seed)
        assert weights["fused"] == pytest.approx(fused / total, rel=1e-9)


def _broken(tmp_path: Path, runs: dict[str, str], case: str) -> tuple[dict[str, Any], dict[str, Any]]:
    spec: dict[str, Any] = dict(runs)
    kwargs: dict[str, Any] = {}
    if case == "missing branch":
        del spec["fused"]
    elif case == "wrong method":
        spec["fused"] = str(_trial_run(tmp_path / "ogm", "ogm", LOSSES["fused"]))
    elif case == "unfinished":
        spec["audio"] = str(_trial_run(tmp_path / "cut", "unimodal:audio", LOSSES["audio"], finished=False))
    elif case == "epoch absent":
        kwargs["epochs"] = [0, 7]
    elif case == "no val loss":
        folder = tmp_path / "noval"
        _trial_run(folder, "unimodal:visual", LOSSES["visual"])
        lines = [{"epoch": e, "train/loss": 1.0} for e in range(3)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        spec["visual"] = str(folder)
    elif case == "nothing generalised":
        for b in LOSSES:
            spec[b] = str(_trial_run(tmp_path / f"flat-{b}", METHOD[b], [(1.0, 1.0), (0.5, 1.2)]))
    elif case == "no folder":
        spec["audio"] = str(tmp_path / "nowhere-seed{seed}")
    elif case == "bad placeholder":
        spec["audio"] = str(tmp_path / "a-{sed}")
    elif case == "bad epochs":
        kwargs["epochs"] = [2, 1]
    return spec, kwargs


@pytest.mark.parametrize(
    ("case", "error", "fragment"),
    [
        ("missing branch", ConfigError, "must name a run folder for every branch ['audio', 'visual', 'fused']"),
        (
            "wrong method",
            ConfigError,
            "is a run of method.name='ogm'; the trial run of 'fused' must be a method.name=joint",
        ),
        ("unfinished", ConfigError, "is not a finished run (no summary.json)"),
        ("epoch absent", ConfigError, "has no record of epoch 7 (it has epochs 0..2)"),
        ("no val loss", ConfigError, "has val/loss=None; the estimate needs a finite training and held-out loss"),
        ("nothing generalised", ConfigError, "no trial run's held-out loss fell between the two epochs"),
        ("no folder", FileNotFoundError, "nowhere-seed0); train the trial run first with method.name=unimodal:audio"),
        ("bad placeholder", ConfigError, "the only placeholder allowed is {seed}"),
        ("bad epochs", ConfigError, "method.options.trial_epochs=[2, 1] must be two epochs [N, N + n]"),
    ],
)
def test_bad_trial_runs_are_refused_with_the_key_and_the_fix(
    tmp_path: Path, runs: dict[str, str], case: str, error: type[Exception], fragment: str
) -> None:
    spec, kwargs = _broken(tmp_path, runs, case)
    with pytest.raises(error) as caught:
        weights_from_trial_runs(spec, MODALITIES, seed=0, **kwargs)
    assert fragment in str(caught.value)
    assert "method.options.trial_" in str(caught.value)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"trial_epochs": [0, 1]}, "trial_epochs is set but method.options.trial_runs is not"),
        ({"trial_runs": {}, "weights": {"audio": 1.0}}, "cannot be combined with method.options.weights"),
        ({"trial_runs": {}, "super_epoch": 5}, "cannot be combined with method.options.super_epoch=5"),
        ({"trial_runs": {}, "trial_epochs": [0]}, "must be two epochs"),
    ],
)
def test_conflicting_options_are_refused_by_the_config_check(
    tmp_path: Path, options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        split_trial_options(options)
    assert fragment in str(caught.value)
    overrides = ["method.name=gblending", *(f"method.options.{k}={json.dumps(v)}" for k, v in options.items())]
    with pytest.raises(ConfigError) as at_load:
        load_config("lab/tiny", overrides)
    assert fragment in str(at_load.value)


def _weights_by_hand(folder: Path) -> dict[str, float]:
    raw = {}
    for branch, name in (("audio", "unimodal-audio"), ("visual", "unimodal-visual"), ("fused", "joint")):
        lines = [json.loads(x) for x in (folder / f"{name}-seed0" / "metrics.jsonl").read_text().splitlines()]
        first, last = lines[0], lines[-1]
        gain = first["val/loss"] - last["val/loss"]
        overfit = (last["val/loss"] - last["train/loss"]) - (first["val/loss"] - first["train/loss"])
        raw[branch] = max(gain, 0.0) / overfit**2
    return {b: w / sum(raw.values()) for b, w in raw.items()}


@pytest.mark.slow
def test_compare_trains_trial_runs_then_gblending_with_their_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Also the pre-check: the trial runs and UMT's teachers do not exist before the compare starts.
    runs = tmp_path / "runs"
    sets = [
        *(f"gblending:method.options.trial_runs.{m}={runs}/unimodal-{m}-seed{{seed}}" for m in MODALITIES),
        f"gblending:method.options.trial_runs.fused={runs}/joint-seed{{seed}}",
        *(f"umt:method.options.teachers.{m}={runs}/unimodal-{m}-seed{{seed}}" for m in MODALITIES),
    ]
    args = ["compare", "--config", "lab/tiny", "--methods", "unimodal:audio,unimodal:visual,joint,gblending,umt"]
    fast = ["train.epochs=3", "train.probe=false", "train.device=cpu"]
    assert main([*args, "--seeds", "1", "--out", str(tmp_path), *(x for s in sets for x in ("--set", s)), *fast]) == 0
    expected = _weights_by_hand(runs)
    records = [json.loads(x) for x in (runs / "gblending-seed0" / "metrics.jsonl").read_text().splitlines()]
    for record in records:  # fixed for the whole run (no super-epochs)
        logged = {b: record[f"method/gblending_weight_{b}"] for b in expected}
        assert logged == pytest.approx(expected, rel=1e-6)
    assert "method/gblending_gain_audio" not in records[-1]
    saved = load_config(runs / "gblending-seed0" / "config.yaml")
    assert saved.method.options["trial_runs"]["fused"].endswith("joint-seed{seed}")
    assert (runs / "umt-seed0" / "summary.json").is_file()


def test_compare_still_refuses_a_trial_run_it_will_not_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    sets = [f"gblending:method.options.trial_runs.{b}={runs}/unimodal-{b}-seed{{seed}}" for b in MODALITIES]
    sets.append(f"gblending:method.options.trial_runs.fused={runs}/joint-seed{{seed}}")
    args = ["compare", "--config", "lab/tiny", "--methods", "unimodal:audio,unimodal:visual,gblending", "--seeds", "1"]
    # no joint run in --methods: the fused branch's trial run will never exist
    code = main([*args, "--out", str(tmp_path), *(x for s in sets for x in ("--set", s)), "train.epochs=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "method.options.trial_runs.fused" in err and "train the trial run first with method.name=joint" in err
    assert not runs.exists()
