"""Semantic FPN with Clay v1.5 (ViT-L, 8-pixel patches) on Sentinel-2 L2A.

Weights by name (``pretrained=True``, see ``configs/common/encoders/clay.py``):
``v1.5/clay-v1.5.ckpt`` of ``made-with-clay/Clay`` on the Hugging Face Hub.

Data: the ten Sentinel-2 L2A bands Clay was trained with (see
``clay/mask_rcnn_v1_5_large.py`` for other band sets). Register ``geo_seg_train`` /
``geo_seg_val`` (``configs/common/data/geo_semseg.py``) and set
``model.sem_seg_head.num_classes``.

With 8-pixel patches the last block is resampled to strides 4, 8, 16 (p2..p4) by
SimpleFeaturePyramid; the head fuses them at stride 4.
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from d2geo.modeling import SimpleFeaturePyramid

from ..common.data.geo_semseg import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.clay import encoder as _enc
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

model.backbone = L(SimpleFeaturePyramid)(
    net=model.backbone.net,
    out_channels=256,
    scale_factors=(2.0, 1.0, 0.5),
    top_block=None,
    norm="LN",
)
_apply_encoder(_enc, model, dataloader, optimizer, layers=(-1,))
model.sem_seg_head.input_shape = {
    name: L(ShapeSpec)(stride=stride, channels="${....backbone.out_channels}")
    for name, stride in (("p2", 4), ("p3", 8), ("p4", 16))
}
model.sem_seg_head.num_classes = 2

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4

train.output_dir = "./output/clay/semantic_fpn_v1_5_large"
train.max_iter = 20000
