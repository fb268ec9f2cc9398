"""Named encoder variants: ``build_encoder(name)`` and ``list_encoders()``."""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch.nn as nn

__all__ = ["register_encoder", "build_encoder", "list_encoders", "get_encoder_config"]


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    config: Mapping[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, _Entry] = {}


def register_encoder(name: str, builder: Callable[..., nn.Module], **config: Any) -> None:
    """Register ``name`` as ``builder(**config)``; overrides given at build time win."""
    if name in _REGISTRY:
        raise KeyError(f"encoder {name!r} is registered twice")
    _REGISTRY[name] = _Entry(builder, dict(config))


def list_encoders(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered encoders, optionally filtered by an fnmatch pattern."""
    import fnmatch

    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_encoder_config(name: str) -> dict[str, Any]:
    return dict(_lookup(name).config)


def _lookup(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(
            f"unknown encoder {name!r}.{hint} list_encoders() gives all {len(_REGISTRY)} names."
        ) from None


def build_encoder(name: str, *, weights: str | os.PathLike | Mapping | None = None,
                  **overrides: Any) -> nn.Module:
    """Build the encoder ``name``, optionally loading ``weights`` in an upstream format.

    ``overrides`` replace entries of the variant's configuration (``patch_size``,
    ``img_size``, ``bands``, ``num_frames``, ``tubelet_size``, or the architecture
    itself for small test models).
    """
    from .checkpoint import load_encoder_weights

    entry = _lookup(name)
    model = entry.builder(**{**entry.config, **overrides})
    if weights is not None:
        load_encoder_weights(model, weights)
    return model
