"""Registered methods in the trainer: hooks, config keys, refusals, checkpoints and exact resume."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from modbalance.methods import METHODS, BalancingMethod, EpochContext, Requirements
from modbalance.train import load_config, run
from modbalance.train.build import build_methods, build_model, build_optimizer
from modbalance.train.checkpoint import load_checkpoint
from modbalance.train.config import ConfigError
from modbalance.train.data import build_data


class Counting(BalancingMethod):
    """A stateful test method: its loss weight depends on how many steps it has taken."""

    name = "counting_test"

    def __init__(self, gain: float = 0.1, *, start_epoch: int = 0, end_epoch: int | None = None) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        self.gain = gain
        self.steps = 0
        self.events: list[tuple[Any, ...]] = []
        self.register_buffer("seen", torch.zeros(()))

    def compute_loss(self, model, out, target, *, epoch=None, inputs=None):  # type: ignore[no-untyped-def]
        assert inputs is not None and set(inputs) == set(model.modalities)
        weight = 1.0 + self.gain * (self.steps % 5)  # differs from step to step: a lost counter shows
        return weight * F.cross_entropy(out.logits.float(), target)

    def modify_gradients(self, model, optimizer, *, epoch=None):  # type: ignore[no-untyped-def]
        self.steps += 1
        self.seen += 1

    def on_epoch_start(self, model: Any, context: EpochContext) -> None:
        rows = context.forward("val") if context.forward is not None else None
        self.events.append(("start", context.epoch, None if rows is None else tuple(rows.logits.shape)))

    def on_epoch_end(self, model: Any, context: EpochContext) -> dict[str, float]:
        self.events.append(("end", context.epoch))
        return {"steps": float(self.steps)}

    def get_extra_state(self) -> dict[str, int]:
        return {"steps": self.steps}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.steps = state["steps"]


class SingleProcessFp32(Counting):
    name = "picky_test"
    requires = Requirements(ddp=False, amp=False, grad_accum=False)


@pytest.fixture
def registered() -> Iterator[None]:
    METHODS.register("counting_test")(Counting)
    METHODS.register("picky_test")(SingleProcessFp32)
    yield
    for name in ("counting_test", "picky_test"):
        METHODS._builders.pop(name)


def tiny(tmp_path: Path, *overrides: str) -> Any:
    return load_config(
        "lab/tiny", [f"output_dir={tmp_path}", "train.device=cpu", "train.probe=false", "train.epochs=2", *overrides]
    )


def test_trainer_runs_the_hooks_in_order_and_logs_epoch_stats(tmp_path: Path, registered: None) -> None:
    config = tiny(tmp_path, "method.name=counting_test", "method.options.gain=0.5")
    folder = run(config)
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["method/steps"] for r in records] == [8.0, 16.0]  # 240 samples / batch 32 = 8 steps per epoch
    state = load_checkpoint(folder / "checkpoints" / "last.pt")
    assert state["ranks"][0]["method"]["_extra_state"] == {"steps": 16}
    assert float(state["ranks"][0]["method"]["seen"]) == 16
    assert load_checkpoint(folder / "checkpoints" / "best.pt")["method"]["_extra_state"]["steps"] in (8, 16)


def test_epoch_hooks_see_whole_splits(tmp_path: Path, registered: None, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Counting] = []
    original = Counting.__init__

    def spy(self: Counting, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        seen.append(self)

    monkeypatch.setattr(Counting, "__init__", spy)
    run(tiny(tmp_path, "method.name=counting_test"))
    events = seen[-1].events
    val_rows = len(build_data(tiny(tmp_path)).splits["val"])
    assert events == [("start", 0, (val_rows, 3)), ("end", 0), ("start", 1, (val_rows, 3)), ("end", 1)]


class StageReset(Counting):
    """Records the epoch's step count and the optimizer state size when it resets it."""

    name = "stage_reset_test"

    def on_epoch_start(self, model: Any, context: EpochContext) -> None:
        assert context.reset_optimizer is not None
        self.events.append(("batches", context.batches))
        if context.epoch == 1:
            self.optimizer_before = dict(self._optimizer.state)
            context.reset_optimizer()
            self.optimizer_after = dict(self._optimizer.state)


def test_epoch_context_counts_batches_and_resets_the_optimizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[StageReset] = []
    original_groups = StageReset.param_groups

    def groups(self: StageReset, model: Any, lr: float) -> list[dict[str, Any]]:
        seen.append(self)
        return original_groups(self, model, lr)

    monkeypatch.setattr(StageReset, "param_groups", groups)
    original_build = build_optimizer

    def spy_build(*args: Any, **kwargs: Any) -> Any:
        optimizer, scheduler = original_build(*args, **kwargs)
        seen[-1]._optimizer = optimizer
        return optimizer, scheduler

    monkeypatch.setattr("modbalance.train.trainer.build_optimizer", spy_build)
    METHODS.register("stage_reset_test")(StageReset)
    try:
        run(tiny(tmp_path, "method.name=stage_reset_test", "optim.momentum=0.9"))
    finally:
        METHODS._builders.pop("stage_reset_test")
    method = seen[-1]
    assert [e for e in method.events if e[0] == "batches"] == [("batches", 8), ("batches", 8)]  # 240 / 32
    assert len(method.optimizer_before) > 0 and method.optimizer_after == {}


