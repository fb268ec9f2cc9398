"""Model cards: ``describe(name)`` says everything d2geo knows about a variant.

Architecture (class, configuration, parameter count computed on the meta device, so no
weights are built or fetched), bands and input statistics, where the weights are (source,
revision, sha256, which public source pinned them, or why they are not pinned), the
license, and the upstream code the family's fidelity tests compare against. Everything is
read from the registry and the pretrained tables; nothing here repeats a number.

>>> from d2geo.encoders import describe
>>> print(describe("prithvi_eo_v2_300_tl"))
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from .licenses import is_non_commercial, use_restrictions
from .registry import InputStats, _lookup, encoder_family, is_test_variant, list_encoders, resolve_name

__all__ = ["ModelCard", "describe", "parameter_count", "encoder_list_text", "FIDELITY_REFERENCES"]

#: family (the module that defines it) -> (the upstream code its fidelity is tested against,
#: the test file). Upstream wheels are pinned in ``testkit/upstream.py``.
FIDELITY_REFERENCES = {
    "dinov2": ("facebookresearch/dinov2's official DinoVisionTransformer (outputs of tiny models stored by "
               "tests/fixtures/make_dinov2_fixture.py) and timm's DINOv2 ViTs", "tests/encoders/test_dinov2.py"),
    "dinov3": ("facebookresearch/dinov3's official code (outputs stored by tests/fixtures/make_dinov3_fixture.py; "
               "the 7B and S+ by make_dinov3_convnext_fixture.py, tests/encoders/test_dinov3_vit7b.py) and timm's "
               "DINOv3 layouts", "tests/encoders/test_dinov3.py"),
    "dinov3_convnext": ("facebookresearch/dinov3's official dinov3/models/convnext.py at 6876159a (outputs of a tiny "
                        "model stored by tests/fixtures/make_dinov3_convnext_fixture.py), transformers' "
                        "DINOv3ConvNextModel and timm's ConvNeXt", "tests/encoders/test_dinov3_convnext.py"),
    "prithvi": ("terratorch 1.2.13 terratorch/models/backbones/prithvi_mae.py (PrithviViT)",
                "tests/encoders/test_prithvi.py"),
    "clay": ("claymodel 1.5.0 model.py (Encoder)", "tests/encoders/test_clay.py"),
    "terramind": ("terratorch 1.2.13 terratorch/models/backbones/terramind (TerraMindViT)",
                  "tests/encoders/test_terramind.py"),
    "ssl4eo": ("torchgeo 0.8.1 vit_{small,base,large}_patch16_224 / vit_huge_patch14_224 (timm's ViTs as torchgeo "
               "builds them; Sentinel-1 and SSL4EO-L Landsat variants in tests/encoders/test_ssl4eo_s1_landsat.py)",
               "tests/encoders/test_ssl4eo.py"),
    "ssl4eo_data2vec": ("zhu-xlab/SSL4EO-S12's data2vec modeling_cyclical.py (outputs stored by "
                        "tests/fixtures/make_ssl4eo_data2vec_fixture.py)", "tests/encoders/test_ssl4eo_data2vec.py"),
    "scale_mae": ("torchgeo 0.8.1 torchgeo/models/scale_mae.py (ScaleMAE)", "tests/encoders/test_scale_mae.py"),
    "satlas": ("torchgeo 0.8.1 torchgeo/models/swin.py (swin_v2_b / swin_v2_t on torchvision's Swin-V2)",
               "tests/encoders/test_satlas.py"),
    "satlas_resnet": ("torchgeo 0.8.1 torchgeo/models/resnet.py (resnet50 / resnet152 on timm's ResNet)",
                      "tests/encoders/test_satlas_resnet.py"),
    "dofa": ("torchgeo 0.8.1 torchgeo/models/dofa.py (DOFA)", "tests/encoders/test_dofa.py"),
    "croma": ("torchgeo 0.8.1 torchgeo/models/croma.py (CROMA)", "tests/encoders/test_croma.py"),
    "galileo": ("nasaharvest/galileo's single_file_galileo.py at 0f0b5b95 (Encoder; outputs of a tiny model "
                "stored by tests/fixtures/make_galileo_fixture.py; the SRTM space group in "
                "tests/encoders/test_galileo_srtm.py)", "tests/encoders/test_galileo.py"),
    "copernicusfm": ("torchgeo 0.8.1 torchgeo/models/copernicusfm.py (CopernicusFM)",
                     "tests/encoders/test_copernicusfm.py"),
    "panopticon": ("Panopticon-FM/panopticon's official code at 5ad7f82f (the hubconf model; outputs of a tiny model "
                   "stored by tests/fixtures/make_panopticon_fixture.py)", "tests/encoders/test_panopticon.py"),
    "anysat": ("gastruc/AnySat's official code at e03e72e4 (the hubconf model, flash_attn=False; outputs of a tiny "
               "model stored by tests/fixtures/make_anysat_fixture.py)", "tests/encoders/test_anysat.py"),
    "softcon": ("torchgeo 0.8.1 vit_{small,base}_patch14_dinov2 (timm's DINOv2 ViTs as torchgeo builds them) at the "
                "native size; at other sizes facebookresearch/dinov2's ViT, the publisher's code (outputs stored by "
                "tests/fixtures/make_dinov2_fixture.py)",
                "tests/encoders/test_softcon.py"),
    "olmoearth": ("allenai/olmoearth_pretrain's flexi_vit.Encoder at 0a8852ed (outputs of a tiny model stored by "
                  "tests/fixtures/make_olmoearth_fixture.py)", "tests/encoders/test_olmoearth.py"),
}


@dataclass(frozen=True)
class ModelCard:
    """What d2geo knows about one registered variant (``str(card)`` is the printable card)."""

    name: str
    family: str
    architecture: str
    config: dict
    parameters: int
    input_size: int | None
    patch_size: int | None
    num_frames: int | None
    stats: tuple[InputStats, ...]
    source: str | None
    revision: str | None
    sha256: str | None
    pinned: bool
    pinned_by: str
    unpinned_reason: str
    license: str
    non_commercial: bool
    page: str
    notes: str
    fidelity_reference: str
    fidelity_test: str
    aliases: tuple[str, ...] = field(default=())
    #: a tiny variant for d2geo's tests (``<family>_test``), random weights: not a real model
    test_only: bool = False

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["stats"] = [s.__dict__ for s in self.stats]
        return d

    def __str__(self) -> str:
        arch = ", ".join(f"{k}={v}" for k, v in sorted(self.config.items()) if not callable(v))
        lines = [f"{self.name} ({self.family})"
                 + (": TEST VARIANT for d2geo's tests (tiny, random weights), not a real model" if self.test_only
                    else "")]
        if self.aliases:
            lines.append(f"  also known as: {', '.join(self.aliases)} (deprecated)")
        lines += [
            f"  architecture: {self.architecture}({arch})",
            f"  size: {self.parameters:,} parameters; "
            + (f"random weights, patch {self.patch_size}" if self.test_only
               else f"pretrained at {self.input_size} px, patch {self.patch_size}")
            + (f", {self.num_frames} frame(s)" if self.num_frames else ""),
        ]
        for i, s in enumerate(self.stats):
            lines.append(f"  {'bands' if i == 0 else '  also'}: {s.name} ({s.sensor or 'no sensor'}, {s.units}): "
                         f"{', '.join(s.bands)}")
            lines.append(f"      mean {list(s.mean)}")
            lines.append(f"      std  {list(s.std)}")
        lines += [
            f"  source: {self.source or 'none published'}",
            f"  revision: {self.revision or ('-' if not (self.source or '').startswith('hf://') else 'main (moving)')}",
            f"  sha256: {self.sha256 or ('not pinned' if self.source else '-')}",
            f"  pinned: {self._pin_text()}",
            f"  license: {self.license}" + (" (NON-COMMERCIAL use only)" if self.non_commercial else "")
            + (f" (USE-RESTRICTED: {use_restrictions(self.license)})" if use_restrictions(self.license) else ""),
        ]
        if self.page:
            lines.append(f"  page: {self.page}")
        if self.notes:
            lines.append(f"  notes: {self.notes}")
        lines.append(f"  fidelity tested against: {self.fidelity_reference} ({self.fidelity_test})")
        return "\n".join(lines)

    def _pin_text(self) -> str:
        if not self.pinned:
            return "no: " + self.unpinned_reason
        return "yes, by " + self.pinned_by if self.source else "nothing to pin (no weights published)"


@contextlib.contextmanager
def _parameters_on_meta():
    """Every parameter registered inside the block is moved to the meta device as it is
    registered (as ``accelerate.init_empty_weights`` does): the build's own computations run
    on the CPU, the parameters (and their initialization) take no memory and no time."""
    register = nn.Module.register_parameter

    def on_meta(module, name, param):
        register(module, name, param)
        if param is not None:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


@functools.lru_cache(maxsize=None)
def parameter_count(name: str) -> int:
    """Parameters of the variant ``name`` as registered, counted on a build whose parameters
    live on the meta device (no memory, no weights)."""
    entry = _lookup(name)
    with _parameters_on_meta():
        model = entry.builder(**entry.config)
    return sum(p.numel() for p in model.parameters())


def describe(name: str) -> ModelCard:
    """The model card of the variant ``name`` (``print(describe(name))`` to read it)."""
    from .registry import _ALIASES

    name = resolve_name(name)
    entry = _lookup(name)
    cfg = entry.pretrained
    family = encoder_family(name)
    ref, test = FIDELITY_REFERENCES.get(family, ("(no fidelity test recorded)", "-"))
    source = cfg.source if cfg else None
    return ModelCard(
        name=name, family=family, architecture=getattr(entry.builder, "__name__", str(entry.builder)),
        config=dict(entry.config), parameters=parameter_count(name),
        input_size=cfg.input_size if cfg else None, patch_size=cfg.patch_size if cfg else None,
        num_frames=cfg.num_frames if cfg else None, stats=tuple(cfg.stats) if cfg else (),
        source=source, revision=cfg.revision if cfg else None, sha256=cfg.sha256 if cfg else None,
        pinned=bool(cfg and cfg.pinned), pinned_by=cfg.pinned_by if cfg else "",
        unpinned_reason=cfg.unpinned_reason if cfg else "no pretrained table entry",
        license=cfg.license if cfg else "-", non_commercial=bool(cfg and is_non_commercial(cfg.license)),
        page=cfg.page if cfg else "", notes=cfg.notes if cfg else "",
        fidelity_reference=ref, fidelity_test=test,
        aliases=tuple(sorted(a for a, n in _ALIASES.items() if n == name)), test_only=entry.test_only,
    )


def encoder_list_text(pattern: str | None = None) -> str:
    """One line per registered variant (name, size, license, pinned or not) whose name matches
    the fnmatch ``pattern``, for tools' ``--list-encoders``; a ``pattern`` that is a variant's
    name (or old alias) gives its whole card, as ``describe``. The tiny test variants
    (``<family>_test``) are listed only when the pattern matches nothing else (e.g. ``*_test``),
    each marked as a test variant."""
    from .registry import _ALIASES, _REGISTRY

    if pattern in _REGISTRY or pattern in _ALIASES:
        return str(describe(pattern))
    rows = []
    for name in list_encoders(pattern) or (list_encoders(pattern, tests=True) if pattern else []):
        c = describe(name)
        size = f"{c.parameters / 1e6:,.1f}M"
        if is_test_variant(name):
            rows.append((name, size, "TEST VARIANT (tiny, random weights)", "for d2geo's tests only"))
            continue
        pin = f"@{c.revision[:8]}" if c.revision else ("sha256" if c.sha256 else "unpinned")
        if c.revision and c.sha256:
            pin += "+sha256"
        lic = c.license + (" (non-commercial)" if c.non_commercial else "")
        rows.append((name, size, lic, pin if c.pinned else f"unpinned ({pin})" if pin != "unpinned" else pin))
    if not rows:
        return f"no encoder matches {pattern!r}; all: {', '.join(list_encoders())}"
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{a:<{width[0]}}  {b:>{width[1]}}  {c:<{width[2]}}  {d}" for a, b, c, d in rows)
