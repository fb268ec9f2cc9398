"""Moved to :mod:`d2geo.inference.region` (inputs and STAC, ownership, resume records, mosaic,
:func:`~d2geo.inference.region.predict_region`); these names stay here for a release."""
from d2geo.inference.options import InferenceOptions, RegionOptions  # noqa: F401
from d2geo.inference.region import (  # noqa: F401
    STATE_DIR, Ownership, RegionRequestError, RegionScene, check_mosaic_crs, collect_scenes, model_key, ownership,
    predict_region, remove_stale_temporaries, scene_is_done, shard_scenes, stac_item_vrt, write_mosaic_vrt,
)

__all__ = ["RegionScene", "collect_scenes", "stac_item_vrt", "shard_scenes", "ownership", "predict_region",
           "write_mosaic_vrt", "RegionRequestError", "STATE_DIR", "RegionOptions", "InferenceOptions", "model_key",
           "remove_stale_temporaries", "scene_is_done", "check_mosaic_crs", "Ownership"]
