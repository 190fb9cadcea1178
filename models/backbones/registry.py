"""The backbone registry: ``create_backbone(name)`` instead of an if/elif factory."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from models.registry import Registry

BackboneBuilder = Callable[..., nn.Module]

_BACKBONES: Registry[BackboneBuilder] = Registry("backbone")

#: ``@register_backbone(name)`` registers a builder ``fn(embedding_size=..., **kw) -> nn.Module``.
register_backbone = _BACKBONES.decorator
#: The names :func:`create_backbone` accepts, in registration order.
list_backbones = _BACKBONES.names


def create_backbone(
    name: str,
    embedding_size: int = 512,
    dropout: float = 0.0,
    input_size: int = 112,
    **kwargs: object,
) -> nn.Module:
    """Builds a registered backbone.

    Args:
        name: a name from :func:`list_backbones` (case, '-' and '_' are ignored).
        embedding_size: D, the size of the raw embedding the forward returns.
        dropout: dropout probability before the embedding layer.
        input_size: side of the square input the network is built for.
        **kwargs: further options of the builder (e.g. ``width_multiplier``).

    Returns:
        The backbone; ``forward(x)`` maps (N, 3, H, W) to raw embeddings (N, D).

    Raises:
        ValueError: ``name`` is not registered; the message lists the valid names.
    """
    return _BACKBONES.get(name)(
        embedding_size=embedding_size, dropout=dropout, input_size=input_size, **kwargs
    )
