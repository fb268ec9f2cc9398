"""Tiny models and samples: the tests are about d2geo's glue, not detectron2's heads."""
from __future__ import annotations

import torch

from testkit import tiny_rcnn_heads

__all__ = ["tiny_semseg_head", "tiny_mask_rcnn", "tiny_rcnn_heads", "tiny_segmentor", "BANDS5", "TINY_DINO",
           "dino_backbone", "make_sample"]


def tiny_semseg_head(model, channels: int = 32):
    """Shrink the pyramid and the SemSegFPNHead of a semantic FPN LazyConfig ``model`` in place."""
    model.backbone.out_channels = channels
    model.sem_seg_head.conv_dims = channels
    model.sem_seg_head.norm = ""
    return model


def tiny_mask_rcnn(backbone=None, num_bands: int = 5, *, pixel_mean: float = 500.0, pixel_std: float = 290.0,
                   num_classes: int = 2, box_conv_dims=()):
    """detectron2's ViTDet Mask R-CNN as a ``GeoRCNN`` on the GeoBackbone (or its LazyCall)
    ``backbone`` (default: a tiny DINOv2 on :data:`BANDS5`), with tiny heads."""
    from detectron2 import model_zoo
    from detectron2.config import LazyCall as L
    from detectron2.config import instantiate
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool

    from d2geo.modeling import GeoBackbone, GeoRCNN, SimpleFeaturePyramid

    net = backbone if backbone is not None else L(GeoBackbone)(encoder="dinov2_test", encoder_kwargs=TINY_DINO)
    cfg = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model
    cfg._target_ = GeoRCNN
    cfg.backbone = L(SimpleFeaturePyramid)(net=net, out_channels=32, top_block=L(LastLevelMaxPool)(), norm="LN")
    cfg.pixel_mean, cfg.pixel_std = [pixel_mean] * num_bands, [pixel_std] * num_bands
    cfg.input_format = None
    cfg.roi_heads.num_classes = num_classes
    return instantiate(tiny_rcnn_heads(cfg, 32, box_conv_dims))


def tiny_segmentor(backbone, num_bands: int, num_classes: int = 3):
    """A GeoSemanticSegmentor with a tiny SemSegFPNHead on the pyramid ``backbone``."""
    from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead

    from d2geo.modeling import GeoSemanticSegmentor

    head = SemSegFPNHead(backbone.output_shape(), num_classes=num_classes, conv_dims=32, common_stride=4,
                         norm="", ignore_value=255)
    return GeoSemanticSegmentor(backbone=backbone, sem_seg_head=head,
                                pixel_mean=[500.0] * num_bands, pixel_std=[290.0] * num_bands)


#: five bands of a tiny multispectral DINOv2 (pretrained RGB plus coastal and nir)
BANDS5 = ("coastal", "blue", "green", "red", "nir")
#: how the tests use ``dinov2_test`` (DINOv2 with registers, 64 wide, 4 blocks): 16 px patches,
#: 64 px native, :data:`BANDS5`
TINY_DINO = dict(patch_size=16, img_size=64, bands=BANDS5)


def dino_backbone(**kw):
    """A GeoBackbone on the tiny DINOv2 with registers (``dinov2_test``) over :data:`BANDS5`."""
    from d2geo.modeling import GeoBackbone

    enc_kw = {**TINY_DINO, **kw.pop("encoder_kwargs", {})}
    return GeoBackbone("dinov2_test", encoder_kwargs=enc_kw, **kw)


def make_sample(C=5, H=64, W=64, T=None, meta=True, n_boxes=2, seed=0) -> dict:
    """A dataset dict as a mapper makes it: image (x1000), metadata, two box/mask instances and
    the matching semantic labels."""
    from detectron2.structures import BitMasks, Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    shape = (C, H, W) if T is None else (C, T, H, W)
    d = {"image": torch.rand(shape, generator=g) * 1000, "height": H, "width": W}
    if meta:
        d["metadata"] = {"latlon": [10.0 + seed, 20.0], "gsd": 10.0 + seed,
                         "timestamps": [1.6e9 + 86400 * k for k in range(T or 1)]}
    boxes = torch.tensor([[4.0, 6.0, 30.0, 28.0], [34.0, 30.0, 60.0, 60.0]])[:n_boxes]
    inst = Instances((H, W))
    inst.gt_boxes = Boxes(boxes)
    inst.gt_classes = torch.tensor([0, 1])[:n_boxes]
    masks = torch.zeros(n_boxes, H, W, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
        masks[i, y0:y1, x0:x1] = True
    inst.gt_masks = BitMasks(masks)
    d["instances"] = inst
    d["sem_seg"] = (masks.long() * torch.tensor([1, 2])[:n_boxes, None, None]).amax(0)
    return d
