"""Quickstart: Semantic FPN with a tiny ViT on d2geo's synthetic 6-band GeoTIFFs.

Runs on 2 idle CPU cores in about 2.5 minutes (README, Quickstart), downloads nothing::

    python tools/train_net.py --config-file configs/quickstart/semantic_fpn_tiny.py

The first run writes the dataset (240 GeoTIFF tiles of 96 x 96 px, a few seconds) to
``$D2GEO_DATASETS/d2geo_synth`` (default ``./datasets/d2geo_synth``); see
``d2geo.data.synthetic``. Classes: background, water, field, building; the final
evaluation prints mIoU on the val split (75.4; all-background scores 17.5, a per-pixel
spectral MLP 59.5). The encoder is a DINOv2-architecture ViT shrunk to 4 blocks of width 96
with 8-pixel patches, trained from scratch. For speed on the CPU the pyramid is the
single-tap SimpleFeaturePyramid (strides 4, 8, 16); the family configs use the four-tap
MultiLayerPyramid.
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from d2geo.data.synthetic import SYNTH_BANDS, SYNTH_STUFF_CLASSES
from d2geo.modeling import SimpleFeaturePyramid

from ..common.data.synthetic import seg_dataloader as dataloader
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import cosine as lr_multiplier
from ..common.train import train

# per-band mean and std of the train split, in reflectance as the mapper reads it
# (d2geo.data.synthetic.synthetic_pixel_stats(); tests/configs/test_configs.py checks them)
_mean = [0.104, 0.1243, 0.1189, 0.2412, 0.2238, 0.1556]
_std = [0.0724, 0.0695, 0.0773, 0.1163, 0.1068, 0.0857]

model.backbone = L(SimpleFeaturePyramid)(
    net=model.backbone.net,
    out_channels=96,
    scale_factors=(2.0, 1.0, 0.5),  # patch 8 -> strides 4, 8, 16 (p2..p4)
    top_block=None,
    norm="LN",
)
model.backbone.net.encoder = "dinov2_vits14"
model.backbone.net.encoder_kwargs = dict(
    embed_dim=96, depth=4, num_heads=3, patch_size=8, img_size=96, bands=list(SYNTH_BANDS)
)
model.backbone.net.layers = (-1,)
model.backbone.net.drop_path_rate = 0.0
model.pixel_mean = _mean
model.pixel_std = _std
model.sem_seg_head.input_shape = {
    name: L(ShapeSpec)(stride=stride, channels="${....backbone.out_channels}")
    for name, stride in (("p2", 4), ("p3", 8), ("p4", 16))
}
model.sem_seg_head.num_classes = len(SYNTH_STUFF_CLASSES)
model.sem_seg_head.conv_dims = 64

optimizer.lr = 2e-3
optimizer.params.lr_decay_rate = 1.0  # trained from scratch: no layer-wise decay

train.output_dir = "./output/quickstart/semantic_fpn_tiny"
train.max_iter = 1500
train.eval_period = 1500
train.log_period = 20  # a progress line with the ETA every 20 iterations
train.checkpointer = dict(period=500, max_to_keep=2)
train.seed = 0
# one torch thread: for a model this small a second one gains ~25% on an idle CPU and can
# lose 10x on a busy one (train_net.py; OMP_NUM_THREADS, if set, takes precedence)
train.cpu_threads = 1
