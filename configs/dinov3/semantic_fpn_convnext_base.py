"""Semantic FPN with the DINOv3 ConvNeXt-Base (RGB): the ConvNeXt stages ``res2..res5``
through detectron2's FPN (``p2..p5``) into ``SemSegFPNHead``.

Weights, bands and scaling: ``configs/common/encoders/dinov3_convnext.py``. Register
``geo_seg_train`` / ``geo_seg_val`` (``configs/common/data/geo_semseg.py``) and set
``model.sem_seg_head.num_classes``.
"""
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.fpn import FPN

from d2geo.modeling import GeoBackbone

from ..common.data.geo_semseg import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.dinov3_convnext import encoder as _enc
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

model.backbone = L(FPN)(
    bottom_up=L(GeoBackbone)(),  # the fragment's arguments, set below
    in_features=_enc.in_features,
    out_channels=256,
    norm="LN",
    top_block=None,
)
_apply_encoder(_enc, model, dataloader, optimizer, net=model.backbone.bottom_up)
model.sem_seg_head.num_classes = 2

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4

train.output_dir = "./output/dinov3/semantic_fpn_convnext_base"
train.max_iter = 20000
