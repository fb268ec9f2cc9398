"""UperNet with the SSL4EO-S12 ViT-S/16 (DINO; MAE, MoCo-v3 and FG-MAE weights by
``model.backbone.net.encoder``) on 13-band Sentinel-2 L1C.

Everything but the head is ``semantic_fpn_vits16.py`` (published weights by name, taps
3/5/7/11, the blocks SSL4EO-S12's own UperNet segmentation config taps on its data2vec
ViT-S/16); the head is ``UperNetHead`` (``configs/common/models/upernet_geo.py``).
"""
from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_vits16 import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/ssl4eo/upernet_vits16"
