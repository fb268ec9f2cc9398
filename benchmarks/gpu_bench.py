#!/usr/bin/env python
"""The GPU benchmarks of benchmarks/gpu_check.sh, written to docs/benchmarks-gpu.md.

    python benchmarks/gpu_bench.py --device cuda --json results.json --doc docs/benchmarks-gpu.md
    python benchmarks/gpu_bench.py --device cpu --quick ...     # the dry run: tiny sizes

Sections, in this order (``--sections`` picks some):

``gemm``      the device's matrix-multiply rate, float32 (TF32 off) and bfloat16 (``n x n x n``).
``encoders``  forward latency (batch 1) of every encoder family against its upstream
              implementation (benchmarks/encoder_latency.py's pairs: same architecture, weights
              and input), float32 and bfloat16 autocast, with the relative error against upstream
              and the peak GPU memory of one forward above the weights.
``train``     benchmarks/train_step.py's rows on the device: d2geo's GeoRCNN step against
              detectron2's ViTDet (float32, bfloat16 autocast, activation checkpointing), with
              each row's peak GPU memory.
``region``    benchmarks/region.py on the device: km² of scene per second, d2geo's
              ``predict_region`` against terratorch's tiled inference (same model and windows),
              peak GPU memory.
``compile``   one encoder's forward, eager against ``torch.compile`` (bfloat16 autocast on CUDA):
              compile seconds, latency, and the relative difference of the outputs.

Every section writes the JSON and the page when it ends, so a run stopped by its time limit
keeps what it measured; a section that would start after ``--deadline`` is recorded as not
run. Exit status 1 when any section or row failed.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.common import FULL, QUICK, fmt, logger, machine_info, time_interleaved  # noqa: E402
from testkit import rel_err  # noqa: E402

SECTIONS = ("gemm", "encoders", "train", "region", "compile")


# -- device -----------------------------------------------------------------------------------
def device_info(device: str) -> dict[str, Any]:
    info = {k: v for k, v in machine_info().items() if k != "load average at start (1, 5, 15 min)"}
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(device)
        info = {"device": f"{p.name} ({p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
                          f"{p.multi_processor_count} SMs)",
                "CUDA (torch)": torch.version.cuda, "cuDNN": torch.backends.cudnn.version(), **info}
        try:
            drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip()
            info["driver"] = drv or "unknown"
        except (OSError, subprocess.SubprocessError):
            info["driver"] = "unknown (no nvidia-smi)"
    else:
        info = {"device": f"CPU: {info['CPU']} (dry run)", **info}
    return info


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: str) -> Callable[[], Any]:
    def run():
        out = fn()
        _sync(device)
        return out
    return run


def _peak_above(fn: Callable[[], Any], device: str) -> float | None:
    """Peak GPU memory of one call above what was allocated before it (MB)."""
    if not device.startswith("cuda"):
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    _sync(device)
    del out
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def relocate(fns, device: str) -> None:
    """Move what the closures of ``fns`` hold (modules, tensors, dicts/lists of tensors) to
    ``device``, in place: benchmarks/encoder_latency.py's pairs are built on the CPU."""
    seen: set[int] = set()

    def move(obj):
        if isinstance(obj, torch.nn.Module):
            return obj.to(device)
        if isinstance(obj, torch.Tensor):
            return obj.to(device)
        if isinstance(obj, dict):
            for k in list(obj):
                obj[k] = move(obj[k])
            return obj
        if isinstance(obj, list):
            obj[:] = [move(v) for v in obj]
            return obj
        if isinstance(obj, types.FunctionType):
            walk(obj)
        return obj

    def walk(fn):
        if id(fn) in seen:
            return
        seen.add(id(fn))
        for cell in fn.__closure__ or ():
            try:
                cell.cell_contents = move(cell.cell_contents)
            except ValueError:  # an empty cell
                pass

    for fn in fns:
        walk(fn)


def _autocast(device: str, dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype))


# -- sections ---------------------------------------------------------------------------------
def bench_gemm(device: str, quick: bool) -> list[dict]:
    n = 256 if quick else 8192
    rows = []
    for dtype in ("float32", "bfloat16"):
        t = _mm_seconds(n, getattr(torch, dtype), device, reps=5 if quick else 10)
        rows.append({"dtype": dtype, "n": n, "seconds": t, "tflops": 2 * n ** 3 / t / 1e12})
    return rows


