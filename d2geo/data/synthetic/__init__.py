"""The built-in synthetic datasets: GeoTIFFs written by d2geo's generator, cached and registered for detectron2.

* :mod:`.generator` writes the tiles (:func:`make_synthetic_dataset`: HLS-like 6-band int16
  GeoTIFFs with a UTM CRS, 10 m pixels, acquisition times and band descriptions; the layout is
  in its docstring) and describes them (:class:`SyntheticGeoDataset`);
* :mod:`.cache` keeps one generated copy per prefix and parameters (written on first use);
* :mod:`.register` registers them with detectron2.

Importing this package registers four datasets in detectron2's ``DatasetCatalog`` and
``MetadataCatalog``, all backed by one generated dataset:

* ``d2geo_synth_det_train`` / ``d2geo_synth_det_val``: the buildings as instances (COCO
  json, pixel polygons), evaluated with ``COCOEvaluator``;
* ``d2geo_synth_seg_train`` / ``d2geo_synth_seg_val``: background / water / field /
  building label GeoTIFFs (255 = no data), evaluated with ``SemSegEvaluator`` through the
  datasets' ``sem_seg_loading_fn``.

Nothing is generated at import: the first ``DatasetCatalog.get`` of one of the names writes
the files into the cache (see :mod:`.cache`).

The dataset dicts point at the files (``file_name``, ``sem_seg_file_name``, pixel
``annotations``) and carry no read options: :class:`d2geo.data.mapper.GeoDatasetMapper`
takes the band names from the band descriptions, the wavelengths from the ``SENSOR``
tag, the time from ``TIFFTAG_DATETIME`` and the location and GSD from the CRS, as for
any user's GeoTIFFs.

:func:`register_synthetic` registers further variants (other sizes, counts, seeds,
multi-temporal tiles) under another prefix; :func:`register_synthetic_geotiff` registers a
folder the generator wrote anywhere else.
"""
from .cache import (  # noqa: F401
    BUILTIN_PARAMS,
    BUILTIN_PREFIX,
    ensure_synthetic_dataset,
    synthetic_cache_root,
    synthetic_dataset_dir,
)
from .generator import (  # noqa: F401
    HLS_BANDS,
    SEMSEG_CLASSES,
    THING_CLASSES,
    SyntheticGeoDataset,
    make_synthetic_dataset,
    write_scene,
)
from .register import (  # noqa: F401
    register_synthetic,
    register_synthetic_geotiff,
    register_synthetic_root,
    synthetic_pixel_stats,
)

#: the bands of the synthetic tiles (named as in d2geo's ``hls`` sensor table)
SYNTH_BANDS = HLS_BANDS
SYNTH_THING_CLASSES = THING_CLASSES
SYNTH_STUFF_CLASSES = SEMSEG_CLASSES

__all__ = [
    "SYNTH_BANDS", "SYNTH_THING_CLASSES", "SYNTH_STUFF_CLASSES", "BUILTIN_PREFIX", "BUILTIN_PARAMS",
    "SyntheticGeoDataset", "make_synthetic_dataset", "write_scene",
    "register_synthetic", "register_synthetic_geotiff", "register_synthetic_root", "synthetic_cache_root", "synthetic_dataset_dir",
    "ensure_synthetic_dataset", "synthetic_pixel_stats",
]

register_synthetic(BUILTIN_PREFIX, **BUILTIN_PARAMS)
