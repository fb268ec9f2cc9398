"""UperNet with the SSL4EO-S12 data2vec ViT-S/16 (BEiT-style) on 13-band Sentinel-2 L1C.

Everything but the head is ``semantic_fpn_vits16_data2vec.py`` (taps 3/5/7/11, the
``out_indices`` of the BEiT UperNet config in SSL4EO-S12's data2vec segmentation code; the
weights are downloaded by hand from Google Drive: set
``model.backbone.net.weights=/path/to/backbone.pth``); the head is ``UperNetHead``
(``configs/common/models/upernet_geo.py``).
"""
from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_vits16_data2vec import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/ssl4eo/upernet_vits16_data2vec"
