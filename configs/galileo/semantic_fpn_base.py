"""Semantic FPN with Galileo base (Sentinel-2 L1C + Sentinel-1 GRD time series, 8-pixel patches).

Weights by name (``pretrained=True``, see ``configs/common/encoders/galileo.py``):
``models/base/encoder.pt`` of ``nasaharvest/galileo`` on the Hugging Face Hub, at a pinned commit.

Data: one GeoTIFF per modality on one grid (``{"S2L1C": ..., "S1GRD": ...}`` images, twelve
channels) with their ``timestamps`` and one label map per sample, registered as ``geo_seg_train`` /
``geo_seg_val`` (``configs/common/data/geo_semseg.py``); set ``model.sem_seg_head.num_classes``.
Blocks 2, 5, 8, 11 are tapped (channel groups and dates averaged); at stride 8 the pyramid
resamples them to strides 4, 8, 16, 32.
"""
from ..common.data.geo_semseg import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.galileo import encoder as _enc
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer, layers=_enc.taps)
model.backbone.scale_factors = (2.0, 1.0, 0.5, 0.25)
model.sem_seg_head.num_classes = 10

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4

train.output_dir = "./output/galileo/semantic_fpn_base"
train.max_iter = 20000
