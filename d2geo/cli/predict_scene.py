"""Run a trained d2geo model over a whole GeoTIFF scene with overlapping windows.

Examples::

    # class map (GeoTIFF in the scene CRS, with class names and colours) from a LazyConfig
    # and its checkpoint; a quick-look pred.tif.png is written next to it
    python tools/predict_scene.py --config-file configs/quickstart/semantic_fpn_tiny.py \
        --weights output/quickstart/semantic_fpn_tiny/model_final.pth --scene T10SEG.2020245.tif \
        --out-semseg pred.tif

    # a self-describing model file (tools/export_model.py --format onnx): no config, no torch
    # and no detectron2 needed (pip install 'd2geo[infer]'); bands, statistics, DN scale, window,
    # overlap and class names come from the file, and the scene's bands and GSD are checked
    python tools/predict_scene.py --model model.onnx --scene S2L2A/tile.tif \
        --band-names B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12 --out-semseg pred.tif

    # a config + checkpoint run in onnxruntime (exported on the fly) or torch.compile
    python tools/predict_scene.py --config-file ... --weights ... --runtime onnxruntime ...

    # a Sentinel-2 L2A file without band descriptions into a model of six HLS bands
    python tools/predict_scene.py --config-file ... --weights ... --scene S2L2A/tile.tif \
        --band-names B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12 --sensor sentinel-2-l2a \
        --bands B02,B03,B04,B8A,B11,B12 --dn-scale 0.0001 --out-semseg pred.tif

    # buildings as GeoJSON polygons in EPSG:4326, 512 px windows overlapping by 128 px
    python tools/predict_scene.py --config-file ... --weights ... --scene scene.tif \
        --out-geojson buildings.geojson --to-crs EPSG:4326 --tile 512 --overlap 128

    # a rotated detector (configs/*/rotated_*.py): oriented boxes as rotated polygons (four
    # corners through the geotransform) with class and score, in GeoJSON and GeoParquet
    python tools/predict_scene.py --config-file configs/quickstart/rotated_tiny.py \
        --weights output/quickstart/rotated_tiny/model_final.pth --scene scene.tif \
        --out-geojson ships.geojson --out-geoparquet ships.parquet --to-crs EPSG:4326 --rotated-boxes

    # a time series: one file per date, in time order
    python tools/predict_scene.py ... --scene d1.tif d2.tif d3.tif --out-semseg pred.tif

    # one file per modality on one grid (TerraMind: Sentinel-2 L2A + Sentinel-1 RTC + DEM),
    # stacked band-wise in the order given: channels S2L2A:B01..S2L2A:B12, S1RTC:VV, S1RTC:VH, DEM:DEM
    python tools/predict_scene.py --config-file configs/terramind/semantic_fpn_v1_base.py --weights ... \
        --input S2L2A=S2L2A/tile.tif --input S1RTC=S1RTC/tile.tif --input DEM=DEM/tile.tif --out-semseg pred.tif

    # a panoptic model (configs/quickstart/panoptic_tiny.py): the panoptic class map (stuff, then
    # things), the uint32 instance-id COG (0 = stuff) and the parcels as GeoJSON and GeoParquet
    python tools/predict_scene.py --config-file configs/quickstart/panoptic_tiny.py --weights ... \
        --scene scene.tif --out-semseg classes.tif --out-instance-ids ids.tif \
        --out-parcels parcels.geojson --out-parcels parcels.parquet

Anything after the flags overrides the config (``model.backbone.net.img_size=512``).
With a semantic model, --out-geojson writes the class map's connected regions as polygons
(one feature per region: class id and name, area in m^2; --polygon-exclude background,
--min-area-m2 500 drops specks; see ``d2geo.inference.polygons``).
The request is checked against the model and the scene before any window is read (an
instance model asked for --out-semseg, bands the file lacks or a band count the model
does not take, a missing output folder: an error and no file). Outputs are written to a
temporary file and renamed when complete: an interrupted run leaves no partial file.
The work is done by ``d2geo.inference`` (``predict_scene``: the region runner with one
scene; see ``d2geo.inference.loop`` for the blending and the duplicate removal).
A SIGTERM removes the temporary files before the tool exits.
"""
from __future__ import annotations

