"""Sample- and modality-level valuation (Wei, Feng, Hu, CVPR 2024) and the trainer's extra-samples seam.

Oracles are test-local transcriptions of the official code, ``GeWu-Lab/Valuate-and-Enhance-Multimodal-Cooperation``
at ``7ed12b0``: the valuation loop of ``code/sample_level.py`` 99-122, ``exec_drop`` of ``code/models/models.py``
74-86, the resampled datasets of ``code/datasets/dataloader.py`` 154-186 (sample level) and 295-316 with the
subset estimate of ``code/modality_level.py`` 146-161 (modality level).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat
from modbalance.methods import METHODS, BalancingMethod, EpochContext, ExtraSamples, MethodRequirementError
from modbalance.methods.base import SplitOutputs
from modbalance.methods.valuation import (
    ModalityValuation,
    SampleValuation,
    modality_level_plan,
    sample_contributions,
    sample_level_copies,
    sample_level_plan,
    value_samples,
)
from modbalance.train import load_config, run
from modbalance.train.checkpoint import load_checkpoint
from modbalance.train.config import ConfigError
from modbalance.train.distributed import ShardedBatchSampler

# --------------------------------------------------------------------------------------------- oracles


def official_contributions(prediction: np.ndarray, pred_v: np.ndarray, pred_a: np.ndarray, label: np.ndarray):
    """sample_level.py 99-122: per-sample loop over softmax outputs (argmax of softmax = argmax of logits)."""
    contribution = {}
    for i in range(len(label)):
        index_all = np.argmax(prediction[i])
        index_v = np.argmax(pred_v[i])
        index_a = np.argmax(pred_a[i])
        value_all = value_a = value_v = 0.0
        if index_all == label[i]:
            value_all = 2.0
        if index_v == label[i]:
            value_v = 1.0
        if index_a == label[i]:
            value_a = 1.0
        contrib_a = (value_a + value_all - value_v) / 2.0
        contrib_v = (value_v + value_all - value_a) / 2.0
        contribution[i] = (contrib_a, contrib_v)
    return contribution


def official_sample_level(contribution: dict[int, tuple[float, float]]) -> list[tuple[int, int]]:
    """dataloader.py 154-186: the appended (index, drop) pairs; drop 2 = visual zeroed, 1 = audio zeroed."""
    appended = []
    for i in range(len(contribution)):
        contrib_a, contrib_v = contribution[i]
        if 0.4 < contrib_a < 1:
            appended += [(i, 2)]
        elif -0.1 < contrib_a < 0.4:
            appended += [(i, 2)] * 2
        elif contrib_a < -0.1:
            appended += [(i, 2)] * 3
        if 0.4 < contrib_v < 1:
            appended += [(i, 1)]
        elif -0.1 < contrib_v < 0.4:
            appended += [(i, 1)] * 2
        elif contrib_v < -0.1:
            appended += [(i, 1)] * 3
    return appended


def official_modality_level(contribution, part_ratio, alpha, func, draw) -> tuple[list[tuple[int, int]], float]:
    """modality_level.py 146-161 then dataloader.py 297-316; ``draw(n, k)`` stands for ``np.random.choice(n, k)``."""
    length = len(contribution)
    num = int(length * part_ratio)
    part_cona = part_conv = 0.0
    for i in draw(length, num):
        contri_a, contri_v = contribution[int(i)]
        part_cona += contri_a
        part_conv += contri_v
    part_cona /= num
    part_conv /= num
    gap_a, gap_v = 1.0 - part_cona, 1.0 - part_conv
    if func == "linear":
        difference = (abs(gap_a - gap_v) / 3 * 2) * alpha
    elif func == "tanh":
        difference = torch.nn.Tanh()(torch.tensor((abs(gap_a - gap_v) / 3 * 2) * alpha))
    else:
        difference = (abs(gap_a - gap_v) / 3 * 2) ** 1.5 * alpha
    resample_num = int(difference * length)
    appended = [(int(i), 2 if gap_a > gap_v else 1) for i in draw(length, resample_num)]
    return appended, float(difference)


def as_pairs(plan: ExtraSamples, a: str = "audio", v: str = "visual") -> list[tuple[int, int]]:
    """The plan in the official encoding; each copy drops exactly one modality."""
    assert bool((plan.drop[a] ^ plan.drop[v]).all())
    return [(int(i), 2 if bool(dv) else 1) for i, dv in zip(plan.indices, plan.drop[v], strict=True)]


def torch_draw(seed: int):
    generator = torch.Generator().manual_seed(seed)
    return generator, lambda n, k: torch.randint(n, (k,), generator=generator).tolist()


# ------------------------------------------------------------------------------------------ valuation


def test_contributions_by_hand_cover_every_case() -> None:
    # (fused, audio alone, visual alone) correct -> (phi_a, phi_v), sample_level.py 110-118
    cases = {
        (0, 0, 0): (0.0, 0.0),
        (0, 1, 0): (0.5, -0.5),
        (0, 0, 1): (-0.5, 0.5),
        (0, 1, 1): (0.0, 0.0),
        (1, 0, 0): (1.0, 1.0),
        (1, 1, 0): (1.5, 0.5),
        (1, 0, 1): (0.5, 1.5),
        (1, 1, 1): (1.0, 1.0),
    }
    fused, ca, cv = (torch.tensor([k[j] for k in cases], dtype=torch.bool) for j in range(3))
    phi = sample_contributions(fused, {"audio": ca, "visual": cv})
    assert phi["audio"].tolist() == [c[0] for c in cases.values()]
    assert phi["visual"].tolist() == [c[1] for c in cases.values()]


def test_contributions_and_sample_plan_equal_the_official_code_on_random_predictions() -> None:
    g = torch.Generator().manual_seed(0)
    n, c = 400, 4
    out, out_v, out_a = (torch.randn(n, c, generator=g) for _ in range(3))
    label = torch.randint(0, c, (n,), generator=g)
    expected = official_contributions(out.numpy(), out_v.numpy(), out_a.numpy(), label.numpy())
    correct = {"audio": out_a.argmax(1) == label, "visual": out_v.argmax(1) == label}
    phi = sample_contributions(out.argmax(1) == label, correct)
    assert [(a, v) for a, v in zip(phi["audio"].tolist(), phi["visual"].tolist(), strict=True)] == [
        expected[i] for i in range(n)
    ]
    plan = sample_level_plan(phi)
    assert Counter(as_pairs(plan)) == Counter(official_sample_level(expected))
    assert len(plan.indices) > n  # every branch of the thresholds is taken on 400 random samples


def test_copies_follow_the_official_thresholds_on_arbitrary_values() -> None:
    values = torch.tensor([-2.0, -0.1, -0.05, 0.0, 0.3, 0.4, 0.41, 0.99, 1.0, 1.2, 0.5, -0.5])
    expected = [len(official_sample_level({0: (float(x), 5.0)})) for x in values]
    assert (
        sample_level_copies(values).tolist() == expected == [3, 3, 2, 2, 2, 1, 1, 1, 0, 0, 1, 3]
    )  # float32 -0.1 < -0.1, 0.4 > 0.4


@pytest.mark.parametrize("func", ["linear", "tanh", "square"])
@pytest.mark.parametrize("alpha", [1.0, 2.5])
def test_modality_plan_equals_the_official_code_with_the_same_draws(func: str, alpha: float) -> None:
    g = torch.Generator().manual_seed(3)
    values = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5])
    n = 500
    phi = {
        "audio": values[torch.randint(0, 3, (n,), generator=g)],
        "visual": values[torch.randint(2, 5, (n,), generator=g)],
    }
    contribution = {i: (float(phi["audio"][i]), float(phi["visual"][i])) for i in range(n)}
    _, draw = torch_draw(7)
    expected, difference = official_modality_level(contribution, 0.2, alpha, func, draw)
    generator, _ = torch_draw(7)
    plan, stats = modality_level_plan(phi, part_ratio=0.2, alpha=alpha, func=func, generator=generator)
    assert as_pairs(plan) == expected
    assert stats["difference"] == pytest.approx(difference, rel=1e-12)
    assert len(expected) > 0 and all(d == 2 for _, d in expected)  # audio is valued lower: visual dropped


def test_modality_plan_drops_audio_when_visual_is_valued_lower() -> None:
    phi = {"audio": torch.full((90,), 1.5), "visual": torch.full((90,), 0.0)}
    plan, stats = modality_level_plan(phi, generator=torch.Generator().manual_seed(0))
    assert len(plan.indices) == int(1.5 * 2 / 3 * 90) == 90
    assert bool(plan.drop["audio"].all()) and not bool(plan.drop["visual"].any())
    assert stats["part/audio"] == 1.5 and stats["part/visual"] == 0.0


def test_value_samples_equals_the_official_exec_drop() -> None:
    torch.manual_seed(0)
    model = MultimodalClassifier(
        {"audio": nn.Linear(4, 6), "visual": nn.Linear(4, 5)}, Concat({"audio": 6, "visual": 5}, num_classes=3)
    )
    n = 300
    a, v = torch.randn(n, 6), torch.randn(n, 5) * 0.5
    y = torch.randint(0, 3, (n,))
    head = model.fusion.head  # the official fusion_module(cat(a, v)) (models.py 83-84)
    with torch.no_grad():
        out = head(torch.cat([a, v], 1))
        out_v = head(torch.cat([torch.zeros_like(a), v], 1))  # exec_drop(drop="audio")
        out_a = head(torch.cat([a, torch.zeros_like(v)], 1))
    expected = official_contributions(out.numpy(), out_v.numpy(), out_a.numpy(), y.numpy())
    model.train()
    phi = value_samples(model, SplitOutputs(out, {}, {"audio": a, "visual": v}, y))
    assert model.training  # restored
    assert [(x, z) for x, z in zip(phi["audio"].tolist(), phi["visual"].tolist(), strict=True)] == [
        expected[i] for i in range(n)
    ]
    assert len(set(phi["audio"].tolist())) >= 3


def test_model_drop_zeroes_the_marked_rows_features_and_their_gradient() -> None:
    torch.manual_seed(0)
    model = MultimodalClassifier(
        {"audio": nn.Linear(4, 3), "visual": nn.Linear(4, 3)}, Concat({"audio": 3, "visual": 3}, num_classes=2)
    )
    x = {"audio": torch.randn(4, 4), "visual": torch.randn(4, 4)}
    drop = {"audio": torch.tensor([False, True, False, False]), "visual": torch.tensor([False, False, True, False])}
    out = model(x, drop=drop)
    feats = model.encode(x)
    feats["audio"][1] = 0.0
    feats["visual"][2] = 0.0
    assert torch.allclose(out.logits, model.fuse(feats))
    assert torch.equal(out.features["audio"], model.encode(x)["audio"])  # un-dropped, as documented
    # the audio encoder gets no gradient from row 1: its gradient equals the one without that row's audio
    out.logits[1].sum().backward()
    assert torch.count_nonzero(model.encoders["audio"].weight.grad) == 0
    assert torch.count_nonzero(model.encoders["visual"].weight.grad) > 0
    with pytest.raises(ValueError, match=r"drop names modalities \['depth'\]"):
        model(x, drop={"depth": drop["audio"]})


# ----------------------------------------------------------------------------------------- the seam


def test_sampler_appends_the_extra_indices_to_the_permutation() -> None:
    s = ShardedBatchSampler(10, 4, seed=0, shuffle=True)
    plain = [i for b in s for i in b]
    s.set_extra(torch.tensor([3, 3, 7]))
    assert s.total == 13 and len(s) == 4
    with_extra = [i for b in s for i in b]
    assert Counter(with_extra) == Counter([*range(10), 3, 3, 7])
    assert torch.equal(torch.cat(s.positions()).sort().values, torch.arange(13))
    s.set_extra(None)
    assert [i for b in s for i in b] == plain  # nothing appended: the order of a plain epoch
    for bad, message in [
        (torch.tensor([0, 10]), r"in \[0, num_samples=10\), got min 0 and max 10"),
        (torch.tensor([[1]]), "1-d integer tensor"),
        (torch.tensor([0.5]), "1-d integer tensor"),
    ]:
        with pytest.raises(ValueError, match=message):
            s.set_extra(bad)


def _tiny(tmp_path: Path, *overrides: str) -> Any:
    base = [f"output_dir={tmp_path}", "train.device=cpu", "train.probe=false"]
    return load_config("lab/tiny", [*base, *overrides])


class _Recorder:
    """Spies on one run: the sampler's batches, each step's drop mask, the zero feature rows fused in training."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import modbalance.train.trainer as trainer_module

        self.batches: list[list[int]] = []
        self.drops: list[dict[str, torch.Tensor] | None] = []
        self.zero_rows: list[dict[str, torch.Tensor]] = []
        real_iterate, real_step, real_fuse = (
            trainer_module.iterate_batches,
            trainer_module.train_step,
            MultimodalClassifier.fuse,
        )

        def iterate(bundle: Any, split: str, sampler: Any, **kwargs: Any) -> Any:
            batches = list(sampler)
            self.batches += batches
            return real_iterate(bundle, split, batches, **kwargs)

        def step(*args: Any, drop: Any = None, **kwargs: Any) -> None:
            self.drops.append(drop)
            real_step(*args, drop=drop, **kwargs)

        def fuse(model: MultimodalClassifier, features: Any) -> Any:
            if model.training:
                self.zero_rows.append({m: (f == 0).all(dim=1) for m, f in features.items()})
            return real_fuse(model, features)

        monkeypatch.setattr(trainer_module, "iterate_batches", iterate)
        monkeypatch.setattr(trainer_module, "train_step", step)
        monkeypatch.setattr(MultimodalClassifier, "fuse", fuse)


