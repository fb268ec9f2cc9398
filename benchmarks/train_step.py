"""Section ``train``: one Mask R-CNN training step, d2geo's GeoRCNN against detectron2's ViTDet."""
from __future__ import annotations

import itertools
import statistics
import time
from typing import Any, Callable

import torch

from testkit import tiny_rcnn_heads

from .common import REPO, Profile, logger, smooth_image


def _rcnn_models(cfg: dict) -> dict[str, Callable[[], torch.nn.Module]]:
    from detectron2 import model_zoo
    from detectron2.config import instantiate

    size, tiny = cfg["size"], cfg["tiny"]
    if tiny:
        dims = dict(embed_dim=64, depth=4, num_heads=2)
        window, global_blocks, channels = 2, (2,), 32
    else:
        dims = dict(embed_dim=384, depth=12, num_heads=6)
        window, global_blocks, channels = 14, (2, 5, 8, 11), 256
    window_blocks = [i for i in range(dims["depth"]) if i not in global_blocks]

    def heads(model_cfg):
        if tiny:
            return tiny_rcnn_heads(model_cfg, channels)
        model_cfg.backbone.out_channels = channels
        return model_cfg

    def vitdet_cfg():
        return model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model

    def vitdet():
        m = vitdet_cfg()
        net = m.backbone.net
        net.embed_dim, net.depth, net.num_heads = dims["embed_dim"], dims["depth"], dims["num_heads"]
        net.drop_path_rate, net.img_size, net.window_size = 0.1, size, window
        net.window_block_indexes = window_blocks
        m.backbone.square_pad = size
        return instantiate(heads(m))

    def ours(windowed: bool):
        def build():
            from detectron2.config import LazyConfig

            # d2geo's own Mask R-CNN config, so the row follows what users train
            m = LazyConfig.load(str(REPO / "configs" / "common" / "models" / "mask_rcnn_geo.py")).model
            net = m.backbone.net
            net.encoder, net.layers, net.drop_path_rate = "dinov2_vits14", (-1,), 0.1
            net.encoder_kwargs = dict(patch_size=16, **(dims if tiny else {}))
            m.backbone.square_pad = size
            # as many classes as ViTDet's COCO head (the config's default is 1)
            m.roi_heads.num_classes = vitdet_cfg().roi_heads.num_classes
            model = instantiate(heads(m))
            if windowed:
                model.backbone.net.encoder.set_window_attention(window, global_blocks=global_blocks)
            return model
        return build

    return {"ViTDet ViT-S/16 (detectron2)": vitdet, "d2geo DINOv2-S/14 @16, global": ours(False),
            f"d2geo DINOv2-S/14 @16, window {window}": ours(True)}


def _rcnn_batch(size: int, batch: int) -> list[dict]:
    from detectron2.structures import BitMasks, Boxes, Instances

    out = []
    for i in range(batch):
        img = smooth_image((3, size, size), seed=10 + i)
        img = (img - img.min()) / (img.max() - img.min()) * 255
        s = size / 64
        boxes = torch.tensor([[4, 6, 30, 28], [34, 30, 60, 60], [10, 36, 26, 58]], dtype=torch.float32) * s
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.tensor([0, 1, 1])
        masks = torch.zeros(len(boxes), size, size, dtype=torch.bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[k, y0:y1, x0:x1] = True
        inst.gt_masks = BitMasks(masks)
        out.append({"image": img, "height": size, "width": size, "instances": inst})
    return out


def _rcnn_optimizer(model: torch.nn.Module, ours: bool, depth: int) -> torch.optim.Optimizer:
    """The optimizer each project's config builds: d2geo's configs/common/optim.py (fused AdamW,
    layer-wise lr decay) or detectron2's ViTDet recipe (common/optim.py AdamW, decay 0.7)."""
    from functools import partial

    from detectron2 import model_zoo
    from detectron2.config import LazyConfig, instantiate

    if ours:
        opt = LazyConfig.load(str(REPO / "configs" / "common" / "optim.py")).AdamW
    else:
        from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate

        opt = model_zoo.get_config("common/optim.py").AdamW
        opt.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=depth, lr_decay_rate=0.7)
        opt.params.overrides = {"pos_embed": {"weight_decay": 0.0}}
    opt.params.model = model
    return instantiate(opt)


#: training-step rows: (label suffix, model key prefix, autocast dtype or None, activation checkpointing)
_TRAIN_ROWS = (
    ("", "ViTDet", None, False),
    ("", "d2geo DINOv2-S/14 @16, global", None, False),
    ("", "d2geo DINOv2-S/14 @16, window", None, False),
    (", bf16 autocast", "ViTDet", "bfloat16", False),
    (", bf16 autocast", "d2geo DINOv2-S/14 @16, global", "bfloat16", False),
    (", bf16 autocast + activation checkpointing", "d2geo DINOv2-S/14 @16, global", "bfloat16", True),
)