import argparse
import errno
import logging

from d2geo.tools_support import quiet_third_party_warnings

quiet_third_party_warnings()

logger = logging.getLogger("d2geo.predict_scene")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", help="LazyConfig .py file with a `model` entry (with --weights)")
    p.add_argument("--weights", help="checkpoint to load (read with weights_only or safetensors)")
    p.add_argument("--model", help="a d2geo model file (model.onnx of tools/export_model.py --format onnx) instead "
                                   "of --config-file and --weights: runs in onnxruntime, without torch (a model.pt2 "
                                   "of --format pt2: torch.export, needs torch)")
    p.add_argument("--runtime", choices=("torch", "compile", "onnxruntime", "onnxruntime-int8"), default="torch",
                   help="config + checkpoint runs: eager torch (default), torch.compile of the backbone, or "
                        "onnxruntime (the model exported to ONNX for the run); onnxruntime-int8: int8 linear layers, "
                        "opt-in: check its labels against onnxruntime's (docs/benchmarks-region.md)")
    scene = p.add_mutually_exclusive_group(required=True)
    scene.add_argument("--scene", nargs="+", help="GeoTIFF scene, or one file per date")
    scene.add_argument("--input", action="append", metavar="MODALITY=PATH",
                       help="one file per modality on one grid, repeated (--input S2L2A=s2.tif --input S1RTC=s1.tif "
                            "--input DEM=dem.tif): stacked band-wise in this order into channels "
                            "'<MODALITY>:<band>'")
    p.add_argument("--out-semseg", help="class map GeoTIFF to write")
    p.add_argument("--out-geojson", help="GeoJSON to write: the instances' polygons (instance models) or the "
                                         "class map's connected regions (semantic models)")
    p.add_argument("--out-instance-ids", help="panoptic models: instance-id COG to write (uint32, 0 = stuff/none)")
    p.add_argument("--out-parcels", action="append", default=None,
                   help="panoptic models: the objects as polygons (class, instance id, score); .geojson or .parquet "
                        "(GeoParquet), repeat for both")
    p.add_argument("--out-geoparquet", help="GeoParquet to write: the instances' polygons (instance models; rotated "
                                            "polygons of rotated detectors)")
    p.add_argument("--rotated-boxes", action="store_true",
                   help="require rotated polygons: refused unless the model is a rotated detector (RRPN/RROIHeads; "
                        "its boxes are written as rotated polygons anyway)")
    p.add_argument("--polygon-classes", default=None,
                   help="semantic models: comma-separated class names or ids to polygonize (default: all)")
    p.add_argument("--polygon-exclude", default=None,
                   help="semantic models: comma-separated class names or ids not to polygonize (e.g. background)")
    p.add_argument("--min-area-m2", type=float, default=0.0, help="semantic models: drop regions under this (m^2)")
    p.add_argument("--polygon-strip-rows", type=int, default=1024,
                   help="semantic models: class-map rows polygonized at a time (bounds the memory)")
    p.add_argument("--to-crs", default=None, help="CRS of the GeoJSON (default: the scene CRS), e.g. EPSG:4326")
    p.add_argument("--tile", type=int, default=None, help="window size in pixels (default 256; --model: the file's)")
    p.add_argument("--overlap", type=int, default=None,
                   help="overlap of neighbouring windows in pixels (default 64; --model: the file's)")
    p.add_argument("--bands", default=None, help="comma-separated band names to feed the model, in order "
                                                 "(with --input: '<MODALITY>:<band>' names or bare modalities)")
    p.add_argument("--band-names", action="append", default=None,
                   help="comma-separated names of the file's bands (when it has no band descriptions); with "
                        "--input, per modality and repeated: --band-names S1RTC=VV,VH")
    p.add_argument("--sensor", action="append", default=None,
                   help="sensor key for wavelengths (e.g. hls, sentinel-2-l2a); with --input, per modality: "
                        "--sensor S2L2A=sentinel-2-l2a (TerraMind modalities know theirs)")
    p.add_argument("--dn-scale", action="append", default=None,
                   help="scale of the file's numbers to the model's input, e.g. 0.0001 for Sentinel-2 int16 "
                        "reflectance (default: from the file); with --input, per modality: --dn-scale S2L2A=0.0001")
    p.add_argument("--class-names", default=None,
                   help="comma-separated names of the classes of the class map (default: those of the "
                        "config's test dataset)")
    p.add_argument("--object-names", default=None,
                   help="comma-separated names of the instance classes for the GeoJSON (default: --class-names "
                        "when there is no --out-semseg, else the config's)")
    p.add_argument("--no-quicklook", action="store_true", help="no quick-look PNG next to the outputs")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--dedup-threshold", type=float, default=0.5,
                   help="intersection over the smaller object above which two detections are one")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="off",
                   help="autocast (d2geo.precision): off (default, float32), auto (bfloat16 where the device "
                        "computes it natively), bf16, fp16")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--skip-units-check", action="store_true",
                   help="only warn when the input's magnitude does not fit the model's statistics (d2geo.data.units: "
                        "e.g. DN where the model expects reflectance); by default that is an error before any window")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return p


