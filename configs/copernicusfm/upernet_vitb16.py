"""UperNet with the Copernicus-FM ViT-B/16, the decoder Copernicus-FM's own segmentation
benchmarks (Copernicus-Bench) put on its four raw taps.

Everything but the head is ``semantic_fpn_vitb16.py`` (published weights by name, 13 Sentinel-2
L1C bands, taps 3/5/7/11 without the final norm); the head is ``UperNetHead``
(``configs/common/models/upernet_geo.py``).
"""
from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_vitb16 import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/copernicusfm/upernet_vitb16"
