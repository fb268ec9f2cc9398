"""Semantic FPN with the Scale-MAE ViT-L/16 (fMoW RGB): four taps, multi-layer pyramid.

Weights and input scaling: ``configs/common/encoders/scale_mae.py``. Data as in
``mask_rcnn_vitl16.py``; register ``geo_seg_train`` / ``geo_seg_val``
(``configs/common/data/geo_semseg.py``) and set ``model.sem_seg_head.num_classes``.
"""
from ..common.data.geo_semseg import dataloader
from ..common.encoders.scale_mae import encoder as _enc
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

model.backbone.net.update(_enc.backbone)
model.backbone.net.layers = _enc.taps
model.pixel_mean = _enc.pixel_mean
model.pixel_std = _enc.pixel_std
model.sem_seg_head.num_classes = 2

dataloader.train.mapper.bands = _enc.bands
dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.params.lr_decay_rate = _enc.lr_decay_rate

train.output_dir = "./output/scale_mae/semantic_fpn_vitl16"
train.max_iter = 20000
