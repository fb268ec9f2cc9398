"""detectron2 meta-architectures for multispectral and multi-temporal inputs.

Dataset dicts carry

* ``"image"``: a ``(C, H, W)`` or ``(C, T, H, W)`` tensor (any number of bands ``C``;
  integer tensors are cast to float32);
* optionally ``"metadata"``: a dict with any of ``timestamps`` ``(T,)`` float64 seconds
  since the Unix epoch, ``latlon`` ``(2,)`` degrees, ``gsd`` (float, metres) and
  ``wavelengths`` ``(C,)`` micrometres.

``pixel_mean`` / ``pixel_std`` are per band (length ``C``) and apply to every frame.
:class:`GeoInputMixin` normalizes, pads (``ImageList`` pads the last two dims of inputs
with any leading dims) and batches the images, collates the metadata to the encoder
schema (``(B, T)``, ``(B, 2)``, ``(B,)``, ``(C,)``) and hands it to every
:class:`~d2geo.modeling.GeoBackbone` inside the model's ``backbone`` for this forward.
It works for any detectron2-style model whose forward calls ``self.preprocess_image`` and
that has ``backbone`` and ``pixel_mean`` / ``pixel_std`` buffers (GeneralizedRCNN,
SemanticSegmentor; detrex's DINO keeps its statistics in a ``normalizer`` closure, so a
subclass there registers the two buffers itself).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, PanopticFPN, SemanticSegmentor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

from ..encoders.base import EncoderInputError, is_tracing
from ..encoders.metadata import METADATA_KEYS, as_timestamps, check_metadata
from .backbone import find_geo_backbones
from .pyramid import fuse_channel_layer_norms

logger = logging.getLogger(__name__)

__all__ = [
    "GeoInputMixin", "GeoRCNN", "GeoSemanticSegmentor", "GeoPanopticFPN", "collate_metadata", "attach_metadata",
    "normalize_image",
]


def collate_metadata(batched_inputs: Sequence[Mapping[str, Any]], *,
                     device: torch.device | str | None = None) -> dict[str, torch.Tensor] | None:
    """Batch the per-sample ``"metadata"`` dicts of dataset dicts to the encoder schema.

    Returns None when no sample has metadata. Every key must be present in every sample
    or in none, and all samples must share one set of wavelengths.
    """
    has = [isinstance(x.get("metadata"), Mapping) and len(x["metadata"]) > 0 for x in batched_inputs]
    if not any(has):
        return None
    if not all(has):
        missing = [i for i, h in enumerate(has) if not h]
        raise EncoderInputError(
            f"samples {missing} of the batch have no 'metadata' but others do; give metadata for "
            "every sample or for none (a missing value can be left out of every sample's dict)"
        )
    mds = [x["metadata"] for x in batched_inputs]
    keys = set(mds[0])
    unknown = keys - set(METADATA_KEYS)
    for i, md in enumerate(mds):
        if set(md) != keys:
            raise EncoderInputError(
                f"sample {i} has metadata keys {sorted(md)} but sample 0 has {sorted(keys)}; every "
                "sample of a batch needs the same keys"
            )
        unknown |= set(md) - set(METADATA_KEYS)
    if unknown:
        raise EncoderInputError(f"unknown metadata keys {sorted(unknown)}; the schema has {list(METADATA_KEYS)}")

    out: dict[str, torch.Tensor] = {}
    for key in sorted(keys):
        if key == "timestamps":  # float64 or integer seconds; the range is checked with the batch
            values = [as_timestamps(md[key], where=f"sample {i}: metadata 'timestamps'", check_range=False)
                      for i, md in enumerate(mds)]
        else:
            values = [torch.as_tensor(md[key], dtype=torch.float32) for md in mds]
        if key == "wavelengths":
            first = values[0]
            for i, v in enumerate(values[1:], 1):
                if v.shape != first.shape or not torch.allclose(v, first, rtol=0, atol=1e-6):
                    raise EncoderInputError(
                        f"sample {i} has wavelengths {v.tolist()} but sample 0 has {first.tolist()}: "
                        "one batch must come from one sensor / band selection; group the data by "
                        "sensor (one dataset or sampler per band set) or select common bands"
                    )
            out[key] = first
            continue
        want = {"timestamps": 1, "latlon": 1, "gsd": 0}[key]
        for i, v in enumerate(values):
            if v.ndim != want or (key == "latlon" and v.shape[0] != 2):
                shape = {"timestamps": "(T,)", "latlon": "(2,)", "gsd": "a scalar"}[key]
                raise EncoderInputError(
                    f"sample {i}: metadata {key!r} has shape {tuple(v.shape)}, expected {shape} per sample"
                )
        if key == "timestamps" and len({v.shape[0] for v in values}) > 1:
            raise EncoderInputError(
                f"samples have different numbers of timestamps {[v.shape[0] for v in values]}; all "
                "samples of a batch need the same number of frames"
            )
        out[key] = torch.stack(values)
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out


def attach_metadata(model: nn.Module, metadata: Mapping[str, Any] | None) -> None:
    """Hand ``metadata`` to every GeoBackbone inside ``model`` for the next forward."""
    backbones = find_geo_backbones(model)
    if metadata and not backbones:
        logger.warning("the batch carries metadata but the model has no GeoBackbone to use it")
    for b in backbones:
        b.set_metadata(metadata)


def normalize_image(image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(image - mean) / std`` with per-band ``mean``/``std`` over ``(C, H, W)`` or ``(C, T, H, W)``."""
    if not torch.is_tensor(image):
        raise TypeError(f"dataset dict 'image' must be a torch.Tensor (C, H, W) or (C, T, H, W), "
                        f"got {type(image).__name__}")
    if image.ndim not in (3, 4):
        raise EncoderInputError(
            f"dataset dict 'image' has shape {tuple(image.shape)}; expected (C, H, W) or (C, T, H, W)"
        )
    if not image.is_floating_point():
        image = image.float()
    mean, std = mean.reshape(-1), std.reshape(-1)
    C = image.shape[0]
    if mean.numel() not in (1, C) or std.numel() not in (1, C):
        raise EncoderInputError(
            f"image has {C} bands but pixel_mean has {mean.numel()} and pixel_std {std.numel()} values; "
            f"give one mean and std per band ({C} values each, applied to every frame)"
        )
    shape = (-1,) + (1,) * (image.ndim - 1)
    return (image - mean.view(shape)) / std.view(shape)


