"""The README's and the docs pages' examples run as written, and CI follows the README's
install and runs its test command."""
import contextlib
import io
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the pages whose Python examples and tool commands are checked here; their commands run in
#: this order (the README's quickstart trains the models the later pages read)
PAGES = ("README.md", "docs/training.md", "docs/inference.md", "docs/export.md", "docs/weights.md",
         "docs/encoders.md", "docs/data.md", "docs/tutorial.md")
TEXT = {page: open(os.path.join(ROOT, page), encoding="utf-8").read() for page in PAGES}
README = TEXT["README.md"]
BLOCKS = [(page, block) for page in PAGES for block in re.findall(r"```python\n(.*?)```", TEXT[page], re.S)]


@pytest.mark.parametrize("page,block", BLOCKS, ids=[f"{p}:block{i}" for i, (p, _) in enumerate(BLOCKS)])
def test_python_examples_run(page, block, monkeypatch):
    # d2geo.data, d2geo.modeling and d2geo.engine are d2geo's detectron2 side
    if re.search(r"detectron2|d2geo\.(data|modeling|engine)", block):
        pytest.importorskip("detectron2", reason=f"this example of {page} needs detectron2")
    if "terramind-examples" in block:  # the real tiles sit beside the repository, read from its root
        from helpers import TERRAMIND_EXAMPLES

        if not os.path.isdir(os.path.join(ROOT, "..", "shared", "data", "terramind-examples")):
            pytest.skip(f"the real example tiles are not beside the repository ({TERRAMIND_EXAMPLES})")
        monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, page, "exec"), {"__name__": "__readme__"})
    # A print followed by a '# result' comment on the same line must print that result.
    printed = out.getvalue().splitlines()
    expected = [m.group(1).strip() for m in re.finditer(r"^print\(.*\)[ \t]+# (.*)$", block, re.M)]
    for want in expected:
        assert want in printed, f"{page} says {want!r}, the code printed {printed}"


def test_ci_runs_the_readme_test_command():
    command = re.search(r"## Test\n+```bash\n(.*?)\n```", README, re.S).group(1).strip()
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    # the command itself, or as the argument of the CI's exit-status wrapper (pytest_pass ...)
    assert any(line.strip() in (command, f"pytest_pass {command}") for line in ci.splitlines()), command


# -- the README's install is what CI runs ------------------------------------------------------
# CI (.ci/run) runs the README's install block line by line in a fresh venv, with two differences
# that it says: the venv is its own (at "$VENV", made by "$PYTHON3"), and detectron2 and detrex are
# the source snapshots of ../shared/vendor unpacked (at "$D2_DIR", "$DETREX_DIR") instead of clones.
CI_PATHS = (("python3 -m venv ../d2geo-venv", '"$PYTHON3" -m venv "$VENV"'),
            ("source ../d2geo-venv/bin/activate", 'source "$VENV/bin/activate"'),
            ("../detectron2", '"$D2_DIR"'), ("../detrex", '"$DETREX_DIR"'))


def _install_block():
    return re.search(r"## Install\n.*?```bash\n(.*?)```", README, re.S).group(1)


def test_ci_runs_the_readme_install_line_by_line_in_order():
    ci = [line.strip() for line in open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8")]
    steps = [line.strip() for line in _install_block().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    clones = [s for s in steps if s.startswith("git clone https://")]  # (d2geo itself is the checkout)
    # the clones CI replaces by snapshots: detectron2 and detrex, each unpacked by CI
    assert [c.split()[2].rsplit("/", 1)[-1] for c in clones] == ["detectron2.git", "detrex.git"], clones
    assert "D2_DIR=$(unpack detectron2)" in ci and "DETREX_DIR=$(unpack detrex)" in ci
    assert "python -m pip install --upgrade pip" in steps  # before anything builds (issue 21: wheel + pip 23.2)
    where = []
    for step in steps:
        if step.startswith(("git clone ", "cd ")):
            continue
        for readme_path, ci_path in CI_PATHS:
            step = step.replace(readme_path, ci_path)
        step = step.split("  #")[0].strip()
        assert step in ci, f"the README's install step {step!r} is not a line of .ci/run"
        where.append(ci.index(step))
    assert where == sorted(where), "the CI runs the README's install steps in another order"


# -- the shell commands of the tools on the README and the docs pages -----------------------------
# Every `python tools/...` command (and `mkdir`) in the bash blocks of PAGES, continuation lines
# joined, in page order, each once (the README's quickstart commands recur on the docs pages).
# Commands that cannot run here say so: `...` marks a template, a trailing `# needs ...` comment
# a download or the user's own data. The test runs the rest as
# written, from a copy of the repository layout (tools/, configs/ and ../shared/ as links), with
# one change: training commands get `train.max_iter=2` appended (the last override wins), so
# the quickstarts take seconds; everything after them reads their outputs as the README says.
SHRINK = {"tools/train_net.py": ["train.max_iter=2"]}


def _shell_commands():
    out = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", TEXT[page], re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = " ".join(line.split())
                if line.startswith(("python tools/", "mkdir ")) and line not in out:
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
        assert named, f"neither the README nor the docs pages have a command line for tools/{tool}"
        # these need downloaded weights, or a scene split written by register_geo_scenes
        if tool not in ("convert_checkpoint.py", "export_model.py", "show_split.py"):
            assert any(c.startswith(f"python tools/{tool}") for c in runnable), tool


def test_readme_tool_commands_parse():
    """Fast: every runnable command's arguments are accepted by the tool's own parser."""
    import shlex

    pytest.importorskip("detectron2", reason="the tools need detectron2")
    from d2geo.cli import tool_module as load_tool

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


def test_the_synthetic_dataset_lands_where_the_readme_and_training_page_say(monkeypatch, tmp_path):
    """issue 21: the README named `datasets/d2geo_synth/`; the code writes one folder per
    generation parameters below it."""
    pytest.importorskip("detectron2", reason="d2geo.data needs detectron2")
    from d2geo.data.synthetic import synthetic_dataset_dir

    monkeypatch.setenv("D2GEO_DATASETS", str(tmp_path))
    folder = os.path.relpath(synthetic_dataset_dir("d2geo_synth"), tmp_path)
    pattern = "d2geo_synth/d2geo_synth-<hash>/"
    assert re.fullmatch(re.escape(pattern).replace("<hash>", "[0-9a-f]+").rstrip("/"), folder), folder
    for page in ("README.md", "docs/training.md"):
        assert f"`$D2GEO_DATASETS/{pattern}`" in TEXT[page], page
