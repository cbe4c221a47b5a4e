"""modbalance: on-the-fly modulation (OGM, OGM-GE, OPM) for balanced multimodal learning.

The core depends on torch only::

    from modbalance import OGM, OPM, unimodal_scores, discrepancy_ratios

* :func:`unimodal_scores` and :func:`discrepancy_ratios` measure the imbalance;
* :class:`OGM` scales the dominant modality's gradients between ``backward()`` and ``step()``
  (``noise=True`` is OGM-GE);
* :class:`OPM` drops the dominant modality's features between ``encode`` and ``fuse``;
* :class:`MultimodalClassifier` and :mod:`modbalance.fusion` give a ready model with the
  seams both need; :mod:`modbalance.scores` gives uni-modal logits for any head;
  :mod:`modbalance.interaction` gives models whose modalities interact (transformer, MMTM,
  CentralNet) with the same seams.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the public names, for type checkers; at run time they load on first use
    from modbalance import fusion, interaction, presets, scores
    from modbalance.imbalance import (
        COEFFICIENTS,
        RATIO_RULES,
        discrepancy_ratios,
        ogm_coefficients,
        opm_drop_probs,
        unimodal_scores,
    )
    from modbalance.model import ModelOutput, MultimodalClassifier
    from modbalance.ogm import OGM, modality_parameter_groups
    from modbalance.opm import OPM, RESCALE_MODES, OPMOutput, kept_cross_entropy

#: Public name -> the module that defines it. ``import modbalance`` imports no torch until a name is
#: used, so that the command line answers ``--help`` without it.
_LAZY = {
    **dict.fromkeys(
        ("COEFFICIENTS", "RATIO_RULES", "discrepancy_ratios", "ogm_coefficients", "opm_drop_probs", "unimodal_scores"),
        "modbalance.imbalance",
    ),
    **dict.fromkeys(("ModelOutput", "MultimodalClassifier"), "modbalance.model"),
    **dict.fromkeys(("OGM", "modality_parameter_groups"), "modbalance.ogm"),
    **dict.fromkeys(("OPM", "RESCALE_MODES", "OPMOutput", "kept_cross_entropy"), "modbalance.opm"),
}


def __getattr__(name: str) -> Any:
    """Load a public name, or a submodule (``modbalance.fusion``), on first use (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif not name.startswith("__"):
        try:
            value = importlib.import_module(f"modbalance.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"modbalance.{name}":
                raise
            raise AttributeError(f"module 'modbalance' has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module 'modbalance' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__version__ = "0.1.0"

__all__ = [
    "COEFFICIENTS",
    "OGM",
    "OPM",
    "RATIO_RULES",
    "RESCALE_MODES",
    "ModelOutput",
    "MultimodalClassifier",
    "OPMOutput",
    "__version__",
    "discrepancy_ratios",
    "fusion",
    "interaction",
    "kept_cross_entropy",
    "modality_parameter_groups",
    "ogm_coefficients",
    "opm_drop_probs",
    "presets",
    "scores",
    "unimodal_scores",
]
