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
from typing import Any, NamedTuple

import torch
from torch import nn

from modbalance.encoders.pretrained import load_pretrained
from modbalance.encoders.registry import ENCODERS, build_encoder
from modbalance.fusion import create_fusion
from modbalance.methods import METHODS, BalancingMethod, create_method
from modbalance.model import MultimodalClassifier
from modbalance.ogm import OGM
from modbalance.opm import OPM
from modbalance.train.config import ConfigError, ExperimentConfig
from modbalance.train.data import DataBundle
from modbalance.train.validate import method_modalities

__all__ = ["Methods", "build_methods", "build_model", "build_optimizer", "derived_seed"]

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


def _window(config: ExperimentConfig, component: str) -> tuple[int, int | None]:
    """``method.windows.<component>`` if given, else ``method.start_epoch``/``end_epoch``."""
    window = config.method.windows.get(component)
    if window is None:
        return config.method.start_epoch, config.method.end_epoch
    return window.start_epoch, window.end_epoch


def build_methods(
    config: ExperimentConfig, model: MultimodalClassifier, device: torch.device, *, distributed: bool = False
) -> Methods:
    """OGM (``ogm``, ``ogm_ge``, ``opm+ogm``) and OPM (``opm``, ``opm+ogm``) with seeded generators, or a
    registered method (checked against ``model`` and the run's settings).

    Each of OGM and OPM acts in its window, ``method.windows.<ogm|opm>`` or else
    ``method.start_epoch``/``end_epoch``.

    Raises:
        ConfigError: the method cannot run on this model or with these settings (the message
            names the method, the missing piece and how to provide it).
    """
    method = config.method
    ogm = opm = None
    if method.name in METHODS:
        return Methods(None, None, _build_registered(config, model, device, distributed=distributed))
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
                space=method.space,
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


def _build_registered(
    config: ExperimentConfig, model: MultimodalClassifier, device: torch.device, *, distributed: bool
) -> BalancingMethod:
    method = config.method
    try:
        built = create_method(method.name, start_epoch=method.start_epoch, end_epoch=method.end_epoch, **method.options)
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
