"""Upstream reference modules, read straight from pinned wheels.

The fidelity tests (through ``tests/helpers``) and the benchmarks compare d2geo with
the upstream implementations. Those are test references only, never runtime
dependencies: one ``.py`` file is read from the pinned wheel and executed as a module,
without installing the package or its dependencies. The wheels are downloaded (no deps)
into ``$D2GEO_UPSTREAM_WHEELS`` (default ``~/.cache/d2geo/wheels``) on first use.

Nothing here needs pytest: a reference that cannot be had raises
:class:`UpstreamUnavailable`, which the tests turn into a skip and the benchmarks into a
"not measured" row.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys
import types
import zipfile

import torch

#: the pinned upstream wheels
UPSTREAM_WHEELS = {"terratorch": "terratorch==1.2.13", "claymodel": "claymodel==1.5.0",
                   "torchgeo": "torchgeo==0.8.1", "olmoearth_pretrain": "olmoearth-pretrain==0.1.2"}
WHEEL_DIR = os.environ.get("D2GEO_UPSTREAM_WHEELS",
                           os.path.join(os.path.expanduser("~"), ".cache", "d2geo", "wheels"))


class UpstreamUnavailable(RuntimeError):
    """The reference module could not be loaded (wheel not downloadable, einops missing...)."""


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
            raise UpstreamUnavailable(f"upstream reference wheel {spec} is not available "
                                      f"(pip download failed: {proc.stderr.strip()[-300:]})")
    return found[0]


def load_upstream_module(dist: str, member: str, module_name: str, *, aliases=()) -> types.ModuleType:
    """Import one ``.py`` file of an upstream wheel as ``module_name``.

    ``aliases`` registers the module under further names too, so that sibling files
    that import it by their own package path (``from src.utils import ...``) find it.
    """
    if module_name in sys.modules:
        return sys.modules[module_name]
    if importlib.util.find_spec("einops") is None:
        raise UpstreamUnavailable("the upstream reference modules need einops (pip install einops)")
    with zipfile.ZipFile(upstream_wheel(dist)) as zf:
        source = zf.read(member).decode()
    spec = importlib.util.spec_from_loader(module_name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = f"<{dist} wheel>/{member}"
    sys.modules[module_name] = module
    for alias in aliases:
        sys.modules[alias] = module
    try:
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    except BaseException:
        for name in (module_name, *aliases):
            sys.modules.pop(name, None)
        raise
    return module


def terratorch_prithvi() -> types.ModuleType:
    """terratorch 1.2.13's ``prithvi_mae`` module (``PrithviViT``)."""
    return load_upstream_module("terratorch", "terratorch/models/backbones/prithvi_mae.py", "_ref_prithvi_mae")


def claymodel() -> types.ModuleType:
    """claymodel 1.5.0's ``model`` module (``Encoder``), its ``src.*`` siblings aliased."""
    precision = torch.get_float32_matmul_precision()
    try:
        load_upstream_module("claymodel", "utils.py", "_ref_clay_utils", aliases=("src.utils",))
        load_upstream_module("claymodel", "factory.py", "_ref_clay_factory", aliases=("src.factory",))
        load_upstream_module("claymodel", "backbone.py", "_ref_clay_backbone", aliases=("src.backbone",))
        return load_upstream_module("claymodel", "model.py", "_ref_clay_model", aliases=("src.model",))
    finally:
        # model.py lowers the float32 matmul precision of the whole process on import
        torch.set_float32_matmul_precision(precision)


def torchgeo_scale_mae() -> types.ModuleType:
    """torchgeo 0.8.1's ``scale_mae`` module (``ScaleMAE``)."""
    return load_upstream_module("torchgeo", "torchgeo/models/scale_mae.py", "_ref_torchgeo_scale_mae")


def torchgeo_dofa() -> types.ModuleType:
    """torchgeo 0.8.1's ``dofa`` module (``DOFA``)."""
    return load_upstream_module("torchgeo", "torchgeo/models/dofa.py", "_ref_torchgeo_dofa")


def torchgeo_copernicusfm() -> types.ModuleType:
    """torchgeo 0.8.1's ``copernicusfm`` module (``CopernicusFM``), loaded as
    ``_ref_torchgeo.models.copernicusfm`` with the two sibling files its relative imports name
    (``models/dofa.py``, ``samplers/utils.py``)."""
    root = "_ref_torchgeo"
    for pkg_name in (root, f"{root}.models", f"{root}.samplers"):
        if pkg_name not in sys.modules:
            pkg = types.ModuleType(pkg_name)
            pkg.__path__ = []
            sys.modules[pkg_name] = pkg
    load_upstream_module("torchgeo", "torchgeo/samplers/utils.py", f"{root}.samplers.utils")
    load_upstream_module("torchgeo", "torchgeo/models/dofa.py", f"{root}.models.dofa")
    return load_upstream_module("torchgeo", "torchgeo/models/copernicusfm.py", f"{root}.models.copernicusfm")


def torchgeo_croma() -> types.ModuleType:
    """torchgeo 0.8.1's ``croma`` module (``CROMA``, ``get_2dalibi``, ``ViT``, ...)."""
    return load_upstream_module("torchgeo", "torchgeo/models/croma.py", "_ref_torchgeo_croma")


#: a checkout of github.com/Panopticon-FM/panopticon (no wheel exists): its ``dinov2`` package
PANOPTICON_REPO_ENV = "PANOPTICON_REPO"


