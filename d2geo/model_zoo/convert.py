"""Convert an upstream encoder checkpoint into a model-zoo ``.pth`` for a d2geo config.

The upstream file (official DINOv2/DINOv3 weights, a Prithvi ``.pt``, a Clay ``.ckpt``,
a timm or terratorch checkpoint, ...) is read by the encoder family's own loader
(``build_encoder(name, weights=...)``: key renaming, band and patch-size adaptation,
validation), and the encoder's weights are written under the name the encoder has inside
the detectron2 model, so ``train.init_checkpoint=<file>`` (or a ``d2geo://`` zoo path)
loads them with ``DetectionCheckpointer`` and no name-matching heuristics.

:func:`convert_for_config` is what ``d2geo-convert`` (``tools/convert_checkpoint.py``) runs;
its docstring (:mod:`d2geo.cli.convert`) shows the command lines. :func:`convert` writes the
file of one encoder, :func:`merge_peft_checkpoint` the plain zoo file of a model trained with
LoRA adapters (merged into the encoder weights).

The output holds ``{"model": {<prefix>encoder.<key>: tensor}, "__author__",
"matching_heuristics": False, "d2geo": {provenance}}``, only tensors and plain containers
(loadable with ``torch.load(weights_only=True)``), and its name ends in the first 8 hex
digits of its sha256, which the ``d2geo://`` handler checks after downloads.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os

import torch

from d2geo.encoders import build_encoder, get_pretrained_cfg
from d2geo.encoders.hub import is_remote, resolve_weights
from d2geo.encoders.registry import pretrained_sha256

__all__ = ["ConversionError", "encoder_from_config", "convert", "merge_peft_checkpoint", "convert_for_config"]

logger = logging.getLogger(__name__)


class ConversionError(RuntimeError):
    """The conversion cannot be done as asked (config, names or checkpoint)."""


def encoder_from_config(config_file: str, opts=()) -> tuple[str, dict, str]:
    """(encoder name, encoder_kwargs, key prefix) for the GeoBackbone of a config's model."""
    from detectron2.config import LazyConfig, instantiate
    from omegaconf import OmegaConf

    from d2geo.modeling import find_geo_backbones

    if not os.path.isfile(config_file):
        from d2geo.model_zoo import get_config_file

        try:
            config_file = get_config_file(config_file)
        except RuntimeError as e:
            raise ConversionError(f"{config_file} is not a file; {e}") from None
    cfg = LazyConfig.load(config_file)
    cfg = LazyConfig.apply_overrides(cfg, list(opts))
    if "model" not in cfg:
        raise ConversionError(f"{config_file} has no 'model'")
    from d2geo.model_zoo import find_backbone_nodes

    nodes = find_backbone_nodes(cfg.model, ("model",))
    if len(nodes) != 1:
        raise ConversionError(
            f"{config_file} has {len(nodes)} GeoBackbones ({[p for p, _ in nodes]}); the converter "
            f"needs exactly one: use --encoder and --prefix instead"
        )
    path, node = nodes[0]
    name = node.get("encoder")
    if not isinstance(name, str):
        raise ConversionError(f"{path}.encoder is not an encoder name ({type(name).__name__}); "
                              f"use --encoder and --prefix")
    kwargs = node.get("encoder_kwargs", None)
    kwargs = {} if kwargs is None else OmegaConf.to_container(kwargs, resolve=True)
    node.weights = None  # nothing is loaded (or downloaded) just to find the prefix
    if "pretrained" in node:
        node.pretrained = False
    model = instantiate(cfg.model)
    modules = {id(m): n for n, m in model.named_modules()}
    found = find_geo_backbones(model)
    if len(found) != 1:
        raise ConversionError(f"the built model holds {len(found)} GeoBackbones; use --prefix")
    prefix = modules[id(found[0])]
    return name, kwargs, (prefix + "." if prefix else "")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert(weights: str, *, encoder: str, prefix: str, output_dir: str, name: str,
            encoder_kwargs: dict | None = None) -> str:
    """Write the zoo file and return its path (see the module docstring)."""
    if prefix and not prefix.endswith("."):
        raise ConversionError(f"--prefix {prefix!r} must end with '.' (e.g. 'backbone.net.')")
    if "/" in name or not name:
        raise ConversionError(f"output name {name!r} must be a plain file stem")
    encoder_kwargs = dict(encoder_kwargs or {})
    source = weights
    if weights == "pretrained":
        source = get_pretrained_cfg(encoder).source
        if source is None:
            raise ConversionError(f"{encoder} has no published weights; give the checkpoint file")
    # hf://, https://: downloaded (or taken from the cache) and sha256-checked
    weights = resolve_weights(source, sha256=pretrained_sha256(source) if is_remote(source) else None)
    model = build_encoder(encoder, weights=weights, **encoder_kwargs)  # CheckpointError if it does not fit
    state = {f"{prefix}encoder.{k}": v.detach().cpu().contiguous().clone()
             for k, v in model.state_dict().items()}
    return _write_zoo_file(state, weights, output_dir, name, {
        "encoder": encoder,
        "encoder_kwargs": json.loads(json.dumps(encoder_kwargs)),
        "prefix": prefix,
    }, source=source)


