"""The typed configuration of one training run: schema, loading, overrides, validation.

The schema is a tree of dataclasses (:class:`ExperimentConfig` at the root). A run's config is
built in three layers, each checked against the schema by OmegaConf: the dataclass defaults,
then a YAML file, then dotted ``key=value`` overrides (``method.alpha=0.8``). A key the schema
does not have, or a value of the wrong type, is refused there; :func:`validate_config` then
checks ranges and names (methods, optimizers, fusions, precisions) and raises
:class:`ConfigError`, which names the key and the allowed values. Modality names are checked
against the data in :func:`check_modalities`, before any data is loaded.

Example:
    >>> cfg = load_config(None, ["method.name=ogm", "method.alpha=0.5", "train.epochs=2"])
    >>> cfg.method.name, cfg.method.alpha, cfg.train.epochs
    ('ogm', 0.5, 2)
    >>> try:
    ...     load_config(None, ["method.alpah=0.5"])
    ... except ConfigError as error:
    ...     print(error)
    method.alpah: unknown key. Allowed keys: alpha, coefficient, ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from modbalance.train.errors import ConfigError
from modbalance.train.validate import validate_sections

__all__ = [
    "ConfigError",
    "DataConfig",
    "EncoderConfig",
    "ExperimentConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "SchedulerConfig",
    "TrainConfig",
    "WindowConfig",
    "config_to_yaml",
    "load_config",
    "resolve_config_path",
]

#: Configs shipped with the package (``modbalance train --config lab/ogm`` finds them).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class EncoderConfig:
    """One modality's encoder: a name of :data:`modbalance.encoders.registry.ENCODERS` and its kwargs.

    ``in_dim`` is filled from the data when the encoder takes it and the options leave it out.
    ``pretrained`` is a local torchvision-layout ResNet-18 checkpoint loaded with
    :func:`~modbalance.encoders.load_pretrained` (never downloaded); ``pretrained_conv1`` is its
    stem mode (``auto``, ``adapt`` or ``reinit``).

    Example:
        >>> cfg = load_config(None, ["model.encoders.audio.name=mlp", "model.encoders.audio.options.hidden_dim=32"])
        >>> cfg.model.encoders["audio"]
        EncoderConfig(name='mlp', options={'hidden_dim': 32}, pretrained=None, pretrained_conv1='auto')
    """

    name: str = "mlp"
    options: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    pretrained_conv1: str = "auto"


@dataclass
class DataConfig:
    """Where the data comes from: ``synthetic`` (the built-in lab) or a registered benchmark.

    Example:
        >>> load_config("lab/tiny", ["data.options.seed=3"]).data.options
        {'seed': 3}
    """

    name: str = "synthetic"
    preset: str = "default"  # lab preset (synthetic only)
    root: str | None = None  # dataset folder (benchmarks only)
    options: dict[str, Any] = field(default_factory=dict)  # passed to the lab or to build_dataset
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    val_fraction: float = 0.0  # > 0: hold out this share of train as validation (for data without a val split)


@dataclass
class ModelConfig:
    """Encoders per modality and the fusion head (:func:`modbalance.fusion.create_fusion`).

    ``kind`` is ``late`` (encoders, then ``fusion``) or a model whose modalities interact inside
    the network (:data:`modbalance.interaction.INTERACTIONS`: ``transformer``, ``mmtm``,
    ``centralnet``), built around the same encoders with the keyword options in ``interaction``
    (docs/complex-models.md); ``fusion`` is then unused.

    Example:
        >>> model = load_config("lab/tiny", ["model.fusion=sum"]).model
        >>> sorted(model.encoders), model.fusion, model.kind
        (['audio', 'visual'], 'sum', 'late')
    """

    encoders: dict[str, EncoderConfig] = field(default_factory=dict)
    fusion: str = "concat"
    fusion_options: dict[str, Any] = field(default_factory=dict)
    kind: str = "late"
    interaction: dict[str, Any] = field(default_factory=dict)


@dataclass
class WindowConfig:
    """One method's epoch window in ``method.windows.<ogm|opm>`` (both ends inclusive, ``null`` = no end).

    Example:
        >>> cfg = load_config(None, ["method.name=opm+ogm", "method.windows.ogm.end_epoch=60"])
        >>> cfg.method.windows["ogm"]
        WindowConfig(start_epoch=0, end_epoch=60)
    """

    start_epoch: int = 0
    end_epoch: int | None = None


@dataclass
class MethodConfig:
    """The balancing method and its hyperparameters (OGM: alpha..rule; OPM: q_base..rescale).

    ``name`` is one of ``joint``, ``ogm``, ``ogm_ge``, ``opm``, ``opm+ogm``, ``unimodal:<modality>``
    or a method of :data:`modbalance.methods.METHODS` (``mslr``, ...), whose hyperparameters go in
    ``options`` (keyword arguments of its class; ``start_epoch``/``end_epoch`` stay typed keys).
    ``space`` is OGM's ``gradient`` (official) or ``update`` (scales the parameter update; for Adam).
    ``start_epoch``/``end_epoch`` is the window of every component; ``windows.ogm`` and
    ``windows.opm`` replace it for one component of ``opm+ogm`` (the TPAMI code runs OGM in
    epochs 6-60 and OPM from 6 to the end).

    Example:
        >>> method = load_config(None, ["method.name=opm", "method.q_base=0.4"]).method
        >>> method.name, method.q_base, method.lam, method.p_exe
        ('opm', 0.4, 0.5, 0.7)
    """

    name: str = "joint"
    alpha: float = 0.8
    coefficient: str = "reference"
    param_filter: str | None = None
    rule: str = "mean_pairwise"
    space: str = "gradient"
    start_epoch: int = 0
    end_epoch: int | None = None
    q_base: float = 0.5
    lam: float = 0.5
    p_exe: float = 0.7
    rescale: str = "reference"
    windows: dict[str, WindowConfig] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SchedulerConfig:
    """Learning-rate schedule, stepped once per epoch: ``none``, ``step`` or ``cosine``.

    Example:
        >>> load_config(None, ["optim.scheduler.name=step", "optim.scheduler.step_size=20"]).optim.scheduler
        SchedulerConfig(name='step', step_size=20, gamma=0.1)
    """

    name: str = "none"
    step_size: int = 70
    gamma: float = 0.1


@dataclass
class OptimConfig:
    """Optimizer over every trainable parameter: ``sgd``, ``adam`` or ``adamw``.

    Example:
        >>> optim = load_config(None, ["optim.name=adamw", "optim.lr=1e-3"]).optim
        >>> optim.name, optim.lr, optim.weight_decay
        ('adamw', 0.001, 0.0001)
    """

    name: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


@dataclass
class TrainConfig:
    """The loop: epochs, batches, device, precision, checkpoints, model selection.

    Example:
        >>> train = load_config(None, ["train.epochs=5", "train.precision=bf16"]).train
        >>> train.epochs, train.precision, train.select_on
        (5, 'bf16', 'val')
    """

    epochs: int = 10
    batch_size: int = 64  # per optimizer step and per process
    eval_batch_size: int = 512
    device: str = "auto"
    precision: str = "fp32"
    grad_accum_steps: int = 1
    checkpoint_every_steps: int = 0  # 0: checkpoints at the end of each epoch only
    deterministic: bool = False
    num_workers: int = 0
    max_elements: int = 1_000_000_000  # most elements in an encoder's parameters or one activation (0: no limit)
    max_steps: int | None = None  # stop early (smoke tests)
    select_on: str = "val"
    select_metric: str = "accuracy"
    probe: bool = False  # linear probe per modality at the end (test accuracy)
    probe_steps: int = 100
    log_every_steps: int = 50
    progress: bool = True
    # torch CPU threads during the run (restored after it); 0 keeps the process's setting. 1 by
    # default: on shared cores more threads made small models several times slower (docs/benchmarks.md).
    threads: int = 1


@dataclass
class ExperimentConfig:
    """The whole run. ``run_name`` defaults to ``<data>-<method>-seed<seed>``.

    Example:
        >>> cfg = ExperimentConfig()
        >>> cfg.data.name, cfg.method.name, cfg.seed, cfg.output_dir
        ('synthetic', 'joint', 0, 'runs')
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    output_dir: str = "runs"
    run_name: str | None = None


