"""Write docs/config.md, the reference of every training-config key, from the config schema.

Usage::

    python docs/make_config.py            # rewrite docs/config.md
    python docs/make_config.py --check    # exit 1 if docs/config.md differs from what would be written

The keys, types and defaults come from the dataclasses of ``modbalance.train.config``; the allowed
values from the very tables ``modbalance.train.validate`` checks against (and the registries of
encoders, fusions, datasets and lab settings); the one-line meanings from ``MEANINGS`` below.
``tests/test_config_docs.py`` checks that the page is current, that every key has a meaning, and that
validation refuses a value outside each documented list or range and accepts the values inside.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "config.md"
sys.path.insert(0, str(ROOT / "src"))

from modbalance.data.presets import DATASET_PRESETS  # noqa: E402
from modbalance.data.registry import DATASETS  # noqa: E402
from modbalance.data.synthetic import LAB_PRESETS  # noqa: E402
from modbalance.encoders.registry import ENCODERS  # noqa: E402
from modbalance.fusion import FUSIONS  # noqa: E402
from modbalance.imbalance import COEFFICIENTS, RATIO_RULES  # noqa: E402
from modbalance.interaction import INTERACTIONS  # noqa: E402
from modbalance.opm import RESCALE_MODES  # noqa: E402
from modbalance.train import validate  # noqa: E402
from modbalance.train.config import ExperimentConfig  # noqa: E402

#: ``<modality>`` stands for any modality name of the data.
MODALITY = "<modality>"
#: ``<component>`` stands for a component of the method (``ogm``, ``opm``) in ``method.windows``.
COMPONENT = "<component>"
#: Mapping keys of the schema whose entries are not modalities -> the placeholder of their entries.
ENTRY_PLACEHOLDERS = {"method.windows": COMPONENT}

#: Key -> the allowed values, read from the tables validation uses.
ALLOWED: dict[str, Sequence[object]] = {
    "data.name": ("synthetic", *DATASETS),
    "data.preset": tuple(LAB_PRESETS),
    f"model.encoders.{MODALITY}.name": tuple(ENCODERS.names()),
    f"model.encoders.{MODALITY}.pretrained_conv1": ("auto", "adapt", "reinit"),
    "model.fusion": tuple(sorted(FUSIONS)),
    "model.kind": ("late", *sorted(INTERACTIONS)),
    "method.name": (*validate.BALANCING_METHODS, "unimodal:<modality>"),
    "method.coefficient": tuple(COEFFICIENTS),
    "method.param_filter": tuple(validate.PARAM_FILTERS),
    "method.rule": tuple(RATIO_RULES),
    "method.space": ("gradient", "update"),
    "method.rescale": tuple(RESCALE_MODES),
    "optim.name": tuple(validate.OPTIMIZERS),
    "optim.scheduler.name": tuple(validate.SCHEDULERS),
    "train.device": ("auto", "cpu", "cuda", "cuda:<index>"),
    "train.precision": tuple(validate.PRECISIONS),
    "train.select_on": ("val",),
    "train.select_metric": tuple(validate.SELECT_METRICS),
}

#: Key -> (the range in words, a value just outside, a value inside), for numeric keys.
RANGES: dict[str, tuple[str, object, object]] = {
    "data.val_fraction": ("[0, 1)", 1.0, 0.1),
    "method.alpha": (">= 0", -0.1, 0.0),
    "method.start_epoch": (">= 0", -1, 0),
    "method.end_epoch": ("null or >= start_epoch", -1, 3),
    "method.q_base": ("[0, 1]", 1.5, 1.0),
    "method.lam": (">= 0", -0.5, 0.0),
    "method.p_exe": ("[0, 1]", -0.1, 0.0),
    "optim.lr": ("> 0", 0.0, 1e-5),
    "optim.momentum": ("[0, 1)", 1.0, 0.0),
    "optim.weight_decay": (">= 0", -1e-4, 0.0),
    "optim.scheduler.step_size": (">= 1", 0, 1),
    "optim.scheduler.gamma": ("(0, 1]", 0.0, 1.0),
    "train.epochs": (">= 1", 0, 1),
    "train.batch_size": (">= 1", 0, 1),
    "train.eval_batch_size": (">= 1", 0, 1),
    "train.grad_accum_steps": (">= 1 and <= batch_size", 0, 1),
    "train.checkpoint_every_steps": (">= 0", -1, 0),
    "train.num_workers": (">= 0", -1, 0),
    "train.max_steps": ("null or >= 1", 0, 1),
    "train.probe_steps": (">= 1", 0, 1),
    "train.log_every_steps": (">= 1", 0, 1),
    "train.max_elements": (">= 0", -1, 0),
    "train.threads": (">= 0", -1, 0),
    "seed": (">= 0", -1, 0),
}

#: Key -> one line of meaning. Every key of the schema needs one (the test checks).
MEANINGS: dict[str, str] = {
    "data.name": "the data: `synthetic` (the imbalance lab) or a prepared benchmark",
    "data.preset": "the lab setting (synthetic data only)",
    "data.root": "the folder written by `modbalance prep <dataset>` (benchmarks only; required there)",
    "data.options": "keyword options of the lab or of the dataset class (docs/datasets.md)",
    "data.train_split": "split trained on",
    "data.val_split": "split the best checkpoint is selected on (never the test split)",
    "data.test_split": "split reported at the end",
    "data.val_fraction": "> 0: hold out this share of the training split as validation",
    f"model.encoders.{MODALITY}.name": "the encoder of that modality (modbalance.encoders)",
    f"model.encoders.{MODALITY}.options": "its keyword options (`in_dim` is filled from the data when left out)",
    f"model.encoders.{MODALITY}.pretrained": "a local torchvision-layout ResNet-18 checkpoint to start from",
    f"model.encoders.{MODALITY}.pretrained_conv1": "how the checkpoint's first convolution is fitted to the input",
    "model.fusion": "the fusion head over the encoders' features",
    "model.fusion_options": "keyword options of the fusion head",
    "model.kind": "`late`: encoders, then the fusion head; other kinds exchange information between the "
    "encoders (docs/complex-models.md)",
    "model.interaction": "keyword options of the `model.kind` module (refused with `late`)",
    "method.name": "the balancing method, or `unimodal:<modality>` to train one modality alone",
    "method.alpha": "OGM's modulation strength",
    "method.coefficient": "OGM's coefficient formula (docs/methods.md section 3)",
    "method.param_filter": "OGM's parameters: all of each encoder (`null`) or its 4-D kernels (`conv`)",
    "method.rule": "the discrepancy ratio for more than two modalities",
    "method.space": "OGM scales the gradient (official) or the parameter update (for Adam)",
    "method.start_epoch": "first epoch (0-based, inclusive) in which the method acts",
    "method.end_epoch": "last epoch (inclusive) in which it acts; `null`: to the end",
    "method.q_base": "OPM's base drop probability",
    "method.lam": "OPM's lambda: how fast the drop probability grows with the imbalance",
    "method.p_exe": "probability that OPM acts in a step",
    "method.rescale": "how OPM rescales the surviving features",
    f"method.windows.{COMPONENT}.start_epoch": "first epoch of that component (`ogm`, `opm`) of the method; "
    "replaces `method.start_epoch` for it",
    f"method.windows.{COMPONENT}.end_epoch": "last epoch of that component; `null`: to the end",
    "method.options": "keyword options of a method of `modbalance.methods` (e.g. `mslr`)",
    "optim.name": "the optimizer over every trainable parameter",
    "optim.lr": "learning rate",
    "optim.momentum": "momentum (SGD only)",
    "optim.weight_decay": "weight decay",
    "optim.scheduler.name": "learning-rate schedule, stepped once per epoch",
    "optim.scheduler.step_size": "epochs between decays (`step`)",
    "optim.scheduler.gamma": "decay factor (`step`)",
    "train.epochs": "number of epochs",
    "train.batch_size": "samples per optimizer step and per process",
    "train.eval_batch_size": "samples per evaluation batch",
    "train.device": "where to train; `auto`: CUDA when available",
    "train.precision": "arithmetic of the forward pass (autocast for bf16 and fp16)",
    "train.grad_accum_steps": "micro-batches per optimizer step",
    "train.checkpoint_every_steps": "also checkpoint every this many steps; 0: at the end of each epoch only",
    "train.deterministic": "ask PyTorch for deterministic kernels",
    "train.num_workers": "data-loader worker processes",
    "train.max_steps": "stop after this many optimizer steps (smoke tests)",
    "train.select_on": "the split the best checkpoint is selected on",
    "train.select_metric": "the metric the best checkpoint is selected by",
    "train.probe": "fit a linear probe per modality at the end (test accuracy)",
    "train.probe_steps": "optimizer steps of each probe",
    "train.max_elements": "most elements in an encoder's parameters or in one activation; more is refused; 0: no limit",
    "train.log_every_steps": "steps between training-log lines",
    "train.progress": "show a progress bar",
    "train.threads": "torch CPU threads during the run (restored after it); 0: keep the process's setting",
    "seed": "seed of every random draw of the run",
    "output_dir": "folder under which the run folder is created",
    "run_name": "the run folder's name; `null`: `<data>-<method>-seed<seed>`",
}


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    for raw, short in (("<class '", ""), ("'>", ""), ("NoneType", "None")):
        text = text.replace(raw, short)
    return text


def _default(field: dataclasses.Field) -> object:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def schema_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[tuple[str, str, object]]:
    """``(dotted key, type, default)`` for every leaf of the config schema, in schema order."""
    rows: list[tuple[str, str, object]] = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key, kind = prefix + field.name, hints[field.name]
        if dataclasses.is_dataclass(kind):
            rows += schema_keys(kind, key + ".")  # type: ignore[arg-type]
            continue
        args = typing.get_args(kind)
        if typing.get_origin(kind) is dict and args and dataclasses.is_dataclass(args[1]):
            rows += schema_keys(typing.cast(type, args[1]), f"{key}.{ENTRY_PLACEHOLDERS.get(key, MODALITY)}.")
            continue
        rows.append((key, _type_name(kind), _default(field)))
    return rows


def _value(value: object) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def render() -> str:
    """The text of docs/config.md."""
    missing = [key for key, _, _ in schema_keys() if key not in MEANINGS]
    if missing:
        raise SystemExit(f"docs/make_config.py: add a MEANINGS entry for {', '.join(missing)}")
    lines = [
        "# Config keys",
        "",
        "<!-- Generated by `python docs/make_config.py` from modbalance.train.config and the tables of",
        "     modbalance.train.validate; tests/test_config_docs.py checks that it is current. -->",
        "",
        "Every key of a training config (`modbalance train --config FILE key=value ...`), with its type,",
        "default, the values or range validation accepts, and its meaning. A key not listed here is refused",
        "with a message naming it. Configs are layered: these defaults, then the YAML file, then the",
        "`key=value` overrides of the command line.",
        "",
        "Shipped configs: `lab/<name>` (hand-written examples on the imbalance lab) and, per dataset",
        "setting, one file per method, `<dataset>/<setting>_<method>` (`opm+ogm` as `opm_ogm`,",
        "`unimodal:<modality>` as `<modality>`), and for some settings one joint-training file per model kind",
        "(`cremad/tpami_mmtm`), generated from `modbalance.data.presets` by `python docs/make_configs.py`.",
        "A setting's name alone names its OGM-GE file (`cremad/tpami` is `cremad/tpami_ogm_ge`). The settings: "
        + ", ".join(f"`{name}`" for name in DATASET_PRESETS)
        + ".",
        "",
        "Words: a **preset** is a reference preset, the OGM/OPM keyword arguments of one official code base",
        "(`modbalance.presets`, docs/methods.md); a **setting** is a dataset's training settings from one",
        "source (`modbalance.data.presets.DATASET_PRESETS`, whose name predates this word); the lab's",
        "generators are lab settings (`data.preset`).",
        "",
        "| key | type | default | allowed | meaning |",
        "|---|---|---|---|---|",
    ]
    for key, kind, default in schema_keys():
        if key in ALLOWED:
            allowed = ", ".join(_value(v) for v in ALLOWED[key])
        elif key in RANGES:
            allowed = RANGES[key][0]
        else:
            allowed = "any"
        kind = kind.replace("|", "\\|")  # a pipe inside a table cell, even in code
        lines.append(f"| `{key}` | `{kind}` | {_value(default)} | {allowed} | {MEANINGS[key]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/config.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print("docs/config.md is stale: run python docs/make_config.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
