"""Scene quickstart: Mask R-CNN with a tiny ViT trained from whole scenes and building polygons.

The data are two synthetic 4096 x 4096 px COGs in UTM zones 31N and 32N with the buildings
as polygons in EPSG:4326 (GeoJSON); windows of 96 px are drawn at random from the training
blocks of a spatial split (a quarter of them placed on buildings; a building cut by the
window edge is kept when at least half of it is inside, else dropped) and box/mask AP is
measured on grid windows of the held-out blocks (configs/common/data/synthetic_scenes.py).
Generated on first use (about a minute), downloads nothing; trains on a CPU::

    python tools/train_net.py --config-file configs/quickstart/scenes_instance_tiny.py

The model is the one of ``mask_rcnn_tiny.py`` (a DINOv2-architecture ViT of 4 blocks of
width 96, 8-pixel patches, trained from scratch).
"""
from d2geo.data.synthetic import SYNTH_BANDS, SYNTH_THING_CLASSES

from ..common.data.synthetic_scenes import det_dataloader as dataloader
from ..common.models.mask_rcnn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import cosine as lr_multiplier
from ..common.train import train

# per-band mean and std of the synthetic generator's tiles (those of the chip quickstart: the
# scenes are made of the same generator's tiles)
_mean = [0.104, 0.1243, 0.1189, 0.2412, 0.2238, 0.1556]
_std = [0.0724, 0.0695, 0.0773, 0.1163, 0.1068, 0.0857]
_dim = 128

model.backbone.net.encoder = "dinov2_vits14"
model.backbone.net.encoder_kwargs = dict(
    embed_dim=96, depth=4, num_heads=3, patch_size=8, img_size=96, bands=list(SYNTH_BANDS)
)
model.backbone.net.drop_path_rate = 0.0
# patch 8 -> strides 4, 8, 16 (p2..p4); coarser levels are of no use on 96 px tiles
model.backbone.scale_factors = (2.0, 1.0, 0.5)
model.backbone.top_block = None
model.backbone.out_channels = _dim
model.pixel_mean = _mean
model.pixel_std = _std

# small objects (8-24 px) on 96 px tiles, and lighter heads for the CPU
model.proposal_generator.head.in_channels = _dim
_levels, _scales = ["p2", "p3", "p4"], (1.0 / 4, 1.0 / 8, 1.0 / 16)
model.proposal_generator.in_features = _levels
model.proposal_generator.anchor_generator.sizes = [[8], [16], [32]]
model.proposal_generator.anchor_generator.strides = [4, 8, 16]
model.roi_heads.box_in_features = _levels
model.roi_heads.box_pooler.scales = _scales
model.roi_heads.mask_in_features = _levels
model.roi_heads.mask_pooler.scales = _scales
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (500, 100)
model.roi_heads.num_classes = len(SYNTH_THING_CLASSES)
model.roi_heads.batch_size_per_image = 64
model.roi_heads.box_head.input_shape.channels = _dim
model.roi_heads.box_head.conv_dims = []  # 2fc box head
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.box_predictor.input_shape.channels = 256
model.roi_heads.mask_head.input_shape.channels = _dim
model.roi_heads.mask_head.conv_dims = [64, 64]  # one conv, then the deconv

optimizer.lr = 4e-4
optimizer.params.lr_decay_rate = 1.0  # trained from scratch: no layer-wise decay

train.output_dir = "./output/quickstart/scenes_instance_tiny"
train.max_iter = 300
train.eval_period = 300
train.log_period = 20
train.checkpointer = dict(period=300, max_to_keep=2)
train.seed = 0
# one torch thread: for a model this small a second one gains ~25% on an idle CPU and can
# lose 10x on a busy one (train_net.py; OMP_NUM_THREADS, if set, takes precedence)
train.cpu_threads = 1
