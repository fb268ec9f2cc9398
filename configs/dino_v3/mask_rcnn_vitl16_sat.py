"""Mask R-CNN with DINOv3 ViT-L/16 pretrained on satellite imagery (SAT-493M), RGB.

Weights: Meta's DINOv3 release (``dinov3_vitl16_pretrain_sat493m-*.pth``, obtained
through the DINOv3 download form), saved where ``model.backbone.net.weights`` points.
Rotary position embeddings: any input whose sides are multiples of 16.

Data: ``red, green, blue`` on a 0-255 scale, normalized with the SAT-493M statistics.
Register ``geo_det_train`` / ``geo_det_val`` (``configs/common/data/geo_detection.py``) and
set ``model.roi_heads.num_classes``.
"""
from d2geo.encoders.dinov3 import SAT_PIXEL_STATS

from ..common.data.geo_detection import dataloader
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

model.backbone.net.encoder = "dinov3_vitl16_sat"
model.backbone.net.weights = "checkpoints/dinov3_vitl16_pretrain_sat493m.pth"
model.backbone.net.encoder_kwargs = dict(bands=["red", "green", "blue"])
model.backbone.net.drop_path_rate = 0.3
model.pixel_mean = list(SAT_PIXEL_STATS["mean"])
model.pixel_std = list(SAT_PIXEL_STATS["std"])
model.roi_heads.num_classes = 1

dataloader.train.mapper.bands = ["red", "green", "blue"]
dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1
optimizer.params.lr_decay_rate = 0.8

train.output_dir = "./output/dino_v3/mask_rcnn_vitl16_sat"
train.max_iter = 30000
