"""The upstream reference modules for the fidelity tests (read from pinned wheels by
:mod:`testkit.upstream`, shared with the benchmarks), each a pytest skip when it cannot be had."""
from __future__ import annotations

import types

import pytest

from testkit import upstream

__all__ = ["or_skip", "load_upstream_module", "terratorch_prithvi", "claymodel", "terratorch_terramind",
           "torchgeo_copernicusfm", "torchgeo_croma"]


def or_skip(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or a pytest skip when the upstream reference cannot be had."""
    try:
        return fn(*args, **kwargs)
    except upstream.UpstreamUnavailable as e:
        pytest.skip(str(e))


def load_upstream_module(dist: str, member: str, module_name: str, *, aliases=()) -> types.ModuleType:
    """One ``.py`` file of a pinned upstream wheel as a module (see :mod:`testkit.upstream`);
    skips the test when the reference cannot be had."""
    return or_skip(upstream.load_upstream_module, dist, member, module_name, aliases=aliases)


def terratorch_prithvi() -> types.ModuleType:
    """terratorch's ``prithvi_mae`` module (``PrithviViT``), or a skip."""
    return or_skip(upstream.terratorch_prithvi)


def claymodel() -> types.ModuleType:
    """claymodel's ``model`` module (``Encoder``, its ``src.*`` siblings aliased), or a skip."""
    return or_skip(upstream.claymodel)


def terratorch_terramind() -> types.ModuleType:
    """terratorch's terramind model package (``TerraMindViT``, ``TerraMind``, ...), or a skip."""
    return or_skip(upstream.terratorch_terramind)


def torchgeo_copernicusfm() -> types.ModuleType:
    """torchgeo's ``copernicusfm`` module (``CopernicusFM``, its siblings loaded), or a skip."""
    return or_skip(upstream.torchgeo_copernicusfm)


def torchgeo_croma() -> types.ModuleType:
    """torchgeo's ``croma`` module (``CROMA``, ``get_2dalibi``), or a skip."""
    return or_skip(upstream.torchgeo_croma)
