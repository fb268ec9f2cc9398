"""Mask R-CNN with TerraMind 1.0 base on Sentinel-2 L2A + Sentinel-1 RTC + DEM (ViTDet recipe).

Weights by name (``pretrained=True``, see ``configs/common/encoders/terramind.py``):
``TerraMind_v1_base.pt`` of ``ibm-esa-geospatial/TerraMind-1.0-base`` on the Hugging Face Hub,
downloaded once into the Hub cache.

Data: one GeoTIFF per modality on one grid; register ``geo_det_train`` / ``geo_det_val``
(``configs/common/data/geo_detection.py``) with ``{"S2L2A": ..., "S1RTC": ..., "DEM": ...}``
images (``d2geo.data.datasets``), and set ``model.roi_heads.num_classes``. The last block's
tokens, averaged over the modalities, feed a simple feature pyramid.
"""
from ..common.data.geo_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.terramind import encoder as _enc
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.roi_heads.num_classes = 1

dataloader.train.total_batch_size = 16

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/terramind/mask_rcnn_v1_base"
train.max_iter = 20000
