"""Quickstart: bi-temporal change detection with a tiny Prithvi-architecture encoder.

Both dates go through the encoder as one ``(6, 2, H, W)`` series (Prithvi's 3D patch
embedding with ``tubelet_size=1`` keeps one token map per date); the backbone's
``temporal_fold="diff"`` turns each tap into the difference *second date minus first date*,
and a semantic FPN predicts ``no_change`` / ``change`` at every pixel::

    python tools/train_net.py --config-file configs/quickstart/change_diff_tiny.py

Compare ``model.backbone.net.temporal_fold=concat`` (both dates stacked into channels) or
``attention`` (learned pooling); ``benchmarks/heads.py`` measures them (docs/heads.md).
Data: ``configs/common/data/synthetic_change.py``. The encoder is 4 blocks of width 96 with
8-pixel patches, trained from scratch; the mean and std are the seg quickstart's (same
generator and bands).
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from d2geo.data.synthetic import SYNTH_BANDS
from d2geo.data.synthetic.change import CHANGE_CLASSES
from d2geo.modeling import SimpleFeaturePyramid

from ..common.data.synthetic_change import dataloader
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import cosine as lr_multiplier
from ..common.train import train
from .semantic_fpn_tiny import _mean, _std

model.backbone = L(SimpleFeaturePyramid)(
    net=model.backbone.net,
    out_channels=96,
    scale_factors=(2.0, 1.0, 0.5),  # patch 8 -> strides 4, 8, 16 (p2..p4)
    top_block=None,
    norm="LN",
)
model.backbone.net.encoder = "prithvi_eo_v2_300"
model.backbone.net.encoder_kwargs = dict(
    embed_dim=96, depth=4, num_heads=3, patch_size=8, img_size=64, num_frames=2, bands=list(SYNTH_BANDS)
)
model.backbone.net.layers = (-1,)
model.backbone.net.temporal_fold = "diff"
model.backbone.net.drop_path_rate = 0.0
model.pixel_mean = _mean
model.pixel_std = _std
model.sem_seg_head.input_shape = {
    name: L(ShapeSpec)(stride=stride, channels="${....backbone.out_channels}")
    for name, stride in (("p2", 4), ("p3", 8), ("p4", 16))
}
model.sem_seg_head.num_classes = len(CHANGE_CLASSES)
model.sem_seg_head.conv_dims = 64

dataloader.train.mapper.bands = list(SYNTH_BANDS)

optimizer.lr = 2e-3
optimizer.params.lr_decay_rate = 1.0

train.output_dir = "./output/quickstart/change_diff_tiny"
train.max_iter = 1500
train.eval_period = 1500
train.log_period = 20
train.checkpointer = dict(period=500, max_to_keep=2)
train.seed = 0
train.cpu_threads = 1
