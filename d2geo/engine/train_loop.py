"""Train or evaluate a model described by a LazyConfig: what ``d2geo-train``
(``tools/train_net.py``) runs in each process.

:func:`run` takes the parsed command line (detectron2's ``default_argument_parser``:
``config_file``, ``opts``, ``eval_only``, ``resume``) and trains (:func:`do_train`) or
evaluates (:func:`do_test`); launch it with detectron2's ``launch`` for several processes.
Around it: the config may be a model-zoo name (:func:`resolve_config_file`), ``train.device``
falls back to the CPU (:func:`resolve_device`), CPU threads are shared between processes
(:func:`share_cpu_threads`), ``train.compile=True`` compiles the backbone
(:func:`maybe_compile`), and the first Ctrl-C stops after a checkpoint
(:class:`~d2geo.engine.hooks.StopOnCtrlC`).

The config needs ``model``, ``dataloader.{train,test,evaluator}``, ``optimizer``,
``lr_multiplier`` and ``train`` (see ``configs/common/train.py`` for its fields).
"""
from __future__ import annotations

import copy
import logging
import os

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import default_setup, default_writers, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import d2geo.model_zoo  # noqa: F401  (registers the d2geo:// and hf:// checkpoint handlers)
from d2geo.model_zoo import skip_encoder_weights

from .amp import build_trainer
from .checkpoint import GeoCheckpointer
from .hooks import StopOnCtrlC
from ..logs import plain_log_files
from .sampler import build_train_loader, prepare_resume
from .units_check import check_training_units

__all__ = ["run", "do_train", "do_test", "maybe_compile", "resolve_config_file", "resolve_device",
           "share_cpu_threads", "ddp", "check_process_count", "current_output_dir"]

logger = logging.getLogger(__name__)

# where the running training writes (for the message after Ctrl-C)
_RUN: dict = {}


def current_output_dir() -> str | None:
    """``train.output_dir`` of the run :func:`run` started last in this process (None before)."""
    return _RUN.get("output_dir")


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


def resolve_device(cfg) -> str:
    """``train.device``, the CPU when it names CUDA and CUDA is not available (a warning says so);
    written back to ``cfg.train.device``."""
    device = str(cfg.train.get("device", "cuda"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("train.device=%s but CUDA is not available: running on the CPU", device)
        device = "cpu"
    cfg.train.device = device
    return device


def share_cpu_threads(device: str, cfg) -> None:
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


def ddp(model, cfg):
    """``model`` wrapped in DistributedDataParallel when there are several processes (gloo on the CPU)."""
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
    """Train ``cfg.model`` (``args.resume``: continue from the last checkpoint in
    ``train.output_dir``); returns the last evaluation's results."""
    model = instantiate(cfg.model)
    logger.info("Model:\n%s", model)
    model.to(cfg.train.device)
    maybe_compile(model, cfg)

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)

    # before the first step: the first samples' units against the model's statistics
    # (d2geo.engine.units_check; train.units_check=False or --skip-units-check only warns)
    def units_check(dataset, mapper):
        check_training_units(model, dataset, mapper, enabled=bool(cfg.train.get("units_check", True)))

    train_loader, sampler = build_train_loader(cfg.dataloader.train, before=units_check)

    model = ddp(model, cfg)
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


def run(args):
    """Run training or evaluation in this process; returns the evaluation results."""
    # a zoo name becomes its file: detectron2's setup copies the config file into the log
    args = copy.copy(args)
    args.config_file = resolve_config_file(args.config_file)
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    if getattr(args, "skip_units_check", False):
        cfg.train.units_check = False
    device = resolve_device(cfg)
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
    share_cpu_threads(device, cfg)

    if args.eval_only:
        if cfg.train.init_checkpoint or args.resume:
            # every weight comes from that checkpoint: do not load (or download) encoder weights first
            skip_encoder_weights(cfg.model)
        model = instantiate(cfg.model)
        model.to(device)
        model = ddp(model, cfg)
        checkpointer = GeoCheckpointer(model, cfg.train.output_dir)
        if not cfg.train.init_checkpoint and not (args.resume and checkpointer.has_checkpoint()):
            raise SystemExit(
                "--eval-only needs weights to evaluate: pass train.init_checkpoint=<model.pth> "
                "(or --resume to take the last checkpoint in train.output_dir)"
            )
        checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
        return do_test(cfg, model)
    return do_train(args, cfg)


def check_process_count(num_processes: int) -> None:
    """A SystemExit naming the fix for a process count the machine cannot run."""
    if num_processes < 1:
        raise SystemExit(f"--num-gpus must be at least 1, got {num_processes}")
    if torch.cuda.is_available() and num_processes > torch.cuda.device_count():
        raise SystemExit(
            f"--num-gpus {num_processes} but this machine has {torch.cuda.device_count()} CUDA "
            f"device(s); use at most that many (or hide CUDA with CUDA_VISIBLE_DEVICES= to "
            f"train with CPU processes)"
        )
