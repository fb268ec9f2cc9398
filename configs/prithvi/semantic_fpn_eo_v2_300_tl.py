"""Semantic FPN with Prithvi-EO-2.0-300M-TL on 4-date HLS time series (e.g. crop types).

Weights: ``Prithvi_EO_V2_300M_TL.pt`` from the Hugging Face repository
``ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL``, saved where
``model.backbone.net.weights`` points.

Data: six HLS bands (``blue, green, red, nir_narrow, swir_1, swir_2``, reflectance x 10000)
and four dates per sample: images ``(6, 4, H, W)`` with one label map per sample.
Register ``geo_seg_train`` / ``geo_seg_val`` with one GeoTIFF per date
(``configs/common/data/geo_semseg.py``) and set ``model.sem_seg_head.num_classes``.

Four blocks are tapped; each tap's dates are stacked into channels
(``temporal_fold="concat"``, 4 x 1024 channels, time-major as terratorch does) so the
pyramid sees how the surface changes over the season.
"""
from ..common.data.geo_semseg import dataloader
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_hls = ["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"]

model.backbone.net.encoder = "prithvi_eo_v2_300_tl"
model.backbone.net.weights = "checkpoints/Prithvi_EO_V2_300M_TL.pt"
model.backbone.net.encoder_kwargs = dict(num_frames=4, bands=_hls)
model.backbone.net.layers = (5, 11, 17, 23)
model.backbone.net.temporal_fold = "concat"
model.backbone.net.drop_path_rate = 0.1
model.pixel_mean = [1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0]
model.pixel_std = [2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0]
model.sem_seg_head.num_classes = 2

dataloader.train.mapper.bands = _hls
dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.params.lr_decay_rate = 0.8

train.output_dir = "./output/prithvi/semantic_fpn_eo_v2_300_tl"
train.max_iter = 20000
