#!/usr/bin/env python
"""Deployment benchmarks: onnxruntime vs eager inference, and compiled vs eager training.

    python benchmarks/export.py                 # prints a markdown section
    python benchmarks/export.py --quick         # tiny sizes (a smoke test)
    python benchmarks/export.py --sections onnx # or: compile

``onnx``
    Inference latency (batch 1, fp32, CPU) of the eager model (``torch.inference_mode``)
    and of its ONNX export in onnxruntime (CPU execution provider, default graph
    optimisations, as many intra-op threads as torch uses), for the quickstart semantic
    FPN (configs/quickstart/semantic_fpn_tiny.py, random weights, exported whole with
    ``tools/export_model.py``'s TracingAdapter path) and for a real-size encoder
    (DINOv2-B/14 at 518 px, exported with ``torch.onnx.export(dynamo=True)`` and dynamic
    height and width). The two run alternately and the medians are reported, with the
    max abs difference of their outputs.
``export``
    ``torch.export`` with dynamic height and width of the two encoders whose reference
    code branches on the input size (DOFA-B/16: the native-grid position table; Satlas
    Swin-V2-B: torchvision's window shift), recorded at the native size and run there and
    at non-square sizes: export time, latency of the exported program vs eager
    (``torch.inference_mode``, medians of alternating runs), and their max abs difference.
``compile``
    One training step (forward, backward, SGD step) of the quickstart semantic FPN at
    96 px, batch 4, eager and with ``train.compile=True`` (``torch.compile`` of the
    backbone, as ``tools/train_net.py`` does); the first compiled step's time (the
    compilation) is reported separately, then the medians of alternating steps.

Numbers on a shared machine are noise; the load average at the start is printed.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)




def _alternate(fns: dict, reps: int, warmup: int = 1) -> dict[str, float]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _quickstart_model(overrides: list[str]):
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(os.path.join(ROOT, "configs", "quickstart", "semantic_fpn_tiny.py"))
    cfg = LazyConfig.apply_overrides(cfg, overrides)
    torch.manual_seed(0)
    return instantiate(cfg.model), cfg


def _ort_session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def bench_onnx(quick: bool, reps: int) -> list[dict]:
    from detectron2.export import TracingAdapter

    from d2geo.encoders import build_encoder

    rows = []
    tmp = tempfile.mkdtemp(prefix="d2geo_export_bench_")
    from d2geo.engine import export as tool
    # 1. the quickstart segmentor, whole
    size = 64 if quick else 96
    model, _ = _quickstart_model([])
    model.eval()
    sample = tool.synthetic_sample(model, size)
    inputs = tool.model_inputs(sample, model)
    t0 = time.perf_counter()
    path, diff = tool.export(model, inputs, fmt="onnx", method="tracing", output=os.path.join(tmp, "seg"))
    export_s = time.perf_counter() - t0
    adapter = TracingAdapter(model, [inputs]).eval()
    sess = _ort_session(path)
    feed = {sess.get_inputs()[0].name: inputs["image"].numpy()}

    def eager():
        with torch.inference_mode():
            adapter(inputs["image"])

    times = _alternate({"eager": eager, "ort": lambda: sess.run(None, feed)}, reps)
    rows.append(dict(model="quickstart semantic FPN (whole model)", input=f"6x{size}x{size}",
                     eager_ms=times["eager"] * 1e3, ort_ms=times["ort"] * 1e3, diff=diff, export_s=export_s))
    # 2. a real-size encoder
    if quick:
        enc = build_encoder("dinov2_vits14", embed_dim=48, depth=2, num_heads=3).eval()
        side = 112
    else:
        enc = build_encoder("dinov2_vitb14").eval()
        side = 518
    x = torch.randn(1, 3, side, side)
    path = os.path.join(tmp, "encoder.onnx")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dims = ({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},)
        torch.onnx.export(enc, (x,), path, dynamic_shapes=dims, dynamo=True)
    export_s = time.perf_counter() - t0
    sess = _ort_session(path)
    feed = {sess.get_inputs()[0].name: x.numpy()}
    with torch.inference_mode():
        ref = enc(x)
    out = torch.from_numpy(sess.run(None, feed)[0])
    diff = (out - ref).abs().max().item()

    def eager_enc():
        with torch.inference_mode():
            enc(x)

    times = _alternate({"eager": eager_enc, "ort": lambda: sess.run(None, feed)}, reps)
    name = "DINOv2-S/14 tiny (quick)" if quick else "DINOv2-B/14 encoder"
    rows.append(dict(model=name, input=f"3x{side}x{side}", eager_ms=times["eager"] * 1e3,
                     ort_ms=times["ort"] * 1e3, diff=diff, export_s=export_s))
    return rows


def bench_export(quick: bool, reps: int) -> list[dict]:
    from d2geo.encoders import build_encoder

    if quick:
        cases = [("DOFA tiny (quick)", lambda: build_encoder("dofa_vitb16", embed_dim=64, depth=2, num_heads=2,
                                                           bands=["B04", "B03", "B02"], sensor="sentinel-2-l2a"),
                  3, 224, [(160, 96)]),
                 ("Satlas Swin-V2 tiny (quick)", lambda: build_encoder("satlas_swinb_sentinel2_si_ms", embed_dim=16,
                                                                      depths=(1, 1, 2, 1), num_heads=(2, 2, 4, 4)),
                  9, 256, [(128, 320)])]
    else:
        s2 = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
        cases = [("DOFA-B/16 encoder", lambda: build_encoder("dofa_vitb16", bands=s2, sensor="sentinel-2-l2a"),
                  10, 224, [(512, 384), (160, 96)]),
                 ("Satlas Swin-V2-B encoder", lambda: build_encoder("satlas_swinb_sentinel2_si_ms"),
                  9, 256, [(512, 384), (128, 320)])]
    rows = []
    for name, make, bands, side, others in cases:
        torch.manual_seed(0)
        enc = make().eval()
        x = torch.randn(1, bands, side, side)
        t0 = time.perf_counter()
        ep = torch.export.export(enc, (x,), dynamic_shapes=({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},))
        export_s = time.perf_counter() - t0
        exported = ep.module()
        for h, w in [(side, side), *others]:
            y = torch.randn(1, bands, h, w)
            with torch.inference_mode():
                diff = (exported(y) - enc(y)).abs().max().item()

            def run(fn, y=y):
                with torch.inference_mode():
                    fn(y)

            times = _alternate({"eager": lambda: run(enc), "exported": lambda: run(exported)}, reps)
            rows.append(dict(model=name, input=f"{bands}x{h}x{w}", eager_ms=times["eager"] * 1e3,
                             exported_ms=times["exported"] * 1e3, diff=diff, export_s=export_s))
            export_s = None  # once per model
    return rows


def bench_compile(quick: bool, reps: int) -> dict:
    overrides = ["train.compile=True"]
    if quick:
        overrides += ["model.backbone.net.encoder_kwargs.depth=1", "model.backbone.net.encoder_kwargs.embed_dim=48"]
    eager, cfg = _quickstart_model(overrides)
    compiled = copy.deepcopy(eager)
    from d2geo.engine.train_loop import maybe_compile

    maybe_compile(compiled, cfg)
    size, batch = (64, 2) if quick else (96, 4)
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(6, size, size, generator=g) * 0.3,
             "sem_seg": torch.randint(0, 4, (size, size), generator=g)} for _ in range(batch)]

    def stepper(model):
        model.train()
        optim = torch.optim.SGD(model.parameters(), lr=1e-3)

        def step():
            loss = sum(model(data).values())
            optim.zero_grad()
            loss.backward()
            optim.step()
        return step

    steps = {"eager": stepper(eager), "compiled": stepper(compiled)}
    t0 = time.perf_counter()
    steps["compiled"]()
    first = time.perf_counter() - t0
    times = _alternate(steps, reps)
    return dict(input=f"{batch}x6x{size}x{size}", eager_ms=times["eager"] * 1e3,
                compiled_ms=times["compiled"] * 1e3, first_compiled_s=first)


def report(onnx_rows, comp, threads, load, export_rows=()) -> str:
    out = ["## Deployment: ONNX Runtime and torch.compile", "",
           f"Generated by `python benchmarks/export.py` on the CPU ({threads} torch threads; "
           f"load average at start {load}). Random weights.", ""]
    if onnx_rows:
        out += ["### Inference: onnxruntime vs eager", "",
                "Batch 1, fp32, medians of alternating runs; `max diff` = max|onnxruntime - eager|.", "",
                "| model | input | eager ms | onnxruntime ms | ort/eager | max diff | export s |",
                "|---|---|---|---|---|---|---|"]
        for r in onnx_rows:
            out.append(f"| {r['model']} | {r['input']} | {r['eager_ms']:.1f} | {r['ort_ms']:.1f} | "
                       f"{r['ort_ms'] / r['eager_ms']:.2f} | {r['diff']:.2g} | {r['export_s']:.0f} |")
        out.append("")
    if export_rows:
        out += ["### torch.export with dynamic height and width", "",
                "Recorded once at the first size, run at every size; batch 1, fp32, medians of alternating "
                "runs; `max diff` = max|exported - eager|.", "",
                "| model | input | eager ms | exported ms | exported/eager | max diff | export s |",
                "|---|---|---|---|---|---|---|"]
        for r in export_rows:
            exp = "" if r["export_s"] is None else f"{r['export_s']:.0f}"
            out.append(f"| {r['model']} | {r['input']} | {r['eager_ms']:.1f} | {r['exported_ms']:.1f} | "
                       f"{r['exported_ms'] / r['eager_ms']:.2f} | {r['diff']:.2g} | {exp} |")
        out.append("")
    if comp:
        out += ["### Training step: torch.compile vs eager", "",
                "Quickstart semantic FPN, forward + backward + SGD step; `train.compile=True` compiles "
                "the backbone (encoder + pyramid), the head stays eager.", "",
                "| input | eager ms | compiled ms | compiled/eager | first compiled step s |",
                "|---|---|---|---|---|",
                f"| {comp['input']} | {comp['eager_ms']:.1f} | {comp['compiled_ms']:.1f} | "
                f"{comp['compiled_ms'] / comp['eager_ms']:.2f} | {comp['first_compiled_s']:.0f} |", ""]
    return "\n".join(out)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sections", nargs="+", default=["onnx", "export", "compile"], choices=["onnx", "export", "compile"])
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--output", default=None,
                   help="also write the markdown here (the committed page is docs/benchmarks-deployment.md)")
    args = p.parse_args(argv)
    import logging

    logging.getLogger("d2geo").setLevel(logging.ERROR)
    reps = args.reps or (2 if args.quick else 7)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    onnx_rows = bench_onnx(args.quick, reps) if "onnx" in args.sections else []
    export_rows = bench_export(args.quick, reps) if "export" in args.sections else []
    comp = bench_compile(args.quick, reps) if "compile" in args.sections else None
    md = report(onnx_rows, comp, torch.get_num_threads(), load, export_rows)
    print(md)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(md + "\n")
    return md


if __name__ == "__main__":
    main()
