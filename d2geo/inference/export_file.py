"""Model files from a torch model and its config (the export side of :mod:`.model_file`).

:func:`model_fields` gathers what a model file carries from the model (bands, statistics,
patch size, frames, task, score threshold, the weights' provenance and license) and from its
LazyConfig (class names of its test dataset, the test mapper's sensor and DN scale, a hash of
the resolved config); what neither says (the GSD, the window) is given by the caller.
:func:`export_model_file` traces a semantic model (or a Mask R-CNN, as detectron2 exports it:
``inference(..., do_postprocess=False)``, outputs :data:`~.onnx_instances.OUTPUTS`) with
detectron2's ``TracingAdapter`` into ONNX (dynamic height and width, as
``tools/export_model.py --format onnx``) and stamps it
(:func:`~d2geo.inference.model_file.write_metadata`). Needs torch and detectron2.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from typing import Any, Sequence

from .model_file import ModelFileError, ModelMetadata, write_metadata

logger = logging.getLogger(__name__)

__all__ = ["model_fields", "export_model_file", "config_sha256", "DEFAULT_WINDOW"]

DEFAULT_WINDOW = 256


def config_sha256(cfg) -> str:
    """sha256 of the resolved config (imports followed, overrides applied); of "" without one."""
    if cfg is None:
        return hashlib.sha256(b"").hexdigest()
    from .region.manifest import _config_text

    return hashlib.sha256(_config_text(cfg).encode()).hexdigest()


def _cfg_get(cfg, *keys, default=None):
    node = cfg
    for k in keys:
        try:
            node = node[k] if k in node else None
        except TypeError:
            node = getattr(node, k, None)
        if node is None:
            return default
    return node


def _num_classes(model) -> int | None:
    head = getattr(model, "sem_seg_head", None)
    for name in ("num_classes",):
        if isinstance(getattr(head, name, None), int):
            return getattr(head, name)
    pred = getattr(head, "predictor", None)
    return getattr(pred, "out_channels", None)


def model_fields(model, cfg=None, *, window: int | None = None, overlap: int | None = None,
                 sensor: str | None = None, dn_scale: float | None = None, dn_offset: float | None = None,
                 gsd_m: float | None = None, gsd_tolerance: float = 0.25, class_names: Sequence[str] | None = None,
                 inputs: Sequence[str] = ("image",), **extra) -> dict[str, Any]:
    """The fields of a model file for ``model`` (eval mode, weights loaded) and its LazyConfig
    ``cfg`` (or None); keywords override what the model and config say."""
    from d2geo.data.render import class_colours
    from d2geo.encoders.licenses import weights_licenses
    from d2geo.modeling import find_geo_backbones

    from .request import _model_bands, _values, model_outputs

    unknown = set(extra) - {"score_threshold", "patch_size", "frames", "bands"}
    if unknown:
        raise ModelFileError(f"unknown model-file fields {sorted(unknown)}")
    mean, std = _values(getattr(model, "pixel_mean", None)), _values(getattr(model, "pixel_std", None))
    if mean is None or std is None:
        raise ModelFileError(f"{type(model).__name__} has no pixel_mean/pixel_std: a model file carries the "
                             f"statistics its graph normalises with")
    bands = extra.get("bands") or _model_bands(model) or [f"band{i + 1}" for i in range(mean.size)]
    geo = find_geo_backbones(model)
    enc = geo[0].encoder if geo else None
    if window is None:
        size = getattr(enc, "img_size", None)
        size = size[0] if isinstance(size, (tuple, list)) else size
        window = int(size) if isinstance(size, int) and size >= 64 else DEFAULT_WINDOW
    if overlap is None:
        overlap = window // 4
    outputs = model_outputs(model) or {"sem_seg"}
    task = "semantic" if "sem_seg" in outputs and "instances" not in outputs else "instances"
    if class_names is None and cfg is not None:
        from .config_model import config_class_names

        class_names = config_class_names(cfg, task)
    if class_names is None:
        k = _num_classes(model)
        if k is None:
            raise ModelFileError("the model's class count is unknown: give class_names")
        class_names = [f"class{i}" for i in range(k)]
    mapper = _cfg_get(cfg, "dataloader", "test", "mapper") if cfg is not None else None
    if sensor is None and mapper is not None:
        s = _cfg_get(mapper, "sensor")
        sensor = s if isinstance(s, str) else None
    if dn_scale is None and mapper is not None:
        s = _cfg_get(mapper, "scale")
        dn_scale = float(s) if isinstance(s, (int, float)) and not isinstance(s, bool) else None
    thresh = extra.get("score_threshold")
    if thresh is None:
        box = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
        thresh = getattr(box, "test_score_thresh", None)
    frames = extra.get("frames") or (int(getattr(enc, "num_frames", 1) or 1) if geo and geo[0].temporal else 1)
    return {
        "config_sha256": config_sha256(cfg), "task": task, "bands": list(bands), "sensor": sensor,
        "pixel_mean": [float(x) for x in mean], "pixel_std": [float(x) for x in std],
        "dn_scale": dn_scale, "dn_offset": dn_offset, "gsd_m": None if gsd_m is None else float(gsd_m),
        "gsd_tolerance": float(gsd_tolerance), "window": int(window), "overlap": int(overlap),
        "patch_size": extra.get("patch_size") or (int(geo[0].patch_size) if geo else None), "frames": int(frames),
        "class_names": [str(c) for c in class_names], "class_colors": [list(c) for c in class_colours(class_names)],
        "score_threshold": None if thresh is None else float(thresh),
        "weights": [{k: (v if isinstance(v, (str, int, float, type(None))) else str(v)) for k, v in r.items()}
                    for r in weights_licenses(model)],
        "inputs": list(inputs),
    }


def export_model_file(model, path: str, cfg=None, *, sample_size: int | None = None, **fields) -> ModelMetadata:
    """Trace the semantic or Mask R-CNN ``model`` (eval mode) into the ONNX model file ``path`` and stamp it
    with :func:`model_fields` (``fields``: its keywords). Returns the file's metadata."""
    import torch
    from detectron2.export import STABLE_ONNX_OPSET_VERSION, TracingAdapter

    described = model_fields(model, cfg, **fields)
    side = int(sample_size or described["window"])
    mean = torch.tensor(described["pixel_mean"]).view(-1, 1, 1)
    std = torch.tensor(described["pixel_std"]).view(-1, 1, 1)
    g = torch.Generator().manual_seed(0)
    image = torch.randn(mean.shape[0], side, side, generator=g) * std + mean
    inference, names = None, None
    if described["task"] == "instances":  # detectron2's export convention: the raw detections, pasted later
        inference, names = _rcnn_inference(model), None
    adapter = TracingAdapter(model, [{"image": image}], inference)
    adapter.eval()
    args = adapter.flattened_inputs
    if inference is not None:
        names = _instance_output_names(adapter, args)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(adapter, tuple(args), path, input_names=["image"], output_names=names,
                          dynamic_axes={"image": {1: "height", 2: "width"}},
                          opset_version=max(STABLE_ONNX_OPSET_VERSION, 17), dynamo=False)
    meta = write_metadata(path, described)
    logger.info("exported %s (%d bands, %d classes, window %d)", path, len(meta.bands), len(meta.class_names),
                meta.window)
    return meta


