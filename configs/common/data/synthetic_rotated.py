"""Data for the rotated quickstart: ship-like and vehicle-like objects at random angles.

``d2geo_synth_rot_{train,val}`` (registered by importing ``d2geo.data.synthetic.rotated``)
are 96 px six-band HLS-like GeoTIFFs on the synthetic generator's backgrounds, boxes
``(cx, cy, w, h, angle)``; generated on first use into ``$D2GEO_DATASETS/d2geo_synth/``.
Evaluation: ``RotatedCOCOEvaluator`` (rotated IoU).
"""
import d2geo.data.synthetic.rotated  # noqa: F401  (registers the datasets)

from .geo_rotated_detection import dataloader

dataloader.train.dataset.names = "d2geo_synth_rot_train"
dataloader.test.dataset.names = "d2geo_synth_rot_val"
dataloader.train.total_batch_size = 4
# reading a 96 px tile takes ~3 ms: worker processes would cost more than they save
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0
# the val split is small and a cached COCO json could be of another dataset version
dataloader.evaluator.allow_cached_coco = False