def _mm_seconds(n: int, dtype: torch.dtype, device: str, reps: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return time_interleaved({"mm": _timed(lambda: torch.mm(a, b), device)}, reps=reps, warmup=2)["mm"]


def bench_encoders(device: str, quick: bool, families: set[str] | None = None) -> list[dict]:
    from benchmarks.encoder_latency import _encoder_pair

    profile = QUICK if quick else FULL
    rows = []
    for spec in profile.encoders:
        if families and spec["family"] not in families:
            continue
        logger.info("encoder %s on %s ...", spec["label"], device)
        try:
            ours_fn, ref_fn, to_map, shape, tokens = _encoder_pair(spec)
            relocate([ours_fn, ref_fn, to_map], device)
        except Exception as e:
            if type(e).__name__ == "UpstreamUnavailable":  # a reference in no wheel, its checkout not given
                rows.append(dict(family=spec["family"], label=spec["label"], not_measured=str(e)))
            else:
                rows.append(dict(family=spec["family"], label=spec["label"], error=f"{type(e).__name__}: {e}"))
            continue
        for dtype in ("float32", "bfloat16"):
            row = dict(family=spec["family"], label=spec["label"], input=shape, tokens=tokens, dtype=dtype)
            try:
                with torch.inference_mode(), _autocast(device, dtype):
                    ours_out = ours_fn()
                    if ours_out.device.type != torch.device(device).type:
                        raise RuntimeError(f"ours ran on {ours_out.device}, not {device}")
                    row["rel_err"] = rel_err(ours_out.float(), to_map(ref_fn()).float())
                    del ours_out
                    t = time_interleaved({"ours": _timed(ours_fn, device), "ref": _timed(ref_fn, device)},
                                         reps=profile.reps, warmup=profile.warmup)
                    row.update(ours_s=t["ours"], ref_s=t["ref"], ratio=t["ours"] / t["ref"],
                               ours_peak_mb=_peak_above(ours_fn, device), ref_peak_mb=_peak_above(ref_fn, device))
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
        del ours_fn, ref_fn, to_map
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def bench_train(device: str, quick: bool) -> dict:
    from benchmarks.train_step import bench_train as run

    return run(QUICK if quick else FULL, device=device)


def bench_region(device: str, quick: bool) -> dict:
    from detectron2.config import LazyConfig, instantiate

    from benchmarks import region

    args = types.SimpleNamespace(tile=128 if quick else 256, overlap=32 if quick else 64,
                                 batch_size=4 if quick else 16, device=device)
    side = 256 if quick else 2048
    work = tempfile.mkdtemp(prefix="d2geo-gpu-region-")
    torch.manual_seed(0)
    weights = os.path.join(work, "model.pth")
    torch.save({"model": instantiate(LazyConfig.load(str(region.CONFIG)).model).state_dict()}, weights)
    scene = os.path.join(work, f"scene_{side}.tif")
    region.write_scene(scene, side, seed=0)
    rows = []
    for impl in ("d2geo", "terratorch"):
        logger.info("region: %s on %s ...", impl, device)
        try:
            rows.append(region._run(impl, [scene], 1, args, weights, work))
        except Exception as e:
            rows.append({"impl": impl, "error": f"{type(e).__name__}: {str(e)[-1500:]}"})
    return {"side": side, "tile": args.tile, "overlap": args.overlap, "batch": args.batch_size, "rows": rows}


def bench_compile(device: str, quick: bool) -> dict:
    from benchmarks.common import smooth_image
    from d2geo.encoders import build_encoder

    if quick:
        name, size, arch = "dinov2_vitb14", 56, dict(embed_dim=64, depth=2, num_heads=2)
    else:
        name, size, arch = "dinov2_vitb14", 518, {}
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    torch.manual_seed(0)
    eager = build_encoder(name, img_size=size, **arch).eval().to(device)
    x = smooth_image((1, 3, size, size)).to(device)
    compiled = torch.compile(eager)
    out = {"encoder": f"{name} {'tiny ' if arch else ''}{size} px", "dtype": dtype}
    with torch.inference_mode(), _autocast(device, dtype):
        t0 = time.perf_counter()
        got = compiled(x)
        _sync(device)
        out["compile_s"] = time.perf_counter() - t0
        want = eager(x)
        out["rel_diff"] = rel_err(got.float(), want.float())
        fns = {"eager": _timed(lambda: eager(x), device), "compiled": _timed(lambda: compiled(x), device)}
        t = time_interleaved(fns, reps=3 if quick else 20, warmup=1 if quick else 3)
    out.update(eager_s=t["eager"], compiled_s=t["compiled"], speedup=t["eager"] / t["compiled"],
               eager_peak_mb=_peak_above(lambda: eager(x), device))
    return out


RUNNERS = {"gemm": bench_gemm, "encoders": bench_encoders, "train": bench_train, "region": bench_region,
           "compile": bench_compile}


# -- report -----------------------------------------------------------------------------------
def _ms(s):
    return fmt(s * 1e3) if isinstance(s, (int, float)) else "–"


def _mb(v):
    return f"{v:.0f}" if isinstance(v, (int, float)) else "–"


def failures(results: dict) -> list[str]:
    """Every section or row that failed, as 'section: what'."""
    bad = []
    for sec, res in results.get("sections", {}).items():
        if isinstance(res, dict) and "error" in res and "rows" not in res:
            bad.append(f"{sec}: {res['error']}")
            continue
        rows = res if isinstance(res, list) else res.get("rows", []) if isinstance(res, dict) else []
        for r in rows:
            if "error" in r:
                bad.append(f"{sec}: {r.get('label') or r.get('model') or r.get('impl')}: {r['error'][:300]}")
    return bad


def render(results: dict) -> str:
    info, secs = results["device"], results["sections"]
    quick = results.get("quick")
    dry = " with --dry-run on the CPU at tiny sizes: these numbers only show that the script runs" if quick else ""
    lines = ["# d2geo benchmarks on a GPU", "",
             f"Device: **{info.get('device')}**. Generated by `bash benchmarks/gpu_check.sh` (docs/gpu.md)"
             f"{dry} in {results.get('wall_seconds', 0):.0f} s.", "",
             "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    if "gemm" in secs:
        lines += ["", "## Matrix multiply", "", "| dtype | n | ms | TFLOP/s |", "|---|---|---|---|"]
        for r in _rows(secs["gemm"]):
            lines.append(f"| {r['dtype']} | {r['n']} | {_ms(r['seconds'])} | {fmt(r['tflops'])} |")
    if "encoders" in secs:
        lines += ["", "## Encoders against upstream (forward, batch 1)", "",
                  "Same architecture, weights and input on both sides (benchmarks/encoder_latency.py); "
                  "float32 at torch's defaults (no TF32 in matmuls, TF32 in cuDNN convolutions) and bfloat16 autocast. "
                  "Peak: GPU memory "
                  "of one forward above the weights.", "",
                  "| encoder | input | dtype | ours ms | upstream ms | ours/upstream | rel. err vs upstream | "
                  "ours peak MB | upstream peak MB |", "|---|---|---|---|---|---|---|---|---|"]
        for r in _rows(secs["encoders"]):
            if "not_measured" in r:
                lines.append(f"| {r['label']} | – | – | not measured: {r['not_measured'][:200]} | | | | | |")
                continue
            if "error" in r:
                lines.append(f"| {r['label']} | {r.get('input', '–')} | {r.get('dtype', '–')} | failed: "
                             f"{r['error'][:200]} | | | | | |")
                continue
            lines.append(f"| {r['label']} | {r['input']} | {r['dtype']} | {_ms(r['ours_s'])} | {_ms(r['ref_s'])} | "
                         f"{fmt(r['ratio'])} | {r['rel_err']:.1e} | {_mb(r['ours_peak_mb'])} | "
                         f"{_mb(r['ref_peak_mb'])} |")
    if "train" in secs:
        tr = secs["train"]
        lines += ["", f"## Mask R-CNN training step ({tr.get('size', '?')} px, batch {tr.get('batch', '?')})", "",
                  "benchmarks/train_step.py's rows: forward, backward and AdamW step, median of the rounds.", "",
                  "| model | precision | ms | vs ViTDet | vs float32 | peak GPU MB |", "|---|---|---|---|---|---|"]
        for r in _rows(tr):
            if "error" in r or "seconds" not in r:
                lines.append(f"| {r['model']} | {r['precision']} | failed: {r.get('error', 'not run')[:200]} | | | |")
                continue
            lines.append(f"| {r['model']} | {r['precision']} | {_ms(r['seconds'])} | {fmt(r.get('ratio'))} | "
                         f"{fmt(r.get('vs_fp32'))} | {_mb(r.get('peak_gpu_mb'))} |")
    if "region" in secs:
        rg = secs["region"]
        lines += ["", "## Region inference", "",
                  f"One {rg.get('side')} x {rg.get('side')} px 6-band scene at 10 m, the quickstart Semantic FPN, "
                  f"{rg.get('tile')} px windows overlapping by {rg.get('overlap')} px, {rg.get('batch')} windows a "
                  "forward, float32 (benchmarks/region.py).", "",
                  "| implementation | km² | s | km²/s | peak GPU MB | peak RSS MB |", "|---|---|---|---|---|---|"]
        for r in _rows(rg):
            if "error" in r:
                lines.append(f"| {r['impl']} | failed: {r['error'][:200]} | | | | |")
                continue
            lines.append(f"| {r['impl']} | {r['km2']:.2f} | {r['seconds']:.2f} | {r['km2_per_s']:.2f} | "
                         f"{_mb(r.get('peak_gpu_mb'))} | {_mb(r['peak_mb'])} |")
    if "compile" in secs:
        c = secs["compile"]
        lines += ["", "## torch.compile", ""]
        if "error" in c:
            lines.append(f"failed: {c['error'][:300]}")
        else:
            lines += ["| encoder | dtype | compile s | eager ms | compiled ms | speed-up | rel. diff |",
                      "|---|---|---|---|---|---|---|",
                      f"| {c['encoder']} | {c['dtype']} | {c['compile_s']:.1f} | {_ms(c['eager_s'])} | "
                      f"{_ms(c['compiled_s'])} | {fmt(c['speedup'])} | {c['rel_diff']:.1e} |"]
    notrun = [s for s, r in secs.items() if isinstance(r, dict) and r.get("not_run")]
    if notrun:
        lines += ["", f"Not run (out of time): {', '.join(notrun)}."]
    return "\n".join(lines) + "\n"


def _rows(res):
    return res if isinstance(res, list) else res.get("rows", []) if isinstance(res, dict) else []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the dry run)")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--families", default="", help="only these encoder families")
    ap.add_argument("--json", default=None, help="raw results (rewritten after each section)")
    ap.add_argument("--doc", default=None, help="markdown page (rewritten after each section)")
    ap.add_argument("--deadline", type=float, default=None, help="epoch seconds after which no section starts")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA device (use --device cpu for a dry run)")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    start = time.perf_counter()
    results: dict[str, Any] = {"device": device_info(args.device), "quick": args.quick, "sections": {},
                               "seconds": {}}
    families = {f.strip() for f in args.families.split(",") if f.strip()} or None
    for sec in sections:
        if args.deadline is not None and time.time() > args.deadline:
            results["sections"][sec] = {"not_run": True, "error": "not run: the time budget was spent"}
        else:
            logger.info("== %s", sec)
            t0 = time.perf_counter()
            try:
                kw = {"families": families} if sec == "encoders" else {}
                results["sections"][sec] = RUNNERS[sec](args.device, args.quick, **kw)
            except Exception as e:  # one section's failure must not sink the others
                logger.exception("section %s failed", sec)
                results["sections"][sec] = {"error": f"{type(e).__name__}: {e}"}
            results["seconds"][sec] = time.perf_counter() - t0
        results["wall_seconds"] = time.perf_counter() - start
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        if args.doc:
            Path(args.doc).parent.mkdir(parents=True, exist_ok=True)
            Path(args.doc).write_text(render(results))
    bad = failures(results)
    for b in bad:
        logger.error("FAILED %s", b)
    print(render(results))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
