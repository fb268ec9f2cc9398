"""Data for the quickstarts: d2geo's built-in synthetic 6-band (HLS) GeoTIFFs.

The datasets ``d2geo_synth_{det,seg}_{train,val}`` are registered by importing
``d2geo.data.synthetic``. On first use their GeoTIFFs are generated (no download,
deterministic, a few seconds) into ``$D2GEO_DATASETS/d2geo_synth/`` (default
``./datasets/d2geo_synth/``) and reused afterwards. They are read like any user's
GeoTIFFs, by ``GeoDatasetMapper`` with the acquisition metadata taken from the files.
``det_dataloader`` evaluates COCO AP on the buildings, ``seg_dataloader`` mIoU over
background / water / field / building.
"""
import d2geo.data.synthetic  # noqa: F401  (registers the datasets)

from .geo_detection import dataloader as det_dataloader
from .geo_semseg import dataloader as seg_dataloader

for _loader, _task in ((det_dataloader, "det"), (seg_dataloader, "seg")):
    _loader.train.dataset.names = f"d2geo_synth_{_task}_train"
    _loader.test.dataset.names = f"d2geo_synth_{_task}_val"
    _loader.train.total_batch_size = 4
    # reading a 96 px tile takes ~3 ms: worker processes would cost more than they save
    _loader.train.num_workers = 0
    _loader.test.num_workers = 0

# the val split is small and a cached COCO json could be of another dataset version
det_dataloader.evaluator.allow_cached_coco = False
