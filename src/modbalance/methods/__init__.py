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
    BalancingMethod,
    EpochContext,
    MethodRequirementError,
    Requirements,
    SplitOutputs,
    head_weights,
    unimodal_logits_with_grad,
)
from modbalance.registry import Registry

__all__ = [
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

#: Balancing methods by trainer name; each builds a :class:`~modbalance.methods.base.BalancingMethod`.
METHODS: Registry[BalancingMethod] = Registry("balancing method")


def create_method(name: str, **options: object) -> BalancingMethod:
    """Build the registered method ``name`` with keyword ``options`` (checked against its signature).

    Raises:
        ValueError: unknown name (the message lists the registered ones).
        TypeError: an option the method does not take (the message lists those it takes).

    Example:
        >>> create_method("mslr", lrs={"audio": 1e-3, "visual": 1e-2}).lrs
        {'audio': 0.001, 'visual': 0.01}
        >>> create_method("mslr", lr={"audio": 1e-3})
        Traceback (most recent call last):
        ...
        TypeError: Balancing method 'mslr' got unexpected argument(s) 'lr'. Accepted: lrs, start_epoch, end_epoch
    """
    return METHODS.create(name, **options)


# Each method module registers itself in METHODS on import.
from modbalance.methods.inforeg import InfoReg  # noqa: E402
from modbalance.methods.mla import MLA  # noqa: E402
from modbalance.methods.mmcosine import MMCosine  # noqa: E402
from modbalance.methods.mmpareto import MMPareto  # noqa: E402
from modbalance.methods.mslr import MSLR  # noqa: E402
from modbalance.methods.pmr import PMR  # noqa: E402
from modbalance.methods.relearning import ReLearning  # noqa: E402
