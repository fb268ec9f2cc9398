"""Self-describing model files: an ONNX graph that carries what running it on a scene needs.

A d2geo model file is an ONNX model whose ``metadata_props`` hold, one key ``d2geo.<field>``
each (the value JSON), every field of :data:`FIELDS`: the input bands (in order) and the
sensor, the per-band statistics the graph normalises with and the DN scale/offset of the
files it was trained on, the expected GSD and its tolerance, window size and overlap, patch
size, temporal frames, task, class names and colours, the instances' score threshold, the
encoder weights' source and license, the d2geo version, a hash of the resolved config, the
format version and a sha256 of the graph (every top-level field of the ONNX ``ModelProto``
but the metadata itself, as stored).

:func:`write_metadata` stamps an exported ONNX file (needs the ``onnx`` package; the export
side); :func:`read_metadata` reads and checks it with a few lines of protobuf parsing (no
``onnx``, no torch); :func:`load_model` returns a :class:`OnnxSceneModel`, which the window
loop (:func:`d2geo.inference.loop.run_scene`) runs with numpy arrays in onnxruntime. A
missing or mistyped field, another major format version, or a graph whose hash does not
match (a corrupted or edited file) is a :class:`ModelFileError` naming it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .request import SceneRequestError

logger = logging.getLogger(__name__)

__all__ = ["FORMAT_VERSION", "FIELDS", "ModelFileError", "ModelMetadata", "OnnxSceneModel", "load_model",
           "read_metadata", "write_metadata", "graph_sha256", "check_metadata"]

#: major.minor: a file of another major version is refused; minors add optional fields only
FORMAT_VERSION = "1.0"
PREFIX = "d2geo."
TASKS = ("semantic", "instances")

_num = (int, float)
_opt_num = (int, float, type(None))
_opt_str = (str, type(None))
#: every field of a model file and the JSON types its value may have
FIELDS: dict[str, tuple] = {
    "format_version": (str,),
    "d2geo_version": (str,),
    "config_sha256": (str,),
    "graph_sha256": (str,),
    "task": (str,),
    "bands": (list,),
    "sensor": _opt_str,
    "pixel_mean": (list,),
    "pixel_std": (list,),
    "dn_scale": _opt_num,  # None: the files' own scale (GDAL scale/offset tags), as in training
    "dn_offset": _opt_num,
    "gsd_m": _opt_num,  # None: not known (then no GSD check, with a warning)
    "gsd_tolerance": _num,  # relative: |gsd / gsd_m - 1| <= tolerance
    "window": (int,),
    "overlap": (int,),
    "patch_size": (int, type(None)),
    "frames": (int,),
    "class_names": (list,),
    "class_colors": (list,),
    "score_threshold": _opt_num,
    "weights": (list,),  # [{"encoder", "source", "sha256", "license"}] (d2geo.encoders.weights_licenses)
    "inputs": (list,),  # the graph's inputs in order: "image", "metadata.<key>"
}


class ModelFileError(SceneRequestError):
    """A model file that cannot be used (missing or mistyped field, other format, corrupted)."""


@dataclass(frozen=True)
class ModelMetadata:
    format_version: str
    d2geo_version: str
    config_sha256: str
    graph_sha256: str
    task: str
    bands: list
    sensor: str | None
    pixel_mean: list
    pixel_std: list
    dn_scale: float | None
    dn_offset: float | None
    gsd_m: float | None
    gsd_tolerance: float
    window: int
    overlap: int
    patch_size: int | None
    frames: int
    class_names: list
    class_colors: list
    score_threshold: float | None
    weights: list
    inputs: list

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in FIELDS}


# -- protobuf: the top-level fields of an ONNX ModelProto --------------------------------------
_GRAPH, _METADATA = 7, 14


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes):
    """``(field number, raw bytes of the whole field, payload)`` of a protobuf message."""
    i = 0
    while i < len(buf):
        start = i
        tag, i = _varint(buf, i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            _, i = _varint(buf, i)
            payload = b""
        elif wire == 1:
            i += 8
            payload = b""
        elif wire == 2:
            n, i = _varint(buf, i)
            payload = buf[i:i + n]
            i += n
        elif wire == 5:
            i += 4
            payload = b""
        else:
            raise ValueError(f"protobuf wire type {wire}")
        if i > len(buf) or num == 0:
            raise ValueError("truncated field")
        yield num, buf[start:i], payload


def _parse(data: bytes, where: str) -> tuple[str, dict[str, str], bool]:
    """The sha256 of every top-level field but the metadata, the metadata, and whether a graph is there."""
    h, props, graph = hashlib.sha256(), {}, False
    try:
        for num, raw, payload in _fields(data):
            if num == _METADATA:
                entry = {k: v for k, _, v in _fields(payload)}
                props[entry.get(1, b"").decode("utf-8")] = entry.get(2, b"").decode("utf-8")
            else:
                graph |= num == _GRAPH
                h.update(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{where} is not a readable ONNX model file ({e}): the file is corrupted or "
                             f"truncated; export it again (tools/export_model.py --format onnx)") from None
    return h.hexdigest(), props, graph


def graph_sha256(path: str) -> str:
    """The sha256 of the ONNX file's graph (every top-level field but ``metadata_props``)."""
    with open(path, "rb") as f:
        return _parse(f.read(), path)[0]


