"""Mask R-CNN with a DINOv2 ViT-B/14 backbone (ViTDet recipe), RGB imagery.

Weights: the official DINOv2 checkpoint, e.g.
https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth, saved
where ``model.backbone.net.weights`` points (or override it on the command line). The
14-pixel patch kernel is resampled to 16 pixels on load so the pyramid gets strides
4..64; the position table is interpolated to the input size at run time.

Data: three bands ``red, green, blue`` on a 0-255 scale (the ImageNet statistics below).
Register ``geo_det_train`` / ``geo_det_val`` (see ``configs/common/data/geo_detection.py``)
and set ``model.roi_heads.num_classes`` to your number of classes::

    python tools/train_net.py --config-file configs/dino_v2/mask_rcnn_vitb14.py \
        model.roi_heads.num_classes=3 model.backbone.net.weights=/data/dinov2_vitb14_pretrain.pth
"""
from ..common.data.geo_detection import dataloader
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

model.backbone.net.encoder = "dinov2_vitb14"
model.backbone.net.weights = "checkpoints/dinov2_vitb14_pretrain.pth"
model.backbone.net.encoder_kwargs = dict(patch_size=16, bands=["red", "green", "blue"])
model.backbone.net.drop_path_rate = 0.1
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.roi_heads.num_classes = 1

dataloader.train.mapper.bands = ["red", "green", "blue"]
dataloader.train.total_batch_size = 16

optimizer.lr = 1e-4
optimizer.weight_decay = 0.1
optimizer.params.lr_decay_rate = 0.7

train.output_dir = "./output/dino_v2/mask_rcnn_vitb14"
train.max_iter = 20000
