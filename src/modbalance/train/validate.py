"""Semantic checks of an :class:`~modbalance.train.config.ExperimentConfig`, before any training.

Every check raises :class:`~modbalance.train.errors.ConfigError` with the dotted key, the value
and the allowed values or range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modbalance.imbalance import COEFFICIENTS, RATIO_RULES
from modbalance.ogm import SPACES
from modbalance.opm import RESCALE_MODES
from modbalance.train.errors import ConfigError

if TYPE_CHECKING:  # annotations only: config.py imports this module to validate
    from modbalance.train.config import ExperimentConfig

__all__ = [
    "BALANCING_METHODS",
    "METHOD_COMPONENTS",
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULERS",
    "check_modalities",
    "interaction_options",
    "method_modalities",
    "validate_sections",
]

#: Multimodal methods built into the trainer; ``unimodal:<modality>`` trains one modality alone.
#: The methods of :data:`modbalance.methods.METHODS` are allowed as well (:func:`method_names`).
BALANCING_METHODS: tuple[str, ...] = ("joint", "ogm", "ogm_ge", "opm", "opm+ogm")
#: The components of each built-in method that ``method.windows.<component>`` may give a window.
METHOD_COMPONENTS: dict[str, tuple[str, ...]] = {
    "ogm": ("ogm",),
    "ogm_ge": ("ogm",),
    "opm": ("opm",),
    "opm+ogm": ("ogm", "opm"),
}
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
SCHEDULERS: tuple[str, ...] = ("none", "step", "cosine")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
SELECT_METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "map")
PARAM_FILTERS: tuple[object, ...] = (None, "conv")


def _allowed(key: str, value: object, allowed: Sequence[object]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed. Allowed values: {', '.join(map(str, allowed))}")


def _at_least(key: str, value: float | None, low: float) -> None:
    if value is None or not math.isfinite(value) or value < low:
        raise ConfigError(f"{key}={value!r} is out of range: must be a finite number >= {low}")


def _unit_interval(key: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{key}={value!r} is out of range: must be in [0, 1]")


def method_names() -> list[str]:
    """Every allowed ``method.name`` (``unimodal:<modality>`` aside): built-in, then registered.

    Example:
        >>> method_names()[:5], "mslr" in method_names()
        (['joint', 'ogm', 'ogm_ge', 'opm', 'opm+ogm'], True)
    """
    from modbalance.methods import METHODS

    return [*BALANCING_METHODS, *METHODS.names()]


def _check_window(key: str, start: int, end: int | None) -> None:
    _at_least(f"{key}.start_epoch", start, 0)
    if end is not None and end < start:
        raise ConfigError(f"{key}.end_epoch={end} is out of range: must be null or >= {key}.start_epoch ({start})")


def _check_registered(config: ExperimentConfig) -> None:
    """A :data:`~modbalance.methods.METHODS` method: its options build it (names the bad option)."""
    from modbalance.methods import METHODS, create_method
    from modbalance.methods.gblending import GBlending
    from modbalance.train.trial_runs import split_trial_options

    method = config.method
    if method.name not in METHODS:
        if method.options:
            raise ConfigError(
                f"method.options={method.options!r}: options are for the methods of modbalance.methods "
                f"({', '.join(METHODS.names())}); method.name={method.name!r} uses the typed method.* keys"
            )
        return
    for key in ("start_epoch", "end_epoch"):
        if key in method.options:
            raise ConfigError(f"method.options.{key}: set the window with method.{key}, not in method.options")
    options = dict(method.options)
    builder = METHODS.get(method.name)
    if isinstance(builder, type) and issubclass(builder, GBlending):  # trial runs are files, read when the run is built
        _, _, options = split_trial_options(options)
    try:
        create_method(method.name, start_epoch=method.start_epoch, end_epoch=method.end_epoch, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"method.options (method.name={method.name!r}): {error}") from None


def _check_method(config: ExperimentConfig) -> None:
    method = config.method
    if not method.name.startswith("unimodal:"):
        _allowed("method.name", method.name, [*method_names(), "unimodal:<modality>"])
    elif not method.name.split(":", 1)[1]:
        raise ConfigError("method.name='unimodal:' needs a modality, e.g. unimodal:audio")
    components = METHOD_COMPONENTS.get(method.name, ())
    for component, window in method.windows.items():
        if component not in components:
            allowed = ", ".join(components) if components else "none (use method.start_epoch/end_epoch)"
            raise ConfigError(
                f"method.windows.{component}: method.name={method.name!r} has no component {component!r} "
                f"to give a window. Allowed: {allowed}"
            )
        _check_window(f"method.windows.{component}", window.start_epoch, window.end_epoch)
    _at_least("method.alpha", method.alpha, 0.0)
    _allowed("method.coefficient", method.coefficient, COEFFICIENTS)
    _allowed("method.space", method.space, SPACES)
    _allowed("method.param_filter", method.param_filter, PARAM_FILTERS)
    _allowed("method.rule", method.rule, RATIO_RULES)
    _allowed("method.rescale", method.rescale, RESCALE_MODES)
    _at_least("method.start_epoch", method.start_epoch, 0)
    if method.end_epoch is not None and method.end_epoch < method.start_epoch:
        raise ConfigError(
            f"method.end_epoch={method.end_epoch} is out of range: must be null or >= method.start_epoch "
            f"({method.start_epoch})"
        )
    _unit_interval("method.q_base", method.q_base)
    _unit_interval("method.p_exe", method.p_exe)
    _at_least("method.lam", method.lam, 0.0)
    _check_registered(config)


def _check_optim(config: ExperimentConfig) -> None:
    optim = config.optim
    _allowed("optim.name", optim.name, OPTIMIZERS)
    if not (math.isfinite(optim.lr) and optim.lr > 0):
        raise ConfigError(f"optim.lr={optim.lr!r} is out of range: must be a finite number > 0")
    if not (math.isfinite(optim.momentum) and 0.0 <= optim.momentum < 1.0):
        raise ConfigError(f"optim.momentum={optim.momentum!r} is out of range: must be in [0, 1)")
    _at_least("optim.weight_decay", optim.weight_decay, 0.0)
    _allowed("optim.scheduler.name", optim.scheduler.name, SCHEDULERS)
    _at_least("optim.scheduler.step_size", optim.scheduler.step_size, 1)
    if not (math.isfinite(optim.scheduler.gamma) and 0.0 < optim.scheduler.gamma <= 1.0):
        raise ConfigError(f"optim.scheduler.gamma={optim.scheduler.gamma!r} is out of range: must be in (0, 1]")


def _check_train(config: ExperimentConfig) -> None:
    train = config.train
    for key in ("epochs", "batch_size", "eval_batch_size", "grad_accum_steps", "probe_steps", "log_every_steps"):
        _at_least(f"train.{key}", getattr(train, key), 1)
    for key in ("checkpoint_every_steps", "num_workers", "max_elements", "threads"):
        _at_least(f"train.{key}", getattr(train, key), 0)
    if train.max_steps is not None:
        _at_least("train.max_steps", train.max_steps, 1)
    if train.grad_accum_steps > train.batch_size:
        raise ConfigError(
            f"train.grad_accum_steps={train.grad_accum_steps} is out of range: must be <= train.batch_size "
            f"({train.batch_size}), which it splits into micro-batches"
        )
    _allowed("train.precision", train.precision, PRECISIONS)
    if train.device not in ("auto", "cpu", "cuda") and not (
        train.device.startswith("cuda:") and train.device[5:].isdigit()
    ):
        raise ConfigError(
            f"train.device={train.device!r} is not allowed. Allowed values: auto, cpu, cuda, cuda:<index>"
        )
    if train.select_on != "val":
        raise ConfigError(
            f"train.select_on={train.select_on!r} is not allowed. Allowed values: val "
            "(the best checkpoint is chosen on the validation split, never on the test split)"
        )
    _allowed("train.select_metric", train.select_metric, SELECT_METRICS)


def _check_data_and_model(config: ExperimentConfig) -> None:
    from modbalance.encoders.registry import ENCODERS
    from modbalance.fusion import FUSIONS

    data = config.data
    splits = {
        "data.train_split": data.train_split,
        "data.val_split": data.val_split,
        "data.test_split": data.test_split,
    }
    if data.val_fraction == 0 and data.val_split == data.test_split:
        raise ConfigError(
            f"data.val_split={data.val_split!r} equals data.test_split: model selection on the test split "
            "is refused; name a separate validation split"
        )
    for key, value in splits.items():
        if not value:
            raise ConfigError(f"{key} must name a split, got {value!r}")
    if not (math.isfinite(data.val_fraction) and 0.0 <= data.val_fraction < 1.0):
        raise ConfigError(f"data.val_fraction={data.val_fraction!r} is out of range: must be in [0, 1)")
    _allowed("model.fusion", config.model.fusion, sorted(FUSIONS))
    _check_interaction(config)
    for modality, encoder in config.model.encoders.items():
        _allowed(f"model.encoders.{modality}.name", encoder.name, ENCODERS.names())
        _allowed(f"model.encoders.{modality}.pretrained_conv1", encoder.pretrained_conv1, ("auto", "adapt", "reinit"))
    _at_least("seed", config.seed, 0)
    if config.run_name is not None and (
        config.run_name in ("", ".", "..") or any(c in config.run_name for c in "/\\\0")
    ):
        raise ConfigError(
            f"run_name={config.run_name!r} must be a folder name inside output_dir: not empty, '.' or '..', "
            "and without '/', '\\' or NUL"
        )


#: Integers in a config must fit in 64 bits (torch and NumPy seeds, sizes, counts).
INT_LIMIT = 2**63 - 1


def _check_integers(tree: object, key: str) -> None:
    """Refuse an integer (also inside ``options`` mappings) that does not fit in 64 bits, naming its key."""
    if isinstance(tree, bool):
        return
    if isinstance(tree, int):
        if abs(tree) > INT_LIMIT:
            raise ConfigError(f"{key}={tree} is out of range: integers must be within +-(2**63 - 1)")
        return
    items: Any = ()
    if isinstance(tree, dict):
        items = tree.items()
    elif hasattr(tree, "__dataclass_fields__"):
        items = vars(tree).items()
    for name, value in items:
        _check_integers(value, f"{key}.{name}" if key else str(name))
    if isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            _check_integers(value, f"{key}[{index}]")


def interaction_options(kind: str) -> list[str]:
    """The ``model.interaction`` keys a ``model.kind`` accepts (its keyword-only constructor options).

    Example:
        >>> interaction_options("centralnet")
        ['ogm_shared', 'unimodal']
    """
    import inspect

    from modbalance.interaction import INTERACTIONS

    parameters = inspect.signature(INTERACTIONS[kind]).parameters.values()
    # tokenizers come from model.encoders, not from the options
    return sorted(p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name != "tokenizers")


def _check_interaction(config: ExperimentConfig) -> None:
    from modbalance.interaction import INTERACTIONS

    model = config.model
    _allowed("model.kind", model.kind, ["late", *sorted(INTERACTIONS)])
    if model.kind == "late":
        if model.interaction:
            raise ConfigError(
                f"model.interaction={dict(model.interaction)} is set but model.kind='late' does not use it; "
                f"set model.kind to one of {', '.join(sorted(INTERACTIONS))}"
            )
        return
    allowed = interaction_options(model.kind)
    for key in model.interaction:
        if key not in allowed:
            raise ConfigError(
                f"model.interaction.{key}: unknown option for model.kind={model.kind!r}. "
                f"Allowed keys: {', '.join(allowed)}"
            )
    if model.interaction.get("unimodal", "masked") != "masked":
        raise ConfigError(
            f"model.interaction.unimodal={model.interaction['unimodal']!r} is not allowed in the trainer. Allowed "
            "values: masked (auxiliary heads learn only from model.auxiliary_loss, which the trainer's loss does "
            "not add; use them in your own loop, docs/complex-models.md)"
        )
    if config.method.name.startswith("unimodal:"):
        raise ConfigError(
            f"method.name={config.method.name!r} trains one modality, but model.kind={model.kind!r} needs two or "
            "more; train one modality alone with model.kind=late"
        )


def validate_sections(config: ExperimentConfig) -> None:
    """Every check that needs only the config itself."""
    _check_integers(config, "")
    _check_method(config)
    _check_optim(config)
    _check_train(config)
    _check_data_and_model(config)


def method_modalities(config: ExperimentConfig, data_modalities: Sequence[str]) -> list[str]:
    """The modalities the model uses: all of the data's, or the one of ``unimodal:<modality>``."""
    name = config.method.name
    if name.startswith("unimodal:"):
        return [name.split(":", 1)[1]]
    return list(data_modalities)


