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
    if "detectron2" in block:
        pytest.importorskip("detectron2", reason="this README example needs detectron2")
    if "terramind-examples" in block:  # the real tiles sit beside the repository, read from its root
        from conftest import TERRAMIND_EXAMPLES

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
