"""Mask R-CNN with the Copernicus-FM ViT-B/16 (patch kernel from the band wavelengths and
bandwidths, location/time/area embeddings from the metadata), ViTDet style.

Weights, bands and input scaling: ``configs/common/encoders/copernicusfm.py`` (replace the
placeholder ``pixel_mean``/``pixel_std`` with your data's per-band statistics). Another sensor: set
``model.backbone.net.encoder_kwargs.bands`` (and ``sensor``) and ``dataloader.*.mapper.bands``;
the kernel follows their wavelengths and bandwidths. Register ``geo_det_train`` / ``geo_det_val``
(``configs/common/data/geo_detection.py``) and set ``model.roi_heads.num_classes``.
"""
from ..common.data.geo_detection import dataloader
from ..common.encoders.copernicusfm import encoder as _enc
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

model.backbone.net.update(_enc.backbone)
model.pixel_mean = _enc.pixel_mean
model.pixel_std = _enc.pixel_std
model.roi_heads.num_classes = 1

dataloader.train.mapper.bands = _enc.bands
dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1
optimizer.params.lr_decay_rate = _enc.lr_decay_rate

train.output_dir = "./output/copernicusfm/mask_rcnn_vitb16"
train.max_iter = 20000
