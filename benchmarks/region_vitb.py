"""Region inference at ViT-B size: d2geo's runtimes and levers vs terratorch's tiled inference.

    python benchmarks/region.py --model-size vitb          # rewrites the ViT-B part of docs/benchmarks-region.md
    python benchmarks/region.py --model-size vitb --scene 768 --repeats 1 --output /tmp/r.md   # a quick look

The model: Semantic FPN (four taps, multi-layer pyramid, ``configs/common/models/semantic_fpn_geo.py``)
on a DINOv2 ViT-B/14 (patch kernel at 16 px as the family configs have it, 6 bands, 4 classes),
random weights (seeded; nothing downloads; the head's class biases shifted by their mean logit
on a calibration window, :func:`balance_head`, so that labels vary), saved once and loaded by
every run: the same weights for both projects. Scenes: two synthetic 6-band int16 scenes at
10 m (``region.write_scene``), the second with a slanted no-data swath edge over its western ~40% (as a Sentinel-2 tile at
the edge of its swath). Windows of ``--tile`` px overlapping by ``--overlap`` px,
``--batch-size`` windows a forward, float32, ``--threads`` threads a process, one process a run.

Rows (one child process each, run round-robin ``--repeats`` times; medians):

* **terratorch**: ``tiled_inference`` from the 1.2.13 wheel, eager torch, the scene read whole.
* **d2geo torch**: ``predict_region`` with the eager model (DataLoader reader worker).
* **d2geo onnxruntime**: ``predict_region`` with the model file exported once
  (``export_model_file``) in onnxruntime (``load_model(threads=...)``), the ``--model`` path;
  a thread reads windows ahead.
* levers, each one change from the onnxruntime row: no skipping of windows without valid data,
  no read-ahead, int8 linear layers (``quantize_model_file``), ``--large-tile`` px windows with
  the same overlap (the encoder interpolates its position embeddings), and (``--compile``)
  ``torch.compile`` of the backbone, compiled on a warm-up window before the clock starts.

Every run does one warm-up window before the clock starts. Label agreement is counted on the
pixels with valid data, against the d2geo torch row's class maps (same windows).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- region vitb benchmark: begin -->", "<!-- region vitb benchmark: end -->"


def build_model():
    """The ViT-B Semantic FPN (random weights) for the quickstart's synthetic bands and classes."""
    from detectron2.config import LazyConfig, instantiate

    import d2geo.model_zoo
    from d2geo.data.synthetic import SYNTH_BANDS

    tiny = LazyConfig.load(str(REPO / "configs" / "quickstart" / "semantic_fpn_tiny.py"))
    m = LazyConfig.load(str(REPO / "configs" / "common" / "models" / "semantic_fpn_geo.py")).model
    m.backbone.net.encoder = "dinov2_vitb14"
    m.backbone.net.encoder_kwargs = dict(patch_size=16, bands=list(SYNTH_BANDS))
    m.backbone.net.drop_path_rate = 0.0
    m.pixel_mean, m.pixel_std = tiny.model.pixel_mean, tiny.model.pixel_std
    m.sem_seg_head.num_classes = tiny.model.sem_seg_head.num_classes
    d2geo.model_zoo.skip_encoder_weights(m)
    return instantiate(m).eval()


def balance_head(model, image) -> list[float]:
    """Shift the random head's class biases by each class's mean logit on ``image`` (C, H, W),
    so that the label depends on the pixel (random weights give one class ~96% of the pixels,
    which makes any label agreement look high); returns the class shares on ``image`` after."""
    import torch

    with torch.no_grad():
        x = [{"image": torch.as_tensor(image), "height": image.shape[-2], "width": image.shape[-1]}]
        logits = model(x)[0]["sem_seg"]
        model.sem_seg_head.predictor.bias -= logits.mean(dim=(1, 2))
        labels = model(x)[0]["sem_seg"].argmax(0)
    return [float((labels == k).float().mean()) for k in range(logits.shape[0])]


