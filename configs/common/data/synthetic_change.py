"""Data for the change-detection quickstart: d2geo's synthetic two-date change tiles.

``d2geo_synth_change_{train,val}`` (registered by importing ``d2geo.data.synthetic.change``)
hold pairs of 6-band HLS-like GeoTIFFs 60-150 days apart in which buildings are built or
demolished and field parcels planted or cleared; labels are ``no_change`` / ``change``
(255 = no data). The GeoTIFFs are generated on first use into
``$D2GEO_DATASETS/d2geo_synth/``. Each sample is a ``(6, 2, H, W)`` series.
"""
import d2geo.data.synthetic.change  # noqa: F401  (registers the datasets)

from .geo_semseg import dataloader

dataloader.train.dataset.names = "d2geo_synth_change_train"
dataloader.test.dataset.names = "d2geo_synth_change_val"
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0