def test_trainer_epoch_trains_on_exactly_the_planned_copies_with_the_other_modality_zeroed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The model at the start of epoch 1 of the 2-epoch run is the model at the end of a 1-epoch run.
    first = run(_tiny(tmp_path, "run_name=first", "train.epochs=1", "method.name=valuation_sample"))
    recorder = _Recorder(monkeypatch)
    folder = run(
        _tiny(tmp_path, "run_name=two", "train.epochs=2", "method.name=valuation_sample", "method.options.warmup=1")
    )
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert "method/extra_samples" not in records[0]  # warm-up epoch
    extra = int(records[1]["method/extra_samples"])
    assert extra > 0
    # The plan, independently: the official valuation and resampling on the model after epoch 0.
    from modbalance.train.build import build_model
    from modbalance.train.data import build_data

    config = _tiny(tmp_path, "train.epochs=1")
    bundle = build_data(config)
    model = build_model(config, bundle)
    model.load_state_dict(load_checkpoint(first / "checkpoints" / "last.pt")["model"])
    model.eval()
    x, y = bundle.batch("train", list(range(len(bundle.splits["train"]))))
    with torch.no_grad():
        a, v = model.encoders["audio"](x["audio"]), model.encoders["visual"](x["visual"])
        head = model.fusion.head
        out, out_v, out_a = (head(torch.cat(p, 1)) for p in ((a, v), (0 * a, v), (a, 0 * v)))
    expected = official_sample_level(official_contributions(out.numpy(), out_v.numpy(), out_a.numpy(), y.numpy()))
    assert len(expected) == extra
    # What the epochs trained on: epoch 0 the plain permutation, epoch 1 the originals plus the copies.
    n, steps0 = 240, 8
    epoch0, epoch1 = recorder.batches[:steps0], recorder.batches[steps0:]
    assert sorted(i for b in epoch0 for i in b) == list(range(n))
    assert all(d is None for d in recorder.drops[:steps0])
    assert len(epoch1) == math.ceil((n + extra) / 32) == len(recorder.drops) - steps0
    rows = Counter()
    for batch, drop, zero in zip(epoch1, recorder.drops[steps0:], recorder.zero_rows[steps0:], strict=True):
        assert drop is not None and all(torch.equal(zero[m], drop[m]) for m in ("audio", "visual"))
        for i, da, dv in zip(batch, drop["audio"].tolist(), drop["visual"].tolist(), strict=True):
            rows[(i, 1 if da else 2 if dv else 0)] += 1
    assert rows == Counter([(i, 0) for i in range(n)]) + Counter(expected)
    assert len(recorder.zero_rows) == 2 * steps0 + (len(epoch1) - steps0)  # one training fuse per step, no more