class GeoInputMixin:
    """``preprocess_image`` for multispectral / multi-temporal images with metadata.

    Put it before the detectron2 class: ``class M(GeoInputMixin, GeneralizedRCNN)``.
    Needs ``self.backbone``, ``self.pixel_mean`` and ``self.pixel_std``.
    """

    def preprocess_image(self, batched_inputs: Sequence[Mapping[str, Any]]) -> ImageList:
        device = self.pixel_mean.device
        images = []
        for i, x in enumerate(batched_inputs):
            image = x["image"]
            if not torch.is_tensor(image):
                raise TypeError(f"dataset dict 'image' must be a torch.Tensor (C, H, W) or (C, T, H, W), "
                                f"got {type(image).__name__}; convert it with torch.as_tensor in the mapper")
            # the NaN check needs concrete values: skipped while the model is traced/exported
            if image.is_floating_point() and not is_tracing() and not bool(torch.isfinite(image).all()):
                bad = int((~torch.isfinite(image)).sum())
                raise EncoderInputError(
                    f"sample {i} of the batch ({x.get('file_name', 'no file_name')}) has {bad} NaN/inf "
                    "pixel values; fill invalid pixels before the model: GeoDatasetMapper does it "
                    "(fill='zero', 'mean' or a number), in your own mapper use torch.nan_to_num or "
                    "d2geo.data.read_geotiff(fill=...)"
                )
            images.append(normalize_image(image.to(device), self.pixel_mean, self.pixel_std))
        lead = {tuple(im.shape[:-2]) for im in images}
        if len(lead) > 1:
            raise EncoderInputError(
                f"images of one batch have different band/frame counts {sorted(lead)}; batch images "
                "with the same (C[, T]) only"
            )
        images = _batch_images(images, self.backbone.size_divisibility, self.backbone.padding_constraints)
        metadata = collate_metadata(batched_inputs, device=device)
        if metadata:
            C = images.tensor.shape[1]
            T = images.tensor.shape[2] if images.tensor.ndim == 5 else None
            # validated here, once: the backbone and the encoder take the Metadata as it is
            metadata = check_metadata(metadata, batch_size=len(batched_inputs), num_frames=T,
                                      num_bands=C, device=device)
            if T is None and "timestamps" in metadata and metadata["timestamps"].shape[1] != 1:
                raise EncoderInputError(
                    f"single-frame (C, H, W) images come with {metadata['timestamps'].shape[1]} "
                    "timestamps each; give one timestamp per image or (C, T, H, W) images"
                )
        attach_metadata(self.backbone, metadata)
        return images


def _batch_images(images: list[torch.Tensor], size_divisibility: int, padding_constraints) -> ImageList:
    """``ImageList.from_tensors``; while ``torch.export`` records one image, the same padding
    computed from the (symbolic) shape: ``from_tensors`` computes the padded size as tensor
    values, which ``torch.export`` can only follow as data-dependent sizes that no later shape
    check can reason about."""
    constraints = dict(padding_constraints or {})
    if (len(images) == 1 and torch.compiler.is_exporting() and not constraints.get("square_size", 0)):
        d = int(constraints.get("size_divisibility", size_divisibility) or 1)
        image = images[0]
        h, w = image.shape[-2], image.shape[-1]
        padded = nn.functional.pad(image, [0, (d - w % d) % d, 0, (d - h % d) % d]).unsqueeze(0)
        return ImageList(padded.contiguous(), [(h, w)])
    return ImageList.from_tensors(images, size_divisibility, padding_constraints=padding_constraints)


