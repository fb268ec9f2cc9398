"""Datasets and mappers for d2geo (detectron2 side).

Importing :mod:`d2geo.data.synthetic` registers the built-in synthetic datasets
``d2geo_synth_{det,seg}_{train,val}`` (GeoTIFFs generated on first use).

The GeoTIFF layer (:mod:`.geotiff`, :mod:`.units`, :mod:`.files`) needs numpy and rasterio
only: an inference-only install (``pip install d2geo[infer]``: no torch, no detectron2)
imports them; the datasets and the mapper need torch and detectron2 (``d2geo[train]``).
"""
import importlib.util as _util


def _have(*names) -> bool:
    try:
        return all(_util.find_spec(n) is not None for n in names)
    except (ImportError, ValueError):  # blocked or half-installed
        return False


if _have("torch", "detectron2"):
    from .synthetic import (  # noqa: F401
        SYNTH_BANDS,
        SYNTH_STUFF_CLASSES,
        SYNTH_THING_CLASSES,
        ensure_synthetic_dataset,
        register_synthetic,
        register_synthetic_geotiff,
        synthetic_pixel_stats,
    )

    # GeoTIFF data layer (rasterio is imported only when a file is read: pip install 'd2geo[geo]')
    from .datasets import (  # noqa: F401,E402
        geojson_to_annotations,
        load_hls_burn_scars,
        load_sen1floods11,
        register_geo_instances,
        register_geo_semseg,
        register_hls_burn_scars,
        register_sen1floods11,
    )
    from .geotiff import GeoSample, GeoTiffError, read_geotiff, read_label  # noqa: F401,E402
    from .mapper import GeoDatasetMapper, RandomExtentND, build_geo_augmentation  # noqa: F401,E402
    from .scenes import SceneError, register_geo_scenes  # noqa: F401,E402
    from .stats import SENSOR_STATS, get_stats  # noqa: F401,E402
else:
    from .geotiff import GeoSample, GeoTiffError, read_geotiff, read_label  # noqa: F401


def __getattr__(name):
    if name in _NEEDS_TRAIN:
        raise ImportError(f"d2geo.data.{name} needs torch and detectron2, which are not installed (an inference-only "
                          f"install): pip install 'd2geo[train]' and detectron2 (README, Install)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_NEEDS_TRAIN = ("SYNTH_BANDS", "SYNTH_STUFF_CLASSES", "SYNTH_THING_CLASSES", "ensure_synthetic_dataset",
                "register_synthetic", "register_synthetic_geotiff", "synthetic_pixel_stats", "geojson_to_annotations",
                "load_hls_burn_scars", "load_sen1floods11", "register_geo_instances", "register_geo_semseg",
                "register_hls_burn_scars", "register_sen1floods11", "GeoDatasetMapper", "RandomExtentND",
                "build_geo_augmentation", "SENSOR_STATS", "get_stats")
