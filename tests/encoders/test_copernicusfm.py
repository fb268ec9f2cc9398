"""Copernicus-FM fidelity against torchgeo's ``CopernicusFM`` (torchgeo/models/copernicusfm.py,
loaded from the torchgeo 0.8.1 wheel), tiny widths, random weights in its state-dict layout.

Upstream's ``forward_features`` pools (it is a classifier); its dense block outputs are taken
with forward hooks on its blocks while it runs its own patch embedding, position resize and
metadata embeddings. Upstream resizes the position table to square grids only (``sqrt`` of the
token count): for non-square inputs its own ``resize_abs_pos_embed`` is called with the real
``(h, w)`` grid (patched into its module for the call), everything else unchanged.
"""
from functools import partial

import pytest
import torch
import torch.nn as nn

from helpers import rel_err, torchgeo_copernicusfm
from d2geo.encoders import CheckpointError, EncoderInputError, build_encoder, load_encoder_weights
from d2geo.encoders.bands import bandwidths
from d2geo.encoders.copernicusfm import COPERNICUSFM_PRETRAINED, _out_of_range, fourier_expansion
from d2geo.encoders.metadata import Metadata

TINY = dict(embed_dim=64, depth=3, num_heads=4, img_size=64)
TOL = 1e-4
BANDS = ("B02", "B03", "B04", "B08")  # Sentinel-2 blue, green, red, broad NIR
WAVES_NM = [490.0, 560.0, 665.0, 842.0]  # Copernicus-FM's pretraining centres (ESA: 493 for B02)
BWS_NM = [65.0, 35.0, 30.0, 115.0]  # ESA's nominal bandwidths
LATLON = [[48.15, 11.57], [-33.87, 151.21]]
SECONDS = [1.6e9 + 3600.5, 1.65e9 + 17.25]  # float64 epoch seconds
GSD = [10.0, 30.0]


@pytest.fixture(scope="module")
def ref():
    return torchgeo_copernicusfm()


def _upstream_model(ref, sd=None, eps=1e-6):
    model = ref.CopernicusFM(img_size=64, patch_size=16, embed_dim=64, depth=3, num_heads=4,
                             norm_layer=partial(nn.LayerNorm, eps=eps))
    if sd is not None:
        model.load_state_dict(sd, strict=False)
    return model.eval()


@pytest.fixture(scope="module")
def upstream(ref):
    torch.manual_seed(5)
    model = _upstream_model(ref)
    with torch.no_grad():
        sd = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
        for k in ("coord_token", "scale_token", "time_token"):
            sd[k] = torch.randn_like(sd[k])
    model.load_state_dict(sd)
    # torchgeo's published file has no fc_norm / head (its loader asserts only those are missing)
    published = {k: v for k, v in sd.items() if not k.startswith(("fc_norm.", "head."))}
    assert any(k.startswith("patch_embed_variable.") for k in published)
    return model, published


@pytest.fixture(scope="module")
def enc(upstream):
    return build_encoder("copernicusfm_vitb16", weights=upstream[1], bands=BANDS, **TINY).eval()


def _meta(n, latlon=True, time=True, gsd=True, patch=16):
    """d2geo metadata and upstream's (B, 4) [lon, lat, days, area km^2] (NaN: unknown)."""
    ours, up = {}, torch.full((n, 4), float("nan"), dtype=torch.float64)
    if latlon:
        ours["latlon"] = torch.tensor(LATLON[:n])
        ll = ours["latlon"].double()
        up[:, 0], up[:, 1] = ll[:, 1], ll[:, 0]
    if time:
        ours["timestamps"] = torch.tensor(SECONDS[:n], dtype=torch.float64)[:, None]
        up[:, 2] = torch.tensor(SECONDS[:n], dtype=torch.float64) / 86400
    if gsd:
        ours["gsd"] = torch.tensor(GSD[:n])
        up[:, 3] = (torch.tensor(GSD[:n], dtype=torch.float64) * patch / 1000) ** 2
    return ours, up


def _upstream_taps(ref, model, x, meta, monkeypatch, kernel_size=16, waves=WAVES_NM, bws=BWS_NM):
    """Upstream's raw block outputs as (B, D, h, w) maps, via hooks on its blocks."""
    B, _, H, W = x.shape
    h, w = H // kernel_size, W // kernel_size
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in model.blocks]
    resize = ref.resize_abs_pos_embed
    with monkeypatch.context() as mp:
        mp.setattr(ref, "resize_abs_pos_embed", lambda pe, new, old, **kw: resize(pe, (h, w), old, **kw))
        try:
            with torch.no_grad():
                model.forward_features(x, meta, wavelengths=waves, bandwidths=bws, kernel_size=kernel_size)
        finally:
            for hk in hooks:
                hk.remove()
    return [o[:, 1:].reshape(B, h, w, -1).permute(0, 3, 1, 2) for o in outs]