def test_mask_follows_the_micro_batches_under_bf16_and_gradient_accumulation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder(monkeypatch)
    overrides = ["train.epochs=2", "method.name=valuation_sample", "method.options.warmup=1"]
    run(_tiny(tmp_path, *overrides, "train.precision=bf16", "train.grad_accum_steps=2"))
    fuses = iter(recorder.zero_rows)
    planned = 0
    for batch, drop in zip(recorder.batches, recorder.drops, strict=True):
        seen: list[dict[str, torch.Tensor]] = []
        while sum(len(z["audio"]) for z in seen) < len(batch):
            seen.append(next(fuses))  # one training fuse per micro-batch
        assert len(seen) == min(2, len(batch))
        zero = {m: torch.cat([z[m] for z in seen]) for m in ("audio", "visual")}
        if drop is None:
            assert not any(bool(z.any()) for z in zero.values())
        else:
            assert all(torch.equal(zero[m], drop[m]) for m in zero)
            planned += int(drop["audio"].sum() + drop["visual"].sum())
    assert next(fuses, None) is None and planned > 0


def test_warmup_and_window_decide_the_epochs_with_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder(monkeypatch)
    overrides = ["train.epochs=2", "method.name=valuation_modality", "method.options.warmup=2"]
    folder = run(_tiny(tmp_path, *overrides))
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert all("method/extra_samples" not in r for r in records)
    assert all(d is None for d in recorder.drops) and len(recorder.batches) == 16
    method = ModalityValuation(warmup=5, start_epoch=0, end_epoch=6)
    assert [e for e in range(9) if method.plans(e)] == [5, 6]  # sample_level.py 321-331: epochs >= warmup


