"""benchmarks/heads.py: the report has the three tables and fills docs/heads.md between its
markers (the training runs themselves are measured by running the script, not here)."""
from __future__ import annotations

import importlib.util
import os
import types

import pytest

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script():
    spec = importlib.util.spec_from_file_location("_heads_bench", os.path.join(REPO, "benchmarks", "heads.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(label, **kw):
    row = dict(label=label, mIoU=50.0, IoU={"change": 12.5}, step_wall_s=0.5, step_cpu_s=0.2, peak_mb=90.0,
               trainable=1000, trainable_encoder=40, encoder_params=1000)
    row.update(kw)
    return row


def test_report_tables_and_markers(tmp_path):
    bench = _script()
    results = {"date": "d", "device": "CPU", "load": "1.0",
               "heads": [_row("semantic FPN"), _row("UperNet"), _row("ViT-Adapter + UperNet")],
               "lora": [_row("full fine-tuning", trainable_encoder=1000), _row("LoRA r=8")],
               "change": [_row("diff"), _row("concat", IoU={"change": 3.0})]}
    md = bench.report(results, types.SimpleNamespace(iters=10))
    assert "Short runs" in md and "10 training iterations" in md
    assert md.count("| semantic FPN |") == 1 and "| LoRA r=8 |" in md and "40 (4.0%)" in md
    assert "| `diff` | 12.5 |" in md and "| `concat` | 3.0 |" in md
    doc = tmp_path / "heads.md"
    doc.write_text(f"intro\n{bench.START}\nSTALE TABLE\n{bench.END}\noutro\n")
    bench.write_report(md, str(doc))
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "STALE" not in text and md in text
    with open(os.path.join(REPO, "docs", "heads.md")) as f:
        assert bench.START in f.read()
