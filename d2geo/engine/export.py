"""Export a d2geo model to TorchScript or ONNX and check the export against the eager model.

:func:`export_from_config` is what ``d2geo-export`` (``tools/export_model.py``) runs: the
model of a LazyConfig ``.py`` (weights from ``train.init_checkpoint``) or a yacs ``.yaml``
(weights from ``MODEL.WEIGHTS``), a sample (a GeoTIFF read with the config's test mapper, or
a synthetic image of the model's bands), the export and the max abs difference between the
export and the eager model on that sample. The formats, methods and what each exports are in
the docstring of :mod:`d2geo.cli.export`.
"""
from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import torch
from detectron2.export import TracingAdapter
from detectron2.modeling import GeneralizedRCNN
from detectron2.utils.file_io import PathManager

import d2geo.model_zoo  # noqa: F401  (d2geo:// checkpoints)
from d2geo.modeling import GeoSemanticSegmentor, find_geo_backbones

from .checkpoint import GeoCheckpointer

__all__ = ["FORMATS", "METHODS", "TRACEABLE_METADATA", "ExportError", "build_model_from_config",
           "synthetic_sample", "read_sample", "model_inputs", "export", "max_difference", "export_from_config"]

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
METHODS = ("tracing", "scripting", "export")
#: metadata keys a traced model can take as tensors (timestamps go through calendar code)
TRACEABLE_METADATA = ("gsd", "latlon", "wavelengths")


class ExportError(RuntimeError):
    """The requested export does not apply to this model."""


# -- config and model ---------------------------------------------------------------------
def _load_lazy(path: str, opts: list[str]):
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(path)
    cfg = LazyConfig.apply_overrides(cfg, opts)
    weights = cfg.get("train", {}).get("init_checkpoint", "")
    if weights:  # every weight comes from the trained model: fetch no encoder weights first
        from d2geo.model_zoo import skip_encoder_weights

        skip_encoder_weights(cfg.model)
    model = instantiate(cfg.model)

    def mapper():
        test = cfg.get("dataloader", {}).get("test")
        if test is None or "mapper" not in test:
            raise ExportError(f"{path} has no dataloader.test.mapper to read --sample-image with")
        return instantiate(test.mapper)

    return model, weights, mapper


def _load_yacs(path: str, opts: list[str]):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from d2geo.data import GeoDatasetMapper
    from d2geo.modeling import add_d2geo_config

    cfg = get_cfg()
    add_d2geo_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list([o for opt in opts for o in (opt.split("=", 1) if "=" in opt else [opt])])
    if cfg.MODEL.WEIGHTS:  # the trained model's file holds every weight: fetch no encoder weights
        cfg.MODEL.D2GEO.PRETRAINED = False
        cfg.MODEL.D2GEO.WEIGHTS = None
    cfg.freeze()
    model = build_model(cfg)
    return model, cfg.MODEL.WEIGHTS, lambda: GeoDatasetMapper(cfg, is_train=False)


def build_model_from_config(config_file: str, opts: list[str]):
    """The model in eval mode (weights loaded) and a factory for its test mapper."""
    path = config_file
    if not os.path.isfile(path):
        from d2geo.model_zoo import get_config_file

        path = get_config_file(config_file)
    if path.endswith((".yaml", ".yml")):
        model, weights, mapper = _load_yacs(path, opts)
    else:
        model, weights, mapper = _load_lazy(path, opts)
    if weights:
        GeoCheckpointer(model).load(weights)
    else:
        logger.warning("no weights given (train.init_checkpoint / MODEL.WEIGHTS): exporting a "
                       "randomly initialised model")
    return model.eval(), mapper


