"""Builders that turn a validated config into the model, the methods and the optimizer.

Only these functions read config objects; the classes they build take plain keyword arguments.
Methods are built from the public API: :class:`~modbalance.OGM` over the model's
:meth:`~modbalance.MultimodalClassifier.modality_parameters`, :class:`~modbalance.OPM` as a
separate module the loop passes to the model's ``forward``.
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
from modbalance.model import MultimodalClassifier
from modbalance.ogm import OGM
from modbalance.opm import OPM
from modbalance.train.config import ConfigError, ExperimentConfig
from modbalance.train.data import DataBundle
from modbalance.train.validate import method_modalities

__all__ = ["Methods", "build_methods", "build_model", "build_optimizer", "derived_seed"]

logger = logging.getLogger(__name__)


class Methods(NamedTuple):
    """The balancing methods of a run (``None`` when the method does not use one)."""

    ogm: OGM | None
    opm: OPM | None


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


def build_methods(config: ExperimentConfig, model: MultimodalClassifier, device: torch.device) -> Methods:
    """OGM (``ogm``, ``ogm_ge``, ``opm+ogm``) and OPM (``opm``, ``opm+ogm``) with seeded generators."""
    method = config.method
    ogm = opm = None
    if method.name in ("ogm", "ogm_ge", "opm+ogm"):
        generator = torch.Generator(device=device).manual_seed(derived_seed(config.seed, "ogm"))
        try:
            ogm = OGM(
                model.modality_parameters(),
                alpha=method.alpha,
                noise=method.name == "ogm_ge",
                coefficient=method.coefficient,  # type: ignore[arg-type]
                start_epoch=method.start_epoch,
                end_epoch=method.end_epoch,
                param_filter=method.param_filter,
                generator=generator,
                rule=method.rule,  # type: ignore[arg-type]
                space=method.space,  # type: ignore[arg-type]
            )
        except ValueError as error:
            raise ConfigError(f"method.param_filter={method.param_filter!r}: {error}") from error
    if method.name in ("opm", "opm+ogm"):
        opm = OPM(
            q_base=method.q_base,
            lam=method.lam,
            p_exe=method.p_exe,
            rescale=method.rescale,  # type: ignore[arg-type]
            start_epoch=method.start_epoch,
            end_epoch=method.end_epoch,
            generator=torch.Generator(device=device).manual_seed(derived_seed(config.seed, "opm")),
            rule=method.rule,  # type: ignore[arg-type]
        ).to(device)
    return Methods(ogm, opm)


def build_optimizer(
    config: ExperimentConfig, model: nn.Module
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The optimizer over every trainable parameter and the per-epoch scheduler (or None)."""
    optim = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
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
