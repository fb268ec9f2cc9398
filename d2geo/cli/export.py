"""Export a d2geo model to TorchScript or ONNX, check it against eager, print the difference:
``d2geo-export``.

``python tools/export_model.py`` in a source checkout runs the same (the examples use it).
The export itself is :mod:`d2geo.engine.export`.

The flags are those of detectron2's ``tools/deploy/export_model.py``::

    # Mask R-CNN -> TorchScript (detectron2's TracingAdapter + torch.jit.trace)
    python tools/export_model.py --config-file configs/quickstart/mask_rcnn_tiny.py \
        --format torchscript --output out/mask_rcnn train.init_checkpoint=model_final.pth

    # semantic FPN -> ONNX, on a GeoTIFF of the deployment data
    python tools/export_model.py --config-file configs/quickstart/semantic_fpn_tiny.py \
        --format onnx --sample-image tile.tif --output out/semseg

    # a yacs config (add_d2geo_config is applied for you); weights from MODEL.WEIGHTS
    python tools/export_model.py --config-file my_geo_rcnn.yaml --format torchscript \
        --output out MODEL.WEIGHTS model_final.pth

``--config-file``: a LazyConfig ``.py`` (weights from ``train.init_checkpoint``) or a yacs
``.yaml`` (weights from ``MODEL.WEIGHTS``); trailing arguments override the config the
way ``tools/train_net.py`` (``key=value``) and detectron2's yacs tools (``KEY VALUE``) take
them. Without weights the model is randomly initialised (a warning says so).

``--export-method``:

* ``tracing`` (default): detectron2's ``TracingAdapter`` traced with ``torch.jit.trace``.
  ``--format torchscript`` writes ``model.ts`` (any meta-architecture; R-CNN models are
  traced as detectron2 does, ``model.inference(..., do_postprocess=False)``).
  ``--format onnx`` writes ``model.onnx`` with the TorchScript-based ONNX exporter.
* ``export``: ``torch.export`` with dynamic height and width; ``--format onnx`` only
  (torch's dynamo ONNX exporter), of the backbone and pyramid (``backbone.onnx``): detectron2's
  input batching pads to a size computed from tensor values, which ``torch.export`` cannot
  follow, so whole models go through ``tracing``.
* ``scripting``: not available (timm's ViT blocks are not scriptable); the tool says so.

``--format pt2`` (semantic models, LazyConfig ``.py``): ``model.pt2``, a ``torch.export``
program (dynamic height and width) carrying the same metadata as the ONNX model file
(``d2geo.inference.pt2_file``); ``predict_scene --model model.pt2`` runs it (needs torch, not
detectron2).

ONNX of a whole model is written where upstream detectron2 exports one: the semantic
segmentor. For R-CNN heads detectron2 exports ONNX only through its deprecated Caffe2
path, so ``--format onnx`` writes the backbone and pyramid (``backbone.onnx``: image
tensor in, ``p2..`` feature maps out) and the heads stay in PyTorch; beside it, a Mask R-CNN
is also written whole as the instance model file ``model.onnx`` (detectron2's export
convention: ``inference(..., do_postprocess=False)``, outputs ``boxes``, ``classes``,
``mask_probs``, ``scores``; ``predict_scene --model`` pastes the masks with numpy).

``--sample-image``: a GeoTIFF (or a time series: several paths separated by commas) read
with the config's test mapper (``dataloader.test.mapper`` / ``GeoDatasetMapper`` for yacs),
so bands, scaling and metadata are those of evaluation. Without it a synthetic image of
the model's band count (``--sample-size``, default 128 px) drawn around ``pixel_mean`` with
``pixel_std`` is used. The model's inputs are the image and the tensor metadata the
mapper gives (``gsd``, ``latlon``, ``wavelengths``); acquisition times are left out
(their calendar arithmetic cannot be traced), and a warning says when the model reads them.

The export is run on the sample next to the eager model and ``max abs difference`` is
printed (and logged); the files land in ``--output``.
"""
from __future__ import annotations

import argparse
import logging

from d2geo.tools_support import quiet_third_party_warnings

quiet_third_party_warnings()

from detectron2.utils.logger import setup_logger  # noqa: E402

from d2geo.engine.export import (  # noqa: E402,F401  (the names the tool offers)
    FORMATS,
    METHODS,
    ExportError,
    build_model_from_config,
    export,
    export_from_config,
    max_difference,
    model_inputs,
    read_sample,
    synthetic_sample,
)

__all__ = ["main", "console_main", "get_parser"]

logger = logging.getLogger(__name__)


# -- command line -------------------------------------------------------------------------
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a d2geo model for deployment.")
    p.add_argument("--format", choices=FORMATS + ("pt2",), default="torchscript",
                   help="output format; pt2: a torch.export program with the model-file metadata (model.pt2, "
                        "semantic models, d2geo.inference.pt2_file)")
    p.add_argument("--export-method", choices=METHODS, default="tracing", help="how to export")
    p.add_argument("--config-file", required=True, metavar="FILE",
                   help="LazyConfig .py, yacs .yaml, or a d2geo model-zoo config name")
    p.add_argument("--sample-image", default=None,
                   help="GeoTIFF (comma-separated for a time series) read with the config's test mapper")
    p.add_argument("--sample-size", type=int, default=128,
                   help="side of the synthetic sample when no --sample-image is given")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--describe", action="append", default=None, metavar="KEY=VALUE",
                   help="--format onnx/pt2: model-file fields the config does not give (d2geo.inference.model_file), "
                        "e.g. --describe gsd_m=10 --describe sensor=sentinel-2-l2a --describe dn_scale=0.0001")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=None,
                   help="config overrides: key=value (LazyConfig) or KEY VALUE (yacs)")
    return p


def main(argv=None) -> float:
    args = get_parser().parse_args(argv)
    setup_logger(name="d2geo")
    setup_logger(name="detectron2")
    logger.info("Command line arguments: %s", args)
    if args.format == "pt2":
        from d2geo.inference.pt2_file import export_pt2_from_config

        path, diff = export_pt2_from_config(args.config_file, args.opts or [], output=args.output,
                                            describe=args.describe, sample_size=args.sample_size)
        logger.info("wrote %s", path)
        print(f"max abs difference between the export and the eager model: {diff:.3g}")
        return diff

    def stamp(path, model, inputs):
        if path.endswith("model.onnx"):  # a self-describing model file (predict_scene --model)
            from d2geo.inference.export_file import stamp_exported

            stamp_exported(path, model, args.config_file, list(args.opts or []), args.describe, inputs)
        elif (path.endswith("backbone.onnx") and getattr(getattr(model, "roi_heads", None), "mask_on", False)
              and args.export_method == "tracing"):
            from d2geo.inference.export_file import export_instances_beside  # the whole Mask R-CNN too

            export_instances_beside(path, model, args.config_file, list(args.opts or []), args.describe,
                                    args.sample_size)

    _, diff = export_from_config(args.config_file, args.opts or [], output=args.output, fmt=args.format,
                                 method=args.export_method, sample_image=args.sample_image,
                                 sample_size=args.sample_size, after=stamp)
    print(f"max abs difference between the export and the eager model: {diff:.3g}")
    return diff



def console_main() -> None:
    """The console script ``d2geo-export``: :func:`main` on the command line, exit status 0 (the
    result was printed or logged; a returned value would be printed again as an error by
    ``sys.exit``)."""
    main()


if __name__ == "__main__":
    console_main()
