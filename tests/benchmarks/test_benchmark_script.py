"""benchmarks/run.py --quick end to end: every section runs, the report has its tables and
the ratios it reports are finite numbers."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

REPO = Path(__file__).resolve().parents[2]


# the quick benchmark run takes about a minute: CI runs it in its slow pass
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    md, js = out / "benchmarks.md", out / "results.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--output", str(md),
                           "--json", str(js)], capture_output=True, text=True, cwd=str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return md.read_text(), json.loads(js.read_text()), proc.stdout


def _table_rows(md: str, heading: str) -> list[list[str]]:
    section = md.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    assert len(lines) >= 3, f"no table under {heading!r}"
    assert set(lines[1].replace("|", "")) == {"-"}
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    assert all(len(r) == len(header) for r in rows)
    return [header] + rows


def test_report_structure_and_machine(quick_run):
    md, results, stdout = quick_run
    assert md.strip() in stdout  # the table is printed too
    assert "QUICK MODE" in md
    for heading in ("Machine", "GEMM rate", "Encoder forward latency vs upstream",
                    "Resolution: global vs window attention", "Mask R-CNN training step", "Targets"):
        assert f"## {heading}" in md, heading
    machine = dict(r[:2] for r in _table_rows(md, "Machine")[1:])
    for key in ("CPU", "logical cores (usable)", "torch threads", "torch"):
        assert machine[key] and machine[key] != "–", key
    assert re.search(r"\*\*[0-9.]+ GFLOP/s\*\*", md)


def test_encoder_rows_compare_with_upstream(quick_run):
    md, results, _ = quick_run
    rows = results["encoders"]
    assert {r["family"] for r in rows} == {"dinov2", "dinov3", "prithvi", "clay", "terramind", "ssl4eo",
                                           "ssl4eo_data2vec", "scalemae", "satlas", "dofa", "croma",
                                           "copernicusfm", "galileo", "panopticon", "anysat", "olmoearth"}
    # references in no wheel: without a checkout (the variable set) the row says how to measure it
    checkouts = {"galileo": "D2GEO_GALILEO_SRC", "panopticon": "PANOPTICON_REPO", "anysat": "ANYSAT_REPO"}
    measured = []
    for r in rows:
        env = checkouts.get(r["family"])
        if env and not os.environ.get(env):
            assert env in r["error"], r
            continue
        measured.append(r)
        assert "error" not in r, r
        for key in ("ratio", "ours_gemm_frac", "ref_gemm_frac"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["family"], key, r[key])
        assert r["gflop"] > 0 and r["tokens"] > 0
        # the same weights and input: ours computes what upstream computes
        assert r["rel_err"] < 1e-4, (r["family"], r["rel_err"])
    table = _table_rows(md, "Encoder forward latency vs upstream")
    ratio_col = table[0].index("ours/upstream")
    assert len(table) - 1 == len(rows)
    assert all(math.isfinite(float(r[ratio_col])) for r in table[1:] if not r[1].startswith("not measured"))
    assert len([r for r in table[1:] if not r[1].startswith("not measured")]) == len(measured)


def test_resolution_and_training_ratios_are_finite(quick_run):
    md, results, _ = quick_run
    res = results["resolution"]["rows"]
    assert res
    for r in res:
        assert "error" not in r["global_"] and "error" not in r["windowed"], r
        assert math.isfinite(r["time_ratio"]) and r["time_ratio"] > 0
        assert r["mem_ratio"] is None or math.isfinite(r["mem_ratio"])
        assert -1 <= r["cosine"] <= 1 + 1e-6 and math.isfinite(r["rel_err"])
        # the windows really are smaller than the grid here, so the features moved
        assert r["rel_err"] > 0
    train = results["train"]["rows"]
    assert len(train) == 6 and train[0]["model"].startswith("ViTDet")
    for r in train:
        assert "error" not in r, r
        assert math.isfinite(r["ratio"]) and r["seconds"] > 0 and r["cpu_seconds"] > 0
    # bf16 rows are compared with ViTDet under the same autocast, and with their own float32 row
    bf16 = [r for r in train if r["precision"] == "bfloat16"]
    assert len(bf16) == 3 and all(r["reference"].endswith("bf16 autocast") for r in bf16)
    assert all(math.isfinite(r["vs_fp32"]) for r in bf16)
    assert any(r["checkpointing"] for r in bf16)
    table = _table_rows(md, "Targets")
    assert any("training step" in r[0] for r in table[1:])
    # a reference that needs a checkout (the variable not set) is "not measured", saying why
    assert all(r[2] in ("met", "**missed**", "not measured") for r in table[1:]), table

