"""onnxruntime session settings on the ViT-B model file (graph optimization level, threads),
and torch.compile of its backbone against eager torch.

    python benchmarks/region_ort.py            # rewrites its part of docs/benchmarks-region.md

The model file of ``benchmarks/region_vitb.py`` (DINOv2 ViT-B/14 Semantic FPN, random weights,
exported once here), run on ``--windows`` windows of ``--tile`` px, one window a ``run``,
under each setting in turn, round-robin ``--repeats`` times (each setting its own session,
made before the clock starts, with one warm-up window); the median ms a window. Labels are
compared with the default session's (``ORT_ENABLE_ALL``, the setting d2geo uses).

``--compile``: the eager model and the same model with ``torch.compile(model.backbone,
dynamic=False)`` (what ``--runtime compile`` does), ``--windows`` windows a forward (one
batch), compiled by a warm-up forward (its time reported), then round-robin as above.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
BEGIN, END = "<!-- region ort settings: begin -->", "<!-- region ort settings: end -->"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tile", type=int, default=224)
    ap.add_argument("--windows", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--compile", action="store_true", help="also eager vs torch.compile of the backbone")
    ap.add_argument("--output", default=str(REPO / "docs" / "benchmarks-region.md"))
    args = ap.parse_args(argv)
    import numpy as np
    import onnxruntime as ort
    import torch

    from d2geo.inference.export_file import export_model_file
    from region_vitb import balance_head, build_model

    t_start = time.time()
    work = tempfile.mkdtemp(prefix="d2geo-region-ort-")
    torch.manual_seed(0)
    path = os.path.join(work, "model.onnx")
    model = build_model()
    from d2geo.data.geotiff import read_geotiff
    from region import write_scene

    write_scene(os.path.join(work, "calibration.tif"), args.tile, seed=99)
    balance_head(model, read_geotiff(os.path.join(work, "calibration.tif")).image)  # labels that vary
    weights = os.path.join(work, "model.pth")
    torch.save(model.state_dict(), weights)
    export_model_file(model, path, None, window=args.tile, overlap=32, gsd_m=10.0)
    del model
    levels = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all (default)": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    rng = np.random.default_rng(0)
    xs = [(rng.random((6, args.tile, args.tile), np.float32) * 0.3).astype(np.float32) for _ in range(args.windows)]
    sessions = {}
    for name, level in levels.items():
        for t in [int(x) for x in args.threads.split(",")]:
            so = ort.SessionOptions()
            so.graph_optimization_level, so.intra_op_num_threads = level, t
            s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            s.run(None, {"image": xs[0]})
            sessions[(name, t)] = s
    times = {k: [] for k in sessions}
    labels = {}
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            outs = [s.run(None, {"image": x})[0] for x in xs]
            times[k].append((time.perf_counter() - t0) / len(xs) * 1000)
            labels.setdefault(k, [o.argmax(0) for o in outs])
            loads.append(os.getloadavg()[0])
    compiled = {}
    if args.compile:
        torch.set_num_threads(1)
        model = build_model()
        model.load_state_dict(torch.load(weights, weights_only=True))
        batch = [{"image": torch.as_tensor(x), "height": args.tile, "width": args.tile} for x in xs]
        eager = build_model()
        eager.load_state_dict(torch.load(weights, weights_only=True))
        model.backbone = torch.compile(model.backbone, dynamic=False)
        with torch.no_grad():
            eager(batch)
            t0 = time.perf_counter()
            model(batch)
            compile_s = time.perf_counter() - t0
            for _ in range(args.repeats):
                for name, m in (("torch eager", eager), ("torch.compile (backbone)", model)):
                    t0 = time.perf_counter()
                    outs = m(batch)
                    compiled.setdefault(name, []).append((time.perf_counter() - t0) / len(xs) * 1000)
                    labels.setdefault((name, 1), [o["sem_seg"].argmax(0).numpy() for o in outs])
                    loads.append(os.getloadavg()[0])
    ref = labels[("all (default)", 1)]
    base = statistics.median(times[("all (default)", 1)])
    flag = " --compile" if args.compile else ""
    lines = [BEGIN, "## Runtime settings (ViT-B model): onnxruntime sessions, torch.compile", "",
             f"Generated by `python benchmarks/region_ort.py --tile {args.tile} --windows {args.windows} --repeats "
             f"{args.repeats} --threads {args.threads}{flag}` in {time.time() - t_start:.0f} s (1-min load average "
             f"{min(loads):.1f} to {max(loads):.1f}; onnxruntime {ort.__version__}). ms a {args.tile} px window, "
             f"median of {args.repeats} round-robin passes over {args.windows} windows; labels against the default "
             f"session (all optimizations, 1 thread).", "",
             "| graph optimization | threads | ms / window | vs default | label agreement |", "|---|---|---|---|---|"]
    for (name, t), ts in times.items():
        med = statistics.median(ts)
        agree = float(np.mean([(a == b).mean() for a, b in zip(labels[(name, t)], ref)]))
        lines.append(f"| {name} | {t} | {med:.0f} | {base / med:.2f}x | {100 * agree:.2f}% |")
    if compiled:
        lines += ["", f"torch, one thread, a batch of {len(xs)} windows a forward (compiling took {compile_s:.0f} s; "
                      f"`dynamic=False` compiles again for every other batch size):", "",
                  "| runtime | ms / window | vs eager | label agreement with onnxruntime |", "|---|---|---|---|"]
        e = statistics.median(compiled["torch eager"])
        for name, ts in compiled.items():
            agree = float(np.mean([(a == b).mean() for a, b in zip(labels[(name, 1)], ref)]))
            lines.append(f"| {name} | {statistics.median(ts):.0f} | {e / statistics.median(ts):.2f}x | "
                         f"{100 * agree:.2f}% |")
    lines.append(END)
    md = "\n".join(lines)
    out = Path(args.output)
    text = out.read_text() if out.is_file() else "# d2geo benchmarks: region inference\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + md + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + md + "\n"
    out.write_text(text)
    print(md)


if __name__ == "__main__":
    main()