def require_targets(batched_inputs: Sequence[Mapping[str, Any]], key: str, fix: str) -> None:
    """In training every dataset dict needs its target ``key``; say which do not and how to fix it."""
    missing = [i for i, x in enumerate(batched_inputs) if key not in x]
    if missing:
        raise EncoderInputError(
            f"training needs {key!r} in every dataset dict, but samples {missing} of the batch have "
            f"none; {fix}"
        )


def check_sem_seg_targets(batched_inputs: Sequence[Mapping[str, Any]], num_classes: int | None,
                          ignore_value: int) -> None:
    """Every ``sem_seg`` value is a class id below ``num_classes`` or the ignore value; else
    an error naming the sample, its file and the values (torch's loss would fail on the
    device without either)."""
    if num_classes is None:
        return
    for i, x in enumerate(batched_inputs):
        t = x["sem_seg"]
        bad = ((t < 0) | (t >= num_classes)) & (t != ignore_value)
        if bool(bad.any()):
            values = torch.unique(t[bad])[:8].tolist()
            raise EncoderInputError(
                f"sample {i} of the batch ({x.get('file_name', 'no file_name')}) has sem_seg labels "
                f"{values} but the head predicts {num_classes} classes (0..{num_classes - 1}, and "
                f"{ignore_value} for ignored pixels): map the labels (GeoDatasetMapper's label_map) "
                "or set the head's num_classes"
            )


def _head_num_classes(head: nn.Module) -> int | None:
    n = getattr(head, "num_classes", None)
    if n is None and isinstance(getattr(head, "predictor", None), nn.Conv2d):
        n = head.predictor.out_channels
    return n


@META_ARCH_REGISTRY.register()
class GeoRCNN(GeoInputMixin, GeneralizedRCNN):
    """:class:`~detectron2.modeling.GeneralizedRCNN` (Faster / Mask R-CNN) for d2geo inputs.

    An image without objects trains as all background: give it ``"annotations": []``.

    The heads' detectron2 channel LayerNorms (``conv_norm="LN"``) run on
    :class:`~d2geo.modeling.pyramid.ChannelLayerNorm`: same parameters and results, about
    6% less time per ViT-S Mask R-CNN training step on CPU.
    """

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        fuse_channel_layer_norms(self)

    def forward(self, batched_inputs):
        if self.training:
            require_targets(batched_inputs, "instances",
                            "give each dataset dict 'annotations' (an empty list for an image "
                            "without objects) or 'geojson_file_name', and map it with is_train=True")
        return super().forward(batched_inputs)


@META_ARCH_REGISTRY.register()
class GeoSemanticSegmentor(GeoInputMixin, SemanticSegmentor):
    """:class:`~detectron2.modeling.SemanticSegmentor` for d2geo inputs.

    Training returns the head's losses; inference returns ``{"sem_seg": (K, H, W)}``
    logits per image at its ``height``/``width`` (default: the unpadded input size).
    """

    def forward(self, batched_inputs):
        if self.training:
            require_targets(batched_inputs, "sem_seg",
                            "give each dataset dict 'sem_seg_file_name' (a label GeoTIFF) and map it "
                            "with is_train=True")
            check_sem_seg_targets(batched_inputs, _head_num_classes(self.sem_seg_head),
                                  self.sem_seg_head.ignore_value)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        targets = None
        if "sem_seg" in batched_inputs[0]:
            targets = ImageList.from_tensors(
                [x["sem_seg"].to(self.device) for x in batched_inputs],
                self.backbone.size_divisibility,
                self.sem_seg_head.ignore_value,
                self.backbone.padding_constraints,
            ).tensor
        results, losses = self.sem_seg_head(features, targets)
        if self.training:
            return losses
        out = []
        for result, inp, size in zip(results, batched_inputs, images.image_sizes):
            height, width = inp.get("height", size[0]), inp.get("width", size[1])
            out.append({"sem_seg": sem_seg_postprocess(result, size, height, width)})
        return out


@META_ARCH_REGISTRY.register()
class GeoPanopticFPN(GeoInputMixin, PanopticFPN):
    """detectron2's :class:`~detectron2.modeling.PanopticFPN` (Mask R-CNN plus a semantic
    FPN branch, combined into ``"panoptic_seg"`` at inference) for d2geo inputs.

    Training needs ``instances`` and ``sem_seg`` (things as label 0, stuff ``i + 1``: see
    :mod:`d2geo.data.panoptic`) in every dataset dict. The ``combine_*`` options are
    PanopticFPN's: ``combine_stuff_area_thresh`` (pixels) must suit the tile size.
    """

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        fuse_channel_layer_norms(self)

    def forward(self, batched_inputs):
        if self.training:
            require_targets(batched_inputs, "instances",
                            "give each dataset dict 'annotations' (an empty list for an image "
                            "without objects), and map it with is_train=True")
            require_targets(batched_inputs, "sem_seg",
                            "give each dataset dict 'sem_seg_file_name' (d2geo.data.panoptic writes it) "
                            "and map it with is_train=True")
            check_sem_seg_targets(batched_inputs, _head_num_classes(self.sem_seg_head),
                                  self.sem_seg_head.ignore_value)
        return super().forward(batched_inputs)
