#!/usr/bin/env python
"""The GPU check's driver (benchmarks/gpu_check.sh installs and builds, then runs this).

    python benchmarks/gpu_check.py              # on the GPU machine, after gpu_check.sh's install
    python benchmarks/gpu_check.py --dry-run    # here: the CPU device, tiny benchmark sizes

Parts, in order, each writing its files to ``$OUT`` (default ./gpu-results) before the next starts:

0. preflight  the device, the imports the check needs (detectron2 and detrex with their compiled
              ops, rasterio, pyproj, fvcore, iopath), onnxruntime's providers, and the travelling
              set (.gpu-travel/MANIFEST complete, under 64 MiB with the working tree; in a dry run
              also pip's check that its wheels install on CPython 3.12 manylinux).
1. tests      ``pytest -m gpu tests/gpu`` with ``D2GEO_GPU_TEST_DEVICE`` = cuda (cpu in a dry run):
              tests.log, tests.xml (JUnit).
2. benchmarks benchmarks/gpu_bench.py: bench.log, bench.json, benchmarks-gpu.md (on a GPU also
              docs/benchmarks-gpu.md). Skipped with ``--quick``.

Then the summary table (printed last, and summary.md). Files under $OUT: install.log (from
gpu_check.sh), tests.log, tests.xml, bench.log, bench.json, benchmarks-gpu.md, summary.md: seven,
within the device tool's eight. Exit status 1 when anything failed.

The time budget (``--budget``, from the start of gpu_check.sh) is shared out: the tests get what
is left less ``--bench-reserve`` seconds (the most valuable results come first), the benchmarks
the rest; a benchmark section that would start after the budget is recorded as not run (a failure).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the benchmarks package
    sys.path.insert(0, str(REPO))
LIMIT_BYTES = 64 * 2**20  # what the device tool carries: working tree + carried paths
REQUIRED_WHEELS = ("rasterio", "pyproj", "fvcore", "iopath", "pycocotools", "omegaconf", "hydra_core",
                   "antlr4_python3_runtime", "yacs", "termcolor", "affine", "cligj", "click_plugins")
REQUIRED_UPSTREAM = ("terratorch", "claymodel", "torchgeo")
REQUIRED_VENDOR = ("detectron2-", "detrex-")
IMPORTS = ("detectron2", "detrex", "rasterio", "pyproj", "fvcore", "iopath", "pycocotools", "onnxruntime",
           "einops", "timm")


class Part:
    def __init__(self, name: str):
        self.name, self.ok, self.seconds, self.notes = name, None, 0.0, ""

    def row(self) -> str:
        status = {True: "ok", False: "FAILED", None: "not run"}[self.ok]
        return f"| {self.name} | {status} | {self.seconds:.0f} | {self.notes} |"


# -- preflight ----------------------------------------------------------------------------------
def _tree_bytes() -> int:
    """Bytes of the working tree the device tool sends: tracked and untracked-not-ignored files."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    total = 0
    for name in out.decode().split("\0"):
        p = REPO / name
        if name and p.is_file():
            total += p.stat().st_size
    return total