def test_native_and_non_native_non_square_sizes_with_all_metadata(ref, upstream, enc, monkeypatch):
    model, _ = upstream
    fresh = nn.LayerNorm(64, eps=1e-6)  # the file has no final norm: norm=True is a fresh one
    for shape in ((2, 4, 64, 64), (1, 4, 64, 96), (2, 4, 80, 48)):
        x = torch.randn(shape)
        ours_md, up_md = _meta(shape[0])
        want = _upstream_taps(ref, model, x, up_md, monkeypatch)
        with torch.no_grad():
            raw = enc.forward_features(x, layers=[0, 1, 2], norm=False, metadata=ours_md)
            normed = enc.forward_features(x, layers=[0, 2], norm=True, metadata=ours_md)
        for i in range(3):
            assert rel_err(raw[i], want[i]) <= TOL, (shape, i, rel_err(raw[i], want[i]))
        for got, i in zip(normed, (0, 2)):
            assert rel_err(got, fresh(want[i].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)) <= TOL


@pytest.mark.parametrize("items", [(), ("latlon",), ("time",), ("gsd",), ("latlon", "gsd")])
def test_each_metadata_item_with_and_without(ref, upstream, enc, monkeypatch, items):
    model, _ = upstream
    x = torch.randn(2, 4, 64, 64)
    ours_md, up_md = _meta(2, latlon="latlon" in items, time="time" in items, gsd="gsd" in items)
    want = _upstream_taps(ref, model, x, up_md, monkeypatch)[2]
    with torch.no_grad():
        got = enc.forward_features(x, layers=[2], norm=False, metadata=ours_md)[0]
    assert rel_err(got, want) <= TOL


def test_metadata_is_really_used(enc):
    x = torch.randn(2, 4, 64, 64)
    md, _ = _meta(2)
    with torch.no_grad():
        base = enc.forward_features(x, layers=[2], norm=False, metadata=md)[0]
        for key, value in (("latlon", torch.tensor([[10.0, 20.0], [-5.0, 100.0]])),
                           ("gsd", torch.tensor([20.0, 60.0])),
                           ("timestamps", md["timestamps"] + 43200.0)):  # half a day later
            other = enc.forward_features(x, layers=[2], norm=False, metadata={**md, key: value})[0]
            assert rel_err(other, base) > 1e-3, key


def test_unknown_items_are_decided_per_sample(ref, upstream, enc, monkeypatch):
    """Upstream uses the unknown token for the whole batch when any sample's value is NaN; here
    each sample gets its own: equal to upstream run on each sample alone."""
    model, _ = upstream
    x = torch.randn(2, 4, 64, 64)
    ours_md, up_md = _meta(2)
    lat = ours_md["latlon"].clone()
    lat[1] = float("nan")
    gsd = ours_md["gsd"].clone()
    gsd[0] = float("nan")
    md = Metadata({**ours_md, "latlon": lat, "gsd": gsd}, batch_size=2, num_frames=None, num_bands=4)
    up_md[1, :2] = float("nan")
    up_md[0, 3] = float("nan")
    with torch.no_grad():
        got = enc.forward_features(x, layers=[2], norm=False, metadata=md)[0]
    batch = _upstream_taps(ref, model, x, up_md, monkeypatch)[2]
    for b in range(2):
        alone = _upstream_taps(ref, model, x[b:b + 1], up_md[b:b + 1], monkeypatch)[2]
        assert rel_err(got[b:b + 1], alone) <= TOL, b
        # upstream's batch quirk: a batch mate's NaN changes this sample's features
        assert rel_err(batch[b:b + 1], alone) > 1e-3, b


def test_other_patch_size_resamples_the_generated_kernel(ref, upstream, monkeypatch):
    model, published = upstream
    enc8 = build_encoder("copernicusfm_vitb16", weights=published, bands=BANDS, patch_size=8, **TINY).eval()
    x = torch.randn(1, 4, 64, 48)
    ours_md, up_md = _meta(1, patch=8)
    want = _upstream_taps(ref, model, x, up_md, monkeypatch, kernel_size=8)
    with torch.no_grad():
        got = enc8.forward_features(x, layers=[0, 2], norm=False, metadata=ours_md)
    assert tuple(got[0].shape) == (1, 64, 8, 6)
    for g, i in zip(got, (0, 2)):
        assert rel_err(g, want[i]) <= TOL, (i, rel_err(g, want[i]))
    # the cached resize matrix made under inference mode trains, and is no state
    with torch.inference_mode():
        enc8.forward_features(x, layers=[0], metadata=ours_md)
    enc8.forward_features(x, layers=[0], metadata=ours_md)[0].sum().backward()
    assert enc8.patch_embed_spectral.fclayer.w1.weight.grad.abs().sum() > 0
    encoder_keys = {k for k in published if "variable" not in k} | {"norm.weight", "norm.bias"}
    assert set(enc8.state_dict()) == encoder_keys