# -- the fields ------------------------------------------------------------------------------
def check_metadata(values: dict, where: str = "the model file") -> ModelMetadata:
    """The fields of a model file checked (present, of their type, consistent) as a ModelMetadata."""
    missing = [k for k in FIELDS if k not in values]
    if missing:
        raise ModelFileError(f"{where} lacks the field(s) {', '.join(missing)} ({PREFIX}<field> in the ONNX "
                             f"metadata): it was not written by d2geo's export, or by an incomplete one; export "
                             f"it again with tools/export_model.py --format onnx")
    version = values["format_version"]
    if not isinstance(version, str) or version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise ModelFileError(f"{where} has format_version {version!r}, this d2geo reads format "
                             f"{FORMAT_VERSION.split('.')[0]}.x: use the d2geo version that wrote it "
                             f"({values.get('d2geo_version')}), or export the model again with this one")
    for k, types in FIELDS.items():
        v = values[k]
        if isinstance(v, bool) or not isinstance(v, types):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ModelFileError(f"{where}: field {k} is {v!r} ({type(v).__name__}), expected {want}")
    n = len(values["bands"])
    if n < 1 or not all(isinstance(b, str) for b in values["bands"]):
        raise ModelFileError(f"{where}: field bands is {values['bands']!r}: expected a list of band names")
    for k in ("pixel_mean", "pixel_std"):
        if len(values[k]) != n or not all(isinstance(x, _num) for x in values[k]):
            raise ModelFileError(f"{where}: field {k} has {len(values[k])} values for {n} bands: one number "
                                 f"a band")
    if values["task"] not in TASKS:
        raise ModelFileError(f"{where}: field task is {values['task']!r}, expected one of {TASKS}")
    if len(values["class_colors"]) != len(values["class_names"]):
        raise ModelFileError(f"{where}: field class_colors has {len(values['class_colors'])} colours for "
                             f"{len(values['class_names'])} class_names")
    if not 0 <= values["overlap"] < values["window"]:
        raise ModelFileError(f"{where}: field overlap {values['overlap']} is not in [0, window "
                             f"{values['window']})")
    if not values["inputs"] or values["inputs"][0] != "image":
        raise ModelFileError(f"{where}: field inputs is {values['inputs']!r}: the first input is the image")
    return ModelMetadata(**{k: values[k] for k in FIELDS})


