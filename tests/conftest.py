"""Shared test helpers: the upstream reference modules and tiny checkpoints."""
from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys
import types
import zipfile

import pytest
import torch

#: Upstream wheels the fidelity tests read their reference modules from. They are test
#: references only, never runtime dependencies: the module files are loaded straight
#: from the wheel, without installing the package or its dependencies.
UPSTREAM_WHEELS = {"terratorch": "terratorch==1.2.13", "claymodel": "claymodel==1.5.0"}
WHEEL_DIR = os.environ.get("D2GEO_UPSTREAM_WHEELS",
                           os.path.join(os.path.expanduser("~"), ".cache", "d2geo", "wheels"))


def upstream_wheel(dist: str) -> str:
    """Path of the pinned upstream wheel, downloaded (no deps) into WHEEL_DIR if needed."""
    spec = UPSTREAM_WHEELS[dist]
    version = spec.split("==")[1]
    pattern = os.path.join(WHEEL_DIR, f"{dist}-{version}-*.whl")
    found = glob.glob(pattern)
    if not found:
        os.makedirs(WHEEL_DIR, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", WHEEL_DIR, spec],
            capture_output=True, text=True)
        found = glob.glob(pattern)
        if not found:
            pytest.skip(f"upstream reference wheel {spec} is not available "
                        f"(pip download failed: {proc.stderr.strip()[-300:]})")
    return found[0]


def load_upstream_module(dist: str, member: str, module_name: str, *, aliases=()) -> types.ModuleType:
    """Import one ``.py`` file of an upstream wheel as ``module_name``.

    ``aliases`` registers the module under further names too, so that sibling files
    that import it by their own package path (``from src.utils import ...``) find it.
    """
    if module_name in sys.modules:
        return sys.modules[module_name]
    pytest.importorskip("einops", reason="the upstream reference modules need einops")
    with zipfile.ZipFile(upstream_wheel(dist)) as zf:
        source = zf.read(member).decode()
    spec = importlib.util.spec_from_loader(module_name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = f"<{dist} wheel>/{member}"
    sys.modules[module_name] = module
    for alias in aliases:
        sys.modules[alias] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref|: the fidelity measure of the test suite."""
    assert ours.shape == ref.shape, f"shapes differ: {tuple(ours.shape)} vs {tuple(ref.shape)}"
    return ((ours.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


#: Real Sentinel-1/2, DEM, NDVI and land-cover tiles (TerraMind examples, Apache-2.0) that
#: sit in the workplace's shared folder beside the repository; never copied into the repo.
TERRAMIND_EXAMPLES = os.environ.get(
    "D2GEO_TERRAMIND_EXAMPLES",
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                 "shared", "data", "terramind-examples"))


@pytest.fixture
def terramind_examples() -> str:
    """Folder of the real TerraMind example tiles (S2L1C, S2L2A, S1RTC, DEM, NDVI, LULC, ...)."""
    if not os.path.isdir(os.path.join(TERRAMIND_EXAMPLES, "S2L2A")):
        pytest.skip(f"the real example tiles are not at {TERRAMIND_EXAMPLES} "
                    "(set D2GEO_TERRAMIND_EXAMPLES to their folder)")
    return TERRAMIND_EXAMPLES
