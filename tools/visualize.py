#!/usr/bin/env python
"""Draw GeoTIFF samples as side-by-side panels: image | ground truth | prediction.

Examples (from the repository root; the first two need nothing but the quickstart data,
which the first call generates in a few seconds)::

    # 4 samples of a registered dataset with their ground truth, one PNG each
    python tools/visualize.py --dataset d2geo_synth_seg_val --num 4 --out vis/seg

    # the same with a trained model's predictions, on one contact sheet
    python tools/visualize.py --dataset d2geo_synth_det_val --num 6 --sheet \\
        --config-file configs/quickstart/mask_rcnn_tiny.py \\
        --weights output/quickstart/mask_rcnn_tiny/model_final.pth --out vis/det

    # a Sentinel-2 L2A file without band descriptions: true colour, false colour and SWIR
    # composites, with a land-cover map as ground truth
    python tools/visualize.py --image S2L2A/tile.tif --mask LULC/tile.tif \\
        --band-names B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12 --sensor sentinel-2-l2a \\
        --composite true,false,swir --class-names "no data,water,trees,crops" --out vis/s2

Composites are chosen by band name (``--composite``: ``true`` = red, green, blue;
``false`` = NIR, red, green; ``swir`` = SWIR 2, NIR, red; or three band names such as
``B12,B8A,B04``), several separated by commas, each stretched per band between the 2nd and
98th percentile of the valid pixels (``--percentiles``); no-data pixels are black. Class
maps are blended over the image, instances filled and outlined in their class colour, and a
legend below names every class. Predictions below ``--score-threshold`` (0.5) are not drawn.
``--scale`` enlarges (nearest neighbour; default: tiles are enlarged to at least 256 px).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

try:
    import d2geo  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2geo.tools_support import quiet_third_party_warnings  # noqa: E402

quiet_third_party_warnings()

import numpy as np  # noqa: E402

logger = logging.getLogger("d2geo.visualize")


def _split(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def _composites(spec: str) -> list[str | list[str]]:
    """``"true,false"`` -> ["true", "false"]; ``"B12,B8A,B04"`` -> [["B12", "B8A", "B04"]]."""
    from d2geo.data.render import COMPOSITES

    parts = _split(spec) or ["true"]
    if all(p.lower() in COMPOSITES for p in parts):
        return [p.lower() for p in parts]
    if len(parts) == 3 and not any(p.lower() in COMPOSITES for p in parts):
        return [parts]
    raise SystemExit(f"--composite takes names of composites ({', '.join(COMPOSITES)}) or three band "
                     f"names, e.g. B12,B8A,B04; got {spec!r}")


def _annotation_instances(annos: Sequence[dict], height: int, width: int):
    import cv2
    from detectron2.structures import BoxMode

    from d2geo.data.render import PanelInstance

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


def _predicted_instances(inst, threshold: float):
    from d2geo.data.render import PanelInstance

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


def _file_sensor(path) -> str | None:
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
    from d2geo.data.datasets import geojson_to_annotations
    from d2geo.data.geotiff import read_geotiff, read_label
    from d2geo.data.render import (
        COMPOSITE_TITLES, auto_scale, class_colours, composite, composite_channels, draw_panel, legend_entries,
    )

    geo = dict(d.get("geo") or {})
    read_kw = {k: geo[k] for k in ("band_names", "sensor", "scale", "offset", "nodata", "num_frames") if k in geo}
    sample = read_geotiff(d.get("file_names") or d["file_name"], fill=None, **read_kw)
    sensor = geo.get("sensor") or _file_sensor(sample.paths[0] if sample.paths else d["file_name"])
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
        gt_inst = _annotation_instances(annos, h, w)
        title = "ground truth" + (f": {len(gt_inst)} objects" if annos or "annotations" in d else "")
        panels.append((title, draw_panel(base, scale=s, class_map=sem, colours=colours, instances=gt_inst,
                                         thing_colours=tcolours, alpha=alpha)))
        if stuff:
            legend += legend_entries(stuff, colours, "classes" if not things else "ground truth classes")
        if things:
            legend += legend_entries(things, tcolours, "objects")

    # prediction
    if predictions is not None:
        if "sem_seg" in predictions:
            logits = predictions["sem_seg"].detach().float().cpu()
            names = list(prediction_names) if prediction_names else [f"class {i}" for i in range(logits.shape[0])]
            if len(names) != logits.shape[0]:
                raise SystemExit(f"the model predicts {logits.shape[0]} classes but {len(names)} class names "
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
            inst, total = _predicted_instances(predictions["instances"], score_threshold)
            title = f"prediction: {len(inst)} of {total} with score >= {score_threshold:g}"
            panels.append((title, draw_panel(base, scale=s, instances=inst, thing_colours=colours, alpha=alpha)))
            if not any(e.group == "objects" and e.name in names for e in legend):
                legend += legend_entries(names, colours, "predicted objects")
    return panels, legend


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to draw")
    src.add_argument("--dataset", help="a registered dataset name (d2geo_synth_{seg,det}_{train,val} are built in)")
    src.add_argument("--synthetic-root", help="register a synthetic dataset folder first (a "
                                              "make_synthetic_dataset() output, or the cache folder "
                                              "$D2GEO_DATASETS/d2geo_synth)")
    src.add_argument("--sen1floods11-root", help="register Sen1Floods11 (S2 hand-labelled) first")
    src.add_argument("--burn-scars-root", help="register HLS Burn Scars first")
    src.add_argument("--image", nargs="+", help="a GeoTIFF (or one per date) instead of a dataset")
    src.add_argument("--mask", help="label GeoTIFF for --image (ground truth)")
    src.add_argument("--geojson", help="instance polygons (scene CRS) for --image (ground truth)")
    src.add_argument("--band-names", help="comma-separated names of the file's bands (when it has no descriptions)")
    src.add_argument("--sensor", help="sensor key for band aliases (sentinel-2-l2a: B04 = red), e.g. hls")
    src.add_argument("--class-names", help="comma-separated names of the ground-truth classes "
                                           "(default: the dataset's)")
    src.add_argument("--num", type=int, default=8, help="how many samples of the dataset to draw (default 8)")
    look = p.add_argument_group("how to draw")
    look.add_argument("--composite", default="true",
                      help="true, false, swir, or three band names; several composites separated by commas "
                           "(default: true)")
    look.add_argument("--percentiles", default="2,98", help="stretch percentiles (default 2,98)")
    look.add_argument("--scale", type=int, default=None,
                      help="enlarge by this integer factor (default: tiles to at least 256 px)")
    look.add_argument("--alpha", type=float, default=0.6, help="opacity of class colours (default 0.6)")
    look.add_argument("--score-threshold", type=float, default=0.5,
                      help="draw predicted instances with at least this score (default 0.5)")
    look.add_argument("--sheet", action="store_true", help="one contact sheet (sheet.png) instead of a PNG per sample")
    model = p.add_argument_group("predictions")
    model.add_argument("--config-file", help="draw the predictions of this LazyConfig's model too")
    model.add_argument("--weights", help="checkpoint for --config-file")
    model.add_argument("--bands", help="band names to feed the model, in its order (default: all bands of the file)")
    model.add_argument("--dn-scale", type=float, default=None,
                       help="scale of the file's numbers to the model's input (e.g. 0.0001 for Sentinel-2 "
                            "int16 reflectance; default: from the file)")
    model.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="output folder for the PNGs")
    return p


def _register_synthetic_root(root: str) -> list[str]:
    """Register the synthetic dataset(s) in ``root``; an error when there is none."""
    from d2geo.data.synthetic import SyntheticGeoDataset, register_synthetic_geotiff

    if not os.path.isdir(root):
        raise SystemExit(f"--synthetic-root {root}: no such folder")
    candidates = []
    if any(os.path.isdir(os.path.join(root, s, "images")) for s in ("train", "val")):
        candidates.append(root)
    else:  # the cache folder: one <prefix>-<digest> folder per generated dataset
        for entry in sorted(os.listdir(root)):
            sub = os.path.join(root, entry)
            if not entry.startswith(".") and any(os.path.isdir(os.path.join(sub, s, "images"))
                                                 for s in ("train", "val")):
                candidates.append(sub)
    names = []
    for k, folder in enumerate(candidates):
        prefix = "d2geo_geotiff_synth" if k == 0 else f"d2geo_geotiff_synth{k}"
        new = register_synthetic_geotiff(SyntheticGeoDataset.open(folder), prefix=prefix)
        logger.info("registered %s from %s", ", ".join(new), folder)
        names += new
    if not names:
        raise SystemExit(f"--synthetic-root {root}: no synthetic dataset there (expected train/images or "
                         f"val/images, or folders holding them). The quickstart datasets need no "
                         f"--synthetic-root: use --dataset d2geo_synth_seg_val or d2geo_synth_det_val")
    return names


def main(argv=None) -> list[str]:
    args = build_parser().parse_args(argv)
    from d2geo.tools_support import setup_tool_logging

    setup_tool_logging()
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import d2geo.data  # noqa: F401  (registers the quickstart datasets)
    from d2geo.data import datasets as dsets
    from d2geo.data.render import layout_panels, save_png

    composites = _composites(args.composite)
    pct = tuple(float(x) for x in args.percentiles.split(","))
    if args.scale is not None and args.scale < 1:
        raise SystemExit(f"--scale must be a positive integer, got {args.scale}")
    if args.config_file and not args.weights:
        raise SystemExit("--config-file needs --weights (a checkpoint such as output/.../model_final.pth)")
    registered = []
    if args.synthetic_root:
        registered += _register_synthetic_root(args.synthetic_root)
    if args.sen1floods11_root:
        registered += dsets.register_sen1floods11(args.sen1floods11_root)
    if args.burn_scars_root:
        registered += dsets.register_hls_burn_scars(args.burn_scars_root)

    class_names = _split(args.class_names)
    thing_names = None
    if args.image:
        d = {"file_name": args.image[0], "geo": {}}
        if len(args.image) > 1:
            d["file_names"] = args.image
        if args.mask:
            d["sem_seg_file_name"] = args.mask
        if args.geojson:
            d["geojson_file_name"] = args.geojson
        if args.band_names:
            d["geo"]["band_names"] = _split(args.band_names)
        if args.sensor:
            d["geo"]["sensor"] = args.sensor
        dicts = [d]
    elif args.dataset:
        if args.dataset not in DatasetCatalog.list():
            ours = [n for n in DatasetCatalog.list() if n.startswith(("d2geo", "sen1floods11", "hls_burn"))]
            hint = f" (registered now by --synthetic-root etc.: {registered})" if registered else ""
            raise SystemExit(f"dataset {args.dataset!r} is not registered{hint}; d2geo's datasets: {ours}")
        dicts = DatasetCatalog.get(args.dataset)[: args.num]
        meta = MetadataCatalog.get(args.dataset)
        if class_names is None:
            class_names = meta.get("stuff_classes", None)
            thing_names = meta.get("thing_classes", None)
            if class_names and thing_names and not any("sem_seg_file_name" in x for x in dicts):
                class_names = None
    else:
        raise SystemExit("give --dataset NAME or --image FILE (see --help for examples)")
    if not dicts:
        raise SystemExit(f"dataset {args.dataset!r} has no samples")

    model = None
    prediction_names = None
    if args.config_file:
        import torch

        from d2geo.data.mapper import GeoDatasetMapper
        from d2geo.tools_support import config_class_names, load_model

        model, cfg = load_model(args.config_file, args.weights, args.device)
        prediction_names = config_class_names(cfg)
        mapper = GeoDatasetMapper(is_train=False, augmentations=[], bands=_split(args.bands),
                                  sensor=args.sensor, scale=args.dn_scale)

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
            prediction_names=prediction_names, score_threshold=args.score_threshold, percentiles=pct,
            scale=args.scale, alpha=args.alpha)
        stem = os.path.splitext(os.path.basename(d["file_name"] if isinstance(d["file_name"], str)
                                                 else d["file_name"][0]))[0]
        if args.sheet:
            rows.append((stem, panels, legend))
            continue
        path = os.path.join(args.out, f"{i:04d}_{stem}.png")
        picture = layout_panels([panels], legend=legend, row_titles=[stem])
        save_png(path, picture, text={"legend": _legend_text(legend)})
        written.append(path)
        logger.info("wrote %s", path)
    if args.sheet:
        legend = []
        for _, _, entries in rows:
            legend += [e for e in entries if (e.name, e.group) not in {(x.name, x.group) for x in legend}]
        picture = layout_panels([r[1] for r in rows], legend=legend, row_titles=[r[0] for r in rows])
        path = os.path.join(args.out, "sheet.png")
        save_png(path, picture, text={"legend": _legend_text(legend)})
        written.append(path)
        logger.info("wrote %s (%d samples)", path, len(rows))
    return written


def _legend_text(legend) -> str:
    return "; ".join(f"{e.group + ': ' if e.group else ''}{e.name} = #{'%02x%02x%02x' % tuple(e.colour)}"
                     for e in legend)


if __name__ == "__main__":
    main()
