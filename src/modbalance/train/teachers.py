"""Load UMT's uni-modal teachers from the checkpoints of ``unimodal:<modality>`` runs.

``method.name=umt`` takes ``method.options.teachers``: modality -> a run folder of a
``unimodal:<modality>`` run (its ``checkpoints/best.pt`` is used) or a checkpoint file of one
(``best.pt`` or ``last.pt``). ``{seed}`` in a path is replaced by the run's seed, so that
``modbalance compare --methods unimodal:audio,unimodal:visual,umt`` can give every seed's UMT run
the teachers of the same seed (``docs/comparison-methods.md``). Each teacher is a frozen copy of
the student's encoder with the checkpoint's ``encoders.<modality>.*`` weights, handed to
:class:`~modbalance.methods.UMT` as a module; the core method never reads files.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import yaml
from torch import nn

from modbalance.model import MultimodalClassifier
from modbalance.train.checkpoint import CheckpointError, load_checkpoint
from modbalance.train.errors import ConfigError

__all__ = ["in_planned_run", "load_teacher", "load_teachers", "seed_path", "standin_teacher", "teacher_checkpoint"]


def seed_path(path: str | os.PathLike[str], *, seed: int, key: str) -> Path:
    """``path`` with ``{seed}`` replaced by ``seed`` (the one placeholder of options that name other runs).

    Raises:
        ConfigError: another placeholder or a stray brace (the message names ``key`` and the path).

    Example:
        >>> seed_path("cmp/runs/unimodal-audio-seed{seed}", seed=2, key="method.options.teachers.audio").name
        'unimodal-audio-seed2'
    """
    text = os.fspath(path)
    try:
        return Path(text.format(seed=seed))
    except (KeyError, IndexError, ValueError) as error:
        raise ConfigError(f"{key}={text!r}: the only placeholder allowed is {{seed}} ({error})") from None


def in_planned_run(path: object, *, seed: int, key: str, planned: Collection[Path]) -> bool:
    """Whether ``path`` (``{seed}`` filled in) is one of the run folders in ``planned`` or a file inside one.

    ``planned`` holds resolved run folders that will exist before the run being built starts
    (``modbalance compare`` trains its methods in order); options naming them get stand-ins.

    Example:
        >>> planned = {Path("cmp/runs/unimodal-audio-seed0").resolve()}
        >>> in_planned_run("cmp/runs/unimodal-audio-seed{seed}/checkpoints/best.pt", seed=0, key="k", planned=planned)
        True
        >>> in_planned_run("cmp/runs/unimodal-audio-seed{seed}", seed=1, key="k", planned=planned)
        False
    """
    if not planned or not isinstance(path, str | os.PathLike):
        return False
    resolved = seed_path(path, seed=seed, key=key).resolve()
    return any(resolved == folder or folder in resolved.parents for folder in planned)


def teacher_checkpoint(path: str | os.PathLike[str], *, seed: int, key: str = "method.options.teachers") -> Path:
    """The checkpoint file a teacher entry names: ``{seed}`` filled in, a run folder -> its ``checkpoints/best.pt``.

    Raises:
        FileNotFoundError: neither a file nor a run folder with ``checkpoints/best.pt`` (the message
            names ``key`` and the path).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as d:
        ...     best = Path(d) / "unimodal-audio-seed3" / "checkpoints" / "best.pt"
        ...     best.parent.mkdir(parents=True); _ = best.write_bytes(b"")
        ...     teacher_checkpoint(Path(d) / "unimodal-audio-seed{seed}", seed=3) == best
        True
    """
    text = os.fspath(path)
    resolved = seed_path(text, seed=seed, key=key)
    if resolved.is_dir():
        best = resolved / "checkpoints" / "best.pt"
        if not best.is_file():
            raise FileNotFoundError(
                f"{key}={text!r}: the folder {resolved} has no checkpoints/best.pt; give the run folder of a finished "
                "unimodal:<modality> run (modbalance train ... method.name=unimodal:<modality>) or a checkpoint file"
            )
        return best
    if not resolved.is_file():
        raise FileNotFoundError(
            f"{key}={text!r}: no such file or run folder ({resolved}); train the teacher first with "
            "method.name=unimodal:<modality> and name its run folder or checkpoints/best.pt"
        )
    return resolved


def load_teacher(path: str | os.PathLike[str], modality: str, student: MultimodalClassifier) -> nn.Module:
    """A frozen, eval-mode copy of ``student.encoders[modality]`` with the weights of the checkpoint at ``path``.

    The checkpoint must be a modbalance checkpoint (``best.pt``/``last.pt``) of a
    ``unimodal:<modality>`` run, or at least hold ``model`` weights ``encoders.<modality>.*``
    (then its ``config``, if any, must name that method).

    Raises:
        ConfigError: the checkpoint is of another method or modality, or its encoder does not fit
            ``model.encoders.<modality>`` (the message names the file and the mismatch).
        CheckpointError: the file is not a readable modbalance checkpoint.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> from modbalance.train.checkpoint import save_checkpoint
        >>> alone = MultimodalClassifier({"audio": torch.nn.Linear(3, 4)}, Concat({"audio": 4}, 2))
        >>> both = MultimodalClassifier({"audio": torch.nn.Linear(3, 4), "visual": torch.nn.Linear(2, 4)},
        ...                             Concat({"audio": 4, "visual": 4}, 2))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     state = {"model": alone.state_dict(), "config": "method: {name: unimodal:audio}"}
        ...     save_checkpoint(Path(d) / "best.pt", state)
        ...     teacher = load_teacher(Path(d) / "best.pt", "audio", both)
        >>> torch.equal(teacher.weight, alone.encoders["audio"].weight), teacher.weight.requires_grad, teacher.training
        (True, False, False)
    """
    path = Path(path)
    state = load_checkpoint(path, map_location="cpu", required=("model",))
    config = state.get("config")
    if isinstance(config, str):
        try:
            method = ((yaml.safe_load(config) or {}).get("method") or {}).get("name")
        except (yaml.YAMLError, AttributeError) as error:
            raise CheckpointError(path, f"its config is not readable YAML: {error}") from None
        if method != f"unimodal:{modality}":
            raise ConfigError(
                f"{path} is a checkpoint of a method.name={method!r} run; the UMT teacher of {modality!r} must come "
                f"from a method.name=unimodal:{modality} run"
            )
    weights = state["model"]
    if not isinstance(weights, Mapping):
        raise CheckpointError(path, f"its 'model' entry is a {type(weights).__name__}, not a state dict")
    prefix = f"encoders.{modality}."
    encoder_state = {k[len(prefix) :]: v for k, v in weights.items() if isinstance(k, str) and k.startswith(prefix)}
    if not encoder_state:
        found = sorted({k.split(".")[1] for k in weights if isinstance(k, str) and k.startswith("encoders.")})
        raise ConfigError(
            f"{path} holds no encoder for modality {modality!r} (its model has encoders for {found}); "
            f"the UMT teacher of {modality!r} must come from a method.name=unimodal:{modality} run"
        )
    teacher = standin_teacher(student, modality)
    try:
        teacher.load_state_dict(encoder_state)
    except RuntimeError as error:
        raise ConfigError(
            f"{path}: its {modality!r} encoder does not fit this run's model.encoders.{modality} (the teacher must "
            f"have the student's encoder architecture and options): {error}"
        ) from None
    return teacher


def standin_teacher(student: MultimodalClassifier, modality: str) -> nn.Module:
    """A frozen, eval-mode copy of ``student.encoders[modality]`` with the student's current weights.

    :func:`load_teacher` loads a checkpoint into it; on its own it stands in for a teacher whose
    run has not happened yet (``modbalance compare`` checks UMT before training its teachers).

    Example:
        >>> import torch
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> model = MultimodalClassifier({"audio": torch.nn.Linear(3, 4)}, Concat({"audio": 4}, 2))
        >>> t = standin_teacher(model, "audio")
        >>> t is model.encoders["audio"], t.weight.requires_grad, t.training
        (False, False, False)
    """
    if modality not in student.encoders:
        raise ConfigError(f"method.options.teachers.{modality}: the model has no modality {modality!r}")
    teacher = copy.deepcopy(student.encoders[modality])
    teacher.requires_grad_(False)
    return teacher.eval()


def load_teachers(
    spec: object, student: MultimodalClassifier, *, seed: int, key: str = "method.options.teachers"
) -> dict[str, nn.Module]:
    """Modality -> teacher module for ``spec`` (modality -> run folder or checkpoint, ``{seed}`` filled in).

    Raises:
        ConfigError: ``spec`` is not a mapping, names a modality the model lacks, or a teacher
            does not fit (see :func:`load_teacher`).
        FileNotFoundError: a named file or run folder does not exist.

    Example:
        >>> import torch
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> model = MultimodalClassifier({"audio": torch.nn.Linear(3, 4)}, Concat({"audio": 4}, 2))
        >>> load_teachers({"text": "x.pt"}, model, seed=0)
        Traceback (most recent call last):
        ...
        modbalance.train.errors.ConfigError: method.options.teachers.text: the model has no modality 'text' ...
    """
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(
            f"{key}={spec!r} must map each modality to the run folder or checkpoint of its unimodal:<modality> run"
        )
    if not isinstance(student, MultimodalClassifier):
        raise ConfigError(
            f"{key}: UMT's teachers are copies of the student's encoders and need a late-fusion model "
            f"(model.kind=late), got {type(student).__name__}"
        )
    modalities = student.modalities
    teachers: dict[str, nn.Module] = {}
    for modality, path in spec.items():
        if modality not in modalities:
            raise ConfigError(f"{key}.{modality}: the model has no modality {modality!r} (it has {modalities})")
        if isinstance(path, nn.Module):
            teachers[modality] = path
            continue
        if not isinstance(path, str | os.PathLike):
            raise ConfigError(f"{key}.{modality}={path!r} must be a run folder or checkpoint path")
        checkpoint = teacher_checkpoint(path, seed=seed, key=f"{key}.{modality}")
        teachers[modality] = load_teacher(checkpoint, modality, student)
    return teachers
