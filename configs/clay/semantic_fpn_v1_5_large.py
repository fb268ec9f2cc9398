"""Semantic FPN with Clay v1.5 (ViT-L, 8-pixel patches) on Sentinel-2 L2A.

Weights: ``v1.5/clay-v1.5.ckpt`` from the Hugging Face repository ``made-with-clay/Clay``,
saved where ``model.backbone.net.weights`` points.

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
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_s2 = ["blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22"]

model.backbone = L(SimpleFeaturePyramid)(
    net=model.backbone.net,
    out_channels=256,
    scale_factors=(2.0, 1.0, 0.5),
    top_block=None,
    norm="LN",
)
model.backbone.net.encoder = "clay_v1_5_large"
model.backbone.net.weights = "checkpoints/clay-v1.5.ckpt"
model.backbone.net.encoder_kwargs = dict(sensor="sentinel-2-l2a", bands=_s2, gsd=10.0)
model.backbone.net.layers = (-1,)
model.backbone.net.drop_path_rate = 0.1
model.pixel_mean = [1105.0, 1355.0, 1552.0, 1887.0, 2422.0, 2630.0, 2743.0, 2785.0, 2388.0, 1835.0]
model.pixel_std = [1809.0, 1757.0, 1888.0, 1870.0, 1732.0, 1697.0, 1742.0, 1648.0, 1470.0, 1379.0]
model.sem_seg_head.input_shape = {
    name: L(ShapeSpec)(stride=stride, channels="${....backbone.out_channels}")
    for name, stride in (("p2", 4), ("p3", 8), ("p4", 16))
}
model.sem_seg_head.num_classes = 2

dataloader.train.mapper.bands = _s2
dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.params.lr_decay_rate = 0.8

train.output_dir = "./output/clay/semantic_fpn_v1_5_large"
train.max_iter = 20000