def _split(s):
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def _error(msg) -> SystemExit:
    return SystemExit(f"predict_scene: error: {msg}")


def _panoptic_paths(instance_ids, parcels) -> dict:
    """``predict_scene`` keywords of --out-instance-ids and --out-parcels (by extension)."""
    out = {"instance_ids_path": instance_ids} if instance_ids else {}
    for p in parcels or []:
        key = "parcels_parquet_path" if p.lower().endswith(".parquet") else "parcels_path" if p.lower().endswith(
            (".geojson", ".json")) else None
        if key is None:
            raise _error(f"--out-parcels {p}: give a .geojson (GeoJSON) or .parquet (GeoParquet) file")
        if key in out:
            raise _error(f"--out-parcels names two {'GeoParquet' if 'parquet' in key else 'GeoJSON'} files "
                         f"({out[key]}, {p}): give one of each format at most")
        out[key] = p
    return out


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    from d2geo.inference.outputs import terminate_cleanly

    with terminate_cleanly():  # SIGTERM: temporaries removed, exit code 143
        return _main(args)


def _main(args) -> dict:
    from d2geo.tools_support import parse_modality_inputs, scene_read_options, setup_tool_logging

    setup_tool_logging()
    pan_paths = _panoptic_paths(args.out_instance_ids, args.out_parcels)
    if not args.out_semseg and not args.out_geojson and not args.out_geoparquet and not pan_paths:
        raise _error("give --out-semseg, --out-geojson, --out-geoparquet, --out-instance-ids and/or --out-parcels")
    if args.model is not None:
        if args.config_file or args.weights or args.opts:
            raise _error("--model is the whole model: drop --config-file, --weights and config overrides")
        if args.runtime != "torch":
            raise _error("--runtime is for --config-file runs: a model file runs in onnxruntime")
        if pan_paths:
            raise _error("--out-instance-ids and --out-parcels need a panoptic model, and model files hold semantic "
                         "or instance models: use --config-file and --weights")
        return _main_model_file(args)
    if not args.config_file or not args.weights:
        raise _error("give --config-file and --weights, or --model model.onnx")
    if args.tile is None:
        args.tile = 256
    if args.overlap is None:
        args.overlap = 64
    from d2geo.tools_support import config_class_names, load_model
    from d2geo.data.geotiff import GeoTiffError
    from d2geo.inference import InferenceOptions, SceneRequestError, check_request, model_outputs, predict_scene

    modalities = parse_modality_inputs(args.input)
    read = scene_read_options(modalities, band_names=args.band_names, sensor=args.sensor, dn_scale=args.dn_scale)
    try:
        opts = InferenceOptions(
            tile=args.tile, overlap=args.overlap, bands=_split(args.bands), band_names=read["band_names"],
            sensor=read["sensor"], scale=read["scale"], to_crs=args.to_crs, score_threshold=args.score_threshold,
            dedup_threshold=args.dedup_threshold, batch_size=args.batch_size, num_workers=0, amp=args.amp,
            quicklook=not args.no_quicklook, units_check=not args.skip_units_check,
            polygon_classes=_split(args.polygon_classes),
            polygon_exclude=_split(args.polygon_exclude), min_area_m2=args.min_area_m2,
            polygon_strip_rows=args.polygon_strip_rows, rotated=True if args.rotated_boxes else None)
        model, cfg = load_model(args.config_file, args.weights, args.device, args.opts)
        from d2geo.encoders.licenses import log_weights_licenses, weights_licenses

        log_weights_licenses(weights_licenses(model), args.weights)  # once per run (issue 23)
        if args.runtime != "torch":
            from d2geo.inference.runtimes import prepare_runtime

            model = prepare_runtime(model, args.runtime, cfg=cfg, tile=args.tile, overlap=args.overlap,
                                    sensor=read["sensor"] if isinstance(read["sensor"], str) else None,
                                    dn_scale=read["scale"] if isinstance(read["scale"], float) else None)
    except (SceneRequestError, FileNotFoundError, KeyError) as e:
        raise _error(e.args[0] if isinstance(e, KeyError) and e.args else e) from None
    scene = modalities if modalities is not None else (args.scene if len(args.scene) > 1 else args.scene[0])
    outputs = model_outputs(model)
    # a semantic model's GeoJSON: the class map's regions (instance and panoptic models: the instances)
    regions = bool(args.out_geojson) and outputs is not None and "sem_seg" in outputs and "instances" not in outputs
    paths = dict(semseg_path=args.out_semseg, instances_path=None if regions else args.out_geojson,
                 regions_path=args.out_geojson if regions else None, geoparquet_path=args.out_geoparquet)
    panoptic = outputs is not None and "panoptic_seg" in outputs and bool(args.out_semseg or pan_paths)
    try:
        from d2geo.inference.rotated import check_rotated_request

        check_rotated_request(model, rotated=opts.rotated, semseg=bool(args.out_semseg or regions),
                              instances=paths["instances_path"] is not None or args.out_geoparquet is not None,
                              amp=opts.amp)
        check_request(model, modalities or list(args.scene), scale=read["scale"], tile=args.tile,
                      overlap=args.overlap, bands=opts.bands, band_names=opts.band_names, sensor=opts.sensor,
                      panoptic_paths=list(pan_paths.values()), **paths)
    except (SceneRequestError, FileNotFoundError, ValueError) as e:
        raise _error(e) from None
    class_names, object_names = _split(args.class_names), _split(args.object_names)
    if (args.out_semseg or regions) and class_names is None:
        class_names = config_class_names(cfg, "semantic")
    if (args.out_geojson or args.out_geoparquet) and not regions and object_names is None:
        object_names = class_names if class_names and not args.out_semseg else config_class_names(cfg, "instances")
    if panoptic:  # the panoptic class names: the config's stuff ("things" first) and thing classes
        class_names = class_names or config_class_names(cfg, "semantic")
        object_names = object_names or config_class_names(cfg, "instances")
    opts = opts.replace(class_names=class_names, object_names=object_names)
    try:
        summary = predict_scene(model, scene, options=opts, progress=not args.no_progress,
                                device_type=args.device.split(":")[0], **paths, **pan_paths)
    except (SceneRequestError, GeoTiffError) as e:  # GeoTiffError: the units check (UnitsError) too
        raise _error(e) from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise _error(e.strerror) from e
        raise
    if regions:
        logger.info("%d class-map regions as polygons in %s", summary["regions"], args.out_geojson)
    if summary.get("objects") is not None:
        logger.info("%d panoptic objects%s", summary["objects"],
                    "".join(f"; wrote {p}" for p in pan_paths.values()))
    for path in [args.out_semseg, args.out_geojson, args.out_geoparquet] + summary["quicklooks"]:
        if path:
            logger.info("wrote %s", path)
    if paths["instances_path"] is not None or args.out_geoparquet:
        logger.info("windows: %d, detections: %d, instances kept: %d", summary["windows"], summary["detections"],
                    len(summary["instances"]))
    else:
        logger.info("windows: %d", summary["windows"])
    return summary


