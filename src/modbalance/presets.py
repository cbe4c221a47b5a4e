"""Reference presets: the OGM and OPM keyword arguments that reproduce each official code base.

In modbalance a *preset* is exactly this: a named set of keyword arguments for
:class:`~modbalance.OGM` and :class:`~modbalance.OPM` that reproduces the modulation step of one
official implementation, quirks included. (Training settings per dataset are *configs*, shipped
as YAML files under ``modbalance/configs``; the imbalance lab's generators are lab *settings*.)

modbalance's defaults fix the engineering defects of the reference code (explicit parameter
groups, every parameter modulated, no hidden warm-up, no aliasing). To reproduce a published
setting instead, splat a preset into :class:`~modbalance.OGM` or :class:`~modbalance.OPM`; every
deviation from our defaults is a named argument you can read and override.

Sources (each preset's transcription test, ``tests/test_reference_transcriptions.py``, cites file
and line): ``GeWu-Lab/OGM-GE_CVPR2022`` ``main.py`` at ``343dc1d`` (argparse defaults, window
0-50); ``GeWu-Lab/BML_TPAMI2024`` at ``4b3aa4f`` (``code/main.py``: a hard-coded warm-up of
epochs 0-5; ``scripts/train_ogm.sh``: OGM window to 60; OPM q_base 0.5, lambda 0.5, p_exe 0.7;
``code/models/Classifier.py``: the custom autograd function of the rescale);
``GeWu-Lab/BalanceBenchmark`` at ``d7675c1`` (2025-01-12; ``configs/trainer_config.yaml``: OGM
window 10-80, OPM q_base 0.4, lambda read from ``alpha`` 0.5, p_exe 0.7, window 0-80;
``balancemm/trainer/OGM_trainer.py`` and ``OPM_trainer.py``: the ``1e-5`` terms, the in-place
ratios and the true gradient through the rescale). ``docs/methods.md`` lists every difference
that remains and its effect.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["REFERENCE_PRESETS", "ogm_preset", "opm_preset"]


def _not_bias_or_norm(param: nn.Parameter) -> bool:
    """BalanceBenchmark's rule: every tensor that is not 1-D (Linear weights included)."""
    return param.dim() != 1


#: Preset name -> {"ogm": OGM keyword arguments, "opm": OPM keyword arguments}.
REFERENCE_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cvpr2022_code": {
        # OGM-GE main.py: K1 coefficient, conv kernels only, GE noise, epochs 0-50 inclusive.
        "ogm": {"coefficient": "reference", "param_filter": "conv", "noise": True, "start_epoch": 0, "end_epoch": 50},
    },
    "tpami2024_code": {
        # BML_TPAMI2024 main.py: `warm_up = 1 if epoch <= 5` disables both methods in epochs 0-5;
        # scripts/train_ogm.sh sets the OGM window to 0-60 (so 6-60 in effect); OPM runs to the end.
        # Classifier.py's custom autograd returns theta as theta's gradient (needs scores with gradient).
        "ogm": {"coefficient": "reference", "param_filter": "conv", "noise": True, "start_epoch": 6, "end_epoch": 60},
        "opm": {
            "q_base": 0.5,
            "lam": 0.5,
            "p_exe": 0.7,
            "rescale": "reference",
            "start_epoch": 6,
            "end_epoch": None,
            "grad_through_theta": "tpami",
        },
    },
    "balancebenchmark": {
        # balancemm at d7675c1: configs/trainer_config.yaml: OGM_GE window 10-80 on every >= 2-D tensor,
        # 1e-5 in the OGM ratio; OPM window 0-80, q_base 0.4, lambda (`alpha`) 0.5, p_exe 0.7, the ratio
        # written into the score it divides, 1e-5 in its ratio and rescale, the true gradient through theta,
        # and the ratio against the sum of the other scores for three modalities.
        "ogm": {
            "coefficient": "reference",
            "param_filter": _not_bias_or_norm,
            "noise": True,
            "start_epoch": 10,
            "end_epoch": 80,
            "ratio_eps": 1e-5,
        },
        "opm": {
            "q_base": 0.4,
            "lam": 0.5,
            "p_exe": 0.7,
            "rescale": "reference",
            "start_epoch": 0,
            "end_epoch": 80,
            "rule": "sum_others",
            "ratio": "in_place",
            "ratio_eps": 1e-5,
            "rescale_eps": 1e-5,
            "grad_through_theta": "true",
        },
    },
}


def _preset(name: str, method: str, overrides: dict[str, Any]) -> dict[str, Any]:
    if name not in REFERENCE_PRESETS:
        raise ValueError(f"Unknown reference preset {name!r}. Available: {', '.join(sorted(REFERENCE_PRESETS))}")
    if method not in REFERENCE_PRESETS[name]:
        having = sorted(n for n, p in REFERENCE_PRESETS[name].items() if method in p)
        raise ValueError(f"reference preset {name!r} has no {method.upper()} settings; presets with them: {having}")
    return {**REFERENCE_PRESETS[name][method], **overrides}


def ogm_preset(name: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for :class:`~modbalance.OGM` that reproduce a reference implementation.

    ``alpha`` is not part of a preset: it was tuned per dataset (0.8 for CREMA-D in the CVPR code,
    0.1 for VGGSound, 2.6 for CREMA-D in the journal runs).

    Example:
        >>> from torch import nn
        >>> from modbalance import OGM
        >>> audio, visual = nn.Conv2d(1, 4, 3), nn.Conv2d(3, 4, 3)
        >>> ogm = OGM({"audio": audio, "visual": visual}, alpha=0.8, **ogm_preset("cvpr2022_code"))
        >>> ogm.start_epoch, ogm.end_epoch, [p.dim() for p in ogm.groups["audio"]]
        (0, 50, [4])
    """
    return _preset(name, "ogm", overrides)


def opm_preset(name: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for :class:`~modbalance.OPM` that reproduce a reference implementation.

    Example:
        >>> from modbalance import OPM
        >>> OPM(**opm_preset("tpami2024_code")).start_epoch
        6
        >>> opm_preset("cvpr2022_code")
        Traceback (most recent call last):
        ...
        ValueError: reference preset 'cvpr2022_code' has no OPM settings; presets with them: ...
    """
    return _preset(name, "opm", overrides)