# -- sample -------------------------------------------------------------------------------
def synthetic_sample(model, size: int) -> dict:
    """A random image with the model's bands (and frames), around pixel_mean with pixel_std."""
    mean = model.pixel_mean.detach().cpu().reshape(-1)
    std = model.pixel_std.detach().cpu().reshape(-1)
    shape = [mean.numel()]
    geo = find_geo_backbones(model)
    if geo and geo[0].temporal:
        shape.append(int(getattr(geo[0].encoder, "num_frames", 1)))
    patch = geo[0].patch_size if geo else 32
    side = max(patch, size // patch * patch)
    g = torch.Generator().manual_seed(0)
    image = torch.randn(*shape, side, side, generator=g)
    view = (-1,) + (1,) * (image.ndim - 1)
    return {"image": image * std.view(view) + mean.view(view)}


def read_sample(path: str, mapper_factory) -> dict:
    """The dataset dict the config's test mapper makes of a GeoTIFF (or a comma-separated series)."""
    paths = path.split(",")
    record = {"file_name": paths if len(paths) > 1 else paths[0]}
    return mapper_factory()(record)


def model_inputs(sample: dict, model) -> dict:
    """What goes into the traced model: the image and the traceable tensor metadata."""
    inputs = {"image": sample["image"].float()}
    md = dict(sample.get("metadata") or {})
    if "timestamps" in md:
        logger.warning("the sample has acquisition times; exported models take %s only, so an "
                       "encoder that reads times (Prithvi-TL, Clay) treats them as unknown",
                       list(TRACEABLE_METADATA))
    md = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in md.items() if k in TRACEABLE_METADATA}
    if md:
        inputs["metadata"] = md
    return inputs


# -- export -------------------------------------------------------------------------------
def _inference_fn(model):
    if isinstance(model, GeneralizedRCNN):
        def inference(m, inputs):
            return [{"instances": m.inference(inputs, do_postprocess=False)[0]}]
        return inference
    return None


def _flat(outputs) -> list[torch.Tensor]:
    if torch.is_tensor(outputs):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for k in sorted(outputs) for t in _flat(outputs[k])]
    if isinstance(outputs, (list, tuple)):
        return [t for o in outputs for t in _flat(o)]
    if hasattr(outputs, "numpy"):
        return [torch.as_tensor(outputs)]
    return [torch.as_tensor(np.asarray(outputs))]


def max_difference(ours, ref) -> float:
    a, b = _flat(ours), _flat(ref)
    if len(a) != len(b):
        raise ExportError(f"the export returns {len(a)} tensors but the eager model {len(b)}")
    diff = 0.0
    for x, y in zip(a, b):
        if tuple(x.shape) != tuple(y.shape):
            raise ExportError(f"the export returns shape {tuple(x.shape)} where the eager model "
                              f"returns {tuple(y.shape)}")
        if x.numel():
            diff = max(diff, (x.double() - y.double()).abs().max().item())
    return diff


def _onnx_run(path: str, names: list[str], args: tuple) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in sess.get_inputs()]
    feed = {n: a.numpy() for n, a in zip(names, args) if n in wanted}
    return sess.run(None, feed)