def _rcnn_inference(model):
    """detectron2's R-CNN export: ``inference(..., do_postprocess=False)``, masks not pasted."""
    if not hasattr(model, "roi_heads"):
        raise ModelFileError(f"{type(model).__name__} predicts instances but is not an R-CNN (no roi_heads): "
                             f"instance model files hold Mask R-CNN models")

    def inference(m, inputs):
        return [{"instances": m.inference(inputs, do_postprocess=False)[0]}]
    return inference


def _instance_output_names(adapter, args) -> list[str]:
    """The graph's output names (:data:`~.onnx_instances.OUTPUTS`, then ``image_size``), after
    checking that the traced model returns boxes, classes, masks and scores in that order."""
    import torch

    from .onnx_instances import OUTPUTS

    with torch.no_grad():
        adapter(*args)  # fills outputs_schema
    keys = list(adapter.outputs_schema.schemas[0].schemas[0].keys)
    if keys != ["pred_boxes", "pred_classes", "pred_masks", "scores"]:
        raise ModelFileError(f"the model's instances have the fields {keys}: instance model files hold models "
                             f"with boxes, classes, masks and scores (Mask R-CNN)")
    return [*OUTPUTS, "image_size"]


def parse_describe(values: Sequence[str] | None) -> dict[str, Any]:
    """``--describe KEY=VALUE`` entries (VALUE as JSON, else a string), e.g. ``gsd_m=10``,
    ``sensor=sentinel-2-l2a``, ``dn_scale=0.0001``, ``window=224``, ``class_names='["a","b"]'``."""
    import json

    out: dict[str, Any] = {}
    for v in values or ():
        if "=" not in v:
            raise ModelFileError(f"--describe {v!r}: give KEY=VALUE, e.g. --describe gsd_m=10")
        k, raw = v.split("=", 1)
        try:
            out[k.strip()] = json.loads(raw)
        except ValueError:
            out[k.strip()] = raw
    return out


