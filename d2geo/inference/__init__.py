"""Running trained models over scenes and regions.

* :mod:`.windows`: where windows start, their blend weights, column strips;
* :mod:`.blend`: :class:`BlendBuffer`, window logits blended into class maps (and scores);
* :mod:`.instances`: detections across windows, merged and deduplicated;
* :mod:`.outputs`: class maps (colour table, class names), COGs, GeoJSON, GeoParquet;
* :mod:`.polygons`: class maps as polygons, strip by strip;
* :mod:`.options`: :class:`InferenceOptions`, every option of a run, checked when made;
* :mod:`.request`: the request check against the model and the scene, before any work;
* :mod:`.loop`: :func:`run_scene`, the one window loop;
* :mod:`.scene`: :func:`predict_scene`, one scene;
* :mod:`.model_file`: self-describing ONNX model files (onnxruntime, no torch);
  :mod:`.onnx_instances` runs instance files' detections into masks with numpy; :mod:`.pt2_file`:
  ``torch.export`` ``.pt2`` model files; :mod:`.loader`: :func:`load_model` opens either;
  :mod:`.export_file` writes them from a torch model and its config; :mod:`.runtimes`
  (``--runtime torch|compile|onnxruntime``);
* :mod:`.config_model`: a trained detectron2 model from its LazyConfig and weights, and the
  class names of the config's data (the tools load models with it);
* :mod:`.region`: :func:`predict_region`, many scenes (inputs and STAC, ownership, resume
  records, mosaic, the driver).

Inference imports :mod:`d2geo.data`, :mod:`d2geo.encoders` and :mod:`d2geo.precision`; none of
them imports it.
"""
from .blend import NODATA_CLASS, BlendBuffer
from .instances import SceneInstance, instances_to_geojson, merge_instances
from .loop import run_scene
from .loader import load_model
from .model_file import ModelFileError
from .options import InferenceOptions, RegionOptions
from .request import SceneRequestError, check_request, model_outputs
from .scene import predict_scene
from .windows import blend_weights, tile_windows

__all__ = ["BlendBuffer", "NODATA_CLASS", "SceneInstance", "instances_to_geojson", "merge_instances", "run_scene",
           "InferenceOptions", "RegionOptions", "SceneRequestError", "check_request", "model_outputs",
           "predict_scene", "blend_weights", "tile_windows", "predict_region", "load_model", "ModelFileError"]


def __getattr__(name):
    if name == "predict_region":  # d2geo.inference.region imports more (STAC, mosaic): on first use
        from .region import predict_region

        return predict_region
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
