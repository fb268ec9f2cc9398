"""Panoptic FPN with Prithvi-EO-2.0-300M-TL on 4-date HLS time series (fields and parcels).

Weights by name (``pretrained=True``, see ``configs/common/encoders/prithvi.py``):
``Prithvi_EO_V2_300M_TL.pt`` of ``ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL`` on the Hugging
Face Hub, downloaded once into the Hub cache.

Data: six HLS bands and four dates per sample (images ``(6, 4, H, W)``), with a class raster
plus an instance-id raster, or a stuff raster plus parcel polygons, per sample: register
``geo_pan_train`` / ``geo_pan_val`` with ``d2geo.data.panoptic.register_geo_panoptic``
(``configs/common/data/geo_panoptic.py``), one GeoTIFF per date, and set
``model.roi_heads.num_classes`` (thing classes, e.g. crop types) and
``model.sem_seg_head.num_classes`` (stuff classes + 1 for "things").

The dates of the last block's maps are stacked into channels (``temporal_fold="concat"``,
4 x 1024 channels) before the pyramid, so the heads see each field's season (crop types
differ by phenology more than by any one date). ``mean`` / ``max`` / ``attention`` fold the
dates into 1024 channels instead.
"""
from ..common.data.geo_panoptic import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.prithvi import encoder as _enc
from ..common.models.panoptic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.backbone.net.temporal_fold = "concat"
model.roi_heads.num_classes = 1
model.sem_seg_head.num_classes = 2
# PanopticFPN's COCO default (4096 px) is for 800 px images: 224 px tiles of 30 m pixels
model.combine_stuff_area_thresh = 256

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/prithvi/panoptic_fpn_eo_v2_300_tl"
train.max_iter = 20000
