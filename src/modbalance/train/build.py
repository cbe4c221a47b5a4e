"""Builders that turn a validated config into the model, the methods and the optimizer.

Only these functions read config objects; the classes they build take plain keyword arguments.
Methods are built from the public API: :class:`~modbalance.OGM` over the model's
:meth:`~modbalance.MultimodalClassifier.modality_parameters`, :class:`~modbalance.OPM` as a
separate module the loop passes to the model's ``forward``, and any method of
:data:`modbalance.methods.METHODS` with ``method.options`` as its keyword arguments, checked
against the model and the run's settings before training.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn

from modbalance.encoders.pretrained import load_pretrained
from modbalance.encoders.registry import ENCODERS, build_encoder
from modbalance.encoders.resnet import ResNet18Encoder
from modbalance.fusion import create_fusion
from modbalance.interaction import InteractionModel, create_interaction
from modbalance.methods import METHODS, BalancingMethod, create_method
from modbalance.methods.gblending import GBlending
from modbalance.model import MultimodalClassifier
from modbalance.ogm import OGM
from modbalance.opm import OPM
from modbalance.train.config import ConfigError, ExperimentConfig
from modbalance.train.data import DataBundle
from modbalance.train.teachers import in_planned_run, load_teachers, standin_teacher
from modbalance.train.trial_runs import TRIAL_RUNS_OPTION, split_trial_options, weights_from_trial_runs
from modbalance.train.validate import method_modalities

__all__ = [
    "Methods",
    "build_interaction_model",
    "build_methods",
    "build_model",
    "build_optimizer",
    "derived_seed",
    "encoder_stages",
    "encoder_tokenizer",
]

logger = logging.getLogger(__name__)


class Methods(NamedTuple):
    """The balancing methods of a run (``None`` when the method does not use one).

    ``method`` is a :class:`~modbalance.methods.BalancingMethod` (``method.name`` of
    :data:`~modbalance.methods.METHODS`); OGM and OPM keep their own fields and code path.
    """

    ogm: OGM | None
    opm: OPM | None
    method: BalancingMethod | None = None


def derived_seed(seed: int, purpose: str) -> int:
    """A fixed 62-bit seed for one purpose (``"ogm"``, ``"opm"``) of run seed ``seed``.

    Example:
        >>> derived_seed(0, "ogm") == derived_seed(0, "ogm") != derived_seed(0, "opm")
        True
    """
    digest = hashlib.sha256(f"modbalance:{purpose}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**62 - 1)


def _encoder_options(config: ExperimentConfig, modality: str, bundle: DataBundle) -> dict[str, Any]:
    """The encoder's kwargs, with ``in_dim`` filled from the data when the builder takes it."""
    encoder = config.model.encoders[modality]
    options = dict(encoder.options)
    accepts = inspect.signature(ENCODERS.get(encoder.name)).parameters
    if "in_dim" in accepts and "in_dim" not in options and modality in bundle.in_dims:
        options["in_dim"] = bundle.in_dims[modality]
    return options


def build_model(config: ExperimentConfig, bundle: DataBundle) -> MultimodalClassifier:
    """Encoders for the method's modalities, a fusion sized by one probe forward, the classifier.

    The feature width of each encoder is read from its output on two validation samples (in
    eval mode, without gradients), so any registered encoder works without a declared width.
    """
    modalities = method_modalities(config, bundle.modalities)
    encoders: dict[str, nn.Module] = {}
    for modality in modalities:
        key = f"model.encoders.{modality}"
        try:
            encoders[modality] = build_encoder(
                config.model.encoders[modality].name, **_encoder_options(config, modality, bundle)
            )
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{key}: cannot build encoder: {error}") from error
        pretrained = config.model.encoders[modality].pretrained
        if pretrained is not None:
            try:
                conv1 = config.model.encoders[modality].pretrained_conv1  # validated: auto, adapt or reinit
                load_pretrained(encoders[modality], pretrained, conv1=conv1)  # type: ignore[arg-type]
            except (OSError, TypeError, ValueError) as error:
                raise ConfigError(f"{key}.pretrained: {error}") from error
    if config.model.kind != "late":
        # Same seams as MultimodalClassifier (forward, modality_parameters), duck-typed for the loop.
        return cast(MultimodalClassifier, build_interaction_model(config, bundle, encoders))
    sample = bundle.sample_inputs()
    dims: dict[str, int] = {}
    with torch.no_grad():
        for modality, encoder in encoders.items():
            encoder.eval()
            out = encoder(sample[modality])
            encoder.train()
            if out.dim() != 2:
                raise ConfigError(
                    f"model.encoders.{modality}: the encoder must return (B, D) features, got {tuple(out.shape)}"
                )
            dims[modality] = int(out.shape[1])
    try:
        fusion = create_fusion(config.model.fusion, dims, bundle.num_classes, **config.model.fusion_options)
    except ValueError as error:
        raise ConfigError(f"model.fusion_options: {error}") from error
    return MultimodalClassifier(encoders, fusion)


