"""Datasets and mappers for d2geo (detectron2 side).

Importing :mod:`d2geo.data.synthetic` registers the built-in synthetic datasets
``d2geo_synth_{det,seg}_{train,val}`` (GeoTIFFs generated on first use).
"""
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


def __getattr__(name):
    # predict_scene moved to d2geo.inference (the data layer does not import inference); this
    # name stays for a release
    if name == "predict_scene":
        import warnings

        from d2geo.inference import predict_scene

        warnings.warn("d2geo.data.predict_scene moved to d2geo.inference.predict_scene", DeprecationWarning,
                      stacklevel=2)
        return predict_scene
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
