#!/usr/bin/env python
"""Run a trained d2geo model over a whole GeoTIFF scene with overlapping windows.

Examples::

    # semantic map (GeoTIFF, scene CRS) from a LazyConfig + checkpoint
    python tools/predict_scene.py --config-file configs/quickstart/semseg_tiny.py \
        --weights output/model_final.pth --scene T10SEG.2020245.tif --out-semseg pred.tif

    # buildings as GeoJSON polygons in EPSG:4326, 512 px windows overlapping by 128 px
    python tools/predict_scene.py --config-file ... --weights ... --scene scene.tif \
        --out-geojson buildings.geojson --to-crs EPSG:4326 --tile 512 --overlap 128

    # a time series: one file per date, in time order
    python tools/predict_scene.py ... --scene d1.tif d2.tif d3.tif --out-semseg pred.tif

Anything after the flags overrides the config (``model.backbone.net.img_size=512``).
The merging logic lives in ``d2geo.data.scene`` (see its docstring for the blending
and the duplicate removal).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

try:
    import d2geo  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("d2geo.predict_scene")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="LazyConfig .py file with a `model` entry")
    p.add_argument("--weights", required=True, help="checkpoint to load (read with weights_only or safetensors)")
    p.add_argument("--scene", required=True, nargs="+", help="GeoTIFF scene, or one file per date")
    p.add_argument("--out-semseg", help="class map GeoTIFF to write")
    p.add_argument("--out-geojson", help="instance polygons GeoJSON to write")
    p.add_argument("--to-crs", default=None, help="CRS of the GeoJSON (default: the scene CRS), e.g. EPSG:4326")
    p.add_argument("--tile", type=int, default=256, help="window size in pixels")
    p.add_argument("--overlap", type=int, default=64, help="overlap of neighbouring windows in pixels")
    p.add_argument("--bands", default=None, help="comma-separated band names to feed the model, in order")
    p.add_argument("--band-names", default=None, help="comma-separated names of the file's bands "
                                                      "(when it has no band descriptions)")
    p.add_argument("--sensor", default=None, help="sensor key for wavelengths (e.g. hls, sentinel-2-l2a)")
    p.add_argument("--scale", type=float, default=None, help="DN -> reflectance scale (default: from the file)")
    p.add_argument("--class-names", default=None, help="comma-separated class names for the GeoJSON")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--dedup-threshold", type=float, default=0.5,
                   help="intersection over the smaller object above which two detections are one")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return p


def _split(s):
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def load_model(config_file: str, weights: str, device: str = "cpu", opts=()):
    """Instantiate ``cfg.model`` of a LazyConfig and load ``weights`` into it."""
    from detectron2.config import LazyConfig, instantiate

    from d2geo.engine import GeoCheckpointer

    if not os.path.exists(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    cfg = LazyConfig.load(config_file)
    cfg = LazyConfig.apply_overrides(cfg, list(opts))
    if "model" not in cfg:
        raise KeyError(f"{config_file} has no `model` entry")
    model = instantiate(cfg.model)
    model.to(device)
    GeoCheckpointer(model).load(weights)
    model.eval()
    return model, cfg


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if not args.out_semseg and not args.out_geojson:
        raise SystemExit("give --out-semseg and/or --out-geojson")
    from d2geo.data.scene import predict_scene

    model, _ = load_model(args.config_file, args.weights, args.device, args.opts)
    scene = args.scene if len(args.scene) > 1 else args.scene[0]
    summary = predict_scene(
        model, scene, tile=args.tile, overlap=args.overlap, bands=_split(args.bands),
        band_names=_split(args.band_names), sensor=args.sensor, scale=args.scale,
        semseg_path=args.out_semseg, instances_path=args.out_geojson, to_crs=args.to_crs,
        class_names=_split(args.class_names), score_threshold=args.score_threshold,
        dedup_threshold=args.dedup_threshold, batch_size=args.batch_size, progress=not args.no_progress)
    logger.info("windows: %d, detections: %d, instances kept: %d", summary["windows"], summary["detections"],
                len(summary["instances"]))
    return summary


if __name__ == "__main__":
    main()
