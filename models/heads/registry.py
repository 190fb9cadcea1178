"""The head registry: ``create_head(name, ...)`` instead of an if/elif factory."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from models.heads.base import MarginHead
from models.registry import Registry

HeadT = TypeVar("HeadT", bound=type[MarginHead])

_HEADS: Registry[type[MarginHead]] = Registry("head")


def register_head(name: str) -> Callable[[HeadT], HeadT]:
    """Class decorator registering a :class:`MarginHead` subclass under ``name``."""

    def decorator(cls: HeadT) -> HeadT:
        _HEADS.add(name, cls)
        cls.registered_name = name
        return cls

    return decorator


def list_heads() -> list[str]:
    """Names accepted by :func:`create_head`, in registration order."""
    return _HEADS.names()


def head_class(name: str) -> type[MarginHead]:
    """The class registered under ``name`` (case, '-' and '_' ignored)."""
    return _HEADS.get(name)


def head_params(name: str) -> dict[str, object]:
    """The hyper-parameters of head ``name`` with their defaults.

    A constructor that takes ``**kwargs`` hands them to its base class (AdaLaP to
    AdaFace), whose own parameters are then accepted too.
    """
    params: dict[str, object] = {}
    for cls in head_class(name).__mro__:
        init = vars(cls).get("__init__")
        if init is None:
            continue
        forwards = False
        for p in inspect.signature(init).parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif p.name not in ("self", "embedding_size", "num_classes"):
                params.setdefault(p.name, p.default)
        if not forwards:
            return params
    return params


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
