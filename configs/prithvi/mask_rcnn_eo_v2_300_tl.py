"""Mask R-CNN with Prithvi-EO-2.0-300M-TL on 4-date HLS time series.

Weights by name (``pretrained=True``, see ``configs/common/encoders/prithvi.py``):
``Prithvi_EO_V2_300M_TL.pt`` of ``ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL`` on the Hugging
Face Hub, downloaded once into the Hub cache.

Data: six HLS bands (``blue, green, red, nir_narrow, swir_1, swir_2``, reflectance x 10000,
the Prithvi-EO-2.0 statistics of the pretrained table) and four dates per sample: images ``(6, 4, H, W)``.
Register ``geo_det_train`` / ``geo_det_val`` with one GeoTIFF per date
(``configs/common/data/geo_detection.py``) and set ``model.roi_heads.num_classes``. The
time/location encodings read the samples' timestamps and centre coordinates; without them
they are skipped (then set ``train.ddp.find_unused_parameters=True`` for multi-GPU runs).

The four dates' feature maps are averaged (``temporal_fold="mean"``) before the pyramid:
objects are assumed not to move between dates. Use ``"concat"`` to keep the dates apart.
"""
from ..common.data.geo_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.prithvi import encoder as _enc
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.backbone.net.temporal_fold = "mean"
model.roi_heads.num_classes = 1

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/prithvi/mask_rcnn_eo_v2_300_tl"
train.max_iter = 20000
