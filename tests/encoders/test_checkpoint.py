"""No checkpoint tensor is dropped silently, in any family.

For a valid checkpoint in each family's published layout, every tensor is either loaded
or named (with a reason) in the load report; removing any tensor that is not named is
refused, and so is adding an unknown tensor beside the encoder's own.
"""
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import load_upstream_module
from d2geo.encoders import CheckpointError, build_encoder
from d2geo.encoders.adapt import BAND_RECORD
from d2geo.encoders.checkpoint import load_encoder_weights

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
DINOV2_TINY = dict(embed_dim=48, depth=3, num_heads=3, img_size=98)


def _dinov2(variant):
    sd = torch.load(os.path.join(DATA, "dinov2_official_tiny.pt"), weights_only=True)[variant]["state_dict"]
    name = "dinov2_vits14_reg" if variant == "reg" else "dinov2_vits14"
    return name, DINOV2_TINY, sd, "", lambda s: s


def _dinov3(variant):
    entry = torch.load(os.path.join(DATA, "dinov3_official_tiny.pt"), weights_only=True)["variants"][variant]
    return "dinov3_" + variant, entry["config"], entry["state_dict"], "", lambda s: s


def _prithvi(layout):
    from test_prithvi import TINY, _mae, _v1_flat
    ref = load_upstream_module("terratorch", "terratorch/models/backbones/prithvi_mae.py", "_ref_prithvi_mae")
    if layout == "v1_flat":
        mae = _mae(ref, num_frames=3)
        return "prithvi_eo_v1_100", dict(TINY, img_size=64), _v1_flat(mae), "", lambda s: s
    mae = _mae(ref, num_frames=1, tl=True)
    return ("prithvi_eo_v2_300_tl", dict(TINY, img_size=64, num_frames=1), mae.state_dict(), "encoder.",
            lambda s: s)


def _clay():
    from test_clay import TINY, _lightning, _ref_encoder
    precision = torch.get_float32_matmul_precision()
    load_upstream_module("claymodel", "utils.py", "_ref_clay_utils", aliases=("src.utils",))
    load_upstream_module("claymodel", "factory.py", "_ref_clay_factory", aliases=("src.factory",))
    load_upstream_module("claymodel", "backbone.py", "_ref_clay_backbone", aliases=("src.backbone",))
    upstream = load_upstream_module("claymodel", "model.py", "_ref_clay_model", aliases=("src.model",))
    torch.set_float32_matmul_precision(precision)
    ckpt = _lightning(_ref_encoder(upstream), upstream)
    rest = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return "clay_v1_base", TINY, ckpt["state_dict"], "model.encoder.", lambda s: {"state_dict": s, **rest}


def _terramind():
    from test_terramind import TINY, published_state_dict
    from helpers import terratorch_terramind
    sd = published_state_dict(terratorch_terramind())
    return "terramind_v1_base", dict(TINY, bands=["S2L2A", "S1RTC"]), sd, "", lambda s: s


def _croma():
    from test_croma import TINY, published_state_dict
    from helpers import torchgeo_croma
    nested = published_state_dict(torchgeo_croma())
    flat = {f"{top}.{k}": v for top, sub in nested.items() for k, v in sub.items()}

    def wrap(s):  # the published file: one state dict per sub-module
        out = {}
        for k, v in s.items():
            top, rest = k.split(".", 1)
            out.setdefault(top, {})[rest] = v
        return out

    return "croma_base", dict(TINY, modality="joint"), flat, "", wrap


def _copernicusfm():
    from helpers import torchgeo_copernicusfm
    ref = torchgeo_copernicusfm()
    torch.manual_seed(0)
    model = ref.CopernicusFM(img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2)
    # the published file: everything but the classifier's fc_norm and head (variable mode included)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith(("fc_norm.", "head."))}
    return "copernicusfm_vitb16", dict(embed_dim=32, depth=2, num_heads=2, img_size=32), sd, "", lambda s: s


CASES = {
    "dinov2": lambda: _dinov2("plain"), "dinov2_reg": lambda: _dinov2("reg"),
    "dinov3_sat": lambda: _dinov3("vitl16_sat"), "dinov3_s": lambda: _dinov3("vits16"),
    "prithvi_v1_flat": lambda: _prithvi("v1_flat"), "prithvi_v2_tl": lambda: _prithvi("v2_tl"),
    "clay_lightning": _clay, "terramind_published": _terramind, "croma_published": _croma,
    "copernicusfm_published": _copernicusfm,
}


@pytest.fixture(scope="module", params=list(CASES))
def valid(request):
    name, kw, sd, prefix, wrap = CASES[request.param]()
    enc = build_encoder(name, **kw)
    report = load_encoder_weights(enc, wrap(sd))
    return name, kw, sd, prefix, wrap, report, enc


def test_valid_checkpoint_loads_everything_or_names_it(valid):
    name, kw, sd, prefix, wrap, report, enc = valid
    assert set(report.loaded) == set(enc.state_dict()) - {BAND_RECORD}  # the band record is d2geo's own
    assert set(report.ignored) <= set(sd) and all(report.ignored.values())
    assert set(report.ignored) != set(sd)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_removing_a_tensor_that_is_not_named_is_refused(valid, data):
    name, kw, sd, prefix, wrap, report, enc = valid
    key = data.draw(st.sampled_from(sorted(sd)))
    cut = {k: v for k, v in sd.items() if k != key}
    if key in report.ignored:
        build_encoder(name, weights=wrap(cut), **kw)
    else:
        with pytest.raises(CheckpointError):
            build_encoder(name, weights=wrap(cut), **kw)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_adding_an_unknown_encoder_tensor_is_refused(valid, data):
    """A tensor beside a loaded one (same module path, new name) belongs to another model."""
    name, kw, sd, prefix, wrap, report, enc = valid
    inner = sorted(k for k in sd if k not in report.ignored and "." in k[len(prefix):])
    key = data.draw(st.sampled_from(inner))
    leaf = data.draw(st.from_regex(r"x[a-z0-9_]{0,10}", fullmatch=True))
    new = key.rsplit(".", 1)[0] + "." + leaf
    shape = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    with pytest.raises(CheckpointError, match="has no place for|does not fit"):
        build_encoder(name, weights=wrap({**sd, new: torch.zeros(shape)}), **kw)
