"""Mask R-CNN with a DINOv2 ViT-L/14 backbone: ``mask_rcnn_vitb14.py`` with a larger encoder.

Only what differs from the ViT-B config is set here (ViTDet's pattern); bands and input
statistics are the family's (``configs/common/encoders/dinov2.py``).
"""
from .mask_rcnn_vitb14 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.encoder = "dinov2_vitl14"
model.backbone.net.drop_path_rate = 0.4
optimizer.params.lr_decay_rate = 0.8  # ViTDet's value for ViT-L
dataloader.train.total_batch_size = 8

train.output_dir = "./output/dinov2/mask_rcnn_vitl14"
