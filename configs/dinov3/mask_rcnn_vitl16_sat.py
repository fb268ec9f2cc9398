"""Mask R-CNN with DINOv3 ViT-L/16 pretrained on satellite imagery (SAT-493M), RGB.

Weights by name (``pretrained=True``, see ``configs/common/encoders/dinov3.py``): timm's
copy on the Hugging Face Hub, no signed link needed. Meta's own file loads too:
``model.backbone.net.weights=/path/to/dinov3_vitl16_pretrain_sat493m-*.pth``.

Data: ``red, green, blue`` on a 0-255 scale, normalized with the SAT-493M statistics.
Register ``geo_det_train`` / ``geo_det_val`` (``configs/common/data/geo_detection.py``) and
set ``model.roi_heads.num_classes``.
"""
from ..common.data.geo_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.dinov3 import encoder as _enc
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.roi_heads.num_classes = 1

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/dinov3/mask_rcnn_vitl16_sat"
train.max_iter = 30000
