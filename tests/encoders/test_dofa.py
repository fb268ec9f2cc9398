"""DOFA fidelity against torchgeo's ``DOFA`` (torchgeo/models/dofa.py, loaded from the torchgeo
0.8.1 wheel), tiny widths, random weights in its state-dict layout.

Upstream's ``forward_features`` pools (it is a classifier); the dense reference is built from
its own modules the way DOFA's segmentation encoder uses them: upstream's ``patch_embed``
(wavelength-generated kernel), its position table (the class position added to the class
token), its blocks; for input sizes other than ``img_size`` the patch part of the table is
resized bicubically with ``align_corners=False`` (DOFA's segmentation ``resize_pos_embed``).
"""
import pytest
import torch
import torch.nn.functional as F

from helpers import load_upstream_module, rel_err
from d2geo.encoders import CheckpointError, EncoderInputError, build_encoder
from d2geo.encoders.dofa import DOFA_PRETRAINED

TINY = dict(embed_dim=64, depth=3, num_heads=4, img_size=64)
TOL = 1e-4
S2_RGBN = (0.665, 0.56, 0.493, 0.842)  # Sentinel-2 B04, B03, B02, B08 in micrometres


@pytest.fixture(scope="module")
def ref():
    return load_upstream_module("torchgeo", "torchgeo/models/dofa.py", "_ref_torchgeo_dofa")


@pytest.fixture(scope="module")
def upstream(ref):
    torch.manual_seed(4)
    model = ref.DOFA(img_size=64, patch_size=16, embed_dim=64, depth=3, num_heads=4).eval()
    with torch.no_grad():
        sd = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    # torchgeo's published files have no fc_norm / head (its loader tolerates them missing)
    published = {k: v for k, v in sd.items() if not k.startswith(("fc_norm.", "head."))}
    return model, published


def _dense(model, x, waves):
    """Upstream's dense block outputs (raw) for any input size."""
    with torch.no_grad():
        t, _ = model.patch_embed(x, torch.tensor(waves))
        h, w = x.shape[-2] // 16, x.shape[-1] // 16
        g = model.img_size // 16
        pos = model.pos_embed
        if (h, w) != (g, g):
            patch = pos[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
            patch = F.interpolate(patch, size=(h, w), mode="bicubic", align_corners=False)
            pos = torch.cat([pos[:, :1], patch.flatten(2).transpose(1, 2)], dim=1)
        t = torch.cat([(model.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1), t + pos[:, 1:]], dim=1)
        outs = []
        for blk in model.blocks:
            t = blk(t)
            outs.append(t[:, 1:].reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2))
    return outs


def test_native_and_non_native_sizes_with_metadata_wavelengths(upstream, tmp_path):
    model, published = upstream
    path = tmp_path / "dofa_base_patch16_224.pth"
    torch.save(published, path)
    enc = build_encoder("dofa_vitb16", weights=path, **TINY).eval()
    for shape in ((2, 4, 64, 64), (1, 4, 64, 96), (2, 4, 80, 48)):
        x = torch.randn(shape)
        want = _dense(model, x, S2_RGBN)
        with torch.no_grad():
            raw = enc.forward_features(x, layers=[0, 1, 2], norm=False, metadata={"wavelengths": S2_RGBN})
            normed = enc.forward_features(x, layers=[0, 2], norm=True, metadata={"wavelengths": S2_RGBN})
        for i in range(3):
            assert rel_err(raw[i], want[i]) <= TOL, (shape, i)
        # the published files have no final norm: norm=True is a fresh LayerNorm (1, 0, eps 1e-6)
        fresh = torch.nn.LayerNorm(64, eps=1e-6)
        for got, i in zip(normed, (0, 2)):
            assert rel_err(got, fresh(want[i].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)) <= TOL


def test_wavelengths_from_band_names(upstream):
    model, published = upstream
    enc = build_encoder("dofa_vitb16", weights=published, bands=("red", "green", "blue", "B08"), **TINY).eval()
    assert torch.allclose(enc.default_wavelengths, torch.tensor(S2_RGBN))
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        got = enc.forward_features(x, layers=[2], norm=False)[0]
    assert rel_err(got, _dense(model, x, S2_RGBN)[2]) <= TOL
    # other wavelengths give other features: the kernel really follows them
    with torch.no_grad():
        other = enc.forward_features(x, layers=[2], norm=False, metadata={"wavelengths": (0.49, 0.56, 0.665, 1.61)})[0]
    assert rel_err(other, got) > 1e-3


def test_classifier_parts_are_named_as_left_out(upstream):
    from d2geo.encoders import load_encoder_weights

    model, _ = upstream
    enc = build_encoder("dofa_vitb16", **TINY)
    report = load_encoder_weights(enc, model.state_dict())
    assert {"fc_norm.weight", "head.weight"} <= set(report.ignored)


# -- bad input ---------------------------------------------------------------------------
def test_missing_wavelengths_are_refused_with_the_fix():
    enc = build_encoder("dofa_vitb16", **TINY)
    with pytest.raises(EncoderInputError, match=r"metadata=\{'wavelengths'.*bands=\[\.\.\.\]"):
        enc.forward_features(torch.randn(1, 4, 64, 64))


def test_wavelength_count_must_match_the_bands():
    enc = build_encoder("dofa_vitb16", **TINY)
    with pytest.raises(EncoderInputError, match="input has 4 bands"):
        enc.forward_features(torch.randn(1, 4, 64, 64), metadata={"wavelengths": (0.665, 0.56, 0.493)})


def test_position_table_of_another_size_is_refused(upstream):
    _, published = upstream
    with pytest.raises(CheckpointError, match="img_size"):
        build_encoder("dofa_vitb16", weights=published, **{**TINY, "img_size": 96})


def test_pretrained_table(ref):
    urls = {w.url.rsplit("/", 1)[1] for enum in (ref.DOFABase16_Weights, ref.DOFALarge16_Weights) for w in enum}
    for name, entry in DOFA_PRETRAINED.items():
        assert entry.source.rsplit("/", 1)[1] in urls, name


@pytest.mark.slow
def test_published_size_builds():
    enc = build_encoder("dofa_vitl16", bands=("B02", "B03", "B04"))
    out = enc.forward_features(torch.zeros(1, 3, 224, 160), layers=[23], norm=False)
    assert tuple(out[0].shape) == (1, 1024, 14, 10)


def test_a_band_named_twice_is_refused():
    """Two names of one band (``red`` and ``B04``) would give two copies of one generated kernel:
    refused as CROMA and TerraMind refuse them (``bands.refuse_repeated_bands``)."""
    for bands, sensor in ((["red", "B04", "green"], None), (["red", "green", "red"], None),
                          (["B04", "red"], "sentinel-2-l2a"), (["VV", "VH", "vv"], None)):
        with pytest.raises(ValueError, match="name one band twice: .* give each band once"):
            build_encoder("dofa_vitb16", bands=bands, sensor=sensor, **TINY)
    build_encoder("dofa_vitb16", bands=["red", "green", "blue"], **TINY)
