"""Mask R-CNN with the OlmoEarth v1 Base (band-group tokens averaged per position), ViTDet style.

Weights (OlmoEarth Artifact License: use restrictions), bands and input scaling:
``configs/common/encoders/olmoearth.py`` (replace the placeholder ``pixel_mean``/``pixel_std``).
Sentinel-1 or Landsat: set ``model.backbone.net.encoder_kwargs.modality`` and ``bands`` and
``dataloader.*.mapper.bands``. Register ``geo_det_train`` / ``geo_det_val``
(``configs/common/data/geo_detection.py``) and set ``model.roi_heads.num_classes``. Patch 8 (the
published kernel): the simple feature pyramid builds strides 4, 8, 16 and two more levels (32, 64)
with strided convolutions, giving the usual p2..p6 (as CROMA's config).
"""
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from ..common.data.geo_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.olmoearth import encoder as _enc
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.backbone.scale_factors = (2.0, 1.0, 0.5)
model.backbone.top_block = L(LastLevelP6P7)(in_channels=256, out_channels=256, in_feature="p4")
model.roi_heads.num_classes = 1

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/olmoearth/mask_rcnn_v1_base"
train.max_iter = 20000
