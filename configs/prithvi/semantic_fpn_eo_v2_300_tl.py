"""Semantic FPN with Prithvi-EO-2.0-300M-TL on 4-date HLS time series (e.g. crop types).

Weights by name (``pretrained=True``, see ``configs/common/encoders/prithvi.py``):
``Prithvi_EO_V2_300M_TL.pt`` of ``ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL`` on the Hugging
Face Hub, downloaded once into the Hub cache.

Data: six HLS bands (``blue, green, red, nir_narrow, swir_1, swir_2``, reflectance x 10000)
and four dates per sample: images ``(6, 4, H, W)`` with one label map per sample.
Register ``geo_seg_train`` / ``geo_seg_val`` with one GeoTIFF per date
(``configs/common/data/geo_semseg.py``) and set ``model.sem_seg_head.num_classes``.

Four blocks are tapped; each tap's dates are stacked into channels
(``temporal_fold="concat"``, 4 x 1024 channels, time-major as terratorch does) so the
pyramid sees how the surface changes over the season.
"""
from ..common.data.geo_semseg import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.prithvi import encoder as _enc
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer, layers=_enc.taps)
model.backbone.net.temporal_fold = "concat"
model.sem_seg_head.num_classes = 2

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4

train.output_dir = "./output/prithvi/semantic_fpn_eo_v2_300_tl"
train.max_iter = 20000