def write_scene_with_edge(path: str, size: int, seed: int) -> None:
    """``region.write_scene`` with a slanted no-data edge: columns left of 0.35 * size + 0.1 * row."""
    import numpy as np
    import rasterio

    from region import write_scene

    write_scene(path, size, seed)
    with rasterio.open(path, "r+") as dst:
        img = dst.read()
        yy, xx = np.mgrid[:size, :size]
        img[:, xx < 0.35 * size + 0.1 * yy] = dst.nodata
        dst.write(img)


# -------------------------------------------------------------------------------- child
def child(spec: dict) -> dict:
    import resource

    import numpy as np
    import torch

    from region import _reset_peak, _vmhwm_mb, terratorch_tiled_inference

    torch.set_num_threads(spec["threads"])
    from d2geo.tools_support import quiet_third_party_warnings

    quiet_third_party_warnings()
    tile = spec["tile"]
    warm = np.random.default_rng(0).random((6, tile, tile), np.float32) * 0.3
    if spec["runtime"].startswith("onnxruntime"):
        from d2geo.inference.model_file import load_model

        model = load_model(spec["onnx"], threads=spec["threads"])
        model([{"image": warm}])
    else:
        model = build_model()
        model.load_state_dict(torch.load(spec["weights"], weights_only=True))
        if spec["runtime"] == "compile":
            model.backbone = torch.compile(model.backbone, dynamic=False)
        with torch.no_grad():
            model([{"image": torch.as_tensor(warm), "height": tile, "width": tile}])
    _reset_peak()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.time()
    per_scene = {}
    if spec["impl"] == "d2geo":
        from d2geo.inference import RegionOptions
        from d2geo.inference.region import predict_region

        opts = RegionOptions(tile=tile, overlap=spec["overlap"], batch_size=spec["batch"],
                             num_workers=spec["workers"], amp="off", skip_empty=spec["skip"])
        predict_region(model, spec["scenes"], spec["out"], opts, progress=False)
        entries = json.load(open(os.path.join(spec["out"], "manifest.json")))["scenes"]
        per_scene = {k: v["seconds"] for k, v in entries.items()}
    else:
        import rasterio

        from d2geo.data.geotiff import read_geotiff

        ti = terratorch_tiled_inference()

        def forward(x):
            outs = model([{"image": xi, "height": xi.shape[-2], "width": xi.shape[-1]} for xi in x])
            return torch.stack([o["sem_seg"] for o in outs])

        for path in spec["scenes"]:
            ts = time.perf_counter()
            s = read_geotiff(path)
            with torch.no_grad():
                logits = ti.tiled_inference(forward, torch.as_tensor(s.image)[None], crop=tile,
                                            stride=tile - spec["overlap"], delta=0, batch_size=spec["batch"],
                                            padding=False, device="cpu")
            labels = logits[0].argmax(0).numpy().astype("uint8")
            with rasterio.open(os.path.join(spec["out"], Path(path).stem + ".tif"), "w", driver="GTiff",
                               width=labels.shape[1], height=labels.shape[0], count=1, dtype="uint8",
                               crs=s.crs, transform=s.transform, compress="deflate") as dst:
                dst.write(labels[None])
            per_scene[Path(path).stem] = time.perf_counter() - ts
    t1 = time.time()
    r1, rc = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime) + rc.ru_utime + rc.ru_stime
    return {"seconds": t1 - t0, "cpu": cpu, "peak_mb": _vmhwm_mb(), "per_scene": per_scene,
            "reader_mb": rc.ru_maxrss / 1024}


# -------------------------------------------------------------------------------- parent
def variants(args) -> list[dict]:
    base = dict(impl="d2geo", runtime="onnxruntime", tile=args.tile, skip=True, workers=1)
    rows = [dict(name="terratorch tiled_inference (torch eager)", impl="terratorch", runtime="torch",
                 tile=args.tile, skip=False, workers=0),
            dict(name="d2geo torch eager", impl="d2geo", runtime="torch", tile=args.tile, skip=True, workers=1),
            dict(base, name="d2geo onnxruntime"),
            dict(base, name="lever off: no skipping of empty windows", skip=False),
            dict(base, name="lever off: no read-ahead", workers=0),
            dict(base, name="lever: int8 linear layers", runtime="onnxruntime-int8"),
            dict(base, name=f"lever: {args.large_tile} px windows", tile=args.large_tile)]
    if args.compile:
        rows.append(dict(name="lever: torch.compile (backbone)", impl="d2geo", runtime="compile", tile=args.tile,
                         skip=True, workers=1))
    return rows


