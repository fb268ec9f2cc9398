#!/usr/bin/env python
"""d2geo performance benchmarks: one command, every figure measured in the same run.

    python benchmarks/run.py            # full sizes, writes docs/benchmarks.md
    python benchmarks/run.py --quick    # tiny sizes (a smoke test), writes docs/benchmarks-quick.md

Sections (``--sections`` picks some):

``gemm``
    The machine's fp32 matrix-multiply rate: the median time of an ``n x n x n``
    ``torch.mm``, counted as ``2 n^3`` FLOPs. Every "% of GEMM" figure is relative to it.
``encoders``
    Forward latency (batch 1, fp32, ``torch.inference_mode``) of each encoder family
    against the upstream implementation of the same architecture, input and weights:
    timm's ``vit_*_dinov2`` / ``vit_*_dinov3`` models, terratorch's ``PrithviViT`` and
    claymodel's ``Encoder`` (read from the pinned wheels by ``testkit/upstream.py``).
    Ours and upstream run alternately (ABBA...) and the median is reported. FLOPs are
    counted with ``torch.utils.flop_counter.FlopCounterMode`` (attention included: the
    CPU flash-attention op gets the ``4 B H L^2 E`` formula torch uses for SDPA).
    The relative error of our output against upstream's confirms both computed the same.
``resolution``
    Time and peak memory of one encoder (default DINOv2-S/14) from 224 to 2048 px, with
    global attention and with ViTDet-style window attention (14 x 14 tokens, global
    blocks 2, 5, 8, 11), and the last-layer drift of windowed vs global features on the
    same weights (mean per-token cosine similarity, max|w - g| / max|g|). Each
    measurement runs in a fresh subprocess; memory is the increase of the process's
    peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) over one forward pass,
    measured from after the model and input were built: activations, attention
    workspaces and allocator overhead, as the OS sees them (tracemalloc does not see
    torch's allocations).
``train``
    One Mask R-CNN training step (forward, backward, AdamW step) at 512 px, batch 2:
    d2geo's ``GeoRCNN`` with ``SimpleFeaturePyramid(GeoBackbone("dinov2_vits14"))`` (run at
    patch 16, as configs/common/models/mask_rcnn_geo.py does, so both have 32 x 32
    tokens), with and without window attention, against detectron2's ViTDet
    (``mask_rcnn_vitdet.py`` with a ViT-S: 384 wide, 12 blocks, 6 heads, window 14 in
    blocks 0, 1, 3, 4, 6, 7, 9, 10, relative position biases). Each model gets its
    project's optimizer (configs/common/optim.py's fused AdamW with layer-wise decay;
    detectron2's ViTDet AdamW recipe) and is stepped by a trainer: detectron2's
    ``SimpleTrainer`` in float32 and d2geo's ``AutocastTrainer`` for the bfloat16
    autocast rows (ViTDet too, and d2geo with activation checkpointing). All rows run once
    per round, in alternating order; wall and process CPU time are medians over rounds.

Numbers from a shared or busy machine are noise: the machine section records the load
average at the start so a reader can tell, and the training rows give process CPU time
next to wall time (with other processes on the cores, wall time also counts the time the
step waited for a core). The full run takes roughly 25 minutes on an idle 2-core machine
(most of it the 2048 px global-attention forward passes and the 24 training steps);
``--sections`` and ``--families`` run parts of it. ``--quick`` takes 20-30 s and only
checks that everything runs: at tiny sizes thread scheduling dominates the timings.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the benchmarks package importable
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.common import FULL, QUICK, SECTIONS, gemm_rate, logger, machine_info  # noqa: E402
from benchmarks.encoder_latency import bench_encoders  # noqa: E402
from benchmarks.report import render  # noqa: E402
from benchmarks.resolution_sweep import _child, bench_resolution  # noqa: E402
from benchmarks.train_step import bench_train  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script works")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--families", default="", help="only these encoder families (dinov2,dinov3,prithvi,clay,terramind,ssl4eo,ssl4eo_data2vec,scalemae,satlas,dofa,croma,copernicusfm,panopticon,galileo,anysat,olmoearth; galileo needs $D2GEO_GALILEO_SRC)")
    ap.add_argument("--weights", default=None, help="checkpoint for the resolution sweep's encoder")
    ap.add_argument("--output", default=None, help="markdown file (default docs/benchmarks.md, "
                                                   "docs/benchmarks-quick.md with --quick)")
    ap.add_argument("--json", default=None, help="also write the raw results as JSON")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    families = {f.strip() for f in args.families.split(",") if f.strip()} or None
    profile = QUICK if args.quick else FULL
    start = time.perf_counter()
    results: dict[str, Any] = {"profile": profile.name, "machine": machine_info(), "reps": profile.reps}
    if "gemm" in sections or "encoders" in sections:
        results["gemm"] = gemm_rate(profile.gemm_n, profile.reps)
    if "encoders" in sections:
        results["encoders"] = bench_encoders(profile, results.get("gemm"), families)
    if "resolution" in sections:
        results["resolution"] = bench_resolution(profile, args.weights)
    if "train" in sections:
        results["train"] = bench_train(profile)
    results["wall_seconds"] = time.perf_counter() - start
    md = render(results)
    out = Path(args.output) if args.output else REPO / "docs" / (
        "benchmarks-quick.md" if args.quick else "benchmarks.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    print(md)
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