class _TokenWise(nn.Module):
    """A vector encoder applied to every token: ``(B, T, d) -> (B, T, D)`` in one call."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"token-wise encoder expects tokens (B, T, d), got shape {tuple(x.shape)}")
        b, t, d = x.shape
        return self.encoder(x.reshape(b * t, d)).reshape(b, t, -1)


class _MapTokens(nn.Module):
    """A ResNet-18 encoder's layer4 map as tokens: ``(B, 512, [T,] h, w) -> (B, [T*]h*w, 512)``."""

    def __init__(self, encoder: ResNet18Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder.forward_map(x).flatten(2).transpose(1, 2)


class _ResNetStage(nn.Module):
    """One stage of a ResNet-18 encoder on ``(B, C, H, W)``, or frame by frame on ``(B, C, T, H, W)``."""

    def __init__(self, encoder: ResNet18Encoder, modules: list[nn.Module], first: bool) -> None:
        super().__init__()
        self.check = encoder._check_input if first else None
        self.temporal = encoder.temporal
        self.body = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        if self.check is not None:
            x = self.check(x)
        if not self.temporal:
            return self.body(x)
        b, c, t, h, w = x.shape
        out = self.body(x.transpose(1, 2).reshape(b * t, c, h, w))
        return out.reshape(b, t, *out.shape[1:]).transpose(1, 2)


def encoder_stages(encoder: nn.Module, key: str) -> list[nn.Module]:
    """Cut a registered encoder into stages sharing its modules (for ``mmtm`` and ``centralnet``).

    ``MLPEncoder``: one stage per linear layer (with its ReLU); ``ResNet18Encoder``: stem + layer1,
    layer2, layer3, layer4 (frame by frame for video). Other encoders raise ConfigError naming ``key``.

    Example:
        >>> from modbalance.encoders.mlp import MLPEncoder
        >>> len(encoder_stages(MLPEncoder(4, 8, 6, depth=3), "model.encoders.audio"))
        3
    """
    from modbalance.encoders.mlp import MLPEncoder

    if isinstance(encoder, MLPEncoder):
        last = len(encoder.layers) - 1
        return [
            nn.Sequential(layer, encoder.activation, *([encoder.drop] if i < last else []))
            for i, layer in enumerate(encoder.layers)
        ]
    if isinstance(encoder, ResNet18Encoder):
        stem: list[nn.Module] = [encoder.conv1, encoder.bn1, encoder.relu, encoder.maxpool, encoder.layer1]
        groups: list[list[nn.Module]] = [stem, [encoder.layer2], [encoder.layer3], [encoder.layer4]]
        return [_ResNetStage(encoder, group, i == 0) for i, group in enumerate(groups)]
    raise ConfigError(
        f"{key}: model.kind needs an encoder that can be cut into stages (mlp or a resnet18 encoder), "
        f"got {type(encoder).__name__}"
    )


def encoder_tokenizer(encoder: nn.Module, key: str) -> nn.Module:
    """The encoder as a tokenizer for ``transformer``: MLP token-wise, ResNet-18 map positions as tokens.

    Example:
        >>> import torch
        >>> from modbalance.encoders.mlp import MLPEncoder
        >>> encoder_tokenizer(MLPEncoder(4, 8, 6), "model.encoders.audio")(torch.randn(2, 5, 4)).shape
        torch.Size([2, 5, 6])
    """
    from modbalance.encoders.mlp import MLPEncoder

    if isinstance(encoder, MLPEncoder):
        return _TokenWise(encoder)
    if isinstance(encoder, ResNet18Encoder):
        return _MapTokens(encoder)
    raise ConfigError(
        f"{key}: model.kind=transformer needs an mlp (applied to each token) or a resnet18 encoder "
        f"(its layer4 map as tokens), got {type(encoder).__name__}"
    )


def _probe(modules: dict[str, list[nn.Module]], sample: dict[str, Tensor], kind: str) -> dict[str, list[Tensor]]:
    """Each modality's output after every module, on the sample batch (eval mode, no gradients)."""
    outputs: dict[str, list[Tensor]] = {}
    with torch.no_grad():
        for m, chain in modules.items():
            x, outputs[m] = sample[m], []
            for module in chain:
                module.eval()
                try:
                    x = module(x)
                except (RuntimeError, ValueError) as error:
                    hint = " (on the lab, token inputs need data.options.tokens)" if kind == "transformer" else ""
                    raise ConfigError(
                        f"model.encoders.{m}: cannot run on input of shape {tuple(sample[m].shape)} for "
                        f"model.kind={kind}: {error}{hint}"
                    ) from error
                finally:
                    module.train()
                outputs[m].append(x)
    return outputs


def build_interaction_model(
    config: ExperimentConfig, bundle: DataBundle, encoders: dict[str, nn.Module]
) -> InteractionModel:
    """``model.kind`` (transformer, mmtm, centralnet) around the built encoders, with ``model.interaction``.

    Widths are read from one probe forward on two validation samples, as for late fusion.
    """
    kind, options = config.model.kind, dict(config.model.interaction)
    sample = bundle.sample_inputs()
    keys = {m: f"model.encoders.{m}" for m in encoders}
    try:
        if kind == "transformer":
            tokenizers = {m: encoder_tokenizer(e, keys[m]) for m, e in encoders.items()}
            tokens = _probe({m: [t] for m, t in tokenizers.items()}, sample, kind)
            dims = {m: int(out[-1].shape[-1]) for m, out in tokens.items()}
            longest = max(int(out[-1].shape[1]) for out in tokens.values())
            options.setdefault("max_tokens", longest)
            return create_interaction(kind, dims, bundle.num_classes, tokenizers=tokenizers, **options)
        stages = {m: encoder_stages(e, keys[m]) for m, e in encoders.items()}
        outputs = _probe(stages, sample, kind)
        widths = {m: [int(out.shape[1]) for out in outs] for m, outs in outputs.items()}
        if kind == "mmtm":
            return create_interaction(kind, stages, widths, bundle.num_classes, **options)
        if len({tuple(w) for w in widths.values()}) != 1:
            raise ConfigError(
                f"model.kind=centralnet needs the same width at every level for every modality; the encoders "
                f"give {widths} (model.encoders.*.options)"
            )
        return create_interaction(kind, stages, next(iter(widths.values())), bundle.num_classes, **options)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model.interaction ({kind}): {error}") from error


def _window(config: ExperimentConfig, component: str) -> tuple[int, int | None]:
    """``method.windows.<component>`` if given, else ``method.start_epoch``/``end_epoch``."""
    window = config.method.windows.get(component)
    if window is None:
        return config.method.start_epoch, config.method.end_epoch
    return window.start_epoch, window.end_epoch


def build_methods(
    config: ExperimentConfig,
    model: MultimodalClassifier,
    device: torch.device,
    *,
    distributed: bool = False,
    planned_runs: Collection[Path] = (),
) -> Methods:
    """OGM (``ogm``, ``ogm_ge``, ``opm+ogm``) and OPM (``opm``, ``opm+ogm``) with seeded generators, or a
    registered method (checked against ``model`` and the run's settings).

    Each of OGM and OPM acts in its window, ``method.windows.<ogm|opm>`` or else
    ``method.start_epoch``/``end_epoch``.

    ``planned_runs``: run folders that do not exist yet but will have finished before this run
    starts (``modbalance compare`` trains the methods in order). An option naming one of them
    (UMT's teachers, G-Blending's trial runs) gets a stand-in, so that a pre-check can build the
    method before those runs exist; a trainer never passes any.

    Raises:
        ConfigError: the method cannot run on this model or with these settings (the message
            names the method, the missing piece and how to provide it).
    """
    method = config.method
    ogm = opm = None
    if method.name in METHODS:
        planned = {folder.resolve() for folder in planned_runs}
        built = _build_registered(config, model, device, distributed=distributed, planned=planned)
        return Methods(None, None, built)
    if method.name in ("ogm", "ogm_ge", "opm+ogm"):
        generator = torch.Generator(device=device).manual_seed(derived_seed(config.seed, "ogm"))
        start, end = _window(config, "ogm")
        try:
            ogm = OGM(
                model.modality_parameters(),
                alpha=method.alpha,
                noise=method.name == "ogm_ge",
                coefficient=method.coefficient,  # type: ignore[arg-type]
                start_epoch=start,
                end_epoch=end,
                param_filter=method.param_filter,
                generator=generator,
                rule=method.rule,  # type: ignore[arg-type]
                space=method.space,  # type: ignore[arg-type]
            )
        except ValueError as error:
            raise ConfigError(f"method.param_filter={method.param_filter!r}: {error}") from error
    if method.name in ("opm", "opm+ogm"):
        start, end = _window(config, "opm")
        opm = OPM(
            q_base=method.q_base,
            lam=method.lam,
            p_exe=method.p_exe,
            rescale=method.rescale,  # type: ignore[arg-type]
            start_epoch=start,
            end_epoch=end,
            generator=torch.Generator(device=device).manual_seed(derived_seed(config.seed, "opm")),
            rule=method.rule,  # type: ignore[arg-type]
        ).to(device)
    return Methods(ogm, opm)


def _resolve_run_inputs(
    config: ExperimentConfig, model: MultimodalClassifier, options: dict[str, Any], planned: Collection[Path]
) -> dict[str, Any]:
    """Options that name other runs' files -> what the method takes (the core never reads files).

    UMT's ``teachers`` (run folders or checkpoints) become frozen encoder copies; G-Blending's
    ``trial_runs`` (and ``trial_epochs``) become fixed ``weights`` with ``super_epoch=None``. A
    path inside ``planned`` gets a stand-in: an untrained frozen encoder, uniform weights.
    """
    name, seed = config.method.name, config.seed
    cls = METHODS.get(name)
    teacher_option = getattr(cls, "teacher_option", None)  # UMT
    if teacher_option is not None and teacher_option in options:
        spec = options[teacher_option]
        if isinstance(spec, Mapping) and isinstance(model, MultimodalClassifier):
            spec = {
                m: standin_teacher(model, m)
                if in_planned_run(p, seed=seed, key=f"method.options.{teacher_option}.{m}", planned=planned)
                else p
                for m, p in spec.items()
            }
        options[teacher_option] = load_teachers(spec, model, seed=seed, key=f"method.options.{teacher_option}")
    if isinstance(cls, type) and issubclass(cls, GBlending):
        runs, epochs, options = split_trial_options(options)
        if runs is None:
            return options
        if not isinstance(model, MultimodalClassifier):
            raise ConfigError(
                f"method.options.{TRIAL_RUNS_OPTION}: G-Blending needs a late-fusion model (model.kind=late), "
                f"got {type(model).__name__}"
            )
        weights = weights_from_trial_runs(
            runs,
            list(model.modalities),
            seed=seed,
            epochs=epochs,
            gain=options.get("gain", "clip"),
            eps=options.get("eps", 1e-12),
            planned=planned,
        )
        options["weights"], options["super_epoch"] = weights, None
    return options


def _build_registered(
    config: ExperimentConfig,
    model: MultimodalClassifier,
    device: torch.device,
    *,
    distributed: bool,
    planned: Collection[Path] = (),
) -> BalancingMethod:
    method = config.method
    try:
        options = _resolve_run_inputs(config, model, dict(method.options), planned)
        built = create_method(method.name, start_epoch=method.start_epoch, end_epoch=method.end_epoch, **options)
        built.check(model, held_out=True)  # the trainer always has a validation split
        built.check_settings(
            distributed=distributed,
            precision=config.train.precision,
            grad_accum_steps=config.train.grad_accum_steps,
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"method.name={method.name!r}: {error}") from error
    return built.to(device)


def build_optimizer(
    config: ExperimentConfig, model: nn.Module, method: BalancingMethod | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The optimizer and the per-epoch scheduler (or None).

    Without ``method`` the optimizer holds every trainable parameter of ``model``; with one, the
    groups of :meth:`~modbalance.methods.BalancingMethod.param_groups` (per-group learning rates
    for MSLR, the method's own parameters).
    """
    optim = config.optim
    params: Any = (
        [p for p in model.parameters() if p.requires_grad] if method is None else method.param_groups(model, optim.lr)
    )
    optimizer: torch.optim.Optimizer
    if optim.name == "sgd":
        optimizer = torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    elif optim.name == "adam":
        optimizer = torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    schedule = optim.scheduler
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    if schedule.name == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=schedule.step_size, gamma=schedule.gamma)
    elif schedule.name == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.train.epochs)
    return optimizer, scheduler