def _agreement(ref_dir: str, dir_: str, scene_ids) -> float | None:
    import numpy as np
    import rasterio

    same = total = 0
    for sid in scene_ids:
        a_path, b_path = os.path.join(ref_dir, sid + ".tif"), os.path.join(dir_, sid + ".tif")
        if not (os.path.isfile(a_path) and os.path.isfile(b_path)):
            return None
        with rasterio.open(a_path) as a, rasterio.open(b_path) as b:
            x, y = a.read(1), b.read(1)
        ok = x != 255
        same += int((x[ok] == y[ok]).sum())
        total += int(ok.sum())
    return same / total if total else None


def main(args, run_child) -> None:
    """``run_child(spec) -> dict``: runs :func:`child` in a fresh process (region.py's)."""
    import torch

    from d2geo.inference.export_file import export_model_file
    from d2geo.inference.quantize import quantize_model_file

    t_start = time.time()
    loads = [os.getloadavg()[0]]
    work = tempfile.mkdtemp(prefix="d2geo-region-vitb-")
    torch.manual_seed(0)
    model = build_model()
    from region import write_scene

    calib = os.path.join(work, "calibration.tif")
    write_scene(calib, args.tile, seed=99)
    from d2geo.data.geotiff import read_geotiff

    shares = balance_head(model, read_geotiff(calib).image)
    print(json.dumps({"class shares after balancing the head": shares}), flush=True)
    weights = os.path.join(work, "model.pth")
    torch.save(model.state_dict(), weights)
    onnx = os.path.join(work, "model.onnx")
    export_model_file(model, onnx, None, window=args.tile, overlap=args.overlap, gsd_m=10.0)
    quantize_model_file(onnx, os.path.join(work, "model.int8.onnx"))
    del model
    scenes = [os.path.join(work, f"scene0_{args.scene}.tif"), os.path.join(work, f"edge1_{args.scene}.tif")]
    write_scene(scenes[0], args.scene, seed=0)
    write_scene_with_edge(scenes[1], args.scene, seed=1)
    ids = [Path(s).stem for s in scenes]
    rows = variants(args)
    results = {i: [] for i in range(len(rows))}
    first_out = {}
    for rep in range(args.repeats):
        for i, row in enumerate(rows):
            out = tempfile.mkdtemp(dir=work)
            spec = dict(row, scenes=scenes, overlap=args.overlap, batch=args.batch_size, threads=args.threads,
                        weights=weights, out=out,
                        onnx=os.path.join(work, "model.int8.onnx" if row["runtime"] == "onnxruntime-int8"
                                          else "model.onnx"))
            r = run_child(spec)
            r["load"] = os.getloadavg()[0]
            loads.append(r["load"])
            results[i].append(r)
            first_out.setdefault(i, out)
            print(json.dumps({"row": row["name"], "rep": rep, **{k: r[k] for k in ("seconds", "cpu", "peak_mb")},
                              "load": r["load"]}), flush=True)
    km2 = len(scenes) * (args.scene * 10 / 1000) ** 2
    table = []
    ref = first_out[1]  # d2geo torch eager
    for i, row in enumerate(rows):
        rs = results[i]
        sec = statistics.median(r["seconds"] for r in rs)
        table.append(dict(name=row["name"], tile=row["tile"], seconds=sec, runs=[r["seconds"] for r in rs],
                          cpu=statistics.median(r["cpu"] for r in rs), km2=km2, km2_per_s=km2 / sec,
                          full_scene_s=statistics.median(r["per_scene"][ids[0]] for r in rs),
                          edge_scene_s=statistics.median(r["per_scene"][ids[1]] for r in rs),
                          peak_mb=max(r["peak_mb"] for r in rs),
                          agreement=_agreement(ref, first_out[i], ids)))
    sweep = []
    for size in [int(s) for s in args.sizes.split(",") if s]:
        path = os.path.join(work, f"sweep_{size}.tif")
        write_scene(path, size, seed=7)
        out = tempfile.mkdtemp(dir=work)
        spec = dict(rows[2], scenes=[path], overlap=args.overlap, batch=args.batch_size, threads=args.threads,
                    weights=weights, out=out, onnx=onnx)
        r = run_child(spec)
        sweep.append(dict(side=size, km2=(size * 10 / 1000) ** 2, seconds=r["seconds"], peak_mb=r["peak_mb"]))
        print(json.dumps(sweep[-1]), flush=True)
    import numpy as np
    import rasterio

    with rasterio.open(os.path.join(ref, ids[0] + ".tif")) as src:
        ref_labels = src.read(1)
    args.shares = [float(np.mean(ref_labels == k)) for k in range(4)]
    md = render(table, sweep, args, time.time() - t_start, loads)
    out = Path(args.output)
    text = out.read_text() if out.is_file() else "# d2geo benchmarks: region inference\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + md + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + md + "\n"
    out.write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": table, "sweep": sweep, "loads": loads}, indent=1))
    print(md)


