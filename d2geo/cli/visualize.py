"""Draw GeoTIFF samples as side-by-side panels: image | ground truth | prediction (``d2geo-visualize``).

``python tools/visualize.py`` in a source checkout runs the same; the drawing is
:mod:`d2geo.data.visualize`. Examples (from the repository root; the first two need nothing but the quickstart data,
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

    # the rotated polygons predict_scene wrote (any CRS), over the scene and beside the truth
    python tools/visualize.py --image scene.tif --geojson truth.geojson --predictions objects.geojson \
        --class-names ship,vehicle --out vis/rotated

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

from d2geo.tools_support import quiet_third_party_warnings

quiet_third_party_warnings()

from d2geo.data.synthetic import register_synthetic_root  # noqa: E402
from d2geo.data.visualize import render_sample, write_pictures  # noqa: E402,F401  (the names the tool offers)

__all__ = ["main", "console_main", "build_parser"]

logger = logging.getLogger(__name__)


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
    src.add_argument("--predictions", help="a GeoJSON or GeoParquet of predict_scene/predict_region (any CRS) for "
                                           "--image: its polygons drawn as outlines in a prediction panel")
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


def main(argv=None) -> list[str]:
    args = build_parser().parse_args(argv)
    from d2geo.tools_support import setup_tool_logging

    setup_tool_logging()
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import d2geo.data  # noqa: F401  (registers the quickstart datasets)
    from d2geo.data import datasets as dsets

    composites = _composites(args.composite)
    pct = tuple(float(x) for x in args.percentiles.split(","))
    if args.scale is not None and args.scale < 1:
        raise SystemExit(f"--scale must be a positive integer, got {args.scale}")
    if args.config_file and not args.weights:
        raise SystemExit("--config-file needs --weights (a checkpoint such as output/.../model_final.pth)")
    registered = []
    if args.synthetic_root:
        try:
            registered += register_synthetic_root(args.synthetic_root)
        except (OSError, ValueError) as e:
            raise SystemExit(str(e)) from None
    if args.sen1floods11_root:
        registered += dsets.register_sen1floods11(args.sen1floods11_root)
    if args.burn_scars_root:
        registered += dsets.register_hls_burn_scars(args.burn_scars_root)

    class_names = _split(args.class_names)
    thing_names = None
    if args.predictions and not args.image:
        raise SystemExit("--predictions draws a prediction tool's polygons over a scene: give the scene with --image")
    if args.predictions and not os.path.isfile(args.predictions):
        raise SystemExit(f"--predictions: no such file {args.predictions}")
    if args.image:
        d = {"file_name": args.image[0], "geo": {}}
        if len(args.image) > 1:
            d["file_names"] = args.image
        if args.mask:
            d["sem_seg_file_name"] = args.mask
        if args.geojson:
            d["geojson_file_name"] = args.geojson
        if args.predictions:
            d["prediction_vectors_file_name"] = args.predictions
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

    model = mapper = None
    prediction_names = None
    if args.config_file:
        from d2geo.data.mapper import GeoDatasetMapper
        from d2geo.tools_support import config_class_names, load_model

        model, cfg = load_model(args.config_file, args.weights, args.device)
        prediction_names = config_class_names(cfg)
        mapper = GeoDatasetMapper(is_train=False, augmentations=[], bands=_split(args.bands),
                                  sensor=args.sensor, scale=args.dn_scale)

    return write_pictures(dicts, args.out, model=model, mapper=mapper, composites=composites,
                          class_names=class_names, thing_names=thing_names, prediction_names=prediction_names,
                          score_threshold=args.score_threshold, percentiles=pct, scale=args.scale,
                          alpha=args.alpha, sheet=args.sheet)



def console_main() -> None:
    """The console script ``d2geo-visualize``: :func:`main` on the command line, exit status 0 (the
    result was printed or logged; a returned value would be printed again as an error by
    ``sys.exit``)."""
    main()


if __name__ == "__main__":
    console_main()
