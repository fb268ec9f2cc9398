#!/usr/bin/env python
"""Region inference: scene throughput and peak memory, d2geo vs terratorch's tiled inference.

    python benchmarks/region.py                 # writes docs/benchmarks-region.md
    python benchmarks/region.py --sizes 256,512 --scene 512 --output /tmp/region.md
    python benchmarks/region.py --model-size vitb   # ViT-B: runtimes and levers (benchmarks/region_vitb.py)

Same model, same scenes, same windows for both: the quickstart Semantic FPN
(``configs/quickstart/semantic_fpn_tiny.py``, random weights), 6-band int16 scenes of
the synthetic generator at 10 m, ``--tile`` px windows overlapping by ``--overlap`` px,
``--batch-size`` windows a forward, float32, one torch thread per process.

* **d2geo**: :func:`d2geo.inference.region.predict_region` (windows read from the file by a
  DataLoader worker, blended in strips, COG class map written).
* **terratorch**: ``terratorch/tasks/tiled_inference.py`` loaded from the pinned wheel
  (``testkit/upstream.py``), the scene read whole with ``d2geo.data.geotiff.read_geotiff``
  (the way its ``tiled_inference`` takes input: one tensor), ``crop=tile``,
  ``stride=tile - overlap``, ``delta=0``, the same model through a ``model_forward`` that
  returns the ``sem_seg`` logits; the arg-max is written as a GeoTIFF.
* **2 processes**: two scenes, one per process, started together (d2geo: its
  round-robin sharding of ``predict_region``; terratorch has no multi-scene runner: one
  process per scene by hand).

Throughput is km^2 of scene per second of wall time from the moment every process has
its model loaded to the last one done; on a shared machine the CPU time (the processes',
their reader workers' included) is the steadier measure. Peak memory is the peak RSS (VmHWM) of a process
(the largest one for 2 processes) measured from a reset after the model was loaded; d2geo's
reader worker (a forked process) is reported on its own. The memory sweep grows square scenes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))

CONFIG = REPO / "configs" / "quickstart" / "semantic_fpn_tiny.py"
BEGIN, END = "<!-- region benchmark: begin -->", "<!-- region benchmark: end -->"


# ------------------------------------------------------------------------------ helpers
def _vmhwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def terratorch_tiled_inference():
    """terratorch 1.2.13's ``tasks/tiled_inference.py``, loaded from the wheel. Its only
    terratorch import, ``pad_images``, is not on the path used here; a stub stands in."""
    import types

    from testkit import upstream

    for name in ("terratorch", "terratorch.models"):
        sys.modules.setdefault(name, types.ModuleType(name))
    utils = types.ModuleType("terratorch.models.utils")

    def pad_images(*a, **k):  # pragma: no cover - tiled_inference imports it but never calls it
        raise RuntimeError("pad_images stub called")

    utils.pad_images = pad_images
    sys.modules.setdefault("terratorch.models.utils", utils)
    return upstream.load_upstream_module("terratorch", "terratorch/tasks/tiled_inference.py", "_ref_tiled_inference")


def write_scene(path: str, size: int, seed: int = 0) -> None:
    """A ``size x size`` scene: a mosaic of the generator's 64 px tiles, 10 m, UTM 10N."""
    import numpy as np
    from rasterio.transform import from_origin

    from d2geo.data.synthetic.generator import render_tile, write_geotiff

    rng = np.random.default_rng(seed)
    n = -(-size // 64)
    rows = [np.concatenate([render_tile(rng, 64, 64, cloud_prob=0, nodata_prob=0)[0][0] for _ in range(n)], axis=2)
            for _ in range(n)]
    canvas = np.concatenate(rows, axis=1)[:, :size, :size]
    write_geotiff(path, canvas, transform=from_origin(500000 + seed * size * 10, 4200000, 10, 10))


# -------------------------------------------------------------------------------- child
def child(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from d2geo.tools_support import load_model, quiet_third_party_warnings

    quiet_third_party_warnings()
    device = spec.get("device", "cpu")
    model, _ = load_model(str(CONFIG), spec["weights"], device)
    scenes = spec["scenes"]
    # every process ready (model loaded) before any starts: the wall time is compute only
    Path(spec["ready"] + f".{spec['rank']}").touch()
    while len([p for p in os.listdir(os.path.dirname(spec["ready"]))
               if p.startswith(os.path.basename(spec["ready"]) + ".")]) < spec["world"]:
        time.sleep(0.01)
    _reset_peak()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.time()
    if spec["impl"] == "d2geo":
        from d2geo.inference import RegionOptions
        from d2geo.inference.region import predict_region

        opts = RegionOptions(tile=spec["tile"], overlap=spec["overlap"], batch_size=spec["batch"], num_workers=1,
                             amp="off")
        predict_region(model, scenes, spec["out"], opts, rank=spec["rank"], world_size=spec["world"],
                       progress=False)
    else:
        import rasterio

        from d2geo.data.geotiff import read_geotiff

        ti = terratorch_tiled_inference()
        tile, stride = spec["tile"], spec["tile"] - spec["overlap"]

        def forward(x):
            outs = model([{"image": xi, "height": xi.shape[-2], "width": xi.shape[-1]} for xi in x])
            return torch.stack([o["sem_seg"] for o in outs])

        for i, path in enumerate(scenes):
            if i % spec["world"] != spec["rank"]:
                continue
            s = read_geotiff(path)
            with torch.no_grad():
                logits = ti.tiled_inference(forward, torch.as_tensor(s.image)[None], crop=tile, stride=stride,
                                            delta=0, batch_size=spec["batch"], padding=False, device=device)
            labels = logits[0].argmax(0).cpu().numpy().astype("uint8")
            with rasterio.open(os.path.join(spec["out"], Path(path).stem + ".tt.tif"), "w", driver="GTiff",
                               width=labels.shape[1], height=labels.shape[0], count=1, dtype="uint8",
                               crs=s.crs, transform=s.transform, compress="deflate") as dst:
                dst.write(labels[None])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t1 = time.time()
    r1, rc = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime) + rc.ru_utime + rc.ru_stime
    return {"t0": t0, "t1": t1, "cpu": cpu, "peak_mb": _vmhwm_mb(),
            "reader_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None}


def _run(impl: str, scenes: list[str], world: int, args, weights: str, work: str) -> dict:
    out = tempfile.mkdtemp(dir=work)
    ready = os.path.join(tempfile.mkdtemp(dir=work), "ready")
    procs = []
    for rank in range(world):
        spec = dict(impl=impl, scenes=scenes, rank=rank, world=world, tile=args.tile, overlap=args.overlap,
                    batch=args.batch_size, weights=weights, out=out, ready=ready,
                    device=getattr(args, "device", "cpu"))
        # the caller's PYTHONPATH stays (the GPU check puts its installed wheels there)
        env = dict(os.environ, OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        procs.append(subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    res = []
    for p in procs:
        o, e = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"{impl} child failed:\n{e[-3000:]}")
        res.append(json.loads(o.strip().splitlines()[-1]))
    import rasterio

    km2 = 0.0
    for s in scenes:
        with rasterio.open(s) as src:
            km2 += src.width * src.height * abs(src.transform.a * src.transform.e) / 1e6
    wall = max(r["t1"] for r in res) - min(r["t0"] for r in res)
    cpu = sum(r.get("cpu", float("nan")) for r in res)
    return {"impl": impl, "processes": world, "km2": km2, "seconds": wall, "km2_per_s": km2 / wall,
            "cpu_s": cpu, "km2_per_cpu_s": km2 / cpu,
            "peak_mb": max(r["peak_mb"] for r in res),
            "peak_gpu_mb": max((r["peak_gpu_mb"] for r in res if r.get("peak_gpu_mb") is not None), default=None),
            "reader_peak_mb": max(r["reader_mb"] for r in res) if impl == "d2geo" else None}


def _run_vitb_child(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(dict(spec, vitb=True))], env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{spec['name']} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-size", choices=("tiny", "vitb"), default="tiny",
                    help="tiny: the quickstart model (the defaults below); vitb: a DINOv2 ViT-B/14 Semantic FPN, "
                         "d2geo's runtimes and levers (benchmarks/region_vitb.py; defaults: --scene 1024 --tile 224 "
                         "--sizes 512,1024,2048)")
    ap.add_argument("--scene", type=int, default=None, help="side of the scenes of the throughput rows (px)")
    ap.add_argument("--sizes", default=None, help="scene sides of the memory sweep (px)")
    ap.add_argument("--tile", type=int, default=None)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="vitb: torch / onnxruntime threads a process")
    ap.add_argument("--repeats", type=int, default=3, help="vitb: round-robin repeats (medians)")
    ap.add_argument("--large-tile", type=int, default=448, help="vitb: the larger-window lever's window (px)")
    ap.add_argument("--compile", action="store_true", help="vitb: also a torch.compile row (slow to compile)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (benchmarks/gpu_bench.py runs it on the GPU)")
    ap.add_argument("--output", default=str(REPO / "docs" / "benchmarks-region.md"),
                    help="markdown page whose part between the markers is (re)written (the rest is kept)")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        if spec.get("vitb"):
            import region_vitb

            print(json.dumps(region_vitb.child(spec)))
        else:
            print(json.dumps(child(spec)))
        return
    vitb = args.model_size == "vitb"
    args.scene = args.scene or (1024 if vitb else 768)
    args.tile = args.tile or (224 if vitb else 128)
    args.sizes = args.sizes if args.sizes is not None else ("512,1024,2048" if vitb else "256,512,1024,2048")
    if vitb:
        import region_vitb

        region_vitb.main(args, _run_vitb_child)
        return
    import torch

    from detectron2.config import LazyConfig, instantiate

    t_start = time.time()
    work = tempfile.mkdtemp(prefix="d2geo-region-bench-")
    torch.manual_seed(0)
    weights = os.path.join(work, "model.pth")
    torch.save({"model": instantiate(LazyConfig.load(str(CONFIG)).model).state_dict()}, weights)
    pair = []
    for i in range(2):
        pair.append(os.path.join(work, f"scene{i}_{args.scene}.tif"))
        write_scene(pair[-1], args.scene, seed=i)
    rows = []
    for world in (1, 2):
        for impl in ("d2geo", "terratorch"):
            r = _run(impl, pair, world, args, weights, work)
            rows.append(r)
            print(json.dumps(r), flush=True)
    sweep = []
    for size in [int(s) for s in args.sizes.split(",")]:
        path = os.path.join(work, f"sweep_{size}.tif")
        write_scene(path, size, seed=7)
        for impl in ("d2geo", "terratorch"):
            r = _run(impl, [path], 1, args, weights, work)
            r["side"] = size
            sweep.append(r)
            print(json.dumps(r), flush=True)
    md = render(rows, sweep, args, time.time() - t_start)
    out = Path(args.output)
    text = out.read_text() if out.is_file() else "# d2geo benchmarks: region inference\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + md + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + md + "\n"
    out.write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "sweep": sweep}, indent=1))
    print(md)