def render(table, sweep, args, seconds, loads) -> str:
    cmd = (f"python benchmarks/region.py --model-size vitb --scene {args.scene} --tile {args.tile} "
           f"--overlap {args.overlap} --large-tile {args.large_tile} --batch-size {args.batch_size} "
           f"--threads {args.threads} --repeats {args.repeats} --sizes {args.sizes}"
           + (" --compile" if args.compile else ""))
    tt = table[0]["km2_per_s"]
    lines = [BEGIN, "## ViT-B: d2geo runtimes and levers vs terratorch tiled inference", "",
             f"Generated by `{cmd}` in {seconds / 60:.0f} min ({os.cpu_count()} logical cores shared with other "
             f"jobs: 1-min load average {min(loads):.1f} to {max(loads):.1f}, median {statistics.median(loads):.1f}; "
             f"torch {__import__('torch').__version__}, onnxruntime {__import__('onnxruntime').__version__}, "
             f"Python {platform.python_version()}). Semantic FPN on a DINOv2 ViT-B/14 (patch 16, 6 bands, random "
             f"weights, the same file for every row), two {args.scene} x {args.scene} px scenes at 10 m (the second "
             f"with a no-data swath edge over ~40% of it), {args.tile} px windows overlapping by {args.overlap} px, "
             f"{args.batch_size} windows a batch, float32, {args.threads} thread(s) a process. Rows ran round-robin "
             f"{args.repeats} times; the times are medians (each run's wall time in the last column). Agreement: "
             f"labels equal to the d2geo torch eager row's on the pixels with valid data (its class map of the "
             f"full scene has the classes in shares {', '.join(f'{100 * x:.0f}%' for x in args.shares)}). See "
             f"`benchmarks/region_vitb.py`.", "",
             "| row | window | km²/s | vs terratorch | s (2 scenes) | full scene s | edge scene s | CPU s | "
             "CPU vs terratorch | peak MB | label agreement | runs s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        agree = f"{100 * r['agreement']:.2f}%" if r["agreement"] is not None else "–"
        lines.append(f"| {r['name']} | {r['tile']} | {r['km2_per_s']:.3f} | {r['km2_per_s'] / tt:.2f}x | "
                     f"{r['seconds']:.1f} | {r['full_scene_s']:.1f} | {r['edge_scene_s']:.1f} | {r['cpu']:.1f} | "
                     f"{table[0]['cpu'] / r['cpu']:.2f}x | "
                     f"{r['peak_mb']:.0f} | {agree} | {', '.join(f'{s:.0f}' for s in r['runs'])} |")
    if sweep:
        lines += ["", "Peak memory against scene size (d2geo onnxruntime row, one scene, one run each):", "",
                  "| side px | km² | s | km²/s | peak MB |", "|---|---|---|---|---|"]
        for s in sweep:
            lines.append(f"| {s['side']} | {s['km2']:.2f} | {s['seconds']:.1f} | {s['km2'] / s['seconds']:.3f} | "
                         f"{s['peak_mb']:.0f} |")
    lines.append(END)
    return "\n".join(lines)