def write_metadata(path: str, fields: dict) -> ModelMetadata:
    """Stamp the ONNX file at ``path`` with ``fields`` (every key of :data:`FIELDS` but
    ``format_version``, ``d2geo_version`` and ``graph_sha256``, which are filled in here)."""
    import onnx

    import d2geo

    values = dict(fields, format_version=FORMAT_VERSION, d2geo_version=d2geo.__version__, graph_sha256="")
    check_metadata(values, path)  # before anything is written
    model = onnx.load(path)
    del model.metadata_props[:]
    for k in FIELDS:
        if k != "graph_sha256":
            p = model.metadata_props.add()
            p.key, p.value = PREFIX + k, json.dumps(values[k])
    digest = _parse(model.SerializeToString(), path)[0]
    p = model.metadata_props.add()
    p.key, p.value = PREFIX + "graph_sha256", json.dumps(digest)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model.SerializeToString())
    os.replace(tmp, path)
    meta = read_metadata(path)  # the file as written verifies
    logger.info("wrote the model file %s (format %s, graph sha256 %s)", path, FORMAT_VERSION, digest[:12])
    return meta


def read_metadata(path: str) -> ModelMetadata:
    """The metadata of the model file at ``path``, checked (see the module docstring)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] == b"PK\x03\x04":
        raise ModelFileError(f"{path} is a zip archive (a .pt2 model file?), not ONNX: open it with "
                             f"d2geo.inference.load_model")
    digest, props, graph = _parse(data, path)
    if not graph:
        raise ModelFileError(f"{path} holds no ONNX graph: give the model.onnx that tools/export_model.py wrote")
    values = {}
    for k, v in props.items():
        if k.startswith(PREFIX):
            try:
                values[k[len(PREFIX):]] = json.loads(v)
            except ValueError:
                raise ModelFileError(f"{path}: field {k[len(PREFIX):]} is not JSON ({v[:60]!r})") from None
    if not values:
        raise ModelFileError(f"{path} carries no d2geo metadata: it is a bare ONNX graph; export it with "
                             f"tools/export_model.py --format onnx, which describes the model in the file")
    meta = check_metadata(values, path)
    if meta.graph_sha256 != digest:
        raise ModelFileError(f"{path} is corrupted or was edited: its graph's sha256 is {digest[:16]}..., the file "
                             f"says {meta.graph_sha256[:16]}...; copy it again or export it again")
    return meta


# -- the runtime -------------------------------------------------------------------------------
class OnnxSceneModel:
    """A model file in onnxruntime, called as the window loop calls models: a list of
    ``{"image": (C, H, W) float32, "metadata": {...}}`` -> ``[{"sem_seg": (K, H, W)}]``."""

    array_backend = "numpy"  # d2geo.inference.loop: windows as numpy arrays, no torch

    def __init__(self, path: str, meta: ModelMetadata, session):
        self.path, self.meta, self.session = path, meta, session
        self.pixel_mean = np.asarray(meta.pixel_mean, np.float32)
        self.pixel_std = np.asarray(meta.pixel_std, np.float32)
        self.bands = list(meta.bands)
        self.output_keys = ("sem_seg",) if meta.task == "semantic" else ("instances",)
        self._names = [i.name for i in session.get_inputs()]
        self._outputs = [o.name for o in session.get_outputs()]
        if meta.task == "instances":
            from .onnx_instances import OUTPUTS

            missing = [o for o in OUTPUTS if o not in self._outputs]
            if missing:
                raise ModelFileError(f"{path}: an instance model file's graph has the outputs {', '.join(OUTPUTS)}; "
                                     f"this one lacks {', '.join(missing)}: export it again with "
                                     f"tools/export_model.py --format onnx")

    def modules(self):  # d2geo.inference.request looks for the encoder's band names there
        return iter((self,))

    def __call__(self, items: Sequence[dict]) -> list[dict]:
        out = []
        for item in items:
            md = item.get("metadata") or {}
            feed = {}
            for name, role in zip(self._names, self.meta.inputs):
                if role == "image":
                    feed[name] = np.ascontiguousarray(item["image"], np.float32)
                else:
                    key = role.split(".", 1)[1]
                    if md.get(key) is None:
                        raise ModelFileError(f"{self.path} takes the window's {key}, which the scene does not give")
                    feed[name] = np.asarray(md[key], np.float32)
            if self.meta.task == "instances":  # boxes, classes, mask probabilities, scores: pasted as detectron2 does
                from .onnx_instances import postprocess

                raw = dict(zip(self._outputs, self.session.run(None, feed)))
                h, w = item["image"].shape[-2:]
                out.append({"instances": postprocess(raw, int(item.get("height", h)), int(item.get("width", w)))})
                continue
            (logits, *_) = self.session.run(None, feed)
            out.append({"sem_seg": logits})
        return out


def load_model(path: str, *, threads: int | None = None, providers: Sequence[str] | None = None) -> OnnxSceneModel:
    """The ONNX model file at ``path`` (checked: :func:`read_metadata`) in an onnxruntime session
    (:func:`d2geo.inference.load_model`, :mod:`.loader`, also opens ``.pt2`` files)."""
    meta = read_metadata(path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelFileError("running a model file needs onnxruntime: pip install 'd2geo[infer]'") from None
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(path, so, providers=list(providers or ["CPUExecutionProvider"]))
    if len(session.get_inputs()) != len(meta.inputs):
        raise ModelFileError(f"{path}: the graph takes {len(session.get_inputs())} inputs, field inputs names "
                             f"{len(meta.inputs)} ({meta.inputs})")
    return OnnxSceneModel(path, meta, session)


def describe(meta: ModelMetadata) -> dict[str, Any]:
    """The fields as a plain dict (for logs and ``--describe``)."""
    return meta.to_dict()


# -- a scene against the model file --------------------------------------------------------------
def _unnamed(bands: Sequence[str]) -> bool:
    return all(b == f"band{i + 1}" for i, b in enumerate(bands))


def model_file_options(meta: ModelMetadata, *, tile: int | None = None, overlap: int | None = None,
                       bands=None, sensor=None, scale=None, class_names=None) -> dict:
    """The reading and window options of a run of a model file: what the caller gives, else the
    file's (window, overlap, bands, sensor, DN scale, class names)."""
    if meta.dn_offset not in (None, 0, 0.0):
        raise ModelFileError(f"the model file's dn_offset is {meta.dn_offset}: DN offsets are not supported by the "
                             f"readers yet; export the model with dn_offset 0 (or null)")
    return {"tile": meta.window if tile is None else tile, "overlap": meta.overlap if overlap is None else overlap,
            "bands": (None if _unnamed(meta.bands) else list(meta.bands)) if bands is None else bands,
            "sensor": meta.sensor if sensor is None else sensor, "scale": meta.dn_scale if scale is None else scale,
            "class_names": list(meta.class_names) if class_names is None else class_names}