def resolve_config_path(path: str | Path) -> Path:
    """A YAML file path, or the name of a shipped config (``lab/ogm`` -> ``configs/lab/ogm.yaml``).

    A dataset setting's name alone (a key of ``DATASET_PRESETS``, e.g. ``cremad/tpami``) names that
    setting's OGM-GE config (``cremad/tpami_ogm_ge``); see ``docs/config.md``.

    Example:
        >>> resolve_config_path("lab/ogm").name
        'ogm.yaml'
        >>> resolve_config_path("cremad/tpami").name
        'tpami_ogm_ge.yaml'
    """
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    shipped = CONFIG_DIR / (str(path) if str(path).endswith(".yaml") else f"{path}.yaml")
    if shipped.is_file():
        return shipped
    from modbalance.data.presets import DATASET_PRESETS

    if str(path) in DATASET_PRESETS:
        return CONFIG_DIR / f"{path}_ogm_ge.yaml"
    names = sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml"))
    raise FileNotFoundError(f"config file {str(path)!r} not found (shipped configs: {', '.join(names)})")


def _omegaconf() -> Any:
    try:
        import omegaconf
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError('the trainer needs omegaconf: pip install "modbalance[train]"') from error
    return omegaconf


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Defaults, then the YAML file ``path`` (if any), then ``key=value`` overrides; validated.

    Args:
        path: a YAML file or a shipped config name; ``None`` starts from the defaults.
        overrides: dotted assignments, values parsed as YAML (``0.8``, ``true``, ``null``).

    Raises:
        ConfigError: unknown key, wrong type or impossible value (the message names the key).
        FileNotFoundError: ``path`` does not exist.

    Example:
        >>> cfg = load_config("lab/ogm", ["seed=1", "method.alpha=0.5"])  # a shipped config
        >>> cfg.method.name, cfg.method.alpha, cfg.seed, cfg.train.epochs
        ('ogm', 0.5, 1, 20)
    """
    omegaconf = _omegaconf()
    OmegaConf, errors = omegaconf.OmegaConf, omegaconf.errors
    layers = [OmegaConf.structured(ExperimentConfig)]
    try:
        if path is not None:
            source = resolve_config_path(path)
            layer = _load_yaml(source)
            _check_sections(layer, str(source))
            layers.append(layer)
        for item in overrides:
            if "=" not in item or item.startswith("="):
                raise ConfigError(f"override {item!r} must look like key=value (e.g. method.alpha=0.8)")
        dotlist = _from_dotlist(OmegaConf, overrides)
        _check_sections(dotlist, "override")
        layers.append(dotlist)
        merged = OmegaConf.merge(*layers)
        config = OmegaConf.to_object(merged)
    except errors.OmegaConfBaseException as error:
        raise _config_error(error) from None
    validate_config(config)
    return config


def _from_dotlist(omegaconf: Any, overrides: Sequence[str]) -> Any:
    """The overrides as one config; a value that is not valid YAML is a ConfigError naming the override."""
    import yaml

    for item in overrides:  # each alone first, so that the error names the override at fault
        try:
            omegaconf.from_dotlist([item])
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(
                f"override {item!r}: its value is not valid YAML ({problem}); quote the value "
                "(key='a{b}') or set nested keys one by one (method.options.lrs.audio=0.1)"
            ) from None
    return omegaconf.from_dotlist(list(overrides))


def _load_yaml(source: Path) -> Any:
    """``OmegaConf.load(source)``; a file that is not valid YAML is a ConfigError naming the file and line."""
    import yaml

    omegaconf = _omegaconf()
    try:
        layer = omegaconf.OmegaConf.load(source)
    except UnicodeDecodeError as error:
        line = source.read_bytes()[: error.start].count(b"\n") + 1
        raise ConfigError(f"{source}:{line}: not a text file (byte {error.start} is not UTF-8)") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else str(source)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        hint = " (YAML indents with spaces, not tabs)" if "\t" in str(problem) or "tab" in str(problem) else ""
        context, start = getattr(error, "context", None), getattr(error, "context_mark", None)
        if context and start is not None and mark is not None and start.line != mark.line:
            hint += f" ({context} at line {start.line + 1})"
        raise ConfigError(f"{where}: not valid YAML: {problem}{hint}") from None
    if not isinstance(layer, omegaconf.DictConfig):
        raise ConfigError(f"{source}: a config file must hold a mapping of sections, got {type(layer).__name__}")
    return layer


def _check_sections(layer: Any, where: str) -> None:
    """Refuse a plain value given for a whole section (``train=5``), naming the key and the section's keys."""
    omegaconf = _omegaconf()
    for key in list(layer.keys()):
        section = _section_for(str(key), ExperimentConfig)
        value = layer._get_node(key)
        if section is not None and not isinstance(value, omegaconf.DictConfig):
            allowed = ", ".join(sorted(f.name for f in fields(section)))
            raise ConfigError(
                f"{key}: a section, not a value ({where} gives {value._value()!r}); set its keys, "
                f"e.g. {key}.<key>=..., one of: {allowed}"
            )


