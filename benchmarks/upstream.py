"""Upstream reference modules for the benchmarks, loaded exactly as the test suite does.

The loading logic lives in ``tests/conftest.py`` (one ``.py`` file read straight from the
pinned upstream wheel, never an installed package); this module imports that file by
path instead of repeating it.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


class UpstreamUnavailable(RuntimeError):
    """The reference module could not be loaded (wheel not downloadable, einops missing...)."""


def _conftest():
    name = "_d2geo_tests_conftest"
    if name in sys.modules:
        return sys.modules[name]
    path = REPO / "tests" / "conftest.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _load(dist: str, member: str, module_name: str, aliases=()):
    try:
        return _conftest().load_upstream_module(dist, member, module_name, aliases=aliases)
    except BaseException as e:  # pytest.skip raises an OutcomeException (a BaseException)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise UpstreamUnavailable(f"{dist} reference not available: {e}") from None


def terratorch_prithvi():
    """terratorch 1.2.13's ``prithvi_mae`` module (``PrithviViT``)."""
    return _load("terratorch", "terratorch/models/backbones/prithvi_mae.py", "_ref_prithvi_mae")


def claymodel():
    """claymodel 1.5.0's ``model`` module (``Encoder``), its ``src.*`` siblings aliased."""
    precision = torch.get_float32_matmul_precision()
    try:
        _load("claymodel", "utils.py", "_ref_clay_utils", aliases=("src.utils",))
        _load("claymodel", "factory.py", "_ref_clay_factory", aliases=("src.factory",))
        _load("claymodel", "backbone.py", "_ref_clay_backbone", aliases=("src.backbone",))
        return _load("claymodel", "model.py", "_ref_clay_model", aliases=("src.model",))
    finally:
        # model.py lowers the float32 matmul precision of the whole process on import
        torch.set_float32_matmul_precision(precision)


def terratorch_terramind():
    """terratorch 1.2.13's terramind model package (``terramind_vit.TerraMindViT``), loaded file
    by file as package ``_ref_terramind`` (its relative imports resolve among the loaded files)."""
    import types

    pkg_name, root = "_ref_terramind", "terratorch/models/backbones/terramind/"
    pkg = sys.modules.get(pkg_name)
    if pkg is None:
        pkg = types.ModuleType(pkg_name)
        pkg.__path__ = []
        sys.modules[pkg_name] = pkg
    _load("terratorch", root + "utils.py", f"{pkg_name}.utils",
          aliases=("terratorch.models.backbones.terramind.utils",))
    for name in ("tm_utils", "encoder_embeddings", "decoder_embeddings", "modality_info", "terramind",
                 "terramind_vit"):
        setattr(pkg, name, _load("terratorch", f"{root}model/{name}.py", f"{pkg_name}.{name}"))
    return pkg