def check_travel(travel: Path, dry_run: bool) -> tuple[bool, list[str], dict]:
    """The travelling set is complete, matches its MANIFEST and fits the limit with the tree."""
    problems, facts = [], {}
    manifest = travel / "MANIFEST"
    if not manifest.is_file():
        return False, [f"{manifest} is missing: run 'bash benchmarks/gpu_travel.sh'"], facts
    listed = {}
    for line in manifest.read_text().splitlines():
        size, name = line.split(" ", 1)
        listed[name.removeprefix("./")] = int(size)
    for name, size in listed.items():
        p = travel / name
        if not p.is_file():
            problems.append(f"{name} is in MANIFEST but missing")
        elif p.stat().st_size != size:
            problems.append(f"{name}: {p.stat().st_size} bytes, MANIFEST says {size}")
    names = list(listed)
    for dist in REQUIRED_WHEELS:
        if not any(n.startswith(f"wheels/{dist}-") for n in names):
            problems.append(f"no wheel of {dist} in wheels/")
    for dist in REQUIRED_UPSTREAM:
        if not any(n.startswith(f"upstream/{dist}-") for n in names):
            problems.append(f"no upstream reference wheel of {dist} in upstream/")
    for prefix in REQUIRED_VENDOR:
        if not any(n.startswith(f"vendor/{prefix}") for n in names):
            problems.append(f"no {prefix}*.tar.gz source snapshot in vendor/")
    for n in names:  # compiled wheels must be CPython 3.12 (or abi3) for x86-64 manylinux
        if n.startswith("wheels/") and not n.endswith("none-any.whl") and not (
                ("cp312" in n or "abi3" in n) and "manylinux" in n and "x86_64" in n):
            problems.append(f"{n} is not a CPython 3.12 x86-64 manylinux wheel")
    travel_bytes = sum(listed.values())
    tree = _tree_bytes()
    inside = travel.resolve().is_relative_to(REPO) if hasattr(Path, "is_relative_to") else True
    facts.update(travel_mib=travel_bytes / 2**20, tree_mib=tree / 2**20, total_mib=(travel_bytes + tree) / 2**20)
    if travel_bytes + tree >= LIMIT_BYTES:
        problems.append(f"working tree {tree / 2**20:.1f} MiB + travelling set {travel_bytes / 2**20:.1f} MiB "
                        "is over the 64 MiB the device tool carries")
    has_git = shutil.which("git") is not None and subprocess.run(
        ["git", "rev-parse", "--git-dir"], cwd=REPO, capture_output=True).returncode == 0
    if inside and has_git:  # (the copy on the GPU machine may come without .git)
        ignored = subprocess.run(["git", "check-ignore", "-q", str(travel / "MANIFEST")], cwd=REPO).returncode == 0
        if not ignored:
            problems.append(f"{travel} is not git-ignored: it would travel as untracked files and be committed")
    if dry_run and not problems:  # pip's own check that the wheels install on the GPU image's Python
        wheels = sorted(str(p) for p in (travel / "wheels").glob("*.whl"))
        plats = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for a in ("--platform", p)]
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "-q", "--no-index", "--no-deps",
                               "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", *plats,
                               "--target", str(REPO / ".gpu-travel.tmp" / "pip-check"), *wheels],
                              capture_output=True, text=True)
        if proc.returncode:
            problems.append(f"pip: the wheels do not install on CPython 3.12: {proc.stderr.strip()[-500:]}")
        facts["pip_check"] = "the wheels install on CPython 3.12 manylinux x86-64 (pip --dry-run)"
    return not problems, problems, facts


def preflight(args, device: str) -> tuple[Part, dict]:
    part = Part("preflight")
    t0 = time.perf_counter()
    info: dict = {"python": f"{platform.python_version()} ({sys.executable})",
                  "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    problems = []
    try:
        import torch

        info["torch"] = torch.__version__
        if device == "cuda":
            if torch.cuda.is_available():
                info["device"] = torch.cuda.get_device_name(0)
            else:
                problems.append("torch sees no CUDA device")
        else:
            info["device"] = "cpu (dry run)"
    except Exception as e:
        problems.append(f"torch: {e}")
    for mod in IMPORTS:
        try:
            m = importlib.import_module(mod)
            info[mod] = getattr(m, "__version__", "ok")
        except Exception as e:
            problems.append(f"import {mod}: {type(e).__name__}: {e}")
    if device == "cuda":  # the compiled ops, built by gpu_check.sh
        for mod, what in (("detectron2._C", "detectron2's ops"), ("detrex._C", "detrex's ops")):
            try:
                importlib.import_module(mod)
            except Exception as e:
                problems.append(f"{what} ({mod}) not built: {e}")
        try:
            from detectron2 import _C

            info["detectron2 built with CUDA"] = _C.get_cuda_version()
        except Exception:
            pass
    try:
        import onnxruntime

        info["onnxruntime providers"] = ", ".join(onnxruntime.get_available_providers())
    except Exception:
        pass
    travel = Path(args.travel)
    if args.dry_run and not travel.exists():  # CI and fresh clones: nothing to check, nothing wrong
        info["travelling set"] = f"not made here ({travel}; bash benchmarks/gpu_travel.sh makes it)"
        facts = {}
    else:
        ok_travel, travel_problems, facts = check_travel(travel, args.dry_run)
        info.update({f"travelling set: {k}": (f"{v:.1f}" if isinstance(v, float) else v) for k, v in facts.items()})
        if not ok_travel:
            # on the GPU machine the set has done its job once installed: a problem there is a note
            (problems if args.dry_run else info.setdefault("notes", [])).extend(travel_problems)
    part.ok = not problems
    part.notes = "; ".join(problems)[:600] or (
        f"{info.get('device')}; travelling set {facts['travel_mib']:.1f} MiB + tree {facts['tree_mib']:.1f} MiB"
        if facts else f"{info.get('device')}; {info.get('travelling set', '')}")
    part.seconds = time.perf_counter() - t0
    return part, info


# -- tests ---------------------------------------------------------------------------------------
def run_tests(args, device: str, out: Path, timeout: float) -> tuple[Part, list[tuple[str, str, float, str]]]:
    part = Part("tests (pytest -m gpu)")
    env = dict(os.environ, D2GEO_GPU_TEST_DEVICE=device)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # -v: one line per test in tests.log, so a run stopped at its budget still shows what passed
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", *args.tests_path.split(), "-v", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={out / 'tests.xml'}", "-o", "junit_family=xunit1"]
    if importlib.util.find_spec("pytest_timeout") is not None:  # one hung test must not take the whole budget
        cmd += ["--timeout", str(int(args.test_timeout))]
    if args.tests_k:
        cmd += ["-k", args.tests_k]
    t0 = time.perf_counter()
    rc = _run_logged(cmd, out / "tests.log", timeout, env)
    part.seconds = time.perf_counter() - t0
    cases = parse_junit(out / "tests.xml") or parse_verbose_log(out / "tests.log")
    counts = {o: sum(1 for c in cases if c[1] == o) for o in ("passed", "failed", "skipped")}
    part.notes = ", ".join(f"{n} {o}" for o, n in counts.items() if n)
    if rc == "timeout":
        part.ok, part.notes = False, f"stopped after {timeout:.0f} s (its budget); {part.notes}"
    else:
        part.ok = rc == 0 and counts["failed"] == 0 and counts["passed"] > 0
        if rc not in (0, 1):
            part.notes += f" (pytest exit status {rc})"
    return part, cases


