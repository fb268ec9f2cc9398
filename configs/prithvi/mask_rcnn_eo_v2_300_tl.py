"""Mask R-CNN with Prithvi-EO-2.0-300M-TL on 4-date HLS time series.

Weights: ``Prithvi_EO_V2_300M_TL.pt`` from the Hugging Face repository
``ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL``, saved where
``model.backbone.net.weights`` points.

Data: six HLS bands (``blue, green, red, nir_narrow, swir_1, swir_2``, reflectance x 10000,
the Prithvi-EO-2.0 statistics below) and four dates per sample: images ``(6, 4, H, W)``.
Register ``geo_det_train`` / ``geo_det_val`` with one GeoTIFF per date
(``configs/common/data/geo_detection.py``) and set ``model.roi_heads.num_classes``. The
time/location encodings read the samples' timestamps and centre coordinates; without them
they are skipped (then set ``train.ddp.find_unused_parameters=True`` for multi-GPU runs).

The four dates' feature maps are averaged (``temporal_fold="mean"``) before the pyramid:
objects are assumed not to move between dates. Use ``"concat"`` to keep the dates apart.
"""
from ..common.data.geo_detection import dataloader
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_hls = ["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"]

model.backbone.net.encoder = "prithvi_eo_v2_300_tl"
model.backbone.net.weights = "checkpoints/Prithvi_EO_V2_300M_TL.pt"
model.backbone.net.encoder_kwargs = dict(num_frames=4, bands=_hls)
model.backbone.net.temporal_fold = "mean"
model.backbone.net.drop_path_rate = 0.1
model.pixel_mean = [1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0]
model.pixel_std = [2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0]
model.roi_heads.num_classes = 1

dataloader.train.mapper.bands = _hls
dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1
optimizer.params.lr_decay_rate = 0.8

train.output_dir = "./output/prithvi/mask_rcnn_eo_v2_300_tl"
train.max_iter = 20000
