"""Mask R-CNN with a DINOv2 ViT-B/14 backbone (ViTDet recipe), RGB imagery.

Weights: Meta's official DINOv2 checkpoint, loaded by name (``pretrained=True``; see
``configs/common/encoders/dinov2.py``): downloaded once into torch.hub's cache. To use a
copy you keep, pass ``model.backbone.net.weights=/path/to/dinov2_vitb14_pretrain.pth``.

Data: three bands ``red, green, blue`` on a 0-255 scale (the statistics of the weights).
Register ``geo_det_train`` / ``geo_det_val`` (see ``configs/common/data/geo_detection.py``)
and set ``model.roi_heads.num_classes`` to your number of classes::

    python tools/train_net.py --config-file configs/dinov2/mask_rcnn_vitb14.py \
        model.roi_heads.num_classes=3
"""
from ..common.data.geo_detection import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.dinov2 import encoder as _enc
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer)
model.roi_heads.num_classes = 1

dataloader.train.total_batch_size = 16

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1

train.output_dir = "./output/dinov2/mask_rcnn_vitb14"
train.max_iter = 20000
