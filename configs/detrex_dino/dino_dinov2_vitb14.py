"""detrex's DINO (DETR with improved denoising anchor boxes) on a DINOv2 ViT-B/14, RGB.

Needs detrex (https://github.com/IDEA-Research/detrex) installed, with its repository
root on ``PYTHONPATH``: DINO's model code and base config live in detrex's
``projects/dino``, which detrex's own configs import the same way. Train with detrex's
``tools/train_net.py`` (it reads the ``train.clip_grad`` / EMA settings of detrex's
``common/train.py``); detrex's DINO trains on CUDA only: its denoising
queries and DN criterion call ``.cuda()`` (inference runs on CPU).

The model is detrex's ``projects/dino/configs/models/dino_r50.py`` with the ResNet
replaced by d2geo's ``GeoBackbone`` + ``SimpleFeaturePyramid`` (strides 8, 16, 32 and a
max-pooled 64, i.e. DINO's four scales) and ``ChannelMapper`` mapping them to the
transformer width. ``GeoDINO`` adds d2geo's input handling (per-band normalization, any
number of bands, acquisition metadata) to detrex's DINO.

Weights (by name, ``pretrained=True``) and data as in ``configs/dinov2/mask_rcnn_vitb14.py``; set
``model.num_classes`` to your number of classes.

Tile size: DINO picks ``num_queries`` (900, detrex's recipe) of its encoder tokens, one per
cell of the four levels (strides 8 to 64), so tiles need at least 900 of them: 224 x 224 px
give 1045, 128 x 128 px only 340 (``d2geo.modeling.detrex.encoder_tokens``). ``GeoDINO`` refuses smaller batches with that
fix; for small tiles size the queries to the tile instead, e.g. for 128 px tiles (340
tokens) ``model.num_queries=300 model.select_box_nums_for_evaluation=100`` (the two-stage
proposal count follows ``num_queries``).
"""
import os

import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detrex.config import get_config
from detrex.modeling.neck import ChannelMapper

from d2geo.modeling import GeoBackbone, SimpleFeaturePyramid
from d2geo.modeling.detrex import GeoDINO, detrex_projects_root

from ..common.data.geo_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.dinov2 import encoder as _enc
from ..common.optim import AdamW as optimizer

_dino_base = os.path.join(detrex_projects_root(), "projects", "dino", "configs", "models", "dino_r50.py")
model = LazyConfig.load(_dino_base, "model")
model._target_ = GeoDINO

_levels = ["p3", "p4", "p5", "p6"]
model.backbone = L(SimpleFeaturePyramid)(
    net=L(GeoBackbone)(),  # the fragment's arguments, set below
    out_channels=256,
    scale_factors=(2.0, 1.0, 0.5),  # strides 8, 16, 32, and p6 (64) from the max pool
    top_block=L(LastLevelMaxPool)(),
    norm="LN",
)
model.neck = L(ChannelMapper)(
    input_shapes={name: ShapeSpec(channels=256) for name in _levels},
    in_features=_levels,
    out_channels=256,
    num_outs=4,
    kernel_size=1,
    norm_layer=L(torch.nn.GroupNorm)(num_groups=32, num_channels=256),
)
_apply_encoder(_enc, model, dataloader, optimizer, layers=(-1,))
model.num_classes = 1

dataloader.train.total_batch_size = 16

lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_12ep
train = get_config("common/train.py").train

optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
train.max_iter = 90000
train.output_dir = "./output/detrex_dino/dino_dinov2_vitb14"
train.clip_grad.enabled = True
train.clip_grad.params.max_norm = 0.1
train.clip_grad.params.norm_type = 2
train.device = "cuda" if torch.cuda.is_available() else "cpu"
model.device = train.device
