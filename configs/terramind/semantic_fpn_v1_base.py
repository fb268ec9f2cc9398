"""Semantic FPN with TerraMind 1.0 base on Sentinel-2 L2A + Sentinel-1 RTC + DEM (e.g. land cover).

Weights by name (``pretrained=True``, see ``configs/common/encoders/terramind.py``):
``TerraMind_v1_base.pt`` of ``ibm-esa-geospatial/TerraMind-1.0-base`` on the Hugging Face Hub,
downloaded once into the Hub cache.

Data: one GeoTIFF per modality on one grid, registered as ``{modality: path}`` images, e.g.::

    register_geo_semseg("geo_seg_train", [({"S2L2A": s2, "S1RTC": s1, "DEM": dem}, label), ...],
                        stuff_classes=[...])

The mapper stacks the files (``d2geo.data.geotiff.read_modalities``) into the 15 channels
``S2L2A:B01 .. S2L2A:B12, S1RTC:VV, S1RTC:VH, DEM:DEM`` the encoder takes. Four blocks are
tapped; each block's tokens are averaged over the three modalities (terratorch's default).
"""
from ..common.data.geo_semseg import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.terramind import encoder as _enc
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer, layers=_enc.taps)
model.sem_seg_head.num_classes = 10

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4

train.output_dir = "./output/terramind/semantic_fpn_v1_base"
train.max_iter = 20000
