"""UperNet with the Scale-MAE ViT-L/16 (fMoW RGB), on the taps PANGAEA's Scale-MAE encoder gives
its UperNet: blocks 7, 11, 15, 23.

Weights, bands, input scaling and the per-batch ``gsd`` as ``semantic_fpn_vitl16.py`` (whose
pyramid taps the evenly spaced 5, 11, 17, 23); the head is ``UperNetHead``
(``configs/common/models/upernet_geo.py``).
"""
from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_vitl16 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.layers = (7, 11, 15, 23)
model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/scale_mae/upernet_vitl16"
