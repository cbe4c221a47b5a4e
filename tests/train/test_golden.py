"""Golden per-epoch training losses of the tiny lab recipe (regenerate with tests/train/make_golden.py).

A change here means the training numerics changed: data order, initialisation, the step, OGM's
coefficients or noise, OPM's masks. If the change is intended, regenerate and review the diff.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("omegaconf", reason='the trainer needs the train extra: pip install "modbalance[train]"')
pytest.importorskip("tensorboard", reason='the trainer needs the train extra: pip install "modbalance[train]"')

_spec = importlib.util.spec_from_file_location("make_golden", Path(__file__).with_name("make_golden.py"))
assert _spec is not None and _spec.loader is not None
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)
GOLDEN, METHODS, losses = make_golden.GOLDEN, make_golden.METHODS, make_golden.losses


@pytest.mark.parametrize("method", METHODS)
def test_training_losses_match_the_golden_curve(tmp_path, method):
    golden = json.loads(GOLDEN.read_text())[method]
    assert torch.get_num_threads() == 1  # the golden values were made with one thread
    assert losses(method, str(tmp_path)) == pytest.approx(golden, rel=1e-4)


def test_methods_change_the_curve():
    golden = json.loads(GOLDEN.read_text())
    # same data, seed and initialisation: any difference comes from the method itself
    assert golden["ogm"] != golden["joint"] and golden["opm"] != golden["joint"] and golden["ogm_ge"] != golden["ogm"]
