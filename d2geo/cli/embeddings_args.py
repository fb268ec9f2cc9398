"""``predict_region --embeddings``: the flags, and the run (:mod:`d2geo.inference.embeddings`)."""
from __future__ import annotations

import argparse

__all__ = ["add_embedding_arguments", "embedding_options", "run_embeddings"]


def add_embedding_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("embeddings", "write the encoder's patch embeddings instead of the model's "
                                           "predictions (per scene <id>.emb.tif: D bands on the patch grid; see "
                                           "docs/embeddings.md)")
    g.add_argument("--embeddings", action="store_true",
                   help="write the encoder's patch embeddings (COG of D bands / GeoParquet of cells), not class maps")
    g.add_argument("--embeddings-layer", default="-1",
                   help="encoder block to tap: an index (-1: the last block) or layerN (default -1)")
    g.add_argument("--embeddings-no-norm", action="store_true", help="the raw block output, without the final norm")
    g.add_argument("--embeddings-pool", type=int, default=1,
                   help="average pool x pool patches into one cell (default 1: a cell per patch)")
    g.add_argument("--embeddings-pca", type=int, default=None,
                   help="reduce to this many dimensions with a PCA fitted on the first scene (saved as pca.npz)")
    g.add_argument("--embeddings-pca-file", default=None, help="a pca.npz of an earlier run to project with")
    g.add_argument("--embeddings-pca-samples", type=int, default=20000, help="cells sampled to fit the PCA")
    g.add_argument("--embeddings-dtype", choices=("float32", "float16"), default="float32")
    g.add_argument("--embeddings-format", default="cog",
                   help="comma-separated: cog (<id>.emb.tif), parquet (<id>.emb.parquet, GeoParquet of cells)")


def embedding_options(args):
    """The :class:`~d2geo.inference.embeddings.EmbeddingOptions` of ``args`` (None without --embeddings)."""
    if not getattr(args, "embeddings", False):
        given = [f for f in ("embeddings_pca", "embeddings_pca_file") if getattr(args, f, None) is not None]
        if given or getattr(args, "embeddings_pool", 1) != 1:
            raise SystemExit(f"predict_region: error: --{(given or ['embeddings_pool'])[0].replace('_', '-')} is an "
                             f"option of --embeddings: add --embeddings")
        return None
    if getattr(args, "model", None):
        raise SystemExit("predict_region: error: --embeddings runs the torch encoder inside the model: give "
                         "--config-file and --weights, not --model (a model file holds no encoder to tap)")
    if getattr(args, "runtime", "torch") != "torch":
        raise SystemExit(f"predict_region: error: --embeddings runs the encoder in eager torch: drop --runtime "
                         f"{args.runtime}")
    if getattr(args, "num_gpus", 1) * getattr(args, "num_machines", 1) > 1:
        raise SystemExit("predict_region: error: --embeddings runs in one process: drop --num-gpus/--num-processes "
                         "and --num-machines")
    from d2geo.inference.embeddings import EmbeddingError, EmbeddingOptions

    try:
        return EmbeddingOptions(
            layer=args.embeddings_layer, norm=not args.embeddings_no_norm, pool=args.embeddings_pool,
            pca=args.embeddings_pca, pca_file=args.embeddings_pca_file, pca_samples=args.embeddings_pca_samples,
            dtype=args.embeddings_dtype,
            formats=[f.strip() for f in args.embeddings_format.split(",") if f.strip()])
    except (EmbeddingError, FileNotFoundError) as e:
        raise SystemExit(f"predict_region: error: {e}") from None


def run_embeddings(args, model, opts, key: str, out_dir: str, device_type: str, world_size: int) -> dict:
    from d2geo.inference.embeddings import predict_region_embeddings

    if world_size > 1:
        raise SystemExit("predict_region: error: --embeddings runs in one process: drop --num-gpus/--num-processes")
    from d2geo.tools_support import parse_modality_inputs

    inputs = parse_modality_inputs(args.input) or args.scenes
    return predict_region_embeddings(model, inputs, out_dir, opts, embedding_options(args), key=key,
                                     overwrite=args.overwrite, device_type=device_type, lock=False)
