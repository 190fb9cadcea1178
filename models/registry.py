"""A registry of named builders, shared by the backbones, the heads and the objectives:
``create_x(name)`` looks the name up here instead of an if/elif factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def lookup_key(name: str) -> str:
    """Lookup key: case, '-' and '_' are ignored, so 'IR-50', 'ir_50' and 'ir50' agree."""
    return name.lower().replace("-", "").replace("_", "")


class Registry(Generic[T]):
    """Builders (functions or classes) of one kind, by name, in registration order.

    Lookups ignore case, '-' and '_' (:func:`lookup_key`); an unknown name fails with the
    list of valid ones, a second entry under an equivalent name at registration.

    Args:
        kind: what is registered ("backbone"), for the messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> None:
        """Registers ``entry`` under ``name``."""
        if lookup_key(name) in {lookup_key(n) for n in self._entries}:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry

    def decorator(self, name: str) -> Callable[[T], T]:
        """A decorator registering what it decorates under ``name``."""

        def register(entry: T) -> T:
            self.add(name, entry)
            return entry

        return register

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def get(self, name: str) -> T:
        """The entry registered under ``name`` (case, '-' and '_' ignored)."""
        by_key = {lookup_key(n): n for n in self._entries}
        canonical = by_key.get(lookup_key(name))
        if canonical is None:
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {self.names()}")
        return self._entries[canonical]
