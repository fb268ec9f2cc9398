"""Data for the panoptic quickstart: d2geo's synthetic crop-field tiles (built in, no download).

``d2geo_synth_pan_{train,val}`` are registered by importing this fragment: 6-band HLS-like
GeoTIFFs with stuff (grassland, forest, water, urban) and crop fields as objects (wheat,
maize, rapeseed), generated on first use into ``$D2GEO_DATASETS/d2geo_synth/`` (default
``./datasets/d2geo_synth/``, a few seconds) and registered through
``d2geo.data.panoptic.register_geo_panoptic`` from class and instance-id rasters, like a
user's data. Evaluation: panoptic quality (torchmetrics).
"""
from d2geo.data.synthetic.panoptic import register_synthetic_panoptic

from .geo_panoptic import dataloader

_train, _val = register_synthetic_panoptic("d2geo_synth_pan")
dataloader.train.dataset.names = _train
dataloader.test.dataset.names = _val
dataloader.train.total_batch_size = 4
# reading a 96 px tile takes ~3 ms: worker processes would cost more than they save
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0
