"""The README's examples run as written, and CI runs the README's test command."""
import contextlib
import io
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_python_examples_run(block, monkeypatch):
    # d2geo.data, d2geo.modeling and d2geo.engine are d2geo's detectron2 side
    if re.search(r"detectron2|d2geo\.(data|modeling|engine)", block):
        pytest.importorskip("detectron2", reason="this README example needs detectron2")
    if "terramind-examples" in block:  # the real tiles sit beside the repository, read from its root
        from helpers import TERRAMIND_EXAMPLES

        if not os.path.isdir(os.path.join(ROOT, "..", "shared", "data", "terramind-examples")):
            pytest.skip(f"the real example tiles are not beside the repository ({TERRAMIND_EXAMPLES})")
        monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    # A print followed by a '# result' comment on the same line must print that result.
    printed = out.getvalue().splitlines()
    expected = [m.group(1).strip() for m in re.finditer(r"^print\(.*\)[ \t]+# (.*)$", block, re.M)]
    for want in expected:
        assert want in printed, f"README says {want!r}, the code printed {printed}"


def test_ci_runs_the_readme_test_command():
    command = re.search(r"## Test\n+```bash\n(.*?)\n```", README, re.S).group(1).strip()
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert command in ci.splitlines()


# -- the README's shell commands of the tools ----------------------------------------------------
# Every `python tools/...` command (and `mkdir`) in the README's bash blocks, continuation lines
# joined, in README order. Commands that cannot run here say so: `...` marks a template, a
# trailing `# needs ...` comment a download or the user's own data. The test runs the rest as
# written, from a copy of the repository layout (tools/, configs/ and ../shared/ as links), with
# one change: training commands get `train.max_iter=2` appended (the last override wins), so
# the quickstarts take seconds; everything after them reads their outputs as the README says.
SHRINK = {"tools/train_net.py": ["train.max_iter=2"]}


def _shell_commands():
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(line.split())
            if line.startswith(("python tools/", "mkdir ")):
                out.append(line)
    return out


COMMANDS = _shell_commands()


def _runnable(cmd):
    return "..." not in cmd and "# needs" not in cmd


def test_the_readme_has_a_runnable_command_for_every_tool():
    tools = sorted(f for f in os.listdir(os.path.join(ROOT, "tools")) if f.endswith(".py"))
    runnable = [c for c in COMMANDS if _runnable(c)]
    for tool in tools:
        named = [c for c in COMMANDS if c.startswith(f"python tools/{tool}")]
        assert named, f"the README has no command line for tools/{tool}"
        if tool not in ("convert_checkpoint.py", "export_model.py"):  # these need downloaded weights
            assert any(c.startswith(f"python tools/{tool}") for c in runnable), tool


def test_readme_tool_commands_parse():
    """Fast: every runnable command's arguments are accepted by the tool's own parser."""
    import shlex

    pytest.importorskip("detectron2", reason="the tools need detectron2")
    from d2geo.tools_support import load_tool

    for cmd in COMMANDS:
        if not _runnable(cmd) or not cmd.startswith("python tools/"):
            continue
        argv = shlex.split(cmd)
        name = os.path.splitext(os.path.basename(argv[1]))[0]
        tool = load_tool(name)
        parser = tool.get_parser() if hasattr(tool, "get_parser") else tool.build_parser()
        args = parser.parse_args(argv[2:])
        config = getattr(args, "config_file", None)
        if config:
            assert os.path.isfile(os.path.join(ROOT, config)), cmd


@pytest.mark.slow
def test_readme_tool_commands_run(tmp_path):
    """Slow (about ten fresh interpreters): the README's tool commands, run as written."""
    import shlex
    import subprocess
    import sys

    pytest.importorskip("detectron2", reason="the tools need detectron2")
    repo = tmp_path / "d2geo"
    repo.mkdir()
    for name in ("tools", "configs"):
        os.symlink(os.path.join(ROOT, name), repo / name)
    shared = os.path.join(os.path.dirname(ROOT), "shared")
    if os.path.isdir(shared):
        os.symlink(shared, tmp_path / "shared")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="", D2GEO_DATASETS=str(tmp_path / "datasets"))
    ran, skipped = [], []
    for cmd in COMMANDS:
        if not _runnable(cmd):
            continue
        if "../shared/" in cmd and not os.path.isdir(shared):
            skipped.append(cmd)
            continue
        argv = shlex.split(cmd)
        if argv[0] == "python":
            argv[0] = sys.executable
            if argv[1] in SHRINK and "--eval-only" not in argv:
                argv += SHRINK[argv[1]]
        proc = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, f"{cmd}\n{proc.stderr[-3000:]}"
        ran.append(cmd)
    assert any("tools/predict_scene.py" in c for c in ran) or skipped
    # what the commands say they write is there
    assert (repo / "output/quickstart/semantic_fpn_tiny/model_final.pth").is_file()
    assert (repo / "vis/quickstart_seg/sheet.png").is_file()
    if not skipped:
        for f in ("pred/433D_629L_3_1_classes.tif", "pred/433D_629L_3_1_classes.tif.png",
                  "pred/433D_629L_3_1_buildings.geojson", "pred/433D_629L_3_1_buildings.geojson.png"):
            assert (repo / f).is_file(), f
