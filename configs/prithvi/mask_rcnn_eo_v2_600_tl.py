"""Mask R-CNN with Prithvi-EO-2.0-600M-TL: ``mask_rcnn_eo_v2_300_tl.py`` with the larger encoder.

Only what differs is set here (ViTDet's pattern). The 600M model has 14-pixel patches;
they are resampled to 16 on load (as the DINOv2 configs do) so the pyramid keeps strides
4..64. Weights by name: ``Prithvi_EO_V2_600M_TL.pt`` of
``ibm-nasa-geospatial/Prithvi-EO-2.0-600M-TL``; bands and statistics as for the 300M model.
"""
from .mask_rcnn_eo_v2_300_tl import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.encoder = "prithvi_eo_v2_600_tl"
model.backbone.net.encoder_kwargs.patch_size = 16
optimizer.params.lr_decay_rate = 0.9  # ViTDet's value for 32-block ViT-H
dataloader.train.total_batch_size = 4

train.output_dir = "./output/prithvi/mask_rcnn_eo_v2_600_tl"
