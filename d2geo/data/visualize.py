"""Side-by-side pictures of GeoTIFF samples: image | ground truth | prediction.

What ``d2geo-visualize`` (``tools/visualize.py``) draws: :func:`render_sample` makes the panels
of one raw dataset dict (one per colour composite, the ground truth from its label file,
annotations or GeoJSON, and a model's prediction if given, or the polygons a prediction tool
wrote: :func:`vector_outlines`), :func:`write_pictures` runs a
model over dataset dicts (optional) and writes one PNG per sample or one contact sheet. The
drawing itself (composites, colours, panels, legends) is :mod:`d2geo.data.render`.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from .datasets import geojson_to_annotations
from .geotiff import read_geotiff, read_label
from .render import (
    COMPOSITE_TITLES,
    PanelInstance,
    auto_scale,
    class_colours,
    composite,
    composite_channels,
    draw_panel,
    layout_panels,
    legend_entries,
    save_png,
)

__all__ = ["render_sample", "write_pictures", "annotation_instances", "predicted_instances", "file_sensor",
           "legend_text", "vector_outlines"]

logger = logging.getLogger(__name__)


def annotation_instances(annos: Sequence[dict], height: int, width: int):
    import cv2
    from detectron2.structures import BoxMode

    out = []
    for a in annos:
        seg = a.get("segmentation")
        mask = None
        if isinstance(seg, list) and seg:
            mask = np.zeros((height, width), np.uint8)
            for poly in seg:
                pts = np.asarray(poly, np.float64).reshape(-1, 2)
                cv2.fillPoly(mask, [np.round(pts - 0.5).astype(np.int32)], 1)
            mask = mask.astype(bool)
        box = BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS) \
            if "bbox" in a else None
        out.append(PanelInstance(int(a.get("category_id", 0)), mask=mask, box=box))
    return out


def predicted_instances(inst, threshold: float):
    inst = inst.to("cpu")
    scores = inst.scores.numpy() if inst.has("scores") else np.ones(len(inst))
    classes = inst.pred_classes.numpy() if inst.has("pred_classes") else np.zeros(len(inst), int)
    masks = inst.pred_masks.numpy() if inst.has("pred_masks") else None
    boxes = inst.pred_boxes.tensor.numpy() if inst.has("pred_boxes") else None
    out = []
    for k in np.nonzero(scores >= threshold)[0]:
        m = None if masks is None else (masks[k] > 0.5 if masks[k].dtype != bool else masks[k])
        out.append(PanelInstance(int(classes[k]), mask=m, box=None if boxes is None else boxes[k].tolist(),
                                 score=float(scores[k])))
    return out, len(scores)


def vector_outlines(path: str, transform, crs, *, score_threshold: float = 0.0) -> tuple[list, dict]:
    """The polygons of a vector file written by ``predict_scene`` / ``predict_region`` (GeoJSON,
    in the CRS its ``crs`` member names, else lon/lat as RFC 7946 says; or GeoParquet) as outlines
    in the pixels of a raster (``transform``, ``crs``): reprojected, then through the inverse
    geotransform, nothing rasterized. Features with a ``score`` under ``score_threshold`` are
    left out. Returns ``(PanelInstance list, {category_id: class name})``."""
    import json

    from rasterio.warp import transform_geom

    if str(path).lower().endswith((".parquet", ".geoparquet")):
        import geopandas as gpd

        df = gpd.read_parquet(path)
        src_crs = df.crs.to_wkt() if df.crs is not None else None
        feats = json.loads(df.to_json(to_wgs84=False))["features"]
    else:
        with open(path, encoding="utf-8") as f:
            fc = json.load(f)
        feats = fc.get("features", [])
        src_crs = ((fc.get("crs") or {}).get("properties") or {}).get("name") or "EPSG:4326"
    inv = ~transform
    out, names = [], {}
    for feat in feats:
        props = feat.get("properties") or {}
        if props.get("score") is not None and float(props["score"]) < score_threshold:
            continue
        geom = feat.get("geometry")
        if not geom:
            continue
        if src_crs is not None and crs is not None:
            geom = transform_geom(src_crs, crs, geom)
        polys = [geom["coordinates"]] if geom["type"] == "Polygon" else \
            geom["coordinates"] if geom["type"] == "MultiPolygon" else []
        cls = int(props.get("category_id", 0))
        if props.get("class") is not None:
            names.setdefault(cls, str(props["class"]))
        for poly in polys:
            ring = np.asarray(poly[0], np.float64)[:-1, :2]
            cols, rows = inv * (ring[:, 0], ring[:, 1])
            out.append(PanelInstance(cls, corners=np.stack([cols, rows], 1),
                                     score=None if props.get("score") is None else float(props["score"])))
    return out, names


def file_sensor(path) -> str | None:
    """The ``SENSOR`` tag of a GeoTIFF (d2geo's synthetic tiles and exports carry one)."""
    import rasterio

    with rasterio.open(path) as src:
        return src.tags().get("SENSOR")


def render_sample(d: dict, *, composites: Sequence = ("true",), class_names: Sequence[str] | None = None,
                  thing_names: Sequence[str] | None = None, predictions: dict | None = None,
                  prediction_names: Sequence[str] | None = None, score_threshold: float = 0.5,
                  percentiles=(2.0, 98.0), scale: int | None = None, alpha: float = 0.6):
    """Panels of one raw dataset dict (as registered): one per composite, the ground truth (if
    any) and the prediction (if given). Returns ``(panels, legend)``: ``[(title, rgb), ...]``
    and the legend entries of the classes drawn."""
    geo = dict(d.get("geo") or {})
    read_kw = {k: geo[k] for k in ("band_names", "sensor", "scale", "offset", "nodata", "num_frames") if k in geo}
    sample = read_geotiff(d.get("file_names") or d["file_name"], fill=None, **read_kw)
    sensor = geo.get("sensor") or file_sensor(sample.paths[0] if sample.paths else d["file_name"])
    h, w = sample.image.shape[-2:]
    s = int(scale) if scale else auto_scale(h, w)
    images = []
    for comp in composites:
        idx, names = composite_channels(sample.band_names, comp, sensor)
        rgb = composite(sample.image, idx, valid=sample.valid, percentiles=percentiles)
        label = COMPOSITE_TITLES.get(comp, "composite") if isinstance(comp, str) else "composite"
        images.append((f"{label}: {', '.join(names)}", rgb))
    base = images[0][1]
    panels = [(t, draw_panel(rgb, scale=s)) for t, rgb in images]
    legend = []

    # ground truth
    sem = read_label(d["sem_seg_file_name"], label_map=geo.get("label_map")) if "sem_seg_file_name" in d else None
    annos = list(d.get("annotations", []))
    if "geojson_file_name" in d:
        annos += geojson_to_annotations(d["geojson_file_name"], sample.transform, crs=sample.crs,
                                        geojson_crs=geo.get("geojson_crs"),
                                        category_key=geo.get("category_key", "category_id"),
                                        class_names=geo.get("class_names"))
    if sem is not None or annos or "annotations" in d:
        stuff = list(class_names) if class_names else None
        if sem is not None and stuff is None:
            known = sem[sem != 255]
            stuff = [f"class {i}" for i in range(int(known.max()) + 1 if known.size else 1)]
        things = list(thing_names) if thing_names else None
        if (annos or "annotations" in d) and things is None and sem is None:
            things = (list(class_names) if class_names and sem is None else
                      [f"object {i}" for i in range(max([int(a.get("category_id", 0)) for a in annos] + [0]) + 1)])
        colours = class_colours(stuff) if stuff else []
        tcolours = class_colours(things) if things else []
        gt_inst = annotation_instances(annos, h, w)
        title = "ground truth" + (f": {len(gt_inst)} objects" if annos or "annotations" in d else "")
        panels.append((title, draw_panel(base, scale=s, class_map=sem, colours=colours, instances=gt_inst,
                                         thing_colours=tcolours, alpha=alpha)))
        if stuff:
            legend += legend_entries(stuff, colours, "classes" if not things else "ground truth classes")
        if things:
            legend += legend_entries(things, tcolours, "objects")

    # prediction: a vector file of a prediction tool, drawn from its map coordinates
    if d.get("prediction_vectors_file_name"):
        path = d["prediction_vectors_file_name"]
        outlines, found = vector_outlines(path, sample.transform, sample.crs, score_threshold=score_threshold)
        n_cls = max([o.category_id for o in outlines] + list(found) + [0]) + 1
        names = list(prediction_names) if prediction_names else [found.get(i, f"object {i}") for i in range(n_cls)]
        colours = class_colours(names)
        title = f"{os.path.basename(path)}: {len(outlines)} with score >= {score_threshold:g}"
        panels.append((title, draw_panel(base, scale=s, instances=outlines, thing_colours=colours, alpha=alpha)))
        if not any(e.group == "objects" and e.name in names for e in legend):
            legend += legend_entries(names, colours, "predicted objects")
    # prediction
    if predictions is not None:
        if "sem_seg" in predictions:
            logits = predictions["sem_seg"].detach().float().cpu()
            names = list(prediction_names) if prediction_names else [f"class {i}" for i in range(logits.shape[0])]
            if len(names) != logits.shape[0]:
                raise ValueError(f"the model predicts {logits.shape[0]} classes but {len(names)} class names "
                                 f"were given ({names})")
            labels = logits.argmax(0).numpy().astype(np.uint8)
            labels[~sample.valid] = 255
            colours = class_colours(names)
            panels.append(("prediction", draw_panel(base, scale=s, class_map=labels, colours=colours, alpha=alpha)))
            entries = legend_entries(names, colours, "predicted classes")
            if [(e.name, e.colour) for e in entries] != [(e.name, e.colour) for e in legend]:
                legend += entries
        if "instances" in predictions:
            n_cls = int(predictions["instances"].pred_classes.max()) + 1 \
                if predictions["instances"].has("pred_classes") and len(predictions["instances"]) else 1
            names = list(prediction_names) if prediction_names else [f"object {i}" for i in range(n_cls)]
            colours = class_colours(names)
            inst, total = predicted_instances(predictions["instances"], score_threshold)
            title = f"prediction: {len(inst)} of {total} with score >= {score_threshold:g}"
            panels.append((title, draw_panel(base, scale=s, instances=inst, thing_colours=colours, alpha=alpha)))
            if not any(e.group == "objects" and e.name in names for e in legend):
                legend += legend_entries(names, colours, "predicted objects")
    return panels, legend


def write_pictures(dicts: Sequence[dict], out: str, *, model=None, mapper=None, composites: Sequence = ("true",),
                   class_names: Sequence[str] | None = None, thing_names: Sequence[str] | None = None,
                   prediction_names: Sequence[str] | None = None, score_threshold: float = 0.5,
                   percentiles=(2.0, 98.0), scale: int | None = None, alpha: float = 0.6,
                   sheet: bool = False) -> list[str]:
    """Draw ``dicts`` (raw dataset dicts) with :func:`render_sample` into the folder ``out``:
    ``<index>_<file stem>.png`` each, or one ``sheet.png`` with a row per sample. With ``model``,
    each sample is read with ``mapper`` and the model's prediction drawn too (its class names
    ``prediction_names`` are dropped when their count is not the model's). Returns the paths."""
    import torch

    rows, written = [], []
    for i, d in enumerate(dicts):
        preds = None
        if model is not None:
            with torch.no_grad():
                preds = model([mapper(d)])[0]
            if "sem_seg" in preds and prediction_names and len(prediction_names) != preds["sem_seg"].shape[0]:
                prediction_names = None
        panels, legend = render_sample(
            d, composites=composites, class_names=class_names, thing_names=thing_names, predictions=preds,
            prediction_names=prediction_names, score_threshold=score_threshold, percentiles=percentiles,
            scale=scale, alpha=alpha)
        stem = os.path.splitext(os.path.basename(d["file_name"] if isinstance(d["file_name"], str)
                                                 else d["file_name"][0]))[0]
        if sheet:
            rows.append((stem, panels, legend))
            continue
        path = os.path.join(out, f"{i:04d}_{stem}.png")
        picture = layout_panels([panels], legend=legend, row_titles=[stem])
        save_png(path, picture, text={"legend": legend_text(legend)})
        written.append(path)
        logger.info("wrote %s", path)
    if sheet:
        legend = []
        for _, _, entries in rows:
            legend += [e for e in entries if (e.name, e.group) not in {(x.name, x.group) for x in legend}]
        picture = layout_panels([r[1] for r in rows], legend=legend, row_titles=[r[0] for r in rows])
        path = os.path.join(out, "sheet.png")
        save_png(path, picture, text={"legend": legend_text(legend)})
        written.append(path)
        logger.info("wrote %s (%d samples)", path, len(rows))
    return written


def legend_text(legend) -> str:
    return "; ".join(f"{e.group + ': ' if e.group else ''}{e.name} = #{'%02x%02x%02x' % tuple(e.colour)}"
                     for e in legend)
