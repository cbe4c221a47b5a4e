"""A non-finite loss stops the run with the step, the epoch and the last finite metrics; checkpoints stay."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("omegaconf", reason='the trainer needs the train extra: pip install "modbalance[train]"')
pytest.importorskip("tensorboard", reason='the trainer needs the train extra: pip install "modbalance[train]"')

from modbalance.runfolder import read_metrics
from modbalance.train import NonFiniteLossError, load_config, run
from modbalance.train import trainer as trainer_module
from modbalance.train.checkpoint import load_checkpoint

STEPS_PER_EPOCH = 8  # tiny preset: 240 samples, batches of 32
BAD_EPOCH, BAD_BATCH = 1, 3  # the NaN batch: global step 8 + 4 = 12
BAD_STEP = STEPS_PER_EPOCH * BAD_EPOCH + BAD_BATCH + 1


def inject_nan(monkeypatch):
    """Make batch BAD_BATCH of epoch BAD_EPOCH carry a NaN audio input."""
    real = trainer_module.iterate_batches

    def batches(bundle, split, sampler, **kwargs):
        for index, (inputs, target) in enumerate(real(bundle, split, sampler, **kwargs)):
            if sampler.epoch == BAD_EPOCH and index == BAD_BATCH:
                inputs = dict(inputs)
                inputs["audio"] = inputs["audio"].clone()
                inputs["audio"][0, 0] = math.nan
            yield inputs, target

    monkeypatch.setattr(trainer_module, "iterate_batches", batches)


@pytest.mark.parametrize("method", ["joint", "ogm", "opm"])
def test_nan_batch_stops_with_step_epoch_and_last_metrics_and_keeps_the_checkpoint(tmp_path, monkeypatch, method):
    inject_nan(monkeypatch)
    config = load_config(
        "lab/tiny", [f"method.name={method}", f"output_dir={tmp_path}", "run_name=r", "train.checkpoint_every_steps=5"]
    )
    with pytest.raises(NonFiniteLossError) as info:
        run(config)
    message = str(info.value)
    assert f"non-finite loss at step {BAD_STEP} (epoch {BAD_EPOCH})" in message
    folder = tmp_path / "r"
    (record,) = read_metrics(folder / "metrics.jsonl")  # only epoch 0 finished
    assert "last finite metrics (epoch 0)" in message
    assert f"'train/loss': {round(record['train/loss'], 6)}" in message
    last = load_checkpoint(folder / "checkpoints" / "last.pt")
    assert last["global_step"] == 10  # the mid-epoch checkpoint before the NaN; none was written after it
    assert last["global_step"] < BAD_STEP
    assert len(last["history"]) == 1
    assert not (folder / "summary.json").exists()


def test_exploding_learning_rate_is_caught(tmp_path):
    config = load_config("lab/tiny", ["optim.lr=1e30", f"output_dir={tmp_path}", "run_name=r", "method.name=ogm_ge"])
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step \d+ \(epoch 0\).*no epoch had finished"):
        run(config)
    assert not (tmp_path / "r" / "checkpoints" / "last.pt").exists()