def check_modalities(config: ExperimentConfig, data_modalities: Sequence[str]) -> None:
    """Check the method's and the encoders' modality names against the data's modalities.

    Raises:
        ConfigError: a modality the data does not have, a missing encoder, or a balancing
            method on fewer than two modalities.

    Example:
        >>> from modbalance.train.config import load_config
        >>> try:
        ...     check_modalities(load_config(None, ["method.name=unimodal:text"]), ["audio", "visual"])
        ... except ValueError as error:
        ...     print(error)
        method.name='unimodal:text' names modality 'text', absent from the data. Allowed values: unimodal:audio, ...
    """
    data_modalities = list(data_modalities)
    name = config.method.name
    if name.startswith("unimodal:") and name.split(":", 1)[1] not in data_modalities:
        allowed = ", ".join(f"unimodal:{m}" for m in data_modalities)
        raise ConfigError(
            f"method.name={name!r} names modality {name.split(':', 1)[1]!r}, absent from the data. "
            f"Allowed values: {allowed}"
        )
    if name != "joint" and name in method_names() and len(data_modalities) < 2:
        raise ConfigError(
            f"method.name={name!r} balances modalities and needs two or more; the data has {data_modalities}"
        )
    extra = sorted(set(config.model.encoders) - set(data_modalities))
    if extra:
        raise ConfigError(
            f"model.encoders.{extra[0]}: modality {extra[0]!r} is absent from the data. "
            f"Allowed values: {', '.join(data_modalities)}"
        )
    missing = [m for m in method_modalities(config, data_modalities) if m not in config.model.encoders]
    if missing:
        raise ConfigError(
            f"model.encoders.{missing[0]}: no encoder configured for modality {missing[0]!r} "
            f"(the data's modalities: {', '.join(data_modalities)})"
        )
