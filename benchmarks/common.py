"""What every benchmark section shares: the profiles (full and quick sizes), the machine
description, interleaved timing, FLOP counting and number formatting."""
from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
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
        dict(family="ssl4eo", label="SSL4EO-S12 ViT-S/16 (13 bands)", ours="ssl4eo_s12_vits16_dino", size=224,
             arch={}),
        dict(family="ssl4eo_data2vec", label="SSL4EO-S12 data2vec ViT-S/16 (vs timm Beit)",
             ours="ssl4eo_s12_vits16_data2vec", size=224, arch={}),
        dict(family="scalemae", label="Scale-MAE ViT-L/16", ours="scalemae_vitl16", size=224, arch={}),
        dict(family="satlas", label="Satlas Swin-V2-B (9 bands)", ours="satlas_swinb_sentinel2_si_ms", size=256,
             arch={}),
        dict(family="dofa", label="DOFA ViT-B/16 (4 bands)", ours="dofa_vitb16", size=224,
             arch=dict(embed_dim=768, depth=12, num_heads=12)),
        dict(family="copernicusfm", label="Copernicus-FM ViT-B/16 (4 bands, metadata)", ours="copernicusfm_vitb16",
             size=224, arch=dict(embed_dim=768, depth=12, num_heads=12)),
        dict(family="terramind", label="TerraMind 1.0 base (S2L2A+S1RTC+DEM)", ours="terramind_v1_base", size=224,
             modalities=("S2L2A", "S1RTC", "DEM"), arch=dict(embed_dim=768, depth=12, num_heads=12)),
        dict(family="croma", label="CROMA base joint (S2 12 + S1 2 bands, 120 px)", ours="croma_base", size=120,
             arch={}),
        dict(family="panopticon", label="Panopticon ViT-B/14 (S2 4 + S1 2 bands)", ours="panopticon_vitb14",
             size=224, arch={}),
        dict(family="galileo", label="Galileo base (S2+S1 groups, 3 dates, 64 px)", ours="galileo_base", size=64,
             frames=3, arch=dict(embed_dim=768, depth=12, num_heads=12)),
        dict(family="anysat", label="AnySat base (S2 10 bands, 6 dates, 40 m patches)", ours="anysat_base",
             size=64, frames=6, patch_size_m=40, arch={}),
        dict(family="olmoearth", label="OlmoEarth v1 Base (S2 L2A 12 bands, 3 groups, patch 8)",
             ours="olmoearth_v1_base", size=128, arch={}),
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
        dict(family="ssl4eo", label="SSL4EO-S12 tiny", ours="ssl4eo_s12_vits16_dino", size=64,
             arch=dict(TINY, img_size=64)),
        dict(family="ssl4eo_data2vec", label="SSL4EO-S12 data2vec tiny (vs timm Beit)",
             ours="ssl4eo_s12_vits16_data2vec", size=64, arch=dict(TINY, img_size=64)),
        dict(family="scalemae", label="Scale-MAE tiny", ours="scalemae_vitl16", size=64, arch=dict(TINY, img_size=64)),
        dict(family="satlas", label="Satlas Swin-V2 tiny", ours="satlas_swinb_sentinel2_si_ms", size=64,
             arch=dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(2, 2, 4, 4))),
        dict(family="dofa", label="DOFA tiny (4 bands)", ours="dofa_vitb16", size=64, arch=TINY),
        dict(family="copernicusfm", label="Copernicus-FM tiny (4 bands, metadata)", ours="copernicusfm_vitb16",
             size=64, arch=TINY),
        dict(family="terramind", label="TerraMind tiny (S2L2A+S1RTC)", ours="terramind_v1_tiny", size=32,
             modalities=("S2L2A", "S1RTC"), arch=TINY),
        # upstream's ViTs have 16 heads whatever the width
        dict(family="croma", label="CROMA tiny joint (S2+S1)", ours="croma_base", size=64,
             arch=dict(embed_dim=64, depth=2, num_heads=16)),
        dict(family="panopticon", label="Panopticon tiny (S2 4 + S1 2 bands)", ours="panopticon_vitb14", size=56,
             attn_dim=64, arch=TINY),
        dict(family="galileo", label="Galileo tiny (S2+S1 groups, 2 dates)", ours="galileo_nano", size=32, frames=2,
             arch=TINY),
        dict(family="anysat", label="AnySat tiny (S2 10 bands, 3 dates, 20 m patches)", ours="anysat_base",
             size=16, frames=3, patch_size_m=20, arch=dict(embed_dim=64, depth=2, num_heads=2)),
        dict(family="olmoearth", label="OlmoEarth tiny (S2 L2A, 3 groups)", ours="olmoearth_v1_nano", size=32,
             arch=TINY),
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


