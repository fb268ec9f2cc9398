"""Scene quickstart: Semantic FPN with a tiny ViT trained from whole scenes and vector labels.

The data are two synthetic 4096 x 4096 px COGs in UTM zones 31N and 32N with the water,
field and building areas as polygons in EPSG:4326 (a GeoPackage); windows of 96 px are
drawn at random from the training blocks of a spatial split and the mIoU is measured on
grid windows of the held-out blocks (configs/common/data/synthetic_scenes.py). Generated on
first use (about a minute), downloads nothing; trains on a CPU::

    python tools/train_net.py --config-file configs/quickstart/scenes_semantic_tiny.py

The model is the one of ``semantic_fpn_tiny.py`` (a DINOv2-architecture ViT of 4 blocks of
width 96, 8-pixel patches, trained from scratch). Classes: background (what no polygon
covers), water, field, building.
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from d2geo.data.synthetic import SYNTH_BANDS, SYNTH_STUFF_CLASSES
from d2geo.modeling import SimpleFeaturePyramid

from d2geo.inference.scene_eval import SceneSemSegEvaluator, scene_eval_windows

from ..common.data.synthetic_scenes import SEG_NAMES, WINDOW
from ..common.data.synthetic_scenes import seg_dataloader as dataloader
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import cosine as lr_multiplier
from ..common.train import train

# scene-scale evaluation: the held-out part of each scene is predicted as predict_region maps it
# (windows overlapping by a quarter, blended) and scored on the part's windows, so the metric is
# that of the map a user gets. For the quicker window-by-window metric, delete these two lines
# (configs/common/data/synthetic_scenes.py's WindowSemSegEvaluator on the grid windows).
dataloader.test.dataset = L(scene_eval_windows)(dataset_name=SEG_NAMES[1], overlap=WINDOW // 4)
dataloader.evaluator = L(SceneSemSegEvaluator)(dataset_name=SEG_NAMES[1], overlap=WINDOW // 4)

# one loader process beside the training process: the model trains on one thread (below), so on
# two cores the windows of the next batch are read meanwhile (data time was a quarter of an
# iteration in the training process; opened COGs stay open in the worker, see d2geo.data.geotiff)
dataloader.train.num_workers = 1

# per-band mean and std of the synthetic generator's tiles (those of the chip quickstart: the
# scenes are made of the same generator's tiles)
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

train.output_dir = "./output/quickstart/scenes_semantic_tiny"
train.max_iter = 1500
train.eval_period = 1500
train.log_period = 20  # a progress line with the ETA every 20 iterations
train.checkpointer = dict(period=500, max_to_keep=2)
train.seed = 0
# one torch thread: for a model this small a second one gains ~25% on an idle CPU and can
# lose 10x on a busy one (train_net.py; OMP_NUM_THREADS, if set, takes precedence)
train.cpu_threads = 1
