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
    MethodRequirementError,
    Requirements,
    SplitOutputs,
    create_method,
    head_weights,
    unimodal_logits_with_grad,
)

__all__ = [
    "LFM",
    "METHODS",
    "MLA",
    "MSLR",
    "PMR",
    "BalancingMethod",
    "EpochContext",
    "InfoReg",
    "MMCosine",
    "MMPareto",
    "MethodRequirementError",
    "ReLearning",
    "Requirements",
    "SplitOutputs",
    "create_method",
    "head_weights",
    "unimodal_logits_with_grad",
]

# Each method module registers itself in METHODS on import.
from modbalance.methods.inforeg import InfoReg
from modbalance.methods.lfm import LFM
from modbalance.methods.mla import MLA
from modbalance.methods.mmcosine import MMCosine
from modbalance.methods.mmpareto import MMPareto
from modbalance.methods.mslr import MSLR
from modbalance.methods.pmr import PMR
from modbalance.methods.relearning import ReLearning
