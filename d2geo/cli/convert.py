"""Convert an upstream encoder checkpoint into a model-zoo ``.pth`` for a d2geo config: ``d2geo-convert``.

``python tools/convert_checkpoint.py`` in a source checkout runs the same (the examples use it).
The conversion itself is :mod:`d2geo.model_zoo.convert`.

The upstream file (official DINOv2/DINOv3 weights, a Prithvi ``.pt``, a Clay ``.ckpt``,
a timm or terratorch checkpoint, ...) is read by the encoder family's own loader
(``build_encoder(name, weights=...)``: key renaming, band and patch-size adaptation,
validation), and the encoder's weights are written under the name the encoder has inside
the detectron2 model, so ``train.init_checkpoint=<file>`` (or a ``d2geo://`` zoo path)
loads them with ``DetectionCheckpointer`` and no name-matching heuristics::

    python tools/convert_checkpoint.py dinov2_vitb14_pretrain.pth \
        --config-file configs/dinov2/mask_rcnn_vitb14.py --output-dir zoo/dinov2
    # -> zoo/dinov2/dinov2_vitb14_mask_rcnn_vitb14-<sha256[:8]>.pth

    python tools/convert_checkpoint.py Prithvi_EO_V2_300M_TL.pt --encoder prithvi_eo_v2_300_tl \
        --prefix backbone.net. --encoder-kwargs '{"num_frames": 4}'

    # published weights by name: hf://<org>/<repo>[@<revision>]/<file>, an https:// URL, or
    # "pretrained" for the encoder's own entry in its pretrained table (sha256-checked)
    python tools/convert_checkpoint.py pretrained --config-file configs/prithvi/mask_rcnn_eo_v2_300_tl.py

With ``--config-file`` the encoder name and its ``encoder_kwargs`` come from the config's
``GeoBackbone``, and the key prefix from where that module sits in the built model
(``backbone.net.`` for both d2geo pyramids); trailing ``key=value`` arguments override the
config first. The output holds ``{"model": {<prefix>encoder.<key>: tensor}, "__author__",
"matching_heuristics": False, "d2geo": {provenance}}``, only tensors and plain containers
(loadable with ``torch.load(weights_only=True)``), and its name ends in the first 8 hex
digits of its sha256, which the ``d2geo://`` handler checks after downloads.

Models fine-tuned with LoRA (``GeoBackbone(peft=...)``): the conversion above is unchanged
(the adapted model loads plain encoder keys into its frozen base layers); a trained model's
checkpoint becomes a plain zoo file with the adapters merged by::

    python tools/convert_checkpoint.py output/model_final.pth --merge-peft \
        --config-file configs/dinov2/semantic_fpn_vitb14.py 'model.backbone.net.peft={r: 8}'
"""
from __future__ import annotations

import argparse
import json
import logging

from d2geo.tools_support import quiet_third_party_warnings

quiet_third_party_warnings()

from d2geo.encoders import CheckpointError  # noqa: E402
from d2geo.model_zoo.convert import (  # noqa: E402,F401  (the names the tool offers)
    ConversionError,
    convert,
    convert_for_config,
    encoder_from_config,
    merge_peft_checkpoint,
)

__all__ = ["main", "console_main", "get_parser"]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", nargs="?", help="the upstream checkpoint (.pth, .pt, .ckpt, .safetensors): a path, "
                   "hf://<org>/<repo>[@<revision>]/<file>, an https:// URL, or 'pretrained' (the "
                   "encoder's published weights)")
    p.add_argument("--config-file", help="a d2geo config (path or zoo name) whose GeoBackbone "
                   "gives the encoder, its kwargs and the key prefix")
    p.add_argument("--encoder", help="encoder name (see d2geo.encoders.list_encoders()); "
                   "overrides the config's")
    p.add_argument("--encoder-kwargs", default=None,
                   help="JSON dict of build_encoder overrides; replaces the config's")
    p.add_argument("--prefix", default=None, help="where the GeoBackbone sits in the model, "
                   "e.g. 'backbone.net.'; derived from --config-file if not given")
    p.add_argument("--output-dir", default=".", help="directory of the output file")
    p.add_argument("--name", default=None, help="output file stem (default: <encoder>[_<config name>])")
    p.add_argument("--merge-peft", action="store_true", help="weights is a checkpoint of a model "
                   "trained with GeoBackbone(peft=...) from --config-file: write the whole model with "
                   "the adapters merged into the encoder weights")
    p.add_argument("--list-encoders", nargs="?", const="*", metavar="PATTERN", help="list the encoder "
                   "variants (size, license, pinned revision) and exit; a variant's name prints its model card; the "
                   "tiny test variants (<family>_test, random weights) are listed only by a pattern such as '*_test'")
    p.add_argument("opts", nargs="*", help="config overrides key=value")
    return p


def main(argv=None) -> str:
    """``d2geo-convert``: write the zoo file and print (and return) its path."""
    parser = get_parser()
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.list_encoders is not None:
        from d2geo.encoders import encoder_list_text

        print(encoder_list_text(args.list_encoders))
        return ""
    if args.weights is None:
        parser.error("the weights argument is required (or --list-encoders)")
    try:
        kwargs = None
        if args.encoder_kwargs is not None:
            kwargs = json.loads(args.encoder_kwargs)
            if not isinstance(kwargs, dict):
                raise ConversionError("--encoder-kwargs must be a JSON object")
        path = convert_for_config(args.weights, config_file=args.config_file, encoder=args.encoder,
                                  prefix=args.prefix, encoder_kwargs=kwargs, output_dir=args.output_dir,
                                  name=args.name, merge_peft=args.merge_peft, opts=args.opts)
    except (CheckpointError, ConversionError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise SystemExit(f"convert_checkpoint: error: {msg}") from None
    print(path)
    return path



def console_main() -> None:
    """The console script ``d2geo-convert``: :func:`main` on the command line, exit status 0 (the
    result was printed or logged; a returned value would be printed again as an error by
    ``sys.exit``)."""
    main()


if __name__ == "__main__":
    console_main()
