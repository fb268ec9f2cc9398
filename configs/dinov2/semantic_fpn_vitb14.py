"""Semantic FPN with a DINOv2 ViT-B/14 backbone (four taps, multi-layer pyramid), RGB.

Weights: Meta's official DINOv2 checkpoint by name (``pretrained=True``, see
``configs/common/encoders/dinov2.py``). The patch kernel is resampled to 16 pixels on
load, so the pyramid levels are p2..p5.

Data: ``red, green, blue`` on a 0-255 scale. Register ``geo_seg_train`` / ``geo_seg_val``
(see ``configs/common/data/geo_semseg.py``) and set ``model.sem_seg_head.num_classes``::

    python tools/train_net.py --config-file configs/dinov2/semantic_fpn_vitb14.py \
        model.sem_seg_head.num_classes=5
"""
from ..common.data.geo_semseg import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.dinov2 import encoder as _enc
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer, layers=_enc.taps)
model.sem_seg_head.num_classes = 2

dataloader.train.total_batch_size = 16

optimizer.lr = 1e-4

train.output_dir = "./output/dinov2/semantic_fpn_vitb14"
train.max_iter = 20000
