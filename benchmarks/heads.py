#!/usr/bin/env python
"""Heads, adapters, LoRA and temporal folds side by side on d2geo's synthetic quickstart data.

    python benchmarks/heads.py                   # writes docs/heads.md (+ --json)
    python benchmarks/heads.py --iters 50 --output /tmp/heads.md   # shorter

Every row trains the same tiny encoder (the quickstart's DINOv2-architecture ViT, 4 blocks of
width 96, 8-pixel patches; Prithvi's architecture for change detection) for the same number
of iterations (batch 4, the config's AdamW and learning rate held constant, seed 0), then
evaluates on the val split with detectron2's ``SemSegEvaluator``:

``heads``
    ``quickstart/semantic_fpn_tiny.py`` vs ``quickstart/upernet_tiny.py`` vs
    ``quickstart/upernet_vit_adapter_tiny.py``, trained from scratch (mIoU over background /
    water / field / building).
``lora``
    full fine-tuning vs LoRA (r=8 on every block's qkv and proj, norms trainable) of an
    encoder "pretrained" by the ``heads`` section's semantic FPN run, each with a fresh
    UperNet head (``quickstart/upernet_tiny.py``). There are no real pretrained weights for
    this tiny ViT, so the pretraining is on the same task: the comparison shows the cost
    and the trainable share, not what LoRA keeps of a foundation model.
``change``
    ``quickstart/change_diff_tiny.py`` with ``temporal_fold="diff"`` vs ``"concat"`` on the
    synthetic change set (IoU of the ``change`` class).

Step time is the median over the steps after the first five: wall time and the process's
CPU time (on a machine shared with other jobs, wall time includes waiting for a core).
Peak memory is the rise of the process's peak resident set size during training, from after
the model and data loader were built (``/proc/self/clear_refs``; CUDA: peak allocated).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import statistics
import sys
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

logger = logging.getLogger("d2geo.benchmarks.heads")


def _proc_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> int:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() // 1024
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _proc_kb("VmRSS") or 0


def _peak() -> int:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() // 1024
    return _proc_kb("VmHWM") or 0


def load_config(name: str, overrides=()):
    from detectron2.config import LazyConfig

    from d2geo import model_zoo

    return LazyConfig.apply_overrides(model_zoo.get_config(name), list(overrides))


def run(name: str, iters: int, *, overrides=(), mutate=None, init_encoder=None, eval_limit: int | None = None,
        keep_model: bool = False) -> dict[str, Any]:
    """Train ``iters`` steps of config ``name`` and evaluate; returns the row."""
    from detectron2.config import instantiate
    from detectron2.evaluation import inference_on_dataset
    from detectron2.utils.events import EventStorage

    torch.manual_seed(0)
    cfg = load_config(name, overrides)
    if mutate is not None:
        mutate(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = instantiate(cfg.model).to(device)
    if init_encoder is not None:
        missing = model.backbone.net.encoder.load_state_dict(init_encoder, strict=False)
        assert not missing.unexpected_keys, missing.unexpected_keys
    model.train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    loader = iter(instantiate(cfg.dataloader.train))
    enc_params = sum(p.numel() for p in model.backbone.net.encoder.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainable_enc = sum(p.numel() for p in model.backbone.net.encoder.parameters() if p.requires_grad)
    base = _reset_peak()
    walls, cpus, losses = [], [], []
    with EventStorage() as storage:
        for it in range(iters):
            storage.iter = it
            batch = next(loader)
            w0, c0 = time.perf_counter(), time.process_time()
            loss = sum(model(batch).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if device == "cuda":
                torch.cuda.synchronize()
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
            losses.append(loss.item())
    peak_mb = (_peak() - base) / 1024
    model.eval()
    test_loader = instantiate(cfg.dataloader.test)
    if eval_limit:
        import itertools

        test_loader = list(itertools.islice(test_loader, eval_limit))
    evaluator = instantiate(cfg.dataloader.evaluator)
    with torch.no_grad():
        result = inference_on_dataset(model, test_loader, evaluator)["sem_seg"]
    steady = slice(5, None) if iters > 10 else slice(None)
    row = {
        "config": name, "overrides": list(overrides), "iters": iters,
        "mIoU": result["mIoU"], "IoU": {k[4:]: v for k, v in result.items() if k.startswith("IoU-")},
        "step_wall_s": statistics.median(walls[steady]), "step_cpu_s": statistics.median(cpus[steady]),
        "peak_mb": peak_mb, "trainable": trainable, "trainable_encoder": trainable_enc,
        "encoder_params": enc_params, "loss_first5": sum(losses[:5]) / max(1, len(losses[:5])),
        "loss_last5": sum(losses[-5:]) / max(1, len(losses[-5:])),
    }
    logger.info("%s %s: %s", name, list(overrides), {k: row[k] for k in ("mIoU", "step_wall_s", "peak_mb")})
    if keep_model:
        row["_model"] = model
    return row


def _lora(cfg):
    cfg.model.backbone.net.peft = dict(method="lora", r=8, lora_alpha=16)


def child(spec: dict) -> dict:
    """One row, in this (fresh) process: memory peaks are not hidden by earlier rows."""
    init = torch.load(spec["init_encoder"], weights_only=True) if spec.get("init_encoder") else None
    row = run(spec["config"], spec["iters"], overrides=spec.get("overrides", ()),
              mutate=_lora if spec.get("lora") else None, init_encoder=init, eval_limit=spec.get("eval_limit"),
              keep_model=bool(spec.get("save_encoder")))
    if spec.get("save_encoder"):
        model = row.pop("_model")
        torch.save(model.backbone.net.encoder.state_dict(), spec["save_encoder"])
    row["label"] = spec["label"]
    return row


def isolated(spec: dict, workdir: str) -> dict:
    import subprocess

    path = os.path.join(workdir, f"row-{abs(hash(json.dumps(spec, sort_keys=True)))}.json")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec), "--json", path],
                          env={**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")})
    if proc.returncode:
        raise RuntimeError(f"benchmark row {spec['label']!r} failed (exit {proc.returncode})")
    with open(path) as f:
        return json.load(f)


def section_heads(iters: int, eval_limit, workdir: str, pretrained_path: str) -> list[dict]:
    rows = []
    for label, name in (("semantic FPN", "quickstart/semantic_fpn_tiny.py"),
                        ("UperNet", "quickstart/upernet_tiny.py"),
                        ("ViT-Adapter + UperNet", "quickstart/upernet_vit_adapter_tiny.py")):
        spec = dict(label=label, config=name, iters=iters, eval_limit=eval_limit)
        if label == "semantic FPN":
            spec["save_encoder"] = pretrained_path
        rows.append(isolated(spec, workdir))
    return rows


def section_lora(iters: int, eval_limit, workdir: str, pretrained_path: str) -> list[dict]:
    return [isolated(dict(label=label, config="quickstart/upernet_tiny.py", iters=iters, eval_limit=eval_limit,
                          init_encoder=pretrained_path, lora=lora), workdir)
            for label, lora in (("full fine-tuning", False), ("LoRA r=8", True))]


def section_change(iters: int, eval_limit, workdir: str) -> list[dict]:
    return [isolated(dict(label=fold, config="quickstart/change_diff_tiny.py", iters=iters, eval_limit=eval_limit,
                          overrides=[f"model.backbone.net.temporal_fold={fold}"]), workdir)
            for fold in ("diff", "concat")]


def _f(v, d=3):
    return f"{v:.{d}f}" if isinstance(v, float) else str(v)


def report(results: dict, args) -> str:
    lines = [f"Written by `python benchmarks/heads.py --iters {args.iters}` on {results['date']} "
             f"({results['device']}, torch {torch.__version__}, {results.get('threads', 1)} thread(s), "
             f"load average at start {results['load']}). Every row: {args.iters} training iterations, "
             "batch 4, constant learning rate, seed 0; see the script's docstring for the protocol.",
             ""]
    if args.iters < 1500:
        lines += [f"**Short runs**: {args.iters} iterations instead of the quickstart's 1500 (the CPU was "
                  "shared with other jobs), so the mIoU values compare the variants early in training, "
                  "not at convergence.", ""]
    if "heads" in results:
        lines += ["### Segmentation heads (from scratch)", "",
                  "| model | mIoU | step wall (s) | step CPU (s) | peak memory (MB) | trainable params |",
                  "|---|---|---|---|---|---|"]
        for r in results["heads"]:
            lines.append(f"| {r['label']} | {_f(r['mIoU'], 1)} | {_f(r['step_wall_s'])} | {_f(r['step_cpu_s'])} | "
                         f"{_f(r['peak_mb'], 0)} | {r['trainable']:,} |")
        lines.append("")
    if "lora" in results:
        lines += ["### Full fine-tuning vs LoRA (UperNet head)", "",
                  "| fine-tuning | mIoU | trainable params (all) | trainable in the encoder | step wall (s) | "
                  "step CPU (s) | peak memory (MB) |", "|---|---|---|---|---|---|---|"]
        for r in results["lora"]:
            share = 100.0 * r["trainable_encoder"] / r["encoder_params"]
            lines.append(f"| {r['label']} | {_f(r['mIoU'], 1)} | {r['trainable']:,} | "
                         f"{r['trainable_encoder']:,} ({share:.1f}%) | {_f(r['step_wall_s'])} | "
                         f"{_f(r['step_cpu_s'])} | {_f(r['peak_mb'], 0)} |")
        lines.append("")
    if "change" in results:
        lines += ["### Change detection: temporal fold (semantic FPN, tiny Prithvi, 2 dates)", "",
                  "| temporal_fold | change IoU | mIoU | step wall (s) | peak memory (MB) |", "|---|---|---|---|---|"]
        for r in results["change"]:
            lines.append(f"| `{r['label']}` | {_f(r['IoU'].get('change', float('nan')), 1)} | {_f(r['mIoU'], 1)} | "
                         f"{_f(r['step_wall_s'])} | {_f(r['peak_mb'], 0)} |")
        lines.append("")
    return "\n".join(lines)


START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def write_report(md: str, path: str) -> None:
    """Write ``md`` between the benchmark markers of ``path`` (docs/heads.md keeps its text
    around them), or as the whole file when it has none."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = open(path).read() if os.path.exists(path) else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + START + "\n" + md + "\n" + END + rest.split(END, 1)[1]
    else:
        text = md + "\n"
    with open(path, "w") as f:
        f.write(text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--sections", default="heads,lora,change")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N val tiles only")
    p.add_argument("--output", default=os.path.join(REPO, "docs", "heads.md"))
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("d2geo").setLevel(logging.WARNING)
    logging.getLogger("d2geo.benchmarks.heads").setLevel(logging.INFO)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.child:
        row = child(json.loads(args.child))
        with open(args.json, "w") as f:
            json.dump(row, f, default=float)
        return
    sections = set(args.sections.split(","))
    results: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
        "load": ", ".join(f"{v:.1f}" for v in os.getloadavg()),
        "threads": torch.get_num_threads(),
    }
    import tempfile

    workdir = tempfile.mkdtemp(prefix="d2geo-heads-bench-")
    pretrained = os.path.join(workdir, "pretrained_encoder.pt")
    if "heads" in sections:
        results["heads"] = section_heads(args.iters, args.eval_limit, workdir, pretrained)
    if "lora" in sections:
        if not os.path.exists(pretrained):  # lora alone still needs the pretraining run
            isolated(dict(label="semantic FPN", config="quickstart/semantic_fpn_tiny.py", iters=args.iters,
                          eval_limit=args.eval_limit, save_encoder=pretrained), workdir)
        results["lora"] = section_lora(args.iters, args.eval_limit, workdir, pretrained)
    if "change" in sections:
        results["change"] = section_change(args.iters, args.eval_limit, workdir)
    md = report(results, args)
    write_report(md, args.output)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    print(md)


if __name__ == "__main__":
    main()
