#!/usr/bin/env python
"""Draw GeoTIFF samples as true/false colour PNGs with ground truth and predictions.

Examples::

    # true colour of the first 8 samples of a registered dataset, with their ground truth
    python tools/visualize.py --synthetic-root /data/synth --dataset d2geo_geotiff_synth_det_val --out vis/

    # false colour (NIR, red, green) of one GeoTIFF and its label mask
    python tools/visualize.py --image tile.tif --mask tile_mask.tif --bands nir_narrow,red,green --out vis/

    # add a model's predictions (LazyConfig + checkpoint)
    python tools/visualize.py --dataset ... --config-file cfg.py --weights model_final.pth --out vis/

Composites are stretched per band between the 2nd and 98th percentile of the valid
pixels (``--percentiles``); no-data pixels are drawn black.
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

import numpy as np

logger = logging.getLogger("d2geo.visualize")

TRUE_COLOUR = ("red", "green", "blue")


def composite(image: np.ndarray, channels: Sequence[int] = (0, 1, 2), *, valid: np.ndarray | None = None,
              percentiles=(2.0, 98.0)) -> np.ndarray:
    """``uint8 (H, W, 3)`` colour composite of three channels of a ``(C, H, W)`` or ``(C, T, H, W)``
    image (the first date of a time series), each stretched between its percentiles."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 4:
        img = img[:, 0]
    if img.ndim != 3:
        raise ValueError(f"expected a (C, H, W) or (C, T, H, W) image, got shape {img.shape}")
    if len(channels) != 3:
        raise ValueError(f"a composite needs 3 channels, got {list(channels)}")
    if max(channels) >= img.shape[0] or min(channels) < 0:
        raise ValueError(f"channels {list(channels)} out of range for an image with {img.shape[0]} bands")
    h, w = img.shape[-2:]
    ok = np.ones((h, w), bool) if valid is None else valid.astype(bool)
    ok = ok & np.all(np.isfinite(img[list(channels)]), axis=0)
    out = np.zeros((h, w, 3), np.uint8)
    for k, c in enumerate(channels):
        band = img[c]
        vals = band[ok]
        if vals.size == 0:
            continue
        lo, hi = np.percentile(vals, percentiles)
        if hi <= lo:
            hi = lo + 1e-6
        out[..., k] = np.where(ok, np.clip((band - lo) / (hi - lo), 0, 1) * 255, 0).astype(np.uint8)
    return out


def _channel_indices(band_names: Sequence[str], wanted: Sequence[str], sensor: str | None) -> list[int]:
    from d2geo.data.geotiff import resolve_band_indices

    return resolve_band_indices(band_names, wanted, sensor, where="the image")


def render_dataset_dict(d: dict, *, bands: Sequence[str] = TRUE_COLOUR, metadata=None, predictions: dict | None = None,
                        percentiles=(2.0, 98.0), scale: float = 1.0) -> np.ndarray:
    """RGB ``uint8`` picture of a raw dataset dict (as registered) with its ground truth and,
    if given, a model's ``predictions`` (``{"instances": ...}`` / ``{"sem_seg": (K, H, W)}``)."""
    from detectron2.data.catalog import Metadata
    from detectron2.utils.visualizer import ColorMode, Visualizer

    from d2geo.data.geotiff import geojson_to_annotations, read_geotiff, read_label

    geo = dict(d.get("geo") or {})
    read_kw = {k: geo[k] for k in ("band_names", "sensor", "scale", "offset", "nodata", "num_frames") if k in geo}
    sample = read_geotiff(d.get("file_names") or d["file_name"], fill=None, **read_kw)
    idx = _channel_indices(sample.band_names, bands, geo.get("sensor"))
    rgb = composite(sample.image, idx, valid=sample.valid, percentiles=percentiles)
    gt = {}
    if "sem_seg_file_name" in d:
        gt["sem_seg"] = read_label(d["sem_seg_file_name"], label_map=geo.get("label_map"))
    annos = list(d.get("annotations", []))
    if "geojson_file_name" in d:
        annos += geojson_to_annotations(d["geojson_file_name"], sample.transform, crs=sample.crs,
                                        geojson_crs=geo.get("geojson_crs"),
                                        category_key=geo.get("category_key", "category_id"),
                                        class_names=geo.get("class_names"))
    if annos:
        gt["annotations"] = annos
    meta = Metadata()
    if metadata is not None:
        meta.set(**{k: v for k, v in metadata.as_dict().items() if k != "name"})
    if not meta.get("stuff_classes"):
        n = 1
        if "sem_seg" in gt:
            labels = gt["sem_seg"][gt["sem_seg"] != 255]
            n = int(labels.max()) + 1 if labels.size else 1
        if predictions and "sem_seg" in predictions:
            n = max(n, int(predictions["sem_seg"].shape[0]))
        meta.set(stuff_classes=[str(i) for i in range(n)])
    vis = Visualizer(rgb, metadata=meta, scale=scale, instance_mode=ColorMode.IMAGE)
    out = vis.draw_dataset_dict(gt) if gt else vis.output
    if predictions:
        if "sem_seg" in predictions:
            out = vis.draw_sem_seg(predictions["sem_seg"].argmax(dim=0).cpu(), alpha=0.4)
        if "instances" in predictions:
            out = vis.draw_instance_predictions(predictions["instances"].to("cpu"))
    return out.get_image()


