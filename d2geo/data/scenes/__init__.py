"""Train from whole scenes and vector labels: windows sampled from GeoTIFF/COG scenes in any CRS,
labels reprojected, clipped and rasterized (or turned into instances) per window, and
geographic splits without leakage. Entry point: :func:`register_geo_scenes`; the modules:

* :mod:`.index`: scenes (grids, footprints) and labels (class ids, repaired geometries,
  an STRtree per CRS);
* :mod:`.sampling`: random, grid and label-aware windows;
* :mod:`.labels`: a window's labels (rasterization rules, instances cut by the edge);
* :mod:`.split`: spatial blocks, a label column or polygons, with a buffer; written to a file;
* :mod:`.evaluation`: mIoU over windows (mIoU over whole scenes, windows blended as in region
  inference, is :mod:`d2geo.inference.scene_eval`: it runs the inference loop);

``GeoDatasetMapper`` reads each dict's ``window`` of ``file_name``/``file_names``.
"""
from .errors import SceneError  # noqa: F401
from .index import LabelSet, Scene, open_scenes, read_labels  # noqa: F401
from .labels import rasterize_window, read_label_raster, window_instances, window_shapes  # noqa: F401
from .register import build_scene_datasets, register_geo_scenes  # noqa: F401
from .sampling import grid_windows, random_windows, shard  # noqa: F401
from .split import SplitPlan, make_split  # noqa: F401


def __getattr__(name):
    if name == "WindowSemSegEvaluator":  # imports detectron2.evaluation only when asked for
        from .evaluation import WindowSemSegEvaluator

        return WindowSemSegEvaluator
    raise AttributeError(name)
