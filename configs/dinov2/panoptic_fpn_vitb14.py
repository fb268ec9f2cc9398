"""Panoptic FPN with a DINOv2 ViT-B/14 backbone (ViTDet recipe), RGB imagery.

Weights: Meta's official DINOv2 checkpoint, loaded by name (``pretrained=True``; see
``configs/common/encoders/dinov2.py``).

Data: three bands ``red, green, blue`` on a 0-255 scale with a class raster plus an
instance-id raster (or a stuff raster plus parcel polygons) per image: register
``geo_pan_train`` / ``geo_pan_val`` with ``d2geo.data.panoptic.register_geo_panoptic``
(``configs/common/data/geo_panoptic.py``) and set the class counts::

    python tools/train_net.py --config-file configs/dinov2/panoptic_fpn_vitb14.py \
        model.roi_heads.num_classes=3 model.sem_seg_head.num_classes=5
"""
from ..common.data.geo_panoptic import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.dinov2 import encoder as _enc
from ..common.models.panoptic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.roi_heads.num_classes = 1
model.sem_seg_head.num_classes = 2
model.combine_stuff_area_thresh = 1024

dataloader.train.total_batch_size = 16

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/dinov2/panoptic_fpn_vitb14"
train.max_iter = 20000