def _main_model_file(args) -> dict:
    """--model: a model file in onnxruntime; torch and detectron2 are never imported."""
    from d2geo.data.geotiff import GeoTiffError
    from d2geo.inference.loader import load_model
    from d2geo.inference.model_file import model_file_options
    from d2geo.inference.options import InferenceOptions
    from d2geo.inference.request import SceneRequestError
    from d2geo.inference.scene import predict_scene
    from d2geo.tools_support import parse_modality_inputs, scene_read_options

    modalities = parse_modality_inputs(args.input)
    read = scene_read_options(modalities, band_names=args.band_names, sensor=args.sensor, dn_scale=args.dn_scale)
    try:
        model = load_model(args.model)
        from d2geo.encoders.licenses import log_weights_licenses

        log_weights_licenses(model.meta.weights, args.model)  # once per run (issue 23)
        given = model_file_options(model.meta, tile=args.tile, overlap=args.overlap, bands=_split(args.bands),
                                   sensor=read["sensor"], scale=read["scale"], class_names=_split(args.class_names))
        opts = InferenceOptions(
            band_names=read["band_names"], to_crs=args.to_crs, score_threshold=args.score_threshold,
            dedup_threshold=args.dedup_threshold, batch_size=args.batch_size, num_workers=0, amp="off",
            quicklook=not args.no_quicklook, units_check=not args.skip_units_check,
            polygon_classes=_split(args.polygon_classes), polygon_exclude=_split(args.polygon_exclude),
            min_area_m2=args.min_area_m2, polygon_strip_rows=args.polygon_strip_rows, **given)
    except (SceneRequestError, FileNotFoundError) as e:
        raise _error(e) from None
    scene = modalities if modalities is not None else (args.scene if len(args.scene) > 1 else args.scene[0])
    regions = bool(args.out_geojson) and model.meta.task == "semantic"
    paths = dict(semseg_path=args.out_semseg, instances_path=None if regions else args.out_geojson,
                 regions_path=args.out_geojson if regions else None, geoparquet_path=args.out_geoparquet)
    if args.rotated_boxes:
        raise _error(f"--rotated-boxes: the model file {args.model} is a {model.meta.task} model; model files "
                     f"hold no rotated detectors: run the rotated model from --config-file and --weights")
    try:
        summary = predict_scene(model, scene, options=opts, progress=not args.no_progress, device_type="cpu",
                                **paths)
    except (SceneRequestError, GeoTiffError, FileNotFoundError, ValueError) as e:
        raise _error(e) from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise _error(e.strerror) from e
        raise
    for path in [args.out_semseg, args.out_geojson, args.out_geoparquet] + summary["quicklooks"]:
        if path:
            logger.info("wrote %s", path)
    logger.info("windows: %d (model file %s, %s)", summary["windows"], args.model,
                "torch.export" if args.model.endswith(".pt2") else "onnxruntime")
    return summary


if __name__ == "__main__":
    main()
