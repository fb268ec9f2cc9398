"""Mask R-CNN with Galileo base (Sentinel-2 L1C + Sentinel-1 GRD time series, 8-pixel patches).

Weights by name (``pretrained=True``, see ``configs/common/encoders/galileo.py``):
``models/base/encoder.pt`` of ``nasaharvest/galileo`` on the Hugging Face Hub, at a pinned commit.

Data: one GeoTIFF per modality on one grid (``{"S2L1C": ..., "S1GRD": ...}`` images, stacked by
``read_modalities`` into ten S2L1C bands and S1GRD VV/VH) with their ``timestamps`` (the month
of each date is an input of the model; see the fragment for time series); register
``geo_det_train`` / ``geo_det_val`` (``configs/common/data/geo_detection.py``) and set
``model.roi_heads.num_classes``. Input sides must be multiples of 8 (the backbone pads). The last block's map (channel groups and dates averaged) feeds a simple feature
pyramid: strides 4, 8, 16 and two more levels (32, 64) with strided convolutions (p2..p6).
"""
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from ..common.data.geo_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.galileo import encoder as _enc
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.backbone.scale_factors = (2.0, 1.0, 0.5)
model.backbone.top_block = L(LastLevelP6P7)(in_channels=256, out_channels=256, in_feature="p4")
model.roi_heads.num_classes = 1

dataloader.train.total_batch_size = 16

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/galileo/mask_rcnn_base"
train.max_iter = 20000
