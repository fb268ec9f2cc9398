"""Training settings read by tools/train_net.py (and detectron2's lazyconfig_train_net.py).

Override any field on the command line, e.g. ``train.max_iter=2000 train.output_dir=out``.
"""
import torch

train = dict(
    output_dir="./output",
    # weights loaded after the model is built: a detectron2-style checkpoint of the whole
    # model (e.g. a d2geo:// zoo file written by tools/convert_checkpoint.py). Upstream
    # encoder checkpoints go to model.backbone.net.weights instead.
    init_checkpoint="",
    max_iter=20000,
    # autocast for the forward pass: precision 'bfloat16', 'float16' or 'auto' (bfloat16
    # where supported); on the CPU as on GPUs (d2geo.engine.amp.AutocastTrainer)
    amp=dict(enabled=False, precision="auto"),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=2000, max_to_keep=3),
    eval_period=2000,
    log_period=20,
    # tools/train_net.py falls back to the CPU when CUDA is not available
    device="cuda" if torch.cuda.is_available() else "cpu",
    seed=-1,  # >= 0 for reproducible runs (each process adds its rank)
    # torch.compile of model.backbone (encoder + pyramid; d2geo.engine.train_loop.maybe_compile)
    compile=False,
    # before the first step, the first training samples' magnitudes are compared with the
    # model's pixel_mean/pixel_std (d2geo.data.units): raw DN for reflectance statistics, 8-bit
    # images or SAR in linear power for dB stop the run with the fix. False: only a warning
    units_check=True,
    # torch threads per process on the CPU (None: torch's default); OMP_NUM_THREADS wins
    cpu_threads=None,
)
