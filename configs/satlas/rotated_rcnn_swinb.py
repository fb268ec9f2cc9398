"""Rotated Faster R-CNN (oriented boxes) with the SatlasPretrain Swin-V2-B and detectron2's FPN.

``mask_rcnn_swinb.py``'s backbone (the Swin stages ``res2..res5`` under detectron2's
``FPN``) with ``configs/common/models/rotated_rcnn_geo.py``'s heads (RRPN + RROIHeads, boxes
``(cx, cy, w, h, angle_degrees_ccw)``). Weights, bands and scaling:
``configs/common/encoders/satlas.py``; data: ``configs/common/data/geo_rotated_detection.py``.
"""
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from d2geo.modeling import GeoBackbone

from ..common.data.geo_rotated_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.satlas import encoder as _enc
from ..common.models.rotated_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

model.backbone = L(FPN)(
    bottom_up=L(GeoBackbone)(),  # the fragment's arguments, set below
    in_features=_enc.in_features,
    out_channels=256,
    norm="LN",
    top_block=L(LastLevelMaxPool)(),
)
_apply_encoder(_enc, model, dataloader, optimizer, net=model.backbone.bottom_up)
model.roi_heads.num_classes = 1

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.05

train.output_dir = "./output/satlas/rotated_rcnn_swinb"
train.max_iter = 20000