def parse_verbose_log(path: Path) -> list[tuple[str, str, float, str]]:
    """The tests that finished, from pytest -v's lines (when a stopped run wrote no JUnit file)."""
    import re

    cases = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        m = re.match(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)", line)
        if m:
            outcome = {"PASSED": "passed", "SKIPPED": "skipped"}.get(m.group(2), "failed")
            cases.append((m.group(1).split("tests/gpu/")[-1], outcome, 0.0, ""))
    return cases


def parse_junit(path: Path) -> list[tuple[str, str, float, str]]:
    """(test, passed/failed/skipped, seconds, message) of each test case."""
    if not path.is_file():
        return []
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        name = f"{tc.get('file') or tc.get('classname', '')}::{tc.get('name')}"
        name = name.split("tests/gpu/")[-1] if "tests/gpu/" in name else name
        outcome, msg = "passed", ""
        for tag in ("failure", "error"):
            el = tc.find(tag)
            if el is not None:
                outcome, msg = "failed", (el.get("message") or "")[:200]
        el = tc.find("skipped")
        if el is not None:
            outcome, msg = "skipped", (el.get("message") or "")[:200]
        cases.append((name, outcome, float(tc.get("time") or 0), msg.replace("\n", " ").replace("|", "/")))
    return cases


# -- benchmarks ----------------------------------------------------------------------------------
def run_bench(args, device: str, out: Path, deadline: float) -> tuple[Part, dict]:
    part = Part("benchmarks")
    doc = out / "benchmarks-gpu.md"
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_bench.py"), "--device", device, "--json",
           str(out / "bench.json"), "--doc", str(doc), "--deadline", str(deadline - 20)]
    if args.dry_run:
        cmd.append("--quick")
    if args.sections:
        cmd += ["--sections", args.sections]
    if args.families:
        cmd += ["--families", args.families]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    rc = _run_logged(cmd, out / "bench.log", max(30.0, deadline - time.time()), env)
    part.seconds = time.perf_counter() - t0
    results = json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else {}
    from benchmarks.gpu_bench import failures

    bad = failures(results) if results else ["no results written"]
    part.ok = rc == 0 and not bad
    part.notes = ("; ".join(bad)[:600] if bad else f"{len(results.get('sections', {}))} sections") + (
        " (stopped at the time budget)" if rc == "timeout" else "")
    if device == "cuda" and doc.is_file():  # the page to commit
        shutil.copy(doc, REPO / "docs" / "benchmarks-gpu.md")
    return part, results


def _run_logged(cmd, log: Path, timeout: float, env) -> int | str:
    """Run ``cmd``, its output to the console and to ``log``; the exit status or 'timeout'."""
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        end = time.time() + timeout
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            if time.time() > end:
                os.killpg(proc.pid, 9)
                proc.wait()
                f.write(f"\n[gpu_check] stopped after {timeout:.0f} s\n")
                return "timeout"
            if sel.select(timeout=1.0):
                line = proc.stdout.readline()
                if not line:
                    break
                sys.stdout.write(line)
                f.write(line)
                f.flush()
        return proc.wait()


