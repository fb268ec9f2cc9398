"""Mask R-CNN with the SatlasPretrain ResNet-50 (Sentinel-2, nine bands) and detectron2's FPN.

The ResNet's four stages are already a pyramid (strides 4, 8, 16, 32): the ``GeoBackbone`` gives
them as ``res2..res5`` and detectron2's own ``FPN`` (with ``LastLevelMaxPool`` for p6)
feeds the ViTDet-style RPN and ROI heads of ``common/models/mask_rcnn_geo.py``; no ViT
pyramid in between. Inputs are padded to multiples of 32.

Weights, bands and scaling: ``configs/common/encoders/satlas_resnet.py``. Register
``geo_det_train`` / ``geo_det_val`` (``configs/common/data/geo_detection.py``) and set
``model.roi_heads.num_classes``.

The task setup (FPN over ``res2..res5``, heads, data, optimizer, schedule) is
``configs/satlas/mask_rcnn_swinb.py``'s: this file imports it and swaps the encoder fragment.
"""
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.satlas_resnet import encoder as _enc
from .mask_rcnn_swinb import dataloader, lr_multiplier, model, optimizer, train

model.backbone.in_features = _enc.in_features
_apply_encoder(_enc, model, dataloader, optimizer, net=model.backbone.bottom_up)

train.output_dir = "./output/satlas/mask_rcnn_resnet50"