def check_scene_gsd(meta: ModelMetadata, info: dict, where: str) -> float | None:
    """Refuse a scene whose ground sample distance is off the model file's ``gsd_m`` by more than
    its ``gsd_tolerance`` (``info``: :func:`~d2geo.inference.request.check_request`'s answer).
    Returns the scene's GSD (None: unknown)."""
    from d2geo.data.geotiff import GeoTiffError, pixel_gsd

    if meta.gsd_m is None:
        logger.warning("the model file does not say its GSD: %s is not checked against it", where)
        return None
    if info.get("crs") is None:
        raise ModelFileError(f"{where} has no CRS, so its GSD cannot be checked against the model's "
                             f"{meta.gsd_m:g} m: assign the scene its CRS (gdal_edit.py -a_srs EPSG:...)")
    try:
        gsd = pixel_gsd(info["crs"], info["transform"], info["height"], info["width"])
    except (GeoTiffError, ValueError) as e:
        raise ModelFileError(f"{where}: its GSD cannot be computed ({e})") from None
    if abs(gsd / meta.gsd_m - 1) > meta.gsd_tolerance:
        raise ModelFileError(
            f"{where} has a GSD of {gsd:.3g} m, the model was trained at {meta.gsd_m:g} m (tolerance "
            f"{meta.gsd_tolerance:.0%}): resample the scene to {meta.gsd_m:g} m (gdalwarp -tr {meta.gsd_m:g} "
            f"{meta.gsd_m:g} -r average) or use a model trained at this resolution")
    return gsd
