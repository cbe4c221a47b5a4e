"""The trainer's configuration error, in a module of its own so that the schema
(:mod:`modbalance.train.config`) and the checks (:mod:`modbalance.train.validate`) both use it
without importing each other."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A config that cannot run: the message names the key, the value and what is allowed.

    Example:
        >>> from modbalance.train import load_config
        >>> try:
        ...     load_config(None, ["method.name=ogmge"])
        ... except ValueError as error:  # ConfigError is a ValueError
        ...     print(type(error).__name__, error)
        ConfigError method.name='ogmge' is not allowed. Allowed values: joint, ogm, ogm_ge, opm, opm+ogm, ...
    """