def render(rows, sweep, args, seconds) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [BEGIN, "## d2geo vs terratorch tiled inference", "",
             f"Generated by `python benchmarks/region.py --scene {args.scene} --sizes {args.sizes}` in {seconds:.0f} s "
             f"({os.cpu_count()} logical cores, load average at the end {load}, "
             f"torch {__import__('torch').__version__}, "
             f"{platform.python_version()}). Quickstart Semantic FPN (tiny ViT, random weights), 6-band int16 scenes "
             f"at 10 m, {args.tile} px windows overlapping by {args.overlap} px, {args.batch_size} windows a forward, "
             "float32, one torch thread per process. terratorch: `tasks/tiled_inference.py` from the 1.2.13 wheel "
             "on the scene read whole (`delta=0`, no padding); d2geo: `predict_region` (DataLoader reader, strip "
             "blending, COG class map). Peak: peak RSS of the largest process, counted from a reset after the model "
             "was loaded (so it includes torch and the model, ~0.8 GB here); d2geo's reader worker is a forked "
             "process sharing those pages, its own peak RSS is in the reader column. See the docstring of "
             "`benchmarks/region.py`.", "",
             f"Two scenes of {args.scene} x {args.scene} px:", "",
             "| implementation | processes | km² | s | km²/s | CPU s | km² per CPU s | peak MB | reader MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        reader = f"{r['reader_peak_mb']:.0f}" if r.get("reader_peak_mb") is not None else "–"
        lines.append(f"| {r['impl']} | {r['processes']} | {r['km2']:.2f} | {r['seconds']:.1f} | "
                     f"{r['km2_per_s']:.3f} | {r['cpu_s']:.1f} | {r['km2_per_cpu_s']:.3f} | {r['peak_mb']:.0f} | "
                     f"{reader} |")
    lines += ["", "Peak memory against scene size (1 process, one scene):", "",
              "| side px | km² | d2geo km²/s | d2geo peak MB | terratorch km²/s | terratorch peak MB |",
              "|---|---|---|---|---|---|"]
    by = {}
    for r in sweep:
        by.setdefault(r["side"], {})[r["impl"]] = r
    for side, d in sorted(by.items()):
        a, b = d["d2geo"], d["terratorch"]
        lines.append(f"| {side} | {a['km2']:.2f} | {a['km2_per_s']:.3f} | {a['peak_mb']:.0f} | "
                     f"{b['km2_per_s']:.3f} | {b['peak_mb']:.0f} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
