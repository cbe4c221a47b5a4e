"""The core (``import modbalance``) needs torch only; optional packages load lazily."""

import json
import subprocess
import sys

# tqdm is left out: torch itself imports it (torch.hub) whenever it is installed.
OPTIONAL = ["omegaconf", "matplotlib", "tensorboard", "torchmetrics", "av", "PIL", "soundfile", "h5py", "scipy"]


def loaded_after(statement: str) -> list[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [name for name in json.loads(out) if name in OPTIONAL]


def test_core_imports_no_optional_dependency():
    assert (
        loaded_after("import modbalance, modbalance.fusion, modbalance.scores, modbalance.presets, modbalance.methods")
        == []
    )


def test_encoders_and_dataset_modules_import_without_media_libraries():
    assert loaded_after("import modbalance.encoders, modbalance.data") == []