def bench_train(profile: Profile, device: str = "cpu") -> dict:
    """One training step per row, the rows interleaved round by round; median of the rounds.

    Each model is built once with its project's optimizer and stepped by the trainer a
    training run uses: detectron2's ``SimpleTrainer`` in float32, d2geo's
    ``AutocastTrainer`` (``train.amp``) with bfloat16 autocast. Rows of one model share
    its weights and optimizer state. On a CUDA ``device`` each step ends with a synchronize
    and the rows report the peak GPU memory of their steps.
    """
    cuda = str(device).startswith("cuda")
    cfg = profile.train
    try:
        import detectron2  # noqa: F401
        import d2geo.modeling  # noqa: F401
        from detectron2.utils.events import EventStorage

        from d2geo.engine.amp import build_trainer
    except Exception as e:
        return {"error": f"not measured: {type(e).__name__}: {e}", "rows": []}
    batch = _rcnn_batch(cfg["size"], cfg["batch"])
    builders = _rcnn_models(cfg)
    models: dict[str, Any] = {}
    for key, build in builders.items():
        logger.info("training step: building %s ...", key)
        try:
            torch.manual_seed(0)
            model = build().to(device)
            is_ours = key.startswith("d2geo")
            depth = model.backbone.net.encoder.depth if is_ours else len(model.backbone.net.blocks)
            models[key] = (model, _rcnn_optimizer(model, is_ours, depth))
        except Exception as e:
            models[key] = e

    rows, steps = [], {}
    for suffix, prefix, precision, ckpt in _TRAIN_ROWS:
        key = next(k for k in builders if k.startswith(prefix))
        name = key + suffix
        row = dict(model=name, precision=precision or "float32", checkpointing=ckpt, base=key)
        rows.append(row)
        if isinstance(models[key], Exception):
            e = models[key]
            row["error"] = f"not measured: {type(e).__name__}: {e}"
            continue
        model, opt = models[key]
        row["backbone_mparams"] = sum(p.numel() for p in model.backbone.parameters()) / 1e6
        trainer = build_trainer(model, itertools.repeat(batch), opt,
                                amp=dict(enabled=precision is not None, precision=precision or "bfloat16"))
        encoder = getattr(model.backbone.net, "encoder", None)

        def step(trainer=trainer, encoder=encoder, ckpt=ckpt):
            if encoder is not None:
                encoder.set_grad_checkpointing(ckpt)
            trainer.run_step()
            if cuda:
                torch.cuda.synchronize()

        steps[name] = step

    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    failed: dict[str, str] = {}
    peak: dict[str, int] = {}
    with EventStorage(0):
        order = list(steps)
        for r in range(cfg["warmup"] + cfg["steps"]):
            for name in (order if r % 2 == 0 else order[::-1]):
                if name in failed:
                    continue
                logger.info("training step: %s (round %d)", name, r)
                try:
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    t0, c0 = time.perf_counter(), time.process_time()
                    steps[name]()
                    t1, c1 = time.perf_counter(), time.process_time()
                except Exception as e:
                    failed[name] = f"not measured: {type(e).__name__}: {e}"
                    continue
                if cuda:
                    peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated())
                if r >= cfg["warmup"]:
                    wall[name].append(t1 - t0)
                    cpu[name].append(c1 - c0)
    for row in rows:
        name = row["model"]
        if name in failed:
            row["error"] = failed[name]
        elif wall.get(name):
            row["seconds"] = statistics.median(wall[name])
            row["cpu_seconds"] = statistics.median(cpu[name])
            if name in peak:
                row["peak_gpu_mb"] = peak[name] / 2**20
    # each row against ViTDet at the same precision (float32 ViTDet if that one is missing)
    refs = {r["precision"]: r for r in rows if r["base"].startswith("ViTDet") and "seconds" in r}
    for r in rows:
        ref = refs.get(r["precision"], refs.get("float32"))
        if ref is not None and "seconds" in r:
            r["reference"] = ref["model"]
            r["ratio"] = r["seconds"] / ref["seconds"]
            r["cpu_ratio"] = r["cpu_seconds"] / ref["cpu_seconds"]
    fp32 = {r["base"]: r for r in rows if r["precision"] == "float32" and "seconds" in r}
    for r in rows:
        if r["precision"] != "float32" and "seconds" in r and r["base"] in fp32:
            r["vs_fp32"] = r["seconds"] / fp32[r["base"]]["seconds"]
    return {"size": cfg["size"], "batch": cfg["batch"], "rows": rows}
