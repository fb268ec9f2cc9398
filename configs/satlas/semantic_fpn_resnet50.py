"""Semantic FPN with the SatlasPretrain ResNet-50 (Sentinel-2, nine bands): the ResNet's stages
``res2..res5`` through detectron2's FPN (``p2..p5``) into ``SemSegFPNHead``.

Weights, bands and scaling: ``configs/common/encoders/satlas_resnet.py``. Register
``geo_seg_train`` / ``geo_seg_val`` (``configs/common/data/geo_semseg.py``) and set
``model.sem_seg_head.num_classes``.

The task setup (FPN over ``res2..res5``, heads, data, optimizer, schedule) is
``configs/satlas/semantic_fpn_swinb.py``'s: this file imports it and swaps the encoder fragment.
"""
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.satlas_resnet import encoder as _enc
from .semantic_fpn_swinb import dataloader, lr_multiplier, model, optimizer, train

model.backbone.in_features = _enc.in_features
_apply_encoder(_enc, model, dataloader, optimizer, net=model.backbone.bottom_up)

train.output_dir = "./output/satlas/semantic_fpn_resnet50"
