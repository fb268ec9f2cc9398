"""Layer-wise learning-rate decay and weight-decay exemptions for d2geo models.

Layer ids follow the usual ViT fine-tuning recipe (BEiT, MAE, ViTDet) and come from the
encoder itself (:meth:`d2geo.encoders.GeoEncoder.param_layer_ids`): the embeddings
(patch / position / prefix-token / metadata embeddings) are layer 0, block ``i`` is layer
``i + 1``, and everything after the blocks (the encoder's final norm, the pyramid and the
heads) is layer ``num_layers + 1`` and keeps the full learning rate. A parameter of layer
``l`` gets ``lr_decay_rate ** (num_layers + 1 - l)`` times the base lr. The encoders are the
ones of the model's :class:`~d2geo.modeling.GeoBackbone` modules.

No weight decay: biases, norms (``weight_decay_norm``) and other 1-D parameters, the usual
ViT names in :data:`NO_WEIGHT_DECAY_NAMES`, and whatever each encoder lists in its
``no_weight_decay()`` (Clay's kernel-generator tokens, for instance).

LazyConfig use::

    optimizer = model_zoo.get_config("common/optim.py").AdamW
    optimizer.params = L(geo_optimizer_params)(base_lr="${..lr}", lr_decay_rate=0.7)

or, keeping detectron2's own function::

    get_default_optimizer_params(model, base_lr=..., weight_decay_norm=0.0,
                                 lr_factor_func=lr_decay_factor_func(model, 0.7),
                                 overrides=no_weight_decay_overrides(model))
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch.nn as nn
from detectron2.solver.build import get_default_optimizer_params, reduce_param_groups

from .backbone import find_geo_backbones

__all__ = [
    "encoder_layer_ids", "lr_decay_factor_func", "no_weight_decay_overrides", "geo_optimizer_params",
    "NO_WEIGHT_DECAY_NAMES",
]

#: parameter names (the last component) that never get weight decay wherever they are: the
#: usual ViT position embeddings, prefix tokens and layer-scale factors, and biases. Norm
#: layers are handled by module type (``weight_decay_norm``); family-specific names come
#: from the encoders' ``no_weight_decay()``.
NO_WEIGHT_DECAY_NAMES = (
    "pos_embed", "cls_token", "reg_token", "register_tokens", "mask_token", "dist_token",
    "gamma", "gamma_1", "gamma_2", "bias",
)


def _encoders(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name in model, encoder)`` of every GeoBackbone's encoder, outermost first."""
    names = {id(m): n for n, m in model.named_modules()}
    return [(names[id(b.encoder)], b.encoder) for b in find_geo_backbones(model)]


def encoder_layer_ids(model: nn.Module, num_layers: int | None = None) -> tuple[dict[str, int], int]:
    """Layer ids of the encoder parameters of ``model`` (full names) and ``num_layers``.

    ``num_layers`` defaults to the depth of the first GeoBackbone's encoder; the final norm
    gets ``num_layers + 1``. A block beyond ``num_layers`` is an error.
    """
    found = _encoders(model)
    if num_layers is None:
        if not found:
            raise ValueError("the model holds no GeoBackbone; pass num_layers= explicitly")
        num_layers = found[0][1].depth
    ids: dict[str, int] = {}
    for prefix, encoder in found:
        depth = len(encoder.get_blocks())
        for name, layer in encoder.param_layer_ids().items():
            full = f"{prefix}.{name}" if prefix else name
            if layer == depth + 1:  # the final norm
                layer = num_layers + 1
            elif layer > num_layers:
                raise ValueError(
                    f"parameter {full!r} is in block {layer - 1} but num_layers={num_layers}; set "
                    "num_layers to the encoder depth"
                )
            ids.setdefault(full, layer)
    return ids, num_layers


def lr_decay_factor_func(model: nn.Module, lr_decay_rate: float,
                         num_layers: int | None = None) -> Callable[[str], float]:
    """A detectron2 ``lr_factor_func`` (parameter name -> lr factor) for ``model``'s encoders."""
    ids, num_layers = encoder_layer_ids(model, num_layers)

    def factor(name: str) -> float:
        return lr_decay_rate ** (num_layers + 1 - ids.get(name, num_layers + 1))

    return factor


def _encoder_no_weight_decay(model: nn.Module) -> dict[str, nn.Parameter]:
    out = {}
    for prefix, encoder in _encoders(model):
        for name in encoder.no_weight_decay():
            out[f"{prefix}.{name}" if prefix else name] = encoder.get_parameter(name)
    return out


def no_weight_decay_overrides(model: nn.Module | None = None,
                              extra: tuple[str, ...] = ()) -> dict[str, dict[str, float]]:
    """``overrides`` for ``get_default_optimizer_params``: no weight decay for the names of
    :data:`NO_WEIGHT_DECAY_NAMES`, ``extra`` and, given the ``model``, those of its encoders'
    ``no_weight_decay()`` (detectron2 matches the last name component).

    Pass ``weight_decay_norm=0`` as well for the norm layers (or use
    :func:`geo_optimizer_params`, which also catches norms that are not ``torch.nn`` types).
    """
    names = [*NO_WEIGHT_DECAY_NAMES, *extra]
    if model is not None:
        names += [n.rsplit(".", 1)[-1] for n in _encoder_no_weight_decay(model)]
    return {n: {"weight_decay": 0.0} for n in names}


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
    decay to position embeddings, prefix tokens, the encoders' ``no_weight_decay()`` and
    all other 1-D parameters (biases, layer and coordinate scales).
    """
    if lr_decay_rate != 1.0 and lr_factor_func is not None:
        raise ValueError("give either lr_decay_rate or lr_factor_func, not both")
    if lr_decay_rate != 1.0:
        lr_factor_func = lr_decay_factor_func(model, lr_decay_rate, num_layers)
    if lr_factor_func is not None and base_lr is None:
        raise ValueError("layer-wise lr decay needs base_lr (in LazyConfig: base_lr='${..lr}')")
    merged = {**no_weight_decay_overrides(), **{k: dict(v) for k, v in (overrides or {}).items()}}
    groups = get_default_optimizer_params(
        model, base_lr=base_lr, weight_decay=weight_decay, weight_decay_norm=weight_decay_norm,
        lr_factor_func=lr_factor_func, overrides=merged,
    )
    # norms detectron2 does not know by type (detectron2.layers.LayerNorm, timm RmsNorm, ...)
    # get weight_decay_norm; other 1-D parameters (scales, biases) and the encoders' own
    # exemptions get none, as in timm
    norm_params = {
        id(p) for m in model.modules() if _looks_like_norm(m) for p in m.parameters(recurse=False)
    }
    exempt = {id(p) for p in _encoder_no_weight_decay(model).values()}
    out = []
    for g in groups:
        hyper = {k: v for k, v in g.items() if k != "params"}
        for p in g["params"]:
            if id(p) in norm_params:
                out.append({"params": [p], **hyper, "weight_decay": weight_decay_norm})
            elif p.ndim <= 1 or id(p) in exempt:
                out.append({"params": [p], **hyper, "weight_decay": 0.0})
            else:
                out.append({"params": [p], **hyper})
    return reduce_param_groups(out)
