"""Moved to :mod:`d2geo.inference` (windows, blending, instances, the request check,
:func:`~d2geo.inference.predict_scene`); these names stay here for a release."""
from d2geo.inference.blend import NODATA_CLASS  # noqa: F401
from d2geo.inference.instances import SceneInstance, instances_to_geojson, merge_instances  # noqa: F401
from d2geo.inference.request import (  # noqa: F401
    SceneRequestError, check_request, model_outputs, read_scene_window, scene_files,
)
from d2geo.inference.scene import predict_scene  # noqa: F401
from d2geo.inference.windows import blend_weights, tile_windows  # noqa: F401

__all__ = ["tile_windows", "blend_weights", "SceneInstance", "merge_instances", "predict_scene",
           "instances_to_geojson", "check_request", "model_outputs", "SceneRequestError", "scene_files",
           "read_scene_window", "NODATA_CLASS"]