def _lazy_config(config_file: str | None, opts: Sequence[str] = ()):
    """The LazyConfig ``config_file`` with ``opts`` applied; None for a yacs or missing file."""
    if config_file and config_file.endswith(".py") and os.path.isfile(config_file):
        from detectron2.config import LazyConfig

        return LazyConfig.apply_overrides(LazyConfig.load(config_file), list(opts))
    return None


def export_instances_beside(backbone_path: str, model, config_file: str | None = None, opts: Sequence[str] = (),
                            describe: Sequence[str] | None = None, sample_size: int | None = None) -> ModelMetadata:
    """``tools/export_model.py --format onnx`` of a Mask R-CNN: beside the ``backbone.onnx`` it
    writes, the whole model as the instance model file ``model.onnx`` (:func:`export_model_file`)."""
    path = os.path.join(os.path.dirname(backbone_path), "model.onnx")
    return export_model_file(model, path, _lazy_config(config_file, opts), sample_size=sample_size,
                             **parse_describe(describe))


def stamp_exported(path: str, model, config_file: str | None = None, opts: Sequence[str] = (),
                   describe: Sequence[str] | None = None, inputs: dict | None = None) -> ModelMetadata:
    """Stamp an ONNX file that ``tools/export_model.py`` wrote of ``model`` as a model file;
    the LazyConfig ``config_file`` (with the overrides ``opts``) gives the class names, mapper
    options and the config hash (a yacs config: hashed as text). ``inputs``: the traced inputs
    (``{"image", "metadata": {...}}``, flattened by detectron2 in sorted key order as
    ``image, input1, ...``), which say what the graph's inputs are."""
    import onnx

    roles = ["image"] + [f"metadata.{k}" for k in sorted((inputs or {}).get("metadata") or {})]
    names = [i.name for i in onnx.load(path, load_external_data=False).graph.input]
    try:
        graph_roles = [roles[0 if n == "image" else int(n[len("input"):])] for n in names]
    except (ValueError, IndexError):
        raise ModelFileError(f"{path}: inputs {names} are not those of tools/export_model.py") from None
    cfg = _lazy_config(config_file, opts)
    fields = parse_describe(describe)
    fields.setdefault("inputs", graph_roles)
    meta = write_metadata(path, model_fields(model, cfg, **fields))
    if cfg is None and config_file and os.path.isfile(config_file):
        logger.info("config_sha256 of %s: its yacs text is not resolved here", config_file)
    return meta
