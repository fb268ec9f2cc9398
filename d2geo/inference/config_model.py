"""A trained detectron2 model from its LazyConfig and weights, and the class names of the data the
config evaluates on: what the predict, visualize and export tools and :mod:`.export_file` share
(:mod:`d2geo.tools_support` re-exports both for the tools).

Not :func:`d2geo.inference.load_model`, which opens a self-describing ONNX model file
(:mod:`.model_file`). Imports torch and detectron2 only when called.
"""
from __future__ import annotations

import os
from typing import Sequence

__all__ = ["load_model", "config_class_names"]


def load_model(config_file: str, weights: str, device: str = "cpu", opts: Sequence[str] = ()):
    """Instantiate ``cfg.model`` of a LazyConfig (a path or a d2geo model-zoo name), load
    ``weights`` into it and put it in eval mode; returns ``(model, cfg)``."""
    from detectron2.config import LazyConfig, instantiate

    import d2geo.model_zoo  # noqa: F401  (d2geo:// checkpoints)
    from d2geo.engine import GeoCheckpointer

    path = config_file
    if not os.path.isfile(path):
        from d2geo.model_zoo import get_config_file

        try:
            path = get_config_file(config_file)
        except RuntimeError:
            raise FileNotFoundError(
                f"config file not found: {config_file} (give a path to a LazyConfig .py file or a "
                f"config name of the d2geo model zoo, see d2geo.model_zoo.list_configs())") from None
    if not os.path.isfile(weights) and "://" not in weights:
        raise FileNotFoundError(f"weights not found: {weights} (train with tools/train_net.py; the "
                                f"final weights are <train.output_dir>/model_final.pth)")
    cfg = LazyConfig.load(path)
    cfg = LazyConfig.apply_overrides(cfg, list(opts))
    if "model" not in cfg:
        raise KeyError(f"{config_file} has no `model` entry")
    # every weight comes from ``weights`` below: build the encoders without fetching theirs
    d2geo.model_zoo.skip_encoder_weights(cfg.model)
    model = instantiate(cfg.model)
    model.to(device)
    GeoCheckpointer(model).load(weights)
    model.eval()
    return model, cfg


def config_class_names(cfg, kind: str = "auto") -> list[str] | None:
    """Class names of the data a config evaluates on (``stuff_classes`` for semantic models,
    ``thing_classes`` for instances), from detectron2's ``MetadataCatalog``; None if unknown."""
    try:
        names = cfg.dataloader.test.dataset.names
    except (AttributeError, KeyError):
        return None
    if isinstance(names, (list, tuple)):
        names = names[0] if names else None
    if not names:
        return None
    import d2geo.data  # noqa: F401  (registers the built-in datasets)
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(names)
    keys = {"semantic": ("stuff_classes",), "instances": ("thing_classes",)}.get(
        kind, ("stuff_classes", "thing_classes"))
    for key in keys:
        value = meta.get(key, None)
        if value:
            return list(value)
    return None
