"""Data for the quickstarts: d2geo's built-in synthetic 6-band (HLS) tiles.

The datasets ``d2geo_synth_{det,seg}_{train,val}`` are generated on the fly (no download,
deterministic) and registered by importing ``d2geo.data.synthetic``; see its docstring.
``det_dataloader`` evaluates COCO AP, ``seg_dataloader`` mIoU.
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from d2geo.data.synthetic import InMemoryDatasetMapper

from .geo_detection import dataloader as det_dataloader
from .geo_semseg import dataloader as seg_dataloader

for _loader, _task in ((det_dataloader, "det"), (seg_dataloader, "seg")):
    _loader.train.dataset.names = f"d2geo_synth_{_task}_train"
    _loader.test.dataset.names = f"d2geo_synth_{_task}_val"
    _loader.train.mapper = L(InMemoryDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.RandomFlip)(horizontal=True, vertical=False),
            L(T.RandomFlip)(horizontal=False, vertical=True),
        ],
        use_instance_mask=_task == "det",
    )
    _loader.test.mapper = L(InMemoryDatasetMapper)(is_train=False)
    _loader.train.total_batch_size = 4
    _loader.train.num_workers = 0  # rendering is cheap; no worker processes needed
    _loader.test.num_workers = 0

# the synthetic val sets are small and cheap: never reuse a cached COCO json
det_dataloader.evaluator.allow_cached_coco = False
