"""The head registry: ``create_head(name, ...)`` instead of an if/elif factory."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from models.heads.base import MarginHead

HeadT = TypeVar("HeadT", bound=type[MarginHead])

_HEADS: dict[str, type[MarginHead]] = {}


def _key(name: str) -> str:
    """Lookup key: case, '-' and '_' are ignored."""
    return name.lower().replace("-", "").replace("_", "")


def register_head(name: str) -> Callable[[HeadT], HeadT]:
    """Class decorator registering a :class:`MarginHead` subclass under ``name``."""

    def decorator(cls: HeadT) -> HeadT:
        if _key(name) in {_key(n) for n in _HEADS}:
            raise ValueError(f"head {name!r} is already registered")
        _HEADS[name] = cls
        cls.registered_name = name
        return cls

    return decorator


def list_heads() -> list[str]:
    """Names accepted by :func:`create_head`, in registration order."""
    return list(_HEADS)


def head_class(name: str) -> type[MarginHead]:
    """The class registered under ``name`` (case, '-' and '_' ignored)."""
    by_key = {_key(n): n for n in _HEADS}
    canonical = by_key.get(_key(name))
    if canonical is None:
        raise ValueError(f"unknown head {name!r}; valid names: {list_heads()}")
    return _HEADS[canonical]


def head_params(name: str) -> dict[str, object]:
    """The hyper-parameters of head ``name`` with their defaults."""
    signature = inspect.signature(head_class(name).__init__)
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.name not in ("self", "embedding_size", "num_classes")
    }


def create_head(name: str, embedding_size: int, num_classes: int, **params: Any) -> MarginHead:
    """Builds a registered margin head.

    Args:
        name: a name from :func:`list_heads`.
        embedding_size: D, the embedding size of the backbone.
        num_classes: C, the number of training identities.
        **params: the head's hyper-parameters (see :func:`head_params`).

    Raises:
        ValueError: unknown name (the message lists the valid ones) or an unknown
            hyper-parameter (the message lists the accepted ones).
    """
    cls = head_class(name)
    accepted = head_params(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"head {name!r} does not take {unknown}; its parameters are {sorted(accepted)}"
        )
    return cls(embedding_size, num_classes, **params)
