"""The command-line tools are modules of d2geo.cli, run as console scripts or as tools/*.py."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")


def _console_scripts() -> dict[str, str]:
    """``name -> module:function`` of setup.py's console scripts (read, not run)."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value)["console_scripts"]
            return dict(tuple(x.strip() for x in s.split("=")) for s in scripts)
    raise AssertionError("setup.py declares no entry_points")


def test_every_tool_is_a_console_script_of_its_cli_module():
    from d2geo.cli import TOOL_MODULES

    scripts = _console_scripts()
    assert {"d2geo-train", "d2geo-export", "d2geo-visualize", "d2geo-convert", "d2geo-predict-scene",
            "d2geo-predict-region"} <= set(scripts)
    targets = {target.split(":")[0] for target in scripts.values()}
    for tool in sorted(f[:-3] for f in os.listdir(TOOLS) if f.endswith(".py")):
        assert TOOL_MODULES[tool] in targets, tool
    for name, target in scripts.items():
        module, func = target.split(":")
        if importlib.util.find_spec(module) is None:  # a tool still being moved (predict_*)
            continue
        pytest.importorskip("detectron2")
        assert callable(getattr(importlib.import_module(module), func)), name


@pytest.mark.parametrize("tool", sorted(f for f in os.listdir(TOOLS) if f.endswith(".py")))
def test_tools_are_thin_entry_points(tool):
    """tools/<tool> calls the d2geo.cli module's main and nothing else: no sys.path edits, no
    loading of other files by path, no library code."""
    from d2geo.cli import TOOL_MODULES

    text = open(os.path.join(TOOLS, tool), encoding="utf-8").read()
    module = TOOL_MODULES[tool[:-3]]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not there yet (tools/{tool} moves with the inference package)")
    assert "sys.path" not in text and "spec_from_file_location" not in text
    tree = ast.parse(text)
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [n.module for n in imports if isinstance(n, ast.ImportFrom)] == [module], tool
    assert not [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))], tool


@pytest.mark.parametrize("module", ["d2geo.cli.export", "d2geo.cli.visualize", "d2geo.cli.convert"])
def test_console_scripts_exit_with_status_0(module, monkeypatch):
    """These mains return what they wrote (for Python callers); the console script must not hand
    that to sys.exit, which would print it as an error and exit with status 1."""
    pytest.importorskip("detectron2")
    mod = importlib.import_module(module)
    monkeypatch.setattr(mod, "main", lambda argv=None: ["out/written.png"])
    assert mod.console_main() is None
    assert _console_scripts()[f"d2geo-{module.rsplit('.', 1)[1]}"] == f"{module}:console_main"


def test_tool_module_names():
    from d2geo.cli import tool_module

    pytest.importorskip("detectron2")
    train = importlib.import_module("d2geo.cli.train")
    assert tool_module("train_net") is tool_module("d2geo-train") is tool_module("train") is train
    with pytest.raises(KeyError, match="no d2geo tool 'fly'"):
        tool_module("fly")


@pytest.mark.slow
def test_tools_run_from_an_installed_wheel(tmp_path):
    """Slow (builds a wheel, a venv): a non-editable install runs the console scripts and the
    checkout's tools/*.py, with the zoo's configs from the package, from any folder."""
    pytest.importorskip("detectron2")
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if os.path.isfile(os.path.join(ROOT, f)):
            os.makedirs(src / os.path.dirname(f), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, f), src / f)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "whl"), str(src)], check=True, capture_output=True, timeout=600)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py, bin_ = str(venv / "bin" / "python"), venv / "bin"
    wheel = next((tmp_path / "whl").glob("d2geo-*.whl"))
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=300)
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", D2GEO_DATASETS=str(tmp_path / "datasets"))
    env.pop("PYTHONPATH", None)

    def run(*argv):
        proc = subprocess.run(list(argv), cwd=run_dir, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    where = run(py, "-c", "import d2geo.cli.train as m; print(m.__file__)")
    assert where.startswith(str(venv)), where
    out = str(tmp_path / "out")
    run(str(bin_ / "d2geo-train"), "--config-file", "quickstart/semantic_fpn_tiny.py", f"train.output_dir={out}",
        "train.max_iter=1", "train.eval_period=0")
    weights = os.path.join(out, "model_final.pth")
    run(py, os.path.join(ROOT, "tools", "visualize.py"), "--dataset", "d2geo_synth_seg_val", "--num", "1",
        "--config-file", "quickstart/semantic_fpn_tiny.py", "--weights", weights, "--out", str(tmp_path / "vis"))
    assert len(os.listdir(tmp_path / "vis")) == 1
    printed = run(str(bin_ / "d2geo-export"), "--config-file", "quickstart/semantic_fpn_tiny.py", "--output",
                  str(tmp_path / "exp"), f"train.init_checkpoint={weights}")
    assert "max abs difference" in printed and os.path.isfile(tmp_path / "exp" / "model.ts")
