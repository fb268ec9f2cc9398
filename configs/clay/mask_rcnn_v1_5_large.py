"""Mask R-CNN with Clay v1.5 (ViT-L, 8-pixel patches) on Sentinel-2 L2A.

Weights by name (``pretrained=True``, see ``configs/common/encoders/clay.py``):
``v1.5/clay-v1.5.ckpt`` of ``made-with-clay/Clay`` on the Hugging Face Hub.

Data: the ten Sentinel-2 L2A bands Clay was trained with (reflectance x 10000, Clay's
statistics; both from the pretrained table). Clay's patch embedding is built from the band wavelengths,
so other band sets work too: change ``bands`` (names of d2geo's ``sentinel-2-l2a`` table,
or give ``wavelengths``) and the statistics. Timestamps, location and GSD come from the
samples' metadata (the GSD defaults to 10 m). Register ``geo_det_train`` / ``geo_det_val``
(``configs/common/data/geo_detection.py``) and set ``model.roi_heads.num_classes``.

With 8-pixel patches the pyramid builds strides 4, 8, 16 from the encoder and two more
levels (32, 64) with strided convolutions, giving the usual p2..p6.
"""
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from ..common.data.geo_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.clay import encoder as _enc
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.backbone.scale_factors = (2.0, 1.0, 0.5)
model.backbone.top_block = L(LastLevelP6P7)(in_channels=256, out_channels=256, in_feature="p4")
model.roi_heads.num_classes = 1

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/clay/mask_rcnn_v1_5_large"
train.max_iter = 20000
