"""Semantic FPN with Prithvi-EO-2.0-600M-TL: ``semantic_fpn_eo_v2_300_tl.py`` with the larger
encoder, 14-pixel patches resampled to 16 on load, and taps spread over its 32 blocks."""
from .semantic_fpn_eo_v2_300_tl import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.encoder = "prithvi_eo_v2_600_tl"
model.backbone.net.encoder_kwargs.patch_size = 16
model.backbone.net.layers = (7, 15, 23, 31)
optimizer.params.lr_decay_rate = 0.9
dataloader.train.total_batch_size = 4

train.output_dir = "./output/prithvi/semantic_fpn_eo_v2_600_tl"