def save_png(path: str, rgb: np.ndarray) -> None:
    from PIL import Image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(rgb).save(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to draw")
    src.add_argument("--dataset", help="a registered dataset name")
    src.add_argument("--synthetic-root", help="register a make_synthetic_dataset() folder first")
    src.add_argument("--sen1floods11-root", help="register Sen1Floods11 (S2 hand-labelled) first")
    src.add_argument("--burn-scars-root", help="register HLS Burn Scars first")
    src.add_argument("--image", nargs="+", help="a GeoTIFF (or one per date) instead of a dataset")
    src.add_argument("--mask", help="label GeoTIFF for --image")
    src.add_argument("--geojson", help="instance polygons (scene CRS) for --image")
    src.add_argument("--band-names", help="comma-separated names of the file's bands (no descriptions)")
    src.add_argument("--sensor", help="sensor key (band aliases such as b04 = red)")
    p.add_argument("--bands", default=",".join(TRUE_COLOUR), help="three band names for R,G,B")
    p.add_argument("--percentiles", default="2,98", help="stretch percentiles, e.g. 2,98")
    p.add_argument("--num", type=int, default=8, help="how many samples of the dataset to draw")
    p.add_argument("--config-file", help="draw predictions of this LazyConfig model too")
    p.add_argument("--weights", help="checkpoint for --config-file")
    p.add_argument("--out", required=True, help="output folder for the PNGs")
    return p


def main(argv=None) -> list[str]:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2geo.data import datasets as dsets

    if args.synthetic_root:
        from d2geo.data.synthetic import SyntheticGeoDataset, register_synthetic_geotiff

        register_synthetic_geotiff(SyntheticGeoDataset.open(args.synthetic_root))
    if args.sen1floods11_root:
        dsets.register_sen1floods11(args.sen1floods11_root)
    if args.burn_scars_root:
        dsets.register_hls_burn_scars(args.burn_scars_root)

    metadata = None
    if args.image:
        d = {"file_name": args.image[0], "geo": {}}
        if len(args.image) > 1:
            d["file_names"] = args.image
        if args.mask:
            d["sem_seg_file_name"] = args.mask
        if args.geojson:
            d["geojson_file_name"] = args.geojson
        if args.band_names:
            d["geo"]["band_names"] = args.band_names.split(",")
        if args.sensor:
            d["geo"]["sensor"] = args.sensor
        dicts = [d]
    elif args.dataset:
        dicts = DatasetCatalog.get(args.dataset)[: args.num]
        metadata = MetadataCatalog.get(args.dataset)
    else:
        raise SystemExit("give --dataset or --image")

    model = None
    if args.config_file:
        if not args.weights:
            raise SystemExit("--config-file needs --weights")
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from predict_scene import load_model

        from d2geo.data.mapper import GeoDatasetMapper

        model, _ = load_model(args.config_file, args.weights)
        mapper = GeoDatasetMapper(is_train=False, augmentations=[])

    bands = [b.strip() for b in args.bands.split(",")]
    pct = tuple(float(x) for x in args.percentiles.split(","))
    written = []
    for i, d in enumerate(dicts):
        preds = None
        if model is not None:
            import torch

            with torch.no_grad():
                preds = model([mapper(d)])[0]
        rgb = render_dataset_dict(d, bands=bands, metadata=metadata, predictions=preds, percentiles=pct)
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        path = os.path.join(args.out, f"{i:04d}_{stem}.png")
        save_png(path, rgb)
        written.append(path)
        logger.info("wrote %s", path)
    return written


if __name__ == "__main__":
    main()
