"""Mask R-CNN with the Panopticon ViT-B/14 (channel cross-attention over band codes), ViTDet style.

Weights, bands and input scaling: ``configs/common/encoders/panopticon.py`` (replace the placeholder
``pixel_mean``/``pixel_std`` with your data's per-band statistics). Another sensor: set
``model.backbone.net.encoder_kwargs.bands`` (and ``sensor``) and ``dataloader.*.mapper.bands``;
the channel codes follow the band names. Register ``geo_det_train`` / ``geo_det_val``
(``configs/common/data/geo_detection.py``) and set ``model.roi_heads.num_classes``.
"""
from ..common.data.geo_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.panopticon import encoder as _enc
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.roi_heads.num_classes = 1

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/panopticon/mask_rcnn_vitb14"
train.max_iter = 20000
