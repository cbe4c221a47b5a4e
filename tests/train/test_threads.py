"""train.threads: applied during the run and restored after it; no gc.collect for one process."""

import typing

import pytest
import torch

from modbalance.train import ConfigError, load_config, trainer


class FakeTrainer:
    seen: typing.ClassVar[list] = []

    def __init__(self, config, ctx, folder, *, resume):
        self.folder = folder

    def fit(self):
        FakeTrainer.seen.append((torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))
        return self.folder


@pytest.fixture
def fake(monkeypatch):
    FakeTrainer.seen = []
    collected = []
    monkeypatch.setattr(trainer, "_Trainer", FakeTrainer)
    monkeypatch.setattr(trainer.gc, "collect", lambda: collected.append(1))
    before = torch.get_num_threads()
    yield collected
    torch.set_num_threads(before)


@pytest.mark.parametrize(("threads", "inside"), [(1, 1), (2, 2), (0, 3)])
def test_threads_apply_during_the_run_and_are_restored(fake, tmp_path, threads, inside):
    torch.set_num_threads(3)
    trainer.run(load_config("lab/tiny", [f"output_dir={tmp_path}", f"train.threads={threads}"]))
    assert FakeTrainer.seen == [(inside, False)]
    assert torch.get_num_threads() == 3
    assert fake == []  # one process: no gc.collect at the end


def test_default_is_one_thread_and_negative_is_refused(tmp_path):
    assert load_config("lab/tiny").train.threads == 1
    with pytest.raises(ConfigError, match=r"train\.threads"):
        load_config("lab/tiny", ["train.threads=-1"])