def panopticon_official() -> types.ModuleType:
    """The publishers' ``dinov2.models.vision_transformer`` (``DinoVisionTransformer`` with
    ``embed_layer="PanopticonPE"``) from the checkout ``$PANOPTICON_REPO`` points at; Panopticon
    is in no wheel (torchgeo wraps it only after 0.8.1), so the checkout is fetched by hand."""
    repo = os.environ.get(PANOPTICON_REPO_ENV)
    if not repo or not os.path.isfile(os.path.join(repo, "dinov2", "models", "panopticon.py")):
        raise UpstreamUnavailable(f"set {PANOPTICON_REPO_ENV} to a checkout of github.com/Panopticon-FM/panopticon")
    os.environ.setdefault("XFORMERS_DISABLED", "1")
    if repo not in sys.path:
        sys.path.insert(0, repo)
    try:
        import importlib

        return importlib.import_module("dinov2.models.vision_transformer")
    except ImportError as e:
        raise UpstreamUnavailable(f"the Panopticon checkout at {repo} does not import: {e}") from e


#: a checkout of github.com/gastruc/AnySat (no wheel exists): its ``hubconf.py`` builds the hub model
ANYSAT_REPO_ENV = "ANYSAT_REPO"


def anysat_official() -> types.ModuleType:
    """The publishers' ``hubconf`` module (``AnySat``, ``get_default_config``) from the checkout
    ``$ANYSAT_REPO`` points at (AnySat is in no wheel; the checkout imports only torch; build it
    with ``flash_attn=False``)."""
    repo = os.environ.get(ANYSAT_REPO_ENV)
    if not repo or not os.path.isfile(os.path.join(repo, "hubconf.py")):
        raise UpstreamUnavailable(f"set {ANYSAT_REPO_ENV} to a checkout of github.com/gastruc/AnySat")
    for path in (os.path.join(repo, "src"), repo):
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        import importlib
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # irpe.py warns that its optional compiled op is absent
            return importlib.import_module("hubconf")
    except ImportError as e:
        raise UpstreamUnavailable(f"the AnySat checkout at {repo} does not import: {e}") from e


def terratorch_terramind() -> types.ModuleType:
    """terratorch 1.2.13's terramind model package (``terramind_vit.TerraMindViT``,
    ``terramind.TerraMind``, ``modality_info``, ``tm_utils``), loaded file by file as the
    package ``_ref_terramind`` so that the files' relative imports find each other."""
    pkg_name, root = "_ref_terramind", "terratorch/models/backbones/terramind/"
    pkg = sys.modules.get(pkg_name)
    if pkg is None:
        pkg = types.ModuleType(pkg_name)
        pkg.__path__ = []
        sys.modules[pkg_name] = pkg
    load_upstream_module("terratorch", root + "utils.py", f"{pkg_name}.utils",
                         aliases=("terratorch.models.backbones.terramind.utils",))
    for name in ("tm_utils", "encoder_embeddings", "decoder_embeddings", "modality_info", "terramind",
                 "terramind_vit"):
        setattr(pkg, name, load_upstream_module("terratorch", f"{root}model/{name}.py", f"{pkg_name}.{name}"))
    return pkg


#: a checkout of github.com/nasaharvest/galileo (no wheel carries Galileo: terratorch 1.2.13 does not)
GALILEO_SRC_ENV = "D2GEO_GALILEO_SRC"


def galileo_single_file() -> types.ModuleType:
    """nasaharvest/galileo's ``single_file_galileo.py`` (``Encoder``), from the checkout that
    ``$D2GEO_GALILEO_SRC`` names (kept out of the repository, as the fixture generator reads it)."""
    if "_ref_galileo" in sys.modules:
        return sys.modules["_ref_galileo"]
    root = os.environ.get(GALILEO_SRC_ENV, "")
    path = os.path.join(root, "single_file_galileo.py")
    if not root or not os.path.isfile(path):
        raise UpstreamUnavailable(f"Galileo's reference is in no wheel: set {GALILEO_SRC_ENV} to a checkout of "
                                  f"github.com/nasaharvest/galileo (got {root!r})")
    if importlib.util.find_spec("einops") is None:
        raise UpstreamUnavailable("the upstream reference modules need einops (pip install einops)")
    spec = importlib.util.spec_from_file_location("_ref_galileo", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["_ref_galileo"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("_ref_galileo", None)
        raise
    return module


#: a checkout of github.com/allenai/olmoearth_pretrain (or an unpacked wheel): its ``olmoearth_pretrain`` package
OLMOEARTH_REPO_ENV = "OLMOEARTH_REPO"


def olmoearth_official() -> types.ModuleType:
    """Ai2's ``olmoearth_pretrain.nn.flexi_vit`` (``EncoderConfig``, ``Encoder``) and
    ``olmoearth_pretrain.datatypes``: from the checkout ``$OLMOEARTH_REPO`` points at, else from
    the pinned wheel unpacked beside it in WHEEL_DIR (a multi-file package: put on ``sys.path``,
    never installed). Its inference imports are torch, einops and numpy."""
    repo = os.environ.get(OLMOEARTH_REPO_ENV)
    if not repo:
        whl = upstream_wheel("olmoearth_pretrain")
        repo = whl[: -len(".whl")] + "-unpacked"
        if not os.path.isdir(os.path.join(repo, "olmoearth_pretrain")):
            with zipfile.ZipFile(whl) as zf:
                zf.extractall(repo)
    if not os.path.isfile(os.path.join(repo, "olmoearth_pretrain", "nn", "flexi_vit.py")):
        raise UpstreamUnavailable(f"set {OLMOEARTH_REPO_ENV} to a checkout of github.com/allenai/olmoearth_pretrain")
    if repo not in sys.path:
        sys.path.insert(0, repo)
    try:
        import importlib

        importlib.import_module("olmoearth_pretrain.datatypes")
        return importlib.import_module("olmoearth_pretrain.nn.flexi_vit")
    except ImportError as e:
        raise UpstreamUnavailable(f"the OlmoEarth code at {repo} does not import: {e}") from e
