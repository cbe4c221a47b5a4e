"""The plug-in example runs and its modbalance additions stay within five lines per method."""

import importlib.util
import re
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plug_in.py"


def load_example():
    spec = importlib.util.spec_from_file_location("plug_in", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", ["joint", "ogm_ge", "opm"])
def test_example_trains_every_method(method):
    accuracy = load_example().train(method, steps=40)
    assert set(accuracy) == {"audio", "visual", "fused"}
    assert accuracy["fused"] > 0.5  # 4 classes: far above chance after 40 steps


def test_each_method_adds_at_most_five_lines():
    lines = [line for line in EXAMPLE.read_text().splitlines() if line.rstrip().endswith("# modbalance")]
    body = [line for line in lines if not line.startswith("from ")]
    ogm = [line for line in body if re.search(r"\bogm\b|OGM\(", line)]
    opm = [line for line in body if "opm" in line.lower() or "kept_cross_entropy" in line or "unimodal_scores" in line]
    assert 1 <= len(ogm) + 1 <= 5  # + the import line
    assert 1 <= len(opm) + 1 <= 5
