"""Layer-wise learning-rate decay and weight-decay exemptions for d2geo models.

Layer ids follow the usual ViT fine-tuning recipe (BEiT, MAE, ViTDet): the encoder's
embeddings (patch / position / prefix-token / metadata embeddings) are layer 0, block
``i`` is layer ``i + 1``, and everything after the blocks (the encoder's final norm, the
pyramid and the heads) is layer ``num_layers + 1`` and keeps the full learning rate. A
parameter of layer ``l`` gets ``lr_decay_rate ** (num_layers + 1 - l)`` times the base lr.

Encoder parameters are recognised by name: the model's ``backbone`` holds a
:class:`~d2geo.modeling.GeoBackbone` whose encoder is the submodule called ``encoder``;
below it, blocks live in ``blocks.N`` or ``layers.N``, optionally inside one container
module that is not an embedding (``vit.blocks.N`` for DINOv2/v3, ``blocks.N`` for Prithvi
and Clay), and the final norm is ``norm`` / ``fc_norm`` (optionally in such a container).

LazyConfig use::

    optimizer = model_zoo.get_config("common/optim.py").AdamW
    optimizer.params = L(geo_optimizer_params)(base_lr="${..lr}", lr_decay_rate=0.7)

or, keeping detectron2's own function::

    optimizer.params.lr_factor_func = partial(get_lr_decay_rate, lr_decay_rate=0.7, num_layers=12)
    optimizer.params.overrides = no_weight_decay_overrides()
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
from detectron2.solver.build import get_default_optimizer_params, reduce_param_groups

__all__ = [
    "get_lr_decay_rate", "encoder_layer_id", "is_final_norm", "no_weight_decay_overrides",
    "geo_optimizer_params", "NO_WEIGHT_DECAY_NAMES",
]

# optional container module (never an embedding) + blocks.N / layers.N
_BLOCK = re.compile(r"^(?:(?P<box>[A-Za-z_]\w*)\.)?(?:blocks|layers)\.(?P<idx>\d+)\.")
_FINAL_NORM = re.compile(r"^(?:(?P<box>[A-Za-z_]\w*)\.)?(?:norm|fc_norm)\.[A-Za-z_]\w*$")

#: parameter names (the last component) that never get weight decay: position
#: embeddings, prefix tokens, Clay's wavelength-generator tokens, layer-scale factors and
#: biases. Norm layers are handled by module type (``weight_decay_norm``).
NO_WEIGHT_DECAY_NAMES = (
    "pos_embed", "cls_token", "reg_token", "register_tokens", "mask_token", "dist_token",
    "weight_tokens", "bias_token", "gamma", "gamma_1", "gamma_2", "bias",
)


def _encoder_relative(name: str) -> str | None:
    """The part of ``name`` below the backbone's ``encoder`` module, or None."""
    parts = name.split(".")
    if "backbone" not in parts:
        return None
    start = parts.index("backbone")
    try:
        enc = parts.index("encoder", start + 1)
    except ValueError:
        return None
    return ".".join(parts[enc + 1:])


def _container_ok(match: re.Match) -> bool:
    box = match.group("box")
    return box is None or "embed" not in box


def is_final_norm(rel_name: str) -> bool:
    """Whether an encoder-relative parameter name belongs to the encoder's final norm."""
    m = _FINAL_NORM.match(rel_name)
    return bool(m) and _container_ok(m)


def encoder_layer_id(rel_name: str, num_layers: int) -> int:
    """Layer id (0 .. num_layers + 1) of a parameter named relative to the encoder."""
    m = _BLOCK.match(rel_name)
    if m and _container_ok(m):
        idx = int(m.group("idx"))
        if idx >= num_layers:
            raise ValueError(
                f"parameter {rel_name!r} is in block {idx} but num_layers={num_layers}; set "
                "num_layers to the encoder depth"
            )
        return idx + 1
    if is_final_norm(rel_name):
        return num_layers + 1
    return 0


