"""Semantic FPN with OlmoEarth v1 Base on Sentinel-2 L2A + Sentinel-1 RTC in one encoder: four taps,
multi-layer pyramid.

Encoder, statistics and license: ``configs/common/encoders/olmoearth_multimodal.py``. Data: one GeoTIFF per
modality on one grid, registered as ``{modality: path}`` images, e.g.::

    register_geo_semseg("geo_seg_train", [({"S2L2A": s2, "S1RTC": s1}, label), ...], stuff_classes=[...])

The mapper stacks the files (``d2geo.data.geotiff.read_modalities``) into the 14 channels
``S2L2A:B01 .. S2L2A:B12, S1RTC:VV, S1RTC:VH``. At stride 8 the pyramid resamples the taps to strides
4, 8, 16, 32.
"""
from ..common.data.geo_semseg import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.olmoearth_multimodal import encoder as _enc
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer, layers=_enc.taps)
model.backbone.scale_factors = (2.0, 1.0, 0.5, 0.25)
model.sem_seg_head.num_classes = 10

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4

train.output_dir = "./output/olmoearth/semantic_fpn_v1_base_multimodal"
train.max_iter = 20000