def test_resume_mid_epoch_restores_method_state_exactly(
    tmp_path: Path, registered: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = ["method.name=counting_test", "train.checkpoint_every_steps=3", "train.epochs=3"]
    reference = run(tiny(tmp_path, "run_name=ref", *overrides))

    import modbalance.train.trainer as trainer_module

    real_step = trainer_module.train_step

    def crashing(parts: Any, inputs: Any, target: Any, *, step: int, **kwargs: Any) -> None:
        if step == 13:  # after the checkpoint of step 12 (epoch 1, batch 4): the counter is 12, mid-cycle
            raise KeyboardInterrupt
        real_step(parts, inputs, target, step=step, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", crashing)
    cut_config = tiny(tmp_path, "run_name=cut", *overrides)
    with pytest.raises(KeyboardInterrupt):
        run(cut_config)
    monkeypatch.setattr(trainer_module, "train_step", real_step)
    cut = tmp_path / "cut"
    assert load_checkpoint(cut / "checkpoints" / "last.pt")["ranks"][0]["method"]["_extra_state"] == {"steps": 12}
    run(resume=cut)
    assert (cut / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    final_cut = load_checkpoint(cut / "checkpoints" / "last.pt")["model"]
    for key, value in load_checkpoint(reference / "checkpoints" / "last.pt")["model"].items():
        assert torch.equal(final_cut[key], value), key


def test_options_and_windows_are_validated_naming_the_key(registered: None) -> None:
    with pytest.raises(ConfigError, match=r"method.options \(method.name='counting_test'\).*'gian'.*Accepted: gain"):
        load_config(None, ["method.name=counting_test", "method.options.gian=1"])
    with pytest.raises(ConfigError, match=r"method.options.start_epoch: set the window with method.start_epoch"):
        load_config(None, ["method.name=counting_test", "method.options.start_epoch=1"])
    with pytest.raises(ConfigError, match=r"options are for the methods of modbalance.methods.*'ogm' uses the typed"):
        load_config(None, ["method.name=ogm", "method.options.alpha=1"])
    with pytest.raises(ConfigError, match=r"method.windows.opm: method.name='ogm_ge' has no component 'opm'"):
        load_config(None, ["method.name=ogm_ge", "method.windows.opm.start_epoch=1"])
    with pytest.raises(ConfigError, match=r"method.windows.ogm.end_epoch=2 is out of range.*\(5\)"):
        load_config(None, ["method.name=opm+ogm", "method.windows.ogm.start_epoch=5", "method.windows.ogm.end_epoch=2"])
    with pytest.raises(ConfigError, match=r"method.windows.ogm.strat_epoch: unknown key. Allowed keys: end_epoch"):
        load_config(None, ["method.name=opm+ogm", "method.windows.ogm.strat_epoch=5"])
    with pytest.raises(ConfigError, match=r"method.name='mlsr' is not allowed. Allowed values: .*mslr"):
        load_config(None, ["method.name=mlsr"])


def test_opm_plus_ogm_gets_one_window_per_component() -> None:
    config = load_config(
        "lab/tiny",
        [
            "method.name=opm+ogm",
            "method.start_epoch=1",
            "method.windows.ogm.start_epoch=6",
            "method.windows.ogm.end_epoch=60",
        ],
    )
    model = build_model(config, build_data(config))
    methods = build_methods(config, model, torch.device("cpu"))
    assert methods.ogm is not None and methods.opm is not None
    assert (methods.ogm.start_epoch, methods.ogm.end_epoch) == (6, 60)
    assert (methods.opm.start_epoch, methods.opm.end_epoch) == (1, None)  # the shared window


@pytest.mark.parametrize(
    ("setting", "distributed", "match"),
    [
        ("train.precision=bf16", False, r"'picky_test' does not support mixed precision \(train.precision='bf16'\)"),
        ("train.grad_accum_steps=2", False, r"'picky_test' does not support gradient accumulation"),
        ("seed=0", True, r"'picky_test' does not support distributed training"),
    ],
)
def test_unsupported_settings_are_refused_before_training(
    registered: None, setting: str, distributed: bool, match: str
) -> None:
    config = load_config("lab/tiny", ["method.name=picky_test", setting])
    model = build_model(config, build_data(config))
    with pytest.raises(ConfigError, match=match):
        build_methods(config, model, torch.device("cpu"), distributed=distributed)


def test_a_missing_piece_is_refused_naming_method_and_fix(tmp_path: Path) -> None:
    config = tiny(tmp_path, "method.name=mslr", "method.options.lrs.text=0.1")
    with pytest.raises(ConfigError, match=r"method.name='mslr'.*lrs names \['text'\].*\['audio', 'visual'\]"):
        run(config)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_optimizer_takes_the_method_param_groups() -> None:
    config = load_config("lab/tiny", ["method.name=mslr", "method.options.lrs.visual=0.5"])
    model = build_model(config, build_data(config))
    method = build_methods(config, model, torch.device("cpu")).method
    optimizer, _ = build_optimizer(config, model, method)
    assert [(g["name"], g["lr"]) for g in optimizer.param_groups] == [("visual", 0.5), ("shared", 0.05)]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
