#!/usr/bin/env python
"""Train or evaluate a d2geo model described by a LazyConfig (``.py``) file.

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

``--config-file`` takes a path, or a config name of the packaged model zoo
(``dino_v2/mask_rcnn_vitb14.py``). Anything after the flags overrides the config:
``train.max_iter=500 dataloader.train.total_batch_size=4 model.backbone.net.weights=...``.

The config needs ``model``, ``dataloader.{train,test,evaluator}``, ``optimizer``,
``lr_multiplier`` and ``train`` (see ``configs/common/train.py`` for its fields).
``train.device`` falls back to ``cpu`` when CUDA is not available.
"""
from __future__ import annotations

import logging
import os
import sys

try:
    import d2geo  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2geo.tools_support import plain_log_files, quiet_third_party_warnings  # noqa: E402

quiet_third_party_warnings()  # before torch and detectron2 are imported

import shlex  # noqa: E402
import signal  # noqa: E402

import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.engine import (  # noqa: E402
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
    launch,
)
from detectron2.engine.defaults import create_ddp_model  # noqa: E402
from detectron2.evaluation import inference_on_dataset, print_csv_format  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import d2geo.model_zoo  # noqa: F401,E402  (registers the d2geo:// and hf:// checkpoint handlers)
from d2geo.engine import GeoCheckpointer, build_train_loader, prepare_resume  # noqa: E402
from d2geo.engine.amp import build_trainer  # noqa: E402
from d2geo.model_zoo import skip_encoder_weights  # noqa: E402

logger = logging.getLogger("d2geo.train_net")