# -- summary -------------------------------------------------------------------------------------
def summary(parts: list[Part], info: dict, cases, bench: dict, args, device: str) -> str:
    lines = [f"# GPU check summary ({'dry run on the CPU' if args.dry_run else device})", "",
             "| part | result | s | notes |", "|---|---|---|---|", *[p.row() for p in parts], ""]
    if info:
        lines += ["| preflight | |", "|---|---|"]
        lines += [f"| {k} | {'; '.join(v) if isinstance(v, list) else v} |" for k, v in info.items()]
        lines.append("")
    if cases:
        lines += ["| test | outcome | s | message |", "|---|---|---|---|"]
        lines += [f"| {n} | {o} | {t:.1f} | {m} |" for n, o, t, m in cases]
        lines.append("")
    if bench.get("sections"):
        lines += ["| benchmark section | s | result |", "|---|---|---|"]
        from benchmarks.gpu_bench import failures

        bad = failures(bench)
        for sec in bench["sections"]:
            mine = [b for b in bad if b.startswith(sec + ":")]
            lines.append(f"| {sec} | {bench.get('seconds', {}).get(sec, 0):.0f} | "
                         f"{'FAILED: ' + '; '.join(mine)[:300] if mine else 'ok'} |")
        lines.append("")
    failed = [p.name for p in parts if p.ok is False]
    lines.append(f"GPU CHECK {'FAILED: ' + ', '.join(failed) if failed else 'PASSED'}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="the CPU device, tiny benchmark sizes, no install")
    ap.add_argument("--quick", action="store_true", help="the tests only (no benchmarks)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole check from the start of gpu_check.sh (default 570 on a GPU, "
                         "1800 in a dry run)")
    ap.add_argument("--bench-reserve", type=float, default=None,
                    help="seconds kept for the benchmarks when the tests run (default 150 on a GPU)")
    ap.add_argument("--tests-path", default="tests/gpu", help="where pytest looks for the gpu tests")
    ap.add_argument("--tests-k", default="", help="pytest -k expression (a subset of the gpu tests)")
    ap.add_argument("--test-timeout", type=float, default=240, help="seconds a single test may take (pytest-timeout, "
                                                                    "where installed)")
    ap.add_argument("--sections", default="", help="benchmark sections (default: all of gpu_bench.py's)")
    ap.add_argument("--families", default="", help="encoder families of the benchmarks (default: all)")
    ap.add_argument("--travel", default=os.environ.get("D2GEO_TRAVEL", str(REPO / ".gpu-travel")))
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "gpu-results"))
    ap.add_argument("--install-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--install-rc", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = "cpu" if args.dry_run else "cuda"
    budget = args.budget or (1800.0 if args.dry_run else 570.0)
    if args.bench_reserve is not None:
        reserve = args.bench_reserve
    else:
        reserve = 0.0 if args.quick else (0.4 * budget if args.dry_run else 150.0)
    start = time.time() - args.install_seconds
    deadline = start + budget
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if (Path(args.travel) / "upstream").is_dir():  # the reference wheels that travelled (else upstream.py's cache)
        os.environ.setdefault("D2GEO_UPSTREAM_WHEELS", str(Path(args.travel) / "upstream"))

    parts = []
    install = Part("install + build (gpu_check.sh)")
    if args.dry_run:
        install.notes = "skipped in a dry run (this machine's detectron2/detrex); the travelling set is checked"
    else:
        install.ok = args.install_rc == 0
        install.seconds = args.install_seconds
        install.notes = "see install.log" if install.ok else f"exit status {args.install_rc}: see install.log"
    parts.append(install)

    pre, info = preflight(args, device)
    parts.append(pre)
    (out / "summary.md").write_text(summary(parts, info, [], {}, args, device))

    tests, cases, bench = Part("tests (pytest -m gpu)"), [], {}
    no_cuda = pre.ok is False and device == "cuda" and "no CUDA" in pre.notes
    if no_cuda:
        tests.notes = "no CUDA device"
    else:
        tests, cases = run_tests(args, device, out, max(60.0, deadline - time.time() - reserve))
    parts.append(tests)
    (out / "summary.md").write_text(summary(parts, info, cases, {}, args, device))

    if not args.quick and not no_cuda:
        bpart, bench = run_bench(args, device, out, deadline)
        parts.append(bpart)
    text = summary(parts, info, cases, bench, args, device)
    (out / "summary.md").write_text(text)
    print("\n" + text)
    return 0 if all(p.ok is not False for p in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
