"""UperNet with Clay v1.5 (ViT-L, 8-pixel patches) on Sentinel-2 L2A.

Weights, bands and statistics as ``semantic_fpn_v1_5_large.py``, but with four taps: blocks
5, 11, 17, 23 resampled from stride 8 to strides 4, 8, 16, 32 (``MultiLayerPyramid`` with
``scale_factors=(2, 1, 0.5, 0.25)``), fused by ``UperNetHead``
(``configs/common/models/upernet_geo.py``).
"""
from detectron2.config import LazyCall as L

from d2geo.modeling import MultiLayerPyramid

from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_v1_5_large import dataloader, lr_multiplier, model, optimizer, train

model.backbone = L(MultiLayerPyramid)(
    net=model.backbone.net,
    out_channels=256,
    scale_factors=(2.0, 1.0, 0.5, 0.25),
    top_block=None,
    norm="LN",
)
model.backbone.net.layers = (5, 11, 17, 23)
model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/clay/upernet_v1_5_large"