# where the running training writes (for the message after Ctrl-C)
_RUN: dict = {}


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C, after the checkpoint of the last finished iteration was written."""

    def __init__(self, iteration: int, checkpoint: str | None):
        super().__init__(iteration, checkpoint)
        self.iteration, self.checkpoint = iteration, checkpoint


class StopOnCtrlC(hooks.HookBase):
    """The first Ctrl-C lets the running iteration finish, writes a checkpoint of it (the same
    kind as the periodic ones, so ``--resume`` continues exactly there) and stops training;
    a second Ctrl-C stops at once. Only in a single process (several processes stop with the
    last periodic checkpoint)."""

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        # No I/O here: the signal may arrive while the main thread is inside a write to the
        # same log file, and a second write from the handler would raise "reentrant call".
        if self.requested:  # the second Ctrl-C
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True

    def before_train(self):
        if comm.get_world_size() == 1 and threading_is_main():
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def after_step(self):
        if self.requested:
            logger.warning("Ctrl-C: iteration %d finished, writing its checkpoint (Ctrl-C again to stop at once)",
                           self.trainer.iter)
            name = f"model_{self.trainer.iter:07d}"
            self.checkpointer.save(name, iteration=self.trainer.iter)
            raise TrainingInterrupted(self.trainer.iter, os.path.join(self.checkpointer.save_dir, f"{name}.pth"))

    def after_train(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def resume_command(argv) -> str:
    """The command line that continues this run: the same arguments with ``--resume``."""
    args = list(argv)
    if "--resume" not in args:
        # before the config overrides (everything after the flags is an override)
        pos = next((i for i, a in enumerate(args) if "=" in a and not a.startswith("-")), len(args))
        args.insert(pos, "--resume")
    script = sys.argv[0] if sys.argv and sys.argv[0].endswith("train_net.py") else \
        os.path.relpath(os.path.abspath(__file__))
    return shlex.join(["python", script, *args])


def _last_checkpoint(output_dir: str | None) -> str | None:
    if not output_dir:
        return None
    try:
        with open(os.path.join(output_dir, "last_checkpoint"), encoding="utf-8") as f:
            return os.path.join(output_dir, f.read().strip())
    except OSError:
        return None


def resolve_config_file(path: str) -> str:
    """A config path, or a name in the packaged model zoo."""
    if os.path.isfile(path):
        return path
    from d2geo.model_zoo import get_config_file

    try:
        return get_config_file(path)
    except RuntimeError:
        raise FileNotFoundError(
            f"config {path!r} is neither a file nor a config of the d2geo model zoo "
            f"(see d2geo.model_zoo.list_configs())"
        ) from None


def _resolve_device(cfg) -> str:
    device = str(cfg.train.get("device", "cuda"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("train.device=%s but CUDA is not available: running on the CPU", device)
        device = "cpu"
    cfg.train.device = device
    return device


def _share_cpu_threads(device: str, cfg) -> None:
    """Torch threads on the CPU: ``train.cpu_threads`` when the config sets it (unless
    OMP_NUM_THREADS does), else each of several processes gets its share of the cores.

    Tiny models (the quickstarts set 1) gain little from a second thread on an idle machine
    and lose up to 10x on a busy one, where the threads wait for each other."""
    threads = cfg.train.get("cpu_threads", None)
    if device == "cpu" and threads and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(int(threads))
    elif device == "cpu" and comm.get_world_size() > 1:
        per_process = max(1, (os.cpu_count() or 1) // comm.get_local_size())
        torch.set_num_threads(per_process)


def _ddp(model, cfg):
    kwargs = dict(cfg.train.get("ddp", {}))
    if cfg.train.device == "cpu":
        kwargs["device_ids"] = None  # DDP over gloo with a CPU module
        kwargs.pop("fp16_compression", None)
    return create_ddp_model(model, **kwargs)


def do_test(cfg, model):
    """Evaluate ``model`` on ``dataloader.test`` with ``dataloader.evaluator``."""
    if "evaluator" not in cfg.dataloader:
        logger.warning("the config has no dataloader.evaluator: nothing to evaluate")
        return {}
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    if comm.is_main_process():
        print_csv_format(results)
    return results


def maybe_compile(model, cfg):
    """``train.compile=True``: ``torch.compile`` the model's backbone (encoder and pyramid) in
    place, so checkpoints keep their parameter names. The detectron2 heads stay eager: their
    proposal sampling and ROI bookkeeping depend on data, which would break the graph and
    recompile on every new proposal count. The first iterations pay the compilation."""
    if not cfg.train.get("compile", False):
        return model
    target = getattr(model, "backbone", None)
    if target is None:
        raise ValueError("train.compile=True compiles model.backbone, but this model has none")
    logger.info("torch.compile of %s (first iterations compile)", type(target).__name__)
    target.compile()
    return model


def do_train(args, cfg):
    model = instantiate(cfg.model)
    logger.info("Model:\n%s", model)
    model.to(cfg.train.device)
    maybe_compile(model, cfg)

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader, sampler = build_train_loader(cfg.dataloader.train)

    model = _ddp(model, cfg)
    # bfloat16/float16 autocast on the CPU or a GPU when train.amp.enabled (d2geo.engine.amp)
    trainer = build_trainer(model, train_loader, optim, amp=cfg.train.amp)
    extra = {"sampler": sampler} if sampler is not None else {}
    checkpointer = GeoCheckpointer(model, cfg.train.output_dir, trainer=trainer, **extra)
    last_results: dict = {}

    def evaluate():
        last_results.clear()
        last_results.update(do_test(cfg, model))
        return last_results

    trainer.register_hooks([
        hooks.IterationTimer(),
        StopOnCtrlC(checkpointer) if comm.is_main_process() else None,
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, evaluate),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])

    loaded = checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # a resumed checkpoint stores the iteration that had finished
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    if start_iter > 0:  # continue the data stream and the RNGs where the checkpoint left them
        prepare_resume(sampler, start_iter=start_iter, rng_state=loaded.get("rng"),
                       total_batch_size=cfg.dataloader.train.total_batch_size)
    if start_iter >= cfg.train.max_iter:
        logger.info("the checkpoint in %s is already at iteration %d of %d: nothing to train",
                    cfg.train.output_dir, trainer.iter, cfg.train.max_iter)
    trainer.train(start_iter, cfg.train.max_iter)
    return dict(last_results)


def main(args):
    """Run training or evaluation in this process; returns the evaluation results."""
    cfg = LazyConfig.load(resolve_config_file(args.config_file))
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    device = _resolve_device(cfg)
    _RUN["output_dir"] = cfg.train.output_dir
    plain_log_files("detectron2", "fvcore", "d2geo")  # log.txt without the console's colour codes
    default_setup(cfg, args)
    # detectron2's setup logs 'detectron2' and 'fvcore'; d2geo's own messages (dataset
    # generation, checkpoint conversion, the model summary) go to the same log
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="d2geo", abbrev_name="d2geo")
    plain_log_files("detectron2", "fvcore", "d2geo")
    # setup_logger lets DEBUG through; d2geo's debug lines are per sample (e.g. where each file's
    # acquisition time came from): D2GEO_DEBUG=1 shows them
    logging.getLogger("d2geo").setLevel(logging.DEBUG if os.environ.get("D2GEO_DEBUG") else logging.INFO)
    _share_cpu_threads(device, cfg)

    if args.eval_only:
        if cfg.train.init_checkpoint or args.resume:
            # every weight comes from that checkpoint: do not load (or download) encoder weights first
            skip_encoder_weights(cfg.model)
        model = instantiate(cfg.model)
        model.to(device)
        model = _ddp(model, cfg)
        checkpointer = GeoCheckpointer(model, cfg.train.output_dir)
        if not cfg.train.init_checkpoint and not (args.resume and checkpointer.has_checkpoint()):
            raise SystemExit(
                "--eval-only needs weights to evaluate: pass train.init_checkpoint=<model.pth> "
                "(or --resume to take the last checkpoint in train.output_dir)"
            )
        checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
        return do_test(cfg, model)
    return do_train(args, cfg)


def get_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--num-processes", dest="num_gpus", type=int,
        help="processes per machine; the same as --num-gpus (on a machine without CUDA the "
             "processes train on the CPU and talk over gloo)")
    return parser


def check_process_count(num_processes: int) -> None:
    if num_processes < 1:
        raise SystemExit(f"--num-gpus must be at least 1, got {num_processes}")
    if torch.cuda.is_available() and num_processes > torch.cuda.device_count():
        raise SystemExit(
            f"--num-gpus {num_processes} but this machine has {torch.cuda.device_count()} CUDA "
            f"device(s); use at most that many (or hide CUDA with CUDA_VISIBLE_DEVICES= to "
            f"train with CPU processes)"
        )


def invoke_main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_parser().parse_args(argv)
    check_process_count(args.num_gpus)
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except KeyboardInterrupt as e:
        # no traceback: say where the weights are and how to continue
        if isinstance(e, TrainingInterrupted):
            where = f"stopped after iteration {e.iteration}; checkpoint written to {e.checkpoint}"
        else:
            last = _last_checkpoint(_RUN.get("output_dir"))
            where = (f"stopped; the last checkpoint is {last}" if last else
                     "stopped before the first checkpoint was written (train.checkpointer.period sets how often)")
        msg = f"\nInterrupted (Ctrl-C): {where}."
        if not args.eval_only and (isinstance(e, TrainingInterrupted) or _last_checkpoint(_RUN.get("output_dir"))):
            msg += f" Continue with:\n  {resume_command(argv)}"
        print(msg, file=sys.stderr, flush=True)
        raise SystemExit(130) from None


if __name__ == "__main__":
    invoke_main()
