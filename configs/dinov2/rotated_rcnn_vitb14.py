"""Rotated Faster R-CNN (oriented boxes) with a DINOv2 ViT-B/14 backbone, RGB imagery.

Weights, bands and scaling as ``mask_rcnn_vitb14.py`` (its encoder fragment); the model is
``configs/common/models/rotated_rcnn_geo.py`` (RRPN + RROIHeads, boxes
``(cx, cy, w, h, angle_degrees_ccw)``). Register ``geo_rot_train`` / ``geo_rot_val``
(``configs/common/data/geo_rotated_detection.py``; DOTA labels, rotated COCO json or
GeoJSON polygons through ``d2geo.data.rotated``) and set the number of classes::

    python tools/train_net.py --config-file configs/dinov2/rotated_rcnn_vitb14.py \
        model.roi_heads.num_classes=15
"""
from ..common.data.geo_rotated_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.dinov2 import encoder as _enc
from ..common.models.rotated_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.roi_heads.num_classes = 1

dataloader.train.total_batch_size = 16

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/dinov2/rotated_rcnn_vitb14"
train.max_iter = 20000
