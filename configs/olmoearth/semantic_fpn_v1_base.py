"""Semantic FPN with the OlmoEarth v1 Base (band-group tokens averaged per position): four taps,
multi-layer pyramid.

Weights and input scaling: ``configs/common/encoders/olmoearth.py``. Data as in
``mask_rcnn_v1_base.py``; register ``geo_seg_train`` / ``geo_seg_val``
(``configs/common/data/geo_semseg.py``) and set ``model.sem_seg_head.num_classes``. At stride 8 (the
published 8-pixel kernel) the pyramid resamples the four taps to strides 4, 8, 16, 32.
"""
from ..common.data.geo_semseg import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.olmoearth import encoder as _enc
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer, layers=_enc.taps)
model.backbone.scale_factors = (2.0, 1.0, 0.5, 0.25)
model.sem_seg_head.num_classes = 2

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4

train.output_dir = "./output/olmoearth/semantic_fpn_v1_base"
train.max_iter = 20000
