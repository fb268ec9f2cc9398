"""Run a trained d2geo model over a whole region: many scenes, many processes, COG outputs.

Examples::

    # every GeoTIFF of a folder, class maps as Cloud-Optimized GeoTIFFs and a mosaic.vrt
    python tools/predict_region.py --config-file configs/quickstart/semantic_fpn_tiny.py \
        --weights output/quickstart/semantic_fpn_tiny/model_final.pth --scenes scenes/ --output-dir out/

    # a text file (one scene a line; several files on a line are the dates of one scene),
    # with class scores, 4 windows a forward, on 8 GPUs
    python tools/predict_region.py --config-file ... --weights ... --scenes scenes.txt \
        --output-dir out/ --probabilities --batch-size 4 --num-gpus 8

    # STAC items (local JSON whose assets point at local files; the band names come from
    # the assets), on 2 CPU processes (gloo)
    python tools/predict_region.py --config-file ... --weights ... --scenes items/*.json \
        --bands blue,green,red,nir_narrow,swir_1,swir_2 --output-dir out/ --num-processes 2

    # one file per modality (TerraMind: Sentinel-2 L2A + Sentinel-1 RTC + DEM): a folder per
    # modality, scenes matched by file name (S2L2A/x.tif with S1RTC/x.tif and DEM/x.tif), each
    # stacked band-wise in the order given; a text list can hold lines "S2L2A=a.tif S1RTC=b.tif DEM=c.tif"
    python tools/predict_region.py --config-file configs/terramind/semantic_fpn_v1_base.py --weights ... \
        --input S2L2A=tiles/S2L2A --input S1RTC=tiles/S1RTC --input DEM=tiles/DEM --output-dir out/

    # two machines: the same command on each, --machine-rank 0 and 1
    python tools/predict_region.py ... --num-gpus 8 --num-machines 2 --machine-rank 0 \
        --dist-url tcp://10.0.0.1:29500

Per scene ``<id>.tif`` (class map COG), ``<id>.scores.tif`` (--probabilities), and for
models that predict instances ``<id>.geojson`` and ``<id>.parquet``; with --polygons (semantic
models) the class map's regions as ``<id>.regions.geojson`` and ``<id>.regions.parquet``
(--polygon-exclude background, --min-area-m2 500 drops specks); panoptic models (panoptic_seg)
write the panoptic class map ``<id>.tif``, the uint32 instance ids ``<id>.ids.tif`` (unique across
scenes) and the parcels ``<id>.parcels.geojson`` / ``.parcels.parquet``; over all scenes
``mosaic.vrt`` and ``manifest.json``. A rerun with the same model and options skips the
scenes whose outputs are complete (after a kill, it continues); --overwrite redoes all.
Where scenes overlap each ground point is predicted by one scene only (see
``d2geo.inference.region``). Anything after the flags overrides the config. One run at a
time writes to an output folder (a second one is refused); a SIGTERM removes the temporary
files before the tool exits; the output folder must not be the scenes' own folder.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os

from d2geo.tools_support import quiet_third_party_warnings

quiet_third_party_warnings()

logger = logging.getLogger("d2geo.predict_region")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", help="LazyConfig .py file with a `model` entry (with --weights)")
    p.add_argument("--weights", help="checkpoint to load")
    p.add_argument("--model", help="a d2geo model file (model.onnx of tools/export_model.py --format onnx) instead "
                                   "of --config-file and --weights: runs in onnxruntime, without torch (model.pt2: "
                                   "torch.export, needs torch); bands, statistics, DN scale, window, overlap and "
                                   "class names come from the file")
    p.add_argument("--runtime", choices=("torch", "compile", "onnxruntime", "onnxruntime-int8"), default="torch",
                   help="config + checkpoint runs: eager torch (default), torch.compile of the backbone, or "
                        "onnxruntime (the model exported to ONNX for the run); onnxruntime-int8: int8 linear layers, "
                        "opt-in: check its labels against onnxruntime's (docs/benchmarks-region.md)")
    scenes = p.add_mutually_exclusive_group(required=True)
    scenes.add_argument("--scenes", nargs="+",
                        help="scene rasters, folders of them, text files listing them, or STAC item JSON files")
    scenes.add_argument("--input", action="append", metavar="MODALITY=PATH",
                        help="one folder (scenes matched by file name) or file per modality, repeated (--input "
                             "S2L2A=s2/ --input S1RTC=s1/ --input DEM=dem/): stacked band-wise in this order into "
                             "channels '<MODALITY>:<band>'")
    p.add_argument("--output-dir", required=True, help="folder for the outputs (created if missing)")
    p.add_argument("--tile", type=int, default=None, help="window size in pixels (default 256; --model: the file's)")
    p.add_argument("--overlap", type=int, default=None,
                   help="overlap of neighbouring windows in pixels (default 64; --model: the file's)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--num-workers", type=int, default=1,
                   help="processes reading windows ahead of the model (0: read in the main process; onnxruntime "
                        "runs and --model: a thread reads ahead)")
    p.add_argument("--bands", default=None, help="comma-separated band names to feed the model, in order "
                                                 "(with --input: '<MODALITY>:<band>' names or bare modalities)")
    p.add_argument("--band-names", action="append", default=None,
                   help="comma-separated names of the files' bands (when they have no band descriptions); with "
                        "--input, per modality and repeated: --band-names S1RTC=VV,VH")
    p.add_argument("--sensor", action="append", default=None,
                   help="sensor key for wavelengths (e.g. hls, sentinel-2-l2a); with --input, per modality: "
                        "--sensor S2L2A=sentinel-2-l2a (TerraMind modalities know theirs)")
    p.add_argument("--dn-scale", action="append", default=None,
                   help="scale of the files' numbers (default: from the file); with --input, per modality: "
                        "--dn-scale S2L2A=0.0001")
    p.add_argument("--class-names", default=None, help="comma-separated class names of the class map "
                                                       "(default: those of the config's test dataset)")
    p.add_argument("--object-names", default=None, help="comma-separated instance class names")
    p.add_argument("--probabilities", action="store_true", help="also write the class scores (float32 COG)")
    p.add_argument("--no-vectors", action="store_true", help="no GeoJSON/GeoParquet for instance models")
    p.add_argument("--rotated-boxes", action="store_true",
                   help="require rotated polygons: refused unless the model is a rotated detector (RRPN/RROIHeads; "
                        "its boxes are written as rotated polygons anyway)")
    p.add_argument("--polygons", action="store_true",
                   help="semantic models: also write the class map's connected regions as polygons "
                        "(<id>.regions.geojson and <id>.regions.parquet)")
    p.add_argument("--polygon-classes", default=None,
                   help="comma-separated class names or ids to polygonize (default: every class)")
    p.add_argument("--polygon-exclude", default=None,
                   help="comma-separated class names or ids not to polygonize (e.g. background)")
    p.add_argument("--min-area-m2", type=float, default=0.0, help="drop regions smaller than this (m^2)")
    p.add_argument("--polygon-strip-rows", type=int, default=1024,
                   help="rows of the class map polygonized at a time (bounds the memory)")
    p.add_argument("--to-crs", default=None, help="CRS of the vectors (default: each scene's), e.g. EPSG:4326")
    p.add_argument("--mosaic-crs", default=None, help="CRS of mosaic.vrt (default: the first scene's)")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--dedup-threshold", type=float, default=0.5)
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                   help="autocast (d2geo.precision): auto (default) bfloat16 where the device computes it natively "
                        "(CUDA GPUs with bf16, CPUs with AMX or AVX512-BF16), bf16 or fp16 always, off: float32")
    p.add_argument("--max-strip-width", type=int, default=4096,
                   help="scenes wider than this are processed in column strips (bounds the memory)")
    p.add_argument("--cog-blocksize", type=int, default=512,
                   help="tile size of the COGs; overviews are made until the image fits one tile")
    p.add_argument("--overwrite", action="store_true", help="redo scenes the manifest marks as done")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--skip-units-check", action="store_true",
                   help="only warn when the input's magnitude does not fit the model's statistics (d2geo.data.units: "
                        "e.g. DN where the model expects reflectance); by default that is an error before any window")
    p.add_argument("--num-gpus", type=int, default=1, help="processes per machine (one per GPU)")
    p.add_argument("--num-processes", dest="num_gpus", type=int,
                   help="the same as --num-gpus (on a machine without CUDA: CPU processes over gloo)")
    p.add_argument("--num-machines", type=int, default=1)
    p.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine")
    p.add_argument("--dist-url", default="auto", help="tcp://host:port of machine 0 (auto: a free local port)")
    from .embeddings_args import add_embedding_arguments

    add_embedding_arguments(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return p


def _split(s):
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def _error(msg) -> SystemExit:
    return SystemExit(f"predict_region: error: {msg}")


def options(args, model_file=None):
    """The run's options; ``model_file`` (a loaded model file): its window, overlap, bands,
    sensor, DN scale and class names where the flags do not say."""
    from d2geo.inference.options import InferenceOptions
    from d2geo.inference.request import SceneRequestError
    from d2geo.tools_support import parse_modality_inputs, scene_read_options

    read = scene_read_options(parse_modality_inputs(args.input), band_names=args.band_names, sensor=args.sensor,
                              dn_scale=args.dn_scale)
    given = dict(tile=256 if args.tile is None else args.tile, overlap=64 if args.overlap is None else args.overlap,
                 bands=_split(args.bands), sensor=read["sensor"], scale=read["scale"],
                 class_names=_split(args.class_names))
    try:
        if model_file is not None:
            from d2geo.inference.model_file import model_file_options

            given = model_file_options(model_file.meta, tile=args.tile, overlap=args.overlap, bands=given["bands"],
                                       sensor=given["sensor"], scale=given["scale"],
                                       class_names=given["class_names"])
        return InferenceOptions(
            batch_size=args.batch_size, num_workers=args.num_workers,
            band_names=read["band_names"], object_names=_split(args.object_names), **given,
            probabilities=args.probabilities, instances=False if args.no_vectors else None, to_crs=args.to_crs,
            score_threshold=args.score_threshold, dedup_threshold=args.dedup_threshold, amp=args.amp,
            max_strip_width=args.max_strip_width, cog_blocksize=args.cog_blocksize, polygons=args.polygons,
            polygon_classes=_split(args.polygon_classes), polygon_exclude=_split(args.polygon_exclude),
            min_area_m2=args.min_area_m2, polygon_strip_rows=args.polygon_strip_rows,
            units_check=not args.skip_units_check, rotated=True if args.rotated_boxes else None)
    except SceneRequestError as e:
        raise _error(e) from None


def _remove_if_unused(out_dir: str) -> None:
    """Remove an output folder this run created when nothing but empty state folders is in it."""
    for root, _, files in os.walk(out_dir):
        if files:
            return
    import shutil

    shutil.rmtree(out_dir, ignore_errors=True)


def run(args) -> dict:
    """One process (rank) of the run."""
    import torch
    from detectron2.utils import comm

    from d2geo.inference.region import OutputLock, predict_region, remove_stale_temporaries, run_key
    from d2geo.data.geotiff import GeoTiffError
    from d2geo.inference.request import SceneRequestError
    from d2geo.tools_support import config_class_names, load_model, parse_modality_inputs, setup_tool_logging

    setup_tool_logging(logging.INFO if comm.get_rank() == 0 else logging.WARNING)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and comm.get_world_size() > 1:
        device = f"cuda:{comm.get_local_rank()}"
    if device == "cpu" and comm.get_world_size() > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))
    opts = options(args)
    try:
        model, cfg = load_model(args.config_file, args.weights, device, args.opts)
    except (FileNotFoundError, KeyError) as e:
        raise _error(e.args[0] if isinstance(e, KeyError) and e.args else e) from None
    if comm.get_rank() == 0:  # once per run (issue 23), not once per process
        from d2geo.encoders.licenses import log_weights_licenses, weights_licenses

        log_weights_licenses(weights_licenses(model), args.weights)
    runtime_key = None
    if args.runtime != "torch":
        from d2geo.inference.runtimes import prepare_runtime

        runtime_key = run_key(cfg, model, opts)  # of the weights as loaded, before the runtime wraps them
        try:
            model = prepare_runtime(model, args.runtime, cfg=cfg, tile=opts.tile, overlap=opts.overlap,
                                    sensor=opts.sensor if isinstance(opts.sensor, str) else None,
                                    dn_scale=opts.scale if isinstance(opts.scale, float) else None)
        except SceneRequestError as e:
            raise _error(e) from None
    if opts.class_names is None:
        opts.class_names = config_class_names(cfg, "semantic")
    if opts.object_names is None:
        opts.object_names = config_class_names(cfg, "instances")
    # the resume key: the resolved config (imported files and overrides included), the weights as loaded
    key = run_key(cfg, model, opts) if runtime_key is None else _hash(runtime_key, args.runtime)
    out_dir = os.path.abspath(args.output_dir)
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    lock = OutputLock(out_dir) if comm.get_rank() == 0 else None
    try:
        with lock if lock is not None else contextlib.nullcontext():
            if lock is not None:  # the folder is this run's: temporaries in it are a killed run's
                n = remove_stale_temporaries(out_dir)
                if n:
                    logger.info("removed %d temporary file(s) an interrupted run left in %s", n, args.output_dir)
            comm.synchronize()
            inputs = parse_modality_inputs(args.input) or args.scenes
            if args.embeddings:  # the encoder's patch embeddings instead of the predictions
                from .embeddings_args import run_embeddings

                summary = run_embeddings(args, model, opts, key, out_dir, torch.device(device).type,
                                         comm.get_world_size())
            else:
                summary = predict_region(model, inputs, out_dir, opts, key=key, rank=comm.get_rank(),
                                         world_size=comm.get_world_size(), progress=not args.no_progress,
                                         overwrite=args.overwrite, barrier=comm.synchronize,
                                         mosaic_crs=args.mosaic_crs, device_type=torch.device(device).type, lock=False)
    except (SceneRequestError, GeoTiffError, FileNotFoundError) as e:  # GeoTiffError: the units check too
        if created and comm.get_rank() == 0:
            _remove_if_unused(out_dir)
        raise _error(e) from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise _error(e.strerror) from e
        raise
    if comm.get_rank() == 0:
        logger.info("%d scene(s), %.2f km^2: %d predicted here, %d already done; mosaic %s", len(summary["scenes"]),
                    summary.get("km2", 0.0), len(summary["done"]), len(summary["skipped"]), summary.get("mosaic"))
    return summary


def _hash(*parts) -> str:
    import hashlib

    return hashlib.sha256("\n".join(map(str, parts)).encode()).hexdigest()


def run_model_file(args) -> dict:
    """--model: the region with a model file in onnxruntime, in this process; torch and
    detectron2 are never imported."""
    import json

    from d2geo.data.geotiff import GeoTiffError
    from d2geo.inference.loader import load_model
    from d2geo.inference.region import OutputLock, predict_region, remove_stale_temporaries
    from d2geo.inference.request import SceneRequestError
    from d2geo.tools_support import parse_modality_inputs, setup_tool_logging

    setup_tool_logging()
    if args.config_file or args.weights or args.opts:
        raise _error("--model is the whole model: drop --config-file, --weights and config overrides")
    if args.runtime != "torch":
        raise _error("--runtime is for --config-file runs: a model file runs in onnxruntime")
    if args.num_gpus * args.num_machines != 1:
        raise _error("--model runs in one process: drop --num-gpus/--num-processes/--num-machines")
    try:
        model = load_model(args.model)
    except (SceneRequestError, FileNotFoundError) as e:
        raise _error(e) from None
    from d2geo.encoders.licenses import log_weights_licenses

    log_weights_licenses(model.meta.weights, args.model)  # once per run (issue 23)
    opts = options(args, model)
    key = _hash(model.meta.graph_sha256, model.meta.config_sha256, json.dumps(opts.output_key(), sort_keys=True,
                                                                               default=str))
    out_dir = os.path.abspath(args.output_dir)
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    try:
        with OutputLock(out_dir):
            n = remove_stale_temporaries(out_dir)
            if n:
                logger.info("removed %d temporary file(s) an interrupted run left in %s", n, args.output_dir)
            inputs = parse_modality_inputs(args.input) or args.scenes
            return predict_region(model, inputs, out_dir, opts, key=key, rank=0, world_size=1,
                                  progress=not args.no_progress, overwrite=args.overwrite, mosaic_crs=args.mosaic_crs,
                                  device_type="cpu", lock=False)
    except (SceneRequestError, GeoTiffError, FileNotFoundError) as e:
        if created:
            _remove_if_unused(out_dir)
        raise _error(e) from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise _error(e.strerror) from e
        raise


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.model is not None:
        from d2geo.inference.outputs import terminate_cleanly

        with terminate_cleanly():
            return run_model_file(args)
    if not args.config_file or not args.weights:
        raise _error("give --config-file and --weights, or --model model.onnx")
    options(args)  # --input, --band-names, --sensor, --dn-scale and the options checked before any process starts
    from .embeddings_args import embedding_options

    embedding_options(args)
    from d2geo.inference.outputs import terminate_cleanly

    with terminate_cleanly():  # SIGTERM: temporaries removed, exit code 143
        return _launch(args)


def _launch(args):
    import torch
    from detectron2.engine import launch

    if args.num_gpus < 1:
        raise _error(f"--num-gpus must be at least 1, got {args.num_gpus}")
    if torch.cuda.is_available() and (args.device or "cuda").startswith("cuda") and \
            args.num_gpus > torch.cuda.device_count():
        raise _error(f"--num-gpus {args.num_gpus} but this machine has {torch.cuda.device_count()} CUDA "
                     f"device(s); use at most that many (or --device cpu)")
    if args.num_gpus * args.num_machines == 1:
        return run(args)
    from datetime import timedelta

    # ranks wait at the end for the slowest one: a long timeout
    launch(run, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,), timeout=timedelta(hours=24))
    return None


if __name__ == "__main__":
    main()
