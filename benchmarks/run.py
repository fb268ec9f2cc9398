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
    claymodel's ``Encoder`` (read from the pinned wheels through ``tests/conftest.py``).
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
import datetime as _dt
import itertools
import json
import logging
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402

logger = logging.getLogger("d2geo.benchmarks")

SECTIONS = ("gemm", "encoders", "resolution", "train")
TARGETS = {
    "encoder": 1.05,  # ours / upstream forward latency
    "train": 1.10,  # ours / ViTDet training step
    "gemm": 0.70,  # DINOv2-B/14 at 518 px: fraction of the GEMM rate
}


# -- profiles ---------------------------------------------------------------------------
@dataclass
class Profile:
    name: str
    gemm_n: int
    reps: int
    warmup: int
    encoders: list[dict]
    sweep: dict
    train: dict


TINY = dict(embed_dim=64, depth=2, num_heads=2)

FULL = Profile(
    name="full", gemm_n=2048, reps=7, warmup=2,
    encoders=[
        dict(family="dinov2", label="DINOv2-B/14", ours="dinov2_vitb14", timm="vit_base_patch14_dinov2",
             size=518, arch={}, gemm_target=True),
        dict(family="dinov3", label="DINOv3-B/16", ours="dinov3_vitb16", timm="vit_base_patch16_dinov3_qkvb",
             size=512, arch={}),
        dict(family="prithvi", label="Prithvi-EO-1.0-100M (3 frames)", ours="prithvi_eo_v1_100", size=224,
             frames=3, arch=dict(embed_dim=768, depth=12, num_heads=12)),
        dict(family="clay", label="Clay v1 base (4 bands)", ours="clay_v1_base", size=256,
             arch=dict(embed_dim=768, depth=12, num_heads=12, head_dim=64)),
        dict(family="terramind", label="TerraMind 1.0 base (S2L2A+S1RTC+DEM)", ours="terramind_v1_base", size=224,
             modalities=("S2L2A", "S1RTC", "DEM"), arch=dict(embed_dim=768, depth=12, num_heads=12)),
    ],
    sweep=dict(encoder="dinov2_vits14", label="DINOv2-S/14", arch={}, sizes=(224, 512, 1024, 2048),
               window=14, global_blocks=(2, 5, 8, 11), reps=3, warmup=1, single_run_from=2048),
    train=dict(size=512, batch=2, steps=3, warmup=1, tiny=False),
)

QUICK = Profile(
    name="quick", gemm_n=256, reps=2, warmup=1,
    encoders=[
        dict(family="dinov2", label="DINOv2 tiny", ours="dinov2_vitb14", timm="vit_base_patch14_dinov2",
             size=56, arch=TINY, gemm_target=True),
        dict(family="dinov3", label="DINOv3 tiny", ours="dinov3_vitb16", timm="vit_base_patch16_dinov3_qkvb",
             size=64, arch=TINY),
        dict(family="prithvi", label="Prithvi tiny (2 frames)", ours="prithvi_eo_v1_100", size=32, frames=2,
             arch=TINY),
        dict(family="clay", label="Clay tiny (4 bands)", ours="clay_v1_base", size=32,
             arch=dict(embed_dim=72, depth=2, num_heads=2, head_dim=16)),
        dict(family="terramind", label="TerraMind tiny (S2L2A+S1RTC)", ours="terramind_v1_tiny", size=32,
             modalities=("S2L2A", "S1RTC"), arch=TINY),
    ],
    sweep=dict(encoder="dinov2_vits14", label="DINOv2 tiny", arch=TINY, sizes=(56,), window=2,
               global_blocks=(1,), reps=1, warmup=0, single_run_from=10**9, parallel=True),
    train=dict(size=64, batch=2, steps=1, warmup=0, tiny=True),
)


# -- helpers ----------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    info = {
        "CPU": cpu,
        "logical cores (usable)": f"{os.cpu_count()} ({usable})",
        "torch threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": pkg("timm"),
        "detectron2": pkg("detectron2"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load average at start (1, 5, 15 min)": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "date (UTC)": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
    }
    return info


