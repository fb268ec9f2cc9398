"""Quickstart: Panoptic FPN with a tiny ViT on synthetic crop fields over stuff classes.

Each field is an object (its crop, wheat / maize / rapeseed, its class) over the stuff
classes grassland, forest, water and urban; trains and evaluates in 3.7 CPU-minutes (one torch
thread: about 4 minutes on an idle core) and downloads nothing::

    python tools/train_net.py --config-file configs/quickstart/panoptic_tiny.py

The first run writes the dataset (200 GeoTIFF tiles of 96 x 96 px with class and field-id
rasters, a few seconds) to ``$D2GEO_DATASETS/d2geo_synth`` (default ``./datasets/d2geo_synth``);
see ``d2geo.data.synthetic.panoptic``. The final evaluation prints panoptic quality (PQ,
SQ, RQ; things, stuff and per class) on the val split: PQ 81.2 (things 80.8, stuff 81.4;
docs/heads.md). The
encoder is a DINOv2-architecture ViT shrunk to 4 blocks of width 96 with 8-pixel patches
over the six HLS bands, trained from scratch. Needs torchmetrics
(``pip install 'd2geo[panoptic]'``).
"""
from d2geo.data.synthetic.panoptic import PANOPTIC_STUFF_CLASSES, PANOPTIC_THING_CLASSES

from ..common.data.synthetic_panoptic import dataloader
from ..common.models.panoptic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import cosine as lr_multiplier
from ..common.train import train
from .mask_rcnn_tiny import _dim
from .mask_rcnn_tiny import model as _tiny_model

# per-band mean and std of the train split, in reflectance as the mapper reads it
# (tests/configs/test_panoptic_configs.py checks them)
_mean = [0.0694, 0.1001, 0.0798, 0.2857, 0.2312, 0.1309]
_std = [0.0245, 0.0237, 0.0276, 0.076, 0.0612, 0.0406]

# the chip quickstart's tiny ViT and pyramid (patch 8 -> strides 4, 8, 16: p2..p4)
model.backbone = _tiny_model.backbone
model.pixel_mean = _mean
model.pixel_std = _std

# fields of 14-40 px on 96 px tiles, and lighter heads for the CPU
_levels, _scales = ["p2", "p3", "p4"], (1.0 / 4, 1.0 / 8, 1.0 / 16)
model.proposal_generator.head.in_channels = _dim
model.proposal_generator.in_features = _levels
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64]]
model.proposal_generator.anchor_generator.strides = [4, 8, 16]
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (500, 100)
model.roi_heads.box_in_features = _levels
model.roi_heads.box_pooler.scales = _scales
model.roi_heads.mask_in_features = _levels
model.roi_heads.mask_pooler.scales = _scales
model.roi_heads.num_classes = len(PANOPTIC_THING_CLASSES)
model.roi_heads.batch_size_per_image = 64
model.roi_heads.box_head.input_shape.channels = _dim
model.roi_heads.box_head.conv_dims = []  # 2fc box head
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.box_predictor.input_shape.channels = 256
model.roi_heads.mask_head.input_shape.channels = _dim
model.roi_heads.mask_head.conv_dims = [64, 64]  # one conv, then the deconv
model.sem_seg_head.input_shape = {k: v for k, v in model.sem_seg_head.input_shape.items() if k in _levels}
model.sem_seg_head.num_classes = len(PANOPTIC_STUFF_CLASSES) + 1  # + "things"
model.sem_seg_head.conv_dims = 64
# 96 px tiles: a stuff region counts from 64 px (detectron2's 4096 is for COCO images)
model.combine_stuff_area_thresh = 64

optimizer.lr = 4e-4
optimizer.params.lr_decay_rate = 1.0  # trained from scratch: no layer-wise decay

train.output_dir = "./output/quickstart/panoptic_tiny"
train.max_iter = 600
train.eval_period = 600
train.log_period = 20
train.checkpointer = dict(period=600, max_to_keep=2)
train.seed = 0
# one torch thread: for a model this small a second one gains ~25% on an idle CPU and can
# lose 10x on a busy one (train_net.py; OMP_NUM_THREADS, if set, takes precedence)
train.cpu_threads = 1
