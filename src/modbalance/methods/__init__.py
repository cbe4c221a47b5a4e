"""Balancing methods beyond OGM and OPM, each a plug-in of the same shape (:mod:`modbalance.methods.base`).

Every method is a :class:`~modbalance.methods.base.BalancingMethod` subclass in its own module
``modbalance.methods.<name>``, registered in :data:`METHODS` under its trainer name
(``method.name=<name>``, options in ``method.options``). The core's dependency rule holds here:
these modules import torch and other core modules only.

Example:
    >>> from modbalance.methods import METHODS, create_method
    >>> isinstance(METHODS.names(), list)
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
    unimodal_logits_with_grad,
)
from modbalance.registry import Registry

__all__ = [
    "METHODS",
    "BalancingMethod",
    "EpochContext",
    "MethodRequirementError",
    "Requirements",
    "SplitOutputs",
    "create_method",
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
        >>> from modbalance.methods import METHODS, BalancingMethod, create_method
        >>> @METHODS.register("doc_example")
        ... class DocExample(BalancingMethod):
        ...     name = "doc_example"
        >>> create_method("doc_example", start_epoch=1).start_epoch
        1
        >>> create_method("doc_example", alpha=1.0)
        Traceback (most recent call last):
        ...
        TypeError: Balancing method 'doc_example' got unexpected argument(s) 'alpha'. Accepted: start_epoch, end_epoch
        >>> METHODS._builders.pop("doc_example") is DocExample  # keep the registry clean
        True
    """
    return METHODS.create(name, **options)


# Method modules register themselves on import (after METHODS exists).
from modbalance.methods import inforeg as _inforeg  # noqa: E402, F401
from modbalance.methods import mmpareto as _mmpareto  # noqa: E402, F401
from modbalance.methods import relearning as _relearning  # noqa: E402, F401
