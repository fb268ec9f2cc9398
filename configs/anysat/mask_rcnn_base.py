"""Mask R-CNN with AnySat base (single-date Sentinel-2, 160 m = 16-pixel patches), ViTDet style.

Weights, bands, patch size and input scaling: ``configs/common/encoders/anysat.py`` (replace the
placeholder ``pixel_mean``/``pixel_std`` with your data's per-band statistics; every batch needs
``gsd`` 10 m and ``timestamps`` metadata). Register ``geo_det_train`` / ``geo_det_val``
(``configs/common/data/geo_detection.py``) and set ``model.roi_heads.num_classes``.
"""
from ..common.data.geo_detection import dataloader
from ..common.encoders.anysat import encoder as _enc
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.roi_heads.num_classes = 1

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/anysat/mask_rcnn_base"
train.max_iter = 20000