def export(model, inputs: dict, *, fmt: str, method: str, output: str) -> tuple[str, float]:
    """Export ``model`` traced on ``inputs``; returns the written file and the max abs difference."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: use one of {FORMATS}")
    if method == "scripting":
        raise ExportError("--export-method scripting does not apply to d2geo models: timm's ViT "
                          "blocks are not TorchScript-scriptable; use --export-method tracing")
    if method == "export" and fmt != "onnx":
        raise ExportError("--export-method export writes ONNX (torch.export + the dynamo ONNX "
                          "exporter): use --format onnx, or --export-method tracing for TorchScript")
    PathManager.mkdirs(output)
    rcnn = isinstance(model, GeneralizedRCNN)
    if fmt == "onnx" and (rcnn or method == "export"):
        if method == "export" and not rcnn:
            logger.info("--export-method export: torch.export cannot follow detectron2's input "
                        "batching (ImageList pads to a size computed from tensor values), so "
                        "backbone.onnx holds the backbone and pyramid; --export-method tracing "
                        "exports the whole %s", type(model).__name__)
        return _export_backbone_onnx(model, inputs, method=method, output=output)
    if fmt == "onnx" and not isinstance(model, GeoSemanticSegmentor):
        logger.warning("ONNX export of %s is not something upstream detectron2 does; trying it",
                       type(model).__name__)
    adapter = TracingAdapter(model, [inputs], _inference_fn(model))
    adapter.eval()
    args = adapter.flattened_inputs
    with torch.no_grad():
        ref = adapter(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            path = os.path.join(output, "model.ts")
            with torch.no_grad():
                ts = torch.jit.trace(adapter, args, check_trace=False)
            with PathManager.open(path, "wb") as f:
                torch.jit.save(ts, f)
            with torch.no_grad():
                ours = torch.jit.load(path)(*args)
        else:
            path = os.path.join(output, "model.onnx")
            names = [f"input{i}" for i in range(len(args))]
            names[0] = "image"
            _onnx_export(adapter, args, path, names, method, spatial_input=0)
            ours = _onnx_run(path, names, args)
    logger.info("inputs schema: %s", adapter.inputs_schema)
    logger.info("outputs schema: %s", adapter.outputs_schema)
    return path, max_difference(ours, ref)


def _onnx_export(module, args, path, names, method, spatial_input):
    image = args[spatial_input]
    if method == "export":
        h, w = image.ndim - 2, image.ndim - 1
        dyn = [None] * len(args)
        dyn[spatial_input] = {h: torch.export.Dim.AUTO, w: torch.export.Dim.AUTO}
        # the modules exported here take *args: their dynamic shapes go under "args"
        torch.onnx.export(module, tuple(args), path, input_names=names, dynamic_shapes={"args": tuple(dyn)},
                          dynamo=True)
    else:  # TorchScript-based exporter on the traced graph, as detectron2's tool does
        from detectron2.export import STABLE_ONNX_OPSET_VERSION

        axes = {"image": {image.ndim - 2: "height", image.ndim - 1: "width"}}
        torch.onnx.export(module, tuple(args), path, input_names=names, dynamic_axes=axes,
                          opset_version=max(STABLE_ONNX_OPSET_VERSION, 17), dynamo=False)


def _export_backbone_onnx(model, inputs, *, method, output):
    """ONNX of ``preprocessed image -> backbone features`` (R-CNN heads stay in PyTorch)."""
    logger.info("%s: upstream detectron2 exports R-CNN heads to ONNX only through Caffe2 ops, so "
                "backbone.onnx holds the backbone and pyramid (input: the normalised, padded "
                "image batch); run the heads in PyTorch or export TorchScript for the whole model",
                type(model).__name__)
    with torch.no_grad():
        images = model.preprocess_image([inputs])  # also hands the metadata to the backbone
    backbone = model.backbone
    metadata = find_geo_backbones(backbone)[0].metadata if find_geo_backbones(backbone) else None
    keys = sorted(metadata or {})

    class BackboneWithMetadata(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.names = list(backbone.output_shape())

        def forward(self, *args):
            image, meta = args[0], args[1:]
            md = dict(zip(keys, meta)) or None
            for b in find_geo_backbones(self.backbone):
                b.set_metadata(md)
            feats = self.backbone(image)
            return tuple(feats[n] for n in self.names)

    wrapper = BackboneWithMetadata().eval()
    args = (images.tensor, *[metadata[k] for k in keys])
    with torch.no_grad():
        ref = wrapper(*args)
    path = os.path.join(output, "backbone.onnx")
    names = ["image", *keys]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _onnx_export(wrapper, args, path, names, method, spatial_input=0)
    ours = _onnx_run(path, names, args)
    return path, max_difference(ours, ref)


def export_from_config(config_file: str, opts=(), *, output: str, fmt: str = "torchscript",
                       method: str = "tracing", sample_image: str | None = None,
                       sample_size: int = 128) -> tuple[str, float]:
    """Build the model of ``config_file`` (a path or a zoo name, overrides ``opts``), export it
    into the folder ``output`` on ``sample_image`` (or a synthetic sample of side
    ``sample_size``); returns the written file and the max abs difference to the eager model."""
    model, mapper = build_model_from_config(config_file, list(opts or []))
    sample = read_sample(sample_image, mapper) if sample_image else synthetic_sample(model, sample_size)
    inputs = model_inputs(sample, model)
    path, diff = export(model, inputs, fmt=fmt, method=method, output=output)
    logger.info("wrote %s", path)
    return path, diff
