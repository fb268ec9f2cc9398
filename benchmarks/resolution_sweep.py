"""Section ``resolution``: global vs window attention from 224 to 2048 px, one fresh
subprocess per measurement (``run.py --child``) so that peak memory is the forward pass's."""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from testkit import rel_err

from .common import REPO, Profile, logger, smooth_image

RUN = Path(__file__).resolve().with_name("run.py")


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
    return subprocess.Popen([sys.executable, str(RUN), "--child", json.dumps(spec)],
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