def get_lr_decay_rate(name: str, lr_decay_rate: float = 1.0, num_layers: int = 12) -> float:
    """Learning-rate factor of the model parameter ``name`` (a ``lr_factor_func``).

    ``backbone.<...>.encoder.<embeddings>`` -> layer 0, ``...encoder.<blocks>.N.`` ->
    ``N + 1``, everything else -> ``num_layers + 1`` (factor 1).
    """
    rel = _encoder_relative(name)
    layer_id = num_layers + 1 if rel is None else encoder_layer_id(rel, num_layers)
    return lr_decay_rate ** (num_layers + 1 - layer_id)


def no_weight_decay_overrides(extra: tuple[str, ...] = ()) -> dict[str, dict[str, float]]:
    """``overrides`` for ``get_default_optimizer_params``: no weight decay for position
    embeddings, cls/register tokens, layer scales and biases.

    Pass ``weight_decay_norm=0`` as well for the norm layers (or use
    :func:`geo_optimizer_params`, which also catches norms that are not ``torch.nn`` types).
    """
    return {n: {"weight_decay": 0.0} for n in (*NO_WEIGHT_DECAY_NAMES, *extra)}


def _looks_like_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()


def geo_optimizer_params(
    model: nn.Module,
    base_lr: float | None = None,
    weight_decay: float | None = None,
    *,
    lr_decay_rate: float = 1.0,
    num_layers: int | None = None,
    weight_decay_norm: float = 0.0,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
    lr_factor_func: Callable[[str], float] | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups for a d2geo model (drop-in for ``get_default_optimizer_params``).

    Applies layer-wise lr decay over the encoder blocks (``num_layers`` defaults to the
    depth of the model's GeoBackbone encoder), ``weight_decay_norm`` to every norm layer
    (including detectron2's channel ``LayerNorm`` used by the pyramids) and zero weight
    decay to position embeddings, prefix tokens and all other 1-D parameters (biases,
    layer and coordinate scales).
    """
    from .backbone import find_geo_backbones

    if lr_decay_rate != 1.0 and lr_factor_func is not None:
        raise ValueError("give either lr_decay_rate or lr_factor_func, not both")
    if lr_decay_rate != 1.0:
        if num_layers is None:
            found = find_geo_backbones(model)
            if not found:
                raise ValueError("the model holds no GeoBackbone; pass num_layers= explicitly")
            num_layers = found[0].encoder.depth
        lr_factor_func = functools.partial(get_lr_decay_rate, lr_decay_rate=lr_decay_rate,
                                           num_layers=num_layers)
    if lr_factor_func is not None and base_lr is None:
        raise ValueError("layer-wise lr decay needs base_lr (in LazyConfig: base_lr='${..lr}')")
    merged = {**no_weight_decay_overrides(), **{k: dict(v) for k, v in (overrides or {}).items()}}
    groups = get_default_optimizer_params(
        model, base_lr=base_lr, weight_decay=weight_decay, weight_decay_norm=weight_decay_norm,
        lr_factor_func=lr_factor_func, overrides=merged,
    )
    # norms detectron2 does not know by type (detectron2.layers.LayerNorm, timm RmsNorm, ...)
    # get weight_decay_norm; other 1-D parameters (scales, biases) get none, as in timm
    norm_params = {
        id(p) for m in model.modules() if _looks_like_norm(m) for p in m.parameters(recurse=False)
    }
    out = []
    for g in groups:
        hyper = {k: v for k, v in g.items() if k != "params"}
        for p in g["params"]:
            if id(p) in norm_params:
                out.append({"params": [p], **hyper, "weight_decay": weight_decay_norm})
            elif p.ndim <= 1:
                out.append({"params": [p], **hyper, "weight_decay": 0.0})
            else:
                out.append({"params": [p], **hyper})
    return reduce_param_groups(out)
