"""Mask R-CNN with the SSL4EO-S12 ViT-S/16 (DINO) on 13-band Sentinel-2 L1C, ViTDet style.

Weights and input scaling: ``configs/common/encoders/ssl4eo.py``. Data: the 13 L1C bands
``B01 .. B08, B8A, B09, B10, B11, B12`` as stored (reflectance x 10 000). An L2A stack has no
B10: set ``model.backbone.net.encoder_kwargs.bands`` and ``dataloader.*.mapper.bands`` to
its 12 bands (B10's pretrained weights are dropped) and ``pixel_mean``/``pixel_std`` to 12
values. Register ``geo_det_train`` / ``geo_det_val`` (``configs/common/data/geo_detection.py``)
and set ``model.roi_heads.num_classes``.
"""
from ..common.data.geo_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.ssl4eo import encoder as _enc
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.roi_heads.num_classes = 1

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/ssl4eo/mask_rcnn_vits16"
train.max_iter = 20000
