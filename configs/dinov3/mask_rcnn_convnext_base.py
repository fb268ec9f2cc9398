"""Mask R-CNN with the DINOv3 ConvNeXt-Base (RGB) and detectron2's FPN.

The ConvNeXt's four stages are already a pyramid (strides 4, 8, 16, 32): the ``GeoBackbone`` gives
them as ``res2..res5`` and detectron2's own ``FPN`` (with ``LastLevelMaxPool`` for p6)
feeds the ViTDet-style RPN and ROI heads of ``common/models/mask_rcnn_geo.py``; no ViT
pyramid in between. Inputs are padded to multiples of 32.

Weights, bands and scaling: ``configs/common/encoders/dinov3_convnext.py``. Register
``geo_det_train`` / ``geo_det_val`` (``configs/common/data/geo_detection.py``) and set
``model.roi_heads.num_classes``.
"""
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from d2geo.modeling import GeoBackbone

from ..common.data.geo_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.dinov3_convnext import encoder as _enc
from ..common.models.mask_rcnn_geo import model
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

train.output_dir = "./output/dinov3/mask_rcnn_convnext_base"
train.max_iter = 20000