def time_interleaved(fns: dict[str, Callable[[], Any]], reps: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function, run alternately (A B, B A, ...)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(max(1, reps)):
        for k in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def gemm_rate(n: int, reps: int) -> dict[str, float]:
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = time_interleaved({"mm": lambda: torch.mm(a, b)}, reps=reps, warmup=1)["mm"]
    return {"n": n, "seconds": t, "flops_per_s": 2 * n ** 3 / t}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call, attention included (torch's counter skips CPU flash attention)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_flash(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = cpu_flash
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def smooth_image(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A deterministic image-like input: upsampled coarse noise plus a little fine noise."""
    g = torch.Generator().manual_seed(seed)
    *lead, H, W = shape
    lead_n = math.prod(lead)
    coarse = torch.randn(lead_n, 1, max(2, H // 16), max(2, W // 16), generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
    img = img + 0.1 * torch.randn(lead_n, 1, H, W, generator=g)
    return img.reshape(*lead, H, W)


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.{digits}g}"
    return str(v)


# -- encoders vs upstream -----------------------------------------------------------------
def _encoder_pair(row: dict):
    """(ours_fn, upstream_fn, to_ref_map(upstream_out) -> map like ours, input description, tokens)."""
    import timm

    from d2geo.encoders import build_encoder

    torch.manual_seed(0)
    size, arch, family = row["size"], row["arch"], row["family"]
    if family in ("dinov2", "dinov3"):
        ours = build_encoder(row["ours"], img_size=size, **arch).eval()
        ref = timm.create_model(row["timm"], pretrained=False, num_classes=0, global_pool="", img_size=size,
                                dynamic_img_size=True, **arch).eval()
        weights = ours.vit.state_dict()
        weights.pop("rope.periods", None)  # DINOv3: ours keeps the checkpoint's; timm computes them
        ref.load_state_dict(weights, strict=True)
        x = smooth_image((1, 3, size, size))
        g = size // ours.patch_size
        P = ours.num_prefix_tokens

        def to_map(t):
            return t[:, P:].reshape(1, g, g, -1).permute(0, 3, 1, 2)

        return (lambda: ours(x)), (lambda: ref.forward_features(x)), to_map, f"3x{size}x{size}", g * g
    if family == "prithvi":
        from upstream import terratorch_prithvi

        frames = row["frames"]
        mod = terratorch_prithvi()
        ref = mod.PrithviViT(img_size=size, patch_size=(1, 16, 16), num_frames=frames, in_chans=6,
                             mlp_ratio=4.0, **arch).eval()
        ours = build_encoder(row["ours"], weights=ref.state_dict(), img_size=size, num_frames=frames,
                             **arch).eval()
        x = smooth_image((1, 6, frames, size, size))
        g = size // 16

        def to_map(t):
            return t[:, 1:].reshape(1, frames, g, g, -1).permute(0, 4, 1, 2, 3)

        return ((lambda: ours(x)), (lambda: ref.forward_features(x)[-1]), to_map,
                f"6x{frames}x{size}x{size}", frames * g * g)
    if family == "clay":
        from upstream import claymodel

        mod = claymodel()
        ref = mod.Encoder(mask_ratio=0.0, patch_size=8, shuffle=False, dim=arch["embed_dim"], depth=arch["depth"],
                          heads=arch["num_heads"], dim_head=arch["head_dim"], mlp_ratio=4.0).eval()
        sd = {f"model.encoder.{k}": v for k, v in ref.state_dict().items()}
        ours = build_encoder(row["ours"], weights={"state_dict": sd}, **arch).eval()
        waves = torch.tensor([0.65, 0.56, 0.48, 0.842])  # NAIP red, green, blue, nir
        x = smooth_image((1, 4, size, size))
        meta = {"wavelengths": waves, "gsd": torch.tensor([1.0])}  # no time/location: zeros, as upstream's
        cube = {"pixels": x, "time": torch.zeros(1, 4), "latlon": torch.zeros(1, 4), "gsd": torch.tensor(1.0),
                "waves": waves}
        g = size // 8

        def to_map(t):
            return t[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)

        return ((lambda: ours(x, metadata=meta)), (lambda: ref(cube)[0]), to_map, f"4x{size}x{size}", g * g)
    if family == "terramind":
        from functools import partial

        from upstream import terratorch_terramind

        mod = terratorch_terramind()
        mods = list(row["modalities"])
        ref = mod.terramind_vit.TerraMindViT(
            modalities=mods, merge_method="mean", dim=arch["embed_dim"], encoder_depth=arch["depth"],
            num_heads=arch["num_heads"], mlp_ratio=4, qkv_bias=False, proj_bias=False, mlp_bias=False,
            norm_layer=partial(mod.tm_utils.LayerNorm, eps=1e-6, bias=False), act_layer=torch.nn.SiLU,
            gated_mlp=True).eval()
        ours = build_encoder(row["ours"], weights=ref.state_dict(), bands=mods, **arch).eval()
        chans = [len(ours._channels[m]) for m in mods]
        x = smooth_image((1, sum(chans), size, size))
        inputs = dict(zip(mods, torch.split(x, chans, dim=1)))
        g = size // 16

        def to_map(t):
            return t.reshape(1, g, g, -1).permute(0, 3, 1, 2)

        return ((lambda: ours(x)), (lambda: ref(dict(inputs))[-1]), to_map,
                f"{'+'.join(mods)} {sum(chans)}x{size}x{size}", len(mods) * g * g)
    raise ValueError(f"unknown family {family}")


def bench_encoders(profile: Profile, gemm: dict | None, families: set[str] | None) -> list[dict]:
    rows = []
    for row in profile.encoders:
        if families and row["family"] not in families:
            continue
        out = dict(family=row["family"], label=row["label"], gemm_target=row.get("gemm_target", False))
        logger.info("encoder %s ...", row["label"])
        try:
            ours_fn, ref_fn, to_map, shape, tokens = _encoder_pair(row)
        except Exception as e:  # an unavailable reference must not sink the whole run
            out["error"] = f"not measured: {type(e).__name__}: {e}"
            logger.warning("%s: %s", row["label"], out["error"])
            rows.append(out)
            continue
        with torch.inference_mode():
            err = rel_err(ours_fn(), to_map(ref_fn()))
            t = time_interleaved({"ours": ours_fn, "ref": ref_fn}, reps=profile.reps, warmup=profile.warmup)
        flops = count_flops(ours_fn)
        ref_flops = count_flops(ref_fn)
        out.update(input=shape, tokens=tokens, gflop=flops / 1e9, ref_gflop=ref_flops / 1e9,
                   ours_s=t["ours"], ref_s=t["ref"], ratio=t["ours"] / t["ref"], rel_err=err)
        if gemm:
            out["ours_gemm_frac"] = flops / t["ours"] / gemm["flops_per_s"]
            out["ref_gemm_frac"] = ref_flops / t["ref"] / gemm["flops_per_s"]
        rows.append(out)
    return rows


# -- resolution sweep (one subprocess per measurement) -----------------------------------------
def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss_kb() -> int:
    """Reset the kernel's peak-RSS mark (Linux: ``clear_refs`` 5) and return the current RSS,
    so that the next peak reading covers only what runs after this call. Elsewhere: the
    lifetime peak, which can hide a smaller forward pass behind the model's construction."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_kb("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss_kb() -> int:
    peak = _proc_status_kb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(spec: dict) -> dict:
    """Runs in a fresh process: build, one forward for memory, then timing."""
    torch.set_num_threads(spec["threads"])
    from d2geo.encoders import build_encoder

    torch.manual_seed(0)
    enc = build_encoder(spec["encoder"], weights=spec.get("weights"), **spec["arch"]).eval()
    if not spec.get("weights"):
        with torch.no_grad():  # random DINOv2 layer scales (1e-5) would hide attention entirely
            for name, p in enc.named_parameters():
                if name.endswith(("ls1.gamma", "ls2.gamma")):
                    p.fill_(1.0)
    if spec["window"]:
        enc.set_window_attention(spec["window"], global_blocks=tuple(spec["global_blocks"]))
    p = enc.patch_size
    size = -(-spec["size"] // p) * p  # padded up to the patch size, as GeoBackbone does
    x = smooth_image((1, 3, size, size), seed=1)
    with torch.inference_mode():
        base = _reset_peak_rss_kb()
        t0 = time.perf_counter()
        y = enc(x)
        first = time.perf_counter() - t0
        peak = _peak_rss_kb()
        times = []
        for _ in range(spec["warmup"]):
            enc(x)
        for _ in range(spec["reps"]):
            t0 = time.perf_counter()
            enc(x)
            times.append(time.perf_counter() - t0)
    if spec.get("out"):
        torch.save(y.float(), spec["out"])
    return {"size": size, "tokens": (size // p) ** 2, "rss_base_mb": base / 1024, "rss_peak_mb": peak / 1024,
            "rss_delta_mb": (peak - base) / 1024, "seconds": statistics.median(times) if times else first,
            "timed_runs": len(times) or 1}


def _launch(spec: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO))


def _collect(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode:
        tail = err.strip().splitlines()[-1] if err.strip() else f"exit code {proc.returncode}"
        return {"error": f"not measured: {tail}"}
    return json.loads(out.strip().splitlines()[-1])


def bench_resolution(profile: Profile, weights: str | None) -> dict:
    sw = profile.sweep
    threads = torch.get_num_threads()
    tmp = tempfile.mkdtemp(prefix="d2geo-bench-")
    specs = []
    for size in sw["sizes"]:
        single = size >= sw["single_run_from"]
        for window in (0, sw["window"]):
            specs.append(dict(encoder=sw["encoder"], arch=sw["arch"], weights=weights, size=size, window=window,
                              global_blocks=list(sw["global_blocks"]), threads=threads,
                              reps=0 if single else sw["reps"], warmup=0 if single else sw["warmup"],
                              out=os.path.join(tmp, f"{size}_{window}.pt")))
    if sw.get("parallel"):  # quick mode: numbers are meaningless anyway, save the wall time
        results = [_collect(p) for p in [_launch(s) for s in specs]]
    else:
        results = []
        for s in specs:
            logger.info("resolution %d px, window %s ...", s["size"], s["window"] or "off")
            results.append(_collect(_launch(s)))
    rows = []
    for size in sw["sizes"]:
        pair = [(s, r) for s, r in zip(specs, results) if s["size"] == size]
        (sg, g), (sw_, w) = pair
        row = dict(size=size, global_=g, windowed=w)
        if "error" not in g and "error" not in w:
            row["time_ratio"] = w["seconds"] / g["seconds"]
            # below ~1 MB the RSS peak does not move (pages already resident): no ratio
            row["mem_ratio"] = w["rss_delta_mb"] / g["rss_delta_mb"] if g["rss_delta_mb"] >= 1 else None
            yg, yw = torch.load(sg["out"], weights_only=True), torch.load(sw_["out"], weights_only=True)
            row["cosine"] = torch.nn.functional.cosine_similarity(yw, yg, dim=1).mean().item()
            row["rel_err"] = rel_err(yw, yg)
        rows.append(row)
    for s in specs:
        if os.path.exists(s["out"]):
            os.remove(s["out"])
    os.rmdir(tmp)
    return {"encoder": sw["label"], "window": sw["window"], "global_blocks": sw["global_blocks"],
            "weights": weights or "random (layer scale 1)", "rows": rows}


# -- Mask R-CNN training step -----------------------------------------------------------------
def _rcnn_models(cfg: dict) -> dict[str, Callable[[], torch.nn.Module]]:
    from detectron2 import model_zoo
    from detectron2.config import instantiate
    from detectron2.layers import ShapeSpec

    size, tiny = cfg["size"], cfg["tiny"]
    if tiny:
        dims = dict(embed_dim=64, depth=4, num_heads=2)
        window, global_blocks, channels = 2, (2,), 32
    else:
        dims = dict(embed_dim=384, depth=12, num_heads=6)
        window, global_blocks, channels = 14, (2, 5, 8, 11), 256
    window_blocks = [i for i in range(dims["depth"]) if i not in global_blocks]

    def heads(model_cfg):
        model_cfg.backbone.out_channels = channels
        if tiny:
            model_cfg.proposal_generator.head.in_channels = channels
            model_cfg.proposal_generator.anchor_generator.sizes = [[8], [16], [24], [32], [48]]
            model_cfg.proposal_generator.batch_size_per_image = 64
            model_cfg.proposal_generator.pre_nms_topk = (200, 100)
            model_cfg.proposal_generator.post_nms_topk = (64, 32)
            rh = model_cfg.roi_heads
            rh.num_classes = 2
            rh.batch_size_per_image = 32
            rh.box_head.input_shape = ShapeSpec(channels=channels, height=7, width=7)
            rh.box_head.conv_dims = []
            rh.box_head.fc_dims = [64]
            rh.box_predictor.input_shape = ShapeSpec(channels=64)
            rh.mask_head.input_shape = ShapeSpec(channels=channels, width=14, height=14)
            rh.mask_head.conv_dims = [channels, channels]
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


def bench_train(profile: Profile) -> dict:
    """One training step per row, the rows interleaved round by round; median of the rounds.

    Each model is built once with its project's optimizer and stepped by the trainer a
    training run uses: detectron2's ``SimpleTrainer`` in float32, d2geo's
    ``AutocastTrainer`` (``train.amp``) with bfloat16 autocast. Rows of one model share
    its weights and optimizer state.
    """
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
            model = build()
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

        steps[name] = step

    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    failed: dict[str, str] = {}
    with EventStorage(0):
        order = list(steps)
        for r in range(cfg["warmup"] + cfg["steps"]):
            for name in (order if r % 2 == 0 else order[::-1]):
                if name in failed:
                    continue
                logger.info("training step: %s (round %d)", name, r)
                try:
                    t0, c0 = time.perf_counter(), time.process_time()
                    steps[name]()
                    t1, c1 = time.perf_counter(), time.process_time()
                except Exception as e:
                    failed[name] = f"not measured: {type(e).__name__}: {e}"
                    continue
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


# -- report -------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return lines


def _verdict(value: float | None, limit: float, higher_is_better: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "not measured"
    ok = value >= limit if higher_is_better else value <= limit
    return "met" if ok else "**missed**"


def render(results: dict) -> str:
    md = ["# d2geo benchmarks", ""]
    quick = results["profile"] == "quick"
    md.append(f"Generated by `python benchmarks/run.py{' --quick' if quick else ''}` in "
              f"{results['wall_seconds']:.0f} s. Ratios are ours / reference (below 1: we are faster).")
    if quick:
        md += ["", "**QUICK MODE: tiny models and inputs, a smoke test of the script. The numbers mean "
                   "nothing about performance.**"]
    md += ["", "## Machine", ""]
    md += _table(["", ""], [[k, v] for k, v in results["machine"].items()])
    summary = []

    gemm = results.get("gemm")
    if gemm:
        md += ["", "## GEMM rate", "",
               f"fp32 `torch.mm` of {gemm['n']}x{gemm['n']} matrices: {gemm['seconds'] * 1e3:.1f} ms, "
               f"**{gemm['flops_per_s'] / 1e9:.1f} GFLOP/s** (2n³ FLOPs, median of {results['reps']})."]

    enc = results.get("encoders")
    if enc is not None:
        md += ["", "## Encoder forward latency vs upstream", "",
               "Batch 1, fp32, inference mode, same weights. Upstream: timm (DINOv2, DINOv3), terratorch "
               "`PrithviViT.forward_features`, claymodel `Encoder` (mask ratio 0). `rel err` = "
               "max|ours - upstream| / max|upstream| of the last-layer features.", ""]
        rows = []
        for r in enc:
            if "error" in r:
                rows.append([r["label"], r["error"]] + [""] * 9)
                summary.append([f"{r['label']} latency <= {TARGETS['encoder']}x upstream", r["error"], "not measured"])
                continue
            rows.append([r["label"], r["input"], r["tokens"], r["gflop"], r["ours_s"] * 1e3, r["ref_s"] * 1e3,
                         r["ratio"], r.get("ours_gemm_frac", float("nan")) * 100,
                         r.get("ref_gemm_frac", float("nan")) * 100, r["rel_err"],
                         _verdict(r["ratio"], TARGETS["encoder"])])
            summary.append([f"{r['label']} latency <= {TARGETS['encoder']}x upstream", f"{r['ratio']:.3f}x",
                            _verdict(r["ratio"], TARGETS["encoder"])])
            if r.get("gemm_target") and "ours_gemm_frac" in r:
                summary.append([f"{r['label']} at {r['input']} >= {TARGETS['gemm']:.0%} of GEMM rate",
                                f"{r['ours_gemm_frac']:.1%}",
                                _verdict(r["ours_gemm_frac"], TARGETS["gemm"], higher_is_better=True)])
        md += _table(["encoder", "input", "tokens", "GFLOP", "ours ms", "upstream ms", "ours/upstream",
                      "ours % GEMM", "upstream % GEMM", "rel err", f"<= {TARGETS['encoder']}x"], rows)

    res = results.get("resolution")
    if res is not None:
        md += ["", "## Resolution: global vs window attention", "",
               f"{res['encoder']}, batch 1, fp32, inference; window {res['window']}x{res['window']} tokens, "
               f"global attention in blocks {tuple(res['global_blocks'])}. Weights: {res['weights']}. "
               "Input sides are padded up to the patch size. Memory: rise of the peak RSS of a fresh "
               "process over one forward pass (the peak mark is reset just before it). Drift: last-layer "
               "features, windowed vs global, same weights.",
               ""]
        rows = []
        for r in res["rows"]:
            g, w = r["global_"], r["windowed"]
            if "error" in g or "error" in w:
                rows.append([r["size"], g.get("error") or w.get("error")] + [""] * 8)
                continue
            rows.append([g["size"], g["tokens"], g["seconds"], w["seconds"], r["time_ratio"], g["rss_delta_mb"],
                         w["rss_delta_mb"], r["mem_ratio"], r["cosine"], r["rel_err"]])
        md += _table(["input px", "tokens", "global s", "window s", "window/global time", "global +MB",
                      "window +MB", "window/global memory", "cosine", "rel err"], rows)
        if res["weights"].startswith("random"):
            md += ["", "Drift on random weights only shows the mechanism; run with `--weights <DINOv2 checkpoint>` "
                       "for the drift of pretrained features."]

    tr = results.get("train")
    if tr is not None:
        md += ["", "## Mask R-CNN training step", ""]
        if tr.get("error"):
            md.append(tr["error"])
        else:
            md += [f"{tr['size']} px, batch {tr['batch']}: one trainer step (forward, backward, AdamW step), "
                   "median over rounds in which every row runs once, in alternating order. Both backbones "
                   "have 32x32 tokens at 512 px (DINOv2 runs at patch 16). Each model uses its project's "
                   "optimizer config (d2geo: fused AdamW; detectron2 ViTDet: AdamW). bf16 rows run the "
                   "forward pass under `torch.autocast` (d2geo's `AutocastTrainer`) and are compared with "
                   "ViTDet under the same autocast. CPU s is the process CPU time of the step (on a busy "
                   "machine wall time also counts waiting for a core; CPU time does not).", ""]
            rows = []
            for r in tr["rows"]:
                if "error" in r:
                    rows.append([r["model"], r.get("precision", ""), r["error"]] + [""] * 7)
                    continue
                ratio = r.get("ratio")
                is_ref = r["base"].startswith("ViTDet")
                ok = "reference" if is_ref else _verdict(ratio, TARGETS["train"])
                rows.append([r["model"], r["precision"], r["backbone_mparams"], r["seconds"], r["cpu_seconds"],
                             ratio, r.get("cpu_ratio"), r.get("vs_fp32"), ok])
                if is_ref or ratio is None:
                    continue
                if r["precision"] == "float32":
                    summary.append([f"training step ({r['model']}) <= {TARGETS['train']}x ViTDet",
                                    f"{ratio:.3f}x (CPU time {r['cpu_ratio']:.3f}x)", ok])
                elif r.get("checkpointing"):
                    summary.append([f"training runs with {r['precision']} autocast + activation checkpointing",
                                    f"{r['seconds']:.3g} s/step, {r.get('vs_fp32', float('nan')):.3f}x float32",
                                    "met" if math.isfinite(r["seconds"]) else "**missed**"])
            md += _table(["model", "precision", "backbone Mparams", "step s", "CPU s", "vs ViTDet",
                          "CPU vs ViTDet", "vs own float32", f"<= {TARGETS['train']}x"], rows)

    if summary:
        md += ["", "## Targets", ""] + _table(["target", "measured", "verdict"], summary)
    md += ["", "## Method", "", "See the docstring of `benchmarks/run.py`. Timings are medians; ours and "
           "upstream alternate so that load changes hit both.", ""]
    return "\n".join(md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script works")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--families", default="", help="only these encoder families (dinov2,dinov3,prithvi,clay,terramind)")
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
