"""benchmarks/gpu_check.sh: its dry run on the CPU (a minimal one here, the whole one behind
``slow``), the check of the travelling set, and the ``gpu`` marker's skip without CUDA."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import xml.etree.ElementTree as ET

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.sh")


def _dry_run(out, *args, timeout=900):
    env = dict(os.environ, OUT=str(out), OMP_NUM_THREADS="1", PYTHON=sys.executable,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(["bash", SCRIPT, "--dry-run", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _junit(path):
    return {tc.get("name"): ("failed" if tc.find("failure") is not None or tc.find("error") is not None
                             else "skipped" if tc.find("skipped") is not None else "passed")
            for tc in ET.parse(path).getroot().iter("testcase")}


def test_the_scripts_parse():
    for name in ("gpu_check.sh", "gpu_travel.sh"):
        proc = subprocess.run(["bash", "-n", os.path.join(ROOT, "benchmarks", name)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_minimal_dry_run_writes_every_part_and_the_summary(tmp_path):
    """The script end to end on the CPU with one gpu test (--quick: no benchmarks; those run
    in-process below and in the slow whole dry run)."""
    pytest.importorskip("detectron2", reason="the gpu tests need detectron2")
    pytest.importorskip("rasterio", reason="the gpu tests read GeoTIFFs")
    proc = _dry_run(tmp_path, "--quick", "--tests-k", "dinov2 and encoder")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert set(os.listdir(tmp_path)) >= {"summary.md", "tests.log", "tests.xml"}
    assert _junit(tmp_path / "tests.xml") == {"test_encoder_and_backbone_on_the_device_equal_the_cpu[dinov2]": "passed"}
    summary = (tmp_path / "summary.md").read_text()
    assert summary.rstrip().endswith("GPU CHECK PASSED") and proc.stdout.rstrip().endswith("GPU CHECK PASSED")
    assert "| preflight | ok |" in summary and "| tests (pytest -m gpu) | ok |" in summary


def test_benchmark_sections_write_the_json_and_the_page_naming_the_device(tmp_path):
    from benchmarks import gpu_bench

    rc = gpu_bench.main(["--device", "cpu", "--quick", "--sections", "gemm", "--json", str(tmp_path / "b.json"),
                         "--doc", str(tmp_path / "b.md")])
    assert rc == 0
    bench = json.loads((tmp_path / "b.json").read_text())
    assert [r["dtype"] for r in bench["sections"]["gemm"]] == ["float32", "bfloat16"]
    assert all(r["tflops"] > 0 for r in bench["sections"]["gemm"])
    page = (tmp_path / "b.md").read_text()
    assert "Device: **CPU" in page and "| bfloat16 | 256 |" in page
    # a section past the deadline is not run, and that is a failure
    rc = gpu_bench.main(["--device", "cpu", "--quick", "--sections", "gemm", "--deadline", "0",
                         "--json", str(tmp_path / "late.json")])
    assert rc == 1
    late = json.loads((tmp_path / "late.json").read_text())
    assert late["sections"]["gemm"]["not_run"] and gpu_bench.failures(late) == [
        "gemm: not run: the time budget was spent"]


def test_a_failing_part_makes_the_check_fail(tmp_path, monkeypatch):
    """Any part that fails gives a non-zero exit and FAILED in the summary."""
    gc = _gpu_check()

    def failing_preflight(args, device):
        part = gc.Part("preflight")
        part.ok, part.notes = False, "import rasterio: ModuleNotFoundError"
        return part, {}

    def passing_tests(args, device, out, timeout):
        part = gc.Part("tests (pytest -m gpu)")
        part.ok = True
        return part, [("test_x", "passed", 0.1, "")]

    monkeypatch.setattr(gc, "preflight", failing_preflight)
    monkeypatch.setattr(gc, "run_tests", passing_tests)
    assert gc.main(["--dry-run", "--quick", "--out", str(tmp_path)]) == 1
    summary = (tmp_path / "summary.md").read_text()
    assert "| preflight | FAILED |" in summary and summary.rstrip().endswith("GPU CHECK FAILED: preflight")
    monkeypatch.setattr(gc, "preflight", lambda args, device: (passing_tests(0, 0, 0, 0)[0], {}))
    assert gc.main(["--dry-run", "--quick", "--out", str(tmp_path)]) == 0


FAKE_SETUP = """
import json, os, sys
# records how gpu_check.sh built it; detrex's CUDA build fails, to take the CPU fallback
name = os.path.basename(os.getcwd())
with open(f"{name}.builds", "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "FORCE_CUDA": os.environ.get("FORCE_CUDA"),
                        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST")}) + "\\n")
sys.exit(1 if name == "detrex" and os.environ.get("FORCE_CUDA") == "1" else 0)
"""


def _tiny_wheel(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fakepkg/__init__.py", "VALUE = 42\n")
        z.writestr("fakepkg-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakepkg\nVersion: 0.1\n")
        z.writestr("fakepkg-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  "Tag: py3-none-any\n")
        z.writestr("fakepkg-0.1.dist-info/RECORD", "")


def test_install_path_unpacks_builds_for_the_gpu_and_falls_back_to_cpu_ops(tmp_path):
    """gpu_check.sh's install on this machine, with the snapshots replaced by setup.py files
    that record their build, one wheel, and the GPU's architecture given: the wheels go to the
    work folder, both sources are built in place for that architecture, a failed CUDA build is
    retried with the CPU ops and fails the install, and without a GPU the check then fails."""
    import tarfile

    travel, work, out = tmp_path / "travel", tmp_path / "work", tmp_path / "out"
    (travel / "wheels").mkdir(parents=True)
    (travel / "vendor").mkdir()
    _tiny_wheel(travel / "wheels" / "fakepkg-0.1-py3-none-any.whl")
    for name in ("detectron2", "detrex"):
        src = tmp_path / "src" / name
        src.mkdir(parents=True)
        (src / "setup.py").write_text(FAKE_SETUP)
        with tarfile.open(travel / "vendor" / f"{name}-abc.tar.gz", "w:gz") as t:
            t.add(src, arcname=name)
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, D2GEO_TRAVEL=str(travel), D2GEO_GPU_WORK=str(work),
               TORCH_CUDA_ARCH_LIST="9.0", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", SCRIPT, "--quick", "--tests-k", "nothing"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (out / "install.log").read_text()
    assert "install: 1 wheels" in log and (work / "site" / "fakepkg" / "__init__.py").is_file()
    assert "install: detectron2 built with its CUDA ops" in log
    assert "building detrex's CUDA ops FAILED" in log and "detrex built with its CPU ops only" in log
    d2 = [json.loads(x) for x in (work / "src" / "detectron2" / "detectron2.builds").read_text().splitlines()]
    dx = [json.loads(x) for x in (work / "src" / "detrex" / "detrex.builds").read_text().splitlines()]
    assert d2 == [{"argv": ["build_ext", "--inplace"], "FORCE_CUDA": "1", "CUDA_VISIBLE_DEVICES": "",
                   "TORCH_CUDA_ARCH_LIST": "9.0"}]
    assert [(b["FORCE_CUDA"], b["CUDA_VISIBLE_DEVICES"]) for b in dx] == [("1", ""), ("0", "")]
    summary = (out / "summary.md").read_text()
    assert "| install + build (gpu_check.sh) | FAILED |" in summary
    assert "| preflight | FAILED |" in summary and "torch sees no CUDA device" in summary
    for path in (work / "site", work / "src" / "detectron2", work / "src" / "detrex"):
        assert str(path) in summary  # on PYTHONPATH, as the preflight table shows
    assert summary.rstrip().endswith("GPU CHECK FAILED: install + build (gpu_check.sh), preflight")


@pytest.mark.slow
def test_whole_dry_run_passes(tmp_path):
    """Every gpu test (on the CPU where meaningful) and every benchmark section at tiny sizes."""
    proc = _dry_run(tmp_path, timeout=2400)
    assert proc.returncode == 0, proc.stdout[-5000:]
    cases = _junit(tmp_path / "tests.xml")
    assert len(cases) >= 20 and "failed" not in cases.values()
    skipped = {n for n, o in cases.items() if o == "skipped"}
    assert all("deformable" in n or "vit_adapter" in n or "onnxruntime" in n for n in skipped), skipped
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert set(bench["sections"]) == {"gemm", "encoders", "train", "region", "compile"}


# -- the travelling set ----------------------------------------------------------------------------
def _gpu_check():
    from benchmarks import gpu_check

    return gpu_check


def _fake_travel(folder, sizes: dict[str, int]):
    for name, size in sizes.items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\0" * size)
    (folder / "MANIFEST").write_text("".join(f"{s} ./{n}\n" for n, s in sorted(sizes.items())))


def _complete(gc) -> dict[str, int]:
    sizes = {f"wheels/{d}-1.0-py3-none-any.whl": 10 for d in gc.REQUIRED_WHEELS}
    sizes.update({f"upstream/{d}-1.0-py3-none-any.whl": 10 for d in gc.REQUIRED_UPSTREAM})
    sizes.update({f"vendor/{p}abc.tar.gz": 10 for p in gc.REQUIRED_VENDOR})
    return sizes


def test_travel_check_names_what_is_missing_or_wrong(tmp_path):
    gc = _gpu_check()
    sizes = _complete(gc)
    del sizes["wheels/pyproj-1.0-py3-none-any.whl"]
    sizes["wheels/rasterio-1.4.4-cp311-cp311-manylinux_2_28_x86_64.whl"] = 10  # the wrong Python
    _fake_travel(tmp_path, sizes)
    (tmp_path / "vendor" / "detrex-abc.tar.gz").write_bytes(b"\0" * 3)  # not what MANIFEST says
    ok, problems, _ = gc.check_travel(tmp_path, dry_run=False)
    assert not ok
    text = "\n".join(problems)
    assert "no wheel of pyproj" in text
    assert "rasterio-1.4.4-cp311" in text and "not a CPython 3.12" in text
    assert "detrex-abc.tar.gz: 3 bytes, MANIFEST says 10" in text


def test_travel_check_refuses_a_set_over_the_limit(tmp_path):
    gc = _gpu_check()
    sizes = _complete(gc)
    _fake_travel(tmp_path, sizes)
    ok, problems, facts = gc.check_travel(tmp_path, dry_run=False)
    assert ok and not problems and facts["total_mib"] < 64
    sizes["vendor/detectron2-abc.tar.gz"] = gc.LIMIT_BYTES  # alone at the limit
    _fake_travel(tmp_path, sizes)
    ok, problems, _ = gc.check_travel(tmp_path, dry_run=False)
    assert not ok and "over the 64 MiB" in "\n".join(problems)


def test_a_stopped_test_run_keeps_the_finished_tests_from_the_verbose_log(tmp_path):
    gc = _gpu_check()
    log = tmp_path / "tests.log"
    log.write_text("$ python -m pytest ...\n"
                   "tests/gpu/test_gpu_models.py::test_a[dinov2] PASSED                [  4%]\n"
                   "tests/gpu/test_gpu_models.py::test_b SKIPPED (needs CUDA)          [  8%]\n"
                   "tests/gpu/test_gpu_tools.py::test_c FAILED                         [ 12%]\n"
                   "\n[gpu_check] stopped after 120 s\n")
    assert gc.parse_junit(tmp_path / "tests.xml") == []  # pytest was stopped before writing it
    assert gc.parse_verbose_log(log) == [("test_gpu_models.py::test_a[dinov2]", "passed", 0.0, ""),
                                         ("test_gpu_models.py::test_b", "skipped", 0.0, ""),
                                         ("test_gpu_tools.py::test_c", "failed", 0.0, "")]


# -- the gpu marker --------------------------------------------------------------------------------
def test_gpu_tests_skip_with_the_reason_without_cuda(monkeypatch):
    import conftest

    class Item:
        def __init__(self, gpu):
            self.gpu, self.added = gpu, []

        def get_closest_marker(self, name):
            return object() if (name == "gpu" and self.gpu) else None

        def add_marker(self, m):
            self.added.append(m)

    monkeypatch.setattr(conftest, "GPU_TEST_DEVICE", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    items = [Item(True), Item(False)]
    conftest.pytest_collection_modifyitems(types.SimpleNamespace(), items)
    (mark,) = items[0].added
    assert mark.name == "skip" and "needs a CUDA GPU" in mark.kwargs["reason"]
    assert "gpu_check.sh" in mark.kwargs["reason"] and not items[1].added
    monkeypatch.setattr(conftest, "GPU_TEST_DEVICE", "cpu")  # the dry run: nothing skipped
    items = [Item(True)]
    conftest.pytest_collection_modifyitems(types.SimpleNamespace(), items)
    assert not items[0].added
