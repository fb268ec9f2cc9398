"""UperNet with a DINOv2 ViT-B/14 backbone (four taps, multi-layer pyramid), RGB.

Everything but the head is ``semantic_fpn_vitb14.py`` (weights, bands, statistics, data,
schedule); the head is ``UperNetHead`` (``configs/common/models/upernet_geo.py``)::

    python tools/train_net.py --config-file configs/dinov2/upernet_vitb14.py \
        model.sem_seg_head.num_classes=5 model.backbone.net.weights=/data/dinov2_vitb14_pretrain.pth
"""
from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_vitb14 import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/dinov2/upernet_vitb14"
