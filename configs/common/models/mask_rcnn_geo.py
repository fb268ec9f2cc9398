"""Mask R-CNN on a d2geo encoder, ViTDet style.

detectron2's ``mask_rcnn_vitdet`` model (RPN with two convs, 4conv1fc box head and mask
head with LN) with three changes: the meta-architecture is ``GeoRCNN`` (per-band
normalization, ``(C, H, W)`` / ``(C, T, H, W)`` images, acquisition metadata), the ViT is
a ``GeoBackbone`` around any registered encoder, and the pyramid is d2geo's
``SimpleFeaturePyramid`` (padding that works for any input size).

Configs set at least ``model.backbone.net.encoder`` (+ ``encoder_kwargs``),
``model.pixel_mean``/``pixel_std`` (one value per band) and ``model.roi_heads.num_classes``.
The pyramid's ``scale_factors`` turn the encoder stride (its patch size) into strides
4, 8, 16, 32: ``(4, 2, 1, 0.5)`` for patch 16, ``(2, 1, 0.5, 0.25)`` for patch 8.
"""
from detectron2 import model_zoo as d2_model_zoo
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from d2geo.modeling import GeoBackbone, GeoRCNN, SimpleFeaturePyramid

model = d2_model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model
model._target_ = GeoRCNN
model.backbone = L(SimpleFeaturePyramid)(
    net=L(GeoBackbone)(
        encoder="dinov2_vitb14",
        weights=None,
        layers=(-1,),
        norm=True,
        drop_path_rate=0.1,
        freeze="none",
        encoder_kwargs=dict(patch_size=16),
    ),
    out_channels=256,
    scale_factors=(4.0, 2.0, 1.0, 0.5),
    top_block=L(LastLevelMaxPool)(),
    norm="LN",
    square_pad=0,
)
model.input_format = None
model.roi_heads.num_classes = 1