def _write_zoo_file(state: dict, weights: str, output_dir: str, name: str, provenance: dict,
                    source: str | None = None) -> str:
    """``source``: where the weights came from (an hf:// or https:// name); the file's name if None."""
    source = source if source is not None and is_remote(source) else os.path.basename(weights)
    out = {
        "model": state,
        "__author__": f"d2geo tools/convert_checkpoint.py from {source}",
        "matching_heuristics": False,
        "d2geo": {**provenance, "source": source, "source_sha256": _sha256(weights)},
    }
    os.makedirs(output_dir, exist_ok=True)
    from d2geo.data.files import new_temporary

    tmp = new_temporary(os.path.join(output_dir, f"{name}.pth"))  # the mode a plain write gives
    try:
        torch.save(out, tmp)
        digest = _sha256(tmp)
        reread = torch.load(tmp, map_location="cpu", weights_only=True)
        if set(reread["model"]) != set(state):
            raise ConversionError("the written file does not read back the same keys")
        final = os.path.join(output_dir, f"{name}-{digest[:8]}.pth")
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    logger.info("wrote %d tensors to %s", len(state), final)
    return final


def merge_peft_checkpoint(weights: str, *, config_file: str, output_dir: str, name: str, opts=()) -> str:
    """Model-zoo file of a model trained with ``GeoBackbone(peft=...)``: the whole model of
    ``config_file`` loaded from the training checkpoint ``weights``, the adapters merged into
    the encoder weights (plain upstream keys, no peft needed to load it)."""
    from detectron2.config import LazyConfig, instantiate

    from d2geo.modeling import find_geo_backbones

    if not os.path.isfile(config_file):
        from d2geo.model_zoo import get_config_file

        config_file = get_config_file(config_file)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), list(opts))
    from d2geo.model_zoo import skip_encoder_weights

    skip_encoder_weights(cfg.model)  # everything comes from the training checkpoint
    model = instantiate(cfg.model)
    backbones = [b for b in find_geo_backbones(model) if b.peft_adapted]
    if not backbones:
        raise ConversionError(f"--merge-peft: the model of {config_file} has no peft adapters; set "
                              "model.backbone.net.peft as in training (or convert without --merge-peft)")
    ckpt = torch.load(weights, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
    adapter_keys = [k for k in state if ".lora_" in k]
    if not adapter_keys:
        raise ConversionError(f"--merge-peft: {weights} holds no LoRA adapter weights (no '.lora_' keys); "
                              "give the checkpoint written by training with peft (e.g. model_final.pth)")
    incompatible = model.load_state_dict(state, strict=False)
    if incompatible.missing_keys or incompatible.unexpected_keys:
        raise ConversionError(
            f"--merge-peft: {weights} does not fit the model of {config_file} (missing "
            f"{incompatible.missing_keys[:5]}, unexpected {incompatible.unexpected_keys[:5]}); give the "
            "config (and overrides) the model was trained with")
    merged = sum(b.merge_peft() for b in backbones)
    out = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    logger.info("merged %d adapter layers", merged)
    return _write_zoo_file(out, weights, output_dir, name, {"config": os.path.basename(config_file),
                                                           "peft_merged_layers": merged})


def convert_for_config(weights: str, *, config_file: str | None = None, encoder: str | None = None,
                       prefix: str | None = None, encoder_kwargs: dict | None = None, output_dir: str = ".",
                       name: str | None = None, merge_peft: bool = False, opts=()) -> str:
    """What ``d2geo-convert`` does: the encoder, its kwargs and the key prefix from the
    ``GeoBackbone`` of ``config_file`` (after the overrides ``opts``) unless given; the file
    stem ``<encoder>[_<config name>]`` unless ``name`` is given (``<config name>_merged`` with
    ``merge_peft``). Returns the written file."""
    if merge_peft:
        if not config_file:
            raise ConversionError("--merge-peft needs the --config-file the model was trained with")
        stem = name or os.path.splitext(os.path.basename(config_file))[0] + "_merged"
        return merge_peft_checkpoint(weights, config_file=config_file, output_dir=output_dir, name=stem,
                                     opts=opts)
    kwargs = None
    if config_file:
        c_encoder, c_kwargs, c_prefix = encoder_from_config(config_file, opts)
        encoder = encoder or c_encoder
        kwargs = c_kwargs
        prefix = c_prefix if prefix is None else prefix
    elif opts:
        raise ConversionError(f"config overrides {list(opts)} given without --config-file")
    if encoder_kwargs is not None:
        kwargs = encoder_kwargs
    if encoder is None or prefix is None:
        raise ConversionError("give --config-file, or --encoder and --prefix")
    stem = name
    if stem is None:
        stem = encoder
        if config_file:
            stem += "_" + os.path.splitext(os.path.basename(config_file))[0]
    return convert(weights, encoder=encoder, prefix=prefix, output_dir=output_dir, name=stem,
                   encoder_kwargs=kwargs)
