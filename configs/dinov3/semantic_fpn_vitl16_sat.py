"""Semantic FPN with DINOv3 ViT-L/16 SAT-493M (four taps, multi-layer pyramid), RGB.

Weights by name (``pretrained=True``, see ``configs/common/encoders/dinov3.py``).

Data: ``red, green, blue`` on a 0-255 scale, normalized with the SAT-493M statistics.
Register ``geo_seg_train`` / ``geo_seg_val`` (``configs/common/data/geo_semseg.py``) and
set ``model.sem_seg_head.num_classes``.
"""
from ..common.data.geo_semseg import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.dinov3 import encoder as _enc
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer, layers=_enc.taps)
model.sem_seg_head.num_classes = 2

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4

train.output_dir = "./output/dinov3/semantic_fpn_vitl16_sat"
train.max_iter = 30000
