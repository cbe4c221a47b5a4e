"""Balancing methods beyond OGM and OPM, each a plug-in of the same shape (:mod:`modbalance.methods.base`).

Every method is a :class:`~modbalance.methods.base.BalancingMethod` subclass in its own module
``modbalance.methods.<name>``, registered in :data:`METHODS` under its trainer name
(``method.name=<name>``, options in ``method.options``). The core's dependency rule holds here:
these modules import torch and other core modules only.

Example:
    >>> from modbalance.methods import METHODS, create_method
    >>> "mslr" in METHODS.names()
    True
    >>> try:
    ...     create_method("no_such_method")
    ... except ValueError as error:
    ...     print(str(error).split(".")[0])
    Unknown balancing method 'no_such_method'
"""

from modbalance.methods.base import (
    METHODS,
    BalancingMethod,
    EpochContext,
    ExtraSamples,
    MethodRequirementError,
    Requirements,
    SplitOutputs,
    create_method,
    head_weights,
    unimodal_logits_with_grad,
)

__all__ = [
    "AGM",
    "CML",
    "LFM",
    "METHODS",
    "MLA",
    "MSLR",
    "PMR",
    "UME",
    "UMT",
    "BalancingMethod",
    "EpochContext",
    "ExtraSamples",
    "GBlending",
    "Greedy",
    "InfoReg",
    "MMCosine",
    "MMPareto",
    "MethodRequirementError",
    "ModalityValuation",
    "ReLearning",
    "ReconBoost",
    "ReconBoostStage",
    "Requirements",
    "SampleValuation",
    "SplitOutputs",
    "create_method",
    "head_weights",
    "unimodal_logits_with_grad",
]

# Each method module registers itself in METHODS on import.
from modbalance.methods.agm import AGM
from modbalance.methods.cml import CML
from modbalance.methods.gblending import GBlending
from modbalance.methods.greedy import Greedy
from modbalance.methods.inforeg import InfoReg
from modbalance.methods.lfm import LFM
from modbalance.methods.mla import MLA
from modbalance.methods.mmcosine import MMCosine
from modbalance.methods.mmpareto import MMPareto
from modbalance.methods.mslr import MSLR
from modbalance.methods.pmr import PMR
from modbalance.methods.reconboost import ReconBoost, ReconBoostStage
from modbalance.methods.relearning import ReLearning
from modbalance.methods.unimodal_teachers import UME, UMT
from modbalance.methods.valuation import ModalityValuation, SampleValuation
