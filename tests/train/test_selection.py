"""The best checkpoint is chosen on the validation split, and the test split is scored once, at the end."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("omegaconf", reason='the trainer needs the train extra: pip install "modbalance[train]"')
pytest.importorskip("tensorboard", reason='the trainer needs the train extra: pip install "modbalance[train]"')

from modbalance.runfolder import read_metrics
from modbalance.train import load_config, run
from modbalance.train import trainer as trainer_module
from modbalance.train.checkpoint import load_checkpoint

# Scripted validation accuracies: the best is epoch 1, although the model keeps training after it.
SCRIPTED_VAL = [0.50, 0.90, 0.70]


def test_best_checkpoint_follows_validation_and_test_is_scored_once_at_the_end(tmp_path, monkeypatch):
    real_evaluate = trainer_module.evaluate
    calls = []

    def scripted(core, bundle, split, ctx, **kwargs):
        calls.append(split)
        record = real_evaluate(core, bundle, split, ctx, **kwargs)
        record["accuracy"] = SCRIPTED_VAL[len(calls) - 1]
        return record

    monkeypatch.setattr(trainer_module, "evaluate", scripted)
    test_calls = []
    import modbalance.train.finish as finish_module

    real_finish_evaluate = finish_module.evaluate

    def spy(core, bundle, split, ctx, **kwargs):
        test_calls.append((split, len(calls)))
        return real_finish_evaluate(core, bundle, split, ctx, **kwargs)

    monkeypatch.setattr(finish_module, "evaluate", spy)
    base = ["method.name=ogm", f"output_dir={tmp_path}"]
    folder = run(load_config("lab/tiny", [*base, "run_name=scripted"]))

    assert calls == ["val", "val", "val"]  # the loop never looks at the test split
    assert test_calls == [("test", 3)]  # the test split is scored once, after the last epoch
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["best_epoch"] == 1
    assert [r["val/accuracy"] for r in read_metrics(folder / "metrics.jsonl")] == SCRIPTED_VAL

    # best.pt holds the weights after epoch 1: the same as a 2-epoch run's last weights (CPU runs repeat exactly)
    monkeypatch.setattr(trainer_module, "evaluate", real_evaluate)
    two_epochs = run(load_config("lab/tiny", [*base, "run_name=two", "train.epochs=2"]))
    best = load_checkpoint(folder / "checkpoints" / "best.pt")["model"]
    after_epoch_1 = load_checkpoint(two_epochs / "checkpoints" / "last.pt")["model"]
    final = load_checkpoint(folder / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(best[k], after_epoch_1[k]) for k in best)
    assert not all(torch.equal(best[k], final[k]) for k in best)
