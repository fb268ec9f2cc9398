"""Semantic FPN with a DINOv2 ViT-L/14 backbone: ``semantic_fpn_vitb14.py`` with a larger
encoder and taps spread over its 24 blocks (ViTDet's pattern: only what differs is set)."""
from .semantic_fpn_vitb14 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.encoder = "dinov2_vitl14"
model.backbone.net.layers = (5, 11, 17, 23)
model.backbone.net.drop_path_rate = 0.4
optimizer.params.lr_decay_rate = 0.8
dataloader.train.total_batch_size = 8

train.output_dir = "./output/dinov2/semantic_fpn_vitl14"
