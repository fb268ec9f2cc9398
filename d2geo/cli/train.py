"""Train or evaluate a d2geo model described by a LazyConfig (``.py``) file: ``d2geo-train``.

``python tools/train_net.py`` in a source checkout runs the same (the examples below use it;
``d2geo-train`` takes the same arguments).

Examples::

    # a few minutes on a laptop CPU, no download: the built-in synthetic dataset
    python tools/train_net.py --config-file configs/quickstart/mask_rcnn_tiny.py

    # the family configs load their encoder's published weights by name (downloaded once
    # into the Hugging Face / torch.hub cache, sha256-checked); any hf:// file works too
    python tools/train_net.py --config-file configs/prithvi/mask_rcnn_eo_v2_300_tl.py
    python tools/train_net.py --config-file ... \
        model.backbone.net.weights=hf://ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL/Prithvi_EO_V2_300M_TL.pt
    # a whole detectron2-format model: a path, d2geo://... or hf://...
    python tools/train_net.py --config-file ... train.init_checkpoint=hf://<org>/<repo>/<file>.pth

    # evaluate a checkpoint
    python tools/train_net.py --config-file configs/quickstart/mask_rcnn_tiny.py --eval-only \
        train.init_checkpoint=output/quickstart/mask_rcnn_tiny/model_final.pth

    # bfloat16 autocast and activation checkpointing (CPU or CUDA)
    python tools/train_net.py --config-file ... train.amp.enabled=True \
        model.backbone.net.grad_checkpointing=True

    # torch.compile of the backbone (encoder + pyramid); the heads stay eager
    python tools/train_net.py --config-file ... train.compile=True

    # continue an interrupted run from the last checkpoint in train.output_dir; on one CPU
    # process with num_workers=0 it ends with the uninterrupted run's weights (checkpoints
    # are written atomically; see docs/bad_inputs.md, "Crash-safe training")
    python tools/train_net.py --config-file ... --resume

    # 8 GPUs (NCCL), or, on a machine without CUDA, 2 CPU processes (gloo)
    python tools/train_net.py --config-file ... --num-gpus 8
    python tools/train_net.py --config-file ... --num-processes 2

    # the first samples' units are checked against the model's pixel_mean/pixel_std before
    # the first step (raw DN for reflectance statistics stops the run with the fix); to go on:
    python tools/train_net.py --config-file ... --skip-units-check

``--config-file`` takes a path, or a config name of the packaged model zoo
(``dinov2/mask_rcnn_vitb14.py``). Anything after the flags overrides the config:
``train.max_iter=500 dataloader.train.total_batch_size=4 model.backbone.net.weights=...``.

The config needs ``model``, ``dataloader.{train,test,evaluator}``, ``optimizer``,
``lr_multiplier`` and ``train`` (see ``configs/common/train.py`` for its fields).
``train.device`` falls back to ``cpu`` when CUDA is not available. The training itself is
:mod:`d2geo.engine.train_loop`; this module parses the command line, launches the processes
and says how to continue after Ctrl-C.
"""
from __future__ import annotations

import os
import shlex
import sys

from d2geo.tools_support import quiet_third_party_warnings

quiet_third_party_warnings()  # before torch and detectron2 are imported

from detectron2.engine import default_argument_parser, launch  # noqa: E402

from d2geo.engine.hooks import TrainingInterrupted, last_checkpoint  # noqa: E402
from d2geo.engine.train_loop import (  # noqa: E402,F401  (the names the tool offers)
    check_process_count,
    current_output_dir,
    do_test,
    do_train,
    maybe_compile,
    resolve_config_file,
    run,
)

__all__ = ["main", "get_parser", "resume_command"]


def resume_command(argv, prog: str | None = None) -> str:
    """The command line that continues this run: the same arguments with ``--resume``.
    ``prog``: how the tool was started (default: from ``sys.argv[0]``: ``python
    tools/train_net.py``, ``d2geo-train``, else ``python -m d2geo.cli.train``)."""
    args = list(argv)
    if "--resume" not in args:
        # before the config overrides (everything after the flags is an override)
        pos = next((i for i, a in enumerate(args) if "=" in a and not a.startswith("-")), len(args))
        args.insert(pos, "--resume")
    if prog is None:
        script = sys.argv[0] if sys.argv else ""
        if script.endswith(".py") and os.path.basename(script) != "__main__.py":
            prog = shlex.join(["python", script])
        elif os.path.basename(script).startswith("d2geo-train"):
            prog = "d2geo-train"
        else:
            prog = "python -m d2geo.cli.train"
    return prog + " " + shlex.join(args)


def get_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--num-processes", dest="num_gpus", type=int,
        help="processes per machine; the same as --num-gpus (on a machine without CUDA the "
             "processes train on the CPU and talk over gloo)")
    parser.add_argument(
        "--skip-units-check", action="store_true",
        help="train even when the first samples' magnitudes do not fit the model's pixel_mean/pixel_std "
             "(raw DN for reflectance statistics, 8-bit images, SAR linear for dB): the mismatch is "
             "only logged (the same as train.units_check=False)")
    return parser


def main(argv=None) -> None:
    """``d2geo-train``: parse ``argv`` (default: the command line) and train or evaluate in
    ``--num-gpus`` processes; Ctrl-C ends with exit status 130 and the command that continues."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_parser().parse_args(argv)
    check_process_count(args.num_gpus)
    try:
        launch(run, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except KeyboardInterrupt as e:
        # no traceback: say where the weights are and how to continue
        last = last_checkpoint(current_output_dir())
        if isinstance(e, TrainingInterrupted):
            where = f"stopped after iteration {e.iteration}; checkpoint written to {e.checkpoint}"
        else:
            where = (f"stopped; the last checkpoint is {last}" if last else
                     "stopped before the first checkpoint was written (train.checkpointer.period sets how often)")
        msg = f"\nInterrupted (Ctrl-C): {where}."
        if not args.eval_only and (isinstance(e, TrainingInterrupted) or last):
            msg += f" Continue with:\n  {resume_command(argv)}"
        print(msg, file=sys.stderr, flush=True)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
