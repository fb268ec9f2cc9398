"""Mask R-CNN with Clay v1.5 (ViT-L, 8-pixel patches) on Sentinel-2 L2A.

Weights: ``v1.5/clay-v1.5.ckpt`` from the Hugging Face repository ``made-with-clay/Clay``,
saved where ``model.backbone.net.weights`` points.

Data: the ten Sentinel-2 L2A bands Clay was trained with (names below; reflectance
x 10000, Clay's statistics). Clay's patch embedding is built from the band wavelengths,
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
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_s2 = ["blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22"]

model.backbone.net.encoder = "clay_v1_5_large"
model.backbone.net.weights = "checkpoints/clay-v1.5.ckpt"
model.backbone.net.encoder_kwargs = dict(sensor="sentinel-2-l2a", bands=_s2, gsd=10.0)
model.backbone.net.drop_path_rate = 0.1
model.backbone.scale_factors = (2.0, 1.0, 0.5)
model.backbone.top_block = L(LastLevelP6P7)(in_channels=256, out_channels=256, in_feature="p4")
model.pixel_mean = [1105.0, 1355.0, 1552.0, 1887.0, 2422.0, 2630.0, 2743.0, 2785.0, 2388.0, 1835.0]
model.pixel_std = [1809.0, 1757.0, 1888.0, 1870.0, 1732.0, 1697.0, 1742.0, 1648.0, 1470.0, 1379.0]
model.roi_heads.num_classes = 1

dataloader.train.mapper.bands = _s2
dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1
optimizer.params.lr_decay_rate = 0.8

train.output_dir = "./output/clay/mask_rcnn_v1_5_large"
train.max_iter = 20000
