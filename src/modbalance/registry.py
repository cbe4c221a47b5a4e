"""A name -> builder table (:class:`Registry`), shared by every kind of named component.

It is core (standard library only): the encoder table (:data:`modbalance.encoders.ENCODERS`)
and the balancing-method table (:data:`modbalance.methods.METHODS`) are both instances.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")
BuilderT = TypeVar("BuilderT", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A name → builder table for one kind of component.

    Args:
        kind: Human name of the component kind, used in error messages (``"encoder"``).

    Example:
        >>> FUSIONS: Registry[int] = Registry("fusion")
        >>> @FUSIONS.register("answer")
        ... def answer(offset: int = 0) -> int:
        ...     return 42 + offset
        >>> FUSIONS.create("answer", offset=1), FUSIONS.names()
        (43, ['answer'])
        >>> FUSIONS.create("anwser")
        Traceback (most recent call last):
        ...
        ValueError: Unknown fusion 'anwser'. Available: answer
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[BuilderT], BuilderT]:
        """Return a decorator that registers a builder (class or function) under ``name``.

        Raises:
            ValueError: ``name`` is empty, not a string, or already registered.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._builders:
            raise ValueError(f"{self.kind.capitalize()} '{name}' is already registered ({self._builders[name]!r})")

        def decorator(builder: BuilderT) -> BuilderT:
            if name in self._builders:  # registered between register() and the decoration
                raise ValueError(f"{self.kind.capitalize()} '{name}' is already registered")
            if not callable(builder):
                raise TypeError(f"{self.kind} '{name}': expected a class or function, got {builder!r}")
            self._builders[name] = builder
            return builder

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        """Return the builder registered under ``name``.

        Raises:
            ValueError: Unknown name; the message lists the available ones.
        """
        try:
            return self._builders[name]
        except KeyError:
            raise ValueError(f"Unknown {self.kind} {name!r}. Available: {', '.join(self.names())}") from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the component ``name`` with keyword arguments ``kwargs``.

        Raises:
            ValueError: Unknown name.
            TypeError: A keyword the builder does not accept, or a missing required one; the message names it
                and lists the accepted keywords.
        """
        builder = self.get(name)
        signature = inspect.signature(builder)
        params = signature.parameters.values()
        accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
        unknown = [k for k in kwargs if k not in accepted]
        if unknown and not takes_any:
            raise TypeError(
                f"{self.kind.capitalize()} '{name}' got unexpected argument(s) "
                f"{', '.join(map(repr, unknown))}. "
                f"Accepted: {', '.join(accepted) or '(none)'}"
            )
        required = [
            p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        absent = [k for k in required if k not in kwargs]
        if absent:
            raise TypeError(
                f"{self.kind.capitalize()} '{name}' is missing required argument(s) "
                f"{', '.join(map(repr, absent))}. Accepted: {', '.join(accepted)}"
            )
        return builder(**kwargs)

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __len__(self) -> int:
        return len(self._builders)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
