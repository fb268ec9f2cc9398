"""Mask R-CNN with the Scale-MAE ViT-L/16 (fMoW RGB), ViTDet style.

Weights and input scaling: ``configs/common/encoders/scale_mae.py``. Data: ``red, green,
blue`` on a 0-255 scale, with a ground sample distance per image (``metadata["gsd"]``,
metres per pixel; the GeoTIFF reader supplies it, and a batch without it is refused): the
position table is scaled by it, so aerial and satellite tiles of different resolutions
get consistent positions. Register ``geo_det_train`` / ``geo_det_val``
(``configs/common/data/geo_detection.py``) and set ``model.roi_heads.num_classes``.
"""
from ..common.data.geo_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.scale_mae import encoder as _enc
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.roi_heads.num_classes = 1

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/scale_mae/mask_rcnn_vitl16"
train.max_iter = 20000