def test_norm_eps_of_torchgeos_builder(ref, upstream, monkeypatch):
    """``copernicusfm_base`` builds PyTorch-default LayerNorms (eps 1e-5): ``norm_eps=1e-5``."""
    _, published = upstream
    model = _upstream_model(ref, published, eps=1e-5)
    enc5 = build_encoder("copernicusfm_vitb16", weights=published, bands=BANDS, norm_eps=1e-5, **TINY).eval()
    x = torch.randn(1, 4, 64, 64)
    ours_md, up_md = _meta(1)
    want = _upstream_taps(ref, model, x, up_md, monkeypatch)[2]
    with torch.no_grad():
        got = enc5.forward_features(x, layers=[2], norm=False, metadata=ours_md)[0]
    assert rel_err(got, want) <= TOL


def test_sentinel2_bands_get_the_spectrum_copernicusfm_was_pretrained_with():
    """The official pretraining's ``s2_toa`` wavelengths and bandwidths (nm), whatever name or
    product level the bands are given by; Landsat bands keep the vocabulary's facts."""
    s2 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
    pretraining_wv = [440, 490, 560, 665, 705, 740, 783, 842, 860, 940, 1370, 1610, 2190]
    pretraining_bw = [20, 65, 35, 30, 15, 15, 20, 115, 20, 20, 30, 90, 180]
    enc = build_encoder("copernicusfm_vitb16", bands=s2, **TINY)
    assert enc.default_wavelengths_nm.tolist() == pretraining_wv
    assert enc.default_bandwidths_nm.tolist() == pretraining_bw
    l2a = build_encoder("copernicusfm_vitb16", bands=("blue", "nir08", "swir22"), sensor="sentinel-2-l2a", **TINY)
    assert l2a.default_wavelengths_nm.tolist() == [490, 860, 2190]
    # the data layer's metadata carries the vocabulary's (ESA) centres: accepted for these bands
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        l2a.forward_features(x, layers=[0], metadata={"wavelengths": torch.tensor([0.493, 0.865, 2.19])})
    landsat = build_encoder("copernicusfm_vitb16", bands=("B2", "B5"), sensor="landsat-c2", **TINY)
    assert landsat.default_wavelengths_nm.tolist() == pytest.approx([480, 860])
    assert landsat.default_bandwidths_nm.tolist() == pytest.approx([60, 30])


def test_sar_bands_use_copernicusfms_convention(ref, upstream, monkeypatch):
    model, published = upstream
    s1 = build_encoder("copernicusfm_vitb16", weights=published, bands=("VV", "VH"), sensor="sentinel-1",
                       **TINY).eval()
    assert s1.default_wavelengths_nm.tolist() == [5e7, 5e7] and s1.default_bandwidths_nm.tolist() == [1e9, 1e9]
    x = torch.randn(1, 2, 64, 64)
    ours_md, up_md = _meta(1)
    # the data layer's metadata wavelengths are the vocabulary's (Clay's stand-ins): accepted
    ours_md["wavelengths"] = torch.tensor([3.5, 4.0])
    want = _upstream_taps(ref, model, x, up_md, monkeypatch, waves=[5e7, 5e7], bws=[1e9, 1e9])[2]
    with torch.no_grad():
        got = s1.forward_features(x, layers=[2], norm=False, metadata=ours_md)[0]
    assert rel_err(got, want) <= TOL


def test_fourier_codes_and_ranges_are_upstreams(ref):
    from d2geo.encoders.copernicusfm import _AREA_RANGE, _BANDWIDTH_RANGE, _COORD_RANGE, _TIME_RANGE, _WAVE_RANGE

    values = torch.tensor([0.0, 1.5e-3, 0.0256, 3.0, 359.9, 2.1e4], dtype=torch.float64)
    for lo, hi in (_WAVE_RANGE, _BANDWIDTH_RANGE, _COORD_RANGE, _AREA_RANGE, _TIME_RANGE):
        up = ref.FourierExpansion(lo, hi, assert_range=False)
        assert torch.equal(fourier_expansion(values, lo, hi, 64), up(values, 64))
    # the ranges are upstream's: a value its assertion refuses is one d2geo's checks refuse
    up_area = ref.FourierExpansion(*_AREA_RANGE)
    with pytest.raises(AssertionError):
        up_area(torch.tensor([1e-4]), 8)
    assert _out_of_range(torch.tensor([1e-4]), *_AREA_RANGE).all()
    assert not _out_of_range(torch.tensor([0.0, 1e-3, 5.1e8]), *_AREA_RANGE).any()