def _config_error(error: Any) -> ConfigError:
    """Turn an OmegaConf error into a message naming the key and, for typos, the allowed keys."""
    key = getattr(error, "full_key", None) or "?"
    message = (getattr(error, "msg", None) or str(error)).splitlines()[0]
    if type(error).__name__ == "ConfigKeyError":
        section = _section_for(key.rsplit(".", 1)[0] if "." in key else "", ExperimentConfig)
        allowed = ", ".join(sorted(f.name for f in fields(section))) if section is not None else "see the schema"
        return ConfigError(f"{key}: unknown key. Allowed keys: {allowed}")
    return ConfigError(f"{key}: {message}")


def _section_for(dotted: str, root: type) -> type | None:
    """The dataclass type at ``dotted`` under ``root`` ("" is the root), or None.

    Inside ``model.encoders.<modality>`` the section is :class:`EncoderConfig`.
    """
    parts = [part for part in dotted.split(".") if part]
    if parts[:2] == ["model", "encoders"] and len(parts) == 3:
        return EncoderConfig
    if parts[:2] == ["method", "windows"] and len(parts) == 3:
        return WindowConfig
    current: Any = root
    for part in parts:
        fields = getattr(current, "__dataclass_fields__", {})
        factory = fields[part].default_factory if part in fields else None
        current = type(factory()) if callable(factory) else None
        if current is None or not hasattr(current, "__dataclass_fields__"):
            return None
    return current


def config_to_yaml(config: ExperimentConfig) -> str:
    """The resolved config as YAML (what each run saves as ``config.yaml``).

    Example:
        >>> "alpha: 0.8" in config_to_yaml(ExperimentConfig())
        True
    """
    OmegaConf = _omegaconf().OmegaConf
    return str(OmegaConf.to_yaml(OmegaConf.structured(config)))


def validate_config(config: ExperimentConfig) -> None:
    """Check ranges and names that do not need the data; raise :class:`ConfigError` naming the key."""
    validate_sections(config)
