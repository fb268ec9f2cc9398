"""Rotated Faster R-CNN (oriented boxes) with Prithvi-EO-2.0-300M-TL on 4-date HLS time series.

``mask_rcnn_eo_v2_300_tl.py`` with ``configs/common/models/rotated_rcnn_geo.py``'s heads
(RRPN + RROIHeads, boxes ``(cx, cy, w, h, angle_degrees_ccw)``): weights, bands, scaling
and the four dates as there, the dates' feature maps averaged (``temporal_fold="mean"``).
Data: ``configs/common/data/geo_rotated_detection.py`` (``geo_rot_train`` / ``geo_rot_val``).
"""
from ..common.data.geo_rotated_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.prithvi import encoder as _enc
from ..common.models.rotated_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.backbone.net.temporal_fold = "mean"
model.roi_heads.num_classes = 1

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/prithvi/rotated_rcnn_eo_v2_300_tl"
train.max_iter = 20000
