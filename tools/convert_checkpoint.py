#!/usr/bin/env python
"""Convert an upstream encoder checkpoint into a model-zoo ``.pth`` for a d2geo config.

The upstream file (official DINOv2/DINOv3 weights, a Prithvi ``.pt``, a Clay ``.ckpt``,
a timm or terratorch checkpoint, ...) is read by the encoder family's own loader
(``build_encoder(name, weights=...)``: key renaming, band and patch-size adaptation,
validation), and the encoder's weights are written under the name the encoder has inside
the detectron2 model, so ``train.init_checkpoint=<file>`` (or a ``d2geo://`` zoo path)
loads them with ``DetectionCheckpointer`` and no name-matching heuristics::

    python tools/convert_checkpoint.py dinov2_vitb14_pretrain.pth \
        --config-file configs/dino_v2/mask_rcnn_vitb14.py --output-dir zoo/dinov2
    # -> zoo/dinov2/dinov2_vitb14_mask_rcnn_vitb14-<sha256[:8]>.pth

    python tools/convert_checkpoint.py Prithvi_EO_V2_300M_TL.pt --encoder prithvi_eo_v2_300_tl \
        --prefix backbone.net. --encoder-kwargs '{"num_frames": 4}'

    # published weights by name: hf://<org>/<repo>[@<revision>]/<file>, an https:// URL, or
    # "pretrained" for the encoder's own entry in its pretrained table (sha256-checked)
    python tools/convert_checkpoint.py pretrained --config-file configs/prithvi/mask_rcnn_eo_v2_300_tl.py

With ``--config-file`` the encoder name and its ``encoder_kwargs`` come from the config's
``GeoBackbone``, and the key prefix from where that module sits in the built model
(``backbone.net.`` for both d2geo pyramids); trailing ``key=value`` arguments override the
config first. The output holds ``{"model": {<prefix>encoder.<key>: tensor}, "__author__",
"matching_heuristics": False, "d2geo": {provenance}}``, only tensors and plain containers
(loadable with ``torch.load(weights_only=True)``), and its name ends in the first 8 hex
digits of its sha256, which the ``d2geo://`` handler checks after downloads.

Models fine-tuned with LoRA (``GeoBackbone(peft=...)``): the conversion above is unchanged
(the adapted model loads plain encoder keys into its frozen base layers); a trained model's
checkpoint becomes a plain zoo file with the adapters merged by::

    python tools/convert_checkpoint.py output/model_final.pth --merge-peft \
        --config-file configs/dino_v2/semantic_fpn_vitb14.py 'model.backbone.net.peft={r: 8}'
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys

try:
    import d2geo  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2geo.tools_support import quiet_third_party_warnings  # noqa: E402

quiet_third_party_warnings()

import torch

from d2geo.encoders import CheckpointError, build_encoder, get_pretrained_cfg
from d2geo.encoders.hub import is_remote, resolve_weights
from d2geo.encoders.registry import pretrained_sha256

logger = logging.getLogger("d2geo.convert_checkpoint")


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


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", nargs="?", help="the upstream checkpoint (.pth, .pt, .ckpt, .safetensors): a path, "
                   "hf://<org>/<repo>[@<revision>]/<file>, an https:// URL, or 'pretrained' (the "
                   "encoder's published weights)")
    p.add_argument("--config-file", help="a d2geo config (path or zoo name) whose GeoBackbone "
                   "gives the encoder, its kwargs and the key prefix")
    p.add_argument("--encoder", help="encoder name (see d2geo.encoders.list_encoders()); "
                   "overrides the config's")
    p.add_argument("--encoder-kwargs", default=None,
                   help="JSON dict of build_encoder overrides; replaces the config's")
    p.add_argument("--prefix", default=None, help="where the GeoBackbone sits in the model, "
                   "e.g. 'backbone.net.'; derived from --config-file if not given")
    p.add_argument("--output-dir", default=".", help="directory of the output file")
    p.add_argument("--name", default=None, help="output file stem (default: <encoder>[_<config name>])")
    p.add_argument("--merge-peft", action="store_true", help="weights is a checkpoint of a model "
                   "trained with GeoBackbone(peft=...) from --config-file: write the whole model with "
                   "the adapters merged into the encoder weights")
    p.add_argument("--list-encoders", nargs="?", const="*", metavar="PATTERN", help="list the encoder "
                   "variants (size, license, pinned revision) and exit; a variant's name prints its model card")
    p.add_argument("opts", nargs="*", help="config overrides key=value")
    return p


def main(argv=None) -> str:
    parser = get_parser()
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.list_encoders is not None:
        from d2geo.encoders import encoder_list_text

        print(encoder_list_text(args.list_encoders))
        return ""
    if args.weights is None:
        parser.error("the weights argument is required (or --list-encoders)")
    try:
        if args.merge_peft:
            if not args.config_file:
                raise ConversionError("--merge-peft needs the --config-file the model was trained with")
            stem = args.name or os.path.splitext(os.path.basename(args.config_file))[0] + "_merged"
            path = merge_peft_checkpoint(args.weights, config_file=args.config_file,
                                         output_dir=args.output_dir, name=stem, opts=args.opts)
            print(path)
            return path
        encoder, kwargs, prefix = args.encoder, None, args.prefix
        if args.config_file:
            c_encoder, c_kwargs, c_prefix = encoder_from_config(args.config_file, args.opts)
            encoder = encoder or c_encoder
            kwargs = c_kwargs
            prefix = c_prefix if prefix is None else prefix
        elif args.opts:
            raise ConversionError(f"config overrides {args.opts} given without --config-file")
        if args.encoder_kwargs is not None:
            kwargs = json.loads(args.encoder_kwargs)
            if not isinstance(kwargs, dict):
                raise ConversionError("--encoder-kwargs must be a JSON object")
        if encoder is None or prefix is None:
            raise ConversionError("give --config-file, or --encoder and --prefix")
        stem = args.name
        if stem is None:
            stem = encoder
            if args.config_file:
                stem += "_" + os.path.splitext(os.path.basename(args.config_file))[0]
        path = convert(args.weights, encoder=encoder, prefix=prefix, output_dir=args.output_dir,
                       name=stem, encoder_kwargs=kwargs)
    except (CheckpointError, ConversionError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise SystemExit(f"convert_checkpoint: error: {msg}") from None
    print(path)
    return path


if __name__ == "__main__":
    main()