def test_modality_level_trainer_epoch_logs_its_estimates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder(monkeypatch)
    overrides = ["train.epochs=2", "method.name=valuation_modality", "method.options.warmup=1"]
    folder = run(_tiny(tmp_path, *overrides))
    record = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()][1]
    extra = int(record["method/extra_samples"])
    assert extra == int(record["method/difference"] * 240) > 0
    gap = {m: 1 - record[f"method/part/{m}"] for m in ("audio", "visual")}
    kept = "audio" if gap["audio"] > gap["visual"] else "visual"
    dropped = [d for step in recorder.drops[8:] for d in zip(*(step[m].tolist() for m in ("audio", "visual")))]
    kept_alone = (False, True) if kept == "audio" else (True, False)
    assert Counter(dropped) == Counter({(False, False): 240, kept_alone: extra})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["valuation_sample", "valuation_modality"])
def test_resume_mid_epoch_with_copies_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    base = ["train.epochs=3", "train.checkpoint_every_steps=3", f"method.name={name}", "method.options.warmup=1"]
    reference = run(_tiny(tmp_path, "run_name=ref", *base))
    records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    cut_step = 8 + 5  # epoch 1 (the first with copies), after the checkpoint of step 12
    assert records[1]["step"] > cut_step

    import modbalance.train.trainer as trainer_module

    real_step = trainer_module.train_step

    def crashing(parts: Any, inputs: Any, target: Any, *, step: int, **kwargs: Any) -> None:
        if step == cut_step:
            raise KeyboardInterrupt
        real_step(parts, inputs, target, step=step, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(_tiny(tmp_path, "run_name=cut", *base))
    monkeypatch.setattr(trainer_module, "train_step", real_step)
    cut = tmp_path / "cut"
    saved = load_checkpoint(cut / "checkpoints" / "last.pt")
    assert saved["position"]["epoch"] == 1 and saved["ranks"][0]["method"]["_extra_state"]["epoch"] == 1
    run(resume=cut)
    assert (cut / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    final_cut = load_checkpoint(cut / "checkpoints" / "last.pt")["model"]
    for key, value in load_checkpoint(reference / "checkpoints" / "last.pt")["model"].items():
        assert torch.equal(final_cut[key], value), key


# ------------------------------------------------------------------------------------------- errors


def test_bad_options_are_refused_naming_them() -> None:
    for kwargs, message in [
        ({"warmup": -1}, "warmup must be an int >= 0, got -1"),
        ({"part_ratio": 0.0}, r"part_ratio must be a number in \(0, 1\], got 0.0"),
        ({"alpha": float("nan")}, "alpha must be a finite number >= 0"),
        ({"func": "cubic"}, "func must be one of linear, tanh, square, got 'cubic'"),
        ({"seed": 1.5}, "seed must be an int"),
    ]:
        with pytest.raises(ValueError, match=message):
            ModalityValuation(**kwargs)
    with pytest.raises(ConfigError, match=r"method.name='valuation_modality'.*func must be one of"):
        from modbalance.train.build import build_methods, build_model
        from modbalance.train.data import build_data

        config = load_config("lab/tiny", ["method.name=valuation_modality", "method.options.func=cubic"])
        build_methods(config, build_model(config, build_data(config)), torch.device("cpu"))


def test_three_modalities_and_a_tiny_subset_are_refused() -> None:
    three = MultimodalClassifier({m: nn.Linear(2, 2) for m in "abc"}, Concat({m: 2 for m in "abc"}, 2))
    with pytest.raises(MethodRequirementError, match="at most 2 modalities"):
        SampleValuation().check(three)
    with pytest.raises(ValueError, match=r"part_ratio=0.2 of 4 training samples selects no sample.*at least 0.25"):
        modality_level_plan({"a": torch.zeros(4), "v": torch.zeros(4)}, part_ratio=0.2)
    with pytest.raises(ValueError, match="defined for two modalities"):
        sample_contributions(torch.ones(2, dtype=torch.bool), {"a": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(MethodRequirementError, match=r"needs EpochContext\.forward"):
        model = MultimodalClassifier({m: nn.Linear(2, 2) for m in "ab"}, Concat({m: 2 for m in "ab"}, 2))
        SampleValuation(warmup=0).on_epoch_start(model, EpochContext(0))


def test_a_malformed_plan_is_refused_naming_the_method(tmp_path: Path) -> None:
    @METHODS.register("bad_plan_test")
    class BadPlan(BalancingMethod):
        name = "bad_plan_test"

        def epoch_samples(self, epoch: int) -> ExtraSamples | None:
            return ExtraSamples(torch.tensor([0, 1]), {"audio": torch.tensor([True, False])})

    try:
        with pytest.raises(
            ValueError, match=r"method 'bad_plan_test': epoch_samples must give a \(2,\) bool drop mask"
        ):
            run(_tiny(tmp_path, "train.epochs=1", "method.name=bad_plan_test"))
    finally:
        METHODS._builders.pop("bad_plan_test", None)


def test_state_round_trips_the_plan() -> None:
    method = SampleValuation(warmup=0)
    model = MultimodalClassifier({m: nn.Linear(2, 2) for m in "ab"}, Concat({m: 2 for m in "ab"}, 3))
    rows = SplitOutputs(torch.zeros(6, 3), {}, {"a": torch.randn(6, 2), "b": torch.randn(6, 2)}, torch.arange(6) % 3)
    method.on_epoch_start(model, EpochContext(4, lambda split: rows))
    plan = method.epoch_samples(4)
    assert plan is not None and method.epoch_samples(5) is None
    other = SampleValuation(warmup=0)
    other.load_state_dict(method.state_dict())
    restored = other.epoch_samples(4)
    assert restored is not None and torch.equal(restored.indices, plan.indices)
    assert all(torch.equal(restored.drop[m], plan.drop[m]) for m in "ab")
    assert other.on_epoch_end(model, EpochContext(4)) == method.on_epoch_end(model, EpochContext(4))


# ---------------------------------------------------------------------------------------------- DDP


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_rank(rank: int, port: int, out_dir: str) -> None:
    """One of two gloo ranks: a whole-split pass, then a training run in the same process group."""
    import gc

    import torch.distributed as dist

    from modbalance.train.build import build_model
    from modbalance.train.data import build_data
    from modbalance.train.distributed import DistributedContext
    from modbalance.train.loop import forward_split

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    config = load_config("lab/tiny", ["train.device=cpu"])
    bundle = build_data(config)
    torch.manual_seed(0)
    model = build_model(config, bundle)
    ctx = DistributedContext(rank, 2, 0, torch.device("cpu"), rank == 0, True)
    rows = forward_split(model, bundle, "train", ctx, batch_size=7)
    torch.save({"target": rows.target, "audio": rows.features["audio"]}, f"{out_dir}/rank{rank}.pt")
    overrides = ["train.epochs=2", "train.batch_size=16", "method.name=valuation_sample", "method.options.warmup=1"]
    run(_tiny(Path(out_dir), "run_name=ddp", *overrides))
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_rows_come_in_split_order_and_every_rank_trains_on_the_same_plan(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    from modbalance.train.build import build_model
    from modbalance.train.data import build_data

    mp.spawn(_ddp_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    config = load_config("lab/tiny", ["train.device=cpu"])
    bundle = build_data(config)
    torch.manual_seed(0)
    model = build_model(config, bundle).eval()
    x, y = bundle.batch("train", list(range(len(bundle.splits["train"]))))
    with torch.no_grad():
        audio = model.encoders["audio"](x["audio"])
    for rank in range(2):  # gathered rows in the split's order (not rank after rank)
        rows = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(rows["target"], y) and torch.allclose(rows["audio"], audio, atol=1e-6)
    folder = tmp_path / "ddp"
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    extra = int(records[1]["method/extra_samples"])
    assert extra > 0 and records[1]["step"] - records[0]["step"] == math.ceil((240 + extra) / 32)
    states = [r["method"]["_extra_state"] for r in load_checkpoint(folder / "checkpoints" / "last.pt")["ranks"]]
    assert states[0]["epoch"] == states[1]["epoch"] == 1
    assert torch.equal(states[0]["plan"]["indices"], states[1]["plan"]["indices"])
