"""Semantic FPN with DINOv3 ViT-L/16 SAT-493M (four taps, multi-layer pyramid), RGB.

Weights: Meta's DINOv3 release (``dinov3_vitl16_pretrain_sat493m-*.pth``), saved where
``model.backbone.net.weights`` points.

Data: ``red, green, blue`` on a 0-255 scale, normalized with the SAT-493M statistics.
Register ``geo_seg_train`` / ``geo_seg_val`` (``configs/common/data/geo_semseg.py``) and
set ``model.sem_seg_head.num_classes``.
"""
from d2geo.encoders.dinov3 import SAT_PIXEL_STATS

from ..common.data.geo_semseg import dataloader
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

model.backbone.net.encoder = "dinov3_vitl16_sat"
model.backbone.net.weights = "checkpoints/dinov3_vitl16_pretrain_sat493m.pth"
model.backbone.net.encoder_kwargs = dict(bands=["red", "green", "blue"])
model.backbone.net.layers = (5, 11, 17, 23)
model.backbone.net.drop_path_rate = 0.3
model.pixel_mean = list(SAT_PIXEL_STATS["mean"])
model.pixel_std = list(SAT_PIXEL_STATS["std"])
model.sem_seg_head.num_classes = 2

dataloader.train.mapper.bands = ["red", "green", "blue"]
dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.params.lr_decay_rate = 0.8

train.output_dir = "./output/dino_v3/semantic_fpn_vitl16_sat"
train.max_iter = 30000