def test_bandwidths_in_the_band_vocabulary():
    assert bandwidths("sentinel-2-l1c", ["B01", "B8A", "B10", "B12"]) == [0.020, 0.020, 0.030, 0.180]
    assert bandwidths("landsat-c2", ["red", "B5"]) == [0.030, 0.030]
    with pytest.raises(KeyError, match="no bandwidth for band 'VV'"):
        bandwidths("sentinel-1", ["VV"])


def test_checkpoint_parts_left_out_by_name(upstream):
    model, _ = upstream
    enc = build_encoder("copernicusfm_vitb16", **TINY)
    wrapped = {f"model.{k}": v for k, v in model.state_dict().items()}
    report = load_encoder_weights(enc, wrapped)
    ignored = set(report.ignored)
    assert {"model.fc_norm.weight", "model.patch_embed_variable.language_proj.weight"} <= ignored
    assert torch.equal(enc.coord_token, model.coord_token)


def test_pretrained_table(ref):
    url = ref.CopernicusFM_Base_Weights.CopernicusFM_ViT.url
    entry = COPERNICUSFM_PRETRAINED["copernicusfm_vitb16"]
    assert entry.source.rsplit("/", 1)[1] == url.rsplit("/", 1)[1]
    assert entry.revision == url.split("/resolve/")[1].split("/")[0]


# -- bad input ---------------------------------------------------------------------------
def test_missing_wavelengths_or_bandwidths_are_refused_with_the_fix():
    enc = build_encoder("copernicusfm_vitb16", **TINY)
    with pytest.raises(EncoderInputError, match=r"bands=\[\.\.\.\].*bandwidths=\[\.\.\.\]"):
        enc.forward_features(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match="both the wavelengths and the bandwidths"):
        build_encoder("copernicusfm_vitb16", wavelengths=(0.665, 0.56), **TINY)
    with pytest.raises(ValueError, match=r"no bandwidth for \[.red., .nir_narrow.\].*bandwidths=\[\.\.\.\]"):
        build_encoder("copernicusfm_vitb16", bands=("red", "nir_narrow"), sensor="hls", **TINY)


def test_other_wavelengths_in_metadata_are_refused(enc):
    with pytest.raises(EncoderInputError, match="also needs the bandwidths.*bands=\\[\\.\\.\\.\\]"):
        enc.forward_features(torch.randn(1, 4, 64, 64), metadata={"wavelengths": (0.49, 0.56, 0.665, 1.61)})
    with pytest.raises(EncoderInputError, match="built for 4 bands"):
        enc.forward_features(torch.randn(1, 3, 64, 64))


def test_out_of_range_spectrum_is_refused():
    with pytest.raises(ValueError, match="wavelength of 0.05 um is outside.*micrometres"):
        build_encoder("copernicusfm_vitb16", wavelengths=(0.05,), bandwidths=(0.01,), **TINY)


def test_too_fine_gsd_and_several_timestamps_are_refused(enc):
    x = torch.randn(1, 4, 64, 64)
    with pytest.raises(EncoderInputError, match="leave 'gsd' out of the metadata"):
        enc.forward_features(x, metadata={"gsd": torch.tensor([1.0])})
    ts = torch.tensor([[1.6e9, 1.61e9]], dtype=torch.float64)
    with pytest.raises(EncoderInputError, match="one acquisition time per sample"):
        enc.forward_features(x, metadata={"timestamps": ts})


def test_variable_mode_is_refused():
    with pytest.raises(ValueError, match="'variable' mode.*is left out"):
        build_encoder("copernicusfm_vitb16", input_mode="variable", **TINY)


def test_position_table_of_another_size_is_refused(upstream):
    with pytest.raises(CheckpointError, match="img_size"):
        build_encoder("copernicusfm_vitb16", weights=upstream[1], bands=BANDS, **{**TINY, "img_size": 96})


@pytest.mark.slow
def test_published_size_builds():
    enc = build_encoder("copernicusfm_vitb16", bands=("B02", "B03", "B04"))
    out = enc.forward_features(torch.zeros(1, 3, 224, 160), layers=[11], norm=False,
                               metadata={"gsd": torch.tensor([10.0])})
    assert tuple(out[0].shape) == (1, 768, 14, 10)
