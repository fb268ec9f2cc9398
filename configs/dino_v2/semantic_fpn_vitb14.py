"""Semantic FPN with a DINOv2 ViT-B/14 backbone (four taps, multi-layer pyramid), RGB.

Weights: the official DINOv2 checkpoint, e.g.
https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth, saved
where ``model.backbone.net.weights`` points. The patch kernel is resampled to 16 pixels
on load, so the pyramid levels are p2..p5.

Data: ``red, green, blue`` on a 0-255 scale. Register ``geo_seg_train`` / ``geo_seg_val``
(see ``configs/common/data/geo_semseg.py``) and set ``model.sem_seg_head.num_classes``::

    python tools/train_net.py --config-file configs/dino_v2/semantic_fpn_vitb14.py \
        model.sem_seg_head.num_classes=5 model.backbone.net.weights=/data/dinov2_vitb14_pretrain.pth
"""
from ..common.data.geo_semseg import dataloader
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

model.backbone.net.encoder = "dinov2_vitb14"
model.backbone.net.weights = "checkpoints/dinov2_vitb14_pretrain.pth"
model.backbone.net.encoder_kwargs = dict(patch_size=16, bands=["red", "green", "blue"])
model.backbone.net.layers = (3, 5, 7, 11)
model.backbone.net.drop_path_rate = 0.1
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.sem_seg_head.num_classes = 2

dataloader.train.mapper.bands = ["red", "green", "blue"]
dataloader.train.total_batch_size = 16

optimizer.lr = 1e-4
optimizer.params.lr_decay_rate = 0.7

train.output_dir = "./output/dino_v2/semantic_fpn_vitb14"
train.max_iter = 20000
